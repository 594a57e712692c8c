# Shared helpers of the fault tests, on top of tests/interop/lib.sh (the peers, steps with
# deadlines, cleanup of everything started). Sourced as
#   bash TEST.sh PATH-TO-nbdwire-server PATH-TO-nbdwire-client [TEST ARGUMENTS...]
. "$(dirname "${BASH_SOURCE[0]}")/../interop/lib.sh"

FAULTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROXY_PY=$FAULTS_DIR/faultproxy.py
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON is not installed (scripts/install-deps.sh installs it)"

# How long one fault case may take before it counts as not prompt: well inside the 60 s step
# deadline of lib.sh. Stalls against the server end by its --handshake-timeout (2 s here).
CASE_TIMEOUT=${CASE_TIMEOUT:-15}

# _forget_pid PID: the process was waited for; cleanup must not signal its number again.
_forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# start_proxy UPSTREAM-SOCKET PROXY-ARGS...: the fault proxy on $T/proxy.sock; sets PROXY_PID and
# PROXY_SOCK. The FIRED line goes to $T/fired.
start_proxy() {
    local up=$1 i
    shift
    PROXY_SOCK=$T/proxy.sock
    rm -f "$PROXY_SOCK" "$T/fired"
    timeout -k 5 300 "$PYTHON" "$PROXY_PY" --listen "$PROXY_SOCK" --upstream "$up" --fired "$T/fired" "$@" \
        </dev/null >"$T/proxy.out" 2>"$T/proxy.err" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    for i in $(seq 200); do
        [ -s "$T/proxy.out" ] && [ -S "$PROXY_SOCK" ] && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || { cat "$T/proxy.err" >&2; fail "the fault proxy did not start"; }
        sleep 0.02
    done
    fail "the fault proxy did not start within 4 s"
}

stop_proxy() {
    [ -n "${PROXY_PID-}" ] || return 0
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    _forget_pid "$PROXY_PID"
    PROXY_PID=
}

# proxy_fired: the fault fired (a case whose fault never fired tests nothing).
proxy_fired() { [ -s "$T/fired" ]; }

# run_timed OUTFILE ERRFILE CMD...: runs CMD with the case deadline; sets RC and ELAPSED_MS.
run_timed() {
    local out=$1 err=$2 t0 t1
    shift 2
    t0=$(date +%s%N)
    RC=0
    timeout -k 2 "$CASE_TIMEOUT" "$@" >"$out" 2>"$err" </dev/null || RC=$?
    t1=$(date +%s%N)
    ELAPSED_MS=$(( (t1 - t0) / 1000000 ))
}

# Counts of what the cases ended with, printed at the end.
CASES=0
CASES_FAILED=0
FAILURES=()

# case_fail ID WHAT: records a failed case (the test fails at the end, after every case ran).
case_fail() {
    CASES_FAILED=$((CASES_FAILED + 1))
    FAILURES+=("$1: $2")
    log "   CASE FAILED: $1: $2"
}

summary() {
    log "$CASES cases, $((CASES - CASES_FAILED)) passed, $CASES_FAILED failed"
    printf 'faults summary: %s: %d cases, %d passed, %d failed\n' "$TEST_NAME ${SUMMARY_TAG-}" \
        "$CASES" "$((CASES - CASES_FAILED))" "$CASES_FAILED"
    local f
    for f in "${FAILURES[@]}"; do log "   failed: $f"; done
    [ "$CASES" -gt 0 ] || fail "no case ran"
    [ "$CASES_FAILED" -eq 0 ] || fail "$CASES_FAILED of $CASES cases failed"
}
