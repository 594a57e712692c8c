// SPDX-License-Identifier: MIT
// transfer.hpp: max_request_length per command and negotiation, split_range boundaries and
// alignment, and send_plan against real client and server machines: the bytes a plan sends,
// with writes cut at every byte boundary, equal what pending_output()/pending_payload()
// give when drained one at a time.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <vector>

#include "nbdwire/transfer.hpp"
#include "support/machines.hpp"

using namespace nbdwire;
using namespace nbdwire_test;

namespace {
namespace tf = transmission_flag;
constexpr std::uint64_t u32 = 0xffffffffu;

negotiated with_block_size(std::uint32_t mn, std::uint32_t pref, std::uint32_t mx, bool extended = false) {
  negotiated n;
  n.block_size = {mn, pref, mx};
  n.extended_headers = extended;
  n.structured_replies = extended;
  n.export_size = 1ull << 40;
  return n;
}

std::vector<range_piece> pieces_of(const split_range& r) {
  std::vector<range_piece> v;
  for (const range_piece p : r) v.push_back(p);
  return v;
}

/// The export's bytes: what every payload of these tests is taken from.
const bytes& disk() {
  static const bytes d = pattern(0, 1u << 20);
  return d;
}

bytes_view from_disk(const payload_span& p) {
  return bytes_view{disk().data() + p.offset, static_cast<std::size_t>(p.length)};
}

/// Sends everything `m` has queued through plans of N segments; every writev "takes" at most
/// what next_write() allows. Returns the bytes produced.
template <std::size_t N, class Machine, class NextWrite>
bytes send_all(Machine& m, NextWrite next_write) {
  bytes out;
  for (int guard = 0; guard < 1000000; ++guard) {
    send_plan<N> plan(m, from_disk);
    if (plan.empty()) {
      REQUIRE_FALSE(plan.stopped_at().has_value());
      break;
    }
    const std::size_t want = std::min(plan.size(), next_write());
    std::size_t left = want;
    for (const send_segment& s : plan.segments()) {
      const std::size_t take = std::min(left, s.len);
      out.insert(out.end(), s.base, s.base + take);
      left -= take;
    }
    REQUIRE(plan.advance(m, want).has_value());
  }
  CHECK(m.pending_output().empty());
  CHECK_FALSE(m.pending_payload().has_value());
  return out;
}

/// The reference: pending_output()/pending_payload() drained one at a time.
template <class Machine>
bytes reference(Machine m) {
  return take_output(m);
}

/// Every cut: the first write takes `cut` bytes, the rest go whole; and fixed write sizes.
template <class Machine>
void check_every_boundary(const Machine& m) {
  const bytes expected = reference(m);
  REQUIRE(expected.size() > 0);
  for (std::size_t cut = 0; cut <= expected.size(); ++cut) {
    Machine copy = m;
    bool first = true;
    const bytes got = send_all<16>(copy, [&] {
      const std::size_t n = first ? cut : std::numeric_limits<std::size_t>::max();
      first = false;
      return n;
    });
    INFO("first write of ", cut, " bytes");
    REQUIRE(got == expected);
  }
  for (const std::size_t step : {std::size_t{1}, std::size_t{3}, std::size_t{7}, std::size_t{28}, std::size_t{4096}}) {
    Machine copy = m;
    INFO("writes of ", step, " bytes");
    REQUIRE(send_all<16>(copy, [&] { return step; }) == expected);
    Machine copy2 = m;
    REQUIRE(send_all<1>(copy2, [&] { return step; }) == expected);  // one segment per plan
    Machine copy3 = m;
    REQUIRE(send_all<3>(copy3, [&] { return step; }) == expected);
  }
}

const std::array<export_config, 1> exports{
    export_config{"", "", 1u << 20, tf::send_flush | tf::send_fua | tf::send_trim | tf::send_write_zeroes, {}}};

}  // namespace

TEST_CASE("transfer: max_request_length per command, compact and extended") {
  const negotiated d = with_block_size(1, 4096, 32u << 20);
  CHECK(max_request_length(d, command::read) == 32u << 20);
  CHECK(max_request_length(d, command::write) == 32u << 20);
  CHECK(max_request_length(d, command::trim) == u32);
  CHECK(max_request_length(d, command::write_zeroes) == u32);
  CHECK(max_request_length(d, command::cache) == u32);
  CHECK(max_request_length(d, command::block_status) == u32);
  CHECK(max_request_length(d, command::flush) == 0);
  CHECK(max_request_length(d, command::disc) == 0);
  CHECK(max_request_length(d, static_cast<command>(99)) == 0);

  // rounded down to the minimum block size
  const negotiated a = with_block_size(4096, 4096, 1000000);
  CHECK(max_request_length(a, command::read) == 1000000 - 1000000 % 4096);
  CHECK(max_request_length(a, command::trim) == u32 - u32 % 4096);
  CHECK(max_request_length(a, command::trim) % 4096 == 0);
  CHECK(max_request_length(a, command::block_status) == 0xfffff000u);

  // "no fixed limit": still a 32-bit payload; DF reads fit one compact chunk
  const negotiated unlimited = with_block_size(1, 4096, u32);
  CHECK(max_request_length(unlimited, command::write) == u32);
  CHECK(max_request_length(unlimited, command::read, command_flag::df) == u32 - 8);
  CHECK(max_request_length(unlimited, command::read) == u32);
  const negotiated unlimited512 = with_block_size(512, 4096, u32);
  CHECK(max_request_length(unlimited512, command::read, command_flag::df) == (u32 - 8) / 512 * 512);

  // extended headers: payload-less commands get the 64-bit length field, BLOCK_STATUS not
  const negotiated e = with_block_size(512, 4096, 32u << 20, true);
  CHECK(max_request_length(e, command::read) == 32u << 20);
  CHECK(max_request_length(e, command::trim) == std::numeric_limits<std::uint64_t>::max() / 512 * 512);
  CHECK(max_request_length(e, command::write_zeroes) % 512 == 0);
  CHECK(max_request_length(e, command::cache) > u32);
  CHECK(max_request_length(e, command::block_status) == u32 / 512 * 512);
  CHECK(max_request_length(with_block_size(1, 4096, u32, true), command::read, command_flag::df) == u32);

  // the value a real client machine negotiated is one it accepts
  block_size_constraints bs{512, 4096, 65536};
  auto c = client_in_transmission(1u << 20, tf::has_flags | tf::send_trim | tf::send_write_zeroes, &bs);
  const std::uint64_t rmax = max_request_length(c->negotiated(), command::read);
  CHECK(rmax == 65536);
  CHECK(c->read(0, static_cast<std::uint32_t>(rmax)).has_value());
  CHECK(c->read(0, static_cast<std::uint32_t>(rmax + 512)).error() == errc::payload_too_large);
  CHECK(c->trim(0, static_cast<std::uint32_t>(1u << 20)).has_value());
}

TEST_CASE("transfer: split_range boundaries and alignment") {
  // plain: equal pieces, last one shorter
  CHECK(pieces_of(split_range(0, 10, 4)) == std::vector<range_piece>{{0, 4}, {4, 4}, {8, 2}});
  CHECK(pieces_of(split_range(0, 8, 4)) == std::vector<range_piece>{{0, 4}, {4, 4}});
  CHECK(pieces_of(split_range(5, 3, 100)) == std::vector<range_piece>{{5, 3}});
  CHECK(pieces_of(split_range(7, 0, 4)).empty());
  CHECK(split_range(7, 0, 4).empty());
  CHECK(split_range(0, 10, 4).size() == 3);

  // a misaligned start: the first cut comes back onto the grid, every later piece is aligned
  CHECK(pieces_of(split_range(100, 2000, 1024, 512)) ==
        std::vector<range_piece>{{100, 924}, {1024, 1024}, {2048, 52}});
  // preferred cuts win when one is in reach
  CHECK(pieces_of(split_range(512, 20480, 10240, 512, 4096)) ==
        std::vector<range_piece>{{512, 7680}, {8192, 8192}, {16384, 4608}});
  // no preferred multiple in reach: fall back to the minimum
  CHECK(pieces_of(split_range(512, 4096, 1024, 512, 4096)) ==
        std::vector<range_piece>{{512, 1024}, {1536, 1024}, {2560, 1024}, {3584, 1024}});
  // max below the minimum: cut at max, unaligned (caller's limit wins)
  CHECK(pieces_of(split_range(0, 10, 3, 4)) == std::vector<range_piece>{{0, 3}, {3, 3}, {6, 3}, {9, 1}});
  // a zero max behaves as 1
  CHECK(split_range(0, 3, 0).size() == 3);
  // near the top of the 64-bit space: no overflow
  const std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
  CHECK(pieces_of(split_range(top - 10, 10, 4)) ==
        std::vector<range_piece>{{top - 10, 4}, {top - 6, 4}, {top - 2, 2}});
  CHECK(split_range(0, top, top).size() == 1);

  // exhaustive: pieces tile the range, respect max, and every interior cut is aligned
  for (std::uint64_t off : {0u, 1u, 511u, 512u, 4095u, 5000u})
    for (std::uint64_t len : {1u, 512u, 4096u, 10000u, 65536u})
      for (std::uint64_t mx : {512u, 1000u, 4096u, 6000u})
        for (std::uint32_t mn : {1u, 512u})
          for (std::uint32_t pref : {0u, 4096u}) {
            std::uint64_t at = off;
            for (const range_piece p : split_range(off, len, mx, mn, pref)) {
              REQUIRE(p.offset == at);
              REQUIRE(p.length > 0);
              REQUIRE(p.length <= mx);
              at += p.length;
              if (at != off + len) REQUIRE(at % mn == 0);
            }
            REQUIRE(at == off + len);
          }

  // constant-evaluated
  static_assert([] {
    std::uint64_t total = 0, n = 0;
    for (const range_piece p : split_range(0, 1u << 20, 65536, 512, 4096)) {
      total += p.length;
      ++n;
    }
    return total == (1u << 20) && n == 16;
  }());
}

TEST_CASE("transfer: split_requests follows the negotiated limits") {
  const negotiated n = with_block_size(512, 4096, 1u << 20);
  CHECK(split_requests(n, command::read, 0, 3u << 20).size() == 3);
  CHECK(split_requests(n, command::read, 0, 3u << 20, 2u << 20).size() == 3);   // cap above max: no effect
  CHECK(split_requests(n, command::read, 0, 3u << 20, 256u << 10).size() == 12);
  CHECK(split_requests(n, command::read, 0, 4096, 100).size() == 8);            // cap below minimum: minimum
  CHECK(split_requests(n, command::trim, 0, 8ull << 30).size() == 3);           // 32-bit lengths
  for (const range_piece p : split_requests(n, command::trim, 0, 8ull << 30)) {
    CHECK(p.length <= u32);
    CHECK(p.length % 512 == 0);
  }
  const negotiated e = with_block_size(512, 4096, 1u << 20, true);
  CHECK(split_requests(e, command::trim, 0, 8ull << 30).size() == 1);
  CHECK(split_requests(n, command::flush, 0, 0).empty());
}

TEST_CASE("transfer: send_plan of a client's WRITEs at every byte boundary") {
  auto c = client_in_transmission(1u << 20, tf::has_flags | tf::send_flush | tf::send_trim);
  REQUIRE(c->write(0, 100).has_value());
  REQUIRE(c->write(4096, 1).has_value());
  REQUIRE(c->flush().has_value());
  REQUIRE(c->trim(8192, 512).has_value());
  REQUIRE(c->write(100000, 3000).has_value());
  check_every_boundary(*c);
}

TEST_CASE("transfer: send_plan of a client's WRITEs with extended headers") {
  modern_setup setup;
  setup.mode = framing::extended;
  setup.size = 1u << 20;
  auto c = modern_client(setup);
  REQUIRE(c->write(0, 513).has_value());
  REQUIRE(c->write(70000, 64).has_value());
  REQUIRE(c->flush().has_value());
  check_every_boundary(*c);
}

TEST_CASE("transfer: send_plan of a server's READ replies, simple and structured") {
  SUBCASE("simple replies") {
    auto s = server_in_transmission(exports);
    const auto ev = feed(*s, request_bytes(command::read, 0, 1, 0, 700) + request_bytes(command::flush, 0, 2, 0, 0) +
                                 request_bytes(command::read, 0, 3, 5000, 33) +
                                 request_bytes(command::read, 0, 4, 9, 4096));
    std::size_t answered = 0;
    for (const auto& r : ev) {
      if (r.kind != event_kind::request) continue;
      REQUIRE(s->reply(r.req).has_value());
      ++answered;
    }
    REQUIRE(answered == 4);
    check_every_boundary(*s);
  }
  SUBCASE("structured replies: data chunks interleaved with headers") {
    auto s = modern_server(exports, {}, option_request(option::structured_reply));
    const auto ev =
        feed(*s, request_bytes(command::read, 0, 1, 0, 1000) + request_bytes(command::read, 0, 2, 4096, 64));
    std::vector<request> reqs;
    for (const auto& r : ev)
      if (r.kind == event_kind::request) reqs.push_back(r.req);
    REQUIRE(reqs.size() == 2);
    REQUIRE(s->reply_read_data(reqs[0], 0, 300, false).has_value());
    REQUIRE(s->reply_read_data(reqs[1], 4096, 64, true).has_value());
    REQUIRE(s->reply_read_data(reqs[0], 300, 700, true).has_value());
    check_every_boundary(*s);
  }
}

TEST_CASE("transfer: send_plan segments, stops and callbacks") {
  auto c = client_in_transmission(1u << 20, tf::has_flags | tf::send_flush);
  const auto w1 = c->write(0, 100);
  const auto w2 = c->write(512, 200);
  REQUIRE(w1.has_value());
  REQUIRE(w2.has_value());
  const bytes expected = reference(*c);

  SUBCASE("headers only: stops at the first payload, like pending_output()/pending_payload()") {
    send_plan<> plan(*c);
    REQUIRE(plan.segments().size() == 1);
    CHECK(plan.segments()[0].base == c->pending_output().data());
    CHECK(plan.segments()[0].len == c->pending_output().size());
    REQUIRE(plan.stopped_at().has_value());
    CHECK(*plan.stopped_at() == *c->pending_payload());
    CHECK_FALSE(plan.complete());
    REQUIRE(plan.advance(*c, plan.size()).has_value());
    CHECK(c->pending_output().empty());
    // the payload goes another way (sendfile); the plan after it has the next header
    REQUIRE(c->consume_payload(100).has_value());
    send_plan<> next(*c);
    CHECK(next.segments().size() == 1);
    CHECK(next.stopped_at()->cookie == w2.value());
  }
  SUBCASE("everything in one plan, whole") {
    send_plan<> plan(*c, from_disk);
    CHECK(plan.segments().size() == 4);  // header, data, header, data
    CHECK(plan.size() == expected.size());
    CHECK(plan.complete());
    CHECK_FALSE(plan.stopped_at().has_value());
    std::vector<std::uint64_t> sent;
    REQUIRE(plan.advance(*c, plan.size(), [&](const payload_span& p) { sent.push_back(p.cookie); }).has_value());
    CHECK(sent == std::vector<std::uint64_t>{w1.value(), w2.value()});
    CHECK(plan.empty());  // spent
    CHECK(send_plan<>(*c, from_disk).empty());
  }
  SUBCASE("a callback only for payloads sent to their end") {
    send_plan<> plan(*c, from_disk);
    std::vector<std::uint64_t> sent;
    const std::size_t header = c->pending_output().size();
    REQUIRE(plan.advance(*c, header + 99, [&](const payload_span& p) { sent.push_back(p.cookie); }).has_value());
    CHECK(sent.empty());
    send_plan<> rest(*c, from_disk);
    REQUIRE(rest.segments().size() == 3);
    CHECK(rest.segments()[0].len == 1);  // the last byte of the first payload
    REQUIRE(rest.advance(*c, 1, [&](const payload_span& p) { sent.push_back(p.cookie); }).has_value());
    CHECK(sent == std::vector<std::uint64_t>{w1.value()});
  }
  SUBCASE("a mapper that has part of a payload") {
    send_plan<> plan(*c, [](const payload_span& p) { return from_disk(p).first(std::min<std::size_t>(40, p.length)); });
    REQUIRE(plan.segments().size() == 2);
    CHECK(plan.segments()[1].len == 40);
    REQUIRE(plan.stopped_at().has_value());
    CHECK(plan.stopped_at()->offset == 40);
    CHECK(plan.stopped_at()->length == 60);
    bytes out;
    for (int guard = 0; guard < 100; ++guard) {
      send_plan<> p(*c, [](const payload_span& s) { return from_disk(s).first(std::min<std::size_t>(40, s.length)); });
      if (p.empty()) break;
      for (const send_segment& s : p.segments()) out.insert(out.end(), s.base, s.base + s.len);
      REQUIRE(p.advance(*c, p.size()).has_value());
    }
    CHECK(out == expected);
  }
  SUBCASE("too few segments: the plan ends early and the rest follows") {
    send_plan<1> plan(*c, from_disk);
    CHECK(plan.segments().size() == 1);
    CHECK_FALSE(plan.complete());
    send_plan<2> two(*c, from_disk);
    CHECK(two.segments().size() == 2);
    CHECK_FALSE(two.complete());
  }
  SUBCASE("more than was planned is refused") {
    send_plan<> plan(*c, from_disk);
    CHECK(plan.advance(*c, plan.size() + 1).error() == errc::payload_overrun);
    CHECK(reference(*c) == expected);  // nothing consumed
  }
  SUBCASE("nothing queued") {
    auto idle = client_in_transmission(1u << 20, tf::has_flags);
    send_plan<> plan(*idle, from_disk);
    CHECK(plan.empty());
    CHECK(plan.segments().empty());
    CHECK(plan.size() == 0);
    CHECK(plan.complete());
    CHECK(plan.advance(*idle, 0).has_value());
  }
}
