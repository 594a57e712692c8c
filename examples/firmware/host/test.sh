#!/usr/bin/env bash
# The firmware shim on the host, through its socket transport, against a real server:
#   test.sh nbdwire-server|nbdkit FIRMWARE-HOST NBDWIRE-SERVER
# Two exports: "mbr", an image partitioned with sfdisk (sector 0 is an MBR), and "data", a
# random file whose size is not a multiple of 512. The shim reads sector 0 and the file's
# sectors, writes and reads back, and is refused where it must be (past the end, read-only
# exports, unknown exports, a server that never answers).
peer=${1:?usage: test.sh nbdwire-server|nbdkit FIRMWARE-HOST NBDWIRE-SERVER}
FIRMWARE_HOST=${2-}
. "$(dirname "$0")/../../../tests/interop/lib.sh" "${3-}" ""
TEST_NAME=firmware-host-$peer

[ -x "$FIRMWARE_HOST" ] || fail "firmware-host was not built ($FIRMWARE_HOST)"
need_peer sfdisk

# ---- the exports ------------------------------------------------------------------------------
mkdir "$T/exports"
mbr=$T/exports/mbr
data=$T/exports/data
truncate -s 8M "$mbr"
rand_file "$T/fill" $((7 * 1024 * 1024))
dd if="$T/fill" of="$mbr" bs=1M seek=1 conv=notrunc status=none
printf 'label: dos\nstart=2048, size=14336, type=83, bootable\n' | step "sfdisk partitions the image" sfdisk --no-reread --no-tell-kernel "$mbr" >/dev/null
# Above the 32 MiB a request may carry, so reading all of it takes two requests.
rand_file "$data" $((34 * 1024 * 1024 + 4321))
cp "$mbr" "$T/mbr.orig"
cp "$data" "$T/data.orig"
data_sectors=$(( $(stat -c %s "$data") / 512 ))

# ---- the server -------------------------------------------------------------------------------
# start_peer [-r]: serves both exports on 127.0.0.1; sets PORT and PEER_PID.
start_peer() {
    local attempt i
    case $peer in
    nbdwire-server)
        start_server_tcp "$@" mbr=file:"$mbr" data=file:"$data"
        PORT=$SERVER_PORT PEER_PID=$SERVER_PID
        ;;
    nbdkit)
        need_peer nbdkit
        for attempt in 1 2 3; do
            PORT=$(free_port)
            bg nbdkit nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$PORT" "$@" file dir="$T/exports"
            PEER_PID=$BG_PID
            for i in $(seq 600); do
                _tcp_listening "$PORT" && return 0
                kill -0 "$PEER_PID" 2>/dev/null || break
                sleep 0.05
            done
            sed 's/^/    | /' "$T/nbdkit.err" >&2
            log "   nbdkit did not start on port $PORT (attempt $attempt)"
        done
        fail "nbdkit did not start"
        ;;
    *) fail "unknown peer '$peer'" ;;
    esac
}
stop_peer() {
    if [ "$peer" = nbdwire-server ]; then stop_server; else _stop_pid "$PEER_PID"; fi
}

shim() { step "firmware-host $*" "$FIRMWARE_HOST" "$@"; }
sectors_of() { slice "$1" $(($2 * 512)) $(($3 * 512)); }  # FILE LBA COUNT

start_peer
root=nbd://127.0.0.1:$PORT

# Sector 0 of the partitioned image: the boot signature and sfdisk's partition entry.
shim "$root/mbr" info >"$T/info"
log "   $(cat "$T/info")"
grep -q '^sectors=16384 bytes=8388608 read_only=0 ' "$T/info" || fail "mbr: wrong geometry: $(cat "$T/info")"
shim "$root/mbr" read:0:1:"$T/s0"
sectors_of "$mbr" 0 1 >"$T/s0.expected"
same_file "$T/s0.expected" "$T/s0" "sector 0"
expect_eq "$(od -An -tx1 -j510 -N2 "$T/s0" | tr -d ' ')" 55aa "boot signature"
expect_eq "$(od -An -tx1 -j446 -N1 "$T/s0" | tr -d ' ')/$(od -An -tx1 -j450 -N1 "$T/s0" | tr -d ' ')/$(od -An -tu4 -j454 -N4 "$T/s0" | tr -d ' ')" \
    80/83/2048 "partition 1 (status/type/first LBA)"

# The file's sectors: all of them, then a window, in one session; the partial last sector is
# not addressable, and a refusal leaves the disk usable.
shim "$root/data" info read:0:"$data_sectors":"$T/all" read:1000:3000:"$T/window" \
    expect=RANGE:read:"$data_sectors":1:"$T/x" expect=RANGE:read:$((data_sectors - 2)):3:"$T/x" \
    read:5:1:"$T/again" >"$T/info"
grep -q "^sectors=$data_sectors " "$T/info" || fail "data: wrong geometry: $(cat "$T/info")"
sectors_of "$data" 0 "$data_sectors" >"$T/all.expected"
same_file "$T/all.expected" "$T/all" "all sectors of the file"
sectors_of "$data" 1000 3000 >"$T/window.expected"
same_file "$T/window.expected" "$T/window" "sectors 1000-3999"
sectors_of "$data" 5 1 >"$T/again.expected"
same_file "$T/again.expected" "$T/again" "sector 5 after the refusals"

# Write, flush and read back in one session; again in a new one; then the files themselves.
rand_file "$T/w1" $((1 * 512))
rand_file "$T/w2" $((2500 * 512))
shim "$root/data" write:7:1:"$T/w1" write:100:2500:"$T/w2" flush read:7:1:"$T/r1" read:100:2500:"$T/r2"
same_file "$T/w1" "$T/r1" "sector 7 read back"
same_file "$T/w2" "$T/r2" "sectors 100-2599 read back"
step_fails "a write from a file of the wrong size" "$FIRMWARE_HOST" "$root/mbr" write:2048:8:"$T/w1"
head -c $((8 * 512)) "$T/w2" >"$T/w3"
shim "$root/mbr" write:2048:8:"$T/w3" flush
shim "$root/data" read:6:3:"$T/r3"
{ sectors_of "$T/data.orig" 6 1; cat "$T/w1"; sectors_of "$T/data.orig" 8 1; } >"$T/r3.expected"
same_file "$T/r3.expected" "$T/r3" "sectors 6-8 in a new session"
stop_peer
spliced "$T/data.orig" $((7 * 512)) "$T/w1" >"$T/d1"
spliced "$T/d1" $((100 * 512)) "$T/w2" >"$T/data.expected"
same_file "$T/data.expected" "$data" "the data file after the writes"
spliced "$T/mbr.orig" $((2048 * 512)) "$T/w3" >"$T/mbr.expected"
same_file "$T/mbr.expected" "$mbr" "the image after the write"

# Refusals.
start_peer -r
root=nbd://127.0.0.1:$PORT
shim "$root/mbr" info expect=READ_ONLY:write:2048:1:"$T/w1" read:0:1:"$T/s0ro" >"$T/info"
grep -q ' read_only=1 ' "$T/info" || fail "read-only export not reported: $(cat "$T/info")"
step_fails "open of an unknown export" "$FIRMWARE_HOST" "$root/no-such-export" info
grep -q 'open: REFUSED' "$T/step.err" || fail "unknown export: expected REFUSED"
step_fails "a root path that is not nbd://" "$FIRMWARE_HOST" "iscsi:127.0.0.1::::disk" info
grep -q 'open: BAD_PATH' "$T/step.err" || fail "bad root path: expected BAD_PATH"
stop_peer
step_fails "open with nobody listening" "$FIRMWARE_HOST" "$root/mbr" info
grep -q 'open: TRANSPORT' "$T/step.err" || fail "nothing listening: expected TRANSPORT"

# A peer that accepts and never speaks: the tick budget ends the open.
if [ "$peer" = nbdwire-server ]; then
    need_peer python3
    # The listener takes a port the kernel picks (no race with other tests for it) and prints
    # it; a loaded machine may take seconds to start python, so wait while it is alive.
    bg silent python3 -c '
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); time.sleep(60)'
    for i in $(seq 600); do
        [ -s "$T/silent.out" ] && break
        kill -0 "$BG_PID" 2>/dev/null || break
        sleep 0.05
    done
    PORT=$(head -n 1 "$T/silent.out")
    case $PORT in
    '' | *[!0-9]*) sed 's/^/    | /' "$T/silent.err" >&2; fail "the silent listener did not start" ;;
    esac
    step_fails "open against a silent peer" "$FIRMWARE_HOST" --timeout-ms 300 "nbd://127.0.0.1:$PORT/mbr" info
    grep -q 'open: TIMEOUT' "$T/step.err" || fail "silent peer: expected TIMEOUT"
fi
log PASS
