# Shared by the FUSE tests. Each test script is run as
#   bash TEST.sh PATH-TO-nbdwire-server PATH-TO-nbdwire-client PATH-TO-nbdwire-fuse [TEST ARGUMENTS...]
# It builds on the interop helpers (steps with deadlines, servers, cleanup) and adds mounting,
# unmounting and the backends. Every mount is unmounted on exit, before the servers stop.

# shellcheck source=../../../tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../tests/interop/lib.sh"

NBDWIRE_FUSE=${1-}
if [ $# -ge 1 ]; then shift; fi

if [ ! -c /dev/fuse ]; then
    log "SKIP: /dev/fuse is absent, so nothing can be mounted with FUSE here"
    exit 77
fi
need_peer fusermount3
[ -n "$NBDWIRE_FUSE" ] || fail "nbdwire-fuse: there is no CMake target nbdwire-fuse in this build"
[ -x "$NBDWIRE_FUSE" ] || fail "nbdwire-fuse: $NBDWIRE_FUSE does not exist; build the target first"

MOUNTS=()
FUSE_N=0

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }

_fuse_cleanup() {
    local rc=$? m
    set +e
    for m in "${MOUNTS[@]}"; do
        if is_mounted "$m"; then
            fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
        fi
    done
    (exit "$rc")
    _cleanup
}
trap _fuse_cleanup EXIT

# _wait_mounted DIR PID: waits until DIR is a FUSE mount with the file in it.
_wait_mounted() {
    local i
    for i in $(seq 200); do
        is_mounted "$1" && [ -e "$1/nbd" ] && return 0
        if [ -n "${2-}" ] && ! kill -0 "$2" 2>/dev/null; then
            sed 's/^/    | /' "$FUSE_ERR" >&2
            fail "nbdwire-fuse exited before mounting $1"
        fi
        sleep 0.05
    done
    fail "$1 not mounted after 10 s"
}

# mount_fuse URI [OPTIONS...]: nbdwire-fuse --foreground in the background on a fresh directory.
# Sets MNT (the mount point), FILE ($MNT/nbd), FUSE_PID and FUSE_ERR.
mount_fuse() {
    local uri=$1
    shift
    FUSE_N=$((FUSE_N + 1))
    MNT=$T/mnt$FUSE_N
    FILE=$MNT/nbd
    FUSE_ERR=$T/fuse$FUSE_N.err
    mkdir -p "$MNT"
    log "+ (background) $NBDWIRE_FUSE --foreground $* $MNT $uri"
    timeout -k 5 300 "$NBDWIRE_FUSE" --foreground "$@" "$MNT" "$uri" >"$T/fuse$FUSE_N.out" 2>"$FUSE_ERR" &
    FUSE_PID=$!
    PIDS+=("$FUSE_PID")
    MOUNTS+=("$MNT")
    _wait_mounted "$MNT" "$FUSE_PID"
    log "   mounted $MNT ($(stat -c %s "$FILE") bytes)"
}

# mount_fuse_daemon URI [OPTIONS...]: nbdwire-fuse without --foreground: it must return once
# mounted and serve from the background. Sets MNT and FILE; FUSE_PID is empty.
mount_fuse_daemon() {
    local uri=$1
    shift
    FUSE_N=$((FUSE_N + 1))
    MNT=$T/mnt$FUSE_N
    FILE=$MNT/nbd
    FUSE_ERR=$T/fuse$FUSE_N.err
    FUSE_PID=
    mkdir -p "$MNT"
    MOUNTS+=("$MNT")
    step "nbdwire-fuse (daemon)" "$NBDWIRE_FUSE" "$@" "$MNT" "$uri"
    _wait_mounted "$MNT"
}

# unmount_fuse: fusermount3 -u, after which nbdwire-fuse must send NBD_CMD_DISC (checked on
# nbdkit) and exit by itself with status 0, within 10 s and without a sanitizer report.
unmount_fuse() {
    local i rc=0 discs=0
    is_nbdkit && discs=$(nbdkit_count 'client sent NBD_CMD_DISC')
    step "fusermount3 -u" fusermount3 -u "$MNT"
    is_mounted "$MNT" && fail "$MNT still mounted after fusermount3 -u"
    expect_disc $((discs + 1))
    [ -n "$FUSE_PID" ] || return 0
    for i in $(seq 100); do
        kill -0 "$FUSE_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$FUSE_PID" 2>/dev/null && fail "nbdwire-fuse still running 10 s after unmount"
    wait "$FUSE_PID" || rc=$?
    if [ "$rc" -ne 0 ] || _sanitizer_report "$FUSE_ERR"; then
        sed 's/^/    | /' "$FUSE_ERR" >&2
        fail "nbdwire-fuse ended with status $rc after unmount"
    fi
    log "   nbdwire-fuse exited cleanly after unmount"
    FUSE_PID=
}

# ---- backends ------------------------------------------------------------------------------------

# start_backend KIND SIZE [NBDKIT-FILTER-ARGS...]: an empty in-memory export of SIZE bytes.
# Sets URI, BACKEND_PID and, for nbdkit, NBDKIT_LOG (its -v debug output, which names every
# request it served and NBD_CMD_DISC).
#   nbdwire          nbdwire-server
#   nbdkit           nbdkit memory (extra arguments: filters and their parameters)
#   nbdkit-max4k     nbdkit advertising a 4 KiB maximum payload and failing larger requests,
#                    so every READ and WRITE above 4 KiB must be split by the client
start_backend() {
    local kind=$1 size=$2
    shift 2
    BACKEND_KIND=$kind
    case $kind in
        nbdwire)
            start_server_unix "disk=memory:$size"
            URI=$(unix_uri disk)
            BACKEND_PID=$SERVER_PID
            NBDKIT_LOG=
            ;;
        nbdkit | nbdkit-max4k)
            # Filters go before the plugin, their parameters after it.
            local filters=() params=() a
            for a in "$@"; do
                case $a in --filter=*) filters+=("$a") ;; *) params+=("$a") ;; esac
            done
            if [ "$kind" = nbdkit-max4k ]; then
                filters+=(--filter=blocksize-policy)
                params+=(blocksize-maximum=4096 blocksize-preferred=4096 blocksize-error-policy=error)
            fi
            local extra=("${filters[@]}" memory "$size" "${params[@]}")
            start_nbdkit "$T/nbdkit.sock" -v "${extra[@]}"
            URI="nbd+unix:///?socket=$T/nbdkit.sock"
            BACKEND_PID=$BG_PID
            NBDKIT_LOG=$T/nbdkit.err
            ;;
        *) fail "unknown backend '$kind'" ;;
    esac
}

is_nbdkit() { [ -n "$NBDKIT_LOG" ]; }

# nbdkit_count PATTERN: lines of the nbdkit debug log matching PATTERN (extended regex).
nbdkit_count() { grep -cE "$1" "$NBDKIT_LOG" || true; }

# expect_disc N: nbdkit saw NBD_CMD_DISC at least N times in all (waits up to 10 s: nbdwire-fuse
# sends it after fusermount3 has returned).
expect_disc() {
    local i n=0
    is_nbdkit || return 0
    for i in $(seq 100); do
        n=$(nbdkit_count 'client sent NBD_CMD_DISC')
        [ "$n" -ge "$1" ] && { log "   nbdkit saw NBD_CMD_DISC"; return 0; }
        sleep 0.1
    done
    fail "nbdkit saw NBD_CMD_DISC $n times, expected $1 (clean disconnect on unmount)"
}

# export_dump OUT: the whole export, read by nbdcopy (libnbd), an independent client.
export_dump() {
    local opts=()
    need_peer nbdcopy
    # nbdcopy's 1 MiB default is above what nbdkit-max4k accepts.
    [ "$BACKEND_KIND" = nbdkit-max4k ] && opts=(--request-size=4096)
    step "nbdcopy export to file" nbdcopy "${opts[@]}" "$URI" "$1"
}

# splice_into FILE OFFSET DATA: writes DATA over FILE at OFFSET (the expected image).
splice_into() { dd if="$3" of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc status=none; }

# zero_into FILE OFFSET LENGTH: zeroes LENGTH bytes of FILE at OFFSET (the expected image).
zero_into() {
    head -c "$3" /dev/zero >"$T/zeroes"
    splice_into "$1" "$2" "$T/zeroes"
}
