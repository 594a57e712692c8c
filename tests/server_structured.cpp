// SPDX-License-Identifier: MIT
// Server machine with structured replies, metadata contexts, block status and extended
// headers: the option answers (checklist 1.5, 1.11, 3.1), transmission in extended mode
// (2.2, 3.3) and the golden vectors it produces (G11-G14, G17, G18, G22). Every client byte
// stream is fed whole, byte by byte, at every split and at random splits.
#include <doctest/doctest.h>

#include <array>
#include <string>
#include <vector>

#include "nbdwire/server.hpp"
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
constexpr std::uint64_t golden_cookie = 0x0102030405060708ull;
constexpr split_options big_input{.random_runs = 12, .every_index_limit = 600};

const std::array<export_config, 2> exports{
    export_config{"disk", "", gib, tf::send_flush | tf::send_fua | tf::send_trim | tf::send_write_zeroes | tf::send_cache, {}},
    export_config{"other", "", mib, tf::send_flush, {}}};
// base:allocation is id 1, as in G13, G18 and G22.
constexpr std::array<std::string_view, 4> contexts{"qemu:allocation-depth", "base:allocation", "qemu:dirty-bitmap:b0",
                                                   "qemu:dirty-bitmap:b1"};

server_config config() {
  server_config cfg;
  cfg.meta_contexts = contexts;
  return cfg;
}

auto fresh() {
  return [] { return make_server(exports, config()); };
}

/// One option reply read back from server output.
struct opt_reply {
  std::uint32_t option = 0;
  std::uint32_t type = 0;
  bytes data;
};

/// Splits server handshake output into option replies (after the given prefix).
std::vector<opt_reply> option_replies(const bytes& out, std::size_t from = 0) {
  std::vector<opt_reply> r;
  std::size_t at = from;
  while (at + 20 <= out.size()) {
    REQUIRE(load_be<std::uint64_t>(out.data() + at) == magic::option_reply);
    const std::uint32_t len = load_be<std::uint32_t>(out.data() + at + 16);
    REQUIRE(at + 20 + len <= out.size());
    r.push_back({load_be<std::uint32_t>(out.data() + at + 8), load_be<std::uint32_t>(out.data() + at + 12),
                 slice(out, at + 20, at + 20 + len)});
    at += 20 + len;
  }
  CHECK(at == out.size());
  return r;
}

std::uint32_t rt(reply_type t) { return static_cast<std::uint32_t>(t); }

/// The contexts of META_CONTEXT replies: {id, name}.
std::vector<std::pair<std::uint32_t, std::string>> contexts_of(const std::vector<opt_reply>& rs) {
  std::vector<std::pair<std::uint32_t, std::string>> v;
  for (const auto& r : rs)
    if (r.type == rt(reply_type::meta_context))
      v.emplace_back(load_be<std::uint32_t>(r.data.data()),
                     std::string(reinterpret_cast<const char*>(r.data.data()) + 4, r.data.size() - 4));
  return v;
}

/// Feeds client flags + `options` at every split; returns the option replies.
std::vector<opt_reply> answers(const bytes& options, run_log* out = nullptr) {
  const auto log = feed_all_ways(fresh(), client_flags(3) + options);
  CHECK(log.final_error == errc::ok);
  if (out) *out = log;
  return option_replies(log.output);
}

const bytes sr_opt = option_request(option::structured_reply);
const bytes ext_opt = option_request(option::extended_headers);
const bytes abort_opt = option_request(option::abort);

bytes set_opt(std::string_view name, std::initializer_list<std::string_view> q) {
  return option_request(option::set_meta_context, meta_body(name, q));
}
bytes list_opt(std::string_view name, std::initializer_list<std::string_view> q) {
  return option_request(option::list_meta_context, meta_body(name, q));
}
bytes go_opt(std::string_view name) { return option_request(option::go, info_body(name, {3})); }
}  // namespace

// ==== options ===================================================================================

TEST_CASE("server: STRUCTURED_REPLY is acknowledged and turns structured replies on") {
  run_log log;
  const auto r = answers(sr_opt + go_opt("disk"), &log);
  REQUIRE(r.size() >= 2);
  CHECK(r[0].option == 8);
  CHECK(r[0].type == rt(reply_type::ack));
  CHECK(r[0].data.empty());
  CHECK(log.events.back().kind == K::ready);
  auto s = make_server(exports, config());
  (void)feed(*s, client_flags(3) + sr_opt + go_opt("disk"));
  CHECK(s->negotiated().structured_replies);
  CHECK_FALSE(s->negotiated().extended_headers);
}

TEST_CASE("server: EXTENDED_HEADERS is acknowledged and implies structured replies") {
  const auto r = answers(ext_opt);
  REQUIRE(r.size() == 1);
  CHECK(r[0].option == 11);
  CHECK(r[0].type == rt(reply_type::ack));
  auto s = make_server(exports, config());
  (void)feed(*s, client_flags(3) + ext_opt + go_opt("disk"));
  CHECK(s->negotiated().structured_replies);
  CHECK(s->negotiated().extended_headers);
}

TEST_CASE("server: STRUCTURED_REPLY or EXTENDED_HEADERS with data is ERR_INVALID") {
  const auto r = answers(option_request(option::structured_reply, from_hex("00")) +
                         option_request(option::extended_headers, from_hex("0000")) +
                         // Neither is on: SET_META_CONTEXT is still refused.
                         set_opt("disk", {"base:allocation"}));
  REQUIRE(r.size() == 3);
  CHECK(r[0].type == rt(reply_type::err_invalid));
  CHECK(r[1].type == rt(reply_type::err_invalid));
  CHECK(r[2].type == rt(reply_type::err_invalid));
  auto s = make_server(exports, config());
  (void)feed(*s, client_flags(3) + option_request(option::extended_headers, from_hex("00")) + go_opt("disk"));
  CHECK_FALSE(s->negotiated().structured_replies);
  CHECK_FALSE(s->negotiated().extended_headers);
}

TEST_CASE("server: STRUCTURED_REPLY after EXTENDED_HEADERS is ERR_EXT_HEADER_REQD") {
  const auto r = answers(ext_opt + sr_opt);
  REQUIRE(r.size() == 2);
  CHECK(r[0].type == rt(reply_type::ack));
  CHECK(r[1].option == 8);
  CHECK(r[1].type == rt(reply_type::err_ext_header_reqd));
  auto s = make_server(exports, config());
  (void)feed(*s, client_flags(3) + ext_opt + sr_opt + go_opt("disk"));
  CHECK(s->negotiated().extended_headers);  // not downgraded
}

TEST_CASE("server: SET_META_CONTEXT before structured replies is ERR_INVALID") {
  const auto r = answers(set_opt("disk", {"base:allocation"}) + sr_opt + set_opt("disk", {"base:allocation"}));
  REQUIRE(r.size() == 4);
  CHECK(r[0].option == 10);
  CHECK(r[0].type == rt(reply_type::err_invalid));
  CHECK(r[1].type == rt(reply_type::ack));
  CHECK(r[2].type == rt(reply_type::meta_context));
  CHECK(r[3].type == rt(reply_type::ack));
}

TEST_CASE("server: LIST_META_CONTEXT is allowed without structured replies") {
  const auto r = answers(list_opt("disk", {"base:allocation"}));
  REQUIRE(r.size() == 2);
  CHECK(r[0].option == 9);
  CHECK(r[0].type == rt(reply_type::meta_context));
  CHECK(r[1].type == rt(reply_type::ack));
  CHECK(contexts_of(r) == std::vector<std::pair<std::uint32_t, std::string>>{{0, "base:allocation"}});
}

TEST_CASE("server: LIST_META_CONTEXT with no queries lists every context with id 0") {
  const auto r = answers(sr_opt + list_opt("disk", {}));
  const auto got = contexts_of(r);
  REQUIRE(got.size() == contexts.size());
  for (std::size_t i = 0; i < contexts.size(); ++i) {
    CHECK(got[i].first == 0);
    CHECK(got[i].second == contexts[i]);
  }
  CHECK(r.back().type == rt(reply_type::ack));
}

TEST_CASE("server: LIST_META_CONTEXT wildcards") {
  using list = std::vector<std::pair<std::uint32_t, std::string>>;
  CHECK(contexts_of(answers(list_opt("disk", {"base:"}))) == list{{0, "base:allocation"}});
  CHECK(contexts_of(answers(list_opt("disk", {"qemu:"}))) ==
        list{{0, "qemu:allocation-depth"}, {0, "qemu:dirty-bitmap:b0"}, {0, "qemu:dirty-bitmap:b1"}});
  CHECK(contexts_of(answers(list_opt("disk", {"qemu:dirty-bitmap:"}))) ==
        list{{0, "qemu:dirty-bitmap:b0"}, {0, "qemu:dirty-bitmap:b1"}});
  // Not wildcards: a prefix without the colon, an unknown namespace, an unknown leaf.
  CHECK(contexts_of(answers(list_opt("disk", {"qemu:dirty", "x-none:", "base:nothing"}))).empty());
  // Several queries: each context once, in the server's order.
  CHECK(contexts_of(answers(list_opt("disk", {"qemu:dirty-bitmap:b1", "base:", "base:allocation"}))) ==
        list{{0, "base:allocation"}, {0, "qemu:dirty-bitmap:b1"}});
}

TEST_CASE("server: SET_META_CONTEXT selects exact names only and ignores unknown namespaces") {
  const bytes set = set_opt("disk", {"base:", "qemu:dirty-bitmap:", "x-unknown:thing", "base:allocation",
                                     "qemu:dirty-bitmap:b1", "base:nonexistent", ""});
  const auto r = answers(sr_opt + set);
  using list = std::vector<std::pair<std::uint32_t, std::string>>;
  CHECK(contexts_of(r) == list{{1, "base:allocation"}, {3, "qemu:dirty-bitmap:b1"}});
  CHECK(r.back().type == rt(reply_type::ack));
  auto s = make_server(exports, config());
  (void)feed(*s, client_flags(3) + sr_opt + set + go_opt("disk"));
  const auto& n = s->negotiated();
  REQUIRE(n.meta_context_count == 2);
  CHECK(n.has_meta_context(1));
  CHECK(n.has_meta_context(3));
  CHECK_FALSE(n.has_meta_context(0));
  // Zero queries select nothing.
  const auto none = answers(sr_opt + set_opt("disk", {}));
  CHECK(contexts_of(none).empty());
  CHECK(none.back().type == rt(reply_type::ack));
}

TEST_CASE("server: malformed meta-context lengths are ERR_INVALID and the stream stays in sync") {
  const bytes q = str_bytes("base:allocation");
  const auto u32 = [](std::uint32_t v) { return be<std::uint32_t>(v); };
  const std::vector<std::pair<std::string, bytes>> bodies{
      {"shorter than 8", u32(0) + from_hex("000000")},
      {"name length past the end", u32(40) + str_bytes("disk") + u32(0)},
      {"name longer than a string", u32(5000) + bytes(5000, std::byte{'a'}) + u32(0)},
      {"query count with no queries", u32(4) + str_bytes("disk") + u32(1)},
      {"query length past the end", u32(4) + str_bytes("disk") + u32(1) + u32(16) + q},
      {"query count too small", u32(4) + str_bytes("disk") + u32(1) + u32(15) + q + u32(15) + q},
      {"query count too large", u32(4) + str_bytes("disk") + u32(3) + u32(15) + q + u32(15) + q},
      {"bytes after zero queries", u32(4) + str_bytes("disk") + u32(0) + from_hex("00")},
      {"query length inside the next field", u32(4) + str_bytes("disk") + u32(1) + u32(14) + q},
  };
  for (const auto& entry : bodies) {
    for (auto o : {option::list_meta_context, option::set_meta_context}) {
      INFO(entry.first << " option " << static_cast<int>(o));
      run_log log;
      const auto r = answers(sr_opt + option_request(o, entry.second) + list_opt("disk", {"base:"}) + abort_opt, &log);
      REQUIRE(r.size() == 5);
      CHECK(r[1].option == static_cast<std::uint32_t>(o));
      CHECK(r[1].type == rt(reply_type::err_invalid));
      // The next option is read from the right place.
      CHECK(r[2].type == rt(reply_type::meta_context));
      CHECK(r[3].type == rt(reply_type::ack));
      CHECK(r[4].option == 2);
      CHECK(log.events.back().kind == K::disconnected);
    }
  }
}

TEST_CASE("server: meta-context query for an unknown export is ERR_UNKNOWN") {
  const auto r = answers(sr_opt + list_opt("nope", {"base:allocation"}) + set_opt("nope", {"base:allocation"}) +
                         list_opt("", {}));
  REQUIRE(r.size() >= 4);
  CHECK(r[1].type == rt(reply_type::err_unknown));
  CHECK(r[2].type == rt(reply_type::err_unknown));
  // The empty name is the default export.
  CHECK(contexts_of(r).size() == contexts.size());
}

TEST_CASE("server: contexts hold only when GO names the export SET named") {
  auto negotiated_after = [](const bytes& options) {
    auto s = make_server(exports, config());
    const auto ev = feed(*s, client_flags(3) + options);
    REQUIRE(!ev.empty());
    REQUIRE(ev.back().kind == K::ready);
    return s;
  };
  CHECK(negotiated_after(sr_opt + set_opt("disk", {"base:allocation"}) + go_opt("disk"))->negotiated().meta_context_count == 1);
  CHECK(negotiated_after(sr_opt + set_opt("", {"base:allocation"}) + go_opt("disk"))->negotiated().meta_context_count == 1);
  CHECK(negotiated_after(sr_opt + set_opt("disk", {"base:allocation"}) + go_opt("other"))->negotiated().meta_context_count == 0);
  // SET replaces the earlier selection, even when it fails.
  CHECK(negotiated_after(sr_opt + set_opt("disk", {"base:allocation"}) + set_opt("nope", {"base:allocation"}) +
                         go_opt("disk"))
            ->negotiated()
            .meta_context_count == 0);
  CHECK(negotiated_after(sr_opt + set_opt("disk", {"base:allocation"}) + set_opt("disk", {"qemu:dirty-bitmap:b0"}) +
                         go_opt("disk"))
            ->negotiated()
            .meta_contexts[0]
            .id == 2);
  // BLOCK_STATUS on the other export is refused: no context holds there.
  auto s = negotiated_after(sr_opt + set_opt("disk", {"base:allocation"}) + go_opt("other"));
  (void)take_output(*s);
  const auto ev = feed(*s, request_bytes(command::block_status, 0, 9, 0, 4096));
  REQUIRE(kinds_string(ev) == "request_refused");
  CHECK(ev[0].status == nbd_error::einval);
}

TEST_CASE("server: G22 is the META_CONTEXT answer to G21") {
  auto s = make_server(exports, config());
  (void)feed(*s, client_flags(3) + sr_opt);
  (void)take_output(*s);
  const auto ev = feed(*s, golden("G21"));
  REQUIRE(kinds_string(ev) == "option_answered");
  CHECK(to_hex(take_output(*s)) == to_hex(golden("G22") + ack(option::set_meta_context)));
}

// ==== transmission ==============================================================================

namespace {
auto sr_server(const bytes& extra = {}) {
  return [extra] { return modern_server(exports, config(), sr_opt + extra, "disk"); };
}
auto ext_server(const bytes& extra = {}) {
  return [extra] { return modern_server(exports, config(), ext_opt + extra, "disk"); };
}
const bytes set_alloc = set_opt("disk", {"base:allocation"});

/// Runs `in` through a fresh server at every split, answering each request with `answer`.
run_log serve(const std::function<std::unique_ptr<server>()>& make, const bytes& in,
              const std::function<void(server&, const request&)>& answer = {}, const split_options& opt = {}) {
  return feed_all_ways(make, in, [answer](server& s, const event& e) {
    if (e.kind == K::request && answer) answer(s, e.req);
  }, opt);
}
}  // namespace

TEST_CASE("server: G11 G12 G13 G14 are its structured chunks") {
  SUBCASE("G11: a successful READ") {
    const auto log = serve(sr_server(), golden("G09"), [](server& s, const request& r) { REQUIRE(s.reply(r).has_value()); },
                           big_input);
    CHECK(kinds_string(log.events) == "request");
    CHECK(to_hex(log.output) == to_hex(golden("G11") + pattern(mib, 4096)));
  }
  SUBCASE("G12: reply_read_hole") {
    const auto log = serve(sr_server(), golden("G09"), [](server& s, const request& r) {
      REQUIRE(s.reply_read_hole(r, mib, 4096, true).has_value());
    });
    CHECK(to_hex(log.output) == to_hex(golden("G12")));
  }
  SUBCASE("G13: reply_block_status, context 1") {
    const bytes req = request_bytes(command::block_status, 0, golden_cookie, 0, 4096);
    const auto log = serve(sr_server(set_alloc), req, [](server& s, const request& r) {
      const std::array<block_extent, 1> e{block_extent{gib, state_flag::hole | state_flag::zero}};
      const auto n = s.reply_block_status(r, 1, e, true);
      REQUIRE(n.has_value());
      CHECK(n.value() == 1);
    });
    CHECK(to_hex(log.output) == to_hex(golden("G13")));
  }
  SUBCASE("G14: a READ failing with EINVAL") {
    const auto log = serve(sr_server(), golden("G09"),
                           [](server& s, const request& r) { REQUIRE(s.reply(r, nbd_error::einval).has_value()); });
    CHECK(to_hex(log.output) == to_hex(golden("G14")));
  }
}

TEST_CASE("server: G17 and G18 are its extended chunks") {
  SUBCASE("G15 in, G17 out") {
    const auto log = serve(ext_server(), golden("G15"), [](server& s, const request& r) {
      CHECK(r == request{golden_cookie, 0, 0, mib, 4096});
      REQUIRE(s.reply(r).has_value());
    }, big_input);
    CHECK(kinds_string(log.events) == "request");
    CHECK(to_hex(log.output) == to_hex(golden("G17") + pattern(mib, 4096)));
  }
  SUBCASE("G18") {
    const bytes req = ext_request_bytes(command::block_status, 0, golden_cookie, 0, 4096);
    const auto log = serve(ext_server(set_alloc), req, [](server& s, const request& r) {
      const std::array<block_extent, 1> e{block_extent{gib, 3}};
      REQUIRE(s.reply_block_status(r, 1, e, true).has_value());
    });
    CHECK(to_hex(log.output) == to_hex(golden("G18")));
  }
}

TEST_CASE("server ext: G16 WRITE with PAYLOAD_LEN carries its payload") {
  const bytes data = pattern(mib, 4096);
  const auto log = serve(ext_server(), golden("G16") + data, {}, big_input);
  REQUIRE(kinds_string(log.events) == "request,payload");
  CHECK(log.events[0].req.cmd() == command::write);
  CHECK(log.events[0].req.length == 4096);
  CHECK(log.events[0].req.offset == mib);
  CHECK(log.events[1].data == data);
  // Answered with a NONE chunk: simple replies do not exist in extended mode.
  auto s = ext_server()();
  const auto ev = feed(*s, golden("G16") + data);
  REQUIRE(s->reply(ev[0].req).has_value());
  CHECK(to_hex(take_output(*s)) == to_hex(ext_chunk(reply_flag::done, CT::none, golden_cookie, mib)));
}

TEST_CASE("server ext: WRITE without PAYLOAD_LEN is EINVAL and carries no payload") {
  const bytes in = ext_request_bytes(command::write, 0, 1, 0, 4096) + ext_request_bytes(command::flush, 0, 2, 0, 0);
  const auto log = serve(ext_server(), in);
  REQUIRE(kinds_string(log.events) == "request_refused,request");
  CHECK(log.events[0].status == nbd_error::einval);
  CHECK(log.events[1].req.cookie == 2);
  CHECK(to_hex(log.output) == to_hex(ext_chunk(reply_flag::done, CT::error, 1, 0, error_payload(22, ""))));
}

TEST_CASE("server ext: PAYLOAD_LEN on a command without payload is consumed and refused") {
  const bytes in = ext_request_bytes(command::read, cf::payload_len, 1, 0, 16) + pattern(0, 16) +
                   ext_request_bytes(command::flush, cf::payload_len, 2, 0, 3) + from_hex("256095") +
                   ext_request_bytes(command::read, 0, 3, 0, 512);
  const auto log = serve(ext_server(), in);
  REQUIRE(kinds_string(log.events) == "request_refused,request_refused,request");
  CHECK(log.events[0].status == nbd_error::einval);
  CHECK(log.events[1].status == nbd_error::einval);
  CHECK(log.events[2].req.cookie == 3);
}

TEST_CASE("server ext: PAYLOAD_LEN above the maximum payload is fatal") {
  const auto log = serve(ext_server(), ext_request_bytes(command::write, cf::payload_len, 1, 0, (32u << 20) + 1));
  CHECK(kinds_string(log.events) == "failed");
  CHECK(log.final_error == errc::extended_payload_too_large);
  // 32 MiB exactly is taken.
  const auto ok = serve(ext_server(), ext_request_bytes(command::write, cf::payload_len, 1, 0, 32u << 20));
  CHECK(kinds_string(ok.events) == "request");
}

TEST_CASE("server ext: compact request magic is fatal") {
  const auto log = serve(ext_server(), request_bytes(command::read, 0, 1, 0, 512) + bytes(4));
  CHECK(kinds_string(log.events) == "failed");
  CHECK(log.final_error == errc::bad_request_magic);
  // And the other way round.
  const auto sr = serve(sr_server(), ext_request_bytes(command::read, 0, 1, 0, 512));
  CHECK(sr.final_error == errc::bad_request_magic);
}

TEST_CASE("server ext: EXPORT_NAME after EXTENDED_HEADERS is fatal") {
  const auto log = feed_all_ways(fresh(), client_flags(3) + ext_opt + option_request(option::export_name, str_bytes("disk")));
  REQUIRE(!log.events.empty());
  CHECK(log.events.back().kind == K::failed);
  CHECK(log.final_error == errc::export_name_after_extended_headers);
  // Without extended headers it still works, and carries no contexts.
  const auto ok = feed_all_ways(fresh(), client_flags(3) + sr_opt + set_alloc + option_request(option::export_name, str_bytes("disk")));
  CHECK(ok.events.back().kind == K::ready);
}

TEST_CASE("server: BLOCK_STATUS without a negotiated context is EINVAL") {
  SUBCASE("structured") {
    const auto log = serve(sr_server(), request_bytes(command::block_status, 0, 5, 0, 4096));
    REQUIRE(kinds_string(log.events) == "request_refused");
    CHECK(log.events[0].status == nbd_error::einval);
    CHECK(to_hex(log.output) == to_hex(chunk(reply_flag::done, CT::error, 5, error_payload(22, ""))));
  }
  SUBCASE("extended") {
    const auto log = serve(ext_server(), ext_request_bytes(command::block_status, 0, 5, 4096, 4096));
    REQUIRE(kinds_string(log.events) == "request_refused");
    CHECK(to_hex(log.output) == to_hex(ext_chunk(reply_flag::done, CT::error, 5, 4096, error_payload(22, ""))));
  }
}

TEST_CASE("server: BLOCK_STATUS with REQ_ONE is a valid request") {
  // REQ_ONE needs no transmission flag ("Command flags").
  const auto log = serve(sr_server(set_alloc), request_bytes(command::block_status, cf::req_one, 5, 0, 4096),
                         [](server& s, const request& r) {
                           const std::array<block_extent, 2> e{block_extent{8192, 0}, block_extent{512, 1}};
                           const auto n = s.reply_block_status(r, 1, e, true);
                           REQUIRE(n.has_value());
                           CHECK(n.value() == 1);
                         });
  REQUIRE(kinds_string(log.events) == "request");
  // One descriptor, clipped to the request.
  CHECK(to_hex(log.output) == to_hex(chunk(reply_flag::done, CT::block_status, 5, status_payload(1, {{4096, 0}}))));
}

TEST_CASE("server: reply_block_status stops at the extent that reaches the request's end") {
  const auto log = serve(sr_server(set_opt("disk", {"base:allocation", "qemu:dirty-bitmap:b0"})),
                         request_bytes(command::block_status, 0, 5, 0, 2048), [](server& s, const request& r) {
                           const std::array<block_extent, 3> e{block_extent{1024, 0}, block_extent{4096, 3},
                                                               block_extent{512, 0}};
                           CHECK(s.reply_block_status(r, 1, e, false).value() == 2);
                           CHECK(s.reply_block_status(r, 7, e, true).error() == errc::context_not_negotiated);  // not negotiated
                           CHECK(s.reply_block_status(r, 2, std::span(e).first(1), true).value() == 1);
                         });
  CHECK(to_hex(log.output) ==
        to_hex(chunk(0, CT::block_status, 5, status_payload(1, {{1024, 0}, {4096, 3}})) +
               chunk(reply_flag::done, CT::block_status, 5, status_payload(2, {{1024, 0}}))));
}

TEST_CASE("server: with structured replies a refused READ gets an ERROR chunk and never a simple reply") {
  // Past the end, an unknown flag, DF without SEND_DF: each refused with an ERROR chunk.
  const bytes in = request_bytes(command::read, 0, 1, gib, 512) + request_bytes(command::read, 0x0100, 2, 0, 512) +
                   request_bytes(command::read, cf::df, 3, 0, 512) + request_bytes(command::read, 0, 4, 0, 512);
  const auto log = serve(sr_server(), in, [](server& s, const request& r) {
    REQUIRE(s.reply(r, nbd_error::eio, "media error").has_value());
  });
  REQUIRE(kinds_string(log.events) == "request_refused,request_refused,request_refused,request");
  const bytes einval = error_payload(22, "");
  CHECK(to_hex(log.output) == to_hex(chunk(reply_flag::done, CT::error, 1, einval) + chunk(reply_flag::done, CT::error, 2, einval) +
                                     chunk(reply_flag::done, CT::error, 3, einval) +
                                     chunk(reply_flag::done, CT::error, 4, error_payload(5, "media error"))));
}

TEST_CASE("server: with structured replies other commands succeed with a simple reply and fail with ERROR") {
  const bytes in = request_bytes(command::flush, 0, 1, 0, 0) + request_bytes(command::trim, 0, 2, 0, 4096);
  const auto log = serve(sr_server(), in, [](server& s, const request& r) {
    REQUIRE(s.reply(r, r.cookie == 1 ? nbd_error::ok : nbd_error::enospc, "full").has_value());
  });
  CHECK(to_hex(log.output) ==
        to_hex(simple_reply(nbd_error::ok, 1) + chunk(reply_flag::done, CT::error, 2, error_payload(28, "full"))));
}

TEST_CASE("server: chunk calls need structured replies and stay inside the request") {
  auto s = server_in_transmission(exports);  // simple replies
  const auto ev = feed(*s, request_bytes(command::read, 0, 1, 0, 4096));
  REQUIRE(kinds_string(ev) == "request");
  const request r = ev[0].req;
  CHECK(s->reply_read_hole(r, 0, 4096, true).error() == errc::structured_replies_off);
  CHECK(s->reply_read_data(r, 0, 4096, true).error() == errc::structured_replies_off);
  CHECK(s->reply_error_chunk(r, nbd_error::eio, "", std::nullopt, true).error() == errc::structured_replies_off);
  CHECK(s->reply_done(r).error() == errc::structured_replies_off);
  auto t = sr_server()();
  const auto ev2 = feed(*t, request_bytes(command::read, 0, 1, 4096, 4096));
  const request q = ev2[0].req;
  CHECK(t->reply_read_hole(q, 0, 512, false).error() == errc::request_out_of_range);
  CHECK(t->reply_read_data(q, 8000, 200, false).error() == errc::request_out_of_range);
  CHECK(t->reply_error_chunk(q, nbd_error::eio, "", 8192, false).error() == errc::request_out_of_range);
  CHECK(t->reply_error_chunk(q, nbd_error::ok, "", std::nullopt, false).error() == errc::error_chunk_needs_error);
  // A sparse answer: data, hole, error with offset, NONE.
  REQUIRE(t->reply_read_data(q, 4096, 1024, false).has_value());
  REQUIRE(t->reply_read_hole(q, 5120, 2048, false).has_value());
  REQUIRE(t->reply_error_chunk(q, nbd_error::eio, "bad", 7168, false).has_value());
  REQUIRE(t->reply_done(q).has_value());
  CHECK(t->outstanding() == 0);
  CHECK(to_hex(take_output(*t)) ==
        to_hex(chunk_header(0, 1, 1, 8 + 1024) + be<std::uint64_t>(4096) + pattern(4096, 1024) +
               chunk(0, CT::offset_hole, 1, hole_payload(5120, 2048)) +
               chunk(0, CT::error_offset, 1, error_offset_payload(5, "bad", 7168)) + chunk(reply_flag::done, CT::none, 1)));
}

namespace {
/// A server that acknowledged STRUCTURED_REPLY and entered transmission with GO.
std::unique_ptr<server> sr_server(std::span<const export_config> offered) {
  server_config cfg;
  cfg.exports = offered;
  auto s = std::make_unique<server>(cfg);
  (void)take_output(*s);
  const auto ev = feed(*s, client_flags(3) + option_request(option::structured_reply) +
                               option_request(option::go, info_body("", {3})));
  REQUIRE(!ev.empty());
  REQUIRE(ev.back().kind == event_kind::ready);
  REQUIRE(s->negotiated().structured_replies);
  (void)take_output(*s);
  return s;
}
request read_request(server& s, std::uint64_t cookie, std::uint16_t flags, std::uint64_t offset, std::uint32_t length) {
  const auto ev = feed(s, request_bytes(command::read, flags, cookie, offset, length));
  REQUIRE(ev.size() == 1);
  REQUIRE(ev[0].kind == event_kind::request);
  return ev[0].req;
}
}  // namespace

TEST_CASE("server: a DF read is answered by one data chunk covering it with DONE") {
  const std::array<export_config, 1> ex{
      export_config{"", "", 1u << 20, transmission_flag::send_df, {}}};
  auto s = sr_server(ex);
  REQUIRE(s->negotiated().has(transmission_flag::send_df));
  const request r = read_request(*s, 7, command_flag::df, 4096, 8192);
  // Holes are merged into data under DF; partial or unfinished data chunks would make two.
  CHECK(s->reply_read_hole(r, 4096, 8192, true).error() == errc::df_requires_one_chunk);
  CHECK(s->reply_read_data(r, 4096, 4096, false).error() == errc::df_requires_one_chunk);
  CHECK(s->reply_read_data(r, 4096, 8192, false).error() == errc::df_requires_one_chunk);
  CHECK(take_output(*s).empty());
  REQUIRE(s->reply_read_data(r, 4096, 8192, true).has_value());
  const auto h = decode<structured_reply_header>(take_output(*s));
  CHECK(h.flags.get() == reply_flag::done);
  CHECK(h.type.get() == static_cast<std::uint16_t>(chunk_type::offset_data));
  CHECK(h.length.get() == 8 + 8192);
}

TEST_CASE("server: a compact read above 2^32 - 8 bytes is split into two data chunks") {
  // "A read of more than 2^32 - 8 bytes of data MUST be split" without extended headers;
  // reachable when the export sets no fixed maximum payload.
  const std::array<export_config, 1> ex{
      export_config{"", "", 1ull << 33, 0, {1, 4096, 0xffffffffu}}};
  auto s = sr_server(ex);
  const request r = read_request(*s, 9, 0, 0, 0xffffffffu);
  REQUIRE(s->reply(r).has_value());
  // First chunk: header + offset, then its payload mark.
  bytes out(s->pending_output().begin(), s->pending_output().end());
  REQUIRE(out.size() == sizeof(structured_reply_header) + 8);
  const auto h1 = decode<structured_reply_header>(out);
  CHECK(h1.flags.get() == 0);
  const std::uint64_t first = h1.length.get() - 8;
  CHECK(first <= 0xffffffffu - 8);
  CHECK(load_be<std::uint64_t>(out.data() + sizeof(structured_reply_header)) == 0);
  s->consume_output(out.size());
  auto p = s->pending_payload();
  REQUIRE(p.has_value());
  CHECK(p->offset == 0);
  CHECK(p->length == first);
  REQUIRE(s->consume_payload(first).has_value());
  // Second chunk: the rest, with DONE.
  out.assign(s->pending_output().begin(), s->pending_output().end());
  REQUIRE(out.size() == sizeof(structured_reply_header) + 8);
  const auto h2 = decode<structured_reply_header>(out);
  CHECK(h2.flags.get() == reply_flag::done);
  CHECK(h2.length.get() - 8 == 0xffffffffu - first);
  CHECK(load_be<std::uint64_t>(out.data() + sizeof(structured_reply_header)) == first);
  s->consume_output(out.size());
  p = s->pending_payload();
  REQUIRE(p.has_value());
  CHECK(p->offset == first);
  CHECK(p->length == 0xffffffffu - first);
  CHECK(s->outstanding() == 0);
}

TEST_CASE("server: a DF read too large for one compact chunk gets EOVERFLOW") {
  const std::array<export_config, 1> ex{
      export_config{"", "", 1ull << 33, transmission_flag::send_df, {1, 4096, 0xffffffffu}}};
  auto s = sr_server(ex);
  const auto ev = feed(*s, request_bytes(command::read, command_flag::df, 11, 0, 0xffffffffu));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].kind == event_kind::request_refused);
  CHECK(ev[0].status == nbd_error::eoverflow);
  // Answered with an error chunk, never a simple reply (structured replies are on).
  const bytes out = take_output(*s);
  REQUIRE(out.size() == sizeof(structured_reply_header) + sizeof(error_chunk_prefix));
  CHECK(decode<structured_reply_header>(out).type.get() == static_cast<std::uint16_t>(chunk_type::error));
  CHECK(load_be<std::uint32_t>(out.data() + sizeof(structured_reply_header)) ==
        static_cast<std::uint32_t>(nbd_error::eoverflow));
}
