// SPDX-License-Identifier: MIT
// nbdwire-bench entry point: BENCHMARK_MAIN, except that a wrong result fails the run.
#include "common.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return nbdwire_bench::g_failed ? 1 : 0;
}
