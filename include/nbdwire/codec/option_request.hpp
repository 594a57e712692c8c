// SPDX-License-Identifier: MIT
// nbdwire codec: option request bodies (client to server; checklist 1.5).
//   NBD_OPT_EXPORT_NAME            name (the whole option data)
//   NBD_OPT_INFO / NBD_OPT_GO      u32 name length, name, u16 count, count × u16 NBD_INFO_*
//   NBD_OPT_{LIST,SET}_META_CONTEXT u32 name length, name, u32 query count,
//                                  count × (u32 query length, query)
// Decoders stream: option data may be up to the server's option limit (1 MiB by default)
// and a meta-context query list is never held whole. Memory: one string buffer of
// MaxString bytes plus about 40 bytes of state (static_asserts at the end).
#pragma once

#include <span>  // encoder argument lists

#include "nbdwire/codec/core.hpp"
#include "nbdwire/constants.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

// ---- NBD_OPT_EXPORT_NAME -------------------------------------------------------------------

/// Events: export_name, done. Strings longer than MaxString fail before any byte is read.
template <std::size_t MaxString = max_string>
using basic_export_name_decoder = detail::string_body_decoder<MaxString, body_item::export_name,
                                                              body_errc::export_name_too_long,
                                                              body_errc::export_name_contains_nul>;
using export_name_decoder = basic_export_name_decoder<>;

[[nodiscard]] constexpr std::size_t export_name_size(std::string_view name) noexcept { return name.size(); }

constexpr encode_result encode_export_name(mutable_bytes out, std::string_view name) noexcept {
  return detail::encode_string_body(out, name, true);
}

// ---- NBD_OPT_INFO / NBD_OPT_GO -------------------------------------------------------------

/// Events: export_name, info_count, count × info_request, done.
template <std::size_t MaxString = max_string>
class basic_info_request_decoder {
 public:
  constexpr basic_info_request_decoder() noexcept { reset(6); }
  constexpr explicit basic_info_request_decoder(std::uint64_t option_length) noexcept { reset(option_length); }

  constexpr void reset(std::uint64_t option_length) noexcept {
    st_.reset(option_length);
    str_.clear();
    stage_ = stage::name_length;
    len_ = 0;
    left_ = 0;
    // "u32 name length, name, u16 count": 6 bytes at least.
    if (option_length < 6) st_.set_error(body_errc::info_request_too_short);
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
          // "MUST be ≤ option length − 6": 2 count bytes stay after the name.
          if (v > st_.left() - 2) return st_.fail(used, body_errc::info_request_name_length_exceeds_body);
          if (v > MaxString) return st_.fail(used, body_errc::info_request_name_too_long);
          len_ = v;
          stage_ = stage::name;
          continue;
        }
        case stage::name: {
          bytes_view s;
          if (!str_.take(in, used, st_, len_, s)) return detail::need_more(used);
          if (detail::has_nul(s)) return st_.fail(used, body_errc::info_request_name_contains_nul);
          stage_ = stage::count;
          return {used, {.kind = body_item::export_name, .text = s}};
        }
        case stage::count: {
          std::uint16_t c = 0;
          if (!st_.take(in, used, c)) return detail::need_more(used);
          if (st_.left() != 2u * std::uint64_t{c}) return st_.fail(used, body_errc::info_request_count_mismatch);
          left_ = c;
          stage_ = stage::types;
          return {used, {.kind = body_item::info_count, .count = c}};
        }
        case stage::types: {
          if (left_ == 0) return st_.finish(used);
          std::uint16_t t = 0;
          if (!st_.take(in, used, t)) return detail::need_more(used);
          --left_;
          return {used, {.kind = body_item::info_request, .info = t}};
        }
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t { name_length, name, count, types };
  detail::body_state st_;
  detail::string_stash<MaxString> str_;
  std::uint32_t len_ = 0;
  std::uint32_t left_ = 0;  ///< info requests still due
  stage stage_ = stage::name_length;
};
using info_request_decoder = basic_info_request_decoder<>;

[[nodiscard]] constexpr std::uint64_t info_request_size(std::string_view name, std::size_t count) noexcept {
  return 4u + std::uint64_t{name.size()} + 2u + 2u * std::uint64_t{count};
}

constexpr encode_result encode_info_request(mutable_bytes out, std::string_view name,
                                            std::span<const info_type> requests) noexcept {
  if (const body_errc e = detail::check_string(name, true); e != body_errc::ok) return {0, 0, e};
  if (requests.size() > 0xffffu) return {0, 0, body_errc::encode_too_many_info_requests};
  const encode_result r = detail::fit(out, info_request_size(name, requests.size()));
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(static_cast<std::uint32_t>(name.size()));
  w.put(name);
  w.put(static_cast<std::uint16_t>(requests.size()));
  for (info_type t : requests) w.put(static_cast<std::uint16_t>(t));
  return r;
}

// ---- NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT -----------------------------------

/// Events: export_name, query_count, count × query, done. Every length is judged against the
/// bytes left, counting 4 bytes for each length field still due, so a body whose lengths lie
/// fails at the first lying field.
template <std::size_t MaxString = max_string>
class basic_meta_context_request_decoder {
 public:
  constexpr basic_meta_context_request_decoder() noexcept { reset(8); }
  constexpr explicit basic_meta_context_request_decoder(std::uint64_t option_length) noexcept {
    reset(option_length);
  }

  constexpr void reset(std::uint64_t option_length) noexcept {
    st_.reset(option_length);
    str_.clear();
    stage_ = stage::name_length;
    len_ = 0;
    left_ = 0;
    if (option_length < 8) st_.set_error(body_errc::meta_request_too_short);
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
          if (v > st_.left() - 4) return st_.fail(used, body_errc::meta_request_name_length_exceeds_body);
          if (v > MaxString) return st_.fail(used, body_errc::meta_request_name_too_long);
          len_ = v;
          stage_ = stage::name;
          continue;
        }
        case stage::name: {
          bytes_view s;
          if (!str_.take(in, used, st_, len_, s)) return detail::need_more(used);
          if (detail::has_nul(s)) return st_.fail(used, body_errc::meta_request_name_contains_nul);
          stage_ = stage::count;
          return {used, {.kind = body_item::export_name, .text = s}};
        }
        case stage::count: {
          std::uint32_t c = 0;
          if (!st_.take(in, used, c)) return detail::need_more(used);
          if (c == 0 && st_.left() != 0) return st_.fail(used, body_errc::meta_request_trailing_data);
          if (c > st_.left() / 4) return st_.fail(used, body_errc::meta_request_count_exceeds_body);
          left_ = c;
          stage_ = c ? stage::query_length : stage::end;
          return {used, {.kind = body_item::query_count, .count = c}};
        }
        case stage::query_length: {
          std::uint32_t v = 0;
          if (!st_.take(in, used, v)) return detail::need_more(used);
          // Room for this query and the length fields of the queries after it.
          const std::uint64_t room = st_.left() - 4u * (std::uint64_t{left_} - 1u);
          if (v > room) return st_.fail(used, body_errc::meta_request_query_length_exceeds_body);
          if (v > MaxString) return st_.fail(used, body_errc::meta_request_query_too_long);
          if (left_ == 1 && v != room) return st_.fail(used, body_errc::meta_request_trailing_data);
          len_ = v;
          stage_ = stage::query;
          continue;
        }
        case stage::query: {
          bytes_view s;
          if (!str_.take(in, used, st_, len_, s)) return detail::need_more(used);
          if (detail::has_nul(s)) return st_.fail(used, body_errc::meta_request_query_contains_nul);
          stage_ = --left_ ? stage::query_length : stage::end;
          return {used, {.kind = body_item::query, .text = s}};
        }
        case stage::end:
          return st_.finish(used);
      }
    }
  }

  [[nodiscard]] constexpr body_errc error() const noexcept { return st_.error(); }
  [[nodiscard]] constexpr bool finished() const noexcept { return st_.finished(); }

 private:
  enum class stage : std::uint8_t { name_length, name, count, query_length, query, end };
  detail::body_state st_;
  detail::string_stash<MaxString> str_;
  std::uint32_t len_ = 0;
  std::uint32_t left_ = 0;  ///< queries still due
  stage stage_ = stage::name_length;
};
using meta_context_request_decoder = basic_meta_context_request_decoder<>;

[[nodiscard]] constexpr std::uint64_t meta_context_request_size(std::string_view name,
                                                                std::span<const std::string_view> queries) noexcept {
  std::uint64_t n = 4u + std::uint64_t{name.size()} + 4u;
  for (std::string_view q : queries) n += 4u + std::uint64_t{q.size()};
  return n;
}

constexpr encode_result encode_meta_context_request(mutable_bytes out, std::string_view name,
                                                    std::span<const std::string_view> queries) noexcept {
  if (const body_errc e = detail::check_string(name, true); e != body_errc::ok) return {0, 0, e};
  if (queries.size() > 0xffffffffu) return {0, 0, body_errc::encode_too_many_queries};
  for (std::string_view q : queries)
    if (const body_errc e = detail::check_string(q, true); e != body_errc::ok) return {0, 0, e};
  const encode_result r = detail::fit(out, meta_context_request_size(name, queries));
  if (!r.ok()) return r;
  detail::body_writer w{out};
  w.put(static_cast<std::uint32_t>(name.size()));
  w.put(name);
  w.put(static_cast<std::uint32_t>(queries.size()));
  for (std::string_view q : queries) {
    w.put(static_cast<std::uint32_t>(q.size()));
    w.put(q);
  }
  return r;
}

// Memory bounds: the string buffer plus at most 40 bytes.
static_assert(sizeof(export_name_decoder) <= max_string + 40);
static_assert(sizeof(info_request_decoder) <= max_string + 48);
static_assert(sizeof(meta_context_request_decoder) <= max_string + 48);

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
