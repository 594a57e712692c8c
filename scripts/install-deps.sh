#!/usr/bin/env bash
# Installs (Debian/Ubuntu, apt-get) what the build and the tests need, skipping packages
# that are already installed. The interop tests drive real NBD peers, hence the servers and
# clients below.
#   scripts/install-deps.sh              what the build and the tests need
#   scripts/install-deps.sh --packaging  what building the Debian packages needs (debian/)
set -euo pipefail

if [[ ${1:-} == --packaging ]]; then
  # dpkg-buildpackage, dh and lintian; cmake, libfuse3-dev, libgnutls28-dev and pkgconf are
  # Build-Depends of debian/control.
  packages=(debhelper devscripts build-essential lintian cmake libfuse3-dev libgnutls28-dev pkgconf)
else
packages=(
  cmake g++ clang make binutils       # toolchains; binutils provides nm for core-freestanding
  libclang-rt-14-dev                   # libFuzzer and the sanitizer runtimes for clang 14 (fuzz/)
  doctest-dev libbenchmark-dev         # unit tests, benchmarks
  nbdkit qemu-utils nbd-server nbd-client libnbd-bin fio   # real peers for interop tests
  libfuse3-dev fuse3 pkg-config e2fsprogs                  # nbdwire-fuse and its mount tests
  gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib   # firmware shim: Cortex-M build
  qemu-system-arm fdisk                # firmware shim: mps2-an385 run; sfdisk for the MBR image
  qemu-system-x86 seabios ipxe-qemu xz-utils zstd   # tests/kernel: Debian kernels under TCG (vmlinux unpacked with xz/zstd)
  python3 ca-certificates time          # time: GNU time (peak memory in the hostile-client tests)
  file                                 # file(1): nbdinfo and nbdwire-client info probe content with it
  libgnutls28-dev gnutls-bin           # TLS in the tools (GnuTLS); certtool and psktool for the TLS tests
)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
