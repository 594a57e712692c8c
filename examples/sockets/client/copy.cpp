// SPDX-License-Identifier: MIT
// nbdwire-client copy SRC DST [--connections N]: export <-> file ('-' is stdin/stdout). Reads
// only what base:allocation calls data (holes stay holes in a file), over N connections
// (default: one per CPU, at most 4) when the export allows multi-conn and the other side is a
// file; writes all-zero blocks as WRITE_ZEROES.
#include <fcntl.h>     // open
#include <sys/stat.h>  // fstat
#include <unistd.h>    // close

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
std::unique_ptr<connection> open_another_connection(const examples::nbd_uri& uri, const options& o,
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

int cmd_copy(const options& o) {
  need_args(o, 3, "copy SRC DST");
  const std::string& src = o.positional[1];
  const std::string& dst = o.positional[2];
  const bool src_uri = nbdwire::is_nbd_uri(src), dst_uri = nbdwire::is_nbd_uri(dst);
  if (src_uri == dst_uri) fail("copy needs exactly one NBD URI and one file (or '-')");
  if (src_uri) {
    int fd = 1;
    bool own_file = false;
    if (dst != "-") {
      fd = open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
      if (fd < 0) examples::fail_errno("cannot open " + dst);
      struct stat st{};
      own_file = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    }
    export_to_fd(o, src, 0, std::nullopt, fd, dst == "-" ? "stdout" : dst, true, true, own_file);
    if (fd != 1 && close(fd) < 0) examples::fail_errno("close " + dst);
  } else {
    int fd = 0;
    if (src != "-") {
      fd = open(src.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) examples::fail_errno("cannot open " + src);
    }
    fd_to_export(o, dst, 0, fd, src == "-" ? "stdin" : src, true);
    if (fd != 0) close(fd);
  }
  return 0;
}

}  // namespace client_app
