// SPDX-License-Identifier: MIT
// What the fuzz targets cannot reach because only a caller can get there: machines built from
// a negotiated state that is not valid, encoders given arguments no body can carry, an outbox
// left partly unsent while more is queued, and the name tables as a whole. Each case checks
// the documented behaviour (the error returned, the state left unchanged), not just the call.
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include "nbdwire/codec.hpp"
#include "nbdwire/nbdwire.hpp"

using nbdwire::errc;

namespace {

nbdwire::negotiated transmission_state(std::uint64_t size = 1u << 20) {
  nbdwire::negotiated n;
  n.export_size = size;
  n.transmission_flags = nbdwire::transmission_flag::has_flags | nbdwire::transmission_flag::send_flush;
  n.block_size = {1, 4096, 32u << 20};
  return n;
}

std::vector<std::byte> drain(nbdwire::client& c) {
  std::vector<std::byte> out;
  for (;;) {
    const auto o = c.pending_output();
    if (o.empty()) break;
    out.insert(out.end(), o.begin(), o.end());
    c.consume_output(o.size());
  }
  return out;
}

}  // namespace

TEST_CASE("reach: a client built from a negotiated state with impossible block sizes fails with invalid_config") {
  auto n = transmission_state();
  n.block_size = {4096, 512, 1024};  // minimum above preferred: not valid()
  nbdwire::client c(n);
  CHECK(c.state() == nbdwire::client_state::failed);
  CHECK(c.error() == errc::invalid_config);
  CHECK(c.finished());
  // Nothing can be sent from there: a request is refused and nothing is queued.
  CHECK_FALSE(c.submit(nbdwire::command::read, 0, 0, 512).has_value());
  CHECK(c.pending_output().empty());
  // The failure is reported once by receive(), then input is dropped.
  const auto r = c.receive({});
  CHECK(r.ev.kind == nbdwire::event_kind::failed);
  CHECK(r.ev.error == errc::invalid_config);
}

TEST_CASE("reach: a client built from a valid negotiated state is in transmission and sends requests") {
  nbdwire::client c(transmission_state());
  REQUIRE(c.state() == nbdwire::client_state::transmission);
  const auto cookie = c.flush();
  REQUIRE(cookie.has_value());
  CHECK(drain(c).size() == sizeof(nbdwire::request_header));
  CHECK(c.in_flight() == 1);
  CHECK_FALSE(c.drained());
}

TEST_CASE("reach: a server built from a negotiated state it cannot serve fails with invalid_config") {
  nbdwire::export_config e;
  e.size = 1u << 20;
  nbdwire::server_config cfg;
  cfg.exports = std::span<const nbdwire::export_config>(&e, 1);
  SUBCASE("export index out of range") {
    auto n = transmission_state();
    n.export_index = 1;
    nbdwire::server s(cfg, n);
    CHECK(s.state() == nbdwire::server_state::failed);
    CHECK(s.error() == errc::invalid_config);
  }
  SUBCASE("block sizes not valid") {
    auto n = transmission_state();
    n.block_size = {4096, 512, 1024};  // minimum above preferred: not valid()
    nbdwire::server s(cfg, n);
    CHECK(s.state() == nbdwire::server_state::failed);
    CHECK(s.error() == errc::invalid_config);
  }
  SUBCASE("valid: transmission at once") {
    nbdwire::server s(cfg, transmission_state());
    CHECK(s.state() == nbdwire::server_state::transmission);
    CHECK(s.error() == errc::ok);
    CHECK(s.drained());
  }
}

TEST_CASE("reach: output left partly unsent is kept in order while more is queued (outbox compaction)") {
  // Two clients get the same FLUSHes and replies; one sends everything at once, the other
  // all but 3 bytes of what is pending each time, so its outbox never empties and must move
  // what is left to make room. The bytes that go out are the same.
  nbdwire::client whole(transmission_state()), partial(transmission_state());
  std::vector<std::byte> a, b;
  const std::size_t rounds = 4 * nbdwire::outbox_size / sizeof(nbdwire::request_header);
  for (std::size_t i = 0; i < rounds; ++i) {
    const auto c1 = whole.flush();
    const auto c2 = partial.flush();
    REQUIRE(c1.has_value());
    REQUIRE(c2.has_value());
    REQUIRE(*c1 == *c2);
    const auto wa = drain(whole);
    a.insert(a.end(), wa.begin(), wa.end());
    const auto o = partial.pending_output();
    const std::size_t n = o.size() - 3;
    b.insert(b.end(), o.begin(), o.begin() + static_cast<std::ptrdiff_t>(n));
    partial.consume_output(n);
    const auto reply = nbdwire::encode(nbdwire::make_simple_reply(nbdwire::nbd_error::ok, *c1));
    for (auto* c : {&whole, &partial}) {
      const auto r = c->receive(reply);
      REQUIRE(r.ev.kind == nbdwire::event_kind::reply);
      CHECK(r.consumed == reply.size());
    }
  }
  CHECK(partial.pending_output().size() == 3);
  const auto rest = drain(partial);
  b.insert(b.end(), rest.begin(), rest.end());
  CHECK(a == b);
  CHECK(a.size() == rounds * sizeof(nbdwire::request_header));
  CHECK(whole.drained());
  CHECK(partial.drained());
}

TEST_CASE("reach: pending_pieces() lists outbox bytes and payloads in wire order") {
  nbdwire::client c(transmission_state());
  const auto w = c.write(0, 100);
  REQUIRE(w.has_value());
  const auto f = c.flush();
  REQUIRE(f.has_value());
  std::array<nbdwire::output_piece, 4> pieces{};
  const std::size_t n = c.pending_pieces(pieces);
  REQUIRE(n == 2);
  CHECK(pieces[0].bytes.size() == sizeof(nbdwire::request_header));  // WRITE header
  REQUIRE(pieces[0].payload.has_value());
  CHECK(pieces[0].payload->length == 100);
  CHECK(pieces[1].bytes.size() == sizeof(nbdwire::request_header));  // FLUSH header
  CHECK_FALSE(pieces[1].payload.has_value());
  // A span of one piece gets the first only.
  CHECK(c.pending_pieces(std::span(pieces).first(1)) == 1);
  CHECK(c.pending_pieces(std::span<nbdwire::output_piece>{}) == 0);
}

TEST_CASE("reach: encoders refuse arguments no body can carry, and write nothing") {
  std::array<std::byte, 64> buf{};
  const auto untouched = [&buf] {
    for (auto b : buf)
      if (b != std::byte{0}) return false;
    return true;
  };
  const std::string nul_name("a\0b", 3);
  const std::string long_name(nbdwire::max_string + 1, 'x');
  const std::array<nbdwire::block_extent, 1> zero_extent{{{0, 0}}};
  const std::array<nbdwire::block_extent, 1> wide_extent{{{1ull << 32, 0}}};

  const auto e1 = nbdwire::encode_export_name(buf, nul_name);
  CHECK(e1.error == nbdwire::body_errc::encode_string_contains_nul);
  const auto e2 = nbdwire::encode_export_name(buf, long_name);
  CHECK(e2.error == nbdwire::body_errc::encode_string_too_long);
  const auto e3 = nbdwire::encode_block_status(buf, 1, std::span<const nbdwire::block_extent>{});
  CHECK(e3.error == nbdwire::body_errc::encode_no_extents);
  const auto e4 = nbdwire::encode_block_status(buf, 1, zero_extent);
  CHECK(e4.error == nbdwire::body_errc::encode_extent_length_zero);
  const auto e5 = nbdwire::encode_block_status(buf, 1, wide_extent);
  CHECK(e5.error == nbdwire::body_errc::encode_extent_too_large);
  CHECK(nbdwire::encode_block_status_ext(buf, 1, wide_extent).ok());  // 64-bit lengths: fine
  std::fill(buf.begin(), buf.end(), std::byte{0});
  const auto e6 = nbdwire::encode_error_chunk(buf, 0, "x");
  CHECK(e6.error == nbdwire::body_errc::encode_error_value_zero);
  const auto e7 = nbdwire::encode_offset_hole(buf, 0, 0);
  CHECK(e7.error == nbdwire::body_errc::encode_hole_size_zero);
  for (const auto& r : {e1, e2, e3, e4, e5, e6, e7}) {
    CHECK(r.written == 0);
    CHECK(r.required == 0);  // "0 when the arguments are invalid"
    CHECK(nbdwire::to_string(r.error).starts_with("encode_"));
  }
  CHECK(untouched());
}

TEST_CASE("reach: every errc has one name, a description and a category; unknown numbers say so") {
  std::set<std::string_view> names;
  std::size_t known = 0;
  for (unsigned v = 1; v < 1000; ++v) {
    const auto e = static_cast<errc>(v);
    const auto name = nbdwire::to_string(e);
    if (name == "unknown_error") {
      CHECK(nbdwire::describe(e) == "unknown error");
      CHECK(nbdwire::category(e) == nbdwire::error_category::internal);
      CHECK(nbdwire::is_fatal(e));
      continue;
    }
    ++known;
    CHECK(names.insert(name).second);
    CHECK_FALSE(nbdwire::describe(e).empty());
    CHECK(nbdwire::category(e) != nbdwire::error_category::none);
  }
  CHECK(known > 100);
  CHECK(nbdwire::to_string(errc::ok) == "ok");
  CHECK(nbdwire::category(errc::ok) == nbdwire::error_category::none);
  CHECK_FALSE(nbdwire::is_fatal(errc::ok));
}

TEST_CASE("reach: body_errc names, and which option-body errors are answered with NBD_REP_ERR_INVALID") {
  for (unsigned v = 0; v < 400; ++v) {
    const auto e = static_cast<nbdwire::body_errc>(v);
    const auto name = nbdwire::to_string(e);
    if (name == "unknown_body_error") continue;
    CHECK_FALSE(name.empty());
    // Request-body errors (110-199) are answered with ERR_INVALID; export-name ones end the
    // connection (that option has no error reply); reply-body ones are the client's.
    CHECK(nbdwire::answered_with_err_invalid(e) == (v >= 110 && v < 200));
  }
  CHECK(nbdwire::to_string(static_cast<nbdwire::body_errc>(9999)) == "unknown_body_error");
}

TEST_CASE("reach: protocol values outside the tables print as unknown of their kind") {
  CHECK(nbdwire::to_string(static_cast<nbdwire::option>(0x7777)) == "NBD_OPT_(unknown)");
  CHECK(nbdwire::to_string(static_cast<nbdwire::reply_type>(0x7777)) == "NBD_REP_(unknown)");
  CHECK(nbdwire::to_string(static_cast<nbdwire::info_type>(0x7777)) == "NBD_INFO_(unknown)");
  CHECK(nbdwire::to_string(static_cast<nbdwire::command>(0x7777)) == "NBD_CMD_(unknown)");
  CHECK(nbdwire::to_string(static_cast<nbdwire::chunk_type>(0x7777)) == "NBD_REPLY_TYPE_(unknown)");
  CHECK(nbdwire::to_string(static_cast<nbdwire::nbd_error>(0x7777)) == "NBD_E(unknown)");
  CHECK(nbdwire::to_string(static_cast<nbdwire::event_kind>(200)) == "unknown");
  CHECK(nbdwire::to_string(static_cast<nbdwire::client_state>(200)) == "unknown");
  CHECK(nbdwire::to_string(static_cast<nbdwire::server_state>(200)) == "unknown");
  CHECK(nbdwire::to_string(static_cast<nbdwire::body_item>(200)) == "unknown");
  // Every state of both machines has its own name.
  std::set<std::string_view> c, s;
  for (std::size_t i = 0; i < nbdwire::client_state_count; ++i)
    CHECK(c.insert(nbdwire::to_string(static_cast<nbdwire::client_state>(i))).second);
  for (std::size_t i = 0; i < nbdwire::server_state_count; ++i)
    CHECK(s.insert(nbdwire::to_string(static_cast<nbdwire::server_state>(i))).second);
  CHECK_FALSE(c.contains("unknown"));
  CHECK_FALSE(s.contains("unknown"));
}
