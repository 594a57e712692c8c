// SPDX-License-Identifier: MIT
// nbdwire client: the configuration, the protocol states and the one transition table of the
// client machine. Every state change of nbdwire::client goes through client_transitions.
//
// The table's states are protocol positions: which message (or which part of one) comes
// next. Each option of go()'s plan has its own pair of states (reply header, reply data), and
// a transmission reply its own (header, chunk payload, READ data). state() reports the phase a
// state belongs to (the first eight values), so callers see the same states as before.
#pragma once

#include <array>        // std::array: the table
#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <span>         // std::span: configured context names
#include <string_view>  // names

#include "nbdwire/constants.hpp"      // handshake_style, info_type
#include "nbdwire/detail/outbox.hpp"  // transition, next_state, table_well_formed
#include "nbdwire/trace.hpp"          // state_trace

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// Which NBD_INFO_* items go() and info() ask for: bit (1 << info_type).
namespace info_request {
inline constexpr std::uint32_t name = 1u << static_cast<unsigned>(info_type::name);
inline constexpr std::uint32_t description = 1u << static_cast<unsigned>(info_type::description);
inline constexpr std::uint32_t block_size = 1u << static_cast<unsigned>(info_type::block_size);
inline constexpr std::uint32_t all = name | description | block_size;
}  // namespace info_request

/// The client's TLS policy ("TLS support"). The machine never touches TLS itself: it sends
/// NBD_OPT_STARTTLS before any other option, reports `start_tls` on the ACK, and the caller
/// runs the TLS handshake and calls client::tls_started().
enum class client_tls : std::uint8_t {
  off,            ///< plaintext; NBD_REP_ERR_TLS_REQD is reported as any refusal
  opportunistic,  ///< STARTTLS first when the server is fixed newstyle; go on in plaintext if refused
  require,        ///< nbds://: refuse oldstyle and non-fixed servers (libnbd CVE-2019-14842) and
                  ///< any refusal of STARTTLS; nothing else is sent before TLS
};

enum class client_state : std::uint8_t;    // below
enum class client_trigger : std::uint8_t;  // below
/// Sees every state change of a client (trace.hpp).
using client_trace = state_trace<client_state, client_trigger>;

struct client_config {
  /// legacy_1997 means no handshake; any other value means "read the greeting", which tells
  /// oldstyle, newstyle and fixed newstyle apart.
  handshake_style style = handshake_style::fixed_newstyle;
  std::uint64_t legacy_export_size = 0;  ///< legacy_1997 only: the size comes from configuration
  bool legacy_read_only = false;         ///< legacy_1997 only
  bool no_zeroes = true;                 ///< set C_NO_ZEROES when the server offers NO_ZEROES
  bool fallback_to_export_name = true;   ///< GO refused with ERR_UNSUP: send EXPORT_NAME ("NBD_OPT_GO")
  /// Before GO, INFO or LIST_META_CONTEXT, ask for extended headers, then (if refused)
  /// structured replies; each at most once per connection. A refusal is not an error. A
  /// build without structured replies (NBDWIRE_CLIENT_STRUCTURED_REPLIES=0) asks for neither.
  bool request_extended_headers = client_has_structured_replies;
  bool request_structured_replies = client_has_structured_replies;
  /// Contexts to select with SET_META_CONTEXT before GO (e.g. "base:allocation"); caller-owned,
  /// must outlive the machine. Sent only once structured replies are on.
  std::span<const std::string_view> meta_contexts{};
  /// Anything but off needs NBDWIRE_CLIENT_STARTTLS (errc::feature_not_built).
  client_tls tls = client_tls::off;
  /// Called on every state change (trace.hpp): --debug output, tests. Off by default.
  client_trace trace{};
};

/// Client protocol states. Every transition is in detail::client_transitions. The first
/// eight are the phases state() reports; the others are positions inside a phase.
enum class client_state : std::uint8_t {
  awaiting_greeting,           ///< the server speaks first
  negotiating,                 ///< newstyle: no option outstanding; the caller may send one
  awaiting_option_reply,       ///< the caller's option outstanding: a reply header comes next
  awaiting_export_name_reply,  ///< EXPORT_NAME sent: 134 or 10 raw bytes, or a close
  transmission,                ///< "Transmission phase": a reply header comes next
  disconnecting,               ///< NBD_CMD_DISC queued: a reply header (or the close) comes next
  closed,                      ///< terminal: clean end
  failed,                      ///< terminal: error() says why
  option_reply_data,           ///< the data of a reply to the caller's option ("Option reply")
  awaiting_ext_headers_reply,  ///< plan: NBD_OPT_EXTENDED_HEADERS outstanding, reply header next
  ext_headers_reply_data,      ///< plan: the data of its (error) reply
  awaiting_sr_reply,           ///< plan: NBD_OPT_STRUCTURED_REPLY outstanding, reply header next
  sr_reply_data,               ///< plan: the data of its (error) reply
  awaiting_set_meta_reply,     ///< plan: NBD_OPT_SET_META_CONTEXT outstanding, reply header next
  set_meta_reply_data,         ///< plan: the data of a META_CONTEXT or error reply
  chunk_payload,               ///< transmission: a chunk's payload ("Structured reply chunk message types")
  read_data,                   ///< transmission: READ data (simple reply, or OFFSET_DATA after its offset)
  disconnecting_chunk_payload, ///< disconnecting: a chunk's payload
  disconnecting_read_data,     ///< disconnecting: READ data
  awaiting_starttls_reply,     ///< TLS: NBD_OPT_STARTTLS sent after the client flags, reply header next
  starttls_reply_data,         ///< TLS: the data of its (error) reply
  tls_pending,                 ///< TLS: ACK read; the caller runs the TLS handshake, then tls_started()
  greeting_due,                ///< TLS settled: the next receive() reports `greeting`
};

inline constexpr std::size_t client_state_count = 23;

/// The enumerator's name, as docs/design.md shows it.
[[nodiscard]] constexpr std::string_view to_string(client_state v) noexcept {
  switch (v) {
    case client_state::awaiting_greeting: return "awaiting_greeting";
    case client_state::negotiating: return "negotiating";
    case client_state::awaiting_option_reply: return "awaiting_option_reply";
    case client_state::awaiting_export_name_reply: return "awaiting_export_name_reply";
    case client_state::transmission: return "transmission";
    case client_state::disconnecting: return "disconnecting";
    case client_state::closed: return "closed";
    case client_state::failed: return "failed";
    case client_state::option_reply_data: return "option_reply_data";
    case client_state::awaiting_ext_headers_reply: return "awaiting_ext_headers_reply";
    case client_state::ext_headers_reply_data: return "ext_headers_reply_data";
    case client_state::awaiting_sr_reply: return "awaiting_sr_reply";
    case client_state::sr_reply_data: return "sr_reply_data";
    case client_state::awaiting_set_meta_reply: return "awaiting_set_meta_reply";
    case client_state::set_meta_reply_data: return "set_meta_reply_data";
    case client_state::chunk_payload: return "chunk_payload";
    case client_state::read_data: return "read_data";
    case client_state::disconnecting_chunk_payload: return "disconnecting_chunk_payload";
    case client_state::disconnecting_read_data: return "disconnecting_read_data";
    case client_state::awaiting_starttls_reply: return "awaiting_starttls_reply";
    case client_state::starttls_reply_data: return "starttls_reply_data";
    case client_state::tls_pending: return "tls_pending";
    case client_state::greeting_due: return "greeting_due";
  }
  return "unknown";
}

enum class client_trigger : std::uint8_t {
  handshake_skipped,      ///< the 1997 framing (no handshake), or a negotiated hand-over
  oldstyle_greeting,      ///< the oldstyle greeting: size and flags, no options
  newstyle_greeting,      ///< the newstyle greeting; client flags queued
  option_sent,            ///< the caller's option sent: list() / abort(), or go() / info() / list_meta_context() once its plan needs nothing more
  export_name_sent,       ///< export_name() sent (or go() on a non-fixed newstyle server)
  option_final,           ///< final reply other than GO's ACK
  go_acked,               ///< GO acknowledged with NBD_INFO_EXPORT
  go_fell_back,           ///< GO got ERR_UNSUP; EXPORT_NAME sent instead
  shutdown_abort,         ///< ERR_SHUTDOWN: ABORT sent in its place (a MUST)
  ext_headers_sent,       ///< the plan asks for extended headers first (once per connection)
  sr_sent,                ///< the plan asks for structured replies (extended headers off or refused)
  set_meta_sent,          ///< the plan selects client_config::meta_contexts before GO (structured replies on)
  reply_with_data,        ///< an option reply header announcing data (informational or error): its data comes next
  reply_item,             ///< an informational reply's data ended (SERVER, INFO, META_CONTEXT); more replies follow
  abort_acked,            ///< ABORT acknowledged, or the server closed after ABORT
  export_name_replied,    ///< the 134- or 10-byte EXPORT_NAME reply
  chunk_header,           ///< a chunk header whose payload is decoded next
  read_data_due,          ///< READ data comes next: a simple reply's, or an OFFSET_DATA chunk's after its offset
  chunk_done,             ///< a chunk's payload ended (its DONE flag, if set, completes the request)
  read_data_done,         ///< the READ data ended (completing the simple reply, or the OFFSET_DATA chunk)
  disc_sent,              ///< disconnect(), or the DISC owed after NBD_ESHUTDOWN
  peer_closed,            ///< the server closed at a message boundary with nothing owed
  violation,              ///< the server broke a rule (a fatal errc)
  starttls_sent,          ///< client_config::tls: STARTTLS queued with the client flags
  starttls_acked,         ///< STARTTLS acknowledged: the next bytes are TLS
  starttls_refused,       ///< opportunistic: STARTTLS refused; plaintext from here
  tls_started,            ///< the caller says the TLS handshake is done (client::tls_started())
  greeting_reported,      ///< `greeting` reported once TLS is settled
};

/// The enumerator's name, as docs/design.md shows it.
[[nodiscard]] constexpr std::string_view to_string(client_trigger v) noexcept {
  switch (v) {
    case client_trigger::handshake_skipped: return "handshake_skipped";
    case client_trigger::oldstyle_greeting: return "oldstyle_greeting";
    case client_trigger::newstyle_greeting: return "newstyle_greeting";
    case client_trigger::option_sent: return "option_sent";
    case client_trigger::export_name_sent: return "export_name_sent";
    case client_trigger::option_final: return "option_final";
    case client_trigger::go_acked: return "go_acked";
    case client_trigger::go_fell_back: return "go_fell_back";
    case client_trigger::shutdown_abort: return "shutdown_abort";
    case client_trigger::ext_headers_sent: return "ext_headers_sent";
    case client_trigger::sr_sent: return "sr_sent";
    case client_trigger::set_meta_sent: return "set_meta_sent";
    case client_trigger::reply_with_data: return "reply_with_data";
    case client_trigger::reply_item: return "reply_item";
    case client_trigger::abort_acked: return "abort_acked";
    case client_trigger::export_name_replied: return "export_name_replied";
    case client_trigger::chunk_header: return "chunk_header";
    case client_trigger::read_data_due: return "read_data_due";
    case client_trigger::chunk_done: return "chunk_done";
    case client_trigger::read_data_done: return "read_data_done";
    case client_trigger::disc_sent: return "disc_sent";
    case client_trigger::peer_closed: return "peer_closed";
    case client_trigger::violation: return "violation";
    case client_trigger::starttls_sent: return "starttls_sent";
    case client_trigger::starttls_acked: return "starttls_acked";
    case client_trigger::starttls_refused: return "starttls_refused";
    case client_trigger::tls_started: return "tls_started";
    case client_trigger::greeting_reported: return "greeting_reported";
  }
  return "unknown";
}

namespace detail {
using client_transition = transition<client_state, client_trigger>;
using cs = client_state;
using ct = client_trigger;
inline constexpr std::array client_transitions{
    // greeting
    client_transition{cs::awaiting_greeting, ct::handshake_skipped, cs::transmission},
    client_transition{cs::awaiting_greeting, ct::oldstyle_greeting, cs::transmission},
    client_transition{cs::awaiting_greeting, ct::newstyle_greeting, cs::negotiating},
    client_transition{cs::awaiting_greeting, ct::starttls_sent, cs::awaiting_starttls_reply},
    client_transition{cs::awaiting_greeting, ct::violation, cs::failed},
    // TLS: STARTTLS first ("TLS support"), then the greeting is reported
    client_transition{cs::awaiting_starttls_reply, ct::starttls_acked, cs::tls_pending},
    client_transition{cs::awaiting_starttls_reply, ct::reply_with_data, cs::starttls_reply_data},
    client_transition{cs::awaiting_starttls_reply, ct::violation, cs::failed},
    client_transition{cs::starttls_reply_data, ct::starttls_refused, cs::negotiating},
    client_transition{cs::starttls_reply_data, ct::shutdown_abort, cs::awaiting_option_reply},
    client_transition{cs::starttls_reply_data, ct::violation, cs::failed},
    client_transition{cs::tls_pending, ct::tls_started, cs::greeting_due},
    client_transition{cs::tls_pending, ct::violation, cs::failed},
    client_transition{cs::greeting_due, ct::greeting_reported, cs::negotiating},
    client_transition{cs::greeting_due, ct::violation, cs::failed},
    // the caller sends an option (or the first step of go()'s plan)
    client_transition{cs::negotiating, ct::ext_headers_sent, cs::awaiting_ext_headers_reply},
    client_transition{cs::negotiating, ct::sr_sent, cs::awaiting_sr_reply},
    client_transition{cs::negotiating, ct::set_meta_sent, cs::awaiting_set_meta_reply},
    client_transition{cs::negotiating, ct::option_sent, cs::awaiting_option_reply},
    client_transition{cs::negotiating, ct::export_name_sent, cs::awaiting_export_name_reply},
    client_transition{cs::negotiating, ct::peer_closed, cs::closed},
    client_transition{cs::negotiating, ct::violation, cs::failed},
    // plan step: NBD_OPT_EXTENDED_HEADERS (ACK or error)
    client_transition{cs::awaiting_ext_headers_reply, ct::reply_with_data, cs::ext_headers_reply_data},
    client_transition{cs::awaiting_ext_headers_reply, ct::sr_sent, cs::awaiting_sr_reply},
    client_transition{cs::awaiting_ext_headers_reply, ct::set_meta_sent, cs::awaiting_set_meta_reply},
    client_transition{cs::awaiting_ext_headers_reply, ct::option_sent, cs::awaiting_option_reply},
    client_transition{cs::awaiting_ext_headers_reply, ct::violation, cs::failed},
    client_transition{cs::ext_headers_reply_data, ct::sr_sent, cs::awaiting_sr_reply},
    client_transition{cs::ext_headers_reply_data, ct::set_meta_sent, cs::awaiting_set_meta_reply},
    client_transition{cs::ext_headers_reply_data, ct::option_sent, cs::awaiting_option_reply},
    client_transition{cs::ext_headers_reply_data, ct::shutdown_abort, cs::awaiting_option_reply},
    client_transition{cs::ext_headers_reply_data, ct::violation, cs::failed},
    // plan step: NBD_OPT_STRUCTURED_REPLY (ACK or error)
    client_transition{cs::awaiting_sr_reply, ct::reply_with_data, cs::sr_reply_data},
    client_transition{cs::awaiting_sr_reply, ct::set_meta_sent, cs::awaiting_set_meta_reply},
    client_transition{cs::awaiting_sr_reply, ct::option_sent, cs::awaiting_option_reply},
    client_transition{cs::awaiting_sr_reply, ct::violation, cs::failed},
    client_transition{cs::sr_reply_data, ct::set_meta_sent, cs::awaiting_set_meta_reply},
    client_transition{cs::sr_reply_data, ct::option_sent, cs::awaiting_option_reply},
    client_transition{cs::sr_reply_data, ct::shutdown_abort, cs::awaiting_option_reply},
    client_transition{cs::sr_reply_data, ct::violation, cs::failed},
    // plan step: NBD_OPT_SET_META_CONTEXT (META_CONTEXT replies, then ACK or error)
    client_transition{cs::awaiting_set_meta_reply, ct::reply_with_data, cs::set_meta_reply_data},
    client_transition{cs::awaiting_set_meta_reply, ct::option_sent, cs::awaiting_option_reply},
    client_transition{cs::awaiting_set_meta_reply, ct::violation, cs::failed},
    client_transition{cs::set_meta_reply_data, ct::reply_item, cs::awaiting_set_meta_reply},
    client_transition{cs::set_meta_reply_data, ct::option_sent, cs::awaiting_option_reply},
    client_transition{cs::set_meta_reply_data, ct::shutdown_abort, cs::awaiting_option_reply},
    client_transition{cs::set_meta_reply_data, ct::violation, cs::failed},
    // the caller's option
    client_transition{cs::awaiting_option_reply, ct::reply_with_data, cs::option_reply_data},
    client_transition{cs::awaiting_option_reply, ct::option_final, cs::negotiating},
    client_transition{cs::awaiting_option_reply, ct::go_acked, cs::transmission},
    client_transition{cs::awaiting_option_reply, ct::abort_acked, cs::closed},
    client_transition{cs::awaiting_option_reply, ct::violation, cs::failed},
    client_transition{cs::option_reply_data, ct::reply_item, cs::awaiting_option_reply},
    client_transition{cs::option_reply_data, ct::option_final, cs::negotiating},
    client_transition{cs::option_reply_data, ct::go_fell_back, cs::awaiting_export_name_reply},
    client_transition{cs::option_reply_data, ct::shutdown_abort, cs::awaiting_option_reply},
    client_transition{cs::option_reply_data, ct::violation, cs::failed},
    client_transition{cs::awaiting_export_name_reply, ct::export_name_replied, cs::transmission},
    client_transition{cs::awaiting_export_name_reply, ct::violation, cs::failed},
    // transmission: reply header, chunk payload, READ data
    client_transition{cs::transmission, ct::chunk_header, cs::chunk_payload},
    client_transition{cs::transmission, ct::read_data_due, cs::read_data},
    client_transition{cs::transmission, ct::disc_sent, cs::disconnecting},
    client_transition{cs::transmission, ct::peer_closed, cs::closed},
    client_transition{cs::transmission, ct::violation, cs::failed},
    client_transition{cs::chunk_payload, ct::read_data_due, cs::read_data},
    client_transition{cs::chunk_payload, ct::chunk_done, cs::transmission},
    client_transition{cs::chunk_payload, ct::disc_sent, cs::disconnecting_chunk_payload},
    client_transition{cs::chunk_payload, ct::violation, cs::failed},
    client_transition{cs::read_data, ct::read_data_done, cs::transmission},
    client_transition{cs::read_data, ct::disc_sent, cs::disconnecting_read_data},
    client_transition{cs::read_data, ct::violation, cs::failed},
    // after DISC: the replies still owed, the same way
    client_transition{cs::disconnecting, ct::chunk_header, cs::disconnecting_chunk_payload},
    client_transition{cs::disconnecting, ct::read_data_due, cs::disconnecting_read_data},
    client_transition{cs::disconnecting, ct::peer_closed, cs::closed},
    client_transition{cs::disconnecting, ct::violation, cs::failed},
    client_transition{cs::disconnecting_chunk_payload, ct::read_data_due, cs::disconnecting_read_data},
    client_transition{cs::disconnecting_chunk_payload, ct::chunk_done, cs::disconnecting},
    client_transition{cs::disconnecting_chunk_payload, ct::violation, cs::failed},
    client_transition{cs::disconnecting_read_data, ct::read_data_done, cs::disconnecting},
    client_transition{cs::disconnecting_read_data, ct::violation, cs::failed},
};
static_assert(table_well_formed(client_transitions, client_state_count, client_state::awaiting_greeting,
                                {client_state::closed, client_state::failed}));
static_assert(static_cast<std::size_t>(client_state::greeting_due) + 1 == client_state_count);
}  // namespace detail

/// The phase a state belongs to: what client::state() reports (one of the first eight
/// values). A trace (trace.hpp) names the fine states; this maps them to the phases.
[[nodiscard]] constexpr client_state phase_of(client_state s) noexcept {
  switch (s) {
    case client_state::option_reply_data:
    case client_state::awaiting_ext_headers_reply:
    case client_state::ext_headers_reply_data:
    case client_state::awaiting_sr_reply:
    case client_state::sr_reply_data:
    case client_state::awaiting_set_meta_reply:
    case client_state::set_meta_reply_data: return client_state::awaiting_option_reply;
    case client_state::chunk_payload:
    case client_state::read_data: return client_state::transmission;
    case client_state::disconnecting_chunk_payload:
    case client_state::disconnecting_read_data: return client_state::disconnecting;
    case client_state::awaiting_starttls_reply:
    case client_state::starttls_reply_data:
    case client_state::tls_pending:
    case client_state::greeting_due: return client_state::awaiting_greeting;
    default: return s;
  }
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
