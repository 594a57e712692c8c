// SPDX-License-Identifier: MIT
// nbdwire server: the handshake part. Greeting, client flags, option headers, option data
// decoded as it streams (codec/option_request.hpp), the answers (option_answers.hpp), and
// the export choice that ends it: core.neg filled and the `export_chosen` move to
// transmission. Oldstyle and the 1997 framing choose their one export at once.
//
// States it runs (server/states.hpp): start, awaiting_client_flags, negotiating,
// option_data, answering_option, tls_pending. Memory: one option body decoder at a time (a union of the
// three; the largest holds one max_string buffer) and a few words of option results.
#pragma once

#include <algorithm>  // std::min
#include <cstddef>    // std::size_t
#include <cstdint>    // fixed-width integers
#include <new>        // placement new: the option body decoder in use
#include <optional>   // std::optional: export lookups

#include "nbdwire/codec/option_request.hpp"
#include "nbdwire/server/core.hpp"
#include "nbdwire/server/option_answers.hpp"
#include "nbdwire/wire.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

class server_handshake {
 public:
  /// Queues the greeting; oldstyle and the 1997 framing hand over at once.
  void start(server_core& c) noexcept {
    if (!config_valid(c.cfg)) {
      (void)c.fail(errc::invalid_config);
      return;
    }
    switch (c.cfg.style) {
      case handshake_style::fixed_newstyle:
      case handshake_style::newstyle: {
        std::uint16_t h = c.cfg.style == handshake_style::fixed_newstyle ? handshake_flag::fixed_newstyle : 0;
        if (c.cfg.no_zeroes) h |= handshake_flag::no_zeroes;
        c.out.put_record(make_newstyle_greeting(h));
        c.move(server_trigger::greeting_queued);
        break;
      }
      case handshake_style::oldstyle:
        choose(c, 0, false);
        c.out.put_record(make_oldstyle_greeting(c.neg.export_size, c.neg.transmission_flags));
        c.move(server_trigger::handshake_skipped);  // the greeting is the whole handshake
        break;
      case handshake_style::legacy_1997:
        choose(c, 0, false);
        c.move(server_trigger::handshake_skipped);
        break;
    }
  }

  // "Client flags" (checklist 3.1): unknown bits, or NO_ZEROES the server did not offer,
  // MUST drop the connection.
  std::size_t on_client_flags(server_core& c, bytes_view in, event& ev) noexcept {
    const std::size_t n = c.head.fill(in, sizeof(client_flags_record));
    if (c.head.size() < sizeof(client_flags_record)) return n;
    const std::uint32_t f = decode<client_flags_record>(c.head.view()).flags.get();
    c.head.clear();
    if (f & ~client_flag::known) return ev = c.fail(errc::bad_client_flags), n;
    if ((f & client_flag::no_zeroes) && !c.cfg.no_zeroes) return ev = c.fail(errc::client_no_zeroes_not_offered), n;
    // Without C_FIXED_NEWSTYLE only EXPORT_NAME exists, which FORCEDTLS refuses anyway.
    if (c.cfg.tls == server_tls::required && !(f & client_flag::fixed_newstyle))
      return ev = c.fail(errc::tls_required_client_not_fixed), n;
    no_zeroes_ = (f & client_flag::no_zeroes) != 0;
    c.move(server_trigger::client_flags);
    return n;
  }

  /// negotiating: the option header, checked before any of its data is read; then as much
  /// of the data as `in` holds.
  std::size_t on_option_header(server_core& c, bytes_view in, event& ev) noexcept {
    std::size_t n = c.head.fill(in, sizeof(option_header));
    if (c.head.size() < sizeof(option_header)) return n;
    const auto h = decode<option_header>(c.head.view());
    c.head.clear();
    if (h.magic.get() != magic::ihaveopt) return ev = c.fail(errc::bad_option_magic), n;
    if (++options_seen_ > c.cfg.max_options) return ev = c.fail(errc::too_many_options), n;
    opt_ = h.option.get();
    length_ = left_ = h.length.get();
    const auto o = static_cast<option>(opt_);
    if (c.cfg.style == handshake_style::newstyle && o != option::export_name)
      return ev = c.fail(errc::option_requires_fixed_newstyle), n;  // the pre-"fixed" rule
    if (o == option::export_name && length_ > max_string) return ev = c.fail(errc::export_name_too_long), n;
    if (length_ > c.cfg.max_option_length) return ev = c.fail(errc::option_length_exceeds_limit), n;
    begin_body();
    c.move(server_trigger::option_header);
    return n + on_option_data(c, in.subspan(n), ev);
  }

  /// option_data: the data streams through the option's decoder (or is dropped); once all
  /// of it is consumed the answer is due.
  std::size_t on_option_data(server_core& c, bytes_view in, event& ev) noexcept {
    const bytes_view data = in.first(static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), left_)));
    std::size_t n = 0;
    switch (body()) {
      case body_kind::export_name: n = decode_with(body_.export_name, c, data); break;
      case body_kind::info: n = decode_with(body_.info, c, data); break;
      case body_kind::meta: n = decode_with(body_.meta, c, data); break;
      case body_kind::none: break;
    }
    // Data nobody needs, and the rest of the data after a decoder failed, is consumed and
    // dropped; the answer comes once all of it is gone.
    n += skip(data.size() - n);
    if (left_ != 0) return n;
    c.move(server_trigger::option_data_end);
    ev = answer(c);
    return n;
  }

  /// answering_option: queues the answer to the option just read if the outbox has room;
  /// else `blocked`, and the answer is retried on the next receive().
  event answer(server_core& c) noexcept {
    const auto o = static_cast<option>(opt_);
    if (c.shutting_down && o != option::abort) {
      // EXPORT_NAME cannot carry an error: closing is its only refusal.
      if (o == option::export_name) return c.fail(errc::export_name_unknown);
      return simple(c, reply_type::err_shutdown, "server is shutting down");
    }
    if (o == option::starttls) return answer_starttls(c);
    // FORCEDTLS: nothing but STARTTLS and ABORT before TLS, the option's data consumed
    // (EXPORT_NAME cannot carry an error: closing is its refusal).
    if (c.cfg.tls == server_tls::required && !tls_ && o != option::abort) {
      if (o == option::export_name) return c.fail(errc::tls_required_export_name);
      return simple(c, reply_type::err_tls_reqd, "TLS is required: send NBD_OPT_STARTTLS first");
    }
    switch (o) {
      case option::export_name: {
        if (extended_) return c.fail(errc::export_name_after_extended_headers);
        meta_export_ = server_config::no_export;  // contexts are bound to GO, not EXPORT_NAME
        // An EXPORT_NAME that cannot be satisfied can only be refused by closing.
        if (!body_.export_name.finished()) {
          const errc e = machine_errc(body_.export_name.error());
          return c.fail(e == errc::ok ? errc::export_name_unknown : e);
        }
        if (!target_) return c.fail(errc::export_name_unknown);
        if (needs_tls(c, *target_)) return c.fail(errc::tls_only_export_name);
        if (!c.out.room_for(sizeof(export_name_reply))) return {.kind = event_kind::blocked};
        choose(c, *target_, false);
        c.out.put_record(make_export_name_reply_short(c.neg.export_size, c.neg.transmission_flags));
        if (!no_zeroes_) c.out.put_zeroes(124);
        c.move(server_trigger::export_chosen);
        return {.kind = event_kind::ready, .option = opt_};
      }
      case option::abort:
        // Data on ABORT is ignored; the ACK is still owed ("NBD_OPT_ABORT").
        if (!put_simple_reply(c.out, opt_, reply_type::ack, {})) return {.kind = event_kind::blocked};
        c.move(server_trigger::abort);
        return {.kind = event_kind::disconnected, .option = opt_};
      case option::list:
        if (length_ != 0) return simple(c, reply_type::err_invalid, "NBD_OPT_LIST takes no data");
        if (!put_export_list(c.out, opt_, c.cfg.exports, cursor_, !tls_)) return {.kind = event_kind::blocked};
        return simple(c, reply_type::ack, {});
      case option::info:
      case option::go: return answer_info_or_go(c, o == option::go);
      case option::structured_reply:
        if (!c.cfg.structured_replies) break;
        if (length_ != 0) return simple(c, reply_type::err_invalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
        // [ext] Structured replies cannot replace extended headers once those are on.
        if (extended_) return simple(c, reply_type::err_ext_header_reqd, "extended headers are in use");
        structured_ = true;
        return simple(c, reply_type::ack, {});
      case option::extended_headers:
        if (!c.cfg.extended_headers) break;
        if (length_ != 0) return simple(c, reply_type::err_invalid, "NBD_OPT_EXTENDED_HEADERS takes no data");
        extended_ = structured_ = true;
        return simple(c, reply_type::ack, {});
      case option::list_meta_context:
      case option::set_meta_context: return answer_meta_context(c, o == option::set_meta_context);
      default: break;
    }
    // PEEK_EXPORT (withdrawn), options switched off, and unknown options: consumed, then
    // ERR_UNSUP.
    return simple(c, reply_type::err_unsup, "option not supported by this server");
  }

 /// tls_pending: the caller finished the TLS handshake. Nothing negotiated before it holds
  /// ("the server MUST NOT preserve any negotiation state"; nbdkit CVE-2021-3716: a
  /// plaintext STRUCTURED_REPLY must not survive into TLS).
  void tls_started(server_core& c) noexcept {
    tls_ = true;
    structured_ = extended_ = false;
    meta_selected_ = 0;
    meta_export_ = server_config::no_export;
    c.move(server_trigger::tls_started);
  }
  [[nodiscard]] bool tls_active() const noexcept { return tls_; }

 private:
  /// "NBD_OPT_STARTTLS": ACK, after which the machine reads nothing until tls_started().
  event answer_starttls(server_core& c) noexcept {
    if (c.cfg.tls == server_tls::off) return simple(c, reply_type::err_policy, "TLS is not enabled on this server");
    if (length_ != 0) return simple(c, reply_type::err_invalid, "NBD_OPT_STARTTLS takes no data");
    if (tls_) return simple(c, reply_type::err_invalid, "TLS is already active");
    if (!put_simple_reply(c.out, opt_, reply_type::ack, {})) return {.kind = event_kind::blocked};
    c.move(server_trigger::starttls_acked);
    return {.kind = event_kind::start_tls, .option = opt_};
  }

  /// SELECTIVETLS: a tls_only export before TLS.
  [[nodiscard]] bool needs_tls(const server_core& c, std::size_t index) const noexcept {
    return !tls_ && c.cfg.exports[index].tls_only;
  }

  /// Which decoder an option's data goes through; the others' data is dropped.
  enum class body_kind : std::uint8_t { none, export_name, info, meta };
  [[nodiscard]] body_kind body() const noexcept {
    switch (static_cast<option>(opt_)) {
      case option::export_name: return body_kind::export_name;
      case option::info:
      case option::go: return body_kind::info;
      case option::list_meta_context:
      case option::set_meta_context: return body_kind::meta;
      default: return body_kind::none;
    }
  }

  /// A new option: its decoder (the one alive from now to the next option header) and
  /// empty results.
  void begin_body() noexcept {
    switch (body()) {
      case body_kind::export_name: ::new (static_cast<void*>(&body_.export_name)) export_name_decoder(length_); break;
      case body_kind::info: ::new (static_cast<void*>(&body_.info)) info_request_decoder(length_); break;
      case body_kind::meta: ::new (static_cast<void*>(&body_.meta)) meta_context_request_decoder(length_); break;
      case body_kind::none: break;
    }
    target_.reset();
    info_requests_ = 0;
    matched_ = 0;
    queries_ = 0;
    cursor_ = {};
  }

  /// Runs `d` over `data` until it needs more, finishes or fails; each item is used (and
  /// its text dropped) at once. Returns the bytes it consumed.
  template <class Decoder>
  std::size_t decode_with(Decoder& d, const server_core& c, bytes_view data) noexcept {
    std::size_t n = 0;
    for (;;) {
      const body_step s = d.decode(data.subspan(n));
      n += s.consumed;
      left_ -= static_cast<std::uint32_t>(s.consumed);
      switch (s.ev.kind) {
        case body_item::need_more:
        case body_item::done:
        case body_item::failed: return n;
        case body_item::export_name: target_ = find_export(c.cfg, s.ev.text); break;
        case body_item::info_request:
          if (s.ev.info < 32) info_requests_ |= 1u << s.ev.info;  // unknown requests are ignored
          break;
        case body_item::query_count: queries_ = s.ev.count; break;
        case body_item::query:
          matched_ |= match_query(c, s.ev.text, static_cast<option>(opt_) == option::list_meta_context);
          break;
        default: break;
      }
    }
  }

  std::size_t skip(std::size_t n) noexcept {
    left_ -= static_cast<std::uint32_t>(n);  // n ≤ left_
    return n;
  }

  /// The option's data is malformed: its decoder failed, or stopped before the end.
  [[nodiscard]] bool body_invalid() const noexcept {
    switch (body()) {
      case body_kind::export_name: return !body_.export_name.finished();
      case body_kind::info: return !body_.info.finished();
      case body_kind::meta: return !body_.meta.finished();
      case body_kind::none: return false;
    }
    return false;
  }

  event simple(server_core& c, reply_type t, std::string_view message) noexcept {
    if (!put_simple_reply(c.out, opt_, t, message)) return {.kind = event_kind::blocked};
    c.move(server_trigger::option_answered);
    return {.kind = event_kind::option_answered, .option = opt_, .reply = t};
  }

  // "NBD_OPT_INFO" / "NBD_OPT_GO": INFO items, then ACK or an error.
  event answer_info_or_go(server_core& c, bool go) noexcept {
    // Malformed data (checklist 3.1: inconsistent lengths, a name over max_string, NUL)
    // is answered once all of it was consumed (answered_with_err_invalid).
    if (body_invalid()) return simple(c, reply_type::err_invalid, "malformed NBD_OPT_INFO/GO data");
    if (!target_) return simple(c, reply_type::err_unknown, "unknown export");
    if (needs_tls(c, *target_)) return simple(c, reply_type::err_tls_reqd, "this export requires TLS");
    const export_config& e = c.cfg.exports[*target_];
    const bool want_name = info_requests_ & (1u << static_cast<unsigned>(info_type::name));
    const bool want_desc = (info_requests_ & (1u << static_cast<unsigned>(info_type::description))) && !e.description.empty();
    const bool want_bs = info_requests_ & (1u << static_cast<unsigned>(info_type::block_size));
    // A server with constraints beyond the defaults MAY insist the client asks for them.
    const bool need_bs = go && !want_bs && e.block_size.minimum > 1;
    if (!c.out.room_for(info_answer_room(e))) return {.kind = event_kind::blocked};
    put_info_items(c.out, opt_, e, export_flags(c.cfg, e, structured_, extended_), want_name, want_desc);
    if (need_bs) return simple(c, reply_type::err_block_size_reqd, "request NBD_INFO_BLOCK_SIZE");
    (void)put_simple_reply(c.out, opt_, reply_type::ack, {});  // room was reserved above
    if (!go) {
      c.move(server_trigger::option_answered);
      return {.kind = event_kind::option_answered, .option = opt_, .reply = reply_type::ack};
    }
    choose(c, *target_, want_bs);
    c.move(server_trigger::export_chosen);
    return {.kind = event_kind::ready, .option = opt_};
  }

  // "NBD_OPT_LIST_META_CONTEXT" / "NBD_OPT_SET_META_CONTEXT": one NBD_REP_META_CONTEXT per
  // selected context (streamed as the outbox drains), then ACK.
  event answer_meta_context(server_core& c, bool set) noexcept {
    if (cursor_.next == 0) {
      // SET replaces the earlier selection even when it fails.
      if (set) meta_selected_ = 0, meta_export_ = server_config::no_export;
      if (body_invalid()) return simple(c, reply_type::err_invalid, "malformed meta context query");
      if (set && !structured_) return simple(c, reply_type::err_invalid, "structured replies must come first");
      if (!target_) return simple(c, reply_type::err_unknown, "unknown export");
      // LIST with no queries lists everything; SET with none selects nothing.
      if (!set && queries_ == 0) matched_ = all_contexts(c);
    }
    if (!put_meta_contexts(c.out, opt_, c.cfg.meta_contexts, matched_, set, cursor_)) return {.kind = event_kind::blocked};
    if (!put_simple_reply(c.out, opt_, reply_type::ack, {})) return {.kind = event_kind::blocked};
    if (set) meta_selected_ = matched_, meta_export_ = *target_;
    c.move(server_trigger::option_answered);
    return {.kind = event_kind::option_answered, .option = opt_, .reply = reply_type::ack};
  }

  [[nodiscard]] static std::uint32_t all_contexts(const server_core& c) noexcept {
    const std::size_t n = c.cfg.meta_contexts.size();
    return n >= 32 ? ~0u : (1u << n) - 1;
  }

  /// Which offered contexts a query names ("Metadata querying"): the exact name; for LIST
  /// also a "namespace:" or "namespace:prefix:" wildcard. Other queries select nothing.
  [[nodiscard]] static std::uint32_t match_query(const server_core& c, bytes_view q, bool list) noexcept {
    const std::string_view query = as_chars(q);
    std::uint32_t m = 0;
    for (std::size_t i = 0; i < c.cfg.meta_contexts.size(); ++i) {
      const std::string_view name = c.cfg.meta_contexts[i];
      const bool wildcard = list && !query.empty() && query.back() == ':' && name.starts_with(query);
      if (name == query || wildcard) m |= 1u << i;
    }
    return m;
  }

  /// Fixes the export and the flags transmission will use: the negotiated value.
  void choose(server_core& c, std::size_t index, bool block_size_advertised) noexcept {
    const export_config& e = c.cfg.exports[index];
    nbdwire::negotiated& n = c.neg;
    n.style = c.cfg.style;
    n.export_index = index;
    n.export_size = e.size;
    n.transmission_flags = export_flags(c.cfg, e, structured_, extended_);
    n.block_size = e.block_size;
    n.block_size_advertised = block_size_advertised;
    n.structured_replies = structured_;
    n.extended_headers = extended_;
    n.tls = tls_;
    // Contexts hold only for the export SET_META_CONTEXT named ("Metadata querying").
    n.meta_context_count = 0;
    if (meta_export_ == index) {
      for (std::size_t i = 0; i < c.cfg.meta_contexts.size(); ++i)
        if (meta_selected_ & (1u << i))
          n.meta_contexts[n.meta_context_count++] = {static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i)};
    }
  }

  /// The decoder of the option in progress; body() says which member is alive.
  union option_body {
    constexpr option_body() noexcept : idle{} {}
    std::byte idle;
    export_name_decoder export_name;
    info_request_decoder info;
    meta_context_request_decoder meta;
  };

  // what was negotiated so far
  bool no_zeroes_ = false, structured_ = false, extended_ = false;
  bool tls_ = false;  ///< TLS is up (tls_started()); never reset
  std::uint32_t meta_selected_ = 0;                     ///< SET_META_CONTEXT's selection...
  std::size_t meta_export_ = server_config::no_export;  ///< ...and the export it is for
  std::uint32_t options_seen_ = 0;
  // the option in progress: its header, the data still due, and what its data said
  std::uint32_t opt_ = 0;
  std::uint32_t length_ = 0, left_ = 0;
  std::optional<std::size_t> target_{};  ///< the export its name selects
  std::uint32_t info_requests_ = 0;      ///< INFO/GO: bit t = NBD_INFO t asked for
  std::uint32_t matched_ = 0;            ///< META_CONTEXT: contexts the queries named
  std::uint32_t queries_ = 0;            ///< META_CONTEXT: the query count
  answer_cursor cursor_{};
  option_body body_{};
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
