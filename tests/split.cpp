// SPDX-License-Identifier: MIT
// The split harness itself: it must notice a machine whose events depend on how the input
// was cut, and it must merge payload fragments.
#include <doctest/doctest.h>

#include "support/split.hpp"

using namespace nbdwire;
using namespace nbdwire_test;

namespace {
/// A deliberately wrong machine: one event per receive() call, carrying the call's size.
struct chunk_echo {
  receive_result receive(bytes_view in) {
    if (in.empty()) return {};
    event e{.kind = event_kind::payload};
    e.req.cookie = 1;
    e.offset = seen;
    e.data = in.first(1);  // reports only the first byte of every call
    seen += in.size();
    return {in.size(), e};
  }
  event on_eof() { return {.kind = event_kind::closed}; }
  bytes_view pending_output() const { return {}; }
  void consume_output(std::size_t) {}
  std::optional<payload_span> pending_payload() const { return std::nullopt; }
  result<void> consume_payload(std::uint64_t) { return {}; }
  errc error() const { return errc::ok; }
  std::uint64_t seen = 0;
};
}  // namespace

TEST_CASE("split: the harness tells split-dependent machines apart") {
  const bytes in = from_hex("0102030405");
  auto make = [] { return std::make_unique<chunk_echo>(); };
  const run_log whole = run_cuts(make, in, {}, {});
  const run_log bytewise = run_cuts(make, in, {1, 2, 3, 4}, {});
  REQUIRE(whole.events.size() == 1);
  CHECK(whole.events[0].data.size() == 1);
  // Byte by byte, the fragments are contiguous and merge into one 5-byte payload.
  REQUIRE(bytewise.events.size() == 1);
  CHECK(to_hex(bytewise.events[0].data) == "0102030405");
  CHECK_FALSE(whole == bytewise);
  const run_log halves = run_cuts(make, in, {2}, {});
  CHECK_FALSE(whole == halves);
}

TEST_CASE("split: payload fragments merge only when contiguous and of one request") {
  std::vector<recorded> log;
  const bytes a = from_hex("aabb"), b = from_hex("cc");
  event e{.kind = event_kind::payload};
  e.req.cookie = 7;
  e.offset = 100;
  e.data = a;
  append(log, e);
  e.offset = 102;
  e.data = b;
  append(log, e);
  REQUIRE(log.size() == 1);
  CHECK(to_hex(log[0].data) == "aabbcc");
  e.offset = 200;  // not contiguous
  append(log, e);
  e.req.cookie = 8;
  e.offset = 201;
  append(log, e);
  CHECK(log.size() == 3);
}
