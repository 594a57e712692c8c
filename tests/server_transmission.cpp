// SPDX-License-Identifier: MIT
// Server machine, transmission phase: crafted requests in, exact reply bytes out; one case
// per rule of checklist 3.3, plus the 1997 framing. Every input is fed at every split.
#include <doctest/doctest.h>

#include <array>

#include "nbdwire/server.hpp"
#include "support/golden.hpp"
#include "support/machines.hpp"
#include "support/split.hpp"

using namespace nbdwire;
using namespace nbdwire_test;
using K = event_kind;

namespace {

constexpr std::uint64_t gib = 1ull << 30;
constexpr std::uint64_t ck = 0x0102030405060708ull;
namespace tf = transmission_flag;
namespace cf = command_flag;

const std::array<export_config, 1> rw{export_config{"disk", "", gib, tf::send_flush, {}}};
const std::array<export_config, 1> all_flags{export_config{
    "disk", "", gib,
    tf::send_flush | tf::send_fua | tf::send_trim | tf::send_write_zeroes | tf::send_fast_zero | tf::send_cache, {}}};
const std::array<export_config, 1> ro{export_config{"disk", "", gib, tf::read_only | tf::send_trim | tf::send_write_zeroes, {}}};
const std::array<export_config, 1> aligned{export_config{"disk", "", 1u << 20, tf::send_trim, {512, 4096, 8192}}};

auto ready_server(std::span<const export_config> e) {
  return [e] { return server_in_transmission(e); };
}

/// Answers every request with success (READ data comes from the pattern).
void reply_ok(server& s, const event& e) {
  if (e.kind == K::request) REQUIRE(s.reply(e.req, nbd_error::ok).has_value());
}

/// Feeds `in` at every split and returns the log; every request is answered with success.
run_log serve(std::span<const export_config> e, const bytes& in) { return feed_all_ways(ready_server(e), in, reply_ok); }

/// One request that the server must refuse with `err` by itself, then a READ that must still
/// be parsed in sync.
void expect_refused(std::span<const export_config> e, const bytes& req, nbd_error err, const bytes& payload = {}) {
  const bytes probe = request_bytes(command::read, 0, 99, 0, 512);
  const auto log = serve(e, req + payload + probe);
  REQUIRE(kinds_string(log.events) == "request_refused,request");
  CHECK(log.events[0].status == err);
  CHECK(log.events[1].req.cookie == 99);
  const std::uint64_t cookie = load_be<std::uint64_t>(req.data() + 8);
  CHECK(to_hex(log.output) == to_hex(simple_reply(err, cookie) + simple_reply(nbd_error::ok, 99) + pattern(0, 512)));
  CHECK(log.final_error == errc::ok);
}

}  // namespace

TEST_CASE("server: G9 READ gets G10 and the data") {
  const auto log = serve(rw, golden("G09"));
  REQUIRE(kinds_string(log.events) == "request");
  const auto& r = log.events[0].req;
  CHECK(r.cookie == ck);
  CHECK(r.cmd() == command::read);
  CHECK(r.offset == 1u << 20);
  CHECK(r.length == 4096);
  CHECK(to_hex(log.output) == to_hex(golden("G10") + pattern(1u << 20, 4096)));
}

TEST_CASE("server: WRITE data arrives as payload events after the request") {
  const bytes data = pattern(4096, 1000);
  const auto log = serve(rw, request_bytes(command::write, 0, 5, 4096, 1000) + data);
  REQUIRE(kinds_string(log.events) == "request,payload");
  CHECK(log.events[1].req.cookie == 5);
  CHECK(log.events[1].offset == 4096);
  CHECK(log.events[1].data == data);
  CHECK(to_hex(log.output) == to_hex(simple_reply(nbd_error::ok, 5)));
}

TEST_CASE("server: WRITE data can be taken through incoming_payload") {
  auto s = server_in_transmission(rw);
  const auto ev = feed(*s, request_bytes(command::write, 0, 5, 512, 100));
  REQUIRE(kinds_string(ev) == "request");
  const auto p = s->incoming_payload();
  REQUIRE(p.has_value());
  CHECK(*p == payload_span{5, 512, 100});
  CHECK(s->consume_incoming_payload(101).error() == errc::payload_overrun);
  REQUIRE(s->consume_incoming_payload(60).has_value());
  CHECK(*s->incoming_payload() == payload_span{5, 572, 40});
  REQUIRE(s->consume_incoming_payload(40).has_value());
  CHECK_FALSE(s->incoming_payload().has_value());
  CHECK(s->consume_incoming_payload(1).error() == errc::no_payload_due);
  // The next bytes are a request header again.
  CHECK(kinds_string(feed(*s, golden("G09"))) == "request");
}

TEST_CASE("server: request magic other than the compact magic drops the connection") {
  for (const bytes& bad : {golden("G19"), golden("G15"), from_hex("25609514") + bytes(24)}) {
    const auto log = serve(rw, bad);
    REQUIRE(kinds_string(log.events) == "failed");
    CHECK(log.final_error == errc::bad_request_magic);
    CHECK(log.output.empty());
  }
}

TEST_CASE("server: unknown command gets EINVAL") {
  expect_refused(rw, request_raw(9, 0, 1, 0, 512), nbd_error::einval);
  expect_refused(rw, request_raw(0xffff, 0, 1, 0, 0), nbd_error::einval);
}

TEST_CASE("server: unknown or inapplicable flag gets EINVAL") {
  expect_refused(all_flags, request_bytes(command::read, 0x0400, 1, 0, 512), nbd_error::einval);
  expect_refused(all_flags, request_bytes(command::read, cf::no_hole, 1, 0, 512), nbd_error::einval);
  expect_refused(all_flags, request_bytes(command::trim, cf::fast_zero, 1, 0, 512), nbd_error::einval);
  expect_refused(all_flags, request_bytes(command::write, cf::df, 1, 0, 4), nbd_error::einval, bytes(4));
  expect_refused(all_flags, request_bytes(command::read, cf::payload_len, 1, 0, 512), nbd_error::einval);
}

TEST_CASE("server: command or flag not advertised gets EINVAL") {
  expect_refused(rw, request_bytes(command::trim, 0, 1, 0, 512), nbd_error::einval);
  expect_refused(rw, request_bytes(command::write_zeroes, 0, 1, 0, 512), nbd_error::einval);
  expect_refused(rw, request_bytes(command::read, cf::fua, 1, 0, 512), nbd_error::einval);
  expect_refused(rw, request_bytes(command::read, cf::df, 1, 0, 512), nbd_error::einval);
  const std::array<export_config, 1> wz{export_config{"disk", "", gib, tf::send_write_zeroes, {}}};
  expect_refused(wz, request_bytes(command::write_zeroes, cf::fast_zero, 1, 0, 512), nbd_error::einval);
  const std::array<export_config, 1> none{export_config{"disk", "", gib, 0, {}}};
  expect_refused(none, request_bytes(command::flush, 0, 1, 0, 0), nbd_error::einval);
}

TEST_CASE("server: advertised commands and flags are accepted") {
  const bytes in = request_bytes(command::flush, cf::fua, 1, 0, 0) + request_bytes(command::trim, 0, 2, 0, 4096) +
                   request_bytes(command::write_zeroes, cf::no_hole | cf::fast_zero, 3, 0, 4096) +
                   request_bytes(command::cache, 0, 4, 0, 4096) + request_bytes(command::read, cf::fua, 5, 0, 16);
  const auto log = serve(all_flags, in);
  CHECK(kinds_string(log.events) == "request,request,request,request,request");
}

TEST_CASE("server: write to a read-only export gets EPERM and its payload is consumed") {
  expect_refused(ro, request_bytes(command::write, 0, 1, 0, 700), nbd_error::eperm, pattern(0, 700));
  expect_refused(ro, request_bytes(command::trim, 0, 1, 0, 512), nbd_error::eperm);
  expect_refused(ro, request_bytes(command::write_zeroes, 0, 1, 0, 512), nbd_error::eperm);
}

TEST_CASE("server: READ TRIM or CACHE past the end gets EINVAL") {
  expect_refused(rw, request_bytes(command::read, 0, 1, gib - 512, 1024), nbd_error::einval);
  expect_refused(rw, request_bytes(command::read, 0, 1, gib, 1), nbd_error::einval);
  expect_refused(all_flags, request_bytes(command::trim, 0, 1, gib, 512), nbd_error::einval);
  expect_refused(all_flags, request_bytes(command::cache, 0, 1, gib + 4096, 512), nbd_error::einval);
}

TEST_CASE("server: WRITE past the end gets ENOSPC and its payload is consumed") {
  expect_refused(rw, request_bytes(command::write, 0, 1, gib - 100, 200), nbd_error::enospc, pattern(0, 200));
  expect_refused(all_flags, request_bytes(command::write_zeroes, 0, 1, gib, 512), nbd_error::enospc);
}

TEST_CASE("server: 64-bit overflowing range gets EINVAL") {
  expect_refused(rw, request_bytes(command::read, 0, 1, 0xfffffffffffffe00ull, 1024), nbd_error::einval);
  expect_refused(all_flags, request_bytes(command::trim, 0, 1, 0xffffffffffffffffull, 2), nbd_error::einval);
  // For a write the spec's past-the-end answer is ENOSPC; overflow must not wrap into range.
  expect_refused(rw, request_bytes(command::write, 0, 1, 0xffffffffffffff00ull, 512), nbd_error::enospc, bytes(512));
}

TEST_CASE("server: misaligned request gets EINVAL") {
  expect_refused(aligned, request_bytes(command::read, 0, 1, 100, 512), nbd_error::einval);
  expect_refused(aligned, request_bytes(command::read, 0, 1, 512, 100), nbd_error::einval);
  expect_refused(aligned, request_bytes(command::write, 0, 1, 1, 512), nbd_error::einval, bytes(512));
  expect_refused(aligned, request_bytes(command::trim, 0, 1, 0, 1000), nbd_error::einval);
}

TEST_CASE("server: WRITE payload above the maximum but within 32 MiB is consumed and refused") {
  expect_refused(aligned, request_bytes(command::write, 0, 1, 0, 16384), nbd_error::einval, pattern(0, 16384));
  expect_refused(aligned, request_bytes(command::read, 0, 1, 0, 16384), nbd_error::einval);
}

TEST_CASE("server: WRITE payload above 32 MiB and the maximum drops the connection") {
  const std::array<export_config, 1> big{export_config{"disk", "", 1ull << 40, 0, {}}};
  auto s = server_in_transmission(big);
  const auto ev = feed(*s, request_bytes(command::write, 0, 1, 0, (32u << 20) + 512));
  REQUIRE(kinds_string(ev) == "failed");
  CHECK(s->error() == errc::write_payload_too_large);
}

TEST_CASE("server: FLUSH with a nonzero offset or length gets EINVAL") {
  expect_refused(rw, request_bytes(command::flush, 0, 1, 512, 0), nbd_error::einval);
  expect_refused(rw, request_bytes(command::flush, 0, 1, 0, 512), nbd_error::einval);
}

TEST_CASE("server: BLOCK_STATUS without a negotiated context gets EINVAL") {
  expect_refused(all_flags, request_bytes(command::block_status, 0, 1, 0, 4096), nbd_error::einval);
}

TEST_CASE("server: CACHE without SEND_CACHE is accepted") {
  const auto log = serve(rw, request_bytes(command::cache, 0, 1, 0, 4096));
  CHECK(kinds_string(log.events) == "request");
  CHECK(to_hex(log.output) == to_hex(simple_reply(nbd_error::ok, 1)));
}

TEST_CASE("server: DISC ends transmission and later bytes are not read") {
  const auto log = serve(rw, golden("G23") + golden("G09"));
  REQUIRE(kinds_string(log.events) == "disconnected");
  CHECK(log.events[0].req.cookie == ck);
  CHECK(log.output.empty());  // DISC has no reply
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("server: requests in flight are still answered after DISC") {
  auto s = server_in_transmission(rw);
  const auto ev = feed(*s, golden("G09") + golden("G23"));
  REQUIRE(kinds_string(ev) == "request,disconnected");
  const request r = ev[0].req;
  CHECK(s->state() == server_state::closed);
  REQUIRE(s->reply(r, nbd_error::ok).has_value());
  CHECK(to_hex(take_output(*s)) == to_hex(golden("G10") + pattern(1u << 20, 4096)));
  CHECK(s->on_eof().kind == K::closed);
}

TEST_CASE("server: replies may be sent out of order and echo the cookie") {
  auto s = server_in_transmission(rw);
  const auto ev = feed(*s, request_bytes(command::read, 0, 1, 0, 8));
  const auto ev2 = feed(*s, request_bytes(command::flush, 0, 2, 0, 0));
  REQUIRE(ev.size() == 1);
  REQUIRE(ev2.size() == 1);
  REQUIRE(s->reply(ev2[0].req, nbd_error::eio).has_value());
  REQUIRE(s->reply(ev[0].req, nbd_error::ok).has_value());
  CHECK(to_hex(take_output(*s)) == to_hex(simple_reply(nbd_error::eio, 2) + simple_reply(nbd_error::ok, 1) + pattern(0, 8)));
  CHECK(s->reply(ev[0].req, nbd_error::ok).error() == errc::unknown_request);
}

TEST_CASE("server: READ error reply carries no data") {
  auto s = server_in_transmission(rw);
  const auto ev = feed(*s, golden("G09"));
  REQUIRE(s->reply(ev[0].req, nbd_error::eio).has_value());
  CHECK_FALSE(s->pending_payload().has_value());
  CHECK(to_hex(take_output(*s)) == "6744669800000005" "0102030405060708");
}

TEST_CASE("server: a cookie already in flight is accepted and echoed") {
  const auto log = serve(rw, golden("G09") + golden("G09"));
  CHECK(kinds_string(log.events) == "request,request");
  CHECK(to_hex(log.output) ==
        to_hex(golden("G10") + pattern(1u << 20, 4096) + golden("G10") + pattern(1u << 20, 4096)));
}

TEST_CASE("server: EOF between requests is closed and inside one is unexpected_eof") {
  auto s = server_in_transmission(rw);
  CHECK(s->on_eof().kind == K::closed);
  auto t = server_in_transmission(rw);
  (void)feed(*t, slice(golden("G09"), 0, 20));
  CHECK(t->on_eof().error == errc::unexpected_eof);
  auto u = server_in_transmission(rw);
  (void)feed(*u, request_bytes(command::write, 0, 1, 0, 100) + bytes(50));
  CHECK(u->on_eof().error == errc::unexpected_eof);
}

TEST_CASE("server: every request decoder fed at every split") {
  const bytes in = golden("G09") + request_bytes(command::write, cf::fua, 2, 512, 333) + pattern(512, 333) +
                   request_bytes(command::trim, 0, 3, 0, 512) + request_raw(12, 0, 4, 0, 0) +
                   request_bytes(command::write, 0, 5, gib, 64) + bytes(64) +
                   request_bytes(command::write_zeroes, cf::fast_zero, 6, 0, 4096) +
                   request_bytes(command::flush, 0, 7, 0, 0) + golden("G23");
  const auto log = serve(all_flags, in);
  CHECK(kinds_string(log.events) ==
        "request,request,payload,request,request_refused,request_refused,request,request,disconnected");
  CHECK(log.final_error == errc::ok);
}

// ---- the 1997 framing (1.1) -----------------------------------------------------------------

namespace {
const std::array<export_config, 1> legacy_export{export_config{"", "", 1u << 30, 0, {}}};
auto legacy_server() {
  return [] {
    server_config cfg;
    cfg.style = handshake_style::legacy_1997;
    cfg.exports = legacy_export;
    return std::make_unique<server>(cfg);
  };
}
}  // namespace

TEST_CASE("server: legacy 1997 READ G19 gets G20 and the data") {
  const auto log = feed_all_ways(legacy_server(), golden("G19"), reply_ok);
  REQUIRE(kinds_string(log.events) == "request");
  CHECK(log.events[0].req.cookie == ck);
  CHECK(log.events[0].req.cmd() == command::read);
  CHECK(log.events[0].req.offset == 1u << 20);
  CHECK(log.events[0].req.length == 4096);
  CHECK(to_hex(log.output) == to_hex(golden("G20") + pattern(1u << 20, 4096)));
}

TEST_CASE("server: legacy 1997 WRITE and one request at a time") {
  auto s = legacy_server()();
  const bytes w = rec(make_legacy_1997_request(command::write, 11, 512, 16)) + pattern(512, 16);
  const bytes in = w + golden("G19");
  auto r = s->receive(in);
  REQUIRE(r.ev.kind == K::request);
  const request req = r.ev.req;
  std::size_t used = r.consumed;
  r = s->receive(bytes_view(in).subspan(used));
  REQUIRE(r.ev.kind == K::payload);
  used += r.consumed;
  CHECK(used == w.size());
  // The next request waits until this one is answered: the 1997 client matches in order.
  r = s->receive(bytes_view(in).subspan(used));
  CHECK(r.ev.kind == K::blocked);
  CHECK(r.consumed == 0);
  REQUIRE(s->reply(req, nbd_error::ok).has_value());
  r = s->receive(bytes_view(in).subspan(used));
  CHECK(r.ev.kind == K::request);
  CHECK(r.ev.req.cookie == ck);
  CHECK(to_hex(take_output(*s)) == to_hex(rec(make_legacy_1997_reply(11, 0))));
}

TEST_CASE("server: legacy 1997 rejects the 1998 request magic") {
  const auto log = feed_all_ways(legacy_server(), golden("G09"), reply_ok);
  REQUIRE(kinds_string(log.events) == "failed");
  CHECK(log.final_error == errc::bad_request_magic);
}

TEST_CASE("server: legacy 1997 unknown type and past-the-end requests are refused") {
  const bytes in = from_hex("12560953 00000000 00000200 0000000000000001 00000002") +
                   rec(make_legacy_1997_request(command::read, 2, 0xfffffe00u, 1024)) + golden("G19");
  const auto log = feed_all_ways(legacy_server(), in, reply_ok);
  REQUIRE(kinds_string(log.events) == "request_refused,request_refused,request");
  CHECK(log.events[0].status != nbd_error::ok);
  CHECK(log.events[1].status == nbd_error::einval);
  const bytes out = log.output;
  REQUIRE(out.size() >= 32);
  CHECK(to_hex(slice(out, 0, 12)) == "96744668" "0000000000000001");
  CHECK(to_hex(slice(out, 16, 32)) == "96744668" "0000000000000002" "00000016");
}
