// SPDX-License-Identifier: MIT
// nbdwire-socket-bound: what one stream socket allows for NBD-shaped traffic, with no protocol
// and no storage on either end.
//
//   nbdwire-socket-bound (--unix | --tcp) (--read | --write) --bs BYTES --qd N --seconds S
//                        [--span BYTES]
//
// A client process keeps N "requests" in flight over one connection (a 28-byte header, plus
// BYTES of payload for --write); a server process answers each with a 16-byte header (plus
// BYTES of payload for --read) sent from a fixed buffer. Both ends only move bytes, so the
// rate is an upper bound for any NBD server and client pair on the same machine and socket
// type. With --span, the server's payloads come from (or go to) successive BYTES-sized slots of
// a buffer of that size instead of one fixed buffer, as a server's storage would, and the
// client's come from (or go to) one buffer per request in flight, as fio's do: for large
// blocks the copies then miss the CPU caches, as they do between a real client and export.
// Prints one line: ios, seconds, ios_per_s, bytes_per_s, server_cpu_s and client_cpu_s (each
// process's user + system time).
#include <netinet/in.h>    // sockaddr_in
#include <netinet/tcp.h>   // TCP_NODELAY
#include <sys/resource.h>  // getrusage
#include <sys/socket.h>    // socketpair, socket, send, recv
#include <sys/uio.h>       // writev
#include <sys/wait.h>      // waitpid
#include <time.h>          // clock_gettime
#include <unistd.h>        // fork, close

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr std::size_t request_size = 28;
constexpr std::size_t reply_size = 16;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "nbdwire-socket-bound: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

double now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void send_all(int fd, const void* p, std::size_t n) {
  const auto* b = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("send");
    }
    b += w;
    n -= static_cast<std::size_t>(w);
  }
}

void writev_all(int fd, iovec* iov, int cnt) {
  while (cnt > 0) {
    ssize_t w = writev(fd, iov, cnt);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("writev");
    }
    while (cnt > 0 && static_cast<std::size_t>(w) >= iov->iov_len) {
      w -= static_cast<ssize_t>(iov->iov_len);
      ++iov;
      --cnt;
    }
    if (cnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + w;
      iov->iov_len -= static_cast<std::size_t>(w);
    }
  }
}

/// Receives exactly n bytes; false if the peer closed before the first byte.
bool recv_all(int fd, void* p, std::size_t n) {
  auto* b = static_cast<char*>(p);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = recv(fd, b + got, n - got, MSG_WAITALL);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("recv");
    }
    if (r == 0) {
      if (got == 0) return false;
      errno = EPROTO;
      die("recv: short message");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

double cpu_seconds(const rusage& ru) {
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/// The server: reads requests in bulk, answers each as soon as it is complete. Once its
/// storage is in memory it writes the CPU time spent so far to `ready`, so that neither the
/// time nor the CPU of filling it is counted.
void serve(int fd, int ready, bool read_mode, std::size_t bs, std::size_t span) {
  std::vector<char> in(256 * 1024), store(std::max(span, bs) + 1, 'x');
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double setup = cpu_seconds(ru);
  if (write(ready, &setup, sizeof setup) != sizeof setup) die("ready pipe");
  close(ready);
  const std::size_t slots = std::max<std::size_t>(span / bs, 1);
  std::size_t slot = 0;
  char header[reply_size] = {};
  std::size_t start = 0, end = 0;
  for (;;) {
    if (end - start < request_size) {
      std::memmove(in.data(), in.data() + start, end - start);
      end -= start;
      start = 0;
      const ssize_t r = recv(fd, in.data() + end, in.size() - end, 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        die("server recv");
      }
      if (r == 0) return;
      end += static_cast<std::size_t>(r);
      continue;
    }
    start += request_size;
    char* const payload = store.data() + slot * bs;
    slot = slot + 1 == slots ? 0 : slot + 1;
    if (read_mode) {
      iovec iov[2] = {{header, reply_size}, {payload, bs}};
      writev_all(fd, iov, 2);
    } else {
      // The payload: what is buffered already, then the rest straight from the socket.
      const std::size_t have = std::min(end - start, bs);
      std::memcpy(payload, in.data() + start, have);
      start += have;
      if (have < bs && !recv_all(fd, payload + have, bs - have)) return;
      send_all(fd, header, reply_size);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool tcp = false, read_mode = true;
  std::size_t bs = 4096, qd = 1, span = 0;
  double seconds = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "nbdwire-socket-bound: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--unix") tcp = false;
    else if (a == "--tcp") tcp = true;
    else if (a == "--read") read_mode = true;
    else if (a == "--write") read_mode = false;
    else if (a == "--bs") bs = std::strtoull(next(), nullptr, 0);
    else if (a == "--qd") qd = std::strtoull(next(), nullptr, 0);
    else if (a == "--seconds") seconds = std::strtod(next(), nullptr);
    else if (a == "--span") span = std::strtoull(next(), nullptr, 0);
    else {
      std::fprintf(stderr,
                   "usage: nbdwire-socket-bound (--unix | --tcp) (--read | --write) --bs BYTES --qd N --seconds S\n"
                   "                            [--span BYTES]\n");
      return 2;
    }
  }
  if (bs == 0 || qd == 0 || seconds <= 0) {
    std::fprintf(stderr, "nbdwire-socket-bound: --bs, --qd and --seconds must be positive\n");
    return 2;
  }

  int client = -1, server = -1;
  if (!tcp) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    client = sv[0];
    server = sv[1];
    // The server end gets the send buffer nbdwire-server asks for (examples/sockets/common.hpp),
    // so that the bound stays a bound for it; the client end keeps the default, as fio's
    // libnbd does. On a Unix socket the sender's buffer limits what is in flight.
    const int bytes = 1024 * 1024;
    setsockopt(server, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  } else {
    const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
      die("listen on 127.0.0.1");
    client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client < 0 || connect(client, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("connect");
    server = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (server < 0) die("accept");
    close(lfd);
    const int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }

  int ready[2];
  if (pipe(ready) != 0) die("pipe");
  const pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(client);
    close(ready[0]);
    serve(server, ready[1], read_mode, bs, span);
    _exit(0);
  }
  close(server);

  // One message buffer, or with --span one per request in flight, used in turn.
  const std::size_t buffers = span ? qd : 1;
  std::vector<std::vector<char>> requests(buffers, std::vector<char>(request_size + (read_mode ? 0 : bs)));
  std::vector<std::vector<char>> replies(buffers, std::vector<char>(reply_size + (read_mode ? bs : 0)));
  std::size_t turn = 0;
  std::uint64_t sent = 0, done = 0;
  close(ready[1]);
  double setup_cpu = 0;
  if (read(ready[0], &setup_cpu, sizeof setup_cpu) != sizeof setup_cpu) die("server start");
  close(ready[0]);
  const double t0 = now();
  const double stop = t0 + seconds;
  double t1 = t0;
  bool sending = true;
  for (; sent < qd; ++sent) send_all(client, requests[sent % buffers].data(), requests[sent % buffers].size());
  while (done < sent) {
    std::vector<char>& reply = replies[turn];
    std::vector<char>& request = requests[turn];
    turn = turn + 1 == buffers ? 0 : turn + 1;
    if (!recv_all(client, reply.data(), reply.size())) {
      errno = EPROTO;
      die("server closed early");
    }
    ++done;
    if (sending && (done & 63) == 0 && now() >= stop) sending = false;
    if (sending) {
      send_all(client, request.data(), request.size());
      ++sent;
    }
  }
  t1 = now();
  shutdown(client, SHUT_WR);
  int status = 0;
  rusage ru{};
  if (wait4(pid, &status, 0, &ru) != pid) die("wait4");
  const double cpu = cpu_seconds(ru) - setup_cpu;
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  const double client_cpu = cpu_seconds(self);
  const double el = t1 - t0;
  std::printf("ios=%llu seconds=%.3f ios_per_s=%.0f bytes_per_s=%.0f server_cpu_s=%.3f client_cpu_s=%.3f\n",
              static_cast<unsigned long long>(done), el, static_cast<double>(done) / el,
              static_cast<double>(done) * static_cast<double>(bs) / el, cpu, client_cpu);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
