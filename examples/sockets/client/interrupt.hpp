// SPDX-License-Identifier: MIT
// nbdwire-client: SIGINT and SIGTERM during a transfer. The handler only records the
// signal; transfers stop issuing requests, wait for those in flight, flush the target and
// disconnect (NBD_CMD_DISC), then fail with an interruption, which main() turns into exit
// status 128 + the signal (130 for SIGINT).
#pragma once

#include "../common.hpp"

namespace client_app {

/// Catches SIGINT and SIGTERM from now on (without SA_RESTART, so blocking calls return EINTR).
void catch_interrupts();

/// The signal that asked the transfer to stop, or 0.
int interrupted() noexcept;

/// What a transfer stopped by a signal throws once it has wound down.
struct interruption : examples::failure {
  explicit interruption(int sig);
  int signal;
};

/// Throws an interruption when a signal asked to stop.
void check_interrupted();

}  // namespace client_app
