#!/usr/bin/env bash
# Line and branch coverage of include/nbdwire/ reached by the committed fuzz corpora: every
# target built into one binary with clang's source-based coverage (fuzz/coverage_main.cpp), its
# corpus replayed (no fuzzing), one llvm-cov summary per header (fuzz/tools/coverage-floor.py).
# Needs clang++, llvm-profdata and llvm-cov of the same version (Debian: clang, llvm-14).
# The same measure runs under ctest as fuzz-coverage-floor in clang builds with the tests.
#   fuzz/tools/coverage.sh [OUT-DIR] [coverage-floor.py options: --markdown, --write-floor]
#   (default OUT-DIR: a temporary directory; the report is printed; with --write-floor the
#   floor file fuzz/coverage-floor.txt is rewritten from the figures)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$(mktemp -d)
if [[ $# -gt 0 && $1 != --* ]]; then out=$1; shift; fi
mkdir -p "$out"
major=$(clang++ -dumpversion | cut -d. -f1)
pick() { command -v "$1-$major" || command -v "$1" || echo "$1-$major"; }
targets=(server_handshake client_handshake server_tx client_tx legacy_server legacy_client roundtrip split codec)
flags=(-std=c++20 -O0 -fprofile-instr-generate -fcoverage-mapping -I"$root/include" -I"$root/fuzz")
pids=()
for t in "${targets[@]}"; do
  clang++ "${flags[@]}" -DLLVMFuzzerTestOneInput="nbdwire_fuzz_entry_$t" -c "$root/fuzz/fuzz_$t.cpp" -o "$out/$t.o" &
  pids+=($!)
  if ((${#pids[@]} >= ${NBDWIRE_JOBS:-2})); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done  # set -e: a failed compile stops here
objects=()
for t in "${targets[@]}"; do objects+=("$out/$t.o"); done
clang++ "${flags[@]}" "$root/fuzz/coverage_main.cpp" "${objects[@]}" -o "$out/fuzz_coverage_replay"
python3 "$root/fuzz/tools/coverage-floor.py" --replay "$out/fuzz_coverage_replay" --corpus "$root/fuzz/corpus" \
  --include "$root/include/nbdwire" --profdata "$(pick llvm-profdata)" --cov "$(pick llvm-cov)" --work "$out" \
  --floor "$root/fuzz/coverage-floor.txt" "$@"
