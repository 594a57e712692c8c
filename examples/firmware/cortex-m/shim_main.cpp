// SPDX-License-Identifier: MIT
// The shim and nothing else, for measuring what it adds to firmware: main() reaches every
// entry point through a transport defined here, so the linker keeps all of the shim. Built
// and measured, not run.
#include "../nbd_disk.hpp"

namespace {
unsigned char sector[NBD_DISK_SECTOR_SIZE];

int no_connect(void*, const char*, std::uint16_t) { return -1; }
long no_io(void*, const void*, std::size_t) { return NBD_TRANSPORT_CLOSED; }
long no_recv(void*, void*, std::size_t) { return NBD_TRANSPORT_CLOSED; }
void no_poll(void*, unsigned) {}

const nbd_transport transport{nullptr, no_connect, no_io, no_recv, no_poll, nullptr, nullptr, 100};
}  // namespace

int main() {
  nbd_disk_info info{};
  int r = nbd_disk_open("nbd://server/disk", &transport);
  r |= nbd_disk_get_info(&info);
  r |= nbd_disk_read(0, 1, sector);
  r |= nbd_disk_write(0, 1, sector);
  r |= nbd_disk_flush();
  r |= nbd_disk_close();
  return (r != 0) + static_cast<int>(nbd_disk_detail()) + static_cast<int>(nbd_disk_ram_bytes()) +
         static_cast<int>(*nbd_disk_strerror(r));
}
