// SPDX-License-Identifier: MIT
// nbdwire-client: one connection (a socket and an nbdwire::client machine), the handshake,
// and the blocking event loop every command runs on. The loop only moves bytes: it feeds the
// machine and sends what it queues. READ data is received straight into the request's buffer
// when the machine says it comes next (or, copying into a file, spliced from the socket into
// the file); WRITE data goes from the request's buffer into sendmsg() beside its header (or,
// from a regular file, with sendfile() after it). Over TLS (nbds://) the loop runs STARTTLS
// when the machine asks for it, and from then on every byte goes through the TLS session:
// no splice() or sendfile() then, the buffer paths instead.
#pragma once

#include <array>       // error messages by tag
#include <cstddef>     // std::byte
#include <cstdint>     // fixed-width integers
#include <functional>  // payload source and sink
#include <memory>      // std::unique_ptr
#include <optional>    // description
#include <string>      // std::string
#include <vector>      // the input buffer

#include "../common.hpp"
#include "../tls_uri.hpp"
#include "nbdwire/client.hpp"
#include "options.hpp"

namespace client_app {

using examples::fail;
using nbdwire::event_kind;

/// Requests one transfer keeps in flight; tags given to the machine are below this.
constexpr std::size_t max_window = 16;

std::string errc_text(nbdwire::errc e);

class connection {
 public:
  /// `creds`: for a connection whose machine requires TLS (null otherwise). With `debug`,
  /// every state change of the machine is logged to stderr (--debug).
  connection(int fd, const nbdwire::client_config& cfg,
             std::shared_ptr<const examples::tls_credentials> creds = nullptr, bool debug = false);
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  nbdwire::client& machine() { return m_; }
  /// The socket, for a caller that waits on several connections at once (poll).
  [[nodiscard]] int fd() const { return fd_; }
  /// Input that is readable without the socket saying so (decrypted TLS bytes): a caller
  /// polling fd() must not wait while this is true.
  [[nodiscard]] bool input_buffered() const { return tls_ && tls_->pending() > 0; }

  /// Where a WRITE payload's bytes are: `data` (p.length bytes in memory), or a regular
  /// `file` at `file_offset`, sent with sendfile() so they never pass through user space.
  struct payload_origin {
    const std::byte* data = nullptr;
    int file = -1;
    off_t file_offset = 0;
  };
  /// Where WRITE payload bytes come from, asked for each part of a payload as it is sent.
  std::function<payload_origin(const nbdwire::payload_span&)> payload_source;
  /// Where READ payload may be received directly, or nullptr to take it through receive().
  std::function<std::byte*(const nbdwire::payload_span&)> payload_sink;
  /// A regular file READ payload goes straight into, at this offset of it: spliced from the
  /// socket through a pipe, never copied through user space. Asked before payload_sink.
  struct file_target {
    int file = -1;
    off_t offset = 0;
  };
  std::function<file_target(const nbdwire::payload_span&)> payload_file;

  /// Queues request `c` with `tag` (below max_window), sending queued output first when the
  /// outbox is full. Fails, naming `what` ("READ"), when the machine refuses it.
  void submit(nbdwire::command c, std::uint64_t offset, std::uint64_t length, std::uint64_t tag, const char* what);

  /// The server's message from an error chunk for the request tagged `tag`, taken once.
  std::string take_error_message(std::uint64_t tag);

  /// The next event other than need_more, blocked and error_chunk (kept for
  /// take_error_message(); the reply carries the status), doing socket I/O as needed. A
  /// timeout (timeout_ms >= 0) returns a need_more event.
  nbdwire::event next(int timeout_ms = -1);

  [[nodiscard]] bool output_pending() const { return !m_.pending_output().empty() || m_.pending_payload(); }

  /// --timeout: a wait with no deadline of its own (next(), flush()) that sees nothing move for
  /// this long fails with a message naming the option (0: wait for ever).
  void set_idle_timeout(int ms) { idle_timeout_ms_ = ms > 0 ? ms : -1; }
  [[noreturn]] void fail_idle() const;

  /// Sends everything queued; gives up silently after timeout_ms (>= 0) without progress.
  void flush(int timeout_ms = -1);

  /// Ends the session politely: NBD_CMD_DISC in transmission, NBD_OPT_ABORT during the
  /// handshake, then close. Never throws; used on error paths too.
  void shut_down() noexcept;

  /// Hands the socket over (to the kernel's NBD driver, after the handshake): blocking
  /// again, owned by the caller, nothing more sent or closed by this object. Fails when
  /// input arrived that the machine has not read (the new owner would miss it) or TLS is on.
  int release();

 private:
  nbdwire::event end_of_input();
  bool send_some();
  ssize_t receive_into_file(const file_target& t, std::uint64_t length);
  bool send_from_file(const payload_origin& src, const nbdwire::payload_span& pay);
  ssize_t receive(void* dst, std::size_t len);
  [[noreturn]] void fail_io(const std::string& what, int err);
  void start_tls();

  static void debug_transition(void* context, nbdwire::client_state from, nbdwire::client_trigger on,
                               nbdwire::client_state to) noexcept;

  int fd_;
  int idle_timeout_ms_ = -1;  // --timeout; -1: none
  unsigned id_;               // 1, 2, ... in the order connections are made: --debug names them
  nbdwire::client m_;
  std::vector<std::byte> buf_;
  std::size_t start_ = 0, end_ = 0;
  bool eof_ = false;
  bool aborting_ = false;     // NBD_OPT_ABORT sent: the server may close
  bool no_sendfile_ = false;  // the input file cannot be spliced: payloads go through a buffer
  bool no_splice_ = false;    // READ payload into a file goes through a buffer, not a pipe
  int pipe_[2] = {-1, -1};    // receive_into_file(): socket -> pipe -> file
  int pipe_size_ = 0;
  std::array<std::string, max_window> messages_;  // by tag
  std::shared_ptr<const examples::tls_credentials> creds_;
  std::unique_ptr<examples::tls_session> tls_;  // once STARTTLS is done: all I/O goes through it
};

// ---- the handshake -----------------------------------------------------------------------------

/// What GO (or the greeting, for oldstyle) taught us beyond negotiated().
struct export_facts {
  std::string requested_name;
  std::optional<std::string> canonical_name;  ///< NBD_INFO_NAME, when the server sent it
  std::optional<std::string> description;     ///< NBD_INFO_DESCRIPTION, when sent
  /// NBD_INFO_BLOCK_SIZE as the server sent it; nothing when it sent none.
  std::optional<nbdwire::block_size_constraints> block_size;
  bool contexts_listed = false;       ///< LIST_META_CONTEXT was asked for and answered
  std::vector<std::string> contexts;  ///< LIST_META_CONTEXT's answer, when asked for
};

/// The base:allocation context alone, for open_connection().
inline constexpr std::string_view allocation_context[] = {"base:allocation"};

/// A connection to `uri`, configured by the options (1997 framing); GO selects `contexts`
/// (caller-owned, they must outlive the connection), the first one as query index 0.
std::unique_ptr<connection> open_connection(const examples::client_uri& uri, const options& o,
                                            std::span<const std::string_view> contexts = {});

/// Handshake up to transmission with GO (all info requested); EXPORT_NAME as fallback.
/// With `list_contexts`, first asks which metadata contexts the export has (fixed newstyle
/// only; a refusal just means none are listed).
export_facts negotiate(connection& c, const std::string& name, bool list_contexts = false);

/// The next handshake event; silence at the start means a server of the 1997 framing.
nbdwire::event handshake_event(connection& c);

std::string refusal_text(const nbdwire::event& ev);
[[noreturn]] void fail_event(const nbdwire::event& ev, const std::string& during);

/// "READ of N bytes at offset X failed: EIO (message)".
std::string request_error(const char* what, std::uint64_t offset, std::uint64_t length, nbdwire::nbd_error e,
                          const std::string& message);

}  // namespace client_app
