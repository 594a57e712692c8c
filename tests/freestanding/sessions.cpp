// SPDX-License-Identifier: MIT
// Whole client <-> server sessions in memory, built with -fno-exceptions -fno-rtti, for every
// handshake style: writes, flushes, zeroing and reads, with the data checked against a model.
// Only static buffers are used, so the linked binary must not need the allocator or the throw
// runtime; check_symbols.cmake verifies that on the binary itself.
#include <nbdwire/nbdwire.hpp>

#include <algorithm>  // std::min, std::copy_n, std::fill_n, std::equal
#include <array>      // std::array: every buffer below
#include <cstddef>    // std::byte, std::size_t
#include <cstdint>    // fixed-width integers
#include <cstdio>     // std::fprintf: failure reports
#include <cstring>    // std::memmove: pipe compaction

namespace nw = nbdwire;
namespace tf = nbdwire::transmission_flag;

namespace {

int g_failures = 0;
const char* g_session = "";

bool check(bool ok, int line, const char* what) {
  if (!ok) {
    ++g_failures;
    std::fprintf(stderr, "core-freestanding [%s] line %d: check failed: %s\n", g_session, line, what);
  }
  return ok;
}
#define CHECK(c) check(static_cast<bool>(c), __LINE__, #c)
#define FAIL(msg) check(false, __LINE__, msg)
#define REQUIRE(c)          \
  do {                      \
    if (!CHECK(c)) return false; \
  } while (0)

/// One direction of the in-memory link: bytes written by one machine, not yet read by the other.
template <std::size_t N>
struct pipe {
  std::array<std::byte, N> buf{};
  std::size_t head = 0, tail = 0;

  [[nodiscard]] nw::bytes_view data() const { return {buf.data() + head, tail - head}; }
  [[nodiscard]] std::size_t size() const { return tail - head; }
  void drop(std::size_t n) {
    head += n;
    if (head == tail) head = tail = 0;
  }
  /// Appends as much of `b` as fits; returns how much that was.
  std::size_t push(const std::byte* p, std::size_t n) {
    if (head != 0) {
      std::memmove(buf.data(), buf.data() + head, tail - head);
      tail -= head;
      head = 0;
    }
    const std::size_t take = std::min(n, N - tail);
    std::copy_n(p, take, buf.data() + tail);
    tail += take;
    return take;
  }
  void reset() { head = tail = 0; }
};

// Small enough to fill up during the read phase, so partial sends are exercised too.
constexpr std::size_t pipe_size = 48 * 1024;
pipe<pipe_size> g_to_server;
pipe<pipe_size> g_to_client;

constexpr std::uint64_t alpha_size = 64 * 1024;
constexpr std::uint64_t beta_size = 96 * 1024 + 512;  // not a power of two
constexpr std::size_t max_export = 128 * 1024;
constexpr std::uint16_t alpha_flags =
    tf::send_flush | tf::send_fua | tf::send_trim | tf::send_write_zeroes | tf::send_cache;
constexpr std::uint16_t beta_flags = tf::send_flush;

const std::array<nw::export_config, 2> g_exports{{
    {.name = "alpha", .description = "the first export", .size = alpha_size, .transmission_flags = alpha_flags},
    {.name = "beta", .description = "the second export", .size = beta_size, .transmission_flags = beta_flags},
}};

// Oldstyle and the 1997 framing serve exactly one export.
const std::array<nw::export_config, 1> g_single_export{{g_exports[0]}};

std::array<std::byte, max_export> g_disk_alpha{};  // the server's storage, one per export
std::array<std::byte, max_export> g_disk_beta{};
std::array<std::byte, max_export> g_model{};       // what the client expects the export to hold
std::array<std::byte, max_export> g_readback{};    // READ data as the client received it

std::byte pattern(std::uint64_t pos, std::uint32_t seed) {
  return static_cast<std::byte>(((pos * 2654435761u) >> 7) ^ seed ^ (pos >> 9));
}

enum class plan : std::uint8_t {
  go,             ///< GO on a named export right after the greeting
  list_then_go,   ///< LIST, check both exports, then GO
  go_or_export_name,  ///< GO, falling back to EXPORT_NAME when the server is not fixed newstyle
  export_name,    ///< EXPORT_NAME straight away
  none,           ///< oldstyle and legacy 1997: no option at all
};

struct outstanding {
  std::uint64_t cookie = 0;
  nw::command cmd = nw::command::read;
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
  bool used = false;
};

bool ended(const nw::client& c) {
  return c.state() == nw::client_state::closed || c.state() == nw::client_state::failed;
}
bool ended(const nw::server& s) {
  return s.state() == nw::server_state::closed || s.state() == nw::server_state::failed;
}

class harness {
 public:
  harness(nw::client& c, nw::server& s, plan p, const char* want, bool direct)
      : c_(c), s_(s), plan_(p), want_(want), direct_(direct) {}

  // ---- client side ------------------------------------------------------------------------

  bool start_option() {
    switch (plan_) {
      case plan::go:
        return CHECK(c_.go(want_));
      case plan::list_then_go:
        return CHECK(c_.list());
      case plan::export_name:
        used_export_name_ = true;
        return CHECK(c_.export_name(want_));
      case plan::go_or_export_name: {
        const auto r = c_.go(want_);
        if (r) return true;  // the client falls back on its own
        REQUIRE(r.error() == nw::errc::option_needs_fixed_newstyle);
        used_export_name_ = true;
        return CHECK(c_.export_name(want_));
      }
      case plan::none:
        return FAIL("no option expected in this handshake style");
    }
    return false;
  }

  bool on_client_event(const nw::event& ev) {
    switch (ev.kind) {
      case nw::event_kind::greeting:
        greeted_ = true;
        if (c_.can_send_option()) return start_option();
        return true;
      case nw::event_kind::export_listed: {
        const auto name = nw::as_chars(ev.data);
        REQUIRE(listed_ < g_exports.size());
        CHECK(name == g_exports[listed_].name);
        CHECK(nw::as_chars(ev.text) == g_exports[listed_].description);
        ++listed_;
        return true;
      }
      case nw::event_kind::info:
        if (ev.info == nw::info_type::export_info) {
          ++infos_;
          CHECK(ev.export_size == want_size());
        }
        return true;
      case nw::event_kind::option_done:
        REQUIRE(plan_ == plan::list_then_go);
        REQUIRE(ev.option == static_cast<std::uint32_t>(nw::option::list));
        CHECK(listed_ == g_exports.size());
        return CHECK(c_.go(want_));
      case nw::event_kind::ready:
        client_ready_ = true;
        return true;
      case nw::event_kind::payload:
        return take_read_data(ev.req.cookie, ev.offset, ev.data.data(), ev.data.size());
      case nw::event_kind::reply: {
        outstanding* o = find(ev.req.cookie);
        REQUIRE(o != nullptr);
        CHECK(ev.status == nw::nbd_error::ok);
        CHECK(ev.req.type == static_cast<std::uint16_t>(o->cmd));
        o->used = false;
        --in_flight_;
        ++replies_;
        return true;
      }
      case nw::event_kind::disconnected:
      case nw::event_kind::closed:
        client_end_ = ev.kind;
        return true;
      default:
        std::fprintf(stderr, "unexpected client event %.*s\n", static_cast<int>(nw::to_string(ev.kind).size()),
                     nw::to_string(ev.kind).data());
        return FAIL("unexpected client event");
    }
  }

  bool take_read_data(std::uint64_t cookie, std::uint64_t offset, const std::byte* p, std::size_t n) {
    const outstanding* o = find(cookie);
    REQUIRE(o != nullptr);
    REQUIRE(o->cmd == nw::command::read);
    REQUIRE(offset >= o->offset && offset + n <= o->offset + o->length);
    std::copy_n(p, n, g_readback.data() + offset);
    read_bytes_ += n;
    return true;
  }

  outstanding* find(std::uint64_t cookie) {
    for (auto& o : table_)
      if (o.used && o.cookie == cookie) return &o;
    return nullptr;
  }

  bool track(nw::result<std::uint64_t> r, nw::command cmd, std::uint64_t offset, std::uint32_t length) {
    REQUIRE(r);
    REQUIRE(find(*r) == nullptr);  // cookies are unique while in flight
    for (auto& o : table_) {
      if (!o.used) {
        o = {*r, cmd, offset, length, true};
        ++in_flight_;
        return true;
      }
    }
    return FAIL("cookie table of the test is full");
  }

  // ---- server side ------------------------------------------------------------------------

  std::byte* disk() { return s_.negotiated().export_index == 0 ? g_disk_alpha.data() : g_disk_beta.data(); }

  std::uint64_t want_size() const {
    const std::string_view w = want_;
    return w == "beta" ? beta_size : alpha_size;
  }

  bool finish_write_if_done() {
    if (writing_ && write_left_ == 0) {
      writing_ = false;
      return CHECK(s_.reply(write_req_));
    }
    return true;
  }

  bool on_server_event(const nw::event& ev) {
    switch (ev.kind) {
      case nw::event_kind::option_answered:
        ++answered_;
        return true;
      case nw::event_kind::ready:
        server_ready_ = true;
        return true;
      case nw::event_kind::request: {
        const nw::request& r = ev.req;
        REQUIRE(!writing_);
        REQUIRE(nw::range_within(r.offset, r.length, s_.negotiated().export_size));
        switch (r.cmd()) {
          case nw::command::read:
            return CHECK(s_.reply(r));
          case nw::command::write:
            writing_ = true;
            write_req_ = r;
            write_left_ = r.length;
            return finish_write_if_done();
          case nw::command::write_zeroes:
            std::fill_n(disk() + r.offset, r.length, std::byte{0});
            return CHECK(s_.reply(r));
          case nw::command::flush:
          case nw::command::trim:
          case nw::command::cache:
            return CHECK(s_.reply(r));
          default:
            FAIL("unexpected command");
            return CHECK(s_.reply(r, nw::nbd_error::einval));
        }
      }
      case nw::event_kind::payload:
        return take_write_data(ev.req.cookie, ev.offset, ev.data.data(), ev.data.size());
      case nw::event_kind::disconnected:
      case nw::event_kind::closed:
        server_end_ = ev.kind;
        return true;
      default:
        std::fprintf(stderr, "unexpected server event %.*s\n", static_cast<int>(nw::to_string(ev.kind).size()),
                     nw::to_string(ev.kind).data());
        return FAIL("unexpected server event");
    }
  }

  bool take_write_data(std::uint64_t cookie, std::uint64_t offset, const std::byte* p, std::size_t n) {
    REQUIRE(writing_);
    REQUIRE(cookie == write_req_.cookie);
    REQUIRE(n <= write_left_);
    REQUIRE(offset == write_req_.offset + (write_req_.length - write_left_));  // in order, no gaps
    std::copy_n(p, n, disk() + offset);
    write_left_ -= n;
    return finish_write_if_done();
  }

  // ---- moving bytes -----------------------------------------------------------------------

  /// Sends what a machine has queued, payload included, as far as the pipe has room.
  template <class M, class P, class Source>
  bool send(M& m, P& to, Source source, std::uint64_t limit) {
    bool moved = false;
    for (;;) {
      const auto out = m.pending_output();
      if (!out.empty()) {
        const std::size_t n = to.push(out.data(), out.size());
        m.consume_output(n);
        moved = moved || n != 0;
        if (n < out.size()) return moved;
        continue;
      }
      const auto due = m.pending_payload();
      if (!due || due->length == 0) return moved;
      if (!CHECK(nw::range_within(due->offset, due->length, limit))) {
        ++stuck_;
        return moved;
      }
      const std::size_t n = to.push(source + due->offset, static_cast<std::size_t>(due->length));
      if (n == 0) return moved;
      if (!CHECK(m.consume_payload(n))) return moved;
      moved = true;
    }
  }

  /// Feeds a machine what is in its pipe until it needs more input or waits for us.
  template <class M, class P, class Handler, class Direct>
  bool deliver(M& m, P& from, Handler handle, Direct take_direct, bool& progress) {
    for (int guard = 0; guard < 100000; ++guard) {
      if (ended(m)) return true;  // a terminal machine reports the same end event forever
      if (direct_ && from.size() != 0) {
        if (const auto ip = m.incoming_payload(); ip && ip->length != 0) {
          const std::size_t n = std::min<std::size_t>(from.size(), static_cast<std::size_t>(ip->length));
          REQUIRE(take_direct(ip->cookie, ip->offset, from.data().data(), n));
          REQUIRE(m.consume_incoming_payload(n));
          from.drop(n);
          ++direct_chunks_;
          progress = true;
          continue;
        }
      }
      const auto r = m.receive(from.data());
      REQUIRE(r.consumed <= from.size());
      from.drop(r.consumed);
      progress = progress || r.consumed != 0;
      switch (r.ev.kind) {
        case nw::event_kind::need_more:
        case nw::event_kind::blocked:
          return true;
        case nw::event_kind::failed:
          std::fprintf(stderr, "machine failed: %.*s\n", static_cast<int>(nw::to_string(r.ev.error).size()),
                       nw::to_string(r.ev.error).data());
          return FAIL("a machine failed");
        default:
          progress = true;
          REQUIRE(handle(r.ev));
      }
    }
    return FAIL("receive loop does not settle");
  }

  /// Runs both machines until neither has anything left to say.
  bool pump() {
    for (int round = 0; round < 100000; ++round) {
      bool progress = send(c_, g_to_server, g_model.data(), c_.negotiated().export_size);
      REQUIRE(deliver(
          s_, g_to_server, [this](const nw::event& e) { return on_server_event(e); },
          [this](std::uint64_t k, std::uint64_t o, const std::byte* p, std::size_t n) {
            return take_write_data(k, o, p, n);
          },
          progress));
      progress = send(s_, g_to_client, disk(), s_.negotiated().export_size) || progress;
      REQUIRE(deliver(
          c_, g_to_client, [this](const nw::event& e) { return on_client_event(e); },
          [this](std::uint64_t k, std::uint64_t o, const std::byte* p, std::size_t n) {
            return take_read_data(k, o, p, n);
          },
          progress));
      REQUIRE(stuck_ == 0);
      if (!progress) {
        REQUIRE(g_to_server.size() == 0);  // a machine stopped taking input it was given
        REQUIRE(g_to_client.size() == 0);
        return true;
      }
    }
    return FAIL("the session does not settle");
  }

  // ---- a whole session --------------------------------------------------------------------

  bool transmission(std::uint32_t seed, bool legacy) {
    const std::uint64_t size = c_.negotiated().export_size;
    const std::uint16_t flags = c_.negotiated().transmission_flags;
    REQUIRE(size == s_.negotiated().export_size);
    REQUIRE(size == want_size());
    REQUIRE(size <= max_export);

    // Several writes in flight at once, not overlapping, one of them ending at the export's end.
    struct span {
      std::uint64_t offset;
      std::uint32_t length;
    };
    const std::array<span, 4> writes{{{0, 4096}, {8192, 4096}, {12345, 3000}, {size - 4096, 4096}}};
    std::uint32_t k = seed;
    for (const auto& w : writes) {
      ++k;
      for (std::uint64_t i = 0; i < w.length; ++i) g_model[w.offset + i] = pattern(w.offset + i, k);
      REQUIRE(track(c_.write(w.offset, w.length), nw::command::write, w.offset, w.length));
    }
    REQUIRE(in_flight_ == writes.size());
    REQUIRE(pump());
    REQUIRE(in_flight_ == 0);

    if (!legacy) {
      REQUIRE((flags & tf::send_flush) != 0);
      REQUIRE(track(c_.flush(), nw::command::flush, 0, 0));
    }
    if (!legacy && (flags & tf::send_fua) != 0) {
      for (std::uint64_t i = 0; i < 512; ++i) g_model[20000 + i] = pattern(i, seed ^ 0x55u);
      REQUIRE(track(c_.write(20000, 512, nw::command_flag::fua), nw::command::write, 20000, 512));
    }
    if (!legacy && (flags & tf::send_write_zeroes) != 0) {
      std::fill_n(g_model.data() + 9000, 2048, std::byte{0});
      REQUIRE(track(c_.write_zeroes(9000, 2048), nw::command::write_zeroes, 9000, 2048));
    }
    if (!legacy && (flags & tf::send_cache) != 0)
      REQUIRE(track(c_.cache(0, 16384), nw::command::cache, 0, 16384));
    if (!legacy && (flags & tf::send_trim) != 0)  // the test server keeps trimmed data as is
      REQUIRE(track(c_.trim(32768, 4096), nw::command::trim, 32768, 4096));
    REQUIRE(pump());
    REQUIRE(in_flight_ == 0);

    // Read the whole export back in chunks, all in flight together.
    std::fill_n(g_readback.data(), size, std::byte{0xee});
    read_bytes_ = 0;
    constexpr std::uint32_t chunk = 8192;
    for (std::uint64_t off = 0; off < size; off += chunk) {
      const auto len = static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk, size - off));
      REQUIRE(track(c_.read(off, len), nw::command::read, off, len));
    }
    REQUIRE(pump());
    REQUIRE(in_flight_ == 0);
    REQUIRE(read_bytes_ == size);
    CHECK(std::equal(g_model.data(), g_model.data() + size, g_readback.data()));
    CHECK(std::equal(g_model.data(), g_model.data() + size, disk()));
    return true;
  }

  bool finish(bool legacy) {
    REQUIRE(c_.disconnect());
    REQUIRE(pump());
    if (legacy) {
      // 1997 framing has no disconnect request: closing the socket is the end.
      const auto se = s_.on_eof();
      CHECK(se.kind == nw::event_kind::closed);
    } else {
      CHECK(server_end_ == nw::event_kind::disconnected);
    }
    const auto ce = c_.on_eof();
    CHECK(ce.kind == nw::event_kind::closed || ce.kind == nw::event_kind::disconnected);
    return true;
  }

  nw::client& c_;
  nw::server& s_;
  plan plan_;
  const char* want_;
  bool direct_;
  std::array<outstanding, 64> table_{};
  std::size_t in_flight_ = 0, listed_ = 0, infos_ = 0, replies_ = 0, answered_ = 0;
  std::uint64_t read_bytes_ = 0;
  std::size_t direct_chunks_ = 0;
  int stuck_ = 0;
  bool greeted_ = false, client_ready_ = false, server_ready_ = false, used_export_name_ = false;
  bool writing_ = false;
  nw::request write_req_{};
  std::uint64_t write_left_ = 0;
  nw::event_kind client_end_ = nw::event_kind::need_more, server_end_ = nw::event_kind::need_more;
};

void reset_storage(std::uint32_t seed) {
  g_to_server.reset();
  g_to_client.reset();
  for (std::size_t i = 0; i < max_export; ++i) {
    g_disk_alpha[i] = pattern(i, seed);
    g_disk_beta[i] = pattern(i, seed + 1000);
  }
}

struct session_spec {
  const char* label;
  nw::handshake_style server_style;
  nw::handshake_style client_style;
  plan how;
  const char* want;       ///< export the client asks for ("" = the default one)
  std::size_t default_export;
  bool direct;            ///< payloads through incoming_payload() instead of events
  std::uint32_t seed;
};

bool run(const session_spec& spec) {
  g_session = spec.label;
  reset_storage(spec.seed);
  const bool legacy = spec.server_style == nw::handshake_style::legacy_1997;

  nw::server_config sc{};
  sc.style = spec.server_style;
  const bool single = legacy || spec.server_style == nw::handshake_style::oldstyle;
  sc.exports = single ? std::span<const nw::export_config>{g_single_export}
                      : std::span<const nw::export_config>{g_exports};
  sc.default_export = spec.default_export;
  nw::server s{sc};

  nw::client_config cc{};
  cc.style = spec.client_style;
  if (legacy) cc.legacy_export_size = g_exports[spec.default_export].size;
  nw::client c{cc};

  // The client's model starts as the server's export.
  harness h{c, s, spec.how, spec.want, spec.direct};
  const std::byte* start = std::string_view{spec.want} == "beta" ? g_disk_beta.data() : g_disk_alpha.data();
  std::copy_n(start, max_export, g_model.data());

  REQUIRE(h.pump());
  REQUIRE(h.client_ready_ || legacy);
  REQUIRE(c.state() == nw::client_state::transmission);
  REQUIRE(s.state() == nw::server_state::transmission);
  CHECK(h.greeted_ || legacy || spec.server_style == nw::handshake_style::oldstyle);
  if (spec.how == plan::list_then_go) CHECK(h.listed_ == g_exports.size());
  if (spec.how == plan::go || spec.how == plan::list_then_go) CHECK(h.infos_ >= 1);
  CHECK(s.negotiated().export_index == (std::string_view{spec.want} == "beta" ? 1u : spec.default_export));

  REQUIRE(h.transmission(spec.seed, legacy));
  REQUIRE(h.finish(legacy));
  if (spec.direct) CHECK(h.direct_chunks_ > 0);
  return true;
}

}  // namespace

int main() {
  using hs = nw::handshake_style;
  const std::array<session_spec, 7> sessions{{
      {"fixed-newstyle GO", hs::fixed_newstyle, hs::fixed_newstyle, plan::go, "beta", 0, false, 1},
      {"fixed-newstyle GO, direct payloads", hs::fixed_newstyle, hs::fixed_newstyle, plan::go, "alpha", 0, true, 2},
      {"fixed-newstyle LIST then GO", hs::fixed_newstyle, hs::fixed_newstyle, plan::list_then_go, "alpha", 0,
       false, 3},
      {"newstyle EXPORT_NAME fallback", hs::newstyle, hs::fixed_newstyle, plan::go_or_export_name, "alpha", 0, false, 4},
      {"fixed-newstyle EXPORT_NAME", hs::fixed_newstyle, hs::fixed_newstyle, plan::export_name, "beta", 0, true, 5},
      {"oldstyle", hs::oldstyle, hs::fixed_newstyle, plan::none, "alpha", 0, false, 6},
      {"legacy 1997", hs::legacy_1997, hs::legacy_1997, plan::none, "alpha", 0, true, 7},
  }};
  int failed_sessions = 0;
  for (const auto& spec : sessions) {
    const int before = g_failures;
    const bool ok = run(spec);
    if (!ok || g_failures != before) {
      ++failed_sessions;
      std::fprintf(stderr, "session FAILED: %s\n", spec.label);
    } else {
      std::printf("session ok: %s\n", spec.label);
    }
  }
  return failed_sessions == 0 ? 0 : 1;
}
