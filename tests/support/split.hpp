// SPDX-License-Identifier: MIT
// Test support: feed one byte sequence to a machine whole, one byte at a time, split at every
// single index, and at seeded random splits, and check that every run reports the same
// events (payload fragments merged), produces the same output and ends with the same errc.
// A "machine" is anything with receive(bytes_view) -> receive_result, on_eof(),
// pending_output()/consume_output(), pending_payload()/consume_payload() and error().
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "nbdwire/events.hpp"
#include "support/hex.hpp"

namespace nbdwire_test {

/// One event with its views copied, so it outlives the call that produced it.
struct recorded {
  nbdwire::event_kind kind = nbdwire::event_kind::need_more;
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
  bytes data;
  bytes text;
  std::uint64_t length = 0;        ///< read_hole, extent
  std::uint32_t context_id = 0;    ///< meta_context, extent
  std::uint64_t extent_flags = 0;  ///< extent
  bool has_offset = false;         ///< error_chunk
  bool operator==(const recorded&) const = default;
};

inline recorded record(const nbdwire::event& e) {
  return {e.kind,       e.error,       e.option,
          e.reply,      e.info,        e.flags,
          e.export_size, e.transmission_flags, e.block_size,
          e.req,        e.status,      e.offset,
          bytes(e.data.begin(), e.data.end()), bytes(e.text.begin(), e.text.end()),
          e.length,     e.context_id,  e.extent_flags,
          e.has_offset};
}

/// Appends an event; a payload fragment that continues the previous one is merged into it,
/// since how the input was split decides the fragment sizes.
inline void append(std::vector<recorded>& log, const nbdwire::event& e) {
  if (e.kind == nbdwire::event_kind::payload && !log.empty()) {
    recorded& last = log.back();
    if (last.kind == nbdwire::event_kind::payload && last.req == e.req &&
        last.offset + last.data.size() == e.offset) {
      last.data.insert(last.data.end(), e.data.begin(), e.data.end());
      return;
    }
  }
  log.push_back(record(e));
}

inline std::string describe(const recorded& r) {
  std::ostringstream s;
  s << nbdwire::to_string(r.kind);
  switch (r.kind) {
    case nbdwire::event_kind::failed: s << " error=" << nbdwire::to_string(r.error); break;
    case nbdwire::event_kind::greeting: s << " flags=" << r.flags; break;
    case nbdwire::event_kind::option_done:
    case nbdwire::event_kind::option_refused:
    case nbdwire::event_kind::option_answered:
      s << " option=" << r.option << " reply=" << nbdwire::to_string(r.reply) << " data=" << to_hex(r.data);
      break;
    case nbdwire::event_kind::info:
      s << " info=" << nbdwire::to_string(r.info) << " size=" << r.export_size << " tflags=" << r.transmission_flags
        << " bs=" << r.block_size.minimum << "/" << r.block_size.preferred << "/" << r.block_size.maximum
        << " data=" << to_hex(r.data);
      break;
    case nbdwire::event_kind::export_listed: s << " name=" << to_hex(r.data) << " text=" << to_hex(r.text); break;
    case nbdwire::event_kind::request:
    case nbdwire::event_kind::request_refused:
    case nbdwire::event_kind::reply:
    case nbdwire::event_kind::payload:
      s << " cookie=" << r.req.cookie << " type=" << r.req.type << " flags=" << r.req.flags
        << " offset=" << r.req.offset << " length=" << r.req.length << " status=" << nbdwire::to_string(r.status);
      if (r.kind == nbdwire::event_kind::payload) s << " at=" << r.offset << " bytes=" << r.data.size();
      break;
    case nbdwire::event_kind::meta_context: s << " id=" << r.context_id << " name=" << to_hex(r.data); break;
    case nbdwire::event_kind::read_hole:
      s << " cookie=" << r.req.cookie << " at=" << r.offset << " length=" << r.length;
      break;
    case nbdwire::event_kind::extent:
      s << " cookie=" << r.req.cookie << " ctx=" << r.context_id << " at=" << r.offset << " length=" << r.length
        << " flags=" << r.extent_flags;
      break;
    case nbdwire::event_kind::error_chunk:
      s << " cookie=" << r.req.cookie << " status=" << nbdwire::to_string(r.status) << " message=" << to_hex(r.data);
      if (r.has_offset) s << " at=" << r.offset;
      break;
    default: break;
  }
  return s.str();
}

inline std::string describe(const std::vector<recorded>& log) {
  std::string s;
  for (const auto& r : log) s += "  " + describe(r) + "\n";
  return s;
}

/// Deterministic export contents, used wherever a side must supply payload bytes.
inline std::byte pattern_byte(std::uint64_t offset) noexcept {
  return static_cast<std::byte>((offset * 131u + 7u) & 0xffu);
}
inline bytes pattern(std::uint64_t offset, std::uint64_t length) {
  bytes b(static_cast<std::size_t>(length));
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = pattern_byte(offset + i);
  return b;
}

/// Everything one run produced.
struct run_log {
  std::vector<recorded> events;
  bytes output;                         ///< bytes the machine asked to send (payloads included)
  nbdwire::errc final_error = nbdwire::errc::ok;
  std::size_t consumed = 0;             ///< input bytes the machine took
  bool stuck = false;                   ///< blocked without progress
  bool leftover_after_need_more = false;///< need_more reported with input still unused
  bool operator==(const run_log&) const = default;
};

/// Moves all pending output of `m` into `out`; payload marks are filled from `source`.
template <class Machine>
void drain(Machine& m, bytes& out, const std::function<bytes(nbdwire::payload_span)>& source) {
  for (;;) {
    const auto o = m.pending_output();
    if (!o.empty()) {
      out.insert(out.end(), o.begin(), o.end());
      m.consume_output(o.size());
      continue;
    }
    if (const auto p = m.pending_payload()) {
      const bytes data = source(*p);
      out.insert(out.end(), data.begin(), data.end());
      const auto r = m.consume_payload(data.size());
      REQUIRE(r.has_value());
      continue;
    }
    return;
  }
}

template <class Machine>
using handler_fn = std::function<void(Machine&, const nbdwire::event&)>;

struct split_options {
  bool eof_at_end = false;       ///< call on_eof() after the input and record its event
  int random_runs = 24;          ///< seeded random splits
  std::size_t every_index_limit = 4096;  ///< inputs longer than this get a stride
};

inline bytes default_source(nbdwire::payload_span p) { return pattern(p.offset, p.length); }

/// Drives a fresh machine over `input` cut at `cuts` (ascending positions). The handler sees
/// every event except need_more and may call the machine (reply(), go(), ...); output is
/// drained after every call.
template <class Factory>
auto run_cuts(const Factory& make, nbdwire::bytes_view input, const std::vector<std::size_t>& cuts,
              const handler_fn<typename std::invoke_result_t<Factory>::element_type>& handler,
              const split_options& opt = {},
              const std::function<bytes(nbdwire::payload_span)>& source = default_source) {
  auto m = make();
  run_log log;
  drain(*m, log.output, source);  // e.g. a server greeting queued at construction
  bool terminal = false;
  std::size_t start = 0;
  for (std::size_t k = 0; k <= cuts.size() && !terminal; ++k) {
    const std::size_t end = k < cuts.size() ? cuts[k] : input.size();
    nbdwire::bytes_view chunk = input.subspan(start, end - start);
    start = end;
    int idle = 0;
    for (;;) {
      const auto r = m->receive(chunk);
      chunk = chunk.subspan(r.consumed);
      log.consumed += r.consumed;
      const auto kind = r.ev.kind;
      if (kind != nbdwire::event_kind::need_more) {
        append(log.events, r.ev);
        if (handler) handler(*m, r.ev);
      }
      drain(*m, log.output, source);
      if (kind == nbdwire::event_kind::need_more) {
        if (chunk.empty()) break;
        // A contract violation, recorded; the rest is still fed (a second call in a row
        // that takes nothing ends the piece) so later events can be checked too.
        log.leftover_after_need_more = true;
        if (r.consumed == 0 && ++idle > 1) break;
        continue;
      }
      if (kind == nbdwire::event_kind::failed || kind == nbdwire::event_kind::closed ||
          kind == nbdwire::event_kind::disconnected) {
        // Terminal for input: stop feeding (a failed machine would repeat itself forever).
        if (kind == nbdwire::event_kind::failed || m->receive({}).ev.kind != nbdwire::event_kind::need_more) {
          terminal = true;
          break;
        }
      }
      if (kind == nbdwire::event_kind::blocked && r.consumed == 0 && ++idle > 3) {
        log.stuck = true;
        terminal = true;
        break;
      }
      if (kind != nbdwire::event_kind::blocked) idle = 0;
    }
  }
  if (opt.eof_at_end && !terminal) {
    append(log.events, m->on_eof());
    drain(*m, log.output, source);
  }
  log.final_error = m->error();
  return log;
}

/// Whole input, byte by byte, every single split index, and seeded random splits: every run
/// must report the same events, output and final errc. Returns the whole-input run.
template <class Factory>
run_log feed_all_ways(const Factory& make, nbdwire::bytes_view input,
                      const handler_fn<typename std::invoke_result_t<Factory>::element_type>& handler = {},
                      const split_options& opt = {},
                      const std::function<bytes(nbdwire::payload_span)>& source = default_source) {
  const run_log whole = run_cuts(make, input, {}, handler, opt, source);
  CHECK_FALSE(whole.stuck);
  CHECK_FALSE(whole.leftover_after_need_more);
  const bool failed = !whole.events.empty() && whole.events.back().kind == nbdwire::event_kind::failed;
  auto same = [&](const run_log& other, const std::string& how) {
    run_log a = whole, b = other;
    if (failed) a.consumed = b.consumed = 0;  // how far a failing unit was read may vary
    if (a == b) return true;
    FAIL_CHECK("split run differs (" << how << ")\nwhole:\n"
                                     << describe(whole.events) << "final " << nbdwire::to_string(whole.final_error)
                                     << " consumed " << whole.consumed << " output " << to_hex(whole.output)
                                     << "\nsplit:\n"
                                     << describe(other.events) << "final " << nbdwire::to_string(other.final_error)
                                     << " consumed " << other.consumed << " output " << to_hex(other.output)
                                     << std::string(other.stuck ? " (stuck)" : "")
                                     << std::string(other.leftover_after_need_more ? " (need_more with input left)" : ""));
    return false;
  };
  const std::size_t n = input.size();
  if (n > 1) {
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < n; ++i) every.push_back(i);
    if (!same(run_cuts(make, input, every, handler, opt, source), "one byte at a time")) return whole;
    const std::size_t stride = n > opt.every_index_limit ? n / opt.every_index_limit + 1 : 1;
    for (std::size_t i = 1; i < n; i += stride)
      if (!same(run_cuts(make, input, {i}, handler, opt, source), "split at " + std::to_string(i))) return whole;
  }
  for (int seed = 1; seed <= opt.random_runs && n > 1; ++seed) {
    std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));
    // Mix tiny and large pieces: the mean piece size varies with the seed.
    const std::size_t mean = std::max<std::size_t>(1, n >> (seed % 6));
    std::uniform_int_distribution<std::size_t> piece(1, 2 * mean);
    std::vector<std::size_t> cuts;
    for (std::size_t at = piece(rng); at < n; at += piece(rng)) cuts.push_back(at);
    if (!same(run_cuts(make, input, cuts, handler, opt, source), "random seed " + std::to_string(seed)))
      return whole;
  }
  return whole;
}

/// The event kinds of a log, for compact assertions.
inline std::vector<nbdwire::event_kind> kinds(const std::vector<recorded>& log) {
  std::vector<nbdwire::event_kind> k;
  for (const auto& r : log) k.push_back(r.kind);
  return k;
}

inline std::string kinds_string(const std::vector<recorded>& log) {
  std::string s;
  for (const auto& r : log) {
    if (!s.empty()) s += ",";
    s += std::string(nbdwire::to_string(r.kind));
  }
  return s;
}

}  // namespace nbdwire_test
