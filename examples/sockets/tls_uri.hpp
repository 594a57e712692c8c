// SPDX-License-Identifier: MIT
// The client side of TLS for the tools that connect (nbdwire-client, nbdwire-fuse): an NBD
// URI with its TLS settings (nbds://, nbds+unix://, the tls-* query parameters and the user
// name), credentials loaded once per process, the blocking STARTTLS step, and sending a
// machine's queued output through a tls_session. The protocol stays in the machine: this only
// moves bytes and words failures for the user.
//
// nbds means TLS is required (client_tls::require). The server's certificate is always
// verified against the CA of tls-certificates= (over Unix sockets too), and its host name
// when one is known (tls-hostname=, else the TCP host), unless tls-verify-peer=false. A
// tls-psk-file= selects pre-shared keys instead; the URI's user is the PSK user name.
#pragma once

#include <array>        // the staging record
#include <cerrno>       // errno
#include <cstddef>      // std::byte
#include <cstring>      // std::memcpy
#include <memory>       // std::shared_ptr, std::unique_ptr
#include <optional>     // failure texts
#include <span>         // early bytes
#include <string>       // std::string
#include <string_view>  // URI text

#include "common.hpp"
#include "nbdwire/client.hpp"
#include "tls.hpp"

namespace examples {

/// An NBD URI as the connecting tools take it: nbd_uri (where, export) and, for nbds, TLS.
struct client_uri : nbd_uri {
  bool tls = false;  ///< nbds or nbds+unix: TLS is required
  /// nbd:// or nbd+unix:// with tls-certificates= or tls-psk-file=: TLS when the server offers
  /// it, plaintext when it refuses STARTTLS (client_tls::opportunistic, libnbd's "allow").
  bool opportunistic = false;
  tls_settings tls_config;  ///< for tls: certificates or PSK file, user, host name, verify_peer
  /// The TLS parameters as given (still percent-encoded), for URIs printed back.
  std::string user_raw, query_raw;
};

/// Parses an NBD URI (nbd, nbds, nbd+unix, nbds+unix); fails with a message for the user.
/// nbds requires TLS; nbd with credentials (tls-certificates= or tls-psk-file=) tries it.
client_uri parse_client_uri(std::string_view text);

/// The client_config::tls policy for `u`: require for nbds, opportunistic for nbd with
/// credentials, off otherwise.
nbdwire::client_tls tls_policy(const client_uri& u);

/// True when `u` may use TLS (credentials are needed).
inline bool may_use_tls(const client_uri& u) { return u.tls || u.opportunistic; }

/// Credentials for `s`, loaded at the first call and shared afterwards (copies with several
/// connections load them once). Thread-safe. Fails with the loader's message.
std::shared_ptr<const tls_credentials> client_credentials(const tls_settings& s);

/// The blocking STARTTLS step, after the machine's `start_tls` event: sends what the machine
/// has queued in plaintext, starts a TLS session on `fd` that gets `early` (bytes already
/// received after the ACK) first, runs the handshake (at most `timeout_ms`) and calls
/// m.tls_started(). Works on blocking and non-blocking sockets. Fails with tls_session's
/// message ("certificate verification failed: ...", "PSK rejected ...").
std::unique_ptr<tls_session> start_client_tls(int fd, nbdwire::client& m, std::span<const std::byte> early,
                                              std::shared_ptr<const tls_credentials> creds, int timeout_ms = 30000);

/// The user's words for a handshake that failed over TLS policy (tls_oldstyle_server,
/// tls_server_not_fixed_newstyle, starttls_refused), or nothing for other errors.
std::optional<std::string> tls_failure_text(nbdwire::errc e);

/// The message for an option refused with NBD_REP_ERR_TLS_REQD.
inline constexpr const char* tls_required_text = "the server requires TLS (use nbds:// or nbds+unix://)";

/// The message for a server that closed the connection right after the TLS handshake, before
/// transmission (TLS 1.3 checks a client certificate after the client's handshake is done).
inline constexpr const char* tls_closed_text =
    "the server closed the connection after the TLS handshake (does it require a client certificate? "
    "client-cert.pem and client-key.pem belong in the tls-certificates directory)";

/// True when an option_refused event is the server's NBD_REP_ERR_TLS_REQD.
inline bool tls_required_refusal(const nbdwire::event& ev) {
  return ev.kind == nbdwire::event_kind::option_refused && ev.reply == nbdwire::reply_type::err_tls_reqd;
}

/// Reads like recv(2) from the TLS session when there is one, else from the socket. A TLS
/// failure is -1 with errno EIO (tls->error() says what).
inline long receive_some(int fd, tls_session* tls, void* buf, std::size_t len) {
  if (tls) return tls->recv(buf, len);
  return ::recv(fd, buf, len, 0);
}

/// send_queued() (common.hpp) through TLS: the same contract, one record (at most 16 KiB)
/// per send. Small segments (headers) are gathered into one record; a retry after EAGAIN
/// offers the same leading bytes again, as GnuTLS requires, since nothing was consumed.
template <class Machine, class Map, class OnSent>
send_status send_queued_tls(tls_session& tls, Machine& m, Map&& map, OnSent&& on_sent) {
  constexpr std::size_t record = 16 * 1024;
  std::array<std::byte, record> staging;
  for (;;) {
    nbdwire::send_plan<16> plan(m, map);
    if (plan.empty()) return plan.stopped_at() ? send_status::stopped : send_status::done;
    long w = 0;
    if (plan.size() != 0) {
      const auto segs = plan.segments();
      const std::byte* from = segs[0].base;
      std::size_t n = segs[0].len;
      if (n < record && segs.size() > 1) {
        n = 0;
        for (const auto& seg : segs) {
          const std::size_t take = std::min(seg.len, record - n);
          std::memcpy(staging.data() + n, seg.base, take);
          n += take;
          if (n == record) break;
        }
        from = staging.data();
      }
      w = tls.send(from, n);
      if (w < 0) return errno == EAGAIN ? send_status::would_block : send_status::failed;
    }
    if (!plan.advance(m, static_cast<std::size_t>(w), on_sent)) {
      errno = EPROTO;
      return send_status::failed;
    }
  }
}

/// The same for output without payloads (handshakes).
template <class Machine>
send_status send_queued_tls(tls_session& tls, Machine& m) {
  return send_queued_tls(tls, m, [](const nbdwire::payload_span&) { return nbdwire::bytes_view{}; },
                         [](const nbdwire::payload_span&) {});
}

}  // namespace examples
