// SPDX-License-Identifier: MIT
// Runs the code of docs/embedding.md: the epoll server serves the blocking client, the
// callback client (LIST, WRITE, READ back) and a client handed over to another thread after
// its handshake; a server handed over after its handshake serves the blocking client over a
// socketpair; then the sizes the guide states are printed.
#include "snippet_server-connection.hpp"
#include "snippet_server-epoll.hpp"
#include "snippet_client-blocking.hpp"
#include "snippet_client-callback.hpp"
#include "snippet_handover.hpp"
#include "snippet_sizes.hpp"
#include "snippet_trace.hpp"

#include <sys/eventfd.h>
#include <sys/un.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

sockaddr_un abstract_address(socklen_t& len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string name = "nbdwire-embedding-docs-" + std::to_string(getpid());
  std::memcpy(a.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: an abstract socket
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

int dial() {
  socklen_t len = 0;
  const sockaddr_un a = abstract_address(len);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr*>(&a), len) != 0) return -1;
  return fd;
}

bool check(bool ok, const char* what) {
  std::printf("%-60s %s\n", what, ok ? "ok" : "FAILED");
  return ok;
}

bool same(std::span<const std::byte> a, std::span<const std::byte> b) { return std::ranges::equal(a, b); }

}  // namespace

int main() {
  std::vector<std::byte> disk((8u << 20) + 3);
  for (std::size_t i = 0; i < disk.size(); ++i) disk[i] = static_cast<std::byte>((i * 131 + i / 4096) & 0xff);
  const std::vector<std::byte> original = disk;
  namespace tf = nbdwire::transmission_flag;
  const nbdwire::export_config exports[] = {
      {"disk", "", disk.size(), tf::send_flush | tf::send_trim | tf::send_write_zeroes | tf::can_multi_conn, {}}};
  nbdwire::server_config cfg;
  cfg.exports = exports;

  socklen_t len = 0;
  const sockaddr_un addr = abstract_address(len);
  const int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int stop = eventfd(0, EFD_CLOEXEC);
  if (lfd < 0 || stop < 0 || bind(lfd, reinterpret_cast<const sockaddr*>(&addr), len) != 0 || listen(lfd, 16) != 0) {
    std::perror("listen");
    return 1;
  }
  std::thread server([&] { guide::serve(lfd, stop, cfg, disk); });
  bool ok = true;
  std::vector<std::byte> source(disk.size());  // the callback client's WRITE data, by export offset
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<std::byte>((i * 7 + 3) & 0xff);
  const std::span<const std::byte> written = std::span<const std::byte>(source).subspan(4096, 300000);

  {  // the blocking client: several requests of at most 1 MiB in flight, an unaligned range
    const int fd = dial();
    std::vector<std::byte> got((3u << 20) + 5);
    const bool read = guide::read_range(fd, "disk", 12345, got);
    ok = check(read && same(got, std::span(original).subspan(12345, got.size())), "blocking client: read_range") && ok;
    close(fd);
  }
  {  // ... and an export the server does not have
    const int fd = dial();
    std::vector<std::byte> got(512);
    ok = check(!guide::read_range(fd, "nosuch", 0, got), "blocking client: a missing export returns false") && ok;
    close(fd);
  }
  {  // the callback client: LIST, then WRITE from `source`, then READ back
    guide::list_write_read h;
    h.offset = 4096;
    h.data = written;
    const int fd = dial();
    nbdwire::client c;
    const bool ran = guide::run(fd, c, h, source);
    ok = check(ran && h.ok && h.names == std::vector<std::string>{"disk"}, "callback client: list, write, read back") &&
         ok;
    close(fd);
  }
  {  // the callback client again, traced: its moves end where state() says it is
    guide::list_write_read h;
    h.offset = 4096;
    h.data = written;
    const int fd = dial();
    guide::traced_connection t{.id = 1};
    nbdwire::client c(guide::traced_config(t));
    const bool ran = guide::run(fd, c, h, source);
    ok = check(ran && h.ok && t.moves >= 6 && nbdwire::phase_of(t.last) == c.state(),
               "traced client: its moves end where state() is") &&
         ok;
    close(fd);
  }
  {  // a client handed over to another thread after its handshake
    const int fd = dial();
    std::vector<std::byte> rest, got(65536);
    const auto n = guide::client_handshake(fd, "disk", rest);
    bool read = false;
    if (n) std::thread([&] { read = guide::client_read_after_handover(fd, *n, rest, 1u << 20, got); }).join();
    ok = check(n && read && same(got, std::span(original).subspan(1u << 20, got.size())),
               "client hand-over: handshake here, transmission on a thread") &&
         ok;
    close(fd);
  }
  const std::uint64_t one = 1;
  (void)!write(stop, &one, sizeof one);
  server.join();
  close(lfd);
  ok = check(same(std::span(disk).subspan(4096, written.size()), written) &&
                 same(std::span(disk).first(4096), std::span(original).first(4096)),
             "the WRITE is in the export, and nothing else changed before it") &&
       ok;

  {  // a server handed over after its handshake, over a socketpair
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 1;
    std::thread handshake([&] {
      std::vector<std::byte> rest;
      if (const auto n = guide::server_handshake(sv[1], cfg, rest))
        std::thread([&, n = *n, rest] { guide::server_transmission(sv[1], cfg, n, rest, disk); }).join();
      close(sv[1]);  // the client sees the close after its DISC
    });
    std::vector<std::byte> got(2u << 20);
    const bool read = guide::read_range(sv[0], "disk", 7, got);
    handshake.join();
    ok = check(read && same(got, std::span(disk).subspan(7, got.size())), "server hand-over: read_range") && ok;
    close(sv[0]);
  }
  guide::print_sizes();
  return ok ? 0 : 1;
}
