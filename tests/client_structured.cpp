// SPDX-License-Identifier: MIT
// Client machine with structured replies, metadata contexts, block status and extended
// headers: every chunk type it decodes, every row of checklist 3.4, the golden vectors it
// produces or reads (G11-G18, G21), and the option plans of go(). Every server byte stream
// is fed whole, byte by byte, at every split and at random splits.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "nbdwire/client.hpp"
#include "support/golden.hpp"
#include "support/machines.hpp"
#include "support/split.hpp"

using namespace nbdwire;
using namespace nbdwire_test;
using K = event_kind;

namespace {
namespace tf = transmission_flag;
namespace cf = command_flag;
using CT = chunk_type;
constexpr std::uint64_t gib = 1ull << 30;
constexpr std::uint64_t mib = 1ull << 20;
constexpr std::uint16_t done = reply_flag::done;
constexpr std::uint16_t all_tflags = tf::has_flags | tf::send_flush | tf::send_fua | tf::send_trim |
                                     tf::send_write_zeroes | tf::send_df | tf::send_cache;
constexpr std::uint32_t hole_zero = state_flag::hole | state_flag::zero;
constexpr split_options big_input{.random_runs = 12, .every_index_limit = 600};

std::uint64_t cookie_of(const result<std::uint64_t>& r) {
  REQUIRE(r.has_value());
  return r.value();
}

modern_setup sr(std::vector<std::uint32_t> ids = {1}) {
  return {.mode = framing::structured, .context_ids = std::move(ids), .size = gib, .tflags = all_tflags};
}
modern_setup ext(std::vector<std::uint32_t> ids = {1}) {
  return {.mode = framing::extended, .context_ids = std::move(ids), .size = gib, .tflags = all_tflags};
}
modern_setup simple() { return {.mode = framing::simple, .context_ids = {}, .size = gib, .tflags = all_tflags}; }

using submit_fn = std::function<std::vector<std::uint64_t>(client&)>;

/// A factory for a client that negotiated `setup` and sent the requests of `submit`, plus
/// the cookies those requests carry (the same in every fresh client).
struct prepared {
  std::function<std::unique_ptr<client>()> make;
  std::vector<std::uint64_t> cookies;
  std::uint64_t operator[](std::size_t i) const { return cookies.at(i); }
};

prepared prepare(const modern_setup& setup, const submit_fn& submit) {
  prepared p;
  p.make = [setup, submit] {
    auto c = modern_client(setup);
    (void)submit(*c);
    (void)take_output(*c);
    return c;
  };
  auto probe = modern_client(setup);
  p.cookies = submit(*probe);
  return p;
}

submit_fn read_at(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0) {
  return [=](client& c) { return std::vector{cookie_of(c.read(offset, length, flags))}; };
}
submit_fn status_at(std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0) {
  return [=](client& c) { return std::vector{cookie_of(c.block_status(offset, length, flags))}; };
}

run_log feed_ok(const prepared& p, const bytes& in, const split_options& opt = {}) {
  const auto log = feed_all_ways(p.make, in, {}, opt);
  CHECK(log.final_error == errc::ok);
  return log;
}

void expect_fatal(const prepared& p, const bytes& in, errc e, const split_options& opt = {}) {
  const auto log = feed_all_ways(p.make, in, {}, opt);
  REQUIRE(!log.events.empty());
  CHECK_MESSAGE(log.events.back().kind == K::failed, describe(log.events));
  CHECK(log.final_error == e);
}

/// The last event must be a reply for `cookie` with `status`.
void expect_reply(const run_log& log, std::uint64_t cookie, nbd_error status) {
  REQUIRE_MESSAGE(!log.events.empty(), "no events");
  const auto& r = log.events.back();
  CHECK_MESSAGE(r.kind == K::reply, describe(log.events));
  CHECK(r.req.cookie == cookie);
  CHECK(r.status == status);
}

bytes with_cookie(bytes b, std::uint64_t cookie, std::size_t at = 8) {
  store_be<std::uint64_t>(b.data() + at, cookie);
  return b;
}
}  // namespace

// ==== every chunk type ========================================================================

TEST_CASE("client: NONE chunk with DONE completes a request without data") {
  const auto p = prepare(sr(), [](client& c) {
    return std::vector{cookie_of(c.flush()), cookie_of(c.write_zeroes(0, 4096)), cookie_of(c.trim(0, 512))};
  });
  const auto log = feed_ok(p, chunk(done, CT::none, p[1]) + chunk(done, CT::none, p[0]) + chunk(done, CT::none, p[2]));
  REQUIRE(kinds_string(log.events) == "reply,reply,reply");
  CHECK(log.events[0].req.cookie == p[1]);
  CHECK(log.events[1].req.cookie == p[0]);
  CHECK(log.events[2].req.cookie == p[2]);
  for (const auto& e : log.events) CHECK(e.status == nbd_error::ok);
}

TEST_CASE("client: OFFSET_DATA chunk with DONE delivers the data and completes the READ") {
  const auto p = prepare(sr(), read_at(mib, 1024));
  const bytes data = pattern(mib, 1024);
  const auto log = feed_ok(p, chunk(done, CT::offset_data, p[0], data_payload(mib, data)), big_input);
  REQUIRE(kinds_string(log.events) == "payload,reply");
  CHECK(log.events[0].offset == mib);
  CHECK(log.events[0].data == data);
  expect_reply(log, p[0], nbd_error::ok);
}

TEST_CASE("client: OFFSET_DATA chunks in ascending order then DONE") {
  // The usual server order (qemu, nbdkit): consecutive chunks that touch but do not overlap.
  const auto p = prepare(sr(), read_at(0, 2048));
  const bytes in = chunk(0, CT::offset_data, p[0], data_payload(0, pattern(0, 1024))) +
                   chunk(done, CT::offset_data, p[0], data_payload(1024, pattern(1024, 1024)));
  const auto log = feed_ok(p, in, big_input);
  // The log merges payload fragments that continue each other, so the two touching chunks
  // read as one stretch of data.
  REQUIRE_MESSAGE(kinds_string(log.events) == "payload,reply", describe(log.events));
  CHECK(log.events[0].offset == 0);
  CHECK(log.events[0].data == pattern(0, 2048));
  expect_reply(log, p[0], nbd_error::ok);
}

TEST_CASE("client: OFFSET_DATA chunks in descending order then NONE with DONE") {
  const auto p = prepare(sr(), read_at(0, 2048));
  const bytes in = chunk(0, CT::offset_data, p[0], data_payload(1024, pattern(1024, 1024))) +
                   chunk(0, CT::offset_data, p[0], data_payload(0, pattern(0, 1024))) + chunk(done, CT::none, p[0]);
  const auto log = feed_ok(p, in, big_input);
  REQUIRE_MESSAGE(kinds_string(log.events) == "payload,payload,reply", describe(log.events));
  CHECK(log.events[0].offset == 1024);
  CHECK(log.events[1].offset == 0);
  expect_reply(log, p[0], nbd_error::ok);
}

TEST_CASE("client: OFFSET_HOLE chunk reports a read_hole and completes the READ") {
  const auto p = prepare(sr(), read_at(mib, 4096));
  const auto log = feed_ok(p, chunk(done, CT::offset_hole, p[0], hole_payload(mib, 4096)));
  REQUIRE(kinds_string(log.events) == "read_hole,reply");
  CHECK(log.events[0].req.cookie == p[0]);
  CHECK(log.events[0].offset == mib);
  CHECK(log.events[0].length == 4096);
  expect_reply(log, p[0], nbd_error::ok);
}

TEST_CASE("client: data and hole chunks in any order cover a READ") {
  // hole [1024, 2048), data [2048, 3072), hole [0, 1024), data [3072, 4096): gaps close at DONE.
  const auto p = prepare(sr(), read_at(0, 4096));
  const bytes in = chunk(0, CT::offset_hole, p[0], hole_payload(1024, 1024)) +
                   chunk(0, CT::offset_data, p[0], data_payload(3072, pattern(3072, 1024))) +
                   chunk(0, CT::offset_hole, p[0], hole_payload(0, 1024)) +
                   chunk(done, CT::offset_data, p[0], data_payload(2048, pattern(2048, 1024)));
  const auto log = feed_ok(p, in, big_input);
  REQUIRE_MESSAGE(kinds_string(log.events) == "read_hole,payload,read_hole,payload,reply", describe(log.events));
  expect_reply(log, p[0], nbd_error::ok);
}

TEST_CASE("client: BLOCK_STATUS chunk reports one extent per descriptor") {
  const auto p = prepare(sr({1}), status_at(0, 8192));
  const auto log =
      feed_ok(p, chunk(done, CT::block_status, p[0], status_payload(1, {{4096, 0}, {2048, hole_zero}, {gib, 0x80}})));
  // Only the last descriptor may run past the request; unknown status bits are passed on.
  REQUIRE(kinds_string(log.events) == "extent,extent,extent,reply");
  CHECK(log.events[0].offset == 0);
  CHECK(log.events[0].length == 4096);
  CHECK(log.events[0].context_id == 1);
  CHECK(log.events[0].extent_flags == 0);
  CHECK(log.events[1].offset == 4096);
  CHECK(log.events[1].extent_flags == hole_zero);
  CHECK(log.events[2].offset == 6144);
  CHECK(log.events[2].length == gib);
  CHECK(log.events[2].extent_flags == 0x80);
  expect_reply(log, p[0], nbd_error::ok);
}

TEST_CASE("client: BLOCK_STATUS_EXT chunk reports 64-bit extents in extended mode") {
  const auto p = prepare(ext({0, 5}), status_at(4096, 8192));
  const std::uint64_t big = 1ull << 33;
  const bytes in = ext_chunk(0, CT::block_status_ext, p[0], 4096, status_ext_payload(5, {{big, 0x100000000ull}})) +
                   ext_chunk(done, CT::block_status_ext, p[0], 4096, status_ext_payload(0, {{8192, hole_zero}}));
  const auto log = feed_ok(p, in);
  REQUIRE(kinds_string(log.events) == "extent,extent,reply");
  CHECK(log.events[0].context_id == 5);
  CHECK(log.events[0].offset == 4096);
  CHECK(log.events[0].length == big);
  CHECK(log.events[0].extent_flags == 0x100000000ull);
  CHECK(log.events[1].context_id == 0);
  CHECK(log.events[1].extent_flags == hole_zero);
  expect_reply(log, p[0], nbd_error::ok);
}

TEST_CASE("client: ERROR chunk reports its message and fails the request") {
  const auto p = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.write(0, 512))}; });
  const auto log = feed_ok(p, chunk(done, CT::error, p[0], error_payload(5, "disk on fire")));
  REQUIRE(kinds_string(log.events) == "error_chunk,reply");
  CHECK(log.events[0].status == nbd_error::eio);
  CHECK(log.events[0].data == str_bytes("disk on fire"));
  CHECK_FALSE(log.events[0].has_offset);
  expect_reply(log, p[0], nbd_error::eio);
}

TEST_CASE("client: ERROR_OFFSET chunk reports the offset and the first error is the status") {
  const auto p = prepare(sr(), read_at(0, 4096));
  const bytes in = chunk(0, CT::offset_hole, p[0], hole_payload(0, 2048)) +
                   chunk(0, CT::error_offset, p[0], error_offset_payload(5, "bad sector", 2560)) +
                   chunk(done, CT::error, p[0], error_payload(22, ""));
  const auto log = feed_ok(p, in);
  REQUIRE(kinds_string(log.events) == "read_hole,error_chunk,error_chunk,reply");
  CHECK(log.events[1].has_offset);
  CHECK(log.events[1].offset == 2560);
  CHECK(log.events[1].status == nbd_error::eio);
  CHECK(log.events[1].data == str_bytes("bad sector"));
  CHECK(log.events[2].status == nbd_error::einval);
  expect_reply(log, p[0], nbd_error::eio);  // an error reply need not cover the READ
}

TEST_CASE("client: unknown chunk type with bit 15 fails the request and the stream continues") {
  const auto p = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.read(0, 512)), cookie_of(c.flush())}; });
  SUBCASE("with an error field") {
    const bytes in = chunk(done, 0x8123, p[0], error_payload(1, "policy") + be<std::uint64_t>(7)) +
                     chunk(done, CT::none, p[1]);
    const auto log = feed_ok(p, in);
    REQUIRE(kinds_string(log.events) == "reply,reply");
    CHECK(log.events[0].req.cookie == p[0]);
    CHECK(log.events[0].status == nbd_error::eperm);
    expect_reply(log, p[1], nbd_error::ok);
  }
  SUBCASE("too short for an error field") {
    const bytes in = chunk(done, 0xfffe, p[0], from_hex("abcd")) + chunk(done, CT::none, p[1]);
    const auto log = feed_ok(p, in);
    REQUIRE(kinds_string(log.events) == "reply,reply");
    CHECK(log.events[0].status == nbd_error::einval);
    expect_reply(log, p[1], nbd_error::ok);
  }
  SUBCASE("without payload") {
    const bytes in = chunk(done, 0x8fff, p[0]) + chunk(done, CT::none, p[1]);
    const auto log = feed_ok(p, in);
    REQUIRE_MESSAGE(kinds_string(log.events) == "reply,reply", describe(log.events));
    CHECK(log.events[0].status == nbd_error::einval);
    expect_reply(log, p[1], nbd_error::ok);
  }
}

TEST_CASE("client: unknown chunk type without bit 15 is fatal") {
  const auto p = prepare(sr(), read_at(0, 512));
  expect_fatal(p, chunk(done, 3, p[0], hole_payload(0, 512)), errc::chunk_type_unknown);
  expect_fatal(p, chunk(0, 0x7fff, p[0]), errc::chunk_type_unknown);
}

// ==== checklist 3.4, row by row ===============================================================

TEST_CASE("client 3.4: unknown reply magic is fatal") {
  const auto p = prepare(sr(), read_at(0, 512));
  bytes in = chunk(done, CT::offset_hole, p[0], hole_payload(0, 512));
  store_be<std::uint32_t>(in.data(), 0x12345678u);
  expect_fatal(p, in, errc::bad_reply_magic);
  store_be<std::uint32_t>(in.data(), magic::legacy_1997_reply);
  expect_fatal(p, in, errc::bad_reply_magic);
}

TEST_CASE("client 3.4: simple reply magic in extended mode is fatal") {
  const auto p = prepare(ext(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(p, simple_reply(nbd_error::ok, p[0]), errc::simple_reply_in_extended_mode);
}

TEST_CASE("client 3.4: structured chunk in extended mode is fatal") {
  const auto p = prepare(ext(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(p, chunk(done, CT::none, p[0]), errc::structured_reply_not_negotiated);
}

TEST_CASE("client 3.4: structured chunk without structured replies is fatal") {
  const auto p = prepare(simple(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(p, chunk(done, CT::none, p[0]), errc::structured_reply_not_negotiated);
}

TEST_CASE("client 3.4: extended chunk without extended headers is fatal") {
  const auto p = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(p, ext_chunk(done, CT::none, p[0], 0), errc::structured_reply_not_negotiated);
  const auto q = prepare(simple(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(q, ext_chunk(done, CT::none, q[0], 0), errc::structured_reply_not_negotiated);
}

TEST_CASE("client 3.4: chunk or simple reply for a cookie not in flight is fatal") {
  const auto p = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(p, chunk(done, CT::none, p[0] + 1), errc::reply_cookie_unknown);
  expect_fatal(p, chunk(done, CT::error, 0x0102030405060708ull, error_payload(5, "")), errc::reply_cookie_unknown);
  expect_fatal(p, simple_reply(nbd_error::ok, p[0] ^ (1ull << 40)), errc::reply_cookie_unknown);
  const auto e = prepare(ext(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(e, ext_chunk(done, CT::none, e[0] + 1, 0), errc::reply_cookie_unknown);
}

TEST_CASE("client 3.4: simple reply to READ with structured replies is fatal even for an error") {
  const auto p = prepare(sr(), read_at(0, 512));
  expect_fatal(p, simple_reply(nbd_error::ok, p[0]) + pattern(0, 512), errc::simple_reply_to_read);
  expect_fatal(p, simple_reply(nbd_error::einval, p[0]), errc::simple_reply_to_read);
}

TEST_CASE("client 3.4: simple reply without data is accepted with structured replies") {
  // Checklist 4.1 (b): qemu-io saw a simple reply to FLUSH although SR was on.
  const auto p = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.flush()), cookie_of(c.write(0, 512))}; });
  const auto log = feed_ok(p, simple_reply(nbd_error::ok, p[0]) + simple_reply(nbd_error::eio, p[1]));
  REQUIRE(kinds_string(log.events) == "reply,reply");
  CHECK(log.events[0].status == nbd_error::ok);
  CHECK(log.events[1].status == nbd_error::eio);
}

TEST_CASE("client 3.4: NONE with a nonzero length is fatal") {
  const auto p = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(p, chunk(done, CT::none, p[0], from_hex("00000000")), errc::chunk_length_invalid);
  const auto e = prepare(ext(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(e, ext_chunk(done, CT::none, e[0], 0, from_hex("00")), errc::chunk_length_invalid);
}

TEST_CASE("client 3.4: NONE without DONE is fatal") {
  const auto p = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(p, chunk(0, CT::none, p[0]), errc::none_chunk_without_done);
}

TEST_CASE("client 3.4: OFFSET_DATA shorter than 9 bytes is fatal") {
  const auto p = prepare(sr(), read_at(0, 512));
  expect_fatal(p, chunk(done, CT::offset_data, p[0], be<std::uint64_t>(0)), errc::data_chunk_too_short);
  expect_fatal(p, chunk(done, CT::offset_data, p[0], from_hex("0000")), errc::data_chunk_too_short);
  expect_fatal(p, chunk(done, CT::offset_data, p[0]), errc::data_chunk_too_short);
}

TEST_CASE("client 3.4: OFFSET_HOLE length other than 12 or hole size 0 is fatal") {
  const auto p = prepare(sr(), read_at(0, 512));
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(0, 512) + from_hex("00")), errc::hole_chunk_bad_length);
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], be<std::uint64_t>(0) + from_hex("000200")),
               errc::hole_chunk_bad_length);
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(0, 0)), errc::hole_size_zero);
}

TEST_CASE("client 3.4: BLOCK_STATUS length rules") {
  const auto p = prepare(sr(), status_at(0, 4096));
  // Shorter than 12: an id with no descriptor, or less.
  expect_fatal(p, chunk(done, CT::block_status, p[0], be<std::uint32_t>(1)), errc::block_status_chunk_bad_length);
  expect_fatal(p, chunk(done, CT::block_status, p[0], be<std::uint32_t>(1) + from_hex("00001000")),
               errc::block_status_chunk_bad_length);
  // (length - 4) not a multiple of 8.
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(1, {{4096, 0}}) + from_hex("00001000")),
               errc::block_status_chunk_bad_length);
}

TEST_CASE("client 3.4: BLOCK_STATUS_EXT length rules") {
  const auto p = prepare(ext(), status_at(0, 4096));
  expect_fatal(p, ext_chunk(done, CT::block_status_ext, p[0], 0, status_ext_payload(1, {}, 0)),
               errc::block_status_chunk_bad_length);
  expect_fatal(p, ext_chunk(done, CT::block_status_ext, p[0], 0, status_ext_payload(1, {}, 1) + be<std::uint64_t>(4096)),
               errc::block_status_chunk_bad_length);
  expect_fatal(p,
               ext_chunk(done, CT::block_status_ext, p[0], 0, status_ext_payload(1, {{4096, 0}}) + be<std::uint64_t>(1)),
               errc::block_status_chunk_bad_length);
}

TEST_CASE("client 3.4: BLOCK_STATUS_EXT descriptor count differing from the length is fatal") {
  const auto p = prepare(ext(), status_at(0, 8192));
  expect_fatal(p, ext_chunk(done, CT::block_status_ext, p[0], 0, status_ext_payload(1, {{4096, 0}, {4096, 0}}, 1)),
               errc::block_status_count_mismatch);
  expect_fatal(p, ext_chunk(done, CT::block_status_ext, p[0], 0, status_ext_payload(1, {{8192, 0}}, 2)),
               errc::block_status_count_mismatch);
  expect_fatal(p, ext_chunk(done, CT::block_status_ext, p[0], 0, status_ext_payload(1, {{8192, 0}}, 0)),
               errc::block_status_count_mismatch);
}

TEST_CASE("client 3.4: ERROR shorter than 6 and ERROR_OFFSET shorter than 14 are fatal") {
  const auto p = prepare(sr(), read_at(0, 512));
  expect_fatal(p, chunk(done, CT::error, p[0], from_hex("0000000500")), errc::error_chunk_too_short);
  expect_fatal(p, chunk(done, CT::error, p[0]), errc::error_chunk_too_short);
  expect_fatal(p, chunk(done, CT::error_offset, p[0], error_payload(5, "") + from_hex("00000000000000")),
               errc::error_offset_chunk_too_short);
  expect_fatal(p, chunk(done, CT::error_offset, p[0], error_payload(5, "")), errc::error_offset_chunk_too_short);
}

TEST_CASE("client 3.4: chunk type invalid for the command is fatal") {
  const auto w = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.write(0, 512))}; });
  expect_fatal(w, chunk(done, CT::offset_data, w[0], data_payload(0, pattern(0, 512))), errc::chunk_type_unexpected);
  expect_fatal(w, chunk(done, CT::offset_hole, w[0], hole_payload(0, 512)), errc::chunk_type_unexpected);
  expect_fatal(w, chunk(done, CT::block_status, w[0], status_payload(1, {{512, 0}})), errc::chunk_type_unexpected);
  const auto r = prepare(sr(), read_at(0, 512));
  expect_fatal(r, chunk(done, CT::block_status, r[0], status_payload(1, {{512, 0}})), errc::chunk_type_unexpected);
  const auto f = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  expect_fatal(f, chunk(done, CT::error_offset, f[0], error_offset_payload(5, "", 0)), errc::chunk_type_unexpected);
  expect_fatal(f, chunk(done, CT::offset_hole, f[0], hole_payload(0, 512)), errc::chunk_type_unexpected);
}

TEST_CASE("client 3.4: BLOCK_STATUS_EXT in compact mode and BLOCK_STATUS in extended mode are fatal") {
  const auto p = prepare(sr(), status_at(0, 4096));
  expect_fatal(p, chunk(done, CT::block_status_ext, p[0], status_ext_payload(1, {{4096, 0}})),
               errc::chunk_type_unexpected);
  const auto e = prepare(ext(), status_at(0, 4096));
  expect_fatal(e, ext_chunk(done, CT::block_status, e[0], 0, status_payload(1, {{4096, 0}})),
               errc::chunk_type_unexpected);
}

TEST_CASE("client 3.4: content chunk outside the request is fatal") {
  const auto p = prepare(sr(), read_at(4096, 4096));
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(0, 512)), errc::chunk_outside_request);
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(3584, 1024)), errc::chunk_outside_request);
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(7680, 1024)), errc::chunk_outside_request);
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(8192, 1)), errc::chunk_outside_request);
  expect_fatal(p, chunk(done, CT::offset_data, p[0], data_payload(8000, pattern(8000, 200))),
               errc::chunk_outside_request);
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(~std::uint64_t{0} - 10, 100)),
               errc::chunk_outside_request);
}

TEST_CASE("client 3.4: content chunk overlapping an earlier one is fatal") {
  const auto p = prepare(sr(), read_at(0, 4096));
  expect_fatal(p,
               chunk(0, CT::offset_hole, p[0], hole_payload(0, 1024)) +
                   chunk(done, CT::offset_hole, p[0], hole_payload(512, 1024)),
               errc::chunk_overlap);
  expect_fatal(p,
               chunk(0, CT::offset_hole, p[0], hole_payload(1024, 1024)) +
                   chunk(done, CT::offset_hole, p[0], hole_payload(1024, 1024)),
               errc::chunk_overlap);
  expect_fatal(p,
               chunk(0, CT::offset_hole, p[0], hole_payload(1024, 1024)) +
                   chunk(done, CT::offset_hole, p[0], hole_payload(0, 4096)),
               errc::chunk_overlap);
  expect_fatal(p,
               chunk(0, CT::offset_hole, p[0], hole_payload(2048, 512)) +
                   chunk(done, CT::offset_hole, p[0], hole_payload(2048 + 511, 1)),
               errc::chunk_overlap);
}

TEST_CASE("client 3.4: DF READ answered with more than one content chunk is fatal") {
  const auto p = prepare(sr(), read_at(0, 4096, cf::df));
  expect_fatal(p,
               chunk(0, CT::offset_hole, p[0], hole_payload(0, 2048)) +
                   chunk(done, CT::offset_hole, p[0], hole_payload(2048, 2048)),
               errc::df_multiple_chunks);
  // One chunk is fine.
  const auto log = feed_ok(p, chunk(done, CT::offset_hole, p[0], hole_payload(0, 4096)));
  expect_reply(log, p[0], nbd_error::ok);
}

TEST_CASE("client 3.4: DONE on success without full coverage of the READ is fatal") {
  const auto p = prepare(sr(), read_at(0, 4096));
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(0, 2048)), errc::read_incomplete);
  expect_fatal(p, chunk(done, CT::offset_hole, p[0], hole_payload(2048, 2048)), errc::read_incomplete);
  expect_fatal(p, chunk(done, CT::none, p[0]), errc::read_incomplete);
  expect_fatal(p,
               chunk(0, CT::offset_hole, p[0], hole_payload(0, 1024)) +
                   chunk(done, CT::offset_hole, p[0], hole_payload(2048, 2048)),
               errc::read_incomplete);
}

TEST_CASE("client 3.4: DONE comes once and a chunk after DONE answers an unknown cookie") {
  const auto p = prepare(sr(), read_at(0, 512));
  const auto log = feed_all_ways(p.make, chunk(done, CT::offset_hole, p[0], hole_payload(0, 512)) +
                                             chunk(done, CT::none, p[0]));
  CHECK(kinds_string(log.events) == "read_hole,reply,failed");
  CHECK(log.final_error == errc::reply_cookie_unknown);
  const auto q = prepare(sr(), [](client& c) { return std::vector{cookie_of(c.flush())}; });
  const auto log2 = feed_all_ways(q.make, simple_reply(nbd_error::ok, q[0]) + chunk(0, CT::error, q[0], error_payload(5, "")));
  CHECK(kinds_string(log2.events) == "reply,failed");
  CHECK(log2.final_error == errc::reply_cookie_unknown);
}

TEST_CASE("client 3.4: ERROR_OFFSET outside the request is fatal") {
  const auto p = prepare(sr(), read_at(4096, 4096));
  expect_fatal(p, chunk(done, CT::error_offset, p[0], error_offset_payload(5, "x", 4095)), errc::chunk_outside_request);
  expect_fatal(p, chunk(done, CT::error_offset, p[0], error_offset_payload(5, "", 8192)), errc::chunk_outside_request);
  // First and last byte are inside.
  for (std::uint64_t at : {std::uint64_t{4096}, std::uint64_t{8191}}) {
    const auto log = feed_ok(p, chunk(done, CT::error_offset, p[0], error_offset_payload(5, "", at)));
    REQUIRE(kinds_string(log.events) == "error_chunk,reply");
    CHECK(log.events[0].offset == at);
  }
}

TEST_CASE("client 3.4: error chunk with error value 0 is fatal") {
  const auto p = prepare(sr(), read_at(0, 512));
  expect_fatal(p, chunk(done, CT::error, p[0], error_payload(0, "fine?")), errc::error_chunk_zero_error);
  expect_fatal(p, chunk(done, CT::error_offset, p[0], error_offset_payload(0, "", 0)), errc::error_chunk_zero_error);
}

TEST_CASE("client 3.4: error message length rules") {
  const auto p = prepare(sr(), read_at(0, 512));
  SUBCASE("message longer than the chunk") {
    bytes pl = error_payload(5, "abcd");
    store_be<std::uint16_t>(pl.data() + 4, 5);
    expect_fatal(p, chunk(done, CT::error, p[0], pl), errc::error_message_too_long);
  }
  SUBCASE("ERROR_OFFSET message running into the offset") {
    bytes pl = error_offset_payload(5, "abcd", 0);
    store_be<std::uint16_t>(pl.data() + 4, 5);
    expect_fatal(p, chunk(done, CT::error_offset, p[0], pl), errc::error_message_too_long);
  }
  SUBCASE("message beyond the 4096-byte string limit") {
    const std::string m(max_string + 1, 'm');
    expect_fatal(p, chunk(done, CT::error, p[0], error_payload(5, m)), errc::error_message_too_long, big_input);
  }
  SUBCASE("message of exactly 4096 bytes") {
    const std::string m(max_string, 'm');
    const auto log = feed_ok(p, chunk(done, CT::error, p[0], error_payload(5, m)), big_input);
    REQUIRE(kinds_string(log.events) == "error_chunk,reply");
    CHECK(log.events[0].data == str_bytes(m));
  }
  SUBCASE("bytes after the message are tolerated") {
    const auto log = feed_ok(p, chunk(done, CT::error, p[0], error_payload(5, "slop") + from_hex("010203")));
    REQUIRE(kinds_string(log.events) == "error_chunk,reply");
    CHECK(log.events[0].data == str_bytes("slop"));
    expect_reply(log, p[0], nbd_error::eio);
  }
}

TEST_CASE("client 3.4: unknown error values are treated as EINVAL") {
  const auto p = prepare(sr(), [](client& c) {
    return std::vector{cookie_of(c.read(0, 512)), cookie_of(c.flush()), cookie_of(c.write(0, 512))};
  });
  const bytes in = chunk(done, CT::error, p[0], error_payload(999, "?")) + simple_reply(static_cast<nbd_error>(13), p[1]) +
                   chunk(done, CT::error_offset, p[2], error_offset_payload(0x80000000u, "", 0));
  const auto log = feed_ok(p, in);
  REQUIRE(kinds_string(log.events) == "error_chunk,reply,reply,error_chunk,reply");
  CHECK(log.events[0].status == nbd_error::einval);
  CHECK(log.events[1].status == nbd_error::einval);
  CHECK(log.events[2].status == nbd_error::einval);
  CHECK(log.events[3].status == nbd_error::einval);
  CHECK(log.events[4].status == nbd_error::einval);
}

TEST_CASE("client 3.4: BLOCK_STATUS for a context not negotiated is fatal") {
  const auto p = prepare(sr({1}), status_at(0, 4096));
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(0, {{4096, 0}})), errc::block_status_unknown_context);
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(2, {{4096, 0}})), errc::block_status_unknown_context);
}

TEST_CASE("client 3.4: two BLOCK_STATUS chunks for one context are fatal") {
  const auto p = prepare(sr({1, 0}), status_at(0, 4096));
  expect_fatal(p,
               chunk(0, CT::block_status, p[0], status_payload(1, {{4096, 0}})) +
                   chunk(done, CT::block_status, p[0], status_payload(1, {{4096, 0}})),
               errc::block_status_duplicate_context);
}

TEST_CASE("client 3.4: BLOCK_STATUS success without every context is fatal") {
  const auto p = prepare(sr({1, 0}), status_at(0, 4096));
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(1, {{4096, 0}})),
               errc::block_status_missing_context);
  expect_fatal(p,
               chunk(0, CT::block_status, p[0], status_payload(0, {{4096, 0}})) + chunk(done, CT::none, p[0]),
               errc::block_status_missing_context);
  // Both contexts, in any order: success. Or an error instead of the missing one.
  auto log = feed_ok(p, chunk(0, CT::block_status, p[0], status_payload(0, {{4096, 0}})) +
                            chunk(done, CT::block_status, p[0], status_payload(1, {{4096, hole_zero}})));
  CHECK(kinds_string(log.events) == "extent,extent,reply");
  expect_reply(log, p[0], nbd_error::ok);
  log = feed_ok(p, chunk(0, CT::block_status, p[0], status_payload(0, {{4096, 0}})) +
                       chunk(done, CT::error, p[0], error_payload(5, "")));
  expect_reply(log, p[0], nbd_error::eio);
}

TEST_CASE("client 3.4: extent of length 0 is fatal") {
  const auto p = prepare(sr(), status_at(0, 4096));
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(1, {{0, 0}})), errc::extent_length_zero);
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(1, {{512, 0}, {0, 0}})), errc::extent_length_zero);
  const auto e = prepare(ext(), status_at(0, 4096));
  expect_fatal(e, ext_chunk(done, CT::block_status_ext, e[0], 0, status_ext_payload(1, {{0, 0}})),
               errc::extent_length_zero);
}

TEST_CASE("client 3.4: REQ_ONE allows one extent no longer than the request") {
  const auto p = prepare(sr(), status_at(0, 4096, cf::req_one));
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(1, {{1024, 0}, {1024, 0}})),
               errc::extent_req_one_violation);
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(1, {{4097, 0}})), errc::extent_req_one_violation);
  for (std::uint32_t len : {4096u, 512u}) {
    const auto log = feed_ok(p, chunk(done, CT::block_status, p[0], status_payload(1, {{len, hole_zero}})));
    REQUIRE(kinds_string(log.events) == "extent,reply");
    CHECK(log.events[0].length == len);
  }
  const auto e = prepare(ext(), status_at(0, 4096, cf::req_one));
  expect_fatal(e, ext_chunk(done, CT::block_status_ext, e[0], 0, status_ext_payload(1, {{512, 0}, {512, 0}})),
               errc::extent_req_one_violation);
  expect_fatal(e, ext_chunk(done, CT::block_status_ext, e[0], 0, status_ext_payload(1, {{1ull << 32, 0}})),
               errc::extent_req_one_violation);
}

TEST_CASE("client 3.4: extents after ones that cover the request are fatal but the last may run past") {
  const auto p = prepare(sr(), status_at(0, 4096));
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(1, {{4096, 0}, {512, 0}})),
               errc::extent_past_request);
  expect_fatal(p, chunk(done, CT::block_status, p[0], status_payload(1, {{2048, 0}, {4096, 0}, {512, 0}})),
               errc::extent_past_request);
  const auto log = feed_ok(p, chunk(done, CT::block_status, p[0], status_payload(1, {{2048, 0}, {0x10000000, 1}})));
  REQUIRE(kinds_string(log.events) == "extent,extent,reply");
  CHECK(log.events[1].offset == 2048);
  CHECK(log.events[1].length == 0x10000000);
}

TEST_CASE("client 3.4: unaligned extents are accepted") {
  const auto p = prepare(sr(), status_at(512, 4096));
  const auto log = feed_ok(p, chunk(done, CT::block_status, p[0], status_payload(1, {{100, 0}, {300, 1}, {3696, 2}})));
  REQUIRE(kinds_string(log.events) == "extent,extent,extent,reply");
  CHECK(log.events[0].offset == 512);
  CHECK(log.events[1].offset == 612);
  CHECK(log.events[2].offset == 912);
  CHECK(log.events[2].length == 3696);
}

TEST_CASE("client 3.4: extended reply offset differing from the request's is fatal") {
  const auto p = prepare(ext(), [](client& c) {
    return std::vector{cookie_of(c.read(mib, 4096)), cookie_of(c.flush()), cookie_of(c.block_status(4096, 512))};
  });
  // OFFSET_DATA carries its own offset, but the header's MUST still be the request's.
  expect_fatal(p, ext_chunk(done, CT::offset_hole, p[0], 0, hole_payload(mib, 4096)), errc::reply_offset_mismatch);
  expect_fatal(p, ext_chunk(done, CT::none, p[1], 1, {}), errc::reply_offset_mismatch);
  expect_fatal(p, ext_chunk(done, CT::error, p[2], 0, error_payload(5, "")), errc::reply_offset_mismatch);
  const auto log = feed_ok(p, ext_chunk(done, CT::offset_hole, p[0], mib, hole_payload(mib, 4096)) +
                                  ext_chunk(done, CT::none, p[1], 0) +
                                  ext_chunk(done, CT::error, p[2], 4096, error_payload(5, "")));
  CHECK(kinds_string(log.events) == "read_hole,reply,reply,error_chunk,reply");
}

TEST_CASE("client 3.4: more descriptors than max_extents_per_chunk is fatal") {
  const auto p = prepare(sr(), status_at(0, 4096));
  const std::uint64_t n = std::uint64_t{max_extents_per_chunk} + 1;
  expect_fatal(p, chunk_header(done, 5, p[0], static_cast<std::uint32_t>(4 + 8 * n)), errc::too_many_extents);
  const auto e = prepare(ext(), status_at(0, 4096));
  expect_fatal(e, ext_chunk_header(done, 6, e[0], 0, 8 + 16 * n), errc::too_many_extents);
}

TEST_CASE("client 3.4: READ chunks needing more than max_read_ranges ranges are refused") {
  // Disjoint ranges with gaps between them: one more than the client tracks.
  const auto p = prepare(sr(), read_at(0, 2048 * (max_read_ranges + 1)));
  bytes in;
  for (std::size_t i = 0; i <= max_read_ranges; ++i) in = in + chunk(0, CT::offset_hole, p[0], hole_payload(2048 * i, 1024));
  expect_fatal(p, in, errc::reply_chunks_too_fragmented);
  // As many disjoint ranges as tracked, then the gaps filled: success.
  const auto q = prepare(sr(), read_at(0, 2048 * max_read_ranges));
  bytes odd, even;
  for (std::size_t i = 0; i < max_read_ranges; ++i) {
    odd = odd + chunk(0, CT::offset_hole, q[0], hole_payload(2048 * i + 1024, 1024));
    even = even + chunk(0, CT::offset_hole, q[0], hole_payload(2048 * i, 1024));
  }
  const auto log = feed_ok(q, odd + even + chunk(done, CT::none, q[0]));
  expect_reply(log, q[0], nbd_error::ok);
}

// ==== golden vectors ============================================================================

TEST_CASE("client: G11-G14 decoded in structured mode") {
  SUBCASE("G11 OFFSET_DATA with DONE") {
    const auto p = prepare(sr(), read_at(mib, 4096));
    const auto log = feed_ok(p, with_cookie(golden("G11"), p[0]) + pattern(mib, 4096), big_input);
    REQUIRE_MESSAGE(kinds_string(log.events) == "payload,reply", describe(log.events));
    CHECK(log.events[0].data == pattern(mib, 4096));
  }
  SUBCASE("G12 OFFSET_HOLE with DONE") {
    const auto p = prepare(sr(), read_at(mib, 4096));
    const auto log = feed_ok(p, with_cookie(golden("G12"), p[0]));
    REQUIRE(kinds_string(log.events) == "read_hole,reply");
    CHECK(log.events[0].offset == mib);
    CHECK(log.events[0].length == 4096);
  }
  SUBCASE("G13 BLOCK_STATUS, context 1, one extent of 1 GiB, HOLE|ZERO") {
    const auto p = prepare(sr({1}), status_at(0, 4096));
    const auto log = feed_ok(p, with_cookie(golden("G13"), p[0]));
    REQUIRE(kinds_string(log.events) == "extent,reply");
    CHECK(log.events[0].context_id == 1);
    CHECK(log.events[0].length == gib);
    CHECK(log.events[0].extent_flags == hole_zero);
  }
  SUBCASE("G14 ERROR EINVAL without a message") {
    const auto p = prepare(sr(), read_at(mib, 4096));
    const auto log = feed_ok(p, with_cookie(golden("G14"), p[0]));
    REQUIRE(kinds_string(log.events) == "error_chunk,reply");
    CHECK(log.events[0].data.empty());
    expect_reply(log, p[0], nbd_error::einval);
  }
}

TEST_CASE("client: G15 and G16 are the extended READ and WRITE requests") {
  auto c = modern_client(ext());
  const std::uint64_t r = cookie_of(c->read(mib, 4096));
  CHECK(to_hex(take_output(*c)) == to_hex(with_cookie(golden("G15"), r)));
  const std::uint64_t w = cookie_of(c->write(mib, 4096));
  // G16, then the 4096 payload bytes from the caller's buffer.
  CHECK(to_hex(c->pending_output()) == to_hex(with_cookie(golden("G16"), w)));
  c->consume_output(c->pending_output().size());
  REQUIRE(c->pending_payload().has_value());
  CHECK(*c->pending_payload() == payload_span{w, mib, 4096});
  // A FUA WRITE keeps its flag next to PAYLOAD_LEN.
  auto f = modern_client(ext());
  const std::uint64_t fw = cookie_of(f->write(0, 512, cf::fua));
  CHECK(to_hex(f->pending_output()) ==
        to_hex(ext_request_bytes(command::write, cf::fua | cf::payload_len, fw, 0, 512)));
}

TEST_CASE("client: G17 and G18 decoded in extended mode") {
  SUBCASE("G17 OFFSET_DATA answering G15") {
    const auto p = prepare(ext(), read_at(mib, 4096));
    const auto log = feed_ok(p, with_cookie(golden("G17"), p[0]) + pattern(mib, 4096), big_input);
    REQUIRE_MESSAGE(kinds_string(log.events) == "payload,reply", describe(log.events));
    CHECK(log.events[0].offset == mib);
    CHECK(log.events[0].data == pattern(mib, 4096));
  }
  SUBCASE("G18 BLOCK_STATUS_EXT") {
    const auto p = prepare(ext({1}), status_at(0, 4096));
    const auto log = feed_ok(p, with_cookie(golden("G18"), p[0]));
    REQUIRE(kinds_string(log.events) == "extent,reply");
    CHECK(log.events[0].context_id == 1);
    CHECK(log.events[0].offset == 0);
    CHECK(log.events[0].length == gib);
    CHECK(log.events[0].extent_flags == 3);
  }
}

TEST_CASE("client: G21 is the SET_META_CONTEXT go() sends for base:allocation") {
  static constexpr std::array<std::string_view, 1> contexts{"base:allocation"};
  client_config cfg;
  cfg.request_extended_headers = false;
  cfg.meta_contexts = contexts;
  client c(cfg);
  (void)feed(c, greeting(3));
  (void)take_output(c);
  REQUIRE(c.go("disk", 0).has_value());
  CHECK(to_hex(take_output(c)) == to_hex(option_request(option::structured_reply)));
  (void)feed(c, ack(option::structured_reply));
  CHECK(to_hex(take_output(c)) == to_hex(golden("G21")));
  // G22 (id 1) and the ACK select the context; GO follows.
  const auto ev = feed(c, golden("G22") + ack(option::set_meta_context));
  REQUIRE(kinds_string(ev) == "meta_context");
  CHECK(ev[0].context_id == 1);
  CHECK(ev[0].data == str_bytes("base:allocation"));
  CHECK(to_hex(take_output(c)) == to_hex(option_request(option::go, info_body("disk", {}))));
  REQUIRE(c.negotiated().meta_context_count == 1);
  CHECK(c.negotiated().meta_contexts[0] == meta_context_binding{1, 0});
}

// ==== option plans of go() ====================================================================

namespace {
/// Runs a handshake at every split: go("disk") on the greeting, with `cfg`.
run_log plan_run(const client_config& cfg, const bytes& server_bytes, std::uint32_t infos = 0) {
  return feed_all_ways(
      [cfg] { return std::make_unique<client>(cfg); }, server_bytes,
      [infos](client& c, const event& e) {
        if (e.kind == K::greeting) REQUIRE(c.go("disk", infos).has_value());
      });
}
const bytes go_body = info_body("disk", {});
const bytes greet = greeting(3);
}  // namespace

TEST_CASE("client plan: EXTENDED_HEADERS acknowledged then GO") {
  client_config cfg;
  const bytes in = greet + ack(option::extended_headers) + info_export(option::go, gib, 0x0d) + ack(option::go);
  const auto log = plan_run(cfg, in);
  CHECK(kinds_string(log.events) == "greeting,info,ready");
  CHECK(to_hex(log.output) ==
        to_hex(client_flags(3) + option_request(option::extended_headers) + option_request(option::go, go_body)));
  auto c = std::make_unique<client>(cfg);
  (void)feed(*c, greet);
  REQUIRE(c->go("disk", 0).has_value());
  (void)feed(*c, slice(in, greet.size(), in.size()));
  CHECK(c->negotiated().extended_headers);
  CHECK(c->negotiated().structured_replies);
  CHECK(c->negotiated().meta_context_count == 0);
}

TEST_CASE("client plan: EXTENDED_HEADERS refused then STRUCTURED_REPLY acknowledged") {
  client_config cfg;
  const bytes in = greet + option_reply(option::extended_headers, reply_type::err_unsup, str_bytes("no")) +
                   ack(option::structured_reply) + info_export(option::go, gib, 0x8d) + ack(option::go);
  const auto log = plan_run(cfg, in);
  CHECK(kinds_string(log.events) == "greeting,info,ready");
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::extended_headers) +
                                     option_request(option::structured_reply) + option_request(option::go, go_body)));
  client c(cfg);
  (void)feed(c, greet);
  REQUIRE(c.go("disk", 0).has_value());
  (void)feed(c, slice(in, greet.size(), in.size()));
  CHECK_FALSE(c.negotiated().extended_headers);
  CHECK(c.negotiated().structured_replies);
  CHECK(c.negotiated().has(tf::send_df));  // DF is kept once SR is on
}

TEST_CASE("client plan: both refused gives simple replies and transmission works") {
  client_config cfg;
  const bytes in = greet + option_reply(option::extended_headers, reply_type::err_unsup) +
                   option_reply(option::structured_reply, reply_type::err_policy, str_bytes("not here")) +
                   info_export(option::go, gib, 0x8d) + ack(option::go);
  const auto log = plan_run(cfg, in);
  CHECK(kinds_string(log.events) == "greeting,info,ready");
  client c(cfg);
  (void)feed(c, greet);
  REQUIRE(c.go("disk", 0).has_value());
  REQUIRE(kinds_string(feed(c, slice(in, greet.size(), in.size()))) == "info,ready");
  CHECK_FALSE(c.negotiated().structured_replies);
  CHECK_FALSE(c.negotiated().has(tf::send_df));  // masked: DF needs structured replies
  (void)take_output(c);
  const std::uint64_t ck = cookie_of(c.read(0, 512));
  CHECK(to_hex(take_output(c)) == to_hex(request_bytes(command::read, 0, ck, 0, 512)));
  const auto ev = feed(c, simple_reply(nbd_error::ok, ck) + pattern(0, 512));
  REQUIRE(kinds_string(ev) == "payload,reply");
  CHECK(c.block_status(0, 512).error() == errc::command_not_advertised);
}

TEST_CASE("client plan: SET_META_CONTEXT records the selected ids including 0") {
  static constexpr std::array<std::string_view, 3> contexts{"base:allocation", "qemu:dirty-bitmap:b0", "x-none:q"};
  client_config cfg;
  cfg.meta_contexts = contexts;
  // The server selects two of three, in its own order and with its own ids (qemu uses 0).
  const bytes in = greet + ack(option::extended_headers) +
                   meta_reply(option::set_meta_context, 0, "qemu:dirty-bitmap:b0") +
                   meta_reply(option::set_meta_context, 1, "base:allocation") + ack(option::set_meta_context) +
                   info_export(option::go, gib, 0x0d) + ack(option::go);
  const auto log = plan_run(cfg, in);
  CHECK(kinds_string(log.events) == "greeting,meta_context,meta_context,info,ready");
  const bytes set_body = meta_body("disk", {"base:allocation", "qemu:dirty-bitmap:b0", "x-none:q"});
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::extended_headers) +
                                     option_request(option::set_meta_context, set_body) +
                                     option_request(option::go, go_body)));
  client c(cfg);
  (void)feed(c, greet);
  REQUIRE(c.go("disk", 0).has_value());
  (void)feed(c, slice(in, greet.size(), in.size()));
  const auto& n = c.negotiated();
  REQUIRE(n.meta_context_count == 2);
  CHECK(n.meta_contexts[0] == meta_context_binding{0, 1});
  CHECK(n.meta_contexts[1] == meta_context_binding{1, 0});
  CHECK(n.has_meta_context(0));
  CHECK(n.has_meta_context(1));
  CHECK_FALSE(n.has_meta_context(2));
  CHECK(c.block_status(0, 4096).has_value());
}

TEST_CASE("client plan: SET_META_CONTEXT refused leaves no contexts") {
  static constexpr std::array<std::string_view, 1> contexts{"base:allocation"};
  client_config cfg;
  cfg.request_extended_headers = false;
  cfg.meta_contexts = contexts;
  // A context is reported, then the option fails: SET replaces the earlier selection even then.
  const bytes in = greet + ack(option::structured_reply) + meta_reply(option::set_meta_context, 3, "base:allocation") +
                   option_reply(option::set_meta_context, reply_type::err_too_big) +
                   info_export(option::go, gib, 0x0d) + ack(option::go);
  const auto log = plan_run(cfg, in);
  CHECK(kinds_string(log.events) == "greeting,meta_context,info,ready");
  client c(cfg);
  (void)feed(c, greet);
  REQUIRE(c.go("disk", 0).has_value());
  (void)feed(c, slice(in, greet.size(), in.size()));
  CHECK(c.negotiated().structured_replies);
  CHECK(c.negotiated().meta_context_count == 0);
  (void)take_output(c);
  CHECK(c.block_status(0, 4096).error() == errc::command_not_advertised);
  CHECK(c.in_flight() == 0);
  CHECK(take_output(c).empty());
}

TEST_CASE("client plan: no SET_META_CONTEXT without structured replies") {
  static constexpr std::array<std::string_view, 1> contexts{"base:allocation"};
  client_config cfg;
  cfg.meta_contexts = contexts;
  const bytes in = greet + option_reply(option::extended_headers, reply_type::err_unsup) +
                   option_reply(option::structured_reply, reply_type::err_unsup) +
                   info_export(option::go, gib, 0x0d) + ack(option::go);
  const auto log = plan_run(cfg, in);
  CHECK(kinds_string(log.events) == "greeting,info,ready");
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::extended_headers) +
                                     option_request(option::structured_reply) + option_request(option::go, go_body)));
}

TEST_CASE("client plan: GO refused with ERR_UNSUP after EXTENDED_HEADERS does not fall back") {
  client_config cfg;
  const bytes in = greet + ack(option::extended_headers) + option_reply(option::go, reply_type::err_unsup, str_bytes("?"));
  const auto log = plan_run(cfg, in);
  REQUIRE(kinds_string(log.events) == "greeting,option_refused");
  CHECK(log.events[1].option == static_cast<std::uint32_t>(option::go));
  CHECK(log.events[1].reply == reply_type::err_unsup);
  // No EXPORT_NAME after the GO.
  CHECK(to_hex(log.output) ==
        to_hex(client_flags(3) + option_request(option::extended_headers) + option_request(option::go, go_body)));
  client c(cfg);
  (void)feed(c, greet);
  REQUIRE(c.go("disk", 0).has_value());
  (void)feed(c, slice(in, greet.size(), in.size()));
  CHECK(c.state() == client_state::negotiating);
  CHECK(c.export_name("disk").error() == errc::export_name_with_extended_headers);
}

TEST_CASE("client plan: GO refused with ERR_UNSUP without extended headers falls back to EXPORT_NAME") {
  client_config cfg;
  const bytes in = greet + option_reply(option::extended_headers, reply_type::err_unsup) +
                   ack(option::structured_reply) + option_reply(option::go, reply_type::err_unsup) +
                   rec(make_export_name_reply_short(gib, 0x0d));
  const auto log = plan_run(cfg, in);
  CHECK(kinds_string(log.events) == "greeting,ready");
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::extended_headers) +
                                     option_request(option::structured_reply) + option_request(option::go, go_body) +
                                     option_request(option::export_name, str_bytes("disk"))));
}

TEST_CASE("client plan: EXPORT_NAME is refused by the client after EXTENDED_HEADERS") {
  client c;
  (void)feed(c, greet);
  REQUIRE(c.info("disk", 0).has_value());
  const auto ev = feed(c, ack(option::extended_headers) + info_export(option::info, gib, 1) + ack(option::info));
  REQUIRE(kinds_string(ev) == "info,option_done");
  CHECK(c.negotiated().extended_headers);
  (void)take_output(c);
  CHECK(c.export_name("disk").error() == errc::export_name_with_extended_headers);
  CHECK(take_output(c).empty());
  // A later go() does not ask for extended headers again (once per connection).
  REQUIRE(c.go("disk", 0).has_value());
  CHECK(to_hex(take_output(c)) == to_hex(option_request(option::go, go_body)));
}

TEST_CASE("client plan: nbd-server 3.24 capture with ERR_UNSUP and a message for STRUCTURED_REPLY") {
  // Checklist 4.1 (c): nbd-server knows neither EXTENDED_HEADERS nor STRUCTURED_REPLY.
  const bytes unsup = from_hex("0003e889045565a9 00000008 80000001 00000039") +
                      str_bytes("The given option is unknown to this server implementation");
  REQUIRE(unsup.size() == 20 + 0x39);
  bytes unsup_ext = unsup;
  store_be<std::uint32_t>(unsup_ext.data() + 8, 11);
  const bytes in = from_hex("4e42444d4147494349484156454f50540003") + unsup_ext + unsup +
                   from_hex("0003e889045565a9 00000007 00000003 0000000c 0000 0000000040000000 016d") +
                   from_hex("0003e889045565a9 00000007 00000001 00000000");
  client_config cfg;
  const auto log = plan_run(cfg, in);
  CHECK(kinds_string(log.events) == "greeting,info,ready");
  client c(cfg);
  (void)feed(c, slice(in, 0, 18));
  REQUIRE(c.go("disk", 0).has_value());
  (void)feed(c, slice(in, 18, in.size()));
  REQUIRE(c.state() == client_state::transmission);
  CHECK_FALSE(c.negotiated().structured_replies);
  CHECK(c.negotiated().export_size == gib);
  CHECK(c.negotiated().transmission_flags == 0x016d);
  (void)take_output(c);
  const std::uint64_t ck = cookie_of(c.read(0, 4096));
  CHECK(to_hex(take_output(c)) == to_hex(request_bytes(command::read, 0, ck, 0, 4096)));
  const auto ev = feed(c, simple_reply(nbd_error::ok, ck) + pattern(0, 4096));
  CHECK(kinds_string(ev) == "payload,reply");
}

TEST_CASE("client: list_meta_context reports contexts and disregards their ids") {
  static constexpr std::array<std::string_view, 1> queries{"base:"};
  client_config cfg;
  cfg.request_extended_headers = false;
  const bytes in = greet + ack(option::structured_reply) + meta_reply(option::list_meta_context, 0, "base:allocation") +
                   meta_reply(option::list_meta_context, 0, "base:x") + ack(option::list_meta_context);
  const auto log = feed_all_ways([cfg] { return std::make_unique<client>(cfg); }, in, [](client& c, const event& e) {
    if (e.kind == K::greeting) REQUIRE(c.list_meta_context("disk", queries).has_value());
  });
  REQUIRE(kinds_string(log.events) == "greeting,meta_context,meta_context,option_done");
  CHECK(log.events[1].data == str_bytes("base:allocation"));
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::structured_reply) +
                                     option_request(option::list_meta_context, meta_body("disk", {"base:"}))));
  client c(cfg);
  (void)feed(c, greet);
  REQUIRE(c.list_meta_context("disk", queries).has_value());
  (void)feed(c, slice(in, greet.size(), in.size()));
  CHECK(c.negotiated().meta_context_count == 0);  // LIST selects nothing
}

TEST_CASE("client 3.4: impossible chunk lengths fail at the header, before a byte of payload is awaited") {
  const auto p = prepare(sr(), read_at(0, 512));
  // Only the header arrives: the client must not wait for 4 GiB that no such chunk can hold.
  const auto err = static_cast<std::uint16_t>(CT::error), err_off = static_cast<std::uint16_t>(CT::error_offset);
  expect_fatal(p, chunk_header(done, err, p[0], 0xffffffffu), errc::error_chunk_too_long);
  expect_fatal(p, chunk_header(done, err_off, p[0], 0xffffffffu), errc::error_chunk_too_long);
  expect_fatal(p, chunk_header(done, 0x8000 | 77, p[0], 0xffffffffu), errc::error_chunk_too_long);  // unknown, error bit
  expect_fatal(p, chunk_header(done, err, p[0], 6 + max_string + 9), errc::error_chunk_too_long);
  // OFFSET_DATA: more data than the READ asked for.
  expect_fatal(p, chunk_header(done, static_cast<std::uint16_t>(CT::offset_data), p[0], 8 + 513),
               errc::chunk_outside_request);
  expect_fatal(p, chunk_header(done, static_cast<std::uint16_t>(CT::offset_data), p[0], 0xffffffffu),
               errc::chunk_outside_request);
}
