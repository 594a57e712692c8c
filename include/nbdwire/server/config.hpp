// SPDX-License-Identifier: MIT
// nbdwire server: what a server offers (its exports and options) and the rules that check
// it, shared by the handshake and transmission parts.
#pragma once

#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional: export lookups
#include <span>         // std::span: the caller's export table
#include <string_view>  // export names, descriptions, context names

#include "nbdwire/bytes.hpp"
#include "nbdwire/config.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/codec/core.hpp"  // detail::has_nul: names carry no NUL ("Conventions")
#include "nbdwire/detail/rules.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/trace.hpp"  // state_trace

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
  /// server_tls::optional (SELECTIVETLS): reachable only once TLS is up. Before it, INFO and
  /// GO naming it get NBD_REP_ERR_TLS_REQD, EXPORT_NAME naming it ends the connection, and
  /// LIST leaves it out ("TLS support").
  bool tls_only = false;
};

/// The server's TLS policy ("TLS support"), fixed for the connection. The machine never
/// touches TLS itself: it answers NBD_OPT_STARTTLS, reports `start_tls`, and the caller
/// runs the TLS handshake and calls server::tls_started().
enum class server_tls : std::uint8_t {
  off,       ///< NOTLS: STARTTLS gets NBD_REP_ERR_POLICY; NBD_REP_ERR_TLS_REQD is never sent
  optional,  ///< SELECTIVETLS: only exports marked tls_only need TLS
  required,  ///< FORCEDTLS: every option but STARTTLS and ABORT needs TLS
};

enum class server_state : std::uint8_t;    // server/states.hpp
enum class server_trigger : std::uint8_t;  // server/states.hpp
/// Sees every state change of a server (trace.hpp).
using server_trace = state_trace<server_state, server_trigger>;

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
  server_tls tls = server_tls::off;  ///< TLS needs fixed newstyle; tls_only exports need TLS on
  /// Called on every state change (trace.hpp): --debug output, tests. Off by default.
  server_trace trace{};
};

namespace detail {

/// A style that serves one export with another count, a bad default, invalid block sizes,
/// over-long strings, names with NUL (which no reply may carry), TLS without fixed newstyle
/// or a tls_only export without TLS make a configuration invalid.
[[nodiscard]] constexpr bool config_valid(const server_config& c) noexcept {
  const bool single = c.style == handshake_style::oldstyle || c.style == handshake_style::legacy_1997;
  if (c.exports.empty() || (single && c.exports.size() != 1)) return false;
  if (c.default_export != server_config::no_export && c.default_export >= c.exports.size()) return false;
  if (c.meta_contexts.size() > max_meta_contexts) return false;
  // TLS is negotiated by an option: fixed newstyle only ("TLS support").
  if (c.tls != server_tls::off && c.style != handshake_style::fixed_newstyle) return false;
  for (auto m : c.meta_contexts)
    if (m.size() > max_string || has_nul(m)) return false;
  for (const auto& e : c.exports) {
    if (e.name.size() > max_string || e.description.size() > max_string || !valid(e.block_size)) return false;
    if (has_nul(e.name)) return false;
    if (e.tls_only && c.tls == server_tls::off) return false;  // an export nobody could reach
    if (c.style == handshake_style::legacy_1997 && e.size > 0xffffffffu) return false;
  }
  return true;
}

/// The export a name selects: the default for the empty name, else the exact match.
[[nodiscard]] inline std::optional<std::size_t> find_export(const server_config& c, bytes_view name) noexcept {
  if (name.empty() && c.default_export != server_config::no_export) return c.default_export;
  for (std::size_t i = 0; i < c.exports.size(); ++i)
    if (c.exports[i].name.size() == name.size() && as_chars(name) == c.exports[i].name) return i;
  return std::nullopt;
}

/// The transmission flags an export is served with.
[[nodiscard]] constexpr std::uint16_t export_flags(const server_config& c, const export_config& e, bool structured,
                                                   bool extended) noexcept {
  if (c.style == handshake_style::legacy_1997)
    return static_cast<std::uint16_t>(transmission_flag::has_flags | (e.transmission_flags & transmission_flag::read_only));
  return sanitize_transmission_flags(static_cast<std::uint16_t>(e.transmission_flags | transmission_flag::has_flags),
                                     structured, extended);
}

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
