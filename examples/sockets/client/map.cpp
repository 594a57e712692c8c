// SPDX-License-Identifier: MIT
// nbdwire-client map URI [--json] [--map=CONTEXT] [--totals]: a metadata context's map
// (base:allocation by default) or its totals by type, as nbdinfo --map [--totals] prints it.
#include <algorithm>  // std::min
#include <cstdio>     // std::snprintf
#include <map>        // totals by type

#include "commands.hpp"
#include "nbdwire/transfer.hpp"
#include "output.hpp"

namespace client_app {

namespace {

/// nbdinfo's words for a type of the contexts it knows (libnbd info/map.c).
std::optional<std::string> type_description(const std::string& context, std::uint64_t type) {
  if (context == "base:allocation") {
    switch (type) {
      case 0: return "data";
      case nbdwire::state_flag::hole: return "hole";
      case nbdwire::state_flag::zero: return "zero";
      case nbdwire::state_flag::hole | nbdwire::state_flag::zero: return "hole,zero";
      default: return std::nullopt;
    }
  }
  if (context.rfind("qemu:dirty-bitmap:", 0) == 0) {
    if (type == 0) return "clean";
    if (type == 1) return "dirty";
    return std::nullopt;
  }
  if (context == "qemu:allocation-depth") {
    if (type == 0) return "absent";
    if (type == 1) return "local";
    return "backing depth " + std::to_string(type);
  }
  return std::nullopt;
}

}  // namespace

std::vector<map_extent> context_map(connection& c, bool missing_is_data, const std::string& name) {
  auto& m = c.machine();
  const auto& n = m.negotiated();
  const std::uint64_t size = n.export_size;
  std::vector<map_extent> map;
  auto add = [&](std::uint64_t off, std::uint64_t len, std::uint64_t flags) {
    if (!map.empty() && map.back().flags == flags && map.back().offset + map.back().length == off)
      map.back().length += len;
    else
      map.push_back({off, len, flags});
  };
  std::optional<std::uint32_t> id;  // of the one context asked for (open_connection)
  for (std::size_t i = 0; i < n.meta_context_count; ++i)
    if (n.meta_contexts[i].query_index == 0) id = n.meta_contexts[i].id;
  if (!id) {
    if (!missing_is_data) fail("--map: server does not support metadata context \"" + name + "\"");
    std::fprintf(stderr, "nbdwire-client: the server offers no base:allocation context; the whole export is data\n");
    if (size != 0) add(0, size, 0);
    return map;
  }
  // One request at a time, as long as the connection allows. A server may describe less
  // than asked, and its last extent may run past the request.
  std::uint64_t pos = 0;
  while (pos < size) {
    const auto ask = *nbdwire::split_requests(n, nbdwire::command::block_status, pos, size - pos).begin();
    c.submit(nbdwire::command::block_status, pos, ask.length, 0, "BLOCK_STATUS");
    std::uint64_t covered = pos;
    for (;;) {
      const auto ev = c.next();
      if (ev.kind == event_kind::extent) {
        if (ev.context_id != *id || ev.offset != covered || ev.offset >= size) continue;
        const std::uint64_t end = std::min(size, ev.offset + std::min(ev.length, size - ev.offset));
        add(ev.offset, end - ev.offset, ev.extent_flags);
        covered = end;
        continue;
      }
      if (ev.kind != event_kind::reply) fail_event(ev, "while mapping");
      if (ev.status != nbdwire::nbd_error::ok) {
        const std::string msg = c.take_error_message(ev.tag);
        fail("BLOCK_STATUS at offset " + std::to_string(pos) + " failed: " + std::string(nbdwire::to_string(ev.status)) +
             (msg.empty() ? "" : " (" + msg + ")"));
      }
      break;
    }
    if (covered == pos) fail("the server described nothing at offset " + std::to_string(pos));
    pos = covered;
  }
  return map;
}

/// A server without the context has no holes to report, so everything is data.
std::vector<map_extent> allocation_map(connection& c) { return context_map(c, true, "base:allocation"); }

int cmd_map(const options& o) {
  using namespace std::string_literals;
  need_args(o, 2, "map URI [--json] [--map=CONTEXT] [--totals]");
  const auto uri = examples::parse_client_uri(o.positional[1]);
  const std::string context = o.map.value_or("base:allocation");
  const std::string_view contexts[] = {context};
  auto c = open_connection(uri, o, contexts);
  negotiate(*c, uri.export_name);
  const auto map = context_map(*c, context == "base:allocation", context);
  const std::uint64_t size = c->machine().negotiated().export_size;
  c->shut_down();
  // The layouts of nbdinfo --map, so the two can be compared line by line.
  std::string out;
  char line[160];
  if (o.totals) {
    std::map<std::uint64_t, std::uint64_t> totals;  // type -> bytes, by type as nbdinfo sorts them
    for (const auto& e : map) totals[e.flags] += e.length;
    if (size == 0) out = o.json ? "[]\n" : "";
    if (size != 0 && o.json) out = "[\n";
    bool comma = false;
    for (const auto& [type, bytes] : size ? totals : decltype(totals){}) {
      const double percent = 100.0 * static_cast<double>(bytes) / static_cast<double>(size);
      const auto d = type_description(context, type);
      const auto b = static_cast<unsigned long long>(bytes), t = static_cast<unsigned long long>(type);
      if (o.json) {
        std::snprintf(line, sizeof line, "%s{ \"size\": %llu, \"percent\": %g, \"type\": %llu", comma ? ",\n" : "", b,
                      percent, t);
        out += line;
        if (d) out += ", \"description\": " + json_string(*d);
        out += " }";
        comma = true;
      } else {
        std::snprintf(line, sizeof line, "%10llu %5.1f%% %3llu", b, percent, t);
        out += line;
        if (d) out += " " + *d;
        out += "\n";
      }
    }
    if (size != 0 && o.json) out += "\n]\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  if (o.json) out = "[\n";
  for (std::size_t i = 0; i < map.size(); ++i) {
    const auto& e = map[i];
    const auto d = type_description(context, e.flags);
    const auto off = static_cast<unsigned long long>(e.offset), len = static_cast<unsigned long long>(e.length),
               type = static_cast<unsigned long long>(e.flags);
    if (o.json) {
      std::snprintf(line, sizeof line, "%s{ \"offset\": %llu, \"length\": %llu, \"type\": %llu", i ? ",\n" : "", off,
                    len, type);
      out += line;
      if (d) out += ", \"description\": " + json_string(*d);
      out += "}";
    } else {
      std::snprintf(line, sizeof line, "%10llu  %10llu  %3llu", off, len, type);
      out += line;
      if (d) out += "  " + *d;
      out += "\n";
    }
  }
  if (o.json) out += "\n]\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace client_app
