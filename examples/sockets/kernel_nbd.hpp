// SPDX-License-Identifier: MIT
// The Linux kernel's NBD driver as a peer: the calls that hand it connected sockets, for
// nbdwire-client attach (a remote export as /dev/nbdN) and nbdwire-server --device (a local
// backend as /dev/nbdN over a socketpair). Only I/O lives here: what the kernel is told comes
// from nbdwire::kernel_device_config_for() (nbdwire/kernel.hpp).
//
// Two interfaces, as the kernel offers them:
//  - generic netlink, family "nbd" (linux/nbd-netlink.h, Linux 4.12 and later): CONNECT
//    hands over every socket and returns at once; the device lives until DISCONNECT, and
//    RECONFIGURE replaces dead sockets; the "nbd_mc_group" multicast group reports LINK_DEAD;
//  - the ioctl interface (linux/nbd.h), the fallback: NBD_SET_SOCK per socket, then a thread
//    or process that stays inside NBD_DO_IT for as long as the device is connected.
#pragma once

#include <cerrno>   // errno
#include <cstdint>  // fixed-width integers
#include <span>     // sockets
#include <string>   // device paths, messages
#include <vector>   // device lists

#include "nbdwire/kernel.hpp"

namespace examples::kernel {

/// Whether this build can talk to the kernel's NBD driver at all (a Linux build).
bool supported();

/// 3 for "/dev/nbd3" (or "nbd3"); fails with a message for anything else.
int device_index(const std::string& path);
std::string device_path(int index);
/// "cannot open PATH: reason", with a hint when the device does not exist.
std::string open_error(const std::string& path, int err = errno);

/// What CONNECT (or the ioctls) tell the kernel besides the sockets.
struct device_settings {
  nbdwire::kernel_device_config dev;
  std::uint64_t timeout_s = 0;            ///< --timeout: a request unanswered this long fails (0: the kernel's default)
  std::uint64_t dead_conn_timeout_s = 0;  ///< --dead-conn-timeout: wait this long for RECONFIGURE before failing I/O
  bool disconnect_on_close = false;       ///< NBD_CFLAG_DISCONNECT_ON_CLOSE
  std::string backend;                    ///< NBD_ATTR_BACKEND_IDENTIFIER (shown in /sys/block/nbdN/backend)
};

/// A device as NBD_CMD_STATUS (or /sys/block) reports it.
struct device_status {
  int index = 0;
  bool connected = false;
};

/// A generic netlink socket bound to the kernel's "nbd" family. Every call fails with a
/// message naming the command and the kernel's errno.
class netlink {
 public:
  /// The family resolved, or an invalid object when the kernel has none (nbd.ko not loaded,
  /// or a kernel before 4.12): the caller falls back to the ioctls.
  static netlink open();
  /// An object that is not valid(): for a caller told to use the ioctls.
  static netlink invalid() { return netlink(); }
  netlink(netlink&& o) noexcept
      : fd_(o.fd_), family_(o.family_), group_(o.group_), seq_(o.seq_), mcast_fd_(o.mcast_fd_) {
    o.fd_ = o.mcast_fd_ = -1;
  }
  netlink& operator=(netlink&&) = delete;
  netlink(const netlink&) = delete;
  ~netlink();
  [[nodiscard]] bool valid() const { return fd_ >= 0 && family_ != 0; }

  /// NBD_CMD_CONNECT: `index` (-1: the first free device) takes `sockets`; returns the
  /// device's index. The kernel holds its own references to the sockets: the caller may
  /// close its descriptors afterwards.
  int connect(int index, std::span<const int> sockets, const device_settings& s);
  /// NBD_CMD_RECONFIGURE: dead connections of device `index` are replaced by `sockets`; the
  /// kernel checks `s.backend` against the one CONNECT named.
  void reconfigure(int index, std::span<const int> sockets, const device_settings& s);
  /// NBD_CMD_DISCONNECT.
  void disconnect(int index);
  /// NBD_CMD_STATUS for one device, or every device (index -1).
  std::vector<device_status> status(int index = -1);

  /// Joins "nbd_mc_group" on a socket of its own; its descriptor, to poll for LINK_DEAD.
  int subscribe_link_dead();
  /// After subscribe_link_dead() polled readable: the indexes of devices that lost a
  /// connection (NBD_CMD_LINK_DEAD), possibly none.
  std::vector<int> read_link_dead();

 private:
  netlink() = default;
  std::vector<std::uint8_t> transact(std::vector<std::uint8_t>& msg, const char* what);
  std::vector<std::uint8_t> message(std::uint8_t cmd) const;

  int fd_ = -1;
  std::uint16_t family_ = 0;
  std::uint32_t group_ = 0;  // nbd_mc_group's id
  std::uint32_t seq_ = 1;
  int mcast_fd_ = -1;
};

/// The ioctl interface on an open /dev/nbdN: size, block size, flags, timeout and each
/// socket. Then do_it() blocks until the device is disconnected (its return: 0, or the
/// errno NBD_DO_IT ended with), and clear() releases the sockets.
void ioctl_configure(int dev_fd, std::span<const int> sockets, const device_settings& s);
int ioctl_do_it(int dev_fd);
void ioctl_clear(int dev_fd);
/// NBD_DISCONNECT on the device at `path` (the process inside NBD_DO_IT then returns).
void ioctl_disconnect(const std::string& path);

/// Whether /sys/block/nbdN says the device is connected (a pid, or a backend), for a kernel
/// without the netlink family; and the devices the kernel has (/sys/block/nbd*).
bool sysfs_connected(int index);
std::vector<int> sysfs_devices();
/// The device's size in bytes (/sys/block/nbdN/size), 0 when unknown.
std::uint64_t sysfs_size(int index);
/// /sys/block/nbdN/backend: NBD_ATTR_BACKEND_IDENTIFIER as its owner set it (untrusted text).
std::string sysfs_backend(int index);
/// /sys/block/nbdN/pid: the process inside NBD_DO_IT (ioctl interface), empty otherwise.
std::string sysfs_pid(int index);

}  // namespace examples::kernel
