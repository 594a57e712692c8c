// SPDX-License-Identifier: MIT
// Fuzz target: the client machine in transmission (after a canned GO): replies and READ data.
// Input layout and invariants: surfaces.hpp.
#include "surfaces.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nbdwire_fuzz::fuzz_surface(nbdwire_fuzz::surface::client_tx, data, size);
  return 0;
}
