// SPDX-License-Identifier: MIT
// nbdwire-server --device: the kernel's end of the socketpair (device.hpp).
#include "device.hpp"

#include <fcntl.h>       // open
#include <sys/socket.h>  // socketpair
#include <unistd.h>      // close, sysconf

#include <cerrno>
#include <cstdio>   // std::fprintf
#include <cstring>  // std::strerror

#include "../common.hpp"

namespace nbdwire_server {

namespace kn = examples::kernel;

nbdwire::negotiated device_negotiated(const nbdwire::server_config& cfg) {
  const nbdwire::export_config& e = cfg.exports[0];
  nbdwire::negotiated n;
  n.style = nbdwire::handshake_style::fixed_newstyle;  // the compact request header
  n.export_size = e.size;
  n.transmission_flags = static_cast<std::uint16_t>(e.transmission_flags | nbdwire::transmission_flag::has_flags);
  n.block_size = e.block_size;
  n.export_index = 0;
  return n;
}

int kernel_device::start(const std::string& path, bool use_ioctl, const nbdwire::negotiated& n, bool read_only,
                         const std::string& backend) {
  if (!kn::supported()) examples::fail("--device: this system has no Linux NBD driver interface");
  path_ = path;
  index_ = kn::device_index(path);
  const long page = sysconf(_SC_PAGESIZE);
  const auto dev = nbdwire::kernel_device_config_for(n, page > 0 ? static_cast<std::uint32_t>(page) : 4096, 0, read_only);
  if (!dev) examples::fail("--device: " + std::string(nbdwire::describe(dev.error())));
  kn::device_settings s;
  s.dev = *dev;
  s.backend = backend;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) examples::fail_errno("socketpair");
  examples::set_nonblocking(sv[1]);
  kn::netlink nl = use_ioctl ? kn::netlink::invalid() : kn::netlink::open();
  if (!nl.valid()) {
    use_ioctl_ = true;
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      close(sv[0]);
      close(sv[1]);
      examples::fail("--device: " + kn::open_error(path, err));
    }
    const int kernel_end[] = {sv[0]};
    try {
      kn::ioctl_configure(fd, kernel_end, s);
    } catch (...) {
      close(fd);
      close(sv[0]);
      close(sv[1]);
      throw;
    }
    // NBD_DO_IT returns when the device is disconnected (or its socket closes).
    do_it_ = std::thread([fd, k = sv[0], p = path] {
      const int err = kn::ioctl_do_it(fd);
      if (err != 0 && err != EPIPE && err != ECONNRESET)
        std::fprintf(stderr, "nbdwire-server: %s: NBD_DO_IT ended: %s\n", p.c_str(), std::strerror(err));
      kn::ioctl_clear(fd);
      close(fd);
      close(k);
    });
  } else {
    const int kernel_end[] = {sv[0]};
    try {
      index_ = nl.connect(index_, kernel_end, s);
    } catch (...) {
      close(sv[0]);
      close(sv[1]);
      throw;
    }
    close(sv[0]);  // the kernel holds its own reference
  }
  connected_ = true;
  return sv[1];
}

void kernel_device::disconnect() noexcept {
  if (!connected_) return;
  connected_ = false;
  try {
    if (use_ioctl_) {
      kn::ioctl_disconnect(path_);
    } else {
      kn::netlink nl = kn::netlink::open();
      if (nl.valid()) nl.disconnect(index_);
    }
  } catch (const examples::failure& f) {
    std::fprintf(stderr, "nbdwire-server: disconnecting %s: %s\n", path_.c_str(), f.what());
  }
}

kernel_device::~kernel_device() {
  disconnect();
  if (do_it_.joinable()) do_it_.join();
}

}  // namespace nbdwire_server
