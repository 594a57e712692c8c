// SPDX-License-Identifier: MIT
// Stands in for libFuzzer where it is not available (GCC): runs every input named on the
// command line, or every file of the directories named, once. A failing invariant aborts.
#include <string>
#include <vector>

#include "replay.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  return nbdwire_fuzz::replay(LLVMFuzzerTestOneInput, std::vector<std::string>(argv + 1, argv + argc), "");
}
