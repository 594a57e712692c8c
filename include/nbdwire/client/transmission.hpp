// SPDX-License-Identifier: MIT
// nbdwire client: transmission ("Transmission phase"): the request encoder with its checks
// (detail/rules.hpp), the cookie table, the reply decoder (simple, structured and extended
// headers), chunk payloads through the codec's decoders, READ coverage and block-status
// contexts. Built on the handshake part (client/handshake.hpp) for the state, the outbox and
// the `negotiated` value; a client built from a `negotiated` starts here directly.
//
//   transmission / disconnecting        a reply header comes next (read in place when whole)
//   chunk_payload / disconnecting_...   a chunk's payload, through one codec decoder
//   read_data / disconnecting_...       READ data: `payload` events or incoming_payload()
#pragma once

#include <array>     // std::array: cookie table
#include <cstddef>   // std::size_t
#include <cstdint>   // fixed-width integers
#include <optional>  // std::optional: slot lookups

#include "nbdwire/client/handshake.hpp"      // client_handshake: state, outbox, negotiated
#include "nbdwire/client/read_coverage.hpp"  // read_coverage

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

class client_transmission : protected client_handshake {
 protected:
  using client_handshake::client_handshake;

  struct cookie_slot {
    bool used = false;
    bool errored = false;             ///< an error chunk arrived; status holds the first error
    std::uint64_t tag = 0;            ///< the caller's, from submit()
    request req{};
    nbd_error status = nbd_error::ok;
    std::uint32_t contexts_seen = 0;  ///< bit i: negotiated context i answered
    read_coverage coverage{};
  };
  /// The chunk (or simple reply) whose payload is being read.
  struct chunk_state {
    std::size_t slot = 0;
    std::uint16_t flags = 0, type = 0;
    std::uint32_t context_id = 0;     ///< BLOCK_STATUS: the chunk's context
    std::uint64_t extent_sum = 0;     ///< BLOCK_STATUS: descriptor lengths so far (saturating)
  };

  [[nodiscard]] bool in_reply_chunk() const noexcept {
    return state_ == client_state::chunk_payload || state_ == client_state::disconnecting_chunk_payload;
  }
  [[nodiscard]] bool in_read_data() const noexcept {
    return state_ == client_state::read_data || state_ == client_state::disconnecting_read_data;
  }

  // ---- requests ("Request message") ---------------------------------------------------------

  result<std::uint64_t> submit_request(command c, std::uint16_t flags, std::uint64_t offset, std::uint64_t length,
                                       std::uint64_t tag) noexcept {
    if (phase_of(state_) != client_state::transmission) return errc::not_in_transmission;
    if (server_shutting_down_) return errc::server_is_shutting_down;
    if (c == command::disc) return errc::disc_needs_disconnect;
    const request r{0, static_cast<std::uint16_t>(c), flags, offset, length};
    if (const auto v = check_request(r, neg_, false); v != verdict::ok) return to_errc(v);
    const bool legacy = legacy_framing();
    const bool extended = extended_headers_on();
    if (legacy) {
      // The 1997 framing knows READ (0) and WRITE (1) only, with 32-bit offset and length.
      if (c != command::read && c != command::write) return errc::command_not_advertised;
      if (flags != 0) return errc::flag_not_applicable;
      if (offset > 0xffffffffu || length > 0xffffffffu - offset) return errc::legacy_range_too_large;
    }
    if (!extended && length > 0xffffffffu) return errc::length_too_large;
    if (in_flight_ == max_in_flight) return errc::too_many_in_flight;
    const bool payload = c == command::write && length != 0;
    const std::size_t header = legacy     ? sizeof(legacy_1997_request)
                               : extended ? sizeof(extended_request_header)
                                          : sizeof(request_header);
    if (!room(header, payload ? 1 : 0)) return errc::outbox_full;

    std::size_t slot = 0;
    while (slots_[slot].used) ++slot;
    // The cookie names the slot in its low 16 bits, so a reply finds its request in O(1), and
    // a sequence number above them keeps cookies unique over the connection.
    const std::uint64_t cookie = (++sequence_ << 16) | slot;
    slots_[slot] = {};
    slots_[slot].used = true;
    slots_[slot].req = request{cookie, r.type, flags, offset, length};
    slots_[slot].tag = tag;
    ++in_flight_;
    put_request(c, flags, cookie, offset, length);
    if (payload) out_.put_mark({cookie, offset, length, tag});
    return cookie;
  }

  /// NBD_CMD_DISC: no more requests; the 1997 framing has no disconnect message (closing
  /// the socket is the disconnect). Fits the obligation room.
  void queue_disc() noexcept {
    if (!legacy_framing())
      put_request(command::disc, 0, (++sequence_ << 16) | 0xffffu, 0, 0);  // the cookie is never a slot
    move(client_trigger::disc_sent);
  }

  /// A request header in the negotiated framing, into the outbox (whose room was checked).
  NBDWIRE_SIZE_OUTLINE void put_request(command c, std::uint16_t flags, std::uint64_t cookie, std::uint64_t offset,
                                        std::uint64_t length) noexcept {
    if (legacy_framing()) {
      out_.put_record(make_legacy_1997_request(c, cookie, static_cast<std::uint32_t>(offset),
                                               static_cast<std::uint32_t>(length)));
    } else if (extended_headers_on()) {
      // [ext] A WRITE's length is its payload length, flagged PAYLOAD_LEN.
      const std::uint16_t f = c == command::write ? static_cast<std::uint16_t>(flags | command_flag::payload_len) : flags;
      out_.put_record(make_extended_request(c, f, cookie, offset, length));
    } else {
      out_.put_record(make_request(c, flags, cookie, offset, static_cast<std::uint32_t>(length)));
    }
  }

  [[nodiscard]] std::optional<std::size_t> slot_of(std::uint64_t cookie) const noexcept {
    const std::size_t i = cookie & 0xffffu;
    if (i >= max_in_flight || !slots_[i].used || slots_[i].req.cookie != cookie) return std::nullopt;
    return i;
  }

  // ---- replies ------------------------------------------------------------------------------

  /// transmission / disconnecting: a reply header. The magic says which header follows. A
  /// whole header in the input is read in place; a split one is stashed, its magic first so
  /// that a wrong one is refused at once.
  std::size_t on_reply_header(bytes_view in, event& ev) noexcept {
    const bool legacy = legacy_framing();
    const bool at_start = stash_.size() == 0 && in.size() >= 4;
    std::size_t n = at_start ? 4 : stash_.fill(in, 4);
    if (!at_start && stash_.size() < 4) return n;
    const std::uint32_t m = load_be<std::uint32_t>(at_start ? in.data() : stash_.view().data());
    std::size_t size = 0;
    if (legacy) {
      if (m != magic::legacy_1997_reply) return ev = fail(errc::bad_reply_magic), n;
      size = sizeof(legacy_1997_reply);
    } else if (m == magic::simple_reply) {
      if (extended_headers_on()) return ev = fail(errc::simple_reply_in_extended_mode), n;
      size = sizeof(simple_reply_header);
    } else if (m == magic::structured_reply && structured_replies_on() && !extended_headers_on()) {
      size = sizeof(structured_reply_header);
    } else if (m == magic::extended_reply && extended_headers_on()) {
      size = sizeof(extended_reply_header);
    } else if (m == magic::structured_reply || m == magic::extended_reply) {
      return ev = fail(errc::structured_reply_not_negotiated), n;
    } else {
      return ev = fail(errc::bad_reply_magic), n;
    }
    bytes_view h;
    if (at_start && in.size() >= size) {
      h = in.first(size);
      n = size;
    } else {
      if (at_start) n = 0;
      n += stash_.fill(in.subspan(n), size);
      if (stash_.size() < size) return n;
      h = stash_.view();
    }
    if (!client_has_structured_replies || m == magic::simple_reply || legacy) {
      ev = on_simple_reply(h);
      stash_.clear();
      return n;
    }
    std::uint64_t length = 0;
    ev = on_chunk_header(h, m == magic::extended_reply, length);
    stash_.clear();
    if (ev.kind != event_kind::need_more || !in_reply_chunk()) return n;
    return n + on_chunk_payload(in.subspan(n), ev);  // the payload, in the same step
  }

  // "Simple reply message" (and the 1997 reply): header, then READ data on success.
  event on_simple_reply(bytes_view h) noexcept {
    const bool legacy = legacy_framing();
    std::uint64_t cookie = 0;
    std::uint32_t err = 0;
    if (legacy) {
      using rec = legacy_1997_reply;
      cookie = record_view<rec>{h}.get(&rec::handle);
      err = record_view<rec>{h}.get(&rec::error);
    } else {
      using rec = simple_reply_header;
      cookie = record_view<rec>{h}.get(&rec::cookie);
      err = record_view<rec>{h}.get(&rec::error);
    }
    const auto s = slot_of(cookie);
    if (!s) return fail(errc::reply_cookie_unknown);
    // The 1997 driver matched replies in request order (checklist 1.1).
    if (legacy && slots_[*s].req.cookie != oldest_cookie()) return fail(errc::legacy_reply_out_of_order);
    cookie_slot& slot = slots_[*s];
    const request& r = slot.req;
    // With structured replies a READ MUST be answered in chunks, even an error.
    if (r.cmd() == command::read && structured_replies_on()) return fail(errc::simple_reply_to_read);
    const nbd_error status = legacy ? (err ? nbd_error::eio : nbd_error::ok) : normalize_error(err);
    if (r.cmd() == command::read && status == nbd_error::ok && r.length != 0) {
      // The data follows as payload events; it covers the READ, and ends the reply.
      if (client_has_structured_replies) (void)slot.coverage.add(r, r.offset, r.length);
      chunk_ = {*s, reply_flag::done, 0, 0, 0};
      payload_ = {cookie, r.offset, r.length, slot.tag};
      move(client_trigger::read_data_due);
      return make_event();
    }
    return complete(*s, status);
  }

  // "Structured reply chunk message" / [ext] extended reply: validate the header against the
  // request it answers (checklist 3.4) and the payload length against what the type allows,
  // then start the type's codec decoder.
  event on_chunk_header(bytes_view h, bool extended, std::uint64_t& length) noexcept {
    std::uint64_t cookie = 0, offset = 0;
    std::uint16_t flags = 0, type = 0;
    if (extended) {
      using rec = extended_reply_header;
      const record_view<rec> v{h};
      cookie = v.get(&rec::cookie);
      flags = v.get(&rec::flags);
      type = v.get(&rec::type);
      offset = v.get(&rec::offset);
      length = v.get(&rec::length);
    } else {
      using rec = structured_reply_header;
      const record_view<rec> v{h};
      cookie = v.get(&rec::cookie);
      flags = v.get(&rec::flags);
      type = v.get(&rec::type);
      length = v.get(&rec::length);
    }
    const auto s = slot_of(cookie);
    if (!s) return fail(errc::reply_cookie_unknown);
    const request& r = slots_[*s].req;
    if (extended && offset != r.offset) return fail(errc::reply_offset_mismatch);
    chunk_ = {*s, flags, type, 0, 0};
    const command c = r.cmd();
    // Lengths a type cannot have are refused before a byte of the payload is awaited: an
    // error chunk is an error value, a message of at most max_string bytes and perhaps an
    // offset; a data chunk is an offset and at most the request's length of data.
    if ((type & chunk_type_error_bit) && length > 6 + max_string + 8) return fail(errc::error_chunk_too_long);
    if (static_cast<chunk_type>(type) == chunk_type::offset_data && c == command::read && length >= 8 && length - 8 > r.length)
      return fail(errc::chunk_outside_request);
    switch (static_cast<chunk_type>(type)) {
      case chunk_type::none:
        if (length != 0) return fail(errc::chunk_length_invalid);
        if (!(flags & reply_flag::done)) return fail(errc::none_chunk_without_done);
        return finish(*s);
      case chunk_type::offset_data:
        if (c != command::read) return fail(errc::chunk_type_unexpected);
        dec_.start_offset_data(length);
        break;
      case chunk_type::offset_hole:
        if (c != command::read) return fail(errc::chunk_type_unexpected);
        dec_.start_offset_hole(length);
        break;
      case chunk_type::block_status:
      case chunk_type::block_status_ext: {
        const bool ext_type = static_cast<chunk_type>(type) == chunk_type::block_status_ext;
        if (c != command::block_status || ext_type != neg_.extended_headers) return fail(errc::chunk_type_unexpected);
        dec_.start_block_status(length, ext_type);
        if (dec_.error() != body_errc::ok) break;
        const std::uint64_t head = ext_type ? 8 : 4, desc = ext_type ? 16 : 8;
        if ((r.flags & command_flag::req_one) && length - head != desc) return fail(errc::extent_req_one_violation);
        break;
      }
      case chunk_type::error:
        dec_.start_error_chunk(type, length);
        break;
      case chunk_type::error_offset:
        if (c == command::flush || c == command::disc) return fail(errc::chunk_type_unexpected);
        dec_.start_error_chunk(type, length);
        break;
      default:
        // Unknown type: with the error bit the request has failed and the chunk is skipped
        // (its error value, if present, is used); without it the client MUST disconnect.
        if (!(type & chunk_type_error_bit)) return fail(errc::chunk_type_unknown);
        if (length < 6) record_error(*s, nbd_error::einval);
        if (length == 0) return (flags & reply_flag::done) ? finish(*s) : make_event();
        dec_.start_error_chunk(type, length);
        break;
    }
    if (const body_errc e = dec_.error(); e != body_errc::ok) return fail(machine_errc(e));
    move(client_trigger::chunk_header);
    return make_event();
  }

  /// chunk_payload: the payload through the codec decoder, one event per step. Invariant: a
  /// step that consumes nothing and reports nothing really needs more input, so a chunk that
  /// ends without DONE goes straight on to the next message.
  std::size_t on_chunk_payload(bytes_view in, event& ev) noexcept {
    std::size_t used = 0;
    for (;;) {
      const body_step s = dec_.decode(in.subspan(used));
      used += s.consumed;
      switch (s.ev.kind) {
        case body_item::need_more: return used;
        case body_item::failed: ev = fail(machine_errc(s.ev.error)); return used;
        case body_item::done: {
          move(client_trigger::chunk_done);
          if (chunk_.flags & reply_flag::done) {
            ev = finish(chunk_.slot);
            return used;
          }
          return used + on_reply_header(in.subspan(used), ev);
        }
        default:
          ev = on_chunk_item(s.ev);
          if (ev.kind != event_kind::need_more || !in_reply_chunk()) {
            if (ev.kind == event_kind::need_more && in_read_data()) return used + on_read_data(in.subspan(used), ev);
            return used;
          }
          continue;
      }
    }
  }

  /// One decoded item of a chunk payload.
  NBDWIRE_SIZE_OUTLINE event on_chunk_item(const body_event& b) noexcept {
    cookie_slot& s = slots_[chunk_.slot];
    const request& r = s.req;
    switch (b.kind) {
      case body_item::offset_data: {
        if (const errc e = s.coverage.add(r, b.offset, b.length); e != errc::ok) return fail(e);
        payload_ = {r.cookie, b.offset, b.length, s.tag};
        move(client_trigger::read_data_due);  // the data streams through read_data
        return make_event();
      }
      case body_item::offset_hole:
        if (const errc e = s.coverage.add(r, b.offset, b.length); e != errc::ok) return fail(e);
        {
          event made = make_event(event_kind::read_hole);
          made.req = r;
          made.offset = b.offset;
          made.length = b.length;
          return made;
        }
      case body_item::block_status: {
        std::size_t idx = 0;
        while (idx < neg_.meta_context_count && neg_.meta_contexts[idx].id != b.context_id) ++idx;
        if (idx == neg_.meta_context_count) return fail(errc::block_status_unknown_context);
        if (s.contexts_seen & (1u << idx)) return fail(errc::block_status_duplicate_context);
        s.contexts_seen |= 1u << idx;
        chunk_.context_id = b.context_id;
        chunk_.extent_sum = 0;
        return make_event();
      }
      case body_item::extent: {
        const std::uint64_t len = b.length;
        // Every descriptor but the last lies inside the request; the last may run past it.
        if (chunk_.extent_sum >= r.length && chunk_.extent_sum != 0) return fail(errc::extent_past_request);
        if ((r.flags & command_flag::req_one) && len > r.length) return fail(errc::extent_req_one_violation);
        const std::uint64_t at = r.offset + chunk_.extent_sum;
        chunk_.extent_sum = len > ~std::uint64_t{0} - chunk_.extent_sum ? ~std::uint64_t{0} : chunk_.extent_sum + len;
        event made = make_event(event_kind::extent);
        made.req = r;
        made.offset = at;
        made.length = len;
        made.context_id = chunk_.context_id;
        made.extent_flags = b.status;
        return made;
      }
      case body_item::error_message:
      case body_item::error_offset: {
        const auto type = static_cast<chunk_type>(chunk_.type);
        if (type != chunk_type::error && type != chunk_type::error_offset) {
          // Unknown error type: its error value and nothing else.
          record_error(chunk_.slot, b.error_value ? normalize_error(b.error_value) : nbd_error::einval);
          return make_event();
        }
        const bool has_offset = b.kind == body_item::error_offset;
        if (has_offset && (b.offset < r.offset || b.offset - r.offset >= r.length))
          return fail(errc::chunk_outside_request);
        const nbd_error status = normalize_error(b.error_value);
        record_error(chunk_.slot, status);
        event made = make_event(event_kind::error_chunk);
        made.req = r;
        made.status = status;
        made.offset = has_offset ? b.offset : 0;
        made.data = b.text;
        made.has_offset = has_offset;
        return made;
      }
      default: return make_event();
    }
  }

  void record_error(std::size_t s, nbd_error e) noexcept {
    if (!slots_[s].errored) slots_[s].status = e;
    slots_[s].errored = true;
  }

  /// DONE: success needs every byte of a READ covered and every context of a BLOCK_STATUS
  /// answered; otherwise the first error reported is the request's status.
  event finish(std::size_t s) noexcept {
    const cookie_slot& slot = slots_[s];
    // Without structured replies a READ's data is its simple reply's, whole by construction.
    if (client_has_structured_replies && !slot.errored) {
      if (slot.req.cmd() == command::read && slot.coverage.covered() != slot.req.length) return fail(errc::read_incomplete);
      if (slot.req.cmd() == command::block_status &&
          slot.contexts_seen != (neg_.meta_context_count >= 32 ? ~0u : (1u << neg_.meta_context_count) - 1))
        return fail(errc::block_status_missing_context);
    }
    return complete(s, slot.errored ? slot.status : nbd_error::ok);
  }

  /// read_data: the READ data as `payload` events viewing the input; once it is all there,
  /// the chunk (or simple reply) it belongs to ends.
  std::size_t on_read_data(bytes_view in, event& ev) noexcept {
    if (payload_.length == 0) {
      move(client_trigger::read_data_done);
      if (chunk_.flags & reply_flag::done) {
        ev = finish(chunk_.slot);
        return 0;
      }
      return on_reply_header(in, ev);
    }
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), payload_.length));
    if (take == 0) return 0;
    payload_.offset += take;
    payload_.length -= take;
    const cookie_slot& s = slots_[chunk_.slot];
    ev = make_event(event_kind::payload);
    ev.req = s.req;
    ev.offset = payload_.offset - take;
    ev.data = in.first(take);
    ev.tag = s.tag;
    ev.remaining = payload_.length;
    return take;
  }

  [[nodiscard]] std::uint64_t oldest_cookie() const noexcept {
    std::uint64_t best = ~std::uint64_t{0};
    for (const auto& s : slots_)
      if (s.used && (s.req.cookie >> 16) < (best >> 16)) best = s.req.cookie;
    return best;
  }

  event complete(std::size_t s, nbd_error status) noexcept {
    const request r = slots_[s].req;
    const std::uint64_t tag = slots_[s].tag;
    slots_[s].used = false;
    --in_flight_;
    // NBD_ESHUTDOWN: the client MUST soft-disconnect once its requests in flight are done
    // ("Error values"). New requests are refused from now on; DISC follows the last reply.
    if (status == nbd_error::eshutdown) server_shutting_down_ = true;
    if (server_shutting_down_ && in_flight_ == 0 && state_ == client_state::transmission) queue_disc();
    event made = make_event(event_kind::reply);
    made.req = r;
    made.status = status;
    made.tag = tag;
    return made;
  }

  chunk_state chunk_{};
  payload_span payload_{};  ///< read_data: the READ data still to come
  std::uint64_t sequence_ = 0;
  std::size_t in_flight_ = 0;
  bool server_shutting_down_ = false;
  std::array<cookie_slot, max_in_flight> slots_{};
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
