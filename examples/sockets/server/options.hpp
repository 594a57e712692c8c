// SPDX-License-Identifier: MIT
// nbdwire-server: the command line.
//
//   nbdwire-server [--listen HOST:PORT]... [--unix PATH]... [--port N]
//                  [--style fixed-newstyle|newstyle|oldstyle|legacy1997] [--read-only]
//                  [--max-connections N] [--pidfile FILE] [-v|--verbose] [--debug]
//                  [--device /dev/nbdN [--ioctl]]
//                  [--handshake-timeout SECONDS] [--shutdown-timeout SECONDS]
//                  [--busy-poll USEC] [--threads N] NAME=BACKEND[,read-only][,description=TEXT]...
//   BACKEND: memory:SIZE (sparse, lazily allocated) or file:PATH (file or block device)
//   With no --listen or --unix, systemd socket activation (LISTEN_FDS) supplies the
//   listening sockets when present; else 127.0.0.1:10809.
#pragma once

#include <memory>  // std::unique_ptr
#include <string>  // names
#include <vector>  // exports

#include "../common.hpp"
#include "../tls.hpp"
#include "backends.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/server/config.hpp"  // nbdwire::server_tls

namespace nbdwire_server {

struct export_entry {
  std::string name;
  std::string spec;  // BACKEND as given, for messages
  std::string description;  // ,description=TEXT: sent with NBD_INFO_DESCRIPTION and LIST
  bool read_only = false;   // ,read-only (or --read-only for every export)
  bool tls_only = false;    // ,tls-only: with --tls=on, reachable only once TLS is up
  std::unique_ptr<backend> store;
};

struct settings {
  /// --listen and --unix, in the order given; empty: socket activation, else the default.
  std::vector<examples::endpoint> listeners;
  nbdwire::handshake_style style = nbdwire::handshake_style::fixed_newstyle;
  bool read_only = false;
  /// Clients that have not finished the handshake this long after connecting are dropped
  /// (0: never). A setting of this adapter: the protocol core has no clock.
  double handshake_timeout = 30;
  /// After each batch of events, keep asking epoll for more (without sleeping) for this many
  /// microseconds before blocking (0: block at once). Answers the next request of a client
  /// at queue depth 1 without waking a sleeping CPU, at the price of a busy CPU while the
  /// client keeps coming back within that time.
  long busy_poll_us = 0;
  /// Connections served at once (0: no limit). At the limit the server stops accepting, as
  /// qemu-nbd --shared does: new clients wait in the listen backlog until one leaves.
  unsigned max_connections = 0;
  /// Event loops, each on its own thread (--threads; 0: one per online CPU). Each connection
  /// is served by one loop; loop 0 also accepts and hands connections out.
  unsigned threads = 0;
  std::string pidfile;  ///< written once listening, removed at exit
  bool verbose = false;  ///< one line per connection, handshake result and disconnect
  bool debug = false;    ///< --debug: also every state change (trace.hpp); implies verbose
  /// SIGTERM/SIGINT: stop accepting, refuse new requests with NBD_ESHUTDOWN (options with
  /// NBD_REP_ERR_SHUTDOWN), answer what is in flight, and close connections still open after
  /// this many seconds; a second signal stops at once.
  double shutdown_timeout = 5;
  /// --tls=off|on|require: NOTLS, SELECTIVETLS (exports marked tls-only need TLS) or
  /// FORCEDTLS; with --tls-certificates=DIR or --tls-psk=FILE (and --tls-verify-peer).
  nbdwire::server_tls tls = nbdwire::server_tls::off;
  examples::tls_settings tls_settings;
  std::vector<export_entry> exports;
  /// --device /dev/nbdN: no listener; the one export is served to the kernel's NBD driver
  /// over a socketpair, so it appears as that block device (device.hpp). --ioctl: with the
  /// ioctl interface instead of netlink.
  std::string device;
  bool device_ioctl = false;
};

/// The settings of a command line, with every export opened. Prints the usage and exits for
/// --help; throws examples::failure, worded for the user, for anything wrong.
settings parse_args(int argc, char** argv);

}  // namespace nbdwire_server
