# shellcheck shell=bash
# Host-side helpers for the kernel tests (sourced). A test script is run as
#   bash TEST.sh PATH-TO-nbdwire-server PATH-TO-nbdwire-client CACHE-DIR [ARGUMENTS...]
# and finds vm.sh as $KT_VM. Everything a test starts is stopped by PID when it exits.
set -euo pipefail

NBDWIRE_SERVER=${1-}
# shellcheck disable=SC2034  # used by the scripts that source this
NBDWIRE_CLIENT=${2-}
KT_CACHE=${3-}
if (($# >= 3)); then shift 3; else shift $#; fi
KT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KT_VM=$KT_DIR/vm.sh
KT_NAME=$(basename "$0" .sh)
T=$(mktemp -d "${TMPDIR:-/tmp}/nbdwire-kernel.XXXXXX")
KT_PIDFILES=()
KT_VM_PID=''

log() { printf '[%s] %s\n' "$KT_NAME" "$*" >&2; }
fail() { printf '[%s] FAIL: %s\n' "$KT_NAME" "$*" >&2; exit 1; }

# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL
stop_pid() {
  kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
}
_kt_cleanup() {
  local rc=$? f
  set +e
  if [[ -n $KT_VM_PID ]]; then
    kill -TERM "$KT_VM_PID" 2>/dev/null
    wait "$KT_VM_PID" 2>/dev/null
  fi
  for f in "${KT_PIDFILES[@]}"; do [[ -s $f ]] && stop_pid "$(cat "$f")"; done
  if [[ -n ${KEEP_TEMP:-} ]]; then log "files kept in $T"; else rm -rf "$T"; fi
  exit "$rc"
}
trap _kt_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_program() { # NAME PATH
  [[ -n $2 ]] || fail "$1: there is no CMake target $1 in this build"
  [[ -x $2 ]] || fail "$1: $2 does not exist; build the target $1 first"
}

# vm ARGS...: vm.sh with this build's cache (NBDWIRE_KERNEL_CACHE, if set, wins in vm.sh).
# Its exit status is returned as it is, 77 (skip) included.
# It runs in the background so that a SIGTERM to the test stops it (and its QEMU) at once.
vm() {
  local rc=0
  bash "$KT_VM" ${KT_CACHE:+--cache "$KT_CACHE"} "$@" &
  KT_VM_PID=$!
  wait "$KT_VM_PID" || rc=$?
  KT_VM_PID=''
  return "$rc"
}

_port_free() { # PORT: nobody listens on it now
  local hex
  hex=$(printf '%04X' "$1")
  ! awk -v h="$hex" 'NR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == h) f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# start_server LOGFILE ARGS...: starts nbdwire-server -v ARGS... in its own session on
# 127.0.0.1 and a free port; sets SERVER_PORT and SERVER_PIDFILE. Its stderr goes to LOGFILE.
start_server() {
  local logfile=$1 port pidfile
  shift
  for _ in $(seq 20); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    _port_free "$port" || continue
    pidfile=$T/server-$port.pid
    KT_PIDFILES+=("$pidfile")
    setsid "$NBDWIRE_SERVER" -v --listen "127.0.0.1:$port" --pidfile "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
    local pid=$!
    while ! [[ -s $pidfile ]]; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    if [[ -s $pidfile ]]; then
      # shellcheck disable=SC2034  # for the caller
      SERVER_PORT=$port SERVER_PIDFILE=$pidfile
      log "nbdwire-server (pid $(cat "$pidfile")) listens on 127.0.0.1:$port"
      return 0
    fi
    wait "$pid" 2>/dev/null || true
    grep -q -i 'in use' "$logfile" || { cat "$logfile" >&2; fail "nbdwire-server did not start"; }
  done
  fail "no free port for nbdwire-server after 20 tries"
}

# stop_server: stops the server start_server started and waits for it
stop_server() {
  [[ -n ${SERVER_PIDFILE-} && -s $SERVER_PIDFILE ]] || return 0
  stop_pid "$(cat "$SERVER_PIDFILE")"
}

# counters LOGFILE: the per-command counts of every "closed after" line of nbdwire-server -v,
# summed, one KEY=VALUE per line (CONNECTIONS= counts the lines)
counters() {
  awk '/nbdwire-server: .*closed after / {
         conns++
         line = $0; sub(/.*closed after [0-9]+ requests?:?/, "", line); sub(/ \(.*$/, "", line)
         n = split(line, w, " ")
         for (i = 1; i <= n; i++) if (split(w[i], kv, "=") == 2 && kv[2] ~ /^[0-9]+$/) { s[kv[1]] += kv[2]; if (!(kv[1] in seen)) { seen[kv[1]] = 1; order[++k] = kv[1] } }
       }
       END { printf "CONNECTIONS=%d\n", conns; for (i = 1; i <= k; i++) printf "%s=%d\n", order[i], s[order[i]] }' "$1"
}

# count NAME COUNTERS: the value of NAME in the output of counters (0 if absent)
count() { sed -n "s/^$1=//p" <<<"$2" | head -n 1 | grep . || echo 0; }

# expect_count NAME OP VALUE COUNTERS: fails unless NAME's count satisfies OP VALUE (-gt, -eq...)
expect_count() {
  local v
  v=$(count "$1" "$4")
  test "$v" "$2" "$3" || fail "server counters: $1=$v, expected $2 $3"
  log "   $1=$v ($2 $3)"
}
