# Shared helpers for the interoperability tests. Sourced by every test script, which is run as
#   bash TEST.sh PATH-TO-nbdwire-server PATH-TO-nbdwire-client [TEST ARGUMENTS...]
# Each test gets its own temporary directory; everything it starts is stopped on exit.

set -euo pipefail

NBDWIRE_SERVER=${1-}
NBDWIRE_CLIENT=${2-}
if [ $# -ge 2 ]; then shift 2; else shift $#; fi

# Every step gets a deadline so a hung peer fails the test instead of stalling the suite.
STEP_TIMEOUT=${STEP_TIMEOUT:-60}

# Sanitizer builds: LeakSanitizer's exit-time stop-the-world was seen to spin for over 10 s in a
# server just stopped with SIGTERM (2-4 runs in 16 of interop-legacy1997), which would fail the
# clean-stop check for no fault of the program. AddressSanitizer and UBSan stay on here; leaks are
# checked by the unit tests and core-freestanding.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"

TEST_NAME=$(basename "$0" .sh)
T=$(mktemp -d "${TMPDIR:-/tmp}/nbdwire-interop.XXXXXX")
PIDS=()       # background processes started by this test (direct children)
PIDFILES=()   # pid files of daemons that detach from us (nbd-server)

log() { printf '[%s] %s\n' "$TEST_NAME" "$*" >&2; }

fail() {
    printf '[%s] FAIL: %s\n' "$TEST_NAME" "$*" >&2
    exit 1
}

# Stops one process: SIGTERM, up to 5 s of grace, then SIGKILL.
_stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    # Per-connection children of forking servers first, so none outlives its parent.
    local child
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        kill -TERM "$child" 2>/dev/null || true
    done
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

_cleanup() {
    local rc=$? pid f
    set +e
    for pid in "${PIDS[@]}"; do _stop_pid "$pid"; done
    for f in "${PIDFILES[@]}"; do
        [ -s "$f" ] && _stop_pid "$(cat "$f")"
    done
    wait 2>/dev/null
    if [ -n "${KEEP_TEMP:-}" ]; then
        log "exit status $rc; files kept in $T"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- prerequisites -------------------------------------------------------------------------------

need_peer() {
    local p
    for p in "$@"; do
        command -v "$p" >/dev/null 2>&1 ||
            fail "peer program '$p' is not installed (scripts/install-deps.sh installs it)"
    done
}

_need_program() { # NAME PATH
    [ -n "$2" ] || fail "$1: there is no CMake target $1 in this build"
    [ -x "$2" ] || fail "$1: $2 does not exist; build the target $1 first"
}
need_server() { _need_program nbdwire-server "$NBDWIRE_SERVER"; }
need_client() { _need_program nbdwire-client "$NBDWIRE_CLIENT"; }

# ---- running steps -------------------------------------------------------------------------------

_sanitizer_report() {
    grep -qE 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:' "$1" 2>/dev/null
}

# step DESCRIPTION CMD [ARGS...]: runs CMD with a deadline; its stdout is the caller's, its stderr is
# kept. Fails the test (showing that stderr) on nonzero status, timeout or sanitizer report.
step() {
    local desc=$1 rc=0
    shift
    log "+ $*"
    timeout -k 5 "$STEP_TIMEOUT" "$@" 2>"$T/step.err" || rc=$?
    if [ "$rc" -ne 0 ] || _sanitizer_report "$T/step.err"; then
        sed 's/^/    | /' "$T/step.err" >&2
        [ "$rc" -eq 124 ] && fail "$desc: timed out after ${STEP_TIMEOUT}s"
        [ "$rc" -eq 0 ] && fail "$desc: sanitizer report"
        fail "$desc: exit status $rc"
    fi
    [ -s "$T/step.err" ] && sed 's/^/    | /' "$T/step.err" >&2
    return 0
}

# step_fails DESCRIPTION CMD [ARGS...]: CMD must exit nonzero by itself, promptly and without
# crashing. Its stderr is left in $T/step.err for the caller to check the message.
step_fails() {
    local desc=$1 rc=0
    shift
    log "+ (must fail) $*"
    timeout -k 5 "$STEP_TIMEOUT" "$@" 2>"$T/step.err" || rc=$?
    sed 's/^/    | /' "$T/step.err" >&2
    [ "$rc" -eq 0 ] && fail "$desc: succeeded but must fail"
    [ "$rc" -eq 124 ] && fail "$desc: timed out after ${STEP_TIMEOUT}s instead of failing"
    [ "$rc" -eq 126 ] || [ "$rc" -eq 127 ] && fail "$desc: could not be run (exit status $rc)"
    [ "$rc" -ge 128 ] && fail "$desc: killed by signal $((rc - 128))"
    _sanitizer_report "$T/step.err" && fail "$desc: sanitizer report"
    log "   failed as required (exit status $rc)"
}

# step_ends DESCRIPTION CMD [ARGS...]: CMD may succeed or fail, but must end promptly by itself
# without crashing (used where the peer does not support an operation).
step_ends() {
    local desc=$1 rc=0
    shift
    log "+ (may fail) $*"
    timeout -k 5 "$STEP_TIMEOUT" "$@" 2>"$T/step.err" || rc=$?
    sed 's/^/    | /' "$T/step.err" >&2
    [ "$rc" -eq 124 ] && fail "$desc: timed out after ${STEP_TIMEOUT}s"
    [ "$rc" -ge 128 ] && fail "$desc: killed by signal $((rc - 128))"
    _sanitizer_report "$T/step.err" && fail "$desc: sanitizer report"
    log "   exit status $rc"
    return 0
}

# ---- data ----------------------------------------------------------------------------------------

# rand_file PATH SIZE
rand_file() { head -c "$2" /dev/urandom >"$1"; }

# rand_between LO HI: a random integer in [LO, HI].
rand_between() { echo $(( $1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1) )); }

# slice FILE OFFSET LENGTH: writes LENGTH bytes of FILE starting at OFFSET to stdout.
slice() { dd if="$1" bs=64K iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none; }

# spliced BASE OFFSET DATA: BASE with DATA written over it at OFFSET, to stdout.
spliced() {
    local size len
    size=$(stat -c %s "$1")
    len=$(stat -c %s "$3")
    slice "$1" 0 "$2"
    cat "$3"
    slice "$1" $(( $2 + len )) $(( size - $2 - len ))
}

# same_file A B DESCRIPTION
same_file() {
    cmp "$1" "$2" >&2 || fail "$3: contents differ ($1 vs $2)"
    log "   $3: identical ($(stat -c %s "$1") bytes)"
}

# json_get FILE KEY: the first value of "KEY" in a JSON document (numbers, booleans, strings).
json_get() {
    sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^\",}]*\).*/\1/p" "$1" | head -n 1
}

# expect_eq ACTUAL EXPECTED DESCRIPTION
expect_eq() {
    [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"
    log "   $3: $1"
}

# ---- sockets -------------------------------------------------------------------------------------

# _unix_listening PATH: PATH is a socket that accepts connections. A server binds (the file
# appears) before it listens, and a connect() between the two is refused; /proc/net/unix shows
# the listening flag (0x10000) by the path bound. A socket bound under another name and
# renamed into place (after listen(), as tests/interop/client-tls-hostile.sh does) is not
# listed under PATH and counts as ready.
_unix_listening() {
    [ -S "$1" ] || return 1
    awk -v p="$1" '$8 == p { seen = 1; if ($4 == "00010000") ok = 1 } END { exit !(ok || !seen) }' /proc/net/unix
}

# wait_unix_socket PATH PID: waits until PATH is a listening socket, failing if PID dies first.
wait_unix_socket() {
    local i
    for i in $(seq 600); do
        _unix_listening "$1" && return 0
        [ -z "${2-}" ] || kill -0 "$2" 2>/dev/null || fail "server exited before creating $1"
        sleep 0.05
    done
    fail "no listening socket at $1 after 30 s"
}

_tcp_listening() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v h="$hex" 'NR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == h) f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# free_port: a TCP port nobody listens on now (another test may still take it: callers retry).
free_port() {
    local p i
    for i in $(seq 100); do
        p=$(rand_between 20000 59999)
        _tcp_listening "$p" || { echo "$p"; return 0; }
    done
    fail "found no free TCP port"
}

# ---- peers ---------------------------------------------------------------------------------------

# bg NAME CMD [ARGS...]: starts a foreground-style server in the background with a hard deadline;
# sets BG_PID. Output goes to $T/NAME.out and $T/NAME.err.
bg() {
    local name=$1
    shift
    log "+ (background) $*"
    timeout -k 5 300 "$@" >"$T/$name.out" 2>"$T/$name.err" &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# start_nbdkit SOCKET NBDKIT-ARGS...: nbdkit in the foreground on a Unix socket.
start_nbdkit() {
    local sock=$1
    shift
    need_peer nbdkit
    bg nbdkit nbdkit --foreground --exit-with-parent --unix "$sock" "$@"
    wait_unix_socket "$sock" "$BG_PID"
}

# ---- the programs under test ---------------------------------------------------------------------

SERVER_PID=
SERVER_URI=   # base URI of the running nbdwire-server, without the export part
SERVER_N=0

# _start_server_once LISTEN-ARGS... -- SERVER-ARGS...: returns 1 if the server exited without
# becoming ready (so callers can retry with another port).
_start_server_once() {
    local i
    SERVER_N=$((SERVER_N + 1))
    SERVER_OUT=$T/server$SERVER_N.out
    SERVER_ERR=$T/server$SERVER_N.err
    log "+ (background) $NBDWIRE_SERVER $*"
    timeout -k 5 300 "$NBDWIRE_SERVER" "$@" >"$SERVER_OUT" 2>"$SERVER_ERR" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    # Ready once it has printed its line (a loaded machine may take seconds; it fails fast if
    # the server exits).
    for i in $(seq 600); do
        if [ "$(wc -l <"$SERVER_OUT")" -ge 1 ]; then
            log "   server ready: $(head -n 1 "$SERVER_OUT")"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" || true
            return 1
        fi
        sleep 0.05
    done
    sed 's/^/    | /' "$SERVER_ERR" >&2
    fail "nbdwire-server printed no ready line within 10 s (stdout so far: '$(cat "$SERVER_OUT")')"
}

# start_nbd_server IMAGE [GENERIC-LINE...]: nbd-server serving IMAGE as export "disk" on
# 127.0.0.1 and a free port (sets NBD_SERVER_PORT); the lines go into [generic] (TLS settings).
# nbd-server detaches; its pid file is how it gets stopped. Retries if the port was taken.
start_nbd_server() {
    local img=$1 attempt i line
    shift
    need_peer nbd-server
    for attempt in 1 2 3; do
        NBD_SERVER_PORT=$(free_port)
        {
            printf '[generic]\n    listenaddr = 127.0.0.1\n    port = %s\n    allowlist = true\n' "$NBD_SERVER_PORT"
            for line in "$@"; do printf '    %s\n' "$line"; done
            printf '[disk]\n    exportname = %s\n' "$img"
        } >"$T/nbd-server.conf"
        rm -f "$T/nbd-server.pid"
        PIDFILES+=("$T/nbd-server.pid")
        step "nbd-server starts" nbd-server -C "$T/nbd-server.conf" -p "$T/nbd-server.pid"
        for i in $(seq 100); do
            [ -s "$T/nbd-server.pid" ] && _tcp_listening "$NBD_SERVER_PORT" && break
            sleep 0.05
        done
        _tcp_listening "$NBD_SERVER_PORT" && return 0
        [ -s "$T/nbd-server.pid" ] && _stop_pid "$(cat "$T/nbd-server.pid")"
        log "nbd-server did not listen on $NBD_SERVER_PORT (attempt $attempt)"
    done
    fail "nbd-server did not start"
}

# start_server_unix SERVER-ARGS...: nbdwire-server on a fresh Unix socket; sets SERVER_URI to
# "nbd+unix://" and SERVER_SOCK, so an export URI is "$SERVER_URI/NAME?socket=$SERVER_SOCK".
start_server_unix() {
    need_server
    SERVER_SOCK=$T/server$((SERVER_N + 1)).sock
    if ! _start_server_once --unix "$SERVER_SOCK" "$@"; then
        sed 's/^/    | /' "$SERVER_ERR" >&2
        fail "nbdwire-server exited during start-up"
    fi
    [ -S "$SERVER_SOCK" ] || fail "nbdwire-server reported ready but $SERVER_SOCK is no socket"
    SERVER_URI=nbd+unix://
}

# unix_uri EXPORT: URI of EXPORT on the running Unix-socket server.
unix_uri() { echo "nbd+unix:///$1?socket=$SERVER_SOCK"; }

# start_server_tcp SERVER-ARGS...: nbdwire-server on 127.0.0.1 and a free port; sets SERVER_PORT
# and SERVER_URI ("nbd://127.0.0.1:PORT"), so an export URI is "$SERVER_URI/NAME".
start_server_tcp() {
    local attempt
    need_server
    for attempt in 1 2 3; do
        SERVER_PORT=$(free_port)
        if _start_server_once --listen "127.0.0.1:$SERVER_PORT" "$@"; then
            _tcp_listening "$SERVER_PORT" ||
                fail "nbdwire-server reported ready but nothing listens on port $SERVER_PORT"
            SERVER_URI=nbd://127.0.0.1:$SERVER_PORT
            return 0
        fi
        sed 's/^/    | /' "$SERVER_ERR" >&2
        log "   nbdwire-server exited during start-up (attempt $attempt)"
    done
    fail "nbdwire-server did not start on 127.0.0.1"
}

# stop_server: SIGTERM must stop nbdwire-server promptly and cleanly (exit status 0, or death by
# the signal itself), without a sanitizer report.
stop_server() {
    local i rc=0
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$SERVER_PID" 2>/dev/null && fail "nbdwire-server still running 10 s after SIGTERM"
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=
    if { [ "$rc" -ne 0 ] && [ "$rc" -ne 143 ]; } || _sanitizer_report "$SERVER_ERR"; then
        sed 's/^/    | /' "$SERVER_ERR" >&2
        fail "nbdwire-server ended with status $rc after SIGTERM"
    fi
    log "   nbdwire-server stopped (status $rc)"
}

# Options that go before the command (legacy 1997 framing needs them).
CLIENT_GLOBAL=()
# Options for the round trip's write command.
WRITE_OPTS=()

# client COMMAND ARGS...: nbdwire-client as a step.
client() { need_client; step "nbdwire-client $1" "$NBDWIRE_CLIENT" "${CLIENT_GLOBAL[@]}" "$@"; }

# client_roundtrip URI BASE: BASE is a file with the export's current contents
# (same size as the export). Reads a random window written by the peer, then writes a random
# 1-4 MiB block at a random unaligned offset, reads it back and compares, and reads a window around
# it to check the neighbouring bytes were not touched. Sets RT_OFFSET and RT_DATA for the caller's
# check through an independent reader.
client_roundtrip() {
    local uri=$1 base=$2 size len off
    size=$(stat -c %s "$base")

    len=$(rand_between 1 $((1024 * 1024)))
    off=$(rand_between 0 $((size - len)))
    log "read of existing data: $len bytes at offset $off"
    client read "$uri" --offset "$off" --length "$len" >"$T/rt.pre"
    slice "$base" "$off" "$len" >"$T/rt.pre.expected"
    same_file "$T/rt.pre.expected" "$T/rt.pre" "read of existing data"

    len=$(rand_between $((1024 * 1024)) $((4 * 1024 * 1024)))
    off=$(rand_between 4096 $((size - len - 4096)))
    log "round trip: $len bytes at offset $off"
    RT_DATA=$T/rt.data
    RT_OFFSET=$off
    rand_file "$RT_DATA" "$len"
    client write "$uri" --offset "$off" "${WRITE_OPTS[@]}" <"$RT_DATA"
    client read "$uri" --offset "$off" --length "$len" >"$T/rt.back"
    same_file "$RT_DATA" "$T/rt.back" "read back after write"

    { slice "$base" $((off - 4096)) 4096; cat "$RT_DATA"; slice "$base" $((off + len)) 4096; } \
        >"$T/rt.window"
    client read "$uri" --offset $((off - 4096)) --length $((len + 8192)) >"$T/rt.window.back"
    same_file "$T/rt.window" "$T/rt.window.back" "read of the surrounding window"
}

# client_info_check URI SIZE [PROTOCOL]: `info` works and `info --json` reports the size and,
# unless PROTOCOL is empty, the handshake protocol.
client_info_check() {
    local uri=$1 size=$2 proto=${3-}
    client info "$uri" >"$T/info.txt"
    sed 's/^/    | /' "$T/info.txt" >&2
    [ -s "$T/info.txt" ] || fail "nbdwire-client info printed nothing"
    client info "$uri" --json >"$T/info.json"
    sed 's/^/    | /' "$T/info.json" >&2
    expect_eq "$(json_get "$T/info.json" export-size)" "$size" "info --json export-size"
    [ -z "$proto" ] ||
        expect_eq "$(json_get "$T/info.json" protocol)" "$proto" "info --json protocol"
}

# pattern_file BYTE LENGTH: LENGTH copies of BYTE (0-255) to stdout.
pattern_file() { head -c "$2" /dev/zero | tr '\0' "\\$(printf '%03o' "$1")"; }

# map_all_data URI SIZE: nbdwire-client map shows the whole export as one data extent (servers
# without base:allocation, or fully written ones), in nbdinfo's layout.
map_all_data() {
    client map "$1" >"$T/map.txt"
    sed 's/^/    | /' "$T/map.txt" >&2
    printf '%10s  %10s  %3s  data\n' 0 "$2" 0 | cmp - "$T/map.txt" >&2 ||
        fail "map does not show the whole export as data"
    log "   map: the whole export is data"
}

# hold_clients SOCKET N SECONDS: N raw connections that read the greeting (when accepted) and
# stay open for SECONDS; prints how many got a greeting within 1 s of connecting.
hold_clients() {
    python3 - "$@" <<'EOF'
import socket, sys, time
path, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    socks.append(s)
greeted = 0
deadline = time.time() + 1
for s in socks:
    s.settimeout(max(0.01, deadline - time.time()))
    try:
        if len(s.recv(18)) > 0:
            greeted += 1
    except socket.timeout:
        pass
print(greeted, flush=True)
time.sleep(secs)
EOF
}
