// SPDX-License-Identifier: MIT
// Test support: a client and a server machine connected in memory. pump() moves
// pending_output()/pending_payload() of one side into the other's receive(), in pieces of a
// chosen size, with payload bytes from in-memory disk models:
//   - the client writes from `client_source` and its READ data lands in `client_read`;
//   - the server carries out requests against `server_disk` and answers them. With
//     structured replies it can answer READs sparsely (OFFSET_DATA and OFFSET_HOLE chunks)
//     and answers BLOCK_STATUS from a simple allocation model of the disk: a block of
//     `alloc_block` bytes that is all zeroes is a hole (HOLE|ZERO), any other block is data.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
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
  /// Message carried by an error reply (sent only when structured replies are on).
  std::function<std::string(const nbdwire::request&)> server_message = [](const nbdwire::request&) {
    return std::string();
  };
  bool server_auto_reply = true;
  /// With structured replies: READs answered as data and hole chunks by the allocation model.
  bool sparse_reads = false;
  std::uint64_t alloc_block = 512;  ///< granularity of the allocation model
  std::vector<nbdwire::request> unanswered;  ///< requests held back when server_auto_reply is off
  /// The server's context names (server_config::meta_contexts; index = id): BLOCK_STATUS for
  /// "base:allocation" is answered from the allocation model.
  std::vector<std::string_view> server_contexts;
  /// Contract checks on the client: need_more reported while input was still unused, and
  /// events that appeared only on a later receive() without new input.
  std::size_t client_need_more_with_input_left = 0;
  std::size_t client_late_events = 0;

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

  /// True when the allocation model calls the block holding `offset` a hole.
  bool is_hole(std::uint64_t offset) const {
    const std::uint64_t begin = offset - offset % alloc_block;
    const std::uint64_t end = std::min<std::uint64_t>(begin + alloc_block, server_disk.data.size());
    for (std::uint64_t i = begin; i < end; ++i)
      if (server_disk.data[static_cast<std::size_t>(i)] != std::byte{0}) return false;
    return true;
  }

  /// [offset, offset + length) as runs of equal allocation: {length, hole?}.
  std::vector<std::pair<std::uint64_t, bool>> allocation_runs(std::uint64_t offset, std::uint64_t length) const {
    std::vector<std::pair<std::uint64_t, bool>> runs;
    const std::uint64_t end = std::min<std::uint64_t>(offset + length, server_disk.data.size());
    for (std::uint64_t at = offset; at < end;) {
      const std::uint64_t next = std::min<std::uint64_t>(at - at % alloc_block + alloc_block, end);
      const bool hole = is_hole(at);
      if (!runs.empty() && runs.back().second == hole)
        runs.back().first += next - at;
      else
        runs.emplace_back(next - at, hole);
      at = next;
    }
    return runs;
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
        if (r.ev.kind == nbdwire::event_kind::need_more) {
          if constexpr (std::is_same_v<Machine, nbdwire::client>)
            if (chunk_used < chunk.size()) ++client_need_more_with_input_left;
          break;
        }
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
      ++client_late_events;
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
    if (e.kind == nbdwire::event_kind::read_hole) client_read.zero(e.offset, e.length);
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
    if (e == nbdwire::nbd_error::ok && r.cmd() == command::block_status) return answer_block_status(r);
    if (e == nbdwire::nbd_error::ok && r.cmd() == command::read && sparse_reads &&
        server.negotiated().structured_replies)
      return answer_sparse_read(r);
    const std::string message = server_message(r);
    const auto res = server.reply(r, e, message);
    REQUIRE_MESSAGE(res.has_value(), "reply() refused: " << nbdwire::to_string(res.error()));
  }

  /// One status chunk per negotiated context: base:allocation from the model, any other
  /// context one extent of flags 0.
  void answer_block_status(const nbdwire::request& r) {
    const auto& n = server.negotiated();
    REQUIRE(n.meta_context_count > 0);
    for (std::size_t i = 0; i < n.meta_context_count; ++i) {
      const std::uint32_t id = n.meta_contexts[i].id;
      std::vector<nbdwire::block_extent> extents;
      if (id < server_contexts.size() && server_contexts[id] == "base:allocation") {
        for (const auto& [len, hole] : allocation_runs(r.offset, r.length))
          extents.push_back({len, hole ? std::uint64_t{nbdwire::state_flag::hole | nbdwire::state_flag::zero} : 0u});
      } else {
        extents.push_back({r.length, 0});
      }
      const auto res = server.reply_block_status(r, id, extents, i + 1 == n.meta_context_count);
      REQUIRE_MESSAGE(res.has_value(), "reply_block_status() refused: " << nbdwire::to_string(res.error()));
      CHECK(res.value() >= 1);
    }
  }

  /// Data runs as OFFSET_DATA chunks, hole runs as OFFSET_HOLE chunks; the last one is DONE.
  void answer_sparse_read(const nbdwire::request& r) {
    const auto runs = allocation_runs(r.offset, r.length);
    std::uint64_t at = r.offset;
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const auto [len, hole] = runs[i];
      const bool done = i + 1 == runs.size();
      const auto res = hole ? server.reply_read_hole(r, at, static_cast<std::uint32_t>(len), done)
                            : server.reply_read_data(r, at, len, done);
      REQUIRE_MESSAGE(res.has_value(), "sparse READ chunk refused: " << nbdwire::to_string(res.error()));
      at += len;
    }
  }

  std::map<std::uint64_t, std::uint64_t> writes_;  ///< WRITE cookie -> data bytes still due
};

}  // namespace nbdwire_test
