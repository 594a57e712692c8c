// SPDX-License-Identifier: MIT
// nbdwire-server: the event loop.
#include "loop.hpp"

#include <sys/signalfd.h>  // signalfd: SIGINT/SIGTERM as a readable descriptor
#include <sys/socket.h>    // accept4
#include <unistd.h>        // close, unlink

#include <algorithm>  // std::min
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
    if (s_.read_only) f |= read_only;
    c.transmission_flags = f;
    // Byte-granular requests work; 4 KiB is the page size of memory exports and a usual
    // file system block; 32 MiB is the payload every client may send.
    c.block_size = {1, 4096, nbdwire::default_max_payload};
    configs_.push_back(c);
    stores_.push_back(e.store.get());
  }
  cfg_.style = s_.style;
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

int server_loop::run() {
  listen_fd_ = examples::listen_on(s_.where);
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) examples::fail_errno("epoll_create1");
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &sigs, nullptr) != 0) examples::fail_errno("sigprocmask");
  sig_fd_ = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sig_fd_ < 0) examples::fail_errno("signalfd");
  add(listen_fd_, EPOLLIN);
  add(sig_fd_, EPOLLIN);

  const std::size_t n = s_.exports.size();
  std::printf("nbdwire-server: listening on %s (%s, %zu export%s)\n", s_.where.to_string().c_str(),
              std::string(nbdwire::to_string(s_.style)).c_str(), n, n == 1 ? "" : "s");
  std::fflush(stdout);

  epoll_event evs[64];
  for (;;) {
    const int k = wait_for_events(evs, 64);
    if (k < 0) {
      if (errno == EINTR) continue;
      examples::fail_errno("epoll_wait");
    }
    for (int i = 0; i < k; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == sig_fd_) {
        stop();
        return 0;
      }
      if (fd == listen_fd_) {
        accept_all();
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
    using clock = std::chrono::steady_clock;
    const auto until = clock::now() + std::chrono::microseconds(s_.busy_poll_us);
    do {
      const int k = epoll_wait(ep_, evs, max, 0);
      if (k != 0) return k;
    } while (clock::now() < until);
  }
  return epoll_wait(ep_, evs, max, drop_late_handshakes());
}

/// Drops connections still negotiating past the handshake deadline; returns the epoll
/// timeout (ms) until the next deadline, or -1.
int server_loop::drop_late_handshakes() {
  if (s_.handshake_timeout <= 0) return -1;
  using clock = std::chrono::steady_clock;
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

void server_loop::accept_all() {
  for (;;) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN) std::fprintf(stderr, "nbdwire-server: accept: %s\n", std::strerror(errno));
      return;
    }
    if (!s_.where.is_unix) examples::set_nodelay(fd);
    if (s_.where.is_unix) examples::set_unix_send_buffer(fd);
    auto c = std::make_unique<connection>(fd, cfg_, stores_,
                                          s_.where.is_unix ? "unix client " + std::to_string(fd) : examples::peer_name(fd));
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
  epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  conns_.erase(fd);
}

void server_loop::stop() {
  for (auto& [fd, c] : conns_) close(fd);
  conns_.clear();
  close(listen_fd_);
  if (s_.where.is_unix) unlink(s_.where.path.c_str());
  close(sig_fd_);
  close(ep_);
}

}  // namespace nbdwire_server
