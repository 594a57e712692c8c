// SPDX-License-Identifier: MIT
// Server machine, handshake phase: crafted client bytes in, exact reply bytes out; one case
// per rule of checklist sections 1 and 3.1. Every input is fed at every split.
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

const std::array<export_config, 2> two_exports{
    export_config{"disk", "the disk", gib, transmission_flag::send_flush, {}},
    export_config{"small", "", 1u << 20, transmission_flag::read_only, {512, 4096, 1u << 20}}};

auto server_factory(server_config cfg = {}, std::span<const export_config> exports = two_exports) {
  cfg.exports = exports;
  return [cfg] { return std::make_unique<server>(cfg); };
}

/// The server's output after its greeting (whose length depends on the style).
bytes after_greeting(const run_log& log, std::size_t greeting = 18) {
  REQUIRE(log.output.size() >= greeting);
  return slice(log.output, greeting, log.output.size());
}

/// Parses a sequence of option replies: (option, type, data) triples.
struct parsed_reply {
  std::uint32_t option;
  reply_type type;
  bytes data;
};
std::vector<parsed_reply> parse_replies(const bytes& b) {
  std::vector<parsed_reply> out;
  std::size_t at = 0;
  while (at < b.size()) {
    REQUIRE(b.size() - at >= sizeof(option_reply_header));
    const auto h = decode<option_reply_header>(bytes_view(b).subspan(at));
    REQUIRE(h.magic.get() == magic::option_reply);
    at += sizeof(option_reply_header);
    REQUIRE(b.size() - at >= h.length.get());
    out.push_back({h.option.get(), static_cast<reply_type>(h.type.get()), slice(b, at, at + h.length.get())});
    at += h.length.get();
  }
  return out;
}

void expect_fatal(const bytes& client_bytes, errc e, server_config cfg = {}) {
  const auto log = feed_all_ways(server_factory(cfg), client_bytes);
  REQUIRE(!log.events.empty());
  CHECK(log.events.back().kind == K::failed);
  CHECK(log.events.back().error == e);
  CHECK(log.final_error == e);
}

const bytes flags3 = client_flags(3);

}  // namespace

// ---- greetings (1.2, 1.3, 1.4) -------------------------------------------------------------

TEST_CASE("server: fixed newstyle greeting is G2") {
  auto s = server_factory()();
  CHECK(to_hex(take_output(*s)) == to_hex(golden("G02")));
  CHECK(s->state() == server_state::awaiting_client_flags);
  server_config cfg;
  cfg.no_zeroes = false;
  CHECK(to_hex(take_output(*server_factory(cfg)())) == "4e42444d4147494349484156454f50540001");
}

TEST_CASE("server: non-fixed newstyle greeting has no FIXED_NEWSTYLE flag") {
  server_config cfg;
  cfg.style = handshake_style::newstyle;
  CHECK(to_hex(take_output(*server_factory(cfg)())) == "4e42444d4147494349484156454f50540002");
  cfg.no_zeroes = false;
  CHECK(to_hex(take_output(*server_factory(cfg)())) == "4e42444d4147494349484156454f50540000");
}

TEST_CASE("server: oldstyle greeting is G1 and transmission starts at once") {
  const std::array<export_config, 1> one{export_config{"", "", gib, transmission_flag::send_flush, {}}};
  server_config cfg;
  cfg.style = handshake_style::oldstyle;
  auto s = server_factory(cfg, one)();
  CHECK(to_hex(take_output(*s)) == to_hex(golden("G01")));
  CHECK(s->state() == server_state::transmission);
  CHECK(s->negotiated().style == handshake_style::oldstyle);
  CHECK(s->negotiated().export_size == gib);
}

TEST_CASE("server: legacy 1997 sends nothing and starts in transmission") {
  const std::array<export_config, 1> one{export_config{"", "", 1u << 20, 0, {}}};
  server_config cfg;
  cfg.style = handshake_style::legacy_1997;
  auto s = server_factory(cfg, one)();
  CHECK(s->pending_output().empty());
  CHECK(s->state() == server_state::transmission);
}

TEST_CASE("server: invalid configuration leaves the machine failed") {
  server_config cfg;
  CHECK(server(cfg).error() == errc::invalid_config);  // no exports
  cfg.exports = two_exports;
  cfg.style = handshake_style::oldstyle;  // oldstyle serves exactly one export
  CHECK(server(cfg).error() == errc::invalid_config);
  cfg.style = handshake_style::fixed_newstyle;
  cfg.default_export = 2;
  CHECK(server(cfg).error() == errc::invalid_config);
  const std::array<export_config, 1> bad_bs{export_config{"d", "", 4096, 0, {3, 4096, 4096}}};
  cfg.exports = bad_bs;
  cfg.default_export = 0;
  server s(cfg);
  CHECK(s.state() == server_state::failed);
  CHECK(s.error() == errc::invalid_config);
  CHECK(s.pending_output().empty());
}

// ---- client flags (3.1) -----------------------------------------------------------------------

TEST_CASE("server: unknown client flag bits drop the connection") {
  expect_fatal(client_flags(7), errc::bad_client_flags);
  expect_fatal(client_flags(0x80000001u), errc::bad_client_flags);
  const auto log = feed_all_ways(server_factory(), client_flags(7) + golden("G04"));
  CHECK(to_hex(log.output) == to_hex(golden("G02")));  // nothing after the greeting
}

TEST_CASE("server: C_NO_ZEROES without the server's NO_ZEROES drops the connection") {
  server_config cfg;
  cfg.no_zeroes = false;
  expect_fatal(client_flags(3), errc::client_no_zeroes_not_offered, cfg);
  expect_fatal(client_flags(2), errc::client_no_zeroes_not_offered, cfg);
}

TEST_CASE("server: EOF during the handshake") {
  auto s = server_factory()();
  (void)feed(*s, from_hex("0000"));
  CHECK(s->on_eof().error == errc::unexpected_eof);
  auto t = server_factory()();
  (void)feed(*t, flags3);
  CHECK(t->on_eof().kind == K::closed);  // between options: a clean close
  CHECK(t->error() == errc::ok);
}

// ---- options (1.4, 1.5, 3.1) ------------------------------------------------------------------

TEST_CASE("server: wrong option magic drops the connection") {
  bytes o = golden("G04");
  o[7] = std::byte{0x55};
  expect_fatal(flags3 + o, errc::bad_option_magic);
  expect_fatal(flags3 + golden("G09"), errc::bad_option_magic);
}

TEST_CASE("server: unknown option gets ERR_UNSUP after consuming its data") {
  const bytes in = flags3 + option_request(99, from_hex("00000004 6469736b 0001 0003")) + golden("G04");
  const auto log = feed_all_ways(server_factory(), in);
  REQUIRE(kinds_string(log.events) == "option_answered,ready");
  CHECK(log.events[0].option == 99);
  CHECK(log.events[0].reply == reply_type::err_unsup);
  const auto r = parse_replies(after_greeting(log));
  REQUIRE(r.size() == 4);
  CHECK(r[0].option == 99);
  CHECK(r[0].type == reply_type::err_unsup);
  // The GO that follows is parsed in sync: INFO(EXPORT) G5, INFO(BLOCK_SIZE) G6, ACK G7.
  CHECK(to_hex(rec(make_option_reply_header(7, reply_type::info, 12)) + r[1].data) == to_hex(golden("G05")));
  CHECK(to_hex(rec(make_option_reply_header(7, reply_type::info, 14)) + r[2].data) == to_hex(golden("G06")));
  CHECK(r[3].type == reply_type::ack);
}

TEST_CASE("server: options it does not implement get ERR_UNSUP and stay in sync") {
  // PEEK_EXPORT (withdrawn), STARTTLS (NOTLS: ERR_POLICY) and an unknown option with data;
  // then a LIST that must still parse.
  const bytes in = flags3 + option_request(option::peek_export) + option_request(option::starttls) +
                   option_request(99, bytes(37)) + option_request(option::list);
  const auto log = feed_all_ways(server_factory(), in);
  const auto r = parse_replies(after_greeting(log));
  REQUIRE(r.size() == 6);
  const std::uint32_t opts[] = {4, 5, 99};
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("option " << opts[i]);
    CHECK(r[i].option == opts[i]);
    // never ERR_TLS_REQD from a NOTLS server
    CHECK(r[i].type == (opts[i] == 5 ? reply_type::err_policy : reply_type::err_unsup));
  }
  CHECK(r[3].type == reply_type::server);
  CHECK(r[5].type == reply_type::ack);
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("server: LIST sends one NBD_REP_SERVER per export then ACK") {
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::list));
  CHECK(to_hex(after_greeting(log)) ==
        to_hex(server_record("disk", "the disk") + server_record("small", "") + ack(option::list)));
  REQUIRE(kinds_string(log.events) == "option_answered");
  CHECK(log.events[0].reply == reply_type::ack);
}

TEST_CASE("server: LIST with data gets ERR_INVALID and the data is consumed") {
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::list, bytes(5)) + golden("G04"));
  const auto r = parse_replies(after_greeting(log));
  REQUIRE(r.size() == 4);
  CHECK(r[0].option == 3);
  CHECK(r[0].type == reply_type::err_invalid);
  CHECK(r[3].type == reply_type::ack);
  CHECK(r[3].option == 7);
}

TEST_CASE("server: ABORT with data is acknowledged and the data ignored") {
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::abort, bytes(7)) + golden("G04"));
  REQUIRE(kinds_string(log.events) == "disconnected");
  CHECK(to_hex(after_greeting(log)) == to_hex(ack(option::abort)));
  auto s = server_factory()();
  (void)feed(*s, flags3 + option_request(option::abort));
  CHECK(s->state() == server_state::closed);
  CHECK(s->error() == errc::ok);
}

TEST_CASE("server: GO answers G5 G6 G7 and enters transmission with no padding") {
  const std::array<export_config, 1> one{export_config{"disk", "", gib, transmission_flag::send_flush, {}}};
  const auto log = feed_all_ways(server_factory({}, one), golden("G03") + golden("G04"));
  REQUIRE(kinds_string(log.events) == "ready");
  CHECK(to_hex(after_greeting(log)) == to_hex(golden("G05") + golden("G06") + golden("G07")));
  auto s = server_factory({}, one)();
  (void)feed(*s, golden("G03") + golden("G04"));
  CHECK(s->state() == server_state::transmission);
  CHECK(s->negotiated().export_size == gib);
  CHECK(s->negotiated().transmission_flags == 0x0005);
  CHECK(s->negotiated().block_size_advertised);
  CHECK(s->negotiated().export_index == 0);
}

TEST_CASE("server: GO does not read past the ACK") {
  auto s = server_factory()();
  (void)take_output(*s);
  const bytes in = flags3 + golden("G04") + golden("G09");
  const auto r = s->receive(in);
  // Either the ready event or the request after it: never a byte of G9 before ready.
  CHECK(r.ev.kind == K::ready);
  CHECK(r.consumed == 4 + 28);
}

TEST_CASE("server: INFO then GO return the same information") {
  const bytes body = info_body("disk", {1, 2, 3});
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::info, body) +
                                                       option_request(option::go, body));
  REQUIRE(kinds_string(log.events) == "option_answered,ready");
  const auto r = parse_replies(after_greeting(log));
  std::vector<bytes> info, go;
  for (const auto& x : r) {
    if (x.type != reply_type::info) continue;
    (x.option == 6 ? info : go).push_back(x.data);
  }
  CHECK(info == go);
  REQUIRE(info.size() == 4);  // EXPORT, NAME, DESCRIPTION, BLOCK_SIZE
  CHECK(to_hex(info[0]) == to_hex(rec(make_info_export(gib, 0x0005))));
  CHECK(to_hex(info[1]) == to_hex(be<std::uint16_t>(1) + str_bytes("disk")));
  CHECK(to_hex(info[2]) == to_hex(be<std::uint16_t>(2) + str_bytes("the disk")));
  CHECK(to_hex(info[3]) == to_hex(rec(make_info_block_size(1, 4096, 32u << 20))));
  CHECK(r.back().type == reply_type::ack);
  CHECK(r.back().option == 7);
}

TEST_CASE("server: unknown info requests are ignored") {
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::info, info_body("disk", {77, 0xffff})));
  const auto r = parse_replies(after_greeting(log));
  REQUIRE(!r.empty());
  CHECK(r.back().type == reply_type::ack);
  for (const auto& x : r)
    if (x.type == reply_type::info) CHECK(load_be<std::uint16_t>(x.data.data()) <= 3);
}

TEST_CASE("server: INFO or GO with a name length past the option gets ERR_INVALID") {
  for (auto o : {option::info, option::go}) {
    // Name length 9 in a 12-byte body: it runs past length - 6.
    const bytes bad = be<std::uint32_t>(9) + str_bytes("disk") + from_hex("0001 0003");
    const auto log = feed_all_ways(server_factory(), flags3 + option_request(o, bad) + option_request(option::list));
    const auto r = parse_replies(after_greeting(log));
    REQUIRE(r.size() == 4);
    CHECK(r[0].type == reply_type::err_invalid);
    CHECK(r[0].option == static_cast<std::uint32_t>(o));
    CHECK(r[3].type == reply_type::ack);  // the LIST after it is in sync
    CHECK(r[3].option == 3);
  }
}

TEST_CASE("server: INFO or GO with an info list running past the option gets ERR_INVALID") {
  for (auto o : {option::info, option::go}) {
    const bytes bad = be<std::uint32_t>(4) + str_bytes("disk") + from_hex("0003 0003");  // 3 requests, 1 present
    const auto log = feed_all_ways(server_factory(), flags3 + option_request(o, bad) + option_request(option::list));
    const auto r = parse_replies(after_greeting(log));
    REQUIRE(r.size() == 4);
    CHECK(r[0].type == reply_type::err_invalid);
    CHECK(r[3].option == 3);
    // A body too short for the name length and count.
    const auto log2 = feed_all_ways(server_factory(), flags3 + option_request(o, bytes(3)) + option_request(option::list));
    const auto r2 = parse_replies(after_greeting(log2));
    REQUIRE(r2.size() == 4);
    CHECK(r2[0].type == reply_type::err_invalid);
  }
}

TEST_CASE("server: INFO or GO with a name over 4096 bytes gets ERR_INVALID") {
  const std::string name(4097, 'n');
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::go, info_body(name, {})) +
                                                       option_request(option::list),
                                 {}, {.random_runs = 4, .every_index_limit = 64});
  const auto r = parse_replies(after_greeting(log));
  REQUIRE(r.size() == 4);
  CHECK(r[0].type == reply_type::err_invalid);
  CHECK(r[3].type == reply_type::ack);
}

TEST_CASE("server: INFO or GO for an unknown export gets ERR_UNKNOWN") {
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::info, info_body("nope", {})) +
                                                       option_request(option::go, info_body("nope", {3})));
  const auto r = parse_replies(after_greeting(log));
  REQUIRE(r.size() == 2);
  CHECK(r[0].type == reply_type::err_unknown);
  CHECK(r[1].type == reply_type::err_unknown);
  CHECK(r[1].option == 7);
}

TEST_CASE("server: the empty name selects the default export") {
  server_config cfg;
  cfg.default_export = 1;
  auto s = server_factory(cfg)();
  (void)feed(*s, flags3 + option_request(option::go, info_body("", {3})));
  CHECK(s->state() == server_state::transmission);
  CHECK(s->negotiated().export_index == 1);
  CHECK(s->negotiated().export_size == 1u << 20);
  cfg.default_export = server_config::no_export;
  const auto log = feed_all_ways(server_factory(cfg), flags3 + option_request(option::go, info_body("", {3})));
  const auto r = parse_replies(after_greeting(log));
  REQUIRE(r.size() == 1);
  CHECK(r[0].type == reply_type::err_unknown);
}

TEST_CASE("server: ERR_BLOCK_SIZE_REQD when GO omits BLOCK_SIZE on an aligned export") {
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::go, info_body("small", {})));
  const auto r = parse_replies(after_greeting(log));
  REQUIRE(r.size() >= 2);
  CHECK(r.back().type == reply_type::err_block_size_reqd);
  // It SHOULD be preceded by NBD_INFO_BLOCK_SIZE.
  bool saw_bs = false;
  for (const auto& x : r)
    if (x.type == reply_type::info && load_be<std::uint16_t>(x.data.data()) == 3) saw_bs = true;
  CHECK(saw_bs);
  // Asking for it is enough.
  auto s = server_factory()();
  (void)feed(*s, flags3 + option_request(option::go, info_body("small", {3})));
  CHECK(s->state() == server_state::transmission);
  CHECK(s->negotiated().block_size == block_size_constraints{512, 4096, 1u << 20});
  CHECK(s->negotiated().read_only());
}

TEST_CASE("server: EXPORT_NAME reply is 10 bytes with NO_ZEROES both ways and 134 otherwise") {
  const std::array<export_config, 1> one{export_config{"disk", "", gib, transmission_flag::send_flush, {}}};
  const bytes en = option_request(option::export_name, str_bytes("disk"));
  const auto both = feed_all_ways(server_factory({}, one), client_flags(3) + en);
  REQUIRE(kinds_string(both.events) == "ready");
  CHECK(to_hex(after_greeting(both)) == to_hex(slice(golden("G08"), 0, 10)));
  const auto client_no = feed_all_ways(server_factory({}, one), client_flags(1) + en);
  CHECK(to_hex(after_greeting(client_no)) == to_hex(golden("G08")));
  server_config no;
  no.no_zeroes = false;
  const auto server_no = feed_all_ways(server_factory(no, one), client_flags(1) + en);
  CHECK(to_hex(after_greeting(server_no)) == to_hex(golden("G08")));
  // A non-fixed client (flags 0) too.
  const auto plain = feed_all_ways(server_factory({}, one), client_flags(0) + en);
  CHECK(to_hex(after_greeting(plain)) == to_hex(golden("G08")));
}

TEST_CASE("server: EXPORT_NAME for an unknown export drops the connection") {
  expect_fatal(flags3 + option_request(option::export_name, str_bytes("nope")), errc::export_name_unknown);
  const auto log = feed_all_ways(server_factory(), flags3 + option_request(option::export_name, str_bytes("nope")));
  CHECK(to_hex(log.output) == to_hex(golden("G02")));  // no reply: the only refusal is closing
}

TEST_CASE("server: EXPORT_NAME longer than 4096 bytes drops the connection") {
  expect_fatal(flags3 + option_request(option::export_name, bytes(4097, std::byte{'x'})), errc::export_name_too_long);
}

TEST_CASE("server: non-fixed newstyle drops the connection on any option but EXPORT_NAME") {
  server_config cfg;
  cfg.style = handshake_style::newstyle;
  expect_fatal(client_flags(0) + option_request(option::list), errc::option_requires_fixed_newstyle, cfg);
  expect_fatal(client_flags(0) + golden("G04"), errc::option_requires_fixed_newstyle, cfg);
  const auto ok = feed_all_ways(server_factory(cfg), client_flags(0) + option_request(option::export_name, str_bytes("disk")));
  CHECK(kinds_string(ok.events) == "ready");
}

TEST_CASE("server: option data above the limit drops the connection") {
  server_config cfg;
  cfg.max_option_length = 64;
  expect_fatal(flags3 + option_request(99, bytes(65)), errc::option_length_exceeds_limit, cfg);
  // The header alone decides: no data needs to arrive.
  expect_fatal(flags3 + rec(make_option_header(static_cast<option>(99), 0xffffffffu)), errc::option_length_exceeds_limit);
}

TEST_CASE("server: too many options drop the connection") {
  server_config cfg;
  cfg.max_options = 3;
  const bytes list = option_request(option::list);
  const auto log = feed_all_ways(server_factory(cfg), flags3 + list + list + list + list);
  REQUIRE(kinds_string(log.events) == "option_answered,option_answered,option_answered,failed");
  CHECK(log.final_error == errc::too_many_options);
}

TEST_CASE("server: every option decoder fed at every split") {
  const bytes in = flags3 + option_request(option::list) + option_request(99, bytes(3)) +
                   option_request(option::info, info_body("small", {1, 2, 3, 9})) +
                   option_request(option::info, info_body("nope", {})) + golden("G21") +
                   option_request(option::go, info_body("disk", {2}));
  const auto log = feed_all_ways(server_factory(), in);
  CHECK(kinds_string(log.events) == "option_answered,option_answered,option_answered,option_answered,option_answered,ready");
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("server: error stays sticky after failure") {
  auto s = server_factory()();
  (void)take_output(*s);
  auto r = s->receive(client_flags(0x100));
  REQUIRE(r.ev.kind == K::failed);
  // Reported once: later input is dropped and the error stays in error() and on_eof().
  for (int i = 0; i < 3; ++i) {
    r = s->receive(flags3 + golden("G04"));
    CHECK(r.ev.kind == K::need_more);
    CHECK(r.consumed == (flags3 + golden("G04")).size());
    CHECK(s->error() == errc::bad_client_flags);
  }
  CHECK(s->on_eof().error == errc::bad_client_flags);
  CHECK(s->state() == server_state::failed);
  CHECK(s->reply(nbdwire::request{}, nbd_error::ok).error() == errc::not_in_transmission);
  CHECK(s->pending_output().empty());
}
