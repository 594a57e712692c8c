// SPDX-License-Identifier: MIT
// nbdwire: what a machine reports. Both machines return the same small types: a
// `receive_result` (bytes consumed + one event), the `negotiated` value that ends a
// handshake, and the `request` that names one transmission request.
#pragma once

#include <array>    // std::array: negotiated contexts
#include <cstddef>  // std::size_t
#include <cstdint>  // fixed-width integers
#include <optional> // std::optional: output_piece payloads

#include "nbdwire/bytes.hpp"
#include "nbdwire/config.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/errors.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// NBD_INFO_BLOCK_SIZE values ("Size constraints"). The defaults are what a server SHOULD
/// support when it advertises nothing.
struct block_size_constraints {
  std::uint32_t minimum = 1;
  std::uint32_t preferred = 4096;
  std::uint32_t maximum = default_max_payload;  ///< maximum payload; 0xffffffff = no fixed limit
  friend constexpr bool operator==(const block_size_constraints&, const block_size_constraints&) = default;
};

/// The validity rules of "Size constraints": minimum a power of two ≤ 64 KiB, preferred a
/// power of two ≥ max(minimum, 512), maximum ≥ preferred.
[[nodiscard]] constexpr bool valid(const block_size_constraints& b) noexcept {
  return is_power_of_two(b.minimum) && b.minimum <= 65536 && is_power_of_two(b.preferred) &&
         b.preferred >= b.minimum && b.preferred >= 512 && b.maximum >= b.preferred;
}

/// One negotiated metadata context ("Metadata querying"): the id the server chose, and the
/// index of the caller's configured context name it answers (no_query when the server
/// selected it through a wildcard query).
struct meta_context_binding {
  static constexpr std::uint32_t no_query = 0xffffffffu;
  std::uint32_t id = 0;
  std::uint32_t query_index = no_query;
  friend constexpr bool operator==(const meta_context_binding&, const meta_context_binding&) = default;
};

/// The value a handshake ends with and transmission is built from: everything both sides
/// agreed on. A server can also hand a connection over in this state (the Linux kernel
/// client takes over after the handshake), and a client can be created directly from it.
struct negotiated {
  handshake_style style = handshake_style::fixed_newstyle;
  std::uint64_t export_size = 0;
  std::uint16_t transmission_flags = transmission_flag::has_flags;
  /// The block sizes in force: advertised ones, else the defaults.
  block_size_constraints block_size{};
  /// True when NBD_INFO_BLOCK_SIZE was exchanged during GO, which binds the client to it.
  bool block_size_advertised = false;
  bool structured_replies = false;  ///< NBD_OPT_STRUCTURED_REPLY acknowledged (implied by extended headers)
  bool extended_headers = false;    ///< [ext] NBD_OPT_EXTENDED_HEADERS acknowledged
  /// Contexts selected by the last SET_META_CONTEXT for the export in use; BLOCK_STATUS
  /// needs at least one.
  std::array<meta_context_binding, max_meta_contexts> meta_contexts{};
  std::size_t meta_context_count = 0;
  /// Server only: index of the export chosen from server_config::exports.
  std::size_t export_index = 0;
  /// The handshake (from the option after STARTTLS on) ran over TLS: transmission must too.
  bool tls = false;

  [[nodiscard]] constexpr bool has(std::uint16_t tflag) const noexcept {
    return (transmission_flags & tflag) != 0;
  }
  [[nodiscard]] constexpr bool read_only() const noexcept { return has(transmission_flag::read_only); }
  [[nodiscard]] constexpr bool has_meta_context(std::uint32_t id) const noexcept {
    for (std::size_t i = 0; i < meta_context_count; ++i)
      if (meta_contexts[i].id == id) return true;
    return false;
  }
};

/// One transmission request as it travels: the fields of the request header. `type` keeps
/// the raw number so an unknown command can be reported as received.
struct request {
  std::uint64_t cookie = 0;
  std::uint16_t type = 0;
  std::uint16_t flags = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;

  [[nodiscard]] constexpr command cmd() const noexcept { return static_cast<command>(type); }
  /// Payload bytes that follow this request on the wire (WRITE data).
  [[nodiscard]] constexpr std::uint64_t payload_length() const noexcept {
    return cmd() == command::write ? length : 0;
  }
  friend constexpr bool operator==(const request&, const request&) = default;
};

/// Payload bytes one side owes the other: `length` bytes of export data starting at export
/// offset `offset`, for request `cookie`. Used for both directions:
/// - client::pending_payload() / server::pending_payload(): data the caller must send now
///   (WRITE data / READ reply data), straight from its own buffers;
/// - client::incoming_payload() / server::incoming_payload(): data that arrives next on the
///   wire, which the caller may read straight into its buffers.
struct payload_span {
  std::uint64_t cookie = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  /// The caller's tag of the request (client: given to submit(); server: set_tag()), so the
  /// caller finds its buffer without a lookup by cookie. 0 when none was given.
  std::uint64_t tag = 0;
  friend constexpr bool operator==(const payload_span&, const payload_span&) = default;
};

/// One piece of queued output, in wire order: `bytes` from the machine's outbox, then (if
/// set) `payload`, export data the caller sends from its own storage before the next piece.
/// A list of pieces maps onto one writev(); see send_plan in transfer.hpp.
struct output_piece {
  bytes_view bytes{};
  std::optional<payload_span> payload{};
};

enum class event_kind : std::uint8_t {
  need_more,        ///< every byte given was used (or none could be); feed more input
  blocked,          ///< input waits until the caller acts: drain output, or reply()
  // handshake
  greeting,         ///< client: newstyle greeting read; options may be sent (`flags`)
  export_listed,    ///< client: NBD_REP_SERVER (`data` = name, `text` = description)
  info,             ///< client: one NBD_REP_INFO item (`info`, and its fields)
  option_done,      ///< client: final ACK to an option other than GO/ABORT (`option`)
  option_refused,   ///< client: final error reply (`option`, `reply`, `data` = message)
  option_answered,  ///< server: an option was answered (`option`, `reply`)
  meta_context,     ///< client: NBD_REP_META_CONTEXT (`context_id`, `data` = name)
  ready,            ///< both: transmission begins; see negotiated()
  // transmission
  request,          ///< server: a valid request to carry out (`req`)
  request_refused,  ///< server: an invalid request, already answered with `status`
  payload,          ///< both: payload bytes for `req.cookie` at export `offset` (`data`)
  read_hole,        ///< client: `length` bytes at export `offset` read as zeroes (OFFSET_HOLE)
  extent,           ///< client: block status of `length` bytes at `offset` in `context_id` (`extent_flags`)
  error_chunk,      ///< client: the server reported `status` for `req` (`data` = message; `offset` if has_offset)
  reply,            ///< client: request `req` completed with `status`
  // end
  disconnected,     ///< both: soft disconnect (NBD_CMD_DISC or NBD_OPT_ABORT) completed
  closed,           ///< both: the peer closed at a clean boundary
  failed,           ///< both: terminal protocol error (`error`)
  // TLS
  start_tls,        ///< both: STARTTLS acknowledged (`option`). receive() stopped right after
                    ///< it: send pending_output() in plaintext, give the rest of the input to
                    ///< the TLS layer as its first bytes, handshake, then call tls_started()
};

[[nodiscard]] constexpr std::string_view to_string(event_kind k) noexcept {
  switch (k) {
    case event_kind::need_more: return "need_more";
    case event_kind::blocked: return "blocked";
    case event_kind::greeting: return "greeting";
    case event_kind::export_listed: return "export_listed";
    case event_kind::info: return "info";
    case event_kind::option_done: return "option_done";
    case event_kind::option_refused: return "option_refused";
    case event_kind::option_answered: return "option_answered";
    case event_kind::ready: return "ready";
    case event_kind::request: return "request";
    case event_kind::request_refused: return "request_refused";
    case event_kind::payload: return "payload";
    case event_kind::read_hole: return "read_hole";
    case event_kind::extent: return "extent";
    case event_kind::error_chunk: return "error_chunk";
    case event_kind::meta_context: return "meta_context";
    case event_kind::reply: return "reply";
    case event_kind::disconnected: return "disconnected";
    case event_kind::closed: return "closed";
    case event_kind::failed: return "failed";
    case event_kind::start_tls: return "start_tls";
  }
  return "unknown";
}

/// One event. A flat, trivially copyable record: `kind` says which fields mean something.
/// Spans point into the caller's input (payload) or into the machine's own string buffer
/// (names, descriptions, messages) and stay valid until the next call on the machine.
struct event {
  event_kind kind = event_kind::need_more;
  errc error = errc::ok;                  ///< failed
  std::uint32_t option = 0;               ///< option_* and info: the option concerned
  reply_type reply = reply_type::ack;     ///< option_refused / option_answered
  info_type info = info_type::export_info;///< info
  std::uint16_t flags = 0;                ///< greeting: handshake flags
  std::uint64_t export_size = 0;          ///< info(export_info)
  std::uint16_t transmission_flags = 0;   ///< info(export_info)
  block_size_constraints block_size{};    ///< info(block_size)
  nbdwire::request req{};                 ///< request, request_refused, reply, payload
  nbd_error status = nbd_error::ok;       ///< reply, request_refused
  std::uint64_t offset = 0;               ///< payload: export offset of data[0]; read_hole, extent
  bytes_view data{};                      ///< payload bytes, name, or message
  bytes_view text{};                      ///< description
  std::uint64_t length = 0;               ///< read_hole, extent
  std::uint32_t context_id = 0;           ///< meta_context, extent
  std::uint64_t extent_flags = 0;         ///< extent: status bits (base:allocation: state_flag)
  bool has_offset = false;                ///< error_chunk: `offset` is meaningful (ERROR_OFFSET)
  /// The caller's tag of the request this event is about (client: given to submit(); server:
  /// given to set_tag()), on request-scoped events: payload, read_hole, extent, error_chunk,
  /// reply. 0 when none was given.
  std::uint64_t tag = 0;
  /// request (server): WRITE payload bytes that follow the header; payload: bytes of the same
  /// payload still to come after `data`. 0 on the last piece: the payload is complete.
  std::uint64_t remaining = 0;

  /// True for the events after which the machine reads nothing more: disconnected, closed,
  /// failed. Each is reported once; receive() then drops its input and returns need_more.
  [[nodiscard]] constexpr bool terminal() const noexcept {
    return kind == event_kind::disconnected || kind == event_kind::closed || kind == event_kind::failed;
  }
};

/// One extent a server reports for BLOCK_STATUS (server::reply_block_status).
struct block_extent {
  std::uint64_t length = 0;
  std::uint64_t flags = 0;
};

/// What receive() returns: how many input bytes were used, and what happened. `consumed`
/// is meaningful with every kind, including failed; drop that many bytes before the next call.
struct receive_result {
  std::size_t consumed = 0;
  nbdwire::event ev{};

  /// The one loop condition: true when receive() has more to report from the same input.
  /// False on need_more (feed more input), blocked (drain output or answer requests first,
  /// then call again) and the terminal events (stop reading; close once output is drained).
  [[nodiscard]] constexpr bool call_again() const noexcept {
    return ev.kind != event_kind::need_more && ev.kind != event_kind::blocked && !ev.terminal();
  }
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
