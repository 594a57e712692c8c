// SPDX-License-Identifier: MIT
// nbdwire: typed errors. One enumerator per failure site, with a stable number that is never
// reused. NBDWIRE_ERRC_LIST below is the only place an error is described: its number, its
// category, whether it is fatal, and what it means; everything else is derived from it.
// Fatal errors put a machine in its terminal `failed` state; the others are returned from
// the call that was refused and change nothing.
#pragma once

#include <cstdint>      // std::uint16_t
#include <cstdlib>      // std::abort: result<T>::value() on an error, where there is no trap builtin
#include <string_view>  // names
#include <utility>      // std::move

#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// Who is at fault, and what a caller can do about it.
enum class error_category : std::uint8_t {
  none,             ///< errc::ok
  peer_violation,   ///< the peer broke the protocol: the connection is over
  peer_closed,      ///< the peer hung up at a point where that loses data
  caller_misuse,    ///< the call was refused; the machine is unchanged (unless the code is fatal)
  limit_exceeded,   ///< a configured bound was reached
  buffer_too_small, ///< retry after draining output
  internal,         ///< nbdwire broke its own rules: please report it
  tls_policy,       ///< the peer cannot meet the TLS policy, or tried to get around it
};

// X(name, number, category, fatal, description). Numbers are grouped by who broke a rule;
// fatality is stated per error, not by range.
#define NBDWIRE_ERRC_LIST(X) \
  /* -- the server broke the handshake rules (client side; checklist 3.2) */ \
  X(bad_greeting_magic, 100, peer_violation, true, "first 8 bytes are not NBDMAGIC") \
  X(bad_greeting_style, 101, peer_violation, true, "second 8 bytes are neither oldstyle magic nor IHAVEOPT") \
  X(bad_option_reply_magic, 102, peer_violation, true, "option reply header magic is wrong") \
  X(option_reply_wrong_option, 103, peer_violation, true, "reply answers an option that is not outstanding") \
  X(option_reply_type_unexpected, 104, peer_violation, true, "reply type not allowed for the outstanding option") \
  X(ack_with_data, 105, peer_violation, true, "NBD_REP_ACK carries data") \
  X(info_reply_too_short, 106, peer_violation, true, "NBD_REP_INFO shorter than its 2-byte type") \
  X(info_export_bad_length, 107, peer_violation, true, "NBD_INFO_EXPORT length is not 12") \
  X(info_block_size_bad_length, 108, peer_violation, true, "NBD_INFO_BLOCK_SIZE length is not 14") \
  X(info_block_size_invalid, 109, peer_violation, true, "block size constraints break \"Size constraints\"") \
  X(server_reply_bad_name_length, 110, peer_violation, true, "NBD_REP_SERVER name length runs past the reply") \
  X(reply_string_too_long, 111, limit_exceeded, true, "a string in a reply exceeds max_string") \
  X(reply_string_contains_nul, 112, peer_violation, true, "a name in a reply contains NUL (\"Conventions\")") \
  X(ack_without_export_info, 113, peer_violation, true, "INFO/GO acknowledged without NBD_INFO_EXPORT") \
  X(meta_context_reply_too_short, 114, peer_violation, true, "NBD_REP_META_CONTEXT shorter than its id") \
  X(export_name_refused, 115, peer_violation, true, "server closed the connection after EXPORT_NAME") \
  X(server_reply_too_long, 116, limit_exceeded, true, "NBD_REP_SERVER longer than a name plus description") \
  X(unexpected_data, 117, peer_violation, true, "bytes arrived while no reply was outstanding") \
  X(too_many_meta_contexts, 118, limit_exceeded, true, "the server selected more than max_meta_contexts") \
  X(info_reply_too_long, 119, limit_exceeded, true, "NBD_REP_INFO longer than its type and a max_string payload") \
  /* -- the client broke the handshake rules (server side; checklist 3.1) */ \
  X(bad_client_flags, 200, peer_violation, true, "unknown client flag bits: MUST drop the connection") \
  X(client_no_zeroes_not_offered, 201, peer_violation, true, "C_NO_ZEROES without the server's NO_ZEROES") \
  X(bad_option_magic, 202, peer_violation, true, "option header magic is not IHAVEOPT") \
  X(option_length_exceeds_limit, 203, limit_exceeded, true, "option data longer than the server's limit") \
  X(too_many_options, 204, limit_exceeded, true, "more options than the server's budget") \
  X(export_name_unknown, 205, peer_violation, true, "EXPORT_NAME for an export that does not exist") \
  X(export_name_too_long, 206, limit_exceeded, true, "EXPORT_NAME longer than max_string") \
  X(option_requires_fixed_newstyle, 207, peer_violation, true, "a non-fixed newstyle server got another option") \
  X(export_name_after_extended_headers, 208, peer_violation, true, "EXPORT_NAME after EXTENDED_HEADERS ([ext] MUST NOT)") \
  /* -- the client broke the transmission rules (server side; checklist 3.3) */ \
  X(bad_request_magic, 300, peer_violation, true, "request magic wrong for the negotiated framing") \
  X(write_payload_too_large, 301, limit_exceeded, true, "WRITE payload beyond what any server must accept") \
  X(extended_payload_too_large, 302, limit_exceeded, true, "[ext] PAYLOAD_LEN above the maximum payload: hard disconnect") \
  /* -- the server broke the transmission rules (client side; checklist 3.4) */ \
  X(bad_reply_magic, 400, peer_violation, true, "unknown reply magic") \
  X(reply_cookie_unknown, 401, peer_violation, true, "reply to a cookie that is not in flight") \
  X(structured_reply_not_negotiated, 402, peer_violation, true, "structured chunk although SR is off") \
  X(legacy_reply_out_of_order, 403, peer_violation, true, "1997 reply does not answer the oldest request") \
  X(chunk_type_unexpected, 404, peer_violation, true, "known chunk type not valid for the command or the mode") \
  X(chunk_type_unknown, 405, peer_violation, true, "unknown chunk type without the error bit: MUST disconnect") \
  X(chunk_length_invalid, 406, peer_violation, true, "NBD_REPLY_TYPE_NONE chunk with a nonzero length") \
  X(chunk_outside_request, 407, peer_violation, true, "content, hole or error offset outside the request") \
  X(chunk_overlap, 408, peer_violation, true, "content chunk overlaps an earlier one") \
  X(none_chunk_without_done, 409, peer_violation, true, "NBD_REPLY_TYPE_NONE without the DONE flag") \
  X(read_incomplete, 410, peer_violation, true, "READ succeeded without covering the whole range") \
  X(df_multiple_chunks, 411, peer_violation, true, "DF read answered with more than one content chunk") \
  X(error_chunk_zero_error, 412, peer_violation, true, "error chunk whose error value is 0") \
  X(error_message_too_long, 413, limit_exceeded, true, "error chunk message beyond its length or max_string") \
  X(block_status_unknown_context, 414, peer_violation, true, "status chunk for a context id not negotiated") \
  X(block_status_duplicate_context, 415, peer_violation, true, "two status chunks for one context in one reply") \
  X(block_status_missing_context, 416, peer_violation, true, "success without a chunk for every context") \
  X(extent_length_zero, 417, peer_violation, true, "block descriptor of length 0") \
  X(extent_req_one_violation, 418, peer_violation, true, "REQ_ONE answered with more than one or a too long extent") \
  X(extent_past_request, 419, peer_violation, true, "a descriptor follows extents that already cover the request") \
  X(reply_offset_mismatch, 420, peer_violation, true, "[ext] reply header offset differs from the request's") \
  X(simple_reply_to_read, 421, peer_violation, true, "simple reply to READ with structured replies on") \
  X(simple_reply_in_extended_mode, 422, peer_violation, true, "simple reply although extended headers are on") \
  X(too_many_extents, 423, limit_exceeded, true, "more than max_extents_per_chunk descriptors") \
  X(reply_chunks_too_fragmented, 424, limit_exceeded, true, "READ chunks need more than max_read_ranges ranges") \
  X(block_status_count_mismatch, 425, peer_violation, true, "[ext] descriptor count differs from the length") \
  X(data_chunk_too_short, 427, peer_violation, true, "OFFSET_DATA chunk shorter than its offset plus one byte") \
  X(hole_chunk_bad_length, 428, peer_violation, true, "OFFSET_HOLE chunk length is not 12") \
  X(block_status_chunk_bad_length, 429, peer_violation, true, "BLOCK_STATUS chunk length is not its header plus whole descriptors") \
  X(error_chunk_too_short, 430, peer_violation, true, "ERROR chunk shorter than its error value and message length") \
  X(error_offset_chunk_too_short, 431, peer_violation, true, "ERROR_OFFSET chunk shorter than its fields and offset") \
  X(hole_size_zero, 432, peer_violation, true, "OFFSET_HOLE chunk with a hole size of 0") \
  X(error_chunk_too_long, 433, limit_exceeded, true, "error chunk longer than its error, a max_string message and an offset") \
  /* -- the connection ended */ \
  X(unexpected_eof, 500, peer_closed, true, "the peer closed in the middle of a message") \
  X(eof_with_requests_in_flight, 501, peer_closed, true, "the server closed with requests unanswered") \
  /* -- the caller asked for something the protocol or the negotiation does not allow */ \
  X(wrong_state, 600, caller_misuse, false, "retired: each call now names its own reason; kept so 600 is never reused") \
  X(command_not_advertised, 601, caller_misuse, false, "the server did not advertise this command") \
  X(flag_not_advertised, 602, caller_misuse, false, "the server did not advertise this command flag") \
  X(flag_not_applicable, 603, caller_misuse, false, "the flag does not apply to this command") \
  X(request_out_of_range, 604, caller_misuse, false, "offset + length beyond the export") \
  X(request_misaligned, 605, caller_misuse, false, "not a multiple of the minimum block size") \
  X(payload_too_large, 606, limit_exceeded, false, "above the negotiated maximum payload") \
  X(too_many_in_flight, 607, limit_exceeded, false, "the cookie table is full") \
  X(outbox_full, 608, buffer_too_small, false, "drain pending_output() and retry") \
  X(zero_length, 609, caller_misuse, false, "a zero-length request (behaviour differs between servers)") \
  X(read_only_export, 610, caller_misuse, false, "a write to a read-only export") \
  X(string_too_long, 611, limit_exceeded, false, "a name or message longer than max_string") \
  X(option_needs_fixed_newstyle, 612, caller_misuse, false, "only EXPORT_NAME exists in non-fixed newstyle") \
  X(no_payload_due, 613, caller_misuse, false, "consume_payload() with no payload owed") \
  X(payload_overrun, 614, caller_misuse, false, "consume_payload() beyond the payload owed") \
  X(legacy_range_too_large, 615, caller_misuse, false, "1997 framing has 32-bit offsets and lengths") \
  X(invalid_config, 616, caller_misuse, true, "the configuration or hand-over state given to the constructor is inconsistent: the machine is failed from the start") \
  X(unknown_request, 617, caller_misuse, false, "reply() for a request that is not awaiting one") \
  X(length_too_large, 618, caller_misuse, false, "length does not fit the request form (32 bits compact)") \
  X(df_requires_one_chunk, 619, caller_misuse, false, "a DF read is answered by one data chunk covering it, with DONE") \
  X(not_negotiating, 620, caller_misuse, false, "an option call while the handshake is not waiting for one") \
  X(export_name_with_extended_headers, 621, caller_misuse, false, "EXPORT_NAME is forbidden once extended headers are on ([ext])") \
  X(not_in_transmission, 622, caller_misuse, false, "a request or reply call outside the transmission phase") \
  X(server_is_shutting_down, 623, caller_misuse, false, "no new request after the server answered NBD_ESHUTDOWN") \
  X(disc_needs_disconnect, 624, caller_misuse, false, "NBD_CMD_DISC is sent with disconnect(), not submit()") \
  X(block_status_needs_chunks, 625, caller_misuse, false, "a successful BLOCK_STATUS is answered with reply_block_status()") \
  X(context_not_negotiated, 626, caller_misuse, false, "reply_block_status() for a context that was not negotiated") \
  X(command_mismatch, 627, caller_misuse, false, "a chunk call for a request of another command") \
  X(structured_replies_off, 628, caller_misuse, false, "a chunk call on a connection without structured replies") \
  X(error_chunk_needs_error, 629, caller_misuse, false, "reply_error_chunk() with nbd_error::ok") \
  X(no_extents, 630, caller_misuse, false, "reply_block_status() with no extents") \
  X(feature_not_built, 631, caller_misuse, true, "the configuration or hand-over needs a client part this build leaves out (NBDWIRE_CLIENT_*, config.hpp): the machine is failed from the start") \
  X(call_not_built, 632, caller_misuse, false, "the call needs a client part this build leaves out (NBDWIRE_CLIENT_*, config.hpp); refused, nothing changed") \
  /* -- TLS ("TLS support"; STARTTLS) */ \
  X(tls_oldstyle_server, 800, tls_policy, true, "TLS is required but the server greets oldstyle (no STARTTLS possible)") \
  X(tls_server_not_fixed_newstyle, 801, tls_policy, true, "TLS is required but the server is not fixed newstyle") \
  X(starttls_refused, 802, tls_policy, true, "TLS is required but the server refused NBD_OPT_STARTTLS") \
  X(tls_required_export_name, 803, tls_policy, true, "EXPORT_NAME before STARTTLS on a server that requires TLS") \
  X(tls_only_export_name, 804, tls_policy, true, "EXPORT_NAME for a TLS-only export before STARTTLS") \
  X(tls_required_client_not_fixed, 805, tls_policy, true, "the server requires TLS but the client is not fixed newstyle") \
  X(receive_while_tls_starting, 810, caller_misuse, true, "receive() after start_tls: those bytes are TLS; call tls_started() first") \
  X(tls_not_starting, 811, caller_misuse, false, "tls_started() without a start_tls event") \
  /* -- handing a connection to the Linux kernel's NBD driver (kernel.hpp) */ \
  X(kernel_needs_simple_replies, 900, caller_misuse, false, "the kernel reads simple replies only: structured replies or extended headers were negotiated") \
  X(kernel_tls, 901, caller_misuse, false, "the handshake ran over TLS, which the kernel's NBD driver does not do") \
  X(kernel_block_size_unsupported, 902, limit_exceeded, false, "no block size the kernel can use (a power of two from 512 to the page size) meets the export's minimum") \
  X(kernel_export_too_small, 903, caller_misuse, false, "the export is smaller than one block of the device") \
  /* -- the machine itself */ \
  X(illegal_transition, 700, internal, true, "a state change the transition table does not allow (a bug in nbdwire)") \
  /* end */

enum class errc : std::uint16_t {
  ok = 0,
#define NBDWIRE_ERRC_ENUM(name, num, cat, fatal, doc) name = num,
  NBDWIRE_ERRC_LIST(NBDWIRE_ERRC_ENUM)
#undef NBDWIRE_ERRC_ENUM
};

// Each lookup is a switch generated from the list, so an image that only asks category() or
// is_fatal() (firmware) links no name or description strings; and two enumerators with one
// number would be duplicate case labels, a compile error.

[[nodiscard]] constexpr error_category category(errc e) noexcept {
  switch (e) {
    case errc::ok: return error_category::none;
#define NBDWIRE_ERRC_CATEGORY(name, num, cat, fatal, doc) \
  case errc::name: return error_category::cat;
    NBDWIRE_ERRC_LIST(NBDWIRE_ERRC_CATEGORY)
#undef NBDWIRE_ERRC_CATEGORY
  }
  return error_category::internal;
}

/// True for errors that end the connection (the machine is in its `failed` state).
[[nodiscard]] constexpr bool is_fatal(errc e) noexcept {
  switch (e) {
    case errc::ok: return false;
#define NBDWIRE_ERRC_FATAL(name, num, cat, fatal, doc) \
  case errc::name: return fatal;
    NBDWIRE_ERRC_LIST(NBDWIRE_ERRC_FATAL)
#undef NBDWIRE_ERRC_FATAL
  }
  return true;
}

/// The enumerator's name, e.g. "bad_reply_magic".
[[nodiscard]] constexpr std::string_view to_string(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
#define NBDWIRE_ERRC_NAME(name, num, cat, fatal, doc) \
  case errc::name: return #name;
    NBDWIRE_ERRC_LIST(NBDWIRE_ERRC_NAME)
#undef NBDWIRE_ERRC_NAME
  }
  return "unknown_error";
}

/// One line saying what went wrong, e.g. "unknown reply magic".
[[nodiscard]] constexpr std::string_view describe(errc e) noexcept {
  switch (e) {
    case errc::ok: return "no error";
#define NBDWIRE_ERRC_DESCRIPTION(name, num, cat, fatal, doc) \
  case errc::name: return doc;
    NBDWIRE_ERRC_LIST(NBDWIRE_ERRC_DESCRIPTION)
#undef NBDWIRE_ERRC_DESCRIPTION
  }
  return "unknown error";
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
