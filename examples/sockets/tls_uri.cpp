// SPDX-License-Identifier: MIT
// The client side of TLS for the connecting tools (see tls_uri.hpp).
#include "tls_uri.hpp"

#include <poll.h>  // poll: the handshake on a non-blocking socket

#include <chrono>   // the handshake deadline
#include <cstdlib>  // std::getenv: default certificate directories
#include <mutex>    // the credentials cache
#include <utility>  // std::pair
#include <vector>   // the credentials cache

#include "nbdwire/uri.hpp"  // parse_uri

namespace examples {

namespace {

std::string decoded(std::string_view raw) {
  std::string s(nbdwire::uri_decoded_size(raw), '\0');
  if (!s.empty() && !nbdwire::uri_decode(raw, std::span<char>(s.data(), s.size()))) return {};
  return s;
}

bool has_ca(const std::string& dir) {
  struct stat st{};
  return stat((dir + "/ca-cert.pem").c_str(), &st) == 0;
}

/// libnbd's default certificate directories, in its order, when tls-certificates= is absent.
std::string default_certificates() {
  std::vector<std::string> dirs;
  if (const char* home = std::getenv("HOME"); home && *home) {
    dirs.push_back(std::string(home) + "/.pki/libnbd");
    dirs.push_back(std::string(home) + "/.config/pki/libnbd");
  }
  dirs.emplace_back("/etc/pki/libnbd");
  for (const auto& d : dirs)
    if (has_ca(d)) return d;
  return {};
}

/// A stable key for one set of settings (the credentials cache).
std::string settings_key(const tls_settings& s) {
  return s.certificates + '\0' + s.psk_file + '\0' + s.username + '\0' + s.hostname + '\0' +
         (s.verify_peer ? "1" : "0");
}

}  // namespace

client_uri parse_client_uri(std::string_view text) {
  auto bad = [&](std::string_view why) -> client_uri {
    fail("invalid NBD URI '" + std::string(text) + "': " + std::string(why));
  };
  const auto r = nbdwire::parse_uri(text);
  if (r.error() == nbdwire::uri_errc::unknown_scheme)
    return bad("unknown scheme '" + std::string(text.substr(0, text.find(':'))) + "'");
  if (!r) return bad(nbdwire::to_string(r.error()));
  const nbdwire::uri& u = r.value();
  if (u.transport == nbdwire::uri_transport::vsock) return bad("vsock is not supported by this client");
  // Other query parameters are for other tools; the standard lets a client ignore them.
  client_uri out;
  out.export_name = std::string(u.export_name());
  if (u.transport == nbdwire::uri_transport::unix_socket) {
    out.where.is_unix = true;
    out.where.path = std::string(u.socket());
  } else {
    out.where.host = u.host().empty() ? "localhost" : std::string(u.host());
    out.where.port = u.tcp_port();
  }
  if (!u.tls) {
    if (!u.has_tls_parameters()) return out;
    // nbd:// with credentials: TLS if the server offers it. Other TLS parameters alone would
    // be silently unused.
    if (u.tls_certificates.empty() && u.tls_psk_file.empty())
      return bad("tls-* parameters need an nbds:// URI, or tls-certificates= or tls-psk-file= to try TLS");
    out.opportunistic = true;
  } else {
    out.tls = true;
  }
  tls_settings& s = out.tls_config;
  s.verify_peer = u.tls_verify_peer.value_or(true);
  s.certificates = decoded(u.tls_certificates);
  s.psk_file = decoded(u.tls_psk_file);
  s.username = decoded(u.user);
  out.user_raw = std::string(u.user);
  for (const auto p : u.parameters()) {
    if (!p.key.starts_with("tls-")) continue;
    if (p.key != "tls-certificates" && p.key != "tls-psk-file" && p.key != "tls-hostname" &&
        p.key != "tls-verify-peer" && p.key != "tls-type")
      return bad("unknown TLS parameter '" + std::string(p.key) + "'");
    out.query_raw.append("&").append(p.key).append("=").append(p.value);
  }
  // The name the server's certificate must carry: tls-hostname=, else the TCP host. A Unix
  // socket has no host, so without tls-hostname= only the chain is verified.
  if (!u.tls_hostname.empty())
    s.hostname = decoded(u.tls_hostname);
  else if (!out.where.is_unix)
    s.hostname = out.where.host;

  const std::string type = decoded(u.tls_type);
  if (!s.certificates.empty() && !s.psk_file.empty())
    return bad("tls-certificates and tls-psk-file cannot be used together");
  if (type == "anon") return bad("anonymous TLS (tls-type=anon) is not supported: use x509 or psk");
  if (!type.empty() && type != "x509" && type != "psk") return bad("unknown tls-type '" + type + "'");
  if (type == "psk" && s.psk_file.empty()) return bad("tls-type=psk needs tls-psk-file=FILE");
  if (type == "x509" && !s.psk_file.empty()) return bad("tls-type=x509 cannot use tls-psk-file");
  if (s.psk_file.empty() && s.certificates.empty()) {
    s.certificates = default_certificates();
    if (s.certificates.empty())
      return bad("TLS needs tls-certificates=DIR (with ca-cert.pem) or tls-psk-file=FILE "
                 "(no certificates in ~/.pki/libnbd, ~/.config/pki/libnbd or /etc/pki/libnbd)");
  }
  if (s.psk() && s.username.empty()) return bad("TLS with a PSK needs a user name (nbds://USER@...)");
  return out;
}

nbdwire::client_tls tls_policy(const client_uri& u) {
  return u.tls ? nbdwire::client_tls::require : u.opportunistic ? nbdwire::client_tls::opportunistic : nbdwire::client_tls::off;
}

std::shared_ptr<const tls_credentials> client_credentials(const tls_settings& s) {
  static std::mutex mu;
  static std::vector<std::pair<std::string, std::shared_ptr<const tls_credentials>>> loaded;
  const std::string key = settings_key(s);
  std::lock_guard lock(mu);
  for (const auto& [k, c] : loaded)
    if (k == key) return c;
  auto c = load_tls_credentials(s);
  loaded.emplace_back(key, c);
  return c;
}

std::unique_ptr<tls_session> start_client_tls(int fd, nbdwire::client& m, std::span<const std::byte> early,
                                              std::shared_ptr<const tls_credentials> creds, int timeout_ms) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::milliseconds(timeout_ms);
  const auto wait = [&](short events) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    pollfd p{fd, events, 0};
    const int rc = left > 0 ? ::poll(&p, 1, static_cast<int>(left)) : 0;
    if (rc < 0 && errno != EINTR) fail_errno("poll");
    if (rc == 0) fail("TLS handshake: the server did not answer within " + std::to_string(timeout_ms / 1000) + " s");
  };
  // 1. What the machine queued before the ACK goes out in plaintext.
  for (;;) {
    const auto st = send_queued(fd, m);
    if (st == send_status::done) break;
    if (st != send_status::would_block) fail_errno("send to the server");
    wait(POLLOUT);
  }
  if (!creds) fail("internal: TLS started without credentials");
  // 2. The bytes after the ACK are TLS's.
  auto s = make_tls_session(std::move(creds), fd, early);
  // 3. The handshake.
  for (;;) {
    const auto st = s->handshake();
    if (st == tls_session::status::done) break;
    if (st == tls_session::status::failed) fail(s->error());
    wait(s->wants_write() ? POLLOUT : POLLIN);
  }
  // 4. From now on every byte goes through the session.
  if (const auto r = m.tls_started(); !r) fail("internal: " + std::string(nbdwire::to_string(r.error())));
  return s;
}

std::optional<std::string> tls_failure_text(nbdwire::errc e) {
  switch (e) {
    case nbdwire::errc::tls_oldstyle_server:
      return "the server uses oldstyle negotiation, which cannot do TLS (the nbds URI requires it)";
    case nbdwire::errc::tls_server_not_fixed_newstyle:
      return "the server does not use fixed newstyle negotiation, so it cannot do TLS (the nbds URI requires it)";
    case nbdwire::errc::starttls_refused:
      return "the server refused STARTTLS: it does not offer TLS (the nbds URI requires it)";
    default: return std::nullopt;
  }
}

}  // namespace examples
