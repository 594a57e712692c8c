// SPDX-License-Identifier: MIT
// nbdwire-fuse: the handshake on a blocking socket, STARTTLS first for nbds URIs.
#include "handshake.hpp"

#include <cerrno>   // errno values
#include <cstddef>  // std::ptrdiff_t
#include <span>     // byte spans
#include <string>   // messages

#include "../sockets/common.hpp"

namespace fuse_adapter {

using nbdwire::event_kind;

/// Runs the handshake on a blocking socket (with timeouts) up to `ready`, STARTTLS first for
/// an nbds URI (`tls` then holds the session). Returns what was negotiated; `leftover` gets
/// the bytes received after `ready` (none from a sane server). `trace`: --debug.
nbdwire::negotiated handshake(int fd, const examples::client_uri& u, std::vector<std::byte>& leftover,
                              std::unique_ptr<examples::tls_session>& tls, nbdwire::client_trace trace) {
  const std::string& export_name = u.export_name;
  nbdwire::client_config cfg;
  cfg.trace = trace;
  cfg.tls = examples::tls_policy(u);
  // Loaded before anything is sent: a certificate problem is reported first.
  const auto creds = examples::may_use_tls(u) ? examples::client_credentials(u.tls_config) : nullptr;
  nbdwire::client c(cfg);
  std::vector<std::byte> buf(64 * 1024);
  // The events of `in`: GO on the greeting, failures worded for the user. Stops at `ready`
  // and at `start_tls`.
  const auto handle = [&](std::span<const std::byte> in) {
    return examples::feed(c, in, [&](const nbdwire::event& ev) {
      switch (ev.kind) {
        case event_kind::greeting:
          if (!c.go(export_name)) examples::fail("cannot send NBD_OPT_GO");
          return true;
        case event_kind::option_refused:
          if (examples::tls_required_refusal(ev)) examples::fail(examples::tls_required_text);
          examples::fail("the server refused export '" + export_name + "' (" +
                         std::string(nbdwire::to_string(ev.reply)) + ")" +
                         (ev.data.empty() ? std::string() : ": " + std::string(nbdwire::as_chars(ev.data))));
        case event_kind::ready: return false;  // the I/O thread's machine takes it from here
        case event_kind::start_tls: return false;  // TLS takes over the socket
        case event_kind::failed:
          if (const auto t = examples::tls_failure_text(ev.error)) examples::fail(*t);
          examples::fail("handshake: " + std::string(nbdwire::to_string(ev.error)));
        case event_kind::closed:
        case event_kind::disconnected: examples::fail("the server ended the handshake");
        default: return true;
      }
    });
  };
  for (bool ready = false;;) {
    const auto sent = tls ? examples::send_queued_tls(*tls, c) : examples::send_queued(fd, c);
    if (sent != examples::send_status::done) {
      if (tls && errno == EIO) examples::fail(tls->error());
      if (tls && (errno == EPIPE || errno == ECONNRESET)) examples::fail(examples::tls_closed_text);
      examples::fail_errno("handshake: send");
    }
    if (ready) return c.negotiated();
    const ssize_t got = examples::receive_some(fd, tls.get(), buf.data(), buf.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) examples::fail("handshake: the server did not answer within 30 s");
    if (got < 0 && tls && errno == EIO) {
      if (tls->error().find("alert") != std::string::npos) examples::fail(tls->error());
      examples::fail(examples::tls_closed_text);
    }
    if (got < 0) examples::fail_errno("handshake: receive");
    if (got == 0 && tls) examples::fail(examples::tls_closed_text);
    if (got == 0) {
      const auto ev = c.on_eof();
      if (ev.kind == event_kind::failed && ev.error == nbdwire::errc::export_name_refused)
        examples::fail("the server has no export '" + export_name + "'");
      examples::fail("the server closed the connection during the handshake");
    }
    const std::span<const std::byte> in(buf.data(), static_cast<std::size_t>(got));
    auto r = handle(in);
    if (r.ev.kind == event_kind::start_tls) {
      // The rest of this read is the TLS layer's; the machine then greets again, over TLS.
      tls = examples::start_client_tls(fd, c, in.subspan(r.consumed), creds);
      r = handle({});
      if (r.ev.kind == event_kind::ready) examples::fail("internal: ready without options");
      continue;
    }
    if (r.ev.kind == event_kind::ready) {
      ready = true;
      leftover.assign(in.begin() + static_cast<std::ptrdiff_t>(r.consumed), in.end());
    }
  }
}

}  // namespace fuse_adapter
