// SPDX-License-Identifier: MIT
// nbdwire-server: the command line.
//
//   nbdwire-server [--listen HOST:PORT | --unix PATH | --port N]
//                  [--style fixed-newstyle|newstyle|oldstyle|legacy1997] [--read-only]
//                  [--handshake-timeout SECONDS] [--busy-poll USEC] NAME=BACKEND...
//   BACKEND: memory:SIZE (sparse, lazily allocated) or file:PATH (file or block device)
#pragma once

#include <memory>  // std::unique_ptr
#include <string>  // names
#include <vector>  // exports

#include "../common.hpp"
#include "backends.hpp"
#include "nbdwire/constants.hpp"

namespace nbdwire_server {

struct export_entry {
  std::string name;
  std::string spec;  // BACKEND as given, for messages
  std::unique_ptr<backend> store;
};

struct settings {
  examples::endpoint where;
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
  std::vector<export_entry> exports;
};

/// The settings of a command line, with every export opened. Prints the usage and exits for
/// --help; throws examples::failure, worded for the user, for anything wrong.
settings parse_args(int argc, char** argv);

}  // namespace nbdwire_server
