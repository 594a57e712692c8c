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
//   client_tx         ccfg[1] size[8] tflags[2] bs[1] n[1] req[n×15]  server replies
//   legacy_client     ccfg[1] size[8] tflags[2] bs[1] n[1] req[n×15]  server replies (1997)
// Server cfg: [0] style/bits  [1] exports/default  [2] max_options  [3] max_option_length
//             [4..5] transmission flags  [6] size index  [7] block-size index / reply policy
// Client ccfg bits: 0 no_zeroes, 1 fallback to EXPORT_NAME, 2 on_eof at the end, 3 read
//   payload through incoming_payload(); bits 4-7 are kept for structured replies, metadata
//   contexts and extended headers (client_tx), and read as zero by this release.
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
    case command::block_status: if (!n.structured_replies) return false; break;  // needs a context
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

// ---- the server side ------------------------------------------------------------------------

struct server_setup {
  std::array<nbdwire::export_config, 3> exports{};
  nbdwire::server_config cfg{};
  bool eof_at_end = false, direct = false, shutdown = false, canned = false;
  std::uint8_t policy = 0;  ///< bits 0-1 defer depth, bit 2 answer with errors
};

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
  st.policy = static_cast<std::uint8_t>(b7 >> 3);
  std::size_t count = 1 + (b1 & 3) % 3;
  switch (s) {
    case surface::server_handshake: st.cfg.style = (b0 & 1) ? hs::newstyle : hs::fixed_newstyle; break;
    case surface::server_tx:
      // Transmission after a canned GO, or after the oldstyle greeting.
      st.cfg.style = (b0 & 1) ? hs::oldstyle : hs::fixed_newstyle;
      st.canned = st.cfg.style == hs::fixed_newstyle;
      break;
    default: st.cfg.style = hs::legacy_1997; break;
  }
  if (st.cfg.style == hs::oldstyle || st.cfg.style == hs::legacy_1997) count = 1;
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
  if (st.canned) {  // room for the canned GO
    st.cfg.max_options = std::max<std::uint32_t>(st.cfg.max_options, 1);
    st.cfg.max_option_length = std::max<std::uint32_t>(st.cfg.max_option_length, 8);
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
        break;
      default:
        NBDWIRE_FUZZ_FAIL("a server reports only server events");
    }
  }

  void on_closed(nbdwire::server& m, run_log& log) {
    if (m.state() == nbdwire::server_state::failed) {
      if (!deferred_.empty()) NBDWIRE_FUZZ_CHECK(m.reply(deferred_.front()).error() == nbdwire::errc::wrong_state);
      return;
    }
    // After DISC or a close, the requests in flight are still answered.
    answer_all(m, log);
    NBDWIRE_FUZZ_CHECK(m.reply(nbdwire::request{}).error() == nbdwire::errc::unknown_request);
  }

 private:
  void on_transmission(nbdwire::server& m) {
    if (st_.shutdown) m.begin_shutdown();
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
      const auto res = m.reply(r, status);
      NBDWIRE_FUZZ_CHECK(res.has_value());
      drain(m, log.output);
    }
    NBDWIRE_FUZZ_CHECK(m.outstanding() == 0);
  }

  const server_setup& st_;
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
  put(nbdwire::make_option_header(nbdwire::option::go, 8));
  const std::array<std::byte, 8> body{std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0},
                                      std::byte{0}, std::byte{1}, std::byte{0}, std::byte{3}};
  in.insert(in.end(), body.begin(), body.end());
  bytes_view rest{in};
  bool ready = false;
  for (int guard = 0; guard < 16 && !rest.empty(); ++guard) {
    const auto r = m.receive(rest);
    rest = rest.subspan(r.consumed);
    drain(m, log.output);
    if (r.ev.kind == event_kind::ready) ready = true;
  }
  NBDWIRE_FUZZ_CHECK(ready && m.state() == nbdwire::server_state::transmission);
}

inline run_log run_server(surface s, bytes_view input, const cuts& at) {
  reader rd(input);
  const server_setup st = parse_server(rd, s);
  const bytes_view stream = rd.rest();
  auto m = std::make_unique<nbdwire::server>(st.cfg);
  server_actor actor(st);
  run_log pre;
  if (m->state() == nbdwire::server_state::failed) {
    NBDWIRE_FUZZ_CHECK(m->error() == nbdwire::errc::invalid_config);
  } else if (st.canned) {
    canned_server_handshake(*m, st, pre);
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
};

inline client_setup parse_client(reader& rd, surface s) {
  client_setup st;
  const std::uint8_t c = rd.u8();
  st.cfg.no_zeroes = (c & 1) == 0;
  st.cfg.fallback_to_export_name = (c & 2) == 0;
  st.eof_at_end = c & 4;
  st.direct = c & 8;
  // Structured replies and extended headers: asked for only where the fuzzed server stream
  // answers the options (the canned handshake of client_tx does not offer them yet).
  st.cfg.request_structured_replies = s == surface::client_handshake && (c & 16);
  st.cfg.request_extended_headers = s == surface::client_handshake && (c & 32);
  if (s == surface::client_handshake) {
    const std::size_t n = rd.u8() % 33;
    for (std::size_t i = 0; i < n; ++i) st.options.push_back(rd.u8());
    return st;
  }
  st.size = rd.u64();
  st.tflags = rd.u16();
  st.bs = block_size_from(rd.u8());
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
      case event_kind::greeting:
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
      case event_kind::error_chunk:
        // Structured chunks: only with structured replies, only for a request in flight.
        NBDWIRE_FUZZ_CHECK(m.negotiated().structured_replies);
        NBDWIRE_FUZZ_CHECK(flight_.count(e.req.cookie) == 1);
        break;
      case event_kind::ready:
        NBDWIRE_FUZZ_CHECK(m.state() == nbdwire::client_state::transmission);
        submit_more(m, log);
        break;
      case event_kind::payload: {
        const auto it = flight_.find(e.req.cookie);
        NBDWIRE_FUZZ_CHECK(it != flight_.end() && e.req == it->second);
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
        cur_ = {};
        flight_.erase(it);
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

  void on_closed(nbdwire::client& m, run_log&) {
    if (m.state() == nbdwire::client_state::closed) NBDWIRE_FUZZ_CHECK(m.in_flight() == 0);
  }

  /// A call that was refused must leave the machine as it was.
  static void check_refusal(nbdwire::errc e) {
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
      const auto r = m.submit(static_cast<nbdwire::command>(a.cmd), a.flags, a.offset, a.length);
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
      NBDWIRE_FUZZ_CHECK(m.find(*r) && *m.find(*r) == req);
      NBDWIRE_FUZZ_CHECK(m.in_flight() == flight_.size());
      drain(m, log.output);
    }
  }

  const client_setup& st_;
  std::size_t opt_next_ = 0, req_next_ = 0;
  std::map<std::uint64_t, nbdwire::request> flight_;
  nbdwire::request cur_{};
  std::uint64_t next_ = 0, left_ = 0;
};

/// Brings a client to transmission through GO against a canned fixed-newstyle server that
/// advertises the surface's size, flags and block sizes.
inline void canned_client_handshake(nbdwire::client& m, const client_setup& st, run_log& log) {
  bytes in;
  auto put = [&in](auto rec) {
    const auto b = nbdwire::encode(rec);
    in.insert(in.end(), b.begin(), b.end());
  };
  using nbdwire::reply_type;
  const std::uint32_t go = static_cast<std::uint32_t>(nbdwire::option::go);
  put(nbdwire::make_newstyle_greeting(nbdwire::handshake_flag::fixed_newstyle | nbdwire::handshake_flag::no_zeroes));
  put(nbdwire::make_option_reply_header(go, reply_type::info, sizeof(nbdwire::info_export_payload)));
  put(nbdwire::make_info_export(st.size, st.tflags));
  put(nbdwire::make_option_reply_header(go, reply_type::info, sizeof(nbdwire::info_block_size_payload)));
  put(nbdwire::make_info_block_size(st.bs.minimum, st.bs.preferred, st.bs.maximum));
  put(nbdwire::make_option_reply_header(go, reply_type::ack, 0));
  bytes_view rest{in};
  bool ready = false;
  for (int guard = 0; guard < 16 && !ready; ++guard) {
    const auto r = m.receive(rest);
    rest = rest.subspan(r.consumed);
    if (r.ev.kind == event_kind::greeting) NBDWIRE_FUZZ_CHECK(m.go("", nbdwire::info_request::all).has_value());
    if (r.ev.kind == event_kind::ready) ready = true;
    drain(m, log.output);
  }
  NBDWIRE_FUZZ_CHECK(ready && rest.empty() && m.state() == nbdwire::client_state::transmission);
}

inline run_log run_client(surface s, bytes_view input, const cuts& at) {
  reader rd(input);
  const client_setup st = parse_client(rd, s);
  const bytes_view stream = rd.rest();
  auto m = std::make_unique<nbdwire::client>(st.cfg);
  client_actor actor(st);
  run_log pre;
  if (s == surface::client_tx) canned_client_handshake(*m, st, pre);
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

/// How many configuration and action bytes precede the stream of `input` for surface `s`.
inline std::size_t header_size(surface s, bytes_view input) {
  reader rd(input);
  if (s == surface::server_handshake || s == surface::server_tx || s == surface::legacy_server)
    (void)parse_server(rd, s);
  else
    (void)parse_client(rd, s);
  return input.size() - rd.rest().size();
}

/// One fuzz input for one surface: the invariants of a whole-input run, then the same run
/// one byte at a time and at cuts seeded by the input, which must all agree.
inline void fuzz_surface(surface s, const std::uint8_t* data, std::size_t size) {
  // An exact-size heap copy, so a read past the input is caught by AddressSanitizer.
  const std::unique_ptr<std::byte[]> copy(new std::byte[size]);
  if (size != 0) std::memcpy(copy.get(), data, size);
  const bytes_view input{copy.get(), size};
  const std::size_t stream = input.size() - header_size(s, input);
  const run_log whole = run_surface(s, input, {});
  NBDWIRE_FUZZ_CHECK(whole.consumed <= stream);
  if (stream > 1) {
    if (stream <= 4096) check_same(whole, run_surface(s, input, every_byte(stream)));
    check_same(whole, run_surface(s, input, seeded_cuts(input, stream)));
  }
}

}  // namespace nbdwire_fuzz
