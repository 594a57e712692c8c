// SPDX-License-Identifier: MIT
// Fuzz support: normal or fast mode.
//
// Normal mode runs each input whole, then again one byte at a time and at cuts seeded by the
// input, and compares the runs (split invariance). Fast mode runs each input whole only, so a
// campaign's executions go to new inputs; the split invariance keeps its own target,
// fuzz_split, which is the same in both modes. Fast mode is chosen at build time
// (-DNBDWIRE_FUZZ_FAST=1: the fuzz_<target>_fast binaries of -DNBDWIRE_FUZZ_FAST_TARGETS=ON)
// or at run time (NBDWIRE_FUZZ_FAST=1 in the environment of any fuzz binary).
#pragma once

#include <cstdlib>
#include <cstring>

#ifndef NBDWIRE_FUZZ_FAST
#define NBDWIRE_FUZZ_FAST 0
#endif

namespace nbdwire_fuzz {

inline bool fast_mode() noexcept {
  static const bool fast = [] {
    if (NBDWIRE_FUZZ_FAST) return true;
    const char* e = std::getenv("NBDWIRE_FUZZ_FAST");  // read once, before the first input
    return e != nullptr && *e != '\0' && std::strcmp(e, "0") != 0;
  }();
  return fast;
}

}  // namespace nbdwire_fuzz
