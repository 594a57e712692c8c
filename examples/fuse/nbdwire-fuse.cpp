// SPDX-License-Identifier: MIT
// nbdwire-fuse: mounts an NBD export as one regular file, MOUNTPOINT/nbd (the layout of
// libnbd's nbdfuse). A thin adapter: FUSE worker threads queue requests, one I/O thread owns
// the socket and the nbdwire::client machine, which does all of the protocol.
//
//   FUSE threads --queue--> I/O thread --writev--> server
//        ^                      |  <--recv-- replies, READ data straight into the FUSE buffer
//        +---- completion ------+
//
// Many requests are in flight on the one connection at once; each carries the index of its
// slot in the in-flight table as its tag, which comes back on every event about it.
// A server that goes away fails every pending and later request with EIO.
//
// nbds:// and nbds+unix:// URIs: the handshake runs STARTTLS first (../sockets/tls_uri.hpp)
// and every later byte goes through the TLS session, in the handshake and in the I/O thread.
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 31  // the build passes 312 where libfuse has the 3.12 loop API
#endif

#include <fuse.h>

#include <fcntl.h>       // FALLOC_FL_*
#include <linux/falloc.h>
#include <poll.h>        // poll
#include <sys/eventfd.h> // eventfd: wakes the I/O thread
#include <sys/socket.h>  // recv, sendmsg, shutdown
#include <sys/stat.h>    // struct stat
#include <sys/time.h>    // timeval: handshake timeouts
#include <sys/uio.h>     // iovec
#include <unistd.h>      // close, read, write

#include <algorithm>           // std::min
#include <cerrno>              // errno values
#include <chrono>              // the disconnect deadline
#include <condition_variable>  // completion and queue space
#include <cstddef>             // std::byte
#include <cstdint>             // fixed-width integers
#include <cstdio>              // std::fprintf
#include <cstring>             // std::memcpy, std::strcmp
#include <mutex>               // std::mutex
#include <optional>            // free slots
#include <span>                // byte spans
#include <string>              // std::string
#include <thread>              // the I/O thread
#include <array>               // the in-flight table
#include <vector>              // buffers

#include "../sockets/common.hpp"
#include "../sockets/tls_uri.hpp"
#include "nbdwire/nbdwire.hpp"
#include "nbdwire/posix.hpp"
#include "nbdwire/transfer.hpp"

namespace {

using nbdwire::command;
using nbdwire::event_kind;
namespace tflag = nbdwire::transmission_flag;

constexpr const char* file_name = "nbd";
constexpr const char* file_path = "/nbd";

/// A request the machine refused to send, as the errno the file operation returns.
int to_errno(nbdwire::errc e) {
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
  connection(int fd, const nbdwire::negotiated& n, std::vector<std::byte> leftover,
             std::unique_ptr<examples::tls_session> tls)
      : fd_(fd), neg_(n), m_(n), leftover_(std::move(leftover)), tls_(std::move(tls)) {
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

// ---- the handshake, before mounting, so that errors reach the terminal ----------------------

/// Runs the handshake on a blocking socket (with timeouts) up to `ready`, STARTTLS first for
/// an nbds URI (`tls` then holds the session). Returns what was negotiated; `leftover` gets
/// the bytes received after `ready` (none from a sane server).
nbdwire::negotiated handshake(int fd, const examples::client_uri& u, std::vector<std::byte>& leftover,
                              std::unique_ptr<examples::tls_session>& tls) {
  const std::string& export_name = u.export_name;
  nbdwire::client_config cfg;
  cfg.tls = examples::tls_policy(u);
  // Loaded before anything is sent: a certificate problem is reported first.
  const auto creds = examples::may_use_tls(u) ? examples::client_credentials(u.tls_config) : nullptr;
  nbdwire::client c(cfg);
  std::vector<std::byte> buf(64 * 1024);
  // The events of `in`: GO on the greeting, failures worded for the user. Stops at `ready`
  // and at `start_tls`.
  const auto handle = [&](std::span<const std::byte> in) {
    return examples::feed(c, in, [&](const nbdwire::event& ev) {
      switch (ev.kind) {
        case event_kind::greeting:
          if (!c.go(export_name)) examples::fail("cannot send NBD_OPT_GO");
          return true;
        case event_kind::option_refused:
          if (examples::tls_required_refusal(ev)) examples::fail(examples::tls_required_text);
          examples::fail("the server refused export '" + export_name + "' (" +
                         std::string(nbdwire::to_string(ev.reply)) + ")" +
                         (ev.data.empty() ? std::string() : ": " + std::string(nbdwire::as_chars(ev.data))));
        case event_kind::ready: return false;  // the I/O thread's machine takes it from here
        case event_kind::start_tls: return false;  // TLS takes over the socket
        case event_kind::failed:
          if (const auto t = examples::tls_failure_text(ev.error)) examples::fail(*t);
          examples::fail("handshake: " + std::string(nbdwire::to_string(ev.error)));
        case event_kind::closed:
        case event_kind::disconnected: examples::fail("the server ended the handshake");
        default: return true;
      }
    });
  };
  for (bool ready = false;;) {
    const auto sent = tls ? examples::send_queued_tls(*tls, c) : examples::send_queued(fd, c);
    if (sent != examples::send_status::done) {
      if (tls && errno == EIO) examples::fail(tls->error());
      if (tls && (errno == EPIPE || errno == ECONNRESET)) examples::fail(examples::tls_closed_text);
      examples::fail_errno("handshake: send");
    }
    if (ready) return c.negotiated();
    const ssize_t got = examples::receive_some(fd, tls.get(), buf.data(), buf.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) examples::fail("handshake: the server did not answer within 30 s");
    if (got < 0 && tls && errno == EIO) {
      if (tls->error().find("alert") != std::string::npos) examples::fail(tls->error());
      examples::fail(examples::tls_closed_text);
    }
    if (got < 0) examples::fail_errno("handshake: receive");
    if (got == 0 && tls) examples::fail(examples::tls_closed_text);
    if (got == 0) {
      const auto ev = c.on_eof();
      if (ev.kind == event_kind::failed && ev.error == nbdwire::errc::export_name_refused)
        examples::fail("the server has no export '" + export_name + "'");
      examples::fail("the server closed the connection during the handshake");
    }
    const std::span<const std::byte> in(buf.data(), static_cast<std::size_t>(got));
    auto r = handle(in);
    if (r.ev.kind == event_kind::start_tls) {
      // The rest of this read is the TLS layer's; the machine then greets again, over TLS.
      tls = examples::start_client_tls(fd, c, in.subspan(r.consumed), creds);
      r = handle({});
      if (r.ev.kind == event_kind::ready) examples::fail("internal: ready without options");
      continue;
    }
    if (r.ev.kind == event_kind::ready) {
      ready = true;
      leftover.assign(in.begin() + static_cast<std::ptrdiff_t>(r.consumed), in.end());
    }
  }
}

// ---- the file system ---------------------------------------------------------------------

connection* conn = nullptr;
bool mount_read_only = false;
struct stat file_stat {};

void* fs_init(fuse_conn_info*, fuse_config* cfg) {
  cfg->use_ino = 0;
  cfg->direct_io = 0;   // the page cache serves repeated reads; O_DIRECT bypasses it
  cfg->kernel_cache = 0;  // every open drops cached pages, so other clients' writes show up
  // After daemonizing (threads do not survive fork).
  conn->start();
  return nullptr;
}

void fs_destroy(void*) { conn->stop(); }

int fs_getattr(const char* path, struct stat* st, fuse_file_info*) {
  if (std::strcmp(path, "/") == 0) {
    *st = file_stat;
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_size = 0;
    st->st_blocks = 0;
    return 0;
  }
  if (std::strcmp(path, file_path) != 0) return -ENOENT;
  *st = file_stat;
  return 0;
}

int fs_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  if (std::strcmp(path, "/") != 0) return -ENOTDIR;
  fill(buf, ".", nullptr, 0, fuse_fill_dir_flags{});
  fill(buf, "..", nullptr, 0, fuse_fill_dir_flags{});
  fill(buf, file_name, &file_stat, 0, fuse_fill_dir_flags{});
  return 0;
}

int fs_open(const char* path, fuse_file_info* fi) {
  if (std::strcmp(path, file_path) != 0) return -ENOENT;
  if ((fi->flags & O_ACCMODE) != O_RDONLY && mount_read_only) return -EROFS;
  return 0;
}

int fs_truncate(const char* path, off_t size, fuse_file_info*) {
  if (std::strcmp(path, file_path) != 0) return -ENOENT;
  // The export has a fixed size, like a block device.
  return size == file_stat.st_size ? 0 : -EINVAL;
}

std::uint64_t export_size() { return conn->negotiated().export_size; }

int fs_read(const char*, char* buf, std::size_t size, off_t off, fuse_file_info*) {
  const std::uint64_t end = export_size();
  if (off < 0) return -EINVAL;
  const auto o = static_cast<std::uint64_t>(off);
  if (o >= end || size == 0) return 0;
  const std::uint64_t len = std::min<std::uint64_t>(size, end - o);
  const int e = conn->run(command::read, o, len, reinterpret_cast<std::byte*>(buf));
  return e ? -e : static_cast<int>(len);
}

int fs_write(const char*, const char* buf, std::size_t size, off_t off, fuse_file_info*) {
  if (mount_read_only) return -EROFS;
  const std::uint64_t end = export_size();
  if (off < 0) return -EINVAL;
  const auto o = static_cast<std::uint64_t>(off);
  if (size == 0) return 0;
  if (o >= end) return -ENOSPC;
  const std::uint64_t len = std::min<std::uint64_t>(size, end - o);
  // WRITE data is only read from this buffer.
  auto* data = reinterpret_cast<std::byte*>(const_cast<char*>(buf));
  const int e = conn->run(command::write, o, len, data);
  return e ? -e : static_cast<int>(len);
}

int fs_fsync(const char*, int, fuse_file_info*) {
  if (mount_read_only || !conn->negotiated().has(tflag::send_flush)) return 0;
  return -conn->run(command::flush, 0, 0, nullptr);
}

int fs_fallocate(const char*, int mode, off_t off, off_t len, fuse_file_info*) {
  if (mount_read_only) return -EROFS;
  if (off < 0 || len <= 0) return -EINVAL;
  const std::uint64_t end = export_size();
  const auto o = static_cast<std::uint64_t>(off);
  const auto l = static_cast<std::uint64_t>(len);
  const bool keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  mode &= ~FALLOC_FL_KEEP_SIZE;
  if (mode == 0) return o + l <= end || keep_size ? 0 : -ENOSPC;  // nothing to allocate
  if (o >= end) return 0;
  const std::uint64_t n = std::min(l, end - o);
  // An export without TRIM or WRITE_ZEROES: the machine refuses them (EOPNOTSUPP).
  if (mode == FALLOC_FL_PUNCH_HOLE) return -conn->run(command::trim, o, n, nullptr);
  if (mode == FALLOC_FL_ZERO_RANGE) return -conn->run(command::write_zeroes, o, n, nullptr);
  return -EOPNOTSUPP;
}

/// Mounts, serves until unmounted or signalled, unmounts. Returns the exit status.
int serve(const char* argv0, const std::string& mountpoint, const std::string& opts, bool foreground,
          const fuse_operations& ops) {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  if (fuse_opt_add_arg(&args, argv0) != 0 || fuse_opt_add_arg(&args, "-o") != 0 ||
      fuse_opt_add_arg(&args, opts.c_str()) != 0)
    return 1;
  fuse* f = fuse_new(&args, &ops, sizeof ops, nullptr);
  fuse_opt_free_args(&args);
  if (!f) return 1;
  int rc = 1;
  if (fuse_mount(f, mountpoint.c_str()) == 0) {
    fuse_session* se = fuse_get_session(f);
    if (fuse_daemonize(foreground ? 1 : 0) == 0 && fuse_set_signal_handlers(se) == 0) {
#if FUSE_USE_VERSION >= 312
      // Enough workers to fill the cookie table; the default, 10, leaves most of it idle.
      fuse_loop_config* cfg = fuse_loop_cfg_create();
      fuse_loop_cfg_set_max_threads(cfg, static_cast<unsigned>(nbdwire::max_in_flight));
      rc = fuse_loop_mt(f, cfg) == 0 ? 0 : 1;
      fuse_loop_cfg_destroy(cfg);
#else
      fuse_loop_config cfg{};
      cfg.clone_fd = 0;
      cfg.max_idle_threads = 10;
      rc = fuse_loop_mt(f, &cfg) == 0 ? 0 : 1;
#endif
      fuse_remove_signal_handlers(se);
    }
    fuse_unmount(f);
  }
  fuse_destroy(f);
  return rc;
}

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: nbdwire-fuse [--read-only] [--foreground] MOUNTPOINT URI\n"
               "       nbdwire-fuse --help | --version\n"
               "  Mounts the NBD export URI as the file MOUNTPOINT/nbd; unmount with fusermount3 -u MOUNTPOINT.\n"
               "  URI: nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH; nbds:// and nbds+unix://\n"
               "       for TLS, with tls-certificates=DIR or [USER@ and] tls-psk-file=FILE, tls-hostname=NAME,\n"
               "       tls-verify-peer=0\n"
               "  --read-only   mount read-only (also implied by a read-only export)\n"
               "  --foreground  stay in the foreground instead of daemonizing\n"
               "  --version     print the program's name and version\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool read_only = false, foreground = false;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--read-only" || a == "-r") {
      read_only = true;
    } else if (a == "--foreground" || a == "-f") {
      foreground = true;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--version") {
      std::printf("nbdwire-fuse %s\n", NBDWIRE_VERSION_STRING);
      return 0;
    } else if (a.starts_with("-") && a.size() > 1) {
      std::fprintf(stderr, "nbdwire-fuse: unknown option %s\n", a.c_str());
      usage(stderr);
      return 2;
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 2) {
    usage(stderr);
    return 2;
  }
  const std::string& mountpoint = pos[0];
  const std::string& uri = pos[1];

  std::unique_ptr<connection> c;
  try {
    const auto u = examples::parse_client_uri(uri);
    const int fd = examples::connect_to(u.where);
    nbdwire::negotiated neg;
    std::vector<std::byte> leftover;
    std::unique_ptr<examples::tls_session> tls;
    try {
      // A server that accepts and then says nothing must not hang the command.
      const timeval limit{30, 0};
      (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
      neg = handshake(fd, u, leftover, tls);
    } catch (...) {
      tls.reset();
      close(fd);
      throw;
    }
    examples::set_nonblocking(fd);
    c = std::make_unique<connection>(fd, neg, std::move(leftover), std::move(tls));
  } catch (const examples::failure& e) {
    std::fprintf(stderr, "nbdwire-fuse: %s\n", e.what());
    return 1;
  }

  const auto& neg = c->negotiated();
  mount_read_only = read_only || neg.read_only();
  if (neg.export_size > static_cast<std::uint64_t>(INT64_MAX)) {
    std::fprintf(stderr, "nbdwire-fuse: the export is too large for a file\n");
    return 1;
  }
  file_stat.st_mode = S_IFREG | (mount_read_only ? 0444 : 0644);
  file_stat.st_nlink = 1;
  file_stat.st_uid = getuid();
  file_stat.st_gid = getgid();
  file_stat.st_size = static_cast<off_t>(neg.export_size);
  file_stat.st_blocks = static_cast<blkcnt_t>((neg.export_size + 511) / 512);
  file_stat.st_blksize = static_cast<blksize_t>(neg.block_size.preferred);
  const auto now = time(nullptr);
  file_stat.st_atime = file_stat.st_mtime = file_stat.st_ctime = now;
  conn = c.get();

  fuse_operations ops{};
  ops.init = fs_init;
  ops.destroy = fs_destroy;
  ops.getattr = fs_getattr;
  ops.readdir = fs_readdir;
  ops.open = fs_open;
  ops.truncate = fs_truncate;
  ops.read = fs_read;
  ops.write = fs_write;
  ops.fsync = fs_fsync;
  ops.fallocate = fs_fallocate;

  std::string opts = "fsname=nbdwire,subtype=nbdwire";
  if (mount_read_only) opts += ",ro";
  const int rc = serve(argv[0], mountpoint, opts, foreground, ops);
  // When mounting failed, init never ran: the I/O thread still says goodbye with DISC.
  c->start();
  c->stop();
  conn = nullptr;
  return rc;
}
