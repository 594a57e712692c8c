// SPDX-License-Identifier: MIT
// Fuzz target, round trip:
//  1. every wire record decoded from the input encodes back to the same bytes;
//  2. a client and a server machine talk to each other: the input chooses the server's
//     exports, the client's options and a series of requests with their answers. What one
//     side encodes the other must decode to the same values: LIST entries, INFO items, the
//     negotiated export, every request field, every reply status, every payload byte.
//     Both ask for and offer structured replies and extended headers as the server cfg says,
//     and the client asks for the metadata contexts the option byte says; BLOCK_STATUS
//     extents must arrive as the server sent them, per context.
// Input: [0..7] server cfg (surfaces.hpp) [8] option (bits 0-1 export, 2-5 info requests,
//        6-7 contexts asked for)  then ops of 16 bytes:
//        command[1] flags[2] offset[8] length[4] reply error[1].
#include <deque>

#include "surfaces.hpp"

namespace {

using namespace nbdwire_fuzz;
using nbdwire::event;

template <class Record>
void record_round_trip(bytes_view in) {
  if (in.size() < sizeof(Record)) return;
  const Record r = nbdwire::decode<Record>(in);
  const auto b = nbdwire::encode(r);
  NBDWIRE_FUZZ_CHECK(std::equal(b.begin(), b.end(), in.begin()));
  std::array<std::byte, sizeof(Record)> out{};
  NBDWIRE_FUZZ_CHECK(nbdwire::encode_into(r, out) == sizeof(Record) && out == b);
  NBDWIRE_FUZZ_CHECK(nbdwire::encode_into(r, std::span<std::byte>(out).first(sizeof(Record) - 1)) == 0);
}

void records(bytes_view in) {
  using namespace nbdwire;
  record_round_trip<oldstyle_greeting>(in);
  record_round_trip<newstyle_greeting>(in);
  record_round_trip<client_flags_record>(in);
  record_round_trip<option_header>(in);
  record_round_trip<option_reply_header>(in);
  record_round_trip<export_name_reply>(in);
  record_round_trip<export_name_reply_short>(in);
  record_round_trip<info_export_payload>(in);
  record_round_trip<info_block_size_payload>(in);
  record_round_trip<info_string_prefix>(in);
  record_round_trip<server_reply_prefix>(in);
  record_round_trip<meta_context_prefix>(in);
  record_round_trip<request_header>(in);
  record_round_trip<extended_request_header>(in);
  record_round_trip<simple_reply_header>(in);
  record_round_trip<structured_reply_header>(in);
  record_round_trip<extended_reply_header>(in);
  record_round_trip<offset_hole_payload>(in);
  record_round_trip<error_chunk_prefix>(in);
  record_round_trip<block_descriptor>(in);
  record_round_trip<block_descriptor_ext>(in);
  record_round_trip<legacy_1997_request>(in);
  record_round_trip<legacy_1997_reply>(in);
  // The constructors agree with the fields they set.
  reader rd(in);
  const auto type = rd.u16();
  const auto flags = rd.u16();
  const auto cookie = rd.u64();
  const auto offset = rd.u64();
  const auto length = rd.u32();
  const auto q = decode<request_header>(encode(make_request(static_cast<command>(type), flags, cookie, offset, length)));
  NBDWIRE_FUZZ_CHECK(q.magic.get() == magic::request && q.type.get() == type && q.flags.get() == flags &&
                     q.cookie.get() == cookie && q.offset.get() == offset && q.length.get() == length);
}

/// The two machines and what each has said.
struct pair {
  nbdwire::client c;
  nbdwire::server s;
  std::vector<event> client_events, server_events;
  std::deque<bytes> keep;  ///< copies of the bytes events view (stable addresses)
  pair(const nbdwire::client_config& ccfg, const nbdwire::server_config& cfg) : c(ccfg), s(cfg) {}

  /// Sends every byte `from` has queued (payload: the export pattern) into `to`.
  template <class From, class To>
  void move_bytes(From& from, To& to, std::vector<event>& events) {
    bytes wire;
    drain(from, wire);
    bytes_view in{wire};
    for (int guard = 0; guard < 100000; ++guard) {
      const auto r = to.receive(in);
      NBDWIRE_FUZZ_CHECK(r.consumed <= in.size());
      check_trace(to);
      in = in.subspan(r.consumed);
      if (r.ev.kind == event_kind::need_more) {
        NBDWIRE_FUZZ_CHECK(in.empty());
        return;
      }
      // Copy what the event views; the views die with the next call.
      event e = r.ev;
      keep.emplace_back(e.data.begin(), e.data.end());
      e.data = keep.back();
      keep.emplace_back(e.text.begin(), e.text.end());
      e.text = keep.back();
      events.push_back(e);
      if (r.ev.kind == event_kind::failed || r.ev.kind == event_kind::closed || r.ev.kind == event_kind::disconnected)
        return;
    }
    NBDWIRE_FUZZ_FAIL("the exchange did not settle");
  }
  void to_server() { move_bytes(c, s, server_events); }
  void to_client() { move_bytes(s, c, client_events); }
  /// Until neither side has anything to send (options may take several rounds).
  void both() {
    for (int round = 0; round < 32; ++round) {
      const bool idle = c.pending_output().empty() && !c.pending_payload() && s.pending_output().empty() &&
                        !s.pending_payload();
      if (idle && round > 0) return;
      to_server();
      to_client();
    }
    NBDWIRE_FUZZ_FAIL("the handshake did not settle");
  }
};

bool is_pattern(bytes_view b, std::uint64_t offset) {
  for (std::size_t i = 0; i < b.size(); ++i)
    if (b[i] != pattern_byte(offset + i)) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::unique_ptr<std::byte[]> copy(new std::byte[size]);
  if (size != 0) std::memcpy(copy.get(), data, size);
  const bytes_view input{copy.get(), size};
  records(input);

  reader rd(input);
  server_setup st = parse_server(rd, surface::server_handshake);
  st.cfg.style = nbdwire::handshake_style::fixed_newstyle;
  st.cfg.tls = nbdwire::server_tls::off;  // a plaintext pair (STARTTLS: fuzz_*_handshake, tests/tls.cpp)
  for (auto& e : st.exports) e.tls_only = false;
  st.cfg.max_options = 64;
  st.cfg.max_option_length = 1u << 20;
  const std::uint8_t opt = rd.u8();
  nbdwire::client_config ccfg{};
  static const std::array<std::string_view, 2> fwd{"base:allocation", "qemu:dirty-bitmap:b"};
  static const std::array<std::string_view, 2> rev{"qemu:dirty-bitmap:b", "base:allocation"};
  const unsigned asked = opt >> 6;
  ccfg.meta_contexts = std::span<const std::string_view>(asked == 3 ? rev.data() : fwd.data(), asked == 3 ? 2 : asked);
  ccfg.trace = client_moves.trace();
  st.cfg.trace = server_moves.trace();
  client_moves.reset();
  server_moves.reset();
  auto p = std::make_unique<pair>(ccfg, st.cfg);
  if (p->s.state() == nbdwire::server_state::failed) return 0;
  p->to_client();  // greeting
  NBDWIRE_FUZZ_CHECK(p->client_events.size() == 1 && p->client_events[0].kind == event_kind::greeting);

  // LIST: every export comes back with its name and description.
  NBDWIRE_FUZZ_CHECK(p->c.list().has_value());
  p->both();
  std::size_t listed = 0;
  for (const auto& e : p->client_events)
    if (e.kind == event_kind::export_listed) {
      NBDWIRE_FUZZ_CHECK(listed < st.cfg.exports.size());
      const auto& x = st.cfg.exports[listed++];
      NBDWIRE_FUZZ_CHECK(nbdwire::as_chars(e.data) == x.name && nbdwire::as_chars(e.text) == x.description);
    }
  NBDWIRE_FUZZ_CHECK(listed == st.cfg.exports.size());
  NBDWIRE_FUZZ_CHECK(p->client_events.back().kind == event_kind::option_done);

  // GO for the export the input picks (or a name nobody serves).
  static const std::array<std::string_view, 4> names{"", "disk", long_name(), "absent"};
  const std::string_view name = names[opt & 3];
  const std::uint32_t info = static_cast<std::uint32_t>(opt >> 2) & nbdwire::info_request::all;
  const auto target = [&]() -> std::optional<std::size_t> {
    if (name.empty() && st.cfg.default_export != nbdwire::server_config::no_export) return st.cfg.default_export;
    for (std::size_t i = 0; i < st.cfg.exports.size(); ++i)
      if (st.cfg.exports[i].name == name) return i;
    return std::nullopt;
  }();
  p->client_events.clear();
  NBDWIRE_FUZZ_CHECK(p->c.go(name, info).has_value());
  p->both();
  const auto& ce = p->client_events;
  NBDWIRE_FUZZ_CHECK(!ce.empty());
  if (!target) {
    NBDWIRE_FUZZ_CHECK(ce.back().kind == event_kind::option_refused && ce.back().reply == nbdwire::reply_type::err_unknown);
    return 0;
  }
  const auto& x = st.cfg.exports[*target];
  for (const auto& e : ce)
    if (e.kind == event_kind::info) {
      switch (e.info) {
        case nbdwire::info_type::export_info: NBDWIRE_FUZZ_CHECK(e.export_size == x.size); break;
        case nbdwire::info_type::name: NBDWIRE_FUZZ_CHECK(nbdwire::as_chars(e.data) == x.name); break;
        case nbdwire::info_type::description: NBDWIRE_FUZZ_CHECK(nbdwire::as_chars(e.data) == x.description); break;
        case nbdwire::info_type::block_size: NBDWIRE_FUZZ_CHECK(e.block_size == x.block_size); break;
      }
    }
  if (ce.back().kind == event_kind::option_refused) {
    // Only a GO that did not ask for block sizes the export insists on may be refused.
    NBDWIRE_FUZZ_CHECK(ce.back().reply == nbdwire::reply_type::err_block_size_reqd);
    NBDWIRE_FUZZ_CHECK(!(info & nbdwire::info_request::block_size) && x.block_size.minimum > 1);
    return 0;
  }
  NBDWIRE_FUZZ_CHECK(ce.back().kind == event_kind::ready && p->server_events.back().kind == event_kind::ready);
  const auto& cn = p->c.negotiated();
  const auto& sn = p->s.negotiated();
  NBDWIRE_FUZZ_CHECK(sn.export_index == *target);
  NBDWIRE_FUZZ_CHECK(cn.export_size == sn.export_size && cn.transmission_flags == sn.transmission_flags);
  NBDWIRE_FUZZ_CHECK(cn.block_size_advertised && cn.block_size == sn.block_size);
  // Both sides settled the same reply framing and contexts; each context the client bound
  // to one of its names is the server's context of that name.
  NBDWIRE_FUZZ_CHECK(cn.structured_replies == sn.structured_replies && cn.extended_headers == sn.extended_headers);
  NBDWIRE_FUZZ_CHECK(cn.structured_replies == (st.cfg.structured_replies || st.cfg.extended_headers));
  NBDWIRE_FUZZ_CHECK(cn.extended_headers == st.cfg.extended_headers);
  NBDWIRE_FUZZ_CHECK(cn.meta_context_count == sn.meta_context_count);
  for (std::size_t i = 0; i < cn.meta_context_count; ++i) {
    NBDWIRE_FUZZ_CHECK(cn.meta_contexts[i].id == sn.meta_contexts[i].id);
    const auto q = cn.meta_contexts[i].query_index;
    NBDWIRE_FUZZ_CHECK(q < ccfg.meta_contexts.size() && cn.meta_contexts[i].id < st.cfg.meta_contexts.size());
    NBDWIRE_FUZZ_CHECK(st.cfg.meta_contexts[cn.meta_contexts[i].id] == ccfg.meta_contexts[q]);
  }
  std::size_t expected_contexts = 0;
  if (cn.structured_replies)
    for (auto q : ccfg.meta_contexts)
      expected_contexts += std::count(st.cfg.meta_contexts.begin(), st.cfg.meta_contexts.end(), q) != 0;
  NBDWIRE_FUZZ_CHECK(cn.meta_context_count == expected_contexts);

  // Requests: what the client accepts to send, the server receives unchanged and accepts.
  for (int op = 0; op < 64 && !rd.rest().empty(); ++op) {
    const auto cmd = static_cast<nbdwire::command>(rd.u8());
    const std::uint16_t flags = rd.u16();
    const std::uint64_t offset = rd.u64();
    const std::uint32_t length = rd.u32() % (64 * 1024 + 1);  // the pair sends payloads in full
    const auto error = static_cast<nbdwire::nbd_error>(rd.u8() % 3 == 0 ? 5 : 0);
    const auto cookie = p->c.submit(cmd, flags, offset, length);
    if (!cookie) continue;
    p->server_events.clear();
    p->client_events.clear();
    p->to_server();
    const auto& se = p->server_events;
    NBDWIRE_FUZZ_CHECK(!se.empty() && se[0].kind == event_kind::request);
    const nbdwire::request want{*cookie, static_cast<std::uint16_t>(cmd), flags, offset, length};
    NBDWIRE_FUZZ_CHECK(se[0].req == want);
    std::uint64_t got = 0;
    for (std::size_t i = 1; i < se.size(); ++i) {
      NBDWIRE_FUZZ_CHECK(se[i].kind == event_kind::payload && se[i].offset == offset + got);
      NBDWIRE_FUZZ_CHECK(is_pattern(se[i].data, se[i].offset));
      got += se[i].data.size();
    }
    NBDWIRE_FUZZ_CHECK(got == want.payload_length());
    // BLOCK_STATUS success: a status chunk per context, the last one ending the reply.
    std::vector<std::vector<nbdwire::block_extent>> sent;
    if (cmd == nbdwire::command::block_status && error == nbdwire::nbd_error::ok) {
      const std::array<nbdwire::block_extent, 3> ex{{
          {std::max<std::uint64_t>(1, length / 3), flags & 3u},
          {std::max<std::uint64_t>(1, length / 3), offset & 3u},
          {std::max<std::uint64_t>(1, length), 2},
      }};
      for (std::size_t i = 0; i < sn.meta_context_count; ++i) {
        const auto n = p->s.reply_block_status(se[0].req, sn.meta_contexts[i].id, ex, i + 1 == sn.meta_context_count);
        NBDWIRE_FUZZ_CHECK(n.has_value() && *n >= 1 && *n <= ex.size());
        sent.emplace_back(ex.begin(), ex.begin() + static_cast<std::ptrdiff_t>(*n));
      }
    } else {
      NBDWIRE_FUZZ_CHECK(p->s.reply(se[0].req, error).has_value());
    }
    p->to_client();
    NBDWIRE_FUZZ_CHECK(!ce.empty() && ce.back().kind == event_kind::reply);
    NBDWIRE_FUZZ_CHECK(ce.back().req == want && ce.back().status == error);
    got = 0;
    std::size_t ctx = 0, ext_i = 0;
    std::uint64_t ext_off = offset;
    for (std::size_t i = 0; i + 1 < ce.size(); ++i) {
      if (ce[i].kind == event_kind::extent) {
        // In the order sent: context by context, consecutive from the request offset.
        if (ctx < sent.size() && ext_i == sent[ctx].size()) ++ctx, ext_i = 0, ext_off = offset;
        NBDWIRE_FUZZ_CHECK(ctx < sent.size() && ext_i < sent[ctx].size());
        const auto& sx = sent[ctx][ext_i++];
        const std::uint64_t len = (flags & nbdwire::command_flag::req_one) ? std::min<std::uint64_t>(sx.length, length) : sx.length;
        NBDWIRE_FUZZ_CHECK(ce[i].context_id == sn.meta_contexts[ctx].id && ce[i].offset == ext_off &&
                           ce[i].length == len && ce[i].extent_flags == sx.flags);
        ext_off += len;
        continue;
      }
      if (ce[i].kind == event_kind::error_chunk) {  // structured replies carry errors as chunks
        NBDWIRE_FUZZ_CHECK(cn.structured_replies && error != nbdwire::nbd_error::ok && ce[i].req.cookie == *cookie);
        continue;
      }
      NBDWIRE_FUZZ_CHECK(ce[i].kind == event_kind::payload && ce[i].offset == offset + got);
      NBDWIRE_FUZZ_CHECK(is_pattern(ce[i].data, ce[i].offset));
      got += ce[i].data.size();
    }
    if (!sent.empty()) NBDWIRE_FUZZ_CHECK(ctx + 1 == sent.size() && ext_i == sent.back().size());
    const bool with_data = cmd == nbdwire::command::read && error == nbdwire::nbd_error::ok;
    NBDWIRE_FUZZ_CHECK(got == (with_data ? length : 0));
    NBDWIRE_FUZZ_CHECK(p->c.in_flight() == 0 && p->s.outstanding() == 0);
    p->keep.clear();
  }
  // DISC ends both sides cleanly.
  NBDWIRE_FUZZ_CHECK(p->c.disconnect().has_value());
  p->server_events.clear();
  p->to_server();
  NBDWIRE_FUZZ_CHECK(p->server_events.size() == 1 && p->server_events[0].kind == event_kind::disconnected);
  NBDWIRE_FUZZ_CHECK(p->c.on_eof().kind == event_kind::disconnected);
  return 0;
}
