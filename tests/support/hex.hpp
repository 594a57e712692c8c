// SPDX-License-Identifier: MIT
// Test support: hex text to bytes, at run time (golden vector files) and at compile time
// (the "..."_hex literal used by static_asserts).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "nbdwire/bytes.hpp"

namespace nbdwire_test {

using bytes = std::vector<std::byte>;

constexpr int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr bool is_space(char c) noexcept {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/// Hex text to bytes; whitespace is ignored, anything else that is not a hex digit (or an odd
/// digit count) throws, so a damaged vector file cannot pass silently.
inline bytes from_hex(std::string_view text) {
  bytes out;
  int hi = -1;
  for (char c : text) {
    if (is_space(c)) continue;
    const int d = hex_digit(c);
    if (d < 0) throw std::invalid_argument("not a hex digit: " + std::string(1, c));
    if (hi < 0) {
      hi = d;
    } else {
      out.push_back(static_cast<std::byte>((hi << 4) | d));
      hi = -1;
    }
  }
  if (hi >= 0) throw std::invalid_argument("odd number of hex digits");
  return out;
}

inline std::string to_hex(nbdwire::bytes_view b) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(b.size() * 2);
  for (std::byte x : b) {
    const auto v = std::to_integer<unsigned>(x);
    s.push_back(digits[v >> 4]);
    s.push_back(digits[v & 15u]);
  }
  return s;
}

#ifndef NBDWIRE_TEST_VECTOR_DIR
#error "NBDWIRE_TEST_VECTOR_DIR must name tests/vectors (set by tests/CMakeLists.txt)"
#endif

/// Reads tests/vectors/<name>.hex, e.g. golden("G01").
inline bytes golden(std::string_view name) {
  const std::string path = std::string(NBDWIRE_TEST_VECTOR_DIR) + "/" + std::string(name) + ".hex";
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return from_hex(ss.str());
}

inline bytes concat(std::initializer_list<nbdwire::bytes_view> parts) {
  bytes out;
  for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

/// Bytes [from, to) of b.
inline bytes slice(const bytes& b, std::size_t from, std::size_t to) {
  if (from > to || to > b.size()) throw std::out_of_range("slice");
  return {b.begin() + static_cast<std::ptrdiff_t>(from), b.begin() + static_cast<std::ptrdiff_t>(to)};
}

inline nbdwire::bytes_view view(const bytes& b) noexcept { return {b.data(), b.size()}; }

template <std::size_t N>
nbdwire::bytes_view view(const std::array<std::byte, N>& a) noexcept {
  return {a.data(), a.size()};
}

inline bytes str_bytes(std::string_view s) {
  const auto b = nbdwire::as_bytes(s);
  return {b.begin(), b.end()};
}

/// Big-endian integer as bytes, for building option bodies by hand.
template <class T>
bytes be(T v) {
  bytes out(sizeof(T));
  nbdwire::store_be<T>(out.data(), v);
  return out;
}

// ---- compile-time hex literals -------------------------------------------------------------

template <std::size_t N>
struct fixed_string {
  char c[N]{};
  consteval fixed_string(const char (&s)[N]) {  // NOLINT: implicit by design
    for (std::size_t i = 0; i < N; ++i) c[i] = s[i];
  }
};

template <fixed_string S>
consteval std::size_t hex_digit_count() {
  std::size_t n = 0;
  for (char ch : S.c) {
    if (ch == '\0' || is_space(ch)) continue;
    if (hex_digit(ch) < 0) throw "not a hex digit";  // a compile error in a consteval context
    ++n;
  }
  if (n % 2 != 0) throw "odd number of hex digits";
  return n;
}

namespace literals {
/// "4e42 444d"_hex is std::array<std::byte, 4>{0x4e, 0x42, 0x44, 0x4d}; whitespace ignored.
template <fixed_string S>
consteval auto operator""_hex() {
  std::array<std::byte, hex_digit_count<S>() / 2> out{};
  std::size_t i = 0;
  int hi = -1;
  for (char ch : S.c) {
    if (ch == '\0' || is_space(ch)) continue;
    const int d = hex_digit(ch);
    if (hi < 0) {
      hi = d;
    } else {
      out[i++] = static_cast<std::byte>((hi << 4) | d);
      hi = -1;
    }
  }
  return out;
}

/// "disk"_raw is the characters as bytes, without the terminating NUL.
template <fixed_string S>
consteval auto operator""_raw() {
  std::array<std::byte, sizeof(S.c) - 1> out{};
  for (std::size_t i = 0; i + 1 < sizeof(S.c); ++i) out[i] = static_cast<std::byte>(S.c[i]);
  return out;
}
}  // namespace literals

/// Concatenates byte arrays at compile time.
template <std::size_t... N>
constexpr auto cat(const std::array<std::byte, N>&... parts) {
  std::array<std::byte, (N + ... + 0)> out{};
  std::size_t at = 0;
  ((std::copy(parts.begin(), parts.end(), out.begin() + static_cast<std::ptrdiff_t>(at)), at += N), ...);
  return out;
}

/// A big-endian integer as a byte array at compile time.
template <class T>
constexpr std::array<std::byte, sizeof(T)> be_array(T v) {
  std::array<std::byte, sizeof(T)> out{};
  nbdwire::store_be<T>(out.data(), v);
  return out;
}

}  // namespace nbdwire_test
