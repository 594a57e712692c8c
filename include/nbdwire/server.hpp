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
// only buffers are one export name (max_string bytes) and the outbox.
#pragma once

#include <algorithm>    // std::min
#include <array>        // std::array
#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional
#include <span>         // std::span: the caller's export table
#include <string_view>  // export names and messages

#include "nbdwire/bytes.hpp"
#include "nbdwire/config.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/detail/outbox.hpp"
#include "nbdwire/detail/request_table.hpp"
#include "nbdwire/detail/rules.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/wire.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// One export a server offers. The strings are the caller's and must outlive the machine.
struct export_config {
  std::string_view name;         ///< at most max_string bytes
  std::string_view description;  ///< at most max_string bytes; sent on request when not empty
  std::uint64_t size = 0;
  /// Capabilities: read_only, send_flush, send_fua, send_trim, send_write_zeroes,
  /// send_fast_zero, send_cache, can_multi_conn, rotational. has_flags is added, and flags
  /// this release cannot honour (send_df, block_status_payload) are removed.
  std::uint16_t transmission_flags = 0;
  block_size_constraints block_size{};  ///< enforced on requests; advertised by NBD_INFO_BLOCK_SIZE
};

struct server_config {
  static constexpr std::size_t no_export = ~std::size_t{0};
  handshake_style style = handshake_style::fixed_newstyle;
  std::span<const export_config> exports{};  ///< caller-owned; must outlive the machine
  std::size_t default_export = 0;            ///< selected by the empty name; no_export for none
  std::uint32_t max_options = 64;            ///< options per connection before a hard disconnect
  std::uint32_t max_option_length = 1u << 20;///< longer option data is a hard disconnect (DoS)
  bool no_zeroes = true;                     ///< advertise NBD_FLAG_NO_ZEROES
  bool structured_replies = true;            ///< accept NBD_OPT_STRUCTURED_REPLY
  bool extended_headers = true;              ///< [ext] accept NBD_OPT_EXTENDED_HEADERS
  /// Metadata contexts offered for every export, e.g. "base:allocation",
  /// "qemu:dirty-bitmap:b0"; the context id is the index here. Caller-owned; at most
  /// max_meta_contexts names of at most max_string bytes.
  std::span<const std::string_view> meta_contexts{};
};

/// Server protocol states. Every transition is in server_transitions below.
enum class server_state : std::uint8_t {
  start,                  ///< constructed: the greeting (if any) is being queued
  awaiting_client_flags,  ///< newstyle greeting sent
  negotiating,            ///< "Option haggling": reading an option, answering it
  transmission,           ///< "Transmission phase"
  closed,                 ///< terminal for input: DISC, ABORT or a clean close (reply() still works)
  failed,                 ///< terminal: error() says why
};

/// The enumerator's name, as docs/design.md shows it.
[[nodiscard]] constexpr std::string_view to_string(server_state v) noexcept {
  switch (v) {
    case server_state::start: return "start";
    case server_state::awaiting_client_flags: return "awaiting_client_flags";
    case server_state::negotiating: return "negotiating";
    case server_state::transmission: return "transmission";
    case server_state::closed: return "closed";
    case server_state::failed: return "failed";
  }
  return "unknown";
}

inline constexpr std::size_t server_state_count = 6;

enum class server_trigger : std::uint8_t {
  greeting_queued,    ///< newstyle greeting queued
  handshake_skipped,  ///< oldstyle greeting queued, the 1997 framing, or a negotiated hand-over
  client_flags,   ///< valid client flags
  export_chosen,  ///< the EXPORT_NAME reply or GO's ACK queued
  abort,  ///< NBD_OPT_ABORT acknowledged
  disc,  ///< NBD_CMD_DISC received (requests in flight are still answered)
  peer_closed,  ///< the client closed at a message boundary
  violation,  ///< the client broke a rule, or the configuration is invalid (a fatal errc)
};

/// The enumerator's name, as docs/design.md shows it.
[[nodiscard]] constexpr std::string_view to_string(server_trigger v) noexcept {
  switch (v) {
    case server_trigger::greeting_queued: return "greeting_queued";
    case server_trigger::handshake_skipped: return "handshake_skipped";
    case server_trigger::client_flags: return "client_flags";
    case server_trigger::export_chosen: return "export_chosen";
    case server_trigger::abort: return "abort";
    case server_trigger::disc: return "disc";
    case server_trigger::peer_closed: return "peer_closed";
    case server_trigger::violation: return "violation";
  }
  return "unknown";
}


namespace detail {
using server_transition = transition<server_state, server_trigger>;
inline constexpr std::array server_transitions{
    server_transition{server_state::start, server_trigger::greeting_queued, server_state::awaiting_client_flags},
    server_transition{server_state::start, server_trigger::handshake_skipped, server_state::transmission},
    server_transition{server_state::start, server_trigger::violation, server_state::failed},
    server_transition{server_state::awaiting_client_flags, server_trigger::client_flags, server_state::negotiating},
    server_transition{server_state::awaiting_client_flags, server_trigger::peer_closed, server_state::closed},
    server_transition{server_state::awaiting_client_flags, server_trigger::violation, server_state::failed},
    server_transition{server_state::negotiating, server_trigger::export_chosen, server_state::transmission},
    server_transition{server_state::negotiating, server_trigger::abort, server_state::closed},
    server_transition{server_state::negotiating, server_trigger::peer_closed, server_state::closed},
    server_transition{server_state::negotiating, server_trigger::violation, server_state::failed},
    server_transition{server_state::transmission, server_trigger::disc, server_state::closed},
    server_transition{server_state::transmission, server_trigger::peer_closed, server_state::closed},
    server_transition{server_state::transmission, server_trigger::violation, server_state::failed},
};
static_assert(table_well_formed(server_transitions, server_state_count, server_state::start,
                                {server_state::closed, server_state::failed}));
}  // namespace detail

// Every accepted request holds room for its reply's last messages; at least one request must
// fit with every context selected and extended headers (32-byte headers, 16-byte descriptors).
static_assert(outbox_size >= max_meta_contexts * (32 + 8 + 16) + 32 + 6 + 8,
              "NBDWIRE_OUTBOX_SIZE cannot hold the reply reservation of one request");

class server {
 public:
  /// Queues the greeting (none for legacy_1997). An invalid configuration (a style that
  /// serves one export with another count, a bad default, invalid block sizes, over-long
  /// strings) leaves the machine failed with errc::invalid_config.
  explicit server(const server_config& cfg) noexcept : cfg_(cfg) {
    if (!config_valid()) {
      fail(errc::invalid_config);
      return;
    }
    switch (cfg.style) {
      case handshake_style::fixed_newstyle:
      case handshake_style::newstyle: {
        std::uint16_t h = cfg.style == handshake_style::fixed_newstyle ? handshake_flag::fixed_newstyle : 0;
        if (cfg.no_zeroes) h |= handshake_flag::no_zeroes;
        out_.put_record(make_newstyle_greeting(h));
        move(server_trigger::greeting_queued);
        break;
      }
      case handshake_style::oldstyle:
        choose(0, false);
        out_.put_record(make_oldstyle_greeting(neg_.export_size, neg_.transmission_flags));
        move(server_trigger::handshake_skipped);  // the greeting is the whole handshake
        break;
      case handshake_style::legacy_1997:
        choose(0, false);
        move(server_trigger::handshake_skipped);
        break;
    }
  }

  /// A connection whose handshake is already done (by another machine, thread or process):
  /// transmission starts at once with what `n` says was negotiated (style, export, flags,
  /// structured replies, extended headers, contexts). Feed any bytes already received after
  /// the handshake to receive(). `n.export_index` names the export in `cfg.exports`.
  server(const server_config& cfg, const nbdwire::negotiated& n) noexcept : cfg_(cfg) {
    cfg_.style = n.style;
    if (!config_valid() || n.export_index >= cfg_.exports.size()) {
      fail(errc::invalid_config);
      return;
    }
    neg_ = n;
    structured_ = n.structured_replies || n.extended_headers;
    extended_ = n.extended_headers;
    move(server_trigger::handshake_skipped);
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
        if (ev.terminal()) terminal_reported_ = true;
        return {used, ev};
      }
    }
  }

  /// The client closed the connection.
  [[nodiscard]] event on_eof() noexcept {
    switch (state_) {
      case server_state::failed: return failed_event();
      case server_state::closed: return {.kind = event_kind::closed};
      default: break;
    }
    if (stash_.size() != 0 || phase_ != rx::header) return fail(errc::unexpected_eof);
    move(server_trigger::peer_closed);
    return {.kind = event_kind::closed};
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

  [[nodiscard]] std::optional<payload_span> incoming_payload() const noexcept {
    if (phase_ != rx::payload || payload_.length == 0) return std::nullopt;
    return payload_;
  }
  result<void> consume_incoming_payload(std::uint64_t n) noexcept {
    if (phase_ != rx::payload) return errc::no_payload_due;
    if (n > payload_.length) return errc::payload_overrun;
    payload_.offset += n;
    payload_.length -= n;
    if (payload_.length == 0) phase_ = rx::header;
    return {};
  }

  // ---- replies -------------------------------------------------------------------------------
  //
  // Output contract. When a request is accepted (the `request` event), the machine reserves
  // outbox room for the reply that ends it: a simple reply, or the final chunk (one or two
  // data chunks for READ, one status chunk per negotiated context for BLOCK_STATUS, an error
  // chunk for anything). So every call that ends a reply (reply(), reply_done(), and the
  // chunk calls with done = true) never fails for lack of room, however many requests are in
  // flight and however full the outbox is; and neither does the status chunk of each
  // negotiated context. A request is only accepted while its reservation fits: until then
  // receive() reports `blocked` (drain output, or answer requests in flight). Bound:
  // max_in_flight x reply_reserve() bytes, which fits outbox_size (config.hpp).
  // What may still run short: chunks beyond that shape (a READ answered in several data and
  // hole chunks: every chunk before the final one), which use the outbox room left over;
  // such a call returns errc::outbox_full and changes nothing, and chunk_room() says what
  // fits. The simplest answer to that is to end the reply with one data chunk for the rest of
  // the range, which always fits. Error messages are text for humans: one that does not fit
  // the room left is shortened (at a UTF-8 character boundary), never refused.

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
    auto* s = answerable(r);
    if (!s) return answer_error();
    if (message.size() > max_string) return errc::string_too_long;
    if (r.cmd() == command::block_status && e == nbd_error::ok) return errc::block_status_needs_chunks;
    queue_whole_reply(*s, e, message);
    finish(*s);
    return {};
  }

  /// Structured replies only: one OFFSET_DATA chunk for [offset, offset + length) of READ `r`;
  /// pending_payload() then asks for the data. `done` marks the last chunk of the reply.
  result<void> reply_read_data(const request& r, std::uint64_t offset, std::uint64_t length, bool done) noexcept {
    auto* s = answerable(r);
    if (!s) return answer_error();
    if (const errc c = check_chunk(s, command::read, offset, length); c != errc::ok) return c;
    // DF: "at most one content chunk", so it covers the whole request and ends the reply.
    if ((r.flags & command_flag::df) && (offset != r.offset || length != r.length || !done))
      return errc::df_requires_one_chunk;
    if (!extended_ && length > max_compact_chunk_data) return errc::length_too_large;
    if (!take_room(*s, chunk_header_size() + 8, 1, done)) return errc::outbox_full;
    std::array<std::byte, 8> off{};
    store_be<std::uint64_t>(off.data(), offset);
    put_chunk(r, chunk_type::offset_data, done, off, payload_span{r.cookie, offset, length});
    if (done) finish(*s);
    return {};
  }

  /// Structured replies only: one OFFSET_HOLE chunk (the range reads as zeroes).
  result<void> reply_read_hole(const request& r, std::uint64_t offset, std::uint32_t length, bool done) noexcept {
    auto* s = answerable(r);
    if (!s) return answer_error();
    if (const errc c = check_chunk(s, command::read, offset, length); c != errc::ok) return c;
    if (r.flags & command_flag::df) return errc::df_requires_one_chunk;  // DF merges holes into data
    if (!take_room(*s, chunk_header_size() + sizeof(offset_hole_payload), 0, done)) return errc::outbox_full;
    offset_hole_payload h{};
    h.offset.set(offset);
    h.hole_size.set(length);
    put_chunk(r, chunk_type::offset_hole, done, encode(h), std::nullopt);
    if (done) finish(*s);
    return {};
  }

  /// The status chunk of one negotiated context for BLOCK_STATUS `r`: consecutive extents
  /// from the request offset. REQ_ONE sends one, clipped to the request; no extent follows
  /// one that reaches the end of the request; and as many as the outbox holds beyond the
  /// first (fewer extents than the range is allowed: the client asks again). The first
  /// extent of each negotiated context is reserved, so this call does not fail for room.
  /// Returns how many extents went out.
  result<std::size_t> reply_block_status(const request& r, std::uint32_t context_id,
                                         std::span<const block_extent> extents, bool done) noexcept {
    auto* s = answerable(r);
    if (!s) return answer_error();
    if (r.cmd() != command::block_status) return errc::command_mismatch;
    if (!neg_.has_meta_context(context_id)) return errc::context_not_negotiated;
    if (extents.empty()) return errc::no_extents;
    const std::size_t desc = extended_ ? sizeof(block_descriptor_ext) : sizeof(block_descriptor);
    const std::size_t head = chunk_header_size() + (extended_ ? 8 : 4);
    // The first descriptor is reserved; the others take what room is left over.
    const std::size_t extra_room = (chunk_room(*s, done) > head + desc) ? (chunk_room(*s, done) - head - desc) / desc : 0;
    std::size_t n = 0;
    std::uint64_t sum = 0;
    while (n < extents.size() && n < 1 + extra_room) {
      if (extents[n].length == 0) return errc::zero_length;
      sum += extents[n].length;
      ++n;
      if ((r.flags & command_flag::req_one) || sum >= r.length) break;
      if (!extended_ && extents[n - 1].length > 0xffffffffu) break;
    }
    if (!take_room(*s, head + n * desc, 0, done)) return errc::outbox_full;
    if (s->contexts_left) --s->contexts_left;
    const std::uint64_t payload = (extended_ ? 8 : 4) + n * desc;
    put_chunk_header(r, extended_ ? chunk_type::block_status_ext : chunk_type::block_status, done, payload);
    std::array<std::byte, 16> b{};
    store_be<std::uint32_t>(b.data(), context_id);
    store_be<std::uint32_t>(b.data() + 4, static_cast<std::uint32_t>(n));
    out_.put(bytes_view{b}.first(extended_ ? 8 : 4));
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t len = extents[i].length;
      if (r.flags & command_flag::req_one) len = std::min<std::uint64_t>(len, r.length);
      if (extended_) {
        store_be<std::uint64_t>(b.data(), len);
        store_be<std::uint64_t>(b.data() + 8, extents[i].flags);
      } else {
        store_be<std::uint32_t>(b.data(), static_cast<std::uint32_t>(std::min<std::uint64_t>(len, 0xffffffffu)));
        store_be<std::uint32_t>(b.data() + 4, static_cast<std::uint32_t>(extents[i].flags));
      }
      out_.put(bytes_view{b}.first(desc));
    }
    if (done) finish(*s);
    return n;
  }

  /// Structured replies only: an error chunk (ERROR, or ERROR_OFFSET when `offset` is given).
  result<void> reply_error_chunk(const request& r, nbd_error e, std::string_view message,
                                 std::optional<std::uint64_t> offset, bool done) noexcept {
    auto* s = answerable(r);
    if (!s) return answer_error();
    if (!structured_replies_on()) return errc::structured_replies_off;
    if (e == nbd_error::ok) return errc::error_chunk_needs_error;
    if (message.size() > max_string) return errc::string_too_long;
    if (offset && (*offset < r.offset || *offset - r.offset >= r.length)) return errc::request_out_of_range;
    const std::size_t fixed = chunk_header_size() + sizeof(error_chunk_prefix) + (offset ? 8 : 0);
    if (!done && chunk_room(*s, false) < fixed) return errc::outbox_full;
    queue_error_chunk(*s, e, message, offset, done);
    if (done) finish(*s);
    return {};
  }

  /// Structured replies only: NBD_REPLY_TYPE_NONE with DONE, ending a reply whose chunks
  /// were all sent without DONE.
  result<void> reply_done(const request& r) noexcept {
    auto* s = answerable(r);
    if (!s) return answer_error();
    if (!structured_replies_on()) return errc::structured_replies_off;
    (void)take_room(*s, chunk_header_size(), 0, true);  // within the reservation
    put_chunk(r, chunk_type::none, true, {}, std::nullopt);
    finish(*s);
    return {};
  }

  /// Outbox bytes a chunk of request `r` that does not end its reply may use now.
  [[nodiscard]] std::size_t chunk_room(const request& r) const noexcept {
    const auto* s = requests_.find(r);
    return s ? chunk_room(*s, false) : 0;
  }

  /// Attaches the caller's tag to a request in flight; every later event about it (WRITE
  /// payload pieces) carries it in `event::tag`, and tag_of() returns it.
  result<void> set_tag(const request& r, std::uint64_t tag) noexcept {
    auto* s = answerable(r);
    if (!s) return answer_error();
    s->tag = tag;
    return {};
  }
  [[nodiscard]] std::optional<std::uint64_t> tag_of(const request& r) const noexcept {
    const auto* s = requests_.find(r);
    if (!s) return std::nullopt;
    return s->tag;
  }

  /// The server is going away ("Option haggling", "Error values"): every later option except
  /// ABORT is answered with NBD_REP_ERR_SHUTDOWN, and every later request with NBD_ESHUTDOWN,
  /// which tells the client to disconnect softly. Requests already reported still get reply().
  void begin_shutdown() noexcept { shutting_down_ = true; }
  [[nodiscard]] bool shutting_down() const noexcept { return shutting_down_; }

  // ---- inspection --------------------------------------------------------------------------

  [[nodiscard]] server_state state() const noexcept { return state_; }
  [[nodiscard]] errc error() const noexcept { return error_; }
  /// What the handshake settled; complete once `ready` was reported (at construction for
  /// oldstyle and the 1997 framing).
  [[nodiscard]] const nbdwire::negotiated& negotiated() const noexcept { return neg_; }
  /// Requests reported to the caller and not yet answered.
  [[nodiscard]] std::size_t outstanding() const noexcept { return requests_.size(); }
  /// True once the machine reads nothing more: the client disconnected (DISC, ABORT), closed,
  /// or broke the protocol. Requests in flight may still be answered.
  [[nodiscard]] bool finished() const noexcept {
    return state_ == server_state::closed || state_ == server_state::failed;
  }
  /// True when nothing is owed: no request awaits a reply and no output is queued. A
  /// finished() machine that is drained() is done: close the connection. (A failed one may
  /// be closed at once: the connection is over.)
  [[nodiscard]] bool drained() const noexcept {
    return requests_.size() == 0 && out_.pending().empty() && !out_.payload();
  }

 private:
  enum class rx : std::uint8_t { header, option_body, payload, discard };

  [[nodiscard]] bool config_valid() const noexcept {
    const bool single = cfg_.style == handshake_style::oldstyle || cfg_.style == handshake_style::legacy_1997;
    if (cfg_.exports.empty() || (single && cfg_.exports.size() != 1)) return false;
    if (cfg_.default_export != server_config::no_export && cfg_.default_export >= cfg_.exports.size()) return false;
    if (cfg_.meta_contexts.size() > max_meta_contexts) return false;
    for (auto m : cfg_.meta_contexts)
      if (m.size() > max_string) return false;
    for (const auto& e : cfg_.exports) {
      if (e.name.size() > max_string || e.description.size() > max_string || !valid(e.block_size)) return false;
      if (cfg_.style == handshake_style::legacy_1997 && e.size > 0xffffffffu) return false;
    }
    return true;
  }

  void move(server_trigger t) noexcept {
    const auto to = detail::next_state(detail::server_transitions, state_, t);
    state_ = to ? *to : server_state::failed;
    if (!to && error_ == errc::ok) error_ = errc::illegal_transition;
  }
  event fail(errc e) noexcept {
    if (state_ != server_state::failed) {
      error_ = e;
      move(server_trigger::violation);
    }
    return failed_event();
  }
  [[nodiscard]] event failed_event() const noexcept { return {.kind = event_kind::failed, .error = error_}; }

  /// Fixes the export and the flags transmission will use.
  void choose(std::size_t index, bool block_size_advertised) noexcept {
    const export_config& e = cfg_.exports[index];
    neg_.style = cfg_.style;
    neg_.export_index = index;
    neg_.export_size = e.size;
    neg_.transmission_flags = flags_of(e);
    neg_.block_size = e.block_size;
    neg_.block_size_advertised = block_size_advertised;
    neg_.structured_replies = structured_;
    neg_.extended_headers = extended_;
    // Contexts hold only for the export SET_META_CONTEXT named ("Metadata querying").
    neg_.meta_context_count = 0;
    if (meta_export_ == index) {
      for (std::size_t i = 0; i < cfg_.meta_contexts.size(); ++i)
        if (meta_selected_ & (1u << i))
          neg_.meta_contexts[neg_.meta_context_count++] = {static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i)};
    }
  }
  [[nodiscard]] std::uint16_t flags_of(const export_config& e) const noexcept {
    if (cfg_.style == handshake_style::legacy_1997) {
      return static_cast<std::uint16_t>(transmission_flag::has_flags | (e.transmission_flags & transmission_flag::read_only));
    }
    return detail::sanitize_transmission_flags(
        static_cast<std::uint16_t>(e.transmission_flags | transmission_flag::has_flags), structured_, extended_);
  }

  [[nodiscard]] std::optional<std::size_t> find_export(bytes_view name) const noexcept {
    if (name.empty() && cfg_.default_export != server_config::no_export) return cfg_.default_export;
    for (std::size_t i = 0; i < cfg_.exports.size(); ++i)
      if (as_bytes(cfg_.exports[i].name).size() == name.size() && as_chars(name) == cfg_.exports[i].name) return i;
    return std::nullopt;
  }

  std::size_t step(bytes_view in, event& ev) noexcept {
    switch (state_) {
      case server_state::start: return 0;
      // A terminal event is reported once (receive()); after that input is dropped.
      case server_state::failed:
        if (terminal_reported_) return in.size();
        ev = failed_event();
        return 0;
      case server_state::closed:
        if (terminal_reported_) return in.size();
        ev = {.kind = event_kind::closed};
        return 0;
      case server_state::awaiting_client_flags: return on_client_flags(in, ev);
      case server_state::negotiating: return on_option(in, ev);
      case server_state::transmission: return on_request(in, ev);
    }
    return 0;
  }

  // "Client flags" (checklist 3.1): unknown bits, or NO_ZEROES the server did not offer,
  // MUST drop the connection.
  std::size_t on_client_flags(bytes_view in, event& ev) noexcept {
    const std::size_t n = stash_.fill(in, sizeof(client_flags_record));
    if (stash_.size() < sizeof(client_flags_record)) return n;
    const std::uint32_t f = decode<client_flags_record>(stash_.view()).flags.get();
    stash_.clear();
    if (f & ~client_flag::known) return ev = fail(errc::bad_client_flags), n;
    if ((f & client_flag::no_zeroes) && !cfg_.no_zeroes) return ev = fail(errc::client_no_zeroes_not_offered), n;
    no_zeroes_ = (f & client_flag::no_zeroes) != 0;
    move(server_trigger::client_flags);
    return n;
  }

  // ---- options ------------------------------------------------------------------------------

  std::size_t on_option(bytes_view in, event& ev) noexcept {
    if (answer_pending_) {
      ev = answer();
      return 0;
    }
    std::size_t n = 0;
    if (phase_ == rx::header) {
      n = stash_.fill(in, sizeof(option_header));
      if (stash_.size() < sizeof(option_header)) return n;
      const auto h = decode<option_header>(stash_.view());
      stash_.clear();
      if (h.magic.get() != magic::ihaveopt) return ev = fail(errc::bad_option_magic), n;
      if (++options_seen_ > cfg_.max_options) return ev = fail(errc::too_many_options), n;
      opt_ = h.option.get();
      body_len_ = h.length.get();
      const auto o = static_cast<option>(opt_);
      if (cfg_.style == handshake_style::newstyle && o != option::export_name)
        return ev = fail(errc::option_requires_fixed_newstyle), n;  // the pre-"fixed" rule
      if (o == option::export_name && body_len_ > max_string) return ev = fail(errc::export_name_too_long), n;
      if (body_len_ > cfg_.max_option_length) return ev = fail(errc::option_length_exceeds_limit), n;
      body_pos_ = 0;
      field_.clear();
      name_.clear();
      name_len_ = 0;
      info_count_ = 0;
      info_requests_ = 0;
      // INFO/GO bodies hold at least a name length and an info count ("NBD_OPT_INFO"),
      // meta-context bodies a name length and a query count.
      invalid_ = ((o == option::info || o == option::go) && body_len_ < 6) ||
                 ((o == option::list_meta_context || o == option::set_meta_context) && body_len_ < 8);
      meta_stage_ = meta_stage::name_length;
      meta_target_.reset();
      meta_matched_ = 0;
      meta_queries_ = queries_left_ = 0;
      phase_ = rx::option_body;
    }
    n += parse_option_body(in.subspan(n));
    if (body_pos_ < body_len_) return n;
    const auto o = static_cast<option>(opt_);
    if ((o == option::list_meta_context || o == option::set_meta_context) && meta_stage_ != meta_stage::done)
      invalid_ = true;  // the data ended inside a field: lengths that lie
    phase_ = rx::header;
    answer_pending_ = true;
    ev = answer();
    return n;
  }

  /// Streams option data through a few bytes of state: only an export name is kept.
  std::size_t parse_option_body(bytes_view in) noexcept {
    const auto o = static_cast<option>(opt_);
    const bool info_like = o == option::info || o == option::go;
    std::size_t n = 0;
    while (n < in.size() && body_pos_ < body_len_) {
      const bytes_view rest = in.subspan(n, static_cast<std::size_t>(std::min<std::uint64_t>(in.size() - n, body_len_ - body_pos_)));
      std::size_t took = 0;
      if (o == option::export_name) {
        took = name_.fill(rest, body_len_);
      } else if ((o == option::list_meta_context || o == option::set_meta_context) && !invalid_) {
        took = parse_meta_body(rest, o == option::list_meta_context);
      } else if (!info_like || invalid_) {
        took = rest.size();  // data nobody needs: consumed and dropped
      } else if (body_pos_ < 4) {
        took = field_.fill(rest, 4);
        if (field_.size() == 4) {
          name_len_ = load_be<std::uint32_t>(field_.view().data());
          field_.clear();
          // Name length MUST fit the option (≤ length - 6) and strings are ≤ max_string.
          if (name_len_ > body_len_ - 6 || name_len_ > max_string) invalid_ = true;
        }
      } else if (body_pos_ < 4u + name_len_) {
        took = name_.fill(rest, name_len_);
      } else if (body_pos_ < 6u + name_len_) {
        took = field_.fill(rest, 2);
        if (field_.size() == 2) {
          info_count_ = load_be<std::uint16_t>(field_.view().data());
          field_.clear();
          if (std::uint64_t{body_len_} - 6 - name_len_ != 2u * info_count_) invalid_ = true;
        }
      } else {
        took = field_.fill(rest, 2);
        if (field_.size() == 2) {
          const std::uint16_t t = load_be<std::uint16_t>(field_.view().data());
          field_.clear();
          if (t < 32) info_requests_ |= 1u << t;  // unknown requests are ignored
        }
      }
      n += took;
      body_pos_ += static_cast<std::uint32_t>(took);
    }
    return n;
  }

  /// LIST_/SET_META_CONTEXT data: u32 name length, name, u32 query count, then per query a
  /// u32 length and the query. Queries are matched one at a time; nothing else is kept.
  std::size_t parse_meta_body(bytes_view rest, bool list) noexcept {
    const std::uint64_t remaining = std::uint64_t{body_len_} - body_pos_;  // including `rest`
    std::size_t took = 0;
    switch (meta_stage_) {
      case meta_stage::name_length:
      case meta_stage::count:
      case meta_stage::query_length: {
        took = field_.fill(rest, 4);
        if (field_.size() < 4) break;
        const std::uint32_t v = load_be<std::uint32_t>(field_.view().data());
        field_.clear();
        const std::uint64_t after = remaining - took;
        if (meta_stage_ == meta_stage::name_length) {
          name_len_ = v;
          if (v > max_string || std::uint64_t{v} + 4 > after) invalid_ = true;
          meta_stage_ = v ? meta_stage::name : meta_stage::count;
          if (!v) meta_target_ = find_export({});
        } else if (meta_stage_ == meta_stage::count) {
          meta_queries_ = queries_left_ = v;
          meta_stage_ = v ? meta_stage::query_length : meta_stage::done;
          if (!v && after != 0) invalid_ = true;
        } else {
          query_len_ = v;
          if (v > max_string || v > after) invalid_ = true;
          meta_stage_ = meta_stage::query;
          if (!v) finish_query(list, after);
        }
        break;
      }
      case meta_stage::name:
        took = name_.fill(rest, name_len_);
        if (name_.size() == name_len_) {
          meta_target_ = find_export(name_.view());
          name_.clear();  // the buffer now holds queries
          meta_stage_ = meta_stage::count;
        }
        break;
      case meta_stage::query:
        took = name_.fill(rest, query_len_);
        if (name_.size() == query_len_) finish_query(list, remaining - took);
        break;
      case meta_stage::done:
        invalid_ = true;  // data beyond the last query
        break;
    }
    return took;
  }

  void finish_query(bool list, std::uint64_t after) noexcept {
    meta_matched_ |= match_query(name_.view(), list);
    name_.clear();
    meta_stage_ = --queries_left_ ? meta_stage::query_length : meta_stage::done;
    if (meta_stage_ == meta_stage::done && after != 0) invalid_ = true;
  }

  /// Queues the answer to the option just read, if the outbox has room; else `blocked`.
  event answer() noexcept {
    const auto o = static_cast<option>(opt_);
    if (shutting_down_ && o != option::abort) {
      // EXPORT_NAME cannot carry an error: closing is its only refusal.
      if (o == option::export_name) return finish_answer(), fail(errc::export_name_unknown);
      return simple_answer(reply_type::err_shutdown, "server is shutting down");
    }
    switch (o) {
      case option::export_name: {
        if (extended_) return finish_answer(), fail(errc::export_name_after_extended_headers);
        meta_export_ = server_config::no_export;  // contexts are bound to GO, not EXPORT_NAME
        const auto idx = find_export(name_.view());
        // An EXPORT_NAME that cannot be satisfied can only be refused by closing.
        if (!idx) return finish_answer(), fail(errc::export_name_unknown);
        if (!out_.room_for(sizeof(export_name_reply))) return {.kind = event_kind::blocked};
        choose(*idx, false);
        out_.put_record(make_export_name_reply_short(neg_.export_size, neg_.transmission_flags));
        if (!no_zeroes_) out_.put_zeroes(124);
        finish_answer();
        move(server_trigger::export_chosen);
        return {.kind = event_kind::ready, .option = opt_};
      }
      case option::abort:
        // Data on ABORT is ignored; the ACK is still owed ("NBD_OPT_ABORT").
        if (!queue_option_reply(reply_type::ack, {})) return {.kind = event_kind::blocked};
        finish_answer();
        move(server_trigger::abort);
        return {.kind = event_kind::disconnected, .option = opt_};
      case option::list: return answer_list();
      case option::info:
      case option::go: return answer_info_or_go(o == option::go);
      case option::structured_reply:
        if (!cfg_.structured_replies) break;
        if (body_len_ != 0) return simple_answer(reply_type::err_invalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
        // [ext] Structured replies cannot replace extended headers once those are on.
        if (extended_) return simple_answer(reply_type::err_ext_header_reqd, "extended headers are in use");
        structured_ = true;
        return simple_answer(reply_type::ack, {});
      case option::extended_headers:
        if (!cfg_.extended_headers) break;
        if (body_len_ != 0) return simple_answer(reply_type::err_invalid, "NBD_OPT_EXTENDED_HEADERS takes no data");
        extended_ = structured_ = true;
        return simple_answer(reply_type::ack, {});
      case option::list_meta_context:
      case option::set_meta_context: return answer_meta_context(o == option::set_meta_context);
      default: break;
    }
    // STARTTLS (not in this release), PEEK_EXPORT (withdrawn), options switched off, and
    // unknown options: consumed, then ERR_UNSUP.
    return simple_answer(reply_type::err_unsup, "option not supported by this server");
  }

  // "NBD_OPT_LIST_META_CONTEXT" / "NBD_OPT_SET_META_CONTEXT": one NBD_REP_META_CONTEXT per
  // selected context (streamed as the outbox drains), then ACK.
  event answer_meta_context(bool set) noexcept {
    if (list_next_ == 0) {
      // SET replaces the earlier selection even when it fails.
      if (set) meta_selected_ = 0, meta_export_ = server_config::no_export;
      if (invalid_) return simple_answer(reply_type::err_invalid, "malformed meta context query");
      if (set && !structured_) return simple_answer(reply_type::err_invalid, "structured replies must come first");
      if (!meta_target_) return simple_answer(reply_type::err_unknown, "unknown export");
      // LIST with no queries lists everything; SET with none selects nothing.
      if (!set && meta_queries_ == 0) meta_matched_ = all_contexts();
    }
    while (list_next_ < cfg_.meta_contexts.size()) {
      const std::size_t i = list_next_;
      if (meta_matched_ & (1u << i)) {
        const std::string_view name = cfg_.meta_contexts[i];
        if (!out_.room_for(sizeof(option_reply_header) + 4 + name.size())) return {.kind = event_kind::blocked};
        out_.put_record(make_option_reply_header(opt_, reply_type::meta_context,
                                                 static_cast<std::uint32_t>(4 + name.size())));
        std::array<std::byte, 4> id{};
        // LIST ids SHOULD be 0 and are disregarded; SET ids are the index of the context.
        store_be<std::uint32_t>(id.data(), set ? static_cast<std::uint32_t>(i) : 0u);
        out_.put(id);
        out_.put(as_bytes(name));
      }
      ++list_next_;
    }
    if (!queue_option_reply(reply_type::ack, {})) return {.kind = event_kind::blocked};
    if (set) meta_selected_ = meta_matched_, meta_export_ = *meta_target_;
    finish_answer();
    return {.kind = event_kind::option_answered, .option = opt_, .reply = reply_type::ack};
  }

  [[nodiscard]] std::uint32_t all_contexts() const noexcept {
    const std::size_t n = cfg_.meta_contexts.size();
    return n >= 32 ? ~0u : (1u << n) - 1;
  }

  /// Which offered contexts a query names ("Metadata querying"): the exact name; for LIST
  /// also a "namespace:" or "namespace:prefix:" wildcard. Other queries select nothing.
  [[nodiscard]] std::uint32_t match_query(bytes_view q, bool list) const noexcept {
    const std::string_view query = as_chars(q);
    std::uint32_t m = 0;
    for (std::size_t i = 0; i < cfg_.meta_contexts.size(); ++i) {
      const std::string_view name = cfg_.meta_contexts[i];
      const bool wildcard = list && !query.empty() && query.back() == ':' && name.starts_with(query);
      if (name == query || wildcard) m |= 1u << i;
    }
    return m;
  }

  event simple_answer(reply_type t, std::string_view message) noexcept {
    if (!queue_option_reply(t, as_bytes(message))) return {.kind = event_kind::blocked};
    finish_answer();
    return {.kind = event_kind::option_answered, .option = opt_, .reply = t};
  }

  void finish_answer() noexcept {
    answer_pending_ = false;
    list_next_ = 0;
  }

  // "NBD_OPT_LIST": one NBD_REP_SERVER per export, streamed as the outbox drains, then ACK.
  event answer_list() noexcept {
    if (body_len_ != 0) return simple_answer(reply_type::err_invalid, "NBD_OPT_LIST takes no data");
    while (list_next_ < cfg_.exports.size()) {
      const export_config& e = cfg_.exports[list_next_];
      const std::size_t len = 4 + e.name.size() + e.description.size();
      if (!out_.room_for(sizeof(option_reply_header) + len)) return {.kind = event_kind::blocked};
      out_.put_record(make_option_reply_header(opt_, reply_type::server, static_cast<std::uint32_t>(len)));
      std::array<std::byte, 4> nl{};
      store_be<std::uint32_t>(nl.data(), static_cast<std::uint32_t>(e.name.size()));
      out_.put(nl);
      out_.put(as_bytes(e.name));
      out_.put(as_bytes(e.description));
      ++list_next_;
    }
    return simple_answer(reply_type::ack, {});
  }

  // "NBD_OPT_INFO" / "NBD_OPT_GO": INFO items, then ACK or an error.
  event answer_info_or_go(bool go) noexcept {
    if (invalid_) return simple_answer(reply_type::err_invalid, "malformed NBD_OPT_INFO/GO data");
    const auto idx = find_export(name_.view());
    if (!idx) return simple_answer(reply_type::err_unknown, "unknown export");
    const export_config& e = cfg_.exports[*idx];
    const bool want_name = info_requests_ & (1u << static_cast<unsigned>(info_type::name));
    const bool want_desc = (info_requests_ & (1u << static_cast<unsigned>(info_type::description))) && !e.description.empty();
    const bool want_bs = info_requests_ & (1u << static_cast<unsigned>(info_type::block_size));
    // A server with constraints beyond the defaults MAY insist the client asks for them.
    const bool need_bs = go && !want_bs && e.block_size.minimum > 1;
    const std::size_t need = 4 * sizeof(option_reply_header) + sizeof(info_export_payload) +
                             sizeof(info_block_size_payload) + 4 + e.name.size() + e.description.size() + 64;
    if (!out_.room_for(need)) return {.kind = event_kind::blocked};
    const std::uint16_t tflags = flags_of(e);
    put_info(make_info_export(e.size, tflags));
    if (want_name) put_info_string(info_type::name, e.name);
    if (want_desc) put_info_string(info_type::description, e.description);
    // Always sent: harmless when not asked for, and it precedes ERR_BLOCK_SIZE_REQD as it SHOULD.
    put_info(make_info_block_size(e.block_size.minimum, e.block_size.preferred, e.block_size.maximum));
    if (need_bs) return simple_answer(reply_type::err_block_size_reqd, "request NBD_INFO_BLOCK_SIZE");
    (void)queue_option_reply(reply_type::ack, {});  // room was reserved above
    finish_answer();
    if (!go) return {.kind = event_kind::option_answered, .option = opt_, .reply = reply_type::ack};
    choose(*idx, want_bs);
    move(server_trigger::export_chosen);
    return {.kind = event_kind::ready, .option = opt_};
  }

  template <class Payload>
  void put_info(const Payload& p) noexcept {
    out_.put_record(make_option_reply_header(opt_, reply_type::info, sizeof(Payload)));
    out_.put_record(p);
  }
  void put_info_string(info_type t, std::string_view s) noexcept {
    out_.put_record(make_option_reply_header(opt_, reply_type::info, static_cast<std::uint32_t>(2 + s.size())));
    std::array<std::byte, 2> type{};
    store_be<std::uint16_t>(type.data(), static_cast<std::uint16_t>(t));
    out_.put(type);
    out_.put(as_bytes(s));
  }

  [[nodiscard]] bool queue_option_reply(reply_type t, bytes_view data) noexcept {
    if (!out_.room_for(sizeof(option_reply_header) + data.size())) return false;
    out_.put_record(make_option_reply_header(opt_, t, static_cast<std::uint32_t>(data.size())));
    out_.put(data);
    return true;
  }

  // ---- transmission -----------------------------------------------------------------------

  [[nodiscard]] bool legacy() const noexcept { return cfg_.style == handshake_style::legacy_1997; }

  /// Bytes of one reply header: simple (16; the 1997 reply is 16 too), compact structured
  /// (20) or [ext] extended (32) chunk header.
  [[nodiscard]] std::size_t chunk_header_size() const noexcept {
    return extended_ ? sizeof(extended_reply_header) : sizeof(structured_reply_header);
  }

  /// The outbox room a request holds from acceptance until its reply is complete: what the
  /// reply's last messages need (see "Output contract" above). At most max_reply_reserve().
  [[nodiscard]] std::size_t reply_reserve(const request& r) const noexcept {
    const std::size_t simple = legacy() ? sizeof(legacy_1997_reply) : sizeof(simple_reply_header);
    if (!structured_replies_on()) return simple;
    if (r.cmd() == command::read) return std::max(final_chunk_size(), 2 * (chunk_header_size() + 8));
    if (r.cmd() == command::block_status) return neg_.meta_context_count * block_status_reserve() + final_chunk_size();
    return std::max(final_chunk_size(), simple);
  }
  /// The largest chunk that can end any reply without data: an ERROR_OFFSET chunk without a
  /// message (a NONE chunk, an OFFSET_HOLE chunk and a data chunk's header are smaller).
  [[nodiscard]] std::size_t final_chunk_size() const noexcept {
    return chunk_header_size() + sizeof(error_chunk_prefix) + 8;
  }
  /// One status chunk with one descriptor.
  [[nodiscard]] std::size_t block_status_reserve() const noexcept {
    return chunk_header_size() + (extended_ ? 8 + sizeof(block_descriptor_ext) : 4 + sizeof(block_descriptor));
  }
  [[nodiscard]] std::size_t max_reply_reserve() const noexcept {
    return std::max(reply_reserve(request{.type = static_cast<std::uint16_t>(command::read)}),
                    reply_reserve(request{.type = static_cast<std::uint16_t>(command::block_status)}));
  }
  /// Payload marks a reply holds: READ data in one chunk, or two when a compact chunk
  /// cannot carry it all.
  [[nodiscard]] std::size_t reply_marks(const request& r) const noexcept {
    if (r.cmd() != command::read) return 0;
    return !extended_ && structured_replies_on() && r.length > max_compact_chunk_data ? 2 : 1;
  }

  /// Room for the next request's reservation: table space, outbox bytes and marks beyond
  /// what the requests in flight hold.
  [[nodiscard]] bool can_accept() noexcept {
    return !requests_.full() && out_.room_for(reserved_ + max_reply_reserve(), reserved_marks_ + 2);
  }

  /// Room a chunk of `s` may use now: the room nobody holds, plus what `s` holds if the
  /// chunk ends the reply (a chunk that does not end it leaves the final message's room).
  [[nodiscard]] std::size_t chunk_room(const detail::request_table::slot& s, bool done) const noexcept {
    const std::size_t free = out_.free_space() > reserved_ ? out_.free_space() - reserved_ : 0;
    const std::size_t keep = done ? 0 : final_chunk_keep(s);
    return free + (s.reserve > keep ? s.reserve - keep : 0);
  }
  /// What a slot keeps back for the rest of its reply while sending a chunk that does not
  /// end it: a status chunk for each context still to answer after this one, and a final chunk.
  [[nodiscard]] std::size_t final_chunk_keep(const detail::request_table::slot& s) const noexcept {
    const std::size_t contexts = s.contexts_left > 1 ? (s.contexts_left - 1u) * block_status_reserve() : 0;
    return std::min<std::size_t>(s.reserve, contexts + final_chunk_size());
  }

  /// Checks and takes room for `bytes` and `marks` of a chunk of `s`; the slot's reservation
  /// shrinks to what the rest of its reply keeps. False (nothing changed) if it does not fit.
  [[nodiscard]] bool take_room(detail::request_table::slot& s, std::size_t bytes, std::size_t marks, bool done) noexcept {
    const std::size_t keep = done ? 0 : final_chunk_keep(s);
    const std::size_t keep_marks = done || s.req.cmd() != command::read ? 0 : 1;
    const std::size_t others = reserved_ - s.reserve, other_marks = reserved_marks_ - s.reserve_marks;
    if (!out_.room_for(others + keep + bytes, other_marks + keep_marks + marks)) return false;
    reserved_ = others + keep;
    reserved_marks_ = other_marks + keep_marks;
    s.reserve = static_cast<std::uint16_t>(keep);
    s.reserve_marks = static_cast<std::uint8_t>(keep_marks);
    return true;
  }

  /// The reply of `s` is complete: its slot and what it still held are released.
  void finish(detail::request_table::slot& s) noexcept {
    reserved_ -= s.reserve;
    reserved_marks_ -= s.reserve_marks;
    requests_.remove(s);
  }

  std::size_t on_request(bytes_view in, event& ev) noexcept {
    if (phase_ == rx::payload || phase_ == rx::discard) return on_payload(in, ev);
    // The 1997 client matches replies in request order: one request at a time.
    if (legacy() && requests_.size() != 0) {
      if (!in.empty()) ev = {.kind = event_kind::blocked};
      return 0;
    }
    // Backpressure: a request is read only once its reply's room can be reserved.
    if (stash_.size() == 0 && !can_accept()) {
      if (!in.empty()) ev = {.kind = event_kind::blocked};
      return 0;
    }
    // The magic says which framing: the 1997 one, compact, or [ext] extended, and only the
    // negotiated one is accepted ("Request message").
    const std::uint32_t expected = legacy() ? magic::legacy_1997_request
                                   : extended_ ? magic::extended_request
                                               : magic::request;
    const std::size_t size = legacy() ? sizeof(legacy_1997_request)
                             : extended_ ? sizeof(extended_request_header)
                                         : sizeof(request_header);
    // A whole header in the input is read in place. A split one is stashed: 4 bytes first, so
    // that a bad magic is refused as soon as it arrives, then the rest.
    const bool in_place = stash_.size() == 0 && in.size() >= size;
    std::size_t n = in_place ? 4 : stash_.fill(in, 4);
    if (!in_place && stash_.size() < 4) return n;
    if (load_be<std::uint32_t>(in_place ? in.data() : stash_.view().data()) != expected)
      return ev = fail(errc::bad_request_magic), n;
    bytes_view h;
    if (in_place) {
      h = in.first(size);
      n = size;
    } else {
      n += stash_.fill(in.subspan(n), size);
      if (stash_.size() < size) return n;
      h = stash_.view();
    }
    request r{};
    std::uint64_t payload = 0;
    bool payload_len_misused = false;
    if (legacy()) {
      using rec = legacy_1997_request;
      const record_view<rec> v{h};
      const std::uint32_t type = v.get(&rec::type);
      // Types other than READ and WRITE did not exist; report them as an unknown command.
      r = {v.get(&rec::handle), static_cast<std::uint16_t>(type <= 1 ? type : 0xffffu), 0, v.get(&rec::from),
           v.get(&rec::length)};
      payload = r.payload_length();
    } else if (extended_) {
      using rec = extended_request_header;
      const record_view<rec> v{h};
      r = {v.get(&rec::cookie), v.get(&rec::type), v.get(&rec::flags), v.get(&rec::offset), v.get(&rec::length)};
      // [ext] PAYLOAD_LEN: the length counts payload bytes that follow. WRITE MUST use it;
      // on any other command (no BLOCK_STATUS payloads are advertised) the payload is
      // consumed and the request refused.
      if (r.flags & command_flag::payload_len) {
        payload = r.length;
        r.flags = static_cast<std::uint16_t>(r.flags & ~command_flag::payload_len);
        payload_len_misused = r.cmd() != command::write;
      } else {
        payload_len_misused = r.cmd() == command::write;
      }
    } else {
      using rec = request_header;
      const record_view<rec> v{h};
      r = {v.get(&rec::cookie), v.get(&rec::type), v.get(&rec::flags), v.get(&rec::offset), v.get(&rec::length)};
      payload = r.payload_length();
    }
    stash_.clear();
    ev = on_request_header(r, payload, payload_len_misused);
    return n;
  }

  event on_request_header(const request& r, std::uint64_t payload, bool payload_len_misused) noexcept {
    if (r.cmd() == command::disc && !legacy()) {
      // "NBD_CMD_DISC": no reply; stop reading. Requests in flight are still answered.
      move(server_trigger::disc);
      return {.kind = event_kind::disconnected, .req = r};
    }
    // A payload beyond both the advertised maximum and the 32 MiB every server should accept
    // is treated as a denial of service (checklist 2.9) rather than read and dropped.
    if (payload > std::max<std::uint64_t>(default_max_payload, neg_.block_size.maximum))
      return fail(extended_ ? errc::extended_payload_too_large : errc::write_payload_too_large);
    const detail::verdict v = shutting_down_        ? detail::verdict::shutting_down
                              : payload_len_misused ? detail::verdict::flag_not_applicable
                                                    : detail::check_request(r, neg_, true);
    payload_ = {r.cookie, r.offset, payload};
    // The request holds its reply's room from now on (can_accept() made sure it fits).
    auto& s = requests_.add(r);
    s.reserve = static_cast<std::uint16_t>(reply_reserve(r));
    s.reserve_marks = static_cast<std::uint8_t>(reply_marks(r));
    s.contexts_left = static_cast<std::uint8_t>(r.cmd() == command::block_status ? neg_.meta_context_count : 0);
    reserved_ += s.reserve;
    reserved_marks_ += s.reserve_marks;
    if (v != detail::verdict::ok) {
      phase_ = payload ? rx::discard : rx::header;
      const nbd_error status = detail::to_nbd_error(v);
      queue_whole_reply(s, status, {});
      finish(s);
      return {.kind = event_kind::request_refused, .req = r, .status = status};
    }
    phase_ = payload ? rx::payload : rx::header;
    current_ = r;
    return {.kind = event_kind::request, .req = r, .remaining = payload};
  }

  std::size_t on_payload(bytes_view in, event& ev) noexcept {
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), payload_.length));
    if (take == 0) return 0;
    payload_.offset += take;
    payload_.length -= take;
    if (phase_ == rx::payload) {
      const auto* s = requests_.find(current_);
      ev = {.kind = event_kind::payload, .req = current_, .offset = payload_.offset - take, .data = in.first(take),
            .tag = s ? s->tag : 0, .remaining = payload_.length};
    }
    if (payload_.length == 0) phase_ = rx::header;
    return take;
  }

  [[nodiscard]] bool structured_replies_on() const noexcept { return neg_.structured_replies; }

  /// The slot of a request a reply call names: none once the connection failed (there is
  /// nobody to answer), or for a request not in flight.
  [[nodiscard]] detail::request_table::slot* answerable(const request& r) noexcept {
    return state_ == server_state::failed ? nullptr : requests_.find(r);
  }
  [[nodiscard]] errc answer_error() const noexcept {
    return state_ == server_state::failed ? errc::not_in_transmission : errc::unknown_request;
  }

  [[nodiscard]] errc check_chunk(const detail::request_table::slot* s, command c, std::uint64_t offset,
                                 std::uint64_t length) const noexcept {
    if (!structured_replies_on()) return errc::structured_replies_off;
    if (s->req.cmd() != c) return errc::command_mismatch;
    if (length == 0) return errc::zero_length;
    if (offset < s->req.offset || !range_within(offset - s->req.offset, length, s->req.length))
      return errc::request_out_of_range;
    return errc::ok;
  }

  /// A whole reply in one message, within the room `s` holds (a message only takes what is
  /// left). Simple replies serve everything without structured replies; with them only a
  /// success without data (never anything for READ), and with extended headers nothing
  /// ("Structured reply chunk message", [ext]).
  void queue_whole_reply(detail::request_table::slot& s, nbd_error e, std::string_view message) noexcept {
    const request& r = s.req;
    const bool ok = e == nbd_error::ok;
    const bool data = r.cmd() == command::read && ok && r.length != 0;
    const bool chunks = extended_ || (structured_replies_on() && (r.cmd() == command::read || !ok));
    if (!chunks) {
      (void)take_room(s, legacy() ? sizeof(legacy_1997_reply) : sizeof(simple_reply_header), data ? 1 : 0, true);
      if (legacy())
        out_.put_record(make_legacy_1997_reply(r.cookie, static_cast<std::uint32_t>(e)));
      else
        out_.put_record(make_simple_reply(e, r.cookie));
      if (data) out_.put_mark({r.cookie, r.offset, r.length});
      return;
    }
    if (!ok) return queue_error_chunk(s, e, message, std::nullopt, true);
    if (data) {
      // A compact chunk's 32-bit length holds at most 2^32 - 9 data bytes: "a read of more
      // than 2^32 - 8 bytes MUST be split" without extended headers (DF: at most 65,536
      // bytes need be served unsplit, and a larger DF read is never split here either).
      const std::uint64_t first = !extended_ && r.length > max_compact_chunk_data ? max_compact_chunk_data & ~std::uint64_t{4095}
                                                                                    : r.length;
      const std::size_t pieces = first == r.length ? 1 : 2;
      (void)take_room(s, pieces * (chunk_header_size() + 8), pieces, true);
      std::array<std::byte, 8> off{};
      store_be<std::uint64_t>(off.data(), r.offset);
      put_chunk(r, chunk_type::offset_data, first == r.length, off, payload_span{r.cookie, r.offset, first});
      if (first == r.length) return;
      store_be<std::uint64_t>(off.data(), r.offset + first);
      put_chunk(r, chunk_type::offset_data, true, off, payload_span{r.cookie, r.offset + first, r.length - first});
      return;
    }
    (void)take_room(s, chunk_header_size(), 0, true);
    put_chunk(r, chunk_type::none, true, {}, std::nullopt);
  }

  /// Data bytes one compact OFFSET_DATA chunk can carry (its length counts 8 offset bytes).
  static constexpr std::uint64_t max_compact_chunk_data = 0xffffffffu - 8;

  /// An error chunk; the caller made sure its fixed part fits. The message takes what room is
  /// left and is shortened at a UTF-8 character boundary when that is less than its length.
  void queue_error_chunk(detail::request_table::slot& s, nbd_error e, std::string_view message,
                         std::optional<std::uint64_t> offset, bool done) noexcept {
    const std::size_t fixed = chunk_header_size() + sizeof(error_chunk_prefix) + (offset ? 8 : 0);
    const std::size_t room = chunk_room(s, done);
    if (message.size() > room - std::min(room, fixed)) message = detail::utf8_prefix(message, room - std::min(room, fixed));
    (void)take_room(s, fixed + message.size(), 0, done);
    put_chunk_header(s.req, offset ? chunk_type::error_offset : chunk_type::error, done,
                     fixed - chunk_header_size() + message.size());
    error_chunk_prefix p{};
    p.error.set(static_cast<std::uint32_t>(e));
    p.message_length.set(static_cast<std::uint16_t>(message.size()));
    out_.put_record(p);
    out_.put(as_bytes(message));
    if (offset) {
      std::array<std::byte, 8> o{};
      store_be<std::uint64_t>(o.data(), *offset);
      out_.put(o);
    }
  }

  /// A chunk whose room was taken: header, fixed fields, and a payload mark for its data.
  void put_chunk(const request& r, chunk_type t, bool done, bytes_view fixed, std::optional<payload_span> data) noexcept {
    put_chunk_header(r, t, done, fixed.size() + (data ? data->length : 0));
    out_.put(fixed);
    if (data) out_.put_mark(*data);
  }

  /// A structured chunk header, or [ext] an extended one (whose offset is the request's).
  void put_chunk_header(const request& r, chunk_type t, bool done, std::uint64_t length) noexcept {
    const std::uint16_t flags = done ? reply_flag::done : 0;
    if (extended_)
      out_.put_record(make_extended_reply(flags, t, r.cookie, r.offset, length));
    else
      out_.put_record(make_structured_reply(flags, t, r.cookie, static_cast<std::uint32_t>(length)));
  }
  server_config cfg_;
  server_state state_ = server_state::start;
  errc error_ = errc::ok;
  nbdwire::negotiated neg_{};
  bool no_zeroes_ = false, shutting_down_ = false;
  bool structured_ = false, extended_ = false;
  // metadata contexts
  enum class meta_stage : std::uint8_t { name_length, name, count, query_length, query, done };
  meta_stage meta_stage_ = meta_stage::name_length;
  std::optional<std::size_t> meta_target_{};  ///< the export a meta-context option names
  std::uint32_t meta_matched_ = 0, meta_queries_ = 0, queries_left_ = 0, query_len_ = 0;
  std::uint32_t meta_selected_ = 0;            ///< SET_META_CONTEXT's selection...
  std::size_t meta_export_ = server_config::no_export;  ///< ...and the export it is for
  // option in progress
  std::uint32_t opt_ = 0;
  std::uint32_t body_len_ = 0, body_pos_ = 0, name_len_ = 0, options_seen_ = 0;
  std::uint16_t info_count_ = 0;
  std::uint32_t info_requests_ = 0;
  bool invalid_ = false, answer_pending_ = false;
  std::size_t list_next_ = 0;
  // transmission
  rx phase_ = rx::header;
  request current_{};  ///< the request whose WRITE payload is arriving
  payload_span payload_{};
  detail::request_table requests_{};
  std::size_t reserved_ = 0, reserved_marks_ = 0;  ///< outbox room held by requests_ (see reply_reserve)
  bool terminal_reported_ = false;
  detail::stash stash_{};
  detail::body_buffer<4> field_{};
  detail::body_buffer<max_string> name_{};
  detail::outbox out_{};
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
