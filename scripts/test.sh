#!/usr/bin/env bash
# The nbdwire test command. Builds and tests two trees:
#   build/asan  clang++ (g++ if clang++ is missing), AddressSanitizer + UBSan, -O1 -g
#   build/gcc   g++ -O2
# both with -Wall -Wextra -Wpedantic -Wconversion -Wshadow -Werror on our own targets, and runs
# ctest in each. Then, where dpkg-buildpackage exists, it builds the Debian packages (debian/)
# from a copy of the tree, runs lintian on them and builds a program against their contents.
# The last line printed is the ctest summary of the gcc tree.
#   scripts/test.sh           everything
#   scripts/test.sh package   the Debian package step alone
# Environment: NBDWIRE_SKIP_DEPS=1 skips scripts/install-deps.sh; NBDWIRE_JOBS (default 2).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

jobs=${NBDWIRE_JOBS:-2}
only=${1:-}
if [[ -n $only && $only != package ]]; then
  echo "usage: scripts/test.sh [package]" >&2
  exit 2
fi

if [[ ${NBDWIRE_SKIP_DEPS:-0} != 1 && -z $only ]]; then
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
  # The kernel tests (tests/kernel: a Linux guest under QEMU TCG) run in the gcc tree only.
  local exclude=()
  [[ $name == asan ]] && exclude=(-LE kernel)
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" "${exclude[@]}" 2>&1 | tee "$dir/ctest.log"
  local rc=${PIPESTATUS[0]}
  summary=$(grep -E '^[0-9]+% tests passed' "$dir/ctest.log" | tail -n 1)
  [[ -n $summary ]] || summary="test.sh: $dir: ctest produced no summary (exit $rc)"
  return "$rc"
}

# package_check: builds nbdwire-dev and nbdwire-tools with `dpkg-buildpackage -b` in a copy
# of the tree (build/ and the tree itself stay untouched), fails on lintian errors, extracts
# both packages into a throwaway root with dpkg-deb -x (nothing is installed on the system),
# runs the packaged programs' --version, and builds and runs tests/consumer against the root
# with pkg-config (PKG_CONFIG_SYSROOT_DIR) and with find_package. Sets $package_summary.
package_check() {
  package_summary=""
  if ! command -v dpkg-buildpackage >/dev/null; then
    package_summary="skipped: dpkg-buildpackage not found (not a Debian system)"
    return 0
  fi
  if [[ ${NBDWIRE_SKIP_DEPS:-0} != 1 ]]; then
    scripts/install-deps.sh --packaging || { package_summary="installing the packaging tools failed"; return 1; }
  fi
  local tool
  for tool in dh lintian dpkg-deb dpkg-parsechangelog pkg-config g++; do
    command -v "$tool" >/dev/null || { package_summary="$tool not found (scripts/install-deps.sh --packaging)"; return 1; }
  done

  local tmp src sysroot log
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/nbdwire-package.XXXXXX") || { package_summary="mktemp failed"; return 1; }
  src=$tmp/nbdwire sysroot=$tmp/root log=$tmp/build.log
  mkdir -p "$src" "$sysroot"
  echo "==== Debian packages: building in $src"

  # The copy: the files of the working tree that git knows or would add (tracked and untracked,
  # not ignored), or, outside a git checkout, everything but build trees.
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
      tar --null -T - -cf - | tar -xf - -C "$src"
  else
    tar --exclude=./build --exclude=./.git -cf - . | tar -xf - -C "$src"
  fi || { package_summary="copying the tree to $src failed"; return 1; }

  local version
  version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version) || { package_summary="debian/changelog unreadable"; return 1; }

  if ! (cd "$src" && DEB_BUILD_OPTIONS="parallel=$jobs nocheck" dpkg-buildpackage -b -us -uc) >"$log" 2>&1; then
    tail -n 40 "$log"
    package_summary="dpkg-buildpackage failed (log: $log)"
    return 1
  fi
  local debs=("$tmp"/nbdwire-dev_"${version}"_all.deb "$tmp"/nbdwire-tools_"${version}"_*.deb)
  local deb
  for deb in "${debs[@]}"; do
    [[ -f $deb ]] || { package_summary="dpkg-buildpackage made no $deb"; return 1; }
  done
  ls -l "$tmp"/*.deb

  echo "==== Debian packages: lintian"
  local changes lint
  changes=$(ls "$tmp"/nbdwire_"${version}"_*.changes)
  lint=$(lintian --fail-on error "$changes" 2>&1)
  local lint_rc=$?
  [[ -z $lint ]] || printf '%s\n' "$lint"
  local errors warnings
  errors=$(grep -c '^E: ' <<<"$lint")
  warnings=$(grep -c '^W: ' <<<"$lint")
  if ((lint_rc != 0 || errors != 0)); then
    package_summary="lintian: $errors errors, $warnings warnings (exit $lint_rc)"
    return 1
  fi

  echo "==== Debian packages: contents"
  for deb in "${debs[@]}"; do
    dpkg-deb -x "$deb" "$sysroot" || { package_summary="dpkg-deb -x $deb failed"; return 1; }
  done
  local f
  for f in usr/include/nbdwire/nbdwire.hpp usr/share/pkgconfig/nbdwire.pc usr/share/cmake/nbdwire/nbdwireConfig.cmake \
           usr/bin/nbdwire-server usr/bin/nbdwire-client usr/bin/nbdwire-fuse \
           usr/share/man/man1/nbdwire-server.1.gz usr/share/man/man1/nbdwire-client.1.gz usr/share/man/man1/nbdwire-fuse.1.gz \
           usr/share/doc/nbdwire-dev/copyright usr/share/doc/nbdwire-tools/copyright; do
    [[ -f $sysroot/$f ]] || { package_summary="the packages hold no /$f"; return 1; }
  done
  local out
  for tool in nbdwire-server nbdwire-client nbdwire-fuse; do
    out=$("$sysroot/usr/bin/$tool" --version)
    [[ $out == "$tool $version" ]] || { package_summary="packaged $tool --version says '$out', want '$tool $version'"; return 1; }
    echo "$out"
  done

  echo "==== Debian packages: a consumer built with pkg-config against $sysroot"
  local cflags
  cflags=$(PKG_CONFIG_SYSROOT_DIR=$sysroot PKG_CONFIG_LIBDIR=$sysroot/usr/share/pkgconfig \
           PKG_CONFIG_PATH=$sysroot/usr/share/pkgconfig pkg-config --cflags nbdwire) ||
    { package_summary="pkg-config --cflags nbdwire failed in $sysroot"; return 1; }
  cflags=${cflags%% }
  [[ $cflags == "-I$sysroot/usr/include" ]] || { package_summary="pkg-config --cflags nbdwire says '$cflags'"; return 1; }
  # shellcheck disable=SC2086  # cflags is a list of flags
  g++ -std=c++20 $cflags -Wall -Wextra -Werror "-DCONSUMER_EXPECTED_VERSION=\"$version\"" \
    tests/consumer/main.cpp -o "$tmp/consumer" || { package_summary="the pkg-config consumer does not build"; return 1; }
  out=$("$tmp/consumer") || { package_summary="the pkg-config consumer failed: $out"; return 1; }
  [[ $out == "consumer: nbdwire $version works" ]] || { package_summary="the pkg-config consumer printed '$out'"; return 1; }
  echo "$out"

  echo "==== Debian packages: a consumer built with find_package against $sysroot/usr"
  cmake -DMODE=find_package -DCONSUMER_SOURCE_DIR="$root/tests/consumer" -DCONSUMER_BINARY_DIR="$tmp/consumer-cmake" \
    -DCONSUMER_GENERATOR="Unix Makefiles" -DCONSUMER_CXX_COMPILER=g++ -DCONSUMER_EXPECTED_VERSION="$version" \
    -DNBDWIRE_PREFIX="$sysroot/usr" -P tests/consumer/run.cmake >"$tmp/consumer-cmake.log" 2>&1 ||
    { cat "$tmp/consumer-cmake.log"; package_summary="the find_package consumer failed"; return 1; }
  grep "find_package: consumer:" "$tmp/consumer-cmake.log"

  rm -rf "$tmp"
  package_summary="nbdwire-dev and nbdwire-tools $version built, lintian: 0 errors, $warnings warnings; consumers OK"
  return 0
}

if [[ $only == package ]]; then
  package_check
  rc=$?
  echo "test.sh: Debian packages: $package_summary"
  exit "$rc"
fi

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

# The Debian packages, after both trees pass and before the summary lines.
if ! package_check; then
  echo "test.sh: build/asan: $asan_summary"
  echo "test.sh: build/gcc: $summary"
  echo "test.sh: Debian packages FAILED: $package_summary"
  exit 1
fi

echo
echo "test.sh: build/asan: $asan_summary"
echo "test.sh: Debian packages: $package_summary"
echo "test.sh: build/gcc:"
echo "$summary"
