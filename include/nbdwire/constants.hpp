// SPDX-License-Identifier: MIT
// nbdwire: every protocol constant, with its name. Section references are to the NBD
// protocol document (doc/proto.md of NetworkBlockDevice/nbd) unless marked [ext]
// (extension-ext-header branch) or [resize] (extension-resize branch).
#pragma once

#include <cstdint>      // fixed-width integers
#include <string_view>  // names of constants

#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// "Reserved Magic values" and the handshake sections.
namespace magic {
inline constexpr std::uint64_t nbdmagic = 0x4e42444d41474943;        ///< "NBDMAGIC", both greetings
inline constexpr std::uint64_t oldstyle = 0x0000420281861253;        ///< cliserv_magic, oldstyle
inline constexpr std::uint64_t ihaveopt = 0x49484156454F5054;        ///< "IHAVEOPT", newstyle + options
inline constexpr std::uint64_t option_reply = 0x0003e889045565a9;    ///< option reply header
inline constexpr std::uint32_t request = 0x25609513;                 ///< compact request
inline constexpr std::uint32_t simple_reply = 0x67446698;            ///< simple reply
inline constexpr std::uint32_t structured_reply = 0x668e33ef;        ///< structured reply chunk
inline constexpr std::uint32_t extended_request = 0x21e41c71;        ///< [ext] extended request
inline constexpr std::uint32_t extended_reply = 0x6e8a278c;          ///< [ext] extended reply chunk
inline constexpr std::uint32_t legacy_1997_request = 0x12560953;     ///< Linux <= 2.1.115 request
inline constexpr std::uint32_t legacy_1997_reply = 0x96744668;       ///< Linux <= 2.1.115 reply
inline constexpr std::uint32_t transaction_log = 0x25609514;         ///< nbd-server log, never on the wire
}  // namespace magic

/// The IANA port for NBD.
inline constexpr std::uint16_t default_port = 10809;

/// How a connection starts. legacy_1997 has no handshake at all (Linux 2.1.67 nbd.txt).
enum class handshake_style : std::uint8_t {
  fixed_newstyle = 0,  ///< "Fixed newstyle negotiation"
  newstyle = 1,        ///< "Newstyle negotiation" without NBD_FLAG_FIXED_NEWSTYLE
  oldstyle = 2,        ///< "Oldstyle negotiation": one 152-byte greeting
  legacy_1997 = 3,     ///< no handshake, 1997 request/reply framing
};

/// Handshake flags, 16 bits, server to client ("Handshake flags").
namespace handshake_flag {
inline constexpr std::uint16_t fixed_newstyle = 1u << 0;
inline constexpr std::uint16_t no_zeroes = 1u << 1;
inline constexpr std::uint16_t known = fixed_newstyle | no_zeroes;
}  // namespace handshake_flag

/// Client flags, 32 bits, client to server ("Client flags").
namespace client_flag {
inline constexpr std::uint32_t fixed_newstyle = 1u << 0;
inline constexpr std::uint32_t no_zeroes = 1u << 1;
inline constexpr std::uint32_t known = fixed_newstyle | no_zeroes;
}  // namespace client_flag

/// Transmission flags, 16 bits ("Transmission flags").
namespace transmission_flag {
inline constexpr std::uint16_t has_flags = 1u << 0;
inline constexpr std::uint16_t read_only = 1u << 1;
inline constexpr std::uint16_t send_flush = 1u << 2;
inline constexpr std::uint16_t send_fua = 1u << 3;
inline constexpr std::uint16_t rotational = 1u << 4;
inline constexpr std::uint16_t send_trim = 1u << 5;
inline constexpr std::uint16_t send_write_zeroes = 1u << 6;
inline constexpr std::uint16_t send_df = 1u << 7;
inline constexpr std::uint16_t can_multi_conn = 1u << 8;
inline constexpr std::uint16_t send_resize = 1u << 9;  ///< [resize], experimental
inline constexpr std::uint16_t send_cache = 1u << 10;
inline constexpr std::uint16_t send_fast_zero = 1u << 11;
inline constexpr std::uint16_t block_status_payload = 1u << 12;  ///< [ext]
}  // namespace transmission_flag

/// Options, client to server ("Option types").
enum class option : std::uint32_t {
  export_name = 1,
  abort = 2,
  list = 3,
  peek_export = 4,  ///< withdrawn; answered with ERR_UNSUP
  starttls = 5,
  info = 6,
  go = 7,
  structured_reply = 8,
  list_meta_context = 9,
  set_meta_context = 10,
  extended_headers = 11,  ///< [ext]
};

/// Option reply types ("Option reply types"). Bit 31 marks an error.
enum class reply_type : std::uint32_t {
  ack = 1,
  server = 2,
  info = 3,
  meta_context = 4,
  err_unsup = 0x80000001,
  err_policy = 0x80000002,
  err_invalid = 0x80000003,
  err_platform = 0x80000004,
  err_tls_reqd = 0x80000005,
  err_unknown = 0x80000006,
  err_shutdown = 0x80000007,
  err_block_size_reqd = 0x80000008,
  err_too_big = 0x80000009,
  err_ext_header_reqd = 0x8000000a,  ///< [ext]
};
inline constexpr std::uint32_t reply_type_error_bit = 0x80000000u;
[[nodiscard]] constexpr bool is_error(reply_type t) noexcept {
  return (static_cast<std::uint32_t>(t) & reply_type_error_bit) != 0;
}

/// Information types inside NBD_REP_INFO and requested by INFO/GO ("NBD_OPT_INFO").
enum class info_type : std::uint16_t {
  export_info = 0,  ///< NBD_INFO_EXPORT: size and transmission flags
  name = 1,
  description = 2,
  block_size = 3,
};

/// Commands ("Request types").
enum class command : std::uint16_t {
  read = 0,
  write = 1,
  disc = 2,
  flush = 3,
  trim = 4,
  cache = 5,
  write_zeroes = 6,
  block_status = 7,
  resize = 8,  ///< [resize], experimental
};

/// Command flags, 16 bits ("Command flags").
namespace command_flag {
inline constexpr std::uint16_t fua = 1u << 0;
inline constexpr std::uint16_t no_hole = 1u << 1;
inline constexpr std::uint16_t df = 1u << 2;
inline constexpr std::uint16_t req_one = 1u << 3;
inline constexpr std::uint16_t fast_zero = 1u << 4;
inline constexpr std::uint16_t payload_len = 1u << 5;  ///< [ext]
inline constexpr std::uint16_t known = fua | no_hole | df | req_one | fast_zero | payload_len;
}  // namespace command_flag

/// Reply flags of structured and extended chunks.
namespace reply_flag {
inline constexpr std::uint16_t done = 1u << 0;
}

/// Structured reply chunk types ("Structured reply chunk message types").
enum class chunk_type : std::uint16_t {
  none = 0,
  offset_data = 1,
  offset_hole = 2,
  block_status = 5,
  block_status_ext = 6,  ///< [ext]
  error = 0x8001,
  error_offset = 0x8002,
};
inline constexpr std::uint16_t chunk_type_error_bit = 0x8000u;

/// Error values carried by replies ("Error values"). Numbers are the wire values, not the
/// host's errno.
enum class nbd_error : std::uint32_t {
  ok = 0,
  eperm = 1,
  eio = 5,
  enomem = 12,
  einval = 22,
  enospc = 28,
  eoverflow = 75,
  enotsup = 95,
  eshutdown = 108,
};

/// Maps a received error value to a known one: the spec asks clients to treat an unexpected
/// value as EINVAL rather than disconnect ("Error values").
[[nodiscard]] constexpr nbd_error normalize_error(std::uint32_t v) noexcept {
  switch (v) {
    case 0: case 1: case 5: case 12: case 22: case 28: case 75: case 95: case 108:
      return static_cast<nbd_error>(v);
    default:
      return nbd_error::einval;
  }
}

/// base:allocation status bits ("Metadata querying").
namespace state_flag {
inline constexpr std::uint32_t hole = 1u << 0;
inline constexpr std::uint32_t zero = 1u << 1;
}  // namespace state_flag

// ---- names, for logs and tests ------------------------------------------------------------

[[nodiscard]] constexpr std::string_view to_string(option o) noexcept {
  switch (o) {
    case option::export_name: return "NBD_OPT_EXPORT_NAME";
    case option::abort: return "NBD_OPT_ABORT";
    case option::list: return "NBD_OPT_LIST";
    case option::peek_export: return "NBD_OPT_PEEK_EXPORT";
    case option::starttls: return "NBD_OPT_STARTTLS";
    case option::info: return "NBD_OPT_INFO";
    case option::go: return "NBD_OPT_GO";
    case option::structured_reply: return "NBD_OPT_STRUCTURED_REPLY";
    case option::list_meta_context: return "NBD_OPT_LIST_META_CONTEXT";
    case option::set_meta_context: return "NBD_OPT_SET_META_CONTEXT";
    case option::extended_headers: return "NBD_OPT_EXTENDED_HEADERS";
  }
  return "NBD_OPT_(unknown)";
}

[[nodiscard]] constexpr std::string_view to_string(reply_type t) noexcept {
  switch (t) {
    case reply_type::ack: return "NBD_REP_ACK";
    case reply_type::server: return "NBD_REP_SERVER";
    case reply_type::info: return "NBD_REP_INFO";
    case reply_type::meta_context: return "NBD_REP_META_CONTEXT";
    case reply_type::err_unsup: return "NBD_REP_ERR_UNSUP";
    case reply_type::err_policy: return "NBD_REP_ERR_POLICY";
    case reply_type::err_invalid: return "NBD_REP_ERR_INVALID";
    case reply_type::err_platform: return "NBD_REP_ERR_PLATFORM";
    case reply_type::err_tls_reqd: return "NBD_REP_ERR_TLS_REQD";
    case reply_type::err_unknown: return "NBD_REP_ERR_UNKNOWN";
    case reply_type::err_shutdown: return "NBD_REP_ERR_SHUTDOWN";
    case reply_type::err_block_size_reqd: return "NBD_REP_ERR_BLOCK_SIZE_REQD";
    case reply_type::err_too_big: return "NBD_REP_ERR_TOO_BIG";
    case reply_type::err_ext_header_reqd: return "NBD_REP_ERR_EXT_HEADER_REQD";
  }
  return "NBD_REP_(unknown)";
}

[[nodiscard]] constexpr std::string_view to_string(info_type t) noexcept {
  switch (t) {
    case info_type::export_info: return "NBD_INFO_EXPORT";
    case info_type::name: return "NBD_INFO_NAME";
    case info_type::description: return "NBD_INFO_DESCRIPTION";
    case info_type::block_size: return "NBD_INFO_BLOCK_SIZE";
  }
  return "NBD_INFO_(unknown)";
}

[[nodiscard]] constexpr std::string_view to_string(command c) noexcept {
  switch (c) {
    case command::read: return "NBD_CMD_READ";
    case command::write: return "NBD_CMD_WRITE";
    case command::disc: return "NBD_CMD_DISC";
    case command::flush: return "NBD_CMD_FLUSH";
    case command::trim: return "NBD_CMD_TRIM";
    case command::cache: return "NBD_CMD_CACHE";
    case command::write_zeroes: return "NBD_CMD_WRITE_ZEROES";
    case command::block_status: return "NBD_CMD_BLOCK_STATUS";
    case command::resize: return "NBD_CMD_RESIZE";
  }
  return "NBD_CMD_(unknown)";
}

[[nodiscard]] constexpr std::string_view to_string(chunk_type t) noexcept {
  switch (t) {
    case chunk_type::none: return "NBD_REPLY_TYPE_NONE";
    case chunk_type::offset_data: return "NBD_REPLY_TYPE_OFFSET_DATA";
    case chunk_type::offset_hole: return "NBD_REPLY_TYPE_OFFSET_HOLE";
    case chunk_type::block_status: return "NBD_REPLY_TYPE_BLOCK_STATUS";
    case chunk_type::block_status_ext: return "NBD_REPLY_TYPE_BLOCK_STATUS_EXT";
    case chunk_type::error: return "NBD_REPLY_TYPE_ERROR";
    case chunk_type::error_offset: return "NBD_REPLY_TYPE_ERROR_OFFSET";
  }
  return "NBD_REPLY_TYPE_(unknown)";
}

[[nodiscard]] constexpr std::string_view to_string(nbd_error e) noexcept {
  switch (e) {
    case nbd_error::ok: return "OK";
    case nbd_error::eperm: return "NBD_EPERM";
    case nbd_error::eio: return "NBD_EIO";
    case nbd_error::enomem: return "NBD_ENOMEM";
    case nbd_error::einval: return "NBD_EINVAL";
    case nbd_error::enospc: return "NBD_ENOSPC";
    case nbd_error::eoverflow: return "NBD_EOVERFLOW";
    case nbd_error::enotsup: return "NBD_ENOTSUP";
    case nbd_error::eshutdown: return "NBD_ESHUTDOWN";
  }
  return "NBD_E(unknown)";
}

[[nodiscard]] constexpr std::string_view to_string(handshake_style s) noexcept {
  switch (s) {
    case handshake_style::fixed_newstyle: return "fixed-newstyle";
    case handshake_style::newstyle: return "newstyle";
    case handshake_style::oldstyle: return "oldstyle";
    case handshake_style::legacy_1997: return "legacy1997";
  }
  return "unknown";
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
