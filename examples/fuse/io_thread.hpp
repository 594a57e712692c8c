// SPDX-License-Identifier: MIT
// nbdwire-fuse: the I/O thread. FUSE threads queue file operations cut into NBD requests
// (pieces); one thread owns the socket and the nbdwire::client machine, sends what the
// machine queues (WRITE data straight from the FUSE buffers), receives READ data straight
// into them, and answers each operation once all its pieces are. A request's tag is its slot
// in the in-flight table, so every event finds its piece at once.
#pragma once

#include <poll.h>        // poll
#include <sys/eventfd.h> // eventfd: wakes the I/O thread
#include <sys/socket.h>  // shutdown
#include <unistd.h>      // close, read, write

#include <algorithm>           // std::max
#include <array>               // the in-flight table
#include <cerrno>              // errno values
#include <chrono>              // the disconnect deadline
#include <condition_variable>  // completion and queue space
#include <cstddef>             // std::byte
#include <cstdint>             // fixed-width integers
#include <cstdio>              // std::fprintf
#include <cstring>             // std::memcpy, std::strerror
#include <memory>              // std::unique_ptr
#include <mutex>               // std::mutex
#include <optional>            // free slots
#include <span>                // byte spans
#include <string>              // std::string
#include <thread>              // the I/O thread
#include <vector>              // buffers

#include "../sockets/common.hpp"
#include "../sockets/tls_uri.hpp"
#include "nbdwire/nbdwire.hpp"
#include "nbdwire/posix.hpp"
#include "nbdwire/transfer.hpp"

namespace fuse_adapter {

using nbdwire::command;
using nbdwire::event_kind;

/// A request the machine refused to send, as the errno the file operation returns.
inline int to_errno(nbdwire::errc e) {
  switch (e) {
    case nbdwire::errc::request_misaligned: return EINVAL;
    case nbdwire::errc::request_out_of_range: return ENOSPC;
    case nbdwire::errc::read_only_export: return EROFS;
    case nbdwire::errc::command_not_advertised:
    case nbdwire::errc::flag_not_advertised: return EOPNOTSUPP;
    default: return EIO;
  }
}

/// One file operation; a FUSE thread waits on it until all its pieces are answered.
struct call {
  std::mutex m;
  std::condition_variable cv;
  std::size_t left = 0;
  int err = 0;

  void finish(int e, std::size_t n = 1) {
    // Notified under the lock: the waiter owns this object and may destroy it once it
    // sees left == 0, which it cannot before the lock is released.
    std::lock_guard lock(m);
    if (e != 0 && err == 0) err = e;
    left -= n;
    if (left == 0) cv.notify_one();
  }
};

/// One NBD request: a slice of a call no larger than the negotiated maximum payload.
struct piece {
  call* owner = nullptr;
  command cmd = command::read;
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
  std::byte* buf = nullptr;  ///< READ destination / WRITE source (never written for WRITE)
  // A WRITE completes only once its payload is sent and its reply is in: a server that
  // replied early must not make the caller free a buffer that is still being sent.
  bool sent = true;
  bool replied = false;
  int status = 0;
  std::uint64_t tag = 0;  ///< in flight: its slot in the in-flight table
};

/// Pieces waiting for room in the machine, oldest first: a ring of fixed capacity, so queuing
/// allocates nothing (callers wait while it is full).
template <std::size_t N>
class piece_queue {
 public:
  [[nodiscard]] std::size_t size() const { return count_; }
  [[nodiscard]] bool empty() const { return count_ == 0; }
  void push_back(const piece& p) { ring_[(head_ + count_++) % N] = p; }
  [[nodiscard]] piece& front() { return ring_[head_]; }
  void pop_front() {
    head_ = (head_ + 1) % N;
    --count_;
  }

 private:
  std::array<piece, N> ring_{};
  std::size_t head_ = 0, count_ = 0;
};

/// The requests the machine has in flight: as many slots as the machine allows
/// (nbdwire::max_in_flight), so requests are tracked without an allocation each. A request's
/// tag is its slot's index.
class in_flight_table {
 public:
  /// A free slot's tag; none when every slot is taken, and then the machine is full too.
  [[nodiscard]] std::optional<std::uint64_t> free_tag() const {
    for (std::size_t i = 0; i < slots_.size(); ++i)
      if (!slots_[i].used) return i;
    return std::nullopt;
  }
  void add(std::uint64_t tag, std::uint64_t cookie, const piece& p) {
    slots_[tag] = {true, cookie, p};
    slots_[tag].p.tag = tag;
    ++count_;
  }
  /// The request an event's tag names, or null.
  [[nodiscard]] piece* tagged(std::uint64_t tag) {
    return tag < slots_.size() && slots_[tag].used ? &slots_[tag].p : nullptr;
  }
  /// The request a payload span names, or null: spans carry the cookie, not the tag.
  [[nodiscard]] piece* of_payload(const nbdwire::payload_span& span) {
    for (slot& s : slots_)
      if (s.used && s.cookie == span.cookie) return &s.p;
    return nullptr;
  }
  void erase(std::uint64_t tag) {
    slots_[tag].used = false;
    --count_;
  }
  template <class F>
  void drain(F&& f) {
    for (slot& s : slots_)
      if (s.used) {
        s.used = false;
        f(s.p);
      }
    count_ = 0;
  }

 private:
  struct slot {
    bool used = false;
    std::uint64_t cookie = 0;
    piece p;
  };
  std::array<slot, nbdwire::max_in_flight> slots_{};
  std::size_t count_ = 0;
};

class connection {
 public:
  /// Takes over a connection whose handshake is done: a machine of its own starts in
  /// transmission with what was negotiated; `leftover` is input received after `ready`.
  /// `tls`: the TLS session the handshake started (nbds), through which all I/O goes.
  /// `trace`: --debug, every state change of the machine (called on the I/O thread).
  connection(int fd, const nbdwire::negotiated& n, std::vector<std::byte> leftover,
             std::unique_ptr<examples::tls_session> tls, nbdwire::client_trace trace = {})
      : fd_(fd), neg_(n), m_(n, nbdwire::client_config{.trace = trace}), leftover_(std::move(leftover)),
        tls_(std::move(tls)) {
    efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd_ < 0) examples::fail_errno("eventfd");
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() {
    if (efd_ >= 0) close(efd_);
    if (fd_ >= 0) close(fd_);
  }

  [[nodiscard]] const nbdwire::negotiated& negotiated() const { return neg_; }

  void start() {
    if (started_) return;
    started_ = true;
    io_ = std::thread([this] { io_loop(); });
  }

  /// Called once the file system is unmounted: no more requests. DISC, drain, close.
  void stop() {
    {
      std::lock_guard lock(q_mu_);
      stopping_ = true;
    }
    wake();
    if (io_.joinable()) io_.join();
  }

  /// Runs one file operation, split into pieces, and waits for all of them. Returns an errno.
  int run(command cmd, std::uint64_t offset, std::uint64_t length, std::byte* buf) {
    // Requests as long as the connection allows, READ and WRITE at most 32 MiB (the
    // default maximum payload), the others 1 GiB.
    const bool data = cmd == command::read || cmd == command::write;
    const auto split = nbdwire::split_requests(neg_, cmd, offset, length,
                                               data ? nbdwire::default_max_payload : 1u << 30);
    const std::size_t pieces = cmd == command::flush ? 1 : split.size();
    if (pieces == 0) return 0;
    auto next = split.begin();
    call c;
    c.left = pieces;
    std::size_t queued = 0;
    {
      std::unique_lock lock(q_mu_);
      for (; queued < pieces; ++queued) {
        while (!dead_ && queue_.size() >= queue_limit) {
          wake();
          space_.wait(lock);
        }
        if (dead_ || stopping_) break;
        const nbdwire::range_piece r = cmd == command::flush ? nbdwire::range_piece{} : *next++;
        queue_.push_back({&c, cmd, r.offset, static_cast<std::uint32_t>(r.length),
                          buf ? buf + (r.offset - offset) : nullptr});
      }
    }
    if (queued < pieces) c.finish(EIO, pieces - queued);
    if (queued > 0) wake();
    std::unique_lock lock(c.m);
    c.cv.wait(lock, [&] { return c.left == 0; });
    return c.err;
  }

 private:
  static constexpr std::size_t queue_limit = 1024;

  void wake() const {
    const std::uint64_t one = 1;
    (void)!write(efd_, &one, sizeof one);
  }

  // ---- the I/O thread ----------------------------------------------------------------------

  void io_loop() {
    std::vector<std::byte> rbuf(256 * 1024);
    bool disc_sent = false;
    auto deadline = std::chrono::steady_clock::time_point::max();
    if (!leftover_.empty() && !feed(leftover_)) return;
    for (;;) {
      submit_queued();
      bool quit = false;
      {
        std::lock_guard lock(q_mu_);
        quit = stopping_ && queue_.empty() && m_.in_flight() == 0;
      }
      if (quit && !disc_sent) {
        disc_sent = true;
        if (!m_.disconnect()) return go_dead("cannot send NBD_CMD_DISC");
        // The server closes after DISC; a server that does not is not waited for long.
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      }
      const int fl = flush_output();
      if (fl < 0) return go_dead(tls_ && errno == EIO ? tls_->error() : "send failed");
      if (disc_sent && fl == 0 && !write_shut_) {
        write_shut_ = true;
        if (tls_) tls_->bye();
        shutdown(fd_, SHUT_WR);
      }

      pollfd p[2] = {{fd_, static_cast<short>(POLLIN | (fl > 0 ? POLLOUT : 0)), 0}, {efd_, POLLIN, 0}};
      int timeout = -1;
      // Bytes TLS has decrypted already are readable whatever the socket says.
      const bool buffered = tls_ && tls_->pending() > 0;
      if (buffered) {
        timeout = 0;
      } else if (disc_sent) {
        const auto left = deadline - std::chrono::steady_clock::now();
        timeout = static_cast<int>(std::max<std::int64_t>(
            0, std::chrono::duration_cast<std::chrono::milliseconds>(left).count()));
      }
      const int r = poll(p, 2, timeout);
      if (r < 0 && errno != EINTR) return go_dead("poll failed");
      if (r == 0 && disc_sent && !buffered) return;  // the server kept the connection open after DISC
      if (buffered) p[0].revents |= POLLIN;
      if (p[1].revents & POLLIN) {
        std::uint64_t v = 0;
        (void)!read(efd_, &v, sizeof v);
      }
      if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        if (!read_input(rbuf)) return;
      }
    }
  }

  /// Moves queued pieces into the machine while it has room (cookie table, outbox).
  void submit_queued() {
    std::lock_guard lock(q_mu_);
    bool popped = false;
    while (!queue_.empty() && !dead_) {
      piece& p = queue_.front();
      const auto tag = in_flight_.free_tag();
      if (!tag) break;  // stays queued until a reply frees a slot
      const auto r = m_.submit(p.cmd, 0, p.offset, p.length, *tag);
      if (!r && (r.error() == nbdwire::errc::too_many_in_flight || r.error() == nbdwire::errc::outbox_full))
        break;  // stays queued until a reply frees room
      if (r) {
        p.sent = p.cmd != command::write;
        in_flight_.add(*tag, r.value(), p);
      } else
        p.owner->finish(to_errno(r.error()));
      queue_.pop_front();
      popped = true;
    }
    if (popped) space_.notify_all();
  }

  /// Sends headers and WRITE payloads (straight from the FUSE buffers) until the socket
  /// would block. Returns 1 if output is still pending, 0 if all is sent, -1 on error.
  int flush_output() {
    const auto data = [&](const nbdwire::payload_span& span) -> nbdwire::bytes_view {
      const piece* wp = in_flight_.of_payload(span);
      if (!wp) return {};  // data for a request the machine never took: cannot be
      return {wp->buf + (span.offset - wp->offset), static_cast<std::size_t>(span.length)};
    };
    const auto sent = [&](const nbdwire::payload_span& span) {
      piece* wp = in_flight_.of_payload(span);
      if (!wp) return;
      wp->sent = true;
      if (wp->replied) complete(*wp);
    };
    const auto st = tls_ ? examples::send_queued_tls(*tls_, m_, data, sent) : examples::send_queued(fd_, m_, data, sent);
    switch (st) {
      case examples::send_status::done: return 0;
      case examples::send_status::would_block: return 1;
      default: return -1;
    }
  }

  /// Reads what the socket has: READ data straight into the waiting FUSE buffer, everything
  /// else through the machine. Returns false once the connection is over.
  bool read_input(std::vector<std::byte>& rbuf) {
    for (int rounds = 0; rounds < 64; ++rounds) {
      if (const auto inc = m_.incoming_payload()) {
        const piece* p = in_flight_.of_payload(*inc);
        if (!p) return go_dead("internal: READ data for an unknown request"), false;
        const ssize_t got = receive(p->buf + (inc->offset - p->offset), static_cast<std::size_t>(inc->length));
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
        if (got <= 0) return end_of_input(got);
        (void)m_.consume_incoming_payload(static_cast<std::uint64_t>(got));
        if (!feed({})) return false;  // collects the reply once the data is complete
        continue;
      }
      const ssize_t got = receive(rbuf.data(), rbuf.size());
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
      if (got <= 0) return end_of_input(got);
      if (!feed(std::span<const std::byte>(rbuf.data(), static_cast<std::size_t>(got)))) return false;
    }
    return true;
  }

  ssize_t receive(void* buf, std::size_t len) { return examples::receive_some(fd_, tls_.get(), buf, len); }

  bool end_of_input(ssize_t got) {
    if (got < 0) {
      go_dead(tls_ && errno == EIO ? tls_->error() : std::string("receive failed: ") + std::strerror(errno));
      return false;
    }
    const auto ev = m_.on_eof();
    if (ev.kind == event_kind::disconnected) {
      go_dead({});  // clean end after DISC: nothing is pending, later requests fail
      return false;
    }
    go_dead(ev.kind == event_kind::failed
                ? "the server closed the connection (" + std::string(nbdwire::to_string(ev.error)) + ")"
                : "the server closed the connection");
    return false;
  }

  /// Feeds input to the machine and acts on its events. False once the connection is over.
  bool feed(std::span<const std::byte> in) {
    bool over = false;
    examples::feed(m_, in, [&](const nbdwire::event& ev) {
      switch (ev.kind) {
        case event_kind::payload:
          if (const piece* p = in_flight_.tagged(ev.tag))
            std::memcpy(p->buf + (ev.offset - p->offset), ev.data.data(), ev.data.size());
          break;
        case event_kind::read_hole:  // structured replies: a range that reads as zeroes
          if (const piece* p = in_flight_.tagged(ev.tag))
            std::memset(p->buf + (ev.offset - p->offset), 0, static_cast<std::size_t>(ev.length));
          break;
        case event_kind::reply:
          if (piece* p = in_flight_.tagged(ev.tag)) {
            p->replied = true;
            p->status = nbdwire::to_errno(ev.status);
            if (p->sent) complete(*p);
          }
          break;
        case event_kind::failed:
          go_dead(std::string("protocol error: ") + std::string(nbdwire::to_string(ev.error)));
          over = true;
          break;
        case event_kind::closed:
        case event_kind::disconnected:
          go_dead({});
          over = true;
          break;
        default: break;  // error_chunk: its status arrives with the reply
      }
      return true;
    });
    return !over;
  }

  /// Answers a request whose reply is in and whose payload (if any) is sent.
  void complete(piece& p) {
    call* owner = p.owner;
    const int status = p.status;
    in_flight_.erase(p.tag);
    owner->finish(status);
  }

  /// The connection is over: every queued and in-flight request fails with EIO, and so does
  /// every later one.
  void go_dead(const std::string& why) {
    if (!why.empty()) std::fprintf(stderr, "nbdwire-fuse: %s; the file now fails with EIO\n", why.c_str());
    std::lock_guard lock(q_mu_);
    dead_ = true;
    for (; !queue_.empty(); queue_.pop_front()) queue_.front().owner->finish(EIO);
    in_flight_.drain([](piece& p) { p.owner->finish(EIO); });
    space_.notify_all();
  }

  int fd_ = -1;
  int efd_ = -1;
  const nbdwire::negotiated neg_;  ///< what FUSE threads read; the machine is the I/O thread's
  nbdwire::client m_;  ///< touched by the I/O thread only, once started
  std::vector<std::byte> leftover_;
  std::unique_ptr<examples::tls_session> tls_;  ///< nbds: all I/O goes through it
  bool write_shut_ = false;
  std::thread io_;
  bool started_ = false;

  std::mutex q_mu_;  ///< guards queue_, dead_, stopping_
  std::condition_variable space_;
  piece_queue<queue_limit> queue_;
  bool dead_ = false, stopping_ = false;
  in_flight_table in_flight_;  ///< I/O thread only
};

}  // namespace fuse_adapter
