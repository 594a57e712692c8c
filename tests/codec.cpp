// SPDX-License-Identifier: MIT
// The body codec (codec.hpp): every golden vector of a variable-length body decoded field by
// field, re-encoded byte for byte, decoded at every split; every typed body error; and a few
// bodies encoded and decoded at compile time.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nbdwire/codec.hpp"
#include "nbdwire/wire.hpp"
#include "support/golden.hpp"
#include "support/hex.hpp"

using namespace nbdwire;
using namespace nbdwire_test;

namespace {

/// Which decoder a body needs.
enum class body_kind {
  export_name, info_request, meta_request, server_reply, info_reply, meta_reply, error_reply,
  offset_data, offset_hole, error_chunk, block_status, block_status_ext
};

/// One decoded item with its string copied, comparable across runs.
struct item {
  body_item kind = body_item::need_more;
  body_errc error = body_errc::ok;
  std::string text{};
  std::uint64_t offset = 0, length = 0, status = 0, export_size = 0;
  std::uint32_t count = 0, context_id = 0, error_value = 0;
  std::uint16_t info = 0, transmission_flags = 0;
  block_size_constraints block_size{};
  bool operator==(const item&) const = default;
};

item record(const body_event& e) {
  return {e.kind, e.error, std::string(as_chars(e.text)), e.offset, e.length, e.status, e.export_size, e.count,
          e.context_id, e.error_value, e.info, e.transmission_flags, e.block_size};
}

struct decoded {
  std::vector<item> items;  ///< every event but need_more, the final done/failed included
  std::size_t consumed = 0;
  bool operator==(const decoded&) const = default;
  [[nodiscard]] body_errc error() const { return items.empty() ? body_errc::ok : items.back().error; }
  [[nodiscard]] bool finished() const { return !items.empty() && items.back().kind == body_item::done; }
};

/// Feeds `body` cut at `cuts` (ascending, inside (0, n)), then empty input until the decoder
/// has nothing more to say. Checks the call contract on the way.
template <class D>
decoded run(D& d, bytes_view body, const std::vector<std::size_t>& cuts) {
  decoded out;
  std::size_t start = 0;
  bool over = false;
  for (std::size_t k = 0; k <= cuts.size() && !over; ++k) {
    const std::size_t end = k < cuts.size() ? cuts[k] : body.size();
    bytes_view piece = body.subspan(start, end - start);
    start = end;
    const bool last = k == cuts.size();
    for (int guard = 0;; ++guard) {
      REQUIRE(guard < 1'000'000);
      const body_step s = d.decode(piece);
      REQUIRE(s.consumed <= piece.size());
      piece = piece.subspan(s.consumed);
      out.consumed += s.consumed;
      if (s.ev.kind == body_item::need_more) {
        CHECK(piece.empty());  // need_more: every byte given was used
        break;
      }
      out.items.push_back(record(s.ev));
      if (s.ev.kind == body_item::done || s.ev.kind == body_item::failed) {
        // Settled: the same answer again, nothing consumed.
        const body_step again = d.decode(piece);
        CHECK(again.consumed == 0);
        CHECK(again.ev.kind == s.ev.kind);
        CHECK(again.ev.error == s.ev.error);
        CHECK(d.error() == s.ev.error);
        over = true;
        break;
      }
      if (piece.empty() && !last) break;
    }
  }
  return out;
}

decoded decode_body(body_kind k, std::uint16_t type, std::uint64_t length, bytes_view body,
                    const std::vector<std::size_t>& cuts = {}) {
  switch (k) {
    case body_kind::export_name: { auto d = std::make_unique<export_name_decoder>(length); return run(*d, body, cuts); }
    case body_kind::info_request: { auto d = std::make_unique<info_request_decoder>(length); return run(*d, body, cuts); }
    case body_kind::meta_request: { auto d = std::make_unique<meta_context_request_decoder>(length); return run(*d, body, cuts); }
    case body_kind::server_reply: { auto d = std::make_unique<server_reply_decoder>(length); return run(*d, body, cuts); }
    case body_kind::info_reply: { auto d = std::make_unique<info_reply_decoder>(length); return run(*d, body, cuts); }
    case body_kind::meta_reply: { auto d = std::make_unique<meta_context_reply_decoder>(length); return run(*d, body, cuts); }
    case body_kind::error_reply: { auto d = std::make_unique<error_reply_decoder>(length); return run(*d, body, cuts); }
    case body_kind::offset_data: { offset_data_decoder d(length); return run(d, body, cuts); }
    case body_kind::offset_hole: { offset_hole_decoder d(length); return run(d, body, cuts); }
    case body_kind::error_chunk: { auto d = std::make_unique<error_chunk_decoder>(type, length); return run(*d, body, cuts); }
    case body_kind::block_status: { block_status_decoder d(length); return run(d, body, cuts); }
    case body_kind::block_status_ext: { block_status_ext_decoder d(length); return run(d, body, cuts); }
  }
  return {};
}

/// A golden message split into its header facts and its body.
struct message {
  body_kind kind{};
  std::uint16_t type = 0;
  std::uint64_t length = 0;
  bytes body;
};

message split_message(const bytes& m) {
  const auto at32 = [&](std::size_t i) { return load_be<std::uint32_t>(m.data() + i); };
  message r;
  std::size_t head = 0;
  if (load_be<std::uint64_t>(m.data()) == magic::ihaveopt) {
    head = sizeof(option_header);
    r.length = at32(12);
    switch (static_cast<option>(at32(8))) {
      case option::export_name: r.kind = body_kind::export_name; break;
      case option::info: case option::go: r.kind = body_kind::info_request; break;
      default: r.kind = body_kind::meta_request; break;
    }
  } else if (load_be<std::uint64_t>(m.data()) == magic::option_reply) {
    head = sizeof(option_reply_header);
    r.length = at32(16);
    const std::uint32_t t = at32(12);
    r.kind = (t & reply_type_error_bit) ? body_kind::error_reply
             : t == 2                   ? body_kind::server_reply
             : t == 3                   ? body_kind::info_reply
                                        : body_kind::meta_reply;
  } else {
    const bool ext = at32(0) == magic::extended_reply;
    head = ext ? sizeof(extended_reply_header) : sizeof(structured_reply_header);
    r.length = ext ? load_be<std::uint64_t>(m.data() + 24) : at32(16);
    r.type = load_be<std::uint16_t>(m.data() + 6);
    switch (r.type) {
      case 1: r.kind = body_kind::offset_data; break;
      case 2: r.kind = body_kind::offset_hole; break;
      case 5: r.kind = body_kind::block_status; break;
      case 6: r.kind = body_kind::block_status_ext; break;
      default: r.kind = body_kind::error_chunk; break;
    }
  }
  r.body = slice(m, head, m.size());
  return r;
}

item done_item() { return {.kind = body_item::done}; }

/// Whole, at every single split point, byte by byte: the same items and the same count.
void check_all_splits(const message& m, const decoded& whole) {
  const bytes_view b = view(m.body);
  for (std::size_t i = 1; i < b.size(); ++i) {
    CAPTURE(i);
    CHECK(decode_body(m.kind, m.type, m.length, b, {i}) == whole);
  }
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < b.size(); ++i) every.push_back(i);
  CHECK(decode_body(m.kind, m.type, m.length, b, every) == whole);
}

struct golden_case {
  const char* vector;
  std::vector<item> items;  ///< without the final done
  std::size_t consumed;     ///< body bytes the decoder owns
};

std::vector<golden_case> golden_cases() {
  const block_size_constraints g06{1, 4096, 33554432};
  return {
      {"codec_opt_export_name", {{.kind = body_item::export_name, .text = "disk"}}, 4},
      {"codec_opt_export_name_default", {{.kind = body_item::export_name, .text = ""}}, 0},
      {"G04", {{.kind = body_item::export_name, .text = "disk"}, {.kind = body_item::info_count, .count = 1},
               {.kind = body_item::info_request, .info = 3}}, 12},
      {"codec_opt_info_three", {{.kind = body_item::export_name, .text = ""}, {.kind = body_item::info_count, .count = 3},
                                {.kind = body_item::info_request, .info = 3}, {.kind = body_item::info_request, .info = 1},
                                {.kind = body_item::info_request, .info = 2}}, 12},
      {"codec_opt_list_meta_context_all", {{.kind = body_item::export_name, .text = ""},
                                           {.kind = body_item::query_count, .count = 0}}, 8},
      {"G21", {{.kind = body_item::export_name, .text = "disk"}, {.kind = body_item::query_count, .count = 1},
               {.kind = body_item::query, .text = "base:allocation"}}, 31},
      {"codec_opt_set_meta_context_two", {{.kind = body_item::export_name, .text = "disk"},
                                          {.kind = body_item::query_count, .count = 2},
                                          {.kind = body_item::query, .text = "base:allocation"},
                                          {.kind = body_item::query, .text = "qemu:dirty-bitmap:b0"}}, 55},
      {"codec_rep_server", {{.kind = body_item::server_name, .text = "disk"},
                            {.kind = body_item::server_description, .text = "a 1 GiB disk"}}, 20},
      {"codec_rep_server_bare", {{.kind = body_item::server_name, .text = "disk"},
                                 {.kind = body_item::server_description, .text = ""}}, 8},
      {"G05", {{.kind = body_item::info_export, .export_size = 0x40000000, .info = 0, .transmission_flags = 5}}, 12},
      {"G06", {{.kind = body_item::info_block_size, .info = 3, .block_size = g06}}, 14},
      {"codec_rep_info_name_empty", {{.kind = body_item::info_name, .text = "", .info = 1}}, 2},
      {"codec_rep_info_name", {{.kind = body_item::info_name, .text = "disk", .info = 1}}, 6},
      {"codec_rep_info_description", {{.kind = body_item::info_description, .text = "a 1 GiB disk", .info = 2}}, 14},
      {"codec_rep_info_unknown", {{.kind = body_item::info_unknown, .length = 2, .info = 4}}, 4},
      {"G22", {{.kind = body_item::meta_context, .text = "base:allocation", .context_id = 1}}, 19},
      {"G24", {{.kind = body_item::error_message, .text = ""}}, 0},
      {"codec_rep_err_invalid_message", {{.kind = body_item::error_message, .text = "Invalid name length: 5000"}}, 25},
      {"G11", {{.kind = body_item::offset_data, .offset = 0x100000, .length = 4096}}, 8},
      {"codec_chunk_offset_data", {{.kind = body_item::offset_data, .offset = 0x100000, .length = 4}}, 8},
      {"G12", {{.kind = body_item::offset_hole, .offset = 0x100000, .length = 4096}}, 12},
      {"G14", {{.kind = body_item::error_message, .text = "", .error_value = 22}}, 6},
      {"codec_chunk_error_message", {{.kind = body_item::error_message, .text = "bad", .error_value = 22}}, 9},
      {"codec_chunk_error_offset", {{.kind = body_item::error_message, .text = "io", .error_value = 5},
                                    {.kind = body_item::error_offset, .offset = 0x100000}}, 16},
      {"G13", {{.kind = body_item::block_status, .count = 1, .context_id = 1},
               {.kind = body_item::extent, .length = 0x40000000, .status = 3}}, 12},
      {"codec_chunk_block_status_three", {{.kind = body_item::block_status, .count = 3, .context_id = 0},
                                          {.kind = body_item::extent, .length = 0x100000, .status = 0},
                                          {.kind = body_item::extent, .length = 0x100000, .status = 3},
                                          {.kind = body_item::extent, .length = 0x3fe00000, .status = 0}}, 28},
      {"G18", {{.kind = body_item::block_status, .count = 1, .context_id = 1},
               {.kind = body_item::extent, .length = 0x40000000, .status = 3}}, 24},
      {"codec_chunk_block_status_ext_two", {{.kind = body_item::block_status, .count = 2, .context_id = 1},
                                            {.kind = body_item::extent, .length = 0x100000, .status = 0},
                                            {.kind = body_item::extent, .length = 0x3ff00000, .status = 3}}, 40},
  };
}

/// Re-encodes the decoded items of a body with the matching encoder.
encode_result encode_items(const message& m, const std::vector<item>& items, mutable_bytes out) {
  std::vector<std::string_view> texts;
  for (const item& i : items) texts.emplace_back(i.text);
  switch (m.kind) {
    case body_kind::export_name: return encode_export_name(out, items.at(0).text);
    case body_kind::info_request: {
      std::vector<info_type> req;
      for (std::size_t i = 2; i < items.size(); ++i) req.push_back(static_cast<info_type>(items[i].info));
      return encode_info_request(out, items.at(0).text, req);
    }
    case body_kind::meta_request:
      return encode_meta_context_request(out, items.at(0).text, std::span(texts).subspan(2));
    case body_kind::server_reply: return encode_server_reply(out, items.at(0).text, items.at(1).text);
    case body_kind::info_reply: {
      const item& i = items.at(0);
      if (i.kind == body_item::info_export) return encode_info_export(out, i.export_size, i.transmission_flags);
      if (i.kind == body_item::info_block_size) return encode_info_block_size(out, i.block_size);
      if (i.kind == body_item::info_unknown)  // the payload is skipped, not decoded: take it from the vector
        return encode_info_other(out, i.info, view(m.body).subspan(2));
      return encode_info_string(out, static_cast<info_type>(i.info), i.text);
    }
    case body_kind::meta_reply: return encode_meta_context_reply(out, items.at(0).context_id, items.at(0).text);
    case body_kind::error_reply: return encode_error_reply(out, items.at(0).text);
    case body_kind::offset_data: return encode_offset_data_prefix(out, items.at(0).offset);
    case body_kind::offset_hole:
      return encode_offset_hole(out, items.at(0).offset, static_cast<std::uint32_t>(items.at(0).length));
    case body_kind::error_chunk:
      if (items.size() > 1) return encode_error_offset_chunk(out, items[0].error_value, items[0].text, items[1].offset);
      return encode_error_chunk(out, items[0].error_value, items[0].text);
    case body_kind::block_status:
    case body_kind::block_status_ext: {
      std::vector<block_extent> ex;
      for (std::size_t i = 1; i < items.size(); ++i) ex.push_back({items[i].length, items[i].status});
      return m.kind == body_kind::block_status ? encode_block_status(out, items.at(0).context_id, ex)
                                               : encode_block_status_ext(out, items.at(0).context_id, ex);
    }
  }
  return {};
}

}  // namespace

TEST_CASE("codec: golden vectors decode field by field") {
  for (const golden_case& g : golden_cases()) {
    const std::string name = g.vector;
    CAPTURE(name);
    const message m = split_message(golden(g.vector));
    const decoded d = decode_body(m.kind, m.type, m.length, view(m.body));
    std::vector<item> want = g.items;
    want.push_back(done_item());
    CHECK(d.items == want);
    CHECK(d.consumed == g.consumed);
  }
}

TEST_CASE("codec: encoding the decoded fields gives the golden bytes") {
  for (const golden_case& g : golden_cases()) {
    const std::string name = g.vector;
    CAPTURE(name);
    const message m = split_message(golden(g.vector));
    const bytes want = slice(m.body, 0, g.consumed);
    // Too small by one byte: nothing written, the exact size required.
    if (!want.empty()) {
      bytes small(want.size() - 1, std::byte{0xee});
      const encode_result r = encode_items(m, g.items, small);
      CHECK(r.error == body_errc::buffer_too_small);
      CHECK(r.required == want.size());
      CHECK(r.written == 0);
      CHECK(std::all_of(small.begin(), small.end(), [](std::byte b) { return b == std::byte{0xee}; }));
    }
    bytes out(want.size() + 7, std::byte{0xee});
    const encode_result r = encode_items(m, g.items, out);
    REQUIRE(r.ok());
    CHECK(r.written == want.size());
    CHECK(r.required == want.size());
    CHECK(to_hex(slice(out, 0, r.written)) == to_hex(want));
    // The header's length field agrees with the body the encoder produced (OFFSET_DATA's
    // counts the data after the prefix too).
    if (m.kind != body_kind::offset_data) CHECK(m.length == r.written);
  }
}

TEST_CASE("codec: golden vectors decode the same at every split and byte by byte") {
  for (const golden_case& g : golden_cases()) {
    const std::string name = g.vector;
    CAPTURE(name);
    const message m = split_message(golden(g.vector));
    const decoded whole = decode_body(m.kind, m.type, m.length, view(m.body));
    check_all_splits(m, whole);
  }
}

TEST_CASE("codec: truncated bodies wait for more and never finish") {
  for (const golden_case& g : golden_cases()) {
    const std::string name = g.vector;
    CAPTURE(name);
    const message m = split_message(golden(g.vector));
    for (std::size_t n = 0; n < g.consumed; ++n) {
      CAPTURE(n);
      const decoded d = decode_body(m.kind, m.type, m.length, view(m.body).first(n));
      CHECK(!d.finished());
      CHECK(d.error() == body_errc::ok);
      CHECK(d.consumed == n);
    }
  }
}

TEST_CASE("codec: bytes after the body are never consumed") {
  const message m = split_message(golden("G21"));
  bytes more = m.body;
  more.insert(more.end(), 5, std::byte{0x77});
  const decoded d = decode_body(m.kind, m.type, m.length, view(more));
  CHECK(d.finished());
  CHECK(d.consumed == m.body.size());
}

// ==== typed errors ===========================================================================

namespace {

struct error_case {
  const char* what;
  body_kind kind;
  std::uint16_t type;
  std::uint64_t length;
  bytes body;
  body_errc want;
  std::size_t consumed;  ///< body bytes read when the error is reported
};

bytes cat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<error_case> error_cases() {
  using B = body_errc;
  using K = body_kind;
  const auto u32 = [](std::uint32_t v) { return be(v); };
  const auto u16 = [](std::uint16_t v) { return be(v); };
  const auto u64 = [](std::uint64_t v) { return be(v); };
  const auto s = [](std::string_view v) { return str_bytes(v); };
  const std::uint64_t big = max_string + 1;
  const std::uint16_t err = 0x8001, erroff = 0x8002;
  return {
      {"export name over max_string", K::export_name, 0, big, {}, B::export_name_too_long, 0},
      {"export name with NUL", K::export_name, 0, 3, cat({s("a"), bytes{std::byte{0}}, s("b")}), B::export_name_contains_nul, 3},
      {"INFO shorter than 6", K::info_request, 0, 5, u32(0), B::info_request_too_short, 0},
      {"INFO name length lies", K::info_request, 0, 10, cat({u32(5), s("disk"), u16(0)}), B::info_request_name_length_exceeds_body, 4},
      {"INFO name over max_string", K::info_request, 0, big + 6, u32(static_cast<std::uint32_t>(big)), B::info_request_name_too_long, 4},
      {"INFO name with NUL", K::info_request, 0, 8, cat({u32(2), s("a"), bytes{std::byte{0}}, u16(0)}), B::info_request_name_contains_nul, 6},
      {"INFO count too large", K::info_request, 0, 8, cat({u32(0), u16(2), u16(3)}), B::info_request_count_mismatch, 6},
      {"INFO count too small", K::info_request, 0, 10, cat({u32(0), u16(1), u16(3), u16(1)}), B::info_request_count_mismatch, 6},
      {"META shorter than 8", K::meta_request, 0, 7, u32(0), B::meta_request_too_short, 0},
      {"META name length lies", K::meta_request, 0, 8, cat({u32(1), u32(0)}), B::meta_request_name_length_exceeds_body, 4},
      {"META name over max_string", K::meta_request, 0, big + 8, u32(static_cast<std::uint32_t>(big)), B::meta_request_name_too_long, 4},
      {"META name with NUL", K::meta_request, 0, 9, cat({u32(1), bytes{std::byte{0}}, u32(0)}), B::meta_request_name_contains_nul, 5},
      {"META count beyond body", K::meta_request, 0, 12, cat({u32(0), u32(2), u32(0)}), B::meta_request_count_exceeds_body, 8},
      {"META count 0 with data after", K::meta_request, 0, 12, cat({u32(0), u32(0), u32(0)}), B::meta_request_trailing_data, 8},
      {"META query length lies", K::meta_request, 0, 16, cat({u32(0), u32(1), u32(5), s("base")}), B::meta_request_query_length_exceeds_body, 12},
      {"META query leaves no room for the next length", K::meta_request, 0, 20,
       cat({u32(0), u32(2), u32(5), s("base"), u32(0)}), B::meta_request_query_length_exceeds_body, 12},
      {"META query over max_string", K::meta_request, 0, big + 12, cat({u32(0), u32(1), u32(static_cast<std::uint32_t>(big))}),
       B::meta_request_query_too_long, 12},
      {"META query with NUL", K::meta_request, 0, 14, cat({u32(0), u32(1), u32(2), s("a"), bytes{std::byte{0}}}),
       B::meta_request_query_contains_nul, 14},
      {"META data after the last query", K::meta_request, 0, 18, cat({u32(0), u32(1), u32(4), s("base"), u16(0)}),
       B::meta_request_trailing_data, 12},
      {"SERVER shorter than 4", K::server_reply, 0, 3, {}, B::server_reply_too_short, 0},
      {"SERVER longer than two strings", K::server_reply, 0, 4 + 2 * max_string + 1, {}, B::server_reply_too_long, 0},
      {"SERVER name length lies", K::server_reply, 0, 6, cat({u32(3), s("ab")}), B::server_reply_name_length_exceeds_body, 4},
      {"SERVER name over max_string", K::server_reply, 0, 4 + big, u32(static_cast<std::uint32_t>(big)), B::server_reply_name_too_long, 4},
      {"SERVER description over max_string", K::server_reply, 0, 4 + big, u32(0), B::server_reply_description_too_long, 4},
      {"SERVER name with NUL", K::server_reply, 0, 6, cat({u32(2), bytes{std::byte{0}, std::byte{'a'}}}), B::server_reply_name_contains_nul, 6},
      {"INFO reply shorter than 2", K::info_reply, 0, 1, {}, B::info_reply_too_short, 0},
      {"INFO_EXPORT not 12", K::info_reply, 0, 11, cat({u16(0), u64(1)}), B::info_export_bad_length, 2},
      {"INFO_EXPORT longer than 12", K::info_reply, 0, 13, cat({u16(0), u64(1)}), B::info_export_bad_length, 2},
      {"INFO_BLOCK_SIZE not 14", K::info_reply, 0, 13, cat({u16(3), u32(1)}), B::info_block_size_bad_length, 2},
      {"INFO_NAME over max_string", K::info_reply, 0, 2 + big, u16(1), B::info_name_too_long, 2},
      {"INFO_NAME with NUL", K::info_reply, 0, 4, cat({u16(1), bytes{std::byte{'a'}, std::byte{0}}}), B::info_name_contains_nul, 4},
      {"INFO_DESCRIPTION over max_string", K::info_reply, 0, 2 + big, u16(2), B::info_description_too_long, 2},
      {"META_CONTEXT shorter than 4", K::meta_reply, 0, 3, {}, B::meta_context_reply_too_short, 0},
      {"META_CONTEXT name over max_string", K::meta_reply, 0, 4 + big, {}, B::meta_context_name_too_long, 0},
      {"META_CONTEXT name with NUL", K::meta_reply, 0, 6, cat({u32(1), bytes{std::byte{0}, std::byte{'a'}}}),
       B::meta_context_name_contains_nul, 6},
      {"ERR message over max_string", K::error_reply, 0, big, {}, B::error_reply_message_too_long, 0},
      {"OFFSET_DATA without data", K::offset_data, 1, 8, u64(0), B::offset_data_too_short, 0},
      {"OFFSET_HOLE 11", K::offset_hole, 2, 11, {}, B::offset_hole_bad_length, 0},
      {"OFFSET_HOLE 13", K::offset_hole, 2, 13, {}, B::offset_hole_bad_length, 0},
      {"OFFSET_HOLE size 0", K::offset_hole, 2, 12, cat({u64(0), u32(0)}), B::offset_hole_size_zero, 12},
      {"ERROR shorter than 6", K::error_chunk, err, 5, {}, B::error_chunk_too_short, 0},
      {"ERROR_OFFSET shorter than 14", K::error_chunk, erroff, 13, {}, B::error_offset_chunk_too_short, 0},
      {"ERROR value 0", K::error_chunk, err, 6, cat({u32(0), u16(0)}), B::error_chunk_zero_error, 4},
      {"ERROR message length lies", K::error_chunk, err, 7, cat({u32(22), u16(2), s("a")}), B::error_message_length_exceeds_chunk, 6},
      {"ERROR_OFFSET message overlaps the offset", K::error_chunk, erroff, 16, cat({u32(22), u16(3)}),
       B::error_message_length_exceeds_chunk, 6},
      {"ERROR message over max_string", K::error_chunk, err, 6 + big, cat({u32(22), u16(static_cast<std::uint16_t>(big))}),
       B::error_message_too_long, 6},
      {"ERROR with slop", K::error_chunk, err, 8, cat({u32(22), u16(1), s("ab")}), B::error_chunk_trailing_data, 6},
      {"error decoder on a non-error type", K::error_chunk, 1, 6, {}, B::error_chunk_not_error_type, 0},
      {"BLOCK_STATUS 11", K::block_status, 5, 11, {}, B::block_status_bad_length, 0},
      {"BLOCK_STATUS 13", K::block_status, 5, 13, {}, B::block_status_bad_length, 0},
      {"BLOCK_STATUS above 2^20 extents", K::block_status, 5, 4 + 8 * (std::uint64_t{max_extents_per_chunk} + 1), {},
       B::block_status_too_many_extents, 0},
      {"BLOCK_STATUS extent length 0", K::block_status, 5, 12, cat({u32(1), u32(0), u32(3)}), B::block_status_extent_length_zero, 8},
      {"BLOCK_STATUS_EXT 23", K::block_status_ext, 6, 23, {}, B::block_status_ext_bad_length, 0},
      {"BLOCK_STATUS_EXT 40 + 1", K::block_status_ext, 6, 41, {}, B::block_status_ext_bad_length, 0},
      {"BLOCK_STATUS_EXT count lies", K::block_status_ext, 6, 40, cat({u32(1), u32(1)}), B::block_status_ext_count_mismatch, 8},
      {"BLOCK_STATUS_EXT count 0", K::block_status_ext, 6, 24, cat({u32(1), u32(0)}), B::block_status_ext_count_mismatch, 8},
      {"BLOCK_STATUS_EXT above 2^20 extents", K::block_status_ext, 6, 8 + 16 * (std::uint64_t{max_extents_per_chunk} + 1), {},
       B::block_status_ext_too_many_extents, 0},
      {"BLOCK_STATUS_EXT extent length 0", K::block_status_ext, 6, 24, cat({u32(1), u32(1), u64(0), u64(3)}),
       B::block_status_ext_extent_length_zero, 16},
  };
}

}  // namespace

TEST_CASE("codec: every typed body error, whole, at every split and byte by byte") {
  for (const error_case& e : error_cases()) {
    const std::string what = e.what;
    CAPTURE(what);
    const decoded whole = decode_body(e.kind, e.type, e.length, view(e.body));
    REQUIRE(!whole.items.empty());
    CHECK(whole.items.back().kind == body_item::failed);
    CHECK(whole.error() == e.want);
    CHECK(whole.consumed == e.consumed);
    CHECK(to_string(e.want) != "unknown_body_error");
    check_all_splits({e.kind, e.type, e.length, e.body}, whole);
  }
}

TEST_CASE("codec: a name length beyond the body fails before its bytes arrive") {
  // 4 bytes of a GO body announcing a 5000-byte name: no wait for the name.
  info_request_decoder d(5006);
  const bytes head = be<std::uint32_t>(5000);
  const body_step s = d.decode(head);
  CHECK(s.consumed == 4);
  CHECK(s.ev.kind == body_item::failed);
  CHECK(s.ev.error == body_errc::info_request_name_too_long);
  CHECK(machine_errc(s.ev.error) == errc::ok);
  CHECK(answered_with_err_invalid(s.ev.error));
}

TEST_CASE("codec: body errors map onto the machines' codes") {
  CHECK(machine_errc(body_errc::server_reply_name_length_exceeds_body) == errc::server_reply_bad_name_length);
  CHECK(machine_errc(body_errc::server_reply_too_short) == errc::server_reply_bad_name_length);
  CHECK(machine_errc(body_errc::info_export_bad_length) == errc::info_export_bad_length);
  CHECK(machine_errc(body_errc::info_block_size_bad_length) == errc::info_block_size_bad_length);
  CHECK(machine_errc(body_errc::meta_context_reply_too_short) == errc::meta_context_reply_too_short);
  CHECK(machine_errc(body_errc::error_message_too_long) == errc::error_message_too_long);
  CHECK(machine_errc(body_errc::error_message_length_exceeds_chunk) == errc::error_message_too_long);
  CHECK(machine_errc(body_errc::info_name_too_long) == errc::reply_string_too_long);
  CHECK(machine_errc(body_errc::meta_context_name_contains_nul) == errc::reply_string_contains_nul);
  CHECK(machine_errc(body_errc::block_status_ext_count_mismatch) == errc::block_status_count_mismatch);
  CHECK(machine_errc(body_errc::export_name_too_long) == errc::export_name_too_long);
  CHECK(!answered_with_err_invalid(body_errc::export_name_too_long));
  CHECK(answered_with_err_invalid(body_errc::meta_request_trailing_data));
  for (const error_case& e : error_cases()) {
    const std::string what = e.what;
    CAPTURE(what);
    // Every client-side decode error is fatal in the machine; request errors are answered.
    if (static_cast<std::uint16_t>(e.want) >= 200 && e.want != body_errc::error_chunk_trailing_data)
      CHECK(is_fatal(machine_errc(e.want)));
    if (answered_with_err_invalid(e.want)) CHECK(machine_errc(e.want) == errc::ok);
  }
}

TEST_CASE("codec: strings that fit max_string exactly are accepted, split or whole") {
  const std::string name(max_string, 'n');
  bytes body(4 + name.size() + 2);
  const auto r = encode_info_request(body, name, {});
  REQUIRE(r.ok());
  const decoded whole = decode_body(body_kind::info_request, 0, body.size(), view(body));
  REQUIRE(whole.finished());
  CHECK(whole.items.at(0).text == name);
  CHECK(decode_body(body_kind::info_request, 0, body.size(), view(body), {1, 7, 100, 4000}) == whole);
}

TEST_CASE("codec: encoders refuse arguments the protocol forbids") {
  std::array<std::byte, 64> out{};
  const std::string longer(max_string + 1, 'x');
  CHECK(encode_export_name(out, longer).error == body_errc::encode_string_too_long);
  CHECK(encode_export_name(out, std::string_view("a\0b", 3)).error == body_errc::encode_string_contains_nul);
  CHECK(encode_error_reply(out, std::string_view("a\0b", 3)).ok());  // messages are text, not names
  const std::string_view bad_query[] = {std::string_view("x\0", 2)};
  CHECK(encode_meta_context_request(out, "", bad_query).error == body_errc::encode_string_contains_nul);
  CHECK(encode_meta_context_reply(out, 0, longer).error == body_errc::encode_string_too_long);
  CHECK(encode_server_reply(out, "disk", longer).error == body_errc::encode_string_too_long);
  CHECK(encode_info_string(out, info_type::name, std::string_view("\0", 1)).error == body_errc::encode_string_contains_nul);
  CHECK(encode_offset_hole(out, 0, 0).error == body_errc::encode_hole_size_zero);
  CHECK(encode_error_chunk(out, 0, "").error == body_errc::encode_error_value_zero);
  CHECK(encode_block_status(out, 1, {}).error == body_errc::encode_no_extents);
  const block_extent zero[] = {{0, 0}};
  CHECK(encode_block_status_ext(out, 1, zero).error == body_errc::encode_extent_length_zero);
  const block_extent wide[] = {{std::uint64_t{1} << 32, 0}};
  CHECK(encode_block_status(out, 1, wide).error == body_errc::encode_extent_too_large);
  CHECK(encode_block_status_ext(out, 1, wide).ok());
  CHECK(machine_errc(body_errc::buffer_too_small) == errc::outbox_full);
}

// ==== compile time ===========================================================================

namespace {

// The G21 body (SET_META_CONTEXT "disk", "base:allocation") built and read back in a
// constant expression.
constexpr bool g21_at_compile_time() {
  std::array<std::byte, 31> b{};
  const std::string_view queries[] = {"base:allocation"};
  const encode_result r = encode_meta_context_request(b, "disk", queries);
  if (!r.ok() || r.written != 31) return false;
  const auto& g = vectors::G21;
  for (std::size_t i = 0; i < 31; ++i)
    if (b[i] != g[16 + i]) return false;
  basic_meta_context_request_decoder<16> d(31);  // a 16-byte string buffer is enough here
  bytes_view in{b};
  int items = 0;
  for (;;) {
    const body_step s = d.decode(in);
    in = in.subspan(s.consumed);
    if (s.ev.kind == body_item::done) break;
    if (s.ev.kind == body_item::failed || s.ev.kind == body_item::need_more) return false;
    if (s.ev.kind == body_item::query && s.ev.text.size() != 15) return false;
    ++items;
  }
  return items == 3 && in.empty();
}
static_assert(g21_at_compile_time());

// G13's BLOCK_STATUS payload, fed one byte at a time at compile time.
constexpr bool g13_at_compile_time() {
  const block_extent ex[] = {{0x40000000, 3}};
  std::array<std::byte, 12> b{};
  if (!encode_block_status(b, 1, ex).ok()) return false;
  for (std::size_t i = 0; i < 12; ++i)
    if (b[i] != vectors::G13[20 + i]) return false;
  block_status_decoder d(12);
  std::uint64_t length = 0, status = 0;
  std::uint32_t id = 0;
  bool done = false;
  for (std::size_t i = 0; i <= 12 && !done; ++i) {
    const bytes_view one = i < 12 ? bytes_view{b}.subspan(i, 1) : bytes_view{};
    for (bytes_view in = one;;) {
      const body_step s = d.decode(in);
      in = in.subspan(s.consumed);
      if (s.ev.kind == body_item::need_more) break;
      if (s.ev.kind == body_item::failed) return false;
      if (s.ev.kind == body_item::block_status) id = s.ev.context_id;
      if (s.ev.kind == body_item::extent) length = s.ev.length, status = s.ev.status;
      if (s.ev.kind == body_item::done) {
        done = true;
        break;
      }
    }
  }
  return done && id == 1 && length == 0x40000000 && status == 3;
}
static_assert(g13_at_compile_time());

// G6's NBD_INFO_BLOCK_SIZE payload.
constexpr bool g06_at_compile_time() {
  info_reply_decoder d(14);
  const auto& g = vectors::G06;
  const body_step s = d.decode(bytes_view{g}.subspan(20));
  return s.consumed == 14 && s.ev.kind == body_item::info_block_size && s.ev.block_size.minimum == 1 &&
         s.ev.block_size.preferred == 4096 && s.ev.block_size.maximum == 33554432;
}
static_assert(g06_at_compile_time());

}  // namespace
