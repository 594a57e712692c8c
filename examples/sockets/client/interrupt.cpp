// SPDX-License-Identifier: MIT
// nbdwire-client: SIGINT and SIGTERM during a transfer.
#include "interrupt.hpp"

#include <signal.h>  // sigaction

#include <atomic>  // the signal, set in the handler

namespace client_app {

namespace {

std::atomic<int> caught{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler stores into it");

extern "C" void on_signal(int sig) {
  int none = 0;
  caught.compare_exchange_strong(none, sig);
}

}  // namespace

void catch_interrupts() {
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() and read() return EINTR and the loops look again
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int interrupted() noexcept { return caught.load(std::memory_order_relaxed); }

interruption::interruption(int sig)
    : examples::failure(std::string("interrupted by ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                        "; the requests in flight were completed first"),
      signal(sig) {}

void check_interrupted() {
  if (const int sig = interrupted()) throw interruption(sig);
}

}  // namespace client_app
