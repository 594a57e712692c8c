// SPDX-License-Identifier: MIT
// nbdwire-server: the event loop.
#include "loop.hpp"

#include <fcntl.h>         // fcntl: socket-activated descriptors
#include <sys/eventfd.h>   // eventfd: waking a loop
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
#include <exception>  // std::exception: a loop failing
#include <string>     // std::to_string

#include "../common.hpp"

namespace nbdwire_server {

using examples::fail;

server_loop::server_loop(settings s) : s_(std::move(s)) {
  if (s_.threads == 0) s_.threads = static_cast<unsigned>(std::clamp(sysconf(_SC_NPROCESSORS_ONLN), 1L, 1024L));
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
  if (s_.debug) cfg_.trace.on_transition = &debug_transition;  // each connection its context
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
  else s_.threads = 1;  // --device: the kernel is the one client
  // Blocked in every thread (the loops inherit the mask): the signalfd of loop 0 takes them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &sigs, nullptr) != 0) examples::fail_errno("sigprocmask");
  sig_fd_ = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sig_fd_ < 0) examples::fail_errno("signalfd");
  for (unsigned i = 0; i < s_.threads; ++i) {
    auto w = std::make_unique<worker>();
    w->index = i;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) examples::fail_errno("epoll_create1");
    w->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake < 0) examples::fail_errno("eventfd");
    add(*w, w->wake, EPOLLIN);
    workers_.push_back(std::move(w));
  }
  add(*workers_[0], sig_fd_, EPOLLIN);
  // After the signal mask: an --ioctl device's thread inherits it, so signals reach the signalfd.
  if (!s_.device.empty()) start_device();
  else set_accepting(true);

  std::string where;
  for (const auto& l : listeners_) where += (where.empty() ? "" : ", ") + l.name;
  const std::size_t n = s_.exports.size();
  const char* tls = s_.tls == nbdwire::server_tls::required ? ", TLS required"
                    : s_.tls == nbdwire::server_tls::optional ? ", TLS offered"
                                                              : "";
  const std::string loops = s_.threads == 1 ? "" : ", " + std::to_string(s_.threads) + " threads";
  if (device_)
    std::printf("nbdwire-server: serving export '%s' as %s\n", s_.exports[0].name.c_str(), device_->path().c_str());
  else
    std::printf("nbdwire-server: listening on %s (%s, %zu export%s%s%s)\n", where.c_str(),
                std::string(nbdwire::to_string(s_.style)).c_str(), n, n == 1 ? "" : "s", tls, loops.c_str());
  std::fflush(stdout);
  write_pidfile();

  for (std::size_t i = 1; i < workers_.size(); ++i) {
    worker& w = *workers_[i];
    w.thread = std::thread([this, &w] { run_worker(w); });
  }
  try {
    loop(*workers_[0]);
  } catch (const examples::failure& f) {
    std::fprintf(stderr, "nbdwire-server: %s\n", f.what());
    failed_ = true;
    phase_ = stopping;
    for (const auto& w : workers_) wake(*w);
  }
  for (std::size_t i = 1; i < workers_.size(); ++i) workers_[i]->thread.join();
  stop();
  return failed_ ? 1 : 0;
}

/// Loops 1..N-1: a loop that fails (epoll itself refusing) stops the server.
void server_loop::run_worker(worker& w) {
  try {
    loop(w);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nbdwire-server: loop %u: %s\n", w.index, e.what());
    failed_ = true;
    phase_ = stopping;
    for (const auto& x : workers_) wake(*x);
  }
}

/// One event loop, until the shutdown has closed its connections (loop 0: every loop's).
void server_loop::loop(worker& w) {
  const bool acceptor = w.index == 0;
  epoll_event evs[64];
  for (;;) {
    // --device: the kernel's connection ended (the device was disconnected, by a signal here
    // or by anyone else): nothing is left to serve.
    if (device_ && w.conns.empty()) {
      close_all(w);
      return;
    }
    if (!keep_going(w)) return;
    // Accept again once a descriptor and a connection slot are free.
    if (acceptor && !accepting_ && phase_ == running && clock::now() >= retry_accept_ &&
        (s_.max_connections == 0 || total_ < s_.max_connections))
      set_accepting(true);
    const int k = wait_for_events(w, evs, 64);
    if (k < 0) {
      if (errno == EINTR) continue;
      examples::fail_errno("epoll_wait");
    }
    // The shutdown began while this loop waited: refuse before serving this batch, even when
    // its wakeup comes later in the batch than a client's request (the events come back).
    if (!w.shutting_down && phase_ != running) continue;
    for (int i = 0; i < k; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == w.wake) {
        std::uint64_t v = 0;
        // Resets the eventfd; EAGAIN means another wake-up was already read: nothing lost.
        [[maybe_unused]] const ssize_t got = read(w.wake, &v, sizeof v);
        if (acceptor) retry_accept_ = {};  // a connection closed somewhere: try accepting again
        adopt_handoffs(w);
        if (phase_ != running) break;  // the shutdown may have stepped the connections
        continue;
      }
      if (acceptor && fd == sig_fd_) {
        on_signal();
        break;  // the connections were stepped; this batch's events may be stale
      }
      if (acceptor) {
        if (const auto l = std::find_if(listeners_.begin(), listeners_.end(), [&](const listener& x) { return x.fd == fd; });
            l != listeners_.end()) {
          if (accepting_) accept_on(*l);
          continue;
        }
      }
      const auto it = w.conns.find(fd);
      if (it == w.conns.end()) continue;  // closed earlier in this batch
      if (evs[i].events & EPOLLOUT) it->second->send_blocked = false;
      // Woken only because the socket is writable: epoll said nothing is waiting to be read,
      // so this turn sends and does not try a recv() that would say EAGAIN.
      step(w, *it->second, (evs[i].events & ~std::uint32_t{EPOLLOUT}) != 0);
    }
  }
}

/// The shutdown, as far as it concerns loop `w` before it waits again. False: the loop ends.
bool server_loop::keep_going(worker& w) {
  const int ph = phase_;
  if (ph == running) return true;
  if (ph == stopping) {  // a second signal: close at once
    close_all(w);
    return w.index == 0 && loops_closed_ < workers_.size();
  }
  if (!w.shutting_down) begin_shutdown(w);
  if (!w.closed && (w.conns.empty() || clock::now() >= shutdown_deadline_)) {
    if (!w.conns.empty())
      std::fprintf(stderr, "nbdwire-server: shutdown: closing %zu connection%s still open\n", w.conns.size(),
                   w.conns.size() == 1 ? "" : "s");
    close_all(w);
  }
  // Loop 0 ends last: it still takes a second signal while the others finish.
  if (w.index != 0) return !w.closed;
  return loops_closed_ < workers_.size();
}

/// epoll_wait(), after polling for up to --busy-poll microseconds first.
int server_loop::wait_for_events(worker& w, epoll_event* evs, int max) {
  if (s_.busy_poll_us > 0 && !w.closed) {
    const auto until = clock::now() + std::chrono::microseconds(s_.busy_poll_us);
    do {
      const int k = epoll_wait(w.ep, evs, max, 0);
      if (k != 0) return k;
    } while (clock::now() < until);
  }
  return epoll_wait(w.ep, evs, max, timeout_ms(w));
}

/// The epoll timeout: the nearest of the handshake deadlines, the shutdown deadline and the
/// time accepting resumes; -1 for none.
int server_loop::timeout_ms(worker& w) {
  int ms = drop_late_handshakes(w);
  auto until = [&](clock::time_point t) {
    const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(t - clock::now()).count() + 1;
    const int v = static_cast<int>(std::clamp<long long>(d, 0, 60000));
    ms = ms < 0 ? v : std::min(ms, v);
  };
  if (w.shutting_down && !w.closed) until(shutdown_deadline_);
  if (w.index == 0 && !accepting_ && phase_ == running && retry_accept_ != clock::time_point{}) until(retry_accept_);
  return ms;
}

/// Drops connections still negotiating past the handshake deadline; returns the epoll
/// timeout (ms) until the next deadline, or -1.
int server_loop::drop_late_handshakes(worker& w) {
  if (s_.handshake_timeout <= 0) return -1;
  const auto limit = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(s_.handshake_timeout));
  const auto now = clock::now();
  auto next = clock::time_point::max();
  std::vector<int> late;
  for (const auto& [fd, c] : w.conns) {
    const auto st = c->m.state();
    if (st != nbdwire::server_state::awaiting_client_flags && st != nbdwire::server_state::negotiating) continue;
    if (now - c->accepted >= limit)
      late.push_back(fd);
    else
      next = std::min(next, c->accepted + limit);
  }
  for (const int fd : late) {
    log(*w.conns.at(fd), "handshake not finished within the deadline; dropped");
    drop(w, fd);
  }
  if (next == clock::time_point::max()) return -1;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
  return static_cast<int>(std::min<long long>(ms, 60000));
}

void server_loop::add(const worker& w, int fd, std::uint32_t mask) {
  epoll_event ev{};
  ev.events = mask;
  ev.data.fd = fd;
  if (epoll_ctl(w.ep, EPOLL_CTL_ADD, fd, &ev) != 0) examples::fail_errno("epoll_ctl");
}

void server_loop::wake(const worker& w) {
  const std::uint64_t one = 1;
  // EAGAIN only when the counter is saturated: the loop is due to wake up anyway.
  [[maybe_unused]] const ssize_t put = write(w.wake, &one, sizeof one);
}

/// Puts the listeners in loop 0's epoll set or takes them out. Out, pending clients wait in
/// the listen backlog: no wakeup, and no CPU, until a slot or a descriptor is free.
void server_loop::set_accepting(bool on) {
  if (on == accepting_) return;
  for (const auto& l : listeners_) {
    if (on) add(*workers_[0], l.fd, EPOLLIN);
    else epoll_ctl(workers_[0]->ep, EPOLL_CTL_DEL, l.fd, nullptr);
  }
  accepting_ = on;
}

/// accept4() failed for lack of descriptors or memory: stop accepting for a second (or until
/// a connection closes), and say so at most once per 10 seconds.
void server_loop::accept_failed(int err) {
  set_accepting(false);
  retry_accept_ = clock::now() + std::chrono::seconds(1);
  acceptor_waiting_ = true;  // a connection closing on any loop ends the wait early
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
    if (s_.max_connections != 0 && total_ >= s_.max_connections) {
      // Said before the count is read again, so a loop that frees a slot in between either
      // is seen here or sees the flag and wakes loop 0.
      acceptor_waiting_ = true;
      if (total_ >= s_.max_connections) {
        set_accepting(false);  // resumed when a connection closes
        return;
      }
      acceptor_waiting_ = false;
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
    ++total_;
    worker& w = choose_loop();
    ++w.load;
    if (w.index == 0) {
      adopt(w, fd, l.is_unix);
      continue;
    }
    {
      const std::lock_guard<std::mutex> lock(w.queue_mu);
      w.queue.push_back({fd, l.is_unix});
    }
    wake(w);
  }
}

/// The loop with the fewest connections; among equals the next in turn, so that the
/// connections of one multi-conn client, arriving together, go to different loops.
server_loop::worker& server_loop::choose_loop() {
  const std::size_t n = workers_.size();
  std::size_t best = next_loop_ % n;
  std::size_t best_load = workers_[best]->load;
  for (std::size_t k = 1; k < n; ++k) {
    const std::size_t i = (next_loop_ + k) % n;
    const std::size_t l = workers_[i]->load;
    if (l < best_load) best = i, best_load = l;
  }
  next_loop_ = best + 1;
  return *workers_[best];
}

/// Loop `w` takes an accepted socket: from here on only its thread touches the connection.
void server_loop::adopt(worker& w, int fd, bool is_unix) {
  std::string name = is_unix ? "unix client " + std::to_string(fd) : examples::peer_name(fd);
  if (s_.threads > 1) name += " (loop " + std::to_string(w.index) + ")";
  auto c = std::make_unique<connection>(fd, cfg_, stores_, std::move(name));
  c->verbose = s_.verbose;
  c->tcp = !is_unix;
  c->tls_creds = tls_creds_;
  if (c->verbose) log(*c, "connected");
  c->epoll_mask = EPOLLIN | EPOLLOUT;  // the greeting is queued already
  add(w, fd, c->epoll_mask);
  auto& ref = *c;
  w.conns.emplace(fd, std::move(c));
  // Handed over as the shutdown began: it is refused like the others.
  if (w.shutting_down) ref.m.begin_shutdown();
  step(w, ref, true);
}

/// The sockets loop 0 handed to `w`; after the connections closed, they are closed too.
void server_loop::adopt_handoffs(worker& w) {
  {
    const std::lock_guard<std::mutex> lock(w.queue_mu);
    w.taken.swap(w.queue);
  }
  for (const handoff& h : w.taken) {
    if (w.closed || phase_ == stopping) {
      close(h.fd);
      --w.load;
      --total_;
      continue;
    }
    adopt(w, h.fd, h.is_unix);
  }
  w.taken.clear();
}

/// Services a connection, then waits for what it needs next; closes it when it is done.
void server_loop::step(worker& w, connection& c, bool readable) {
  if (!service(c, readable)) return drop(w, c.fd);
  const std::uint32_t mask = wanted_events(c);
  if (mask == c.epoll_mask) return;
  epoll_event ev{};
  ev.events = mask;
  ev.data.fd = c.fd;
  if (epoll_ctl(w.ep, EPOLL_CTL_MOD, c.fd, &ev) != 0) return drop(w, c.fd);
  c.epoll_mask = mask;
}

void server_loop::drop(worker& w, int fd) {
  const auto it = w.conns.find(fd);
  if (it == w.conns.end()) return;
  connection& c = *it->second;
  if (c.verbose)
    log(c, "closed after " + describe_commands(c) + (c.end_reason.empty() ? "" : " (" + c.end_reason + ")"));
  if (c.tls && !c.tls_handshaking) c.tls->bye();  // close_notify, best effort
  epoll_ctl(w.ep, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  w.conns.erase(it);
  --w.load;
  --total_;
  // A descriptor and a slot are free again: loop 0 tries accepting at once.
  if (w.index == 0) retry_accept_ = {};
  if (acceptor_waiting_.exchange(false) && w.index != 0) wake(*workers_[0]);
}

/// SIGINT/SIGTERM (loop 0): the first starts the graceful shutdown of every loop, a second
/// stops at once.
void server_loop::on_signal() {
  signalfd_siginfo si{};
  while (read(sig_fd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
  }
  if (phase_ != running) {
    phase_ = stopping;
  } else {
    shutdown_deadline_ =
        clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(s_.shutdown_timeout));
    set_accepting(false);
    phase_ = draining;  // after the deadline: the loops read it once they see the phase
  }
  for (std::size_t i = 1; i < workers_.size(); ++i) wake(*workers_[i]);
  if (phase_ == stopping) return;
  if (device_) {
    // The kernel finishes what it sent, then NBD_CMD_DISC ends the connection: its requests
    // are served to the end rather than refused (begin_shutdown).
    std::fprintf(stderr, "nbdwire-server: shutting down: disconnecting %s\n", device_->path().c_str());
    device_->disconnect();
    return;
  }
  const std::size_t open = total_;
  std::fprintf(stderr, "nbdwire-server: shutting down: %zu connection%s open, new requests get NBD_ESHUTDOWN\n", open,
               open == 1 ? "" : "s");
}

/// The shutdown on loop `w`: every connection refuses new work (server::begin_shutdown) and
/// finishes what it has; keep_going() closes the rest at the deadline.
void server_loop::begin_shutdown(worker& w) {
  w.shutting_down = true;
  if (device_) return;  // the kernel was told to disconnect (on_signal)
  std::vector<int> fds;
  for (const auto& [fd, c] : w.conns) fds.push_back(fd);
  for (const int fd : fds) {
    const auto it = w.conns.find(fd);
    if (it == w.conns.end()) continue;
    it->second->m.begin_shutdown();
    step(w, *it->second, false);  // an option answer or request held back may go now
  }
}

/// Closes the connections of loop `w`; once every loop has, loop 0 ends the process.
void server_loop::close_all(worker& w) {
  if (w.closed) return;
  for (auto& [fd, c] : w.conns) close(fd);
  total_ -= w.conns.size();
  w.load -= w.conns.size();
  w.conns.clear();
  w.closed = true;
  ++loops_closed_;
  if (w.index != 0) wake(*workers_[0]);
}

/// After every loop has ended: the listeners close, and what was acknowledged reaches
/// stable storage, once per export.
void server_loop::stop() {
  device_.reset();  // disconnected if it was not yet; an --ioctl thread joined
  for (const auto& l : listeners_) {
    close(l.fd);
    if (!l.path.empty()) unlink(l.path.c_str());
  }
  for (const auto& w : workers_) {
    {
      const std::lock_guard<std::mutex> lock(w->queue_mu);
      for (const handoff& h : w->queue) close(h.fd);  // handed over after that loop closed
      w->queue.clear();
    }
    close(w->wake);
    close(w->ep);
  }
  for (std::size_t i = 0; i < stores_.size(); ++i)
    if (const int err = stores_[i]->flush(); err != 0)
      std::fprintf(stderr, "nbdwire-server: flushing export '%s': %s\n", s_.exports[i].name.c_str(), std::strerror(err));
  if (!s_.pidfile.empty()) unlink(s_.pidfile.c_str());
  close(sig_fd_);
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
  worker& w = *workers_[0];  // --device runs one loop
  add(w, fd, c->epoll_mask);
  w.conns.emplace(fd, std::move(c));
  ++w.load;
  ++total_;
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
