// SPDX-License-Identifier: MIT
// STARTTLS in both machines ("TLS support"; ../docs/tls.md): the policies of each side, the
// exact stop after STARTTLS and its ACK, the reset of what plaintext negotiated, and every
// downgrade a client in require mode must refuse. The TLS layer is modelled as identity: the
// handler calls tls_started() on `start_tls` and the same byte stream goes on. Every input is
// fed at every split.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>

#include "nbdwire/client.hpp"
#include "nbdwire/server.hpp"
#include "support/machines.hpp"
#include "support/split.hpp"

using namespace nbdwire;
using namespace nbdwire_test;
using K = event_kind;

namespace {

const std::array<export_config, 2> exports{
    export_config{"open", "", 1u << 20, 0, {}, false},
    export_config{"secret", "", 2u << 20, 0, {}, true}};

const bytes flags3 = client_flags(client_flag::fixed_newstyle | client_flag::no_zeroes);

auto tls_server(server_tls mode, std::span<const export_config> ex = exports) {
  server_config cfg;
  cfg.exports = ex;
  cfg.tls = mode;
  return [cfg] { return std::make_unique<server>(cfg); };
}

/// The TLS layer as identity: the handshake "succeeds" at once.
template <class Machine>
void identity_tls(Machine& m, const event& e) {
  if (e.kind == K::start_tls) REQUIRE(m.tls_started().has_value());
}

struct parsed_reply {
  std::uint32_t option;
  reply_type type;
  bytes data;
};
/// Option replies in `b` after the 18-byte greeting.
std::vector<parsed_reply> replies(const bytes& out) {
  std::vector<parsed_reply> r;
  std::size_t at = 18;
  while (at < out.size()) {
    REQUIRE(out.size() - at >= sizeof(option_reply_header));
    const auto h = decode<option_reply_header>(bytes_view(out).subspan(at));
    REQUIRE(h.magic.get() == magic::option_reply);
    at += sizeof(option_reply_header);
    REQUIRE(out.size() - at >= h.length.get());
    r.push_back({h.option.get(), static_cast<reply_type>(h.type.get()), slice(out, at, at + h.length.get())});
    at += h.length.get();
  }
  return r;
}

std::vector<K> kinds(const run_log& log) {
  std::vector<K> k;
  for (const auto& e : log.events) k.push_back(e.kind);
  return k;
}

bytes go_body(std::string_view name) { return info_body(name, {}); }

bytes as_vec(std::string_view s) {
  const bytes_view b = as_bytes(s);
  return bytes(b.begin(), b.end());
}

/// Feeds `in` in one piece, calling `on` for every event, for as long as call_again() says
/// (the way docs/embedding.md loops); returns the bytes left unconsumed.
template <class M, class H>
std::size_t pump(M& m, const bytes& in, H&& on) {
  bytes_view rest(in);
  for (int guard = 0; guard < 10000; ++guard) {
    const auto r = m.receive(rest);
    rest = rest.subspan(r.consumed);
    if (r.ev.kind != K::need_more) on(r.ev);
    if (!r.call_again()) break;
  }
  return rest.size();
}

}  // namespace

// ---- server --------------------------------------------------------------------------------

TEST_CASE("tls server: receive() stops exactly after STARTTLS; the bytes after it are never read as NBD") {
  // A plaintext option injected in the same segment as STARTTLS (the attack of nbdkit
  // CVE-2021-3716's family): the machine stops after the 16-byte STARTTLS header.
  const bytes injected = option_request(option::structured_reply);
  const bytes in = flags3 + option_request(option::starttls) + injected;
  server s(server_config{.exports = exports, .tls = server_tls::required});
  (void)take_output(s);
  receive_result r = s.receive(in);
  CHECK(r.ev.kind == K::start_tls);
  CHECK(r.ev.option == static_cast<std::uint32_t>(option::starttls));
  CHECK(r.consumed == in.size() - injected.size());
  // Pending output is exactly the ACK, to be sent in plaintext.
  CHECK(to_hex(take_output(s)) == to_hex(ack(option::starttls)));
  // Reading on before tls_started() is a misuse that fails the connection: those bytes are TLS.
  r = s.receive(bytes_view(in).subspan(r.consumed));
  CHECK(r.ev.kind == K::failed);
  CHECK(r.ev.error == errc::receive_while_tls_starting);
  CHECK(r.consumed == 0);
  CHECK(take_output(s).empty());  // the injected option is never answered
}

TEST_CASE("tls server: FORCEDTLS refuses every option but STARTTLS and ABORT, data consumed, in sync") {
  const bytes meta = be<std::uint32_t>(4) + as_vec("open") + be<std::uint32_t>(0);
  const bytes in = flags3 + option_request(option::go, go_body("open")) +
                   option_request(option::info, go_body("secret")) + option_request(option::list) +
                   option_request(option::structured_reply) + option_request(option::extended_headers) +
                   option_request(option::set_meta_context, meta) + option_request(99, bytes(7)) +
                   option_request(option::abort);
  const auto log = feed_all_ways(tls_server(server_tls::required), in);
  const auto r = replies(log.output);
  REQUIRE(r.size() == 8);
  for (std::size_t i = 0; i < 7; ++i) {
    CAPTURE(i);
    CHECK(r[i].type == reply_type::err_tls_reqd);
  }
  CHECK(r[7].type == reply_type::ack);  // ABORT
  CHECK(log.events.back().kind == K::disconnected);
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("tls server: FORCEDTLS ends the connection on EXPORT_NAME, and on a client that is not fixed newstyle") {
  const auto name = feed_all_ways(tls_server(server_tls::required),
                                  flags3 + option_request(option::export_name, bytes{std::byte{'o'}}));
  CHECK(name.final_error == errc::tls_required_export_name);
  CHECK(replies(name.output).empty());
  const auto unfixed = feed_all_ways(tls_server(server_tls::required), client_flags(client_flag::no_zeroes));
  CHECK(unfixed.final_error == errc::tls_required_client_not_fixed);
}

TEST_CASE("tls server: STARTTLS with data or twice gets ERR_INVALID and the connection goes on") {
  const bytes in = flags3 + option_request(option::starttls, bytes(5)) + option_request(option::starttls) +
                   option_request(option::starttls) + option_request(option::go, go_body("open"));
  const auto log = feed_all_ways(tls_server(server_tls::required), in, identity_tls<server>);
  const auto r = replies(log.output);
  REQUIRE(r.size() >= 4);
  CHECK(r[0].type == reply_type::err_invalid);  // with data
  CHECK(r[1].type == reply_type::ack);          // the real one
  CHECK(r[2].type == reply_type::err_invalid);  // twice
  CHECK(r.back().type == reply_type::ack);      // GO over TLS
  CHECK(log.events.back().kind == K::ready);
  const auto k = kinds(log);
  CHECK(std::count(k.begin(), k.end(), K::start_tls) == 1);
}

TEST_CASE("tls server: nothing negotiated in plaintext survives STARTTLS (nbdkit CVE-2021-3716)") {
  // Structured replies and extended headers asked in plaintext, then STARTTLS, then GO.
  const bytes in = flags3 + option_request(option::structured_reply) + option_request(option::extended_headers) +
                   option_request(option::starttls) + option_request(option::go, go_body("open"));
  server s(server_config{.exports = exports, .tls = server_tls::optional});
  const auto log = feed_all_ways(tls_server(server_tls::optional), in, identity_tls<server>);
  CHECK(log.events.back().kind == K::ready);
  // Run once more by hand to look at what was negotiated.
  (void)take_output(s);
  bytes_view rest(in);
  receive_result r;
  do {
    r = s.receive(rest);
    rest = rest.subspan(r.consumed);
    if (r.ev.kind == K::start_tls) REQUIRE(s.tls_started().has_value());
  } while (r.call_again() && r.ev.kind != K::ready);
  REQUIRE(r.ev.kind == K::ready);
  CHECK(s.tls_active());
  CHECK(s.negotiated().tls);
  CHECK_FALSE(s.negotiated().structured_replies);
  CHECK_FALSE(s.negotiated().extended_headers);
  CHECK_FALSE(s.negotiated().has(transmission_flag::send_df));
}

TEST_CASE("tls server: SELECTIVETLS guards tls_only exports until TLS is up") {
  // Before TLS: LIST hides "secret", INFO and GO on it get ERR_TLS_REQD, "open" works.
  const bytes before = flags3 + option_request(option::list) + option_request(option::info, go_body("secret")) +
                       option_request(option::info, go_body("open")) + option_request(option::go, go_body("secret"));
  const auto log = feed_all_ways(tls_server(server_tls::optional), before);
  const auto r = replies(log.output);
  REQUIRE(r.size() >= 6);
  CHECK(r[0].type == reply_type::server);
  CHECK(r[0].data == be<std::uint32_t>(4) + as_vec("open"));
  CHECK(r[1].type == reply_type::ack);  // LIST: one export only
  CHECK(r[2].type == reply_type::err_tls_reqd);
  CHECK(r[3].type == reply_type::info);  // INFO "open": its items, then ACK
  CHECK(r[r.size() - 2].type == reply_type::ack);
  CHECK(r.back().type == reply_type::err_tls_reqd);
  // EXPORT_NAME cannot be refused with an error: the connection ends.
  const auto name =
      feed_all_ways(tls_server(server_tls::optional),
                    flags3 + option_request(option::export_name, as_vec("secret")));
  CHECK(name.final_error == errc::tls_only_export_name);
  // After TLS: LIST shows both, GO on "secret" succeeds.
  const bytes after = flags3 + option_request(option::starttls) + option_request(option::list) +
                      option_request(option::go, go_body("secret"));
  const auto tls = feed_all_ways(tls_server(server_tls::optional), after, identity_tls<server>);
  const auto t = replies(tls.output);
  REQUIRE(t.size() >= 5);
  CHECK(t[1].type == reply_type::server);
  CHECK(t[2].type == reply_type::server);
  CHECK(tls.events.back().kind == K::ready);
}

TEST_CASE("tls server: NOTLS answers STARTTLS with ERR_POLICY; never ERR_TLS_REQD") {
  const bytes in = flags3 + option_request(option::starttls) + option_request(option::go, go_body("open"));
  std::array<export_config, 1> plain{export_config{"open", "", 1u << 20, 0, {}}};
  const auto log = feed_all_ways(tls_server(server_tls::off, plain), in);
  const auto r = replies(log.output);
  REQUIRE(r.size() >= 2);
  CHECK(r[0].type == reply_type::err_policy);
  CHECK(log.events.back().kind == K::ready);
  for (const auto& x : r) CHECK(x.type != reply_type::err_tls_reqd);
}

TEST_CASE("tls server: configurations TLS cannot serve are refused, and tls_started() needs start_tls") {
  server_config cfg{.exports = exports, .tls = server_tls::off};  // a tls_only export nobody could reach
  CHECK(server(cfg).error() == errc::invalid_config);
  std::array<export_config, 1> one{export_config{"d", "", 512, 0, {}}};
  cfg = {.style = handshake_style::oldstyle, .exports = one, .tls = server_tls::required};
  CHECK(server(cfg).error() == errc::invalid_config);
  cfg = {.exports = one, .tls = server_tls::required};
  server s(cfg);
  CHECK(s.tls_started().error() == errc::tls_not_starting);
  CHECK(s.state() == server_state::awaiting_client_flags);
  CHECK(category(errc::tls_required_export_name) == error_category::tls_policy);
  CHECK(is_fatal(errc::receive_while_tls_starting));
  CHECK_FALSE(is_fatal(errc::tls_not_starting));
}

// ---- client --------------------------------------------------------------------------------

namespace {

auto tls_client(client_tls mode) {
  client_config cfg = simple_client();
  cfg.tls = mode;
  return [cfg] { return std::make_unique<client>(cfg); };
}

const bytes fixed_greeting = greeting(handshake_flag::fixed_newstyle | handshake_flag::no_zeroes);

/// The client's handler: TLS as identity, then GO "open" on `greeting`.
void tls_then_go(client& c, const event& e) {
  identity_tls(c, e);
  if (e.kind == K::greeting) REQUIRE(c.go("open", 0).has_value());
}

bytes go_reply(std::uint64_t size) {
  return info_export(option::go, size, transmission_flag::has_flags) + ack(option::go);
}

}  // namespace

TEST_CASE("tls client: require refuses oldstyle and non-fixed newstyle servers (libnbd CVE-2019-14842)") {
  const bytes oldstyle = rec(make_oldstyle_greeting(1u << 20, transmission_flag::has_flags));
  const auto o = feed_all_ways(tls_client(client_tls::require), oldstyle);
  CHECK(o.final_error == errc::tls_oldstyle_server);
  CHECK(o.output.empty());
  const auto n = feed_all_ways(tls_client(client_tls::require), greeting(handshake_flag::no_zeroes));
  CHECK(n.final_error == errc::tls_server_not_fixed_newstyle);
  CHECK(n.output.empty());
  // Opportunistic goes on in plaintext with both.
  CHECK(feed_all_ways(tls_client(client_tls::opportunistic), oldstyle).events.back().kind == K::ready);
  CHECK(feed_all_ways(tls_client(client_tls::opportunistic), greeting(0)).events.back().kind == K::greeting);
}

TEST_CASE("tls client: STARTTLS goes out with the client flags, before any option; greeting after TLS") {
  const bytes in = fixed_greeting + ack(option::starttls) + go_reply(4096);
  const auto log = feed_all_ways(tls_client(client_tls::require), in, tls_then_go);
  CHECK(kinds(log) == std::vector<K>{K::start_tls, K::greeting, K::info, K::ready});
  const bytes expect = flags3 + option_request(option::starttls) + option_request(option::go, info_body("open", {}));
  CHECK(to_hex(log.output) == to_hex(expect));
  CHECK(log.final_error == errc::ok);
}

TEST_CASE("tls client: receive() stops after the 20-byte ACK; a forged plaintext reply after it is never parsed") {
  auto cp = tls_client(client_tls::require)();
  client& c = *cp;
  const bytes forged = go_reply(1);
  const bytes in = fixed_greeting + ack(option::starttls) + forged;
  receive_result r = c.receive(in);
  CHECK(r.ev.kind == K::start_tls);
  CHECK(r.consumed == in.size() - forged.size());
  r = c.receive(bytes_view(in).subspan(r.consumed));
  CHECK(r.ev.kind == K::failed);
  CHECK(r.ev.error == errc::receive_while_tls_starting);
  CHECK(r.consumed == 0);
}

TEST_CASE("tls client: every downgrade of a client in require mode fails the connection") {
  SUBCASE("STARTTLS refused: ERR_POLICY, ERR_UNSUP, ERR_TLS_REQD; ABORT is queued") {
    for (const reply_type t : {reply_type::err_policy, reply_type::err_unsup, reply_type::err_invalid}) {
      CAPTURE(static_cast<std::uint32_t>(t));
      const auto log = feed_all_ways(tls_client(client_tls::require), fixed_greeting + option_reply(option::starttls, t));
      CHECK(log.final_error == errc::starttls_refused);
      CHECK(to_hex(log.output) == to_hex(flags3 + option_request(option::starttls) + option_request(option::abort)));
    }
  }
  SUBCASE("an ACK with data") {
    const bytes ack_data = option_reply(option::starttls, reply_type::ack, bytes(4));
    CHECK(feed_all_ways(tls_client(client_tls::require), fixed_greeting + ack_data).final_error == errc::ack_with_data);
  }
  SUBCASE("the ACK, then a close") {
    auto cp = tls_client(client_tls::require)();
    client& c = *cp;
    const bytes in = fixed_greeting + ack(option::starttls);
    CHECK(c.receive(in).ev.kind == K::start_tls);
    CHECK(c.on_eof().error == errc::unexpected_eof);
  }
  SUBCASE("a reply to another option while STARTTLS is outstanding") {
    const auto log = feed_all_ways(tls_client(client_tls::require), fixed_greeting + go_reply(4096));
    CHECK(log.final_error == errc::option_reply_wrong_option);
  }
}

TEST_CASE("tls client: opportunistic goes on in plaintext when STARTTLS is refused") {
  const bytes in = fixed_greeting + option_reply(option::starttls, reply_type::err_policy) + go_reply(8192);
  const auto log = feed_all_ways(tls_client(client_tls::opportunistic), in, tls_then_go);
  CHECK(kinds(log) == std::vector<K>{K::greeting, K::info, K::ready});
  auto cp = tls_client(client_tls::opportunistic)();
  client& c = *cp;
  (void)feed(c, fixed_greeting + option_reply(option::starttls, reply_type::err_unsup));
  CHECK(c.state() == client_state::negotiating);
  CHECK_FALSE(c.tls_active());
  CHECK(c.tls_started().error() == errc::tls_not_starting);
}

TEST_CASE("tls client: ERR_SHUTDOWN to STARTTLS is a soft disconnect") {
  const bytes in = fixed_greeting + option_reply(option::starttls, reply_type::err_shutdown) + ack(option::abort);
  const auto log = feed_all_ways(tls_client(client_tls::require), in);
  CHECK(kinds(log) == std::vector<K>{K::option_refused, K::disconnected});
  CHECK(to_hex(log.output) == to_hex(flags3 + option_request(option::starttls) + option_request(option::abort)));
}

// ---- both ----------------------------------------------------------------------------------

TEST_CASE("tls pair: a require client and a FORCEDTLS server negotiate over identity TLS and transfer") {
  for (const bool sr : {false, true}) {
    CAPTURE(sr);
    client_config ccfg;
    ccfg.tls = client_tls::require;
    ccfg.request_extended_headers = sr;
    ccfg.request_structured_replies = sr;
    client c(ccfg);
    server s(server_config{.exports = exports, .tls = server_tls::required});
    bool ready = false, read_done = false;
    for (int round = 0; round < 50 && !read_done; ++round) {
      const bytes to_client = take_output(s);
      CHECK(pump(c, to_client, [&](const event& ev) {
              if (ev.kind == K::start_tls) REQUIRE(c.tls_started().has_value());
              if (ev.kind == K::greeting) REQUIRE(c.go("secret").has_value());
              if (ev.kind == K::ready) {
                ready = true;
                REQUIRE(c.read(0, 4096).has_value());
              }
              if (ev.kind == K::reply) read_done = true;
              CHECK(ev.kind != K::failed);
            }) == 0);
      const bytes to_server = take_output(c);
      CHECK(pump(s, to_server, [&](const event& ev) {
              if (ev.kind == K::start_tls) REQUIRE(s.tls_started().has_value());
              if (ev.kind == K::request) REQUIRE(s.reply(ev.req).has_value());
              CHECK(ev.kind != K::failed);
            }) == 0);
    }
    CHECK(ready);
    CHECK(read_done);
    CHECK(c.tls_active());
    CHECK(c.negotiated().tls);
    CHECK(s.negotiated().tls);
    CHECK(c.negotiated().export_size == 2u << 20);
    CHECK(c.negotiated().structured_replies == sr);
  }
}
