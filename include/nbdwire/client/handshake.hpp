// SPDX-License-Identifier: MIT
// nbdwire client: the handshake ("Oldstyle negotiation", "Newstyle negotiation", "Option
// haggling"), and the machine core it shares with the transmission part: the state (moved only
// through detail::client_transitions), the sticky error, the outbox with its obligation room,
// the header stash, the one body decoder, and the `negotiated` value the handshake fills and
// transmission (client/transmission.hpp) reads.
//
//   greeting      16 bytes tell oldstyle from newstyle, then 136 or 2 more
//   option reply  20-byte header (checked against the option outstanding before any data is
//                 awaited), then its data through a codec decoder (SERVER, INFO, META_CONTEXT,
//                 an error's message); ACK has none
//   EXPORT_NAME   134 or 10 raw bytes
#pragma once

#include <cstddef>  // std::size_t
#include <cstdint>  // fixed-width integers

#include "nbdwire/client/body_decoder.hpp"  // client_body_decoder
#include "nbdwire/client/option_plan.hpp"   // option_plan, option_request_out
#include "nbdwire/client/states.hpp"        // client_state, client_trigger, client_transitions
#include "nbdwire/codec/body_errc.hpp"      // machine_errc
#include "nbdwire/detail/outbox.hpp"        // outbox, stash
#include "nbdwire/detail/rules.hpp"         // sanitize_transmission_flags
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/wire.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

/// An event of kind `k`, every other field at its default. Out of line when built for size,
/// so each event a machine reports costs one call plus the stores of its own fields.
[[nodiscard]] NBDWIRE_SIZE_OUTLINE inline event make_event(event_kind k = event_kind::need_more) noexcept {
  return {.kind = k};
}

class client_handshake {
 protected:
  explicit client_handshake(const client_config& cfg) noexcept : cfg_(cfg) {}
  client_handshake(const nbdwire::negotiated& n, const client_config& cfg) noexcept : cfg_(cfg), neg_(n) {
    fixed_ = n.style == handshake_style::fixed_newstyle;
  }

  // ---- the core: state, error, outbox -------------------------------------------------------

  void move(client_trigger t) noexcept {
    const auto to = next_state(client_transitions, state_, t);
    const client_state from = state_;
    state_ = to ? *to : client_state::failed;
    if (!to && error_ == errc::ok) error_ = errc::illegal_transition;
    cfg_.trace(from, t, state_);
  }
  event fail(errc e) noexcept {
    if (state_ != client_state::failed) {
      error_ = e;
      move(client_trigger::violation);
    }
    return failed_event();
  }
  /// What the connection's framing is, as this build can have it (config.hpp): a part left
  /// out is never in use, so its code folds away wherever these are asked.
  [[nodiscard]] bool legacy_framing() const noexcept {
    return client_has_legacy_1997 && neg_.style == handshake_style::legacy_1997;
  }
  [[nodiscard]] bool structured_replies_on() const noexcept {
    return client_has_structured_replies && neg_.structured_replies;
  }
  [[nodiscard]] bool extended_headers_on() const noexcept {
    return client_has_structured_replies && neg_.extended_headers;
  }
  [[nodiscard]] event failed_event() const noexcept {
    event made = make_event(event_kind::failed);
    made.error = error_;
    return made;
  }

  /// Room the outbox keeps for the messages the protocol obliges the client to send (ABORT
  /// after ERR_SHUTDOWN, DISC after NBD_ESHUTDOWN or on disconnect()): every other message
  /// leaves it free, so an obligation is never skipped for lack of room.
  static constexpr std::size_t obligation_room = sizeof(extended_request_header);
  [[nodiscard]] bool room(std::size_t n, std::size_t marks = 0) noexcept {
    return out_.room_for(n + obligation_room, marks);
  }

  // ---- options ------------------------------------------------------------------------------

  result<void> send_simple_option(option o) noexcept {
    if (state_ != client_state::negotiating) return errc::not_negotiating;
    if (!fixed_) return errc::option_needs_fixed_newstyle;
    // ABORT is itself the obligation the reserved room is kept for.
    if (!(o == option::abort ? out_.room_for(sizeof(option_header)) : room(sizeof(option_header)))) return errc::outbox_full;
    out_.put_record(make_option_header(o, 0));
    opt_ = o;
    move(client_trigger::option_sent);
    return {};
  }

  result<void> send_export_name(std::string_view name) noexcept {
    if (state_ != client_state::negotiating) return errc::not_negotiating;
    if (neg_.extended_headers) return errc::export_name_with_extended_headers;
    if (name.size() > max_string) return errc::string_too_long;
    const option_request_out req{option::export_name, name};
    const std::size_t size = req.size();
    if (size == 0) return errc::string_too_long;  // a name with NUL cannot be sent ("Conventions")
    if (!room(size)) return errc::outbox_full;
    out_.put_record(req);
    opt_ = option::export_name;
    move(client_trigger::export_name_sent);
    return {};
  }

  /// go(), info() and list_meta_context(): the preliminaries this connection still needs,
  /// then the option itself. Each step is sent when the previous one's final reply arrives.
  result<void> start_plan(option final, std::string_view name, std::uint32_t requests,
                          std::span<const std::string_view> queries) noexcept {
    if (state_ != client_state::negotiating) return errc::not_negotiating;
    if (!fixed_) return errc::option_needs_fixed_newstyle;
    if (name.size() > max_string) return errc::string_too_long;
    for (auto q : queries)
      if (q.size() > max_string) return errc::string_too_long;
    for (auto q : cfg_.meta_contexts)
      if (q.size() > max_string) return errc::string_too_long;
    plan_.begin(final, name, requests, queries);
    if (!send_plan_step()) return errc::outbox_full;
    return {};
  }

  /// Queues the plan's next option and moves to the state awaiting its reply. False when the
  /// outbox has no room (or the request cannot be encoded).
  [[nodiscard]] bool send_plan_step() noexcept {
    const option o = plan_.next(state_, cfg_, neg_);
    // SET_META_CONTEXT replaces earlier contexts.
    if (o == option::set_meta_context) neg_.meta_context_count = 0;
    const option_request_out req = plan_.request(o, cfg_);
    const std::size_t size = req.size();
    if (size == 0 || !room(size)) return false;
    out_.put_record(req);
    plan_.sent(o);
    opt_ = o;
    info_ = {};
    move(o == option::extended_headers   ? client_trigger::ext_headers_sent
         : o == option::structured_reply ? client_trigger::sr_sent
         : o == option::set_meta_context ? client_trigger::set_meta_sent
                                         : client_trigger::option_sent);
    return true;
  }
  event next_plan_step() noexcept {
    if (!send_plan_step()) return fail(errc::outbox_full);
    return make_event();
  }
  /// True while a preliminary of go()'s plan is outstanding (its reply header or data).
  [[nodiscard]] bool in_preliminary() const noexcept {
    switch (state_) {
      case client_state::awaiting_ext_headers_reply:
      case client_state::ext_headers_reply_data:
      case client_state::awaiting_sr_reply:
      case client_state::sr_reply_data:
      case client_state::awaiting_set_meta_reply:
      case client_state::set_meta_reply_data: return true;
      default: return false;
    }
  }

  // ---- input --------------------------------------------------------------------------------

  // "Oldstyle negotiation" / "Newstyle negotiation": 16 bytes tell which, then 136 or 2 more.
  std::size_t on_greeting(bytes_view in, event& ev) noexcept {
    std::size_t n = stash_.fill(in, 16);
    if (stash_.size() < 16) return n;
    const auto head = stash_.view();
    if (load_be<std::uint64_t>(head.data()) != magic::nbdmagic) return ev = fail(errc::bad_greeting_magic), n;
    const std::uint64_t second = load_be<std::uint64_t>(head.data() + 8);
    if (second == magic::oldstyle) {
      // Oldstyle has no options, so no STARTTLS: a downgrade when TLS is required.
      if (client_has_starttls && cfg_.tls == client_tls::require) return ev = fail(errc::tls_oldstyle_server), n;
      n += stash_.fill(in.subspan(n), sizeof(oldstyle_greeting));
      if (stash_.size() < sizeof(oldstyle_greeting)) return n;
      const auto g = decode<oldstyle_greeting>(stash_.view());
      stash_.clear();
      neg_.style = handshake_style::oldstyle;
      neg_.export_size = g.export_size.get();
      neg_.transmission_flags = sanitize_transmission_flags(g.transmission_flags.get(), false, false);
      move(client_trigger::oldstyle_greeting);
      ev = make_event(event_kind::ready);
      return n;
    }
    if (second != magic::ihaveopt) return ev = fail(errc::bad_greeting_style), n;
    n += stash_.fill(in.subspan(n), sizeof(newstyle_greeting));
    if (stash_.size() < sizeof(newstyle_greeting)) return n;
    const auto g = decode<newstyle_greeting>(stash_.view());
    stash_.clear();
    const std::uint16_t hflags = g.handshake_flags.get();  // unknown bits: SHOULD ignore
    fixed_ = (hflags & handshake_flag::fixed_newstyle) != 0;
    // STARTTLS is an option: fixed newstyle only (libnbd CVE-2019-14842 was this downgrade).
    if (client_has_starttls && cfg_.tls == client_tls::require && !fixed_)
      return ev = fail(errc::tls_server_not_fixed_newstyle), n;
    greeting_flags_ = hflags;
    no_zeroes_ = cfg_.no_zeroes && (hflags & handshake_flag::no_zeroes) != 0;
    neg_.style = fixed_ ? handshake_style::fixed_newstyle : handshake_style::newstyle;
    const std::uint32_t cflags =
        (fixed_ ? client_flag::fixed_newstyle : 0u) | (no_zeroes_ ? client_flag::no_zeroes : 0u);
    out_.put_record(make_client_flags(cflags));  // the outbox is empty at this point
    if (client_has_starttls && cfg_.tls != client_tls::off && fixed_) {
      // STARTTLS before any other option; `greeting` is reported once TLS is settled.
      out_.put_record(make_option_header(option::starttls, 0));
      opt_ = option::starttls;
      move(client_trigger::starttls_sent);
      return n;
    }
    move(client_trigger::newstyle_greeting);
    ev = greeting_event();
    return n;
  }

  [[nodiscard]] event greeting_event() const noexcept {
    event made = make_event(event_kind::greeting);
    made.flags = greeting_flags_;
    return made;
  }

  /// greeting_due: TLS is up; the greeting is reported now and options may follow.
  event report_greeting() noexcept {
    move(client_trigger::greeting_reported);
    return greeting_event();
  }

  /// tls_pending: the caller finished the TLS handshake. Nothing negotiated in plaintext
  /// holds ("the client MUST renegotiate"); STARTTLS goes first, so nothing was.
  result<void> start_tls_done() noexcept {
    if (state_ != client_state::tls_pending) return errc::tls_not_starting;
    neg_ = {};
    neg_.style = handshake_style::fixed_newstyle;
    neg_.tls = true;
    info_ = {};
    move(client_trigger::tls_started);
    return {};
  }

  // "Option reply" header, in every awaiting_*_reply state but EXPORT_NAME's. Its data (any
  // type but ACK) is decoded in the matching *_data state, in the same step.
  std::size_t on_option_reply_header(bytes_view in, event& ev) noexcept {
    const std::size_t n = stash_.fill(in, sizeof(option_reply_header));
    if (stash_.size() < sizeof(option_reply_header)) return n;
    const auto h = decode<option_reply_header>(stash_.view());
    stash_.clear();
    if (h.magic.get() != magic::option_reply) return ev = fail(errc::bad_option_reply_magic), n;
    if (h.option.get() != static_cast<std::uint32_t>(opt_)) return ev = fail(errc::option_reply_wrong_option), n;
    reply_ = static_cast<reply_type>(h.type.get());
    const std::uint32_t len = h.length.get();
    if (const errc e = check_reply_header(len); e != errc::ok) return ev = fail(e), n;
    if (reply_ == reply_type::ack) return ev = on_ack(), n;
    if (static_cast<std::uint32_t>(reply_) & reply_type_error_bit) dec_.start_error_reply(len);
    else if (reply_ == reply_type::server) dec_.start_server(len);
    else if (reply_ == reply_type::info) dec_.start_info(len);
    else if constexpr (client_has_structured_replies) dec_.start_meta_context(len);
    else return ev = fail(errc::option_reply_type_unexpected), n;  // check_reply_header refused it
    if (const body_errc e = dec_.error(); e != body_errc::ok) return ev = fail(machine_errc(e)), n;
    move(client_trigger::reply_with_data);
    return n + on_option_reply_data(in.subspan(n), ev);
  }

  /// Checklist 1.10 and 3.2: which reply types each option allows, and their length rules
  /// that can be judged from the header alone (before the data is awaited).
  [[nodiscard]] errc check_reply_header(std::uint32_t len) const noexcept {
    const auto t = static_cast<std::uint32_t>(reply_);
    if (t & reply_type_error_bit) {
      if (opt_ == option::abort) return errc::option_reply_type_unexpected;
      return len > max_string ? errc::reply_string_too_long : errc::ok;
    }
    switch (reply_) {
      case reply_type::ack: return len != 0 ? errc::ack_with_data : errc::ok;
      case reply_type::server:
        if (opt_ != option::list) return errc::option_reply_type_unexpected;
        if (len < 4) return errc::server_reply_bad_name_length;
        return len > 4 + 2 * max_string ? errc::server_reply_too_long : errc::ok;
      case reply_type::info:
        if (opt_ != option::info && opt_ != option::go) return errc::option_reply_type_unexpected;
        // Every item, unknown ones included, is a type and at most a max_string payload.
        if (len < 2) return errc::info_reply_too_short;
        return len > 2 + max_string ? errc::info_reply_too_long : errc::ok;
      case reply_type::meta_context:
        if (!client_has_structured_replies || (opt_ != option::list_meta_context && opt_ != option::set_meta_context))
          return errc::option_reply_type_unexpected;
        if (len < 4) return errc::meta_context_reply_too_short;
        return len > 4 + max_string ? errc::reply_string_too_long : errc::ok;
      default: return errc::option_reply_type_unexpected;
    }
  }

  /// An option reply's data, through the codec decoder the header chose; one event at its end.
  std::size_t on_option_reply_data(bytes_view in, event& ev) noexcept {
    std::size_t used = 0;
    body_event item{};
    for (;;) {
      const body_step s = dec_.decode(in.subspan(used));
      used += s.consumed;
      switch (s.ev.kind) {
        case body_item::failed: ev = fail(machine_errc(s.ev.error)); return used;
        case body_item::need_more: return used;
        case body_item::done: ev = on_reply_data(item); return used;
        case body_item::server_name: plan_.hold_name(s.ev.text); continue;  // kept until the description
        default: item = s.ev; continue;
      }
    }
  }

  event on_reply_data(const body_event& item) noexcept {
    const std::uint32_t o = static_cast<std::uint32_t>(opt_);
    if (static_cast<std::uint32_t>(reply_) & reply_type_error_bit) return on_refusal(item.text);
    switch (reply_) {
      case reply_type::server:
        move(client_trigger::reply_item);
        {
          event made = make_event(event_kind::export_listed);
          made.option = o;
          made.data = as_bytes(plan_.name());
          made.text = item.text;
          return made;
        }
      case reply_type::info: {
        const event e = on_info_item(item);
        if (e.kind != event_kind::failed) move(client_trigger::reply_item);
        return e;
      }
      default: {  // meta_context
        if constexpr (!client_has_structured_replies) return fail(errc::option_reply_type_unexpected);
        if (opt_ == option::set_meta_context) {
          // Ids are the server's choice ("Metadata querying"); 0 is a valid id.
          if (neg_.meta_context_count == max_meta_contexts) return fail(errc::too_many_meta_contexts);
          meta_context_binding m{item.context_id, meta_context_binding::no_query};
          for (std::size_t i = 0; i < cfg_.meta_contexts.size(); ++i)
            if (as_chars(item.text) == cfg_.meta_contexts[i]) m.query_index = static_cast<std::uint32_t>(i);
          neg_.meta_contexts[neg_.meta_context_count++] = m;
        }
        move(client_trigger::reply_item);
        event made = make_event(event_kind::meta_context);
        made.option = o;
        made.data = item.text;
        made.context_id = item.context_id;
        return made;
      }
    }
  }

  /// An error reply's message has arrived.
  event on_refusal(bytes_view message) noexcept {
    const std::uint32_t o = static_cast<std::uint32_t>(opt_);
    if (reply_ == reply_type::err_shutdown) {
      // "A client that receives ERR_SHUTDOWN MUST soft-disconnect": ABORT goes out now (in
      // the room every other message leaves free) and `disconnected` follows its ACK (or the
      // server's close).
      out_.put_record(make_option_header(option::abort, 0));
      opt_ = option::abort;
      move(client_trigger::shutdown_abort);
      event made = make_event(event_kind::option_refused);
      made.option = o;
      made.reply = reply_type::err_shutdown;
      made.data = message;
      return made;
    }
    if (client_has_starttls && opt_ == option::starttls) {
      if (cfg_.tls == client_tls::require) {
        // "A client that wants only TLS SHOULD terminate": soft, with ABORT (in the room
        // every other message leaves free), and the connection fails.
        out_.put_record(make_option_header(option::abort, 0));
        return fail(errc::starttls_refused);
      }
      move(client_trigger::starttls_refused);  // opportunistic: plaintext from here
      return greeting_event();
    }
    // A refused preliminary is not a failure: the plan goes on without it. SET_META_CONTEXT
    // replaces earlier contexts even when it fails.
    if (opt_ == option::set_meta_context) neg_.meta_context_count = 0;
    if (client_has_structured_replies && in_preliminary()) return next_plan_step();
    if (opt_ == option::go && reply_ == reply_type::err_unsup && cfg_.fallback_to_export_name &&
        !neg_.extended_headers) {
      // An old server: "fall back to NBD_OPT_EXPORT_NAME" ("NBD_OPT_GO").
      const option_request_out req{option::export_name, plan_.name()};
      if (!room(req.size())) return fail(errc::outbox_full);
      out_.put_record(req);
      opt_ = option::export_name;
      move(client_trigger::go_fell_back);
      return make_event();  // need_more: the EXPORT_NAME reply comes next
    }
    move(client_trigger::option_final);
    event made = make_event(event_kind::option_refused);
    made.option = o;
    made.reply = reply_;
    made.data = message;
    return made;
  }

  event on_ack() noexcept {
    const std::uint32_t o = static_cast<std::uint32_t>(opt_);
    // A build without STARTTLS or structured replies never sends their options: their cases
    // end at once, and their code is not linked.
    switch (opt_) {
      case option::starttls: {
        if constexpr (!client_has_starttls) break;
        // receive() stops here: what follows the ACK is TLS (or an injection; never NBD).
        move(client_trigger::starttls_acked);
        event made = make_event(event_kind::start_tls);
        made.option = o;
        return made;
      }
      case option::abort:
        move(client_trigger::abort_acked);
        {
          event made = make_event(event_kind::disconnected);
          made.option = o;
          return made;
        }
      case option::extended_headers:
        if constexpr (!client_has_structured_replies) break;
        // [ext] Extended headers take precedence over, and imply, structured replies.
        neg_.extended_headers = neg_.structured_replies = true;
        return next_plan_step();
      case option::structured_reply:
        if constexpr (!client_has_structured_replies) break;
        neg_.structured_replies = true;
        return next_plan_step();
      case option::set_meta_context:
        if (client_has_structured_replies && in_preliminary()) return next_plan_step();
        break;
      case option::go:
      case option::info:
        if (!info_.have_export) return fail(errc::ack_without_export_info);
        if (opt_ == option::info) break;
        neg_.export_size = info_.size;
        neg_.transmission_flags =
            sanitize_transmission_flags(info_.flags, neg_.structured_replies, neg_.extended_headers);
        neg_.block_size_advertised = info_.have_block_size;
        if (info_.have_block_size) neg_.block_size = info_.block_size;
        move(client_trigger::go_acked);
        {
          event made = make_event(event_kind::ready);
          made.option = o;
          return made;
        }
      default: break;
    }
    move(client_trigger::option_final);
    event made = make_event(event_kind::option_done);
    made.option = o;
    return made;
  }

  // "NBD_REP_INFO": one item; unknown types are ignored (the client MUST ignore them).
  event on_info_item(const body_event& b) noexcept {
    const std::uint32_t o = static_cast<std::uint32_t>(opt_);
    const auto type = static_cast<info_type>(b.info);
    switch (b.kind) {
      case body_item::info_export:
        info_.have_export = true;
        info_.size = b.export_size;
        info_.flags = b.transmission_flags;
        {
          event made = make_event(event_kind::info);
          made.option = o;
          made.info = type;
          made.export_size = info_.size;
          made.transmission_flags = info_.flags;
          return made;
        }
      case body_item::info_block_size:
        if (!valid(b.block_size)) return fail(errc::info_block_size_invalid);
        info_.have_block_size = true;
        info_.block_size = b.block_size;
        {
          event made = make_event(event_kind::info);
          made.option = o;
          made.info = type;
          made.block_size = b.block_size;
          return made;
        }
      case body_item::info_name:
      case body_item::info_description: {
        event made = make_event(event_kind::info);
        made.option = o;
        made.info = type;
        made.data = b.text;
        return made;
      }
      default: return make_event();  // unknown info type: ignored
    }
  }

  // "NBD_OPT_EXPORT_NAME" reply: size, flags, and 124 zeroes unless both sides chose NO_ZEROES.
  std::size_t on_export_name_reply(bytes_view in, event& ev) noexcept {
    const std::size_t want = no_zeroes_ ? sizeof(export_name_reply_short) : sizeof(export_name_reply);
    const std::size_t n = stash_.fill(in, want);
    if (stash_.size() < want) return n;
    const auto r = decode<export_name_reply_short>(stash_.view());
    stash_.clear();
    neg_.export_size = r.export_size.get();
    neg_.transmission_flags = sanitize_transmission_flags(r.transmission_flags.get(), neg_.structured_replies, false);
    neg_.meta_context_count = 0;  // contexts are bound to GO, not EXPORT_NAME
    move(client_trigger::export_name_replied);
    ev = make_event(event_kind::ready);
    ev.option = static_cast<std::uint32_t>(option::export_name);
    return n;
  }

  struct pending_info {
    bool have_export = false, have_block_size = false;
    std::uint64_t size = 0;
    std::uint16_t flags = 0;
    block_size_constraints block_size{};
  };

  client_config cfg_;
  client_state state_ = client_state::awaiting_greeting;
  errc error_ = errc::ok;
  bool fixed_ = false, no_zeroes_ = false, terminal_reported_ = false;
  std::uint16_t greeting_flags_ = 0;        ///< the server's handshake flags, for `greeting`
  option opt_ = option::abort;              ///< the option outstanding
  reply_type reply_ = reply_type::ack;      ///< the type of the option reply being decoded
  nbdwire::negotiated neg_{};
  pending_info info_{};
  option_plan plan_{};
  stash stash_{};
  client_body_decoder dec_{};
  outbox out_{};
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
