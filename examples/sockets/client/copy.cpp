// SPDX-License-Identifier: MIT
// nbdwire-client copy SRC DST: export -> export (copy_nbd.cpp), export -> file and file ->
// export ('-' is stdin/stdout). Reads only what base:allocation calls data (holes stay holes
// in a file), over N connections (default: one per CPU, at most 4) when the export allows
// multi-conn and the other side is a file; writes all-zero blocks as WRITE_ZEROES, or not at
// all with --target-is-zero. A file the copy created is removed when the copy fails or is
// interrupted.
#include <fcntl.h>     // open
#include <sys/stat.h>  // fstat
#include <unistd.h>    // close, unlink, fsync

#include <algorithm>  // std::min, std::max
#include <cstdio>     // std::fprintf
#include <thread>     // std::thread::hardware_concurrency

#include "commands.hpp"

namespace client_app {

/// Then --connections, by default one per CPU and at most 4 (more than the CPUs only adds
/// contention: a 1 GiB download into tmpfs took 0.69-0.87 s with two, 0.90-0.95 with four).
unsigned connections_for(const options& o, const nbdwire::negotiated& neg) {
  // Each connection must see the same export: multi-conn (spec "Transmission flags"). The
  // 1997 framing has no flags from the server, so never multi-conn.
  if (!neg.has(nbdwire::transmission_flag::can_multi_conn)) return 1;
  if (o.connections) return o.connections;
  return std::min(4u, std::max(1u, std::thread::hardware_concurrency()));
}

/// A server may allow fewer connections than it has multi-conn for, and the copy then goes
/// on with those that open.
std::unique_ptr<connection> open_another_connection(const examples::client_uri& uri, const options& o,
                                                    std::uint64_t size) {
  try {
    auto c = open_connection(uri, o);
    negotiate(*c, uri.export_name);
    if (c->machine().negotiated().export_size != size) fail("the export's size differs on this connection");
    return c;
  } catch (const examples::failure& f) {
    std::fprintf(stderr, "nbdwire-client: copying without one of the extra connections: %s\n", f.what());
    return nullptr;
  }
}

namespace {

/// The export copied into file `dst` (or stdout for "-"). A file that did not exist before
/// is removed again if the copy does not complete; an existing one is truncated and left.
void export_to_file(const options& o, const std::string& src, const std::string& dst) {
  if (dst == "-") {
    export_to_fd(o, src, 0, std::nullopt, 1, "stdout", o.progress);
    return;
  }
  bool created = true;
  int fd = open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0 && errno == EEXIST) {
    created = false;
    fd = open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  }
  if (fd < 0) examples::fail_errno("cannot open " + dst);
  try {
    struct stat st{};
    const bool own_file = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    export_to_fd(o, src, 0, std::nullopt, fd, dst, o.progress, true, own_file);
    if (o.flush && own_file && fsync(fd) != 0) examples::fail_errno("fsync " + dst);
    const int rc = close(fd);
    fd = -1;
    if (rc < 0) examples::fail_errno("close " + dst);
  } catch (...) {
    if (fd >= 0) close(fd);
    if (created && unlink(dst.c_str()) == 0)
      std::fprintf(stderr, "nbdwire-client: removed %s, which the failed copy had created\n", dst.c_str());
    throw;
  }
}

}  // namespace

int cmd_copy(const options& o) {
  need_args(o, 3, "copy SRC DST [-p] [--flush] [--target-is-zero] [--connections N] [--requests N]");
  const std::string& src = o.positional[1];
  const std::string& dst = o.positional[2];
  const bool src_uri = nbdwire::is_nbd_uri(src), dst_uri = nbdwire::is_nbd_uri(dst);
  if (src_uri && dst_uri) {
    export_to_export(o, src, dst);
  } else if (src_uri) {
    export_to_file(o, src, dst);
  } else if (dst_uri) {
    int fd = 0;
    if (src != "-") {
      fd = open(src.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) examples::fail_errno("cannot open " + src);
    }
    try {
      fd_to_export(o, dst, 0, fd, src == "-" ? "stdin" : src, o.progress);
    } catch (...) {
      if (fd != 0) close(fd);
      throw;
    }
    if (fd != 0) close(fd);
  } else {
    fail("copy needs at least one NBD URI (the other side may be a file or '-')");
  }
  return 0;
}

}  // namespace client_app
