// SPDX-License-Identifier: MIT
// nbdwire-client info URI [--json]: what the server says about an export, in nbdinfo's
// layout (text or JSON); --size, --can/--is, --map and --list go where nbdinfo sends them.
#include <fcntl.h>   // mkstemp
#include <unistd.h>  // write, unlink

#include <cstdio>   // popen
#include <cstdlib>  // mkstemp
#include <cstring>  // std::memcpy, std::memset

#include "commands.hpp"
#include "nbdinfo.hpp"
#include "output.hpp"

namespace client_app {

namespace {

constexpr std::uint32_t content_bytes = 8192;  // what nbdinfo hands to file(1)

/// The first bytes of the export, read with one READ; nothing when the read fails.
std::optional<std::vector<std::byte>> first_bytes(connection& c) {
  const auto& n = c.machine().negotiated();
  auto len = static_cast<std::uint32_t>(std::min<std::uint64_t>(n.export_size, content_bytes));
  const std::uint32_t min = n.block_size.minimum ? n.block_size.minimum : 1;
  if (len % min != 0) {
    len = (len + min - 1) / min * min;
    if (len > n.export_size) return std::nullopt;
  }
  std::vector<std::byte> buf(len);
  if (len == 0) return buf;
  c.submit(nbdwire::command::read, 0, len, 0, "READ");
  for (;;) {
    const auto ev = c.next();
    switch (ev.kind) {
      case event_kind::payload:
        if (ev.offset + ev.data.size() <= len) std::memcpy(buf.data() + ev.offset, ev.data.data(), ev.data.size());
        break;
      case event_kind::read_hole:
        if (ev.offset + ev.length <= len) std::memset(buf.data() + ev.offset, 0, static_cast<std::size_t>(ev.length));
        break;
      case event_kind::reply:
        if (ev.status != nbdwire::nbd_error::ok) return std::nullopt;
        return buf;
      default: fail_event(ev, "while reading the start of the export");
    }
  }
}

/// file(1)'s first line about `data`, as nbdinfo runs it ("file -b TEMPFILE").
std::optional<std::string> describe_content(const std::vector<std::byte>& data) {
  const char* dir = std::getenv("TMPDIR");
  std::string path = std::string(dir && *dir ? dir : "/tmp") + "/nbdwire-client.XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd < 0) examples::fail_errno("mkstemp");
  std::optional<std::string> line;
  try {
    examples::write_all(fd, data.data(), data.size(), path);
  } catch (...) {
    close(fd);
    unlink(path.c_str());
    throw;
  }
  close(fd);
  if (FILE* p = popen(("file -b '" + path + "'").c_str(), "r")) {
    char* buf = nullptr;
    std::size_t cap = 0;
    const ssize_t n = getline(&buf, &cap, p);
    if (n > 0) {
      line = std::string(buf, static_cast<std::size_t>(n));
      if (line->back() == '\n') line->pop_back();
    }
    std::free(buf);
    pclose(p);
  }
  unlink(path.c_str());
  return line;
}

}  // namespace

std::string nbdinfo_size(std::uint64_t size, bool* unit) {
  static constexpr const char* units[] = {"", "K", "M", "G", "T", "P", "E"};
  std::size_t u = 0;
  if (size != 0)
    while ((size & 1023) == 0 && u + 1 < std::size(units)) {
      size >>= 10;
      ++u;
    }
  if (unit) *unit = u != 0;
  return std::to_string(size) + units[u];
}

std::string export_uri(const examples::client_uri& uri, const std::string& name) {
  // The path is escaped as libxml2's xmlSaveUri() escapes it; the socket path is not.
  std::string path = "/";
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        std::strchr("-_.!~*'()/;:@&=+$,", c)) {
      path += ch;
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      path += buf;
    }
  }
  // Over TLS: nbds, the user name and the TLS parameters as they were given.
  std::string out = uri.tls ? "nbds" : "nbd";
  out += uri.where.is_unix ? "+unix://" : "://";
  if (examples::may_use_tls(uri) && !uri.user_raw.empty()) out.append(uri.user_raw).append("@");
  if (uri.where.is_unix) return out.append(path).append("?socket=").append(uri.where.path).append(uri.query_raw);
  const std::string& h = uri.where.host;
  if (h.find(':') != std::string::npos) out.append("[").append(h).append("]");
  else out.append(h);
  out.append(":").append(std::to_string(uri.where.port)).append(path);
  if (!uri.query_raw.empty()) out.append("?").append(uri.query_raw, 1);
  return out;
}

export_report probe_export(const options& o, const examples::client_uri& uri, const std::string& name,
                           bool probe_content) {
  auto c = open_connection(uri, o);
  const auto facts = negotiate(*c, name, true);
  export_report r;
  r.neg = c->machine().negotiated();
  r.name = facts.canonical_name ? *facts.canonical_name : facts.requested_name;
  r.description = facts.description;
  r.block_size = facts.block_size;
  r.uri = export_uri(uri, name);
  // libnbd lists contexts only over structured replies.
  r.contexts_shown = facts.contexts_listed && r.neg.structured_replies;
  r.contexts = facts.contexts;
  if (probe_content)
    if (const auto data = first_bytes(*c)) r.content = describe_content(*data);
  c->shut_down();
  return r;
}

int cmd_info(const options& o) {
  need_args(o, 2, "info URI [--json] [--size | --can F | --is F | --map[=CTX] [--totals] | --list]");
  if (o.list_all) return info_list(o);
  if (o.size_only || o.can) return info_query(o);
  if (o.map) return cmd_map(o);
  const auto uri = examples::parse_client_uri(o.positional[1]);
  const export_report r = probe_export(o, uri, uri.export_name, o.content.value_or(true));
  // Printed at once, only when everything is known: a failure prints nothing on stdout.
  std::string out = connection_header(r.neg, o.json) + export_text(r, o.json, true, true);
  if (o.json) out += "}\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace client_app
