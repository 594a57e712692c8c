// SPDX-License-Identifier: MIT
// nbdwire-server: the event loops. --threads N runs N of them, one per thread, each with its
// own epoll set and its own connections: sockets are non-blocking, so a slow or idle client
// never holds up another, and a connection is served by one loop from its first byte to its
// last, so nothing on the request path takes a lock. Loop 0 (the main thread) also holds the
// listening sockets (from the command line or systemd socket activation) and SIGINT/SIGTERM
// (through a signalfd): it accepts, only while a descriptor and a --max-connections slot are
// free (counted across loops), and hands each new socket to the loop with the fewest
// connections (ties in turn, so a multi-conn client's connections land on different loops)
// through that loop's handoff queue and eventfd. Also the graceful shutdown of every loop, the
// handshake deadline, --busy-poll and --pidfile.
#pragma once

#include <sys/epoll.h>  // epoll_event

#include <atomic>         // counts and state shared by the loops
#include <chrono>         // deadlines
#include <memory>         // std::unique_ptr
#include <mutex>          // the handoff queues
#include <string_view>    // context names
#include <thread>         // loops 1..N-1
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

  /// A socket accepted by loop 0 for another loop.
  struct handoff {
    int fd = -1;
    bool is_unix = false;
  };
  /// One event loop: its epoll set and the connections it serves. Only its own thread touches
  /// `conns` and the epoll set; others only push to `queue` (under `queue_mu`), write `wake`,
  /// and read `load`.
  struct worker {
    unsigned index = 0;
    int ep = -1;
    int wake = -1;  // eventfd: sockets handed over, the shutdown began, a slot came free
    std::unordered_map<int, std::unique_ptr<connection>> conns;
    std::atomic<std::size_t> load{0};  // connections served or handed over, for choosing a loop
    std::mutex queue_mu;
    std::vector<handoff> queue;
    std::vector<handoff> taken;  // the queue swapped out: reused, so a handoff allocates nothing
    bool shutting_down = false;  // this loop has begun the shutdown
    bool closed = false;         // this loop has closed its connections
    std::thread thread;
  };
  enum phase : int { running, draining, stopping };

  void open_listeners();
  void loop(worker& w);
  [[nodiscard]] bool keep_going(worker& w);
  void run_worker(worker& w);
  int wait_for_events(worker& w, epoll_event* evs, int max);
  int timeout_ms(worker& w);
  int drop_late_handshakes(worker& w);
  static void add(const worker& w, int fd, std::uint32_t mask);
  static void wake(const worker& w);
  void accept_on(const listener& l);
  worker& choose_loop();
  void adopt(worker& w, int fd, bool is_unix);
  void adopt_handoffs(worker& w);
  void set_accepting(bool on);
  void accept_failed(int err);
  void step(worker& w, connection& c, bool readable);
  void drop(worker& w, int fd);
  void on_signal();
  void begin_shutdown(worker& w);
  void close_all(worker& w);
  void stop();
  void write_pidfile();
  void start_device();

  settings s_;
  std::vector<listener> listeners_;
  bool accepting_ = false;       // the listeners are in the epoll set
  clock::time_point retry_accept_{};  // descriptors ran out: try accepting again then
  clock::time_point last_accept_error_{};
  unsigned accept_errors_ = 0;   // since the last message (rate-limited to one per 10 s)
  std::vector<std::unique_ptr<worker>> workers_;  // [0] runs on the main thread and accepts
  std::size_t next_loop_ = 0;                      // where the next tie goes (loop 0 only)
  std::atomic<int> phase_{running};
  clock::time_point shutdown_deadline_{};  // set before phase_ leaves `running`
  std::atomic<std::size_t> total_{0};      // connections across the loops (--max-connections)
  // Loop 0 stopped accepting for want of a slot or a descriptor: a loop that closes a
  // connection wakes it.
  std::atomic<bool> acceptor_waiting_{false};
  std::atomic<unsigned> loops_closed_{0};  // loops that have closed their connections
  std::atomic<bool> failed_{false};        // a loop failed: the process exits 1
  std::vector<nbdwire::export_config> configs_;
  std::vector<backend*> stores_;  // by export index
  // Context id 0: the only one offered.
  static constexpr std::string_view contexts_[] = {"base:allocation"};
  nbdwire::server_config cfg_;
  std::shared_ptr<const examples::tls_credentials> tls_creds_;  // --tls: shared by the connections
  int sig_fd_ = -1;
  std::unique_ptr<kernel_device> device_;  // --device: the kernel is the one client (loop 0)
};

}  // namespace nbdwire_server
