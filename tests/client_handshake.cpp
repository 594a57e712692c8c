// SPDX-License-Identifier: MIT
// Client machine, handshake phase: captured server bytes and golden vectors in, events and
// client bytes out; one case per rule of checklist sections 1 and 3.2. Every input is fed
// whole, byte by byte, at every split index and at random splits.
#include <doctest/doctest.h>

#include "nbdwire/client.hpp"
#include "support/golden.hpp"
#include "support/machines.hpp"
#include "support/split.hpp"

using namespace nbdwire;
using namespace nbdwire_test;
using K = event_kind;

namespace {

auto client_factory(client_config cfg = simple_client()) {
  return [cfg] { return std::make_unique<client>(cfg); };
}

/// A handler that sends one scripted option per opportunity (greeting or final reply).
handler_fn<client> script(std::vector<std::function<void(client&)>> steps) {
  auto at = std::make_shared<std::size_t>(0);
  return [steps, at](client& c, const event& e) {
    if (e.kind == K::greeting) *at = 0;  // the first event of every run: start the script over
    if (e.kind == K::greeting || e.kind == K::option_done || e.kind == K::option_refused) {
      if (*at < steps.size()) steps[(*at)++](c);
    }
  };
}

std::function<void(client&)> do_go(std::string name, std::uint32_t req = info_request::all) {
  return [name, req](client& c) { REQUIRE(c.go(name, req).has_value()); };
}
std::function<void(client&)> do_info(std::string name, std::uint32_t req = info_request::all) {
  return [name, req](client& c) { REQUIRE(c.info(name, req).has_value()); };
}
std::function<void(client&)> do_list() {
  return [](client& c) { REQUIRE(c.list().has_value()); };
}
std::function<void(client&)> do_abort() {
  return [](client& c) { REQUIRE(c.abort().has_value()); };
}

const bytes fixed_greeting = greeting(handshake_flag::fixed_newstyle | handshake_flag::no_zeroes);

/// Runs `server_bytes` through a fresh client at every split and expects it to fail with `e`.
void expect_fatal(const bytes& server_bytes, errc e, handler_fn<client> h, client_config cfg = simple_client()) {
  const auto log = feed_all_ways(client_factory(cfg), server_bytes, h);
  REQUIRE(!log.events.empty());
  CHECK(log.events.back().kind == K::failed);
  CHECK(log.events.back().error == e);
  CHECK(log.final_error == e);
}

}  // namespace

// ---- captured sessions (checklist 4.1) ------------------------------------------------------

TEST_CASE("client: nbdkit capture INFO then GO (4.1 a)") {
  // Server bytes as nbdkit sent them to an INFO "" and then a GO "" with the same body.
  const bytes s = from_hex(
                      "4e42444d4147494349484156454f50540003"
                      "0003e889045565a9 00000006 00000003 0000000c 0000 0000000040000000 0ded"
                      "0003e889045565a9 00000006 00000003 00000002 0001"
                      "0003e889045565a9 00000006 00000001 00000000") +
                  from_hex(
                      "0003e889045565a9 00000007 00000003 0000000c 0000 0000000040000000 0ded"
                      "0003e889045565a9 00000007 00000003 00000002 0001"
                      "0003e889045565a9 00000007 00000001 00000000");
  const auto log = feed_all_ways(client_factory(), s, script({do_info(""), do_go("")}));
  REQUIRE(kinds_string(log.events) == "greeting,info,info,option_done,info,info,ready");
  CHECK(log.events[0].flags == 3);
  CHECK(log.events[1].info == info_type::export_info);
  CHECK(log.events[1].export_size == 0x40000000u);
  CHECK(log.events[1].transmission_flags == 0x0ded);
  CHECK(log.events[1].option == 6);
  CHECK(log.events[2].info == info_type::name);
  CHECK(log.events[2].data.empty());
  CHECK(log.events[3].option == 6);
  CHECK(log.events[6].option == 7);
  CHECK(log.final_error == errc::ok);
  // Client bytes: flags FIXED|NO_ZEROES, then INFO "" and GO "" asking for NAME, DESCRIPTION
  // and BLOCK_SIZE.
  const bytes body = info_body("", {1, 2, 3});
  CHECK(to_hex(log.output) ==
        to_hex(client_flags(3) + option_request(option::info, body) + option_request(option::go, body)));
}

TEST_CASE("client: GO ACK enters transmission with the negotiated export (4.1 a)") {
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, fixed_greeting);
  REQUIRE(c->go("").has_value());
  const auto ev = feed(*c, from_hex("0003e889045565a9 00000007 00000003 0000000c 0000 0000000040000000 0ded"
                                    "0003e889045565a9 00000007 00000001 00000000"));
  REQUIRE(kinds_string(ev) == "info,ready");
  CHECK(c->state() == client_state::transmission);
  CHECK(c->negotiated().export_size == 0x40000000u);
  CHECK(c->negotiated().style == handshake_style::fixed_newstyle);
  // SEND_DF without structured replies is a server MUST-violation: masked (checklist 3.2).
  CHECK(c->negotiated().transmission_flags == (0x0ded & ~transmission_flag::send_df));
  CHECK_FALSE(c->negotiated().block_size_advertised);
}

TEST_CASE("client: qemu capture GO with BLOCK_SIZE (4.1 b)") {
  const bytes s = fixed_greeting +
                  from_hex("0003e889045565a9 00000007 00000003 0000000c 0000 0000000040000000 0085"
                           "0003e889045565a9 00000007 00000003 0000000e 0003 00000001 00001000 02000000"
                           "0003e889045565a9 00000007 00000001 00000000");
  const auto log = feed_all_ways(client_factory(), s, script({do_go("", info_request::block_size)}));
  REQUIRE(kinds_string(log.events) == "greeting,info,info,ready");
  CHECK(log.events[2].info == info_type::block_size);
  CHECK(log.events[2].block_size == block_size_constraints{1, 4096, 32u << 20});
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::go, info_body("", {3}))));
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, fixed_greeting);
  REQUIRE(c->go("", info_request::block_size).has_value());
  (void)feed(*c, bytes(s.begin() + 18, s.end()));
  CHECK(c->negotiated().block_size_advertised);
  CHECK(c->negotiated().block_size == block_size_constraints{1, 4096, 32u << 20});
  CHECK(c->negotiated().transmission_flags == 0x0005);  // DF masked: no structured replies
}

TEST_CASE("client: nbd-server capture size comes from GO not INFO (4.1 c)") {
  const bytes s = fixed_greeting +
                  from_hex("0003e889045565a9 00000006 00000003 0000000c 0000 0000000000000000 016d"
                           "0003e889045565a9 00000006 00000001 00000000"
                           "0003e889045565a9 00000007 00000003 0000000c 0000 0000000040000000 016d"
                           "0003e889045565a9 00000007 00000001 00000000");
  auto c = std::make_unique<client>(simple_client());
  const auto log = feed_all_ways(client_factory(), s, script({do_info("disk"), do_go("disk")}));
  REQUIRE(kinds_string(log.events) == "greeting,info,option_done,info,ready");
  CHECK(log.events[1].export_size == 0);
  CHECK(log.events[3].export_size == 0x40000000u);
  (void)feed(*c, fixed_greeting);
  REQUIRE(c->info("disk").has_value());
  (void)feed(*c, bytes(s.begin() + 18, s.begin() + 18 + 32 + 20));
  REQUIRE(c->go("disk").has_value());
  (void)feed(*c, bytes(s.begin() + 18 + 32 + 20, s.end()));
  CHECK(c->negotiated().export_size == 0x40000000u);
  CHECK(c->negotiated().transmission_flags == 0x016d);
}

TEST_CASE("client: golden G2 G5 G6 G7 complete a GO") {
  const bytes s = concat({view(vectors::G02), view(vectors::G05), view(vectors::G06), view(vectors::G07)});
  const auto log = feed_all_ways(client_factory(), s, script({do_go("disk", info_request::block_size)}));
  REQUIRE(kinds_string(log.events) == "greeting,info,info,ready");
  CHECK(log.events[1].export_size == 0x40000000u);
  CHECK(log.events[1].transmission_flags == 0x0005);
  CHECK(log.events[2].block_size == block_size_constraints{1, 4096, 32u << 20});
  // The client's GO "disk" with one BLOCK_SIZE request is exactly G4.
  CHECK(to_hex(log.output) == to_hex(concat({view(vectors::G03), view(vectors::G04)})));
}

// ---- greeting and style detection (1.2, 1.3, 1.4, 3.2) --------------------------------------

TEST_CASE("client: oldstyle greeting G1 goes straight to transmission") {
  const auto log = feed_all_ways(client_factory(), golden("G01"), {});
  REQUIRE(kinds_string(log.events) == "ready");
  CHECK(log.output.empty());  // the client sends nothing in oldstyle
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, golden("G01"));
  CHECK(c->state() == client_state::transmission);
  CHECK(c->negotiated().style == handshake_style::oldstyle);
  CHECK(c->negotiated().export_size == 0x40000000u);
  CHECK(c->negotiated().transmission_flags == 0x0005);
  CHECK(c->go("x").error() == errc::not_negotiating);
}

TEST_CASE("client: oldstyle greeting does not consume the bytes after it") {
  auto c = std::make_unique<client>(simple_client());
  const bytes in = golden("G01") + simple_reply(nbd_error::ok, 1);
  const auto r = c->receive(in);
  CHECK(r.ev.kind == K::ready);
  CHECK(r.consumed == 152);
}

TEST_CASE("client: fixed newstyle greeting G2 answers with client flags G3") {
  const auto log = feed_all_ways(client_factory(), golden("G02"), {});
  REQUIRE(kinds_string(log.events) == "greeting");
  CHECK(log.events[0].flags == 3);
  CHECK(to_hex(log.output) == to_hex(golden("G03")));
}

TEST_CASE("client: C_NO_ZEROES only when the server offered NO_ZEROES") {
  CHECK(to_hex(feed_all_ways(client_factory(), greeting(handshake_flag::fixed_newstyle), {}).output) == "00000001");
  client_config no;
  no.no_zeroes = false;
  CHECK(to_hex(feed_all_ways(client_factory(no), golden("G02"), {}).output) == "00000001");
}

TEST_CASE("client: unknown handshake flag bits are ignored") {
  const auto log = feed_all_ways(client_factory(), greeting(0xfffc | 3), {});
  REQUIRE(kinds_string(log.events) == "greeting");
  // Only the bits the client knows are echoed.
  CHECK(to_hex(log.output) == "00000003");
}

TEST_CASE("client: non-fixed newstyle sends no C_FIXED_NEWSTYLE and only EXPORT_NAME") {
  auto c = std::make_unique<client>(simple_client());
  const auto ev = feed(*c, greeting(handshake_flag::no_zeroes));
  REQUIRE(kinds_string(ev) == "greeting");
  CHECK(to_hex(take_output(*c)) == "00000002");
  CHECK(c->negotiated().style == handshake_style::newstyle);
  CHECK(c->list().error() == errc::option_needs_fixed_newstyle);
  CHECK(c->info("disk").error() == errc::option_needs_fixed_newstyle);
  CHECK(c->can_send_option());
  // go() on a non-fixed server is EXPORT_NAME.
  REQUIRE(c->go("disk").has_value());
  CHECK(to_hex(take_output(*c)) == to_hex(option_request(option::export_name, str_bytes("disk"))));
  const auto ev2 = feed(*c, slice(golden("G08"), 0, 10));
  REQUIRE(kinds_string(ev2) == "ready");
  CHECK(c->negotiated().export_size == 0x40000000u);
}

TEST_CASE("client: bad greeting magic is fatal") {
  bytes g = golden("G02");
  g[0] = std::byte{0x4f};
  expect_fatal(g, errc::bad_greeting_magic, {});
}

TEST_CASE("client: greeting that is neither oldstyle nor IHAVEOPT is fatal") {
  bytes g = golden("G02");
  g[15] = std::byte{0x55};
  expect_fatal(g, errc::bad_greeting_style, {});
  expect_fatal(from_hex("4e42444d41474943 0000420281861254") + bytes(136), errc::bad_greeting_style, {});
}

TEST_CASE("client: EOF in the greeting is unexpected_eof") {
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, slice(golden("G02"), 0, 10));
  const auto e = c->on_eof();
  CHECK(e.kind == K::failed);
  CHECK(e.error == errc::unexpected_eof);
}

// ---- option replies (1.7, 1.10, 3.2) ---------------------------------------------------------

TEST_CASE("client: option reply with wrong magic is fatal") {
  bytes r = golden("G07");
  r[1] = std::byte{0x04};
  expect_fatal(golden("G02") + golden("G05") + r, errc::bad_option_reply_magic, script({do_go("disk")}));
}

TEST_CASE("client: option reply for another option is fatal") {
  expect_fatal(fixed_greeting + info_export(option::info, 4096, 1), errc::option_reply_wrong_option,
               script({do_go("disk")}));
  expect_fatal(fixed_greeting + ack(option::go), errc::option_reply_wrong_option, script({do_list()}));
}

TEST_CASE("client: reply type not allowed for the option is fatal") {
  // NBD_REP_SERVER answers LIST only; NBD_REP_INFO answers INFO and GO only; META_CONTEXT
  // answers the meta-context options, which this client never sends.
  expect_fatal(fixed_greeting + option_reply(option::go, reply_type::server, be<std::uint32_t>(0)),
               errc::option_reply_type_unexpected, script({do_go("")}));
  expect_fatal(fixed_greeting + info_export(option::list, 4096, 1), errc::option_reply_type_unexpected,
               script({do_list()}));
  expect_fatal(fixed_greeting + option_reply(option::go, reply_type::meta_context, from_hex("00000001 61")),
               errc::option_reply_type_unexpected, script({do_go("")}));
  expect_fatal(fixed_greeting + option_reply(option::go, static_cast<reply_type>(77)),
               errc::option_reply_type_unexpected, script({do_go("")}));
  // ABORT allows only ACK (or a close).
  expect_fatal(fixed_greeting + option_reply(option::abort, reply_type::server, be<std::uint32_t>(0)),
               errc::option_reply_type_unexpected, script({do_abort()}));
}

TEST_CASE("client: ACK with data is fatal") {
  expect_fatal(fixed_greeting + info_export(option::go, 4096, 1) + option_reply(option::go, reply_type::ack, bytes(1)),
               errc::ack_with_data, script({do_go("")}));
  expect_fatal(fixed_greeting + option_reply(option::list, reply_type::ack, bytes(4)), errc::ack_with_data,
               script({do_list()}));
}

TEST_CASE("client: NBD_REP_INFO shorter than its type is fatal") {
  expect_fatal(fixed_greeting + option_reply(option::go, reply_type::info, bytes(1)), errc::info_reply_too_short,
               script({do_go("")}));
  expect_fatal(fixed_greeting + option_reply(option::info, reply_type::info, {}), errc::info_reply_too_short,
               script({do_info("")}));
}

TEST_CASE("client: NBD_INFO_EXPORT with a length other than 12 is fatal") {
  expect_fatal(fixed_greeting + option_reply(option::go, reply_type::info, rec(make_info_export(1, 1)) + bytes(1)),
               errc::info_export_bad_length, script({do_go("")}));
  const bytes shortened = slice(golden("G05"), 20, 31);
  expect_fatal(fixed_greeting + option_reply(option::go, reply_type::info, shortened), errc::info_export_bad_length,
               script({do_go("")}));
}

TEST_CASE("client: NBD_INFO_BLOCK_SIZE with a length other than 14 is fatal") {
  const bytes p = slice(golden("G06"), 20, 34);
  expect_fatal(fixed_greeting + option_reply(option::go, reply_type::info, p + bytes(2)),
               errc::info_block_size_bad_length, script({do_go("")}));
  expect_fatal(fixed_greeting + option_reply(option::go, reply_type::info, bytes(p.begin(), p.end() - 4)),
               errc::info_block_size_bad_length, script({do_go("")}));
}

TEST_CASE("client: invalid block size constraints are fatal") {
  struct bad {
    std::uint32_t mn, pref, mx;
  };
  for (const bad b : {bad{3, 4096, 4096}, bad{0, 4096, 4096}, bad{131072, 131072, 131072}, bad{1, 256, 4096},
                      bad{1, 3000, 4096}, bad{8192, 4096, 65536}, bad{1, 4096, 2048}}) {
    INFO("block size " << b.mn << "/" << b.pref << "/" << b.mx);
    expect_fatal(fixed_greeting + info_block_size(option::go, b.mn, b.pref, b.mx), errc::info_block_size_invalid,
                 script({do_go("")}));
  }
}

TEST_CASE("client: NBD_REP_SERVER name length past the reply is fatal") {
  expect_fatal(fixed_greeting + option_reply(option::list, reply_type::server, be<std::uint32_t>(5) + str_bytes("disk")),
               errc::server_reply_bad_name_length, script({do_list()}));
  expect_fatal(fixed_greeting + option_reply(option::list, reply_type::server, bytes(3)),
               errc::server_reply_bad_name_length, script({do_list()}));
}

TEST_CASE("client: NBD_REP_META_CONTEXT to an option that cannot have it is fatal") {
  // META_CONTEXT shorter than its id, sent to LIST: refused on type before length.
  expect_fatal(fixed_greeting + option_reply(option::list, reply_type::meta_context, bytes(2)),
               errc::option_reply_type_unexpected, script({do_list()}));
}

TEST_CASE("client: unknown NBD_INFO type is ignored") {
  const bytes s = fixed_greeting + option_reply(option::go, reply_type::info, from_hex("0063 0102030405")) +
                  option_reply(option::go, reply_type::info, from_hex("1234")) + info_export(option::go, 8192, 1) +
                  ack(option::go);
  const auto log = feed_all_ways(client_factory(), s, script({do_go("")}));
  CHECK(kinds_string(log.events) == "greeting,info,ready");
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("client: info replies may come in any order and unrequested") {
  const bytes s = fixed_greeting + info_string(option::go, info_type::description, "a disk") +
                  info_block_size(option::go, 512, 4096, 1u << 20) + info_string(option::go, info_type::name, "disk") +
                  info_export(option::go, 1u << 20, 0x0001) + ack(option::go);
  const auto log = feed_all_ways(client_factory(), s, script({do_go("disk", 0)}));
  REQUIRE(kinds_string(log.events) == "greeting,info,info,info,info,ready");
  CHECK(log.events[1].info == info_type::description);
  CHECK(as_chars(log.events[1].data) == "a disk");
  CHECK(log.events[3].info == info_type::name);
  CHECK(as_chars(log.events[3].data) == "disk");
  // The GO body asked for nothing.
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::go, info_body("disk", {}))));
}

TEST_CASE("client: GO ACK without NBD_INFO_EXPORT is fatal") {
  expect_fatal(fixed_greeting + golden("G06") + golden("G07"), errc::ack_without_export_info, script({do_go("disk")}));
}

TEST_CASE("client: INFO ACK without NBD_INFO_EXPORT is fatal") {
  expect_fatal(fixed_greeting + ack(option::info), errc::ack_without_export_info, script({do_info("disk")}));
}

TEST_CASE("client: export name in a reply containing NUL is fatal") {
  expect_fatal(fixed_greeting + server_record(std::string_view("di\0sk", 5), ""), errc::reply_string_contains_nul,
               script({do_list()}));
  expect_fatal(fixed_greeting + info_string(option::go, info_type::name, std::string_view("a\0", 2)),
               errc::reply_string_contains_nul, script({do_go("")}));
}

TEST_CASE("client: reply string longer than 4096 bytes is fatal") {
  expect_fatal(fixed_greeting + option_reply(option::go, reply_type::err_unknown, bytes(4097, std::byte{'x'})),
               errc::reply_string_too_long, script({do_go("")}));
  // An INFO item that long is refused at its header, before its string is awaited.
  expect_fatal(fixed_greeting + info_string(option::go, info_type::description, std::string(4097, 'd')),
               errc::info_reply_too_long, script({do_go("")}));
  expect_fatal(fixed_greeting + server_record(std::string(4097, 'n'), ""), errc::reply_string_too_long,
               script({do_list()}));
}

TEST_CASE("client: transmission flags the server must not set are masked") {
  // No HAS_FLAGS: nothing counts. FAST_ZERO without WRITE_ZEROES: dropped. DF without SR: dropped.
  auto c = client_in_transmission(1u << 20, transmission_flag::send_flush);
  CHECK(c->negotiated().transmission_flags == 0);
  CHECK(c->flush().error() == errc::command_not_advertised);
  auto d = client_in_transmission(1u << 20, transmission_flag::has_flags | transmission_flag::send_fast_zero |
                                                transmission_flag::send_df | transmission_flag::send_fua);
  CHECK(d->negotiated().transmission_flags == (transmission_flag::has_flags | transmission_flag::send_fua));
  CHECK(d->read(0, 512, command_flag::df).error() == errc::flag_not_advertised);
}

TEST_CASE("client: error reply reports the option as refused with its message") {
  const bytes s = fixed_greeting + option_reply(option::go, reply_type::err_unknown, str_bytes("export 'nope' not present")) +
                  option_reply(option::list, reply_type::err_policy);
  const auto log = feed_all_ways(client_factory(), s, script({do_go("nope"), do_list()}));
  REQUIRE(kinds_string(log.events) == "greeting,option_refused,option_refused");
  CHECK(log.events[1].option == 7);
  CHECK(log.events[1].reply == reply_type::err_unknown);
  CHECK(as_chars(log.events[1].data) == "export 'nope' not present");
  CHECK(log.events[2].reply == reply_type::err_policy);
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("client: a reply after a final error is fatal") {
  // nbd-server 3.24 answers LIST with data by ERR_INVALID, then the list and an ACK (checklist 5).
  expect_fatal(fixed_greeting + option_reply(option::list, reply_type::err_invalid) + server_record("disk", "") +
                   ack(option::list),
               errc::unexpected_data, script({do_list()}));
}

TEST_CASE("client: unknown error reply type is a refusal") {
  const auto log = feed_all_ways(client_factory(), fixed_greeting + option_reply(option::go, static_cast<reply_type>(0x8000007f)),
                                 script({do_go("")}));
  REQUIRE(kinds_string(log.events) == "greeting,option_refused");
  CHECK(static_cast<std::uint32_t>(log.events[1].reply) == 0x8000007fu);
}

TEST_CASE("client: ERR_SHUTDOWN makes the client soft-disconnect with ABORT") {
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, fixed_greeting);
  (void)take_output(*c);
  REQUIRE(c->go("disk").has_value());
  (void)take_output(*c);
  auto ev = feed(*c, option_reply(option::go, reply_type::err_shutdown));
  REQUIRE(kinds_string(ev) == "option_refused");
  CHECK(ev[0].reply == reply_type::err_shutdown);
  // The spec makes the soft disconnect a MUST, so the machine queues ABORT by itself.
  CHECK(to_hex(take_output(*c)) == to_hex(option_request(option::abort)));
  CHECK_FALSE(c->can_send_option());
  CHECK(c->go("disk").error() == errc::not_negotiating);
  ev = feed(*c, ack(option::abort));
  REQUIRE(kinds_string(ev) == "disconnected");
  CHECK(c->state() == client_state::closed);
}

TEST_CASE("client: ABORT ends with ACK or with the server closing") {
  const auto log = feed_all_ways(client_factory(), fixed_greeting + ack(option::abort), script({do_abort()}));
  CHECK(kinds_string(log.events) == "greeting,disconnected");
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::abort)));
  // Servers may close without the ACK; clients SHOULD tolerate it.
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, fixed_greeting);
  REQUIRE(c->abort().has_value());
  const auto e = c->on_eof();
  CHECK(e.kind == K::disconnected);
  CHECK(c->error() == errc::ok);
}

TEST_CASE("client: LIST reports every export then option_done") {
  const bytes s = fixed_greeting + server_record("disk", "the disk") + server_record("", "") +
                  server_record("other", "") + ack(option::list);
  const auto log = feed_all_ways(client_factory(), s, script({do_list()}));
  REQUIRE(kinds_string(log.events) == "greeting,export_listed,export_listed,export_listed,option_done");
  CHECK(as_chars(log.events[1].data) == "disk");
  CHECK(as_chars(log.events[1].text) == "the disk");
  CHECK(log.events[2].data.empty());
  CHECK(as_chars(log.events[3].data) == "other");
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::list)));
}

TEST_CASE("client: one option at a time") {
  auto c = std::make_unique<client>(simple_client());
  CHECK(c->go("disk").error() == errc::not_negotiating);  // before the greeting
  CHECK_FALSE(c->can_send_option());
  (void)feed(*c, fixed_greeting);
  CHECK(c->can_send_option());
  REQUIRE(c->list().has_value());
  CHECK_FALSE(c->can_send_option());
  CHECK(c->go("disk").error() == errc::not_negotiating);
  CHECK(c->list().error() == errc::not_negotiating);
  CHECK(c->export_name("disk").error() == errc::not_negotiating);
  CHECK(c->go(std::string(max_string + 1, 'x')).error() == errc::not_negotiating);
  (void)feed(*c, ack(option::list));
  CHECK(c->can_send_option());
  CHECK(c->go(std::string(max_string + 1, 'x')).error() == errc::string_too_long);
  CHECK(c->export_name(std::string(max_string + 1, 'x')).error() == errc::string_too_long);
}

TEST_CASE("client: GO refused with ERR_UNSUP falls back to EXPORT_NAME") {
  const bytes s = fixed_greeting + option_reply(option::go, reply_type::err_unsup) +
                  slice(golden("G08"), 0, 10);
  const auto log = feed_all_ways(client_factory(), s, script({do_go("disk", info_request::block_size)}));
  REQUIRE(kinds_string(log.events) == "greeting,ready");
  CHECK(to_hex(log.output) == to_hex(client_flags(3) + option_request(option::go, info_body("disk", {3})) +
                                     option_request(option::export_name, str_bytes("disk"))));
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, fixed_greeting);
  REQUIRE(c->go("disk").has_value());
  (void)feed(*c, bytes(s.begin() + 18, s.end()));
  CHECK(c->state() == client_state::transmission);
  CHECK(c->negotiated().export_size == 0x40000000u);
  CHECK(c->negotiated().transmission_flags == 0x0005);
}

TEST_CASE("client: GO refused with ERR_UNSUP without fallback is a refusal") {
  client_config cfg = simple_client();
  cfg.fallback_to_export_name = false;
  const auto log = feed_all_ways(client_factory(cfg), fixed_greeting + option_reply(option::go, reply_type::err_unsup),
                                 script({do_go("disk")}));
  REQUIRE(kinds_string(log.events) == "greeting,option_refused");
  CHECK(log.events[1].reply == reply_type::err_unsup);
}

TEST_CASE("client: EXPORT_NAME reply is 10 bytes with NO_ZEROES both ways and 134 otherwise") {
  auto run = [](std::uint16_t hflags, bool client_nz, const bytes& reply) {
    client_config cfg = simple_client();
    cfg.no_zeroes = client_nz;
    const bytes s = greeting(hflags) + reply + simple_reply(nbd_error::ok, 1);
    auto h = [](client& c, const event& e) {
      if (e.kind == K::greeting) REQUIRE(c.export_name("disk").has_value());
    };
    return feed_all_ways(client_factory(cfg), bytes(s.begin(), s.end() - 16), h);
  };
  const bytes full = golden("G08");
  const bytes short_reply(full.begin(), full.begin() + 10);
  auto both = run(3, true, short_reply);
  CHECK(kinds_string(both.events) == "greeting,ready");
  CHECK(to_hex(both.output) == to_hex(client_flags(3) + option_request(option::export_name, str_bytes("disk"))));
  auto server_no = run(1, true, full);
  CHECK(kinds_string(server_no.events) == "greeting,ready");
  CHECK(to_hex(server_no.output).substr(0, 8) == "00000001");
  auto client_no = run(3, false, full);
  CHECK(kinds_string(client_no.events) == "greeting,ready");
  CHECK(to_hex(client_no.output).substr(0, 8) == "00000001");
  // The 134-byte reply is fully consumed before transmission starts.
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, greeting(1));
  REQUIRE(c->export_name("disk").has_value());
  const auto r = c->receive(full + bytes(5));
  CHECK(r.ev.kind == K::ready);
  CHECK(r.consumed == 134);
}

TEST_CASE("client: server closing after EXPORT_NAME is a refusal of the export") {
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, fixed_greeting);
  REQUIRE(c->export_name("nope").has_value());
  const auto e = c->on_eof();
  CHECK(e.kind == K::failed);
  CHECK(e.error == errc::export_name_refused);
  CHECK(c->state() == client_state::failed);
}

TEST_CASE("client: EOF inside an option reply is unexpected_eof") {
  auto c = std::make_unique<client>(simple_client());
  (void)feed(*c, fixed_greeting);
  REQUIRE(c->go("disk").has_value());
  (void)feed(*c, slice(golden("G05"), 0, 25));
  CHECK(c->on_eof().error == errc::unexpected_eof);
  auto d = std::make_unique<client>(simple_client());
  (void)feed(*d, fixed_greeting);
  REQUIRE(d->go("disk").has_value());
  CHECK(d->on_eof().error == errc::unexpected_eof);  // a GO with no answer at all
}

TEST_CASE("client: bytes while no option is outstanding are fatal") {
  expect_fatal(fixed_greeting + ack(option::list), errc::unexpected_data, {});
}

TEST_CASE("client: error stays sticky after failure") {
  auto c = std::make_unique<client>(simple_client());
  bytes g = golden("G02");
  g[0] = std::byte{0};
  auto r = c->receive(g);
  REQUIRE(r.ev.kind == K::failed);
  CHECK(c->state() == client_state::failed);
  // Reported once: later input is dropped and the error stays in error() and on_eof().
  for (int i = 0; i < 3; ++i) {
    r = c->receive(golden("G02"));
    CHECK(r.ev.kind == K::need_more);
    CHECK_FALSE(r.call_again());
    CHECK(r.consumed == golden("G02").size());
    CHECK(c->error() == errc::bad_greeting_magic);
  }
  CHECK(c->on_eof().error == errc::bad_greeting_magic);
  CHECK(c->go("disk").error() == errc::not_negotiating);
  CHECK(c->read(0, 512).error() == errc::not_in_transmission);
  CHECK(c->disconnect().error() == errc::not_in_transmission);
  CHECK(c->on_eof().error == errc::bad_greeting_magic);
  CHECK(c->error() == errc::bad_greeting_magic);
  CHECK(c->pending_output().empty());
}

TEST_CASE("client: legacy 1997 starts in transmission without any handshake") {
  client_config cfg = simple_client();
  cfg.style = handshake_style::legacy_1997;
  cfg.legacy_export_size = 1u << 30;
  cfg.legacy_read_only = true;
  client c(cfg);
  CHECK(c.state() == client_state::transmission);
  CHECK(c.pending_output().empty());
  CHECK(c.negotiated().style == handshake_style::legacy_1997);
  CHECK(c.negotiated().export_size == 1u << 30);
  CHECK(c.negotiated().read_only());
  CHECK(c.write(0, 512).error() == errc::read_only_export);
  CHECK(c.go("x").error() == errc::not_negotiating);
}

TEST_CASE("client 3.2: an NBD_REP_INFO longer than any item can be fails at its header") {
  // Only the 20-byte header arrives; the client does not wait for 4 GiB.
  expect_fatal(fixed_greeting + rec(make_option_reply_header(7, reply_type::info, 0xffffffffu)),
               errc::info_reply_too_long, script({do_go("")}));
  expect_fatal(fixed_greeting + rec(make_option_reply_header(7, reply_type::info, 2 + max_string + 1)),
               errc::info_reply_too_long, script({do_go("")}));
}
