// SPDX-License-Identifier: MIT
// Client against server in memory, for every handshake style: writes then reads verified
// against a disk model, refusals included. Each session runs with the bytes moved whole,
// one at a time, and in 7-byte pieces.
#include <doctest/doctest.h>

#include <array>

#include "support/pump.hpp"

using namespace nbdwire;
using namespace nbdwire_test;
using K = event_kind;

namespace {
namespace tf = transmission_flag;
constexpr std::size_t disk_size = 64 * 1024;
constexpr std::array<std::size_t, 3> pieces{static_cast<std::size_t>(-1), 1, 7};

const std::array<export_config, 2> exports{
    export_config{"disk", "scratch disk", disk_size, tf::send_flush | tf::send_fua | tf::send_trim | tf::send_write_zeroes, {}},
    export_config{"ro", "", disk_size, tf::read_only, {}}};

std::size_t count(const std::vector<recorded>& log, K k) {
  return static_cast<std::size_t>(std::count_if(log.begin(), log.end(), [k](const recorded& r) { return r.kind == k; }));
}

/// Writes, overwrites, zeroes and reads back; checks the replies and both disk models.
void exercise(machine_pair& p, bool can_zero) {
  client& c = p.client;
  const std::size_t before = p.client_events.size();
  const auto w1 = c.write(0, 4096);
  const auto w2 = c.write(8192, 1000);
  REQUIRE(w1.has_value());
  REQUIRE(w2.has_value());
  p.run();
  if (can_zero) {
    REQUIRE(c.write_zeroes(0, 512).has_value());
    p.run();
  }
  const auto r1 = c.read(0, 4096);
  const auto r2 = c.read(8192, 1000);
  const auto r3 = c.read(disk_size - 16, 16);
  REQUIRE(r1.has_value());
  REQUIRE(r2.has_value());
  REQUIRE(r3.has_value());
  p.run();
  CHECK(c.in_flight() == 0);
  // What the client sent is on the server's disk ...
  bytes want = p.client_source.read(0, 4096);
  if (can_zero) std::fill_n(want.begin(), 512, std::byte{0});
  CHECK(p.server_disk.read(0, 4096) == want);
  CHECK(p.server_disk.read(8192, 1000) == p.client_source.read(8192, 1000));
  CHECK(p.server_disk.read(4096, 4096) == bytes(4096));
  // ... and what the client read back is what the server has.
  CHECK(p.client_read.read(0, 4096) == want);
  CHECK(p.client_read.read(8192, 1000) == p.client_source.read(8192, 1000));
  CHECK(p.client_read.read(disk_size - 16, 16) == bytes(16));
  const auto since = p.client_since(before);
  CHECK(count(since, K::reply) == (can_zero ? 6u : 5u));
  for (const auto& e : since)
    if (e.kind == K::reply) CHECK(e.status == nbd_error::ok);
}

void disconnect(machine_pair& p) {
  REQUIRE(p.client.disconnect().has_value());
  p.run();
  CHECK(p.server_events.back().kind == K::disconnected);
  CHECK(p.server.state() == server_state::closed);
  CHECK(p.client_eof().kind == K::disconnected);
  CHECK(p.client.error() == errc::ok);
  CHECK(p.server.error() == errc::ok);
}
}  // namespace

TEST_CASE("pair: fixed newstyle GO with writes reads and refusals") {
  for (const std::size_t piece : pieces) {
    INFO("piece " << piece);
    server_config scfg;
    scfg.exports = exports;
    server s(scfg);
    client c;
    machine_pair p(c, s, disk_size);
    p.piece = piece;
    p.run();
    REQUIRE(c.can_send_option());
    REQUIRE(c.go("disk").has_value());
    p.run();
    REQUIRE(c.state() == client_state::transmission);
    REQUIRE(s.state() == server_state::transmission);
    CHECK(c.negotiated().export_size == disk_size);
    CHECK(c.negotiated().transmission_flags == s.negotiated().transmission_flags);
    CHECK(c.negotiated().block_size_advertised);
    exercise(p, true);
    // Refused by the client before anything is sent.
    CHECK(c.read(disk_size, 512).error() == errc::request_out_of_range);
    CHECK(c.cache(0, 512).error() == errc::command_not_advertised);
    // Refused by the server: a WRITE that fails with EIO leaves the disk unchanged and the
    // stream in sync.
    p.server_policy = [](const request& r) { return r.offset == 32768 ? nbd_error::eio : nbd_error::ok; };
    const auto bad = c.write(32768, 2048);
    const auto good = c.write(40960, 100);
    REQUIRE(bad.has_value());
    REQUIRE(good.has_value());
    p.run();
    CHECK(p.server_disk.read(32768, 2048) == bytes(2048));
    CHECK(p.server_disk.read(40960, 100) == p.client_source.read(40960, 100));
    bool saw_eio = false;
    for (const auto& e : p.client_events)
      if (e.kind == K::reply && e.req.cookie == bad.value()) saw_eio = e.status == nbd_error::eio;
    CHECK(saw_eio);
    REQUIRE(c.flush().has_value());
    REQUIRE(c.trim(0, 4096).has_value());
    p.run();
    CHECK(c.in_flight() == 0);
    disconnect(p);
  }
}

TEST_CASE("pair: LIST INFO and refusals before GO") {
  for (const std::size_t piece : pieces) {
    INFO("piece " << piece);
    server_config scfg;
    scfg.exports = exports;
    server s(scfg);
    client c;
    machine_pair p(c, s, disk_size);
    p.piece = piece;
    p.run();
    REQUIRE(c.list().has_value());
    p.run();
    std::vector<std::string> names;
    for (const auto& e : p.client_events)
      if (e.kind == K::export_listed) names.emplace_back(as_chars(e.data));
    CHECK(names == std::vector<std::string>{"disk", "ro"});
    CHECK(p.client_events.back().kind == K::option_done);
    REQUIRE(c.info("ro").has_value());
    p.run();
    bool saw_ro = false;
    for (const auto& e : p.client_events)
      if (e.kind == K::info && e.info == info_type::export_info) saw_ro = (e.transmission_flags & tf::read_only) != 0;
    CHECK(saw_ro);
    CHECK(p.client_events.back().kind == K::option_done);
    REQUIRE(c.go("missing").has_value());
    p.run();
    CHECK(p.client_events.back().kind == K::option_refused);
    CHECK(p.client_events.back().reply == reply_type::err_unknown);
    REQUIRE(c.go("ro").has_value());
    p.run();
    REQUIRE(c.state() == client_state::transmission);
    CHECK(s.negotiated().export_index == 1);
    CHECK(c.write(0, 512).error() == errc::read_only_export);
    REQUIRE(c.read(0, 512).has_value());
    p.run();
    CHECK(p.client_events.back().kind == K::reply);
    disconnect(p);
  }
}

TEST_CASE("pair: ABORT during the handshake") {
  for (const std::size_t piece : pieces) {
    server_config scfg;
    scfg.exports = exports;
    server s(scfg);
    client c;
    machine_pair p(c, s, disk_size);
    p.piece = piece;
    p.run();
    REQUIRE(c.abort().has_value());
    p.run();
    CHECK(p.client_events.back().kind == K::disconnected);
    CHECK(p.server_events.back().kind == K::disconnected);
    CHECK(c.state() == client_state::closed);
    CHECK(s.state() == server_state::closed);
  }
}

TEST_CASE("pair: EXPORT_NAME with and without NO_ZEROES") {
  for (const bool server_nz : {true, false}) {
    for (const bool client_nz : {true, false}) {
      for (const std::size_t piece : pieces) {
        INFO("server NO_ZEROES " << server_nz << " client " << client_nz << " piece " << piece);
        server_config scfg;
        scfg.exports = exports;
        scfg.no_zeroes = server_nz;
        server s(scfg);
        client_config ccfg;
        ccfg.no_zeroes = client_nz;
        client c(ccfg);
        machine_pair p(c, s, disk_size);
        p.piece = piece;
        p.run();
        REQUIRE(c.export_name("disk").has_value());
        p.run();
        REQUIRE(c.state() == client_state::transmission);
        REQUIRE(s.state() == server_state::transmission);
        CHECK(c.negotiated().export_size == disk_size);
        exercise(p, true);
        disconnect(p);
      }
    }
  }
}

TEST_CASE("pair: EXPORT_NAME for a missing export ends the connection") {
  server_config scfg;
  scfg.exports = exports;
  server s(scfg);
  client c;
  machine_pair p(c, s, disk_size);
  p.run();
  REQUIRE(c.export_name("missing").has_value());
  p.run();
  CHECK(s.state() == server_state::failed);
  CHECK(s.error() == errc::export_name_unknown);
  CHECK(p.client_eof().error == errc::export_name_refused);
}

TEST_CASE("pair: non-fixed newstyle") {
  for (const std::size_t piece : pieces) {
    server_config scfg;
    scfg.exports = exports;
    scfg.style = handshake_style::newstyle;
    server s(scfg);
    client c;
    machine_pair p(c, s, disk_size);
    p.piece = piece;
    p.run();
    CHECK(c.list().error() == errc::option_needs_fixed_newstyle);
    REQUIRE(c.go("disk").has_value());  // becomes EXPORT_NAME
    p.run();
    REQUIRE(c.state() == client_state::transmission);
    CHECK(c.negotiated().style == handshake_style::newstyle);
    exercise(p, true);
    disconnect(p);
  }
}

TEST_CASE("pair: oldstyle") {
  const std::array<export_config, 1> one{export_config{"", "", disk_size, tf::send_flush, {}}};
  for (const std::size_t piece : pieces) {
    server_config scfg;
    scfg.exports = one;
    scfg.style = handshake_style::oldstyle;
    server s(scfg);
    client c;
    machine_pair p(c, s, disk_size);
    p.piece = piece;
    p.run();
    REQUIRE(c.state() == client_state::transmission);
    CHECK(c.negotiated().style == handshake_style::oldstyle);
    CHECK(c.write_zeroes(0, 512).error() == errc::command_not_advertised);
    exercise(p, false);
    disconnect(p);
  }
}

TEST_CASE("pair: legacy 1997") {
  const std::array<export_config, 1> one{export_config{"", "", disk_size, 0, {}}};
  for (const std::size_t piece : pieces) {
    server_config scfg;
    scfg.exports = one;
    scfg.style = handshake_style::legacy_1997;
    server s(scfg);
    client_config ccfg;
    ccfg.style = handshake_style::legacy_1997;
    ccfg.legacy_export_size = disk_size;
    client c(ccfg);
    machine_pair p(c, s, disk_size);
    p.piece = piece;
    exercise(p, false);
    // A refusal: a READ the server fails; the 1997 reply has no data on error.
    p.server_policy = [](const request& r) { return r.offset == 512 ? nbd_error::eio : nbd_error::ok; };
    const auto failing = c.read(512, 512);
    REQUIRE(failing.has_value());
    REQUIRE(c.read(1024, 16).has_value());
    p.run();
    CHECK(c.in_flight() == 0);
    bool saw_failure = false;
    for (const auto& e : p.client_events)
      if (e.kind == K::reply && e.req.cookie == failing.value()) saw_failure = e.status != nbd_error::ok;
    CHECK(saw_failure);
    CHECK(p.client_read.read(1024, 16) == p.server_disk.read(1024, 16));
    REQUIRE(c.disconnect().has_value());
    CHECK(p.server_eof().kind == K::closed);
    CHECK(p.client_eof().kind == K::disconnected);
  }
}
