#!/usr/bin/env bash
# Builds nbdwire-server (Release) and runs it with the given arguments, e.g.
#   scripts/serve.sh disk=memory:1G
# Installs cmake and g++ with apt-get first if they are missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends cmake g++ make
fi
cmake -S . -B build/serve -DCMAKE_BUILD_TYPE=Release -DNBDWIRE_BUILD_TESTS=OFF \
  -DNBDWIRE_BUILD_BENCH=OFF -DNBDWIRE_INSTALL=OFF >/dev/null
cmake --build build/serve --target nbdwire-server -j2 >/dev/null
exec build/serve/examples/nbdwire-server "$@"
