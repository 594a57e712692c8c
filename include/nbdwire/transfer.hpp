// SPDX-License-Identifier: MIT
// nbdwire: helpers every adapter needs to move data, without I/O and without a heap.
//
//   max_request_length(negotiated, command)  the longest single request of a command
//   split_range / split_requests            a range cut into aligned requests (range-for)
//   send_plan<N>                            queued output as N gather segments for one
//                                           writev(), and the bookkeeping after it
//
// Memory: split_range is a few integers. send_plan<N> holds N segments and N steps, about
// 100·N bytes (about 1.6 KiB for the default N = 16), usually on the stack for one send.
#pragma once

#include <algorithm>    // std::min
#include <array>        // std::array: segments and steps
#include <cstddef>      // std::byte, std::size_t
#include <cstdint>      // fixed-width integers
#include <iterator>     // std::forward_iterator_tag
#include <limits>       // std::numeric_limits
#include <optional>     // std::optional: the payload a plan stops at
#include <span>         // std::span: segments, pieces
#include <type_traits>  // std::is_nothrow_invocable_v

#include "nbdwire/bytes.hpp"
#include "nbdwire/config.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

// ---- the longest request ------------------------------------------------------------------

/// The largest length one request of command `c` may carry on connection `n`, rounded down
/// to a multiple of the minimum block size (spec "Size constraints": offset and length MUST
/// be multiples of it). 0 for commands without a range (FLUSH, DISC) and for unknown ones.
/// - READ, WRITE: at most the maximum payload (a client MUST NOT send a WRITE payload, or a
///   simple-reply READ, above it; 0xffffffff "no fixed limit" stays the 32-bit field's cap).
///   A DF READ without extended headers is also capped at 2^32 - 9: one compact chunk holds
///   8 bytes of offset and at most that much data ("NBD_CMD_FLAG_DF").
/// - TRIM, WRITE_ZEROES, CACHE: payload-less commands MAY exceed the maximum payload, so the
///   limit is the length field: 32 bits compact, 64 bits with extended headers [ext].
/// - BLOCK_STATUS: 32 bits even with extended headers. The length is only a hint (servers
///   answer with what they have), and client::block_status() takes a 32-bit length.
/// The 1997 framing also needs offset + length ≤ 2^32 (client::submit refuses more).
[[nodiscard]] constexpr std::uint64_t max_request_length(const negotiated& n, command c,
                                                         std::uint16_t flags = 0) noexcept {
  constexpr std::uint64_t u32 = 0xffffffffu;
  std::uint64_t cap = 0;
  switch (c) {
    case command::read:
    case command::write:
      cap = n.block_size.maximum;
      if (c == command::read && (flags & command_flag::df) && !n.extended_headers) cap = std::min(cap, u32 - 8);
      break;
    case command::trim:
    case command::write_zeroes:
    case command::cache:
      cap = n.extended_headers && n.style != handshake_style::legacy_1997 ? std::numeric_limits<std::uint64_t>::max()
                                                                           : u32;
      break;
    case command::block_status: cap = u32; break;
    default: return 0;
  }
  const std::uint64_t min = is_power_of_two(n.block_size.minimum) ? n.block_size.minimum : 1;
  return round_down_pow2(cap, min);
}

// ---- splitting a range into requests ------------------------------------------------------

/// One request's share of a range.
struct range_piece {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  friend constexpr bool operator==(const range_piece&, const range_piece&) = default;
};

/// [offset, offset + length) cut into pieces of at most `max_piece` bytes. Every cut falls on
/// a multiple of `preferred` when one lies in reach, else on a multiple of `minimum`, counted
/// from export offset 0, so the pieces after the first start aligned ("Size constraints":
/// lengths MUST be multiples of the minimum and SHOULD be of the preferred block size). With
/// max_piece below `minimum` (no aligned cut possible) pieces are exactly max_piece long.
/// Range-for-able; holds five integers.
class split_range {
 public:
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = range_piece;
    using difference_type = std::ptrdiff_t;
    using pointer = const range_piece*;
    using reference = range_piece;

    constexpr iterator() noexcept = default;
    constexpr iterator(const split_range* r, std::uint64_t at) noexcept : r_(r), at_(at) {}
    [[nodiscard]] constexpr range_piece operator*() const noexcept { return {at_, r_->cut_after(at_) - at_}; }
    constexpr iterator& operator++() noexcept {
      at_ = r_->cut_after(at_);
      return *this;
    }
    constexpr iterator operator++(int) noexcept {
      iterator old = *this;
      ++*this;
      return old;
    }
    [[nodiscard]] constexpr bool operator==(const iterator& o) const noexcept { return at_ == o.at_; }

   private:
    const split_range* r_ = nullptr;
    std::uint64_t at_ = 0;
  };

  /// `offset + length` must not overflow (a range inside an export never does). `minimum`
  /// and `preferred` are block sizes, powers of two ("Size constraints"); another value
  /// counts as 1 (minimum) or as absent (preferred).
  constexpr split_range(std::uint64_t offset, std::uint64_t length, std::uint64_t max_piece,
                        std::uint32_t minimum = 1, std::uint32_t preferred = 0) noexcept
      : begin_(offset),
        end_(offset + length),
        max_(max_piece ? max_piece : 1),
        min_(is_power_of_two(minimum) ? minimum : 1),
        pref_(preferred > min_ && is_power_of_two(preferred) ? preferred : 0) {}

  [[nodiscard]] constexpr iterator begin() const noexcept { return {this, begin_}; }
  [[nodiscard]] constexpr iterator end() const noexcept { return {this, end_}; }
  [[nodiscard]] constexpr bool empty() const noexcept { return begin_ == end_; }
  /// Number of pieces (walks them: O(pieces)).
  [[nodiscard]] constexpr std::size_t size() const noexcept {
    std::size_t n = 0;
    for (std::uint64_t at = begin_; at != end_; at = cut_after(at)) ++n;
    return n;
  }

 private:
  /// Where the piece that starts at `at` ends.
  [[nodiscard]] constexpr std::uint64_t cut_after(std::uint64_t at) const noexcept {
    if (end_ - at <= max_) return end_;
    const std::uint64_t limit = at + max_;
    if (max_ < min_) return limit;
    if (pref_) {
      const std::uint64_t c = round_down_pow2(limit, pref_);
      if (c > at) return c;
    }
    const std::uint64_t c = round_down_pow2(limit, min_);
    return c > at ? c : limit;
  }

  std::uint64_t begin_, end_, max_;
  std::uint32_t min_, pref_;
};

/// The requests of command `c` that cover [offset, offset + length) on connection `n`:
/// at most max_request_length(n, c, flags), also at most `cap` (0: no cap of the caller's),
/// cut on the export's block sizes.
[[nodiscard]] constexpr split_range split_requests(const negotiated& n, command c, std::uint64_t offset,
                                                   std::uint64_t length, std::uint64_t cap = 0,
                                                   std::uint16_t flags = 0) noexcept {
  std::uint64_t max = max_request_length(n, c, flags);
  const std::uint64_t min = is_power_of_two(n.block_size.minimum) ? n.block_size.minimum : 1;
  if (cap != 0 && cap < max) max = std::max<std::uint64_t>(round_down_pow2(cap, min), min);
  return split_range(offset, length, max, n.block_size.minimum, n.block_size.preferred);
}

// ---- gathered sends -----------------------------------------------------------------------

/// One contiguous run of bytes to send: fills an iovec as {base, len}.
struct send_segment {
  const std::byte* base = nullptr;
  std::size_t len = 0;
};

/// A machine's queued output (outbox bytes and the caller's payloads, in wire order) as up to
/// `MaxSegments` segments for one gathered write, and the bookkeeping afterwards:
///
///     nbdwire::send_plan plan(machine, [&](const nbdwire::payload_span& p) {
///       return nbdwire::bytes_view{my_data_at(p.offset), p.length};  // the caller's memory
///     });
///     // fill iovecs from plan.segments(), n = writev(...)
///     plan.advance(machine, n);  // consumes outbox and payload bytes, partial writes too
///
/// `Machine` is nbdwire::client or nbdwire::server (anything with pending_pieces(),
/// consume_output() and consume_payload()). The mapper returns the bytes of payload `p`
/// (cookie, export offset, length); fewer than p.length (or none) ends the plan there, with
/// the rest of the payload in stopped_at(). A plan built without a mapper stops in front of
/// the first payload: its segments are header bytes only, and the caller sends the payload
/// another way (sendfile, splice) and reports it with machine.consume_payload(). The same
/// holds for pending_output()/pending_payload(), which a plan is built from.
///
/// A plan is a snapshot: build it, write, advance, with no other call on the machine in
/// between (queueing more output may move the outbox bytes the segments point at). Then
/// build the next one.
template <std::size_t MaxSegments = 16>
class send_plan {
  static_assert(MaxSegments >= 1);

 public:
  /// Header bytes only: stops at the first payload.
  template <class Machine>
  explicit send_plan(const Machine& m) noexcept {
    auto none = [](const payload_span&) noexcept { return bytes_view{}; };
    build(m, none);
  }

  /// Header bytes and payloads, each payload mapped to the caller's memory by `map`:
  /// `bytes_view map(const payload_span&)`.
  template <class Machine, class Map>
  send_plan(const Machine& m, Map&& map) noexcept(std::is_nothrow_invocable_v<Map&, const payload_span&>) {
    build(m, map);
  }

  /// What to write, in order.
  [[nodiscard]] std::span<const send_segment> segments() const noexcept { return {segments_.data(), nsegments_}; }
  /// Sum of the segments' lengths.
  [[nodiscard]] std::size_t size() const noexcept { return bytes_; }
  /// Nothing to write and nothing to account (a zero-length payload still needs advance()).
  [[nodiscard]] bool empty() const noexcept { return nsteps_ == 0; }
  /// The payload (what is left of it) that follows the planned bytes on the wire but is not
  /// in them: no mapper, the mapper gave fewer bytes, or the segments ran out. The caller
  /// sends it next (another plan, or sendfile). A hint for MSG_MORE / TCP_CORK, too.
  [[nodiscard]] const std::optional<payload_span>& stopped_at() const noexcept { return stopped_at_; }

  /// True when the plan holds all queued output; false when more follows it (a hint for
  /// MSG_MORE / TCP_CORK).
  [[nodiscard]] bool complete() const noexcept { return complete_; }

  /// Accounts `written` bytes (what writev() returned, ≤ size()) to the machine, in wire
  /// order: outbox bytes with consume_output(), payload bytes with consume_payload(), a write
  /// that ends inside either included. Zero-length payloads reached are consumed as well.
  template <class Machine>
  result<void> advance(Machine& m, std::size_t written) noexcept {
    return advance(m, written, [](const payload_span&) noexcept {});
  }

  /// The same, calling `on_sent(const payload_span&)` for every payload sent to its end
  /// (the span as it was when the plan was built: cookie, offset, length still owed then).
  template <class Machine, class OnSent>
  result<void> advance(Machine& m, std::size_t written, OnSent&& on_sent) {
    if (written > bytes_) return errc::payload_overrun;
    for (std::size_t i = 0; i < nsteps_; ++i) {
      const step& s = steps_[i];
      if (s.len != 0 && written == 0) break;
      const std::size_t take = std::min(written, s.len);
      written -= take;
      if (!s.payload) {
        m.consume_output(take);
        if (take < s.len) break;
        continue;
      }
      if (const auto r = m.consume_payload(take); !r) return r;
      if (take < s.len) break;
      if (s.completes) on_sent(payload_span{s.cookie, s.offset, s.length, s.tag});
    }
    nsteps_ = nsegments_ = bytes_ = 0;  // spent: build the next plan
    stopped_at_.reset();
    complete_ = false;
    return {};
  }

 private:
  // Trivial, so the step array is not written when a plan is built (it is a few KiB for a
  // large plan, and a server builds a plan per send): only steps_[0, nsteps_) are ever read.
  struct step {
    bool payload;
    bool completes;  ///< consuming all of it finishes the payload
    std::size_t len;
    std::uint64_t cookie, offset, length, tag;  ///< the payload_span as it was
  };
  static constexpr step bytes_step(std::size_t len) noexcept { return {false, false, len, 0, 0, 0, 0}; }
  static constexpr step payload_step(bool completes, std::size_t len, const payload_span& p) noexcept {
    return {true, completes, len, p.cookie, p.offset, p.length, p.tag};
  }

  template <class Machine, class Map>
  void build(const Machine& m, Map& map) {
    std::array<output_piece, MaxSegments> pieces{};
    const std::size_t n = m.pending_pieces(pieces);
    complete_ = false;
    for (std::size_t i = 0; i < n; ++i) {
      const output_piece& pc = pieces[i];
      if (!pc.bytes.empty()) {
        if (!add(bytes_step(pc.bytes.size()), pc.bytes.data())) return;
      }
      if (!pc.payload) continue;
      const payload_span p = *pc.payload;
      if (p.length == 0) {
        if (!add(payload_step(true, 0, p), nullptr)) return;
        continue;
      }
      const bytes_view data = map(p);
      const std::size_t most = static_cast<std::size_t>(
          std::min<std::uint64_t>(p.length, std::numeric_limits<std::size_t>::max() - bytes_));
      const std::size_t len = std::min(data.size(), most);
      if (len == 0 || !add(payload_step(len == p.length, len, p), data.data())) {
        stopped_at_ = p;
        return;
      }
      if (len < p.length) {
        stopped_at_ = payload_span{p.cookie, p.offset + len, p.length - len, p.tag};
        return;
      }
    }
    complete_ = n < pieces.size();
  }

  /// Appends a step (and its segment when it has bytes); false when there is no room.
  bool add(const step& s, const std::byte* base) noexcept {
    if (nsteps_ == steps_.size() || (s.len != 0 && nsegments_ == MaxSegments)) return false;
    steps_[nsteps_++] = s;
    if (s.len != 0) {
      segments_[nsegments_++] = {base, s.len};
      bytes_ += s.len;
    }
    return true;
  }

  std::array<send_segment, MaxSegments> segments_;
  std::array<step, 2 * MaxSegments> steps_;  // each piece: its bytes, then its payload (not zeroed)
  std::size_t nsegments_ = 0, nsteps_ = 0, bytes_ = 0;
  std::optional<payload_span> stopped_at_{};
  bool complete_ = false;
};

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
