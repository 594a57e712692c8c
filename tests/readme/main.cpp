// SPDX-License-Identifier: MIT
// Runs the README's nbd_read() against a server machine on the other end of a socketpair,
// once per handshake style it can meet, and checks the bytes it returns.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "readme_snippet.hpp"

namespace {

// A blocking server loop: enough to answer one client until it closes.
void serve(int fd, nbdwire::handshake_style style, std::vector<std::byte>& disk, std::string_view name = "disk") {
  const nbdwire::export_config exports[] = {{name, "", disk.size(), 0, {}}};
  nbdwire::server_config cfg;
  cfg.style = style;
  cfg.exports = exports;
  nbdwire::server s(cfg);
  std::array<std::byte, 4096> buf{};
  for (;;) {
    for (;;) {
      auto out = s.pending_output();
      if (!out.empty()) {
        const ssize_t n = send(fd, out.data(), out.size(), MSG_NOSIGNAL);
        if (n <= 0) return;
        s.consume_output(static_cast<std::size_t>(n));
        continue;
      }
      auto p = s.pending_payload();
      if (!p) break;
      const ssize_t n = send(fd, disk.data() + p->offset, p->length, MSG_NOSIGNAL);
      if (n <= 0) return;
      (void)s.consume_payload(static_cast<std::uint64_t>(n));
    }
    const ssize_t got = recv(fd, buf.data(), buf.size(), 0);
    if (got <= 0) return;
    std::span<const std::byte> in(buf.data(), static_cast<std::size_t>(got));
    nbdwire::receive_result r;
    do {
      r = s.receive(in);
      in = in.subspan(r.consumed);
      if (r.ev.kind == nbdwire::event_kind::request) (void)s.reply(r.ev.req);
    } while (r.call_again());
    if (s.finished() && s.drained()) return;
  }
}

// The README's client asks for export "disk"; a server without it refuses GO. The example
// must return false at once (before this change it waited in recv() for ever).
bool run_missing_export() {
  std::vector<std::byte> disk(4096);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return false;
  std::thread server([&] { serve(sv[1], nbdwire::handshake_style::fixed_newstyle, disk, "other"); });
  std::vector<std::byte> got(512);
  const bool ok = nbd_read(sv[0], got.data(), 0, 512);
  close(sv[0]);
  server.join();
  close(sv[1]);
  std::printf("missing export: nbd_read %s\n", ok ? "SUCCEEDED (wrong)" : "returned false");
  return !ok;
}

bool run(nbdwire::handshake_style style) {
  std::vector<std::byte> disk(1 << 20);
  for (std::size_t i = 0; i < disk.size(); ++i) disk[i] = static_cast<std::byte>(i * 31 + 7);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return false;
  std::thread server([&] { serve(sv[1], style, disk); });
  std::vector<std::byte> got(100000);
  const bool ok = nbd_read(sv[0], got.data(), 12345, static_cast<std::uint32_t>(got.size()));
  close(sv[0]);
  server.join();
  close(sv[1]);
  const bool same = ok && std::equal(got.begin(), got.end(), disk.begin() + 12345);
  std::printf("%s: nbd_read %s, data %s\n", std::string(nbdwire::to_string(style)).c_str(), ok ? "ok" : "FAILED",
              same ? "matches" : "DIFFERS");
  return same;
}

}  // namespace

int main() {
  bool ok = true;
  for (auto style : {nbdwire::handshake_style::fixed_newstyle, nbdwire::handshake_style::newstyle,
                     nbdwire::handshake_style::oldstyle})
    ok = run(style) && ok;
  ok = run_missing_export() && ok;
  return ok ? 0 : 1;
}
