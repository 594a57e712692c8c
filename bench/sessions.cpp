// SPDX-License-Identifier: MIT
// Layer 2: a client and a server machine wired to each other in memory, output of one fed
// straight into the other. Measures a whole fixed-newstyle handshake ending in GO, and the
// per-request cost of READ and WRITE in transmission. Payload bytes are accounted for with
// consume_payload()/consume_incoming_payload() and never copied, as an adapter using
// sendfile() or recv() into its own buffers would.
#include <nbdwire/nbdwire.hpp>

#include <array>    // std::array: the export table
#include <cstdint>  // fixed-width integers

#include "common.hpp"

namespace nw = nbdwire;
using nbdwire_bench::fail;

namespace {

constexpr std::uint64_t export_size = 1ull << 30;
const std::array<nw::export_config, 1> g_exports{{
    {.name = "bench", .description = "benchmark export", .size = export_size,
     .transmission_flags = nw::transmission_flag::send_flush},
}};

nw::server_config make_server_config() {
  nw::server_config sc{};
  sc.exports = g_exports;
  return sc;
}

/// Feeds everything `from` has queued (up to a payload mark) into `to`, handing each event to
/// `on_event`. False on a failed machine or when `on_event` rejects an event.
template <class From, class To, class Handler>
bool feed(From& from, To& to, Handler on_event) {
  for (;;) {
    const auto r = to.receive(from.pending_output());
    from.consume_output(r.consumed);
    switch (r.ev.kind) {
      case nw::event_kind::need_more:
        if (r.consumed == 0 || from.pending_output().empty()) return true;
        break;
      case nw::event_kind::failed:
      case nw::event_kind::blocked:
        return false;
      default:
        if (!on_event(r.ev)) return false;
    }
  }
}

/// Runs a fixed-newstyle handshake with GO to completion. True when both sides are ready.
bool handshake(nw::client& c, nw::server& s) {
  bool client_ready = false, server_ready = false;
  const auto on_client = [&](const nw::event& ev) {
    if (ev.kind == nw::event_kind::greeting) return static_cast<bool>(c.go("bench"));
    if (ev.kind == nw::event_kind::ready) client_ready = true;
    return ev.kind == nw::event_kind::ready || ev.kind == nw::event_kind::info;
  };
  const auto on_server = [&](const nw::event& ev) {
    if (ev.kind == nw::event_kind::ready) server_ready = true;
    return ev.kind == nw::event_kind::ready || ev.kind == nw::event_kind::option_answered;
  };
  for (int round = 0; round < 8 && !(client_ready && server_ready); ++round) {
    if (!feed(s, c, on_client) || !feed(c, s, on_server)) return false;
  }
  return client_ready && server_ready && c.negotiated().export_size == export_size &&
         s.state() == nw::server_state::transmission;
}

void handshake_fixed_newstyle_go(benchmark::State& state) {
  const nw::server_config sc = make_server_config();
  for (auto _ : state) {
    nw::server s{sc};
    nw::client c{};
    if (!handshake(c, s)) {
      fail(state, "handshake did not reach transmission");
      break;
    }
    benchmark::DoNotOptimize(&c);
    benchmark::DoNotOptimize(&s);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(handshake_fixed_newstyle_go);

/// One READ of `length` bytes per iteration: submit, server receive() + reply(), client
/// receive() of the reply header, payload accounted on both sides, completion.
void transmission_read(benchmark::State& state) {
  const auto length = static_cast<std::uint32_t>(state.range(0));
  const nw::server_config sc = make_server_config();
  nw::server s{sc};
  nw::client c{};
  if (!handshake(c, s)) {
    fail(state, "handshake did not reach transmission");
    return;
  }
  std::uint64_t offset = 0;
  for (auto _ : state) {
    const auto cookie = c.read(offset, length);
    if (!cookie) {
      fail(state, "read() refused");
      break;
    }
    bool asked = false, done = false;
    const bool ok1 = feed(c, s, [&](const nw::event& ev) {
      asked = ev.kind == nw::event_kind::request && ev.req.cookie == *cookie && ev.req.offset == offset;
      return asked && static_cast<bool>(s.reply(ev.req));
    });
    const bool ok2 = feed(s, c, [&](const nw::event&) { return false; });  // only the header: no event yet
    const auto due = s.pending_payload();
    const auto incoming = c.incoming_payload();
    if (!ok1 || !ok2 || !asked || !due || !incoming || due->length != length || incoming->length != length ||
        incoming->cookie != *cookie || !s.consume_payload(length) || !c.consume_incoming_payload(length)) {
      fail(state, "READ did not reach the payload stage as expected");
      break;
    }
    const auto r = c.receive({});
    done = r.ev.kind == nw::event_kind::reply && r.ev.req.cookie == *cookie && r.ev.status == nw::nbd_error::ok;
    if (!done) {
      fail(state, "READ did not complete");
      break;
    }
    offset = (offset + length) % export_size;
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(transmission_read)->Arg(4096)->Arg(1 << 20);

/// One WRITE per iteration: submit, payload accounted on the client, server receive() of the
/// header and the payload, reply(), client completion.
void transmission_write(benchmark::State& state) {
  const auto length = static_cast<std::uint32_t>(state.range(0));
  const nw::server_config sc = make_server_config();
  nw::server s{sc};
  nw::client c{};
  if (!handshake(c, s)) {
    fail(state, "handshake did not reach transmission");
    return;
  }
  std::uint64_t offset = 0;
  for (auto _ : state) {
    const auto cookie = c.write(offset, length);
    if (!cookie) {
      fail(state, "write() refused");
      break;
    }
    nw::request req{};
    const bool ok1 = feed(c, s, [&](const nw::event& ev) {
      req = ev.req;
      return ev.kind == nw::event_kind::request && ev.req.cookie == *cookie;
    });
    const auto due = c.pending_payload();
    const auto incoming = s.incoming_payload();
    if (!ok1 || req.cookie != *cookie || !due || !incoming || due->length != length ||
        incoming->length != length || !c.consume_payload(length) || !s.consume_incoming_payload(length) ||
        !s.reply(req)) {
      fail(state, "WRITE did not reach the reply stage as expected");
      break;
    }
    bool done = false;
    const bool ok2 = feed(s, c, [&](const nw::event& ev) {
      done = ev.kind == nw::event_kind::reply && ev.req.cookie == *cookie && ev.status == nw::nbd_error::ok;
      return done;
    });
    if (!ok2 || !done) {
      fail(state, "WRITE did not complete");
      break;
    }
    offset = (offset + length) % export_size;
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(transmission_write)->Arg(4096)->Arg(1 << 20);

}  // namespace
