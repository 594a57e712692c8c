// SPDX-License-Identifier: MIT
// nbdwire-server --device /dev/nbdN: an export served to this machine's kernel. A socketpair
// stands in for the network: the kernel's NBD driver gets one end (netlink CONNECT, or the
// ioctls with a thread inside NBD_DO_IT), the event loop serves the other end with a server
// machine that starts in transmission (server(cfg, negotiated)): the kernel has no
// handshake to run. Stopping disconnects the device: the kernel sends NBD_CMD_DISC, and the
// connection ends as any other does.
#pragma once

#include <string>  // the device path
#include <thread>  // NBD_DO_IT (ioctl interface)

#include "../kernel_nbd.hpp"
#include "nbdwire/server.hpp"

namespace nbdwire_server {

/// What the kernel is told a handshake would have settled: `cfg.exports[0]` with simple
/// replies and the compact request header.
nbdwire::negotiated device_negotiated(const nbdwire::server_config& cfg);

class kernel_device {
 public:
  kernel_device() = default;
  kernel_device(const kernel_device&) = delete;
  kernel_device& operator=(const kernel_device&) = delete;
  ~kernel_device();

  /// Hands the kernel its end of a new socketpair as `path`; returns the server's end
  /// (non-blocking, close-on-exec). `backend` names the export in /sys/block/nbdN/backend.
  int start(const std::string& path, bool use_ioctl, const nbdwire::negotiated& n, bool read_only,
            const std::string& backend);
  /// Disconnects the device (once; later calls do nothing). The kernel then sends
  /// NBD_CMD_DISC on the socket.
  void disconnect() noexcept;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
  int index_ = -1;
  bool use_ioctl_ = false;
  bool connected_ = false;
  std::thread do_it_;  // --ioctl: inside NBD_DO_IT while the device is connected
};

}  // namespace nbdwire_server
