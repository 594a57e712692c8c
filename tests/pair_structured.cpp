// SPDX-License-Identifier: MIT
// Client against server in memory with extended headers on/off x structured replies on/off:
// sparse reads (data and hole chunks), block status with base:allocation, REQ_ONE, and
// errors with messages. Each session runs with the bytes moved whole, one at a time, and in
// 7-byte pieces.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <string>
#include <tuple>

#include "support/pump.hpp"

using namespace nbdwire;
using namespace nbdwire_test;
using K = event_kind;

namespace {
namespace tf = transmission_flag;
namespace cf = command_flag;
constexpr std::size_t disk_size = 64 * 1024;
constexpr std::array<std::size_t, 3> pieces{static_cast<std::size_t>(-1), 1, 7};
constexpr std::array<std::string_view, 1> contexts{"base:allocation"};

const std::array<export_config, 1> exports{export_config{
    "disk", "", disk_size, tf::send_flush | tf::send_fua | tf::send_trim | tf::send_write_zeroes, {}}};

std::vector<recorded> of_kind(const std::vector<recorded>& log, K k, std::uint64_t cookie) {
  std::vector<recorded> v;
  for (const auto& e : log)
    if (e.kind == k && e.req.cookie == cookie) v.push_back(e);
  return v;
}

struct session {
  server s;
  client c;
  machine_pair p;
  session(bool ext, bool sr, std::size_t piece)
      : s(server_cfg()), c(client_cfg(ext, sr)), p(c, s, disk_size) {
    p.piece = piece;
    p.server_contexts.assign(contexts.begin(), contexts.end());
  }
  static server_config server_cfg() {
    server_config cfg;
    cfg.exports = exports;
    cfg.meta_contexts = contexts;
    return cfg;
  }
  static client_config client_cfg(bool ext, bool sr) {
    client_config cfg;
    cfg.request_extended_headers = ext;
    cfg.request_structured_replies = sr;
    cfg.meta_contexts = contexts;
    return cfg;
  }
};

void handshake(session& t, bool ext, bool sr) {
  t.p.run();
  REQUIRE(t.c.go("disk").has_value());
  t.p.run();
  REQUIRE(t.c.state() == client_state::transmission);
  REQUIRE(t.s.state() == server_state::transmission);
  const bool structured = ext || sr;
  CHECK(t.c.negotiated().extended_headers == ext);
  CHECK(t.s.negotiated().extended_headers == ext);
  CHECK(t.c.negotiated().structured_replies == structured);
  CHECK(t.s.negotiated().structured_replies == structured);
  CHECK(t.c.negotiated().transmission_flags == t.s.negotiated().transmission_flags);
  REQUIRE(t.c.negotiated().meta_context_count == (structured ? 1u : 0u));
  REQUIRE(t.s.negotiated().meta_context_count == (structured ? 1u : 0u));
  if (structured) {
    CHECK(t.c.negotiated().meta_contexts[0] == meta_context_binding{0, 0});
    CHECK(t.s.negotiated().has_meta_context(0));
  }
}

/// The client's reading of the contract: no need_more with input left, no late events.
void check_client_contract(const machine_pair& p) {
  CHECK(p.client_need_more_with_input_left == 0);
  CHECK(p.client_late_events == 0);
}

void finish(session& t) {
  if (!t.c.disconnect().has_value()) {
    FAIL_CHECK("client cannot disconnect: " << to_string(t.c.error()));
    return;  // the other sessions still run
  }
  t.p.run();
  CHECK(t.p.server_events.back().kind == K::disconnected);
  CHECK(t.p.client_eof().kind == K::disconnected);
  CHECK(t.c.error() == errc::ok);
  CHECK(t.s.error() == errc::ok);
}

/// Writes data into a zero disk so it has holes: [0, 4096), [8192, 9192) and [20000, 20100).
void make_sparse(session& t) {
  REQUIRE(t.c.write(0, 4096).has_value());
  REQUIRE(t.c.write(8192, 1000).has_value());
  REQUIRE(t.c.write(20000, 100).has_value());
  t.p.run();
  CHECK(t.c.in_flight() == 0);
  CHECK(t.p.server_disk.read(8192, 1000) == t.p.client_source.read(8192, 1000));
}
}  // namespace

TEST_CASE("pair structured: sparse reads in every framing") {
  for (const bool ext : {false, true}) {
    for (const bool sr : {false, true}) {
      for (const std::size_t piece : pieces) {
        INFO("ext " << ext << " sr " << sr << " piece " << piece);
        session t(ext, sr, piece);
        handshake(t, ext, sr);
        make_sparse(t);
        t.p.sparse_reads = true;
        // Pre-fill the client's view so holes must be zeroed by read_hole events.
        std::fill(t.p.client_read.data.begin(), t.p.client_read.data.end(), std::byte{0xee});
        const std::size_t before = t.p.client_events.size();
        const auto whole = t.c.read(0, 32768);
        const auto inside = t.c.read(8704, 512);  // all data, one chunk
        const auto hole = t.c.read(40960, 4096);  // all hole, one chunk
        REQUIRE(whole.has_value());
        REQUIRE(inside.has_value());
        REQUIRE(hole.has_value());
        t.p.run();
        CHECK_MESSAGE(t.c.error() == errc::ok, to_string(t.c.error()));
        CHECK(t.c.in_flight() == 0);
        CHECK(t.p.client_read.read(0, 32768) == t.p.server_disk.read(0, 32768));
        CHECK(t.p.client_read.read(40960, 4096) == bytes(4096));
        const auto since = t.p.client_since(before);
        const std::size_t holes = of_kind(since, K::read_hole, whole.value()).size();
        if (ext || sr) {
          // [0,4096) data, hole, [8192,9216) data, hole, [19968,20480) data, hole.
          CHECK(holes == 3);
          CHECK(of_kind(since, K::read_hole, hole.value()).size() == 1);
          CHECK(of_kind(since, K::read_hole, inside.value()).empty());
        } else {
          CHECK(holes == 0);
        }
        for (auto ck : {whole.value(), inside.value(), hole.value()}) {
          const auto r = of_kind(since, K::reply, ck);
          CHECK(r.size() == 1);
          if (!r.empty()) CHECK(r[0].status == nbd_error::ok);
        }
        check_client_contract(t.p);
        finish(t);
      }
    }
  }
}

TEST_CASE("pair structured: block status with base:allocation in every framing") {
  for (const bool ext : {false, true}) {
    for (const bool sr : {false, true}) {
      for (const std::size_t piece : pieces) {
        INFO("ext " << ext << " sr " << sr << " piece " << piece);
        session t(ext, sr, piece);
        handshake(t, ext, sr);
        make_sparse(t);
        if (!ext && !sr) {
          CHECK(t.c.block_status(0, 4096).error() == errc::command_not_advertised);
          finish(t);
          continue;
        }
        const std::size_t before = t.p.client_events.size();
        const auto all = t.c.block_status(0, disk_size);
        const auto part = t.c.block_status(4096, 5000);  // unaligned length
        REQUIRE(all.has_value());
        REQUIRE(part.has_value());
        t.p.run();
        CHECK(t.c.in_flight() == 0);
        const auto since = t.p.client_since(before);
        for (const auto& [ck, off, len] : {std::tuple{all.value(), std::uint64_t{0}, std::uint64_t{disk_size}},
                                           std::tuple{part.value(), std::uint64_t{4096}, std::uint64_t{5000}}}) {
          const auto extents = of_kind(since, K::extent, ck);
          const auto model = t.p.allocation_runs(off, len);
          REQUIRE(extents.size() == model.size());
          std::uint64_t at = off;
          for (std::size_t i = 0; i < extents.size(); ++i) {
            CHECK(extents[i].context_id == 0);
            CHECK(extents[i].offset == at);
            CHECK(extents[i].length == model[i].first);
            CHECK(extents[i].extent_flags == (model[i].second ? 3u : 0u));
            at += model[i].first;
          }
          const auto r = of_kind(since, K::reply, ck);
          REQUIRE(r.size() == 1);
          CHECK(r[0].status == nbd_error::ok);
        }
        check_client_contract(t.p);
        finish(t);
      }
    }
  }
}

TEST_CASE("pair structured: block status with REQ_ONE") {
  for (const bool ext : {false, true}) {
    for (const std::size_t piece : pieces) {
      INFO("ext " << ext << " piece " << piece);
      session t(ext, !ext, piece);
      handshake(t, ext, !ext);
      make_sparse(t);
      const std::size_t before = t.p.client_events.size();
      const auto one = t.c.block_status(0, 16384, cf::req_one);
      REQUIRE(one.has_value());
      t.p.run();
      const auto extents = of_kind(t.p.client_since(before), K::extent, one.value());
      REQUIRE(extents.size() == 1);
      CHECK(extents[0].offset == 0);
      CHECK(extents[0].length == 4096);
      CHECK(extents[0].extent_flags == 0);
      check_client_contract(t.p);
      finish(t);
    }
  }
}

TEST_CASE("pair structured: errors with messages in every framing") {
  for (const bool ext : {false, true}) {
    for (const bool sr : {false, true}) {
      for (const std::size_t piece : pieces) {
        INFO("ext " << ext << " sr " << sr << " piece " << piece);
        session t(ext, sr, piece);
        handshake(t, ext, sr);
        t.p.server_policy = [](const request& r) { return r.offset == 32768 ? nbd_error::eio : nbd_error::ok; };
        t.p.server_message = [](const request& r) { return "media error at " + std::to_string(r.offset); };
        const std::size_t before = t.p.client_events.size();
        const auto bad_read = t.c.read(32768, 4096);
        const auto bad_write = t.c.write(32768, 512);
        const auto good = t.c.read(0, 512);
        REQUIRE(bad_read.has_value());
        REQUIRE(bad_write.has_value());
        REQUIRE(good.has_value());
        t.p.run();
        CHECK(t.c.in_flight() == 0);
        const auto since = t.p.client_since(before);
        for (auto ck : {bad_read.value(), bad_write.value()}) {
          const auto r = of_kind(since, K::reply, ck);
          REQUIRE(r.size() == 1);
          CHECK(r[0].status == nbd_error::eio);
          const auto e = of_kind(since, K::error_chunk, ck);
          if (ext || sr) {
            REQUIRE(e.size() == 1);
            CHECK(e[0].data == str_bytes("media error at 32768"));
            CHECK(e[0].status == nbd_error::eio);
          } else {
            CHECK(e.empty());
          }
        }
        CHECK(t.p.server_disk.read(32768, 512) == bytes(512));
        const auto r = of_kind(since, K::reply, good.value());
        REQUIRE(r.size() == 1);
        CHECK(r[0].status == nbd_error::ok);
        check_client_contract(t.p);
        finish(t);
      }
    }
  }
}
