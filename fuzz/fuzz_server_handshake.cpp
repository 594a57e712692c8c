// SPDX-License-Identifier: MIT
// Fuzz target: the server machine from its first byte: client flags and option haggling.
// Input layout and invariants: surfaces.hpp.
#include "surfaces.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nbdwire_fuzz::fuzz_surface(nbdwire_fuzz::surface::server_handshake, data, size);
  return 0;
}
