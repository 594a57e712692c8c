// SPDX-License-Identifier: MIT
// nbdwire server: the transmission part. It serves what core.neg says was negotiated
// (filled by the handshake, or given whole to server(cfg, negotiated)): request headers
// decoded and validated (detail::check_request, checklist 3.3), the table of requests in
// flight with the outbox room each holds for its reply, WRITE payloads passed through,
// and replies and chunks whose payloads the codec (codec/chunk.hpp) encodes straight into
// the outbox.
//
// States it runs (server/states.hpp): transmission, write_payload, discard_payload; DISC
// moves to closed, where replies still go out.
//
// Output contract. When a request is accepted (the `request` event), the machine reserves
// outbox room for the reply that ends it: a simple reply, or the final chunk (one or two
// data chunks for READ, one status chunk per negotiated context for BLOCK_STATUS, an error
// chunk for anything). So every call that ends a reply (reply(), reply_done(), and the
// chunk calls with done = true) never fails for lack of room, however many requests are in
// flight and however full the outbox is; and neither does the status chunk of each
// negotiated context. A request is only accepted while its reservation fits: until then
// receive() reports `blocked` (drain output, or answer requests in flight). Bound:
// max_in_flight x reply_reserve() bytes, which fits outbox_size (config.hpp).
// What may still run short: chunks beyond that shape (a READ answered in several data and
// hole chunks: every chunk before the final one), which use the outbox room left over;
// such a call returns errc::outbox_full and changes nothing, and chunk_room() says what
// fits. The simplest answer to that is to end the reply with one data chunk for the rest of
// the range, which always fits. Error messages are text for humans: one that does not fit
// the room left is shortened (at a UTF-8 character boundary), never refused.
#pragma once

#include <algorithm>    // std::min, std::max
#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <optional>     // std::optional
#include <span>         // extents
#include <string_view>  // messages

#include "nbdwire/codec/chunk.hpp"
#include "nbdwire/detail/request_table.hpp"
#include "nbdwire/detail/rules.hpp"
#include "nbdwire/server/core.hpp"
#include "nbdwire/wire.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

// Every accepted request holds room for its reply's last messages; at least one request must
// fit with every context selected and extended headers (32-byte headers, 16-byte descriptors).
static_assert(outbox_size >= max_meta_contexts * (32 + 8 + 16) + 32 + 6 + 8,
              "NBDWIRE_OUTBOX_SIZE cannot hold the reply reservation of one request");

namespace detail {

class server_transmission {
 public:
  using slot = request_table::slot;

  // ---- input ------------------------------------------------------------------------------

  /// transmission: one request header (read in place when whole, else stashed).
  std::size_t on_request(server_core& c, bytes_view in, event& ev) noexcept {
    // The 1997 client matches replies in request order: one request at a time.
    if (c.legacy() && requests_.size() != 0) {
      if (!in.empty()) ev = {.kind = event_kind::blocked};
      return 0;
    }
    // Backpressure: a request is read only once its reply's room can be reserved.
    if (c.head.size() == 0 && !can_accept(c)) {
      if (!in.empty()) ev = {.kind = event_kind::blocked};
      return 0;
    }
    // The magic says which framing: the 1997 one, compact, or [ext] extended, and only the
    // negotiated one is accepted ("Request message").
    const bool ext = extended(c);
    const std::uint32_t expected = c.legacy() ? magic::legacy_1997_request : ext ? magic::extended_request : magic::request;
    const std::size_t size = c.legacy() ? sizeof(legacy_1997_request)
                             : ext      ? sizeof(extended_request_header)
                                        : sizeof(request_header);
    // A whole header in the input is read in place. A split one is stashed: 4 bytes first, so
    // that a bad magic is refused as soon as it arrives, then the rest.
    const bool in_place = c.head.size() == 0 && in.size() >= size;
    std::size_t n = in_place ? 4 : c.head.fill(in, 4);
    if (!in_place && c.head.size() < 4) return n;
    if (load_be<std::uint32_t>(in_place ? in.data() : c.head.view().data()) != expected)
      return ev = c.fail(errc::bad_request_magic), n;
    bytes_view h;
    if (in_place) {
      h = in.first(size);
      n = size;
    } else {
      n += c.head.fill(in.subspan(n), size);
      if (c.head.size() < size) return n;
      h = c.head.view();
    }
    request r{};
    std::uint64_t payload = 0;
    bool payload_len_misused = false;
    if (c.legacy()) {
      using rec = legacy_1997_request;
      const record_view<rec> v{h};
      const std::uint32_t type = v.get(&rec::type);
      // Types other than READ and WRITE did not exist; report them as an unknown command.
      r = {v.get(&rec::handle), static_cast<std::uint16_t>(type <= 1 ? type : 0xffffu), 0, v.get(&rec::from),
           v.get(&rec::length)};
      payload = r.payload_length();
    } else if (ext) {
      using rec = extended_request_header;
      const record_view<rec> v{h};
      r = {v.get(&rec::cookie), v.get(&rec::type), v.get(&rec::flags), v.get(&rec::offset), v.get(&rec::length)};
      // [ext] PAYLOAD_LEN: the length counts payload bytes that follow. WRITE MUST use it;
      // on any other command (no BLOCK_STATUS payloads are advertised) the payload is
      // consumed and the request refused.
      if (r.flags & command_flag::payload_len) {
        payload = r.length;
        r.flags = static_cast<std::uint16_t>(r.flags & ~command_flag::payload_len);
        payload_len_misused = r.cmd() != command::write;
      } else {
        payload_len_misused = r.cmd() == command::write;
      }
    } else {
      using rec = request_header;
      const record_view<rec> v{h};
      r = {v.get(&rec::cookie), v.get(&rec::type), v.get(&rec::flags), v.get(&rec::offset), v.get(&rec::length)};
      payload = r.payload_length();
    }
    c.head.clear();
    ev = on_request_header(c, r, payload, payload_len_misused);
    return n;
  }

  /// write_payload / discard_payload: payload bytes, viewed in the input or dropped.
  std::size_t on_payload(server_core& c, bytes_view in, event& ev) noexcept {
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), payload_.length));
    if (take == 0) return 0;
    payload_.offset += take;
    payload_.length -= take;
    if (c.state == server_state::write_payload) {
      const auto* s = requests_.find(current_);
      ev = {.kind = event_kind::payload, .req = current_, .offset = payload_.offset - take, .data = in.first(take),
            .tag = s ? s->tag : 0, .remaining = payload_.length};
    }
    if (payload_.length == 0) c.move(server_trigger::payload_end);
    return take;
  }

  [[nodiscard]] std::optional<payload_span> incoming_payload(const server_core& c) const noexcept {
    if (c.state != server_state::write_payload || payload_.length == 0) return std::nullopt;
    payload_span p = payload_;
    if (const auto* s = requests_.find(current_)) p.tag = s->tag;  // set_tag() may follow the request event
    return p;
  }
  result<void> consume_incoming_payload(server_core& c, std::uint64_t n) noexcept {
    if (c.state != server_state::write_payload) return errc::no_payload_due;
    if (n > payload_.length) return errc::payload_overrun;
    payload_.offset += n;
    payload_.length -= n;
    if (payload_.length == 0) c.move(server_trigger::payload_end);
    return {};
  }

  // ---- replies ------------------------------------------------------------------------------

  result<void> reply(server_core& c, const request& r, nbd_error e, std::string_view message) noexcept {
    auto* s = answerable(c, r);
    if (!s) return answer_error(c);
    if (message.size() > max_string) return errc::string_too_long;
    if (r.cmd() == command::block_status && e == nbd_error::ok) return errc::block_status_needs_chunks;
    queue_whole_reply(c, *s, e, message);
    finish(*s);
    return {};
  }

  result<void> reply_read_data(server_core& c, const request& r, std::uint64_t offset, std::uint64_t length,
                               bool done) noexcept {
    auto* s = answerable(c, r);
    if (!s) return answer_error(c);
    if (const errc e = check_chunk(c, s, command::read, offset, length); e != errc::ok) return e;
    // DF: "at most one content chunk", so it covers the whole request and ends the reply.
    if ((r.flags & command_flag::df) && (offset != r.offset || length != r.length || !done))
      return errc::df_requires_one_chunk;
    if (!extended(c) && length > max_compact_chunk_data) return errc::length_too_large;
    if (!take_room(c, *s, chunk_header_size(c) + offset_data_prefix_size, 1, done)) return errc::outbox_full;
    put_data_chunk(c, r, done, payload_span{r.cookie, offset, length, s->tag});
    if (done) finish(*s);
    return {};
  }

  result<void> reply_read_hole(server_core& c, const request& r, std::uint64_t offset, std::uint32_t length,
                               bool done) noexcept {
    auto* s = answerable(c, r);
    if (!s) return answer_error(c);
    if (const errc e = check_chunk(c, s, command::read, offset, length); e != errc::ok) return e;
    if (r.flags & command_flag::df) return errc::df_requires_one_chunk;  // DF merges holes into data
    if (!take_room(c, *s, chunk_header_size(c) + offset_hole_size, 0, done)) return errc::outbox_full;
    put_chunk(c, r, chunk_type::offset_hole, done, [&](mutable_bytes b) { return encode_offset_hole(b, offset, length); });
    if (done) finish(*s);
    return {};
  }

  result<std::size_t> reply_block_status(server_core& c, const request& r, std::uint32_t context_id,
                                         std::span<const block_extent> extents, bool done) noexcept {
    auto* s = answerable(c, r);
    if (!s) return answer_error(c);
    if (r.cmd() != command::block_status) return errc::command_mismatch;
    if (!c.neg.has_meta_context(context_id)) return errc::context_not_negotiated;
    if (extents.empty()) return errc::no_extents;
    const bool ext = extended(c);
    const std::size_t desc = block_descriptor_size(ext);
    const std::size_t head = chunk_header_size(c) + block_status_head_size(ext);
    // The first descriptor is reserved; the others take what room is left over.
    const std::size_t room = chunk_room(c, *s, done);
    const std::size_t extra_room = room > head + desc ? (room - head - desc) / desc : 0;
    std::size_t n = 0;
    std::uint64_t sum = 0;
    while (n < extents.size() && n < 1 + extra_room) {
      if (extents[n].length == 0) return errc::zero_length;
      sum += extents[n].length;
      ++n;
      if ((r.flags & command_flag::req_one) || sum >= r.length) break;
      if (!ext && extents[n - 1].length > 0xffffffffu) break;
    }
    if (!take_room(c, *s, head + n * desc, 0, done)) return errc::outbox_full;
    if (s->contexts_left) --s->contexts_left;
    put_chunk_header(c, r, ext ? chunk_type::block_status_ext : chunk_type::block_status, done,
                     block_status_head_size(ext) + n * desc);
    c.out.commit(encode_block_status_head(c.out.writable(), context_id, static_cast<std::uint32_t>(n), ext).written);
    for (std::size_t i = 0; i < n; ++i) {
      block_extent d = extents[i];
      // REQ_ONE: the one extent does not reach past the request; compact descriptors hold
      // 32 bits (only the last one sent can be longer: it is cut).
      if (r.flags & command_flag::req_one) d.length = std::min<std::uint64_t>(d.length, std::max<std::uint64_t>(r.length, 1));
      if (!ext) {
        d.length = std::min<std::uint64_t>(d.length, 0xffffffffu);
        d.flags &= 0xffffffffu;
      }
      c.out.commit(encode_block_descriptor(c.out.writable(), d, ext).written);
    }
    if (done) finish(*s);
    return n;
  }

  result<void> reply_error_chunk(server_core& c, const request& r, nbd_error e, std::string_view message,
                                 std::optional<std::uint64_t> offset, bool done) noexcept {
    auto* s = answerable(c, r);
    if (!s) return answer_error(c);
    if (!structured_replies_on(c)) return errc::structured_replies_off;
    if (e == nbd_error::ok) return errc::error_chunk_needs_error;
    if (message.size() > max_string) return errc::string_too_long;
    if (offset && (*offset < r.offset || *offset - r.offset >= r.length)) return errc::request_out_of_range;
    const std::size_t fixed = chunk_header_size(c) + static_cast<std::size_t>(error_chunk_size({}, offset.has_value()));
    if (!done && chunk_room(c, *s, false) < fixed) return errc::outbox_full;
    queue_error_chunk(c, *s, e, message, offset, done);
    if (done) finish(*s);
    return {};
  }

  result<void> reply_done(server_core& c, const request& r) noexcept {
    auto* s = answerable(c, r);
    if (!s) return answer_error(c);
    if (!structured_replies_on(c)) return errc::structured_replies_off;
    (void)take_room(c, *s, chunk_header_size(c), 0, true);  // within the reservation
    put_chunk_header(c, r, chunk_type::none, true, 0);
    finish(*s);
    return {};
  }

  [[nodiscard]] std::size_t chunk_room(const server_core& c, const request& r) const noexcept {
    const auto* s = requests_.find(r);
    return s ? chunk_room(c, *s, false) : 0;
  }

  result<void> set_tag(const server_core& c, const request& r, std::uint64_t tag) noexcept {
    auto* s = answerable(c, r);
    if (!s) return answer_error(c);
    s->tag = tag;
    return {};
  }
  [[nodiscard]] std::optional<std::uint64_t> tag_of(const request& r) const noexcept {
    const auto* s = requests_.find(r);
    if (!s) return std::nullopt;
    return s->tag;
  }

  [[nodiscard]] std::size_t outstanding() const noexcept { return requests_.size(); }

 private:
  [[nodiscard]] static bool extended(const server_core& c) noexcept { return c.neg.extended_headers; }
  [[nodiscard]] static bool structured_replies_on(const server_core& c) noexcept { return c.neg.structured_replies; }

  event on_request_header(server_core& c, const request& r, std::uint64_t payload, bool payload_len_misused) noexcept {
    if (r.cmd() == command::disc && !c.legacy()) {
      // "NBD_CMD_DISC": no reply; stop reading. Requests in flight are still answered.
      c.move(server_trigger::disc);
      return {.kind = event_kind::disconnected, .req = r};
    }
    // A payload beyond both the advertised maximum and the 32 MiB every server should accept
    // is treated as a denial of service (checklist 2.9) rather than read and dropped.
    if (payload > std::max<std::uint64_t>(default_max_payload, c.neg.block_size.maximum))
      return c.fail(extended(c) ? errc::extended_payload_too_large : errc::write_payload_too_large);
    const verdict v = c.shutting_down        ? verdict::shutting_down
                      : payload_len_misused ? verdict::flag_not_applicable
                                            : check_request(r, c.neg, true);
    payload_ = {r.cookie, r.offset, payload};
    // The request holds its reply's room from now on (can_accept() made sure it fits).
    auto& s = requests_.add(r);
    s.reserve = static_cast<std::uint16_t>(reply_reserve(c, r));
    s.reserve_marks = static_cast<std::uint8_t>(reply_marks(c, r));
    s.contexts_left = static_cast<std::uint8_t>(r.cmd() == command::block_status ? c.neg.meta_context_count : 0);
    reserved_ += s.reserve;
    reserved_marks_ += s.reserve_marks;
    if (v != verdict::ok) {
      const nbd_error status = to_nbd_error(v);
      queue_whole_reply(c, s, status, {});
      finish(s);
      c.move(payload ? server_trigger::refused_with_payload : server_trigger::request_header);
      return {.kind = event_kind::request_refused, .req = r, .status = status};
    }
    current_ = r;
    c.move(payload ? server_trigger::write_request : server_trigger::request_header);
    return {.kind = event_kind::request, .req = r, .remaining = payload};
  }

  /// Bytes of one reply header: simple (16; the 1997 reply is 16 too), compact structured
  /// (20) or [ext] extended (32) chunk header.
  [[nodiscard]] static std::size_t chunk_header_size(const server_core& c) noexcept {
    return extended(c) ? sizeof(extended_reply_header) : sizeof(structured_reply_header);
  }

  /// The outbox room a request holds from acceptance until its reply is complete: what the
  /// reply's last messages need (see "Output contract" above). At most max_reply_reserve().
  [[nodiscard]] static std::size_t reply_reserve(const server_core& c, const request& r) noexcept {
    const std::size_t simple = c.legacy() ? sizeof(legacy_1997_reply) : sizeof(simple_reply_header);
    if (!structured_replies_on(c)) return simple;
    if (r.cmd() == command::read)
      return std::max(final_chunk_size(c), 2 * (chunk_header_size(c) + offset_data_prefix_size));
    if (r.cmd() == command::block_status) return c.neg.meta_context_count * block_status_reserve(c) + final_chunk_size(c);
    return std::max(final_chunk_size(c), simple);
  }
  /// The largest chunk that can end any reply without data: an ERROR_OFFSET chunk without a
  /// message (a NONE chunk, an OFFSET_HOLE chunk and a data chunk's header are smaller).
  [[nodiscard]] static std::size_t final_chunk_size(const server_core& c) noexcept {
    return chunk_header_size(c) + static_cast<std::size_t>(error_chunk_size({}, true));
  }
  /// One status chunk with one descriptor.
  [[nodiscard]] static std::size_t block_status_reserve(const server_core& c) noexcept {
    return chunk_header_size(c) + static_cast<std::size_t>(block_status_size(1, extended(c)));
  }
  [[nodiscard]] static std::size_t max_reply_reserve(const server_core& c) noexcept {
    return std::max(reply_reserve(c, request{.type = static_cast<std::uint16_t>(command::read)}),
                    reply_reserve(c, request{.type = static_cast<std::uint16_t>(command::block_status)}));
  }
  /// Payload marks a reply holds: READ data in one chunk, or two when a compact chunk
  /// cannot carry it all.
  [[nodiscard]] static std::size_t reply_marks(const server_core& c, const request& r) noexcept {
    if (r.cmd() != command::read) return 0;
    return !extended(c) && structured_replies_on(c) && r.length > max_compact_chunk_data ? 2 : 1;
  }

  /// Room for the next request's reservation: table space, outbox bytes and marks beyond
  /// what the requests in flight hold.
  [[nodiscard]] bool can_accept(server_core& c) noexcept {
    return !requests_.full() && c.out.room_for(reserved_ + max_reply_reserve(c), reserved_marks_ + 2);
  }

  /// Room a chunk of `s` may use now: the room nobody holds, plus what `s` holds if the
  /// chunk ends the reply (a chunk that does not end it leaves the final message's room).
  [[nodiscard]] std::size_t chunk_room(const server_core& c, const slot& s, bool done) const noexcept {
    const std::size_t free = c.out.free_space() > reserved_ ? c.out.free_space() - reserved_ : 0;
    const std::size_t keep = done ? 0 : final_chunk_keep(c, s);
    return free + (s.reserve > keep ? s.reserve - keep : 0);
  }
  /// What a slot keeps back for the rest of its reply while sending a chunk that does not
  /// end it: a status chunk for each context still to answer after this one, and a final chunk.
  [[nodiscard]] static std::size_t final_chunk_keep(const server_core& c, const slot& s) noexcept {
    const std::size_t contexts = s.contexts_left > 1 ? (s.contexts_left - 1u) * block_status_reserve(c) : 0;
    return std::min<std::size_t>(s.reserve, contexts + final_chunk_size(c));
  }

  /// Checks and takes room for `bytes` and `marks` of a chunk of `s`; the slot's reservation
  /// shrinks to what the rest of its reply keeps. False (nothing changed) if it does not fit.
  [[nodiscard]] bool take_room(server_core& c, slot& s, std::size_t bytes, std::size_t marks, bool done) noexcept {
    const std::size_t keep = done ? 0 : final_chunk_keep(c, s);
    const std::size_t keep_marks = done || s.req.cmd() != command::read ? 0 : 1;
    const std::size_t others = reserved_ - s.reserve, other_marks = reserved_marks_ - s.reserve_marks;
    if (!c.out.room_for(others + keep + bytes, other_marks + keep_marks + marks)) return false;
    reserved_ = others + keep;
    reserved_marks_ = other_marks + keep_marks;
    s.reserve = static_cast<std::uint16_t>(keep);
    s.reserve_marks = static_cast<std::uint8_t>(keep_marks);
    return true;
  }

  /// The reply of `s` is complete: its slot and what it still held are released.
  void finish(slot& s) noexcept {
    reserved_ -= s.reserve;
    reserved_marks_ -= s.reserve_marks;
    requests_.remove(s);
  }

  /// The slot of a request a reply call names: none once the connection failed (there is
  /// nobody to answer), or for a request not in flight.
  [[nodiscard]] slot* answerable(const server_core& c, const request& r) noexcept {
    return c.state == server_state::failed ? nullptr : requests_.find(r);
  }
  [[nodiscard]] static errc answer_error(const server_core& c) noexcept {
    return c.state == server_state::failed ? errc::not_in_transmission : errc::unknown_request;
  }

  [[nodiscard]] static errc check_chunk(const server_core& c, const slot* s, command cmd, std::uint64_t offset,
                                        std::uint64_t length) noexcept {
    if (!structured_replies_on(c)) return errc::structured_replies_off;
    if (s->req.cmd() != cmd) return errc::command_mismatch;
    if (length == 0) return errc::zero_length;
    if (offset < s->req.offset || !range_within(offset - s->req.offset, length, s->req.length))
      return errc::request_out_of_range;
    return errc::ok;
  }

  /// A whole reply in one message, within the room `s` holds (a message only takes what is
  /// left). Simple replies serve everything without structured replies; with them only a
  /// success without data (never anything for READ), and with extended headers nothing
  /// ("Structured reply chunk message", [ext]).
  void queue_whole_reply(server_core& c, slot& s, nbd_error e, std::string_view message) noexcept {
    const request& r = s.req;
    const bool ok = e == nbd_error::ok;
    const bool data = r.cmd() == command::read && ok && r.length != 0;
    const bool chunks = extended(c) || (structured_replies_on(c) && (r.cmd() == command::read || !ok));
    if (!chunks) {
      (void)take_room(c, s, c.legacy() ? sizeof(legacy_1997_reply) : sizeof(simple_reply_header), data ? 1 : 0, true);
      if (c.legacy())
        c.out.put_record(make_legacy_1997_reply(r.cookie, static_cast<std::uint32_t>(e)));
      else
        c.out.put_record(make_simple_reply(e, r.cookie));
      if (data) c.out.put_mark({r.cookie, r.offset, r.length, s.tag});
      return;
    }
    if (!ok) return queue_error_chunk(c, s, e, message, std::nullopt, true);
    if (data) {
      // A compact chunk's 32-bit length holds at most 2^32 - 9 data bytes: "a read of more
      // than 2^32 - 8 bytes MUST be split" without extended headers (DF: at most 65,536
      // bytes need be served unsplit, and a larger DF read is never split here either).
      const std::uint64_t first =
          !extended(c) && r.length > max_compact_chunk_data ? max_compact_chunk_data & ~std::uint64_t{4095} : r.length;
      const std::size_t pieces = first == r.length ? 1 : 2;
      (void)take_room(c, s, pieces * (chunk_header_size(c) + offset_data_prefix_size), pieces, true);
      put_data_chunk(c, r, first == r.length, payload_span{r.cookie, r.offset, first, s.tag});
      if (first == r.length) return;
      put_data_chunk(c, r, true, payload_span{r.cookie, r.offset + first, r.length - first, s.tag});
      return;
    }
    (void)take_room(c, s, chunk_header_size(c), 0, true);
    put_chunk_header(c, r, chunk_type::none, true, 0);
  }

  /// Data bytes one compact OFFSET_DATA chunk can carry (its length counts 8 offset bytes).
  static constexpr std::uint64_t max_compact_chunk_data = 0xffffffffu - offset_data_prefix_size;

  /// An error chunk; the caller made sure its fixed part fits. The message takes what room is
  /// left and is shortened at a UTF-8 character boundary when that is less than its length.
  void queue_error_chunk(server_core& c, slot& s, nbd_error e, std::string_view message,
                         std::optional<std::uint64_t> offset, bool done) noexcept {
    const std::size_t fixed = chunk_header_size(c) + static_cast<std::size_t>(error_chunk_size({}, offset.has_value()));
    const std::size_t room = chunk_room(c, s, done);
    if (message.size() > room - std::min(room, fixed)) message = utf8_prefix(message, room - std::min(room, fixed));
    (void)take_room(c, s, fixed + message.size(), 0, done);
    const auto value = static_cast<std::uint32_t>(e);
    put_chunk(c, s.req, offset ? chunk_type::error_offset : chunk_type::error, done, [&](mutable_bytes b) {
      return offset ? encode_error_offset_chunk(b, value, message, *offset) : nbdwire::encode_error_chunk(b, value, message);
    });
  }

  /// An OFFSET_DATA chunk whose room was taken: header, offset, and a payload mark for the
  /// data the caller sends.
  void put_data_chunk(server_core& c, const request& r, bool done, payload_span data) noexcept {
    put_chunk(c, r, chunk_type::offset_data, done,
              [&](mutable_bytes b) { return encode_offset_data_prefix(b, data.offset); }, data.length);
    c.out.put_mark(data);
  }

  /// A chunk whose room was taken: its header, then the payload `encode` writes (and
  /// `data_length` bytes the caller sends after it).
  template <class Encode>
  void put_chunk(server_core& c, const request& r, chunk_type t, bool done, const Encode& encode,
                 std::uint64_t data_length = 0) noexcept {
    const encode_result e = encode(c.out.writable().subspan(chunk_header_size(c)));
    put_chunk_header(c, r, t, done, e.written + data_length);
    c.out.commit(e.written);
  }

  /// A structured chunk header, or [ext] an extended one (whose offset is the request's).
  static void put_chunk_header(server_core& c, const request& r, chunk_type t, bool done, std::uint64_t length) noexcept {
    const std::uint16_t flags = done ? reply_flag::done : 0;
    if (extended(c))
      c.out.put_record(make_extended_reply(flags, t, r.cookie, r.offset, length));
    else
      c.out.put_record(make_structured_reply(flags, t, r.cookie, static_cast<std::uint32_t>(length)));
  }

  request current_{};      ///< the accepted WRITE whose payload is arriving
  payload_span payload_{};  ///< the payload still due (WRITE data, or a refused request's)
  request_table requests_{};
  std::size_t reserved_ = 0, reserved_marks_ = 0;  ///< outbox room held by requests_ (see reply_reserve)
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
