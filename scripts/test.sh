#!/usr/bin/env bash
# The nbdwire test command. Builds and tests two trees:
#   build/asan  clang++ (g++ if clang++ is missing), AddressSanitizer + UBSan, -O1 -g
#   build/gcc   g++ -O2
# both with -Wall -Wextra -Wpedantic -Wconversion -Wshadow -Werror on our own targets, and runs
# ctest in each. The gcc tree runs last, and the last line printed is its ctest summary.
# Environment: NBDWIRE_SKIP_DEPS=1 skips scripts/install-deps.sh; NBDWIRE_JOBS (default 2).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

jobs=${NBDWIRE_JOBS:-2}

if [[ ${NBDWIRE_SKIP_DEPS:-0} != 1 ]]; then
  scripts/install-deps.sh || { echo "test.sh: installing dependencies failed"; exit 1; }
fi

summary=""

# run_tree NAME CXX CMAKE-ARGS... : configure, build, smoke-run the benchmarks, ctest.
# Sets $summary to ctest's summary line; returns nonzero on any failure.
run_tree() {
  local name=$1 cxx=$2
  shift 2
  local dir="build/$name"
  summary=""
  echo "==== $dir: configure ($cxx)"
  cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER="$cxx" \
    -DNBDWIRE_BUILD_TESTS=ON -DNBDWIRE_BUILD_EXAMPLES=ON -DNBDWIRE_BUILD_BENCH=ON -DNBDWIRE_BUILD_FUZZ=ON \
    "$@" || { summary="test.sh: $dir: configure failed"; return 1; }
  echo "==== $dir: build"
  cmake --build "$dir" -j "$jobs" || { summary="test.sh: $dir: build failed"; return 1; }

  # The benchmarks are not tests, but their in-loop checks are: a wrong result exits nonzero.
  if [[ -x "$dir/bench/nbdwire-bench" ]]; then
    echo "==== $dir: benchmark smoke run"
    if ! "$dir/bench/nbdwire-bench" --benchmark_min_time=0.01 >"$dir/bench-smoke.log" 2>&1; then
      cat "$dir/bench-smoke.log"
      summary="test.sh: $dir: nbdwire-bench reported wrong results"
      return 1
    fi
  fi

  echo "==== $dir: ctest"
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" 2>&1 | tee "$dir/ctest.log"
  local rc=${PIPESTATUS[0]}
  summary=$(grep -E '^[0-9]+% tests passed' "$dir/ctest.log" | tail -n 1)
  [[ -n $summary ]] || summary="test.sh: $dir: ctest produced no summary (exit $rc)"
  return "$rc"
}

asan_cxx=clang++
if ! command -v clang++ >/dev/null; then
  echo "test.sh: clang++ not found, building the sanitizer tree with g++"
  asan_cxx=g++
fi

if ! run_tree asan "$asan_cxx" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DNBDWIRE_SANITIZE=ON; then
  echo "test.sh: build/asan FAILED"
  echo "$summary"
  exit 1
fi
asan_summary=$summary

if ! run_tree gcc g++ -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2"; then
  echo "test.sh: build/asan: $asan_summary"
  echo "test.sh: build/gcc FAILED"
  echo "$summary"
  exit 1
fi

echo
echo "test.sh: build/asan: $asan_summary"
echo "test.sh: build/gcc:"
echo "$summary"
