// SPDX-License-Identifier: MIT
// nbdwire: the server machine. Bytes from the client in, events out; replies in, bytes
// for the client out. No I/O, no heap, no exceptions.
//
// Contract
//   receive(in)        -> {consumed, event}. Drop `consumed` bytes and call again until the
//                         event is need_more. `blocked` means the machine holds input back
//                         until the caller drains pending_output() (or, in the 1997 framing,
//                         answers the request in hand); then call receive() again.
//   reply(req, error)  -> answers a `request` event. A successful READ reply reserves the
//                         data: pending_payload() asks the caller to send it right after
//                         pending_output(), straight from its storage.
//   incoming_payload() -> WRITE data arriving next, which the caller may recv() straight
//                         into its storage and report with consume_incoming_payload(n); or
//                         feed it to receive() and get `payload` events that view the input.
// The machine validates every request (checklist 3.3) and answers invalid ones itself, so
// the caller only ever sees requests it can carry out. A refused WRITE's payload is consumed
// and dropped, which keeps the stream in sync. Framing errors are terminal.
// Handshake styles: fixed newstyle, newstyle, oldstyle, and the 1997 framing without any
// handshake. Option data is parsed as it streams in, so a long option costs no memory; the
// only buffers are one option body decoder and the outbox.
//
// Parts, one job each (include/nbdwire/server/):
//   config.hpp          export_config, server_config and the rules that check them
//   states.hpp          server_state, server_trigger and detail::server_transitions
//   core.hpp            what both parts share: state, error, negotiated value, stash, outbox
//   handshake.hpp       greeting, client flags, options, export choice (ends in `negotiated`)
//   option_answers.hpp  the option replies, encoded by the codec into the outbox
//   transmission.hpp    requests, the table of requests in flight, replies and chunks
// This class joins them: the handshake part runs until the export is chosen, then the
// transmission part serves what it negotiated.
#pragma once

#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional
#include <span>         // extents, output pieces
#include <string_view>  // messages

#include "nbdwire/bytes.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/server/config.hpp"
#include "nbdwire/server/core.hpp"
#include "nbdwire/server/handshake.hpp"
#include "nbdwire/server/states.hpp"
#include "nbdwire/server/transmission.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

class server {
 public:
  /// Queues the greeting (none for legacy_1997). An invalid configuration (a style that
  /// serves one export with another count, a bad default, invalid block sizes, over-long
  /// strings, names with NUL) leaves the machine failed with errc::invalid_config.
  explicit server(const server_config& cfg) noexcept : core_(cfg) { hs_.start(core_); }

  /// A connection whose handshake is already done (by another machine, thread or process):
  /// transmission starts at once with what `n` says was negotiated (style, export, flags,
  /// structured replies, extended headers, contexts). Feed any bytes already received after
  /// the handshake to receive(). `n.export_index` names the export in `cfg.exports`; invalid
  /// block sizes in `n` (valid()) fail the machine with errc::invalid_config.
  server(const server_config& cfg, const nbdwire::negotiated& n) noexcept : core_(cfg) {
    core_.cfg.style = n.style;
    if (!detail::config_valid(core_.cfg) || n.export_index >= core_.cfg.exports.size() || !valid(n.block_size)) {
      (void)core_.fail(errc::invalid_config);
      return;
    }
    core_.neg = n;
    core_.move(server_trigger::handshake_skipped);
  }

  // ---- input -------------------------------------------------------------------------------

  /// Feeds bytes received from the client. Loop while the result's call_again() is true.
  /// A terminal event (disconnected, closed, failed) is reported once; every later call
  /// drops its input (the peer may send nothing more) and returns need_more, so no loop
  /// can spin on it.
  [[nodiscard]] receive_result receive(bytes_view in) noexcept {
    std::size_t used = 0;
    for (;;) {
      event ev{};
      const std::size_t n = step(in.subspan(used), ev);
      used += n;
      if (ev.kind != event_kind::need_more || n == 0) {
        if (ev.terminal()) core_.terminal_reported = true;
        return {used, ev};
      }
    }
  }

  /// The client closed the connection.
  [[nodiscard]] event on_eof() noexcept {
    switch (core_.state) {
      case server_state::failed: return core_.failed_event();
      case server_state::closed: return {.kind = event_kind::closed};
      // Inside a message: option data or a payload still due.
      case server_state::option_data:
      case server_state::write_payload:
      case server_state::discard_payload: return core_.fail(errc::unexpected_eof);
      default: break;
    }
    if (core_.head.size() != 0) return core_.fail(errc::unexpected_eof);  // a header in pieces
    core_.move(server_trigger::peer_closed);
    return core_.state == server_state::closed ? event{.kind = event_kind::closed} : core_.failed_event();
  }

  // ---- output ------------------------------------------------------------------------------

  [[nodiscard]] bytes_view pending_output() const noexcept { return core_.out.pending(); }
  void consume_output(std::size_t n) noexcept { core_.out.consume(n); }
  [[nodiscard]] std::optional<payload_span> pending_payload() const noexcept { return core_.out.payload(); }
  result<void> consume_payload(std::uint64_t n) noexcept { return core_.out.consume_payload(n); }
  /// All queued output as pieces (bytes, then a payload), for one gathered write: fills up to
  /// `out.size()` pieces and returns how many. Consume in order with consume_output() and
  /// consume_payload(), or let send_plan (transfer.hpp) do it.
  [[nodiscard]] std::size_t pending_pieces(std::span<output_piece> out) const noexcept { return core_.out.pieces(out); }

  [[nodiscard]] std::optional<payload_span> incoming_payload() const noexcept { return tx_.incoming_payload(core_); }
  result<void> consume_incoming_payload(std::uint64_t n) noexcept { return tx_.consume_incoming_payload(core_, n); }

  // ---- replies -----------------------------------------------------------------------------
  // See "Output contract" in server/transmission.hpp: every call that ends a reply fits the
  // room its request reserved when it was accepted.

  /// Answers a request reported by a `request` event, completely, in any order (except the
  /// 1997 framing, whose client expects request order; there the machine hands out one
  /// request at a time). Also valid after DISC: the server finishes what is in flight.
  /// - READ success: the data is reserved and pending_payload() asks for it right after the
  ///   header: a simple reply, or one OFFSET_DATA chunk with structured replies.
  /// - other success: a simple reply (an NBD_REPLY_TYPE_NONE chunk with extended headers).
  /// - an error: a simple reply, or an NBD_REPLY_TYPE_ERROR chunk carrying `message`.
  /// Refused (state unchanged): a request not in flight or already answered
  /// (errc::unknown_request), a successful BLOCK_STATUS (use reply_block_status()).
  result<void> reply(const request& r, nbd_error e = nbd_error::ok, std::string_view message = {}) noexcept {
    return tx_.reply(core_, r, e, message);
  }

  /// Structured replies only: one OFFSET_DATA chunk for [offset, offset + length) of READ `r`;
  /// pending_payload() then asks for the data. `done` marks the last chunk of the reply.
  result<void> reply_read_data(const request& r, std::uint64_t offset, std::uint64_t length, bool done) noexcept {
    return tx_.reply_read_data(core_, r, offset, length, done);
  }

  /// Structured replies only: one OFFSET_HOLE chunk (the range reads as zeroes).
  result<void> reply_read_hole(const request& r, std::uint64_t offset, std::uint32_t length, bool done) noexcept {
    return tx_.reply_read_hole(core_, r, offset, length, done);
  }

  /// The status chunk of one negotiated context for BLOCK_STATUS `r`: consecutive extents
  /// from the request offset. REQ_ONE sends one, clipped to the request; no extent follows
  /// one that reaches the end of the request; and as many as the outbox holds beyond the
  /// first (fewer extents than the range is allowed: the client asks again). The first
  /// extent of each negotiated context is reserved, so this call does not fail for room.
  /// Returns how many extents went out.
  result<std::size_t> reply_block_status(const request& r, std::uint32_t context_id,
                                         std::span<const block_extent> extents, bool done) noexcept {
    return tx_.reply_block_status(core_, r, context_id, extents, done);
  }

  /// Structured replies only: an error chunk (ERROR, or ERROR_OFFSET when `offset` is given).
  result<void> reply_error_chunk(const request& r, nbd_error e, std::string_view message,
                                 std::optional<std::uint64_t> offset, bool done) noexcept {
    return tx_.reply_error_chunk(core_, r, e, message, offset, done);
  }

  /// Structured replies only: NBD_REPLY_TYPE_NONE with DONE, ending a reply whose chunks
  /// were all sent without DONE.
  result<void> reply_done(const request& r) noexcept { return tx_.reply_done(core_, r); }

  /// Outbox bytes a chunk of request `r` that does not end its reply may use now.
  [[nodiscard]] std::size_t chunk_room(const request& r) const noexcept { return tx_.chunk_room(core_, r); }

  /// Attaches the caller's tag to a request in flight; every later event about it (WRITE
  /// payload pieces) carries it in `event::tag`, and tag_of() returns it.
  result<void> set_tag(const request& r, std::uint64_t tag) noexcept { return tx_.set_tag(core_, r, tag); }
  [[nodiscard]] std::optional<std::uint64_t> tag_of(const request& r) const noexcept { return tx_.tag_of(r); }

  /// The server is going away ("Option haggling", "Error values"): every later option except
  /// ABORT is answered with NBD_REP_ERR_SHUTDOWN, and every later request with NBD_ESHUTDOWN,
  /// which tells the client to disconnect softly. Requests already reported still get reply().
  void begin_shutdown() noexcept { core_.shutting_down = true; }

  // ---- TLS ("TLS support") -----------------------------------------------------------------

  /// After a `start_tls` event: the TLS handshake succeeded, and every later byte in both
  /// directions goes through TLS. Everything negotiated before is forgotten (structured
  /// replies, extended headers, metadata contexts); options are read again. A failed
  /// handshake needs no call: close the connection. Refused (errc::tls_not_starting, state
  /// unchanged) without a `start_tls` first.
  result<void> tls_started() noexcept {
    if (core_.state != server_state::tls_pending) return errc::tls_not_starting;
    hs_.tls_started(core_);
    return {};
  }
  /// TLS is up on this connection (tls_started() was called).
  [[nodiscard]] bool tls_active() const noexcept { return hs_.tls_active(); }
  [[nodiscard]] bool shutting_down() const noexcept { return core_.shutting_down; }

  // ---- inspection --------------------------------------------------------------------------

  /// The protocol phase: start, awaiting_client_flags, negotiating, transmission, closed or
  /// failed. The table's finer states report their phase (phase_of): reading or
  /// answering an option is `negotiating`, a request's payload is `transmission`.
  [[nodiscard]] server_state state() const noexcept { return phase_of(core_.state); }
  [[nodiscard]] errc error() const noexcept { return core_.error; }
  /// What the handshake settled; complete once `ready` was reported (at construction for
  /// oldstyle and the 1997 framing).
  [[nodiscard]] const nbdwire::negotiated& negotiated() const noexcept { return core_.neg; }
  /// Requests reported to the caller and not yet answered.
  [[nodiscard]] std::size_t outstanding() const noexcept { return tx_.outstanding(); }
  /// True once the machine reads nothing more: the client disconnected (DISC, ABORT), closed,
  /// or broke the protocol. Requests in flight may still be answered.
  [[nodiscard]] bool finished() const noexcept {
    return core_.state == server_state::closed || core_.state == server_state::failed;
  }
  /// True when nothing is owed: no request awaits a reply and no output is queued. A
  /// finished() machine that is drained() is done: close the connection. (A failed one may
  /// be closed at once: the connection is over.)
  [[nodiscard]] bool drained() const noexcept {
    return tx_.outstanding() == 0 && core_.out.pending().empty() && !core_.out.payload();
  }

 private:
  /// One step in the current state: each state reads the message it waits for.
  std::size_t step(bytes_view in, event& ev) noexcept {
    switch (core_.state) {
      case server_state::start: return 0;
      // A terminal event is reported once (receive()); after that input is dropped.
      case server_state::failed:
        if (core_.terminal_reported) return in.size();
        ev = core_.failed_event();
        return 0;
      case server_state::closed:
        if (core_.terminal_reported) return in.size();
        ev = {.kind = event_kind::closed};
        return 0;
      case server_state::awaiting_client_flags: return hs_.on_client_flags(core_, in, ev);
      case server_state::negotiating: return hs_.on_option_header(core_, in, ev);
      case server_state::option_data: return hs_.on_option_data(core_, in, ev);
      case server_state::answering_option: ev = hs_.answer(core_); return 0;
      // The bytes after STARTTLS are the TLS layer's; none is ever read as NBD.
      case server_state::tls_pending: ev = core_.fail(errc::receive_while_tls_starting); return 0;
      case server_state::transmission: return tx_.on_request(core_, in, ev);
      case server_state::write_payload:
      case server_state::discard_payload: return tx_.on_payload(core_, in, ev);
    }
    return 0;
  }

  detail::server_core core_;
  detail::server_handshake hs_{};
  detail::server_transmission tx_{};
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
