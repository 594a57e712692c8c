// SPDX-License-Identifier: MIT
// embed-server --unix PATH: nbdwire::server in one epoll loop (docs/embedding.md): a 64 MiB memory export
// "disk" for many clients; READ data goes out of it and WRITE data into it without copies.
#include <nbdwire/nbdwire.hpp>
#include <nbdwire/transfer.hpp>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

namespace {
namespace tf = nbdwire::transmission_flag;
constexpr std::uint64_t disk_size = 64u << 20;
std::byte disk[disk_size];  // zero pages until written
constexpr std::uint16_t flags = tf::send_flush | tf::send_fua | tf::send_trim | tf::send_write_zeroes |
                                tf::send_fast_zero | tf::send_cache | tf::can_multi_conn;  // all a memory export can
const nbdwire::export_config exports[] = {{"disk", "64 MiB in memory", disk_size, flags, {}}};
// The defaults: fixed newstyle, structured replies and extended headers accepted.
const nbdwire::server_config config = [] { nbdwire::server_config c; c.exports = exports; return c; }();
struct connection {
  explicit connection(int f) : fd(f) {}
  int fd;
  std::uint32_t mask = 0;          // what epoll waits for: EPOLLIN, or EPOLLOUT while output is queued
  nbdwire::server m{config};
  nbdwire::request writing{};      // the WRITE whose data is arriving: answered at its end
  std::size_t start = 0, end = 0;  // unconsumed input in `in`
  std::byte in[64 * 1024];
};
int ep = -1;
std::map<int, std::unique_ptr<connection>> conns;
nbdwire::bytes_view from_disk(const nbdwire::payload_span& p) { return {disk + p.offset, std::size_t(p.length)}; }
bool output_queued(const connection& c) { return !c.m.pending_output().empty() || c.m.pending_payload(); }

bool answer(connection& c, const nbdwire::request& r, nbdwire::nbd_error e = nbdwire::nbd_error::ok) {
  const auto res = c.m.reply(r, e);  // never outbox_full: the room was reserved at acceptance
  if (!res) std::fprintf(stderr, "embed-server: reply refused: %s\n", nbdwire::to_string(res.error()).data());
  return res.has_value();
}
// Carries out one request on the export. READ data is sent later, from `disk`, by send_out().
bool on_request(connection& c, const nbdwire::request& r, std::uint64_t payload) {
  using nbdwire::command;
  switch (r.cmd()) {
    case command::write: if (payload == 0) break; c.writing = r; return true;
    case command::trim: case command::write_zeroes: std::memset(disk + r.offset, 0, r.length); break;
    case command::read: case command::flush: case command::cache: break;
    default: return answer(c, r, nbdwire::nbd_error::einval);
  }
  return answer(c, r);
}
bool on_event(connection& c, const nbdwire::event& ev) {
  switch (ev.kind) {
    case nbdwire::event_kind::request: return on_request(c, ev.req, ev.remaining);
    case nbdwire::event_kind::payload:  // WRITE data that arrived with the header: copied from the input
      std::memcpy(disk + ev.offset, ev.data.data(), ev.data.size());
      return ev.remaining != 0 || answer(c, ev.req);
    case nbdwire::event_kind::failed:
      return std::fprintf(stderr, "embed-server: %s\n", nbdwire::to_string(ev.error).data()), false;
    default: return true;  // handshake progress, requests already refused, DISC, ABORT
  }
}
// Sends queued output, headers and READ data from `disk`, one sendmsg() per plan. False on a
// socket error; what a full socket does not take stays queued for EPOLLOUT.
bool send_out(connection& c) {
  for (;;) {
    nbdwire::send_plan plan(c.m, from_disk);
    if (plan.empty()) return true;
    iovec iov[16];
    msghdr mh{};
    mh.msg_iov = iov;
    for (const auto& s : plan.segments()) iov[mh.msg_iovlen++] = {const_cast<std::byte*>(s.base), s.len};
    const ssize_t sent = sendmsg(c.fd, &mh, MSG_NOSIGNAL);
    if (sent < 0) return errno == EAGAIN || errno == EINTR;
    (void)plan.advance(c.m, static_cast<std::size_t>(sent));  // a short write: the next one says EAGAIN
  }
}
// Runs a connection until it must wait for its socket. False: close it.
bool service(connection& c) {
  for (int reads = 0;;) {
    if (!send_out(c)) return false;
    if (c.m.finished() && c.m.drained()) return false;  // DISC or ABORT, and everything answered
    if (output_queued(c)) return true;                  // wait for EPOLLOUT before reading on
    if (c.start == c.end) {
      if (++reads > 16) return true;  // let other clients run; epoll reports us again
      const auto p = c.m.incoming_payload();
      const ssize_t n = p ? recv(c.fd, disk + p->offset, static_cast<std::size_t>(p->length), 0)
                          : recv(c.fd, c.in, sizeof c.in, 0);
      if (n < 0) return errno == EAGAIN || errno == EINTR;
      if (n == 0) return (void)c.m.on_eof(), false;
      if (p) {  // WRITE data received in place; the reply goes out once the last byte is in
        (void)c.m.consume_incoming_payload(static_cast<std::uint64_t>(n));
        if (!c.m.incoming_payload() && !answer(c, c.writing)) return false;
        continue;
      }
      c.start = 0, c.end = static_cast<std::size_t>(n);
    }
    nbdwire::receive_result r;
    do {  // ends at need_more, at the end, or at `blocked`: send_out() makes room, then feed again
      r = c.m.receive({c.in + c.start, c.end - c.start});
      c.start += r.consumed;
      if (!on_event(c, r.ev)) return false;
    } while (r.call_again());
  }
}
void step(connection& c) {
  const int fd = c.fd;
  if (!service(c)) return (void)close(fd), (void)conns.erase(fd);  // close() leaves the epoll set
  epoll_event e{static_cast<std::uint32_t>(output_queued(c) ? EPOLLOUT : EPOLLIN), {.fd = fd}};
  if (e.events != c.mask) epoll_ctl(ep, c.mask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &e);
  c.mask = e.events;
}
}  // namespace

int main(int argc, char** argv) {
  sockaddr_un addr{.sun_family = AF_UNIX, .sun_path = {}};
  if (argc != 3 || std::strcmp(argv[1], "--unix") != 0 || std::strlen(argv[2]) >= sizeof addr.sun_path)
    return std::fprintf(stderr, "usage: embed-server --unix PATH\n"), 2;
  std::strcpy(addr.sun_path, argv[2]);
  sigset_t sigs;  // SIGINT and SIGTERM arrive as input on `sig`
  sigemptyset(&sigs), sigaddset(&sigs, SIGINT), sigaddset(&sigs, SIGTERM), sigprocmask(SIG_BLOCK, &sigs, nullptr);
  const int sig = signalfd(-1, &sigs, SFD_CLOEXEC);
  const int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  unlink(argv[2]);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (sig < 0 || lfd < 0 || ep < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) || listen(lfd, 128))
    return std::fprintf(stderr, "embed-server: %s: %s\n", argv[2], std::strerror(errno)), 1;
  for (epoll_event e : {epoll_event{EPOLLIN, {.fd = sig}}, epoll_event{EPOLLIN, {.fd = lfd}}})
    epoll_ctl(ep, EPOLL_CTL_ADD, e.data.fd, &e);
  dprintf(1, "embed-server: export disk (%llu bytes) on %s\n", static_cast<unsigned long long>(disk_size), argv[2]);
  for (bool running = true; running;) {
    epoll_event evs[64];
    const int n = epoll_wait(ep, evs, 64, -1);  // no timeout: an idle server sleeps here
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      running = running && fd != sig;
      for (int cfd; fd == lfd && (cfd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;)
        step(*(conns[cfd] = std::make_unique<connection>(cfd)));  // sends the greeting
      if (const auto it = conns.find(fd); it != conns.end()) step(*it->second);
    }
  }
  for (auto& [fd, c] : conns) close(fd);
  unlink(argv[2]);
  return 0;
}
