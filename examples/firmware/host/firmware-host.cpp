// SPDX-License-Identifier: MIT
// firmware-host: the firmware shim on a POSIX host, over a non-blocking TCP socket that plays
// the firmware's network stack. The tests drive real servers through it.
//
//   firmware-host [--timeout-ms N] ROOT-PATH OP...
//     info                        sectors, flags, request size, RAM of the shim (stdout)
//     read:LBA:COUNT:FILE         COUNT sectors at LBA into FILE
//     write:LBA:COUNT:FILE        COUNT sectors at LBA from FILE (exactly COUNT * 512 bytes)
//     flush
//     expect=STATUS:OP            OP must fail with STATUS (e.g. RANGE, READ_ONLY); go on after it
//   All OPs run on one connection. Exit status: 0 all OPs as expected, 1 an OP not as
//   expected, 2 usage, 3 open failed (stderr names the status).
#include "../nbd_disk.hpp"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

struct socket_transport {
  int fd = -1;
};

int tcp_connect(void* ctx, const char* host, std::uint16_t port) {
  auto* s = static_cast<socket_transport*>(ctx);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const std::string service = std::to_string(port);
  if (getaddrinfo(host, service.c_str(), &hints, &list) != 0) return -1;
  for (addrinfo* a = list; a; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // Non-blocking, as a firmware stack is: the handshake starts once the connection is up.
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) {
      s->fd = fd;
      break;
    }
    close(fd);
  }
  freeaddrinfo(list);
  return s->fd < 0 ? -1 : 0;
}

bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ENOTCONN; }

long tcp_send(void* ctx, const void* data, std::size_t len) {
  const ssize_t n = send(static_cast<socket_transport*>(ctx)->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n >= 0) return static_cast<long>(n);
  return would_block(errno) ? 0 : NBD_TRANSPORT_ERROR;
}

long tcp_recv(void* ctx, void* buf, std::size_t len) {
  const ssize_t n = recv(static_cast<socket_transport*>(ctx)->fd, buf, len, MSG_DONTWAIT);
  if (n > 0) return static_cast<long>(n);
  if (n == 0) return NBD_TRANSPORT_CLOSED;
  return would_block(errno) ? 0 : NBD_TRANSPORT_ERROR;
}

void tcp_poll(void* ctx, unsigned flags) {
  pollfd p{static_cast<socket_transport*>(ctx)->fd, POLLIN, 0};
  if (flags & NBD_POLL_SEND) p.events |= POLLOUT;
  (void)poll(&p, 1, 10);
}

std::uint32_t ms_ticks(void*) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint32_t>(static_cast<std::uint64_t>(ts.tv_sec) * 1000u +
                                    static_cast<std::uint64_t>(ts.tv_nsec) / 1000000u);
}

void tcp_close(void* ctx) {
  auto* s = static_cast<socket_transport*>(ctx);
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
}

const char* status_name(int s) {
  switch (s) {
    case NBD_DISK_OK: return "OK";
    case NBD_DISK_BAD_PATH: return "BAD_PATH";
    case NBD_DISK_BUSY: return "BUSY";
    case NBD_DISK_NOT_OPEN: return "NOT_OPEN";
    case NBD_DISK_TRANSPORT: return "TRANSPORT";
    case NBD_DISK_TIMEOUT: return "TIMEOUT";
    case NBD_DISK_PROTOCOL: return "PROTOCOL";
    case NBD_DISK_REFUSED: return "REFUSED";
    case NBD_DISK_RANGE: return "RANGE";
    case NBD_DISK_READ_ONLY: return "READ_ONLY";
    case NBD_DISK_IO: return "IO";
    case NBD_DISK_UNSUPPORTED: return "UNSUPPORTED";
    default: return "?";
  }
}

void report(const char* what, int s) {
  std::fprintf(stderr, "firmware-host: %s: %s (%s, detail %ld)\n", what, status_name(s), nbd_disk_strerror(s),
               nbd_disk_detail());
}

bool parse_u64(const std::string& s, std::uint64_t& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  v = std::strtoull(s.c_str(), &end, 10);
  return errno == 0 && *end == '\0';
}

/// Splits "a:b:c" into at most `n` fields; the last field keeps any further colons.
std::vector<std::string> fields(const std::string& s, std::size_t n) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (out.size() + 1 < n) {
    const std::size_t colon = s.find(':', start);
    if (colon == std::string::npos) break;
    out.push_back(s.substr(start, colon - start));
    start = colon + 1;
  }
  out.push_back(s.substr(start));
  return out;
}

/// Runs one OP; returns the shim's status, or 1 for a usage or local file error.
int run_op(const std::string& op) {
  if (op == "info") {
    nbd_disk_info info{};
    const int s = nbd_disk_get_info(&info);
    if (s == NBD_DISK_OK)
      std::printf("sectors=%" PRIu64 " bytes=%" PRIu64 " read_only=%u can_flush=%u max_sectors=%" PRIu32
                  " ram=%zu\n",
                  info.sectors, info.export_bytes, info.read_only, info.can_flush, info.max_sectors_per_request,
                  nbd_disk_ram_bytes());
    return s;
  }
  if (op == "flush") return nbd_disk_flush();
  const auto f = fields(op, 4);
  std::uint64_t lba = 0, count = 0;
  if (f.size() != 4 || (f[0] != "read" && f[0] != "write") || !parse_u64(f[1], lba) || !parse_u64(f[2], count) ||
      count > 0xffffffffu) {
    std::fprintf(stderr, "firmware-host: bad operation '%s'\n", op.c_str());
    return 1;
  }
  std::vector<unsigned char> buf(static_cast<std::size_t>(count) * NBD_DISK_SECTOR_SIZE);
  if (f[0] == "read") {
    const int s = nbd_disk_read(lba, static_cast<std::uint32_t>(count), buf.data());
    if (s != NBD_DISK_OK) return s;
    std::FILE* out = std::fopen(f[3].c_str(), "wb");
    const bool ok = out && std::fwrite(buf.data(), 1, buf.size(), out) == buf.size();
    if (out && std::fclose(out) != 0) return 1;
    return ok ? NBD_DISK_OK : 1;
  }
  std::FILE* in = std::fopen(f[3].c_str(), "rb");
  if (!in) return 1;
  const std::size_t got = std::fread(buf.data(), 1, buf.size(), in);
  const bool extra = std::fgetc(in) != EOF;
  std::fclose(in);
  if (got != buf.size() || extra) {
    std::fprintf(stderr, "firmware-host: %s does not hold exactly %" PRIu64 " sectors\n", f[3].c_str(), count);
    return 1;
  }
  return nbd_disk_write(lba, static_cast<std::uint32_t>(count), buf.data());
}

}  // namespace

int main(int argc, char** argv) {
  int i = 1;
  std::uint64_t timeout_ms = 20000;
  if (i + 1 < argc && std::strcmp(argv[i], "--timeout-ms") == 0) {
    if (!parse_u64(argv[i + 1], timeout_ms) || timeout_ms > 0xffffffffu) return 2;
    i += 2;
  }
  if (i >= argc) {
    std::fprintf(stderr, "usage: firmware-host [--timeout-ms N] ROOT-PATH OP...\n");
    return 2;
  }
  socket_transport sock;
  const nbd_transport t{&sock, tcp_connect, tcp_send, tcp_recv, tcp_poll, ms_ticks, tcp_close,
                        static_cast<std::uint32_t>(timeout_ms)};
  const char* root = argv[i++];
  if (const int s = nbd_disk_open(root, &t); s != NBD_DISK_OK) {
    report("open", s);
    return 3;
  }
  std::fprintf(stderr, "firmware-host: opened %s\n", root);

  int rc = 0;
  for (; i < argc && rc == 0; ++i) {
    std::string op = argv[i];
    int expected = NBD_DISK_OK;
    if (op.rfind("expect=", 0) == 0) {
      const auto f = fields(op.substr(7), 2);
      expected = 1;
      for (int s = NBD_DISK_OK; s >= NBD_DISK_UNSUPPORTED; --s)
        if (f[0] == status_name(s)) expected = s;
      if (expected == 1 || f.size() != 2) {
        std::fprintf(stderr, "firmware-host: bad expectation '%s'\n", op.c_str());
        rc = 2;
        break;
      }
      op = f[1];
    }
    const int s = run_op(op);
    if (s == 1) {
      rc = 1;
    } else if (s != expected) {
      report(op.c_str(), s);
      std::fprintf(stderr, "firmware-host: %s: expected %s\n", op.c_str(), status_name(expected));
      rc = 1;
    } else {
      std::fprintf(stderr, "firmware-host: %s: %s as expected\n", op.c_str(), status_name(s));
    }
  }
  if (const int s = nbd_disk_close(); s != NBD_DISK_OK) {
    report("close", s);
    if (rc == 0) rc = 1;
  }
  return rc;
}
