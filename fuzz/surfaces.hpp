// SPDX-License-Identifier: MIT
// Fuzz support: the attack surfaces. Each surface turns one input into a configured machine,
// an actor that plays the caller, and the peer's byte stream; run_surface() drives it over
// given cuts and returns the record, fuzz_surface() adds the split comparisons.
//
// Input layouts (every field reads as zero past the end of the input):
//   server_handshake  cfg[8]                                       client bytes
//   server_tx         cfg[8]  (canned handshake, then)             client requests
//   legacy_server     cfg[8]  (1997 framing)                       client requests
//   client_handshake  ccfg[1] n[1] option actions[n]               server bytes
//   client_tx         ccfg[1] size[8] tflags[2] bs[1] ids[k×4] n[1] req[n×15]  server replies
//   legacy_client     ccfg[1] size[8] tflags[2] bs[1] n[1] req[n×15]  server replies (1997)
// Server cfg: [0] style/bits  [1] exports/default  [2] max_options  [3] max_option_length
//             [4..5] transmission flags  [6] size index  [7] block-size index / reply policy
// Server cfg[0] bits: 0 style, 1/6/7 modern protocol (server_handshake: 1 no structured
//   replies, 6 no extended headers; server_tx: the canned client asks for 1 structured
//   replies, 6 extended headers, 7 SET_META_CONTEXT of every offered context), 2 no_zeroes
//   off, 3 on_eof at the end, 4 direct payload, 5 begin_shutdown (at transmission; in
//   server_handshake after the second option answered). cfg[7] bits 6-7: the
//   contexts the server offers (none, base:allocation, + qemu:dirty-bitmap:b, reversed).
// Client ccfg bits: 0 no_zeroes, 1 fallback to EXPORT_NAME, 2 on_eof at the end, 3 read
//   payload through incoming_payload(); client_handshake: 4 ask for structured replies,
//   5 extended headers; client_tx: bits 4-5 how the canned handshake ends (0 simple replies,
//   1 structured replies, 2 extended headers, 3 extended headers refused then structured
//   replies), bits 6-7 k = how many contexts are asked for (0-2; 3 reads as 2), whose ids
//   the server answers with (ids[k], any value, 0 included).
// A request action: command[1] (0xff: disconnect) flags[2] offset[8] length[4].
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "driver.hpp"

namespace nbdwire_fuzz {

enum class surface : std::uint8_t {
  server_handshake,
  server_tx,
  legacy_server,
  client_handshake,
  client_tx,
  legacy_client,
};
inline constexpr std::size_t surface_count = 6;

// ---- run variants -----------------------------------------------------------------------------

/// Transmission surfaces (server_tx after its canned GO, client_tx): when set, the machine the
/// stream is fed to is not the one that did the canned handshake but one built from its
/// negotiated state (the constructors taking `negotiated`, as after a kernel handover), which
/// must behave the same. Set for a run with scoped_mode (driver.hpp).
inline bool start_from_handover = false;

/// Server surfaces: the drain limit (driver.hpp, drain_limit) of server runs; client runs
/// always send everything (a client's calls fail when its outbox is full). Set by
/// scoped_mode (driver.hpp).
inline std::size_t server_limit = 0;

inline bool same_negotiated(const nbdwire::negotiated& a, const nbdwire::negotiated& b) {
  return a.style == b.style && a.export_size == b.export_size && a.transmission_flags == b.transmission_flags &&
         a.block_size == b.block_size && a.block_size_advertised == b.block_size_advertised &&
         a.structured_replies == b.structured_replies && a.extended_headers == b.extended_headers &&
         a.meta_contexts == b.meta_contexts && a.meta_context_count == b.meta_context_count &&
         a.export_index == b.export_index && a.tls == b.tls;
}

// ---- shared tables ----------------------------------------------------------------------------

inline const std::string& long_name() {
  static const std::string s(nbdwire::max_string, 'n');
  return s;
}
inline const std::string& too_long_name() {
  static const std::string s(nbdwire::max_string + 1, 'n');
  return s;
}
inline const std::string& long_text() {
  static const std::string s(nbdwire::max_string, 'd');
  return s;
}

inline std::uint64_t size_from(std::uint8_t i) noexcept {
  static constexpr std::array<std::uint64_t, 8> sizes{
      0, 512, 1u << 20, 1ull << 30, 0xffffffffu, 1ull << 40, ~std::uint64_t{0}, 4096 + 17};
  return sizes[i % sizes.size()];
}

inline nbdwire::block_size_constraints block_size_from(std::uint8_t i) noexcept {
  static constexpr std::array<nbdwire::block_size_constraints, 6> bs{{
      {1, 4096, 32u << 20},
      {512, 4096, 1u << 20},
      {4096, 4096, 4096},
      {1, 512, 0xffffffffu},
      {65536, 65536, 1u << 20},
      {1, 512, 65536},
  }};
  return bs[i % bs.size()];
}

/// Commands whose offset and length name a range of the export.
inline bool ranged(nbdwire::command c) {
  using nbdwire::command;
  return c == command::read || c == command::write || c == command::trim || c == command::cache ||
         c == command::write_zeroes || c == command::block_status;
}

/// The client's reading of the request rules, written out again independently of
/// detail/rules.hpp: a request the server hands to the caller must pass it.
inline bool server_may_accept(const nbdwire::request& r, const nbdwire::negotiated& n) {
  using nbdwire::command;
  namespace tf = nbdwire::transmission_flag;
  if (r.flags & ~nbdwire::command_flag::known) return false;
  const bool in_range = ranged(r.cmd());
  const bool modifies = r.cmd() == command::write || r.cmd() == command::trim ||
                        r.cmd() == command::write_zeroes || r.cmd() == command::resize;
  switch (r.cmd()) {
    case command::read: case command::write: case command::cache: break;
    case command::flush: if (!n.has(tf::send_flush) || r.offset || r.length) return false; break;
    case command::trim: if (!n.has(tf::send_trim)) return false; break;
    case command::write_zeroes: if (!n.has(tf::send_write_zeroes)) return false; break;
    case command::resize: if (!n.has(tf::send_resize)) return false; break;
    case command::block_status: if (!n.structured_replies || n.meta_context_count == 0) return false; break;
    default: return false;  // DISC is not a request
  }
  if (modifies && n.read_only()) return false;
  if (in_range && !nbdwire::range_within(r.offset, r.length, n.export_size)) return false;
  if ((r.cmd() == command::read || r.cmd() == command::write) && n.block_size.maximum != 0xffffffffu &&
      r.length > n.block_size.maximum)
    return false;
  if (in_range && n.block_size.minimum > 1 && (r.offset % n.block_size.minimum || r.length % n.block_size.minimum))
    return false;
  if (n.style == nbdwire::handshake_style::legacy_1997 && r.cmd() != command::read && r.cmd() != command::write)
    return false;
  return true;
}

/// What a canned fixed-newstyle server settles with a client: the answers to the client's
/// plan (EXTENDED_HEADERS, STRUCTURED_REPLY, SET_META_CONTEXT), then GO.
struct canned_server {
  std::uint8_t mode = 0;  ///< 0 simple, 1 structured, 2 extended, 3 extended refused then structured
  std::vector<std::pair<std::uint32_t, std::string_view>> contexts;  ///< answered to SET_META_CONTEXT
  std::uint64_t size = 0;
  std::uint16_t tflags = 0;
  nbdwire::block_size_constraints bs{};
};

/// The server's side of the canned handshake, as bytes.
inline bytes canned_server_stream(const canned_server& cs) {
  bytes in;
  auto put = [&in](auto rec) {
    const auto b = nbdwire::encode(rec);
    in.insert(in.end(), b.begin(), b.end());
  };
  using nbdwire::option;
  using nbdwire::reply_type;
  auto opt = [](option o) { return static_cast<std::uint32_t>(o); };
  put(nbdwire::make_newstyle_greeting(nbdwire::handshake_flag::fixed_newstyle | nbdwire::handshake_flag::no_zeroes));
  if (cs.mode >= 2)
    put(nbdwire::make_option_reply_header(opt(option::extended_headers),
                                          cs.mode == 2 ? reply_type::ack : reply_type::err_unsup, 0));
  if (cs.mode == 1 || cs.mode == 3)
    put(nbdwire::make_option_reply_header(opt(option::structured_reply), reply_type::ack, 0));
  if (cs.mode != 0 && !cs.contexts.empty()) {
    for (const auto& [id, name] : cs.contexts) {
      put(nbdwire::make_option_reply_header(opt(option::set_meta_context), reply_type::meta_context,
                                            static_cast<std::uint32_t>(4 + name.size())));
      std::array<std::byte, 4> b{};
      nbdwire::store_be<std::uint32_t>(b.data(), id);
      in.insert(in.end(), b.begin(), b.end());
      for (char ch : name) in.push_back(static_cast<std::byte>(ch));
    }
    put(nbdwire::make_option_reply_header(opt(option::set_meta_context), reply_type::ack, 0));
  }
  const std::uint32_t go = opt(option::go);
  put(nbdwire::make_option_reply_header(go, reply_type::info, sizeof(nbdwire::info_export_payload)));
  put(nbdwire::make_info_export(cs.size, cs.tflags));
  put(nbdwire::make_option_reply_header(go, reply_type::info, sizeof(nbdwire::info_block_size_payload)));
  put(nbdwire::make_info_block_size(cs.bs.minimum, cs.bs.preferred, cs.bs.maximum));
  put(nbdwire::make_option_reply_header(go, reply_type::ack, 0));
  return in;
}

/// Brings a client (configured to ask what `cs` answers) to transmission through GO against
/// the canned server, and checks it settled what the server said.
inline void canned_client_handshake(nbdwire::client& m, const canned_server& cs, bytes& out) {
  const bytes in = canned_server_stream(cs);
  bytes_view rest{in};
  bool ready = false;
  std::size_t contexts = 0;
  for (int guard = 0; guard < 64 && !ready; ++guard) {
    const auto r = m.receive(rest);
    rest = rest.subspan(r.consumed);
    NBDWIRE_FUZZ_CHECK(r.ev.kind != event_kind::failed);
    if (r.ev.kind == event_kind::greeting) NBDWIRE_FUZZ_CHECK(m.go("", nbdwire::info_request::all).has_value());
    if (r.ev.kind == event_kind::meta_context) {
      NBDWIRE_FUZZ_CHECK(contexts < cs.contexts.size() && r.ev.context_id == cs.contexts[contexts].first);
      ++contexts;
    }
    if (r.ev.kind == event_kind::ready) ready = true;
    drain(m, out);
  }
  NBDWIRE_FUZZ_CHECK(ready && rest.empty() && m.state() == nbdwire::client_state::transmission);
  const auto& n = m.negotiated();
  NBDWIRE_FUZZ_CHECK(n.structured_replies == (cs.mode != 0));
  NBDWIRE_FUZZ_CHECK(n.extended_headers == (cs.mode == 2));
  NBDWIRE_FUZZ_CHECK(n.meta_context_count == (cs.mode != 0 ? cs.contexts.size() : 0));
  for (std::size_t i = 0; i < n.meta_context_count; ++i) NBDWIRE_FUZZ_CHECK(n.meta_contexts[i].id == cs.contexts[i].first);
}

/// A strict client in the state the server under test negotiated: each reply the server
/// produces is fed to it, cookies rewritten to the client's own, and the client must take
/// it without failing and complete its twin request with the status the server was given.
class reply_oracle {
 public:
  explicit reply_oracle(const nbdwire::negotiated& n) {
    static const std::array<std::string_view, nbdwire::max_meta_contexts> names{};
    cs_.mode = n.extended_headers ? 2 : n.structured_replies ? 1 : 0;
    for (std::size_t i = 0; i < n.meta_context_count; ++i) cs_.contexts.emplace_back(n.meta_contexts[i].id, "ctx");
    cs_.size = n.export_size;
    cs_.tflags = n.transmission_flags;
    cs_.bs = n.block_size;
    cfg_.request_structured_replies = cs_.mode != 0;
    cfg_.request_extended_headers = cs_.mode == 2;
    cfg_.meta_contexts = std::span<const std::string_view>(names.data(), cs_.contexts.size());
    client_ = std::make_unique<nbdwire::client>(cfg_);
    bytes scratch;
    canned_client_handshake(*client_, cs_, scratch);
  }

  /// The client's twin of request `r`; false when the client would not send it (the server
  /// reads requests leniently) or its READ data would not be shown in full.
  bool begin(const nbdwire::request& r) {
    active_ = false;
    if (r.cmd() == nbdwire::command::read && r.length > 65536) return false;
    const auto c = client_->submit(r.cmd(), static_cast<std::uint16_t>(r.flags & ~nbdwire::command_flag::payload_len),
                                   r.offset, r.length);
    if (!c) return false;
    bytes scratch;
    drain(*client_, scratch);
    cookie_ = *c;
    active_ = true;
    return true;
  }

  void check(bytes_view reply, const nbdwire::request& r, nbdwire::nbd_error status) {
    if (!active_) return;
    active_ = false;
    bytes b(reply.begin(), reply.end());
    const bool structured = client_->negotiated().structured_replies;
    std::size_t at = 0;
    while (at < b.size()) {
      NBDWIRE_FUZZ_CHECK(b.size() - at >= 16);
      const std::uint32_t magic = nbdwire::load_be<std::uint32_t>(b.data() + at);
      nbdwire::store_be<std::uint64_t>(b.data() + at + 8, cookie_);
      if (magic == nbdwire::magic::simple_reply) {
        const bool data = !structured && r.cmd() == nbdwire::command::read &&
                          nbdwire::load_be<std::uint32_t>(b.data() + at + 4) == 0;
        at += 16 + (data ? r.length : 0);
      } else if (magic == nbdwire::magic::structured_reply) {
        NBDWIRE_FUZZ_CHECK(b.size() - at >= 20);
        at += 20 + nbdwire::load_be<std::uint32_t>(b.data() + at + 16);
      } else if (magic == nbdwire::magic::extended_reply) {
        NBDWIRE_FUZZ_CHECK(b.size() - at >= 32);
        const std::uint64_t len = nbdwire::load_be<std::uint64_t>(b.data() + at + 24);
        NBDWIRE_FUZZ_CHECK(len <= b.size());
        at += 32 + len;
      } else {
        NBDWIRE_FUZZ_FAIL("a server reply starts with a reply magic");
      }
    }
    NBDWIRE_FUZZ_CHECK(at == b.size());
    bytes_view rest{b};
    bool done = false;
    for (int guard = 0; guard < 100000; ++guard) {
      const auto e = client_->receive(rest);
      rest = rest.subspan(e.consumed);
      if (e.ev.kind == event_kind::failed) {
        std::fprintf(stderr, "client refused the server's reply to command %u (flags %#x, offset %llu, length %llu): %s\n",
                     static_cast<unsigned>(r.type), static_cast<unsigned>(r.flags),
                     static_cast<unsigned long long>(r.offset), static_cast<unsigned long long>(r.length),
                     std::string(nbdwire::to_string(e.ev.error)).c_str());
        NBDWIRE_FUZZ_FAIL("a strict client accepts every reply the server produces");
      }
      if (e.ev.kind == event_kind::reply) {
        NBDWIRE_FUZZ_CHECK(!done && e.ev.req.cookie == cookie_ && e.ev.status == status);
        done = true;
      } else if (e.ev.kind != event_kind::need_more) {
        NBDWIRE_FUZZ_CHECK(e.ev.req.cookie == cookie_ && !done);
      }
      if (e.ev.kind == event_kind::need_more && rest.empty()) break;
    }
    NBDWIRE_FUZZ_CHECK(done && rest.empty() && client_->in_flight() == 0);
  }

 private:
  canned_server cs_;
  nbdwire::client_config cfg_{};
  std::unique_ptr<nbdwire::client> client_;
  std::uint64_t cookie_ = 0;
  bool active_ = false;
};

// ---- the server side ------------------------------------------------------------------------

struct server_setup {
  std::array<nbdwire::export_config, 3> exports{};
  nbdwire::server_config cfg{};
  bool eof_at_end = false, direct = false, shutdown = false, canned = false;
  std::uint8_t policy = 0;  ///< bits 0-1 defer depth, bit 2 answer with errors
  // server_tx: what the canned client asks for before GO
  bool ask_sr = false, ask_ext = false, ask_meta = false;
};

/// Context sets a server offers (cfg[7] bits 6-7); a context's id is its index.
inline std::span<const std::string_view> offered_contexts(std::uint8_t i) {
  static const std::array<std::string_view, 2> fwd{"base:allocation", "qemu:dirty-bitmap:b"};
  static const std::array<std::string_view, 2> rev{"qemu:dirty-bitmap:b", "base:allocation"};
  switch (i & 3) {
    case 1: return {fwd.data(), 1};
    case 2: return {fwd.data(), 2};
    case 3: return {rev.data(), 2};
    default: return {};
  }
}

inline server_setup parse_server(reader& rd, surface s) {
  server_setup st;
  const std::uint8_t b0 = rd.u8(), b1 = rd.u8(), b2 = rd.u8(), b3 = rd.u8();
  const std::uint16_t tflags = rd.u16();
  const std::uint8_t size_i = rd.u8(), b7 = rd.u8();
  using hs = nbdwire::handshake_style;
  st.cfg.no_zeroes = (b0 & 4) == 0;
  st.eof_at_end = b0 & 8;
  st.direct = b0 & 16;
  st.shutdown = b0 & 32;  // begin_shutdown() once transmission starts
  st.policy = static_cast<std::uint8_t>((b7 >> 3) & 7);
  std::size_t count = 1 + (b1 & 3) % 3;
  if (s != surface::legacy_server) st.cfg.meta_contexts = offered_contexts(static_cast<std::uint8_t>(b7 >> 6));
  if (s == surface::server_handshake) {
    st.cfg.structured_replies = (b0 & 2) == 0;
    st.cfg.extended_headers = (b0 & 64) == 0;
  }
  switch (s) {
    case surface::server_handshake: st.cfg.style = (b0 & 1) ? hs::newstyle : hs::fixed_newstyle; break;
    case surface::server_tx:
      // Transmission after a canned GO, or after the oldstyle greeting.
      st.cfg.style = (b0 & 1) ? hs::oldstyle : hs::fixed_newstyle;
      st.canned = st.cfg.style == hs::fixed_newstyle;
      st.ask_sr = b0 & 2;
      st.ask_ext = b0 & 64;
      st.ask_meta = b0 & 128;
      break;
    default: st.cfg.style = hs::legacy_1997; break;
  }
  if (st.cfg.style == hs::oldstyle || st.cfg.style == hs::legacy_1997) count = 1;
  // TLS policy (fixed newstyle handshakes only): b0 bit 7 and b3 bit 6; b3 bit 7 marks the
  // first export TLS-only under SELECTIVETLS.
  if (s == surface::server_handshake && st.cfg.style == hs::fixed_newstyle) {
    static constexpr std::array<nbdwire::server_tls, 4> modes{nbdwire::server_tls::off, nbdwire::server_tls::optional,
                                                              nbdwire::server_tls::required, nbdwire::server_tls::optional};
    st.cfg.tls = modes[((b0 >> 7) & 1) | ((b3 >> 5) & 2)];
    st.exports[0].tls_only = st.cfg.tls == nbdwire::server_tls::optional && (b3 & 128);
  }
  static const std::array<std::string_view, 3> names{"", "disk", long_name()};
  static const std::array<std::string_view, 3> texts{"", "a test export", long_text()};
  for (std::size_t i = 0; i < count; ++i) {
    auto& e = st.exports[i];
    e.name = names[(i + (b1 >> 2)) % names.size()];
    e.description = texts[(i + (b1 >> 4)) % texts.size()];
    e.size = size_from(static_cast<std::uint8_t>(size_i + i));
    if (st.cfg.style == hs::legacy_1997) e.size &= 0xffffffffu;
    e.transmission_flags = static_cast<std::uint16_t>(tflags >> i);
    e.block_size = block_size_from(static_cast<std::uint8_t>(b7 & 7));
  }
  st.cfg.exports = std::span<const nbdwire::export_config>(st.exports.data(), count);
  const std::size_t def = (b1 >> 6) & 3;
  st.cfg.default_export = st.canned ? 0 : def == 3 ? nbdwire::server_config::no_export : def % count;
  st.cfg.max_options = b2 == 0 ? 64 : b2 % 80;
  static constexpr std::array<std::uint32_t, 6> lengths{1u << 20, 0, 16, 4096, 4102, 0xffffffffu};
  st.cfg.max_option_length = lengths[b3 % lengths.size()];
  if (st.canned) {  // room for the canned options
    st.cfg.max_options = std::max<std::uint32_t>(st.cfg.max_options, 4);
    st.cfg.max_option_length = std::max<std::uint32_t>(st.cfg.max_option_length, 64);
  }
  return st;
}

class server_actor {
 public:
  explicit server_actor(const server_setup& st) : st_(st) {}

  void start(nbdwire::server& m, run_log& log) {
    if (m.state() == nbdwire::server_state::transmission) on_transmission(m);
    (void)log;
  }

  std::size_t take_direct(nbdwire::server& m, bytes_view chunk, run_log& log) {
    if (!st_.direct || chunk.empty()) return 0;
    const auto p = m.incoming_payload();
    if (!p) return 0;
    NBDWIRE_FUZZ_CHECK(p->cookie == cur_.cookie && p->offset == next_ && p->length == left_ && p->length != 0);
    NBDWIRE_FUZZ_CHECK(p->tag == expected_tag());
    NBDWIRE_FUZZ_CHECK(m.consume_incoming_payload(p->length + 1).error() == nbdwire::errc::payload_overrun);
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), p->length));
    nbdwire::event e{.kind = event_kind::payload, .req = cur_, .offset = p->offset, .data = chunk.first(n)};
    append(log, e);
    NBDWIRE_FUZZ_CHECK(m.consume_incoming_payload(n).has_value());
    next_ += n;
    left_ -= n;
    return n;
  }

  void on_need_more(nbdwire::server&, run_log&) {}

  void on_event(nbdwire::server& m, const nbdwire::event& e, run_log& log) {
    switch (e.kind) {
      case event_kind::ready:
        NBDWIRE_FUZZ_CHECK(m.state() == nbdwire::server_state::transmission);
        NBDWIRE_FUZZ_CHECK(m.negotiated().export_index < st_.cfg.exports.size());
        on_transmission(m);
        break;
      case event_kind::request: {
        NBDWIRE_FUZZ_CHECK(left_ == 0);  // the previous WRITE's data came in full
        NBDWIRE_FUZZ_CHECK(server_may_accept(e.req, m.negotiated()));
        NBDWIRE_FUZZ_CHECK(!m.shutting_down());
        cur_ = e.req;
        next_ = e.req.offset;
        left_ = e.req.payload_length();
        // A tag set now comes back with every later event about the request.
        // (A request identical to one awaiting its reply shares that one's slot, and its tag.)
        const bool twin = std::find(deferred_.begin(), deferred_.end(), e.req) != deferred_.end();
        NBDWIRE_FUZZ_CHECK(m.tag_of(e.req) == (twin ? tag_for(e.req) : 0));
        NBDWIRE_FUZZ_CHECK(m.set_tag(e.req, tag_for(e.req)).has_value() && m.tag_of(e.req) == tag_for(e.req));
        if (m.negotiated().structured_replies) NBDWIRE_FUZZ_CHECK(m.chunk_room(e.req) <= nbdwire::outbox_size);
        deferred_.push_back(e.req);
        NBDWIRE_FUZZ_CHECK(m.outstanding() == deferred_.size());
        if (deferred_.size() > static_cast<std::size_t>(st_.policy & 3)) answer_all(m, log);
        break;
      }
      case event_kind::request_refused:
        NBDWIRE_FUZZ_CHECK(left_ == 0);
        NBDWIRE_FUZZ_CHECK(e.status != nbdwire::nbd_error::ok);
        NBDWIRE_FUZZ_CHECK(m.shutting_down() == (e.status == nbdwire::nbd_error::eshutdown));
        break;
      case event_kind::payload:
        NBDWIRE_FUZZ_CHECK(e.req.cookie == cur_.cookie && e.offset == next_ && e.data.size() <= left_);
        NBDWIRE_FUZZ_CHECK(e.tag == expected_tag());
        next_ += e.data.size();
        left_ -= e.data.size();
        break;
      case event_kind::blocked:
        answer_all(m, log);
        break;
      case event_kind::disconnected:
      case event_kind::closed:
      case event_kind::failed:
        break;
      case event_kind::option_answered:
        NBDWIRE_FUZZ_CHECK(m.state() == nbdwire::server_state::negotiating);
        // server_handshake with cfg[0] bit 5: the server begins to shut down after answering
        // two options (later options get ERR_SHUTDOWN, EXPORT_NAME a close).
        if (st_.shutdown && !st_.canned && ++answered_ == 2) m.begin_shutdown();
        if (m.shutting_down() && e.option != static_cast<std::uint32_t>(nbdwire::option::abort) && answered_ > 2)
          NBDWIRE_FUZZ_CHECK(e.reply == nbdwire::reply_type::err_shutdown);
        // "There is no ERR_TLS_REQD in NOTLS mode or once TLS is up."
        if (e.reply == nbdwire::reply_type::err_tls_reqd)
          NBDWIRE_FUZZ_CHECK(st_.cfg.tls != nbdwire::server_tls::off && !m.tls_active());
        break;
      case event_kind::start_tls: {
        check_tls_twin(m);  // until tls_started(), a copy fed any byte fails
        // The TLS layer as identity (see the client side).
        NBDWIRE_FUZZ_CHECK(st_.cfg.tls != nbdwire::server_tls::off && !m.tls_active());
        NBDWIRE_FUZZ_CHECK(m.tls_started().has_value());
        NBDWIRE_FUZZ_CHECK(m.tls_started().error() == nbdwire::errc::tls_not_starting);
        break;
      }
      default:
        NBDWIRE_FUZZ_FAIL("a server reports only server events");
    }
  }

  void on_closed(nbdwire::server& m, run_log& log) {
    if (m.state() == nbdwire::server_state::failed) {
      if (!deferred_.empty()) NBDWIRE_FUZZ_CHECK(m.reply(deferred_.front()).error() == nbdwire::errc::not_in_transmission);
      return;
    }
    // After DISC or a close, the requests in flight are still answered.
    answer_all(m, log);
    NBDWIRE_FUZZ_CHECK(m.reply(nbdwire::request{}).error() == nbdwire::errc::unknown_request);
    NBDWIRE_FUZZ_CHECK(m.drained() == (m.pending_output().empty() && !m.pending_payload()));
    flush(m, log.output);
    NBDWIRE_FUZZ_CHECK(m.drained());
  }

 private:
  static std::uint64_t tag_for(const nbdwire::request& r) noexcept { return r.cookie ^ 0x5e5e000000000001u; }
  /// The tag WRITE data of the current request carries: its tag while it awaits its reply,
  /// 0 once answered (the harness may answer a WRITE before its data has arrived).
  [[nodiscard]] std::uint64_t expected_tag() const noexcept {
    const bool waiting = std::any_of(deferred_.begin(), deferred_.end(),
                                     [this](const nbdwire::request& r) { return r.cookie == cur_.cookie; });
    return waiting ? tag_for(cur_) : 0;
  }

  void on_transmission(nbdwire::server& m) {
    if (st_.shutdown) m.begin_shutdown();
    if (m.negotiated().style != nbdwire::handshake_style::legacy_1997)
      oracle_ = std::make_unique<reply_oracle>(m.negotiated());
  }

  /// One request's whole reply. With structured replies the request's cookie picks how it
  /// goes out (bits 2-3): reply(), or chunks (data and holes, error chunks with and without
  /// offset, block status per context, a closing NONE chunk).
  /// Calls a caller must not make for request `r` (awaiting its reply): each is refused with
  /// a caller_misuse or limit_exceeded errc, is not fatal, and changes nothing.
  static void misuse(nbdwire::server& m, const nbdwire::request& r) {
    using nbdwire::command;
    using nbdwire::nbd_error;
    const std::size_t out = m.pending_output().size(), outstanding = m.outstanding();
    const auto payload = m.pending_payload();
    const auto state = m.state();
    const auto refused = [&](nbdwire::result<void> res) {
      NBDWIRE_FUZZ_CHECK(!res.has_value());
      check_errc_named(res.error());
      const auto c = nbdwire::category(res.error());
      NBDWIRE_FUZZ_CHECK(c == nbdwire::error_category::caller_misuse || c == nbdwire::error_category::limit_exceeded);
      NBDWIRE_FUZZ_CHECK(!nbdwire::is_fatal(res.error()) && m.error() == nbdwire::errc::ok && m.state() == state);
      NBDWIRE_FUZZ_CHECK(m.pending_output().size() == out && m.outstanding() == outstanding && m.pending_payload() == payload);
    };
    const std::uint64_t end = r.offset + r.length;  // ranged requests are inside the export
    // Chunks outside the request's range, of no length, or of another command.
    refused(m.reply_read_data(r, r.offset, 0, true));
    refused(m.reply_read_hole(r, end, 1, true));
    if (r.offset != 0) refused(m.reply_read_data(r, r.offset - 1, 1, true));
    // Block status in a context never negotiated, or with no extents.
    const std::array<nbdwire::block_extent, 1> one{{{1, 0}}};
    const auto not_negotiated = [&m] {
      std::uint32_t id = 0x7fff0000u;
      while (m.negotiated().has_meta_context(id)) ++id;
      return id;
    }();
    const auto as_void = [](const nbdwire::result<std::size_t>& res) {
      return res.has_value() ? nbdwire::result<void>{} : nbdwire::result<void>{res.error()};
    };
    refused(as_void(m.reply_block_status(r, not_negotiated, one, true)));
    refused(as_void(m.reply_block_status(r, m.negotiated().meta_contexts[0].id, {}, true)));
    // An error chunk that says no error, or whose offset lies outside the request.
    refused(m.reply_error_chunk(r, nbd_error::ok, "", std::nullopt, true));
    refused(m.reply_error_chunk(r, nbd_error::eio, "", end, true));
    // A message over max_string; a successful BLOCK_STATUS without chunks.
    refused(m.reply(r, nbd_error::eio, too_long_name()));
    if (r.cmd() == command::block_status) refused(m.reply(r, nbd_error::ok));
    // A request nobody sent.
    nbdwire::request bogus = r;
    bogus.type = 0xffff;
    refused(m.reply(bogus, nbd_error::ok));
    refused(m.set_tag(bogus, 1));
    NBDWIRE_FUZZ_CHECK(!m.tag_of(bogus) && m.chunk_room(bogus) == 0);
  }

  void answer(nbdwire::server& m, const nbdwire::request& r, nbdwire::nbd_error status, run_log& log) {
    using nbdwire::command;
    drain(m, log.output);
    misuse(m, r);
    const std::size_t start = log.output.size();
    // A limited drain leaves earlier replies queued ahead of this one: the oracle, which reads
    // one reply's bytes, checks the runs that send everything (the whole run is one of them,
    // and a limited run must send the same bytes as the whole run).
    const bool queue_empty = m.pending_output().empty() && !m.pending_payload();
    const bool checked = drain_limit == 0 && queue_empty && oracle_ && oracle_->begin(r);
    const auto& n = m.negotiated();
    const unsigned style = static_cast<unsigned>((r.cookie >> 2) & 3);
    // `call` makes one reply call. A non-final chunk that does not fit behind the bytes a
    // limited drain left is refused with outbox_full: the caller sends what is queued and
    // calls again, which must succeed.
    const auto ok = [&](auto call) {
      auto res = call();
      if (!res && res.error() == nbdwire::errc::outbox_full && drain_limit != 0) {
        NBDWIRE_FUZZ_CHECK(!m.pending_output().empty() || m.pending_payload());
        flush(m, log.output);
        res = call();
      }
      if (!res) {
        std::fprintf(stderr, "server refused to answer command %u (flags %#x, offset %llu, length %llu, style %u): %s\n",
                     static_cast<unsigned>(r.type), static_cast<unsigned>(r.flags),
                     static_cast<unsigned long long>(r.offset), static_cast<unsigned long long>(r.length), style,
                     std::string(nbdwire::to_string(res.error())).c_str());
        NBDWIRE_FUZZ_FAIL("the server answers every request it reported");
      }
      drain(m, log.output);
    };
    const bool ranged_req = ranged(r.cmd()) && r.length != 0;
    // A successful BLOCK_STATUS needs a status chunk per context (reply() would send none).
    const bool status_chunks = r.cmd() == command::block_status && status == nbdwire::nbd_error::ok;
    if (!n.structured_replies || (style == 0 && !status_chunks)) {
      const bool df_data = n.structured_replies && r.cmd() == command::read && r.length != 0 &&
                           (r.flags & nbdwire::command_flag::df) != 0 && status == nbdwire::nbd_error::ok;
      const auto res = m.reply(r, status);
      if (df_data && res && queue_empty) {
        // DF: the data goes out as one chunk, which ends the reply (or the reply is an error).
        const bytes_view o = m.pending_output();
        NBDWIRE_FUZZ_CHECK(o.size() >= 20);
        const bool error = (nbdwire::load_be<std::uint16_t>(o.data() + 6) & 0x8000) != 0;
        NBDWIRE_FUZZ_CHECK(error || (nbdwire::load_be<std::uint16_t>(o.data() + 4) & nbdwire::reply_flag::done) != 0);
      }
      ok([&] { return res; });
    } else if (status != nbdwire::nbd_error::ok) {
      const std::optional<std::uint64_t> at =
          ranged_req ? std::optional<std::uint64_t>(r.offset + r.length / 2) : std::nullopt;
      // An error message is shortened to the room left (at a UTF-8 boundary): with all of
      // it, as in the run that sends everything at once, both send it whole.
      if (style == 1 || style == 2) flush(m, log.output);
      if (style == 1) ok([&] { return m.reply(r, status, "fuzz error"); });
      else if (style == 2) ok([&] { return m.reply_error_chunk(r, status, "error at offset", at, true); });
      else {
        ok([&] { return m.reply_error_chunk(r, status, {}, std::nullopt, false); });
        ok([&] { return m.reply_done(r); });
      }
    } else if (r.cmd() == command::read && r.length != 0 && (r.flags & nbdwire::command_flag::df) != 0) {
      // DF: one OFFSET_DATA chunk covering the request and ending the reply (holes are merged
      // into data); what one compact chunk cannot carry is refused with EOVERFLOW.
      if (!n.extended_headers && r.length > 0xffffffffu - 8) {
        status = nbdwire::nbd_error::eoverflow;
        ok([&] { return m.reply(r, status); });
      } else {
        ok([&] { return m.reply_read_data(r, r.offset, r.length, true); });
      }
    } else if (r.cmd() == command::read && r.length != 0) {
      const std::uint64_t half = r.length / 2, rest = r.length - half;
      if (style == 1) {  // data, then a hole
        if (half) ok([&] { return m.reply_read_data(r, r.offset, half, false); });
        if (rest <= 0xffffffffu) ok([&] { return m.reply_read_hole(r, r.offset + half, static_cast<std::uint32_t>(rest), true); });
        else ok([&] { return m.reply_read_data(r, r.offset + half, rest, true); });
      } else if (style == 2) {  // all hole
        if (r.length <= 0xffffffffu) ok([&] { return m.reply_read_hole(r, r.offset, static_cast<std::uint32_t>(r.length), true); });
        else ok([&] { return m.reply_read_data(r, r.offset, r.length, true); });
      } else {  // back to front in up to four data chunks, then NONE: more chunks than the
                // request's reservation holds, which take room as they go
        const std::uint64_t q = r.length / 4;
        std::uint64_t end = r.offset + r.length;
        for (int i = 0; i < 3 && q != 0; ++i, end -= q) ok([&] { return m.reply_read_data(r, end - q, q, false); });
        ok([&] { return m.reply_read_data(r, r.offset, end - r.offset, false); });
        ok([&] { return m.reply_done(r); });
      }
    } else if (status_chunks && n.meta_context_count != 0) {
      const std::array<nbdwire::block_extent, 3> ex{{
          {std::max<std::uint64_t>(1, r.length / 4), (r.cookie >> 4) & 3},
          {std::max<std::uint64_t>(1, r.length / 2), (r.cookie >> 6) & 3},
          {std::max<std::uint64_t>(1, r.length), (r.cookie >> 8) & 3},
      }};
      for (std::size_t i = 0; i < n.meta_context_count; ++i) {
        const bool last = i + 1 == n.meta_context_count && style != 3;
        // How many extents go in a chunk depends on the room left: all of it, as in the run
        // that sends everything at once, so that both send the same.
        flush(m, log.output);
        const auto sent = m.reply_block_status(r, n.meta_contexts[i].id, ex, last);
        NBDWIRE_FUZZ_CHECK(sent.has_value() && *sent >= 1 && *sent <= ex.size());
        if ((r.flags & nbdwire::command_flag::req_one) != 0) NBDWIRE_FUZZ_CHECK(*sent == 1);
        drain(m, log.output);
      }
      if (style == 3) ok([&] { return m.reply_done(r); });
    } else {
      ok([&] { return m.reply(r, status); });
    }
    if (checked) {
      flush(m, log.output);
      oracle_->check(bytes_view{log.output}.subspan(start), r, status);
    }
  }

  void answer_all(nbdwire::server& m, run_log& log) {
    // Newest first when deferring, so replies go out of order (except in the 1997 framing).
    const bool legacy = st_.cfg.style == nbdwire::handshake_style::legacy_1997;
    while (!deferred_.empty()) {
      const nbdwire::request r = legacy ? deferred_.front() : deferred_.back();
      if (legacy) deferred_.erase(deferred_.begin());
      else deferred_.pop_back();
      nbdwire::nbd_error status = nbdwire::nbd_error::ok;
      if ((st_.policy & 4) && (r.cookie & 3) == 1) status = nbdwire::nbd_error::eio;
      answer(m, r, status, log);
    }
    NBDWIRE_FUZZ_CHECK(m.outstanding() == 0);
  }

  const server_setup& st_;
  std::size_t answered_ = 0;  ///< options answered
  std::unique_ptr<reply_oracle> oracle_;
  std::vector<nbdwire::request> deferred_;
  nbdwire::request cur_{};
  std::uint64_t next_ = 0, left_ = 0;
};

/// Brings a fixed-newstyle server to transmission: client flags, then GO for the default
/// export asking for block sizes.
inline void canned_server_handshake(nbdwire::server& m, const server_setup& st, run_log& log) {
  bytes in;
  auto put = [&in](auto rec) {
    const auto b = nbdwire::encode(rec);
    in.insert(in.end(), b.begin(), b.end());
  };
  const std::uint32_t cflags = nbdwire::client_flag::fixed_newstyle | (st.cfg.no_zeroes ? nbdwire::client_flag::no_zeroes : 0u);
  put(nbdwire::make_client_flags(cflags));
  auto u32 = [&in](std::size_t v) {
    std::array<std::byte, 4> b{};
    nbdwire::store_be<std::uint32_t>(b.data(), static_cast<std::uint32_t>(v));
    in.insert(in.end(), b.begin(), b.end());
  };
  if (st.ask_ext) put(nbdwire::make_option_header(nbdwire::option::extended_headers, 0));
  if (st.ask_sr) put(nbdwire::make_option_header(nbdwire::option::structured_reply, 0));
  if (st.ask_meta) {
    // Every context the server offers, for the default export ("" as GO names it).
    std::size_t len = 8;
    for (auto q : st.cfg.meta_contexts) len += 4 + q.size();
    put(nbdwire::make_option_header(nbdwire::option::set_meta_context, static_cast<std::uint32_t>(len)));
    u32(0);
    u32(st.cfg.meta_contexts.size());
    for (auto q : st.cfg.meta_contexts) {
      u32(q.size());
      for (char ch : q) in.push_back(static_cast<std::byte>(ch));
    }
  }
  put(nbdwire::make_option_header(nbdwire::option::go, 8));
  const std::array<std::byte, 8> body{std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0},
                                      std::byte{0}, std::byte{1}, std::byte{0}, std::byte{3}};
  in.insert(in.end(), body.begin(), body.end());
  bytes_view rest{in};
  bool ready = false;
  for (int guard = 0; guard < 64 && !rest.empty(); ++guard) {
    const auto r = m.receive(rest);
    rest = rest.subspan(r.consumed);
    drain(m, log.output);
    if (r.ev.kind == event_kind::ready) ready = true;
  }
  flush(m, log.output);  // a handed-over machine starts with nothing queued
  NBDWIRE_FUZZ_CHECK(ready && m.state() == nbdwire::server_state::transmission);
  // What the options settled: EXTENDED_HEADERS implies structured replies; contexts need
  // structured replies before SET_META_CONTEXT.
  const auto& n = m.negotiated();
  NBDWIRE_FUZZ_CHECK(n.extended_headers == st.ask_ext);
  NBDWIRE_FUZZ_CHECK(n.structured_replies == (st.ask_ext || st.ask_sr));
  NBDWIRE_FUZZ_CHECK(n.meta_context_count == (st.ask_meta && n.structured_replies ? st.cfg.meta_contexts.size() : 0));
}

inline run_log run_server(surface s, bytes_view input, const cuts& at) {
  const scoped_mode<std::size_t> limit(drain_limit, server_limit);
  reader rd(input);
  server_setup st = parse_server(rd, s);
  st.cfg.trace = server_moves.trace();
  const bytes_view stream = rd.rest();
  server_moves.reset();
  auto m = std::make_unique<nbdwire::server>(st.cfg);
  server_actor actor(st);
  run_log pre;
  if (m->state() == nbdwire::server_state::failed) {
    NBDWIRE_FUZZ_CHECK(m->error() == nbdwire::errc::invalid_config);
  } else if (st.canned) {
    canned_server_handshake(*m, st, pre);
    if (start_from_handover) {
      const nbdwire::negotiated n = m->negotiated();
      server_moves.reset();
      m = std::make_unique<nbdwire::server>(st.cfg, n);
      NBDWIRE_FUZZ_CHECK(m->state() == nbdwire::server_state::transmission && same_negotiated(m->negotiated(), n));
    }
  }
  actor.start(*m, pre);
  run_log log = feed(*m, actor, stream, at, st.eof_at_end);
  log.output.insert(log.output.begin(), pre.output.begin(), pre.output.end());
  return log;
}

// ---- the client side ------------------------------------------------------------------------

struct request_action {
  std::uint8_t cmd = 0;
  std::uint16_t flags = 0;
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
};

struct client_setup {
  nbdwire::client_config cfg{};
  bool eof_at_end = false, direct = false;
  std::vector<std::uint8_t> options;
  std::vector<request_action> requests;
  // transmission surfaces: what the canned handshake (or the 1997 configuration) settles
  std::uint64_t size = 0;
  std::uint16_t tflags = 0;
  nbdwire::block_size_constraints bs{};
  std::uint8_t mode = 0;  ///< client_tx: 0 simple, 1 structured, 2 extended, 3 extended refused
  std::vector<std::uint32_t> context_ids;
};

inline const std::array<std::string_view, 2>& context_names() {
  static const std::array<std::string_view, 2> n{"base:allocation", "qemu:dirty-bitmap:b"};
  return n;
}

inline client_setup parse_client(reader& rd, surface s) {
  client_setup st;
  const std::uint8_t c = rd.u8();
  st.cfg.no_zeroes = (c & 1) == 0;
  st.cfg.fallback_to_export_name = (c & 2) == 0;
  st.eof_at_end = c & 4;
  st.direct = c & 8;
  // Structured replies and extended headers: client_handshake asks as the bits say and the
  // fuzzed server answers; client_tx asks what its canned handshake will answer.
  st.cfg.request_structured_replies = s == surface::client_handshake && (c & 16);
  st.cfg.request_extended_headers = s == surface::client_handshake && (c & 32);
  if (s == surface::client_tx) {
    // A build without structured replies (config.hpp, fuzz_client_minimal) asks for none, so
    // its canned handshake ends in simple replies.
    st.mode = static_cast<std::uint8_t>(nbdwire::client_has_structured_replies ? (c >> 4) & 3 : 0);
    st.cfg.request_structured_replies = st.mode != 0;
    st.cfg.request_extended_headers = st.mode >= 2;
  }
  if (s == surface::client_handshake) {
    // TLS policy: bits 6-7 (the TLS layer is identity after start_tls).
    static constexpr std::array<nbdwire::client_tls, 4> modes{nbdwire::client_tls::off, nbdwire::client_tls::opportunistic,
                                                              nbdwire::client_tls::require, nbdwire::client_tls::off};
    st.cfg.tls = modes[c >> 6];
    const std::size_t n = rd.u8() % 33;
    for (std::size_t i = 0; i < n; ++i) st.options.push_back(rd.u8());
    return st;
  }
  st.size = rd.u64();
  st.tflags = rd.u16();
  st.bs = block_size_from(rd.u8());
  if (s == surface::client_tx) {
    const std::size_t k = std::min<std::size_t>(c >> 6, 2);
    for (std::size_t i = 0; i < k; ++i) st.context_ids.push_back(rd.u32());
    st.cfg.meta_contexts = std::span<const std::string_view>(context_names().data(), k);
  }
  if (s == surface::legacy_client) {
    st.cfg.style = nbdwire::handshake_style::legacy_1997;
    st.cfg.legacy_export_size = st.size;
    st.cfg.legacy_read_only = st.tflags & nbdwire::transmission_flag::read_only;
  }
  const std::size_t n = rd.u8();
  for (std::size_t i = 0; i < n; ++i) st.requests.push_back({rd.u8(), rd.u16(), rd.u64(), rd.u32()});
  return st;
}

class client_actor {
 public:
  explicit client_actor(const client_setup& st) : st_(st) {}

  void start(nbdwire::client& m, run_log& log) {
    if (m.state() == nbdwire::client_state::transmission) submit_more(m, log);
  }

  std::size_t take_direct(nbdwire::client& m, bytes_view chunk, run_log& log) {
    if (!st_.direct || chunk.empty()) return 0;
    const auto p = m.incoming_payload();
    if (!p) return 0;
    if (m.negotiated().structured_replies) {
      // One chunk's data: inside a READ in flight.
      const auto it = flight_.find(p->cookie);
      NBDWIRE_FUZZ_CHECK(it != flight_.end() && p->length != 0);
      cur_ = it->second;
      next_ = p->offset;
      left_ = p->length;
    }
    if (p->cookie != cur_.cookie) begin_read(p->cookie);
    NBDWIRE_FUZZ_CHECK(p->cookie == cur_.cookie && p->offset == next_ && p->length == left_ && p->length != 0);
    NBDWIRE_FUZZ_CHECK(tags_.count(p->cookie) && p->tag == tags_.at(p->cookie));
    NBDWIRE_FUZZ_CHECK(m.consume_incoming_payload(p->length + 1).error() == nbdwire::errc::payload_overrun);
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), p->length));
    append(log, nbdwire::event{.kind = event_kind::payload, .req = cur_, .offset = p->offset, .data = chunk.first(n)});
    NBDWIRE_FUZZ_CHECK(m.consume_incoming_payload(n).has_value());
    next_ += n;
    left_ -= n;
    return n;
  }

  void on_need_more(nbdwire::client&, run_log&) {}

  void on_event(nbdwire::client& m, const nbdwire::event& e, run_log& log) {
    switch (e.kind) {
      case event_kind::start_tls: {
        check_tls_twin(m);  // until tls_started(), a copy fed any byte fails
        // The TLS layer as identity: the handshake succeeds and the same stream goes on.
        NBDWIRE_FUZZ_CHECK(st_.cfg.tls != nbdwire::client_tls::off && !m.tls_active());
        NBDWIRE_FUZZ_CHECK(m.tls_started().has_value());
        NBDWIRE_FUZZ_CHECK(m.tls_started().error() == nbdwire::errc::tls_not_starting);
        break;
      }
      case event_kind::greeting:
        // No request before transmission: refused, nothing queued.
        refused_unchanged(m, [&m] { return m.submit(nbdwire::command::read, 0, 0, 512); });
        [[fallthrough]];
      case event_kind::option_done:
      case event_kind::option_refused:
        if (m.can_send_option()) next_option(m);
        break;
      case event_kind::export_listed:
      case event_kind::info:
      case event_kind::meta_context:
        NBDWIRE_FUZZ_CHECK(m.state() == nbdwire::client_state::awaiting_option_reply);
        break;
      case event_kind::read_hole:
      case event_kind::extent:
      case event_kind::error_chunk: {
        // Structured chunks: only with structured replies, only for a request in flight.
        NBDWIRE_FUZZ_CHECK(m.negotiated().structured_replies);
        const auto it = flight_.find(e.req.cookie);
        NBDWIRE_FUZZ_CHECK(it != flight_.end() && e.req == it->second);
        check_tag(e);
        const auto inside = [&e](std::uint64_t off, std::uint64_t len) {
          return off >= e.req.offset && len <= e.req.length && off - e.req.offset <= e.req.length - len;
        };
        if (e.kind == event_kind::read_hole) {
          // A hole is a non-empty part of a READ's range.
          NBDWIRE_FUZZ_CHECK(e.req.cmd() == nbdwire::command::read && e.length != 0 && inside(e.offset, e.length));
        } else if (e.kind == event_kind::extent) {
          // Extents answer BLOCK_STATUS, in a negotiated context.
          NBDWIRE_FUZZ_CHECK(e.req.cmd() == nbdwire::command::block_status);
          NBDWIRE_FUZZ_CHECK(m.negotiated().has_meta_context(e.context_id));
        } else {
          NBDWIRE_FUZZ_CHECK(e.status != nbdwire::nbd_error::ok);
          if (e.has_offset) NBDWIRE_FUZZ_CHECK(inside(e.offset, 1));
        }
        break;
      }
      case event_kind::ready:
        NBDWIRE_FUZZ_CHECK(m.state() == nbdwire::client_state::transmission);
        // No option once in transmission: refused, nothing queued.
        refused_unchanged(m, [&m] { return m.go("", 0); });
        refused_unchanged(m, [&m] { return m.list(); });
        submit_more(m, log);
        break;
      case event_kind::payload: {
        const auto it = flight_.find(e.req.cookie);
        NBDWIRE_FUZZ_CHECK(it != flight_.end() && e.req == it->second);
        check_tag(e);
        if (m.negotiated().structured_replies) {
          // Chunks come in any order: each lies inside the request's range.
          NBDWIRE_FUZZ_CHECK(e.offset >= e.req.offset && e.data.size() <= e.req.length &&
                             e.offset - e.req.offset <= e.req.length - e.data.size());
          break;
        }
        if (cur_.cookie != e.req.cookie) begin_read(e.req.cookie);
        NBDWIRE_FUZZ_CHECK(e.offset == next_ && e.data.size() <= left_);
        next_ += e.data.size();
        left_ -= e.data.size();
        break;
      }
      case event_kind::reply: {
        const auto it = flight_.find(e.req.cookie);
        NBDWIRE_FUZZ_CHECK(it != flight_.end() && e.req == it->second);
        // READ data comes in full before a successful reply, and only then.
        const bool data = e.req.cmd() == nbdwire::command::read && e.status == nbdwire::nbd_error::ok && e.req.length != 0;
        if (m.negotiated().structured_replies) {
          // coverage of structured READs is the machine's own check; nothing more here
        } else if (data) NBDWIRE_FUZZ_CHECK(cur_.cookie == e.req.cookie && left_ == 0);
        else NBDWIRE_FUZZ_CHECK(cur_.cookie != e.req.cookie);
        check_tag(e);
        // NBD_ESHUTDOWN: the client refuses new requests from now on.
        if (e.status == nbdwire::nbd_error::eshutdown) NBDWIRE_FUZZ_CHECK(m.server_shutting_down());
        cur_ = {};
        flight_.erase(it);
        tags_.erase(e.req.cookie);
        NBDWIRE_FUZZ_CHECK(m.in_flight() == flight_.size());
        submit_more(m, log);
        break;
      }
      case event_kind::disconnected:
      case event_kind::closed:
      case event_kind::failed:
        break;
      default:
        NBDWIRE_FUZZ_FAIL("a client reports only client events");
    }
  }

  void on_closed(nbdwire::client& m, run_log& log) {
    if (m.state() == nbdwire::client_state::closed) NBDWIRE_FUZZ_CHECK(m.in_flight() == 0);
    drain(m, log.output);
    NBDWIRE_FUZZ_CHECK(m.drained() == (m.in_flight() == 0));
  }

  /// `r` must be a refusal that left the machine as it was.
  template <class Call>
  static void refused_unchanged(nbdwire::client& m, Call call) {
    const std::size_t out = m.pending_output().size(), in_flight = m.in_flight();
    const auto state = m.state();
    const auto r = call();
    NBDWIRE_FUZZ_CHECK(!r.has_value());
    check_refusal(r.error());
    NBDWIRE_FUZZ_CHECK(m.pending_output().size() == out && m.in_flight() == in_flight && m.state() == state);
    NBDWIRE_FUZZ_CHECK(m.error() == nbdwire::errc::ok);
  }

  /// A call that was refused must leave the machine as it was.
  static void check_refusal(nbdwire::errc e) {
    check_errc_named(e);
    const auto c = nbdwire::category(e);
    NBDWIRE_FUZZ_CHECK(c == nbdwire::error_category::caller_misuse || c == nbdwire::error_category::limit_exceeded ||
                       c == nbdwire::error_category::buffer_too_small);
    NBDWIRE_FUZZ_CHECK(!nbdwire::is_fatal(e));
  }

 private:
  void next_option(nbdwire::client& m) {
    if (opt_next_ >= st_.options.size()) return;
    const std::uint8_t a = st_.options[opt_next_++];
    static const std::array<std::string_view, 4> names{"", "disk", long_name(), too_long_name()};
    const std::string_view name = names[(a >> 3) & 3];
    const std::uint32_t info = static_cast<std::uint32_t>(a >> 5) << 1;  // name, description, block size
    const std::size_t before = m.pending_output().size();
    const auto state = m.state();
    nbdwire::result<void> r;
    switch (a & 7) {
      case 1: r = m.info(name, info); break;
      case 2: r = m.list(); break;
      case 3: r = m.abort(); break;
      case 4: r = m.export_name(name); break;
      case 7:  // LIST_META_CONTEXT for 0-2 of the context names (bits 5-6)
        r = m.list_meta_context(name, std::span<const std::string_view>(context_names().data(),
                                                                        std::min<std::size_t>((a >> 5) & 3, 2)));
        break;
      default: r = m.go(name, info); break;
    }
    if (!r) {
      check_refusal(r.error());
      NBDWIRE_FUZZ_CHECK(m.pending_output().size() == before && m.state() == state);
    } else {
      NBDWIRE_FUZZ_CHECK(m.pending_output().size() > before && !m.can_send_option());
    }
  }

  /// The first fragment of a READ's data: it must answer a READ in flight, and nothing else
  /// may be half-received.
  void begin_read(std::uint64_t cookie) {
    const auto it = flight_.find(cookie);
    NBDWIRE_FUZZ_CHECK(it != flight_.end() && it->second.cmd() == nbdwire::command::read);
    NBDWIRE_FUZZ_CHECK(left_ == 0);
    cur_ = it->second;
    next_ = cur_.offset;
    left_ = cur_.length;
  }

  void submit_more(nbdwire::client& m, run_log& log) {
    while (req_next_ < st_.requests.size() && m.state() == nbdwire::client_state::transmission &&
           flight_.size() < nbdwire::max_in_flight) {
      const request_action& a = st_.requests[req_next_++];
      const std::size_t before = m.pending_output().size();
      if (a.cmd == 0xff) {
        const auto r = m.disconnect();
        if (!r) check_refusal(r.error());
        drain(m, log.output);
        continue;
      }
      // Every request carries a tag its events must return; every other one goes through the
      // command's own call (read(), write(), ...) where it has one, which must do as submit().
      const std::uint64_t tag = 0x7a6700000000u + req_next_;
      const auto r = submit_via(m, a, tag, (req_next_ & 1) != 0);
      if (!r) {
        check_refusal(r.error());
        NBDWIRE_FUZZ_CHECK(m.pending_output().size() == before && m.in_flight() == flight_.size());
        continue;
      }
      const nbdwire::request req{*r, a.cmd, a.flags, a.offset, a.length};
      // The client never sends what a strict server would refuse.
      NBDWIRE_FUZZ_CHECK(server_may_accept(req, m.negotiated()));
      NBDWIRE_FUZZ_CHECK(a.length != 0 || !ranged(req.cmd()));
      NBDWIRE_FUZZ_CHECK(flight_.emplace(*r, req).second);  // cookies are unique while in flight
      tags_[*r] = tag;
      NBDWIRE_FUZZ_CHECK(m.find(*r) && *m.find(*r) == req);
      NBDWIRE_FUZZ_CHECK(m.in_flight() == flight_.size());
      drain(m, log.output);
    }
  }

  static nbdwire::result<std::uint64_t> submit_via(nbdwire::client& m, const request_action& a, std::uint64_t tag,
                                                   bool own_call) {
    using nbdwire::command;
    const auto c = static_cast<command>(a.cmd);
    if (own_call) switch (c) {
        case command::read: return m.read(a.offset, a.length, a.flags, tag);
        case command::write: return m.write(a.offset, a.length, a.flags, tag);
        case command::trim: return m.trim(a.offset, a.length, a.flags, tag);
        case command::write_zeroes: return m.write_zeroes(a.offset, a.length, a.flags, tag);
        case command::cache: return m.cache(a.offset, a.length, a.flags, tag);
        case command::block_status: return m.block_status(a.offset, a.length, a.flags, tag);
        case command::flush:
          if (a.offset == 0 && a.length == 0) return m.flush(a.flags, tag);
          break;
        default: break;
      }
    return m.submit(c, a.flags, a.offset, a.length, tag);
  }

  /// Request-scoped events carry the tag the request was submitted with.
  void check_tag(const nbdwire::event& e) const {
    const auto it = tags_.find(e.req.cookie);
    NBDWIRE_FUZZ_CHECK(it != tags_.end() && e.tag == it->second);
  }

  const client_setup& st_;
  std::size_t opt_next_ = 0, req_next_ = 0;
  std::map<std::uint64_t, nbdwire::request> flight_;
  std::map<std::uint64_t, std::uint64_t> tags_;  ///< cookie -> tag, while in flight
  nbdwire::request cur_{};
  std::uint64_t next_ = 0, left_ = 0;
};

inline void canned_client_handshake(nbdwire::client& m, const client_setup& st, run_log& log) {
  canned_server cs{st.mode, {}, st.size, st.tflags, st.bs};
  for (std::size_t i = 0; i < st.context_ids.size(); ++i) cs.contexts.emplace_back(st.context_ids[i], context_names()[i]);
  canned_client_handshake(m, cs, log.output);
}

inline run_log run_client(surface s, bytes_view input, const cuts& at) {
  reader rd(input);
  client_setup st = parse_client(rd, s);
  st.cfg.trace = client_moves.trace();
  const bytes_view stream = rd.rest();
  client_moves.reset();
  auto m = std::make_unique<nbdwire::client>(st.cfg);
  client_actor actor(st);
  run_log pre;
  if (s == surface::client_tx) {
    canned_client_handshake(*m, st, pre);
    if (start_from_handover) {
      const nbdwire::negotiated n = m->negotiated();
      client_moves.reset();
      m = std::make_unique<nbdwire::client>(n, st.cfg);
      NBDWIRE_FUZZ_CHECK(m->state() == nbdwire::client_state::transmission && same_negotiated(m->negotiated(), n));
    }
  }
  actor.start(*m, pre);
  run_log log = feed(*m, actor, stream, at, st.eof_at_end);
  log.output.insert(log.output.begin(), pre.output.begin(), pre.output.end());
  return log;
}

// ---- entry points ---------------------------------------------------------------------------

inline run_log run_surface(surface s, bytes_view input, const cuts& at) {
  switch (s) {
    case surface::server_handshake:
    case surface::server_tx:
    case surface::legacy_server: return run_server(s, input, at);
    default: return run_client(s, input, at);
  }
}

/// Drain limits of server runs (bytes sent per drain): a byte at a time, less than a header,
/// about one message, several.
inline constexpr std::array<std::size_t, 4> drain_limits{1, 7, 64, 1000};

/// A drain limit for a server run, picked by the input.
inline std::size_t drain_limit_for(bytes_view input) noexcept {
  return drain_limits[input_hash(input, 0xcbf29ce484222325u) % drain_limits.size()];
}

/// How many configuration and action bytes precede the stream of `input` for surface `s`.
inline std::size_t header_size(surface s, bytes_view input) {
  reader rd(input);
  if (s == surface::server_handshake || s == surface::server_tx || s == surface::legacy_server)
    (void)parse_server(rd, s);
  else
    (void)parse_client(rd, s);
  return input.size() - rd.rest().size();
}

/// One fuzz input for one surface: the invariants of a whole-input run, then (normal mode,
/// mode.hpp) the same run one byte at a time (draining through pending_pieces()) and at cuts
/// seeded by the input, which must all agree.
inline void fuzz_surface(surface s, const std::uint8_t* data, std::size_t size) {
  // An exact-size heap copy, so a read past the input is caught by AddressSanitizer.
  const std::unique_ptr<std::byte[]> copy(new std::byte[size]);
  if (size != 0) std::memcpy(copy.get(), data, size);
  const bytes_view input{copy.get(), size};
  const std::size_t stream = input.size() - header_size(s, input);
  const run_log whole = run_surface(s, input, {});
  NBDWIRE_FUZZ_CHECK(whole.consumed <= stream);
  if (stream > 1 && !fast_mode()) {
    if (stream <= 4096) {
      // One byte at a time, draining through pending_pieces(): the same bytes must go out.
      const scoped_mode<bool> pieces(drain_through_pieces, true);
      check_same(whole, run_surface(s, input, every_byte(stream)));
    }
    // At seeded cuts, transmission surfaces start from a handed-over machine, and a server's
    // caller sends a limited number of bytes each time (a limit picked by the input).
    const scoped_mode<bool> handover(start_from_handover, true);
    const scoped_mode<std::size_t> limit(server_limit, drain_limit_for(input));
    check_same(whole, run_surface(s, input, seeded_cuts(input, stream)));
  }
}

}  // namespace nbdwire_fuzz
