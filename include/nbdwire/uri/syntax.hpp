// SPDX-License-Identifier: MIT
// nbdwire URI: the syntax of the parts of a URI (RFC 3986): percent-decoding, decimal
// numbers and ports, IPv4 and IPv6 literals, registered names. Pure functions on views, for
// parse_uri() (uri.hpp); uri_decode() decodes a component the caller kept raw.
#pragma once

#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional: numbers
#include <span>         // std::span: decode buffers
#include <string_view>  // views of the text

#include "nbdwire/uri/errors.hpp"  // uri_errc, uri_result

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

namespace detail {

[[nodiscard]] constexpr int uri_hex(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

[[nodiscard]] constexpr bool uri_control(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u <= 0x20 || u == 0x7f;
}

/// s.substr(pos, n) without its bounds check, which names the exception runtime even where
/// exceptions are off (firmware images must not link it). `pos` is clamped to the size.
[[nodiscard]] constexpr std::string_view uri_sub(std::string_view s, std::size_t pos,
                                                 std::size_t n = std::string_view::npos) noexcept {
  if (pos > s.size()) pos = s.size();
  return {s.data() + pos, n < s.size() - pos ? n : s.size() - pos};
}

/// Percent-decodes `raw` (RFC 3986 §2.1). With `out`, writes the bytes there (at most
/// `limit`; `too_long` when more). NUL is refused unless `nul_first_ok` and it is byte 0
/// (an abstract Unix socket: "NBD URI socket parameter"). Returns the decoded length.
[[nodiscard]] constexpr uri_result<std::size_t> uri_decode_into(std::string_view raw, char* out, std::size_t limit,
                                                                uri_errc too_long, bool nul_first_ok = false) noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (uri_control(c)) return uri_errc::invalid_character;
    if (c == '%') {
      if (raw.size() - i < 3) return uri_errc::bad_percent_escape;
      const int hi = uri_hex(raw[i + 1]), lo = uri_hex(raw[i + 2]);
      if (hi < 0 || lo < 0) return uri_errc::bad_percent_escape;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
      if (c == '\0' && !(nul_first_ok && n == 0)) return uri_errc::nul_character;
    }
    if (n == limit) return too_long;
    if (out) out[n] = c;
    ++n;
  }
  return n;
}

[[nodiscard]] constexpr bool uri_iequal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (x != b[i]) return false;
  }
  return true;
}

/// Decimal digits only, at most `max`; nullopt otherwise (empty, a sign, overflow).
[[nodiscard]] constexpr std::optional<std::uint64_t> uri_number(std::string_view s, std::uint64_t max) noexcept {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
    if (v > max) return std::nullopt;
  }
  return v;
}

/// dotted-decimal IPv4: four decimal octets (RFC 3986 §3.2.2 dec-octet, no leading zeroes).
[[nodiscard]] constexpr bool uri_is_ipv4(std::string_view s) noexcept {
  int parts = 0;
  while (true) {
    const std::size_t dot = s.find('.');
    const std::string_view part = detail::uri_sub(s, 0, dot);
    if (part.empty() || part.size() > 3 || (part.size() > 1 && part[0] == '0')) return false;
    if (!uri_number(part, 255)) return false;
    ++parts;
    if (dot == std::string_view::npos) break;
    s.remove_prefix(dot + 1);
  }
  return parts == 4;
}

/// IPv6address of RFC 3986 §3.2.2: eight 16-bit groups, one "::" standing for one or more
/// zero groups, optionally ending in an IPv4 address (which counts as two groups).
[[nodiscard]] constexpr bool uri_is_ipv6(std::string_view s) noexcept {
  if (s.empty()) return false;
  int groups = 0;
  bool compressed = false;
  std::size_t i = 0;
  if (s.starts_with("::")) {
    compressed = true;
    i = 2;
    if (i == s.size()) return true;
  } else if (s[0] == ':') {
    return false;
  }
  while (i < s.size()) {
    std::size_t j = i;
    while (j < s.size() && s[j] != ':') ++j;
    const std::string_view g = detail::uri_sub(s, i, j - i);
    if (g.find('.') != std::string_view::npos) {
      // an embedded IPv4 address must be last
      if (j != s.size() || !uri_is_ipv4(g)) return false;
      groups += 2;
      break;
    }
    if (g.empty() || g.size() > 4) return false;
    for (const char c : g)
      if (uri_hex(c) < 0) return false;
    ++groups;
    if (j == s.size()) break;
    // j is at ':'
    if (j + 1 < s.size() && s[j + 1] == ':') {
      if (compressed) return false;
      compressed = true;
      i = j + 2;
      if (i == s.size()) break;
    } else {
      i = j + 1;
      if (i == s.size()) return false;  // a trailing single ':'
    }
  }
  return compressed ? groups <= 7 : groups == 8;
}

/// A port: digits only (else bad_port), at most `max` and, when `nonzero`, not 0 (else
/// port_out_of_range).
[[nodiscard]] constexpr uri_result<std::uint32_t> uri_port(std::string_view port, std::uint64_t max,
                                                           bool nonzero) noexcept {
  if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) return uri_errc::bad_port;
  const auto p = uri_number(port, max);
  if (!p || (nonzero && *p == 0)) return uri_errc::port_out_of_range;
  return static_cast<std::uint32_t>(*p);
}

/// A character of RFC 3986 reg-name besides pct-encoded: unreserved or sub-delims.
[[nodiscard]] constexpr bool uri_reg_name_char(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  constexpr std::string_view other = "-._~!$&'()*+,;=%";
  return other.find(c) != std::string_view::npos;
}

}  // namespace detail

/// Percent-decodes one component of a URI (a raw view from `uri`, e.g. tls_certificates())
/// into `out`. Refuses malformed escapes and %00. Returns the decoded length.
[[nodiscard]] constexpr uri_result<std::size_t> uri_decode(std::string_view raw, std::span<char> out) noexcept {
  return detail::uri_decode_into(raw, out.data(), out.size(), uri_errc::buffer_too_small);
}

/// Bytes uri_decode() produces for `raw` (0 when it is malformed).
[[nodiscard]] constexpr std::size_t uri_decoded_size(std::string_view raw) noexcept {
  const auto r = detail::uri_decode_into(raw, nullptr, raw.size(), uri_errc::buffer_too_small);
  return r ? r.value() : 0;
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
