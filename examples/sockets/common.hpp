// SPDX-License-Identifier: MIT
// Shared by the socket examples: sizes, host:port parsing, NBD URIs (through nbdwire/uri.hpp),
// socket set-up, and small error helpers. Nothing here knows the NBD protocol; that lives in
// include/nbdwire.
#pragma once

#include <fcntl.h>        // fcntl: non-blocking sockets
#include <netdb.h>        // getaddrinfo
#include <netinet/in.h>   // sockaddr_in, sockaddr_in6
#include <netinet/tcp.h>  // TCP_NODELAY
#include <sys/socket.h>   // socket, connect, bind
#include <sys/stat.h>     // stat: stale Unix socket check
#include <sys/uio.h>      // iovec: send_plan segments
#include <sys/un.h>       // sockaddr_un
#include <unistd.h>       // close

#include <arpa/inet.h>  // inet_ntop
#include <cerrno>       // errno
#include <cstdint>      // fixed-width integers
#include <cstdio>       // std::snprintf
#include <cstring>      // std::strerror, std::memcpy
#include <array>        // iovec arrays
#include <iterator>     // std::size
#include <optional>     // parse results
#include <stdexcept>    // std::runtime_error: the examples report failures by exception
#include <string>       // std::string
#include <string_view>  // std::string_view

#include "nbdwire/constants.hpp"
#include "nbdwire/transfer.hpp"
#include "nbdwire/uri.hpp"

namespace examples {

/// One failure, already worded for the user; main() prints it and exits nonzero.
struct failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& msg) { throw failure(msg); }
[[noreturn]] inline void fail_errno(const std::string& what, int err = errno) {
  throw failure(what + ": " + std::strerror(err));
}

/// A byte count: plain digits or digits with a binary suffix K, M, G, T (optionally "iB").
inline std::optional<std::uint64_t> parse_size(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  std::size_t i = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    const auto d = static_cast<std::uint64_t>(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  if (i == 0) return std::nullopt;
  std::string_view suffix = s.substr(i);
  unsigned shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      case 't': case 'T': shift = 40; break;
      case 'b': case 'B': shift = 0; break;
      default: return std::nullopt;
    }
    suffix.remove_prefix(1);
    if (shift != 0 && (suffix == "iB" || suffix == "ib" || suffix == "B")) suffix = {};
    if (!suffix.empty()) return std::nullopt;
  }
  if (shift != 0 && v > (UINT64_MAX >> shift)) return std::nullopt;
  return v << shift;
}

/// "1 GiB"-style rendering for messages and progress.
inline std::string human_size(std::uint64_t v) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double d = static_cast<double>(v);
  std::size_t u = 0;
  while (d >= 1024.0 && u + 1 < std::size(units)) {
    d /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(v));
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", d, units[u]);
  return buf;
}

/// A command line, one argument at a time: `while (args.next())` walks it, current() is the
/// argument, value() takes the one after an option (failing with "OPT needs a value (try
/// --help)" when there is none), and help() tells --help and -h.
class arguments {
 public:
  arguments(int argc, char** argv) : argc_(argc), argv_(argv) {}
  /// The next argument. "--name=VALUE" is taken as "--name" with VALUE (value() returns it);
  /// an option given a value it does not take is an error.
  bool next() {
    if (inline_) fail(current_ + " takes no value (try --help)");
    if (++i_ >= argc_) return false;
    current_ = argv_[i_];
    if (const auto eq = current_.find('='); current_.starts_with("--") && eq != std::string::npos) {
      inline_ = current_.substr(eq + 1);
      current_.resize(eq);
    }
    return true;
  }
  [[nodiscard]] const std::string& current() const { return current_; }
  [[nodiscard]] bool help() const { return current_ == "--help" || current_ == "-h"; }
  std::string value() {
    if (inline_) {
      std::string v = std::move(*inline_);
      inline_.reset();
      return v;
    }
    if (i_ + 1 >= argc_) fail(current_ + " needs a value (try --help)");
    return argv_[++i_];
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string current_;
  std::optional<std::string> inline_;  // VALUE of "--name=VALUE", until value() takes it
};

/// Where to listen or connect: a TCP host and port, or a Unix socket path.
struct endpoint {
  bool is_unix = false;
  std::string host = "127.0.0.1";
  std::uint16_t port = nbdwire::default_port;
  std::string path;

  [[nodiscard]] std::string to_string() const {
    if (is_unix) return "unix:" + path;
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
  }
};

inline std::optional<std::uint16_t> parse_port(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

/// HOST:PORT, [IPv6]:PORT, HOST (default port) or [IPv6].
inline std::optional<endpoint> parse_host_port(std::string_view s, std::uint16_t default_port) {
  endpoint e;
  e.port = default_port;
  std::string_view port;
  if (!s.empty() && s[0] == '[') {
    const auto close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    e.host = std::string(s.substr(1, close - 1));
    const auto rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return std::nullopt;
      port = rest.substr(1);
      if (port.empty()) return std::nullopt;
    }
  } else {
    const auto colon = s.rfind(':');
    if (colon != std::string_view::npos) {
      if (s.find(':') != colon) return std::nullopt;  // bare IPv6 needs brackets
      e.host = std::string(s.substr(0, colon));
      port = s.substr(colon + 1);
      if (port.empty()) return std::nullopt;
    } else {
      e.host = std::string(s);
    }
  }
  if (e.host.empty()) return std::nullopt;
  if (!port.empty()) {
    const auto p = parse_port(port);
    if (!p) return std::nullopt;
    e.port = *p;
  }
  return e;
}

/// Where an NBD URI points: TCP or a Unix socket, and the export. tls_uri.hpp parses one
/// (with nbdwire::parse_uri, the NBD URI standard) together with its TLS settings.
struct nbd_uri {
  endpoint where;
  std::string export_name;
};

/// A send_plan's segments as the message of one sendmsg(); `iov` holds them.
template <std::size_t N>
msghdr plan_message(const nbdwire::send_plan<N>& plan, std::array<iovec, N>& iov) {
  std::size_t n = 0;
  for (const auto& seg : plan.segments()) iov[n++] = {const_cast<std::byte*>(seg.base), seg.len};
  msghdr mh{};
  mh.msg_iov = iov.data();
  mh.msg_iovlen = n;
  return mh;
}

/// How send_queued() stopped.
enum class send_status {
  done,         ///< all queued output is sent
  would_block,  ///< the socket is full (EAGAIN); wait for POLLOUT
  stopped,      ///< at a payload the mapper did not give: the caller sends it another way
  failed,       ///< sendmsg() failed (errno says why) or the machine refused the accounting
};

/// Sends a machine's queued output, headers and payloads (each mapped to the caller's memory
/// by `map`, as send_plan takes it) in one sendmsg() per plan, until all is sent or the socket
/// is full. `on_sent(const payload_span&)` is called for every payload sent to its end. The one
/// send loop of the adapters: handshakes, the client's transfers, the FUSE I/O thread.
template <class Machine, class Map, class OnSent>
send_status send_queued(int fd, Machine& m, Map&& map, OnSent&& on_sent) {
  for (;;) {
    nbdwire::send_plan<16> plan(m, map);
    if (plan.empty()) return plan.stopped_at() ? send_status::stopped : send_status::done;
    std::array<iovec, 16> iov;
    const msghdr mh = plan_message(plan, iov);
    ssize_t w = 0;
    if (mh.msg_iovlen != 0) {
      // A payload sent another way right after these bytes: let TCP join them.
      w = sendmsg(fd, &mh, MSG_NOSIGNAL | (plan.stopped_at() ? MSG_MORE : 0));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? send_status::would_block : send_status::failed;
    }
    if (!plan.advance(m, static_cast<std::size_t>(w), on_sent)) {
      errno = EPROTO;
      return send_status::failed;
    }
  }
}

/// The same for output without payloads (handshakes).
template <class Machine>
send_status send_queued(int fd, Machine& m) {
  return send_queued(fd, m, [](const nbdwire::payload_span&) { return nbdwire::bytes_view{}; },
                     [](const nbdwire::payload_span&) {});
}

/// Feeds `in` to a machine, handing every event to `on_event` (which returns false to stop
/// early), until the machine needs more input, is blocked, or ends. Returns the bytes used
/// and the last event. The one receive loop of event-driven adapters.
template <class Machine, class OnEvent>
nbdwire::receive_result feed(Machine& m, nbdwire::bytes_view in, OnEvent&& on_event) {
  std::size_t used = 0;
  nbdwire::receive_result r;
  do {
    r = m.receive(in.subspan(used));
    used += r.consumed;
    if (!on_event(r.ev)) break;
  } while (r.call_again());
  r.consumed = used;
  return r;
}

inline void set_nonblocking(int fd) {
  const int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) fail_errno("fcntl(O_NONBLOCK)");
}

inline void set_nodelay(int fd) {
  // Headers are small and latency-bound; best effort (Unix sockets refuse it).
  const int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

inline sockaddr_un unix_address(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) fail("Unix socket path too long: " + path);
  std::memcpy(sa.sun_path, path.data(), path.size());
  return sa;
}

/// A Unix socket's send buffer is fixed (TCP's grows by itself). Room for a few 1 MiB
/// messages means fewer partial sends, each followed by a wait until the socket is writable:
/// the server's 1 MiB READs at QD8 went from 1.9-2.0 to 2.1-2.5 GiB/s and `copy FILE URI`
/// of 512 MiB from 0.48-0.69 s to 0.38-0.48 s (docs/benchmarks.md). The kernel caps the
/// value at net.core.wmem_max.
inline void set_unix_send_buffer(int fd) {
  constexpr int bytes = 1024 * 1024;
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

/// A blocking connected socket to `e`; throws a failure naming the endpoint.
inline int connect_to(const endpoint& e) {
  if (e.is_unix) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail_errno("socket");
    set_unix_send_buffer(fd);
    const auto sa = unix_address(e.path);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) < 0) {
      const int err = errno;
      close(fd);
      fail_errno("cannot connect to " + e.to_string(), err);
    }
    return fd;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(e.port);
  if (const int rc = getaddrinfo(e.host.c_str(), port.c_str(), &hints, &res); rc != 0)
    fail("cannot resolve " + e.host + ": " + gai_strerror(rc));
  int last_err = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      freeaddrinfo(res);
      set_nodelay(fd);
      return fd;
    }
    last_err = errno;
    close(fd);
  }
  freeaddrinfo(res);
  fail_errno("cannot connect to " + e.to_string(), last_err);
}

/// A non-blocking listening socket on `e`. For TCP, `e.port` is updated to the bound port
/// (so port 0 picks a free one and the caller can print it).
inline int listen_on(endpoint& e) {
  if (e.is_unix) {
    // A socket file left by an earlier run would make bind() fail. It is removed only when
    // nothing answers on it, so a running server is never cut off.
    const auto sa = unix_address(e.path);
    struct stat st{};
    if (lstat(e.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const bool live = probe >= 0 && connect(probe, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0;
      if (probe >= 0) close(probe);
      if (live) fail("cannot bind " + e.to_string() + ": another server is listening there");
      unlink(e.path.c_str());
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) fail_errno("socket");
    if (bind(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) < 0) {
      const int err = errno;
      close(fd);
      fail_errno("cannot bind " + e.to_string(), err);
    }
    if (listen(fd, 64) < 0) fail_errno("listen");
    return fd;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(e.port);
  if (const int rc = getaddrinfo(e.host.c_str(), port.c_str(), &hints, &res); rc != 0)
    fail("cannot resolve " + e.host + ": " + gai_strerror(rc));
  int last_err = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    const int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
        char buf[INET6_ADDRSTRLEN] = {};
        if (ss.ss_family == AF_INET) {
          const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
          e.port = ntohs(sin->sin_port);
          if (inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf)) e.host = buf;
        } else if (ss.ss_family == AF_INET6) {
          const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
          e.port = ntohs(sin6->sin6_port);
          if (inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf)) e.host = buf;
        }
      }
      freeaddrinfo(res);
      return fd;
    }
    last_err = errno;
    close(fd);
  }
  freeaddrinfo(res);
  fail_errno("cannot listen on " + e.to_string(), last_err);
}

/// The peer of an accepted socket, for log lines.
inline std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(sin->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
    // Appended rather than "[" + std::string(buf): GCC 12 warns (-Wrestrict) on that form.
    std::string name = "[";
    name += buf;
    return name + "]:" + std::to_string(ntohs(sin6->sin6_port));
  }
  return "unix";
}

/// Writes all of `len` bytes to a blocking descriptor (stdout, a file).
inline void write_all(int fd, const void* data, std::size_t len, const std::string& what) {
  const auto* p = static_cast<const char*>(data);
  while (len > 0) {
    const ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("write to " + what);
    }
    p += n;
    len -= static_cast<std::size_t>(n);
  }
}

/// pwrite() all of it at `offset`, retrying short writes and EINTR; throws on errors.
inline void pwrite_all(int fd, const void* data, std::size_t len, off_t offset, const std::string& what) {
  const auto* p = static_cast<const char*>(data);
  while (len > 0) {
    const ssize_t n = pwrite(fd, p, len, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("write to " + what);
    }
    p += n;
    offset += n;
    len -= static_cast<std::size_t>(n);
  }
}

/// Reads until `len` bytes or end of input; returns the count read.
inline std::size_t read_full(int fd, void* data, std::size_t len, const std::string& what) {
  auto* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < len) {
    const ssize_t n = read(fd, p + got, len - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("read from " + what);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

}  // namespace examples
