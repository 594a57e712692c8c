// SPDX-License-Identifier: MIT
// nbdwire detail: the transmission request rules, once, for both sides. The client refuses
// to send a request that breaks them (errc); the server answers a received one with the
// NBD error the spec names (checklist 3.3). Same table, two mappings.
#pragma once

#include <cstdint>   // fixed-width integers
#include <iterator>  // std::size

#include "nbdwire/bytes.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

/// What the spec says about one command ("Request types", "Command flags").
struct command_rule {
  bool known = false;
  std::uint16_t allowed_flags = 0;   ///< flags documented as applicable
  std::uint16_t required_tflag = 0;  ///< transmission flag that exposes the command (0 = none)
  bool modifies = false;             ///< refused on a read-only export (EPERM)
  bool ranged = false;               ///< offset/length name a range of the export
  bool end_is_enospc = false;        ///< past the end is ENOSPC rather than EINVAL
  bool zero_range_only = false;      ///< offset and length must be 0 (FLUSH, DISC)
  bool carries_payload = false;      ///< bounded by the maximum payload (READ, WRITE)
};

/// The rules, indexed by command number (a table rather than a switch: smaller code). Fields
/// in command_rule's order.
inline constexpr command_rule command_rules[] = {
    {true, command_flag::fua | command_flag::df, 0, false, true, false, false, true},                         // READ
    {true, command_flag::fua, 0, true, true, true, false, true},                                              // WRITE
    {true, 0, 0, false, false, false, true, false},                                                           // DISC
    {true, command_flag::fua, transmission_flag::send_flush, false, false, false, true, false},               // FLUSH
    {true, command_flag::fua, transmission_flag::send_trim, true, true, false, false, false},                 // TRIM
    {true, command_flag::fua, transmission_flag::send_cache, false, true, false, false, false},               // CACHE
    {true, command_flag::fua | command_flag::no_hole | command_flag::fast_zero, transmission_flag::send_write_zeroes,
     true, true, true, false, false},                                                                         // WRITE_ZEROES
    {true, command_flag::fua | command_flag::req_one, 0, false, true, false, false, false},                   // BLOCK_STATUS
    {true, 0, transmission_flag::send_resize, true, false, false, false, false},                              // RESIZE
};

static_assert(std::size(command_rules) == static_cast<std::size_t>(command::resize) + 1);

[[nodiscard]] constexpr command_rule rule_for(std::uint16_t type) noexcept {
  return type < std::size(command_rules) ? command_rules[type] : command_rule{};
}

/// The transmission flag a command flag needs ("Command flags").
[[nodiscard]] constexpr std::uint16_t flag_gate(std::uint16_t flag) noexcept {
  switch (flag) {
    case command_flag::fua: return transmission_flag::send_fua;
    case command_flag::df: return transmission_flag::send_df;
    case command_flag::fast_zero: return transmission_flag::send_fast_zero;
    case command_flag::no_hole: return transmission_flag::send_write_zeroes;
    default: return 0;
  }
}

enum class verdict : std::uint8_t {
  ok,
  unknown_command,
  flag_not_applicable,    ///< unknown flag, or documented for another command
  flag_not_advertised,
  command_not_advertised,
  read_only,
  nonzero_range,          ///< FLUSH/DISC with an offset or length
  out_of_range,           ///< past the end (EINVAL kind)
  out_of_range_write,     ///< past the end (ENOSPC kind)
  misaligned,
  payload_too_large,
  zero_length,
  no_meta_context,        ///< BLOCK_STATUS without a negotiated context
  shutting_down,          ///< the server refuses new work (NBD_ESHUTDOWN)
  df_too_large,           ///< a DF read too large for one compact chunk (NBD_EOVERFLOW)
};

/// Checks request `r` against what was negotiated. `lenient` is the server's reading:
/// it accepts CACHE without SEND_CACHE and zero-length requests, as real clients send both
/// (checklist §5 "General"); the client holds itself to the strict reading.
[[nodiscard]] constexpr verdict check_request(const request& r, const negotiated& n, bool lenient) noexcept {
  const command_rule rule = rule_for(r.type);
  if (!rule.known) return verdict::unknown_command;
  if ((r.flags & ~rule.allowed_flags) != 0) return verdict::flag_not_applicable;
  for (std::uint16_t bit = 1; bit != 0; bit = static_cast<std::uint16_t>(bit << 1)) {
    if ((r.flags & bit) && flag_gate(bit) != 0 && !n.has(flag_gate(bit))) return verdict::flag_not_advertised;
  }
  const bool cache_leniency = lenient && r.cmd() == command::cache;
  if (rule.required_tflag && !n.has(rule.required_tflag) && !cache_leniency)
    return verdict::command_not_advertised;
  if (r.cmd() == command::block_status && n.meta_context_count == 0) return verdict::no_meta_context;
  if (rule.modifies && n.read_only()) return verdict::read_only;
  if (rule.zero_range_only) return (r.offset || r.length) ? verdict::nonzero_range : verdict::ok;
  if (rule.ranged) {
    if (r.length == 0 && !lenient) return verdict::zero_length;
    if (!range_within(r.offset, r.length, n.export_size))
      return rule.end_is_enospc ? verdict::out_of_range_write : verdict::out_of_range;
    const std::uint64_t min = n.block_size.minimum;
    if (min > 1 && (round_down_pow2(r.offset, min) != r.offset || round_down_pow2(r.length, min) != r.length))
      return verdict::misaligned;
  }
  if (rule.carries_payload && n.block_size.maximum != 0xffffffffu && r.length > n.block_size.maximum)
    return verdict::payload_too_large;
  // DF asks for one content chunk, and a compact chunk's 32-bit length holds at most
  // 2^32 - 9 data bytes; larger DF reads get EOVERFLOW ("NBD_CMD_FLAG_DF").
  if ((r.flags & command_flag::df) && !n.extended_headers && r.length > 0xffffffffu - 8)
    return verdict::df_too_large;
  return verdict::ok;
}

/// The server's answer to a refused request (checklist 3.3).
[[nodiscard]] constexpr nbd_error to_nbd_error(verdict v) noexcept {
  switch (v) {
    case verdict::ok: return nbd_error::ok;
    case verdict::read_only: return nbd_error::eperm;
    case verdict::out_of_range_write: return nbd_error::enospc;
    case verdict::shutting_down: return nbd_error::eshutdown;
    case verdict::df_too_large: return nbd_error::eoverflow;
    default: return nbd_error::einval;
  }
}

/// The client's reason for refusing to send.
[[nodiscard]] constexpr errc to_errc(verdict v) noexcept {
  switch (v) {
    case verdict::ok: return errc::ok;
    case verdict::unknown_command: return errc::command_not_advertised;
    case verdict::flag_not_applicable: return errc::flag_not_applicable;
    case verdict::flag_not_advertised: return errc::flag_not_advertised;
    case verdict::command_not_advertised: return errc::command_not_advertised;
    case verdict::read_only: return errc::read_only_export;
    case verdict::nonzero_range: return errc::request_out_of_range;
    case verdict::out_of_range: return errc::request_out_of_range;
    case verdict::out_of_range_write: return errc::request_out_of_range;
    case verdict::misaligned: return errc::request_misaligned;
    case verdict::payload_too_large: return errc::payload_too_large;
    case verdict::zero_length: return errc::zero_length;
    case verdict::no_meta_context: return errc::command_not_advertised;
    case verdict::shutting_down: return errc::server_is_shutting_down;
    case verdict::df_too_large: return errc::payload_too_large;
  }
  return errc::command_not_advertised;  // not reached: every verdict is listed
}

/// Masks transmission flags a server must not have set (checklist 3.2: lenient reading of
/// server MUST-violations): nothing counts without HAS_FLAGS, DF needs structured replies,
/// FAST_ZERO needs WRITE_ZEROES, BLOCK_STATUS_PAYLOAD needs extended headers.
[[nodiscard]] constexpr std::uint16_t sanitize_transmission_flags(std::uint16_t f, bool structured,
                                                                  bool extended) noexcept {
  using namespace transmission_flag;
  if (!(f & has_flags)) return 0;
  if (!structured && !extended) f = static_cast<std::uint16_t>(f & ~send_df);
  if (!(f & send_write_zeroes)) f = static_cast<std::uint16_t>(f & ~send_fast_zero);
  if (!extended) f = static_cast<std::uint16_t>(f & ~block_status_payload);
  return f;
}

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
