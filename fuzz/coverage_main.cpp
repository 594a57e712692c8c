// SPDX-License-Identifier: MIT
// The coverage replay: every fuzz target linked into one program (each target's source is
// compiled with its LLVMFuzzerTestOneInput renamed nbdwire_fuzz_entry_<target>), so the
// headers' inline functions have one copy and one set of counters for all targets.
//   fuzz_coverage_replay TARGET FILE-OR-DIR...
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "replay.hpp"

#define NBDWIRE_FUZZ_ENTRY(t) extern "C" int nbdwire_fuzz_entry_##t(const std::uint8_t*, std::size_t);
NBDWIRE_FUZZ_ENTRY(server_handshake)
NBDWIRE_FUZZ_ENTRY(client_handshake)
NBDWIRE_FUZZ_ENTRY(server_tx)
NBDWIRE_FUZZ_ENTRY(client_tx)
NBDWIRE_FUZZ_ENTRY(legacy_server)
NBDWIRE_FUZZ_ENTRY(legacy_client)
NBDWIRE_FUZZ_ENTRY(roundtrip)
NBDWIRE_FUZZ_ENTRY(split)
NBDWIRE_FUZZ_ENTRY(codec)
#undef NBDWIRE_FUZZ_ENTRY

namespace {

struct target {
  std::string_view name;
  nbdwire_fuzz::entry_point entry;
};

#define NBDWIRE_FUZZ_TARGET(t) target{#t, nbdwire_fuzz_entry_##t}
constexpr target targets[] = {
    NBDWIRE_FUZZ_TARGET(server_handshake), NBDWIRE_FUZZ_TARGET(client_handshake), NBDWIRE_FUZZ_TARGET(server_tx),
    NBDWIRE_FUZZ_TARGET(client_tx),        NBDWIRE_FUZZ_TARGET(legacy_server),    NBDWIRE_FUZZ_TARGET(legacy_client),
    NBDWIRE_FUZZ_TARGET(roundtrip),        NBDWIRE_FUZZ_TARGET(split),            NBDWIRE_FUZZ_TARGET(codec),
};
#undef NBDWIRE_FUZZ_TARGET

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2)
    for (const target& t : targets)
      if (t.name == argv[1]) return nbdwire_fuzz::replay(t.entry, std::vector<std::string>(argv + 2, argv + argc), argv[1]);
  std::fprintf(stderr, "usage: fuzz_coverage_replay TARGET FILE-OR-DIR...\ntargets:");
  for (const target& t : targets) std::fprintf(stderr, " %.*s", static_cast<int>(t.name.size()), t.name.data());
  std::fprintf(stderr, "\n");
  return 2;
}
