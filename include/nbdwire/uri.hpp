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
// Parts: uri/errors.hpp (uri_errc, uri_result), uri/syntax.hpp (percent-decoding, hosts,
// ports); this header holds the uri type and parse_uri().
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
#include "nbdwire/uri/errors.hpp"  // uri_errc, uri_result
#include "nbdwire/uri/syntax.hpp"  // percent-decoding, hosts, ports
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

enum class uri_transport : std::uint8_t { tcp, unix_socket, vsock };
enum class uri_host_kind : std::uint8_t {
  none,  ///< no host given (TCP: the client picks a default, e.g. localhost)
  name,  ///< a registered name (DNS)
  ipv4,  ///< dotted-decimal IPv4 address
  ipv6,  ///< IPv6 address from brackets (host() has no brackets; a zone follows '%')
};

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
