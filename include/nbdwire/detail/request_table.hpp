// SPDX-License-Identifier: MIT
// nbdwire detail: the server's table of requests in flight ("Transmission phase": a server
// may answer in any order). Each accepted request has a slot until its reply is complete,
// so a reply to a request that was never accepted, or is already answered, is refused, and
// the caller's tag comes back with every event about the request. Memory: max_in_flight
// slots of 48 bytes.
#pragma once

#include <array>    // std::array: the slots
#include <cstddef>  // std::size_t
#include <cstdint>  // fixed-width integers
#include <optional> // std::optional: lookups

#include "nbdwire/config.hpp"
#include "nbdwire/events.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

class request_table {
 public:
  struct slot {
    request req{};
    std::uint64_t tag = 0;
    std::uint16_t reserve = 0;       ///< outbox bytes held back for the rest of the reply
    std::uint8_t reserve_marks = 0;  ///< payload marks held back for it
    std::uint8_t contexts_left = 0;  ///< BLOCK_STATUS: contexts not yet answered
    bool used = false;
  };

  [[nodiscard]] bool full() const noexcept { return count_ == max_in_flight; }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }

  /// Adds an accepted request; the caller checked !full().
  slot& add(const request& r) noexcept {
    std::size_t i = 0;
    while (slots_[i].used) ++i;
    slots_[i] = slot{.req = r, .used = true};
    ++count_;
    return slots_[i];
  }

  /// The slot of a request in flight: the same cookie and fields. A client that reuses a
  /// cookie while it is in flight gets its replies in the order the requests arrived.
  [[nodiscard]] slot* find(const request& r) noexcept {
    for (auto& s : slots_)
      if (s.used && s.req == r) return &s;
    return nullptr;
  }
  [[nodiscard]] const slot* find(const request& r) const noexcept {
    for (const auto& s : slots_)
      if (s.used && s.req == r) return &s;
    return nullptr;
  }

  void remove(slot& s) noexcept {
    s.used = false;
    --count_;
  }

 private:
  std::array<slot, max_in_flight> slots_{};
  std::size_t count_ = 0;
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
