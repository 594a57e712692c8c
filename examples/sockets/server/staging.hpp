// SPDX-License-Identifier: MIT
// nbdwire-server: READ data read from a file at request time, until it is sent.
//
// The machine asks for READ data in the order the replies were queued, so data read for them
// is kept in that order too, in one buffer: appended at the back as replies are queued, sent
// from the front. No index is needed, and the buffer is reused, so steady traffic allocates
// nothing (fresh memory would also cost a page fault per 4 KiB of every READ).
#pragma once

#include <algorithm>  // std::max
#include <bit>        // std::bit_ceil
#include <cstddef>    // std::byte, std::size_t
#include <cstring>    // std::memcpy, std::memmove
#include <memory>     // std::unique_ptr

namespace nbdwire_server {

class staging {
 public:
  /// `n` bytes at the back to read data into; they count as waiting at once.
  std::byte* append(std::size_t n) {
    if (tail_ + n > cap_) make_room(n);
    std::byte* p = buf_.get() + tail_;
    tail_ += n;
    return p;
  }
  /// Takes back the last `n` bytes appended (their read failed, or their reply was not queued).
  void drop_back(std::size_t n) { tail_ -= n; }
  /// `n` bytes of the front were sent.
  void consume(std::size_t n) {
    head_ += n;
    if (head_ != tail_) return;
    head_ = tail_ = 0;
    if (cap_ > max_kept) {  // a burst of large READs: do not keep its memory while idle
      buf_.reset();
      cap_ = 0;
    }
  }
  /// The waiting bytes from `skip` on, `n` of them.
  [[nodiscard]] const std::byte* at(std::size_t skip) const { return buf_.get() + head_ + skip; }
  /// Bytes waiting to be sent.
  [[nodiscard]] std::size_t size() const { return tail_ - head_; }
  /// Whether `p` points into the waiting bytes.
  [[nodiscard]] bool holds(const std::byte* p) const {
    return buf_ && p >= buf_.get() + head_ && p < buf_.get() + tail_;
  }

 private:
  static constexpr std::size_t min_capacity = 64 * 1024;
  static constexpr std::size_t max_kept = 16u * 1024 * 1024;

  /// Moves the waiting bytes to the front, into a larger buffer if they and `n` more do not fit.
  void make_room(std::size_t n) {
    const std::size_t live = size();
    if (live + n <= cap_) {
      std::memmove(buf_.get(), buf_.get() + head_, live);
    } else {
      const std::size_t cap = std::max(min_capacity, std::bit_ceil(live + n));
      auto b = std::make_unique_for_overwrite<std::byte[]>(cap);
      if (live) std::memcpy(b.get(), buf_.get() + head_, live);
      buf_ = std::move(b);
      cap_ = cap;
    }
    head_ = 0;
    tail_ = live;
  }

  std::unique_ptr<std::byte[]> buf_;
  std::size_t cap_ = 0, head_ = 0, tail_ = 0;
};

}  // namespace nbdwire_server
