// SPDX-License-Identifier: MIT
// TLS for the socket examples (nbdwire-server, nbdwire-client, nbdwire-fuse), with GnuTLS, as
// every other NBD implementation uses: X.509 certificates in nbdkit's directory layout, or
// pre-shared keys in psktool's file format. The protocol machines never see TLS: after their
// `start_tls` event the adapter builds a tls_session on the socket, hands it the bytes it
// already received after STARTTLS (a pipelined ClientHello, or garbage that fails the
// handshake), runs the handshake and calls the machine's tls_started(); from then on every
// byte goes through recv() and send() here.
//
// Only TLS 1.2 and 1.3 are offered (the peers still accept 1.0 and 1.1). Built only when
// GnuTLS was found (NBDWIRE_EXAMPLES_TLS); otherwise make_tls_session() throws a failure that
// says so.
#pragma once

#include <cstddef>  // std::byte, std::size_t
#include <memory>   // std::unique_ptr
#include <span>     // early bytes
#include <string>   // paths, messages

namespace examples {

struct tls_settings {
  bool server = false;
  /// X.509: a directory with ca-cert.pem, and server-cert.pem + server-key.pem (server) or,
  /// optionally, client-cert.pem + client-key.pem (client), as nbdkit and libnbd lay it out.
  std::string certificates;
  /// PSK: a file of "username:hexkey" lines, as psktool writes it.
  std::string psk_file;
  std::string username;  ///< client, PSK: whose key to use
  /// Client, X.509: the name the server's certificate must carry (the URI's host, or
  /// tls-hostname=); empty with verify_peer: only the chain is checked.
  std::string hostname;
  /// Client: verify the server's certificate (always on unless tls-verify-peer=false).
  /// Server, X.509: require a client certificate signed by the CA (--tls-verify-peer).
  bool verify_peer = true;

  [[nodiscard]] bool psk() const { return !psk_file.empty(); }
};

/// One TLS session on a connected socket. Works on blocking sockets (each call blocks) and on
/// non-blocking ones (calls return `again`; wants_write() says which way to wait).
class tls_session {
 public:
  virtual ~tls_session() = default;
  enum class status { done, again, failed };
  /// Runs the handshake as far as the socket allows.
  virtual status handshake() = 0;
  /// Like recv(2): bytes read, 0 when the peer closed the TLS session, or -1 with errno
  /// EAGAIN (wait, see wants_write()) or EIO (see error()).
  virtual long recv(void* buf, std::size_t len) = 0;
  /// Like send(2): bytes taken (at most one 16 KiB record), or -1 with errno EAGAIN or EIO.
  /// After EAGAIN the same bytes must be offered again.
  virtual long send(const void* buf, std::size_t len) = 0;
  /// After `again`: true when the socket must become writable, false when readable.
  [[nodiscard]] virtual bool wants_write() const = 0;
  /// Bytes buffered inside the session, decrypted or read ahead from the socket: recv() makes
  /// progress on them without the socket saying it is readable.
  [[nodiscard]] virtual std::size_t pending() const = 0;
  /// What failed, worded for the user ("certificate verification failed: ...").
  [[nodiscard]] virtual const std::string& error() const = 0;
  /// What was negotiated, for log lines ("TLS1.3, X.509").
  [[nodiscard]] virtual std::string description() const = 0;
  /// Sends close_notify (best effort; never blocks a non-blocking socket).
  virtual void bye() = 0;
};

/// Credentials loaded once (a server shares them between its connections).
class tls_credentials {
 public:
  virtual ~tls_credentials() = default;
  [[nodiscard]] virtual const tls_settings& settings() const = 0;
};

/// True when this build has TLS (GnuTLS).
bool tls_available();

/// Loads certificates or keys. Throws examples::failure, worded for the user, when they
/// cannot be loaded (or when the build has no TLS).
std::shared_ptr<const tls_credentials> load_tls_credentials(const tls_settings& s);

/// Starts a session on `fd`; `early` are bytes already received after STARTTLS or its ACK,
/// given to TLS first (copied). Throws examples::failure when GnuTLS refuses.
std::unique_ptr<tls_session> make_tls_session(std::shared_ptr<const tls_credentials> creds, int fd,
                                              std::span<const std::byte> early);

}  // namespace examples
