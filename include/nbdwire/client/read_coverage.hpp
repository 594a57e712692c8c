// SPDX-License-Identifier: MIT
// nbdwire client: which bytes of a READ its content chunks covered (checklist 3.4: inside the
// request, no overlap, at most one chunk with DF, every byte covered on success), as at most
// max_read_ranges merged ranges.
#pragma once

#include <array>    // std::array: the ranges
#include <cstddef>  // std::size_t
#include <cstdint>  // fixed-width integers

#include "nbdwire/bytes.hpp"   // range_within
#include "nbdwire/config.hpp"  // max_read_ranges
#include "nbdwire/errors.hpp"  // errc
#include "nbdwire/events.hpp"  // request

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

class read_coverage {
 public:
  /// Adds content chunk [off, off + len) of request `r`; errc::ok or why it is refused.
  errc add(const request& r, std::uint64_t off, std::uint64_t len) noexcept {
    if (off < r.offset || !range_within(off - r.offset, len, r.length)) return errc::chunk_outside_request;
    if ((r.flags & command_flag::df) && chunks_ != 0) return errc::df_multiple_chunks;
    ++chunks_;
    const std::uint64_t b = off, e = off + len;
    std::size_t i = 0;
    while (i < count_ && ranges_[i].end <= b) ++i;  // ranges wholly before b (touching is fine)
    if (i < count_ && ranges_[i].begin < e) return errc::chunk_overlap;  // [begin,end) meets [b,e)
    // Insert at i, merging with touching neighbours.
    const bool join_prev = i > 0 && ranges_[i - 1].end == b;
    const bool join_next = i < count_ && ranges_[i].begin == e;
    if (join_prev && join_next) {
      ranges_[i - 1].end = ranges_[i].end;
      for (std::size_t k = i; k + 1 < count_; ++k) ranges_[k] = ranges_[k + 1];
      --count_;
    } else if (join_prev) {
      ranges_[i - 1].end = e;
    } else if (join_next) {
      ranges_[i].begin = b;
    } else {
      if (count_ == max_read_ranges) return errc::reply_chunks_too_fragmented;
      for (std::size_t k = count_; k > i; --k) ranges_[k] = ranges_[k - 1];
      ranges_[i] = {b, e};
      ++count_;
    }
    covered_ += len;
    return errc::ok;
  }
  /// Bytes covered so far.
  [[nodiscard]] std::uint64_t covered() const noexcept { return covered_; }

 private:
  struct range {
    std::uint64_t begin = 0, end = 0;
  };
  std::array<range, max_read_ranges> ranges_{};
  std::uint64_t covered_ = 0;
  std::uint32_t count_ = 0;
  std::uint32_t chunks_ = 0;
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
