// SPDX-License-Identifier: MIT
// nbdwire-client: a small NBD client over POSIX sockets, built on nbdwire::client.
//
//   nbdwire-client [--style legacy1997 --legacy-size SIZE] COMMAND URI [OPTIONS]
//     info URI [--json]                 what the server says, as nbdinfo     (info.cpp, nbdinfo_show.cpp)
//       --size, --can/--is F            nbdinfo's queries                    (query.cpp)
//       --list                          every export, as nbdinfo --list      (info_list.cpp)
//     list URI [--json]                 the exports a server offers          (list.cpp)
//     map URI [--json] [--map=CTX]      a metadata context's map             (map.cpp)
//     read URI [--offset N] [--length N]    export data to stdout            (read.cpp)
//     write URI [--offset N] [--no-flush] stdin to the export, then FLUSH    (write.cpp)
//     copy SRC DST [-p] [--flush] ...   export <-> file or export            (copy.cpp, copy_nbd.cpp)
//     attach URI /dev/nbdN, detach /dev/nbdN, devices: the kernel's NBD driver (attach.cpp)
//   nbdwire-client [nbdinfo options] URI    the same as info URI
//
// Extended headers and structured replies are used when the server offers them. The socket
// loop (connection.cpp) only moves bytes; the protocol is nbdwire's.
#include <csignal>    // std::signal: SIGPIPE is reported as EPIPE instead
#include <cstdio>     // std::fprintf
#include <exception>  // std::exception

#include "commands.hpp"
#include "interrupt.hpp"
#include "output.hpp"  // terminal_text: server text in messages

int main(int argc, char** argv) {
  using namespace client_app;
  std::signal(SIGPIPE, SIG_IGN);
  try {
    options o = parse_args(argc, argv);
    if (o.positional.empty()) usage_error("missing command");
    // nbdinfo's way: options and a URI, no command.
    if (nbdwire::is_nbd_uri(o.positional[0])) o.positional.insert(o.positional.begin(), "info");
    const std::string cmd = o.positional[0];
    if (cmd == "info") return cmd_info(o);
    if (cmd == "list") return cmd_list(o);
    if (cmd == "map") return cmd_map(o);
    if (cmd == "attach") return cmd_attach(o);
    if (cmd == "detach") return cmd_detach(o);
    if (cmd == "devices") return cmd_devices(o);
    // Transfers wind down on SIGINT and SIGTERM instead of dying with requests in flight.
    if (cmd == "read" || cmd == "write" || cmd == "copy") catch_interrupts();
    if (cmd == "read") return cmd_read(o);
    if (cmd == "write") return cmd_write(o);
    if (cmd == "copy") return cmd_copy(o);
    usage_error("unknown command '" + cmd + "'");
  } catch (const interruption& i) {
    std::fflush(stdout);
    std::fprintf(stderr, "nbdwire-client: %s\n", terminal_text(i.what()).c_str());
    return 128 + i.signal;
  } catch (const examples::failure& f) {
    // Messages quote text the server sent (error messages, export names): escaped, so a
    // hostile server cannot send escape sequences to the user's terminal.
    std::fflush(stdout);
    std::fprintf(stderr, "nbdwire-client: %s\n", terminal_text(f.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nbdwire-client: %s\n", terminal_text(e.what()).c_str());
    return 1;
  }
}
