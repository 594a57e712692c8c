#!/usr/bin/env bash
# Records real NBD sessions through nbd-log-proxy.py, as raw material for the fuzz corpora:
# nbdkit, qemu-nbd and nbd-server as servers; nbdinfo, nbdcopy, qemu-io and qemu-img as
# clients. Everything listens on Unix sockets or loopback, and is stopped on exit.
#   fuzz/tools/capture-sessions.sh LOGDIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
logdir=$(realpath -m "${1:?usage: capture-sessions.sh LOGDIR}")
mkdir -p "$logdir"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() {  # a Unix socket or a listening TCP port
  for _ in $(seq 100); do
    if [[ $1 == */* ]]; then [[ -S $1 ]] && return 0
    else ss -Hltn "sport = :$1" | grep -q . && return 0; fi  # no probe connection
    sleep 0.05
  done
  echo "capture: $1 never came up" >&2; return 1
}

proxy=$work/proxy.sock
uri="nbd+unix:///?socket=$proxy"
# session NAME UPSTREAM CLIENT-COMMAND...: one client run through the proxy, logged as NAME.
session() {
  local name=$1 upstream=$2; shift 2
  rm -f "$proxy"
  mkdir -p "$work/log-$name"
  python3 "$here/nbd-log-proxy.py" "$proxy" "$upstream" "$work/log-$name" & local pp=$!
  wait_for "$proxy"
  "$@" >/dev/null 2>&1 || echo "capture: $name: client exited nonzero (kept)" >&2
  sleep 0.2
  kill "$pp"; wait "$pp" 2>/dev/null || true
  local i=0
  for f in "$work/log-$name"/session-*.log; do
    [[ -s $f ]] || continue
    cp "$f" "$logdir/$name-$i.log"; i=$((i + 1))
  done
}
qio() { qemu-io -f raw "$@" "$uri"; }

# nbdkit: memory export, with and without structured replies, oldstyle, non-fixed newstyle.
start_nbdkit() {  # SOCKET ARGS...
  local s=$1; shift
  nbdkit -f -U "$s" "$@" & pids+=($!)
  wait_for "$s"
}
start_nbdkit "$work/kit.sock" memory 1M
start_nbdkit "$work/kit-nosr.sock" --no-sr memory 1M
start_nbdkit "$work/kit-old.sock" --oldstyle memory 1M
start_nbdkit "$work/kit-new.sock" --mask-handshake=0 memory 1M
start_nbdkit "$work/kit-ro.sock" -r memory 1M

session nbdkit-nbdinfo "$work/kit.sock" nbdinfo "$uri"
session nbdkit-nbdinfo-list "$work/kit.sock" nbdinfo --list "$uri"
session nbdkit-nbdinfo-map "$work/kit.sock" nbdinfo --map "$uri"
session nbdkit-qemu-io "$work/kit.sock" qio -c 'write -P 0x55 0 4k' -c 'read -P 0x55 0 4k' -c 'flush' -c 'discard 8k 4k' -c 'write -z 16k 4k'
session nbdkit-nosr-qemu-io "$work/kit-nosr.sock" qio -c 'write -P 0x33 4k 8k' -c 'read 0 16k' -c 'flush'
session nbdkit-nosr-nbdcopy "$work/kit-nosr.sock" nbdcopy --request-size=65536 "$uri" null:
session nbdkit-oldstyle-qemu-io "$work/kit-old.sock" qio -c 'write -P 0x11 0 512' -c 'read 0 1k'
session nbdkit-newstyle-qemu-io "$work/kit-new.sock" qio -c 'read 0 4k' -c 'write -P 0x22 4k 4k'
session nbdkit-readonly-qemu-io "$work/kit-ro.sock" qemu-io -r -f raw -c 'read 0 4k' "$uri"
session nbdkit-qemu-img "$work/kit-nosr.sock" qemu-img info "$uri"

# qemu-nbd: a raw file, several clients.
truncate -s 1M "$work/disk.img"
qemu-nbd -f raw -k "$work/qemu.sock" -x disk -t "$work/disk.img" & pids+=($!)
wait_for "$work/qemu.sock"
session qemu-nbd-nbdinfo "$work/qemu.sock" nbdinfo "nbd+unix:///disk?socket=$proxy"
session qemu-nbd-nbdinfo-list "$work/qemu.sock" nbdinfo --list "$uri"
session qemu-nbd-qemu-io "$work/qemu.sock" qemu-io -f raw -c 'write -P 0x44 0 8k' -c 'read 0 8k' -c 'flush' "nbd+unix:///disk?socket=$proxy"

# nbd-server: one export "disk" on loopback TCP. In the foreground (-d) it serves a single
# connection, so each session gets a fresh one.
truncate -s 1M "$work/nbd-disk.img"
nbd_session() {
  local port=$((20000 + RANDOM % 20000))
  cat >"$work/nbd-server.conf" <<CONF
[generic]
    listenaddr = 127.0.0.1
    port = $port
    allowlist = true
[disk]
    exportname = $work/nbd-disk.img
    flush = true
    trim = true
CONF
  nbd-server -d -C "$work/nbd-server.conf" & local sp=$!
  wait_for "$port"
  session "$1" "127.0.0.1:$port" "${@:2}"
  kill "$sp" 2>/dev/null || true; wait "$sp" 2>/dev/null || true
}
nbd_session nbd-server-nbdinfo nbdinfo "nbd+unix:///disk?socket=$proxy"
nbd_session nbd-server-nbdinfo-list nbdinfo --list "$uri"
nbd_session nbd-server-qemu-io qemu-io -f raw -c 'write -P 0x66 0 4k' -c 'read 0 4k' -c 'flush' "nbd+unix:///disk?socket=$proxy"

ls "$logdir"
