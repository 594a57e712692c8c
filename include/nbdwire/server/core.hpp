// SPDX-License-Identifier: MIT
// nbdwire server: what the handshake and transmission parts share. One configuration, one
// state (moved only through detail::server_transitions), one sticky error, the negotiated
// value the handshake fills and transmission serves, the header stash and the outbox.
#pragma once

#include <cstddef>  // std::size_t

#include "nbdwire/detail/outbox.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/server/config.hpp"
#include "nbdwire/server/states.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

struct server_core {
  explicit server_core(const server_config& c) noexcept : cfg(c) {}

  server_config cfg;
  server_state state = server_state::start;
  errc error = errc::ok;
  nbdwire::negotiated neg{};  ///< complete from the hand-over to transmission on
  bool shutting_down = false;  ///< begin_shutdown(): later options and requests are refused
  bool terminal_reported = false;  ///< receive() reported closed/failed once
  stash head{};  ///< a fixed header (client flags, option, request) arriving in pieces
  outbox out{};

  /// The one place the state changes: the table decides.
  void move(server_trigger t) noexcept {
    const auto to = next_state(server_transitions, state, t);
    const server_state from = state;
    state = to ? *to : server_state::failed;
    if (!to && error == errc::ok) error = errc::illegal_transition;
    cfg.trace(from, t, state);
  }
  event fail(errc e) noexcept {
    if (state != server_state::failed) {
      error = e;
      move(server_trigger::violation);
    }
    return failed_event();
  }
  [[nodiscard]] event failed_event() const noexcept { return {.kind = event_kind::failed, .error = error}; }

  [[nodiscard]] bool legacy() const noexcept { return cfg.style == handshake_style::legacy_1997; }
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
