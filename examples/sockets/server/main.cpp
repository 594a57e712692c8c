// SPDX-License-Identifier: MIT
// nbdwire-server: an NBD server over POSIX sockets, built on nbdwire::server.
//
//   nbdwire-server [--listen HOST:PORT]... [--unix PATH]... [--port N]
//                  [--style fixed-newstyle|newstyle|oldstyle|legacy1997] [--read-only]
//                  [--max-connections N] [--threads N] [--pidfile FILE] [-v] [--shutdown-timeout SECONDS]
//                  [--handshake-timeout SECONDS] [--busy-poll USEC] NAME=BACKEND[,OPTIONS]...
//   BACKEND: memory:SIZE (sparse, lazily allocated) or file:PATH (file or block device)
//
// With structured replies, READs of sparse ranges answer holes with OFFSET_HOLE chunks, and
// BLOCK_STATUS reports "base:allocation" from the backend: for memory, the pages ever written
// (pages given back by TRIM or zeroing are holes again); for files, SEEK_DATA/SEEK_HOLE.
//
// The adapter only moves bytes: the machine validates and answers the protocol, and these
// files carry out requests against storage. Event loops (--threads, one per CPU by default)
// serve the clients, each connection on one loop (loop.hpp);
// each connection moves its bytes (connection.hpp) and answers each request as soon as it is
// carried out (requests.hpp). READ data goes from storage straight into sendmsg() beside its
// reply header (memory exports without any copy; large file READs go from the page cache to
// the socket with sendfile()), and the replies to a burst of requests leave in one sendmsg();
// large WRITE payloads to a memory export are received straight into the export. Buffers are
// reused, so serving a request allocates nothing.
//
//   options.{hpp,cpp}     the command line and per-export options
//   backends.{hpp,cpp}    memory and file exports
//   loop.{hpp,cpp}        listeners (socket activation), accepting within limits, epoll,
//                         signals and the graceful shutdown, the handshake deadline
//   connection.{hpp,cpp}  one connection's bytes: receive, send, sendfile
//   requests.{hpp,cpp}    carrying out and answering requests
//   staging.hpp           file READ data read ahead of sending
#include <csignal>    // std::signal
#include <cstdio>     // std::fprintf
#include <exception>  // std::exception

#include "../common.hpp"
#include "loop.hpp"
#include "options.hpp"

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  try {
    nbdwire_server::server_loop loop(nbdwire_server::parse_args(argc, argv));
    return loop.run();
  } catch (const examples::failure& f) {
    std::fprintf(stderr, "nbdwire-server: %s\n", f.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nbdwire-server: %s\n", e.what());
    return 1;
  }
}
