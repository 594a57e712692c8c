// SPDX-License-Identifier: MIT
// nbdwire-client: one connection, the handshake, and the blocking event loop.
#include "connection.hpp"

#include <fcntl.h>         // splice, F_SETPIPE_SZ: READ data from the socket into a file
#include <poll.h>          // poll: one loop sends and receives without blocking either way
#include <sys/sendfile.h>  // sendfile: WRITE payloads from a file without a copy through user space
#include <unistd.h>        // close, pread

#include <algorithm>  // std::min
#include <array>      // the --debug line
#include <atomic>     // connections_made
#include <cstdio>     // std::snprintf: the --timeout message

namespace client_app {

namespace {
constexpr std::size_t input_buffer_size = 256 * 1024;
}  // namespace

std::string errc_text(nbdwire::errc e) { return std::string(nbdwire::to_string(e)); }

namespace {
/// `cfg` reporting its state changes to `trace` (when it has a function: --debug).
nbdwire::client_config traced(nbdwire::client_config cfg, nbdwire::client_trace trace) {
  if (trace.on_transition != nullptr) cfg.trace = trace;
  return cfg;
}
std::atomic<unsigned> connections_made{0};
}  // namespace

connection::connection(int fd, const nbdwire::client_config& cfg,
                       std::shared_ptr<const examples::tls_credentials> creds, bool debug)
    : fd_(fd),
      id_(++connections_made),
      m_(traced(cfg, debug ? nbdwire::client_trace{&debug_transition, this} : nbdwire::client_trace{})),
      buf_(input_buffer_size),
      creds_(std::move(creds)) {
  examples::set_nonblocking(fd_);
}

void connection::debug_transition(void* context, nbdwire::client_state from, nbdwire::client_trigger on,
                                  nbdwire::client_state to) noexcept {
  std::array<char, 96> line{};
  const std::size_t n = nbdwire::format_transition(std::span<char>(line), from, on, to);
  std::fprintf(stderr, "nbdwire-client: debug: connection %u: %.*s\n", static_cast<connection*>(context)->id_,
               static_cast<int>(n), line.data());
}

connection::~connection() {
  shut_down();
  for (const int p : pipe_)
    if (p >= 0) close(p);
}

void connection::submit(nbdwire::command c, std::uint64_t offset, std::uint64_t length, std::uint64_t tag,
                        const char* what) {
  for (;;) {
    const auto r = m_.submit(c, 0, offset, length, tag);
    if (r) return;
    if (r.error() == nbdwire::errc::outbox_full && output_pending()) {
      flush();
      continue;
    }
    const std::string at = c == nbdwire::command::flush ? "" : " at offset " + std::to_string(offset);
    fail("cannot send " + std::string(what) + at + ": " + errc_text(r.error()));
  }
}

std::string connection::take_error_message(std::uint64_t tag) {
  return tag < messages_.size() ? std::exchange(messages_[tag], {}) : std::string();
}

void connection::fail_idle() const {
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g", idle_timeout_ms_ / 1000.0);
  fail(std::string("the server sent and took nothing for ") + seconds + " s (--timeout)");
}

nbdwire::event connection::next(int timeout_ms) {
  for (;;) {
    if (eof_) fail("the server closed the connection");
    const auto r = m_.receive(nbdwire::bytes_view{buf_.data() + start_, end_ - start_});
    start_ += r.consumed;
    if (start_ == end_) start_ = end_ = 0;
    if (r.ev.kind == event_kind::start_tls) {
      start_tls();
      continue;
    }
    if (r.ev.kind == event_kind::error_chunk) {
      if (r.ev.tag < messages_.size() && messages_[r.ev.tag].empty())
        messages_[r.ev.tag] = std::string(nbdwire::as_chars(r.ev.data));
      continue;
    }
    if (r.ev.kind != event_kind::need_more && r.ev.kind != event_kind::blocked) return r.ev;
    if (r.ev.kind == event_kind::blocked && !output_pending())
      fail("internal: the client machine is blocked with nothing to send");

    send_some();
    pollfd p{fd_, 0, 0};
    if (output_pending()) p.events |= POLLOUT;
    if (end_ < buf_.size()) p.events |= POLLIN;
    // Bytes TLS has decrypted already are readable whatever the socket says.
    const bool buffered = input_buffered() && end_ < buf_.size();
    const int wait = timeout_ms >= 0 ? timeout_ms : idle_timeout_ms_;
    const int rc = poll(&p, 1, buffered ? 0 : wait);
    if (buffered) p.revents |= POLLIN;
    if (rc < 0) {
      if (errno == EINTR) continue;
      examples::fail_errno("poll");
    }
    if (rc == 0 && !buffered) {
      if (timeout_ms >= 0) return {};  // the caller's own deadline
      fail_idle();
    }
    if (p.revents & POLLOUT) send_some();
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;

    // READ data due next with nothing buffered: receive it where it belongs.
    const auto ip = start_ == end_ ? m_.incoming_payload() : std::nullopt;
    ssize_t n = -1;
    if (const file_target t = ip && payload_file ? payload_file(*ip) : file_target{}; t.file >= 0) {
      n = receive_into_file(t, ip->length);
    } else if (std::byte* dst = ip && payload_sink ? payload_sink(*ip) : nullptr) {
      n = receive(dst, static_cast<std::size_t>(ip->length));
    } else {
      n = receive(buf_.data() + end_, buf_.size() - end_);
      if (n > 0) {
        end_ += static_cast<std::size_t>(n);
        continue;
      }
    }
    if (n > 0) {
      if (!m_.consume_incoming_payload(static_cast<std::uint64_t>(n)))
        fail("internal: payload accounting went wrong");
    } else if (n == 0) {
      if (tls_ && !aborting_ && m_.state() != nbdwire::client_state::transmission) fail(examples::tls_closed_text);
      return end_of_input();
    } else if (errno != EAGAIN && errno != EINTR) {
      fail_io("receive from the server", errno);
    }
  }
}

void connection::fail_io(const std::string& what, int err) {
  if (tls_) {
    // During the handshake the server may have said why in an alert before it closed: with
    // TLS 1.3 it checks the client's certificate after the client's handshake is done.
    const bool negotiating = m_.state() != nbdwire::client_state::transmission;
    if (negotiating && err != EIO) {
      std::byte b[256];
      if (tls_->recv(b, sizeof b) < 0 && errno == EIO) err = EIO;
    }
    if (negotiating && (err != EIO || tls_->error().find("alert") == std::string::npos))
      fail(examples::tls_closed_text);
    if (err == EIO) fail(tls_->error());
  }
  examples::fail_errno(what, err);
}

ssize_t connection::receive(void* dst, std::size_t len) { return examples::receive_some(fd_, tls_.get(), dst, len); }

/// The machine saw STARTTLS acknowledged: the rest of the input is the TLS layer's.
void connection::start_tls() {
  tls_ = examples::start_client_tls(fd_, m_, nbdwire::bytes_view{buf_.data() + start_, end_ - start_}, creds_);
  start_ = end_ = 0;
  no_splice_ = no_sendfile_ = true;  // the bytes on the socket are TLS records
}

void connection::flush(int timeout_ms) {
  while (output_pending()) {
    if (send_some()) continue;
    pollfd p{fd_, POLLOUT, 0};
    const int rc = poll(&p, 1, timeout_ms >= 0 ? timeout_ms : idle_timeout_ms_);
    if (rc < 0 && errno != EINTR) examples::fail_errno("poll");
    if (rc == 0) {
      if (timeout_ms >= 0) return;
      fail_idle();
    }
  }
}

int connection::release() {
  if (output_pending()) flush();
  if (start_ != end_) fail("the server sent data after the handshake that nobody asked for");
  if (tls_) fail("a TLS connection cannot be handed over");
  const int fl = fcntl(fd_, F_GETFL);
  if (fl < 0 || fcntl(fd_, F_SETFL, fl & ~O_NONBLOCK) < 0) examples::fail_errno("fcntl(~O_NONBLOCK)");
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void connection::shut_down() noexcept {
  if (fd_ < 0) return;
  try {
    using nbdwire::client_state;
    const auto st = m_.state();
    if (!eof_ && st == client_state::transmission) {
      if (m_.disconnect()) flush(2000);
      if (tls_) tls_->bye();
    } else if (!eof_ && st == client_state::negotiating) {
      aborting_ = true;
      if (m_.abort()) {
        flush(2000);
        // The server may ACK or simply close; either ends it (bounded wait).
        for (int i = 0; i < 4 && !eof_; ++i) {
          const auto ev = next(500);
          if (ev.kind == event_kind::need_more || ev.terminal()) break;
        }
      }
    } else if (!eof_ && output_pending()) {
      // What the machine queued as it failed or refused is what the protocol obliges it to
      // send (NBD_OPT_ABORT after ERR_SHUTDOWN or a refused STARTTLS): it goes out first.
      flush(1000);
    }
  } catch (...) {
    // Best effort: the connection is being dropped anyway.
  }
  close(fd_);
  fd_ = -1;
}

nbdwire::event connection::end_of_input() {
  eof_ = true;
  return m_.on_eof();
}

/// Sends what it can without blocking; false when the socket is full. Payloads in memory
/// go out with their headers in one sendmsg(); one in a file goes after its header with
/// sendfile().
bool connection::send_some() {
  const auto in_memory = [&](const nbdwire::payload_span& p) -> nbdwire::bytes_view {
    const payload_origin src = payload_source ? payload_source(p) : payload_origin{};
    if (src.file < 0 && !src.data) fail("internal: no data for a WRITE payload");
    if (!src.data) return {};  // from the file, after the header
    return {src.data, static_cast<std::size_t>(p.length)};
  };
  const auto none = [](const nbdwire::payload_span&) {};
  for (;;) {
    const auto st = tls_ ? examples::send_queued_tls(*tls_, m_, in_memory, none)
                         : examples::send_queued(fd_, m_, in_memory, none);
    switch (st) {
      case examples::send_status::done: return true;
      case examples::send_status::would_block: return false;
      case examples::send_status::failed: fail_io("send to the server", errno);
      case examples::send_status::stopped: break;
    }
    const auto pay = m_.pending_payload();
    if (!pay) return true;
    if (!send_from_file(payload_source(*pay), *pay)) return false;
  }
}

/// Moves up to `length` bytes of READ payload from the socket into t.file at t.offset: with
/// splice() through a pipe of this connection's, or, where a file or socket cannot splice,
/// through a small buffer. Returns the bytes moved, 0 at the end of input, -1 with errno.
ssize_t connection::receive_into_file(const file_target& t, std::uint64_t length) {
  if (!no_splice_ && pipe_[0] < 0) {
    if (pipe2(pipe_, O_CLOEXEC) != 0) examples::fail_errno("pipe");
    // A bigger pipe moves more per call (at most /proc/sys/fs/pipe-max-size; best effort).
    pipe_size_ = fcntl(pipe_[1], F_SETPIPE_SZ, 1 << 20);
    if (pipe_size_ <= 0) pipe_size_ = fcntl(pipe_[1], F_GETPIPE_SZ);
    if (pipe_size_ <= 0) pipe_size_ = 64 * 1024;
  }
  if (!no_splice_) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(length, static_cast<std::uint64_t>(pipe_size_)));
    const ssize_t n = splice(fd_, nullptr, pipe_[1], nullptr, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      // The pipe was empty and now holds n bytes: all of them go to the file before
      // anything else is received.
      off_t at = t.offset;
      for (std::size_t left = static_cast<std::size_t>(n); left > 0;) {
        const ssize_t w = splice(pipe_[0], nullptr, t.file, &at, left, SPLICE_F_MOVE);
        if (w > 0) {
          left -= static_cast<std::size_t>(w);
          continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno != EINVAL) examples::fail_errno("write the READ data");
        // The file cannot take a splice: the rest goes through a buffer, now and from now on.
        no_splice_ = true;
        std::byte bounce[64 * 1024];
        while (left > 0) {
          const ssize_t got = read(pipe_[0], bounce, std::min(left, sizeof bounce));
          if (got <= 0) examples::fail_errno("read back the READ data");
          examples::pwrite_all(t.file, bounce, static_cast<std::size_t>(got), at, "the output file");
          at += got;
          left -= static_cast<std::size_t>(got);
        }
      }
      return n;
    }
    if (n == 0 || errno != EINVAL) return n;
    no_splice_ = true;  // this socket cannot splice
  }
  std::byte bounce[64 * 1024];
  const ssize_t n = receive(bounce, std::min<std::uint64_t>(length, sizeof bounce));
  if (n > 0) examples::pwrite_all(t.file, bounce, static_cast<std::size_t>(n), t.offset, "the output file");
  return n;
}

/// Sends what the socket takes of a payload that is in a file; false when it is full.
bool connection::send_from_file(const payload_origin& src, const nbdwire::payload_span& pay) {
  off_t off = src.file_offset;
  std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(pay.length, 1u << 30));
  ssize_t w = -1;
  if (!no_sendfile_) {
    w = sendfile(fd_, src.file, &off, want);
    // A file system without splice support: read and send through a small buffer instead.
    if (w < 0 && (errno == EINVAL || errno == ENOSYS)) no_sendfile_ = true;
  }
  if (no_sendfile_) {
    std::byte bounce[64 * 1024];
    want = std::min(want, tls_ ? std::size_t{16 * 1024} : sizeof bounce);  // TLS: one record
    const ssize_t got = pread(src.file, bounce, want, off);
    if (got < 0) examples::fail_errno("read the input file");
    // Over TLS a retry after EAGAIN offers the same bytes again (the same file range).
    if (got == 0) w = 0;
    else if (tls_) w = tls_->send(bounce, static_cast<std::size_t>(got));
    else w = send(fd_, bounce, static_cast<std::size_t>(got), MSG_NOSIGNAL);
  }
  if (w < 0) {
    if (errno == EINTR) return true;
    if (errno == EAGAIN) return false;
    fail_io("send to the server", errno);
  }
  // The request's length is on the wire already: a file that shrank cannot make it up.
  if (w == 0) fail("the input file ended before the data of a WRITE (did it shrink during the copy?)");
  if (!m_.consume_payload(static_cast<std::uint64_t>(w))) fail("internal: payload accounting went wrong");
  return true;
}

// ---- the handshake -----------------------------------------------------------------------------

std::unique_ptr<connection> open_connection(const examples::client_uri& uri, const options& o,
                                            std::span<const std::string_view> contexts) {
  nbdwire::client_config cfg;
  cfg.meta_contexts = contexts;
  cfg.tls = examples::tls_policy(uri);
  if (examples::may_use_tls(uri) && o.legacy) fail("the 1997 framing has no handshake, so it cannot do TLS");
  // Loaded before connecting, once per process: a certificate problem is reported first.
  auto creds = examples::may_use_tls(uri) ? examples::client_credentials(uri.tls_config) : nullptr;
  if (o.legacy) {
    if (*o.legacy_size > 0xffffffffu) fail("the 1997 framing addresses less than 4 GiB; --size is too large");
    cfg.style = nbdwire::handshake_style::legacy_1997;
    cfg.legacy_export_size = *o.legacy_size;
  }
  const int fd = examples::connect_to(uri.where);
  auto c = std::make_unique<connection>(fd, cfg, std::move(creds), o.debug);
  c->set_idle_timeout(o.timeout_ms);
  return c;
}

std::string refusal_text(const nbdwire::event& ev) {
  std::string s(nbdwire::to_string(ev.reply));
  if (!ev.data.empty()) s += ": " + std::string(nbdwire::as_chars(ev.data));
  return s;
}

void fail_event(const nbdwire::event& ev, const std::string& during) {
  switch (ev.kind) {
    case event_kind::failed:
      if (const auto tls = examples::tls_failure_text(ev.error)) fail(*tls);
      if (ev.error == nbdwire::errc::export_name_refused)
        fail("the server closed the connection: export refused (" + during + ")");
      if (ev.error == nbdwire::errc::unexpected_eof || ev.error == nbdwire::errc::eof_with_requests_in_flight)
        fail("the server closed the connection " + during + " (" + errc_text(ev.error) + ")");
      fail("protocol error " + during + ": " + errc_text(ev.error));
    case event_kind::closed:
    case event_kind::disconnected: fail("the server closed the connection " + during);
    default: fail("unexpected " + std::string(nbdwire::to_string(ev.kind)) + " event " + during);
  }
}

std::string request_error(const char* what, std::uint64_t offset, std::uint64_t length, nbdwire::nbd_error e,
                          const std::string& message) {
  return std::string(what) + " of " + std::to_string(length) + " bytes at offset " + std::to_string(offset) +
         " failed: " + std::string(nbdwire::to_string(e)) + (message.empty() ? "" : " (" + message + ")");
}

nbdwire::event handshake_event(connection& c) {
  // Every handshake style has the server speak first, so silence at the start means a server
  // that expects the 1997 framing (or no NBD server at all).
  constexpr int greeting_timeout_ms = 10000;
  const bool greeted = c.machine().state() != nbdwire::client_state::awaiting_greeting;
  const auto ev = c.next(greeted ? -1 : greeting_timeout_ms);
  if (ev.kind == event_kind::need_more)
    fail("no greeting from the server within 10 s (a server using the 1997 framing needs "
         "--style legacy1997 --size SIZE)");
  return ev;
}

export_facts negotiate(connection& c, const std::string& name, bool list_contexts) {
  export_facts f;
  f.requested_name = name;
  auto& m = c.machine();
  if (m.state() == nbdwire::client_state::transmission) return f;  // legacy 1997: no handshake
  auto go = [&] {
    if (const auto r = m.go(name, nbdwire::info_request::all); !r)
      fail("cannot request export '" + name + "': " + errc_text(r.error()));
  };
  bool listing = false;
  for (;;) {
    const auto ev = handshake_event(c);
    const bool list_answer = listing && ev.option == static_cast<std::uint32_t>(nbdwire::option::list_meta_context);
    switch (ev.kind) {
      case event_kind::greeting:
        if (list_contexts && m.list_meta_context(name)) {
          listing = true;
          break;
        }
        go();
        break;
      case event_kind::meta_context:
        // LIST_META_CONTEXT replies can stream without end: what is kept is bounded.
        if (f.contexts.size() == 10000) fail("the server listed more than 10000 metadata contexts; giving up");
        f.contexts.emplace_back(nbdwire::as_chars(ev.data));
        break;
      case event_kind::option_done:
        if (!list_answer) fail_event(ev, "during the handshake");
        listing = false;
        f.contexts_listed = true;
        go();
        break;
      case event_kind::info:
        if (ev.info == nbdwire::info_type::description) f.description = std::string(nbdwire::as_chars(ev.data));
        if (ev.info == nbdwire::info_type::name) f.canonical_name = std::string(nbdwire::as_chars(ev.data));
        if (ev.info == nbdwire::info_type::block_size) f.block_size = ev.block_size;
        break;
      case event_kind::ready: return f;
      case event_kind::option_refused:
        if (list_answer) {
          listing = false;
          f.contexts.clear();
          go();
          break;
        }
        if (examples::tls_required_refusal(ev)) fail(examples::tls_required_text);
        fail("the server refused export '" + name + "': " + refusal_text(ev));
      default: fail_event(ev, "during the handshake");
    }
  }
}

}  // namespace client_app
