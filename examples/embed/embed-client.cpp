// SPDX-License-Identifier: MIT
// embed-client URI OFFSET LENGTH: nbdwire::client in a blocking loop (docs/embedding.md). Reads a range of
// the export an nbd:// or nbd+unix:// URI names, with 8 requests in flight, and writes it to stdout.
#include <nbdwire/nbdwire.hpp>
#include <nbdwire/transfer.hpp>
#include <nbdwire/uri.hpp>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
namespace {
std::string esc(std::string_view s, std::string o = {}) {  // printable ASCII as it is; others, and '\', as \xNN
  for (const char ch : s)
    if (ch >= 0x20 && ch < 0x7f && ch != '\\') o += ch;
    else o += {'\\', 'x', "0123456789abcdef"[(ch >> 4) & 15], "0123456789abcdef"[ch & 15]};
  return o;
}
std::string text(nbdwire::bytes_view b) { return b.empty() ? "" : ": " + esc({(const char*)b.data(), b.size()}); }
int die(const std::string& why) { return std::fprintf(stderr, "embed-client: %s\n", why.c_str()), 1; }
int dial(const nbdwire::uri& u) {
  if (u.transport == nbdwire::uri_transport::unix_socket) {
    sockaddr_un a{.sun_family = AF_UNIX, .sun_path = {}};
    std::memcpy(a.sun_path, u.socket().data(), u.socket().size());
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + u.socket().size());
    return connect(fd, reinterpret_cast<sockaddr*>(&a), len) == 0 ? fd : (close(fd), -1);
  }
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(u.host().empty() ? "localhost" : u.host_c_str(), std::to_string(u.port).c_str(), &hints, &res))
    return -1;
  int fd = -1;
  for (auto* ai = res; ai && fd < 0; ai = ai->ai_next)
    if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen))
      fd = (close(fd), -1);
  freeaddrinfo(res);
  return fd;
}
}  // namespace
int main(int argc, char** argv) {
  using enum nbdwire::event_kind;
  if (argc != 4) return std::fprintf(stderr, "usage: embed-client URI OFFSET LENGTH\n"), 2;
  const auto u = nbdwire::parse_uri(argv[1]);
  if (!u) return die("bad URI: " + std::string(to_string(u.error())));
  if (u->wants_tls() || u->transport == nbdwire::uri_transport::vsock) return die("only plain TCP and Unix sockets");
  const std::uint64_t off = std::strtoull(argv[2], nullptr, 0), end = off + std::strtoull(argv[3], nullptr, 0);
  if (end <= off) return die("LENGTH must be above 0");
  std::string message, name = "export '" + esc(u->export_name()) + "'";  // message: of the last error chunk
  const int fd = dial(*u);
  if (fd < 0) return die("cannot connect to " + esc(argv[1]) + ": " + std::strerror(errno));
  nbdwire::client c;  // its greeting event starts the handshake
  std::vector<std::byte> data(end - off), buf(64 * 1024);  // the result; input that is not READ data
  std::uint64_t at = off, most = 0, done = 0;  // next read; max_request_length(); bytes read
  for (nbdwire::bytes_view in;;) {
    for (ssize_t n; !c.pending_output().empty(); c.consume_output(static_cast<std::size_t>(n)))  // (no payloads)
      if ((n = send(fd, c.pending_output().data(), c.pending_output().size(), MSG_NOSIGNAL)) < 0) return die("send");
    if (in.empty()) {  // READ data due next goes straight into `data`; anything else into `buf`
      const auto p = c.incoming_payload();
      const ssize_t n = p ? recv(fd, &data[p->offset - off], static_cast<std::size_t>(p->length), 0)
                          : recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0)  // the end: clean after the last reply and our DISC
        return n == 0 && c.on_eof().kind == disconnected && done == data.size() ? 0 : die(name + ": connection lost: " +
               (n < 0 ? std::strerror(errno) : to_string(c.error()).data()));
      if (p) (void)c.consume_incoming_payload(static_cast<std::uint64_t>(n));
      else in = nbdwire::bytes_view(buf.data(), static_cast<std::size_t>(n));
    }
    nbdwire::receive_result r;
    do {
      r = c.receive(in);
      in = in.subspan(r.consumed);
      switch (const nbdwire::event& ev = r.ev; ev.kind) {
        case greeting: (void)c.go(u->export_name()); break;
        case option_refused: return die(name + " refused: " + std::string(to_string(ev.reply)) + text(ev.data));
        case ready: most = max_request_length(c.negotiated(), nbdwire::command::read); break;
        case payload: std::memcpy(&data[ev.offset - off], ev.data.data(), ev.data.size()); break;
        case read_hole: std::memset(&data[ev.offset - off], 0, ev.length); break;
        case error_chunk: message = text(ev.data); break;
        case reply:
          if (ev.status != nbdwire::nbd_error::ok)
            return die("read at " + std::to_string(ev.req.offset) + ": " + std::string(to_string(ev.status)) + message);
          if ((done += ev.req.length) < data.size()) break;
          if (!std::fwrite(data.data(), data.size(), 1, stdout) || std::fflush(stdout)) return die("stdout");
          (void)c.disconnect();  // NBD_CMD_DISC; the server closes the connection next
          break;
        case failed: return die(name + ": " + std::string(to_string(ev.error)));
        default: break;
      }
      for (std::uint64_t n; most && at < end && c.in_flight() < 8; at += n)  // keep 8 reads in flight
        if (const auto k = c.read(at, static_cast<std::uint32_t>(n = std::min(most, end - at))); !k)
          return die("read at " + std::to_string(at) + " refused: " + std::string(to_string(k.error())));
    } while (r.call_again());
  }
}
