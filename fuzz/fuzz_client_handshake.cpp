// SPDX-License-Identifier: MIT
// Fuzz target: the client machine from its first byte: greetings and option replies.
// Input layout and invariants: surfaces.hpp.
#include "surfaces.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nbdwire_fuzz::fuzz_surface(nbdwire_fuzz::surface::client_handshake, data, size);
  return 0;
}
