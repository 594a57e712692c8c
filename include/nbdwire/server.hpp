// SPDX-License-Identifier: MIT
// nbdwire: the server machine. Bytes from the client in, events out; replies in, bytes
// for the client out. No I/O, no heap, no exceptions.
//
// Contract
//   receive(in)        -> {consumed, event}. Drop `consumed` bytes and call again until the
//                         event is need_more. `blocked` means the machine holds input back
//                         until the caller drains pending_output() (or, in the 1997 framing,
//                         answers the request in hand); then call receive() again.
//   reply(req, error)  -> answers a `request` event. A successful READ reply reserves the
//                         data: pending_payload() asks the caller to send it right after
//                         pending_output(), straight from its storage.
//   incoming_payload() -> WRITE data arriving next, which the caller may recv() straight
//                         into its storage and report with consume_incoming_payload(n); or
//                         feed it to receive() and get `payload` events that view the input.
// The machine validates every request (checklist 3.3) and answers invalid ones itself, so
// the caller only ever sees requests it can carry out. A refused WRITE's payload is consumed
// and dropped, which keeps the stream in sync. Framing errors are terminal.
// Handshake styles: fixed newstyle, newstyle, oldstyle, and the 1997 framing without any
// handshake. Option data is parsed as it streams in, so a long option costs no memory; the
// only buffers are one export name (max_string bytes) and the outbox.
#pragma once

#include <algorithm>    // std::min
#include <array>        // std::array
#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional
#include <span>         // std::span: the caller's export table
#include <string_view>  // export names and messages

#include "nbdwire/bytes.hpp"
#include "nbdwire/config.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/detail/outbox.hpp"
#include "nbdwire/detail/rules.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/wire.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// One export a server offers. The strings are the caller's and must outlive the machine.
struct export_config {
  std::string_view name;         ///< at most max_string bytes
  std::string_view description;  ///< at most max_string bytes; sent on request when not empty
  std::uint64_t size = 0;
  /// Capabilities: read_only, send_flush, send_fua, send_trim, send_write_zeroes,
  /// send_fast_zero, send_cache, can_multi_conn, rotational. has_flags is added, and flags
  /// this release cannot honour (send_df, block_status_payload) are removed.
  std::uint16_t transmission_flags = 0;
  block_size_constraints block_size{};  ///< enforced on requests; advertised by NBD_INFO_BLOCK_SIZE
};

struct server_config {
  static constexpr std::size_t no_export = ~std::size_t{0};
  handshake_style style = handshake_style::fixed_newstyle;
  std::span<const export_config> exports{};  ///< caller-owned; must outlive the machine
  std::size_t default_export = 0;            ///< selected by the empty name; no_export for none
  std::uint32_t max_options = 64;            ///< options per connection before a hard disconnect
  std::uint32_t max_option_length = 1u << 20;///< longer option data is a hard disconnect (DoS)
  bool no_zeroes = true;                     ///< advertise NBD_FLAG_NO_ZEROES
};

/// Server protocol states. Every transition is in server_transitions below.
enum class server_state : std::uint8_t {
  awaiting_client_flags,  ///< newstyle greeting sent
  negotiating,            ///< "Option haggling": reading an option, answering it
  transmission,           ///< "Transmission phase"
  closed,                 ///< terminal for input: DISC, ABORT or a clean close (reply() still works)
  failed,                 ///< terminal: error() says why
};
inline constexpr std::size_t server_state_count = 5;

enum class server_trigger : std::uint8_t {
  client_flags,   ///< valid client flags
  export_chosen,  ///< EXPORT_NAME reply or GO's ACK sent
  abort,          ///< NBD_OPT_ABORT answered
  disc,           ///< NBD_CMD_DISC received
  peer_closed,
  violation,
};

namespace detail {
using server_transition = transition<server_state, server_trigger>;
inline constexpr std::array server_transitions{
    server_transition{server_state::awaiting_client_flags, server_trigger::client_flags, server_state::negotiating},
    server_transition{server_state::awaiting_client_flags, server_trigger::peer_closed, server_state::closed},
    server_transition{server_state::awaiting_client_flags, server_trigger::violation, server_state::failed},
    server_transition{server_state::negotiating, server_trigger::export_chosen, server_state::transmission},
    server_transition{server_state::negotiating, server_trigger::abort, server_state::closed},
    server_transition{server_state::negotiating, server_trigger::peer_closed, server_state::closed},
    server_transition{server_state::negotiating, server_trigger::violation, server_state::failed},
    server_transition{server_state::transmission, server_trigger::disc, server_state::closed},
    server_transition{server_state::transmission, server_trigger::peer_closed, server_state::closed},
    server_transition{server_state::transmission, server_trigger::violation, server_state::failed},
};
static_assert(table_well_formed(server_transitions, server_state_count, server_state::awaiting_client_flags,
                                {server_state::closed, server_state::failed}));
}  // namespace detail

class server {
 public:
  /// Queues the greeting (none for legacy_1997). An invalid configuration (a style that
  /// serves one export with another count, a bad default, invalid block sizes, over-long
  /// strings) leaves the machine failed with errc::invalid_config.
  explicit server(const server_config& cfg) noexcept : cfg_(cfg) {
    if (!config_valid()) {
      error_ = errc::invalid_config;
      state_ = server_state::failed;
      return;
    }
    switch (cfg.style) {
      case handshake_style::fixed_newstyle:
      case handshake_style::newstyle: {
        std::uint16_t h = cfg.style == handshake_style::fixed_newstyle ? handshake_flag::fixed_newstyle : 0;
        if (cfg.no_zeroes) h |= handshake_flag::no_zeroes;
        out_.put_record(make_newstyle_greeting(h));
        break;
      }
      case handshake_style::oldstyle:
        choose(0, false);
        out_.put_record(make_oldstyle_greeting(neg_.export_size, neg_.transmission_flags));
        state_ = server_state::transmission;  // the greeting is the whole handshake
        break;
      case handshake_style::legacy_1997:
        choose(0, false);
        state_ = server_state::transmission;
        break;
    }
  }

  // ---- input -------------------------------------------------------------------------------

  [[nodiscard]] receive_result receive(bytes_view in) noexcept {
    std::size_t used = 0;
    for (;;) {
      event ev{};
      const std::size_t n = step(in.subspan(used), ev);
      used += n;
      if (ev.kind != event_kind::need_more || n == 0) return {used, ev};
    }
  }

  /// The client closed the connection.
  [[nodiscard]] event on_eof() noexcept {
    switch (state_) {
      case server_state::failed: return failed_event();
      case server_state::closed: return {.kind = event_kind::closed};
      default: break;
    }
    if (stash_.size() != 0 || phase_ != rx::header) return fail(errc::unexpected_eof);
    move(server_trigger::peer_closed);
    return {.kind = event_kind::closed};
  }

  // ---- output ------------------------------------------------------------------------------

  [[nodiscard]] bytes_view pending_output() const noexcept { return out_.pending(); }
  void consume_output(std::size_t n) noexcept { out_.consume(n); }
  [[nodiscard]] std::optional<payload_span> pending_payload() const noexcept { return out_.payload(); }
  result<void> consume_payload(std::uint64_t n) noexcept { return out_.consume_payload(n); }

  [[nodiscard]] std::optional<payload_span> incoming_payload() const noexcept {
    if (phase_ != rx::payload || payload_.length == 0) return std::nullopt;
    return payload_;
  }
  result<void> consume_incoming_payload(std::uint64_t n) noexcept {
    if (phase_ != rx::payload) return errc::no_payload_due;
    if (n > payload_.length) return errc::payload_overrun;
    payload_.offset += n;
    payload_.length -= n;
    if (payload_.length == 0) phase_ = rx::header;
    return {};
  }

  /// Answers a request reported by a `request` event, in any order (except the 1997
  /// framing, whose client expects request order; there the machine hands out one request
  /// at a time). Also valid after DISC: the server finishes what is in flight.
  result<void> reply(const request& r, nbd_error e = nbd_error::ok) noexcept {
    if (state_ != server_state::transmission && state_ != server_state::closed) return errc::wrong_state;
    if (outstanding_ == 0) return errc::unknown_request;
    const bool data = r.cmd() == command::read && e == nbd_error::ok && r.length != 0;
    if (!queue_reply(r.cookie, e, data ? std::optional<payload_span>{{r.cookie, r.offset, r.length}} : std::nullopt))
      return errc::outbox_full;
    --outstanding_;
    return {};
  }

  /// The server is going away ("Option haggling", "Error values"): every later option except
  /// ABORT is answered with NBD_REP_ERR_SHUTDOWN, and every later request with NBD_ESHUTDOWN,
  /// which tells the client to disconnect softly. Requests already reported still get reply().
  void begin_shutdown() noexcept { shutting_down_ = true; }
  [[nodiscard]] bool shutting_down() const noexcept { return shutting_down_; }

  // ---- inspection --------------------------------------------------------------------------

  [[nodiscard]] server_state state() const noexcept { return state_; }
  [[nodiscard]] errc error() const noexcept { return error_; }
  /// What the handshake settled; complete once `ready` was reported (at construction for
  /// oldstyle and the 1997 framing).
  [[nodiscard]] const nbdwire::negotiated& negotiated() const noexcept { return neg_; }
  /// Requests reported to the caller and not yet answered.
  [[nodiscard]] std::size_t outstanding() const noexcept { return outstanding_; }

 private:
  enum class rx : std::uint8_t { header, option_body, payload, discard };

  [[nodiscard]] bool config_valid() const noexcept {
    const bool single = cfg_.style == handshake_style::oldstyle || cfg_.style == handshake_style::legacy_1997;
    if (cfg_.exports.empty() || (single && cfg_.exports.size() != 1)) return false;
    if (cfg_.default_export != server_config::no_export && cfg_.default_export >= cfg_.exports.size()) return false;
    for (const auto& e : cfg_.exports) {
      if (e.name.size() > max_string || e.description.size() > max_string || !valid(e.block_size)) return false;
      if (cfg_.style == handshake_style::legacy_1997 && e.size > 0xffffffffu) return false;
    }
    return true;
  }

  void move(server_trigger t) noexcept {
    const auto to = detail::next_state(detail::server_transitions, state_, t);
    state_ = to ? *to : server_state::failed;
    if (!to && error_ == errc::ok) error_ = errc::wrong_state;
  }
  event fail(errc e) noexcept {
    if (state_ != server_state::failed) {
      error_ = e;
      move(server_trigger::violation);
    }
    return failed_event();
  }
  [[nodiscard]] event failed_event() const noexcept { return {.kind = event_kind::failed, .error = error_}; }

  /// Fixes the export and the flags transmission will use.
  void choose(std::size_t index, bool block_size_advertised) noexcept {
    const export_config& e = cfg_.exports[index];
    neg_.style = cfg_.style;
    neg_.export_index = index;
    neg_.export_size = e.size;
    neg_.transmission_flags = flags_of(e);
    neg_.block_size = e.block_size;
    neg_.block_size_advertised = block_size_advertised;
  }
  [[nodiscard]] std::uint16_t flags_of(const export_config& e) const noexcept {
    if (cfg_.style == handshake_style::legacy_1997) {
      return static_cast<std::uint16_t>(transmission_flag::has_flags | (e.transmission_flags & transmission_flag::read_only));
    }
    return detail::sanitize_transmission_flags(
        static_cast<std::uint16_t>(e.transmission_flags | transmission_flag::has_flags), false, false);
  }

  [[nodiscard]] std::optional<std::size_t> find_export(bytes_view name) const noexcept {
    if (name.empty() && cfg_.default_export != server_config::no_export) return cfg_.default_export;
    for (std::size_t i = 0; i < cfg_.exports.size(); ++i)
      if (as_bytes(cfg_.exports[i].name).size() == name.size() && as_chars(name) == cfg_.exports[i].name) return i;
    return std::nullopt;
  }

  std::size_t step(bytes_view in, event& ev) noexcept {
    switch (state_) {
      case server_state::failed: ev = failed_event(); return 0;
      case server_state::closed: ev = {.kind = event_kind::closed}; return 0;
      case server_state::awaiting_client_flags: return on_client_flags(in, ev);
      case server_state::negotiating: return on_option(in, ev);
      case server_state::transmission: return on_request(in, ev);
    }
    return 0;
  }

  // "Client flags" (checklist 3.1): unknown bits, or NO_ZEROES the server did not offer,
  // MUST drop the connection.
  std::size_t on_client_flags(bytes_view in, event& ev) noexcept {
    const std::size_t n = stash_.fill(in, sizeof(client_flags_record));
    if (stash_.size() < sizeof(client_flags_record)) return n;
    const std::uint32_t f = decode<client_flags_record>(stash_.view()).flags.get();
    stash_.clear();
    if (f & ~client_flag::known) return ev = fail(errc::bad_client_flags), n;
    if ((f & client_flag::no_zeroes) && !cfg_.no_zeroes) return ev = fail(errc::client_no_zeroes_not_offered), n;
    no_zeroes_ = (f & client_flag::no_zeroes) != 0;
    move(server_trigger::client_flags);
    return n;
  }

  // ---- options ------------------------------------------------------------------------------

  std::size_t on_option(bytes_view in, event& ev) noexcept {
    if (answer_pending_) {
      ev = answer();
      return 0;
    }
    std::size_t n = 0;
    if (phase_ == rx::header) {
      n = stash_.fill(in, sizeof(option_header));
      if (stash_.size() < sizeof(option_header)) return n;
      const auto h = decode<option_header>(stash_.view());
      stash_.clear();
      if (h.magic.get() != magic::ihaveopt) return ev = fail(errc::bad_option_magic), n;
      if (++options_seen_ > cfg_.max_options) return ev = fail(errc::too_many_options), n;
      opt_ = h.option.get();
      body_len_ = h.length.get();
      const auto o = static_cast<option>(opt_);
      if (cfg_.style == handshake_style::newstyle && o != option::export_name)
        return ev = fail(errc::option_requires_fixed_newstyle), n;  // the pre-"fixed" rule
      if (o == option::export_name && body_len_ > max_string) return ev = fail(errc::export_name_too_long), n;
      if (body_len_ > cfg_.max_option_length) return ev = fail(errc::option_length_exceeds_limit), n;
      body_pos_ = 0;
      field_.clear();
      name_.clear();
      name_len_ = 0;
      info_count_ = 0;
      info_requests_ = 0;
      // INFO/GO bodies hold at least a name length and an info count ("NBD_OPT_INFO").
      invalid_ = (o == option::info || o == option::go) && body_len_ < 6;
      phase_ = rx::option_body;
    }
    n += parse_option_body(in.subspan(n));
    if (body_pos_ < body_len_) return n;
    phase_ = rx::header;
    answer_pending_ = true;
    ev = answer();
    return n;
  }

  /// Streams option data through a few bytes of state: only an export name is kept.
  std::size_t parse_option_body(bytes_view in) noexcept {
    const auto o = static_cast<option>(opt_);
    const bool info_like = o == option::info || o == option::go;
    std::size_t n = 0;
    while (n < in.size() && body_pos_ < body_len_) {
      const bytes_view rest = in.subspan(n, static_cast<std::size_t>(std::min<std::uint64_t>(in.size() - n, body_len_ - body_pos_)));
      std::size_t took = 0;
      if (o == option::export_name) {
        took = name_.fill(rest, body_len_);
      } else if (!info_like || invalid_) {
        took = rest.size();  // data nobody needs: consumed and dropped
      } else if (body_pos_ < 4) {
        took = field_.fill(rest, 4);
        if (field_.size() == 4) {
          name_len_ = load_be<std::uint32_t>(field_.view().data());
          field_.clear();
          // Name length MUST fit the option (≤ length - 6) and strings are ≤ max_string.
          if (name_len_ > body_len_ - 6 || name_len_ > max_string) invalid_ = true;
        }
      } else if (body_pos_ < 4u + name_len_) {
        took = name_.fill(rest, name_len_);
      } else if (body_pos_ < 6u + name_len_) {
        took = field_.fill(rest, 2);
        if (field_.size() == 2) {
          info_count_ = load_be<std::uint16_t>(field_.view().data());
          field_.clear();
          if (std::uint64_t{body_len_} - 6 - name_len_ != 2u * info_count_) invalid_ = true;
        }
      } else {
        took = field_.fill(rest, 2);
        if (field_.size() == 2) {
          const std::uint16_t t = load_be<std::uint16_t>(field_.view().data());
          field_.clear();
          if (t < 32) info_requests_ |= 1u << t;  // unknown requests are ignored
        }
      }
      n += took;
      body_pos_ += static_cast<std::uint32_t>(took);
    }
    return n;
  }

  /// Queues the answer to the option just read, if the outbox has room; else `blocked`.
  event answer() noexcept {
    const auto o = static_cast<option>(opt_);
    if (shutting_down_ && o != option::abort) {
      // EXPORT_NAME cannot carry an error: closing is its only refusal.
      if (o == option::export_name) return finish_answer(), fail(errc::export_name_unknown);
      return simple_answer(reply_type::err_shutdown, "server is shutting down");
    }
    switch (o) {
      case option::export_name: {
        const auto idx = find_export(name_.view());
        // An EXPORT_NAME that cannot be satisfied can only be refused by closing.
        if (!idx) return finish_answer(), fail(errc::export_name_unknown);
        if (!out_.room_for(sizeof(export_name_reply))) return {.kind = event_kind::blocked};
        choose(*idx, false);
        out_.put_record(make_export_name_reply_short(neg_.export_size, neg_.transmission_flags));
        if (!no_zeroes_) out_.put_zeroes(124);
        finish_answer();
        move(server_trigger::export_chosen);
        return {.kind = event_kind::ready, .option = opt_};
      }
      case option::abort:
        // Data on ABORT is ignored; the ACK is still owed ("NBD_OPT_ABORT").
        if (!queue_option_reply(reply_type::ack, {})) return {.kind = event_kind::blocked};
        finish_answer();
        move(server_trigger::abort);
        return {.kind = event_kind::disconnected, .option = opt_};
      case option::list: return answer_list();
      case option::info:
      case option::go: return answer_info_or_go(o == option::go);
      default:
        // STARTTLS, STRUCTURED_REPLY, meta contexts, EXTENDED_HEADERS (not in this release),
        // PEEK_EXPORT (withdrawn) and unknown options: consumed, then ERR_UNSUP.
        return simple_answer(reply_type::err_unsup, "option not supported by this server");
    }
  }

  event simple_answer(reply_type t, std::string_view message) noexcept {
    if (!queue_option_reply(t, as_bytes(message))) return {.kind = event_kind::blocked};
    finish_answer();
    return {.kind = event_kind::option_answered, .option = opt_, .reply = t};
  }

  void finish_answer() noexcept {
    answer_pending_ = false;
    list_next_ = 0;
  }

  // "NBD_OPT_LIST": one NBD_REP_SERVER per export, streamed as the outbox drains, then ACK.
  event answer_list() noexcept {
    if (body_len_ != 0) return simple_answer(reply_type::err_invalid, "NBD_OPT_LIST takes no data");
    while (list_next_ < cfg_.exports.size()) {
      const export_config& e = cfg_.exports[list_next_];
      const std::size_t len = 4 + e.name.size() + e.description.size();
      if (!out_.room_for(sizeof(option_reply_header) + len)) return {.kind = event_kind::blocked};
      out_.put_record(make_option_reply_header(opt_, reply_type::server, static_cast<std::uint32_t>(len)));
      std::array<std::byte, 4> nl{};
      store_be<std::uint32_t>(nl.data(), static_cast<std::uint32_t>(e.name.size()));
      out_.put(nl);
      out_.put(as_bytes(e.name));
      out_.put(as_bytes(e.description));
      ++list_next_;
    }
    return simple_answer(reply_type::ack, {});
  }

  // "NBD_OPT_INFO" / "NBD_OPT_GO": INFO items, then ACK or an error.
  event answer_info_or_go(bool go) noexcept {
    if (invalid_) return simple_answer(reply_type::err_invalid, "malformed NBD_OPT_INFO/GO data");
    const auto idx = find_export(name_.view());
    if (!idx) return simple_answer(reply_type::err_unknown, "unknown export");
    const export_config& e = cfg_.exports[*idx];
    const bool want_name = info_requests_ & (1u << static_cast<unsigned>(info_type::name));
    const bool want_desc = (info_requests_ & (1u << static_cast<unsigned>(info_type::description))) && !e.description.empty();
    const bool want_bs = info_requests_ & (1u << static_cast<unsigned>(info_type::block_size));
    // A server with constraints beyond the defaults MAY insist the client asks for them.
    const bool need_bs = go && !want_bs && e.block_size.minimum > 1;
    const std::size_t need = 4 * sizeof(option_reply_header) + sizeof(info_export_payload) +
                             sizeof(info_block_size_payload) + 4 + e.name.size() + e.description.size() + 64;
    if (!out_.room_for(need)) return {.kind = event_kind::blocked};
    const std::uint16_t tflags = flags_of(e);
    put_info(make_info_export(e.size, tflags));
    if (want_name) put_info_string(info_type::name, e.name);
    if (want_desc) put_info_string(info_type::description, e.description);
    // Always sent: harmless when not asked for, and it precedes ERR_BLOCK_SIZE_REQD as it SHOULD.
    put_info(make_info_block_size(e.block_size.minimum, e.block_size.preferred, e.block_size.maximum));
    if (need_bs) return simple_answer(reply_type::err_block_size_reqd, "request NBD_INFO_BLOCK_SIZE");
    (void)queue_option_reply(reply_type::ack, {});  // room was reserved above
    finish_answer();
    if (!go) return {.kind = event_kind::option_answered, .option = opt_, .reply = reply_type::ack};
    choose(*idx, want_bs);
    move(server_trigger::export_chosen);
    return {.kind = event_kind::ready, .option = opt_};
  }

  template <class Payload>
  void put_info(const Payload& p) noexcept {
    out_.put_record(make_option_reply_header(opt_, reply_type::info, sizeof(Payload)));
    out_.put_record(p);
  }
  void put_info_string(info_type t, std::string_view s) noexcept {
    out_.put_record(make_option_reply_header(opt_, reply_type::info, static_cast<std::uint32_t>(2 + s.size())));
    std::array<std::byte, 2> type{};
    store_be<std::uint16_t>(type.data(), static_cast<std::uint16_t>(t));
    out_.put(type);
    out_.put(as_bytes(s));
  }

  [[nodiscard]] bool queue_option_reply(reply_type t, bytes_view data) noexcept {
    if (!out_.room_for(sizeof(option_reply_header) + data.size())) return false;
    out_.put_record(make_option_reply_header(opt_, t, static_cast<std::uint32_t>(data.size())));
    out_.put(data);
    return true;
  }

  // ---- transmission -----------------------------------------------------------------------

  [[nodiscard]] bool legacy() const noexcept { return cfg_.style == handshake_style::legacy_1997; }

  std::size_t on_request(bytes_view in, event& ev) noexcept {
    if (refusal_pending_) {
      if (!queue_reply(refused_.cookie, refused_status_, std::nullopt)) return ev = {.kind = event_kind::blocked}, 0;
      refusal_pending_ = false;
      ev = {.kind = event_kind::request_refused, .req = refused_, .status = refused_status_};
      return 0;
    }
    if (phase_ == rx::payload || phase_ == rx::discard) return on_payload(in, ev);
    // The 1997 client matches replies in request order: one request at a time.
    if (legacy() && outstanding_ != 0) {
      if (!in.empty()) ev = {.kind = event_kind::blocked};
      return 0;
    }
    std::size_t n = stash_.fill(in, 4);
    if (stash_.size() < 4) return n;
    if (load_be<std::uint32_t>(stash_.view().data()) != (legacy() ? magic::legacy_1997_request : magic::request))
      return ev = fail(errc::bad_request_magic), n;
    const std::size_t size = legacy() ? sizeof(legacy_1997_request) : sizeof(request_header);
    n += stash_.fill(in.subspan(n), size);
    if (stash_.size() < size) return n;
    request r{};
    if (legacy()) {
      const auto h = decode<legacy_1997_request>(stash_.view());
      const std::uint32_t type = h.type.get();
      // Types other than READ and WRITE did not exist; report them as an unknown command.
      r = {h.handle.get(), static_cast<std::uint16_t>(type <= 1 ? type : 0xffffu), 0, h.from.get(), h.length.get()};
    } else {
      const auto h = decode<request_header>(stash_.view());
      r = {h.cookie.get(), h.type.get(), h.flags.get(), h.offset.get(), h.length.get()};
    }
    stash_.clear();
    ev = on_request_header(r);
    return n;
  }

  event on_request_header(const request& r) noexcept {
    if (r.cmd() == command::disc && !legacy()) {
      // "NBD_CMD_DISC": no reply; stop reading. Requests in flight are still answered.
      move(server_trigger::disc);
      return {.kind = event_kind::disconnected, .req = r};
    }
    const std::uint64_t payload = r.payload_length();
    // A payload beyond both the advertised maximum and the 32 MiB every server should accept
    // is treated as a denial of service (checklist 2.9) rather than read and dropped.
    if (payload > std::max<std::uint64_t>(default_max_payload, neg_.block_size.maximum))
      return fail(errc::write_payload_too_large);
    const detail::verdict v = shutting_down_ ? detail::verdict::shutting_down : detail::check_request(r, neg_, true);
    payload_ = {r.cookie, r.offset, payload};
    if (v != detail::verdict::ok) {
      phase_ = payload ? rx::discard : rx::header;
      refused_ = r;
      refused_status_ = detail::to_nbd_error(v);
      if (!queue_reply(r.cookie, refused_status_, std::nullopt)) {
        refusal_pending_ = true;
        return {};
      }
      return {.kind = event_kind::request_refused, .req = r, .status = refused_status_};
    }
    ++outstanding_;
    phase_ = payload ? rx::payload : rx::header;
    current_ = r;
    return {.kind = event_kind::request, .req = r};
  }

  std::size_t on_payload(bytes_view in, event& ev) noexcept {
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), payload_.length));
    if (take == 0) return 0;
    if (phase_ == rx::payload)
      ev = {.kind = event_kind::payload, .req = current_, .offset = payload_.offset, .data = in.first(take)};
    payload_.offset += take;
    payload_.length -= take;
    if (payload_.length == 0) phase_ = rx::header;
    return take;
  }

  [[nodiscard]] bool queue_reply(std::uint64_t cookie, nbd_error e, std::optional<payload_span> data) noexcept {
    const std::size_t size = legacy() ? sizeof(legacy_1997_reply) : sizeof(simple_reply_header);
    if (!out_.room_for(size, data.has_value())) return false;
    if (legacy())
      out_.put_record(make_legacy_1997_reply(cookie, static_cast<std::uint32_t>(e)));
    else
      out_.put_record(make_simple_reply(e, cookie));
    if (data) out_.put_mark(*data);
    return true;
  }

  server_config cfg_;
  server_state state_ = server_state::awaiting_client_flags;
  errc error_ = errc::ok;
  nbdwire::negotiated neg_{};
  bool no_zeroes_ = false, shutting_down_ = false;
  // option in progress
  std::uint32_t opt_ = 0;
  std::uint32_t body_len_ = 0, body_pos_ = 0, name_len_ = 0, options_seen_ = 0;
  std::uint16_t info_count_ = 0;
  std::uint32_t info_requests_ = 0;
  bool invalid_ = false, answer_pending_ = false;
  std::size_t list_next_ = 0;
  // transmission
  rx phase_ = rx::header;
  request current_{}, refused_{};
  nbd_error refused_status_ = nbd_error::ok;
  bool refusal_pending_ = false;
  payload_span payload_{};
  std::size_t outstanding_ = 0;
  detail::stash stash_{};
  detail::body_buffer<4> field_{};
  detail::body_buffer<max_string> name_{};
  detail::outbox out_{};
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
