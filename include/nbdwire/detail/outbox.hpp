// SPDX-License-Identifier: MIT
// nbdwire detail: the bounded outbox a machine writes headers into, with payload marks.
//
// A mark says "after the bytes before me, the caller sends `length` payload bytes of its own
// before any later byte of the outbox". So the caller can send header + payload with one
// writev, payload straight from its buffers, and the machine never copies a payload.
#pragma once

#include <algorithm>  // std::copy_n, std::copy
#include <array>      // std::array
#include <cstddef>    // std::byte, std::size_t
#include <cstdint>    // fixed-width integers
#include <optional>   // std::optional: the payload due, if any
#include <span>       // std::span: output pieces
#include <string_view>  // utf8_prefix

#include "nbdwire/bytes.hpp"
#include "nbdwire/config.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "nbdwire/wire.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

class outbox {
 public:
  /// Room for `n` more bytes and `marks` payload marks, compacting if that helps.
  [[nodiscard]] bool room_for(std::size_t n, std::size_t marks = 0) noexcept {
    if (marks > max_payload_marks - marks_) return false;
    if (tail_ + n <= buf_.size()) return true;
    compact();
    return tail_ + n <= buf_.size();
  }

  template <class Record>
  void put_record(const Record& r) noexcept {
    tail_ += encode_into(r, mutable_bytes{buf_}.subspan(tail_));
  }
  void put_zeroes(std::size_t n) noexcept {
    std::fill_n(buf_.begin() + static_cast<std::ptrdiff_t>(tail_), n, std::byte{0});
    tail_ += n;
  }

  /// The free bytes after what is queued, for an encoder to write into (codec/): commit(n)
  /// then queues the first `n` of them. The caller checked room_for() first.
  [[nodiscard]] mutable_bytes writable() noexcept { return mutable_bytes{buf_}.subspan(tail_); }
  void commit(std::size_t n) noexcept { tail_ += std::min(n, buf_.size() - tail_); }

  /// Reserves a payload of `p.length` bytes right after the bytes put so far.
  void put_mark(payload_span p) noexcept {
    mark_[(first_mark_ + marks_) % max_payload_marks] = {tail_, p};
    ++marks_;
  }

  /// Bytes to send now: up to the first payload mark.
  [[nodiscard]] bytes_view pending() const noexcept {
    const std::size_t end = marks_ ? mark_[first_mark_].at : tail_;
    return {buf_.data() + head_, end - head_};
  }

  /// The payload the caller must send right after pending(), if one is due there.
  [[nodiscard]] std::optional<payload_span> payload() const noexcept {
    if (!marks_) return std::nullopt;
    return mark_[first_mark_].p;
  }

  /// Everything queued, in wire order, as up to `out.size()` pieces: bytes of the outbox,
  /// then the payload the caller sends after them (if any). Returns how many were written.
  [[nodiscard]] std::size_t pieces(std::span<output_piece> out) const noexcept {
    std::size_t n = 0, at = head_;
    for (std::size_t i = 0; i < marks_ && n < out.size(); ++i) {
      const mark& m = mark_[(first_mark_ + i) % max_payload_marks];
      out[n++] = {bytes_view{buf_.data() + at, m.at - at}, m.p};
      at = m.at;
    }
    if (n < out.size() && at < tail_) out[n++] = {bytes_view{buf_.data() + at, tail_ - at}, std::nullopt};
    return n;
  }

  /// Bytes that can still be queued (after compaction).
  [[nodiscard]] std::size_t free_space() const noexcept { return buf_.size() - (tail_ - head_); }

  /// Drops `n` sent bytes (n ≤ pending().size(); larger values are clamped).
  void consume(std::size_t n) noexcept {
    head_ += std::min(n, pending().size());
    if (head_ == tail_ && !marks_) head_ = tail_ = 0;
  }

  /// Drops `n` sent payload bytes of the first mark.
  result<void> consume_payload(std::uint64_t n) noexcept {
    if (!marks_ || mark_[first_mark_].at != head_) return errc::no_payload_due;
    auto& m = mark_[first_mark_];
    if (n > m.p.length) return errc::payload_overrun;
    m.p.length -= n;
    m.p.offset += n;
    if (m.p.length == 0) {
      first_mark_ = (first_mark_ + 1) % max_payload_marks;
      --marks_;
      if (head_ == tail_ && !marks_) head_ = tail_ = 0;
    }
    return {};
  }


 private:
  void compact() noexcept {
    if (head_ == 0) return;
    std::copy(buf_.begin() + static_cast<std::ptrdiff_t>(head_), buf_.begin() + static_cast<std::ptrdiff_t>(tail_),
              buf_.begin());
    for (std::size_t i = 0; i < marks_; ++i) mark_[(first_mark_ + i) % max_payload_marks].at -= head_;
    tail_ -= head_;
    head_ = 0;
  }

  struct mark {
    std::size_t at = 0;  ///< outbox position the payload goes after
    payload_span p{};
  };
  std::array<std::byte, outbox_size> buf_{};
  std::array<mark, max_payload_marks> mark_{};
  std::size_t head_ = 0, tail_ = 0, first_mark_ = 0, marks_ = 0;
};

/// The longest prefix of `s` of at most `n` bytes that does not cut a UTF-8 character.
[[nodiscard]] constexpr std::string_view utf8_prefix(std::string_view s, std::size_t n) noexcept {
  if (n >= s.size()) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0u) == 0x80u) --n;  // s[n] continues a character
  return std::string_view{s.data(), n};  // substr() could throw: not for firmware
}

/// Accumulates at most `N` bytes of one message while they arrive in pieces: a fixed-size
/// header (the stash), an export name, an option reply body. Payloads never pass through it.
/// Bounded: the machines check lengths before filling it.
template <std::size_t N>
class body_buffer {
 public:
  std::size_t fill(bytes_view in, std::size_t want) noexcept {
    const std::size_t take = want > have_ ? std::min(in.size(), want - have_) : 0;
    std::copy_n(in.begin(), take, buf_.begin() + static_cast<std::ptrdiff_t>(have_));
    have_ += take;
    return take;
  }
  [[nodiscard]] std::size_t size() const noexcept { return have_; }
  [[nodiscard]] bytes_view view() const noexcept { return {buf_.data(), have_}; }
  void clear() noexcept { have_ = 0; }
  static constexpr std::size_t capacity = N;

 private:
  std::array<std::byte, N> buf_{};
  std::size_t have_ = 0;
};

/// The header stash: big enough for the largest fixed record (the oldstyle greeting).
using stash = body_buffer<max_header_size>;

/// One permitted transition of a machine's state table.
template <class State, class Trigger>
struct transition {
  State from;
  Trigger on;
  State to;
};

/// Looks up the table; std::nullopt when the pair is not permitted.
template <class State, class Trigger, std::size_t N>
[[nodiscard]] constexpr std::optional<State> next_state(const std::array<transition<State, Trigger>, N>& table,
                                                        State from, Trigger on) noexcept {
  for (const auto& t : table)
    if (t.from == from && t.on == on) return t.to;
  return std::nullopt;
}

/// Table invariants checked at compile time: every state but `initial` is entered by some
/// transition, and the terminal states have no way out.
template <class State, class Trigger, std::size_t N>
[[nodiscard]] constexpr bool table_well_formed(const std::array<transition<State, Trigger>, N>& table,
                                               std::size_t state_count, State initial,
                                               std::initializer_list<State> terminal) noexcept {
  for (std::size_t s = 0; s < state_count; ++s) {
    const auto st = static_cast<State>(s);
    bool entered = st == initial, leaves = false;
    for (const auto& t : table) {
      if (t.to == st && t.from != st) entered = true;
      if (t.from == st) leaves = true;
    }
    bool is_terminal = false;
    for (auto x : terminal) is_terminal = is_terminal || x == st;
    if (!entered) return false;
    if (is_terminal == leaves) return false;  // terminal states absorb, others have an exit
  }
  return true;
}

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
