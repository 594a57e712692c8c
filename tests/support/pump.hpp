// SPDX-License-Identifier: MIT
// Test support: a client and a server machine connected in memory. pump() moves
// pending_output()/pending_payload() of one side into the other's receive(), in pieces of a
// chosen size, with payload bytes from in-memory disk models:
//   - the client writes from `client_source` and its READ data lands in `client_read`;
//   - the server carries out requests against `server_disk` and answers them.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <vector>

#include "nbdwire/client.hpp"
#include "nbdwire/server.hpp"
#include "support/split.hpp"

namespace nbdwire_test {

/// A byte array addressed by export offset.
struct disk_model {
  bytes data;
  explicit disk_model(std::size_t size = 0, std::byte fill = std::byte{0}) : data(size, fill) {}
  bytes read(std::uint64_t offset, std::uint64_t length) const {
    REQUIRE(offset + length <= data.size());
    return {data.begin() + static_cast<std::ptrdiff_t>(offset),
            data.begin() + static_cast<std::ptrdiff_t>(offset + length)};
  }
  void write(std::uint64_t offset, nbdwire::bytes_view b) {
    REQUIRE(offset + b.size() <= data.size());
    std::copy(b.begin(), b.end(), data.begin() + static_cast<std::ptrdiff_t>(offset));
  }
  void zero(std::uint64_t offset, std::uint64_t length) {
    REQUIRE(offset + length <= data.size());
    std::fill_n(data.begin() + static_cast<std::ptrdiff_t>(offset), length, std::byte{0});
  }
};

class machine_pair {
 public:
  machine_pair(nbdwire::client& c, nbdwire::server& s, std::size_t disk_size)
      : client(c), server(s), client_source(disk_size), client_read(disk_size), server_disk(disk_size) {
    for (std::size_t i = 0; i < disk_size; ++i) client_source.data[i] = pattern_byte(i);
  }

  nbdwire::client& client;
  nbdwire::server& server;
  disk_model client_source;  ///< what client WRITEs send, by export offset
  disk_model client_read;    ///< where client READ data lands
  disk_model server_disk;    ///< the export the server serves
  std::vector<recorded> client_events, server_events;
  std::size_t piece = static_cast<std::size_t>(-1);  ///< bytes per receive() call
  /// Error the server answers a request with (after consuming a WRITE's data); ok = carry it out.
  std::function<nbdwire::nbd_error(const nbdwire::request&)> server_policy = [](const nbdwire::request&) {
    return nbdwire::nbd_error::ok;
  };
  bool server_auto_reply = true;
  std::vector<nbdwire::request> unanswered;  ///< requests held back when server_auto_reply is off

  /// Moves bytes both ways until nothing moves.
  void run() {
    for (int round = 0; round < 100000; ++round) {
      bool moved = transfer_client_to_server();
      moved = transfer_server_to_client() || moved;
      moved = poke() || moved;
      if (!moved) return;
    }
    FAIL("pump did not settle");
  }

  /// Answers a request that was held back (server_auto_reply off).
  void answer(const nbdwire::request& r) {
    carry_out(r);
    unanswered.erase(std::remove(unanswered.begin(), unanswered.end(), r), unanswered.end());
  }

  recorded client_eof() {
    append(client_events, client.on_eof());
    return client_events.back();
  }
  recorded server_eof() {
    append(server_events, server.on_eof());
    return server_events.back();
  }

  /// The client events from index `from` on.
  std::vector<recorded> client_since(std::size_t from) const {
    return {client_events.begin() + static_cast<std::ptrdiff_t>(from), client_events.end()};
  }

 private:
  template <class Machine, class OnEvent>
  std::size_t feed(Machine& m, nbdwire::bytes_view in, OnEvent on_event) {
    std::size_t used = 0;
    while (used < in.size()) {
      const auto chunk = in.subspan(used, std::min(piece, in.size() - used));
      std::size_t chunk_used = 0;
      for (;;) {
        const auto r = m.receive(chunk.subspan(chunk_used));
        chunk_used += r.consumed;
        if (r.ev.kind == nbdwire::event_kind::need_more) break;
        on_event(r.ev);
        if (r.ev.kind == nbdwire::event_kind::blocked || r.ev.kind == nbdwire::event_kind::failed ||
            r.ev.kind == nbdwire::event_kind::closed || r.ev.kind == nbdwire::event_kind::disconnected)
          return used + chunk_used;
      }
      used += chunk_used;
    }
    return used;
  }

  bool poke() {
    // receive() with no input may still have events to report (e.g. after a reply()).
    bool any = false;
    for (int i = 0; i < 4; ++i) {
      const auto r = server.receive({});
      if (r.ev.kind == nbdwire::event_kind::need_more || is_end(r.ev.kind) ||
          r.ev.kind == nbdwire::event_kind::blocked)
        break;
      on_server_event(r.ev);
      any = true;
    }
    for (int i = 0; i < 4; ++i) {
      const auto r = client.receive({});
      if (r.ev.kind == nbdwire::event_kind::need_more || is_end(r.ev.kind) ||
          r.ev.kind == nbdwire::event_kind::blocked)
        break;
      on_client_event(r.ev);
      any = true;
    }
    return any;
  }

  static bool is_end(nbdwire::event_kind k) {
    return k == nbdwire::event_kind::failed || k == nbdwire::event_kind::closed ||
           k == nbdwire::event_kind::disconnected;
  }

  bool transfer_client_to_server() {
    bool moved = false;
    for (;;) {
      const auto out = client.pending_output();
      if (!out.empty()) {
        const bytes copy(out.begin(), out.end());
        const std::size_t used = feed(server, copy, [&](const nbdwire::event& e) { on_server_event(e); });
        client.consume_output(used);
        moved = moved || used > 0;
        if (used < copy.size()) return moved;
        continue;
      }
      if (const auto p = client.pending_payload()) {
        const bytes data = client_source.read(p->offset, p->length);
        const std::size_t used = feed(server, data, [&](const nbdwire::event& e) { on_server_event(e); });
        REQUIRE(client.consume_payload(used).has_value());
        moved = moved || used > 0;
        if (used < data.size()) return moved;
        continue;
      }
      return moved;
    }
  }

  bool transfer_server_to_client() {
    bool moved = false;
    for (;;) {
      const auto out = server.pending_output();
      if (!out.empty()) {
        const bytes copy(out.begin(), out.end());
        const std::size_t used = feed(client, copy, [&](const nbdwire::event& e) { on_client_event(e); });
        server.consume_output(used);
        moved = moved || used > 0;
        if (used < copy.size()) return moved;
        continue;
      }
      if (const auto p = server.pending_payload()) {
        const bytes data = server_disk.read(p->offset, p->length);
        const std::size_t used = feed(client, data, [&](const nbdwire::event& e) { on_client_event(e); });
        REQUIRE(server.consume_payload(used).has_value());
        moved = moved || used > 0;
        if (used < data.size()) return moved;
        continue;
      }
      return moved;
    }
  }

  void on_client_event(const nbdwire::event& e) {
    append(client_events, e);
    if (e.kind == nbdwire::event_kind::payload) client_read.write(e.offset, e.data);
  }

  void on_server_event(const nbdwire::event& e) {
    append(server_events, e);
    using nbdwire::command;
    switch (e.kind) {
      case nbdwire::event_kind::request:
        if (!server_auto_reply) {
          unanswered.push_back(e.req);
          if (e.req.cmd() == command::write) writes_[e.req.cookie] = e.req.length;
          break;
        }
        if (e.req.cmd() == command::write && e.req.length != 0) {
          writes_[e.req.cookie] = e.req.length;  // answered once its data is in
        } else {
          carry_out(e.req);
        }
        break;
      case nbdwire::event_kind::payload: {
        // The policy decides whether the data lands; it is consumed either way.
        if (server_policy(e.req) == nbdwire::nbd_error::ok) server_disk.write(e.offset, e.data);
        auto it = writes_.find(e.req.cookie);
        REQUIRE(it != writes_.end());
        it->second -= e.data.size();
        if (it->second == 0) {
          writes_.erase(it);
          if (server_auto_reply) carry_out(e.req);
        }
        break;
      }
      default: break;
    }
  }

  void carry_out(const nbdwire::request& r) {
    using nbdwire::command;
    const nbdwire::nbd_error e = server_policy(r);
    if (e == nbdwire::nbd_error::ok && r.cmd() == command::write_zeroes) server_disk.zero(r.offset, r.length);
    const auto res = server.reply(r, e);
    REQUIRE_MESSAGE(res.has_value(), "reply() refused: " << nbdwire::to_string(res.error()));
  }

  std::map<std::uint64_t, std::uint64_t> writes_;  ///< WRITE cookie -> data bytes still due
};

}  // namespace nbdwire_test
