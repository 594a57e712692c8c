// SPDX-License-Identifier: MIT
// nbdwire-server: the event loop. One epoll set serves every client: sockets are
// non-blocking, so a slow or idle client never holds up another. Also the listening socket,
// SIGINT/SIGTERM (through a signalfd), the handshake deadline and --busy-poll.
#pragma once

#include <sys/epoll.h>  // epoll_event

#include <memory>         // std::unique_ptr
#include <string_view>    // context names
#include <unordered_map>  // fd -> connection
#include <vector>         // export configurations

#include "connection.hpp"
#include "nbdwire/server.hpp"
#include "options.hpp"

namespace nbdwire_server {

class server_loop {
 public:
  /// Checks the export configuration; throws examples::failure if the machine refuses it.
  explicit server_loop(settings s);
  server_loop(const server_loop&) = delete;
  server_loop& operator=(const server_loop&) = delete;

  /// Listens and serves until SIGINT or SIGTERM; returns the exit status.
  int run();

 private:
  int wait_for_events(epoll_event* evs, int max);
  int drop_late_handshakes();
  void add(int fd, std::uint32_t mask);
  void accept_all();
  void step(connection& c, bool readable);
  void drop(int fd);
  void stop();

  settings s_;
  std::vector<nbdwire::export_config> configs_;
  std::vector<backend*> stores_;  // by export index
  // Context id 0: the only one offered.
  static constexpr std::string_view contexts_[] = {"base:allocation"};
  nbdwire::server_config cfg_;
  int listen_fd_ = -1, ep_ = -1, sig_fd_ = -1;
  std::unordered_map<int, std::unique_ptr<connection>> conns_;
};

}  // namespace nbdwire_server
