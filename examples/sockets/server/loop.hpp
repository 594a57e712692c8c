// SPDX-License-Identifier: MIT
// nbdwire-server: the event loop. One epoll set serves every client: sockets are
// non-blocking, so a slow or idle client never holds up another. Also the listening sockets
// (from the command line or systemd socket activation), accepting only while a descriptor
// and a --max-connections slot are free, SIGINT/SIGTERM (through a signalfd) with a graceful
// shutdown, the handshake deadline, --busy-poll and --pidfile.
#pragma once

#include <sys/epoll.h>  // epoll_event

#include <chrono>         // deadlines
#include <memory>         // std::unique_ptr
#include <string_view>    // context names
#include <unordered_map>  // fd -> connection
#include <vector>         // export configurations

#include "connection.hpp"
#include "device.hpp"
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
  using clock = std::chrono::steady_clock;
  struct listener {
    int fd = -1;
    bool is_unix = false;
    std::string name;   // for messages
    bool owned = true;  // created here (not passed by socket activation)
    std::string path;   // a unix socket created here: unlinked at exit
  };

  void open_listeners();
  int wait_for_events(epoll_event* evs, int max);
  int timeout_ms();
  int drop_late_handshakes();
  void add(int fd, std::uint32_t mask);
  void accept_on(const listener& l);
  void set_accepting(bool on);
  void accept_failed(int err);
  void step(connection& c, bool readable);
  void drop(int fd);
  void begin_shutdown();
  void stop();
  void write_pidfile();
  void start_device();

  settings s_;
  std::vector<listener> listeners_;
  bool accepting_ = false;       // the listeners are in the epoll set
  clock::time_point retry_accept_{};  // descriptors ran out: try accepting again then
  clock::time_point last_accept_error_{};
  unsigned accept_errors_ = 0;   // since the last message (rate-limited to one per 10 s)
  bool shutting_down_ = false;
  clock::time_point shutdown_deadline_{};
  std::vector<nbdwire::export_config> configs_;
  std::vector<backend*> stores_;  // by export index
  // Context id 0: the only one offered.
  static constexpr std::string_view contexts_[] = {"base:allocation"};
  nbdwire::server_config cfg_;
  std::shared_ptr<const examples::tls_credentials> tls_creds_;  // --tls: shared by the connections
  int ep_ = -1, sig_fd_ = -1;
  std::unordered_map<int, std::unique_ptr<connection>> conns_;
  std::unique_ptr<kernel_device> device_;  // --device: the kernel is the one client
};

}  // namespace nbdwire_server
