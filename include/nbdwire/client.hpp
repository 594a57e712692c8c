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
// (max_in_flight entries) and one option-reply body of 2 * max_string + 8 bytes.
#pragma once

#include <array>        // std::array: cookie table
#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional: payload views
#include <span>         // std::span: configured context names
#include <string_view>  // export names

#include "nbdwire/bytes.hpp"
#include "nbdwire/config.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/detail/outbox.hpp"
#include "nbdwire/detail/rules.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/wire.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// Which NBD_INFO_* items go() and info() ask for: bit (1 << info_type).
namespace info_request {
inline constexpr std::uint32_t name = 1u << static_cast<unsigned>(info_type::name);
inline constexpr std::uint32_t description = 1u << static_cast<unsigned>(info_type::description);
inline constexpr std::uint32_t block_size = 1u << static_cast<unsigned>(info_type::block_size);
inline constexpr std::uint32_t all = name | description | block_size;
}  // namespace info_request

struct client_config {
  /// legacy_1997 means no handshake; any other value means "read the greeting", which tells
  /// oldstyle, newstyle and fixed newstyle apart.
  handshake_style style = handshake_style::fixed_newstyle;
  std::uint64_t legacy_export_size = 0;  ///< legacy_1997 only: the size comes from configuration
  bool legacy_read_only = false;         ///< legacy_1997 only
  bool no_zeroes = true;                 ///< set C_NO_ZEROES when the server offers NO_ZEROES
  bool fallback_to_export_name = true;   ///< GO refused with ERR_UNSUP: send EXPORT_NAME ("NBD_OPT_GO")
  /// Before GO, INFO or LIST_META_CONTEXT, ask for extended headers, then (if refused)
  /// structured replies; each at most once per connection. A refusal is not an error.
  bool request_extended_headers = true;
  bool request_structured_replies = true;
  /// Contexts to select with SET_META_CONTEXT before GO (e.g. "base:allocation"); caller-owned,
  /// must outlive the machine. Sent only once structured replies are on.
  std::span<const std::string_view> meta_contexts{};
};

/// Client protocol states. Every transition is in client_transitions below.
enum class client_state : std::uint8_t {
  awaiting_greeting,           ///< the server speaks first
  negotiating,                 ///< newstyle: no option outstanding; the caller may send one
  awaiting_option_reply,       ///< one option outstanding ("Option haggling": one at a time)
  awaiting_export_name_reply,  ///< EXPORT_NAME sent: 134 or 10 raw bytes, or a close
  transmission,                ///< "Transmission phase"
  disconnecting,               ///< NBD_CMD_DISC queued; replies to earlier requests may follow
  closed,                      ///< terminal: clean end
  failed,                      ///< terminal: error() says why
};

/// The enumerator's name, as docs/design.md shows it.
[[nodiscard]] constexpr std::string_view to_string(client_state v) noexcept {
  switch (v) {
    case client_state::awaiting_greeting: return "awaiting_greeting";
    case client_state::negotiating: return "negotiating";
    case client_state::awaiting_option_reply: return "awaiting_option_reply";
    case client_state::awaiting_export_name_reply: return "awaiting_export_name_reply";
    case client_state::transmission: return "transmission";
    case client_state::disconnecting: return "disconnecting";
    case client_state::closed: return "closed";
    case client_state::failed: return "failed";
  }
  return "unknown";
}

inline constexpr std::size_t client_state_count = 8;

enum class client_trigger : std::uint8_t {
  handshake_skipped,  ///< the 1997 framing (no handshake), or a negotiated hand-over
  oldstyle_greeting,  ///< the oldstyle greeting: size and flags, no options
  newstyle_greeting,  ///< the newstyle greeting; client flags queued
  option_sent,  ///< go() / info() / list() / list_meta_context() / abort() sent
  export_name_sent,  ///< export_name() sent (or go() on a non-fixed newstyle server)
  option_final,      ///< final reply other than GO's ACK
  go_acked,  ///< GO acknowledged with NBD_INFO_EXPORT
  go_fell_back,      ///< GO got ERR_UNSUP; EXPORT_NAME sent instead
  shutdown_abort,    ///< ERR_SHUTDOWN: ABORT sent in its place (a MUST)
  plan_next,         ///< a step of go()/info()'s plan ended; its next option was sent
  abort_acked,  ///< ABORT acknowledged, or the server closed after ABORT
  export_name_replied,  ///< the 134- or 10-byte EXPORT_NAME reply
  disc_sent,  ///< disconnect(), or the DISC owed after NBD_ESHUTDOWN
  peer_closed,  ///< the server closed at a message boundary with nothing owed
  violation,  ///< the server broke a rule (a fatal errc)
};

/// The enumerator's name, as docs/design.md shows it.
[[nodiscard]] constexpr std::string_view to_string(client_trigger v) noexcept {
  switch (v) {
    case client_trigger::handshake_skipped: return "handshake_skipped";
    case client_trigger::oldstyle_greeting: return "oldstyle_greeting";
    case client_trigger::newstyle_greeting: return "newstyle_greeting";
    case client_trigger::option_sent: return "option_sent";
    case client_trigger::export_name_sent: return "export_name_sent";
    case client_trigger::option_final: return "option_final";
    case client_trigger::go_acked: return "go_acked";
    case client_trigger::go_fell_back: return "go_fell_back";
    case client_trigger::shutdown_abort: return "shutdown_abort";
    case client_trigger::plan_next: return "plan_next";
    case client_trigger::abort_acked: return "abort_acked";
    case client_trigger::export_name_replied: return "export_name_replied";
    case client_trigger::disc_sent: return "disc_sent";
    case client_trigger::peer_closed: return "peer_closed";
    case client_trigger::violation: return "violation";
  }
  return "unknown";
}


namespace detail {
using client_transition = transition<client_state, client_trigger>;
inline constexpr std::array client_transitions{
    client_transition{client_state::awaiting_greeting, client_trigger::handshake_skipped, client_state::transmission},
    client_transition{client_state::awaiting_greeting, client_trigger::oldstyle_greeting, client_state::transmission},
    client_transition{client_state::awaiting_greeting, client_trigger::newstyle_greeting, client_state::negotiating},
    client_transition{client_state::awaiting_greeting, client_trigger::violation, client_state::failed},
    client_transition{client_state::negotiating, client_trigger::option_sent, client_state::awaiting_option_reply},
    client_transition{client_state::negotiating, client_trigger::export_name_sent, client_state::awaiting_export_name_reply},
    client_transition{client_state::negotiating, client_trigger::peer_closed, client_state::closed},
    client_transition{client_state::negotiating, client_trigger::violation, client_state::failed},
    client_transition{client_state::awaiting_option_reply, client_trigger::option_final, client_state::negotiating},
    client_transition{client_state::awaiting_option_reply, client_trigger::go_acked, client_state::transmission},
    client_transition{client_state::awaiting_option_reply, client_trigger::go_fell_back, client_state::awaiting_export_name_reply},
    client_transition{client_state::awaiting_option_reply, client_trigger::shutdown_abort, client_state::awaiting_option_reply},
    client_transition{client_state::awaiting_option_reply, client_trigger::plan_next, client_state::awaiting_option_reply},
    client_transition{client_state::awaiting_option_reply, client_trigger::abort_acked, client_state::closed},
    client_transition{client_state::awaiting_option_reply, client_trigger::violation, client_state::failed},
    client_transition{client_state::awaiting_export_name_reply, client_trigger::export_name_replied, client_state::transmission},
    client_transition{client_state::awaiting_export_name_reply, client_trigger::violation, client_state::failed},
    client_transition{client_state::transmission, client_trigger::disc_sent, client_state::disconnecting},
    client_transition{client_state::transmission, client_trigger::peer_closed, client_state::closed},
    client_transition{client_state::transmission, client_trigger::violation, client_state::failed},
    client_transition{client_state::disconnecting, client_trigger::peer_closed, client_state::closed},
    client_transition{client_state::disconnecting, client_trigger::violation, client_state::failed},
};
static_assert(table_well_formed(client_transitions, client_state_count, client_state::awaiting_greeting,
                                {client_state::closed, client_state::failed}));
}  // namespace detail

class client {
 public:
  explicit client(const client_config& cfg = {}) noexcept : cfg_(cfg) {
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
  /// not move with it: hand over a connection between requests.
  explicit client(const nbdwire::negotiated& n, const client_config& cfg = {}) noexcept : cfg_(cfg), neg_(n) {
    fixed_ = n.style == handshake_style::fixed_newstyle;
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
      case client_state::closed: return {.kind = event_kind::closed};
      case client_state::negotiating:
        move(client_trigger::peer_closed);
        return {.kind = event_kind::closed};
      case client_state::awaiting_option_reply:
        // Servers may close on ABORT without the ACK ("NBD_OPT_ABORT").
        if (opt_ == option::abort && phase_ == rx::header && stash_.size() == 0) {
          move(client_trigger::abort_acked);
          return {.kind = event_kind::disconnected};
        }
        return fail(errc::unexpected_eof);
      case client_state::awaiting_export_name_reply:
        // The server MUST close on an EXPORT_NAME it cannot satisfy.
        return fail(stash_.size() == 0 ? errc::export_name_refused : errc::unexpected_eof);
      case client_state::awaiting_greeting:
        return fail(errc::unexpected_eof);
      case client_state::transmission:
      case client_state::disconnecting: {
        if (phase_ != rx::header || stash_.size() != 0) return fail(errc::unexpected_eof);
        if (in_flight_ != 0) return fail(errc::eof_with_requests_in_flight);
        const bool soft = state_ == client_state::disconnecting;
        move(client_trigger::peer_closed);
        return {.kind = soft ? event_kind::disconnected : event_kind::closed};
      }
    }
    return failed_event();
  }

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
    if (phase_ != rx::payload || payload_.length == 0) return std::nullopt;
    return payload_;
  }
  result<void> consume_incoming_payload(std::uint64_t n) noexcept {
    if (phase_ != rx::payload) return errc::no_payload_due;
    if (n > payload_.length) return errc::payload_overrun;
    payload_.offset += n;
    payload_.length -= n;
    if (payload_.length == 0) phase_ = rx::payload_done;
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
    return start_plan(option::list_meta_context, export_name, 0, queries);
  }

  /// NBD_OPT_LIST: one export_listed event per export, then option_done.
  result<void> list() noexcept { return send_simple_option(option::list); }

  /// NBD_OPT_ABORT: soft disconnect during the handshake; `disconnected` follows.
  result<void> abort() noexcept { return send_simple_option(option::abort); }

  /// NBD_OPT_EXPORT_NAME: the only option of non-fixed newstyle; `ready` or a close follows.
  /// Forbidden once extended headers are on ([ext]).
  result<void> export_name(std::string_view name) noexcept {
    if (state_ != client_state::negotiating) return errc::not_negotiating;
    if (neg_.extended_headers) return errc::export_name_with_extended_headers;
    if (name.size() > max_string) return errc::string_too_long;
    if (!room(sizeof(option_header) + name.size())) return errc::outbox_full;
    out_.put_record(make_option_header(option::export_name, static_cast<std::uint32_t>(name.size())));
    out_.put(as_bytes(name));
    opt_ = option::export_name;
    move(client_trigger::export_name_sent);
    return {};
  }

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
    if (state_ != client_state::transmission) return errc::not_in_transmission;
    if (server_shutting_down_) return errc::server_is_shutting_down;
    if (c == command::disc) return errc::disc_needs_disconnect;
    const request r{0, static_cast<std::uint16_t>(c), flags, offset, length};
    if (const auto v = detail::check_request(r, neg_, false); v != detail::verdict::ok) return detail::to_errc(v);
    const bool legacy = neg_.style == handshake_style::legacy_1997;
    const bool extended = neg_.extended_headers;
    if (legacy) {
      // The 1997 framing knows READ (0) and WRITE (1) only, with 32-bit offset and length.
      if (c != command::read && c != command::write) return errc::command_not_advertised;
      if (flags != 0) return errc::flag_not_applicable;
      if (offset > 0xffffffffu || length > 0xffffffffu - offset) return errc::legacy_range_too_large;
    }
    if (!extended && length > 0xffffffffu) return errc::length_too_large;
    if (in_flight_ == max_in_flight) return errc::too_many_in_flight;
    const bool payload = c == command::write && length != 0;
    const std::size_t header = legacy ? sizeof(legacy_1997_request)
                               : extended ? sizeof(extended_request_header)
                                          : sizeof(request_header);
    if (!room(header, payload ? 1 : 0)) return errc::outbox_full;

    std::size_t slot = 0;
    while (slots_[slot].used) ++slot;
    // The cookie names the slot in its low 16 bits, so a reply finds its request in O(1), and
    // a sequence number above them keeps cookies unique over the connection.
    const std::uint64_t cookie = (++sequence_ << 16) | slot;
    slots_[slot] = {};
    slots_[slot].used = true;
    slots_[slot].req = request{cookie, r.type, flags, offset, length};
    slots_[slot].tag = tag;
    ++in_flight_;
    if (legacy) {
      out_.put_record(make_legacy_1997_request(c, cookie, static_cast<std::uint32_t>(offset),
                                               static_cast<std::uint32_t>(length)));
    } else if (extended) {
      // [ext] A WRITE's length is its payload length, flagged PAYLOAD_LEN.
      const std::uint16_t f = c == command::write ? static_cast<std::uint16_t>(flags | command_flag::payload_len) : flags;
      out_.put_record(make_extended_request(c, f, cookie, offset, length));
    } else {
      out_.put_record(make_request(c, flags, cookie, offset, static_cast<std::uint32_t>(length)));
    }
    if (payload) out_.put_mark({cookie, offset, length});
    return cookie;
  }

  /// NBD_CMD_DISC: no more requests; replies to those in flight still arrive. The 1997
  /// framing has no disconnect message: closing the socket is the disconnect.
  result<void> disconnect() noexcept {
    if (state_ != client_state::transmission) return errc::not_in_transmission;
    queue_disc();
    return {};
  }

  // ---- inspection --------------------------------------------------------------------------

  [[nodiscard]] client_state state() const noexcept { return state_; }
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
  /// Framing of the input: which part of the current message comes next.
  enum class rx : std::uint8_t {
    header,        ///< a message header (option reply, reply, chunk) is being stashed
    body,          ///< option reply data
    payload,       ///< READ data (simple reply, or OFFSET_DATA chunk)
    payload_done,  ///< READ data complete; its completion is reported next
    chunk,         ///< a structured chunk's fields
  };
  /// The field of a structured chunk read next ("Structured reply chunk message types").
  enum class field : std::uint8_t {
    data_offset,   ///< OFFSET_DATA: u64 offset
    hole,          ///< OFFSET_HOLE: u64 offset, u32 size
    status_head,   ///< BLOCK_STATUS: u32 id; BLOCK_STATUS_EXT: u32 id, u32 count
    descriptor,    ///< one block descriptor (8 or 16 bytes)
    error_head,    ///< error chunks: u32 error, u16 message length
    message,       ///< error chunk message
    error_offset,  ///< ERROR_OFFSET: u64 offset
    skip,          ///< bytes to drop (unknown error types, slop after a message)
    end,           ///< chunk complete: report DONE if flagged
  };

  struct read_range {
    std::uint64_t begin = 0, end = 0;
  };
  struct cookie_slot {
    bool used = false;
    bool errored = false;
    std::uint64_t tag = 0;         ///< the caller's, from submit()          ///< an error chunk arrived; status holds the first error
    request req{};
    nbd_error status = nbd_error::ok;
    std::uint32_t contexts_seen = 0;  ///< bit i: negotiated context i answered
    std::uint32_t content_chunks = 0;
    std::uint64_t covered = 0;        ///< bytes of the READ covered by content chunks
    std::array<read_range, max_read_ranges> ranges{};
    std::size_t range_count = 0;
  };

  void move(client_trigger t) noexcept {
    const auto to = detail::next_state(detail::client_transitions, state_, t);
    state_ = to ? *to : client_state::failed;
    if (!to && error_ == errc::ok) error_ = errc::illegal_transition;
  }

  event fail(errc e) noexcept {
    if (state_ != client_state::failed) {
      error_ = e;
      move(client_trigger::violation);
    }
    return failed_event();
  }
  [[nodiscard]] event failed_event() const noexcept { return {.kind = event_kind::failed, .error = error_}; }

  /// Room the outbox keeps for the messages the protocol obliges the client to send (ABORT
  /// after ERR_SHUTDOWN, DISC after NBD_ESHUTDOWN or on disconnect()): every other message
  /// leaves it free, so an obligation is never skipped for lack of room.
  static constexpr std::size_t obligation_room = sizeof(extended_request_header);
  [[nodiscard]] bool room(std::size_t n, std::size_t marks = 0) noexcept {
    return out_.room_for(n + obligation_room, marks);
  }

  /// NBD_CMD_DISC: no more requests; the 1997 framing has no disconnect message (closing
  /// the socket is the disconnect). Fits the obligation room.
  void queue_disc() noexcept {
    if (neg_.style != handshake_style::legacy_1997) {
      const std::uint64_t cookie = (++sequence_ << 16) | 0xffffu;  // never a slot
      if (neg_.extended_headers)
        out_.put_record(make_extended_request(command::disc, 0, cookie, 0, 0));
      else
        out_.put_record(make_request(command::disc, 0, cookie, 0, 0));
    }
    move(client_trigger::disc_sent);
  }

  [[nodiscard]] std::optional<std::size_t> slot_of(std::uint64_t cookie) const noexcept {
    const std::size_t i = cookie & 0xffffu;
    if (i >= max_in_flight || !slots_[i].used || slots_[i].req.cookie != cookie) return std::nullopt;
    return i;
  }

  // ---- option plans ------------------------------------------------------------------------

  enum plan_bits : std::uint8_t { plan_ext = 1, plan_sr = 2, plan_set_meta = 4 };

  result<void> send_simple_option(option o) noexcept {
    if (state_ != client_state::negotiating) return errc::not_negotiating;
    if (!fixed_) return errc::option_needs_fixed_newstyle;
    // ABORT is itself the obligation the reserved room is kept for.
    if (!(o == option::abort ? out_.room_for(sizeof(option_header)) : room(sizeof(option_header)))) return errc::outbox_full;
    out_.put_record(make_option_header(o, 0));
    opt_ = o;
    move(client_trigger::option_sent);
    return {};
  }

  /// go(), info() and list_meta_context(): the preliminaries this connection still needs,
  /// then the option itself. Each step is sent when the previous one's final reply arrives.
  result<void> start_plan(option final, std::string_view name, std::uint32_t requests,
                          std::span<const std::string_view> queries) noexcept {
    if (state_ != client_state::negotiating) return errc::not_negotiating;
    if (!fixed_) return errc::option_needs_fixed_newstyle;
    if (name.size() > max_string) return errc::string_too_long;
    for (auto q : queries)
      if (q.size() > max_string) return errc::string_too_long;
    for (auto q : cfg_.meta_contexts)
      if (q.size() > max_string) return errc::string_too_long;
    plan_ = 0;
    if (cfg_.request_extended_headers && !tried_ext_) plan_ |= plan_ext;
    if (cfg_.request_structured_replies && !tried_sr_) plan_ |= plan_sr;
    if (final == option::go && !cfg_.meta_contexts.empty()) plan_ |= plan_set_meta;
    plan_final_ = final;
    plan_requests_ = requests;
    plan_queries_ = queries;
    plan_name_.clear();
    plan_name_.fill(as_bytes(name), name.size());
    if (!send_plan_step()) return errc::outbox_full;
    move(client_trigger::option_sent);
    return {};
  }

  /// Queues the next option of the plan. False when the outbox has no room.
  [[nodiscard]] bool send_plan_step() noexcept {
    if (plan_ & plan_ext) {
      plan_ &= static_cast<std::uint8_t>(~plan_ext);
      tried_ext_ = true;
      return queue_option(option::extended_headers, {}, 0, {});
    }
    if (plan_ & plan_sr) {
      plan_ &= static_cast<std::uint8_t>(~plan_sr);
      tried_sr_ = true;
      if (!neg_.structured_replies) return queue_option(option::structured_reply, {}, 0, {});
    }
    if (plan_ & plan_set_meta) {
      plan_ &= static_cast<std::uint8_t>(~plan_set_meta);
      // SET_META_CONTEXT MUST NOT precede structured replies; it replaces earlier contexts.
      if (neg_.structured_replies) {
        neg_.meta_context_count = 0;
        return queue_option(option::set_meta_context, plan_name_.view(), 0, cfg_.meta_contexts);
      }
    }
    if (plan_final_ == option::list_meta_context)
      return queue_option(option::list_meta_context, plan_name_.view(), 0, plan_queries_);
    return queue_option(plan_final_, plan_name_.view(), plan_requests_, {});
  }

  /// Writes one option request: INFO/GO bodies ("NBD_OPT_INFO"), meta-context bodies
  /// ("NBD_OPT_LIST_META_CONTEXT"), or no data.
  [[nodiscard]] bool queue_option(option o, bytes_view name, std::uint32_t requests,
                                  std::span<const std::string_view> queries) noexcept {
    std::size_t len = 0;
    std::array<std::byte, 2 + 2 * 3> infos{};
    std::size_t info_len = 0;
    if (o == option::go || o == option::info) {
      std::uint16_t count = 0;
      for (auto t : {info_type::name, info_type::description, info_type::block_size}) {
        if (requests & (1u << static_cast<unsigned>(t))) {
          store_be<std::uint16_t>(infos.data() + 2 + 2 * count, static_cast<std::uint16_t>(t));
          ++count;
        }
      }
      store_be<std::uint16_t>(infos.data(), count);
      info_len = 2 + 2u * count;
      len = 4 + name.size() + info_len;
    } else if (o == option::list_meta_context || o == option::set_meta_context) {
      len = 4 + name.size() + 4;
      for (auto q : queries) len += 4 + q.size();
    }
    if (len > 0xffffffffu || !room(sizeof(option_header) + len)) return false;
    out_.put_record(make_option_header(o, static_cast<std::uint32_t>(len)));
    std::array<std::byte, 4> u32{};
    auto put_u32 = [&](std::size_t v) {
      store_be<std::uint32_t>(u32.data(), static_cast<std::uint32_t>(v));
      out_.put(u32);
    };
    if (o == option::go || o == option::info) {
      put_u32(name.size());
      out_.put(name);
      out_.put(bytes_view{infos}.first(info_len));
    } else if (o == option::list_meta_context || o == option::set_meta_context) {
      put_u32(name.size());
      out_.put(name);
      put_u32(queries.size());
      for (auto q : queries) {
        put_u32(q.size());
        out_.put(as_bytes(q));
      }
    }
    opt_ = o;
    info_ = {};
    return true;
  }

  /// A plan step other than the caller's option ended: note what it settled and send the
  /// next one. Returns need_more (nothing for the caller to see).
  event next_plan_step() noexcept {
    if (!send_plan_step()) return fail(errc::outbox_full);
    move(client_trigger::plan_next);
    return {};
  }
  [[nodiscard]] bool is_plan_preliminary() const noexcept {
    return opt_ == option::extended_headers || opt_ == option::structured_reply ||
           (opt_ == option::set_meta_context && plan_final_ == option::go);
  }

  /// One step: consume what the current unit needs and report at most one event.
  std::size_t step(bytes_view in, event& ev) noexcept {
    switch (state_) {
      // A terminal event is reported once (receive()); after that input is dropped.
      case client_state::failed:
        if (terminal_reported_) return in.size();
        ev = failed_event();
        return 0;
      case client_state::closed:
        if (terminal_reported_) return in.size();
        ev = {.kind = event_kind::closed};
        return 0;
      case client_state::negotiating:
        if (!in.empty()) ev = fail(errc::unexpected_data);
        return 0;
      case client_state::awaiting_greeting: return on_greeting(in, ev);
      case client_state::awaiting_option_reply: return on_option_reply(in, ev);
      case client_state::awaiting_export_name_reply: return on_export_name_reply(in, ev);
      case client_state::transmission:
      case client_state::disconnecting: return on_reply(in, ev);
    }
    return 0;
  }

  // "Oldstyle negotiation" / "Newstyle negotiation": 16 bytes tell which, then 136 or 2 more.
  std::size_t on_greeting(bytes_view in, event& ev) noexcept {
    std::size_t n = stash_.fill(in, 16);
    if (stash_.size() < 16) return n;
    const auto head = stash_.view();
    if (load_be<std::uint64_t>(head.data()) != magic::nbdmagic) return ev = fail(errc::bad_greeting_magic), n;
    const std::uint64_t second = load_be<std::uint64_t>(head.data() + 8);
    if (second == magic::oldstyle) {
      n += stash_.fill(in.subspan(n), sizeof(oldstyle_greeting));
      if (stash_.size() < sizeof(oldstyle_greeting)) return n;
      const auto g = decode<oldstyle_greeting>(stash_.view());
      stash_.clear();
      neg_.style = handshake_style::oldstyle;
      neg_.export_size = g.export_size.get();
      neg_.transmission_flags = detail::sanitize_transmission_flags(g.transmission_flags.get(), false, false);
      move(client_trigger::oldstyle_greeting);
      ev = {.kind = event_kind::ready};
      return n;
    }
    if (second != magic::ihaveopt) return ev = fail(errc::bad_greeting_style), n;
    n += stash_.fill(in.subspan(n), sizeof(newstyle_greeting));
    if (stash_.size() < sizeof(newstyle_greeting)) return n;
    const auto g = decode<newstyle_greeting>(stash_.view());
    stash_.clear();
    const std::uint16_t hflags = g.handshake_flags.get();  // unknown bits: SHOULD ignore
    fixed_ = (hflags & handshake_flag::fixed_newstyle) != 0;
    no_zeroes_ = cfg_.no_zeroes && (hflags & handshake_flag::no_zeroes) != 0;
    neg_.style = fixed_ ? handshake_style::fixed_newstyle : handshake_style::newstyle;
    const std::uint32_t cflags =
        (fixed_ ? client_flag::fixed_newstyle : 0u) | (no_zeroes_ ? client_flag::no_zeroes : 0u);
    out_.put_record(make_client_flags(cflags));  // the outbox is empty at this point
    move(client_trigger::newstyle_greeting);
    ev = {.kind = event_kind::greeting, .flags = hflags};
    return n;
  }

  // "Option reply": header, then a bounded body, then one event.
  std::size_t on_option_reply(bytes_view in, event& ev) noexcept {
    std::size_t n = 0;
    if (phase_ == rx::header) {
      n = stash_.fill(in, sizeof(option_reply_header));
      if (stash_.size() < sizeof(option_reply_header)) return n;
      const auto h = decode<option_reply_header>(stash_.view());
      stash_.clear();
      if (h.magic.get() != magic::option_reply) return ev = fail(errc::bad_option_reply_magic), n;
      if (h.option.get() != static_cast<std::uint32_t>(opt_)) return ev = fail(errc::option_reply_wrong_option), n;
      reply_ = static_cast<reply_type>(h.type.get());
      body_len_ = h.length.get();
      if (const errc e = check_reply_header(); e != errc::ok) return ev = fail(e), n;
      body_.clear();
      body_seen_ = 0;
      phase_ = rx::body;
    }
    // Keep what fits the body buffer (everything, for every valid reply); skip the rest,
    // which only an unknown NBD_INFO type may have.
    const std::size_t want = std::min<std::size_t>(body_len_, body_.capacity);
    const std::size_t kept = body_.fill(in.subspan(n), want);
    n += kept;
    body_seen_ += kept;
    if (body_seen_ >= want && body_seen_ < body_len_) {
      const std::size_t skip = static_cast<std::size_t>(
          std::min<std::uint64_t>(in.size() - n, body_len_ - body_seen_));
      n += skip;
      body_seen_ += skip;
    }
    if (body_seen_ < body_len_) return n;
    phase_ = rx::header;
    ev = on_option_reply_body();
    return n;
  }

  /// Checklist 1.10 and 3.2: which reply types each option allows, and their length rules
  /// that can be judged from the header alone.
  [[nodiscard]] errc check_reply_header() const noexcept {
    const auto t = static_cast<std::uint32_t>(reply_);
    if (t & reply_type_error_bit) {
      if (opt_ == option::abort) return errc::option_reply_type_unexpected;
      return body_len_ > max_string ? errc::reply_string_too_long : errc::ok;
    }
    switch (reply_) {
      case reply_type::ack: return body_len_ != 0 ? errc::ack_with_data : errc::ok;
      case reply_type::server:
        if (opt_ != option::list) return errc::option_reply_type_unexpected;
        if (body_len_ < 4) return errc::server_reply_bad_name_length;
        return body_len_ > 4 + 2 * max_string ? errc::server_reply_too_long : errc::ok;
      case reply_type::info:
        if (opt_ != option::info && opt_ != option::go) return errc::option_reply_type_unexpected;
        return body_len_ < 2 ? errc::info_reply_too_short : errc::ok;
      case reply_type::meta_context:
        if (opt_ != option::list_meta_context && opt_ != option::set_meta_context)
          return errc::option_reply_type_unexpected;
        if (body_len_ < 4) return errc::meta_context_reply_too_short;
        return body_len_ > 4 + max_string ? errc::reply_string_too_long : errc::ok;
      default: return errc::option_reply_type_unexpected;
    }
  }

  event on_option_reply_body() noexcept {
    const bytes_view b = body_.view();
    const auto t = static_cast<std::uint32_t>(reply_);
    const std::uint32_t o = static_cast<std::uint32_t>(opt_);
    if (t & reply_type_error_bit) {
      if (reply_ == reply_type::err_shutdown) {
        // "A client that receives ERR_SHUTDOWN MUST soft-disconnect": ABORT goes out now (in
        // the room every other message leaves free) and `disconnected` follows its ACK (or
        // the server's close).
        out_.put_record(make_option_header(option::abort, 0));
        opt_ = option::abort;
        move(client_trigger::shutdown_abort);
        return {.kind = event_kind::option_refused, .option = o, .reply = reply_type::err_shutdown, .data = b};
      }
      // A refused preliminary is not a failure: the plan goes on without it. SET_META_CONTEXT
      // replaces earlier contexts even when it fails.
      if (opt_ == option::set_meta_context) neg_.meta_context_count = 0;
      if (is_plan_preliminary()) return next_plan_step();
      if (opt_ == option::go && reply_ == reply_type::err_unsup && cfg_.fallback_to_export_name &&
          !neg_.extended_headers) {
        // An old server: "fall back to NBD_OPT_EXPORT_NAME" ("NBD_OPT_GO").
        if (!room(sizeof(option_header) + plan_name_.size())) return fail(errc::outbox_full);
        out_.put_record(make_option_header(option::export_name, static_cast<std::uint32_t>(plan_name_.size())));
        out_.put(plan_name_.view());
        opt_ = option::export_name;
        move(client_trigger::go_fell_back);
        return {};  // need_more: the EXPORT_NAME reply comes next
      }
      move(client_trigger::option_final);
      return {.kind = event_kind::option_refused, .option = o, .reply = reply_, .data = b};
    }
    switch (reply_) {
      case reply_type::ack: return on_ack();
      case reply_type::server: {
        const std::uint32_t name_len = load_be<std::uint32_t>(b.data());
        if (name_len > b.size() - 4) return fail(errc::server_reply_bad_name_length);
        if (name_len > max_string || b.size() - 4 - name_len > max_string) return fail(errc::reply_string_too_long);
        const bytes_view name = b.subspan(4, name_len);
        if (contains_nul(name)) return fail(errc::reply_string_contains_nul);
        return {.kind = event_kind::export_listed, .option = o, .data = name, .text = b.subspan(4 + name_len)};
      }
      case reply_type::info: return on_info_item(b);
      case reply_type::meta_context: {
        const std::uint32_t id = load_be<std::uint32_t>(b.data());
        const bytes_view name = b.subspan(4);
        if (contains_nul(name)) return fail(errc::reply_string_contains_nul);
        if (opt_ == option::set_meta_context) {
          // Ids are the server's choice ("Metadata querying"); 0 is a valid id.
          if (neg_.meta_context_count == max_meta_contexts) return fail(errc::too_many_meta_contexts);
          meta_context_binding m{id, meta_context_binding::no_query};
          for (std::size_t i = 0; i < cfg_.meta_contexts.size(); ++i)
            if (as_chars(name) == cfg_.meta_contexts[i]) m.query_index = static_cast<std::uint32_t>(i);
          neg_.meta_contexts[neg_.meta_context_count++] = m;
        }
        return {.kind = event_kind::meta_context, .option = o, .data = name, .context_id = id};
      }
      default: return fail(errc::option_reply_type_unexpected);
    }
  }

  event on_ack() noexcept {
    const std::uint32_t o = static_cast<std::uint32_t>(opt_);
    switch (opt_) {
      case option::abort:
        move(client_trigger::abort_acked);
        return {.kind = event_kind::disconnected, .option = o};
      case option::extended_headers:
        // [ext] Extended headers take precedence over, and imply, structured replies.
        neg_.extended_headers = neg_.structured_replies = true;
        return next_plan_step();
      case option::structured_reply:
        neg_.structured_replies = true;
        return next_plan_step();
      case option::set_meta_context:
        if (is_plan_preliminary()) return next_plan_step();
        break;
      case option::go:
      case option::info:
        if (!info_.have_export) return fail(errc::ack_without_export_info);
        if (opt_ == option::info) break;
        neg_.export_size = info_.size;
        neg_.transmission_flags =
            detail::sanitize_transmission_flags(info_.flags, neg_.structured_replies, neg_.extended_headers);
        neg_.block_size_advertised = info_.have_block_size;
        if (info_.have_block_size) neg_.block_size = info_.block_size;
        move(client_trigger::go_acked);
        return {.kind = event_kind::ready, .option = o};
      default: break;
    }
    move(client_trigger::option_final);
    return {.kind = event_kind::option_done, .option = o};
  }

  // "NBD_REP_INFO": one item; unknown types are ignored (the client MUST ignore them).
  event on_info_item(bytes_view b) noexcept {
    const auto type = static_cast<info_type>(load_be<std::uint16_t>(b.data()));
    const std::uint32_t o = static_cast<std::uint32_t>(opt_);
    switch (type) {
      case info_type::export_info: {
        if (body_len_ != sizeof(info_export_payload)) return fail(errc::info_export_bad_length);
        const auto p = decode<info_export_payload>(b);
        info_.have_export = true;
        info_.size = p.export_size.get();
        info_.flags = p.transmission_flags.get();
        return {.kind = event_kind::info, .option = o, .info = type, .export_size = info_.size,
                .transmission_flags = info_.flags};
      }
      case info_type::block_size: {
        if (body_len_ != sizeof(info_block_size_payload)) return fail(errc::info_block_size_bad_length);
        const auto p = decode<info_block_size_payload>(b);
        const block_size_constraints bs{p.minimum.get(), p.preferred.get(), p.maximum.get()};
        if (!valid(bs)) return fail(errc::info_block_size_invalid);
        info_.have_block_size = true;
        info_.block_size = bs;
        return {.kind = event_kind::info, .option = o, .info = type, .block_size = bs};
      }
      case info_type::name:
      case info_type::description: {
        if (body_len_ - 2 > max_string) return fail(errc::reply_string_too_long);
        const bytes_view s = b.subspan(2);
        if (type == info_type::name && contains_nul(s)) return fail(errc::reply_string_contains_nul);
        return {.kind = event_kind::info, .option = o, .info = type, .data = s};
      }
    }
    return {};  // unknown info type: ignored
  }

  static bool contains_nul(bytes_view s) noexcept {
    for (auto c : s)
      if (c == std::byte{0}) return true;
    return false;
  }

  // "NBD_OPT_EXPORT_NAME" reply: size, flags, and 124 zeroes unless both sides chose NO_ZEROES.
  std::size_t on_export_name_reply(bytes_view in, event& ev) noexcept {
    const std::size_t want = no_zeroes_ ? sizeof(export_name_reply_short) : sizeof(export_name_reply);
    const std::size_t n = stash_.fill(in, want);
    if (stash_.size() < want) return n;
    const auto r = decode<export_name_reply_short>(stash_.view());
    stash_.clear();
    neg_.export_size = r.export_size.get();
    neg_.transmission_flags =
        detail::sanitize_transmission_flags(r.transmission_flags.get(), neg_.structured_replies, false);
    neg_.meta_context_count = 0;  // contexts are bound to GO, not EXPORT_NAME
    move(client_trigger::export_name_replied);
    ev = {.kind = event_kind::ready, .option = static_cast<std::uint32_t>(option::export_name)};
    return n;
  }

  // ---- transmission replies ----------------------------------------------------------------

  std::size_t on_reply(bytes_view in, event& ev) noexcept {
    switch (phase_) {
      case rx::payload_done:
        if (in_chunk_) {  // OFFSET_DATA complete: its chunk ends now (DONE or not)
          phase_ = rx::chunk;
          return on_chunk(in, ev);
        }
        phase_ = rx::header;
        ev = complete(payload_slot_, nbd_error::ok);
        return 0;
      case rx::payload: return on_payload(in, ev);
      case rx::chunk: return on_chunk(in, ev);
      default: break;
    }
    const bool legacy = neg_.style == handshake_style::legacy_1997;
    // The magic says which header follows. A whole header in the input is read in place; a
    // split one is stashed, its magic first so that a wrong one is refused at once.
    const bool at_start = stash_.size() == 0 && in.size() >= 4;
    std::size_t n = at_start ? 4 : stash_.fill(in, 4);
    if (!at_start && stash_.size() < 4) return n;
    const std::uint32_t m = load_be<std::uint32_t>(at_start ? in.data() : stash_.view().data());
    std::size_t size = 0;
    if (legacy) {
      if (m != magic::legacy_1997_reply) return ev = fail(errc::bad_reply_magic), n;
      size = sizeof(legacy_1997_reply);
    } else if (m == magic::simple_reply) {
      if (neg_.extended_headers) return ev = fail(errc::simple_reply_in_extended_mode), n;
      size = sizeof(simple_reply_header);
    } else if (m == magic::structured_reply && neg_.structured_replies && !neg_.extended_headers) {
      size = sizeof(structured_reply_header);
    } else if (m == magic::extended_reply && neg_.extended_headers) {
      size = sizeof(extended_reply_header);
    } else if (m == magic::structured_reply || m == magic::extended_reply) {
      return ev = fail(errc::structured_reply_not_negotiated), n;
    } else {
      return ev = fail(errc::bad_reply_magic), n;
    }
    bytes_view h;
    if (at_start && in.size() >= size) {
      h = in.first(size);
      n = size;
    } else {
      if (at_start) n = 0;
      n += stash_.fill(in.subspan(n), size);
      if (stash_.size() < size) return n;
      h = stash_.view();
    }
    if (m == magic::simple_reply || legacy) {
      ev = on_simple_reply(h, legacy);
    } else {
      ev = on_chunk_header(h, m == magic::extended_reply);
    }
    stash_.clear();
    return n;
  }

  // "Simple reply message" (and the 1997 reply): header, then READ data on success.
  event on_simple_reply(bytes_view h, bool legacy) noexcept {
    std::uint64_t cookie = 0;
    std::uint32_t err = 0;
    if (legacy) {
      using rec = legacy_1997_reply;
      cookie = record_view<rec>{h}.get(&rec::handle);
      err = record_view<rec>{h}.get(&rec::error);
    } else {
      using rec = simple_reply_header;
      cookie = record_view<rec>{h}.get(&rec::cookie);
      err = record_view<rec>{h}.get(&rec::error);
    }
    const auto s = slot_of(cookie);
    if (!s) return fail(errc::reply_cookie_unknown);
    // The 1997 driver matched replies in request order (checklist 1.1).
    if (legacy && slots_[*s].req.cookie != oldest_cookie()) return fail(errc::legacy_reply_out_of_order);
    const request& r = slots_[*s].req;
    // With structured replies a READ MUST be answered in chunks, even an error.
    if (r.cmd() == command::read && neg_.structured_replies) return fail(errc::simple_reply_to_read);
    const nbd_error status = legacy ? (err ? nbd_error::eio : nbd_error::ok) : normalize_error(err);
    if (r.cmd() == command::read && status == nbd_error::ok && r.length != 0) {
      in_chunk_ = false;
      payload_slot_ = *s;
      payload_ = {cookie, r.offset, r.length};
      phase_ = rx::payload;
      return {};  // the data follows as payload events
    }
    return complete(*s, status);
  }

  // "Structured reply chunk message" / [ext] extended reply: validate the header against
  // the request it answers (checklist 3.4), then read the chunk's fields.
  event on_chunk_header(bytes_view h, bool extended) noexcept {
    std::uint64_t cookie = 0, length = 0, offset = 0;
    std::uint16_t flags = 0, type = 0;
    if (extended) {
      using rec = extended_reply_header;
      const record_view<rec> v{h};
      cookie = v.get(&rec::cookie);
      flags = v.get(&rec::flags);
      type = v.get(&rec::type);
      offset = v.get(&rec::offset);
      length = v.get(&rec::length);
    } else {
      using rec = structured_reply_header;
      const record_view<rec> v{h};
      cookie = v.get(&rec::cookie);
      flags = v.get(&rec::flags);
      type = v.get(&rec::type);
      length = v.get(&rec::length);
    }
    const auto s = slot_of(cookie);
    if (!s) return fail(errc::reply_cookie_unknown);
    const request& r = slots_[*s].req;
    if (extended && offset != r.offset) return fail(errc::reply_offset_mismatch);
    chunk_ = {*s, flags, type, length, 0};
    in_chunk_ = true;
    phase_ = rx::chunk;
    const command c = r.cmd();
    switch (static_cast<chunk_type>(type)) {
      case chunk_type::none:
        if (length != 0) return fail(errc::chunk_length_invalid);
        if (!(flags & reply_flag::done)) return fail(errc::none_chunk_without_done);
        return begin_field(field::end, 0);
      case chunk_type::offset_data:
        if (c != command::read) return fail(errc::chunk_type_unexpected);
        if (length < 9) return fail(errc::data_chunk_too_short);
        return begin_field(field::data_offset, 8);
      case chunk_type::offset_hole:
        if (c != command::read) return fail(errc::chunk_type_unexpected);
        if (length != sizeof(offset_hole_payload)) return fail(errc::hole_chunk_bad_length);
        return begin_field(field::hole, sizeof(offset_hole_payload));
      case chunk_type::block_status:
      case chunk_type::block_status_ext: {
        const bool ext_type = static_cast<chunk_type>(type) == chunk_type::block_status_ext;
        if (c != command::block_status || ext_type != neg_.extended_headers) return fail(errc::chunk_type_unexpected);
        const std::uint64_t head = ext_type ? 8 : 4, desc = ext_type ? 16 : 8;
        if (length < head + desc || (length - head) % desc != 0) return fail(errc::block_status_chunk_bad_length);
        if ((length - head) / desc > max_extents_per_chunk) return fail(errc::too_many_extents);
        extents_left_ = (length - head) / desc;
        if ((r.flags & command_flag::req_one) && extents_left_ != 1) return fail(errc::extent_req_one_violation);
        return begin_field(field::status_head, static_cast<std::size_t>(head));
      }
      case chunk_type::error:
        if (length < sizeof(error_chunk_prefix)) return fail(errc::error_chunk_too_short);
        return begin_field(field::error_head, sizeof(error_chunk_prefix));
      case chunk_type::error_offset:
        if (c == command::flush || c == command::disc) return fail(errc::chunk_type_unexpected);
        if (length < sizeof(error_chunk_prefix) + 8) return fail(errc::error_offset_chunk_too_short);
        return begin_field(field::error_head, sizeof(error_chunk_prefix));
    }
    // Unknown type: with the error bit the request has failed and the chunk is skipped
    // (its error value, if present, is used); without it the client MUST disconnect.
    if (!(type & chunk_type_error_bit)) return fail(errc::chunk_type_unknown);
    if (length >= sizeof(error_chunk_prefix)) return begin_field(field::error_head, sizeof(error_chunk_prefix));
    record_error(*s, nbd_error::einval);
    return begin_field(field::skip, 0);
  }

  event begin_field(field f, std::size_t size) noexcept {
    field_ = f;
    field_size_ = size;
    stash_.clear();
    return {};
  }

  /// The chunk bytes not yet read.
  [[nodiscard]] std::uint64_t chunk_left() const noexcept { return chunk_.length - chunk_.read; }

  // Invariant: a step that consumes nothing and reports nothing really needs more input. So
  // a chunk is read field after field within one step until it reports something or runs
  // out of input, and a chunk that ends without DONE goes straight on to the next message.
  std::size_t on_chunk(bytes_view in, event& ev) noexcept {
    std::size_t used = 0;
    for (;;) {
      const bytes_view rest = in.subspan(used);
      if (field_ == field::skip && chunk_left() == 0) field_ = field::end;
      if (field_ == field::end) {
        in_chunk_ = false;
        phase_ = rx::header;
        if (chunk_.flags & reply_flag::done) {
          ev = finish(chunk_.slot);
          return used;
        }
        return used + on_reply(rest, ev);
      }
      std::size_t take = 0;
      bool complete = false;
      if (field_ == field::skip) {
        take = static_cast<std::size_t>(std::min<std::uint64_t>(rest.size(), chunk_left()));
        complete = take == chunk_left();
        chunk_.read += take;
      } else if (field_ == field::message) {
        take = body_.fill(rest, message_len_);
        chunk_.read += take;
        complete = body_.size() == message_len_;
        if (complete && static_cast<chunk_type>(chunk_.type) == chunk_type::error_offset) {
          begin_field(field::error_offset, 8);
        } else if (complete) {
          field_ = chunk_left() ? field::skip : field::end;  // slop after the message is tolerated
          ev = report_error(false, 0);
        }
      } else {
        take = stash_.fill(rest, field_size_);
        chunk_.read += take;
        complete = stash_.size() == field_size_;
        if (complete) {
          ev = on_field();
          stash_.clear();
        }
      }
      used += take;
      if (!complete || ev.kind != event_kind::need_more || phase_ != rx::chunk) return used;
    }
  }

  /// A complete fixed-size field of the current chunk is in the stash.
  event on_field() noexcept {
    cookie_slot& s = slots_[chunk_.slot];
    const request& r = s.req;
    const bytes_view f = stash_.view();
    switch (field_) {
      case field::data_offset: {
        const std::uint64_t off = load_be<std::uint64_t>(f.data());
        const std::uint64_t len = chunk_.length - 8;
        if (const errc e = add_content(s, off, len); e != errc::ok) return fail(e);
        payload_slot_ = chunk_.slot;
        payload_ = {r.cookie, off, len};
        chunk_.read += len;  // counted now; the data streams through rx::payload
        field_ = field::end;
        phase_ = rx::payload;
        return {};
      }
      case field::hole: {
        const auto h = decode<offset_hole_payload>(f);
        const std::uint64_t off = h.offset.get(), len = h.hole_size.get();
        if (len == 0) return fail(errc::hole_size_zero);
        if (const errc e = add_content(s, off, len); e != errc::ok) return fail(e);
        field_ = field::end;
        return {.kind = event_kind::read_hole, .req = r, .offset = off, .length = len};
      }
      case field::status_head: {
        const std::uint32_t id = load_be<std::uint32_t>(f.data());
        if (neg_.extended_headers && load_be<std::uint32_t>(f.data() + 4) != extents_left_)
          return fail(errc::block_status_count_mismatch);
        std::size_t idx = 0;
        while (idx < neg_.meta_context_count && neg_.meta_contexts[idx].id != id) ++idx;
        if (idx == neg_.meta_context_count) return fail(errc::block_status_unknown_context);
        if (s.contexts_seen & (1u << idx)) return fail(errc::block_status_duplicate_context);
        s.contexts_seen |= 1u << idx;
        context_id_ = id;
        extent_sum_ = 0;
        return begin_field(field::descriptor, neg_.extended_headers ? 16 : 8);
      }
      case field::descriptor: {
        std::uint64_t len = 0, flags = 0;
        if (neg_.extended_headers) {
          len = load_be<std::uint64_t>(f.data());
          flags = load_be<std::uint64_t>(f.data() + 8);
        } else {
          len = load_be<std::uint32_t>(f.data());
          flags = load_be<std::uint32_t>(f.data() + 4);
        }
        if (len == 0) return fail(errc::extent_length_zero);
        // Every descriptor but the last lies inside the request; the last may run past it.
        if (extent_sum_ >= r.length && extent_sum_ != 0) return fail(errc::extent_past_request);
        if ((r.flags & command_flag::req_one) && len > r.length) return fail(errc::extent_req_one_violation);
        const std::uint64_t at = r.offset + extent_sum_;
        extent_sum_ = len > ~std::uint64_t{0} - extent_sum_ ? ~std::uint64_t{0} : extent_sum_ + len;
        if (--extents_left_ == 0) field_ = field::end;
        return {.kind = event_kind::extent, .req = r, .offset = at, .length = len, .context_id = context_id_,
                .extent_flags = flags};
      }
      case field::error_head: {
        const auto p = decode<error_chunk_prefix>(f);
        const std::uint32_t err = p.error.get();
        message_len_ = p.message_length.get();
        const auto type = static_cast<chunk_type>(chunk_.type);
        if (type != chunk_type::error && type != chunk_type::error_offset) {
          // Unknown error type: its error value and nothing else, if its message fits.
          if (message_len_ > chunk_.length - sizeof(error_chunk_prefix)) return fail(errc::error_message_too_long);
          record_error(chunk_.slot, err ? normalize_error(err) : nbd_error::einval);
          field_ = chunk_left() ? field::skip : field::end;
          return {};
        }
        if (err == 0) return fail(errc::error_chunk_zero_error);
        const std::uint64_t room = chunk_.length - sizeof(error_chunk_prefix) - (type == chunk_type::error_offset ? 8 : 0);
        if (message_len_ > room || message_len_ > max_string) return fail(errc::error_message_too_long);
        error_status_ = normalize_error(err);
        body_.clear();
        field_ = field::message;
        return {};
      }
      case field::error_offset: {
        const std::uint64_t off = load_be<std::uint64_t>(f.data());
        if (off < r.offset || off - r.offset >= r.length) return fail(errc::chunk_outside_request);
        field_ = chunk_left() ? field::skip : field::end;
        return report_error(true, off);
      }
      default: return {};
    }
  }

  event report_error(bool has_offset, std::uint64_t off) noexcept {
    record_error(chunk_.slot, error_status_);
    return {.kind = event_kind::error_chunk, .req = slots_[chunk_.slot].req, .status = error_status_,
            .offset = off, .data = body_.view(), .has_offset = has_offset};
  }

  void record_error(std::size_t s, nbd_error e) noexcept {
    if (!slots_[s].errored) slots_[s].status = e;
    slots_[s].errored = true;
  }

  /// Checklist 3.4 for content chunks: inside the request, no overlap with earlier ones, at
  /// most one with DF. Coverage is kept as a few merged ranges.
  errc add_content(cookie_slot& s, std::uint64_t off, std::uint64_t len) noexcept {
    const request& r = s.req;
    if (off < r.offset || !range_within(off - r.offset, len, r.length)) return errc::chunk_outside_request;
    if ((r.flags & command_flag::df) && s.content_chunks != 0) return errc::df_multiple_chunks;
    ++s.content_chunks;
    const std::uint64_t b = off, e = off + len;
    std::size_t i = 0;
    while (i < s.range_count && s.ranges[i].end <= b) ++i;  // ranges wholly before b (touching is fine)
    if (i < s.range_count && s.ranges[i].begin < e) return errc::chunk_overlap;  // [begin,end) meets [b,e)
    // Insert at i, merging with touching neighbours.
    const bool join_prev = i > 0 && s.ranges[i - 1].end == b;
    const bool join_next = i < s.range_count && s.ranges[i].begin == e;
    if (join_prev && join_next) {
      s.ranges[i - 1].end = s.ranges[i].end;
      for (std::size_t k = i; k + 1 < s.range_count; ++k) s.ranges[k] = s.ranges[k + 1];
      --s.range_count;
    } else if (join_prev) {
      s.ranges[i - 1].end = e;
    } else if (join_next) {
      s.ranges[i].begin = b;
    } else {
      if (s.range_count == max_read_ranges) return errc::reply_chunks_too_fragmented;
      for (std::size_t k = s.range_count; k > i; --k) s.ranges[k] = s.ranges[k - 1];
      s.ranges[i] = {b, e};
      ++s.range_count;
    }
    s.covered += len;
    return errc::ok;
  }

  /// DONE: success needs every byte of a READ covered and every context of a BLOCK_STATUS
  /// answered; otherwise the first error reported is the request's status.
  event finish(std::size_t s) noexcept {
    const cookie_slot& slot = slots_[s];
    if (!slot.errored) {
      if (slot.req.cmd() == command::read && slot.covered != slot.req.length) return fail(errc::read_incomplete);
      if (slot.req.cmd() == command::block_status &&
          slot.contexts_seen != (neg_.meta_context_count >= 32 ? ~0u : (1u << neg_.meta_context_count) - 1))
        return fail(errc::block_status_missing_context);
    }
    return complete(s, slot.errored ? slot.status : nbd_error::ok);
  }

  std::size_t on_payload(bytes_view in, event& ev) noexcept {
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), payload_.length));
    if (take == 0) return 0;
    payload_.offset += take;
    payload_.length -= take;
    ev = {.kind = event_kind::payload, .req = slots_[payload_slot_].req, .offset = payload_.offset - take,
          .data = in.first(take), .tag = slots_[payload_slot_].tag, .remaining = payload_.length};
    if (payload_.length == 0) phase_ = rx::payload_done;
    return take;
  }

  [[nodiscard]] std::uint64_t oldest_cookie() const noexcept {
    std::uint64_t best = ~std::uint64_t{0};
    for (const auto& s : slots_)
      if (s.used && (s.req.cookie >> 16) < (best >> 16)) best = s.req.cookie;
    return best;
  }

  event complete(std::size_t s, nbd_error status) noexcept {
    const request r = slots_[s].req;
    const std::uint64_t tag = slots_[s].tag;
    slots_[s].used = false;
    --in_flight_;
    // NBD_ESHUTDOWN: the client MUST soft-disconnect once its requests in flight are done
    // ("Error values"). New requests are refused from now on; DISC follows the last reply.
    if (status == nbd_error::eshutdown) server_shutting_down_ = true;
    if (server_shutting_down_ && in_flight_ == 0 && state_ == client_state::transmission) queue_disc();
    return {.kind = event_kind::reply, .req = r, .status = status, .tag = tag};
  }

  struct pending_info {
    bool have_export = false, have_block_size = false;
    std::uint64_t size = 0;
    std::uint16_t flags = 0;
    block_size_constraints block_size{};
  };
  struct chunk_state {
    std::size_t slot = 0;
    std::uint16_t flags = 0, type = 0;
    std::uint64_t length = 0;  ///< payload length from the header
    std::uint64_t read = 0;    ///< payload bytes consumed so far
  };

  client_config cfg_;
  client_state state_ = client_state::awaiting_greeting;
  errc error_ = errc::ok;
  nbdwire::negotiated neg_{};
  bool fixed_ = false, no_zeroes_ = false, server_shutting_down_ = false;
  // handshake
  option opt_ = option::abort;
  std::uint8_t plan_ = 0;
  option plan_final_ = option::go;
  std::uint32_t plan_requests_ = 0;
  std::span<const std::string_view> plan_queries_{};
  bool tried_ext_ = false, tried_sr_ = false;
  pending_info info_{};
  reply_type reply_ = reply_type::ack;
  std::uint32_t body_len_ = 0;
  std::size_t body_seen_ = 0;
  // transmission
  rx phase_ = rx::header;
  bool in_chunk_ = false;
  chunk_state chunk_{};
  field field_ = field::end;
  std::size_t field_size_ = 0;
  std::uint64_t extents_left_ = 0, extent_sum_ = 0;
  std::uint32_t context_id_ = 0, message_len_ = 0;
  nbd_error error_status_ = nbd_error::ok;
  payload_span payload_{};
  std::size_t payload_slot_ = 0;
  std::uint64_t sequence_ = 0;
  bool terminal_reported_ = false;
  std::size_t in_flight_ = 0;
  detail::stash stash_{};
  detail::body_buffer<4 + 2 * max_string + 8> body_{};
  detail::body_buffer<max_string> plan_name_{};  ///< the export name of go()/info(), copied
  std::array<cookie_slot, max_in_flight> slots_{};
  detail::outbox out_{};
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
