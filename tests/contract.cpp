// SPDX-License-Identifier: MIT
// The embedding contract (docs/embedding.md): every loop written from the docs ends, a
// request is answered once, an accepted reply never waits for outbox room, the protocol's
// obligations are never skipped, tags come back, and a negotiated connection can be handed
// over to new machines.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "nbdwire/client.hpp"
#include "nbdwire/server.hpp"
#include "support/machines.hpp"

using namespace nbdwire;
using namespace nbdwire_test;
using K = event_kind;

namespace {

const export_config disk_export[] = {{"disk", "", 1u << 20, 0, {}}};

/// The loop people write from a quick read: "call receive() until need_more". Returns how
/// many calls it made, stopping at 1000 (a loop that spins).
template <class Machine>
int naive_loop(Machine& m, bytes_view in) {
  int calls = 0;
  while (calls < 1000) {
    ++calls;
    const auto r = m.receive(in);
    in = in.subspan(r.consumed);
    if (r.ev.kind == K::need_more) break;
  }
  return calls;
}

/// The documented loop: do { receive } while (call_again()).
template <class Machine>
std::vector<K> documented_loop(Machine& m, bytes_view in) {
  std::vector<K> kinds;
  receive_result r;
  do {
    r = m.receive(in);
    in = in.subspan(r.consumed);
    kinds.push_back(r.ev.kind);
  } while (r.call_again() && kinds.size() < 1000);
  return kinds;
}

}  // namespace

TEST_CASE("contract: the loop after NBD_OPT_ABORT ends") {
  const bytes in = client_flags(3) + option_request(option::abort) + bytes(40, std::byte{0x55});
  {
    auto s = make_server(disk_export);
    CHECK(naive_loop(*s, in) < 5);
    CHECK(s->finished());
    CHECK(naive_loop(*s, bytes(10, std::byte{1})) == 1);  // later input is dropped: need_more
  }
  {
    auto s = make_server(disk_export);
    const auto kinds = documented_loop(*s, in);
    REQUIRE(!kinds.empty());
    CHECK(kinds.back() == K::disconnected);
    CHECK(s->finished());
    CHECK_FALSE(s->drained());  // the ACK is still queued
    (void)take_output(*s);
    CHECK(s->drained());
  }
}

TEST_CASE("contract: the loop after NBD_CMD_DISC ends, and requests in flight are still answered") {
  auto s = server_in_transmission(disk_export);
  const bytes in = request_bytes(command::read, 0, 7, 0, 512) + request_bytes(command::disc, 0, 8, 0, 0) +
                   bytes(64, std::byte{0x42});
  const auto kinds = documented_loop(*s, in);
  CHECK(kinds == std::vector<K>{K::request, K::disconnected});
  CHECK(naive_loop(*s, in) == 1);  // after the end, input is dropped: need_more at once
  CHECK(s->finished());
  CHECK_FALSE(s->drained());
  CHECK(s->reply(request{7, 0, 0, 0, 512}).has_value());
  CHECK(s->outstanding() == 0);
  (void)take_output(*s);
  CHECK(s->drained());
}

TEST_CASE("contract: a failure is reported once and no loop spins on it") {
  auto s = server_in_transmission(disk_export);
  const bytes bad(28, std::byte{0x99});
  CHECK(naive_loop(*s, bad) == 2);  // failed, then need_more
  CHECK(s->state() == server_state::failed);
  CHECK(s->error() == errc::bad_request_magic);
  CHECK(naive_loop(*s, bad) == 1);
  CHECK(s->on_eof().error == errc::bad_request_magic);
}

TEST_CASE("contract: a second reply to the same request is refused and changes nothing") {
  auto s = server_in_transmission(disk_export);
  const auto ev = feed(*s, request_bytes(command::read, 0, 1, 0, 512) + request_bytes(command::read, 0, 2, 512, 512));
  REQUIRE(ev.size() == 2);
  CHECK(s->outstanding() == 2);
  REQUIRE(s->reply(ev[0].req).has_value());
  CHECK(s->reply(ev[0].req).error() == errc::unknown_request);
  CHECK(s->outstanding() == 1);
  CHECK(s->reply(ev[1].req, nbd_error::eio).has_value());  // the other request's reply is untouched
  CHECK(s->reply(request{99, 3, 0, 0, 0}).error() == errc::unknown_request);
  CHECK(take_output(*s) == simple_reply(nbd_error::ok, 1) + pattern(0, 512) + simple_reply(nbd_error::eio, 2));
}

TEST_CASE("contract: accepted replies never wait for room, with every request in flight and the longest messages") {
  for (const bool extended : {false, true}) {
    CAPTURE(extended);
    nbdwire::negotiated n;
    n.style = handshake_style::fixed_newstyle;
    n.export_size = 1u << 20;
    n.transmission_flags = transmission_flag::has_flags;
    n.structured_replies = true;
    n.extended_headers = extended;
    // Both machines built from `negotiated`: the hand-over constructors.
    client c(n);
    server_config cfg;
    cfg.exports = disk_export;
    server s(cfg, n);
    REQUIRE(c.state() == client_state::transmission);
    REQUIRE(s.state() == server_state::transmission);
    for (std::size_t i = 0; i < max_in_flight; ++i)
      REQUIRE(c.read(i * 512, 512, 0, /*tag=*/1000 + i).has_value());
    CHECK(c.read(0, 512).error() == errc::too_many_in_flight);
    const bytes requests = take_output(c);
    // The server takes every request without its output ever being drained.
    std::vector<request> accepted;
    bytes_view in(requests);
    receive_result r;
    do {
      r = s.receive(in);
      in = in.subspan(r.consumed);
      if (r.ev.kind == K::request) accepted.push_back(r.ev.req);
    } while (r.call_again());
    REQUIRE(accepted.size() == max_in_flight);
    CHECK(in.empty());
    // Every reply is accepted: an error with a message of max_string bytes each (shortened
    // to the room left, at a character boundary), and READ data for the last few.
    const std::string message(max_string, 'x');
    for (std::size_t i = 0; i < accepted.size(); ++i) {
      const auto res = i % 4 == 3 ? s.reply(accepted[i]) : s.reply(accepted[i], nbd_error::eio, message);
      CHECK_MESSAGE(res.has_value(), "reply ", i, ": ", to_string(res.error()));
    }
    CHECK(s.outstanding() == 0);
    // What went out is a valid reply to every request.
    bytes out;
    drain(s, out, [](payload_span p) { return bytes(p.length, std::byte{0x11}); });
    std::size_t replies = 0, errors = 0;
    bytes_view rest(out);
    do {
      r = c.receive(rest);
      rest = rest.subspan(r.consumed);
      if (r.ev.kind == K::reply) {
        ++replies;
        CHECK(r.ev.tag == 1000 + (r.ev.req.offset / 512));
        if (r.ev.status == nbd_error::eio) ++errors;
      }
    } while (r.call_again());
    CHECK(c.state() == client_state::transmission);
    CHECK(replies == max_in_flight);
    CHECK(errors == max_in_flight - max_in_flight / 4);
  }
}

TEST_CASE("contract: a request is only accepted while its reply's room can be reserved") {
  auto s = server_in_transmission(disk_export);
  bytes many;
  for (std::uint64_t i = 0; i < max_in_flight + 5; ++i) many = many + request_bytes(command::read, 0, i, 0, 512);
  bytes_view in(many);
  std::size_t requests = 0;
  receive_result r;
  do {
    r = s->receive(in);
    in = in.subspan(r.consumed);
    if (r.ev.kind == K::request) ++requests;
  } while (r.call_again());
  CHECK(r.ev.kind == K::blocked);  // the table is full: answer something first
  CHECK(requests == max_in_flight);
  REQUIRE(s->reply(request{0, 0, 0, 0, 512}).has_value());
  (void)take_output(*s);  // answered and sent: its room is free again
  r = s->receive(in);
  CHECK(r.ev.kind == K::request);
  CHECK(r.ev.req.cookie == max_in_flight);
}

TEST_CASE("contract: the client's ABORT after ERR_SHUTDOWN goes out even with a full outbox") {
  // The longest LIST_META_CONTEXT the client accepts fills its outbox as far as it can be.
  auto fill = [](std::size_t third) {
    auto c = std::make_unique<client>(simple_client());
    (void)feed(*c, greeting(handshake_flag::fixed_newstyle | handshake_flag::no_zeroes));
    static std::string q1, q2, q3;
    q1.assign(max_string, 'a');
    q2.assign(max_string, 'b');
    q3.assign(third, 'c');
    static std::string_view queries[3];
    queries[0] = q1, queries[1] = q2, queries[2] = q3;
    const bool ok = c->list_meta_context("", queries).has_value();
    return std::pair{ok, std::move(c)};
  };
  std::size_t lo = 0, hi = max_string;  // find the largest third query that fits
  REQUIRE(fill(lo).first);
  REQUIRE_FALSE(fill(hi).first);
  while (hi - lo > 1) {
    const std::size_t mid = (lo + hi) / 2;
    (fill(mid).first ? lo : hi) = mid;
  }
  auto [ok, c] = fill(lo);
  REQUIRE(ok);
  const auto ev = feed(*c, option_reply(option::list_meta_context, reply_type::err_shutdown));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].kind == K::option_refused);
  const bytes out = take_output(*c);
  REQUIRE(out.size() > 16);
  CHECK(bytes(out.end() - 16, out.end()) == option_request(option::abort));
  // ... and the ACK of the ABORT ends the connection.
  CHECK(kinds_string(feed(*c, ack(option::abort))) == "disconnected");
}

TEST_CASE("contract: tags come back on every event about a request; payload pieces say what remains") {
  // Client: READ data, holes and the reply carry the tag given to read().
  auto s = server_in_transmission(disk_export);
  auto c = client_in_transmission(1u << 20, transmission_flag::has_flags | transmission_flag::send_flush);
  REQUIRE(c->read(4096, 1000, 0, 77).has_value());
  bytes_view in;
  bytes reqs = take_output(*c);
  auto sev = feed(*s, reqs);
  REQUIRE(sev.size() == 1);
  REQUIRE(s->reply(sev[0].req).has_value());
  bytes out;
  drain(*s, out, [](payload_span p) { return bytes(p.length, std::byte{3}); });
  std::uint64_t seen = 0;
  in = out;
  receive_result r;
  std::uint64_t last_remaining = 1;
  do {
    r = c->receive(in.first(std::min<std::size_t>(in.size(), 100)));  // in pieces
    in = in.subspan(r.consumed);
    if (r.ev.kind == K::payload) {
      CHECK(r.ev.tag == 77);
      seen += r.ev.data.size();
      CHECK(r.ev.remaining == 1000 - seen);
      last_remaining = r.ev.remaining;
    }
    if (r.ev.kind == K::reply) CHECK(r.ev.tag == 77);
  } while (r.call_again() || (r.ev.kind == K::need_more && !in.empty()));
  CHECK(seen == 1000);
  CHECK(last_remaining == 0);

  // Server: the tag set on a WRITE comes back on each payload piece, and `remaining` marks
  // the payload's end.
  const bytes write = request_bytes(command::write, 0, 5, 0, 300) + bytes(300, std::byte{9});
  bytes_view w(write);
  r = s->receive(w.first(28));
  w = w.subspan(r.consumed);
  REQUIRE(r.ev.kind == K::request);
  CHECK(r.ev.remaining == 300);
  REQUIRE(s->set_tag(r.ev.req, 4242).has_value());
  CHECK(s->tag_of(r.ev.req) == std::optional<std::uint64_t>{4242});
  std::uint64_t got = 0;
  while (!w.empty()) {
    r = s->receive(w.first(std::min<std::size_t>(w.size(), 128)));
    w = w.subspan(r.consumed);
    REQUIRE(r.ev.kind == K::payload);
    CHECK(r.ev.tag == 4242);
    got += r.ev.data.size();
    CHECK(r.ev.remaining == 300 - got);
  }
  CHECK(got == 300);
  CHECK(s->set_tag(request{}, 1).error() == errc::unknown_request);
}

TEST_CASE("contract: payload spans carry the request's tag, both directions") {
  auto c = client_in_transmission(1u << 20, transmission_flag::has_flags);
  const auto wk = c->write(0, 100, 0, 55);
  REQUIRE(wk.has_value());
  REQUIRE(c->pending_payload().has_value());
  CHECK(c->pending_payload()->tag == 55);
  (void)take_output(*c);
  const auto ck = c->read(512, 100, 0, 66);
  REQUIRE(ck.has_value());
  (void)take_output(*c);
  // The WRITE's reply, then the READ's reply header: its data is announced with its tag.
  const auto done = feed(*c, simple_reply(nbd_error::ok, *wk));
  REQUIRE(done.size() == 1);
  CHECK(done[0].kind == K::reply);
  (void)feed(*c, simple_reply(nbd_error::ok, *ck));
  REQUIRE(c->incoming_payload().has_value());
  CHECK(c->incoming_payload()->tag == 66);
  CHECK(c->incoming_payload()->length == 100);

  // Server: a READ reply's data and a WRITE's incoming data carry the tag from set_tag().
  auto s = server_in_transmission(disk_export);
  auto sev = feed(*s, request_bytes(command::read, 0, 1, 0, 512));
  REQUIRE(sev.size() == 1);
  REQUIRE(s->set_tag(sev[0].req, 7).has_value());
  REQUIRE(s->reply(sev[0].req).has_value());
  REQUIRE(s->pending_payload().has_value());
  CHECK(s->pending_payload()->tag == 7);
  (void)take_output(*s);
  const bytes header = request_bytes(command::write, 0, 2, 0, 100);
  const auto r = s->receive(header);
  REQUIRE(r.ev.kind == K::request);
  REQUIRE(s->set_tag(r.ev.req, 8).has_value());
  REQUIRE(s->incoming_payload().has_value());
  CHECK(s->incoming_payload()->tag == 8);
  CHECK(s->incoming_payload()->length == 100);
}

TEST_CASE("contract: pending_pieces lists headers and payloads in wire order") {
  auto c = client_in_transmission(1u << 20, transmission_flag::has_flags);
  REQUIRE(c->write(0, 100).has_value());
  REQUIRE(c->write(4096, 200).has_value());
  REQUIRE(c->read(0, 512).has_value());
  output_piece pieces[8];
  const std::size_t n = c->pending_pieces(pieces);
  REQUIRE(n == 3);
  CHECK(pieces[0].bytes.size() == 28);
  CHECK(pieces[0].payload == std::optional<payload_span>{payload_span{pieces[0].payload->cookie, 0, 100}});
  CHECK(pieces[1].bytes.size() == 28);
  CHECK(pieces[1].payload->offset == 4096);
  CHECK(pieces[2].bytes.size() == 28);
  CHECK_FALSE(pieces[2].payload.has_value());
  CHECK(c->pending_pieces(std::span(pieces, 1)) == 1);
}

TEST_CASE("contract: a hand-over with invalid block sizes fails both machines with invalid_config") {
  nbdwire::negotiated n;
  n.style = handshake_style::fixed_newstyle;
  n.export_size = 1u << 20;
  n.transmission_flags = transmission_flag::has_flags;
  // The machines check alignment with a mask: a minimum that is not a power of two (and
  // other block sizes "Size constraints" forbids) must never get that far.
  for (const block_size_constraints bad : {block_size_constraints{3, 4096, 1u << 20},
                                           block_size_constraints{512, 1000, 1u << 20},
                                           block_size_constraints{4096, 4096, 512}}) {
    CAPTURE(bad.minimum);
    n.block_size = bad;
    const client c(n);
    CHECK(c.state() == client_state::failed);
    CHECK(c.error() == errc::invalid_config);
    server_config cfg;
    cfg.exports = disk_export;
    const server s(cfg, n);
    CHECK(s.state() == server_state::failed);
    CHECK(s.error() == errc::invalid_config);
  }
  n.block_size = {512, 4096, 1u << 20};
  const client good(n);
  CHECK(good.state() == client_state::transmission);
}
