// SPDX-License-Identifier: MIT
// nbdwire: the NBD URI (doc/uri.md of the NBD project), parsed without a heap.
//
//   nbd://[USER@]HOST[:PORT][/EXPORT][?QUERY]         TCP (nbds: TLS required)
//   nbd+unix://[USER@]/[EXPORT]?socket=PATH[&...]     Unix socket (nbds+unix: TLS required)
//   nbd+vsock://[USER@][CID][:PORT][/EXPORT][?QUERY]  AF_VSOCK (nbds+vsock: TLS required)
//
// Memory: one `uri` owns everything it had to percent-decode in order to connect, in fixed
// arrays: the export name (max_string bytes, the spec's string limit), the host
// (uri_max_host = 255 bytes, the longest DNS name) and the socket path (uri_max_socket = 108
// bytes, Linux's sun_path). sizeof(uri) is max_string + 520 bytes on a 64-bit host. The user name and
// the TLS parameters are checked (valid %-escapes, no %00) but kept as views of the caller's
// text, still encoded; uri_decode() decodes one into a buffer of the caller's. A `uri` is
// therefore only valid while the text it was parsed from is.
//
// No <string>, no iostream, no exceptions: usable in firmware, and in constant expressions.
#pragma once

#include <array>        // std::array: owned storage
#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional: tls-verify-peer
#include <span>         // std::span: decode buffers
#include <string_view>  // std::string_view: the input and every view of it
#include <utility>      // std::move

#include "nbdwire/config.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/version.hpp"

/// Longest host (decoded): a DNS name is at most 253 characters (RFC 1035), an IPv6 address
/// with a zone fits easily.
#ifndef NBDWIRE_URI_MAX_HOST
#define NBDWIRE_URI_MAX_HOST 255
#endif

/// Longest Unix socket path (decoded): sizeof(sockaddr_un::sun_path) on Linux. A path name
/// needs one byte less, for its terminating NUL; an abstract name (leading NUL) can use all.
#ifndef NBDWIRE_URI_MAX_SOCKET
#define NBDWIRE_URI_MAX_SOCKET 108
#endif

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

inline constexpr std::size_t uri_max_host = NBDWIRE_URI_MAX_HOST;
inline constexpr std::size_t uri_max_socket = NBDWIRE_URI_MAX_SOCKET;
/// The vsock CID of the host (VMADDR_CID_HOST): where nbd+vsock:/// connects (libnbd's default).
inline constexpr std::uint32_t vsock_cid_host = 2;

/// Why a URI was refused. Numbers are stable.
enum class uri_errc : std::uint8_t {
  ok = 0,
  no_scheme = 1,              ///< no "scheme:" prefix
  unknown_scheme = 2,         ///< not one of nbd, nbds, nbd+unix, nbds+unix, nbd+vsock, nbds+vsock
  invalid_character = 3,      ///< a control character or space (never part of a URI, RFC 3986 §2)
  bad_percent_escape = 4,     ///< '%' not followed by two hex digits (RFC 3986 §2.1)
  nul_character = 5,          ///< %00 where NUL is not allowed (export names: "Conventions")
  bad_host = 6,               ///< a character a host name may not contain, or an empty IPv6 literal
  bad_ipv6 = 7,               ///< a bracketed host that is not an IPv6 address (RFC 3986 §3.2.2, RFC 6874)
  host_too_long = 8,          ///< host longer than uri_max_host
  bad_port = 9,               ///< port empty or not decimal digits
  port_out_of_range = 10,     ///< port 0 or above 65535 (vsock: above 2^32 - 1)
  bad_vsock_cid = 11,         ///< a vsock host that is not a 32-bit decimal CID
  host_not_allowed = 12,      ///< +unix URI with a host or port (it names its socket in the query)
  path_not_absolute = 13,     ///< a path that does not start with '/'
  export_name_too_long = 14,  ///< export name above max_string bytes (spec "Conventions": 4096)
  socket_missing = 15,        ///< +unix URI without socket= ("NBD URI socket parameter": MUST)
  socket_too_long = 16,       ///< socket path above uri_max_socket bytes
  socket_not_allowed = 17,    ///< socket= in a TCP or vsock URI
  duplicate_parameter = 18,   ///< a known query parameter given twice
  bad_tls_verify_peer = 19,   ///< tls-verify-peer other than 0 or 1
  buffer_too_small = 20,      ///< uri_decode(): the output buffer is too short
};

[[nodiscard]] constexpr std::string_view to_string(uri_errc e) noexcept {
  switch (e) {
    case uri_errc::ok: return "ok";
    case uri_errc::no_scheme: return "no scheme";
    case uri_errc::unknown_scheme: return "unknown scheme";
    case uri_errc::invalid_character: return "invalid character";
    case uri_errc::bad_percent_escape: return "malformed percent-encoding";
    case uri_errc::nul_character: return "NUL character (%00) not allowed here";
    case uri_errc::bad_host: return "bad host";
    case uri_errc::bad_ipv6: return "bad IPv6 address";
    case uri_errc::host_too_long: return "host too long";
    case uri_errc::bad_port: return "bad port";
    case uri_errc::port_out_of_range: return "port out of range";
    case uri_errc::bad_vsock_cid: return "bad vsock CID";
    case uri_errc::host_not_allowed: return "a Unix socket URI has no host or port";
    case uri_errc::path_not_absolute: return "the path must start with '/'";
    case uri_errc::export_name_too_long: return "export name too long";
    case uri_errc::socket_missing: return "a Unix socket URI needs socket=PATH";
    case uri_errc::socket_too_long: return "socket path too long";
    case uri_errc::socket_not_allowed: return "socket= belongs to Unix socket URIs";
    case uri_errc::duplicate_parameter: return "query parameter given twice";
    case uri_errc::bad_tls_verify_peer: return "tls-verify-peer must be 0 or 1";
    case uri_errc::buffer_too_small: return "buffer too small";
  }
  return "unknown URI error";
}

/// A value or a uri_errc: the shape of result<T>, for URI errors. Never throws, never
/// allocates; value() on an error is a contract violation and traps.
template <class T>
class [[nodiscard]] uri_result {
 public:
  constexpr uri_result(T v) noexcept : value_(std::move(v)) {}    // NOLINT: implicit by design
  constexpr uri_result(uri_errc e) noexcept : error_(e) {}        // NOLINT: implicit by design
  [[nodiscard]] constexpr bool has_value() const noexcept { return error_ == uri_errc::ok; }
  constexpr explicit operator bool() const noexcept { return has_value(); }
  [[nodiscard]] constexpr uri_errc error() const noexcept { return error_; }
  [[nodiscard]] constexpr const T& value() const noexcept {
    if (!has_value()) contract_violation();
    return value_;
  }
  [[nodiscard]] constexpr const T& operator*() const noexcept { return value(); }
  [[nodiscard]] constexpr const T* operator->() const noexcept { return &value(); }

 private:
  T value_{};
  uri_errc error_ = uri_errc::ok;
};

enum class uri_transport : std::uint8_t { tcp, unix_socket, vsock };
enum class uri_host_kind : std::uint8_t {
  none,  ///< no host given (TCP: the client picks a default, e.g. localhost)
  name,  ///< a registered name (DNS)
  ipv4,  ///< dotted-decimal IPv4 address
  ipv6,  ///< IPv6 address from brackets (host() has no brackets; a zone follows '%')
};

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

/// One query parameter, as written: `key` and `value` still percent-encoded.
struct uri_parameter {
  std::string_view key;
  std::string_view value;
};

/// The query's parameters in order ("a=1&b&c=2": a→1, b→"", c→2), empty ones skipped.
/// Range-for-able, no storage: iterates the raw query text.
class uri_parameters {
 public:
  class iterator {
   public:
    using value_type = uri_parameter;
    using difference_type = std::ptrdiff_t;
    constexpr iterator() noexcept : at_end_(true) {}
    constexpr explicit iterator(std::string_view rest) noexcept : rest_(rest) { next(); }
    [[nodiscard]] constexpr uri_parameter operator*() const noexcept { return cur_; }
    constexpr iterator& operator++() noexcept {
      next();
      return *this;
    }
    constexpr iterator operator++(int) noexcept {
      iterator old = *this;
      next();
      return old;
    }
    [[nodiscard]] constexpr bool operator==(const iterator& o) const noexcept {
      return at_end_ == o.at_end_ && (at_end_ || (rest_.data() == o.rest_.data() && rest_.size() == o.rest_.size()));
    }

   private:
    constexpr void next() noexcept {
      while (!rest_.empty()) {
        const std::size_t amp = rest_.find('&');
        const std::string_view kv = detail::uri_sub(rest_, 0, amp);
        rest_ = amp == std::string_view::npos ? detail::uri_sub(rest_, rest_.size()) : detail::uri_sub(rest_, amp + 1);
        if (kv.empty()) continue;
        const std::size_t eq = kv.find('=');
        cur_ = {detail::uri_sub(kv, 0, eq),
                eq == std::string_view::npos ? std::string_view{} : detail::uri_sub(kv, eq + 1)};
        return;
      }
      at_end_ = true;
    }
    std::string_view rest_{};
    uri_parameter cur_{};
    bool at_end_ = false;
  };

  constexpr uri_parameters() noexcept = default;
  constexpr explicit uri_parameters(std::string_view query) noexcept : query_(query) {}
  [[nodiscard]] constexpr iterator begin() const noexcept { return iterator(query_); }
  [[nodiscard]] constexpr iterator end() const noexcept { return iterator(); }

 private:
  std::string_view query_{};
};

/// A parsed NBD URI. Decoded fields live in the object; raw views point into the parsed text.
class uri {
 public:
  uri_transport transport = uri_transport::tcp;
  /// nbds*: TLS is required ("NBD URI scheme": if it cannot be negotiated the connection
  /// MUST fail). nbd* may still use TLS opportunistically.
  bool tls = false;
  uri_host_kind host_kind = uri_host_kind::none;
  /// TCP: 1..65535, default 10809 (IANA). vsock: a 32-bit port, default 10809.
  std::uint32_t port = default_port;
  /// vsock only: the context id; vsock_cid_host when the URI names none.
  std::uint32_t vsock_cid = vsock_cid_host;
  /// tls-verify-peer=0|1 when given ("NBD URI query parameters related to TLS").
  std::optional<bool> tls_verify_peer{};

  /// The host, decoded, without IPv6 brackets (an IPv6 zone follows a single '%').
  [[nodiscard]] constexpr std::string_view host() const noexcept { return {host_.data(), host_len_}; }
  /// The same, NUL-terminated, for getaddrinfo() and C interfaces.
  [[nodiscard]] constexpr const char* host_c_str() const noexcept { return host_.data(); }
  /// The export name: the path without its leading '/', decoded ("NBD URI export name").
  [[nodiscard]] constexpr std::string_view export_name() const noexcept { return {export_.data(), export_len_}; }
  /// The Unix socket, decoded; may begin with NUL (an abstract socket). Empty for TCP/vsock.
  [[nodiscard]] constexpr std::string_view socket() const noexcept { return {socket_.data(), socket_len_}; }
  /// TCP port as a 16-bit number (meaningful for transport tcp).
  [[nodiscard]] constexpr std::uint16_t tcp_port() const noexcept { return static_cast<std::uint16_t>(port); }

  // Raw views (still percent-encoded; uri_decode() decodes them). Empty when absent.
  std::string_view user{};              ///< userinfo before '@': the TLS user name ("NBD URI authority")
  std::string_view tls_type{};          ///< tls-type=anon|x509|psk
  std::string_view tls_hostname{};      ///< tls-hostname=
  std::string_view tls_certificates{};  ///< tls-certificates= (libnbd: a directory of certificates)
  std::string_view tls_psk_file{};      ///< tls-psk-file= (libnbd: a PSK key file)
  std::string_view query{};             ///< the whole query, for parameters() and unknown keys

  /// Query parameters this parser does not know (the caller may diagnose them, as the URI
  /// document asks of clients: "Other NBD URI query parameters").
  std::size_t unknown_parameters = 0;

  /// Every query parameter, known or not, in order.
  [[nodiscard]] constexpr uri_parameters parameters() const noexcept { return uri_parameters(query); }
  /// True when the URI asks for TLS: an nbds scheme or a tls-* parameter. A client without
  /// TLS SHOULD refuse such a URI ("Clients which do not support TLS").
  [[nodiscard]] constexpr bool wants_tls() const noexcept { return tls || has_tls_parameters_; }
  /// True when a tls-* parameter is present (also an unknown one, e.g. tls-username).
  [[nodiscard]] constexpr bool has_tls_parameters() const noexcept { return has_tls_parameters_; }

 private:
  friend constexpr uri_errc parse_uri(std::string_view text, uri& out) noexcept;
  /// Back to the defaults without a temporary uri (which would cost its size in stack).
  constexpr void reset() noexcept {
    transport = uri_transport::tcp;
    tls = false;
    host_kind = uri_host_kind::none;
    port = default_port;
    vsock_cid = vsock_cid_host;
    tls_verify_peer.reset();
    user = tls_type = tls_hostname = tls_certificates = tls_psk_file = query = {};
    unknown_parameters = 0;
    host_len_ = export_len_ = socket_len_ = 0;
    host_[0] = '\0';
    has_tls_parameters_ = false;
  }
  std::array<char, uri_max_host + 1> host_{};
  std::array<char, max_string> export_{};
  std::array<char, uri_max_socket> socket_{};
  std::size_t host_len_ = 0, export_len_ = 0, socket_len_ = 0;
  bool has_tls_parameters_ = false;
};

/// The transport and TLS requirement of a scheme name (case-insensitive, RFC 3986 §3.1);
/// nullopt when it is not an NBD scheme.
struct uri_scheme {
  uri_transport transport;
  bool tls;
};
[[nodiscard]] constexpr std::optional<uri_scheme> parse_uri_scheme(std::string_view s) noexcept {
  constexpr std::array<std::pair<std::string_view, uri_scheme>, 6> schemes{{
      {"nbd", {uri_transport::tcp, false}},
      {"nbds", {uri_transport::tcp, true}},
      {"nbd+unix", {uri_transport::unix_socket, false}},
      {"nbds+unix", {uri_transport::unix_socket, true}},
      {"nbd+vsock", {uri_transport::vsock, false}},
      {"nbds+vsock", {uri_transport::vsock, true}},
  }};
  for (const auto& [name, sch] : schemes)
    if (detail::uri_iequal(s, name)) return sch;
  return std::nullopt;
}

/// True when `text` begins with an NBD scheme and ':' (it is meant as an NBD URI, valid or not).
[[nodiscard]] constexpr bool is_nbd_uri(std::string_view text) noexcept {
  const std::size_t colon = text.find(':');
  return colon != std::string_view::npos && parse_uri_scheme(detail::uri_sub(text, 0, colon)).has_value();
}

/// Parses `text` into `out` (which firmware can keep in static storage). On an error `out`
/// holds a partial result and must not be used.
[[nodiscard]] constexpr uri_errc parse_uri(std::string_view text, uri& out) noexcept {
  out.reset();
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return uri_errc::no_scheme;
  const auto scheme = parse_uri_scheme(detail::uri_sub(text, 0, colon));
  if (!scheme) return uri_errc::unknown_scheme;
  out.transport = scheme->transport;
  out.tls = scheme->tls;

  std::string_view rest = detail::uri_sub(text, colon + 1);
  for (const char c : rest)
    if (detail::uri_control(c)) return uri_errc::invalid_character;
  // The fragment (RFC 3986 §3.5) is for the client alone: ignored.
  if (const auto hash = rest.find('#'); hash != std::string_view::npos) rest = detail::uri_sub(rest, 0, hash);
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    out.query = detail::uri_sub(rest, q + 1);
    rest = detail::uri_sub(rest, 0, q);
  }
  std::string_view authority, path;
  const bool has_authority = rest.starts_with("//");
  if (has_authority) {
    rest.remove_prefix(2);
    const std::size_t slash = rest.find('/');
    authority = detail::uri_sub(rest, 0, slash);
    path = slash == std::string_view::npos ? std::string_view{} : detail::uri_sub(rest, slash);
  } else {
    path = rest;
  }

  // -- path: "/" + export name ("NBD URI export name") --
  if (!path.empty()) {
    if (path[0] != '/') return uri_errc::path_not_absolute;
    path.remove_prefix(1);
  }
  {
    const auto n =
        detail::uri_decode_into(path, out.export_.data(), out.export_.size(), uri_errc::export_name_too_long);
    if (!n) return n.error();
    out.export_len_ = n.value();
  }

  // -- authority: [userinfo@]host[:port] (RFC 3986 §3.2) --
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    out.user = detail::uri_sub(authority, 0, at);
    authority.remove_prefix(at + 1);
    if (const auto n = detail::uri_decode_into(out.user, nullptr, out.user.size(), uri_errc::ok); !n) return n.error();
  }
  std::string_view host = authority, port;
  bool has_port = false;
  bool bracketed = false;
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return uri_errc::bad_ipv6;
    host = detail::uri_sub(authority, 1, close - 1);
    bracketed = true;
    const std::string_view after = detail::uri_sub(authority, close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return uri_errc::bad_host;
      port = detail::uri_sub(after, 1);
      has_port = true;
    }
  } else if (const auto c = authority.rfind(':'); c != std::string_view::npos) {
    host = detail::uri_sub(authority, 0, c);
    port = detail::uri_sub(authority, c + 1);
    has_port = true;
  }

  if (out.transport == uri_transport::unix_socket) {
    // "The authority field ... SHOULD NOT be used for Unix domain socket connections"; a
    // user name (for TLS) is kept, a host or port is refused.
    if (!host.empty() || has_port || bracketed) return uri_errc::host_not_allowed;
  } else if (out.transport == uri_transport::vsock) {
    if (bracketed) return uri_errc::bad_vsock_cid;
    if (!host.empty()) {
      const auto cid = detail::uri_number(host, 0xffffffffu);
      if (!cid) return uri_errc::bad_vsock_cid;
      out.vsock_cid = static_cast<std::uint32_t>(*cid);
    }
    if (has_port) {
      const auto p = detail::uri_port(port, 0xffffffffu, false);
      if (!p) return p.error();
      out.port = p.value();
    }
  } else {
    if (bracketed) {
      // IP-literal: IPv6address, or IPv6addrz with "%25" + zone (RFC 6874).
      std::string_view addr = host, zone;
      if (const auto pct = host.find('%'); pct != std::string_view::npos) {
        if (!detail::uri_sub(host, pct).starts_with("%25") || pct + 3 == host.size()) return uri_errc::bad_ipv6;
        addr = detail::uri_sub(host, 0, pct);
        zone = detail::uri_sub(host, pct + 3);
      }
      if (!detail::uri_is_ipv6(addr)) return uri_errc::bad_ipv6;
      for (const char c : zone)
        if (!detail::uri_reg_name_char(c)) return uri_errc::bad_ipv6;
      if (addr.size() + (zone.empty() ? 0 : 1) > uri_max_host) return uri_errc::host_too_long;
      std::size_t n = 0;
      for (const char c : addr) out.host_[n++] = c;
      if (!zone.empty()) {
        out.host_[n++] = '%';
        const auto z = detail::uri_decode_into(zone, out.host_.data() + n, uri_max_host - n, uri_errc::host_too_long);
        if (!z) return z.error();
        n += z.value();
      }
      out.host_len_ = n;
      out.host_kind = uri_host_kind::ipv6;
    } else if (!host.empty()) {
      for (const char c : host)
        if (!detail::uri_reg_name_char(c)) return uri_errc::bad_host;  // ':' here is a bare IPv6 address
      const auto n = detail::uri_decode_into(host, out.host_.data(), uri_max_host, uri_errc::host_too_long);
      if (!n) return n.error();
      out.host_len_ = n.value();
      out.host_kind = detail::uri_is_ipv4(out.host()) ? uri_host_kind::ipv4 : uri_host_kind::name;
    }
    out.host_[out.host_len_] = '\0';
    if (has_port) {
      // "If the port field is not present then it MUST default to ... 10809." An empty port
      // is refused rather than defaulted: it is almost always a typing mistake.
      const auto p = detail::uri_port(port, 65535, true);
      if (!p) return p.error();
      out.port = p.value();
    }
  }

  // -- query parameters --
  enum : unsigned { p_socket = 1, p_type = 2, p_hostname = 4, p_certificates = 8, p_psk = 16, p_verify = 32 };
  unsigned seen = 0;
  for (const uri_parameter prm : out.parameters()) {
    if (const auto k = detail::uri_decode_into(prm.key, nullptr, prm.key.size(), uri_errc::ok); !k) return k.error();
    // The known keys, in the order of their p_* bits.
    constexpr std::string_view keys[] = {"socket", "tls-type", "tls-hostname", "tls-certificates", "tls-psk-file",
                                         "tls-verify-peer"};
    std::string_view* const slots[] = {nullptr, &out.tls_type, &out.tls_hostname, &out.tls_certificates,
                                       &out.tls_psk_file, nullptr};
    unsigned which = 0;
    std::string_view* slot = nullptr;
    for (unsigned i = 0; i < std::size(keys); ++i)
      if (prm.key == keys[i]) {
        which = 1u << i;
        slot = slots[i];
        break;
      }
    if (prm.key.starts_with("tls")) out.has_tls_parameters_ = true;
    if (which == 0) {
      // Unknown (experimental ones start with "x-"): counted and left to the caller.
      if (const auto v = detail::uri_decode_into(prm.value, nullptr, prm.value.size(), uri_errc::ok); !v)
        return v.error();
      ++out.unknown_parameters;
      continue;
    }
    if (seen & which) return uri_errc::duplicate_parameter;
    seen |= which;
    if (which == p_socket) {
      const auto n = detail::uri_decode_into(prm.value, out.socket_.data(), out.socket_.size(),
                                             uri_errc::socket_too_long, true);
      if (!n) return n.error();
      out.socket_len_ = n.value();
    } else if (which == p_verify) {
      // The NBD URI spec's 0/1, and libnbd's false/true.
      if (prm.value == "0" || prm.value == "false") out.tls_verify_peer = false;
      else if (prm.value == "1" || prm.value == "true") out.tls_verify_peer = true;
      else return uri_errc::bad_tls_verify_peer;
    } else {
      if (const auto v = detail::uri_decode_into(prm.value, nullptr, prm.value.size(), uri_errc::ok); !v)
        return v.error();
      *slot = prm.value;
    }
  }
  const bool seen_socket = (seen & p_socket) != 0;

  if (out.transport == uri_transport::unix_socket) {
    if (!seen_socket || out.socket_len_ == 0) return uri_errc::socket_missing;
  } else if (seen_socket) {
    return uri_errc::socket_not_allowed;
  }
  return uri_errc::ok;
}

/// Parses `text` into a new uri (returned by value: max_string + about 520 bytes).
[[nodiscard]] constexpr uri_result<uri> parse_uri(std::string_view text) noexcept {
  uri u;
  if (const uri_errc e = parse_uri(text, u); e != uri_errc::ok) return e;
  return u;
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
