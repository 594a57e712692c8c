// SPDX-License-Identifier: MIT
// Fuzz target: the client machine in the 1997 framing: replies in request order.
// Input layout and invariants: surfaces.hpp.
#include "surfaces.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nbdwire_fuzz::fuzz_surface(nbdwire_fuzz::surface::legacy_client, data, size);
  return 0;
}
