// SPDX-License-Identifier: MIT
// Shared by the nbdwire benchmarks: a failed in-loop check marks the run as failed, so the
// program exits nonzero instead of reporting a rate for wrong results.
#pragma once

#include <benchmark/benchmark.h>

namespace nbdwire_bench {

/// Set by fail(); main() turns it into the exit status.
inline bool g_failed = false;

/// Records a wrong result and stops the benchmark; the caller breaks out of its loop.
inline void fail(benchmark::State& state, const char* what) {
  g_failed = true;
  state.SkipWithError(what);
}

}  // namespace nbdwire_bench
