// SPDX-License-Identifier: MIT
// nbdwire-client: a small NBD client over POSIX sockets, built on nbdwire::client.
//
//   nbdwire-client [--style legacy1997 --size SIZE] COMMAND URI [OPTIONS]
//     info URI [--json]                 what the server says about an export      (info.cpp)
//     list URI [--json]                 the exports a server offers               (list.cpp)
//     map URI [--json]                  allocation map (base:allocation)          (map.cpp)
//     read URI [--offset N] [--length N]    export data to stdout                 (read.cpp)
//     write URI [--offset N] [--no-flush] stdin to the export, then FLUSH         (write.cpp)
//     copy SRC DST [--connections N]    export <-> file ('-' is stdin/stdout)     (copy.cpp)
//
// Extended headers and structured replies are used when the server offers them. The socket
// loop (connection.cpp) only moves bytes; the protocol is nbdwire's.
#include <csignal>    // std::signal: SIGPIPE is reported as EPIPE instead
#include <cstdio>     // std::fprintf
#include <exception>  // std::exception

#include "commands.hpp"

int main(int argc, char** argv) {
  using namespace client_app;
  std::signal(SIGPIPE, SIG_IGN);
  try {
    const options o = parse_args(argc, argv);
    if (o.positional.empty()) usage_error("missing command");
    const std::string& cmd = o.positional[0];
    if (cmd == "info") return cmd_info(o);
    if (cmd == "list") return cmd_list(o);
    if (cmd == "map") return cmd_map(o);
    if (cmd == "read") return cmd_read(o);
    if (cmd == "write") return cmd_write(o);
    if (cmd == "copy") return cmd_copy(o);
    usage_error("unknown command '" + cmd + "'");
  } catch (const examples::failure& f) {
    std::fflush(stdout);
    std::fprintf(stderr, "nbdwire-client: %s\n", f.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nbdwire-client: %s\n", e.what());
    return 1;
  }
}
