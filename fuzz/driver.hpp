// SPDX-License-Identifier: MIT
// Fuzz support: every attack surface of the two machines as a function of one byte string,
// run under invariants that hold for any input, and compared across input splits.
//
// An input is: configuration bytes (the first bytes pick the machine's configuration), a
// few action bytes (what the caller does: options to send, requests to submit, how to
// answer), then the byte stream from the peer. A run drives a fresh machine over the stream
// cut at given positions, acts on every event as an adapter would, and records what
// happened. Invariants are checked as the run goes (check() aborts, so libFuzzer reports the
// input); the record of one run is then compared with runs over other splits.
//
// No I/O: machines are sans-IO, so a fuzz run needs no fork, socket or thread.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "mode.hpp"
#include "nbdwire/client.hpp"
#include "nbdwire/server.hpp"

namespace nbdwire_fuzz {

using bytes = std::vector<std::byte>;
using nbdwire::bytes_view;
using nbdwire::event_kind;

/// An invariant failed: say which, then abort so the fuzzer keeps the input.
[[noreturn]] inline void violated(const char* what, const char* file, int line) {
  std::fprintf(stderr, "nbdwire fuzz invariant violated: %s (%s:%d)\n", what, file, line);
  std::abort();
}
#define NBDWIRE_FUZZ_CHECK(cond) \
  do {                           \
    if (!(cond)) ::nbdwire_fuzz::violated(#cond, __FILE__, __LINE__); \
  } while (0)
#define NBDWIRE_FUZZ_FAIL(what) ::nbdwire_fuzz::violated(what, __FILE__, __LINE__)

/// Reads configuration and action fields off the front of the input; past the end every
/// field reads as zero, so any input is a valid configuration.
class reader {
 public:
  explicit reader(bytes_view in) : in_(in) {}
  std::uint8_t u8() noexcept {
    if (pos_ >= in_.size()) return 0;
    return static_cast<std::uint8_t>(in_[pos_++]);
  }
  // Big-endian; each read is its own statement, since operand order is unspecified.
  std::uint16_t u16() noexcept {
    const unsigned hi = u8();
    return static_cast<std::uint16_t>((hi << 8) | u8());
  }
  std::uint32_t u32() noexcept {
    const std::uint32_t hi = u16();
    return (hi << 16) | u16();
  }
  std::uint64_t u64() noexcept {
    const std::uint64_t hi = u32();
    return (hi << 32) | u32();
  }
  bytes_view take(std::size_t n) noexcept {
    n = std::min(n, in_.size() - pos_);
    const bytes_view b = in_.subspan(pos_, n);
    pos_ += n;
    return b;
  }
  [[nodiscard]] bytes_view rest() const noexcept { return in_.subspan(pos_); }

 private:
  bytes_view in_;
  std::size_t pos_ = 0;
};

/// Export contents both sides agree on, so payload bytes are the same in every run.
inline std::byte pattern_byte(std::uint64_t offset) noexcept {
  return static_cast<std::byte>((offset * 131u + 7u) & 0xffu);
}

/// One event with its views copied. Payload fragments that continue each other are merged,
/// since the split decides fragment sizes and nothing else.
struct recorded {
  event_kind kind = event_kind::need_more;
  nbdwire::errc error = nbdwire::errc::ok;
  std::uint32_t option = 0;
  nbdwire::reply_type reply = nbdwire::reply_type::ack;
  nbdwire::info_type info = nbdwire::info_type::export_info;
  std::uint16_t flags = 0;
  std::uint64_t export_size = 0;
  std::uint16_t transmission_flags = 0;
  nbdwire::block_size_constraints block_size{};
  nbdwire::request req{};
  nbdwire::nbd_error status = nbdwire::nbd_error::ok;
  std::uint64_t offset = 0;
  bytes data, text;
  std::uint64_t length = 0;        ///< read_hole, extent
  std::uint32_t context_id = 0;    ///< meta_context, extent
  std::uint64_t extent_flags = 0;  ///< extent
  bool has_offset = false;         ///< error_chunk
  bool operator==(const recorded&) const = default;
};

/// Everything a run produced that must not depend on how the input was split.
struct run_log {
  std::vector<recorded> events;
  bytes output;  ///< every byte the machine asked to send, payloads included
  nbdwire::errc final_error = nbdwire::errc::ok;
  std::size_t consumed = 0;
  bool failed = false;
  bool operator==(const run_log&) const = default;
};

inline void append(run_log& log, const nbdwire::event& e) {
  if (e.kind == event_kind::payload && !log.events.empty()) {
    recorded& last = log.events.back();
    if (last.kind == event_kind::payload && last.req.cookie == e.req.cookie &&
        last.offset + last.data.size() == e.offset) {
      last.data.insert(last.data.end(), e.data.begin(), e.data.end());
      return;
    }
  }
  log.events.push_back({e.kind, e.error, e.option, e.reply, e.info, e.flags, e.export_size, e.transmission_flags,
                        e.block_size, e.req, e.status, e.offset, bytes(e.data.begin(), e.data.end()),
                        bytes(e.text.begin(), e.text.end())});
}

/// Sets one of the run modes below (a global the harness reads) while it lives, and puts the
/// old value back when it ends.
template <class T>
class scoped_mode {
 public:
  scoped_mode(T& mode, T value) noexcept : mode_(mode), saved_(mode) { mode = value; }
  ~scoped_mode() { mode_ = saved_; }
  scoped_mode(const scoped_mode&) = delete;
  scoped_mode& operator=(const scoped_mode&) = delete;

 private:
  T& mode_;
  T saved_;
};

/// How drain() empties a machine's queue: false, pending_output() and pending_payload()
/// (drain_whole); true, pending_pieces() (drain_pieces). Set for a run with scoped_mode.
inline bool drain_through_pieces = false;

/// When non-zero, each drain() sends at most `drain_limit` bytes of the outbox (payloads, which
/// come from the caller's storage, go out whole), as a caller on a slow socket whose send()
/// takes only part of what it is offered: the rest waits for the next drain, and the machine
/// queues behind it (the outbox compacts, and fills up: `blocked`, or `outbox_full` for a
/// chunk). Set for a run with scoped_mode (server runs only: surfaces.hpp).
inline std::size_t drain_limit = 0;

template <class Machine>
void drain_pieces(Machine& m, bytes& out);
template <class Machine>
void drain_limited(Machine& m, bytes& out);
inline void check_errc_named(nbdwire::errc e);

/// Moves everything a machine wants sent into `out`; payload marks are filled with the
/// export pattern. Checks the outbox bound and that a payload is asked for only once its
/// header has gone.
template <class Machine>
void drain_whole(Machine& m, bytes& out) {
  for (int guard = 0;; ++guard) {
    NBDWIRE_FUZZ_CHECK(guard < 1'000'000);
    const bytes_view o = m.pending_output();
    NBDWIRE_FUZZ_CHECK(o.size() <= nbdwire::outbox_size);
    if (!o.empty()) {
      out.insert(out.end(), o.begin(), o.end());
      m.consume_output(o.size());
      continue;
    }
    const auto p = m.pending_payload();
    if (!p) return;
    // Payloads can be large (with extended headers and no fixed maximum, a READ may exceed
    // 4 GiB); emit at most 64 KiB of pattern for it and send the rest in one step.
    NBDWIRE_FUZZ_CHECK(p->length != 0);
    const std::uint64_t shown = std::min<std::uint64_t>(p->length, 65536);
    for (std::uint64_t i = 0; i < shown; ++i) out.push_back(pattern_byte(p->offset + i));
    if (p->length != ~std::uint64_t{0}) {
      const auto over = m.consume_payload(p->length + 1);
      NBDWIRE_FUZZ_CHECK(over.error() == nbdwire::errc::payload_overrun);
      check_errc_named(over.error());
    }
    NBDWIRE_FUZZ_CHECK(m.consume_payload(p->length).has_value());
  }
}

/// Every error a machine reports has a name, a description and a category, and is not an
/// internal one (illegal_transition is a bug in nbdwire).
inline void check_errc_named(nbdwire::errc e) {
  NBDWIRE_FUZZ_CHECK(nbdwire::to_string(e) != "unknown_error" && nbdwire::describe(e) != "unknown error");
  NBDWIRE_FUZZ_CHECK(nbdwire::category(e) != nbdwire::error_category::internal);
  NBDWIRE_FUZZ_CHECK((nbdwire::category(e) == nbdwire::error_category::none) == (e == nbdwire::errc::ok));
}

/// What an adapter prints of an event can be printed: every event kind has a name, and the
/// protocol values it carries (options, replies, info types, commands, statuses) a name or
/// the "(unknown)" form of their type.
inline void check_names(const nbdwire::event& e) {
  NBDWIRE_FUZZ_CHECK(nbdwire::to_string(e.kind) != "unknown");
  switch (e.kind) {
    case event_kind::failed: check_errc_named(e.error); break;
    case event_kind::option_done:
    case event_kind::option_refused:
    case event_kind::option_answered:
    case event_kind::start_tls:
      NBDWIRE_FUZZ_CHECK(!nbdwire::to_string(static_cast<nbdwire::option>(e.option)).empty());
      NBDWIRE_FUZZ_CHECK(!nbdwire::to_string(e.reply).empty());
      break;
    case event_kind::info: NBDWIRE_FUZZ_CHECK(!nbdwire::to_string(e.info).empty()); break;
    case event_kind::request:
    case event_kind::request_refused:
    case event_kind::reply:
    case event_kind::error_chunk:
      NBDWIRE_FUZZ_CHECK(!nbdwire::to_string(e.req.cmd()).empty());
      NBDWIRE_FUZZ_CHECK(!nbdwire::to_string(e.status).empty());
      break;
    default: break;
  }
}

/// drain() through pending_pieces(), as a writev adapter (send_plan) reads the queue: the
/// pieces must agree with pending_output() and pending_payload(), and are consumed a few
/// bytes at a time, payloads in two steps. The split runs drain this way and must produce the
/// same bytes as the whole run, which drains with drain().
template <class Machine>
void drain_pieces(Machine& m, bytes& out) {
  for (int guard = 0;; ++guard) {
    NBDWIRE_FUZZ_CHECK(guard < 1'000'000);
    std::array<nbdwire::output_piece, 3> pieces{};
    const std::size_t n = m.pending_pieces(pieces);
    const bytes_view o = m.pending_output();
    const auto p = m.pending_payload();
    NBDWIRE_FUZZ_CHECK(n <= pieces.size() && (n == 0) == (o.empty() && !p));
    if (n == 0) return;
    // The first piece is what pending_output() and pending_payload() say now.
    NBDWIRE_FUZZ_CHECK(pieces[0].bytes.data() == o.data() && pieces[0].bytes.size() == o.size());
    NBDWIRE_FUZZ_CHECK(pieces[0].payload.has_value() == p.has_value());
    if (p) NBDWIRE_FUZZ_CHECK(pieces[0].payload->offset == p->offset && pieces[0].payload->length == p->length);
    // Later pieces never start with an empty outbox part unless they carry a payload.
    for (std::size_t i = 1; i < n; ++i) NBDWIRE_FUZZ_CHECK(!pieces[i].bytes.empty() || pieces[i].payload.has_value());
    for (std::size_t at = 0; at < o.size();) {
      const std::size_t k = std::min<std::size_t>(5, o.size() - at);
      out.insert(out.end(), o.begin() + static_cast<std::ptrdiff_t>(at), o.begin() + static_cast<std::ptrdiff_t>(at + k));
      m.consume_output(k);
      at += k;
    }
    NBDWIRE_FUZZ_CHECK(m.pending_output().size() == 0 || !p);
    if (!p) continue;
    NBDWIRE_FUZZ_CHECK(p->length != 0);
    const std::uint64_t shown = std::min<std::uint64_t>(p->length, 65536);
    for (std::uint64_t i = 0; i < shown; ++i) out.push_back(pattern_byte(p->offset + i));
    const std::uint64_t first = p->length / 2;
    if (first != 0) {
      NBDWIRE_FUZZ_CHECK(m.consume_payload(first).has_value());
      const auto rest = m.pending_payload();
      NBDWIRE_FUZZ_CHECK(rest && rest->offset == p->offset + first && rest->length == p->length - first);
    }
    NBDWIRE_FUZZ_CHECK(m.consume_payload(p->length - first).has_value());
  }
}

/// drain() with a limit (drain_limit): at most that many bytes of the outbox, consumed in one
/// step each time it stops short; a payload reached within them goes out whole.
template <class Machine>
void drain_limited(Machine& m, bytes& out) {
  std::size_t budget = drain_limit;
  for (int guard = 0;; ++guard) {
    NBDWIRE_FUZZ_CHECK(guard < 1'000'000);
    const bytes_view o = m.pending_output();
    NBDWIRE_FUZZ_CHECK(o.size() <= nbdwire::outbox_size);
    const auto p = m.pending_payload();
    const std::size_t k = std::min(o.size(), budget);
    out.insert(out.end(), o.begin(), o.begin() + static_cast<std::ptrdiff_t>(k));
    m.consume_output(k);
    budget -= k;
    if (k < o.size()) {
      // What is left is what was not taken, at the front of the queue, and no payload is due.
      NBDWIRE_FUZZ_CHECK(m.pending_output().size() == o.size() - k && m.pending_output().data() == o.data() + k);
      NBDWIRE_FUZZ_CHECK(m.consume_payload(1).error() == nbdwire::errc::no_payload_due);
      return;
    }
    if (!p) return;
    NBDWIRE_FUZZ_CHECK(m.pending_output().empty());
    NBDWIRE_FUZZ_CHECK(p->length != 0);
    const std::uint64_t shown = std::min<std::uint64_t>(p->length, 65536);
    for (std::uint64_t i = 0; i < shown; ++i) out.push_back(pattern_byte(p->offset + i));
    NBDWIRE_FUZZ_CHECK(m.consume_payload(p->length).has_value());
  }
}

template <class Machine>
void drain(Machine& m, bytes& out) {
  if (drain_limit != 0) drain_limited(m, out);
  else if (drain_through_pieces) drain_pieces(m, out);
  else drain_whole(m, out);
}

/// Sends everything queued, limit or not: before a reply is checked, at the end of a run, and
/// when the machine is blocked behind bytes a limited drain left.
template <class Machine>
void flush(Machine& m, bytes& out) {
  const scoped_mode<std::size_t> none(drain_limit, 0);
  drain(m, out);
}

// ---- the trace (trace.hpp) --------------------------------------------------------------------
// Every machine a run drives reports its state changes here. Each move is a row of its table
// (or, refused by it, a move to failed), leaves the state the previous move reached, and has
// names; after each call feed() makes, the last move's phase is what state() reports.

template <class State, class Trigger>
struct move_check {
  bool seen = false;
  State last{};

  static void on_transition(void* context, State from, Trigger on, State to) noexcept;
  [[nodiscard]] nbdwire::state_trace<State, Trigger> trace() noexcept { return {&on_transition, this}; }
  /// A new machine: its first move starts the chain.
  void reset() noexcept { *this = move_check{}; }
};

inline const auto& table_of(nbdwire::client_state) noexcept { return nbdwire::detail::client_transitions; }
inline const auto& table_of(nbdwire::server_state) noexcept { return nbdwire::detail::server_transitions; }

template <class State, class Trigger>
void move_check<State, Trigger>::on_transition(void* context, State from, Trigger on, State to) noexcept {
  auto& c = *static_cast<move_check*>(context);
  NBDWIRE_FUZZ_CHECK(nbdwire::to_string(from) != "unknown" && nbdwire::to_string(on) != "unknown" &&
                     nbdwire::to_string(to) != "unknown");
  NBDWIRE_FUZZ_CHECK(nbdwire::detail::next_state(table_of(from), from, on).value_or(State::failed) == to);
  if (c.seen) NBDWIRE_FUZZ_CHECK(from == c.last);
  std::array<char, 96> line{};
  const std::size_t n = nbdwire::format_transition(std::span<char>(line), from, on, to);
  NBDWIRE_FUZZ_CHECK(n < line.size() && n == nbdwire::to_string(from).size() + nbdwire::to_string(on).size() +
                                                  nbdwire::to_string(to).size() + 5);
  c.seen = true;
  c.last = to;
}

inline move_check<nbdwire::client_state, nbdwire::client_trigger> client_moves;
inline move_check<nbdwire::server_state, nbdwire::server_trigger> server_moves;

inline auto& moves_of(const nbdwire::client&) noexcept { return client_moves; }
inline auto& moves_of(const nbdwire::server&) noexcept { return server_moves; }

/// The trace agrees with state() (once the machine has moved at all).
template <class Machine>
void check_trace(const Machine& m) {
  const auto& c = moves_of(m);
  if (c.seen) NBDWIRE_FUZZ_CHECK(nbdwire::phase_of(c.last) == m.state());
}

/// At start_tls, until tls_started(), the bytes are the TLS layer's: a copy of `m` fed any
/// fails with receive_while_tls_starting, and stays failed (later input dropped, end of input
/// the same error). The copy reports to `m`'s trace, which is put back where `m` is after.
template <class Machine>
void check_tls_twin(const Machine& m) {
  auto& c = moves_of(m);
  const auto saved = c;
  auto twin = std::make_unique<Machine>(m);
  const auto early = twin->receive(bytes_view{});
  NBDWIRE_FUZZ_CHECK(early.ev.kind == event_kind::failed && early.ev.error == nbdwire::errc::receive_while_tls_starting);
  check_trace(*twin);
  const std::array<std::byte, 3> more{};
  const auto later = twin->receive(more);
  NBDWIRE_FUZZ_CHECK(later.consumed == more.size() && later.ev.kind == event_kind::need_more);
  const auto eof = twin->on_eof();
  NBDWIRE_FUZZ_CHECK(eof.kind == event_kind::failed && eof.error == nbdwire::errc::receive_while_tls_starting);
  check_trace(*twin);
  c = saved;
}

/// Checks that apply to every event of either machine.
inline void check_event_common(const nbdwire::event& e, bytes_view chunk) {
  NBDWIRE_FUZZ_CHECK(e.data.size() <= 0xffffffffu);
  if (e.kind == event_kind::payload) {
    // Payload views the caller's input: never empty, never outside it.
    NBDWIRE_FUZZ_CHECK(!e.data.empty());
    NBDWIRE_FUZZ_CHECK(e.data.data() >= chunk.data() && e.data.data() + e.data.size() <= chunk.data() + chunk.size());
  } else {
    // Strings are bounded by max_string ("Conventions").
    NBDWIRE_FUZZ_CHECK(e.data.size() <= nbdwire::max_string);
    NBDWIRE_FUZZ_CHECK(e.text.size() <= nbdwire::max_string);
  }
  if (e.kind == event_kind::failed) NBDWIRE_FUZZ_CHECK(nbdwire::is_fatal(e.error));
  check_names(e);
}

/// The cuts of a split run: ascending positions strictly inside (0, n).
using cuts = std::vector<std::size_t>;

inline cuts every_byte(std::size_t n) {
  cuts c;
  for (std::size_t i = 1; i < n; ++i) c.push_back(i);
  return c;
}

/// A hash of an input (FNV-1a style from `seed`), for choices a run derives from its input.
inline std::uint64_t input_hash(bytes_view in, std::uint64_t seed) noexcept {
  for (std::byte b : in) seed = (seed ^ static_cast<std::uint8_t>(b)) * 0x100000001b3u;
  return seed;
}

/// Deterministic pseudo-random cuts seeded by the input itself (splitmix64).
inline cuts seeded_cuts(bytes_view in, std::size_t n) {
  std::uint64_t s = input_hash(in, 0x9e3779b97f4a7c15u ^ n);
  auto next = [&s]() {
    s += 0x9e3779b97f4a7c15u;
    std::uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
  };
  cuts c;
  if (n < 2) return c;
  const std::size_t mean = std::max<std::size_t>(1, n >> (next() % 6));
  for (std::size_t at = 1 + next() % (2 * mean); at < n; at += 1 + next() % (2 * mean)) c.push_back(at);
  return c;
}

/// Normalises cut positions read from fuzz input: ascending, unique, inside (0, n).
inline cuts normalise(cuts c, std::size_t n) {
  cuts out;
  for (auto& x : c) {
    if (n < 2) break;
    out.push_back(1 + x % (n - 1));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

/// The split invariant: whatever the cuts, the same events, output and end state. A run
/// that failed may have read a different part of the failing unit, so `consumed` is not
/// compared then.
inline void check_same(const run_log& whole, const run_log& split) {
  run_log a = whole, b = split;
  if (a.failed || b.failed) a.consumed = b.consumed = 0;
  if (a == b) return;
  std::fprintf(stderr, "split run differs: whole %zu events (%s) vs split %zu events (%s)\n", a.events.size(),
               std::string(nbdwire::to_string(a.final_error)).c_str(), b.events.size(),
               std::string(nbdwire::to_string(b.final_error)).c_str());
  const std::size_t k = std::min(a.events.size(), b.events.size());
  for (std::size_t i = 0; i < k; ++i)
    if (!(a.events[i] == b.events[i])) {
      std::fprintf(stderr, "first difference at event %zu: %s vs %s\n", i,
                   std::string(nbdwire::to_string(a.events[i].kind)).c_str(),
                   std::string(nbdwire::to_string(b.events[i].kind)).c_str());
      break;
    }
  if (a.output != b.output) std::fprintf(stderr, "outputs differ (%zu vs %zu bytes)\n", a.output.size(), b.output.size());
  NBDWIRE_FUZZ_FAIL("events are identical whatever the input splits");
}

// ---------------------------------------------------------------------------------------------
// The feed loop, shared by both machines. `Actor` reacts to events (sends options, submits
// requests, replies) and may take payload straight from the input (incoming_payload()).
// ---------------------------------------------------------------------------------------------

template <class Machine, class Actor>
run_log feed(Machine& m, Actor& actor, bytes_view stream, const cuts& at, bool eof_at_end) {
  run_log log;
  drain(m, log.output);
  bool terminal = false;
  std::size_t start = 0;
  for (std::size_t k = 0; k <= at.size() && !terminal; ++k) {
    const std::size_t end = k < at.size() ? at[k] : stream.size();
    const bytes_view whole_chunk = stream.subspan(start, end - start);
    bytes_view chunk = whole_chunk;
    start = end;
    int idle = 0;
    for (;;) {
      // The caller may read payload straight into its storage instead of taking events.
      if (const std::size_t direct = actor.take_direct(m, chunk, log); direct != 0) {
        chunk = chunk.subspan(direct);
        log.consumed += direct;
        idle = 0;
        continue;
      }
      const auto r = m.receive(chunk);
      NBDWIRE_FUZZ_CHECK(r.consumed <= chunk.size());  // consumed bytes never exceed input
      check_event_common(r.ev, chunk);
      chunk = chunk.subspan(r.consumed);
      log.consumed += r.consumed;
      const event_kind kind = r.ev.kind;
      if (kind != event_kind::failed) NBDWIRE_FUZZ_CHECK(m.error() == nbdwire::errc::ok);  // no silent failure
      NBDWIRE_FUZZ_CHECK(nbdwire::to_string(m.state()) != "unknown");
      check_trace(m);
      // The handshake style an adapter logs once the connection is ready has a name.
      if (kind == event_kind::ready) NBDWIRE_FUZZ_CHECK(nbdwire::to_string(m.negotiated().style) != "unknown");
      if (kind == event_kind::need_more) {
        // need_more means every byte given was used, unless the machine can take none.
        if (!chunk.empty()) NBDWIRE_FUZZ_CHECK(r.consumed == 0);
        actor.on_need_more(m, log);
        check_trace(m);
        drain(m, log.output);
        if (!chunk.empty() && r.consumed == 0) {
          // Input the machine cannot take now (e.g. a request while the 1997 framing waits
          // for a reply): the actor must have unblocked it, or this is a stall.
          NBDWIRE_FUZZ_CHECK(++idle < 4);
          continue;
        }
        break;
      }
      if (kind == event_kind::blocked && drain_limit != 0 && (!m.pending_output().empty() || m.pending_payload())) {
        // Blocked behind the bytes a limited drain left: the caller waits until it can send
        // them all, and tries again. The run that sends everything at once has no such block,
        // and must see the same events.
        flush(m, log.output);
        NBDWIRE_FUZZ_CHECK(++idle < 4 || r.consumed != 0);
        if (r.consumed != 0) idle = 0;
        continue;
      }
      append(log, r.ev);
      actor.on_event(m, r.ev, log);
      check_trace(m);
      drain(m, log.output);
      if (kind == event_kind::failed) {
        NBDWIRE_FUZZ_CHECK(m.error() == r.ev.error);
        // A terminal error is reported once: later input is dropped (need_more, all of it
        // consumed), the machine stays failed with the same errc, and no loop can spin on it.
        const auto again = m.receive(chunk);
        NBDWIRE_FUZZ_CHECK(again.consumed == chunk.size() && again.ev.kind == event_kind::need_more);
        NBDWIRE_FUZZ_CHECK(m.error() == r.ev.error && m.finished());
        const auto eof = m.on_eof();
        NBDWIRE_FUZZ_CHECK(eof.kind == event_kind::failed && eof.error == r.ev.error);
        log.failed = true;
        terminal = true;
        break;
      }
      if (kind == event_kind::closed || kind == event_kind::disconnected) {
        // End of input, reported once: later bytes are dropped, never read as messages.
        const auto again = m.receive(chunk);
        NBDWIRE_FUZZ_CHECK(again.consumed == chunk.size() && again.ev.kind == event_kind::need_more);
        NBDWIRE_FUZZ_CHECK(m.finished());
        actor.on_closed(m, log);
        drain(m, log.output);
        // The peer closing the connection afterwards is no error: closed, and nothing changes.
        const auto eof = m.on_eof();
        NBDWIRE_FUZZ_CHECK(eof.kind == event_kind::closed && m.error() == nbdwire::errc::ok && m.finished());
        terminal = true;
        break;
      }
      if (kind == event_kind::blocked) {
        // The actor drained output (and replied): the next call must make progress.
        NBDWIRE_FUZZ_CHECK(++idle < 4 || r.consumed != 0);
        if (r.consumed != 0) idle = 0;
      } else {
        idle = 0;
      }
    }
  }
  if (!terminal && eof_at_end) {
    const nbdwire::event e = m.on_eof();
    check_event_common(e, {});
    append(log, e);
    NBDWIRE_FUZZ_CHECK(e.kind == event_kind::closed || e.kind == event_kind::disconnected ||
                       e.kind == event_kind::failed);
    if (e.kind == event_kind::failed) {
      NBDWIRE_FUZZ_CHECK(m.error() == e.error);
      log.failed = true;
    }
    actor.on_closed(m, log);
    drain(m, log.output);
  }
  flush(m, log.output);
  check_trace(m);
  log.final_error = m.error();
  return log;
}

}  // namespace nbdwire_fuzz
