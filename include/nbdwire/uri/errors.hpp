// SPDX-License-Identifier: MIT
// nbdwire URI: why a URI was refused (uri_errc, stable numbers) and uri_result<T>, the value
// or the error every URI function returns (uri.hpp).
#pragma once

#include <cstdint>      // std::uint8_t
#include <string_view>  // names
#include <utility>      // std::move

#include "nbdwire/errors.hpp"  // contract_violation
#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

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

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
