// SPDX-License-Identifier: MIT
// nbdwire-client: the requests of one pipelined transfer.
#pragma once

#include <array>    // the slots
#include <cstddef>  // std::byte
#include <cstdint>  // fixed-width integers
#include <memory>   // request buffers

#include "connection.hpp"

namespace client_app {

struct chunk {
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
  bool zero = false;    // READ: a piece of a range that reads as zeroes; no request, no data
  bool done = false;    // answered
  bool queued = false;  // READ data handed to the background writer, as its number `seq`
  std::uint64_t seq = 0;
  std::unique_ptr<std::byte[]> data;
  int file = -1;  // WRITE: the payload is in this file at file_offset, not in `data`
  off_t file_offset = 0;
};

/// The requests of one pipelined transfer, oldest first: at most max_window, each with a
/// buffer of `step` bytes allocated the first time its slot is used, so a transfer allocates
/// nothing per request. A request's tag is its slot's index, so every event finds its slot
/// at once. Slots are retired from the front once done, which keeps READ data in export order.
class request_window {
 public:
  /// `limit`: requests in flight at most (--requests), 0 or above max_window meaning max_window.
  explicit request_window(std::uint32_t step, std::size_t limit = max_window)
      : step_(step), limit_(limit == 0 || limit > max_window ? max_window : limit) {}
  [[nodiscard]] bool full() const { return count_ >= limit_; }
  [[nodiscard]] bool empty() const { return count_ == 0; }
  /// The tag of the slot next() hands out.
  [[nodiscard]] std::uint64_t next_tag() const { return (head_ + count_) % max_window; }
  /// The slot push() will take, with its buffer unless `buffer` is false.
  chunk& next(bool buffer = true) {
    chunk& c = slots_[next_tag()];
    if (buffer && !c.data) c.data = std::make_unique_for_overwrite<std::byte[]>(step_);
    c.zero = c.done = c.queued = false;
    c.file = -1;
    return c;
  }
  void push() { ++count_; }
  [[nodiscard]] std::size_t size() const { return count_; }
  /// The k-th oldest request.
  [[nodiscard]] chunk& at(std::size_t k) { return slots_[(head_ + k) % max_window]; }
  /// The request an event's tag names.
  [[nodiscard]] chunk& tagged(std::uint64_t tag) {
    if (tag >= max_window) fail("internal: an event for a request of no transfer");
    return slots_[tag];
  }
  /// The request in flight whose range holds export offset `at`, or null: payload spans name
  /// a cookie, not a tag, and the ranges of one transfer never overlap.
  chunk* holding(std::uint64_t at) {
    for (std::size_t k = 0; k < count_; ++k) {
      chunk& c = this->at(k);
      if (!c.done && !c.zero && at >= c.offset && at - c.offset < c.length) return &c;
    }
    return nullptr;
  }
  [[nodiscard]] chunk& front() { return slots_[head_]; }
  void pop() {
    head_ = (head_ + 1) % max_window;
    --count_;
  }

 private:
  std::array<chunk, max_window> slots_;
  std::size_t head_ = 0, count_ = 0;
  std::uint32_t step_;
  std::size_t limit_;
};

/// Detaches a transfer's payload callbacks when it ends, normally or by a failure, so the
/// connection never reaches into buffers that are gone.
struct callbacks_reset {
  connection& c;
  ~callbacks_reset() {
    c.payload_source = nullptr;
    c.payload_sink = nullptr;
    c.payload_file = nullptr;
  }
};

}  // namespace client_app
