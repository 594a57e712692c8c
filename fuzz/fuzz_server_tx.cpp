// SPDX-License-Identifier: MIT
// Fuzz target: the server machine in transmission (after a canned GO, or oldstyle): requests and WRITE data.
// Input layout and invariants: surfaces.hpp.
#include "surfaces.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nbdwire_fuzz::fuzz_surface(nbdwire_fuzz::surface::server_tx, data, size);
  return 0;
}
