// SPDX-License-Identifier: MIT
// trace.hpp: a configuration's trace sees every state change of its machine, in order, as the
// transition table has it, and the last one agrees with state().
#include <doctest/doctest.h>

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "support/pump.hpp"

using namespace nbdwire;
using namespace nbdwire_test;

namespace {

template <class State, class Trigger>
struct recorder {
  struct move {
    State from;
    Trigger on;
    State to;
  };
  std::vector<move> moves;

  static void on_transition(void* context, State from, Trigger on, State to) noexcept {
    static_cast<recorder*>(context)->moves.push_back({from, on, to});
  }
  [[nodiscard]] state_trace<State, Trigger> trace() noexcept { return {&on_transition, this}; }

  /// Starts at `initial`, each move leaves where the previous one arrived, each is a row of
  /// `table`, and the last arrives in a state of the phase the machine reports.
  template <class Table>
  void check(const Table& table, State initial, State phase_now) const {
    REQUIRE_FALSE(moves.empty());
    CHECK(moves.front().from == initial);
    for (std::size_t i = 0; i < moves.size(); ++i) {
      INFO("move " << i << ": " << to_string(moves[i].from) << " -" << to_string(moves[i].on) << "-> "
                   << to_string(moves[i].to));
      if (i > 0) CHECK(moves[i].from == moves[i - 1].to);
      const auto row = detail::next_state(table, moves[i].from, moves[i].on);
      REQUIRE(row.has_value());
      CHECK(*row == moves[i].to);
    }
    CHECK(phase_of(moves.back().to) == phase_now);
  }
  [[nodiscard]] bool passed(Trigger t) const {
    for (const auto& m : moves)
      if (m.on == t) return true;
    return false;
  }
};

using client_recorder = recorder<client_state, client_trigger>;
using server_recorder = recorder<server_state, server_trigger>;

const std::array<export_config, 1> exports{export_config{"disk", "", 64 * 1024, transmission_flag::send_flush, {}}};
const std::array<std::string_view, 1> contexts{"base:allocation"};

}  // namespace

TEST_CASE("trace: both machines report every state change of a session, as the tables have them") {
  for (const std::size_t piece : {static_cast<std::size_t>(-1), std::size_t{1}, std::size_t{5}}) {
    INFO("piece " << piece);
    server_recorder sr;
    client_recorder cr;
    server_config scfg;
    scfg.exports = exports;
    scfg.meta_contexts = contexts;
    scfg.trace = sr.trace();
    client_config ccfg;
    ccfg.meta_contexts = contexts;
    ccfg.trace = cr.trace();
    server s(scfg);
    client c(ccfg);
    machine_pair p(c, s, 64 * 1024);
    p.server_contexts.assign(contexts.begin(), contexts.end());
    p.piece = piece;
    p.run();
    REQUIRE(c.go("disk").has_value());
    p.run();
    REQUIRE(c.state() == client_state::transmission);
    REQUIRE(c.write(0, 4096).has_value());
    REQUIRE(c.read(0, 4096).has_value());
    REQUIRE(c.block_status(0, 4096).has_value());
    p.run();
    REQUIRE(c.disconnect().has_value());
    p.run();
    CHECK(c.on_eof().kind == event_kind::disconnected);  // the server closes after DISC
    CHECK(c.state() == client_state::closed);
    CHECK(s.state() == server_state::closed);

    cr.check(detail::client_transitions, client_state::awaiting_greeting, c.state());
    sr.check(detail::server_transitions, server_state::start, s.state());
    // The plan's steps, the WRITE's payload and the READ's data are visible one by one.
    CHECK(cr.passed(client_trigger::ext_headers_sent));
    CHECK(cr.passed(client_trigger::set_meta_sent));
    CHECK(cr.passed(client_trigger::go_acked));
    CHECK(cr.passed(client_trigger::read_data_due));
    CHECK(cr.passed(client_trigger::disc_sent));
    CHECK(sr.passed(server_trigger::write_request));
    CHECK(sr.passed(server_trigger::export_chosen));
    CHECK(sr.passed(server_trigger::disc));
  }
}

TEST_CASE("trace: a failure is the last move, to failed, and a copy reports to the same observer") {
  client_recorder cr;
  client_config ccfg;
  ccfg.trace = cr.trace();
  client c(ccfg);
  std::array<std::byte, 24> not_a_greeting{};
  not_a_greeting.fill(std::byte{'X'});
  client copy = c;
  const auto r = c.receive(bytes_view{not_a_greeting.data(), not_a_greeting.size()});
  REQUIRE(r.ev.kind == event_kind::failed);
  REQUIRE(cr.moves.size() == 1);
  CHECK(cr.moves[0].on == client_trigger::violation);
  CHECK(cr.moves[0].to == client_state::failed);
  cr.check(detail::client_transitions, client_state::awaiting_greeting, c.state());
  CHECK(copy.on_eof().kind == event_kind::failed);  // closed before a greeting
  CHECK(cr.moves.size() == 2);
}

TEST_CASE("trace: no trace by default, and format_transition writes the line --debug prints") {
  const client c;  // no trace: nothing to call, nothing fails
  CHECK(c.state() == client_state::awaiting_greeting);

  std::array<char, 96> line{};
  const std::size_t n =
      format_transition(std::span<char>(line), server_state::negotiating, server_trigger::option_header, server_state::option_data);
  CHECK(std::string_view(line.data(), n) == "negotiating -option_header-> option_data");
  // Truncated to the buffer, never past it.
  std::array<char, 8> small{};
  CHECK(format_transition(std::span<char>(small), server_state::negotiating, server_trigger::option_header,
                          server_state::option_data) == 8);
  CHECK(std::string_view(small.data(), 8) == "negotiat");
  // 96 bytes hold any line: every name is at most 28 bytes.
  for (unsigned v = 0; v < client_state_count; ++v) CHECK(to_string(static_cast<client_state>(v)).size() <= 28);
  for (unsigned v = 0; v < server_state_count; ++v) CHECK(to_string(static_cast<server_state>(v)).size() <= 28);
  for (unsigned v = 0; v < 256; ++v) {
    CHECK(to_string(static_cast<client_trigger>(v)).size() <= 28);
    CHECK(to_string(static_cast<server_trigger>(v)).size() <= 28);
  }
}
