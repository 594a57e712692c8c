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
inline constexpr std::size_t client_state_count = 8;

enum class client_trigger : std::uint8_t {
  oldstyle_greeting,
  newstyle_greeting,
  option_sent,
  export_name_sent,
  option_final,      ///< final reply other than GO's ACK
  go_acked,
  go_fell_back,      ///< GO got ERR_UNSUP; EXPORT_NAME sent instead
  shutdown_abort,    ///< ERR_SHUTDOWN: ABORT sent in its place (a MUST)
  abort_acked,
  export_name_replied,
  disc_sent,
  peer_closed,
  violation,
};

namespace detail {
using client_transition = transition<client_state, client_trigger>;
inline constexpr std::array client_transitions{
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
      state_ = client_state::transmission;
      neg_.style = handshake_style::legacy_1997;
      neg_.export_size = cfg.legacy_export_size;
      neg_.transmission_flags = static_cast<std::uint16_t>(
          transmission_flag::has_flags | (cfg.legacy_read_only ? transmission_flag::read_only : 0));
    }
  }

  // ---- input -------------------------------------------------------------------------------

  /// Feeds bytes received from the server. See the contract at the top of this file.
  [[nodiscard]] receive_result receive(bytes_view in) noexcept {
    std::size_t used = 0;
    for (;;) {
      const bytes_view rest = in.subspan(used);
      event ev{};
      const std::size_t n = step(rest, ev);
      used += n;
      if (ev.kind != event_kind::need_more || n == 0) return {used, ev};
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

  /// NBD_OPT_GO: choose an export and enter transmission. Falls back to EXPORT_NAME on
  /// ERR_UNSUP (or at once on a non-fixed newstyle server) when so configured.
  result<void> go(std::string_view export_name, std::uint32_t info_requests = info_request::all) noexcept {
    if (!fixed_ && state_ == client_state::negotiating) return this->export_name(export_name);
    return send_info_or_go(option::go, export_name, info_requests);
  }

  /// NBD_OPT_INFO: ask about an export without choosing it.
  result<void> info(std::string_view export_name, std::uint32_t info_requests = info_request::all) noexcept {
    return send_info_or_go(option::info, export_name, info_requests);
  }

  /// NBD_OPT_LIST: one export_listed event per export, then option_done.
  result<void> list() noexcept { return send_option(option::list, {}, {}); }

  /// NBD_OPT_ABORT: soft disconnect during the handshake; `disconnected` follows.
  result<void> abort() noexcept { return send_option(option::abort, {}, {}); }

  /// NBD_OPT_EXPORT_NAME: the only option of non-fixed newstyle; `ready` or a close follows.
  result<void> export_name(std::string_view name) noexcept {
    if (state_ != client_state::negotiating) return errc::wrong_state;
    if (name.size() > max_string) return errc::string_too_long;
    if (!out_.room_for(sizeof(option_header) + name.size())) return errc::outbox_full;
    out_.put_record(make_option_header(option::export_name, static_cast<std::uint32_t>(name.size())));
    out_.put(as_bytes(name));
    opt_ = option::export_name;
    move(client_trigger::export_name_sent);
    return {};
  }

  /// True when an option may be sent now.
  [[nodiscard]] bool can_send_option() const noexcept { return state_ == client_state::negotiating; }

  // ---- transmission ("Request message") ----------------------------------------------------

  result<std::uint64_t> read(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0) noexcept {
    return submit(command::read, flags, offset, length);
  }
  /// Queues a WRITE header; pending_payload() then asks for the `length` data bytes.
  result<std::uint64_t> write(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0) noexcept {
    return submit(command::write, flags, offset, length);
  }
  result<std::uint64_t> flush(std::uint16_t flags = 0) noexcept { return submit(command::flush, flags, 0, 0); }
  result<std::uint64_t> trim(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0) noexcept {
    return submit(command::trim, flags, offset, length);
  }
  result<std::uint64_t> write_zeroes(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0) noexcept {
    return submit(command::write_zeroes, flags, offset, length);
  }
  result<std::uint64_t> cache(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0) noexcept {
    return submit(command::cache, flags, offset, length);
  }

  /// Any request except DISC (use disconnect()). Refuses what the server did not advertise,
  /// ranges past the end, misaligned or oversized requests, zero lengths, and more requests
  /// than the cookie table holds. Returns the cookie the reply will carry.
  result<std::uint64_t> submit(command c, std::uint16_t flags, std::uint64_t offset, std::uint64_t length) noexcept {
    if (state_ != client_state::transmission || server_shutting_down_) return errc::wrong_state;
    if (c == command::disc) return errc::wrong_state;
    const request r{0, static_cast<std::uint16_t>(c), flags, offset, length};
    if (const auto v = detail::check_request(r, neg_, false); v != detail::verdict::ok) return detail::to_errc(v);
    const bool legacy = neg_.style == handshake_style::legacy_1997;
    if (legacy) {
      // The 1997 framing knows READ (0) and WRITE (1) only, with 32-bit offset and length.
      if (c != command::read && c != command::write) return errc::command_not_advertised;
      if (flags != 0) return errc::flag_not_applicable;
      if (offset > 0xffffffffu || length > 0xffffffffu - offset) return errc::legacy_range_too_large;
    }
    if (length > 0xffffffffu) return errc::length_too_large;
    if (in_flight_ == max_in_flight) return errc::too_many_in_flight;
    const bool payload = c == command::write && length != 0;
    if (!out_.room_for(legacy ? sizeof(legacy_1997_request) : sizeof(request_header), payload))
      return errc::outbox_full;

    std::size_t slot = 0;
    while (slots_[slot].used) ++slot;
    // The cookie names the slot in its low 16 bits, so a reply finds its request in O(1), and
    // a sequence number above them keeps cookies unique over the connection.
    const std::uint64_t cookie = (++sequence_ << 16) | slot;
    slots_[slot] = {true, request{cookie, r.type, flags, offset, length}};
    ++in_flight_;
    if (legacy)
      out_.put_record(make_legacy_1997_request(c, cookie, static_cast<std::uint32_t>(offset),
                                               static_cast<std::uint32_t>(length)));
    else
      out_.put_record(make_request(c, flags, cookie, offset, static_cast<std::uint32_t>(length)));
    if (payload) out_.put_mark({cookie, offset, length});
    return cookie;
  }

  /// NBD_CMD_DISC: no more requests; replies to those in flight still arrive. The 1997
  /// framing has no disconnect message: closing the socket is the disconnect.
  result<void> disconnect() noexcept {
    if (state_ != client_state::transmission) return errc::wrong_state;
    if (neg_.style != handshake_style::legacy_1997) {
      if (!out_.room_for(sizeof(request_header))) return errc::outbox_full;
      out_.put_record(make_request(command::disc, 0, (++sequence_ << 16) | 0xffffu, 0, 0));
    }
    move(client_trigger::disc_sent);
    return {};
  }

  // ---- inspection --------------------------------------------------------------------------

  [[nodiscard]] client_state state() const noexcept { return state_; }
  [[nodiscard]] errc error() const noexcept { return error_; }
  /// What the handshake settled. Complete once `ready` was reported.
  [[nodiscard]] const nbdwire::negotiated& negotiated() const noexcept { return neg_; }
  [[nodiscard]] std::size_t in_flight() const noexcept { return in_flight_; }
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
  enum class rx : std::uint8_t { header, body, payload, payload_done };

  struct cookie_slot {
    bool used = false;
    request req{};
  };

  void move(client_trigger t) noexcept {
    const auto to = detail::next_state(detail::client_transitions, state_, t);
    state_ = to ? *to : client_state::failed;
    if (!to && error_ == errc::ok) error_ = errc::wrong_state;
  }

  event fail(errc e) noexcept {
    if (state_ != client_state::failed) {
      error_ = e;
      move(client_trigger::violation);
    }
    return failed_event();
  }
  [[nodiscard]] event failed_event() const noexcept { return {.kind = event_kind::failed, .error = error_}; }

  [[nodiscard]] std::optional<std::size_t> slot_of(std::uint64_t cookie) const noexcept {
    const std::size_t i = cookie & 0xffffu;
    if (i >= max_in_flight || !slots_[i].used || slots_[i].req.cookie != cookie) return std::nullopt;
    return i;
  }

  result<void> send_option(option o, bytes_view part1, bytes_view part2) noexcept {
    if (state_ != client_state::negotiating) return errc::wrong_state;
    if (!fixed_ && o != option::export_name) return errc::option_needs_fixed_newstyle;
    const std::size_t len = part1.size() + part2.size();
    if (!out_.room_for(sizeof(option_header) + len)) return errc::outbox_full;
    out_.put_record(make_option_header(o, static_cast<std::uint32_t>(len)));
    out_.put(part1);
    out_.put(part2);
    opt_ = o;
    info_ = {};
    move(client_trigger::option_sent);
    return {};
  }

  result<void> send_info_or_go(option o, std::string_view name, std::uint32_t requests) noexcept {
    if (state_ != client_state::negotiating) return errc::wrong_state;
    if (name.size() > max_string) return errc::string_too_long;
    // u32 name length, name, u16 count, count x u16 info type ("NBD_OPT_INFO").
    std::array<std::byte, 4> name_len{};
    store_be<std::uint32_t>(name_len.data(), static_cast<std::uint32_t>(name.size()));
    std::array<std::byte, 2 + 2 * 3> tail{};
    std::uint16_t count = 0;
    for (auto t : {info_type::name, info_type::description, info_type::block_size}) {
      if (requests & (1u << static_cast<unsigned>(t))) {
        store_be<std::uint16_t>(tail.data() + 2 + 2 * count, static_cast<std::uint16_t>(t));
        ++count;
      }
    }
    store_be<std::uint16_t>(tail.data(), count);
    const std::size_t len = 4 + name.size() + 2 + 2u * count;
    if (!fixed_) return errc::option_needs_fixed_newstyle;
    if (!out_.room_for(sizeof(option_header) + len)) return errc::outbox_full;
    out_.put_record(make_option_header(o, static_cast<std::uint32_t>(len)));
    out_.put(name_len);
    out_.put(as_bytes(name));
    out_.put(bytes_view{tail}.first(2 + 2u * count));
    opt_ = o;
    info_ = {};
    go_name_.clear();
    go_name_.fill(as_bytes(name), name.size());
    move(client_trigger::option_sent);
    return {};
  }

  /// One step: consume what the current unit needs and report at most one event.
  std::size_t step(bytes_view in, event& ev) noexcept {
    switch (state_) {
      case client_state::failed: ev = failed_event(); return 0;
      case client_state::closed: ev = {.kind = event_kind::closed}; return 0;
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
      default: return errc::option_reply_type_unexpected;
    }
  }

  event on_option_reply_body() noexcept {
    const bytes_view b = body_.view();
    const auto t = static_cast<std::uint32_t>(reply_);
    const std::uint32_t o = static_cast<std::uint32_t>(opt_);
    if (t & reply_type_error_bit) {
      if (opt_ == option::go && reply_ == reply_type::err_unsup && cfg_.fallback_to_export_name) {
        // An old server: "fall back to NBD_OPT_EXPORT_NAME" ("NBD_OPT_GO").
        if (!out_.room_for(sizeof(option_header) + go_name_.size())) return fail(errc::outbox_full);
        out_.put_record(make_option_header(option::export_name, static_cast<std::uint32_t>(go_name_.size())));
        out_.put(go_name_.view());
        opt_ = option::export_name;
        move(client_trigger::go_fell_back);
        return {};  // need_more: the EXPORT_NAME reply comes next
      }
      if (reply_ == reply_type::err_shutdown && out_.room_for(sizeof(option_header))) {
        // "A client that receives ERR_SHUTDOWN MUST soft-disconnect": ABORT goes out now and
        // `disconnected` follows its ACK (or the server's close).
        out_.put_record(make_option_header(option::abort, 0));
        opt_ = option::abort;
        move(client_trigger::shutdown_abort);
        return {.kind = event_kind::option_refused, .option = o, .reply = reply_type::err_shutdown, .data = b};
      }
      move(client_trigger::option_final);
      return {.kind = event_kind::option_refused, .option = o, .reply = reply_, .data = b};
    }
    switch (reply_) {
      case reply_type::ack:
        if (opt_ == option::abort) {
          move(client_trigger::abort_acked);
          return {.kind = event_kind::disconnected, .option = o};
        }
        if ((opt_ == option::go || opt_ == option::info) && !info_.have_export) return fail(errc::ack_without_export_info);
        if (opt_ == option::go) {
          neg_.export_size = info_.size;
          neg_.transmission_flags = detail::sanitize_transmission_flags(info_.flags, false, false);
          neg_.block_size_advertised = info_.have_block_size;
          if (info_.have_block_size) neg_.block_size = info_.block_size;
          move(client_trigger::go_acked);
          return {.kind = event_kind::ready, .option = o};
        }
        move(client_trigger::option_final);
        return {.kind = event_kind::option_done, .option = o};
      case reply_type::server: {
        const std::uint32_t name_len = load_be<std::uint32_t>(b.data());
        if (name_len > b.size() - 4) return fail(errc::server_reply_bad_name_length);
        if (name_len > max_string || b.size() - 4 - name_len > max_string) return fail(errc::reply_string_too_long);
        const bytes_view name = b.subspan(4, name_len);
        if (contains_nul(name)) return fail(errc::reply_string_contains_nul);
        return {.kind = event_kind::export_listed, .option = o, .data = name, .text = b.subspan(4 + name_len)};
      }
      case reply_type::info: return on_info_item(b);
      default: return fail(errc::option_reply_type_unexpected);
    }
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
    neg_.transmission_flags = detail::sanitize_transmission_flags(r.transmission_flags.get(), false, false);
    move(client_trigger::export_name_replied);
    ev = {.kind = event_kind::ready, .option = static_cast<std::uint32_t>(option::export_name)};
    return n;
  }

  // "Simple reply message" (and the 1997 reply): header, then READ data on success.
  std::size_t on_reply(bytes_view in, event& ev) noexcept {
    if (phase_ == rx::payload_done) {
      phase_ = rx::header;
      ev = complete(payload_slot_, nbd_error::ok);
      return 0;
    }
    if (phase_ == rx::payload) {
      const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), payload_.length));
      if (take == 0) return 0;
      ev = {.kind = event_kind::payload, .req = slots_[payload_slot_].req, .offset = payload_.offset,
            .data = in.first(take)};
      payload_.offset += take;
      payload_.length -= take;
      if (payload_.length == 0) phase_ = rx::payload_done;
      return take;
    }
    const bool legacy = neg_.style == handshake_style::legacy_1997;
    std::size_t n = stash_.fill(in, 4);
    if (stash_.size() < 4) return n;
    const std::uint32_t m = load_be<std::uint32_t>(stash_.view().data());
    if (legacy ? m != magic::legacy_1997_reply : m != magic::simple_reply) {
      if (!legacy && (m == magic::structured_reply || m == magic::extended_reply))
        return ev = fail(errc::structured_reply_not_negotiated), n;
      return ev = fail(errc::bad_reply_magic), n;
    }
    n += stash_.fill(in.subspan(n), sizeof(simple_reply_header));
    if (stash_.size() < sizeof(simple_reply_header)) return n;
    std::uint64_t cookie = 0;
    std::uint32_t err = 0;
    if (legacy) {
      const auto r = decode<legacy_1997_reply>(stash_.view());
      cookie = r.handle.get();
      err = r.error.get();
    } else {
      const auto r = decode<simple_reply_header>(stash_.view());
      cookie = r.cookie.get();
      err = r.error.get();
    }
    stash_.clear();
    const auto s = slot_of(cookie);
    if (!s) return ev = fail(errc::reply_cookie_unknown), n;
    // The 1997 driver matched replies in request order (checklist 1.1).
    if (legacy && slots_[*s].req.cookie != oldest_cookie()) return ev = fail(errc::legacy_reply_out_of_order), n;
    const request& r = slots_[*s].req;
    const nbd_error status = legacy ? (err ? nbd_error::eio : nbd_error::ok) : normalize_error(err);
    if (r.cmd() == command::read && status == nbd_error::ok && r.length != 0) {
      payload_slot_ = *s;
      payload_ = {cookie, r.offset, r.length};
      phase_ = rx::payload;
      return n;  // the data follows as payload events
    }
    ev = complete(*s, status);
    return n;
  }

  [[nodiscard]] std::uint64_t oldest_cookie() const noexcept {
    std::uint64_t best = ~std::uint64_t{0};
    for (const auto& s : slots_)
      if (s.used && (s.req.cookie >> 16) < (best >> 16)) best = s.req.cookie;
    return best;
  }

  event complete(std::size_t s, nbd_error status) noexcept {
    const request r = slots_[s].req;
    slots_[s].used = false;
    --in_flight_;
    // NBD_ESHUTDOWN: the client MUST soft-disconnect once its requests in flight are done
    // ("Error values"). New requests are refused from now on; DISC follows the last reply.
    if (status == nbd_error::eshutdown) server_shutting_down_ = true;
    if (server_shutting_down_ && in_flight_ == 0 && state_ == client_state::transmission) (void)disconnect();
    return {.kind = event_kind::reply, .req = r, .status = status};
  }

  struct pending_info {
    bool have_export = false, have_block_size = false;
    std::uint64_t size = 0;
    std::uint16_t flags = 0;
    block_size_constraints block_size{};
  };

  client_config cfg_;
  client_state state_ = client_state::awaiting_greeting;
  errc error_ = errc::ok;
  nbdwire::negotiated neg_{};
  bool fixed_ = false, no_zeroes_ = false, server_shutting_down_ = false;
  option opt_ = option::abort;
  pending_info info_{};
  rx phase_ = rx::header;
  reply_type reply_ = reply_type::ack;
  std::uint32_t body_len_ = 0;
  std::size_t body_seen_ = 0;
  payload_span payload_{};
  std::size_t payload_slot_ = 0;
  std::uint64_t sequence_ = 0;
  std::size_t in_flight_ = 0;
  detail::stash stash_{};
  detail::body_buffer<4 + 2 * max_string + 8> body_{};
  detail::body_buffer<max_string> go_name_{};  ///< GO's export name, for the EXPORT_NAME fallback
  std::array<cookie_slot, max_in_flight> slots_{};
  detail::outbox out_{};
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
