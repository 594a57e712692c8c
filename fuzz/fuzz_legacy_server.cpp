// SPDX-License-Identifier: MIT
// Fuzz target: the server machine in the 1997 framing: requests answered one at a time.
// Input layout and invariants: surfaces.hpp.
#include "surfaces.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nbdwire_fuzz::fuzz_surface(nbdwire_fuzz::surface::legacy_server, data, size);
  return 0;
}
