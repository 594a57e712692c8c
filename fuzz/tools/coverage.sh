#!/usr/bin/env bash
# Line and branch coverage of include/nbdwire/ reached by the committed fuzz corpora: every
# target built with clang's source-based coverage, its corpus replayed (no fuzzing), one
# llvm-cov report per header. Needs clang++, llvm-profdata and llvm-cov (Debian: clang, llvm).
#   fuzz/tools/coverage.sh [OUT-DIR]      (default: a temporary directory; the report is printed)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
targets=(client_handshake client_tx codec legacy_client legacy_server roundtrip server_handshake server_tx split)
for t in "${targets[@]}"; do
    clang++ -std=c++20 -O0 -g -fprofile-instr-generate -fcoverage-mapping -I"$root/include" -I"$root/fuzz" \
        "$root/fuzz/fuzz_$t.cpp" "$root/fuzz/replay_main.cpp" -o "$out/fuzz_$t"
    LLVM_PROFILE_FILE="$out/$t.profraw" "$out/fuzz_$t" "$root"/fuzz/corpus/"$t"/* >/dev/null
done
llvm-profdata merge -o "$out/all.profdata" "$out"/*.profraw
objects=()
for t in "${targets[@]:1}"; do objects+=(-object "$out/fuzz_$t"); done
cd "$root/include/nbdwire"
llvm-cov report "$out/fuzz_${targets[0]}" "${objects[@]}" -instr-profile="$out/all.profdata" \
    -- *.hpp */*.hpp | tee "$out/report.txt"
