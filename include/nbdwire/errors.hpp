// SPDX-License-Identifier: MIT
// nbdwire: typed errors. One enumerator per failure site, with a stable number that is never
// reused, a category, and a name. Fatal protocol errors put a machine in its terminal
// `failed` state; caller-misuse errors are returned from the call and change nothing.
#pragma once

#include <cstdint>      // std::uint16_t
#include <cstdlib>      // std::abort: result<T>::value() on an error, where there is no trap builtin
#include <string_view>  // names
#include <utility>      // std::move

#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

enum class errc : std::uint16_t {
  ok = 0,

  // -- the server broke the handshake rules (client side; checklist 3.2) ------------------
  bad_greeting_magic = 100,           ///< first 8 bytes are not NBDMAGIC
  bad_greeting_style = 101,           ///< second 8 bytes are neither oldstyle magic nor IHAVEOPT
  bad_option_reply_magic = 102,       ///< option reply header magic is wrong
  option_reply_wrong_option = 103,    ///< reply answers an option that is not outstanding
  option_reply_type_unexpected = 104, ///< reply type not allowed for the outstanding option
  ack_with_data = 105,                ///< NBD_REP_ACK carries data
  info_reply_too_short = 106,         ///< NBD_REP_INFO shorter than its 2-byte type
  info_export_bad_length = 107,       ///< NBD_INFO_EXPORT length is not 12
  info_block_size_bad_length = 108,   ///< NBD_INFO_BLOCK_SIZE length is not 14
  info_block_size_invalid = 109,      ///< block size constraints break "Size constraints"
  server_reply_bad_name_length = 110, ///< NBD_REP_SERVER name length runs past the reply
  reply_string_too_long = 111,        ///< a string in a reply exceeds max_string
  reply_string_contains_nul = 112,    ///< a name in a reply contains NUL ("Conventions")
  ack_without_export_info = 113,      ///< INFO/GO acknowledged without NBD_INFO_EXPORT
  meta_context_reply_too_short = 114, ///< NBD_REP_META_CONTEXT shorter than its id
  export_name_refused = 115,          ///< server closed the connection after EXPORT_NAME
  server_reply_too_long = 116,        ///< NBD_REP_SERVER longer than a name plus description
  unexpected_data = 117,              ///< bytes arrived while no reply was outstanding
  too_many_meta_contexts = 118,       ///< the server selected more than max_meta_contexts

  // -- the client broke the handshake rules (server side; checklist 3.1) ------------------
  bad_client_flags = 200,              ///< unknown client flag bits: MUST drop the connection
  client_no_zeroes_not_offered = 201,  ///< C_NO_ZEROES without the server's NO_ZEROES
  bad_option_magic = 202,              ///< option header magic is not IHAVEOPT
  option_length_exceeds_limit = 203,   ///< option data longer than the server's limit
  too_many_options = 204,              ///< more options than the server's budget
  export_name_unknown = 205,           ///< EXPORT_NAME for an export that does not exist
  export_name_too_long = 206,          ///< EXPORT_NAME longer than max_string
  option_requires_fixed_newstyle = 207,///< a non-fixed newstyle server got another option
  export_name_after_extended_headers = 208, ///< EXPORT_NAME after EXTENDED_HEADERS ([ext] MUST NOT)

  // -- the client broke the transmission rules (server side; checklist 3.3) ---------------
  bad_request_magic = 300,             ///< request magic wrong for the negotiated framing
  write_payload_too_large = 301,       ///< WRITE payload beyond what any server must accept

  // -- the server broke the transmission rules (client side; checklist 3.4) ---------------
  bad_reply_magic = 400,               ///< unknown reply magic
  reply_cookie_unknown = 401,          ///< reply to a cookie that is not in flight
  structured_reply_not_negotiated = 402,///< structured chunk although SR is off
  legacy_reply_out_of_order = 403,     ///< 1997 reply does not answer the oldest request
  chunk_type_unexpected = 404,         ///< known chunk type not valid for the command or the mode
  chunk_type_unknown = 405,            ///< unknown chunk type without the error bit: MUST disconnect
  chunk_length_invalid = 406,          ///< chunk length breaks its type's rule
  chunk_outside_request = 407,         ///< content, hole or error offset outside the request
  chunk_overlap = 408,                 ///< content chunk overlaps an earlier one
  none_chunk_without_done = 409,       ///< NBD_REPLY_TYPE_NONE without the DONE flag
  read_incomplete = 410,               ///< READ succeeded without covering the whole range
  df_multiple_chunks = 411,            ///< DF read answered with more than one content chunk
  error_chunk_zero_error = 412,        ///< error chunk whose error value is 0
  error_message_too_long = 413,        ///< error chunk message beyond its length or max_string
  block_status_unknown_context = 414,  ///< status chunk for a context id not negotiated
  block_status_duplicate_context = 415,///< two status chunks for one context in one reply
  block_status_missing_context = 416,  ///< success without a chunk for every context
  extent_length_zero = 417,            ///< block descriptor of length 0
  extent_req_one_violation = 418,      ///< REQ_ONE answered with more than one or a too long extent
  extent_past_request = 419,           ///< a descriptor follows extents that already cover the request
  reply_offset_mismatch = 420,         ///< [ext] reply header offset differs from the request's
  simple_reply_to_read = 421,          ///< simple reply to READ with structured replies on
  simple_reply_in_extended_mode = 422, ///< simple reply although extended headers are on
  too_many_extents = 423,              ///< more than max_extents_per_chunk descriptors
  reply_chunks_too_fragmented = 424,   ///< READ chunks need more than max_read_ranges ranges
  block_status_count_mismatch = 425,   ///< [ext] descriptor count differs from the length
  extended_payload_too_large = 302,    ///< [ext] PAYLOAD_LEN above the maximum payload: hard disconnect

  // -- the connection ended ----------------------------------------------------------------
  unexpected_eof = 500,                ///< the peer closed in the middle of a message
  eof_with_requests_in_flight = 501,   ///< the server closed with requests unanswered

  // -- the caller asked for something the protocol or the negotiation does not allow -------
  wrong_state = 600,                   ///< the call is not valid in the machine's state
  command_not_advertised = 601,        ///< the server did not advertise this command
  flag_not_advertised = 602,           ///< the server did not advertise this command flag
  flag_not_applicable = 603,           ///< the flag does not apply to this command
  request_out_of_range = 604,          ///< offset + length beyond the export
  request_misaligned = 605,            ///< not a multiple of the minimum block size
  payload_too_large = 606,             ///< above the negotiated maximum payload
  too_many_in_flight = 607,            ///< the cookie table is full
  outbox_full = 608,                   ///< drain pending_output() and retry
  zero_length = 609,                   ///< a zero-length request (behaviour differs between servers)
  read_only_export = 610,              ///< a write to a read-only export
  string_too_long = 611,               ///< a name or message longer than max_string
  option_needs_fixed_newstyle = 612,   ///< only EXPORT_NAME exists in non-fixed newstyle
  no_payload_due = 613,                ///< consume_payload() with no payload owed
  payload_overrun = 614,               ///< consume_payload() beyond the payload owed
  legacy_range_too_large = 615,        ///< 1997 framing has 32-bit offsets and lengths
  invalid_config = 616,                ///< the machine's configuration is inconsistent
  unknown_request = 617,               ///< reply() for a request that is not awaiting one
  length_too_large = 618,              ///< length does not fit the request form (32 bits compact)
  df_requires_one_chunk = 619,         ///< a DF read is answered by one data chunk covering it, with DONE
};

/// Who is at fault, and what a caller can do about it.
enum class error_category : std::uint8_t {
  none,            ///< errc::ok
  peer_violation,  ///< the peer broke the protocol: the connection is over
  peer_closed,     ///< the peer hung up at a point where that loses data
  caller_misuse,   ///< the call was refused; the machine is unchanged
  limit_exceeded,  ///< a configured bound was reached
  buffer_too_small ///< retry after draining output
};

[[nodiscard]] constexpr error_category category(errc e) noexcept {
  const auto v = static_cast<std::uint16_t>(e);
  if (v == 0) return error_category::none;
  switch (e) {
    case errc::reply_string_too_long:
    case errc::server_reply_too_long:
    case errc::option_length_exceeds_limit:
    case errc::too_many_options:
    case errc::export_name_too_long:
    case errc::write_payload_too_large:
    case errc::too_many_in_flight:
    case errc::payload_too_large:
    case errc::string_too_long:
    case errc::too_many_meta_contexts:
    case errc::error_message_too_long:
    case errc::too_many_extents:
    case errc::reply_chunks_too_fragmented:
    case errc::extended_payload_too_large:
      return error_category::limit_exceeded;
    case errc::outbox_full:
      return error_category::buffer_too_small;
    default:
      break;
  }
  if (v >= 600) return error_category::caller_misuse;
  if (v >= 500) return error_category::peer_closed;
  return error_category::peer_violation;
}

/// True for errors that end the connection (the machine is in its `failed` state).
[[nodiscard]] constexpr bool is_fatal(errc e) noexcept {
  const auto v = static_cast<std::uint16_t>(e);
  return v != 0 && v < 600;
}

[[nodiscard]] constexpr std::string_view to_string(errc e) noexcept {
  switch (e) {
#define NBDWIRE_ERRC_NAME(x) case errc::x: return #x;
    NBDWIRE_ERRC_NAME(ok)
    NBDWIRE_ERRC_NAME(bad_greeting_magic)
    NBDWIRE_ERRC_NAME(bad_greeting_style)
    NBDWIRE_ERRC_NAME(bad_option_reply_magic)
    NBDWIRE_ERRC_NAME(option_reply_wrong_option)
    NBDWIRE_ERRC_NAME(option_reply_type_unexpected)
    NBDWIRE_ERRC_NAME(ack_with_data)
    NBDWIRE_ERRC_NAME(info_reply_too_short)
    NBDWIRE_ERRC_NAME(info_export_bad_length)
    NBDWIRE_ERRC_NAME(info_block_size_bad_length)
    NBDWIRE_ERRC_NAME(info_block_size_invalid)
    NBDWIRE_ERRC_NAME(server_reply_bad_name_length)
    NBDWIRE_ERRC_NAME(reply_string_too_long)
    NBDWIRE_ERRC_NAME(reply_string_contains_nul)
    NBDWIRE_ERRC_NAME(ack_without_export_info)
    NBDWIRE_ERRC_NAME(meta_context_reply_too_short)
    NBDWIRE_ERRC_NAME(export_name_refused)
    NBDWIRE_ERRC_NAME(server_reply_too_long)
    NBDWIRE_ERRC_NAME(unexpected_data)
    NBDWIRE_ERRC_NAME(too_many_meta_contexts)
    NBDWIRE_ERRC_NAME(export_name_after_extended_headers)
    NBDWIRE_ERRC_NAME(extended_payload_too_large)
    NBDWIRE_ERRC_NAME(chunk_type_unexpected)
    NBDWIRE_ERRC_NAME(chunk_type_unknown)
    NBDWIRE_ERRC_NAME(chunk_length_invalid)
    NBDWIRE_ERRC_NAME(chunk_outside_request)
    NBDWIRE_ERRC_NAME(chunk_overlap)
    NBDWIRE_ERRC_NAME(none_chunk_without_done)
    NBDWIRE_ERRC_NAME(read_incomplete)
    NBDWIRE_ERRC_NAME(df_multiple_chunks)
    NBDWIRE_ERRC_NAME(error_chunk_zero_error)
    NBDWIRE_ERRC_NAME(error_message_too_long)
    NBDWIRE_ERRC_NAME(block_status_unknown_context)
    NBDWIRE_ERRC_NAME(block_status_duplicate_context)
    NBDWIRE_ERRC_NAME(block_status_missing_context)
    NBDWIRE_ERRC_NAME(extent_length_zero)
    NBDWIRE_ERRC_NAME(extent_req_one_violation)
    NBDWIRE_ERRC_NAME(extent_past_request)
    NBDWIRE_ERRC_NAME(reply_offset_mismatch)
    NBDWIRE_ERRC_NAME(simple_reply_to_read)
    NBDWIRE_ERRC_NAME(simple_reply_in_extended_mode)
    NBDWIRE_ERRC_NAME(too_many_extents)
    NBDWIRE_ERRC_NAME(reply_chunks_too_fragmented)
    NBDWIRE_ERRC_NAME(block_status_count_mismatch)
    NBDWIRE_ERRC_NAME(bad_client_flags)
    NBDWIRE_ERRC_NAME(client_no_zeroes_not_offered)
    NBDWIRE_ERRC_NAME(bad_option_magic)
    NBDWIRE_ERRC_NAME(option_length_exceeds_limit)
    NBDWIRE_ERRC_NAME(too_many_options)
    NBDWIRE_ERRC_NAME(export_name_unknown)
    NBDWIRE_ERRC_NAME(export_name_too_long)
    NBDWIRE_ERRC_NAME(option_requires_fixed_newstyle)
    NBDWIRE_ERRC_NAME(bad_request_magic)
    NBDWIRE_ERRC_NAME(write_payload_too_large)
    NBDWIRE_ERRC_NAME(bad_reply_magic)
    NBDWIRE_ERRC_NAME(reply_cookie_unknown)
    NBDWIRE_ERRC_NAME(structured_reply_not_negotiated)
    NBDWIRE_ERRC_NAME(legacy_reply_out_of_order)
    NBDWIRE_ERRC_NAME(unexpected_eof)
    NBDWIRE_ERRC_NAME(eof_with_requests_in_flight)
    NBDWIRE_ERRC_NAME(wrong_state)
    NBDWIRE_ERRC_NAME(command_not_advertised)
    NBDWIRE_ERRC_NAME(flag_not_advertised)
    NBDWIRE_ERRC_NAME(flag_not_applicable)
    NBDWIRE_ERRC_NAME(request_out_of_range)
    NBDWIRE_ERRC_NAME(request_misaligned)
    NBDWIRE_ERRC_NAME(payload_too_large)
    NBDWIRE_ERRC_NAME(too_many_in_flight)
    NBDWIRE_ERRC_NAME(outbox_full)
    NBDWIRE_ERRC_NAME(zero_length)
    NBDWIRE_ERRC_NAME(read_only_export)
    NBDWIRE_ERRC_NAME(string_too_long)
    NBDWIRE_ERRC_NAME(option_needs_fixed_newstyle)
    NBDWIRE_ERRC_NAME(no_payload_due)
    NBDWIRE_ERRC_NAME(payload_overrun)
    NBDWIRE_ERRC_NAME(legacy_range_too_large)
    NBDWIRE_ERRC_NAME(invalid_config)
    NBDWIRE_ERRC_NAME(unknown_request)
    NBDWIRE_ERRC_NAME(length_too_large)
    NBDWIRE_ERRC_NAME(df_requires_one_chunk)
#undef NBDWIRE_ERRC_NAME
  }
  return "unknown_error";
}

/// Ends the program on a contract violation. A trap instruction where the compiler has one:
/// unlike std::abort it needs nothing from the C library (newlib's abort pulls in signal
/// emulation and the heap on bare metal).
[[noreturn]] inline void contract_violation() noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_trap();
#else
  std::abort();
#endif
}

/// A value or an errc. C++20 has no std::expected; this one never throws and never
/// allocates. value() on an error is a contract violation and traps.
template <class T>
class [[nodiscard]] result {
 public:
  constexpr result(T v) noexcept : value_(std::move(v)) {}  // NOLINT: implicit by design
  constexpr result(errc e) noexcept : error_(e) {}          // NOLINT: implicit by design
  [[nodiscard]] constexpr bool has_value() const noexcept { return error_ == errc::ok; }
  constexpr explicit operator bool() const noexcept { return has_value(); }
  [[nodiscard]] constexpr errc error() const noexcept { return error_; }
  [[nodiscard]] constexpr const T& value() const noexcept {
    if (!has_value()) contract_violation();
    return value_;
  }
  [[nodiscard]] constexpr const T& operator*() const noexcept { return value(); }

 private:
  T value_{};
  errc error_ = errc::ok;
};

template <>
class [[nodiscard]] result<void> {
 public:
  constexpr result() noexcept = default;
  constexpr result(errc e) noexcept : error_(e) {}  // NOLINT: implicit by design
  [[nodiscard]] constexpr bool has_value() const noexcept { return error_ == errc::ok; }
  constexpr explicit operator bool() const noexcept { return has_value(); }
  [[nodiscard]] constexpr errc error() const noexcept { return error_; }

 private:
  errc error_ = errc::ok;
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
