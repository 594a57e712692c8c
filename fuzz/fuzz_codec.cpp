// SPDX-License-Identifier: MIT
// Fuzz target, layer 1: every streaming body decoder of codec.hpp on arbitrary bytes.
// Input: kind[1] chunk type[2] declared length[4] cut count[1] cuts[count × 2] then the body.
// A declared length of 0xffffffff means "the rest of the input".
// Invariants: consumed never exceeds the input given nor the body; need_more uses all input;
// strings within max_string and names free of NUL; extent and count bounds; the same items
// whole, at the fuzzer's cuts and byte by byte (normal mode; fast mode, mode.hpp: whole
// only); a settled decoder stays settled; and a body decoded to the end re-encodes to
// exactly the bytes consumed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mode.hpp"
#include "nbdwire/codec.hpp"

namespace {

using namespace nbdwire;
using bytes = std::vector<std::byte>;

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "nbdwire codec fuzz invariant violated: %s (line %d)\n", what, line);
  std::abort();
}
#define CODEC_CHECK(c) \
  do {                 \
    if (!(c)) violated(#c, __LINE__); \
  } while (0)

enum class body_kind : std::uint8_t {
  export_name, info_request, meta_request, server_reply, info_reply, meta_reply, error_reply,
  offset_data, offset_hole, error_chunk, block_status, block_status_ext, count
};

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

struct decoded {
  std::vector<item> items;
  std::size_t consumed = 0;
  bool operator==(const decoded&) const = default;
};

bool is_name(body_item k) {
  return k == body_item::export_name || k == body_item::query || k == body_item::server_name ||
         k == body_item::info_name || k == body_item::meta_context;
}

template <class D>
decoded run(D& d, bytes_view body, std::uint64_t declared, const std::vector<std::size_t>& cuts) {
  decoded out;
  std::size_t start = 0;
  for (std::size_t k = 0; k <= cuts.size(); ++k) {
    const std::size_t end = k < cuts.size() ? cuts[k] : body.size();
    bytes_view piece = body.subspan(start, end - start);
    start = end;
    for (int guard = 0;; ++guard) {
      CODEC_CHECK(guard < 4'000'000);
      const body_step s = d.decode(piece);
      CODEC_CHECK(s.consumed <= piece.size());
      piece = piece.subspan(s.consumed);
      out.consumed += s.consumed;
      CODEC_CHECK(out.consumed <= declared);
      const body_event& e = s.ev;
      if (e.kind == body_item::need_more) {
        CODEC_CHECK(piece.empty());
        CODEC_CHECK(e.error == body_errc::ok && d.error() == body_errc::ok && !d.finished());
        break;
      }
      CODEC_CHECK(e.text.size() <= max_string);
      CODEC_CHECK(to_string(e.kind) != "unknown");
      if (is_name(e.kind)) CODEC_CHECK(std::find(e.text.begin(), e.text.end(), std::byte{0}) == e.text.end());
      if (e.kind == body_item::extent) CODEC_CHECK(e.length != 0);
      if (e.kind == body_item::block_status) CODEC_CHECK(e.count >= 1 && e.count <= max_extents_per_chunk);
      if (e.kind == body_item::info_count) CODEC_CHECK(e.count <= 0xffff);
      out.items.push_back({e.kind, e.error, std::string(as_chars(e.text)), e.offset, e.length, e.status,
                           e.export_size, e.count, e.context_id, e.error_value, e.info, e.transmission_flags,
                           e.block_size});
      if (e.kind == body_item::failed || e.kind == body_item::done) {
        CODEC_CHECK((e.kind == body_item::failed) == (e.error != body_errc::ok));
        CODEC_CHECK(to_string(e.error) != "unknown_body_error");
        CODEC_CHECK(d.error() == e.error && d.finished() == (e.kind == body_item::done));
        const body_step again = d.decode(piece);
        CODEC_CHECK(again.consumed == 0 && again.ev.kind == e.kind && again.ev.error == e.error);
        return out;
      }
      CODEC_CHECK(e.error == body_errc::ok);
    }
  }
  return out;
}

decoded decode(body_kind k, std::uint16_t type, std::uint64_t len, bytes_view body, const std::vector<std::size_t>& cuts) {
  switch (k) {
    case body_kind::export_name: { auto d = std::make_unique<export_name_decoder>(len); return run(*d, body, len, cuts); }
    case body_kind::info_request: { auto d = std::make_unique<info_request_decoder>(len); return run(*d, body, len, cuts); }
    case body_kind::meta_request: { auto d = std::make_unique<meta_context_request_decoder>(len); return run(*d, body, len, cuts); }
    case body_kind::server_reply: { auto d = std::make_unique<server_reply_decoder>(len); return run(*d, body, len, cuts); }
    case body_kind::info_reply: { auto d = std::make_unique<info_reply_decoder>(len); return run(*d, body, len, cuts); }
    case body_kind::meta_reply: { auto d = std::make_unique<meta_context_reply_decoder>(len); return run(*d, body, len, cuts); }
    case body_kind::error_reply: { auto d = std::make_unique<error_reply_decoder>(len); return run(*d, body, len, cuts); }
    case body_kind::offset_data: { offset_data_decoder d(len); return run(d, body, len, cuts); }
    case body_kind::offset_hole: { offset_hole_decoder d(len); return run(d, body, len, cuts); }
    case body_kind::error_chunk: { auto d = std::make_unique<error_chunk_decoder>(type, len); return run(*d, body, len, cuts); }
    case body_kind::block_status: { block_status_decoder d(len); return run(d, body, len, cuts); }
    case body_kind::block_status_ext: { block_status_ext_decoder d(len); return run(d, body, len, cuts); }
    case body_kind::count: break;
  }
  return {};
}

/// Re-encodes a body decoded to `done`; false when it has no encoder form (skipped bytes).
bool reencode(body_kind k, std::uint16_t type, const decoded& d, bytes_view body, bytes& out) {
  const auto& it = d.items;
  std::vector<std::string_view> texts;
  for (const item& i : it) texts.emplace_back(i.text);
  out.assign(d.consumed + 64, std::byte{0});
  const auto encode_to = [&](std::span<std::byte> buf) -> std::optional<encode_result> {
    encode_result r;
    switch (k) {
      case body_kind::export_name: r = encode_export_name(buf, it.at(0).text); break;
      case body_kind::info_request: {
        std::vector<info_type> req;
        for (std::size_t i = 2; i + 1 < it.size(); ++i) req.push_back(static_cast<info_type>(it[i].info));
        r = encode_info_request(buf, it.at(0).text, req);
        break;
      }
      case body_kind::meta_request:
        r = encode_meta_context_request(buf, it.at(0).text, std::span(texts).subspan(2, it.size() - 3));
        break;
      case body_kind::server_reply: r = encode_server_reply(buf, it.at(0).text, it.at(1).text); break;
      case body_kind::info_reply: {
        const item& i = it.at(0);
        if (i.kind == body_item::info_export) r = encode_info_export(buf, i.export_size, i.transmission_flags);
        else if (i.kind == body_item::info_block_size) r = encode_info_block_size(buf, i.block_size);
        else if (i.kind == body_item::info_unknown) r = encode_info_other(buf, i.info, body.subspan(2, i.length));
        else r = encode_info_string(buf, static_cast<info_type>(i.info), i.text);
        break;
      }
      case body_kind::meta_reply: r = encode_meta_context_reply(buf, it.at(0).context_id, it.at(0).text); break;
      case body_kind::error_reply: r = encode_error_reply(buf, it.at(0).text); break;
      case body_kind::offset_data: r = encode_offset_data_prefix(buf, it.at(0).offset); break;
      case body_kind::offset_hole:
        r = encode_offset_hole(buf, it.at(0).offset, static_cast<std::uint32_t>(it.at(0).length));
        break;
      case body_kind::error_chunk:
        if (type == static_cast<std::uint16_t>(chunk_type::error_offset))
          r = encode_error_offset_chunk(buf, it.at(0).error_value, it.at(0).text, it.at(1).offset);
        else if (type == static_cast<std::uint16_t>(chunk_type::error))
          r = encode_error_chunk(buf, it.at(0).error_value, it.at(0).text);
        else
          return std::nullopt;  // an unknown error type: what follows the message was skipped
        break;
      case body_kind::block_status:
      case body_kind::block_status_ext: {
        std::vector<block_extent> ex;
        for (std::size_t i = 1; i + 1 < it.size(); ++i) ex.push_back({it[i].length, it[i].status});
        r = k == body_kind::block_status ? encode_block_status(buf, it.at(0).context_id, ex)
                                         : encode_block_status_ext(buf, it.at(0).context_id, ex);
        break;
      }
      case body_kind::count: return std::nullopt;
    }
    return r;
  };
  const auto r = encode_to(out);
  if (!r) return false;
  CODEC_CHECK(r->ok() && r->written == r->required);
  // Encoder contract (codec/core.hpp): a span one byte short writes nothing and says how much
  // it needs.
  if (r->written != 0) {
    const auto short_r = encode_to(std::span<std::byte>(out).first(r->written - 1));
    CODEC_CHECK(short_r && short_r->error == body_errc::buffer_too_small && short_r->written == 0 &&
                short_r->required == r->written && to_string(short_r->error) == "buffer_too_small");
  }
  out.resize(r->written);
  return true;
}

/// The client machine's tolerant error-chunk decoder (slop after the fields is skipped,
/// checklist 6.5) against the strict one on the same chunk: a type without the error bit is
/// refused by both, before any byte; where the strict decoder accepts ERROR or ERROR_OFFSET,
/// the tolerant one reports the same error value, message and offset; where the strict one
/// refuses trailing bytes after the message, the tolerant one skips them and reports the error
/// value and the message.
void check_tolerant(std::uint16_t type, std::uint64_t len, bytes_view body, const decoded& strict) {
  const auto d = std::make_unique<tolerant_error_chunk_decoder>(type, len);
  const decoded t = run(*d, body, len, {});
  if ((type & chunk_type_error_bit) == 0) {
    CODEC_CHECK(strict.consumed == 0 && strict.items.size() == 1 &&
                strict.items[0].error == body_errc::error_chunk_not_error_type);
    CODEC_CHECK(t.consumed == 0 && t.items.size() == 1 && t.items[0].error == body_errc::error_chunk_not_error_type);
    return;
  }
  if (strict.items.empty() || t.items.empty()) return;  // the chunk is not all here
  const item& last = t.items.back();
  const bool known = type == static_cast<std::uint16_t>(chunk_type::error) ||
                     type == static_cast<std::uint16_t>(chunk_type::error_offset);
  if (!known) return;
  const bool with_offset = type == static_cast<std::uint16_t>(chunk_type::error_offset);
  const item& s_end = strict.items.back();
  if (s_end.kind == body_item::done) {
    CODEC_CHECK(last.kind == body_item::done && t.consumed == strict.consumed);
    const item& msg = strict.items.at(0);
    CODEC_CHECK(t.items.size() == 2);
    const item& got = t.items.at(0);
    CODEC_CHECK(got.kind == (with_offset ? body_item::error_offset : body_item::error_message));
    CODEC_CHECK(got.text == msg.text && got.error_value == msg.error_value);
    if (with_offset) CODEC_CHECK(got.offset == strict.items.at(1).offset);
  } else if (s_end.error == body_errc::error_chunk_trailing_data && len <= body.size()) {
    // The whole chunk is here: the tolerant decoder reads it to the end.
    CODEC_CHECK(last.kind == body_item::done && t.consumed == len && t.items.size() == 2);
    CODEC_CHECK(t.items.at(0).error_value == load_be<std::uint32_t>(body.data()));
    const std::size_t n = load_be<std::uint16_t>(body.data() + 4);
    CODEC_CHECK(t.items.at(0).text == std::string(as_chars(body.subspan(6, n))));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::unique_ptr<std::byte[]> copy(new std::byte[size + 1]);
  if (size != 0) std::memcpy(copy.get(), data, size);
  bytes_view in{copy.get(), size};
  std::size_t pos = 0;
  const auto u8 = [&]() -> std::uint32_t { return pos < in.size() ? std::to_integer<std::uint32_t>(in[pos++]) : 0u; };
  const auto kind = static_cast<body_kind>(u8() % static_cast<std::uint32_t>(body_kind::count));
  std::uint32_t type = u8() << 8;
  type |= u8();
  std::uint32_t declared = 0;
  for (int i = 0; i < 4; ++i) declared = (declared << 8) | u8();
  const std::uint32_t ncuts = u8();
  std::vector<std::size_t> raw;
  for (std::uint32_t i = 0; i < ncuts; ++i) {
    std::size_t c = u8() << 8;
    c |= u8();
    raw.push_back(c);
  }
  const bytes_view body = in.subspan(std::min(pos, in.size()));
  const std::uint64_t length = declared == 0xffffffffu ? body.size() : declared;
  const auto t16 = static_cast<std::uint16_t>(type);

  std::vector<std::size_t> cuts;
  for (std::size_t c : raw)
    if (body.size() >= 2) cuts.push_back(1 + c % (body.size() - 1));
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());

  const decoded whole = decode(kind, t16, length, body, {});
  if (kind == body_kind::error_chunk) check_tolerant(t16, length, body, whole);
  // Fast mode (mode.hpp): the whole body only.
  if (!nbdwire_fuzz::fast_mode() && !(decode(kind, t16, length, body, cuts) == whole))
    violated("same items at the fuzzer's cuts", __LINE__);
  if (!nbdwire_fuzz::fast_mode() && body.size() <= 1024) {
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < body.size(); ++i) every.push_back(i);
    if (!(decode(kind, t16, length, body, every) == whole)) violated("same items byte by byte", __LINE__);
  }
  if (!whole.items.empty() && whole.items.back().kind == body_item::done) {
    bytes again;
    if (reencode(kind, t16, whole, body, again)) {
      CODEC_CHECK(again.size() == whole.consumed);
      CODEC_CHECK(std::equal(again.begin(), again.end(), body.begin()));
      // The declared length is the body length (OFFSET_DATA: prefix plus data).
      if (kind == body_kind::offset_data) CODEC_CHECK(length == 8 + whole.items.at(0).length);
      else CODEC_CHECK(length == again.size());
    }
  }
  return 0;
}
