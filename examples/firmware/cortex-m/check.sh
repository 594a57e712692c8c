#!/usr/bin/env bash
# Cross-builds the firmware shim for a Cortex-M3 and checks it. Run by ctest:
#   check.sh symbols|qemu SOURCE-DIR BUILD-DIR GENERATOR LIMITS
#   (LIMITS: comma-separated compile definitions, e.g. NBDWIRE_MAX_STRING=256,NBDWIRE_MAX_IN_FLIGHT=4)
#   symbols  links the images; fails if the shim's images define or use the allocator or the
#            C++ exception runtime (and if the allocating canary image is not caught); records
#            text/data/bss in BUILD-DIR/sizes.txt
#   qemu     runs the test image under qemu-system-arm -M mps2-an385 and checks what it prints
#            and its exit status
# A missing cross toolchain or QEMU is a failure: scripts/install-deps.sh installs them.
set -euo pipefail

mode=${1:?usage: check.sh symbols|qemu SOURCE-DIR BUILD-DIR GENERATOR LIMITS}
src=${2:?} build=${3:?} generator=${4:?} limits=${5-}

fail() { echo "firmware-$mode: FAIL: $*" >&2; exit 1; }

need() { # PROGRAM PACKAGE
  command -v "$1" >/dev/null 2>&1 ||
    fail "$1 is not installed (Debian package $2; scripts/install-deps.sh installs it)"
}
need arm-none-eabi-g++ gcc-arm-none-eabi
need arm-none-eabi-nm binutils-arm-none-eabi
need arm-none-eabi-size binutils-arm-none-eabi
# The C++ headers and newlib of the cross compiler.
echo '#include <array>
#include <cstring>' | arm-none-eabi-g++ -std=c++20 -x c++ -fsyntax-only - 2>/dev/null ||
  fail "arm-none-eabi-g++ has no C++ library headers (Debian packages libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib)"
[ "$mode" = qemu ] && need qemu-system-arm qemu-system-arm

# Configure (quick once cached; picks up changed limits), then build (a no-op when up to date).
cmake -S "$src" -B "$build" -G "$generator" \
  -DCMAKE_TOOLCHAIN_FILE="$src/toolchain-cortex-m3.cmake" -DCMAKE_BUILD_TYPE= \
  "-DNBD_DISK_LIMITS=${limits//,/;}" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; fail "configuring the cross build failed"; }
cmake --build "$build" -j 2 >"$build.build.log" 2>&1 || { cat "$build.build.log" >&2; fail "cross build failed"; }

# Defined or referenced: in a static image either way means the code is there.
forbidden='^(malloc|_malloc_r|calloc|_calloc_r|realloc|_realloc_r|free|_free_r|_sbrk|_sbrk_r|operator new|operator delete|__cxa_allocate_exception|__cxa_throw|__cxa_rethrow|__cxa_begin_catch|__gxx_personality_v0|__aeabi_unwind_cpp_pr[0-9]|_Unwind_[A-Za-z_]+|std::__throw_[a-z_]+)\b'
# symbols_of IMAGE: writes the image's symbol names (demangled) to IMAGE.nm and prints its path.
symbols_of() {
  arm-none-eabi-nm -C "$build/$1.elf" | sed -E 's/^[0-9a-fA-F]* *[A-Za-z] //' >"$build/$1.nm" ||
    fail "arm-none-eabi-nm failed on $1.elf"
  echo "$build/$1.nm"
}

case $mode in
symbols)
  for image in nbd-disk-mps2 nbd-disk-shim; do
    list=$(symbols_of "$image")
    # An empty listing would pass anything: the image must at least have its entry points.
    grep -qx 'reset_handler' "$list" && grep -qx 'nbd_disk_open' "$list" || fail "$image.elf: unexpected nm output"
    if found=$(grep -E "$forbidden" "$list"); then
      fail "$image.elf uses the heap or the exception runtime:"$'\n'"$found"
    fi
    echo "$image: no allocator or exception runtime"
  done
  list=$(symbols_of nbd-disk-canary)
  grep -qE '^malloc$' "$list" && grep -qE '^operator new' "$list" ||
    fail "the check missed the allocator in nbd-disk-canary.elf"
  echo "nbd-disk-canary: allocator found, as it must be"

  arm-none-eabi-size "$build"/nbd-disk-{shim,baseline,mps2}.elf | tee "$build/sizes.txt"
  # What the shim adds to firmware: the shim image minus start-up code, and minus the 512-byte
  # sector buffer of its main() in bss.
  read -r st sd sb _ < <(arm-none-eabi-size "$build/nbd-disk-shim.elf" | tail -n 1)
  read -r bt bd bb _ < <(arm-none-eabi-size "$build/nbd-disk-baseline.elf" | tail -n 1)
  echo "nbd_disk shim: text $((st - bt)) data $((sd - bd)) bss $((sb - bb - 512))" | tee -a "$build/sizes.txt"
  echo "largest stack frames of the shim (-fstack-usage):"
  su=$(find "$build" -name 'nbd_disk.cpp.su')
  [ -n "$su" ] || fail "no stack usage file for nbd_disk.cpp"
  sort -t$'\t' -k2 -n -r "$su" >"$build/stack.txt"
  sed -n -E '1,5s/^[^\t]*:[0-9]+:[0-9]+:([^\t]*)\t([0-9]+)\t.*$/  \2 \1/p' "$build/stack.txt" |
    tee -a "$build/sizes.txt"
  ;;
qemu)
  elf=$build/nbd-disk-mps2.elf
  rc=0
  timeout -k 5 60 qemu-system-arm -M mps2-an385 -nographic -monitor none -serial none \
    -semihosting-config enable=on,target=native -kernel "$elf" >"$build.qemu.out" 2>&1 || rc=$?
  sed 's/^/  | /' "$build.qemu.out"
  [ "$rc" -ne 124 ] || fail "the image did not finish within 60 s"
  [ "$rc" -eq 0 ] || fail "the image exited with status $rc"
  for line in 'handshake: fixed newstyle, NBD_OPT_GO' \
              'sector 0: boot signature 55aa, partition 1 type 83 start 1 sectors 127' \
              'nbd_disk: PASS'; do
    grep -qxF "$line" "$build.qemu.out" || fail "missing output line: $line"
  done
  echo "firmware-qemu-mps2: PASS"
  ;;
*) fail "unknown mode" ;;
esac
