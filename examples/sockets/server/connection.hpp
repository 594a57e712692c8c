// SPDX-License-Identifier: MIT
// nbdwire-server: one client connection. Its machine, its input buffer, and the socket I/O
// that moves bytes between the two: recv() into the buffer (or WRITE data straight into a
// memory export), the machine's output out with one sendmsg() per send_plan, large file
// READs with sendfile(). Requests are carried out by requests.hpp.
#pragma once

#include <array>    // per-command counts
#include <chrono>   // handshake deadlines
#include <cstdint>  // fixed-width integers
#include <memory>   // std::unique_ptr
#include <span>     // the backends by export
#include <string>   // peer names
#include <vector>   // reused per-request storage

#include "../tls.hpp"
#include "backends.hpp"
#include "nbdwire/server.hpp"
#include "staging.hpp"

namespace nbdwire_server {

inline constexpr std::size_t input_buffer_size = 256 * 1024;
// File READs from this size on are sent with sendfile() at send time instead of pread() now:
// one copy instead of two. Smaller ones stay with pread, where the extra system call costs
// more than the copy saves.
inline constexpr std::uint64_t sendfile_min = 64 * 1024;

/// Where the data of a READ reply (or chunk) of `length` bytes is sent from.
enum class data_path {
  in_place,  ///< the export's memory (memory exports): nothing is copied
  sendfile,  ///< the file, by sendfile() when it is sent (large READs of a regular file)
  staged,    ///< read with pread() when the request is answered, into connection::staged
};

struct connection;
/// --debug: the trace (nbdwire/trace.hpp) each connection's machine reports to; its context is
/// the connection.
void debug_transition(void* context, nbdwire::server_state from, nbdwire::server_trigger on,
                      nbdwire::server_state to) noexcept;

struct connection {
  connection(int sock, const nbdwire::server_config& cfg, std::span<backend* const> backends, std::string who)
      : fd(sock),
        peer(std::move(who)),
        m(traced(cfg, this)),
        exports(cfg.exports),
        stores(backends),
        in(std::make_unique_for_overwrite<std::byte[]>(input_buffer_size)) {}
  /// A connection whose handshake is settled already (--device: the kernel has none).
  connection(int sock, const nbdwire::server_config& cfg, const nbdwire::negotiated& n,
             std::span<backend* const> backends, std::string who)
      : fd(sock),
        peer(std::move(who)),
        m(traced(cfg, this), n),
        exports(cfg.exports),
        stores(backends),
        in(std::make_unique_for_overwrite<std::byte[]>(input_buffer_size)),
        in_transmission(true) {}

  /// `cfg` with its trace, if any, reporting about this connection.
  static nbdwire::server_config traced(nbdwire::server_config cfg, connection* self) noexcept {
    if (cfg.trace.on_transition != nullptr) cfg.trace.context = self;
    return cfg;
  }

  int fd;
  std::chrono::steady_clock::time_point accepted = std::chrono::steady_clock::now();
  std::string peer;
  nbdwire::server m;
  std::span<const nbdwire::export_config> exports;  // names, by export index
  std::span<backend* const> stores;  // by export index
  // Left uninitialised: the pages an idle connection never receives into cost no memory.
  std::unique_ptr<std::byte[]> in;
  std::size_t start = 0, end = 0;  // unconsumed input in `in`
  // The WRITE whose payload is arriving: answered once its last byte is in.
  struct {
    bool active = false;
    nbdwire::request req{};
    int err = 0;  // the first storage error; the rest of the payload is dropped
  } writing;
  staging staged;                // file READ data read at request time, in reply order
  bool sendfile_active = false;  // the first payload due is partly sent by sendfile()
  bool held = false;             // input waits until output drains (receive() said blocked)
  // The last request was a WRITE large enough to be received in place: the next is likely
  // one too, so its header is read alone (its payload then goes straight to the export).
  bool header_first = false;
  bool tcp = false;          // a TCP socket: SO_RCVLOWAT is used while a payload arrives
  std::size_t lowat = 1;     // the socket's SO_RCVLOWAT
  bool finishing = false;        // DISC or end of input: send what is owed, then close
  // The socket said EAGAIN (or took less than offered): no send is tried again before epoll
  // reports it writable, which would cost a failing system call per request.
  bool send_blocked = false;
  std::uint32_t epoll_mask = 0;
  bool verbose = false;        // -v: log the handshake result and the end
  // TLS (--tls): after the machine's start_tls the ACK goes out in plaintext, then the TLS
  // handshake runs on the socket (`tls` exists, `tls_handshaking`), then every byte goes
  // through `tls`.
  std::shared_ptr<const examples::tls_credentials> tls_creds;
  std::unique_ptr<examples::tls_session> tls;
  bool tls_starting = false;     // start_tls seen: the ACK is being sent
  bool tls_handshaking = false;
  std::uint64_t requests = 0;  // requests read (for the -v line at the end)
  // Per command type (NBD_CMD_READ .. NBD_CMD_RESIZE), with the FUA and NO_HOLE flags and
  // DISC counted apart, for the -v line at the end: what a client, a kernel say, really sent.
  std::array<std::uint64_t, 9> commands{};
  std::uint64_t with_fua = 0, with_no_hole = 0, discs = 0;
  bool in_transmission = false;  // the handshake ended (event ready)
  std::string end_reason;      // how the connection ended, for that line
  // Reused for every request, so the steady state allocates nothing per request.
  std::vector<alloc_run> runs;
  std::vector<nbdwire::block_extent> extents;

  [[nodiscard]] backend& store() const { return *stores[m.negotiated().export_index]; }
  [[nodiscard]] bool output_pending() const { return !m.pending_output().empty() || m.pending_payload(); }
  [[nodiscard]] data_path path_of(std::uint64_t length) const {
    backend& b = store();
    if (b.in_place(0)) return data_path::in_place;
    if (tls) return data_path::staged;  // encrypted from user space: no sendfile()
    return b.sendfile_source() >= 0 && length >= sendfile_min ? data_path::sendfile : data_path::staged;
  }
};

/// One line on stderr about a connection.
void log(const connection& c, const std::string& what);

/// The -v summary of a connection: `N requests: READ=n WRITE=n FUA=n ...` (zero counts left
/// out; FUA counts WRITEs with NBD_CMD_FLAG_FUA, NO_HOLE WRITE_ZEROES with NO_HOLE).
[[nodiscard]] std::string describe_commands(const connection& c);

/// Runs a connection as far as it can go without blocking; `readable`: epoll reported input
/// (or a hang-up), so recv() is worth trying. False: close it now.
bool service(connection& c, bool readable);

/// What epoll should wait for on the connection after service().
std::uint32_t wanted_events(const connection& c);

}  // namespace nbdwire_server
