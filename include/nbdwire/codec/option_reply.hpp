// SPDX-License-Identifier: MIT
// nbdwire codec: option reply bodies (server to client; checklist 1.7).
//   NBD_REP_SERVER        u32 name length, name, rest = description
//   NBD_REP_INFO          u16 info type, then EXPORT (u64 size, u16 flags), NAME (string),
//                         DESCRIPTION (string), BLOCK_SIZE (3 × u32); unknown types skipped
//   NBD_REP_META_CONTEXT  u32 context id, name (rest)
//   NBD_REP_ERR_*         message (all of the data)
// Memory: one string buffer of MaxString bytes plus about 40 bytes of state.
#pragma once

#include "nbdwire/codec/core.hpp"
#include "nbdwire/constants.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

// ---- NBD_REP_SERVER ------------------------------------------------------------------------

/// Events: server_name, server_description (possibly empty), done. The description is
/// text for humans: NUL is not checked there, as in the client machine.
template <std::size_t MaxString = max_string>
class basic_server_reply_decoder {
 public:
  constexpr basic_server_reply_decoder() noexcept { reset(4); }
  constexpr explicit basic_server_reply_decoder(std::uint64_t reply_length) noexcept { reset(reply_length); }

  constexpr void reset(std::uint64_t reply_length) noexcept {
    st_.reset(reply_length);
    str_.clear();
    stage_ = stage::name_length;
    len_ = 0;
    if (reply_length < 4) st_.set_error(body_errc::server_reply_too_short);
    else if (reply_length > 4u + 2u * std::uint64_t{MaxString}) st_.set_error(body_errc::server_reply_too_long);
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    in = st_.clip(in);
    std::size_t used = 0;
    for (;;) {
      switch (stage_) {
        case stage::name_length: {
          std::uint32_t v = 0;
          if (!st_.take(in, used, v)) return detail::need_more(used);
          if (v > st_.left()) return st_.fail(used, body_errc::server_reply_name_length_exceeds_body);
          if (v > MaxString) return st_.fail(used, body_errc::server_reply_name_too_long);
          if (st_.left() - v > MaxString) return st_.fail(used, body_errc::server_reply_description_too_long);
          len_ = v;
          stage_ = stage::name;
          continue;
        }
        case stage::name: {
          bytes_view s;
          if (!str_.take(in, used, st_, len_, s)) return detail::need_more(used);
          if (detail::has_nul(s)) return st_.fail(used, body_errc::server_reply_name_contains_nul);
          len_ = static_cast<std::uint32_t>(st_.left());
          stage_ = stage::description;
          return {used, {.kind = body_item::server_name, .text = s}};
        }
        case stage::description: {
          bytes_view s;
          if (!str_.take(in, used, st_, len_, s)) return detail::need_more(used);
          stage_ = stage::end;
          return {used, {.kind = body_item::server_description, .text = s}};
        }
        case stage::end:
          return st_.finish(used);
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t { name_length, name, description, end };
  detail::body_state st_;
  detail::string_stash<MaxString> str_;
  std::uint32_t len_ = 0;
  stage stage_ = stage::name_length;
};
using server_reply_decoder = basic_server_reply_decoder<>;

[[nodiscard]] constexpr std::uint64_t server_reply_size(std::string_view name, std::string_view description) noexcept {
  return 4u + std::uint64_t{name.size()} + std::uint64_t{description.size()};
}

constexpr encode_result encode_server_reply(mutable_bytes out, std::string_view name,
                                            std::string_view description) noexcept {
  if (const body_errc e = detail::check_string(name, true); e != body_errc::ok) return {0, 0, e};
  if (const body_errc e = detail::check_string(description, false); e != body_errc::ok) return {0, 0, e};
  const encode_result r = detail::fit(out, server_reply_size(name, description));
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(static_cast<std::uint32_t>(name.size()));
  w.put(name);
  w.put(description);
  return r;
}

// ---- NBD_REP_INFO --------------------------------------------------------------------------

/// Events: one of info_export, info_block_size, info_name, info_description, info_unknown;
/// then done. The fixed types' lengths are checked as soon as the type is read.
template <std::size_t MaxString = max_string>
class basic_info_reply_decoder {
 public:
  constexpr basic_info_reply_decoder() noexcept { reset(2); }
  constexpr explicit basic_info_reply_decoder(std::uint64_t reply_length) noexcept { reset(reply_length); }

  constexpr void reset(std::uint64_t reply_length) noexcept {
    st_.reset(reply_length);
    str_.clear();
    stage_ = stage::type;
    ev_ = {};
    skip_ = 0;
    len_ = 0;
    if (reply_length < 2) st_.set_error(body_errc::info_reply_too_short);
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    in = st_.clip(in);
    std::size_t used = 0;
    for (;;) {
      switch (stage_) {
        case stage::type: {
          std::uint16_t t = 0;
          if (!st_.take(in, used, t)) return detail::need_more(used);
          ev_.info = t;
          const std::uint64_t rest = st_.left();
          switch (static_cast<info_type>(t)) {
            case info_type::export_info:
              if (rest != 10) return st_.fail(used, body_errc::info_export_bad_length);
              ev_.kind = body_item::info_export;
              stage_ = stage::export_size;
              continue;
            case info_type::block_size:
              if (rest != 12) return st_.fail(used, body_errc::info_block_size_bad_length);
              ev_.kind = body_item::info_block_size;
              stage_ = stage::minimum;
              continue;
            case info_type::name:
              if (rest > MaxString) return st_.fail(used, body_errc::info_name_too_long);
              ev_.kind = body_item::info_name;
              len_ = static_cast<std::uint32_t>(rest);
              stage_ = stage::text;
              continue;
            case info_type::description:
              if (rest > MaxString) return st_.fail(used, body_errc::info_description_too_long);
              ev_.kind = body_item::info_description;
              len_ = static_cast<std::uint32_t>(rest);
              stage_ = stage::text;
              continue;
          }
          // The client "MUST ignore unknown info types": skip the payload, report its size.
          ev_.kind = body_item::info_unknown;
          ev_.length = skip_ = rest;
          stage_ = stage::skip;
          continue;
        }
        case stage::export_size:
          if (!st_.take(in, used, ev_.export_size)) return detail::need_more(used);
          stage_ = stage::export_flags;
          continue;
        case stage::export_flags:
          if (!st_.take(in, used, ev_.transmission_flags)) return detail::need_more(used);
          return emit(used);
        case stage::minimum:
          if (!st_.take(in, used, ev_.block_size.minimum)) return detail::need_more(used);
          stage_ = stage::preferred;
          continue;
        case stage::preferred:
          if (!st_.take(in, used, ev_.block_size.preferred)) return detail::need_more(used);
          stage_ = stage::maximum;
          continue;
        case stage::maximum:
          if (!st_.take(in, used, ev_.block_size.maximum)) return detail::need_more(used);
          return emit(used);
        case stage::text: {
          bytes_view s;
          if (!str_.take(in, used, st_, len_, s)) return detail::need_more(used);
          if (ev_.kind == body_item::info_name && detail::has_nul(s))
            return st_.fail(used, body_errc::info_name_contains_nul);
          ev_.text = s;
          return emit(used);
        }
        case stage::skip:
          if (!st_.skip(in, used, skip_)) return detail::need_more(used);
          return emit(used);
        case stage::end:
          return st_.finish(used);
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t {
    type, export_size, export_flags, minimum, preferred, maximum, text, skip, end
  };
  constexpr body_step emit(std::size_t used) noexcept {
    stage_ = stage::end;
    return {used, ev_};
  }

  detail::body_state st_;
  detail::string_stash<MaxString> str_;
  body_event ev_{};
  std::uint64_t skip_ = 0;
  std::uint32_t len_ = 0;  ///< NAME / DESCRIPTION length: the rest of the body
  stage stage_ = stage::type;
};
using info_reply_decoder = basic_info_reply_decoder<>;

inline constexpr std::size_t info_export_size = 12;
inline constexpr std::size_t info_block_size_size = 14;
[[nodiscard]] constexpr std::uint64_t info_string_size(std::string_view s) noexcept {
  return 2u + std::uint64_t{s.size()};
}

constexpr encode_result encode_info_export(mutable_bytes out, std::uint64_t export_size,
                                           std::uint16_t transmission_flags) noexcept {
  const encode_result r = detail::fit(out, info_export_size);
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(static_cast<std::uint16_t>(info_type::export_info));
  w.put(export_size);
  w.put(transmission_flags);
  return r;
}

constexpr encode_result encode_info_block_size(mutable_bytes out, const block_size_constraints& b) noexcept {
  const encode_result r = detail::fit(out, info_block_size_size);
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(static_cast<std::uint16_t>(info_type::block_size));
  w.put(b.minimum);
  w.put(b.preferred);
  w.put(b.maximum);
  return r;
}

/// NBD_INFO_NAME (a name: no NUL) or NBD_INFO_DESCRIPTION (text).
constexpr encode_result encode_info_string(mutable_bytes out, info_type t, std::string_view s) noexcept {
  if (const body_errc e = detail::check_string(s, t == info_type::name); e != body_errc::ok) return {0, 0, e};
  const encode_result r = detail::fit(out, info_string_size(s));
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(static_cast<std::uint16_t>(t));
  w.put(s);
  return r;
}

/// Any other info type: the type, then `payload` as given (for types this library does not
/// know, such as proposed extensions).
constexpr encode_result encode_info_other(mutable_bytes out, std::uint16_t type, bytes_view payload) noexcept {
  const encode_result r = detail::fit(out, 2u + std::uint64_t{payload.size()});
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(type);
  w.put(payload);
  return r;
}

// ---- NBD_REP_META_CONTEXT ------------------------------------------------------------------

/// Events: meta_context (id and name), done.
template <std::size_t MaxString = max_string>
class basic_meta_context_reply_decoder {
 public:
  constexpr basic_meta_context_reply_decoder() noexcept { reset(4); }
  constexpr explicit basic_meta_context_reply_decoder(std::uint64_t reply_length) noexcept { reset(reply_length); }

  constexpr void reset(std::uint64_t reply_length) noexcept {
    st_.reset(reply_length);
    str_.clear();
    stage_ = stage::id;
    id_ = 0;
    len_ = reply_length >= 4 ? static_cast<std::uint32_t>(std::min<std::uint64_t>(reply_length - 4, 0xffffffffu)) : 0;
    if (reply_length < 4) st_.set_error(body_errc::meta_context_reply_too_short);
    else if (reply_length - 4 > MaxString) st_.set_error(body_errc::meta_context_name_too_long);
  }

  [[nodiscard]] constexpr body_step decode(bytes_view in) noexcept {
    if (st_.settled()) return st_.settled_step();
    in = st_.clip(in);
    std::size_t used = 0;
    for (;;) {
      switch (stage_) {
        case stage::id:
          if (!st_.take(in, used, id_)) return detail::need_more(used);
          stage_ = stage::name;
          continue;
        case stage::name: {
          bytes_view s;
          if (!str_.take(in, used, st_, len_, s)) return detail::need_more(used);
          if (detail::has_nul(s)) return st_.fail(used, body_errc::meta_context_name_contains_nul);
          stage_ = stage::end;
          return {used, {.kind = body_item::meta_context, .text = s, .context_id = id_}};
        }
        case stage::end:
          return st_.finish(used);
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t { id, name, end };
  detail::body_state st_;
  detail::string_stash<MaxString> str_;
  std::uint32_t id_ = 0;
  std::uint32_t len_ = 0;
  stage stage_ = stage::id;
};
using meta_context_reply_decoder = basic_meta_context_reply_decoder<>;

[[nodiscard]] constexpr std::uint64_t meta_context_reply_size(std::string_view name) noexcept {
  return 4u + std::uint64_t{name.size()};
}

constexpr encode_result encode_meta_context_reply(mutable_bytes out, std::uint32_t context_id,
                                                  std::string_view name) noexcept {
  if (const body_errc e = detail::check_string(name, true); e != body_errc::ok) return {0, 0, e};
  const encode_result r = detail::fit(out, meta_context_reply_size(name));
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(context_id);
  w.put(name);
  return r;
}

// ---- NBD_REP_ERR_* ---------------------------------------------------------------------------

/// Events: error_message (possibly empty), done. "All error replies MAY have some data set,
/// in which case that data is an error message string."
template <std::size_t MaxString = max_string>
using basic_error_reply_decoder = detail::string_body_decoder<MaxString, body_item::error_message,
                                                              body_errc::error_reply_message_too_long, body_errc::ok>;
using error_reply_decoder = basic_error_reply_decoder<>;

[[nodiscard]] constexpr std::uint64_t error_reply_size(std::string_view message) noexcept { return message.size(); }

constexpr encode_result encode_error_reply(mutable_bytes out, std::string_view message) noexcept {
  return detail::encode_string_body(out, message, false);
}

static_assert(sizeof(server_reply_decoder) <= max_string + 48);
static_assert(sizeof(meta_context_reply_decoder) <= max_string + 48);
static_assert(sizeof(error_reply_decoder) <= max_string + 40);
// The info decoder keeps the event it is assembling (body_event, about 80 bytes).
static_assert(sizeof(info_reply_decoder) <= max_string + 48 + sizeof(body_event));

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
