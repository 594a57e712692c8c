// SPDX-License-Identifier: MIT
// nbdwire-fuse: mounts an NBD export as one regular file, MOUNTPOINT/nbd (the layout of
// libnbd's nbdfuse). A thin adapter: FUSE worker threads queue requests, one I/O thread owns
// the socket and the nbdwire::client machine, which does all of the protocol.
//
//   FUSE threads --queue--> I/O thread --writev--> server
//        ^                      |  <--recv-- replies, READ data straight into the FUSE buffer
//        +---- completion ------+
//
// Many requests are in flight on the one connection at once; each carries the index of its
// slot in the in-flight table as its tag, which comes back on every event about it.
// A server that goes away fails every pending and later request with EIO.
//
// nbds:// and nbds+unix:// URIs: the handshake runs STARTTLS first (../sockets/tls_uri.hpp)
// and every later byte goes through the TLS session, in the handshake and in the I/O thread.
//
// Files: this one (the file system and the command line), handshake.{hpp,cpp} (before
// mounting, so that errors reach the terminal), io_thread.hpp (the I/O thread).
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 31  // the build passes 312 where libfuse has the 3.12 loop API
#endif

#include <fuse.h>

#include <fcntl.h>  // FALLOC_FL_*
#include <linux/falloc.h>
#include <sys/socket.h>  // setsockopt
#include <sys/stat.h>    // struct stat
#include <sys/time.h>    // timeval: handshake timeouts
#include <unistd.h>      // close, getuid

#include <array>    // the --debug line
#include <cstdint>  // fixed-width integers
#include <cstdio>   // std::fprintf
#include <cstring>  // std::strcmp
#include <ctime>    // time
#include <memory>   // std::unique_ptr
#include <span>     // the --debug line
#include <string>   // std::string
#include <vector>   // arguments

#include "../sockets/common.hpp"
#include "handshake.hpp"  // handshake(): before mounting
#include "io_thread.hpp"  // connection: the I/O thread

namespace {

using fuse_adapter::connection;
using fuse_adapter::handshake;
using nbdwire::command;
namespace tflag = nbdwire::transmission_flag;

constexpr const char* file_name = "nbd";
constexpr const char* file_path = "/nbd";

// ---- the file system ---------------------------------------------------------------------

connection* conn = nullptr;
bool mount_read_only = false;
struct stat file_stat {};

void* fs_init(fuse_conn_info*, fuse_config* cfg) {
  cfg->use_ino = 0;
  cfg->direct_io = 0;   // the page cache serves repeated reads; O_DIRECT bypasses it
  cfg->kernel_cache = 0;  // every open drops cached pages, so other clients' writes show up
  // After daemonizing (threads do not survive fork).
  conn->start();
  return nullptr;
}

void fs_destroy(void*) { conn->stop(); }

int fs_getattr(const char* path, struct stat* st, fuse_file_info*) {
  if (std::strcmp(path, "/") == 0) {
    *st = file_stat;
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_size = 0;
    st->st_blocks = 0;
    return 0;
  }
  if (std::strcmp(path, file_path) != 0) return -ENOENT;
  *st = file_stat;
  return 0;
}

int fs_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  if (std::strcmp(path, "/") != 0) return -ENOTDIR;
  fill(buf, ".", nullptr, 0, fuse_fill_dir_flags{});
  fill(buf, "..", nullptr, 0, fuse_fill_dir_flags{});
  fill(buf, file_name, &file_stat, 0, fuse_fill_dir_flags{});
  return 0;
}

int fs_open(const char* path, fuse_file_info* fi) {
  if (std::strcmp(path, file_path) != 0) return -ENOENT;
  if ((fi->flags & O_ACCMODE) != O_RDONLY && mount_read_only) return -EROFS;
  return 0;
}

int fs_truncate(const char* path, off_t size, fuse_file_info*) {
  if (std::strcmp(path, file_path) != 0) return -ENOENT;
  // The export has a fixed size, like a block device.
  return size == file_stat.st_size ? 0 : -EINVAL;
}

std::uint64_t export_size() { return conn->negotiated().export_size; }

int fs_read(const char*, char* buf, std::size_t size, off_t off, fuse_file_info*) {
  const std::uint64_t end = export_size();
  if (off < 0) return -EINVAL;
  const auto o = static_cast<std::uint64_t>(off);
  if (o >= end || size == 0) return 0;
  const std::uint64_t len = std::min<std::uint64_t>(size, end - o);
  const int e = conn->run(command::read, o, len, reinterpret_cast<std::byte*>(buf));
  return e ? -e : static_cast<int>(len);
}

int fs_write(const char*, const char* buf, std::size_t size, off_t off, fuse_file_info*) {
  if (mount_read_only) return -EROFS;
  const std::uint64_t end = export_size();
  if (off < 0) return -EINVAL;
  const auto o = static_cast<std::uint64_t>(off);
  if (size == 0) return 0;
  if (o >= end) return -ENOSPC;
  const std::uint64_t len = std::min<std::uint64_t>(size, end - o);
  // WRITE data is only read from this buffer.
  auto* data = reinterpret_cast<std::byte*>(const_cast<char*>(buf));
  const int e = conn->run(command::write, o, len, data);
  return e ? -e : static_cast<int>(len);
}

int fs_fsync(const char*, int, fuse_file_info*) {
  if (mount_read_only || !conn->negotiated().has(tflag::send_flush)) return 0;
  return -conn->run(command::flush, 0, 0, nullptr);
}

int fs_fallocate(const char*, int mode, off_t off, off_t len, fuse_file_info*) {
  if (mount_read_only) return -EROFS;
  if (off < 0 || len <= 0) return -EINVAL;
  const std::uint64_t end = export_size();
  const auto o = static_cast<std::uint64_t>(off);
  const auto l = static_cast<std::uint64_t>(len);
  const bool keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  mode &= ~FALLOC_FL_KEEP_SIZE;
  if (mode == 0) return o + l <= end || keep_size ? 0 : -ENOSPC;  // nothing to allocate
  if (o >= end) return 0;
  const std::uint64_t n = std::min(l, end - o);
  // An export without TRIM or WRITE_ZEROES: the machine refuses them (EOPNOTSUPP).
  if (mode == FALLOC_FL_PUNCH_HOLE) return -conn->run(command::trim, o, n, nullptr);
  if (mode == FALLOC_FL_ZERO_RANGE) return -conn->run(command::write_zeroes, o, n, nullptr);
  return -EOPNOTSUPP;
}

/// Mounts, serves until unmounted or signalled, unmounts. Returns the exit status.
int serve(const char* argv0, const std::string& mountpoint, const std::string& opts, bool foreground,
          const fuse_operations& ops) {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  if (fuse_opt_add_arg(&args, argv0) != 0 || fuse_opt_add_arg(&args, "-o") != 0 ||
      fuse_opt_add_arg(&args, opts.c_str()) != 0)
    return 1;
  fuse* f = fuse_new(&args, &ops, sizeof ops, nullptr);
  fuse_opt_free_args(&args);
  if (!f) return 1;
  int rc = 1;
  if (fuse_mount(f, mountpoint.c_str()) == 0) {
    fuse_session* se = fuse_get_session(f);
    if (fuse_daemonize(foreground ? 1 : 0) == 0 && fuse_set_signal_handlers(se) == 0) {
#if FUSE_USE_VERSION >= 312
      // Enough workers to fill the cookie table; the default, 10, leaves most of it idle.
      fuse_loop_config* cfg = fuse_loop_cfg_create();
      fuse_loop_cfg_set_max_threads(cfg, static_cast<unsigned>(nbdwire::max_in_flight));
      rc = fuse_loop_mt(f, cfg) == 0 ? 0 : 1;
      fuse_loop_cfg_destroy(cfg);
#else
      fuse_loop_config cfg{};
      cfg.clone_fd = 0;
      cfg.max_idle_threads = 10;
      rc = fuse_loop_mt(f, &cfg) == 0 ? 0 : 1;
#endif
      fuse_remove_signal_handlers(se);
    }
    fuse_unmount(f);
  }
  fuse_destroy(f);
  return rc;
}

/// --debug: one line on stderr per state change of the handshake's machine, then of the I/O
/// thread's (trace.hpp).
void print_move(void*, nbdwire::client_state from, nbdwire::client_trigger on, nbdwire::client_state to) noexcept {
  std::array<char, 96> line{};
  const std::size_t n = nbdwire::format_transition(std::span<char>(line), from, on, to);
  std::fprintf(stderr, "nbdwire-fuse: debug: %.*s\n", static_cast<int>(n), line.data());
}

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: nbdwire-fuse [--read-only] [--foreground] [--debug] MOUNTPOINT URI\n"
               "       nbdwire-fuse --help | --version\n"
               "  Mounts the NBD export URI as the file MOUNTPOINT/nbd; unmount with fusermount3 -u MOUNTPOINT.\n"
               "  URI: nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH; nbds:// and nbds+unix://\n"
               "       for TLS, with tls-certificates=DIR or [USER@ and] tls-psk-file=FILE, tls-hostname=NAME,\n"
               "       tls-verify-peer=0\n"
               "  --read-only   mount read-only (also implied by a read-only export)\n"
               "  --foreground  stay in the foreground instead of daemonizing\n"
               "  --debug       log every state change of the protocol machine to stderr (with\n"
               "                --foreground: a daemon's stderr goes nowhere)\n"
               "  --version     print the program's name and version\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool read_only = false, foreground = false;
  nbdwire::client_trace trace{};
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--read-only" || a == "-r") {
      read_only = true;
    } else if (a == "--foreground" || a == "-f") {
      foreground = true;
    } else if (a == "--debug") {
      trace.on_transition = &print_move;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--version") {
      std::printf("nbdwire-fuse %s\n", NBDWIRE_VERSION_STRING);
      return 0;
    } else if (a.starts_with("-") && a.size() > 1) {
      std::fprintf(stderr, "nbdwire-fuse: unknown option %s\n", a.c_str());
      usage(stderr);
      return 2;
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 2) {
    usage(stderr);
    return 2;
  }
  const std::string& mountpoint = pos[0];
  const std::string& uri = pos[1];

  std::unique_ptr<connection> c;
  try {
    const auto u = examples::parse_client_uri(uri);
    const int fd = examples::connect_to(u.where);
    nbdwire::negotiated neg;
    std::vector<std::byte> leftover;
    std::unique_ptr<examples::tls_session> tls;
    try {
      // A server that accepts and then says nothing must not hang the command.
      const timeval limit{30, 0};
      (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
      neg = handshake(fd, u, leftover, tls, trace);
    } catch (...) {
      tls.reset();
      close(fd);
      throw;
    }
    examples::set_nonblocking(fd);
    c = std::make_unique<connection>(fd, neg, std::move(leftover), std::move(tls), trace);
  } catch (const examples::failure& e) {
    std::fprintf(stderr, "nbdwire-fuse: %s\n", e.what());
    return 1;
  }

  const auto& neg = c->negotiated();
  mount_read_only = read_only || neg.read_only();
  if (neg.export_size > static_cast<std::uint64_t>(INT64_MAX)) {
    std::fprintf(stderr, "nbdwire-fuse: the export is too large for a file\n");
    return 1;
  }
  file_stat.st_mode = S_IFREG | (mount_read_only ? 0444 : 0644);
  file_stat.st_nlink = 1;
  file_stat.st_uid = getuid();
  file_stat.st_gid = getgid();
  file_stat.st_size = static_cast<off_t>(neg.export_size);
  file_stat.st_blocks = static_cast<blkcnt_t>((neg.export_size + 511) / 512);
  file_stat.st_blksize = static_cast<blksize_t>(neg.block_size.preferred);
  const auto now = time(nullptr);
  file_stat.st_atime = file_stat.st_mtime = file_stat.st_ctime = now;
  conn = c.get();

  fuse_operations ops{};
  ops.init = fs_init;
  ops.destroy = fs_destroy;
  ops.getattr = fs_getattr;
  ops.readdir = fs_readdir;
  ops.open = fs_open;
  ops.truncate = fs_truncate;
  ops.read = fs_read;
  ops.write = fs_write;
  ops.fsync = fs_fsync;
  ops.fallocate = fs_fallocate;

  std::string opts = "fsname=nbdwire,subtype=nbdwire";
  if (mount_read_only) opts += ",ro";
  const int rc = serve(argv[0], mountpoint, opts, foreground, ops);
  // When mounting failed, init never ran: the I/O thread still says goodbye with DISC.
  c->start();
  c->stop();
  conn = nullptr;
  return rc;
}
