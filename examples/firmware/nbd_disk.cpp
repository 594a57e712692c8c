// SPDX-License-Identifier: MIT
// nbd_disk: the block-device shim over nbdwire's client machine. This file moves bytes between
// the firmware's transport, the machine and the caller's sector buffers; the protocol (and
// every check on requests and replies) stays in the machine.
#include "nbd_disk.hpp"

#include <nbdwire/nbdwire.hpp>

#include <algorithm>  // std::min
#include <cstring>    // std::memcpy
#include <new>        // placement new, std::launder
#include <type_traits>  // std::is_trivially_destructible_v

/// Receive buffer for everything but READ data, which goes straight into the caller's buffer.
#ifndef NBD_DISK_RX_BUFFER
#define NBD_DISK_RX_BUFFER 512
#endif

namespace {

namespace nw = nbdwire;

constexpr std::uint64_t sector = NBD_DISK_SECTOR_SIZE;
// Larger chunks are split; no step of the transport is ever asked for more than this.
constexpr std::uint64_t max_io = 1u << 30;

/// The whole state of the shim. Constant-initialized (all zero), so it lands in .bss and
/// needs no start-up code; the machine is constructed in place by nbd_disk_open().
struct disk_state {
  alignas(nw::client) unsigned char machine[sizeof(nw::client)];
  const nbd_transport* t;
  bool open, ready, broken;
  int broken_status;
  long detail;
  std::uint32_t polls;  // tick source when the transport has none
  std::uint32_t chunk_sectors;
  // the transfer in progress: buffers map export offsets base.. onto the caller's memory
  std::uint64_t base;
  std::byte* read_dst;
  const std::byte* write_src;
  int op_status;
  std::size_t rx_head, rx_tail;
  std::byte rx[NBD_DISK_RX_BUFFER];
  // The parsed root path: host and export name (nbdwire/uri.hpp bounds them). Raw storage
  // like the machine's, so the state stays all zero; constructed by parse_root_path().
  alignas(nw::uri) unsigned char root[sizeof(nw::uri)];
};

disk_state g;

nw::client& machine() noexcept { return *std::launder(reinterpret_cast<nw::client*>(g.machine)); }
const nw::uri& root() noexcept { return *std::launder(reinterpret_cast<nw::uri*>(g.root)); }
static_assert(std::is_trivially_destructible_v<nw::uri>, "the root path is never destroyed");

std::size_t clamp_io(std::uint64_t n) noexcept { return static_cast<std::size_t>(std::min(n, max_io)); }

/// Records a failure. Transport, timeout and protocol failures leave the connection in an
/// unknown state, so they stick until nbd_disk_close().
int fail(int status, long detail = 0) noexcept {
  g.detail = detail;
  if (status == NBD_DISK_TRANSPORT || status == NBD_DISK_TIMEOUT || status == NBD_DISK_PROTOCOL) {
    g.broken = true;
    g.broken_status = status;
  }
  return status;
}

int protocol_failure(nw::errc e) noexcept {
  // The only way an EXPORT_NAME is refused is a close (GO fell back, or an old server).
  if (e == nw::errc::export_name_refused) return fail(NBD_DISK_REFUSED, static_cast<long>(e));
  // A close in the middle of a message loses data, but it is the connection that failed.
  if (nw::category(e) == nw::error_category::peer_closed) return fail(NBD_DISK_TRANSPORT, static_cast<long>(e));
  return fail(NBD_DISK_PROTOCOL, static_cast<long>(e));
}

// ---- moving bytes -------------------------------------------------------------------------------

int on_event(const nw::event& ev) noexcept {
  nw::client& m = machine();
  switch (ev.kind) {
    case nw::event_kind::greeting: {
      // Block sizes only: names and descriptions would cost RAM and tell the disk nothing.
      const auto r = m.go(root().export_name(), nw::info_request::block_size);
      return r ? 0 : fail(NBD_DISK_PROTOCOL, static_cast<long>(r.error()));
    }
    case nw::event_kind::ready: g.ready = true; return 0;
    case nw::event_kind::option_refused: return fail(NBD_DISK_REFUSED, static_cast<long>(ev.reply));
    case nw::event_kind::payload:
      // READ data that arrived together with its reply header.
      if (g.read_dst) std::memcpy(g.read_dst + (ev.offset - g.base), ev.data.data(), ev.data.size());
      return 0;
    case nw::event_kind::reply:
      if (ev.status != nw::nbd_error::ok && g.op_status == NBD_DISK_OK) {
        g.op_status = ev.status == nw::nbd_error::eperm ? NBD_DISK_READ_ONLY : NBD_DISK_IO;
        g.detail = static_cast<long>(ev.status);
      }
      return 0;
    case nw::event_kind::disconnected:
    case nw::event_kind::closed: return fail(NBD_DISK_TRANSPORT);
    case nw::event_kind::failed: return protocol_failure(ev.error);
    default: return 0;  // info, option_done: nothing the disk needs
  }
}

/// Feeds the receive buffer to the machine until it wants more.
int feed(bool& progress) noexcept {
  nw::client& m = machine();
  for (;;) {
    const nw::bytes_view in{g.rx + g.rx_head, g.rx_tail - g.rx_head};
    const auto r = m.receive(in);
    g.rx_head += r.consumed;
    if (g.rx_head == g.rx_tail) g.rx_head = g.rx_tail = 0;
    if (r.consumed != 0) progress = true;
    if (r.ev.kind == nw::event_kind::need_more || r.ev.kind == nw::event_kind::blocked) return 0;
    progress = true;
    if (const int rc = on_event(r.ev); rc != 0) return rc;
    if (!r.call_again()) return 0;  // a terminal event the disk did not treat as an error
  }
}

int transport_ended(long n) noexcept {
  if (n != NBD_TRANSPORT_CLOSED) return fail(NBD_DISK_TRANSPORT, n);
  const nw::event ev = machine().on_eof();
  if (ev.kind == nw::event_kind::failed) return protocol_failure(ev.error);
  return fail(NBD_DISK_TRANSPORT, n);
}

/// Sends what the machine queued; WRITE data goes straight from the caller's buffer.
int send_some(bool& progress) noexcept {
  nw::client& m = machine();
  for (;;) {
    const nw::bytes_view out = m.pending_output();
    long n = 0;
    if (!out.empty()) {
      n = g.t->send(g.t->ctx, out.data(), out.size());
      if (n > 0) m.consume_output(static_cast<std::size_t>(n));
    } else if (const auto p = m.pending_payload(); p && g.write_src) {
      n = g.t->send(g.t->ctx, g.write_src + (p->offset - g.base), clamp_io(p->length));
      if (n > 0) (void)m.consume_payload(static_cast<std::uint64_t>(n));
    } else {
      return 0;
    }
    if (n < 0) return transport_ended(n);
    if (n == 0) return 0;
    progress = true;
  }
}

/// Receives what the transport has; READ data goes straight into the caller's buffer.
int receive_some(bool& progress) noexcept {
  nw::client& m = machine();
  if (g.rx_head == g.rx_tail) {
    long n = 0;
    const auto due = m.incoming_payload();
    if (due && g.read_dst) {
      n = g.t->recv(g.t->ctx, g.read_dst + (due->offset - g.base), clamp_io(due->length));
      if (n > 0) (void)m.consume_incoming_payload(static_cast<std::uint64_t>(n));
    } else {
      n = g.t->recv(g.t->ctx, g.rx, sizeof g.rx);
      if (n > 0) g.rx_tail = static_cast<std::size_t>(n);
    }
    if (n < 0) return transport_ended(n);
    if (n == 0) return 0;
    progress = true;
  }
  return feed(progress);  // also completes a READ whose data was received directly
}

std::uint32_t now() noexcept { return g.t->ticks ? g.t->ticks(g.t->ctx) : g.polls; }

/// Steps the transport until `step` reports done (1) or a failure (< 0). `step` runs before
/// every round, so it can queue requests as room frees up. Without `receive`, output only.
template <class Step>
int run(Step step, bool receive = true) noexcept {
  std::uint32_t idle_since = now();
  for (;;) {
    if (g.broken) return g.broken_status;
    if (const int s = step(); s != 0) return s > 0 ? NBD_DISK_OK : s;
    bool progress = false;
    if (const int rc = send_some(progress); rc != 0) return rc;
    if (receive) {
      if (const int rc = receive_some(progress); rc != 0) return rc;
    }
    if (progress) {
      idle_since = now();
      continue;
    }
    const bool sending = !machine().pending_output().empty() || machine().pending_payload().has_value();
    g.t->poll(g.t->ctx, sending ? NBD_POLL_SEND : 0u);
    ++g.polls;
    if (g.t->timeout != 0 && now() - idle_since >= g.t->timeout) return fail(NBD_DISK_TIMEOUT);
  }
}

// ---- the root path ------------------------------------------------------------------------------

/// nbd://HOST[:PORT][/EXPORT] (an NBD URI without TLS), parsed into root(). 0 or the
/// nbdwire::uri_errc that refuses it (uri_errc::unknown_scheme for a URI this shim cannot
/// use: another transport, TLS, or no host).
long parse_root_path(const char* p) noexcept {
  nw::uri& u = *::new (static_cast<void*>(g.root)) nw::uri;
  if (const nw::uri_errc e = nw::parse_uri(p, u); e != nw::uri_errc::ok) return static_cast<long>(e);
  if (u.transport != nw::uri_transport::tcp || u.wants_tls() || u.host().empty())
    return static_cast<long>(nw::uri_errc::unknown_scheme);
  return 0;
}

// ---- transfers ----------------------------------------------------------------------------------

int check_usable() noexcept {
  if (!g.open) return NBD_DISK_NOT_OPEN;
  if (g.broken) return g.broken_status;
  return NBD_DISK_OK;
}

/// READ or WRITE of `count` sectors, split into requests of at most chunk_sectors and kept in
/// flight as far as the machine's cookie table and outbox allow.
int transfer(nw::command cmd, std::uint64_t lba, std::uint32_t count, std::byte* dst, const std::byte* src) noexcept {
  if (const int rc = check_usable(); rc != 0) return rc;
  const std::uint64_t sectors = machine().negotiated().export_size / sector;
  if ((!dst && !src) || lba > sectors || count > sectors - lba) return fail(NBD_DISK_RANGE);
  if (count == 0) return NBD_DISK_OK;
  if (cmd == nw::command::write && machine().negotiated().read_only()) return fail(NBD_DISK_READ_ONLY);

  g.base = lba * sector;
  g.read_dst = dst;
  g.write_src = src;
  g.op_status = NBD_DISK_OK;
  g.detail = 0;
  std::uint64_t next = lba;
  std::uint32_t left = count;
  const int rc = run([&]() noexcept -> int {
    while (left != 0 && g.op_status == NBD_DISK_OK) {
      const std::uint32_t n = std::min(left, g.chunk_sectors);
      const auto r = machine().submit(cmd, 0, next * sector, std::uint64_t{n} * sector);
      if (!r) {
        // Full: wait for replies. Anything else is refused for good, but requests already in
        // flight still own the buffer, so their replies are awaited before returning.
        if ((r.error() == nw::errc::too_many_in_flight || r.error() == nw::errc::outbox_full) && machine().in_flight() != 0)
          break;
        g.op_status = NBD_DISK_PROTOCOL;
        g.detail = static_cast<long>(r.error());
        break;
      }
      next += n;
      left -= n;
    }
    return machine().in_flight() == 0 && (left == 0 || g.op_status != NBD_DISK_OK) ? 1 : 0;
  });
  g.read_dst = nullptr;
  g.write_src = nullptr;
  if (rc != NBD_DISK_OK) return rc;
  return g.op_status;
}

}  // namespace

// ---- the C interface ----------------------------------------------------------------------------

extern "C" {

int nbd_disk_open(const char* root_path, const nbd_transport* t) {
  if (g.open) return NBD_DISK_BUSY;
  if (!root_path || !t || !t->send || !t->recv || !t->poll || !t->connect) return NBD_DISK_BAD_PATH;
  if (const long e = parse_root_path(root_path); e != 0) {
    g.detail = e;
    return NBD_DISK_BAD_PATH;
  }

  g.t = t;
  g.ready = g.broken = false;
  g.detail = 0;
  g.rx_head = g.rx_tail = 0;
  g.read_dst = nullptr;
  g.write_src = nullptr;
  ::new (static_cast<void*>(g.machine)) nw::client(nw::client_config{});
  if (const int c = t->connect(t->ctx, root().host_c_str(), root().tcp_port()); c < 0) {
    machine().~client();
    return fail(NBD_DISK_TRANSPORT, c);
  }
  g.open = true;

  int rc = run([]() noexcept { return g.ready ? 1 : 0; });
  if (rc == NBD_DISK_OK) {
    const nw::negotiated& n = machine().negotiated();
    // Sector I/O needs 512-byte alignment to be enough ("Size constraints").
    if (n.block_size.minimum > sector) rc = fail(NBD_DISK_UNSUPPORTED, static_cast<long>(n.block_size.minimum));
    const std::uint64_t max =
        std::min<std::uint64_t>(nw::max_request_length(n, nw::command::read), nw::default_max_payload);
    g.chunk_sectors = static_cast<std::uint32_t>(max / sector);
  }
  if (rc != NBD_DISK_OK) {
    const long detail = g.detail;
    if (t->close) t->close(t->ctx);
    machine().~client();
    g.open = false;
    g.detail = detail;
  }
  return rc;
}

int nbd_disk_get_info(nbd_disk_info* info) {
  if (!g.open) return NBD_DISK_NOT_OPEN;
  if (!info) return NBD_DISK_RANGE;
  const nw::negotiated& n = machine().negotiated();
  info->sectors = n.export_size / sector;
  info->export_bytes = n.export_size;
  info->max_sectors_per_request = g.chunk_sectors;
  info->read_only = n.read_only() ? 1 : 0;
  info->can_flush = n.has(nw::transmission_flag::send_flush) ? 1 : 0;
  return NBD_DISK_OK;
}

int nbd_disk_read(std::uint64_t lba, std::uint32_t count, void* buf) {
  return transfer(nw::command::read, lba, count, static_cast<std::byte*>(buf), nullptr);
}

int nbd_disk_write(std::uint64_t lba, std::uint32_t count, const void* buf) {
  return transfer(nw::command::write, lba, count, nullptr, static_cast<const std::byte*>(buf));
}

int nbd_disk_flush(void) {
  if (const int rc = check_usable(); rc != 0) return rc;
  if (!machine().negotiated().has(nw::transmission_flag::send_flush)) return NBD_DISK_OK;
  const auto r = machine().flush();
  if (!r) return fail(NBD_DISK_PROTOCOL, static_cast<long>(r.error()));
  g.op_status = NBD_DISK_OK;
  g.detail = 0;
  const int rc = run([]() noexcept { return machine().in_flight() == 0 ? 1 : 0; });
  return rc != NBD_DISK_OK ? rc : g.op_status;
}

int nbd_disk_close(void) {
  if (!g.open) return NBD_DISK_NOT_OPEN;
  int rc = NBD_DISK_OK;
  if (!g.broken) {
    // A soft disconnect: DISC, sent in full before the connection goes. Nothing is read: no
    // request is in flight, and the server may close as soon as it has the DISC.
    if (const auto r = machine().disconnect(); !r) {
      rc = fail(NBD_DISK_PROTOCOL, static_cast<long>(r.error()));
    } else {
      rc = run([]() noexcept { return machine().pending_output().empty() ? 1 : 0; }, false);
    }
  }
  if (g.t->close) g.t->close(g.t->ctx);
  machine().~client();
  g.open = false;
  return rc;
}

long nbd_disk_detail(void) { return g.detail; }

const char* nbd_disk_strerror(int status) {
  switch (status) {
    case NBD_DISK_OK: return "ok";
    case NBD_DISK_BAD_PATH: return "root path is not nbd://HOST[:PORT][/EXPORT]";
    case NBD_DISK_BUSY: return "a disk is already open";
    case NBD_DISK_NOT_OPEN: return "no disk is open";
    case NBD_DISK_TRANSPORT: return "connection failed or closed";
    case NBD_DISK_TIMEOUT: return "timed out";
    case NBD_DISK_PROTOCOL: return "protocol error";
    case NBD_DISK_REFUSED: return "export refused by the server";
    case NBD_DISK_RANGE: return "sectors out of range";
    case NBD_DISK_READ_ONLY: return "export is read-only";
    case NBD_DISK_IO: return "server reported an I/O error";
    case NBD_DISK_UNSUPPORTED: return "export block size above 512 bytes";
    default: return "unknown status";
  }
}

std::size_t nbd_disk_ram_bytes(void) { return sizeof g; }

}  // extern "C"
