// SPDX-License-Identifier: MIT
// The shim on a Cortex-M3 (QEMU mps2-an385), against an nbdwire::server in the same image.
// A loopback transport joins them through two small byte rings, so every message crosses in
// pieces; the server runs inside the transport's poll step, as a peer on the network would
// run between the firmware's polls. The server serves a 64 KiB disk whose sector 0 is an MBR.
//
// Output and exit status go through semihosting; the ctest check reads both.
#include <nbdwire/nbdwire.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

#include "../nbd_disk.hpp"
#include "semihost.hpp"

namespace {

namespace nw = nbdwire;
using semihost::print;
using semihost::print_number;

constexpr std::size_t disk_bytes = 64 * 1024;
constexpr std::size_t sectors = disk_bytes / NBD_DISK_SECTOR_SIZE;

// ---- the served disk ----------------------------------------------------------------------------

std::byte disk[disk_bytes];

/// Sector 0: one Linux partition (type 0x83) from LBA 1 to the end, and the boot signature.
constexpr std::array<std::byte, 512> make_mbr() {
  std::array<std::byte, 512> s{};
  constexpr std::size_t entry = 446;
  s[entry] = std::byte{0x80};      // active
  s[entry + 4] = std::byte{0x83};  // type
  constexpr std::uint32_t first = 1, count = sectors - 1;
  for (std::size_t i = 0; i < 4; ++i) {
    s[entry + 8 + i] = static_cast<std::byte>((first >> (8 * i)) & 0xff);
    s[entry + 12 + i] = static_cast<std::byte>((count >> (8 * i)) & 0xff);
  }
  s[510] = std::byte{0x55};
  s[511] = std::byte{0xaa};
  return s;
}
constexpr auto mbr = make_mbr();

std::byte pattern(std::size_t offset) { return static_cast<std::byte>((offset * 7 + offset / 512) & 0xff); }

void format_disk() {
  for (std::size_t i = 0; i < disk_bytes; ++i) disk[i] = pattern(i);
  std::copy(mbr.begin(), mbr.end(), disk);
}

// ---- the loopback link --------------------------------------------------------------------------

/// One direction: a byte FIFO smaller than most messages and payloads.
template <std::size_t N>
struct ring {
  std::byte buf[N];
  std::size_t head, size;

  std::size_t push(const std::byte* p, std::size_t n) {
    const std::size_t take = std::min(n, N - size);
    for (std::size_t i = 0; i < take; ++i) buf[(head + size + i) % N] = p[i];
    size += take;
    return take;
  }
  std::size_t pop(std::byte* p, std::size_t n) {
    const std::size_t take = std::min(n, size);
    for (std::size_t i = 0; i < take; ++i) p[i] = buf[(head + i) % N];
    head = (head + take) % N;
    size -= take;
    return take;
  }
  /// The bytes readable without wrapping.
  [[nodiscard]] nw::bytes_view front() const { return {buf + head, std::min(size, N - head)}; }
  void drop(std::size_t n) {
    head = (head + n) % N;
    size -= n;
  }
};

ring<700> to_server, to_client;

// ---- the server side ----------------------------------------------------------------------------

constexpr nw::export_config exports[] = {{
    .name = "disk",
    .description = "",
    .size = disk_bytes,
    .transmission_flags = nw::transmission_flag::send_flush,
    // An 8 KiB maximum makes the shim split larger transfers and keep several in flight.
    .block_size = {.minimum = 512, .preferred = 4096, .maximum = 8192},
}};

alignas(nw::server) unsigned char server_storage[sizeof(nw::server)];
nw::server& srv() { return *std::launder(reinterpret_cast<nw::server*>(server_storage)); }

struct server_log {
  bool connected, ready, disconnected, failed;
  std::uint32_t ready_option;
  nw::errc error;
  std::uint32_t reads, writes, flushes;
  nw::request write_req;  // the WRITE whose data is arriving
  std::uint64_t write_left;
  bool reply_due;         // a reply the outbox had no room for
  nw::request due;
} peer;

/// Moves queued server output into the ring; READ data comes straight from the disk.
bool server_send() {
  bool moved = false;
  for (;;) {
    const nw::bytes_view out = srv().pending_output();
    std::size_t n = 0;
    if (!out.empty()) {
      n = to_client.push(out.data(), out.size());
      srv().consume_output(n);
    } else if (const auto p = srv().pending_payload()) {
      n = to_client.push(disk + p->offset, static_cast<std::size_t>(p->length));
      (void)srv().consume_payload(n);
    }
    if (n == 0) return moved;
    moved = true;
  }
}

void answer(const nw::request& r) {
  if (!srv().reply(r)) {
    peer.reply_due = true;
    peer.due = r;
  }
}

void on_server_event(const nw::event& ev) {
  switch (ev.kind) {
    case nw::event_kind::ready:
      peer.ready = true;
      peer.ready_option = ev.option;
      break;
    case nw::event_kind::request:
      switch (ev.req.cmd()) {
        case nw::command::read: ++peer.reads; answer(ev.req); break;
        case nw::command::write:
          ++peer.writes;
          peer.write_req = ev.req;
          peer.write_left = ev.req.length;
          break;
        case nw::command::flush: ++peer.flushes; answer(ev.req); break;
        default: (void)srv().reply(ev.req, nw::nbd_error::enotsup); break;
      }
      break;
    case nw::event_kind::payload:
      std::memcpy(disk + ev.offset, ev.data.data(), ev.data.size());
      peer.write_left -= ev.data.size();
      if (peer.write_left == 0) answer(peer.write_req);
      break;
    case nw::event_kind::disconnected: peer.disconnected = true; break;
    case nw::event_kind::failed:
      peer.failed = true;
      peer.error = ev.error;
      break;
    default: break;
  }
}

/// One round of the peer: answer what arrived, send what is queued, until nothing moves.
void server_step() {
  bool moved = true;
  while (moved && peer.connected) {
    moved = server_send();
    if (peer.reply_due) {
      if (!srv().reply(peer.due)) continue;  // still full: the ring must drain first
      peer.reply_due = false;
      moved = true;
    }
    while (to_server.size != 0) {
      const auto [used, ev] = srv().receive(to_server.front());
      to_server.drop(used);
      if (used != 0) moved = true;
      if (ev.kind == nw::event_kind::need_more || ev.kind == nw::event_kind::blocked) break;
      moved = true;
      on_server_event(ev);
      if (peer.reply_due) break;
    }
  }
}

// ---- the transport the shim sees ----------------------------------------------------------------

int loop_connect(void*, const char* host, std::uint16_t port) {
  if (std::strcmp(host, "loopback") != 0 || port != 10809) return -1;
  to_server.head = to_server.size = to_client.head = to_client.size = 0;
  peer = {};
  ::new (static_cast<void*>(server_storage)) nw::server(nw::server_config{.exports = exports});
  peer.connected = true;
  return 0;
}
long loop_send(void*, const void* p, std::size_t n) {
  if (!peer.connected) return NBD_TRANSPORT_CLOSED;
  return static_cast<long>(to_server.push(static_cast<const std::byte*>(p), n));
}
long loop_recv(void*, void* p, std::size_t n) {
  if (!peer.connected) return NBD_TRANSPORT_CLOSED;
  return static_cast<long>(to_client.pop(static_cast<std::byte*>(p), n));
}
void loop_poll(void*, unsigned) { server_step(); }
void loop_close(void*) {
  server_step();  // the peer reads what was sent before the close (DISC)
  peer.connected = false;
}

const nbd_transport loopback{nullptr, loop_connect, loop_send, loop_recv, loop_poll, nullptr, loop_close, 1000};

// ---- the checks ---------------------------------------------------------------------------------

int failures = 0;

bool check(bool ok, const char* what) {
  if (!ok) {
    ++failures;
    print("FAIL: ");
    print(what);
    print("\n");
  }
  return ok;
}

bool status_ok(int s, const char* what) {
  if (s == NBD_DISK_OK) return true;
  ++failures;
  print("FAIL: ");
  print(what);
  print(": ");
  print(nbd_disk_strerror(s));
  print(" (detail ");
  print_number(static_cast<std::uint64_t>(nbd_disk_detail()));
  print(")\n");
  return false;
}

std::uint32_t le32(const std::byte* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

std::byte buf[48 * 1024];
std::byte expected[20 * 512];  // static, so the stack peak below is the shim's and the server's

// ---- stack high-water mark ----------------------------------------------------------------------

extern "C" std::uint32_t __stack_bottom[], __stack_top[];  // mps2-an385.ld
constexpr std::uint32_t stack_paint = 0xa5a5a5a5u;

/// Paints the unused stack below the caller's frame (keeping a margin for this function).
[[gnu::noinline]] void paint_stack() {
  const auto limit = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0)) - 256;
  for (volatile std::uint32_t* p = __stack_bottom; reinterpret_cast<std::uintptr_t>(p) < limit; ++p) *p = stack_paint;
}

std::size_t stack_peak() {
  const std::uint32_t* p = __stack_bottom;
  while (p < __stack_top && *p == stack_paint) ++p;
  return static_cast<std::size_t>(__stack_top - p) * sizeof *p;
}

}  // namespace

int main() {
  print("nbd_disk on Cortex-M3 (mps2-an385)\n");
  paint_stack();
  format_disk();

  if (!status_ok(nbd_disk_open("nbd://loopback/disk", &loopback), "open")) return 1;
  const bool fixed = srv().negotiated().style == nw::handshake_style::fixed_newstyle;
  const bool go = peer.ready_option == static_cast<std::uint32_t>(nw::option::go);
  check(fixed && go, "handshake is fixed newstyle with NBD_OPT_GO");
  print(fixed ? "handshake: fixed newstyle" : "handshake: other style");
  print(go ? ", NBD_OPT_GO\n" : ", not NBD_OPT_GO\n");

  nbd_disk_info info{};
  if (status_ok(nbd_disk_get_info(&info), "info")) {
    check(info.sectors == sectors && info.can_flush == 1 && info.read_only == 0, "disk geometry and flags");
    check(info.max_sectors_per_request == 16, "requests limited to the advertised 8 KiB maximum");
    print("disk: ");
    print_number(info.sectors);
    print(" sectors of 512 bytes\n");
  }

  // Sector 0: the boot signature and the first partition entry.
  if (status_ok(nbd_disk_read(0, 1, buf), "read sector 0")) {
    const unsigned sig = static_cast<unsigned>(buf[510]) << 8 | static_cast<unsigned>(buf[511]);
    const std::byte* e = buf + 446;
    print("sector 0: boot signature ");
    print_number(sig, 4);
    print(", partition 1 type ");
    print_number(static_cast<std::uint64_t>(e[4]), 2);
    print(" start ");
    print_number(le32(e + 8));
    print(" sectors ");
    print_number(le32(e + 12));
    print("\n");
    check(sig == 0x55aa, "boot signature 55aa");
    check(e[4] == std::byte{0x83} && le32(e + 8) == 1 && le32(e + 12) == sectors - 1, "partition entry");
    check(std::memcmp(buf, disk, 512) == 0, "sector 0 matches the served disk");
  }

  // 80 sectors: five requests of 16, more than the four the cookie table keeps in flight.
  if (status_ok(nbd_disk_read(40, 80, buf), "read sectors 40-119"))
    check(std::memcmp(buf, disk + 40 * 512, 80 * 512) == 0, "sectors 40-119 match the served disk");

  // Write, flush, read back, and look at the served disk itself.
  for (std::size_t i = 0; i < 20 * 512; ++i) buf[i] = static_cast<std::byte>(~i & 0xff);
  std::memcpy(expected, buf, sizeof expected);
  if (status_ok(nbd_disk_write(100, 20, buf), "write sectors 100-119") &&
      status_ok(nbd_disk_flush(), "flush")) {
    check(std::memcmp(disk + 100 * 512, expected, sizeof expected) == 0, "the server stored the write");
    std::memset(buf, 0, sizeof buf);
    if (status_ok(nbd_disk_read(99, 22, buf), "read back sectors 99-120")) {
      check(std::memcmp(buf + 512, expected, sizeof expected) == 0, "read back matches the write");
      check(buf[0] == pattern(99 * 512) && buf[21 * 512] == pattern(120 * 512), "neighbouring sectors untouched");
    }
    print("write, flush, read back: 20 sectors\n");
  }

  check(nbd_disk_read(sectors - 1, 2, buf) == NBD_DISK_RANGE, "read past the end is refused");
  check(nbd_disk_read(0, 1, buf) == NBD_DISK_OK, "the disk still works after a refused request");

  status_ok(nbd_disk_close(), "close");
  check(peer.disconnected && !peer.failed, "the server saw a clean NBD_CMD_DISC");
  check(peer.reads == 1 + 5 + 2 + 1 && peer.writes == 2 && peer.flushes == 1, "request counts seen by the server");

  print("ram: shim ");
  print_number(nbd_disk_ram_bytes());
  print(" bytes (client machine ");
  print_number(sizeof(nw::client));
  print("), server machine ");
  print_number(sizeof(nw::server));
  print(" bytes\n");
  // The server runs inside the shim's poll step, so this is both of them nested.
  print("stack: peak ");
  print_number(stack_peak());
  print(" bytes (shim with the server nested in its poll step)\n");

  print(failures == 0 ? "nbd_disk: PASS\n" : "nbd_disk: FAIL\n");
  return failures == 0 ? 0 : 1;
}
