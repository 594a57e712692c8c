// SPDX-License-Identifier: MIT
// The Linux kernel's NBD driver: generic netlink and ioctl calls (kernel_nbd.hpp). Raw
// netlink sockets, no library: a request is a netlink header, a generic netlink header and
// attributes; the kernel answers with a message of attributes and an acknowledgement.
#include "kernel_nbd.hpp"

#include <algorithm>  // std::sort
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "common.hpp"  // fail, fail_errno

#if defined(__linux__) && __has_include(<linux/nbd-netlink.h>)
#define NBDWIRE_KERNEL_NBD 1
#include <dirent.h>
#include <fcntl.h>
#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/nbd.h>
#include <linux/netlink.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#else
#define NBDWIRE_KERNEL_NBD 0
#endif

namespace examples::kernel {

std::string open_error(const std::string& path, int err) {
  std::string s = "cannot open " + path + ": " + std::strerror(err);
  if (err == ENOENT) s += " (is the nbd module loaded? modprobe nbd)";
  return s;
}

int device_index(const std::string& path) {
  std::string_view s = path;
  if (s.starts_with("/dev/")) s.remove_prefix(5);
  if (s.starts_with("nbd")) s.remove_prefix(3);
  else fail("'" + path + "' is not an NBD device (/dev/nbdN)");
  int n = 0;
  if (s.empty() || s.size() > 6) fail("'" + path + "' is not an NBD device (/dev/nbdN)");
  for (const char ch : s) {
    if (ch < '0' || ch > '9') fail("'" + path + "' is not an NBD device (/dev/nbdN)");
    n = n * 10 + (ch - '0');
  }
  return n;
}

std::string device_path(int index) { return "/dev/nbd" + std::to_string(index); }

namespace {
std::string read_sysfs(int index, const char* file) {
  std::ifstream in("/sys/block/nbd" + std::to_string(index) + "/" + file);
  std::string s;
  std::getline(in, s);
  return s;
}
}  // namespace

bool sysfs_connected(int index) {
  return !read_sysfs(index, "pid").empty() || !read_sysfs(index, "backend").empty();
}

std::string sysfs_backend(int index) { return read_sysfs(index, "backend"); }
std::string sysfs_pid(int index) { return read_sysfs(index, "pid"); }

std::uint64_t sysfs_size(int index) {
  const std::string s = read_sysfs(index, "size");  // in 512-byte sectors
  std::uint64_t v = 0;
  for (const char ch : s) {
    if (ch < '0' || ch > '9') return 0;
    v = v * 10 + static_cast<std::uint64_t>(ch - '0');
  }
  return v * 512;
}

#if NBDWIRE_KERNEL_NBD

bool supported() { return true; }

std::vector<int> sysfs_devices() {
  std::vector<int> out;
  DIR* d = opendir("/sys/block");
  if (!d) return out;
  while (const dirent* e = readdir(d)) {
    std::string_view n = e->d_name;
    if (!n.starts_with("nbd") || n.size() == 3) continue;
    bool digits = true;
    for (const char ch : n.substr(3)) digits = digits && ch >= '0' && ch <= '9';
    if (digits) out.push_back(std::stoi(std::string(n.substr(3))));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

// ---- building and reading netlink attributes -----------------------------------------------

using bytes = std::vector<std::uint8_t>;

void put(bytes& b, const void* p, std::size_t n) {
  const std::size_t at = b.size();
  b.resize(NLA_ALIGN(at + n));  // the padding is zeroes
  std::memcpy(b.data() + at, p, n);
}

void attr(bytes& b, std::uint16_t type, const void* p, std::size_t n) {
  nlattr a{};
  a.nla_len = static_cast<std::uint16_t>(NLA_HDRLEN + n);
  a.nla_type = type;
  put(b, &a, sizeof a);
  if (n) put(b, p, n);
}
void attr_u32(bytes& b, std::uint16_t type, std::uint32_t v) { attr(b, type, &v, sizeof v); }
void attr_u64(bytes& b, std::uint16_t type, std::uint64_t v) { attr(b, type, &v, sizeof v); }

/// Opens a nested attribute; close_nest() with the returned position sets its length.
std::size_t open_nest(bytes& b, std::uint16_t type) {
  const std::size_t at = b.size();
  nlattr a{};
  a.nla_type = static_cast<std::uint16_t>(type | NLA_F_NESTED);
  put(b, &a, sizeof a);
  return at;
}
void close_nest(bytes& b, std::size_t at) {
  const auto len = static_cast<std::uint16_t>(b.size() - at);
  std::memcpy(b.data() + at, &len, sizeof len);
}

/// Calls f(type, payload, length) for each attribute in [p, p + n), without the nesting bit.
template <class F>
void each_attr(const std::uint8_t* p, std::size_t n, F&& f) {
  while (n >= NLA_HDRLEN) {
    nlattr a;
    std::memcpy(&a, p, sizeof a);
    if (a.nla_len < NLA_HDRLEN || a.nla_len > n) return;
    f(static_cast<std::uint16_t>(a.nla_type & NLA_TYPE_MASK), p + NLA_HDRLEN, std::size_t{a.nla_len} - NLA_HDRLEN);
    const std::size_t step = NLA_ALIGN(a.nla_len);
    if (step >= n) return;
    p += step;
    n -= step;
  }
}

std::uint64_t get_uint(const std::uint8_t* p, std::size_t n) {
  if (n == 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }
  if (n >= 4) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  if (n == 2) {
    std::uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
  return n == 1 ? *p : 0;
}

bytes genl_message(std::uint16_t family, std::uint8_t cmd, std::uint8_t version, std::uint32_t seq) {
  bytes b;
  nlmsghdr h{};
  h.nlmsg_type = family;
  h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  h.nlmsg_seq = seq;
  put(b, &h, sizeof h);
  genlmsghdr g{};
  g.cmd = cmd;
  g.version = version;
  put(b, &g, sizeof g);
  return b;
}

int open_socket() {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
  if (fd < 0) fail_errno("netlink socket");
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    const int err = errno;
    ::close(fd);
    fail_errno("netlink bind", err);
  }
  return fd;
}

/// Sends `msg` (its length filled in) and gathers the kernel's answer: the attributes of
/// every data message for this sequence number, until the acknowledgement. A negative
/// acknowledgement becomes errno and a -1 return; `out` then holds nothing useful.
int exchange(int fd, bytes& msg, std::uint32_t seq, bytes& out) {
  const auto len = static_cast<std::uint32_t>(msg.size());
  std::memcpy(msg.data(), &len, sizeof len);  // nlmsg_len is the first field
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel) < 0) return -1;
  std::vector<std::uint8_t> buf(32768);
  for (;;) {
    const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    auto left = static_cast<std::size_t>(n);
    const std::uint8_t* p = buf.data();
    while (left >= sizeof(nlmsghdr)) {
      nlmsghdr h;
      std::memcpy(&h, p, sizeof h);
      if (h.nlmsg_len < sizeof h || h.nlmsg_len > left) break;
      if (h.nlmsg_seq == seq) {
        if (h.nlmsg_type == NLMSG_ERROR) {
          nlmsgerr e{};
          if (h.nlmsg_len >= sizeof h + sizeof e) std::memcpy(&e, p + sizeof h, sizeof e);
          if (e.error == 0) return 0;
          errno = -e.error;
          return -1;
        }
        if (h.nlmsg_type == NLMSG_DONE) return 0;
        const std::size_t head = NLMSG_HDRLEN + GENL_HDRLEN;
        if (h.nlmsg_len > head) out.insert(out.end(), p + head, p + h.nlmsg_len);
      }
      const std::size_t step = NLMSG_ALIGN(h.nlmsg_len);
      if (step >= left) break;
      p += step;
      left -= step;
    }
  }
}

void add_sockets(bytes& b, std::span<const int> sockets) {
  const std::size_t list = open_nest(b, NBD_ATTR_SOCKETS);
  for (const int fd : sockets) {
    const std::size_t item = open_nest(b, NBD_SOCK_ITEM);
    attr_u32(b, NBD_SOCK_FD, static_cast<std::uint32_t>(fd));
    close_nest(b, item);
  }
  close_nest(b, list);
}

void add_timeouts(bytes& b, const device_settings& s) {
  if (s.timeout_s) attr_u64(b, NBD_ATTR_TIMEOUT, s.timeout_s);
  if (s.dead_conn_timeout_s) attr_u64(b, NBD_ATTR_DEAD_CONN_TIMEOUT, s.dead_conn_timeout_s);
}

}  // namespace

netlink netlink::open() {
  netlink nl;
  nl.fd_ = open_socket();
  // CTRL_CMD_GETFAMILY "nbd": the family's id and its multicast group's id.
  bytes msg = genl_message(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, nl.seq_);
  attr(msg, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME, sizeof NBD_GENL_FAMILY_NAME);
  bytes out;
  if (exchange(nl.fd_, msg, nl.seq_++, out) != 0) return nl;  // ENOENT: no such family
  each_attr(out.data(), out.size(), [&nl](std::uint16_t type, const std::uint8_t* p, std::size_t n) {
    if (type == CTRL_ATTR_FAMILY_ID) nl.family_ = static_cast<std::uint16_t>(get_uint(p, n));
    if (type != CTRL_ATTR_MCAST_GROUPS) return;
    each_attr(p, n, [&nl](std::uint16_t, const std::uint8_t* gp, std::size_t gn) {
      std::string name;
      std::uint32_t id = 0;
      each_attr(gp, gn, [&](std::uint16_t t, const std::uint8_t* ap, std::size_t an) {
        if (t == CTRL_ATTR_MCAST_GRP_NAME) name.assign(reinterpret_cast<const char*>(ap), strnlen(reinterpret_cast<const char*>(ap), an));
        if (t == CTRL_ATTR_MCAST_GRP_ID) id = static_cast<std::uint32_t>(get_uint(ap, an));
      });
      if (name == NBD_GENL_MCAST_GROUP_NAME) nl.group_ = id;
    });
  });
  return nl;
}

netlink::~netlink() {
  if (fd_ >= 0) ::close(fd_);
  if (mcast_fd_ >= 0) ::close(mcast_fd_);
}

std::vector<std::uint8_t> netlink::message(std::uint8_t cmd) const {
  return genl_message(family_, cmd, NBD_GENL_VERSION, seq_);
}

std::vector<std::uint8_t> netlink::transact(std::vector<std::uint8_t>& msg, const char* what) {
  bytes out;
  if (exchange(fd_, msg, seq_++, out) != 0) fail_errno(std::string("the kernel refused ") + what);
  return out;
}

int netlink::connect(int index, std::span<const int> sockets, const device_settings& s) {
  bytes msg = message(NBD_CMD_CONNECT);
  if (index >= 0) attr_u32(msg, NBD_ATTR_INDEX, static_cast<std::uint32_t>(index));
  attr_u64(msg, NBD_ATTR_SIZE_BYTES, s.dev.size);
  attr_u64(msg, NBD_ATTR_BLOCK_SIZE_BYTES, s.dev.block_size);
  attr_u64(msg, NBD_ATTR_SERVER_FLAGS, s.dev.transmission_flags);
  add_timeouts(msg, s);
  if (s.disconnect_on_close) attr_u64(msg, NBD_ATTR_CLIENT_FLAGS, NBD_CFLAG_DISCONNECT_ON_CLOSE);
  if (!s.backend.empty()) attr(msg, NBD_ATTR_BACKEND_IDENTIFIER, s.backend.c_str(), s.backend.size() + 1);
  add_sockets(msg, sockets);
  const bytes out = transact(msg, "NBD_CMD_CONNECT");
  int got = index;
  each_attr(out.data(), out.size(), [&got](std::uint16_t type, const std::uint8_t* p, std::size_t n) {
    if (type == NBD_ATTR_INDEX) got = static_cast<int>(get_uint(p, n));
  });
  if (got < 0) fail("the kernel connected a device but did not say which");
  return got;
}

void netlink::reconfigure(int index, std::span<const int> sockets, const device_settings& s) {
  bytes msg = message(NBD_CMD_RECONFIGURE);
  attr_u32(msg, NBD_ATTR_INDEX, static_cast<std::uint32_t>(index));
  add_timeouts(msg, s);
  // A device connected with a backend identifier takes new sockets only for that backend.
  if (!s.backend.empty()) attr(msg, NBD_ATTR_BACKEND_IDENTIFIER, s.backend.c_str(), s.backend.size() + 1);
  add_sockets(msg, sockets);
  (void)transact(msg, "NBD_CMD_RECONFIGURE");
}

void netlink::disconnect(int index) {
  bytes msg = message(NBD_CMD_DISCONNECT);
  attr_u32(msg, NBD_ATTR_INDEX, static_cast<std::uint32_t>(index));
  (void)transact(msg, "NBD_CMD_DISCONNECT");
}

std::vector<device_status> netlink::status(int index) {
  bytes msg = message(NBD_CMD_STATUS);
  if (index >= 0) attr_u32(msg, NBD_ATTR_INDEX, static_cast<std::uint32_t>(index));
  const bytes out = transact(msg, "NBD_CMD_STATUS");
  std::vector<device_status> list;
  each_attr(out.data(), out.size(), [&list](std::uint16_t type, const std::uint8_t* p, std::size_t n) {
    if (type != NBD_ATTR_DEVICE_LIST) return;
    each_attr(p, n, [&list](std::uint16_t t, const std::uint8_t* ip, std::size_t in) {
      if (t != NBD_DEVICE_ITEM) return;
      device_status d;
      each_attr(ip, in, [&d](std::uint16_t a, const std::uint8_t* ap, std::size_t an) {
        if (a == NBD_DEVICE_INDEX) d.index = static_cast<int>(get_uint(ap, an));
        if (a == NBD_DEVICE_CONNECTED) d.connected = get_uint(ap, an) != 0;
      });
      list.push_back(d);
    });
  });
  return list;
}

int netlink::subscribe_link_dead() {
  if (mcast_fd_ >= 0) return mcast_fd_;
  if (group_ == 0) fail("the kernel's nbd netlink family has no multicast group (LINK_DEAD events)");
  mcast_fd_ = open_socket();
  const int g = static_cast<int>(group_);
  if (setsockopt(mcast_fd_, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof g) != 0)
    fail_errno("joining the nbd netlink multicast group");
  return mcast_fd_;
}

std::vector<int> netlink::read_link_dead() {
  std::vector<int> dead;
  std::vector<std::uint8_t> buf(8192);
  const ssize_t n = recv(mcast_fd_, buf.data(), buf.size(), MSG_DONTWAIT);
  if (n <= 0) return dead;
  auto left = static_cast<std::size_t>(n);
  const std::uint8_t* p = buf.data();
  while (left >= NLMSG_HDRLEN + GENL_HDRLEN) {
    nlmsghdr h;
    std::memcpy(&h, p, sizeof h);
    if (h.nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN || h.nlmsg_len > left) break;
    genlmsghdr g;
    std::memcpy(&g, p + NLMSG_HDRLEN, sizeof g);
    if (h.nlmsg_type == family_ && g.cmd == NBD_CMD_LINK_DEAD) {
      const std::size_t head = NLMSG_HDRLEN + GENL_HDRLEN;
      each_attr(p + head, h.nlmsg_len - head, [&dead](std::uint16_t t, const std::uint8_t* ap, std::size_t an) {
        if (t == NBD_ATTR_INDEX) dead.push_back(static_cast<int>(get_uint(ap, an)));
      });
    }
    const std::size_t step = NLMSG_ALIGN(h.nlmsg_len);
    if (step >= left) break;
    p += step;
    left -= step;
  }
  return dead;
}

// ---- ioctls ------------------------------------------------------------------------------------

void ioctl_configure(int dev_fd, std::span<const int> sockets, const device_settings& s) {
  // Any sockets left by an earlier user first; then the block size before the size, since
  // the kernel rounds the size to the block size in force.
  (void)ioctl(dev_fd, NBD_CLEAR_SOCK);
  if (ioctl(dev_fd, NBD_SET_BLKSIZE, static_cast<unsigned long>(s.dev.block_size)) != 0) fail_errno("NBD_SET_BLKSIZE");
  if (ioctl(dev_fd, NBD_SET_SIZE_BLOCKS, static_cast<unsigned long>(s.dev.size / s.dev.block_size)) != 0)
    fail_errno("NBD_SET_SIZE_BLOCKS");
  if (ioctl(dev_fd, NBD_SET_FLAGS, static_cast<unsigned long>(s.dev.transmission_flags)) != 0) fail_errno("NBD_SET_FLAGS");
  if (s.timeout_s && ioctl(dev_fd, NBD_SET_TIMEOUT, static_cast<unsigned long>(s.timeout_s)) != 0)
    fail_errno("NBD_SET_TIMEOUT");
  for (const int fd : sockets)
    if (ioctl(dev_fd, NBD_SET_SOCK, static_cast<unsigned long>(fd)) != 0) fail_errno("NBD_SET_SOCK");
}

int ioctl_do_it(int dev_fd) { return ioctl(dev_fd, NBD_DO_IT) == 0 ? 0 : errno; }

void ioctl_clear(int dev_fd) {
  (void)ioctl(dev_fd, NBD_CLEAR_QUE);
  (void)ioctl(dev_fd, NBD_CLEAR_SOCK);
}

void ioctl_disconnect(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) fail(open_error(path));
  const int rc = ioctl(fd, NBD_DISCONNECT);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail_errno("NBD_DISCONNECT on " + path, err);
}

#else  // not Linux

bool supported() { return false; }
std::vector<int> sysfs_devices() { return {}; }
netlink netlink::open() { return netlink(); }
netlink::~netlink() = default;
int netlink::connect(int, std::span<const int>, const device_settings&) { fail("no kernel NBD driver on this system"); }
void netlink::reconfigure(int, std::span<const int>, const device_settings&) { fail("no kernel NBD driver on this system"); }
void netlink::disconnect(int) { fail("no kernel NBD driver on this system"); }
std::vector<device_status> netlink::status(int) { return {}; }
int netlink::subscribe_link_dead() { fail("no kernel NBD driver on this system"); }
std::vector<int> netlink::read_link_dead() { return {}; }
void ioctl_configure(int, std::span<const int>, const device_settings&) { fail("no kernel NBD driver on this system"); }
int ioctl_do_it(int) { return ENOSYS; }
void ioctl_clear(int) {}
void ioctl_disconnect(const std::string&) { fail("no kernel NBD driver on this system"); }

#endif

}  // namespace examples::kernel
