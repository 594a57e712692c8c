// SPDX-License-Identifier: MIT
// nbdwire-server: moving a connection's bytes. Input goes to the machine, whose events are
// carried out (requests.hpp) and answered at once: the machine reserves room for every
// reply's end when it accepts the request, and holds input back (`blocked`) while that room
// is taken. Replies gather in its outbox as a burst of requests is handled and leave
// together, with their READ data, in one sendmsg().
#include "connection.hpp"

#include <sys/epoll.h>     // EPOLLIN, EPOLLOUT
#include <sys/sendfile.h>  // sendfile: large file READs without a copy through user space
#include <sys/socket.h>    // sendmsg, recv

#include <array>    // iovecs
#include <cerrno>   // errno
#include <cstdio>   // std::fprintf
#include <cstring>  // std::memmove, std::strerror

#include "../common.hpp"
#include "requests.hpp"

namespace nbdwire_server {

namespace {

using nbdwire::event_kind;

constexpr int recvs_per_wakeup = 16;  // fairness between busy connections
// WRITE payloads from this size on are received straight into a memory export.
constexpr std::uint64_t direct_receive_min = 64 * 1024;
// While a large WRITE payload arrives over TCP, epoll waits for this much of it (or the rest).
constexpr std::size_t lowat_max = 256 * 1024;
// File READ data read ahead of sending; past this many bytes per connection the server stops
// taking requests until the client has read its replies.
constexpr std::size_t staged_limit = 64u * 1024 * 1024;
// Gather segments per sendmsg(): the replies of a burst of requests, with their data.
constexpr std::size_t plan_segments = 64;

/// A send error: logged unless the client simply went away. Always false (close).
bool send_failed(connection& c) {
  if (c.tls && errno == EIO) log(c, c.tls->error());
  else if (errno != EPIPE && errno != ECONNRESET) log(c, std::string("send: ") + std::strerror(errno));
  else if (c.end_reason.empty()) c.end_reason = "the client closed the connection";
  return false;
}

/// Sends the first payload due with sendfile(), from the file it is read from. The reply
/// header has gone out: a file that cannot give its bytes now leaves no way to report the
/// error, so the connection closes rather than send wrong data. False: close.
bool send_file_data(connection& c) {
  const auto pay = c.m.pending_payload();
  const int file = c.store().sendfile_source();
  if (!pay || file < 0) {
    log(c, "internal: READ data owed that no source holds");
    return false;
  }
  auto off = static_cast<off_t>(pay->offset);
  const ssize_t w = sendfile(c.fd, file, &off, static_cast<std::size_t>(pay->length));
  if (w == 0) {
    log(c, "sendfile: the file ended before the READ's data");
    return false;
  }
  if (w < 0) {
    if (errno == EINTR) return true;
    if (errno == EAGAIN) return c.send_blocked = true;
    return send_failed(c);
  }
  (void)c.m.consume_payload(static_cast<std::uint64_t>(w));
  c.sendfile_active = static_cast<std::uint64_t>(w) < pay->length;
  if (c.sendfile_active) c.send_blocked = true;  // the socket is full: the next try says EAGAIN
  return true;
}

/// Under TLS: one plan's bytes through the session, in records of up to 16 KiB. Pieces of
/// data 4 KiB and larger are encrypted where they lie; smaller pieces (reply headers, small
/// READ data) are gathered first, so a burst of replies does not cost a record and a system
/// call per header. Returns the bytes taken, or -1 with errno (EAGAIN: try again later with
/// the same bytes first, as GnuTLS requires; it does, since nothing taken is re-offered).
long send_tls(connection& c, std::span<const iovec> iov) {
  constexpr std::size_t record = 16384, direct_min = 4096;
  std::array<std::byte, record> gather;
  long total = 0;
  std::size_t i = 0, off = 0;  // the first byte not taken: iov[i], at `off`
  while (i < iov.size()) {
    const auto* base = static_cast<const std::byte*>(iov[i].iov_base) + off;
    const std::size_t left = iov[i].iov_len - off;
    const std::byte* p = base;
    std::size_t n = 0;
    if (left >= direct_min) {
      n = std::min(left, record);
    } else {
      // Gather from here while it fits, cutting the last piece to fill the record.
      std::size_t j = i, o = off;
      while (j < iov.size() && n < record) {
        const std::size_t take = std::min(iov[j].iov_len - o, record - n);
        std::memcpy(gather.data() + n, static_cast<const std::byte*>(iov[j].iov_base) + o, take);
        n += take;
        o += take;
        if (o == iov[j].iov_len) ++j, o = 0;
      }
      p = gather.data();
    }
    const long w = c.tls->send(p, n);
    if (w < 0) return total > 0 ? total : -1;
    total += w;
    // Step over the bytes taken.
    for (auto k = static_cast<std::size_t>(w); k > 0;) {
      const std::size_t step = std::min(k, iov[i].iov_len - off);
      off += step;
      k -= step;
      if (off == iov[i].iov_len) ++i, off = 0;
    }
  }
  return total;
}

/// Sends queued output until all is sent or the socket is full: headers and READ data in one
/// sendmsg() per plan (memory exports in place, file data read earlier from `staged`), the
/// data of large file READs with sendfile(). False on a socket error.
bool send_out(connection& c) {
  while (!c.send_blocked && c.output_pending()) {
    if (c.sendfile_active) {
      if (!send_file_data(c)) return false;
      continue;
    }
    std::size_t staged = 0;  // staged bytes this plan maps, from the front
    nbdwire::send_plan<plan_segments> plan(c.m, [&](const nbdwire::payload_span& p) {
      const auto len = static_cast<std::size_t>(p.length);
      switch (c.path_of(p.length)) {
        case data_path::in_place: return nbdwire::bytes_view{c.store().in_place(p.offset), len};
        case data_path::sendfile: return nbdwire::bytes_view{};  // the plan stops in front of it
        case data_path::staged: break;
      }
      if (staged + len > c.staged.size()) return nbdwire::bytes_view{};  // not read: an internal error
      staged += len;
      return nbdwire::bytes_view{c.staged.at(staged - len), len};
    });
    if (plan.size() == 0) {
      if (!plan.empty()) (void)plan.advance(c.m, 0);  // zero-length payloads only
      else if (!send_file_data(c)) return false;      // stopped in front of file data
      continue;
    }
    std::array<iovec, plan_segments> iov;
    const msghdr mh = examples::plan_message(plan, iov);
    // MSG_MORE when file data follows: TCP joins the header to it.
    const ssize_t w = c.tls ? send_tls(c, {mh.msg_iov, mh.msg_iovlen})
                            : sendmsg(c.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT | (plan.stopped_at() ? MSG_MORE : 0));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return c.send_blocked = true;
      return send_failed(c);
    }
    // The staged bytes among those sent leave the staging buffer.
    std::size_t left = static_cast<std::size_t>(w), sent_staged = 0;
    for (const auto& seg : plan.segments()) {
      const std::size_t took = std::min(left, seg.len);
      if (c.staged.holds(seg.base)) sent_staged += took;
      left -= took;
    }
    if (!plan.advance(c.m, static_cast<std::size_t>(w))) {
      log(c, "internal: output accounting refused");
      return false;
    }
    c.staged.consume(sent_staged);
    // A short write means the socket buffer is full: the next try would only say EAGAIN.
    if (static_cast<std::size_t>(w) < plan.size()) c.send_blocked = true;
  }
  return true;
}

/// The -v line for a finished handshake: the export and what was negotiated.
std::string describe_export(const connection& c) {
  const nbdwire::negotiated& n = c.m.negotiated();
  std::string s = "export '" + std::string(c.exports[n.export_index].name) + "' (" + std::string(nbdwire::to_string(n.style));
  if (n.extended_headers) s += ", extended headers";
  else if (n.structured_replies) s += ", structured replies";
  if (n.meta_context_count) s += ", " + std::to_string(n.meta_context_count) + " metadata context" + (n.meta_context_count == 1 ? "" : "s");
  if (n.read_only()) s += ", read-only";
  if (n.tls) s += ", TLS";
  return s + ")";
}

/// Counts a request read, for the -v line at the end (describe_commands).
void count(connection& c, const nbdwire::request& r) {
  namespace cf = nbdwire::command_flag;
  ++c.requests;
  if (r.type < c.commands.size()) ++c.commands[r.type];
  if (r.cmd() == nbdwire::command::write && (r.flags & cf::fua) != 0) ++c.with_fua;
  if (r.cmd() == nbdwire::command::write_zeroes && (r.flags & cf::no_hole) != 0) ++c.with_no_hole;
}

/// Feeds the buffered input to the machine and carries out its events, until it needs more
/// input or holds input back. False: close.
bool feed(connection& c) {
  for (;;) {
    const auto r = c.m.receive(nbdwire::bytes_view{c.in.get() + c.start, c.end - c.start});
    c.start += r.consumed;
    if (c.start == c.end) c.start = c.end = 0;
    const auto& ev = r.ev;
    switch (ev.kind) {
      case event_kind::need_more: return true;
      case event_kind::blocked: c.held = true; return true;
      case event_kind::request:
        count(c, ev.req);
        c.header_first = false;
        if (!on_request(c, ev)) return false;
        break;
      case event_kind::request_refused: count(c, ev.req); break;
      case event_kind::ready:
        c.in_transmission = true;
        if (c.verbose) log(c, describe_export(c));
        break;
      case event_kind::start_tls:
        // The ACK is queued; nothing more is read until TLS is up (start_tls()).
        c.tls_starting = true;
        return true;
      case event_kind::payload:
        if (!on_payload(c, ev)) return false;
        break;
      case event_kind::disconnected:
        if (c.in_transmission) ++c.discs;  // NBD_CMD_DISC (NBD_OPT_ABORT before)
        [[fallthrough]];
      case event_kind::closed:
        c.end_reason = ev.kind == event_kind::disconnected ? "the client disconnected" : "the client closed";
        c.finishing = true;
        return true;
      case event_kind::failed:
        c.end_reason = "protocol error";
        log(c, "protocol error: " + std::string(nbdwire::to_string(ev.error)));
        (void)send_out(c);  // best effort: an error reply may be queued
        return false;
      default: break;  // option_answered: nothing to do
    }
    if (c.staged.size() > staged_limit) return c.held = true;  // the client reads its replies first
  }
}

/// After start_tls: the ACK out in plaintext, then the TLS handshake on the socket, with the
/// input already buffered after STARTTLS as its first bytes. 1: TLS is up; 0: waiting for
/// the socket (wanted_events() says which way); -1: close.
int start_tls(connection& c) {
  if (c.tls_starting) {
    if (!send_out(c)) return -1;
    if (c.output_pending()) return 0;
    try {
      c.tls = examples::make_tls_session(c.tls_creds, c.fd, {c.in.get() + c.start, c.end - c.start});
    } catch (const examples::failure& f) {
      log(c, f.what());
      return -1;
    }
    c.start = c.end = 0;
    c.tls_starting = false;
    c.tls_handshaking = true;
  }
  switch (c.tls->handshake()) {
    case examples::tls_session::status::again: return 0;
    case examples::tls_session::status::failed:
      log(c, c.tls->error());
      c.end_reason = "TLS handshake failed";
      return -1;
    case examples::tls_session::status::done: break;
  }
  c.tls_handshaking = false;
  c.send_blocked = false;
  (void)c.m.tls_started();
  if (c.verbose) log(c, "TLS: " + c.tls->description());
  return 1;
}

/// recv() on the socket, or through TLS once it is up: bytes, 0 at the end, -1 with errno.
ssize_t receive_some(connection& c, std::byte* dst, std::size_t len) {
  if (c.tls) return c.tls->recv(dst, len);
  return recv(c.fd, dst, len, 0);
}

/// SO_RCVLOWAT on a TCP connection (not under TLS, whose records the kernel cannot count).
void set_lowat(connection& c, std::size_t n) {
  if (!c.tcp || c.tls || n == c.lowat) return;
  const int v = static_cast<int>(n);
  if (setsockopt(c.fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v) == 0) c.lowat = n;
}

/// recv() of the rest of a WRITE payload straight into the export, with up to `extra` bytes
/// after it (the next request's header) into the empty input buffer.
ssize_t receive_payload(connection& c, std::byte* dst, std::size_t len, std::size_t extra) {
  std::array<iovec, 2> iov{{{dst, len}, {c.in.get() + c.end, extra}}};
  msghdr mh{};
  mh.msg_iov = iov.data();
  mh.msg_iovlen = iov.size();
  return recvmsg(c.fd, &mh, 0);
}

}  // namespace

void log(const connection& c, const std::string& what) {
  std::fprintf(stderr, "nbdwire-server: %s: %s\n", c.peer.c_str(), what.c_str());
}

void debug_transition(void* context, nbdwire::server_state from, nbdwire::server_trigger on,
                      nbdwire::server_state to) noexcept {
  std::array<char, 96> line{};
  const std::size_t n = nbdwire::format_transition(std::span<char>(line), from, on, to);
  const auto* c = static_cast<const connection*>(context);
  std::fprintf(stderr, "nbdwire-server: %s: debug: %.*s\n", c != nullptr ? c->peer.c_str() : "-",
               static_cast<int>(n), line.data());
}

std::string describe_commands(const connection& c) {
  using nbdwire::command;
  std::string s = std::to_string(c.requests) + (c.requests == 1 ? " request" : " requests");
  auto add = [&s, first = true](const char* name, std::uint64_t n) mutable {
    if (n == 0) return;
    s += first ? ": " : " ";
    first = false;
    s += name;
    s += '=';
    s += std::to_string(n);
  };
  const auto of = [&c](command k) { return c.commands[static_cast<std::size_t>(k)]; };
  add("READ", of(command::read));
  add("WRITE", of(command::write));
  add("FUA", c.with_fua);
  add("FLUSH", of(command::flush));
  add("TRIM", of(command::trim));
  add("WRITE_ZEROES", of(command::write_zeroes));
  add("NO_HOLE", c.with_no_hole);
  add("CACHE", of(command::cache));
  add("BLOCK_STATUS", of(command::block_status));
  add("RESIZE", of(command::resize));
  add("DISC", c.discs);
  return s;
}

bool service(connection& c, bool readable) {
  int recvs = recvs_per_wakeup;
  bool drained = false;  // the last recv() was short: the socket is most likely empty
  for (;;) {
    if (c.tls_starting || c.tls_handshaking) {
      const int r = start_tls(c);
      if (r <= 0) return r == 0;
      readable = true;  // the handshake may have brought the first option along
    }
    c.held = false;
    if (!c.finishing && !feed(c)) return false;
    if (c.tls_starting) continue;
    // Held input waits for output to drain; the machine holds none back otherwise, since
    // every request is answered at once (a WRITE once its payload is in).
    if (c.held && !c.output_pending()) {
      log(c, "internal: machine blocked with nothing to send");
      return false;
    }
    if (!send_out(c)) return false;
    if (c.finishing) return !c.m.drained();  // all answered and sent: close
    if (c.held) {
      if (c.send_blocked) return true;  // wait until writable, then feed the rest
      continue;                         // output drained: feed again
    }
    // Level-triggered epoll comes back if more is waiting, so a short read ends the turn
    // without a recv() that would only say EAGAIN.
    // Bytes TLS already decrypted wake no epoll: read them before waiting.
    const bool buffered = c.tls && c.tls->pending() > 0;
    if (!buffered && (!readable || drained || recvs-- == 0)) return true;
    std::byte* direct = nullptr;
    std::size_t want = 0;
    // The size of a request header: after a large WRITE, what is read into the buffer.
    const std::size_t header = c.m.negotiated().extended_headers ? 32 : 28;
    if (c.start == c.end && c.writing.active) {
      // WRITE data due next with nothing buffered: receive it straight into the export.
      // Small payloads come through the input buffer with the next headers instead: one
      // recv() and a small copy are cheaper than a recv() per payload.
      if (const auto ip = c.m.incoming_payload();
          ip && ip->cookie == c.writing.req.cookie && ip->length >= direct_receive_min) {
        direct = c.store().in_place(ip->offset);
        want = static_cast<std::size_t>(ip->length);
        c.header_first = direct != nullptr;  // file exports take payloads through the buffer
      }
    }
    if (!direct && c.end == input_buffer_size) {
      // Buffer full with an unconsumed tail: move it to the front (a recv of 0 bytes would
      // look like the client closing).
      std::memmove(c.in.get(), c.in.get() + c.start, c.end - c.start);
      c.end -= c.start;
      c.start = 0;
    }
    if (!direct) {
      want = input_buffer_size - c.end;
      // After a large WRITE: only the next header (and the end of this WRITE's payload, when
      // too little of it is left to receive in place), so that a payload behind it is not
      // read into the buffer and copied again (a 1 MiB WRITE used to bring up to 256 KiB of
      // the next one's payload along).
      if (c.header_first) {
        std::size_t limit = header;
        if (const auto ip = c.m.incoming_payload(); ip && c.writing.active) limit += static_cast<std::size_t>(ip->length);
        if (c.end - c.start < limit) want = std::min(want, limit - (c.end - c.start));
      }
    }
    // In place, the next request's header comes along in the same recvmsg() (not under TLS).
    const std::size_t extra = direct && !c.tls ? header : 0;
    const ssize_t n = extra ? receive_payload(c, direct, want, extra)
                            : receive_some(c, direct ? direct : c.in.get() + c.end, want);
    if (n > 0) {
      // Mid-WRITE the rest of the payload is usually on its way (clients often send header
      // and data separately): only a short read at a request boundary ends the turn.
      drained = static_cast<std::size_t>(n) < want && !c.writing.active;
      if (!direct) {
        c.end += static_cast<std::size_t>(n);
        continue;
      }
      const std::size_t payload = std::min(static_cast<std::size_t>(n), want);
      c.end += static_cast<std::size_t>(n) - payload;  // the next header, or part of it
      (void)c.m.consume_incoming_payload(payload);
      if (!c.m.incoming_payload()) {
        set_lowat(c, 1);
        if (!finish_write(c)) return false;
      }
      continue;
    }
    if (n == 0) {
      if (c.end_reason.empty()) c.end_reason = "the client closed the connection";
      const auto e = c.m.on_eof();
      if (e.kind == event_kind::failed) log(c, "protocol error: " + std::string(nbdwire::to_string(e.error)));
      return false;  // the client is gone: nothing more can be delivered
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      // Mid-payload: epoll wakes this loop once a good part of the rest is in, not per
      // segment, so the payload arrives in fewer, larger recv() calls. Never more than the
      // client still owes: a client waiting for the reply sends nothing else. Through the
      // buffer (a payload's short tail, the next header) any byte wakes it again.
      set_lowat(c, direct ? std::min(want, lowat_max) : 1);
      return true;
    }
    if (c.tls && errno == EIO) log(c, c.tls->error());
    else if (errno != ECONNRESET) log(c, std::string("receive: ") + std::strerror(errno));
    else if (c.end_reason.empty()) c.end_reason = "the client closed the connection";
    return false;
  }
}

std::uint32_t wanted_events(const connection& c) {
  if (c.tls_handshaking) return c.tls->wants_write() ? EPOLLOUT : EPOLLIN;
  std::uint32_t mask = 0;
  if (!c.held && !c.finishing) mask |= EPOLLIN;
  if (c.output_pending()) mask |= EPOLLOUT;
  return mask ? mask : EPOLLIN;  // never leave a connection with nothing to wake it
}

}  // namespace nbdwire_server
