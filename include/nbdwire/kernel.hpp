// SPDX-License-Identifier: MIT
// nbdwire: handing a connection to the Linux kernel's NBD driver. Pure functions, no Linux
// headers: what a client asks for in a handshake whose socket the kernel will carry, and
// what the kernel must be told about the export afterwards (size, block size, flags), from
// `negotiated`. The same facts serve both directions: a client attaching a remote export as
// /dev/nbdN (nbd-client's model), and a server handing one end of a socketpair to the kernel
// so that a local backend appears as /dev/nbdN (SPDK's model).
//
// The kernel driver (drivers/block/nbd.c) speaks transmission only, with the compact request
// header and simple replies: it cannot read structured reply chunks or extended headers, and
// it sends no BLOCK_STATUS. It never does TLS itself (nbd-client -x runs a user-space relay).
#pragma once

#include <cstdint>  // fixed-width integers

#include "nbdwire/client/states.hpp"  // client_config
#include "nbdwire/constants.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"         // negotiated

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// What the kernel's driver is told about an export (NBD_ATTR_SIZE_BYTES,
/// NBD_ATTR_BLOCK_SIZE_BYTES, NBD_ATTR_SERVER_FLAGS; or NBD_SET_SIZE, NBD_SET_BLKSIZE and
/// NBD_SET_FLAGS with the ioctl interface).
struct kernel_device_config {
  /// The export size rounded down to block_size: the kernel ignores a partial last block,
  /// so the device is this size (a 100,001,000-byte export shows as 100,000,768 bytes).
  std::uint64_t size = 0;
  /// The device's logical block size: a power of two from 512 to the page size (the kernel
  /// refuses anything else). The kernel aligns every request to it, so it is never below
  /// the server's minimum block size ("Block size constraints").
  std::uint32_t block_size = 512;
  /// The transmission flags, as the kernel takes them: it reads HAS_FLAGS, READ_ONLY,
  /// SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES (6.11 and later), CAN_MULTI_CONN and
  /// ROTATIONAL, and ignores the rest.
  std::uint16_t transmission_flags = transmission_flag::has_flags;
};

/// `base` with everything the kernel cannot carry turned off: no extended headers, no
/// structured replies (so no metadata contexts), no TLS. Every handshake style still works.
[[nodiscard]] constexpr client_config kernel_client_config(client_config base = {}) noexcept {
  base.request_extended_headers = false;
  base.request_structured_replies = false;
  base.meta_contexts = {};
  base.tls = client_tls::off;
  return base;
}

/// What to tell the kernel about the export `n` describes, or why it cannot take it:
///  - kernel_needs_simple_replies: structured replies or extended headers were negotiated
///    (the handshake was not made with kernel_client_config(), or a server configuration
///    that offers them was handed over);
///  - kernel_tls: the handshake ran over TLS, which the kernel does not do;
///  - kernel_block_size_unsupported: the server's minimum block size is above `page_size`
///    (the kernel's largest logical block size) or `wanted_block_size` is not a power of two
///    from 512 to `page_size`;
///  - kernel_export_too_small: less than one block.
/// `wanted_block_size` (0: the smallest that works) raises the block size, for a device
/// that should look like a 4K-sector disk. `read_only` adds READ_ONLY to the flags.
[[nodiscard]] constexpr result<kernel_device_config> kernel_device_config_for(const negotiated& n,
                                                                             std::uint32_t page_size = 4096,
                                                                             std::uint32_t wanted_block_size = 0,
                                                                             bool read_only = false) noexcept {
  if (n.structured_replies || n.extended_headers) return errc::kernel_needs_simple_replies;
  if (n.tls) return errc::kernel_tls;
  const auto pow2 = [](std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; };
  if (!pow2(page_size) || page_size < 512) return errc::invalid_config;
  std::uint64_t block = 512;
  if (wanted_block_size != 0) {
    if (!pow2(wanted_block_size) || wanted_block_size < 512 || wanted_block_size > page_size)
      return errc::kernel_block_size_unsupported;
    block = wanted_block_size;
  }
  // The minimum is a power of two ("Block size constraints"): the first power of two at
  // or above it is the minimum itself.
  while (block < n.block_size.minimum) block *= 2;
  if (block > page_size) return errc::kernel_block_size_unsupported;
  kernel_device_config k;
  k.block_size = static_cast<std::uint32_t>(block);
  k.size = n.export_size & ~(block - 1);
  if (k.size == 0) return errc::kernel_export_too_small;
  k.transmission_flags = static_cast<std::uint16_t>(n.transmission_flags | transmission_flag::has_flags |
                                                    (read_only ? transmission_flag::read_only : 0));
  return k;
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
