# A server that goes away: requests in flight and every later request fail with EIO promptly
# (no hung mount), nbdwire-fuse says why, and the mount still unmounts cleanly.
# Argument: the backend (see start_backend in lib.sh).
source "$(dirname "$0")/lib.sh"

KIND=${1:?backend}
if [ "$KIND" = nbdkit ]; then
    # Slow reads, so one is in flight when the server dies.
    start_backend nbdkit $((64 * 1024 * 1024)) --filter=delay delay-read=1
else
    start_backend "$KIND" $((64 * 1024 * 1024))
fi
mount_fuse "$URI"

rand_file "$T/a" $((1024 * 1024))
step "write before" dd if="$T/a" of="$FILE" bs=64K conv=notrunc,fsync status=none
step "read before" dd if="$FILE" of="$T/back" bs=64K count=1 iflag=direct status=none
slice "$T/a" 0 65536 >"$T/a.head"
same_file "$T/a.head" "$T/back" "read back before the server goes away"

# kill_server: SIGKILL to the server itself (BACKEND_PID is the `timeout` wrapping it).
kill_server() {
    local p
    for p in $(pgrep -P "$BACKEND_PID"); do kill -KILL "$p"; done
    wait "$BACKEND_PID" 2>/dev/null || true
    NBDKIT_LOG=  # nobody is left to receive NBD_CMD_DISC
    log "   server killed"
}

if [ "$KIND" = nbdkit ]; then
    log "a reader in flight while the server is killed"
    dd if="$FILE" of=/dev/null bs=64K skip=100 count=4 iflag=direct status=none 2>"$T/reader.err" &
    reader=$!
    # Each read takes 1 s, so the reader is still waiting whether or not its request has
    # reached the server yet: either way it must end with EIO.
    sleep 0.3
    kill_server
    rc=0
    timeout 30 tail --pid="$reader" -f /dev/null || fail "the reader hung after the server died"
    wait "$reader" || rc=$?
    sed 's/^/    | /' "$T/reader.err" >&2
    [ "$rc" -ne 0 ] || fail "the read in flight succeeded although the server died"
    grep -q 'Input/output error' "$T/reader.err" || fail "the read in flight did not fail with EIO"
else
    kill_server
fi

log "later requests fail with EIO"
step_fails "read after" dd if="$FILE" of=/dev/null bs=4K skip=1000 count=1 iflag=direct status=none
grep -q 'Input/output error' "$T/step.err" || fail "read after: expected EIO"
step_fails "write after" dd if="$T/a" of="$FILE" bs=4K count=1 oflag=direct conv=notrunc status=none
grep -q 'Input/output error' "$T/step.err" || fail "write after: expected EIO"
step_fails "fsync after" dd if="$T/a" of="$FILE" bs=4K count=1 conv=notrunc,fsync status=none
grep -q 'Input/output error' "$T/step.err" || fail "fsync after: expected EIO"
grep -q 'fails with EIO' "$FUSE_ERR" || fail "nbdwire-fuse did not report the lost connection"
sed 's/^/    | /' "$FUSE_ERR" >&2

unmount_fuse
log "PASS"
