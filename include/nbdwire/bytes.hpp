// SPDX-License-Identifier: MIT
// nbdwire: big-endian field types and overflow-safe range arithmetic.
#pragma once

#include <array>    // std::array: the storage of every wire field
#include <bit>      // std::endian: choose the byte swap at compile time
#include <cstddef>  // std::byte, std::size_t
#include <cstdint>  // fixed-width integers
#include <cstring>  // std::memcpy: unaligned loads the optimiser turns into one instruction
#include <type_traits>  // std::is_constant_evaluated
#include <span>     // std::span: every byte view in and out of the library
#include <string_view>  // std::string_view: names as bytes

#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

using bytes_view = std::span<const std::byte>;
using mutable_bytes = std::span<std::byte>;

namespace detail {
template <class T>
[[nodiscard]] constexpr T byteswap(T v) noexcept {
  if constexpr (sizeof(T) == 1) return v;
  else if constexpr (sizeof(T) == 2) return static_cast<T>(__builtin_bswap16(v));
  else if constexpr (sizeof(T) == 4) return static_cast<T>(__builtin_bswap32(v));
  else return static_cast<T>(__builtin_bswap64(v));
}
}  // namespace detail

/// Reads a big-endian integer of sizeof(T) bytes at p (no alignment needed). At run time
/// this is one load and one byte swap; the loop serves constant evaluation, where memcpy
/// is not allowed.
template <class T>
[[nodiscard]] constexpr T load_be(const std::byte* p) noexcept {
  static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big);
  if (!std::is_constant_evaluated()) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    if constexpr (std::endian::native == std::endian::little) v = detail::byteswap(v);
    return v;
  }
  T v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>((v << 8) | static_cast<T>(p[i]));
  return v;
}

/// Writes v big-endian into the sizeof(T) bytes at p.
template <class T>
constexpr void store_be(std::byte* p, T v) noexcept {
  if (!std::is_constant_evaluated()) {
    if constexpr (std::endian::native == std::endian::little) v = detail::byteswap(v);
    std::memcpy(p, &v, sizeof(T));
    return;
  }
  for (std::size_t i = sizeof(T); i-- > 0;) {
    p[i] = static_cast<std::byte>(v & 0xffu);
    if constexpr (sizeof(T) > 1) v = static_cast<T>(v >> 8);
  }
}

/// An unsigned integer of N bytes stored big-endian (network byte order, spec "Values").
/// Alignment 1 and size N, so records built from these fields have exactly the wire layout
/// and never hold a native integer that is really big-endian.
template <std::size_t N, class T>
struct be_uint {
  static_assert(N == sizeof(T));
  std::array<std::byte, N> raw{};

  [[nodiscard]] constexpr T get() const noexcept { return load_be<T>(raw.data()); }
  constexpr void set(T v) noexcept { store_be<T>(raw.data(), v); }
  friend constexpr bool operator==(const be_uint&, const be_uint&) = default;
};

using be_u16 = be_uint<2, std::uint16_t>;
using be_u32 = be_uint<4, std::uint32_t>;
using be_u64 = be_uint<8, std::uint64_t>;
static_assert(sizeof(be_u16) == 2 && alignof(be_u16) == 1);
static_assert(sizeof(be_u32) == 4 && alignof(be_u32) == 1);
static_assert(sizeof(be_u64) == 8 && alignof(be_u64) == 1);

/// True when [offset, offset + length) lies inside [0, size), computed without overflow.
[[nodiscard]] constexpr bool range_within(std::uint64_t offset, std::uint64_t length,
                                          std::uint64_t size) noexcept {
  return offset <= size && length <= size - offset;
}

[[nodiscard]] constexpr bool is_power_of_two(std::uint64_t v) noexcept {
  return v != 0 && (v & (v - 1)) == 0;
}

/// `v` rounded down to a multiple of `unit`, a power of two (block sizes are: "Size
/// constraints"; both machines refuse others). A mask, not a division: no 64-bit division
/// routine in 32-bit firmware.
[[nodiscard]] constexpr std::uint64_t round_down_pow2(std::uint64_t v, std::uint64_t unit) noexcept {
  return v & ~(unit - 1);
}

/// A view of a string as bytes (names and messages travel as raw UTF-8 bytes).
[[nodiscard]] inline bytes_view as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

/// A byte view read back as characters, for printing names and messages.
[[nodiscard]] inline std::string_view as_chars(bytes_view b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
