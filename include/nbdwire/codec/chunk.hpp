// SPDX-License-Identifier: MIT
// nbdwire codec: structured reply chunk payloads (server to client; checklist 2.4).
//   OFFSET_DATA       u64 offset, then (length - 8) data bytes (left to the caller: zero-copy)
//   OFFSET_HOLE       u64 offset, u32 hole size (≠ 0)
//   ERROR             u32 error (≠ 0), u16 message length, message
//   ERROR_OFFSET      the same, then u64 offset
//   BLOCK_STATUS      u32 context id, n × (u32 length ≠ 0, u32 status)
//   BLOCK_STATUS_EXT  [ext] u32 context id, u32 count = n, n × (u64 length ≠ 0, u64 status)
// Decoders take the chunk's payload length from its header. Memory: the status and fixed
// decoders hold no string (under 64 bytes); the error decoder one MaxString buffer.
#pragma once

#include <span>  // encoder argument lists

#include "nbdwire/codec/core.hpp"
#include "nbdwire/constants.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

// ---- OFFSET_DATA ---------------------------------------------------------------------------

/// Events: offset_data (offset, and `length` = data bytes that follow), done. The decoder
/// consumes the 8-byte prefix only; the data is the caller's to take from its input.
class offset_data_decoder {
 public:
  constexpr offset_data_decoder() noexcept { reset(9); }
  constexpr explicit offset_data_decoder(std::uint64_t chunk_length) noexcept { reset(chunk_length); }

  constexpr void reset(std::uint64_t chunk_length) noexcept {
    st_.reset(8);
    data_ = chunk_length >= 8 ? chunk_length - 8 : 0;
    emitted_ = false;
    offset_ = 0;
    if (chunk_length < 9) st_.set_error(body_errc::offset_data_too_short);  // "at least 1 byte of data"
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    if (emitted_) return st_.finish(0);
    in = st_.clip(in);
    std::size_t used = 0;
    if (!st_.take(in, used, offset_)) return detail::need_more(used);
    emitted_ = true;
    return {used, {.kind = body_item::offset_data, .offset = offset_, .length = data_}};
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  detail::body_state st_;
  std::uint64_t data_ = 0;
  std::uint64_t offset_ = 0;
  bool emitted_ = false;
};

inline constexpr std::size_t offset_data_prefix_size = 8;

/// The 8-byte prefix; the caller sends the data after it (the header's length is 8 + data).
constexpr encode_result encode_offset_data_prefix(mutable_bytes out, std::uint64_t offset) noexcept {
  const encode_result r = detail::fit(out, offset_data_prefix_size);
  if (r.ok()) detail::body_writer{out}.put(offset);
  return r;
}

// ---- OFFSET_HOLE ---------------------------------------------------------------------------

/// Events: offset_hole (offset, `length` = hole size), done.
class offset_hole_decoder {
 public:
  constexpr offset_hole_decoder() noexcept { reset(12); }
  constexpr explicit offset_hole_decoder(std::uint64_t chunk_length) noexcept { reset(chunk_length); }

  constexpr void reset(std::uint64_t chunk_length) noexcept {
    st_.reset(chunk_length);
    stage_ = stage::offset;
    offset_ = 0;
    if (chunk_length != 12) st_.set_error(body_errc::offset_hole_bad_length);
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    in = st_.clip(in);
    std::size_t used = 0;
    for (;;) {
      switch (stage_) {
        case stage::offset:
          if (!st_.take(in, used, offset_)) return detail::need_more(used);
          stage_ = stage::size;
          continue;
        case stage::size: {
          std::uint32_t size = 0;
          if (!st_.take(in, used, size)) return detail::need_more(used);
          if (size == 0) return st_.fail(used, body_errc::offset_hole_size_zero);
          stage_ = stage::end;
          return {used, {.kind = body_item::offset_hole, .offset = offset_, .length = size}};
        }
        case stage::end:
          return st_.finish(used);
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t { offset, size, end };
  detail::body_state st_;
  std::uint64_t offset_ = 0;
  stage stage_ = stage::offset;
};

inline constexpr std::size_t offset_hole_size = 12;

constexpr encode_result encode_offset_hole(mutable_bytes out, std::uint64_t offset, std::uint32_t size) noexcept {
  if (size == 0) return {0, 0, body_errc::encode_hole_size_zero};
  const encode_result r = detail::fit(out, offset_hole_size);
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(offset);
  w.put(size);
  return r;
}

// ---- ERROR / ERROR_OFFSET (and unknown error types) ----------------------------------------

/// Events: error_message (error_value and message), then for ERROR_OFFSET error_offset; done.
/// ERROR and ERROR_OFFSET must be exactly as long as their fields (checklist 6.5 reads "the
/// header length covers any remaining structured fields" as exact). An unknown type with the
/// error bit shares the error and message fields; what follows them is skipped ("MAY
/// continue unless the message length does not fit").
template <std::size_t MaxString = max_string>
class basic_error_chunk_decoder {
 public:
  constexpr basic_error_chunk_decoder() noexcept { reset(static_cast<std::uint16_t>(chunk_type::error), 6); }
  constexpr basic_error_chunk_decoder(std::uint16_t type, std::uint64_t chunk_length) noexcept {
    reset(type, chunk_length);
  }

  constexpr void reset(std::uint16_t type, std::uint64_t chunk_length) noexcept {
    st_.reset(chunk_length);
    str_.clear();
    stage_ = stage::error;
    error_ = 0;
    len_ = 0;
    skip_ = 0;
    offset_ = 0;
    kind_ = type == static_cast<std::uint16_t>(chunk_type::error)          ? kind::error
            : type == static_cast<std::uint16_t>(chunk_type::error_offset) ? kind::error_offset
                                                                           : kind::unknown;
    if ((type & chunk_type_error_bit) == 0) st_.set_error(body_errc::error_chunk_not_error_type);
    else if (kind_ == kind::error_offset && chunk_length < 14) st_.set_error(body_errc::error_offset_chunk_too_short);
    else if (chunk_length < 6) st_.set_error(body_errc::error_chunk_too_short);
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    in = st_.clip(in);
    std::size_t used = 0;
    for (;;) {
      switch (stage_) {
        case stage::error:
          if (!st_.take(in, used, error_)) return detail::need_more(used);
          if (error_ == 0 && kind_ != kind::unknown) return st_.fail(used, body_errc::error_chunk_zero_error);
          stage_ = stage::message_length;
          continue;
        case stage::message_length: {
          std::uint16_t m = 0;
          if (!st_.take(in, used, m)) return detail::need_more(used);
          const std::uint64_t room = st_.left() - (kind_ == kind::error_offset ? 8u : 0u);
          if (m > room) return st_.fail(used, body_errc::error_message_length_exceeds_chunk);
          if (m > MaxString) return st_.fail(used, body_errc::error_message_too_long);
          if (kind_ != kind::unknown && m != room) return st_.fail(used, body_errc::error_chunk_trailing_data);
          len_ = m;
          skip_ = room - m;
          stage_ = stage::message;
          continue;
        }
        case stage::message: {
          bytes_view s;
          if (!str_.take(in, used, st_, len_, s)) return detail::need_more(used);
          stage_ = kind_ == kind::error_offset ? stage::offset : stage::skip;
          return {used, {.kind = body_item::error_message, .text = s, .error_value = error_}};
        }
        case stage::offset:
          if (!st_.take(in, used, offset_)) return detail::need_more(used);
          stage_ = stage::end;
          return {used, {.kind = body_item::error_offset, .offset = offset_}};
        case stage::skip:
          if (!st_.skip(in, used, skip_)) return detail::need_more(used);
          stage_ = stage::end;
          continue;
        case stage::end:
          return st_.finish(used);
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t { error, message_length, message, offset, skip, end };
  enum class kind : std::uint8_t { error, error_offset, unknown };
  detail::body_state st_;
  detail::string_stash<MaxString> str_;
  std::uint64_t skip_ = 0;
  std::uint64_t offset_ = 0;
  std::uint32_t error_ = 0;
  std::uint16_t len_ = 0;
  stage stage_ = stage::error;
  kind kind_ = kind::error;
};
using error_chunk_decoder = basic_error_chunk_decoder<>;

/// The client machine's reading of error chunks: like basic_error_chunk_decoder, except that
/// bytes after an ERROR / ERROR_OFFSET's fields are skipped (slop is tolerated, as libnbd
/// does; checklist 6.5), and an unknown type with the error bit yields its error value only
/// (its message is skipped, whatever its length, and a chunk shorter than 6 bytes is skipped
/// whole with error_value 0). Events: one error_message (for ERROR_OFFSET one error_offset
/// instead, carrying the message, the error value and the offset), done. The message is
/// always copied, so it stays valid until the next call even across several inputs.
template <std::size_t MaxString = max_string>
class basic_tolerant_error_chunk_decoder {
 public:
  constexpr basic_tolerant_error_chunk_decoder() noexcept { reset(static_cast<std::uint16_t>(chunk_type::error), 6); }
  constexpr basic_tolerant_error_chunk_decoder(std::uint16_t type, std::uint64_t chunk_length) noexcept {
    reset(type, chunk_length);
  }

  constexpr void reset(std::uint16_t type, std::uint64_t chunk_length) noexcept {
    st_.reset(chunk_length);
    stage_ = stage::error;
    error_ = 0;
    len_ = 0;
    have_ = 0;
    skip_ = 0;
    kind_ = type == static_cast<std::uint16_t>(chunk_type::error)          ? kind::error
            : type == static_cast<std::uint16_t>(chunk_type::error_offset) ? kind::error_offset
                                                                           : kind::unknown;
    if ((type & chunk_type_error_bit) == 0) {
      st_.set_error(body_errc::error_chunk_not_error_type);
    } else if (kind_ == kind::error_offset && chunk_length < 14) {
      st_.set_error(body_errc::error_offset_chunk_too_short);
    } else if (chunk_length < 6) {
      if (kind_ != kind::unknown) st_.set_error(body_errc::error_chunk_too_short);
      skip_ = chunk_length;
      stage_ = stage::skip;
    }
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    in = st_.clip(in);
    std::size_t used = 0;
    for (;;) {
      switch (stage_) {
        case stage::error:
          if (!st_.take(in, used, error_)) return detail::need_more(used);
          if (error_ == 0 && kind_ != kind::unknown) return st_.fail(used, body_errc::error_chunk_zero_error);
          stage_ = stage::message_length;
          continue;
        case stage::message_length: {
          if (!st_.take(in, used, len_)) return detail::need_more(used);
          const std::uint64_t room = st_.left() - (kind_ == kind::error_offset ? 8u : 0u);
          if (len_ > room) return st_.fail(used, body_errc::error_message_length_exceeds_chunk);
          if (kind_ == kind::unknown) {
            skip_ = st_.left();
            stage_ = stage::skip;
            return {used, {.kind = body_item::error_message, .error_value = error_}};
          }
          if (len_ > MaxString) return st_.fail(used, body_errc::error_message_too_long);
          stage_ = stage::message;
          continue;
        }
        case stage::message: {
          const std::size_t n = std::min<std::size_t>(len_ - have_, in.size() - used);
          for (std::size_t i = 0; i < n; ++i) buf_[have_ + i] = in[used + i];
          have_ += n;
          used += n;
          st_.advance(n);
          if (have_ < len_) return detail::need_more(used);
          if (kind_ == kind::error_offset) {
            stage_ = stage::offset;
            continue;
          }
          skip_ = st_.left();
          stage_ = stage::skip;
          return {used, {.kind = body_item::error_message, .text = message(), .error_value = error_}};
        }
        case stage::offset: {
          std::uint64_t off = 0;
          if (!st_.take(in, used, off)) return detail::need_more(used);
          skip_ = st_.left();
          stage_ = stage::skip;
          return {used, {.kind = body_item::error_offset, .text = message(), .offset = off, .error_value = error_}};
        }
        case stage::skip:
          if (!st_.skip(in, used, skip_)) return detail::need_more(used);
          return st_.finish(used);
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t { error, message_length, message, offset, skip };
  enum class kind : std::uint8_t { error, error_offset, unknown };
  [[nodiscard]] constexpr bytes_view message() const noexcept { return {buf_.data(), have_}; }
  detail::body_state st_;
  std::array<std::byte, MaxString> buf_{};
  std::uint64_t skip_ = 0;
  std::size_t have_ = 0;
  std::uint32_t error_ = 0;
  std::uint16_t len_ = 0;
  stage stage_ = stage::error;
  kind kind_ = kind::error;
};
using tolerant_error_chunk_decoder = basic_tolerant_error_chunk_decoder<>;

[[nodiscard]] constexpr std::uint64_t error_chunk_size(std::string_view message, bool with_offset) noexcept {
  return 6u + std::uint64_t{message.size()} + (with_offset ? 8u : 0u);
}

namespace detail {
constexpr encode_result encode_error_chunk(mutable_bytes out, std::uint32_t error, std::string_view message,
                                           const std::uint64_t* offset) noexcept {
  if (error == 0) return {0, 0, body_errc::encode_error_value_zero};
  if (const body_errc e = check_string(message, false); e != body_errc::ok) return {0, 0, e};
  const encode_result r = fit(out, error_chunk_size(message, offset != nullptr));
  if (!r.ok()) return r;
  body_writer w{out};
  w.put(error);
  w.put(static_cast<std::uint16_t>(message.size()));
  w.put(message);
  if (offset) w.put(*offset);
  return r;
}
}  // namespace detail

/// NBD_REPLY_TYPE_ERROR payload.
constexpr encode_result encode_error_chunk(mutable_bytes out, std::uint32_t error, std::string_view message) noexcept {
  return detail::encode_error_chunk(out, error, message, nullptr);
}

/// NBD_REPLY_TYPE_ERROR_OFFSET payload.
constexpr encode_result encode_error_offset_chunk(mutable_bytes out, std::uint32_t error, std::string_view message,
                                                  std::uint64_t offset) noexcept {
  return detail::encode_error_chunk(out, error, message, &offset);
}

// ---- BLOCK_STATUS / BLOCK_STATUS_EXT -------------------------------------------------------

/// Events: block_status (context id, descriptor count), count × extent, done. The count is
/// known from the length (compact) or checked against it as soon as it is read ([ext]), and
/// bounded by max_extents_per_chunk (the spec's SHOULD-limit of 2^20 by default) before any
/// descriptor is awaited. No descriptor is buffered. One decoder reads both widths (32-bit
/// fields, or [ext] 64-bit fields and a count), chosen when it starts: a client that reads
/// either carries one body of code.
class block_status_chunk_decoder {
 public:
  constexpr block_status_chunk_decoder() noexcept { reset(12, false); }
  constexpr block_status_chunk_decoder(std::uint64_t chunk_length, bool extended) noexcept {
    reset(chunk_length, extended);
  }

  constexpr void reset(std::uint64_t chunk_length, bool extended) noexcept {
    st_.reset(chunk_length);
    ext_ = extended;
    stage_ = stage::context;
    id_ = 0;
    len_ = 0;
    left_ = 0;
    const unsigned shift = extended ? 4 : 3;  // a descriptor is 16 or 8 bytes
    const std::uint64_t head = extended ? 8 : 4, desc = std::uint64_t{1} << shift;
    if (chunk_length < head + desc || ((chunk_length - head) & (desc - 1)) != 0)
      st_.set_error(extended ? body_errc::block_status_ext_bad_length : body_errc::block_status_bad_length);
    else if ((chunk_length - head) >> shift > max_extents_per_chunk)
      st_.set_error(extended ? body_errc::block_status_ext_too_many_extents : body_errc::block_status_too_many_extents);
    else
      left_ = static_cast<std::uint32_t>((chunk_length - head) >> shift);
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    in = st_.clip(in);
    std::size_t used = 0;
    for (;;) {
      switch (stage_) {
        case stage::context:
          if (!st_.take(in, used, id_)) return detail::need_more(used);
          if (ext_) {
            stage_ = stage::count;
            continue;
          }
          stage_ = stage::length;
          return {used, {.kind = body_item::block_status, .count = left_, .context_id = id_}};
        case stage::count: {
          std::uint32_t c = 0;
          if (!st_.take(in, used, c)) return detail::need_more(used);
          if (c != left_) return st_.fail(used, body_errc::block_status_ext_count_mismatch);
          stage_ = stage::length;
          return {used, {.kind = body_item::block_status, .count = left_, .context_id = id_}};
        }
        case stage::length:
          if (left_ == 0) return st_.finish(used);
          if (!st_.take_field(in, used, ext_ ? 8 : 4, len_)) return detail::need_more(used);
          if (len_ == 0)
            return st_.fail(used, ext_ ? body_errc::block_status_ext_extent_length_zero
                                       : body_errc::block_status_extent_length_zero);
          stage_ = stage::status;
          continue;
        case stage::status: {
          std::uint64_t s = 0;
          if (!st_.take_field(in, used, ext_ ? 8 : 4, s)) return detail::need_more(used);
          --left_;
          stage_ = stage::length;
          return {used, {.kind = body_item::extent, .length = len_, .status = s}};
        }
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t { context, count, length, status };
  detail::body_state st_;
  std::uint64_t len_ = 0;
  std::uint32_t id_ = 0;
  std::uint32_t left_ = 0;  ///< descriptors still due
  stage stage_ = stage::context;
  bool ext_ = false;
};

/// NBD_REPLY_TYPE_BLOCK_STATUS: 32-bit lengths and flags.
class block_status_decoder : public block_status_chunk_decoder {
 public:
  constexpr block_status_decoder() noexcept : block_status_chunk_decoder(12, false) {}
  constexpr explicit block_status_decoder(std::uint64_t chunk_length) noexcept
      : block_status_chunk_decoder(chunk_length, false) {}
};

/// [ext] NBD_REPLY_TYPE_BLOCK_STATUS_EXT: a count, 64-bit lengths and flags.
class block_status_ext_decoder : public block_status_chunk_decoder {
 public:
  constexpr block_status_ext_decoder() noexcept : block_status_chunk_decoder(24, true) {}
  constexpr explicit block_status_ext_decoder(std::uint64_t chunk_length) noexcept
      : block_status_chunk_decoder(chunk_length, true) {}
};

[[nodiscard]] constexpr std::uint64_t block_status_size(std::size_t extents, bool extended) noexcept {
  return (extended ? 8u : 4u) + std::uint64_t{extents} * (extended ? 16u : 8u);
}

namespace detail {
constexpr encode_result encode_block_status(mutable_bytes out, std::uint32_t context_id,
                                            std::span<const block_extent> extents, bool extended) noexcept {
  if (extents.empty()) return {0, 0, body_errc::encode_no_extents};
  if (extents.size() > max_extents_per_chunk) return {0, 0, body_errc::encode_too_many_extents};
  for (const block_extent& e : extents) {
    if (e.length == 0) return {0, 0, body_errc::encode_extent_length_zero};
    if (!extended && (e.length > 0xffffffffu || e.flags > 0xffffffffu))
      return {0, 0, body_errc::encode_extent_too_large};
  }
  const encode_result r = fit(out, block_status_size(extents.size(), extended));
  if (!r.ok()) return r;
  body_writer w{out};
  w.put(context_id);
  if (extended) w.put(static_cast<std::uint32_t>(extents.size()));
  for (const block_extent& e : extents) {
    if (extended) {
      w.put(e.length);
      w.put(e.flags);
    } else {
      w.put(static_cast<std::uint32_t>(e.length));
      w.put(static_cast<std::uint32_t>(e.flags));
    }
  }
  return r;
}
}  // namespace detail

/// NBD_REPLY_TYPE_BLOCK_STATUS payload: 32-bit lengths and flags.
constexpr encode_result encode_block_status(mutable_bytes out, std::uint32_t context_id,
                                            std::span<const block_extent> extents) noexcept {
  return detail::encode_block_status(out, context_id, extents, false);
}

/// [ext] NBD_REPLY_TYPE_BLOCK_STATUS_EXT payload.
constexpr encode_result encode_block_status_ext(mutable_bytes out, std::uint32_t context_id,
                                                std::span<const block_extent> extents) noexcept {
  return detail::encode_block_status(out, context_id, extents, true);
}

// ---- BLOCK_STATUS / BLOCK_STATUS_EXT, one descriptor at a time ------------------------------

/// The fixed head of a status chunk's payload (context id; [ext] and the descriptor count),
/// for a writer that sends the descriptors one by one (encode_block_descriptor) as it
/// decides each of them.
[[nodiscard]] constexpr std::size_t block_status_head_size(bool extended) noexcept { return extended ? 8 : 4; }
[[nodiscard]] constexpr std::size_t block_descriptor_size(bool extended) noexcept { return extended ? 16 : 8; }

constexpr encode_result encode_block_status_head(mutable_bytes out, std::uint32_t context_id, std::uint32_t count,
                                                 bool extended) noexcept {
  if (count == 0) return {0, 0, body_errc::encode_no_extents};
  if (count > max_extents_per_chunk) return {0, 0, body_errc::encode_too_many_extents};
  const encode_result r = detail::fit(out, block_status_head_size(extended));
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(context_id);
  if (extended) w.put(count);
  return r;
}

constexpr encode_result encode_block_descriptor(mutable_bytes out, const block_extent& e, bool extended) noexcept {
  if (e.length == 0) return {0, 0, body_errc::encode_extent_length_zero};
  if (!extended && (e.length > 0xffffffffu || e.flags > 0xffffffffu)) return {0, 0, body_errc::encode_extent_too_large};
  const encode_result r = detail::fit(out, block_descriptor_size(extended));
  if (!r.ok()) return r;
  detail::body_writer w{out};
  if (extended) {
    w.put(e.length);
    w.put(e.flags);
  } else {
    w.put(static_cast<std::uint32_t>(e.length));
    w.put(static_cast<std::uint32_t>(e.flags));
  }
  return r;
}

static_assert(sizeof(offset_data_decoder) <= 48);
static_assert(sizeof(offset_hole_decoder) <= 40);
static_assert(sizeof(block_status_chunk_decoder) <= 48);
static_assert(sizeof(error_chunk_decoder) <= max_string + 56);
static_assert(sizeof(tolerant_error_chunk_decoder) <= max_string + 64);

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
