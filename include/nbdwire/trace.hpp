// SPDX-License-Identifier: MIT
// nbdwire: watching a machine's state changes. Each machine moves only through its one
// transition table (client/states.hpp, server/states.hpp); a trace in its configuration sees
// every move the table makes, and every move it refuses, as (from, trigger, to). Adapters
// print it for --debug; tests and fuzzers check it against the table and state().
#pragma once

#include <cstddef>      // std::size_t
#include <span>         // std::span: the caller's line buffer
#include <string_view>  // names

#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// A caller's observer of one machine's state changes; client_trace and server_trace are the
/// two instances. No allocation, nothing kept: a function pointer and its context.
///
/// on_transition runs after the change, inside the call that made it (a constructor,
/// receive(), on_eof(), go(), submit(), reply(), tls_started(), ...): it must not call back into
/// the machine. A move the table does not list is reported too, with `to` == failed (the
/// machine fails with errc::illegal_transition). The fine states it names are positions
/// inside the phases state() reports (phase_of() maps one to its phase). A copy of a
/// machine copies its configuration, trace included: both then report to one observer.
template <class State, class Trigger>
struct state_trace {
  void (*on_transition)(void* context, State from, Trigger on, State to) noexcept = nullptr;
  void* context = nullptr;

  constexpr void operator()(State from, Trigger on, State to) const noexcept {
    if (on_transition != nullptr) on_transition(context, from, on, to);
  }
};

/// Writes "FROM -TRIGGER-> TO" (the enumerators' names, as docs/design.md shows them) into
/// `out` and returns the bytes written: what --debug prints. Truncated to out.size(); 96 bytes
/// always hold a whole line (no name is longer than 28).
template <class State, class Trigger>
constexpr std::size_t format_transition(std::span<char> out, State from, Trigger on, State to) noexcept {
  std::size_t n = 0;
  const auto put = [&](std::string_view s) {
    for (const char c : s)
      if (n < out.size()) out[n++] = c;
  };
  put(to_string(from));
  put(" -");
  put(to_string(on));
  put("-> ");
  put(to_string(to));
  return n;
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
