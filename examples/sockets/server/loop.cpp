// SPDX-License-Identifier: MIT
// nbdwire-server: the event loop.
#include "loop.hpp"

#include <fcntl.h>         // fcntl: socket-activated descriptors
#include <sys/signalfd.h>  // signalfd: SIGINT/SIGTERM as a readable descriptor
#include <sys/socket.h>    // accept4
#include <unistd.h>        // close, unlink, getpid

#include <algorithm>  // std::min, std::find_if, std::clamp
#include <cstdlib>    // std::getenv, std::strtol
#include <cerrno>     // errno
#include <chrono>     // deadlines, busy polling
#include <csignal>    // sigset_t
#include <cstdio>     // std::printf, std::fprintf
#include <cstring>    // std::strerror
#include <string>     // std::to_string

#include "../common.hpp"

namespace nbdwire_server {

using examples::fail;

server_loop::server_loop(settings s) : s_(std::move(s)) {
  using namespace nbdwire::transmission_flag;
  configs_.reserve(s_.exports.size());
  for (const auto& e : s_.exports) {
    nbdwire::export_config c;
    c.name = e.name;
    c.size = e.store->size();
    std::uint16_t f = send_flush | send_fua | send_trim | send_write_zeroes | send_cache | can_multi_conn;
    if (e.store->can_fast_zero()) f |= send_fast_zero;
    if (e.read_only) f |= read_only;
    c.description = e.description;
    c.tls_only = e.tls_only;
    c.transmission_flags = f;
    // Byte-granular requests work; 4 KiB is the page size of memory exports and a usual
    // file system block; 32 MiB is the payload every client may send.
    c.block_size = {1, 4096, nbdwire::default_max_payload};
    configs_.push_back(c);
    stores_.push_back(e.store.get());
  }
  cfg_.style = s_.style;
  cfg_.tls = s_.tls;
  // Certificates and keys are loaded once, before listening: a bad path fails at start-up.
  if (s_.tls != nbdwire::server_tls::off) tls_creds_ = examples::load_tls_credentials(s_.tls_settings);
  cfg_.meta_contexts = contexts_;
  cfg_.exports = configs_;
  cfg_.default_export = 0;
  // An export explicitly named "" is the default one.
  for (std::size_t i = 0; i < s_.exports.size(); ++i)
    if (s_.exports[i].name.empty()) cfg_.default_export = i;
  // Check the configuration once, with a throwaway machine, before listening.
  const nbdwire::server probe(cfg_);
  if (probe.state() == nbdwire::server_state::failed)
    fail("invalid export configuration: " + std::string(nbdwire::to_string(probe.error())));
}

/// The listening sockets: --listen/--unix in order; without either, those systemd passed
/// (LISTEN_PID/LISTEN_FDS, sd_listen_fds(3)); else 127.0.0.1:10809.
void server_loop::open_listeners() {
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  const bool activated = pid && fds && std::strtol(pid, nullptr, 10) == static_cast<long>(getpid());
  if (activated) {
    // Consumed: a child process must not take them for its own.
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (!s_.listeners.empty()) fail("socket activation passed listening sockets; --listen/--unix cannot be added");
    const long n = std::strtol(fds, nullptr, 10);
    if (n < 1 || n > 64) fail(std::string("socket activation: bad LISTEN_FDS '") + fds + "'");
    for (int fd = 3; fd < 3 + n; ++fd) {
      int listening = 0;
      socklen_t len = sizeof listening;
      if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening)
        fail("socket activation: descriptor " + std::to_string(fd) + " is not a listening socket");
      sockaddr_storage ss{};
      socklen_t sl = sizeof ss;
      const bool is_unix = getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0 && ss.ss_family == AF_UNIX;
      (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
      listeners_.push_back({fd, is_unix, "socket-activated descriptor " + std::to_string(fd), false, {}});
    }
    return;
  }
  if (s_.listeners.empty()) s_.listeners.emplace_back();
  for (auto& e : s_.listeners) {
    const int fd = examples::listen_on(e);
    listeners_.push_back({fd, e.is_unix, e.to_string(), true, e.is_unix ? e.path : std::string{}});
  }
}

int server_loop::run() {
  if (s_.device.empty()) open_listeners();
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) examples::fail_errno("epoll_create1");
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &sigs, nullptr) != 0) examples::fail_errno("sigprocmask");
  sig_fd_ = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sig_fd_ < 0) examples::fail_errno("signalfd");
  add(sig_fd_, EPOLLIN);
  // After the signal mask: an --ioctl device's thread inherits it, so signals reach the signalfd.
  if (!s_.device.empty()) start_device();
  else set_accepting(true);

  std::string where;
  for (const auto& l : listeners_) where += (where.empty() ? "" : ", ") + l.name;
  const std::size_t n = s_.exports.size();
  const char* tls = s_.tls == nbdwire::server_tls::required ? ", TLS required"
                    : s_.tls == nbdwire::server_tls::optional ? ", TLS offered"
                                                              : "";
  if (device_)
    std::printf("nbdwire-server: serving export '%s' as %s\n", s_.exports[0].name.c_str(), device_->path().c_str());
  else
    std::printf("nbdwire-server: listening on %s (%s, %zu export%s%s)\n", where.c_str(),
                std::string(nbdwire::to_string(s_.style)).c_str(), n, n == 1 ? "" : "s", tls);
  std::fflush(stdout);
  write_pidfile();

  epoll_event evs[64];
  for (;;) {
    // --device: the kernel's connection ended (the device was disconnected, by a signal here
    // or by anyone else): nothing is left to serve.
    if (device_ && conns_.empty()) {
      stop();
      return 0;
    }
    if (shutting_down_ && (conns_.empty() || clock::now() >= shutdown_deadline_)) {
      if (!conns_.empty())
        std::fprintf(stderr, "nbdwire-server: shutdown: closing %zu connection%s still open\n", conns_.size(),
                     conns_.size() == 1 ? "" : "s");
      stop();
      return 0;
    }
    // Accept again once a descriptor and a connection slot are free.
    if (!accepting_ && !shutting_down_ && clock::now() >= retry_accept_ &&
        (s_.max_connections == 0 || conns_.size() < s_.max_connections))
      set_accepting(true);
    const int k = wait_for_events(evs, 64);
    if (k < 0) {
      if (errno == EINTR) continue;
      examples::fail_errno("epoll_wait");
    }
    for (int i = 0; i < k; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == sig_fd_) {
        signalfd_siginfo si{};
        while (read(sig_fd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        }
        if (shutting_down_) {  // a second signal: stop at once
          stop();
          return 0;
        }
        begin_shutdown();
        break;  // the connections were stepped; this batch's events may be stale
      }
      if (const auto l = std::find_if(listeners_.begin(), listeners_.end(), [&](const listener& x) { return x.fd == fd; });
          l != listeners_.end()) {
        if (accepting_) accept_on(*l);
        continue;
      }
      const auto it = conns_.find(fd);
      if (it == conns_.end()) continue;  // closed earlier in this batch
      if (evs[i].events & EPOLLOUT) it->second->send_blocked = false;
      // Woken only because the socket is writable: epoll said nothing is waiting to be read,
      // so this turn sends and does not try a recv() that would say EAGAIN.
      step(*it->second, (evs[i].events & ~std::uint32_t{EPOLLOUT}) != 0);
    }
  }
}

/// epoll_wait(), after polling for up to --busy-poll microseconds first.
int server_loop::wait_for_events(epoll_event* evs, int max) {
  if (s_.busy_poll_us > 0) {
    const auto until = clock::now() + std::chrono::microseconds(s_.busy_poll_us);
    do {
      const int k = epoll_wait(ep_, evs, max, 0);
      if (k != 0) return k;
    } while (clock::now() < until);
  }
  return epoll_wait(ep_, evs, max, timeout_ms());
}

/// The epoll timeout: the nearest of the handshake deadlines, the shutdown deadline and the
/// time accepting resumes; -1 for none.
int server_loop::timeout_ms() {
  int ms = drop_late_handshakes();
  auto until = [&](clock::time_point t) {
    const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(t - clock::now()).count() + 1;
    const int v = static_cast<int>(std::clamp<long long>(d, 0, 60000));
    ms = ms < 0 ? v : std::min(ms, v);
  };
  if (shutting_down_) until(shutdown_deadline_);
  if (!accepting_ && !shutting_down_ && retry_accept_ != clock::time_point{}) until(retry_accept_);
  return ms;
}

/// Drops connections still negotiating past the handshake deadline; returns the epoll
/// timeout (ms) until the next deadline, or -1.
int server_loop::drop_late_handshakes() {
  if (s_.handshake_timeout <= 0) return -1;
  const auto limit = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(s_.handshake_timeout));
  const auto now = clock::now();
  auto next = clock::time_point::max();
  std::vector<int> late;
  for (const auto& [fd, c] : conns_) {
    const auto st = c->m.state();
    if (st != nbdwire::server_state::awaiting_client_flags && st != nbdwire::server_state::negotiating) continue;
    if (now - c->accepted >= limit)
      late.push_back(fd);
    else
      next = std::min(next, c->accepted + limit);
  }
  for (const int fd : late) {
    log(*conns_.at(fd), "handshake not finished within the deadline; dropped");
    drop(fd);
  }
  if (next == clock::time_point::max()) return -1;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
  return static_cast<int>(std::min<long long>(ms, 60000));
}

void server_loop::add(int fd, std::uint32_t mask) {
  epoll_event ev{};
  ev.events = mask;
  ev.data.fd = fd;
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) examples::fail_errno("epoll_ctl");
}

/// Puts the listeners in the epoll set or takes them out. Out, pending clients wait in the
/// listen backlog: no wakeup, and no CPU, until a slot or a descriptor is free.
void server_loop::set_accepting(bool on) {
  if (on == accepting_) return;
  for (const auto& l : listeners_) {
    if (on) add(l.fd, EPOLLIN);
    else epoll_ctl(ep_, EPOLL_CTL_DEL, l.fd, nullptr);
  }
  accepting_ = on;
}

/// accept4() failed for lack of descriptors or memory: stop accepting for a second (or until
/// a connection closes), and say so at most once per 10 seconds.
void server_loop::accept_failed(int err) {
  set_accepting(false);
  retry_accept_ = clock::now() + std::chrono::seconds(1);
  ++accept_errors_;
  const auto now = clock::now();
  if (last_accept_error_ == clock::time_point{} || now - last_accept_error_ >= std::chrono::seconds(10)) {
    std::fprintf(stderr, "nbdwire-server: accept: %s; new clients wait until descriptors are free (%u time%s)\n",
                 std::strerror(err), accept_errors_, accept_errors_ == 1 ? "" : "s");
    last_accept_error_ = now;
    accept_errors_ = 0;
  }
}

void server_loop::accept_on(const listener& l) {
  while (accepting_) {
    if (s_.max_connections != 0 && conns_.size() >= s_.max_connections) {
      set_accepting(false);  // resumed when a connection closes
      return;
    }
    const int fd = accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) return accept_failed(errno);
      if (errno != EAGAIN) std::fprintf(stderr, "nbdwire-server: accept: %s\n", std::strerror(errno));
      return;
    }
    if (!l.is_unix) examples::set_nodelay(fd);
    if (l.is_unix) examples::set_unix_send_buffer(fd);
    auto c = std::make_unique<connection>(fd, cfg_, stores_,
                                          l.is_unix ? "unix client " + std::to_string(fd) : examples::peer_name(fd));
    c->verbose = s_.verbose;
    c->tls_creds = tls_creds_;
    if (c->verbose) log(*c, "connected");
    c->epoll_mask = EPOLLIN | EPOLLOUT;  // the greeting is queued already
    add(fd, c->epoll_mask);
    auto& ref = *c;
    conns_.emplace(fd, std::move(c));
    step(ref, true);
  }
}

/// Services a connection, then waits for what it needs next; closes it when it is done.
void server_loop::step(connection& c, bool readable) {
  if (!service(c, readable)) return drop(c.fd);
  const std::uint32_t mask = wanted_events(c);
  if (mask == c.epoll_mask) return;
  epoll_event ev{};
  ev.events = mask;
  ev.data.fd = c.fd;
  if (epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev) != 0) return drop(c.fd);
  c.epoll_mask = mask;
}

void server_loop::drop(int fd) {
  if (const auto it = conns_.find(fd); it != conns_.end() && it->second->verbose)
    log(*it->second, "closed after " + describe_commands(*it->second) +
                         (it->second->end_reason.empty() ? "" : " (" + it->second->end_reason + ")"));
  if (const auto it = conns_.find(fd); it != conns_.end() && it->second->tls && !it->second->tls_handshaking)
    it->second->tls->bye();  // close_notify, best effort
  epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  conns_.erase(fd);
  retry_accept_ = {};  // a descriptor and a slot are free again
}

/// The first SIGTERM/SIGINT: no new clients; every connection refuses new work
/// (server::begin_shutdown) and finishes what it has; run() closes the rest at the deadline.
void server_loop::begin_shutdown() {
  shutting_down_ = true;
  shutdown_deadline_ =
      clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(s_.shutdown_timeout));
  set_accepting(false);
  if (device_) {
    // The kernel finishes what it sent, then NBD_CMD_DISC ends the connection: its requests
    // are served to the end rather than refused.
    std::fprintf(stderr, "nbdwire-server: shutting down: disconnecting %s\n", device_->path().c_str());
    device_->disconnect();
    return;
  }
  std::fprintf(stderr, "nbdwire-server: shutting down: %zu connection%s open, new requests get NBD_ESHUTDOWN\n",
               conns_.size(), conns_.size() == 1 ? "" : "s");
  std::vector<int> fds;
  for (const auto& [fd, c] : conns_) fds.push_back(fd);
  for (const int fd : fds) {
    const auto it = conns_.find(fd);
    if (it == conns_.end()) continue;
    it->second->m.begin_shutdown();
    step(*it->second, false);  // an option answer or request held back may go now
  }
}

void server_loop::stop() {
  for (auto& [fd, c] : conns_) close(fd);
  conns_.clear();
  device_.reset();  // disconnected if it was not yet; an --ioctl thread joined
  for (const auto& l : listeners_) {
    close(l.fd);
    if (!l.path.empty()) unlink(l.path.c_str());
  }
  // Whatever was acknowledged reaches stable storage before the process ends.
  for (std::size_t i = 0; i < stores_.size(); ++i)
    if (const int err = stores_[i]->flush(); err != 0)
      std::fprintf(stderr, "nbdwire-server: flushing export '%s': %s\n", s_.exports[i].name.c_str(), std::strerror(err));
  if (!s_.pidfile.empty()) unlink(s_.pidfile.c_str());
  close(sig_fd_);
  close(ep_);
}

/// --device: the kernel's end of a socketpair becomes the device, this end a connection
/// already in transmission.
void server_loop::start_device() {
  device_ = std::make_unique<kernel_device>();
  const nbdwire::negotiated n = device_negotiated(cfg_);
  const int fd = device_->start(s_.device, s_.device_ioctl, n, s_.exports[0].read_only,
                                "nbdwire-server " + s_.exports[0].name);
  auto c = std::make_unique<connection>(fd, cfg_, n, stores_, "kernel " + s_.device);
  c->verbose = s_.verbose;
  if (c->verbose) log(*c, "connected");
  c->epoll_mask = EPOLLIN;
  add(fd, c->epoll_mask);
  conns_.emplace(fd, std::move(c));
}

void server_loop::write_pidfile() {
  if (s_.pidfile.empty()) return;
  const std::string tmp = s_.pidfile + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f || std::fprintf(f, "%ld\n", static_cast<long>(getpid())) < 0 || std::fclose(f) != 0 ||
      std::rename(tmp.c_str(), s_.pidfile.c_str()) != 0)
    examples::fail_errno("cannot write --pidfile " + s_.pidfile);
}

}  // namespace nbdwire_server
