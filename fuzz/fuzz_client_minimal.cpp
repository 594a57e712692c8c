// SPDX-License-Identifier: MIT
// Fuzz target: the client machine as a firmware build has it, without structured replies,
// STARTTLS and the 1997 framing (config.hpp; examples/firmware builds the same way). The first
// input byte picks the surface (bit 0: the handshake from the first server byte, or
// transmission after a canned GO with simple replies); the rest is that surface's input
// (surfaces.hpp). A server that uses a part left out, and a caller that asks for one, must
// meet the typed refusals of a full build's client that did not negotiate it.
// Its own binary: these switches change the client's inline functions, so it is never linked
// with the other targets (not in fuzz_coverage_replay).
#define NBDWIRE_CLIENT_STRUCTURED_REPLIES 0
#define NBDWIRE_CLIENT_STARTTLS 0
#define NBDWIRE_CLIENT_LEGACY_1997 0
#include "surfaces.hpp"

static_assert(!nbdwire::client_has_structured_replies && !nbdwire::client_has_starttls &&
              !nbdwire::client_has_legacy_1997);

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  using nbdwire_fuzz::surface;
  const surface s = (data[0] & 1) != 0 ? surface::client_tx : surface::client_handshake;
  nbdwire_fuzz::fuzz_surface(s, data + 1, size - 1);
  return 0;
}
