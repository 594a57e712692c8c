// SPDX-License-Identifier: MIT
// The client machine built without its optional parts (config.hpp): structured replies (with
// extended headers, contexts and BLOCK_STATUS), STARTTLS and the 1997 framing, as firmware
// builds it (docs/firmware.md). Its own executable, nbdwire-tests-minimal, compiled with
// NBDWIRE_CLIENT_STRUCTURED_REPLIES=0, NBDWIRE_CLIENT_STARTTLS=0 and NBDWIRE_CLIENT_LEGACY_1997=0:
// every translation unit of a program must agree on them. Inputs are fed at every split.
#include <doctest/doctest.h>

#include <array>
#include <string_view>

#include "nbdwire/client.hpp"
#include "support/machines.hpp"
#include "support/split.hpp"

using namespace nbdwire;
using namespace nbdwire_test;
using K = event_kind;

static_assert(!client_has_structured_replies && !client_has_starttls && !client_has_legacy_1997,
              "this file tests the minimal build: see tests/CMakeLists.txt");

namespace {
namespace tf = transmission_flag;
constexpr std::uint16_t basic = tf::has_flags | tf::send_flush;
constexpr std::uint16_t fixed_nz = handshake_flag::fixed_newstyle | handshake_flag::no_zeroes;

/// A client in transmission by GO with the default configuration, its output drained.
std::unique_ptr<client> ready_default(std::uint64_t size = 1 << 20, std::uint16_t tflags = basic) {
  auto c = std::make_unique<client>();
  REQUIRE(feed(*c, greeting(fixed_nz)).at(0).kind == K::greeting);
  REQUIRE(c->go("disk").has_value());
  const auto ev = feed(*c, info_export(option::go, size, tflags) + ack(option::go));
  REQUIRE(!ev.empty());
  REQUIRE(ev.back().kind == K::ready);
  (void)take_output(*c);
  return c;
}

negotiated plain_negotiated() {
  negotiated n{};
  n.style = handshake_style::fixed_newstyle;
  n.export_size = 1 << 20;
  n.transmission_flags = basic;
  return n;
}
}  // namespace

TEST_CASE("minimal client: the default configuration asks for neither extended headers nor structured replies") {
  client_config cfg;
  CHECK_FALSE(cfg.request_extended_headers);
  CHECK_FALSE(cfg.request_structured_replies);

  // The greeting is answered with the client flags, and go() sends GO at once: no
  // EXTENDED_HEADERS, STRUCTURED_REPLY or SET_META_CONTEXT first, even when configured.
  static constexpr std::array<std::string_view, 1> contexts{"base:allocation"};
  cfg.request_extended_headers = cfg.request_structured_replies = true;
  cfg.meta_contexts = contexts;
  const auto make = [cfg] { return std::make_unique<client>(cfg); };
  const auto handler = [](client& c, const event& e) {
    if (e.kind == K::greeting) REQUIRE(c.go("disk", info_request::block_size).has_value());
  };
  const bytes server = greeting(fixed_nz) + info_export(option::go, 1 << 20, basic) + ack(option::go);
  const run_log log = feed_all_ways(make, server, handler);
  CHECK(log.output == client_flags(3) + option_request(option::go, info_body("disk", {3})));
  REQUIRE(log.events.size() == 3);
  CHECK(log.events[0].kind == K::greeting);
  CHECK(log.events[1].kind == K::info);
  CHECK(log.events[2].kind == K::ready);
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("minimal client: READ and WRITE with simple replies, at every split") {
  const bytes data = pattern(4096, 512);
  std::uint64_t read_cookie = 0, write_cookie = 0;
  const auto make = [&] {
    auto c = ready_default();
    read_cookie = c->read(4096, 512).value();
    write_cookie = c->write(0, 512).value();
    (void)take_output(*c);
    return c;
  };
  (void)make();  // the cookies every run will use
  const bytes server = simple_reply(nbd_error::ok, read_cookie) + data + simple_reply(nbd_error::enospc, write_cookie);
  const run_log log = feed_all_ways(make, server);
  REQUIRE(log.events.size() == 3);
  CHECK(log.events[0].kind == K::payload);
  CHECK(log.events[0].offset == 4096);
  CHECK(log.events[0].data == data);
  CHECK(log.events[1].kind == K::reply);
  CHECK(log.events[1].req.cookie == read_cookie);
  CHECK(log.events[1].status == nbd_error::ok);
  CHECK(log.events[2].kind == K::reply);
  CHECK(log.events[2].req.cookie == write_cookie);
  CHECK(log.events[2].status == nbd_error::enospc);
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("minimal client: a structured or extended reply is refused as not negotiated") {
  std::uint64_t cookie = 0;
  const auto make = [&] {
    auto c = ready_default();
    cookie = c->read(0, 512).value();
    (void)take_output(*c);
    return c;
  };
  (void)make();
  SUBCASE("structured reply chunk") {
    const run_log log = feed_all_ways(make, chunk(reply_flag::done, chunk_type::none, cookie));
    REQUIRE(!log.events.empty());
    CHECK(log.events.back().kind == K::failed);
    CHECK(log.final_error == errc::structured_reply_not_negotiated);
  }
  SUBCASE("extended reply header") {
    const run_log log = feed_all_ways(make, ext_chunk(reply_flag::done, chunk_type::none, cookie, 0));
    REQUIRE(!log.events.empty());
    CHECK(log.final_error == errc::structured_reply_not_negotiated);
  }
}

TEST_CASE("minimal client: a META_CONTEXT reply to GO is a reply type the option does not allow") {
  const auto make = [] { return std::make_unique<client>(); };
  const auto handler = [](client& c, const event& e) {
    if (e.kind == K::greeting) REQUIRE(c.go("disk").has_value());
  };
  const bytes server = greeting(fixed_nz) + option_reply(option::go, reply_type::meta_context,
                                                         be<std::uint32_t>(1) + str_bytes("base:allocation"));
  const run_log log = feed_all_ways(make, server, handler);
  CHECK(log.final_error == errc::option_reply_type_unexpected);
}

TEST_CASE("minimal client: calls and configurations that need a left-out part are refused") {
  SUBCASE("list_meta_context() is refused and changes nothing") {
    client c;
    REQUIRE(feed(c, greeting(fixed_nz)).at(0).kind == K::greeting);
    const auto r = c.list_meta_context("disk");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == errc::call_not_built);
    CHECK_FALSE(is_fatal(r.error()));  // a refused call: the machine goes on
    CHECK(c.state() == client_state::negotiating);
    CHECK(take_output(c) == client_flags(3));
    CHECK(c.list().has_value());  // the machine still takes options
  }
  SUBCASE("BLOCK_STATUS: no context can have been negotiated") {
    auto c = ready_default();
    const auto r = c->block_status(0, 512);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == errc::command_not_advertised);
    CHECK(c->in_flight() == 0);
  }
  SUBCASE("TLS, opportunistic or required, fails the machine at once: never plaintext instead") {
    for (const client_tls t : {client_tls::opportunistic, client_tls::require}) {
      client_config cfg;
      cfg.tls = t;
      client c(cfg);
      CHECK(c.error() == errc::feature_not_built);
      CHECK(c.finished());
      CHECK(c.pending_output().empty());
      const auto r = c.receive(greeting(fixed_nz));
      CHECK(r.ev.kind == K::failed);
      CHECK(r.ev.error == errc::feature_not_built);
    }
  }
  SUBCASE("the 1997 framing") {
    client_config cfg;
    cfg.style = handshake_style::legacy_1997;
    cfg.legacy_export_size = 1 << 20;
    client c(cfg);
    CHECK(c.error() == errc::feature_not_built);
    CHECK(c.finished());
    CHECK_FALSE(c.read(0, 512).has_value());
  }
}

TEST_CASE("minimal client: a hand-over needing a left-out part fails; a plain one carries on") {
  SUBCASE("structured replies, extended headers, contexts or the 1997 framing") {
    for (int which = 0; which < 4; ++which) {
      negotiated n = plain_negotiated();
      if (which == 0) n.structured_replies = true;
      if (which == 1) n.extended_headers = n.structured_replies = true;
      if (which == 2) n.meta_context_count = 1;
      if (which == 3) n.style = handshake_style::legacy_1997;
      client c(n);
      CAPTURE(which);
      CHECK(c.error() == errc::feature_not_built);
      CHECK(c.finished());
    }
  }
  SUBCASE("simple replies: requests and replies as usual") {
    client c(plain_negotiated());
    CHECK(c.state() == client_state::transmission);
    const std::uint64_t cookie = c.flush().value();
    CHECK(take_output(c) == request_bytes(command::flush, 0, cookie, 0, 0));
    const auto ev = feed(c, simple_reply(nbd_error::ok, cookie));
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].kind == K::reply);
    CHECK(ev[0].req.cookie == cookie);
  }
}

TEST_CASE("minimal client: oldstyle and non-fixed newstyle servers still work") {
  SUBCASE("oldstyle") {
    const bytes g = rec(make_oldstyle_greeting(1 << 20, basic));
    const run_log log = feed_all_ways([] { return std::make_unique<client>(); }, g);
    REQUIRE(log.events.size() == 1);
    CHECK(log.events[0].kind == K::ready);
    CHECK(log.output.empty());
  }
  SUBCASE("newstyle without FIXED: go() sends EXPORT_NAME") {
    const auto handler = [](client& c, const event& e) {
      if (e.kind == K::greeting) REQUIRE(c.go("disk").has_value());
    };
    const bytes server = greeting(0) + rec(make_export_name_reply(1 << 20, basic));
    const run_log log = feed_all_ways([] { return std::make_unique<client>(); }, server, handler);
    REQUIRE(!log.events.empty());
    CHECK(log.events.back().kind == K::ready);
    CHECK(log.output == client_flags(0) + option_request(option::export_name, str_bytes("disk")));
  }
}
