// SPDX-License-Identifier: MIT
// nbdwire: the client machine. Bytes from the server in, events out; requests in, bytes
// for the server out. No I/O, no heap, no exceptions.
//
// Contract
//   receive(in)        -> {consumed, event}. Drop `consumed` bytes and call again until the
//                         event is need_more. Input may be split anywhere: the events (with
//                         payload fragments merged) are the same.
//   pending_output()   -> bytes to send now; consume_output(n) after sending n of them.
//   pending_payload()  -> WRITE data the caller must send right after pending_output(),
//                         straight from its buffers; consume_payload(n) after sending.
//   incoming_payload() -> READ data arriving next; the caller may recv() it straight into
//                         its buffer and report it with consume_incoming_payload(n), or feed
//                         it to receive() and get `payload` events that view the input.
//   on_eof()           -> the server closed the connection.
// Handshake: oldstyle, newstyle and fixed newstyle are told apart by the greeting
// ("Oldstyle negotiation", "Newstyle negotiation"); legacy_1997 has no handshake and starts
// in transmission. After the `greeting` event (or any final option reply) the caller sends
// one option: go(), info(), list(), abort() or export_name().
// Memory: sizeof(client) is bounded by the outbox (config.hpp), the cookie table
// (max_in_flight entries), one body decoder (one max_string buffer) and the plan's name.
//
// Parts, one job each (every state change goes through detail::client_transitions):
//   client/states.hpp         configuration, states, triggers, the transition table
//   client/option_plan.hpp    go()/info()/list_meta_context()'s preliminaries; option requests
//   client/handshake.hpp      greeting, option replies, EXPORT_NAME; fills `negotiated`
//   client/transmission.hpp   requests, cookie table, replies and chunks
//   client/body_decoder.hpp   the one codec decoder alive at a time
//   client/read_coverage.hpp  which bytes of a READ its chunks covered
#pragma once

#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional: payload views
#include <span>         // std::span: output pieces
#include <string_view>  // export names

#include "nbdwire/client/states.hpp"        // client_config, client_state, client_trigger, client_transitions
#include "nbdwire/client/transmission.hpp"  // the handshake and transmission parts
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

class client : private detail::client_transmission {
 public:
  explicit client(const client_config& cfg = {}) noexcept : client_transmission(cfg) {
    if (const errc e = config_error(cfg); e != errc::ok) {
      (void)fail(e);
      return;
    }
    if (cfg.style == handshake_style::legacy_1997) {
      // No handshake: size and read-only state come from configuration (checklist 1.1).
      neg_.style = handshake_style::legacy_1997;
      neg_.export_size = cfg.legacy_export_size;
      neg_.transmission_flags = static_cast<std::uint16_t>(
          transmission_flag::has_flags | (cfg.legacy_read_only ? transmission_flag::read_only : 0));
      move(client_trigger::handshake_skipped);
    }
  }

  /// A connection whose handshake is already done (by another machine, thread or process):
  /// transmission starts at once with what `n` says was negotiated. Feed any bytes already
  /// received after the handshake to receive(). Requests in flight on the other machine do
  /// not move with it: hand over a connection between requests. Invalid block sizes in `n`
  /// (valid()) fail the machine with errc::invalid_config; structured replies, extended
  /// headers, contexts or the 1997 framing in a build without them, with
  /// errc::feature_not_built.
  explicit client(const nbdwire::negotiated& n, const client_config& cfg = {}) noexcept : client_transmission(n, cfg) {
    if (const errc e = handover_error(n); e != errc::ok) {
      (void)fail(e);
      return;
    }
    move(client_trigger::handshake_skipped);
  }

  // ---- input -------------------------------------------------------------------------------

  /// Feeds bytes received from the server. See the contract at the top of this file.
  /// Loop while the result's call_again() is true. A terminal event (disconnected, closed,
  /// failed) is reported once; every later call drops its input and returns need_more.
  [[nodiscard]] receive_result receive(bytes_view in) noexcept {
    std::size_t used = 0;
    for (;;) {
      event ev{};
      const std::size_t n = step(in.subspan(used), ev);
      used += n;
      if (ev.kind != event_kind::need_more || n == 0) {
        if (ev.terminal()) {
          terminal_reported_ = true;
        } else if (ev.kind == event_kind::read_hole || ev.kind == event_kind::extent ||
                   ev.kind == event_kind::error_chunk) {
          if (const auto sl = slot_of(ev.req.cookie)) ev.tag = slots_[*sl].tag;  // the request is still in flight
        }
        return {used, ev};
      }
    }
  }

  /// The server closed the connection (end of input).
  [[nodiscard]] event on_eof() noexcept {
    switch (state_) {
      case client_state::failed: return failed_event();
      case client_state::closed: return detail::make_event(event_kind::closed);
      case client_state::negotiating:
        move(client_trigger::peer_closed);
        return detail::make_event(event_kind::closed);
      case client_state::awaiting_option_reply:
        // Servers may close on ABORT without the ACK ("NBD_OPT_ABORT").
        if (opt_ == option::abort && stash_.size() == 0) {
          move(client_trigger::abort_acked);
          return detail::make_event(event_kind::disconnected);
        }
        return fail(errc::unexpected_eof);
      case client_state::awaiting_export_name_reply:
        // The server MUST close on an EXPORT_NAME it cannot satisfy.
        return fail(stash_.size() == 0 ? errc::export_name_refused : errc::unexpected_eof);
      case client_state::transmission:
      case client_state::disconnecting: {
        if (stash_.size() != 0) return fail(errc::unexpected_eof);
        if (in_flight_ != 0) return fail(errc::eof_with_requests_in_flight);
        const bool soft = state_ == client_state::disconnecting;
        move(client_trigger::peer_closed);
        return detail::make_event(soft ? event_kind::disconnected : event_kind::closed);
      }
      default: return fail(errc::unexpected_eof);  // inside a message
    }
  }

  // ---- TLS ("TLS support") -----------------------------------------------------------------

  /// After a `start_tls` event: the TLS handshake succeeded, and every later byte in both
  /// directions goes through TLS. The next receive() (with whatever TLS decrypted, even
  /// nothing) reports `greeting`; options follow as on a plaintext connection. A failed
  /// handshake needs no call: close the connection. Refused (errc::tls_not_starting, state
  /// unchanged) without a `start_tls` first.
  result<void> tls_started() noexcept { return start_tls_done(); }
  /// TLS is up on this connection (tls_started() was called, or the handed-over
  /// `negotiated` says so).
  [[nodiscard]] bool tls_active() const noexcept { return neg_.tls; }

  // ---- output ------------------------------------------------------------------------------

  [[nodiscard]] bytes_view pending_output() const noexcept { return out_.pending(); }
  void consume_output(std::size_t n) noexcept { out_.consume(n); }
  [[nodiscard]] std::optional<payload_span> pending_payload() const noexcept { return out_.payload(); }
  result<void> consume_payload(std::uint64_t n) noexcept { return out_.consume_payload(n); }
  /// All queued output as pieces (bytes, then a payload), for one gathered write: fills up to
  /// `out.size()` pieces and returns how many. Consume in order with consume_output() and
  /// consume_payload(), or let send_plan (transfer.hpp) do it.
  [[nodiscard]] std::size_t pending_pieces(std::span<output_piece> out) const noexcept { return out_.pieces(out); }

  /// READ data arriving next (a simple reply's data, or an OFFSET_DATA chunk's).
  [[nodiscard]] std::optional<payload_span> incoming_payload() const noexcept {
    if (!in_read_data() || payload_.length == 0) return std::nullopt;
    return payload_;
  }
  result<void> consume_incoming_payload(std::uint64_t n) noexcept {
    if (!in_read_data() || payload_.length == 0) return errc::no_payload_due;
    if (n > payload_.length) return errc::payload_overrun;
    payload_.offset += n;
    payload_.length -= n;
    return {};
  }

  // ---- handshake: options ("Option haggling") --------------------------------------------

  /// Chooses an export and enters transmission. On a fixed newstyle server this first asks
  /// for extended headers or structured replies and the configured metadata contexts
  /// (client_config), then sends NBD_OPT_GO. Falls back to EXPORT_NAME on ERR_UNSUP (or at
  /// once on a non-fixed newstyle server) when so configured. The name is copied.
  result<void> go(std::string_view export_name, std::uint32_t info_requests = info_request::all) noexcept {
    if (!fixed_ && state_ == client_state::negotiating) return this->export_name(export_name);
    return start_plan(option::go, export_name, info_requests, {});
  }

  /// NBD_OPT_INFO: asks about an export without choosing it (after the same preliminaries as go()).
  result<void> info(std::string_view export_name, std::uint32_t info_requests = info_request::all) noexcept {
    return start_plan(option::info, export_name, info_requests, {});
  }

  /// NBD_OPT_LIST_META_CONTEXT: one meta_context event per context the server offers for
  /// `export_name` (all of them when `queries` is empty), then option_done. The query strings
  /// must stay valid until that final event.
  result<void> list_meta_context(std::string_view export_name, std::span<const std::string_view> queries = {}) noexcept {
    // The spec says SHOULD NOT before structured replies: a build without them never sends it.
    if constexpr (!client_has_structured_replies) return errc::call_not_built;
    return start_plan(option::list_meta_context, export_name, 0, queries);
  }

  /// NBD_OPT_LIST: one export_listed event per export, then option_done.
  result<void> list() noexcept { return send_simple_option(option::list); }

  /// NBD_OPT_ABORT: soft disconnect during the handshake; `disconnected` follows.
  result<void> abort() noexcept { return send_simple_option(option::abort); }

  /// NBD_OPT_EXPORT_NAME: the only option of non-fixed newstyle; `ready` or a close follows.
  /// Forbidden once extended headers are on ([ext]).
  result<void> export_name(std::string_view name) noexcept { return send_export_name(name); }

  /// True when an option may be sent now.
  [[nodiscard]] bool can_send_option() const noexcept { return state_ == client_state::negotiating; }

  // ---- transmission ("Request message") ----------------------------------------------------

  result<std::uint64_t> read(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0,
                             std::uint64_t tag = 0) noexcept {
    return submit(command::read, flags, offset, length, tag);
  }
  /// Queues a WRITE header; pending_payload() then asks for the `length` data bytes.
  result<std::uint64_t> write(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0,
                              std::uint64_t tag = 0) noexcept {
    return submit(command::write, flags, offset, length, tag);
  }
  result<std::uint64_t> flush(std::uint16_t flags = 0, std::uint64_t tag = 0) noexcept {
    return submit(command::flush, flags, 0, 0, tag);
  }
  result<std::uint64_t> trim(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0,
                             std::uint64_t tag = 0) noexcept {
    return submit(command::trim, flags, offset, length, tag);
  }
  result<std::uint64_t> write_zeroes(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0,
                                     std::uint64_t tag = 0) noexcept {
    return submit(command::write_zeroes, flags, offset, length, tag);
  }
  result<std::uint64_t> cache(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0,
                              std::uint64_t tag = 0) noexcept {
    return submit(command::cache, flags, offset, length, tag);
  }
  /// NBD_CMD_BLOCK_STATUS: `extent` events (one per descriptor, for every negotiated
  /// context), then the reply. Needs a context selected by SET_META_CONTEXT.
  result<std::uint64_t> block_status(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0,
                                     std::uint64_t tag = 0) noexcept {
    return submit(command::block_status, flags, offset, length, tag);
  }

  /// Any request except DISC (use disconnect()). Refuses what the server did not advertise,
  /// ranges past the end, misaligned or oversized requests, zero lengths, and more requests
  /// than the cookie table holds. Returns the cookie the reply will carry.
  result<std::uint64_t> submit(command c, std::uint16_t flags, std::uint64_t offset, std::uint64_t length,
                               std::uint64_t tag = 0) noexcept {
    return submit_request(c, flags, offset, length, tag);
  }

  /// NBD_CMD_DISC: no more requests; replies to those in flight still arrive. The 1997
  /// framing has no disconnect message: closing the socket is the disconnect.
  result<void> disconnect() noexcept {
    if (phase_of(state_) != client_state::transmission) return errc::not_in_transmission;
    queue_disc();
    return {};
  }

  // ---- inspection --------------------------------------------------------------------------

  /// The phase: one of the first eight client_state values (phase_of).
  [[nodiscard]] client_state state() const noexcept { return phase_of(state_); }
  [[nodiscard]] errc error() const noexcept { return error_; }
  /// What the handshake settled. Complete once `ready` was reported.
  [[nodiscard]] const nbdwire::negotiated& negotiated() const noexcept { return neg_; }
  [[nodiscard]] std::size_t in_flight() const noexcept { return in_flight_; }
  /// True once the machine reads nothing more: closed, disconnected or failed.
  [[nodiscard]] bool finished() const noexcept {
    return state_ == client_state::closed || state_ == client_state::failed;
  }
  /// True when no request awaits a reply and no output is queued.
  [[nodiscard]] bool drained() const noexcept { return in_flight_ == 0 && out_.pending().empty() && !out_.payload(); }
  /// True once a reply carried NBD_ESHUTDOWN: submit() refuses new requests and the machine
  /// sends DISC by itself after the last reply.
  [[nodiscard]] bool server_shutting_down() const noexcept { return server_shutting_down_; }
  /// The request behind a cookie in flight, if any.
  [[nodiscard]] std::optional<request> find(std::uint64_t cookie) const noexcept {
    const auto s = slot_of(cookie);
    if (!s) return std::nullopt;
    return slots_[*s].req;
  }

 private:
  /// What a configuration asks of this build (config.hpp): never plaintext when TLS was asked
  /// for, never a greeting when the 1997 framing was. The request comes first in each test,
  /// the build's constant last.
  static constexpr errc config_error(const client_config& cfg) noexcept {
    const bool tls = cfg.tls != client_tls::off;
    const bool legacy = cfg.style == handshake_style::legacy_1997;
    return (tls && !client_has_starttls) || (legacy && !client_has_legacy_1997) ? errc::feature_not_built : errc::ok;
  }
  /// What a hand-over asks: valid block sizes, and only the parts this build has.
  static constexpr errc handover_error(const nbdwire::negotiated& n) noexcept {
    if (!valid(n.block_size)) return errc::invalid_config;
    const bool structured = n.structured_replies || n.extended_headers || n.meta_context_count != 0;
    const bool legacy = n.style == handshake_style::legacy_1997;
    return (structured && !client_has_structured_replies) || (legacy && !client_has_legacy_1997)
               ? errc::feature_not_built
               : errc::ok;
  }

  /// One step: consume what the current state expects and report at most one event. The
  /// state alone says which unit comes next.
  std::size_t step(bytes_view in, event& ev) noexcept {
    switch (state_) {
      // A terminal event is reported once (receive()); after that input is dropped.
      case client_state::failed:
        if (terminal_reported_) return in.size();
        ev = failed_event();
        return 0;
      case client_state::closed:
        if (terminal_reported_) return in.size();
        ev = detail::make_event(event_kind::closed);
        return 0;
      case client_state::negotiating:
        if (!in.empty()) ev = fail(errc::unexpected_data);
        return 0;
      case client_state::awaiting_greeting: return on_greeting(in, ev);
      case client_state::awaiting_starttls_reply: return on_option_reply_header(in, ev);
      case client_state::starttls_reply_data: return on_option_reply_data(in, ev);
      // The bytes after the STARTTLS ACK are the TLS layer's; none is ever read as NBD.
      case client_state::tls_pending: ev = fail(errc::receive_while_tls_starting); return 0;
      case client_state::greeting_due: ev = report_greeting(); return 0;
      case client_state::awaiting_ext_headers_reply:
      case client_state::awaiting_sr_reply:
      case client_state::awaiting_set_meta_reply:
      case client_state::awaiting_option_reply: return on_option_reply_header(in, ev);
      case client_state::ext_headers_reply_data:
      case client_state::sr_reply_data:
      case client_state::set_meta_reply_data:
      case client_state::option_reply_data: return on_option_reply_data(in, ev);
      case client_state::awaiting_export_name_reply: return on_export_name_reply(in, ev);
      case client_state::transmission:
      case client_state::disconnecting: return on_reply_header(in, ev);
      case client_state::chunk_payload:
      case client_state::disconnecting_chunk_payload:
        // Reached only through a structured reply header, which a build without them refuses.
        if constexpr (!client_has_structured_replies) return ev = fail(errc::illegal_transition), 0;
        return on_chunk_payload(in, ev);
      case client_state::read_data:
      case client_state::disconnecting_read_data: return on_read_data(in, ev);
    }
    return 0;
  }
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
