// SPDX-License-Identifier: MIT
// nbdwire codec: what every body decoder returns and every body encoder reports, and the
// bounded state they share.
//
// Decoder contract (the machines' receive() contract, one body at a time):
// - A decoder is told the body length up front (the option, reply or chunk header carries
//   it) and checks at once every rule that length alone decides.
// - `decode(in)` takes input split at any byte boundary and returns {consumed, event}: one
//   decoded item, `need_more` (every byte given was used), `done` (the body is complete;
//   nothing more is read), or `failed` with a body_errc that stays set. `consumed` is valid
//   on every kind, never exceeds `in.size()` and never reaches past the end of the body:
//   bytes after the body belong to the caller.
// - Each length field is checked against what the rest of the body allows as soon as it is
//   read, before the bytes it announces are awaited.
// - Strings come out whole: as a view into `in` when they arrive in one piece, else into the
//   decoder's own buffer. Either view is valid until the next call (and, for the first kind,
//   as long as the caller keeps `in`).
//
// Encoder contract: write into a caller span and return {written, required, error}. When the
// span is too small nothing is written, `error` is buffer_too_small and `required` is the
// exact size needed (rustls' InsufficientSize{required_size}); `*_size()` gives it up front.
#pragma once

#include <algorithm>    // std::min, std::copy_n
#include <array>        // std::array: the field and string stashes
#include <cstddef>      // std::byte, std::size_t
#include <cstdint>      // fixed-width integers
#include <string_view>  // names passed to encoders

#include "nbdwire/bytes.hpp"
#include "nbdwire/codec/body_errc.hpp"
#include "nbdwire/config.hpp"
#include "nbdwire/events.hpp"  // block_size_constraints, block_extent (read only)

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// What one decode() call produced. The fields of body_event each kind sets are listed.
enum class body_item : std::uint8_t {
  need_more,           ///< every byte given was used; call again with more
  done,                ///< the body is complete
  failed,              ///< `error`; sticky
  export_name,         ///< `text`: EXPORT_NAME, INFO/GO and META_CONTEXT requests
  info_count,          ///< `count`: INFO/GO number of info requests
  info_request,        ///< `info`: one requested NBD_INFO_* (unknown values included)
  query_count,         ///< `count`: META_CONTEXT number of queries
  query,               ///< `text`: one META_CONTEXT query
  server_name,         ///< `text`: NBD_REP_SERVER export name
  server_description,  ///< `text`: NBD_REP_SERVER description (may be empty)
  info_export,         ///< `export_size`, `transmission_flags`
  info_block_size,     ///< `block_size` (raw; validity is the caller's rule: valid())
  info_name,           ///< `text`: NBD_INFO_NAME
  info_description,    ///< `text`: NBD_INFO_DESCRIPTION
  info_unknown,        ///< `info`, `length`: an unknown info type, its payload skipped
  meta_context,        ///< `context_id`, `text`: NBD_REP_META_CONTEXT
  error_message,       ///< `text`; for error chunks also `error_value`
  error_offset,        ///< `offset`: ERROR_OFFSET's offset
  offset_data,         ///< `offset`, `length` = data bytes that follow (not consumed)
  offset_hole,         ///< `offset`, `length` = hole size
  block_status,        ///< `context_id`, `count` = descriptors that follow
  extent,              ///< `length`, `status`
};

[[nodiscard]] constexpr std::string_view to_string(body_item k) noexcept {
  switch (k) {
    case body_item::need_more: return "need_more";
    case body_item::done: return "done";
    case body_item::failed: return "failed";
    case body_item::export_name: return "export_name";
    case body_item::info_count: return "info_count";
    case body_item::info_request: return "info_request";
    case body_item::query_count: return "query_count";
    case body_item::query: return "query";
    case body_item::server_name: return "server_name";
    case body_item::server_description: return "server_description";
    case body_item::info_export: return "info_export";
    case body_item::info_block_size: return "info_block_size";
    case body_item::info_name: return "info_name";
    case body_item::info_description: return "info_description";
    case body_item::info_unknown: return "info_unknown";
    case body_item::meta_context: return "meta_context";
    case body_item::error_message: return "error_message";
    case body_item::error_offset: return "error_offset";
    case body_item::offset_data: return "offset_data";
    case body_item::offset_hole: return "offset_hole";
    case body_item::block_status: return "block_status";
    case body_item::extent: return "extent";
  }
  return "unknown";
}

/// One decoded item. Only the fields named for its kind (body_item) are meaningful.
struct body_event {
  body_item kind = body_item::need_more;
  body_errc error = body_errc::ok;
  bytes_view text{};                 ///< names, queries, descriptions, messages
  std::uint64_t offset = 0;          ///< offset_data, offset_hole, error_offset
  std::uint64_t length = 0;          ///< offset_data, offset_hole, extent, info_unknown
  std::uint64_t status = 0;          ///< extent (32-bit in compact BLOCK_STATUS)
  std::uint64_t export_size = 0;     ///< info_export
  std::uint32_t count = 0;           ///< info_count, query_count, block_status
  std::uint32_t context_id = 0;      ///< meta_context, block_status
  std::uint32_t error_value = 0;     ///< error_message of an error chunk (raw NBD_E* value)
  std::uint16_t info = 0;            ///< info_request, info_unknown (raw NBD_INFO_* value)
  std::uint16_t transmission_flags = 0;  ///< info_export
  block_size_constraints block_size{};   ///< info_block_size
};

/// What decode() returns: bytes used (drop them before the next call) and what happened.
struct body_step {
  std::size_t consumed = 0;
  body_event ev{};
};

/// What an encoder returns. `required` is the body size whatever happened (0 when the
/// arguments are invalid); `written` is `required` on success and 0 otherwise.
struct encode_result {
  std::size_t written = 0;
  std::size_t required = 0;
  body_errc error = body_errc::ok;
  [[nodiscard]] constexpr bool ok() const noexcept { return error == body_errc::ok; }
};

namespace detail {

[[nodiscard]] constexpr bool has_nul(bytes_view s) noexcept {
  for (std::byte c : s)
    if (c == std::byte{0}) return true;
  return false;
}

[[nodiscard]] constexpr bool has_nul(std::string_view s) noexcept {
  for (char c : s)
    if (c == '\0') return true;
  return false;
}

/// {used, need_more}: the step of a decoder waiting for more input.
[[nodiscard]] NBDWIRE_SIZE_OUTLINE constexpr body_step need_more(std::size_t used) noexcept { return {used, {}}; }

/// The position, fixed-field stash and sticky outcome every decoder has. 24 bytes.
class body_state {
 public:
  constexpr void reset(std::uint64_t body_length) noexcept {
    left_ = body_length;
    have_ = 0;
    error_ = body_errc::ok;
    finished_ = false;
  }
  constexpr void set_error(body_errc e) noexcept { error_ = e; }
  [[nodiscard]] constexpr body_errc error() const noexcept { return error_; }
  [[nodiscard]] constexpr bool finished() const noexcept { return finished_; }
  [[nodiscard]] constexpr bool settled() const noexcept { return error_ != body_errc::ok || finished_; }
  /// The answer once failed or done: the same outcome again, nothing consumed.
  [[nodiscard]] NBDWIRE_SIZE_OUTLINE constexpr body_step settled_step() const noexcept {
    if (error_ != body_errc::ok) return {0, {.kind = body_item::failed, .error = error_}};
    return {0, {.kind = body_item::done}};
  }
  /// Body bytes not consumed yet.
  [[nodiscard]] constexpr std::uint64_t left() const noexcept { return left_; }
  /// `in` cut at the end of the body.
  [[nodiscard]] constexpr bytes_view clip(bytes_view in) const noexcept {
    return in.size() > left_ ? in.first(static_cast<std::size_t>(left_)) : in;
  }

  /// Collects a big-endian field of sizeof(T) bytes from in[used...]; true once complete.
  template <class T>
  [[nodiscard]] constexpr bool take(bytes_view in, std::size_t& used, T& out) noexcept {
    if (!gather(in, used, sizeof(T))) return false;
    out = load_be<T>(field_.data());
    return true;
  }
  /// A big-endian field of `size` bytes (4 or 8, chosen at run time) into `out`.
  [[nodiscard]] constexpr bool take_field(bytes_view in, std::size_t& used, std::size_t size,
                                          std::uint64_t& out) noexcept {
    if (!gather(in, used, size)) return false;
    out = size == 8 ? load_be<std::uint64_t>(field_.data()) : load_be<std::uint32_t>(field_.data());
    return true;
  }
  /// take()'s byte collection, one body for every field width: true once `size` bytes are
  /// in field_ (then the next field starts empty).
  [[nodiscard]] NBDWIRE_SIZE_OUTLINE constexpr bool gather(bytes_view in, std::size_t& used,
                                                           std::size_t size) noexcept {
    const std::size_t n = std::min<std::size_t>(size - have_, in.size() - used);
    for (std::size_t i = 0; i < n; ++i) field_[have_ + i] = in[used + i];
    have_ = static_cast<std::uint8_t>(have_ + n);
    used += n;
    left_ -= n;
    if (have_ < size) return false;
    have_ = 0;
    return true;
  }
  /// Skips up to `n` body bytes of in[used...]; true once all `n` are gone. `n` is updated.
  [[nodiscard]] constexpr bool skip(bytes_view in, std::size_t& used, std::uint64_t& n) noexcept {
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, in.size() - used));
    used += k;
    left_ -= k;
    n -= k;
    return n == 0;
  }
  /// Accounts for bytes a string stash took.
  constexpr void advance(std::size_t n) noexcept { left_ -= n; }

  [[nodiscard]] NBDWIRE_COLD constexpr body_step fail(std::size_t used, body_errc e) noexcept {
    error_ = e;
    return {used, {.kind = body_item::failed, .error = e}};
  }
  [[nodiscard]] NBDWIRE_SIZE_OUTLINE constexpr body_step finish(std::size_t used) noexcept {
    finished_ = true;
    return {used, {.kind = body_item::done}};
  }

 private:
  std::uint64_t left_ = 0;
  std::array<std::byte, 8> field_{};
  std::uint8_t have_ = 0;
  body_errc error_ = body_errc::ok;
  bool finished_ = false;
};

/// One bounded string buffer: Cap bytes plus a 4-byte fill count. A string that arrives in
/// one piece is returned as a view of the input and never copied.
template <std::size_t Cap>
class string_stash {
 public:
  /// Collects a string of `len` ≤ Cap bytes from in[used...]; true once `out` holds it.
  [[nodiscard]] constexpr bool take(bytes_view in, std::size_t& used, body_state& st, std::size_t len,
                                    bytes_view& out) noexcept {
    const std::size_t avail = in.size() - used;
    if (have_ == 0 && avail >= len) {
      out = in.subspan(used, len);
      used += len;
      st.advance(len);
      return true;
    }
    const std::size_t n = std::min<std::size_t>(len - have_, avail);
    for (std::size_t i = 0; i < n; ++i) buf_[have_ + i] = in[used + i];
    have_ = static_cast<std::uint32_t>(have_ + n);
    used += n;
    st.advance(n);
    if (have_ < len) return false;
    out = bytes_view{buf_.data(), len};
    have_ = 0;
    return true;
  }
  constexpr void clear() noexcept { have_ = 0; }

 private:
  std::array<std::byte, Cap> buf_{};
  std::uint32_t have_ = 0;
};

/// Sequential big-endian writes into a span whose size was checked first.
class body_writer {
 public:
  constexpr explicit body_writer(mutable_bytes out) noexcept : p_(out.data()) {}
  template <class T>
  constexpr void put(T v) noexcept {
    store_be<T>(p_, v);
    p_ += sizeof(T);
  }
  constexpr void put(std::string_view s) noexcept {
    for (char c : s) *p_++ = static_cast<std::byte>(c);
  }
  constexpr void put(bytes_view b) noexcept {
    for (std::byte c : b) *p_++ = c;
  }

 private:
  std::byte* p_;
};

/// The common head of every encoder: the body size is `need`; fail unless `out` holds it.
[[nodiscard]] constexpr encode_result fit(mutable_bytes out, std::uint64_t need) noexcept {
  if (need > 0xffffffffu) return {0, 0, body_errc::encode_body_too_long};
  const auto n = static_cast<std::size_t>(need);
  if (out.size() < n) return {0, n, body_errc::buffer_too_small};
  return {n, n, body_errc::ok};
}

/// A string argument: at most max_string bytes, and no NUL when it is a name.
[[nodiscard]] constexpr body_errc check_string(std::string_view s, bool name) noexcept {
  if (s.size() > max_string) return body_errc::encode_string_too_long;
  if (name && has_nul(s)) return body_errc::encode_string_contains_nul;
  return body_errc::ok;
}


/// A body that is one string and nothing else: EXPORT_NAME's data, an error reply's message.
/// Events: `Item` (the string, possibly empty), done. A body longer than MaxString fails with
/// `TooLong` before a byte is read; `NulError`, unless ok, refuses a NUL (names, not text).
template <std::size_t MaxString, body_item Item, body_errc TooLong, body_errc NulError>
class string_body_decoder {
 public:
  constexpr string_body_decoder() noexcept { reset(0); }
  constexpr explicit string_body_decoder(std::uint64_t body_length) noexcept { reset(body_length); }

  constexpr void reset(std::uint64_t body_length) noexcept {
    st_.reset(body_length);
    str_.clear();
    emitted_ = false;
    len_ = static_cast<std::uint32_t>(body_length < 0xffffffffu ? body_length : 0xffffffffu);
    if (body_length > MaxString) st_.set_error(TooLong);
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    if (emitted_) return st_.finish(0);
    in = st_.clip(in);
    std::size_t used = 0;
    bytes_view s;
    if (!str_.take(in, used, st_, len_, s)) return need_more(used);
    if (NulError != body_errc::ok && has_nul(s)) return st_.fail(used, NulError);
    emitted_ = true;
    return {used, {.kind = Item, .text = s}};
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  body_state st_;
  string_stash<MaxString> str_;
  std::uint32_t len_ = 0;
  bool emitted_ = false;
};

/// Writes a one-string body (see string_body_decoder); `name` refuses a NUL.
constexpr encode_result encode_string_body(mutable_bytes out, std::string_view s, bool name) noexcept {
  if (const body_errc e = check_string(s, name); e != body_errc::ok) return {0, 0, e};
  const encode_result r = fit(out, s.size());
  if (r.ok()) body_writer{out}.put(s);
  return r;
}
}  // namespace detail

static_assert(sizeof(detail::body_state) <= 24);

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
