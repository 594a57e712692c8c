// SPDX-License-Identifier: MIT
// TLS for the socket examples, with GnuTLS (see tls.hpp). The transport is the socket itself,
// read through a pull function that first gives GnuTLS the bytes the adapter received after
// STARTTLS: those belong to TLS, never to NBD. Once bulk data flows it reads ahead: GnuTLS
// asks for a record's 5-byte header, then for its body, so a 1 MiB WRITE over TLS was 128
// recv() calls; the pull function then fills a 64 KiB buffer per recv() and serves GnuTLS
// from it (pending() counts those bytes, so no caller waits on a socket that has nothing).
#include "tls.hpp"

#include "common.hpp"

#if NBDWIRE_EXAMPLES_TLS

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>        // poll: the pull timeout
#include <sys/socket.h>  // recv, send
#include <sys/stat.h>    // stat: which certificate files exist

#include <cerrno>   // errno
#include <cstring>  // std::memcpy
#include <fstream>  // the PSK file
#include <vector>   // early bytes

namespace examples {

namespace {

// TLS 1.2 and 1.3 only; the PSK key exchanges are added for PSK (TLS 1.2 needs them named).
constexpr const char* priority_x509 = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
constexpr const char* priority_psk = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK:+PSK";

bool exists(const std::string& path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0;
}

[[noreturn]] void fail_gnutls(const std::string& what, int rc) { fail(what + ": " + gnutls_strerror(rc)); }

class credentials final : public tls_credentials {
 public:
  explicit credentials(const tls_settings& s) : s_(s) {
    if (s_.psk()) load_psk();
    else load_x509();
  }
  ~credentials() override {
    if (x509_) gnutls_certificate_free_credentials(x509_);
    if (psk_server_) gnutls_psk_free_server_credentials(psk_server_);
    if (psk_client_) gnutls_psk_free_client_credentials(psk_client_);
  }
  credentials(const credentials&) = delete;
  credentials& operator=(const credentials&) = delete;

  [[nodiscard]] const tls_settings& settings() const override { return s_; }

  void attach(gnutls_session_t session) const {
    int rc = 0;
    if (x509_) rc = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, x509_);
    else if (psk_server_) rc = gnutls_credentials_set(session, GNUTLS_CRD_PSK, psk_server_);
    else rc = gnutls_credentials_set(session, GNUTLS_CRD_PSK, psk_client_);
    if (rc < 0) fail_gnutls("TLS credentials", rc);
  }

 private:
  void load_x509() {
    if (s_.certificates.empty()) fail("TLS needs certificates (a directory) or a PSK file");
    int rc = gnutls_certificate_allocate_credentials(&x509_);
    if (rc < 0) fail_gnutls("TLS credentials", rc);
    const std::string dir = s_.certificates + "/";
    const std::string ca = dir + "ca-cert.pem";
    const bool need_ca = !s_.server || s_.verify_peer;
    if (exists(ca)) {
      rc = gnutls_certificate_set_x509_trust_file(x509_, ca.c_str(), GNUTLS_X509_FMT_PEM);
      if (rc < 0) fail_gnutls("cannot load " + ca, rc);
      if (rc == 0) fail("no certificate in " + ca);
    } else if (need_ca) {
      fail("cannot load " + ca + ": no such file");
    }
    const std::string who = s_.server ? "server" : "client";
    const std::string cert = dir + who + "-cert.pem", key = dir + who + "-key.pem";
    if (s_.server || exists(cert)) {
      rc = gnutls_certificate_set_x509_key_file(x509_, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM);
      if (rc < 0) fail_gnutls("cannot load " + cert + " and " + key, rc);
    }
  }

  void load_psk() {
    if (s_.server) {
      if (!exists(s_.psk_file)) fail("cannot load " + s_.psk_file + ": no such file");
      int rc = gnutls_psk_allocate_server_credentials(&psk_server_);
      if (rc < 0) fail_gnutls("TLS credentials", rc);
      rc = gnutls_psk_set_server_credentials_file(psk_server_, s_.psk_file.c_str());
      if (rc < 0) fail_gnutls("cannot load " + s_.psk_file, rc);
      return;
    }
    if (s_.username.empty()) fail("TLS with a PSK needs a username (nbds://USER@...)");
    std::ifstream f(s_.psk_file);
    if (!f) fail("cannot load " + s_.psk_file + ": " + std::strerror(errno));
    std::string line, key;
    while (std::getline(f, line)) {
      const auto colon = line.find(':');
      if (colon != std::string::npos && line.compare(0, colon, s_.username) == 0 && colon == s_.username.size())
        key = line.substr(colon + 1);
    }
    if (key.empty()) fail("no key for user '" + s_.username + "' in " + s_.psk_file);
    int rc = gnutls_psk_allocate_client_credentials(&psk_client_);
    if (rc < 0) fail_gnutls("TLS credentials", rc);
    const gnutls_datum_t k{reinterpret_cast<unsigned char*>(key.data()), static_cast<unsigned>(key.size())};
    rc = gnutls_psk_set_client_credentials(psk_client_, s_.username.c_str(), &k, GNUTLS_PSK_KEY_HEX);
    if (rc < 0) fail_gnutls("bad key for user '" + s_.username + "' in " + s_.psk_file, rc);
  }

  tls_settings s_;
  gnutls_certificate_credentials_t x509_ = nullptr;
  gnutls_psk_server_credentials_t psk_server_ = nullptr;
  gnutls_psk_client_credentials_t psk_client_ = nullptr;
};

class session final : public tls_session {
 public:
  session(std::shared_ptr<const tls_credentials> c, int fd, std::span<const std::byte> early)
      : creds_(std::move(c)), fd_(fd), in_(early.begin(), early.end()), in_end_(early.size()) {
    const auto& cr = static_cast<const credentials&>(*creds_);
    const tls_settings& s = cr.settings();
    int rc = gnutls_init(&s_, (s.server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK);
    if (rc < 0) fail_gnutls("TLS session", rc);
    rc = gnutls_priority_set_direct(s_, s.psk() ? priority_psk : priority_x509, nullptr);
    if (rc < 0) fail_gnutls("TLS priorities", rc);
    cr.attach(s_);
    if (!s.psk()) {
      if (s.server) {
        if (s.verify_peer) gnutls_certificate_server_set_request(s_, GNUTLS_CERT_REQUIRE);
      } else if (s.verify_peer) {
        // The chain against ca-cert.pem and, when known, the host name (RFC 6125).
        gnutls_session_set_verify_cert(s_, s.hostname.empty() ? nullptr : s.hostname.c_str(), 0);
        if (!s.hostname.empty())
          (void)gnutls_server_name_set(s_, GNUTLS_NAME_DNS, s.hostname.data(), s.hostname.size());
      }
    }
    gnutls_transport_set_ptr(s_, this);
    gnutls_transport_set_push_function(s_, &session::push);
    gnutls_transport_set_pull_function(s_, &session::pull);
    gnutls_transport_set_pull_timeout_function(s_, &session::pull_timeout);
  }
  ~session() override { gnutls_deinit(s_); }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  status handshake() override {
    for (;;) {
      const int rc = gnutls_handshake(s_);
      if (rc == GNUTLS_E_SUCCESS) return status::done;
      if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) return status::again;
      if (!gnutls_error_is_fatal(rc)) continue;  // a warning alert
      error_ = describe_failure(rc);
      (void)gnutls_alert_send_appropriate(s_, rc);  // tell the peer why (best effort)
      return status::failed;
    }
  }

  long recv(void* buf, std::size_t len) override {
    for (;;) {
      const ssize_t n = gnutls_record_recv(s_, buf, len);
      if (n >= 0) return static_cast<long>(n);
      if (n == GNUTLS_E_INTERRUPTED) continue;
      if (n == GNUTLS_E_AGAIN) return errno = EAGAIN, -1;
      // A peer that closes the socket without close_notify (most NBD peers do after DISC).
      if (n == GNUTLS_E_PREMATURE_TERMINATION) return 0;
      if (n == GNUTLS_E_FATAL_ALERT_RECEIVED)  // e.g. a client certificate refused after TLS 1.3's handshake
        error_ = std::string("TLS receive: the peer sent the alert '") + gnutls_alert_get_name(gnutls_alert_get(s_)) + "'";
      else
        error_ = std::string("TLS receive: ") + gnutls_strerror(static_cast<int>(n));
      return errno = EIO, -1;
    }
  }

  long send(const void* buf, std::size_t len) override {
    for (;;) {
      const ssize_t n = gnutls_record_send(s_, buf, len);
      if (n >= 0) return static_cast<long>(n);
      if (n == GNUTLS_E_INTERRUPTED) continue;
      if (n == GNUTLS_E_AGAIN) return errno = EAGAIN, -1;
      error_ = std::string("TLS send: ") + gnutls_strerror(static_cast<int>(n));
      return errno = peer_gone_ ? EPIPE : EIO, -1;
    }
  }

  [[nodiscard]] bool wants_write() const override { return gnutls_record_get_direction(s_) == 1; }
  [[nodiscard]] std::size_t pending() const override {
    return gnutls_record_check_pending(s_) + (in_end_ - in_at_);
  }
  [[nodiscard]] const std::string& error() const override { return error_; }
  [[nodiscard]] std::string description() const override {
    const char* v = gnutls_protocol_get_name(gnutls_protocol_get_version(s_));
    const bool psk = gnutls_auth_get_type(s_) == GNUTLS_CRD_PSK;
    return std::string(v ? v : "TLS") + (psk ? ", PSK" : ", X.509");
  }
  void bye() override { (void)gnutls_bye(s_, GNUTLS_SHUT_WR); }

 private:
  std::string describe_failure(int rc) const {
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
      const unsigned st = gnutls_session_get_verify_cert_status(s_);
      gnutls_datum_t out{};
      std::string why = "certificate verification failed";
      if (gnutls_certificate_verification_status_print(st, GNUTLS_CRT_X509, &out, 0) == 0) {
        why += ": " + std::string(reinterpret_cast<const char*>(out.data), out.size);
        gnutls_free(out.data);
      }
      return why;
    }
    const tls_settings& s = static_cast<const credentials&>(*creds_).settings();
    const bool psk = s.psk();
    // A TLS 1.3 server that wants a client certificate it did not get closes the connection;
    // the client sees that during its handshake or right after, depending on timing.
    if (!s.server && !psk &&
        (rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR || rc == GNUTLS_E_PREMATURE_TERMINATION))
      return "TLS handshake failed: the server closed the connection (does it require a client certificate? "
             "client-cert.pem and client-key.pem belong in the tls-certificates directory)";
    // A GnuTLS server that finds no key for the user, or a wrong one, may just close.
    if (psk && (rc == GNUTLS_E_DECRYPTION_FAILED || rc == GNUTLS_E_FATAL_ALERT_RECEIVED ||
                rc == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER || rc == GNUTLS_E_KEYFILE_ERROR ||
                rc == GNUTLS_E_PREMATURE_TERMINATION))
      return std::string("PSK rejected (wrong key or unknown user): ") + gnutls_strerror(rc);
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
      return std::string("TLS handshake failed: the peer sent the alert '") +
             gnutls_alert_get_name(gnutls_alert_get(s_)) + "'";
    return std::string("TLS handshake failed: ") + gnutls_strerror(rc);
  }

  static ssize_t push(gnutls_transport_ptr_t p, const void* data, std::size_t len) {
    auto* self = static_cast<session*>(p);
    for (;;) {
      const ssize_t n = ::send(self->fd_, data, len, MSG_NOSIGNAL);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) self->peer_gone_ = true;
      gnutls_transport_set_errno(self->s_, errno == EWOULDBLOCK ? EAGAIN : errno);
      return -1;
    }
  }

  static ssize_t pull(gnutls_transport_ptr_t p, void* data, std::size_t len) {
    auto* self = static_cast<session*>(p);
    if (self->in_at_ == self->in_end_) {
      if (!self->reading_ahead_ && len >= read_ahead_from) {
        self->reading_ahead_ = true;  // bulk data: from now on, read ahead
        self->in_.resize(read_ahead_size);
      }
      if (!self->reading_ahead_) return self->receive(data, len);
      const ssize_t n = self->receive(self->in_.data(), self->in_.size());
      if (n <= 0) return n;
      self->in_at_ = 0;
      self->in_end_ = static_cast<std::size_t>(n);
    }
    const std::size_t n = std::min(len, self->in_end_ - self->in_at_);
    std::memcpy(data, self->in_.data() + self->in_at_, n);
    self->in_at_ += n;
    return static_cast<ssize_t>(n);
  }

  /// recv() on the socket for GnuTLS: bytes, 0 at the end, or -1 with its errno set.
  ssize_t receive(void* data, std::size_t len) {
    for (;;) {
      const ssize_t n = ::recv(fd_, data, len, 0);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      gnutls_transport_set_errno(s_, errno == EWOULDBLOCK ? EAGAIN : errno);
      return -1;
    }
  }

  static int pull_timeout(gnutls_transport_ptr_t p, unsigned int ms) {
    auto* self = static_cast<session*>(p);
    if (self->in_at_ < self->in_end_) return 1;
    pollfd pfd{self->fd_, POLLIN, 0};
    const int timeout = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : static_cast<int>(ms);
    return ::poll(&pfd, 1, timeout);
  }

  std::shared_ptr<const tls_credentials> creds_;
  int fd_;
  // Bytes for GnuTLS not yet given to it: first those received after STARTTLS, then, once
  // reading ahead (see the top of this file), what each recv() brought. The 64 KiB buffer is
  // allocated at the first pull of a large record body, so a connection that only handshakes
  // and exchanges small messages never has it.
  static constexpr std::size_t read_ahead_from = 4096;
  static constexpr std::size_t read_ahead_size = 64 * 1024;
  std::vector<std::byte> in_;
  std::size_t in_at_ = 0, in_end_ = 0;
  bool reading_ahead_ = false;
  gnutls_session_t s_ = nullptr;
  bool peer_gone_ = false;
  std::string error_;
};

}  // namespace

bool tls_available() { return true; }

std::shared_ptr<const tls_credentials> load_tls_credentials(const tls_settings& s) {
  static const int init = gnutls_global_init();
  if (init < 0) fail_gnutls("GnuTLS", init);
  return std::make_shared<credentials>(s);
}

std::unique_ptr<tls_session> make_tls_session(std::shared_ptr<const tls_credentials> creds, int fd,
                                              std::span<const std::byte> early) {
  return std::make_unique<session>(std::move(creds), fd, early);
}

}  // namespace examples

#else  // no GnuTLS in this build

namespace examples {
bool tls_available() { return false; }
std::shared_ptr<const tls_credentials> load_tls_credentials(const tls_settings&) {
  fail("this build has no TLS (GnuTLS was not found when it was configured)");
}
std::unique_ptr<tls_session> make_tls_session(std::shared_ptr<const tls_credentials>, int,
                                              std::span<const std::byte>) {
  fail("this build has no TLS (GnuTLS was not found when it was configured)");
}
}  // namespace examples

#endif
