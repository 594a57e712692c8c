// SPDX-License-Identifier: MIT
// nbdwire server: the protocol states, the triggers that move between them, and the one
// table (detail::server_transitions) that says which moves are legal. Nothing moves the
// server anywhere else: detail::server_core::move() looks every move up here, and a move
// the table does not list fails the connection with errc::illegal_transition.
#pragma once

#include <array>        // std::array: the table
#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint8_t
#include <string_view>  // names

#include "nbdwire/detail/outbox.hpp"  // detail::transition, next_state, table_well_formed
#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// Server protocol states. Every transition is in server_transitions below. (The first six
/// keep their numbers from earlier releases; the finer states follow them.)
enum class server_state : std::uint8_t {
  start,                  ///< constructed: the greeting (if any) is being queued
  awaiting_client_flags,  ///< "Fixed newstyle negotiation": greeting sent, the client flags are due
  negotiating,            ///< "Option haggling": between options, an option header is due
  transmission,           ///< "Transmission phase": between requests, a request header is due
  closed,                 ///< terminal for input: DISC, ABORT or a clean close (reply() still works)
  failed,                 ///< terminal: error() says why
  option_data,            ///< "Option haggling": an option's data streams in (decoded or dropped)
  answering_option,       ///< the option is read; its answer waits for outbox room (LIST and
                          ///< META_CONTEXT replies stream out as it drains)
  write_payload,          ///< "NBD_CMD_WRITE": an accepted WRITE's data streams in
  discard_payload,        ///< a refused request's payload streams in and is dropped
  tls_pending,            ///< STARTTLS acknowledged: the caller runs the TLS handshake and
                          ///< calls tls_started(); receive() meanwhile is a misuse
};

/// The enumerator's name, as docs/design.md shows it.
[[nodiscard]] constexpr std::string_view to_string(server_state v) noexcept {
  switch (v) {
    case server_state::start: return "start";
    case server_state::awaiting_client_flags: return "awaiting_client_flags";
    case server_state::negotiating: return "negotiating";
    case server_state::transmission: return "transmission";
    case server_state::closed: return "closed";
    case server_state::failed: return "failed";
    case server_state::option_data: return "option_data";
    case server_state::answering_option: return "answering_option";
    case server_state::write_payload: return "write_payload";
    case server_state::discard_payload: return "discard_payload";
    case server_state::tls_pending: return "tls_pending";
  }
  return "unknown";
}

inline constexpr std::size_t server_state_count = 11;

enum class server_trigger : std::uint8_t {
  greeting_queued,    ///< newstyle greeting queued
  handshake_skipped,  ///< oldstyle greeting queued, the 1997 framing, or a negotiated hand-over
  client_flags,   ///< valid client flags
  export_chosen,  ///< the EXPORT_NAME reply or GO's ACK queued
  abort,  ///< NBD_OPT_ABORT acknowledged
  disc,  ///< NBD_CMD_DISC received (requests in flight are still answered)
  peer_closed,  ///< the client closed at a message boundary
  violation,  ///< the client broke a rule, or the configuration is invalid (a fatal errc)
  option_header,  ///< an option header with the option magic, within the option budget and length limit
  option_data_end,  ///< the last byte of the option's data consumed (decoded, or dropped when malformed or unused)
  option_answered,  ///< an answer that ends with ACK or NBD_REP_ERR_* queued (not EXPORT_NAME, GO's ACK or ABORT)
  request_header,  ///< a request without payload read: handed to the caller, or refused and answered
  write_request,  ///< a WRITE accepted: its payload follows
  refused_with_payload,  ///< a request refused and answered whose payload follows (checklist 3.3)
  payload_end,  ///< the last byte of the payload consumed (received, or dropped)
  starttls_acked,  ///< NBD_OPT_STARTTLS acknowledged: the next bytes are TLS
  tls_started,  ///< the caller says the TLS handshake is done (server::tls_started())
};

/// The enumerator's name, as docs/design.md shows it.
[[nodiscard]] constexpr std::string_view to_string(server_trigger v) noexcept {
  switch (v) {
    case server_trigger::greeting_queued: return "greeting_queued";
    case server_trigger::handshake_skipped: return "handshake_skipped";
    case server_trigger::client_flags: return "client_flags";
    case server_trigger::export_chosen: return "export_chosen";
    case server_trigger::abort: return "abort";
    case server_trigger::disc: return "disc";
    case server_trigger::peer_closed: return "peer_closed";
    case server_trigger::violation: return "violation";
    case server_trigger::option_header: return "option_header";
    case server_trigger::option_data_end: return "option_data_end";
    case server_trigger::option_answered: return "option_answered";
    case server_trigger::request_header: return "request_header";
    case server_trigger::write_request: return "write_request";
    case server_trigger::refused_with_payload: return "refused_with_payload";
    case server_trigger::payload_end: return "payload_end";
    case server_trigger::starttls_acked: return "starttls_acked";
    case server_trigger::tls_started: return "tls_started";
  }
  return "unknown";
}

namespace detail {
using server_transition = transition<server_state, server_trigger>;
inline constexpr auto server_transitions = [] {
  using enum server_state;
  using enum server_trigger;
  return std::array{
    server_transition{start, greeting_queued, awaiting_client_flags},
    server_transition{start, handshake_skipped, transmission},
    server_transition{start, violation, failed},

    server_transition{awaiting_client_flags, client_flags, negotiating},
    server_transition{awaiting_client_flags, peer_closed, closed},
    server_transition{awaiting_client_flags, violation, failed},

    server_transition{negotiating, option_header, option_data},
    server_transition{negotiating, peer_closed, closed},
    server_transition{negotiating, violation, failed},

    server_transition{option_data, option_data_end, answering_option},
    server_transition{option_data, violation, failed},

    server_transition{answering_option, option_answered, negotiating},
    server_transition{answering_option, export_chosen, transmission},
    server_transition{answering_option, abort, closed},
    server_transition{answering_option, starttls_acked, tls_pending},
    server_transition{answering_option, peer_closed, closed},
    server_transition{answering_option, violation, failed},

    server_transition{tls_pending, tls_started, negotiating},
    server_transition{tls_pending, peer_closed, closed},
    server_transition{tls_pending, violation, failed},

    server_transition{transmission, request_header, transmission},
    server_transition{transmission, write_request, write_payload},
    server_transition{transmission, refused_with_payload, discard_payload},
    server_transition{transmission, disc, closed},
    server_transition{transmission, peer_closed, closed},
    server_transition{transmission, violation, failed},

    server_transition{write_payload, payload_end, transmission},
    server_transition{write_payload, violation, failed},

    server_transition{discard_payload, payload_end, transmission},
    server_transition{discard_payload, violation, failed},
  };
}();
static_assert(table_well_formed(server_transitions, server_state_count, server_state::start,
                                {server_state::closed, server_state::failed}));

}  // namespace detail

/// The phase a state belongs to, which server::state() reports: reading and answering an
/// option are `negotiating`, a request's payload is `transmission`. A trace (trace.hpp) names
/// the fine states; this maps them to the phases.
[[nodiscard]] constexpr server_state phase_of(server_state s) noexcept {
  switch (s) {
    case server_state::option_data:
    case server_state::answering_option:
    case server_state::tls_pending: return server_state::negotiating;
    case server_state::write_payload:
    case server_state::discard_payload: return server_state::transmission;
    default: return s;
  }
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
