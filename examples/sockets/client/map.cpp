// SPDX-License-Identifier: MIT
// nbdwire-client map URI [--json]: the allocation map (base:allocation), as nbdinfo --map.
#include <algorithm>  // std::min
#include <cstdio>     // std::snprintf

#include "commands.hpp"
#include "nbdwire/transfer.hpp"

namespace client_app {

namespace {

/// nbdinfo's words for base:allocation flags.
const char* allocation_description(std::uint64_t flags) {
  switch (flags) {
    case 0: return "data";
    case nbdwire::state_flag::hole: return "hole";
    case nbdwire::state_flag::zero: return "zero";
    case nbdwire::state_flag::hole | nbdwire::state_flag::zero: return "hole,zero";
    default: return nullptr;
  }
}

}  // namespace

/// A server without the context has no holes to report, so everything is data.
std::vector<map_extent> allocation_map(connection& c) {
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

int cmd_map(const options& o) {
  using namespace std::string_literals;
  need_args(o, 2, "map URI [--json]");
  const auto uri = examples::parse_nbd_uri(o.positional[1]);
  auto c = open_connection(uri, o, true);
  negotiate(*c, uri.export_name);
  const auto map = allocation_map(*c);
  c->shut_down();
  // The layout of nbdinfo --map, so the two can be compared line by line.
  std::string out = o.json ? "[\n" : "";
  char line[160];
  for (std::size_t i = 0; i < map.size(); ++i) {
    const auto& e = map[i];
    const char* d = allocation_description(e.flags);
    const auto off = static_cast<unsigned long long>(e.offset), len = static_cast<unsigned long long>(e.length),
               type = static_cast<unsigned long long>(e.flags);
    if (o.json) {
      std::snprintf(line, sizeof line, "%s{ \"offset\": %llu, \"length\": %llu, \"type\": %llu", i ? ",\n" : "", off,
                    len, type);
      out += line;
      if (d) out += ", \"description\": \""s + d + "\"";
      out += "}";
    } else {
      std::snprintf(line, sizeof line, "%10llu  %10llu  %3llu", off, len, type);
      out += line;
      if (d) out += "  "s + d;
      out += "\n";
    }
  }
  if (o.json) out += "\n]\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace client_app
