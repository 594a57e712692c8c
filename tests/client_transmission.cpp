// SPDX-License-Identifier: MIT
// Client machine, transmission phase: what it sends for each call, what it refuses to send,
// and how it reads simple replies (checklist 2.1-2.9, the simple-reply rows of 3.4, and the
// 1997 framing). Every reply stream is fed at every split.
#include <doctest/doctest.h>

#include <algorithm>

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
constexpr std::uint64_t gib = 1ull << 30;
constexpr std::uint16_t basic = tf::has_flags | tf::send_flush;

/// A factory for a client in transmission that already sent `submit` (a callback returning
/// the cookies), so each split run starts from identical state.
template <class Submit>
auto ready_client(Submit submit, std::uint16_t tflags = basic, std::uint64_t size = gib) {
  return [=] {
    auto c = client_in_transmission(size, tflags);
    submit(*c);
    (void)take_output(*c);
    return c;
  };
}

std::uint64_t cookie_of(const result<std::uint64_t>& r) {
  REQUIRE(r.has_value());
  return r.value();
}

void expect_fatal_reply(const bytes& replies, errc e) {
  const auto log = feed_all_ways(ready_client([](client& c) { (void)cookie_of(c.read(0, 512)); }), replies);
  REQUIRE(!log.events.empty());
  CHECK(log.events.back().kind == K::failed);
  CHECK(log.final_error == e);
}
}  // namespace

TEST_CASE("client: READ request has the G9 layout and G10 with data completes it") {
  auto c = client_in_transmission(gib, basic);
  const std::uint64_t ck = cookie_of(c->read(1u << 20, 4096));
  // G9 with the client's own cookie.
  bytes expected = golden("G09");
  store_be<std::uint64_t>(expected.data() + 8, ck);
  CHECK(to_hex(take_output(*c)) == to_hex(expected));
  CHECK(c->in_flight() == 1);
  CHECK(c->find(ck).has_value());

  auto make = ready_client([](client& m) { (void)cookie_of(m.read(1u << 20, 4096)); });
  bytes reply = golden("G10");
  store_be<std::uint64_t>(reply.data() + 8, ck);
  const bytes data = pattern(1u << 20, 4096);
  const auto log = feed_all_ways(make, reply + data, {}, {.random_runs = 12, .every_index_limit = 600});
  REQUIRE(kinds_string(log.events) == "payload,reply");
  CHECK(log.events[0].req.cookie == ck);
  CHECK(log.events[0].offset == 1u << 20);
  CHECK(log.events[0].data == data);
  CHECK(log.events[1].req.cookie == ck);
  CHECK(log.events[1].status == nbd_error::ok);
}

TEST_CASE("client: READ data can be taken through incoming_payload") {
  auto c = client_in_transmission(gib, basic);
  const std::uint64_t ck = cookie_of(c->read(512, 100));
  (void)take_output(*c);
  auto r = c->receive(simple_reply(nbd_error::ok, ck));
  CHECK(r.ev.kind == K::need_more);
  const auto p = c->incoming_payload();
  REQUIRE(p.has_value());
  CHECK(*p == payload_span{ck, 512, 100});
  CHECK(c->consume_incoming_payload(101).error() == errc::payload_overrun);
  REQUIRE(c->consume_incoming_payload(100).has_value());
  r = c->receive({});
  CHECK(r.ev.kind == K::reply);
  CHECK(r.ev.req.cookie == ck);
  CHECK(c->in_flight() == 0);
}

TEST_CASE("client: WRITE data is requested through pending_payload after the header") {
  auto c = client_in_transmission(gib, basic | tf::send_fua);
  const std::uint64_t ck = cookie_of(c->write(4096, 1000, cf::fua));
  const auto hdr = c->pending_output();
  CHECK(to_hex(hdr) == to_hex(request_bytes(command::write, cf::fua, ck, 4096, 1000)));
  REQUIRE(c->pending_payload().has_value());
  CHECK(*c->pending_payload() == payload_span{ck, 4096, 1000});
  CHECK(c->consume_payload(1).error() == errc::no_payload_due);  // the header goes first
  c->consume_output(hdr.size());
  CHECK(c->consume_payload(1001).error() == errc::payload_overrun);
  REQUIRE(c->consume_payload(600).has_value());
  CHECK(*c->pending_payload() == payload_span{ck, 4696, 400});
  REQUIRE(c->consume_payload(400).has_value());
  CHECK_FALSE(c->pending_payload().has_value());
  const auto ev = feed(*c, simple_reply(nbd_error::ok, ck));
  REQUIRE(kinds_string(ev) == "reply");
  CHECK(ev[0].req.cmd() == command::write);
}

TEST_CASE("client: replies may come out of order") {
  std::vector<std::uint64_t> cks;
  auto make = ready_client([&cks](client& c) {
    cks.clear();
    cks.push_back(cookie_of(c.read(0, 16)));
    cks.push_back(cookie_of(c.flush()));
    cks.push_back(cookie_of(c.read(16, 16)));
  });
  (void)make();
  const bytes in = simple_reply(nbd_error::ok, cks[2]) + pattern(16, 16) + simple_reply(nbd_error::eio, cks[1]) +
                   simple_reply(nbd_error::ok, cks[0]) + pattern(0, 16);
  const auto log = feed_all_ways(make, in);
  REQUIRE(kinds_string(log.events) == "payload,reply,reply,payload,reply");
  CHECK(log.events[1].req.cookie == cks[2]);
  CHECK(log.events[2].status == nbd_error::eio);
  CHECK(log.events[2].req.cmd() == command::flush);
  CHECK(log.events[4].req.cookie == cks[0]);
}

TEST_CASE("client: READ error reply carries no data") {
  std::vector<std::uint64_t> cks;
  auto make = ready_client([&cks](client& c) {
    cks.clear();
    cks.push_back(cookie_of(c.read(0, 512)));
    cks.push_back(cookie_of(c.read(512, 4)));
  });
  (void)make();
  const auto log = feed_all_ways(make, simple_reply(nbd_error::einval, cks[0]) + simple_reply(nbd_error::ok, cks[1]) +
                                           pattern(512, 4));
  REQUIRE(kinds_string(log.events) == "reply,payload,reply");
  CHECK(log.events[0].status == nbd_error::einval);
  CHECK(log.events[1].data == pattern(512, 4));
}

TEST_CASE("client: unexpected error value is treated as EINVAL") {
  std::uint64_t ck = 0;
  auto make = ready_client([&ck](client& c) { ck = cookie_of(c.flush()); });
  (void)make();
  bytes r = simple_reply(nbd_error::ok, ck);
  store_be<std::uint32_t>(r.data() + 4, 4242);
  const auto log = feed_all_ways(make, r);
  REQUIRE(kinds_string(log.events) == "reply");
  CHECK(log.events[0].status == nbd_error::einval);
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("client: unknown reply magic is fatal") {
  expect_fatal_reply(from_hex("67446699 00000000 0000000000000000"), errc::bad_reply_magic);
  expect_fatal_reply(golden("G20"), errc::bad_reply_magic);  // the 1997 reply magic
}

TEST_CASE("client: structured reply without structured replies negotiated is fatal") {
  expect_fatal_reply(golden("G11"), errc::structured_reply_not_negotiated);
  expect_fatal_reply(golden("G14"), errc::structured_reply_not_negotiated);
  expect_fatal_reply(golden("G17"), errc::structured_reply_not_negotiated);
}

TEST_CASE("client: reply to unknown cookie is fatal") {
  expect_fatal_reply(golden("G10"), errc::reply_cookie_unknown);
}

TEST_CASE("client: reply to a cookie already completed is fatal") {
  std::uint64_t ck = 0;
  auto make = ready_client([&ck](client& c) { ck = cookie_of(c.flush()); });
  (void)make();
  const auto log = feed_all_ways(make, simple_reply(nbd_error::ok, ck) + simple_reply(nbd_error::ok, ck));
  CHECK(kinds_string(log.events) == "reply,failed");
  CHECK(log.final_error == errc::reply_cookie_unknown);
}

TEST_CASE("client: cookies in flight are bounded and unique") {
  auto c = client_in_transmission(gib, basic);
  std::vector<std::uint64_t> cks;
  for (std::size_t i = 0; i < max_in_flight; ++i) {
    cks.push_back(cookie_of(c->read(i * 512, 512)));
    (void)take_output(*c);
  }
  CHECK(c->in_flight() == max_in_flight);
  CHECK(c->read(0, 512).error() == errc::too_many_in_flight);
  CHECK(c->flush().error() == errc::too_many_in_flight);
  std::vector<std::uint64_t> sorted = cks;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
  (void)feed(*c, simple_reply(nbd_error::eio, cks[5]));
  CHECK(c->in_flight() == max_in_flight - 1);
  const std::uint64_t again = cookie_of(c->read(0, 512));
  for (auto x : cks)
    if (x != cks[5]) CHECK(x != again);
}

TEST_CASE("client: refuses a command the server did not advertise") {
  auto c = client_in_transmission(gib, tf::has_flags);
  CHECK(c->flush().error() == errc::command_not_advertised);
  CHECK(c->trim(0, 512).error() == errc::command_not_advertised);
  CHECK(c->write_zeroes(0, 512).error() == errc::command_not_advertised);
  CHECK(c->cache(0, 512).error() == errc::command_not_advertised);
  CHECK(c->submit(command::block_status, 0, 0, 512).error() == errc::command_not_advertised);
  CHECK(c->submit(static_cast<command>(9), 0, 0, 512).error() == errc::command_not_advertised);
  CHECK(c->submit(command::disc, 0, 0, 0).error() == errc::disc_needs_disconnect);
  CHECK(c->pending_output().empty());
  CHECK(c->in_flight() == 0);
}

TEST_CASE("client: refuses a flag the server did not advertise or that does not apply") {
  auto c = client_in_transmission(gib, tf::has_flags | tf::send_write_zeroes);
  CHECK(c->write(0, 512, cf::fua).error() == errc::flag_not_advertised);
  CHECK(c->write_zeroes(0, 512, cf::fast_zero).error() == errc::flag_not_advertised);
  CHECK(c->read(0, 512, cf::df).error() == errc::flag_not_advertised);
  CHECK(c->read(0, 512, cf::no_hole).error() == errc::flag_not_applicable);
  CHECK(c->read(0, 512, 0x0400).error() == errc::flag_not_applicable);
  CHECK(c->write(0, 512, cf::payload_len).error() == errc::flag_not_applicable);
  CHECK(c->write_zeroes(0, 512, cf::no_hole).has_value());
  CHECK(c->in_flight() == 1);
}

TEST_CASE("client: refuses writes to a read-only export") {
  auto c = client_in_transmission(gib, tf::has_flags | tf::read_only | tf::send_trim | tf::send_write_zeroes);
  CHECK(c->write(0, 512).error() == errc::read_only_export);
  CHECK(c->trim(0, 512).error() == errc::read_only_export);
  CHECK(c->write_zeroes(0, 512).error() == errc::read_only_export);
  CHECK(c->read(0, 512).has_value());
}

TEST_CASE("client: refuses a range past the end including 64-bit overflow") {
  auto c = client_in_transmission(gib, basic | tf::send_trim);
  CHECK(c->read(gib - 512, 1024).error() == errc::request_out_of_range);
  CHECK(c->write(gib, 1).error() == errc::request_out_of_range);
  CHECK(c->trim(0xfffffffffffffe00ull, 1024).error() == errc::request_out_of_range);
  CHECK(c->read(0xffffffffffffffffull, 2).error() == errc::request_out_of_range);
  CHECK(c->read(gib - 512, 512).has_value());
}

TEST_CASE("client: refuses misaligned requests when GO advertised a block size") {
  const block_size_constraints bs{512, 4096, 1u << 20};
  auto c = client_in_transmission(gib, basic, &bs);
  CHECK(c->read(100, 512).error() == errc::request_misaligned);
  CHECK(c->write(0, 100).error() == errc::request_misaligned);
  CHECK(c->read(512, 1024).has_value());
}

TEST_CASE("client: refuses payloads above the maximum") {
  const block_size_constraints bs{1, 4096, 65536};
  auto c = client_in_transmission(gib, basic, &bs);
  CHECK(c->read(0, 65537).error() == errc::payload_too_large);
  CHECK(c->write(0, 65537).error() == errc::payload_too_large);
  CHECK(c->read(0, 65536).has_value());
  // Without BLOCK_SIZE the default maximum is 32 MiB.
  auto d = client_in_transmission(gib, basic);
  CHECK(d->read(0, (32u << 20) + 1).error() == errc::payload_too_large);
  CHECK(d->submit(command::read, 0, 0, 1ull << 32).error() != errc::ok);
}

TEST_CASE("client: refuses zero-length requests") {
  auto c = client_in_transmission(gib, basic | tf::send_trim);
  CHECK(c->read(0, 0).error() == errc::zero_length);
  CHECK(c->write(0, 0).error() == errc::zero_length);
  CHECK(c->trim(0, 0).error() == errc::zero_length);
}

TEST_CASE("client: FLUSH and DISC are sent with offset and length 0") {
  auto c = client_in_transmission(gib, basic);
  const std::uint64_t ck = cookie_of(c->flush());
  CHECK(to_hex(take_output(*c)) == to_hex(request_bytes(command::flush, 0, ck, 0, 0)));
  REQUIRE(c->disconnect().has_value());
  const bytes disc = take_output(*c);
  REQUIRE(disc.size() == 28);
  // G23 apart from the cookie.
  CHECK(to_hex(slice(disc, 0, 8)) == to_hex(slice(golden("G23"), 0, 8)));
  CHECK(to_hex(slice(disc, 16, 28)) == to_hex(slice(golden("G23"), 16, 28)));
  CHECK(c->state() == client_state::disconnecting);
  CHECK(c->read(0, 512).error() == errc::not_in_transmission);
  CHECK(c->disconnect().error() == errc::not_in_transmission);
}

TEST_CASE("client: DISC then the server closing is a soft disconnect") {
  auto c = client_in_transmission(gib, basic);
  const std::uint64_t ck = cookie_of(c->flush());
  REQUIRE(c->disconnect().has_value());
  (void)take_output(*c);
  // The reply to the request before DISC still arrives.
  CHECK(kinds_string(feed(*c, simple_reply(nbd_error::ok, ck))) == "reply");
  const auto e = c->on_eof();
  CHECK(e.kind == K::disconnected);
  CHECK(c->state() == client_state::closed);
  CHECK(c->error() == errc::ok);
}

TEST_CASE("client: server closing with requests in flight is an error") {
  auto c = client_in_transmission(gib, basic);
  (void)cookie_of(c->flush());
  CHECK(c->on_eof().error == errc::eof_with_requests_in_flight);
  auto d = client_in_transmission(gib, basic);
  CHECK(d->on_eof().kind == K::closed);  // nothing in flight: a clean close
}

TEST_CASE("client: EOF in the middle of a reply is unexpected_eof") {
  auto c = client_in_transmission(gib, basic);
  const std::uint64_t ck = cookie_of(c->read(0, 512));
  (void)feed(*c, simple_reply(nbd_error::ok, ck) + bytes(100));
  CHECK(c->on_eof().error == errc::unexpected_eof);
  auto d = client_in_transmission(gib, basic);
  (void)cookie_of(d->read(0, 512));
  (void)feed(*d, from_hex("674466"));
  CHECK(d->on_eof().error == errc::unexpected_eof);
}

TEST_CASE("client: error stays sticky after a transmission failure") {
  auto c = client_in_transmission(gib, basic);
  (void)cookie_of(c->read(0, 512));
  const auto ev = feed(*c, golden("G10"));
  REQUIRE(kinds_string(ev) == "failed");
  const auto r = c->receive(golden("G10"));
  CHECK(r.ev.kind == K::need_more);  // the failure was reported once; later input is dropped
  CHECK(r.consumed == golden("G10").size());
  CHECK(c->error() == errc::reply_cookie_unknown);
  CHECK(c->finished());
  CHECK(c->read(0, 512).error() == errc::not_in_transmission);
  CHECK(c->on_eof().error == errc::reply_cookie_unknown);
}

TEST_CASE("client: every reply decoder fed at every split") {
  std::vector<std::uint64_t> cks;
  auto make = ready_client(
      [&cks](client& c) {
        cks.clear();
        cks.push_back(cookie_of(c.read(0, 300)));
        cks.push_back(cookie_of(c.write(300, 10)));
        cks.push_back(cookie_of(c.trim(0, 512)));
        cks.push_back(cookie_of(c.read(1000, 7)));
        cks.push_back(cookie_of(c.write_zeroes(0, 64)));
      },
      basic | tf::send_trim | tf::send_write_zeroes);
  (void)make();
  const bytes in = simple_reply(nbd_error::ok, cks[1]) + simple_reply(nbd_error::ok, cks[0]) + pattern(0, 300) +
                   simple_reply(nbd_error::enospc, cks[4]) + simple_reply(nbd_error::eperm, cks[2]) +
                   simple_reply(nbd_error::ok, cks[3]) + pattern(1000, 7);
  const auto log = feed_all_ways(make, in, {}, {.eof_at_end = true});
  CHECK(kinds_string(log.events) == "reply,payload,reply,reply,reply,payload,reply,closed");
  CHECK(log.final_error == errc::ok);
}

// ---- the 1997 framing (1.1) -----------------------------------------------------------------

namespace {
auto legacy_client(std::vector<std::uint64_t>& cks, bool two = false) {
  return [&cks, two] {
    client_config cfg = simple_client();
    cfg.style = handshake_style::legacy_1997;
    cfg.legacy_export_size = gib;
    auto c = std::make_unique<client>(cfg);
    cks.clear();
    cks.push_back(cookie_of(c->read(1u << 20, 4096)));
    if (two) cks.push_back(cookie_of(c->write(0, 8)));
    (void)take_output(*c);
    return c;
  };
}
}  // namespace

TEST_CASE("client: legacy 1997 READ is G19 and G20 with data completes it") {
  client_config cfg = simple_client();
  cfg.style = handshake_style::legacy_1997;
  cfg.legacy_export_size = gib;
  client c(cfg);
  const std::uint64_t ck = cookie_of(c.read(1u << 20, 4096));
  bytes expected = golden("G19");
  store_be<std::uint64_t>(expected.data() + 12, ck);
  CHECK(to_hex(take_output(c)) == to_hex(expected));

  std::vector<std::uint64_t> cks;
  auto make = legacy_client(cks);
  (void)make();
  bytes reply = golden("G20");
  store_be<std::uint64_t>(reply.data() + 4, cks[0]);
  const auto log = feed_all_ways(make, reply + pattern(1u << 20, 4096), {}, {.random_runs = 8, .every_index_limit = 500});
  REQUIRE(kinds_string(log.events) == "payload,reply");
  CHECK(log.events[0].data == pattern(1u << 20, 4096));
  CHECK(log.events[1].status == nbd_error::ok);
}

TEST_CASE("client: legacy 1997 replies must come in request order") {
  std::vector<std::uint64_t> cks;
  auto make = legacy_client(cks, true);
  (void)make();
  const auto log = feed_all_ways(make, rec(make_legacy_1997_reply(cks[1], 0)));
  CHECK(kinds_string(log.events) == "failed");
  CHECK(log.final_error == errc::legacy_reply_out_of_order);
}

TEST_CASE("client: legacy 1997 nonzero error fails the request without data") {
  std::vector<std::uint64_t> cks;
  auto make = legacy_client(cks, true);
  (void)make();
  const auto log = feed_all_ways(make, rec(make_legacy_1997_reply(cks[0], 1)) + rec(make_legacy_1997_reply(cks[1], 0)));
  REQUIRE(kinds_string(log.events) == "reply,reply");
  CHECK(log.events[0].status != nbd_error::ok);
  CHECK(log.events[1].status == nbd_error::ok);
}

TEST_CASE("client: legacy 1997 knows only READ and WRITE within 32 bits") {
  client_config cfg = simple_client();
  cfg.style = handshake_style::legacy_1997;
  cfg.legacy_export_size = 1ull << 33;
  client c(cfg);
  CHECK(c.flush().error() != errc::ok);
  CHECK(c.read(0x100000000ull, 512).error() == errc::legacy_range_too_large);
  CHECK(c.read(0xfffffe00u, 1024).error() == errc::legacy_range_too_large);
  CHECK(c.write(0, 512, command_flag::fua).error() != errc::ok);
  REQUIRE(c.disconnect().has_value());
  CHECK(c.pending_output().empty());  // the 1997 framing has no disconnect message
}

TEST_CASE("client: ESHUTDOWN stops new requests and sends DISC after the last reply") {
  auto c = client_in_transmission(gib, basic);
  const auto a = cookie_of(c->read(0, 512));
  const auto b = cookie_of(c->flush());
  (void)take_output(*c);
  auto ev = feed(*c, simple_reply(nbd_error::eshutdown, a));
  REQUIRE(kinds_string(ev) == "reply");
  CHECK(ev[0].status == nbd_error::eshutdown);
  CHECK(c->server_shutting_down());
  CHECK(c->read(0, 512).error() == errc::server_is_shutting_down);
  CHECK(take_output(*c).empty());  // one request is still in flight
  ev = feed(*c, simple_reply(nbd_error::ok, b));
  REQUIRE(kinds_string(ev) == "reply");
  // "the client MUST initiate a soft disconnect": DISC went out by itself.
  const bytes out = take_output(*c);
  REQUIRE(out.size() == sizeof(request_header));
  const auto disc = decode<request_header>(out);
  CHECK(disc.type.get() == static_cast<std::uint16_t>(command::disc));
  CHECK(c->state() == client_state::disconnecting);
  CHECK(c->on_eof().kind == K::disconnected);
}
