// SPDX-License-Identifier: MIT
// nbdwire-client attach / detach / devices: an export as a Linux block device. The client
// machine does the handshake (any style the kernel can carry: no structured replies, no
// extended headers, no TLS; nbdwire::kernel_client_config), then the connected sockets and
// what nbdwire::kernel_device_config_for() derives from `negotiated` go to the kernel's NBD
// driver (../kernel_nbd.hpp): by generic netlink, or with --ioctl through a background
// process that stays in NBD_DO_IT. --persist keeps a background process that waits for the
// kernel's LINK_DEAD events and hands the device fresh connections (NBD_CMD_RECONFIGURE).
#include <poll.h>    // poll: LINK_DEAD events
#include <fcntl.h>   // open: the device (ioctl)
#include <unistd.h>  // fork, setsid, pipe, close, sysconf

#include <algorithm>  // std::min
#include <chrono>     // back-off
#include <cstdio>     // std::printf
#include <cstdlib>    // std::_Exit: the background process ends without unwinding the parent's state
#include <cstring>    // std::strerror
#include <memory>     // std::make_unique
#include <string>
#include <thread>   // sleeping between attempts
#include <vector>

#include "../kernel_nbd.hpp"
#include "commands.hpp"
#include "output.hpp"  // terminal_text, json_string

namespace client_app {

namespace {

namespace kn = examples::kernel;

/// One connection whose handshake the kernel can carry on from; the socket, released.
int handshake_for_kernel(const examples::client_uri& uri, const options& o, nbdwire::negotiated& neg) {
  const nbdwire::client_config cfg = nbdwire::kernel_client_config();
  auto c = std::make_unique<connection>(examples::connect_to(uri.where), cfg);
  c->set_idle_timeout(o.timeout_ms);
  (void)negotiate(*c, uri.export_name);
  neg = c->machine().negotiated();
  return c->release();
}

std::string kernel_refusal(nbdwire::errc e) {
  switch (e) {
    case nbdwire::errc::kernel_block_size_unsupported:
      return "the export's minimum block size is larger than the kernel can use (its page size), or "
             "--block-size is not a power of two up to the page size";
    case nbdwire::errc::kernel_export_too_small: return "the export is smaller than one block of the device";
    default: return errc_text(e);
  }
}

struct attachment {
  std::vector<int> sockets;
  kn::device_settings settings;
};

/// The handshakes of every connection, checked against each other and turned into what
/// the kernel is told.
attachment connect_all(const examples::client_uri& uri, const options& o, const std::string& uri_text) {
  attachment a;
  nbdwire::negotiated first;
  const unsigned n = o.connections ? o.connections : 1;
  for (unsigned i = 0; i < n; ++i) {
    nbdwire::negotiated neg;
    a.sockets.push_back(handshake_for_kernel(uri, o, neg));
    if (i == 0) {
      first = neg;
      if (n > 1 && !neg.has(nbdwire::transmission_flag::can_multi_conn) && !neg.read_only() && !o.read_only)
        fail("the server does not allow several connections to this export (no multi-conn); use --connections 1");
    } else if (neg.export_size != first.export_size || neg.transmission_flags != first.transmission_flags) {
      fail("connection " + std::to_string(i + 1) + " found a different export (size or flags changed)");
    }
  }
  const long page = sysconf(_SC_PAGESIZE);
  const auto dev = nbdwire::kernel_device_config_for(first, page > 0 ? static_cast<std::uint32_t>(page) : 4096,
                                                     o.block_size, o.read_only);
  if (!dev) fail("cannot attach: " + kernel_refusal(dev.error()));
  a.settings.dev = *dev;
  // --persist needs a request timeout: the kernel sends a request again on a new connection
  // only when it times out, and only when a timeout was set.
  a.settings.timeout_s = o.timeout_ms > 0 ? static_cast<std::uint64_t>((o.timeout_ms + 999) / 1000) : (o.persist ? 30 : 0);
  a.settings.dead_conn_timeout_s = o.dead_conn_timeout_s ? *o.dead_conn_timeout_s : (o.persist ? 60 : 0);
  a.settings.backend = uri_text;
  return a;
}

void close_all(std::vector<int>& fds) {
  for (const int fd : fds) close(fd);
  fds.clear();
}

/// --persist: waits for LINK_DEAD events about `index` and hands the device a new connection
/// for each, retrying with back-off while the server is away; returns once the device is
/// disconnected (detach).
void keep_connected(kn::netlink& nl, int mcast, int index, const examples::client_uri& uri, const options& o,
                    const kn::device_settings& s) {
  unsigned owed = 0;  // dead connections not yet replaced
  auto backoff = std::chrono::milliseconds(250);
  for (;;) {
    pollfd p{mcast, POLLIN, 0};
    const int r = poll(&p, 1, owed ? static_cast<int>(backoff.count()) : 1000);
    if (r > 0)
      for (const int dead : nl.read_link_dead())
        if (dead == index) {
          ++owed;
          std::fprintf(stderr, "nbdwire-client: %s lost a connection; reconnecting\n", kn::device_path(index).c_str());
        }
    const auto st = nl.status(index);
    if (st.empty() || !st[0].connected) {
      std::fprintf(stderr, "nbdwire-client: %s disconnected; stopping\n", kn::device_path(index).c_str());
      return;
    }
    while (owed > 0) {
      try {
        nbdwire::negotiated neg;
        const int fd = handshake_for_kernel(uri, o, neg);
        if (neg.export_size < s.dev.size) {
          close(fd);
          fail("the export shrank to " + std::to_string(neg.export_size) + " bytes");
        }
        const int one[] = {fd};
        nl.reconfigure(index, one, s);
        close(fd);
        --owed;
        backoff = std::chrono::milliseconds(250);
        std::fprintf(stderr, "nbdwire-client: %s reconnected\n", kn::device_path(index).c_str());
      } catch (const examples::failure& f) {
        std::fprintf(stderr, "nbdwire-client: reconnecting %s: %s\n", kn::device_path(index).c_str(),
                     terminal_text(f.what()).c_str());
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        break;  // poll (and the status check) before the next attempt
      }
    }
  }
}

/// Forks; the parent returns true once the child says it is ready ('1' on the pipe) and
/// exits with the child's message otherwise. The child returns false with `ready` to write to.
bool fork_background(int& ready) {
  int p[2];
  if (pipe(p) != 0) examples::fail_errno("pipe");
  const pid_t pid = fork();
  if (pid < 0) examples::fail_errno("fork");
  if (pid == 0) {
    close(p[0]);
    setsid();
    ready = p[1];
    return false;
  }
  close(p[1]);
  char ch = 0;
  const ssize_t n = read(p[0], &ch, 1);
  close(p[0]);
  if (n != 1 || ch != '1') fail("the background process failed (its message is above)");
  return true;
}

int attach_ioctl(const std::string& dev, attachment& a) {
  int ready = -1;
  if (fork_background(ready)) return 0;
  // The background process: configure, then stay in NBD_DO_IT while the device lives.
  int rc = 0;
  try {
    const int fd = open(dev.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) fail(kn::open_error(dev));
    kn::ioctl_configure(fd, a.sockets, a.settings);
    (void)!write(ready, "1", 1);
    close(ready);
    const int err = kn::ioctl_do_it(fd);
    kn::ioctl_clear(fd);
    close(fd);
    if (err != 0) std::fprintf(stderr, "nbdwire-client: %s: NBD_DO_IT ended: %s\n", dev.c_str(), std::strerror(err));
  } catch (const examples::failure& f) {
    std::fprintf(stderr, "nbdwire-client: %s\n", terminal_text(f.what()).c_str());
    rc = 1;
  }
  std::_Exit(rc);
}

}  // namespace

int cmd_attach(const options& o) {
  need_args(o, 3, "attach URI /dev/nbdN [--connections N] [--timeout S] [--dead-conn-timeout S] [--persist] [--read-only]");
  if (!kn::supported()) fail("this system has no Linux NBD driver interface");
  if (o.legacy) fail("the kernel's NBD driver does not speak the 1997 framing");
  const std::string& uri_text = o.positional[1];
  const std::string dev = o.positional[2];
  const int want = kn::device_index(dev);
  const auto uri = examples::parse_client_uri(uri_text);
  if (examples::may_use_tls(uri))
    fail("the kernel's NBD driver cannot carry TLS: attach takes nbd:// and nbd+unix:// URIs without TLS settings");

  attachment a = connect_all(uri, o, uri_text);
  const unsigned n = static_cast<unsigned>(a.sockets.size());
  const auto say = [&](const char* how) {
    std::printf("%s: %s, %llu bytes, block size %u, %u connection%s (%s)\n", dev.c_str(), terminal_text(uri_text).c_str(),
                static_cast<unsigned long long>(a.settings.dev.size), a.settings.dev.block_size, n, n == 1 ? "" : "s", how);
    std::fflush(stdout);
  };

  kn::netlink nl = o.ioctl ? kn::netlink::invalid() : kn::netlink::open();
  if (!nl.valid()) {
    if (o.persist) fail("--persist needs the kernel's nbd netlink interface, which this kernel does not offer");
    attach_ioctl(dev, a);
    close_all(a.sockets);
    // The device is usable once the background process is inside NBD_DO_IT.
    for (int i = 0; i < 100 && !kn::sysfs_connected(want); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!kn::sysfs_connected(want)) fail(dev + " did not come up");
    say("ioctl");
    return 0;
  }
  // Subscribed before CONNECT, so that no LINK_DEAD is missed.
  const int mcast = o.persist ? nl.subscribe_link_dead() : -1;
  const int index = nl.connect(want, a.sockets, a.settings);
  close_all(a.sockets);  // the kernel holds its own references
  say("netlink");
  if (!o.persist) return 0;
  int ready = -1;
  if (!o.foreground) {
    if (fork_background(ready)) return 0;
    (void)!write(ready, "1", 1);
    close(ready);
  }
  keep_connected(nl, mcast, index, uri, o, a.settings);
  if (!o.foreground) std::_Exit(0);
  return 0;
}

int cmd_detach(const options& o) {
  need_args(o, 2, "detach /dev/nbdN");
  const std::string dev = o.positional[1];
  const int index = kn::device_index(dev);
  kn::netlink nl = kn::netlink::open();
  if (nl.valid())
    nl.disconnect(index);
  else
    kn::ioctl_disconnect(dev);
  // Back only once the kernel says so, for scripts that reuse the device next.
  for (int i = 0; i < 100 && kn::sysfs_connected(index); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (kn::sysfs_connected(index)) fail(dev + " is still connected");
  return 0;
}

int cmd_devices(const options& o) {
  need_args(o, 1, "devices [--json]");
  const std::vector<int> all = kn::sysfs_devices();
  kn::netlink nl = kn::netlink::open();
  std::vector<kn::device_status> st;
  if (nl.valid()) st = nl.status();
  const auto connected = [&](int i) {
    for (const auto& d : st)
      if (d.index == i) return d.connected;
    return kn::sysfs_connected(i);
  };
  if (o.json) std::printf("[");
  bool first = true;
  for (const int i : all) {
    const bool c = connected(i);
    const std::uint64_t size = c ? kn::sysfs_size(i) : 0;
    // Netlink users name a backend; the ioctl interface has none, only the process in NBD_DO_IT.
    const std::string backend = kn::sysfs_backend(i);
    const std::string pid = kn::sysfs_pid(i);
    if (o.json) {
      std::printf("%s\n  {\"device\": \"%s\", \"connected\": %s, \"size\": %llu, \"backend\": %s, \"pid\": %s}",
                  first ? "" : ",", kn::device_path(i).c_str(), c ? "true" : "false",
                  static_cast<unsigned long long>(size), json_string(backend).c_str(),
                  pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos ? "null" : pid.c_str());
    } else {
      std::printf("%-12s %-12s", kn::device_path(i).c_str(), c ? "connected" : "disconnected");
      if (c)
        std::printf(" %14llu bytes  %s", static_cast<unsigned long long>(size),
                    backend.empty() && !pid.empty() ? ("(ioctl, pid " + terminal_text(pid) + ")").c_str()
                                                    : terminal_text(backend).c_str());
      std::printf("\n");
    }
    first = false;
  }
  if (o.json) std::printf("%s]\n", first ? "" : "\n");
  if (all.empty() && !o.json) std::fprintf(stderr, "nbdwire-client: no NBD devices (is the nbd module loaded?)\n");
  return 0;
}

}  // namespace client_app
