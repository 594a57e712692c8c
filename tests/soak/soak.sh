#!/usr/bin/env bash
# Soak test of nbdwire-server: 64 clients doing random verified I/O for N minutes on a memory
# export and a file export, while other clients connect and disconnect in a loop; then every
# block of both exports read back and verified, and the server's memory compared with its
# steady state. Not part of ctest (it runs for minutes); see tests/soak/README.md.
#
#   tests/soak/soak.sh [--minutes N] [--clients N] [--size SIZE_MIB] [--tolerance KIB]
#                      [--threads N] [--server BIN] [--perf BIN] [--keep DIR]
#                      [-- SERVER-ARGS...]
#
# Defaults: 2 minutes, 64 clients (half on each export), 64 MiB per export, 4096 KiB of RSS
# tolerance. BINs default to build/gcc/examples/nbdwire-server and build/gcc/bench/nbdwire-perf.
# --threads N runs nbdwire-server with --threads N event loops (without it the server's own
# default: one per CPU); arguments after -- go to nbdwire-server as they are, before the exports.
# Exit 0 when every check passed, 1 on any failure, 2 on a usage error.
#
# Phases:
#   1. prefill: each export written once, sequentially, with --verify patterns (so the memory
#      export's pages are all allocated before the steady state is measured);
#   2. load: 2 nbdwire-perf processes (one per export) with clients/2 connections each,
#      randrw --verify (each connection in its own slice, every read of a block written in
#      the run must hold exactly its last generation), iodepth 4, for N minutes; meanwhile
#      churn: short nbdwire-perf sessions (connect, 64 random reads, disconnect) in a loop, and
#      raw connections that read part of the greeting and close, or close mid-handshake;
#      the server's RSS is sampled every second;
#   3. verify: each export read sequentially with --verify: every block must hold a pattern;
#   4. memory: the RSS at the steady state (after prefill, a quarter into the load) against
#      the highest RSS of the rest of the load and the RSS once every client has gone.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
minutes=2 clients=64 size_mib=64 tolerance_kib=4096 keep="" threads=""
server_args=()
server=$root/build/gcc/examples/nbdwire-server
perf=$root/build/gcc/bench/nbdwire-perf
while (($#)); do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --size) size_mib=$2; shift 2 ;;
    --tolerance) tolerance_kib=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    --perf) perf=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --) shift; server_args+=("$@"); break ;;
    -h|--help) sed -n 2,30p "$0"; exit 0 ;;
    *) echo "soak: unknown argument $1" >&2; exit 2 ;;
  esac
done
for b in "$server" "$perf"; do
  [[ -x $b ]] || { echo "soak: $b is not an executable (build it, or pass --server/--perf)" >&2; exit 2; }
done
((clients >= 2 && clients % 2 == 0)) || { echo "soak: --clients must be even and at least 2" >&2; exit 2; }
if [[ -n $threads ]]; then
  [[ $threads =~ ^[1-9][0-9]*$ ]] || { echo "soak: --threads must be a positive number" >&2; exit 2; }
  server_args=(--threads "$threads" "${server_args[@]}")
fi

if [[ -n $keep ]]; then dir=$keep; mkdir -p "$dir"; else dir=$(mktemp -d "${TMPDIR:-/tmp}/nbdwire-soak.XXXXXX"); fi
sock=$dir/server.sock
runtime=$((minutes * 60))
per=$((clients / 2))
failures=0
fail() { echo "soak: FAIL: $*"; failures=$((failures + 1)); }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [[ -n $keep ]] || rm -rf "$dir"
}
trap cleanup EXIT

truncate -s "${size_mib}M" "$dir/disk.img"
"$server" --unix "$sock" "${server_args[@]}" "mem=memory:${size_mib}M" "file=file:$dir/disk.img" >"$dir/server.log" 2>&1 &
spid=$!
pids+=("$spid")
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { cat "$dir/server.log"; echo "soak: the server did not start"; exit 1; }
uri() { echo "nbd+unix:///$1?socket=$sock"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$spid/status" 2>/dev/null || echo 0; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$spid/status" 2>/dev/null || echo 0; }
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join(str(d.get(k)) for k in sys.argv[2:]))' "$@"; }

echo "soak: nbdwire-server pid $spid (arguments: ${server_args[*]:-none}), exports mem and file of $size_mib MiB, $clients clients for $minutes min, in $dir"
echo "soak: RSS at start: $(rss) KiB, $(threads) threads; server log: $(head -n 1 "$dir/server.log")"

# 1. prefill
blocks=$((size_mib * 256))
for e in mem file; do
  if ! "$perf" "$(uri $e)" --rw=write --bs=4k --iodepth=8 --ios=$blocks --verify --json >"$dir/prefill-$e.json" 2>&1; then
    fail "prefill of $e: $(cat "$dir/prefill-$e.json")"
  fi
done
echo "soak: prefilled ($blocks blocks per export); RSS $(rss) KiB"

# 2. load, churn, RSS samples
for e in mem file; do
  "$perf" "$(uri $e)" --rw=randrw --bs=4k --iodepth=4 --connections=$per --runtime=$runtime --seed=$RANDOM \
    --verify --json >"$dir/load-$e.json" 2>&1 &
  pids+=($!)
  loads+=($!)
done
churn() {  # short sessions: connect, 64 random reads, disconnect
  local n=0
  while :; do
    for e in mem file; do "$perf" "$(uri $e)" --rw=randread --bs=4k --ios=64 --runtime=5 >/dev/null 2>&1 || echo "x" >>"$dir/churn-errors"; done
    n=$((n + 2)); echo "$n" >"$dir/churn-sessions"
  done
}
abrupt() {  # raw connections: read part of the greeting, or send half a handshake, then close
  python3 - "$sock" "$dir/abrupt-count" <<'PY'
import socket, sys, time, random
path, out = sys.argv[1], sys.argv[2]
n = 0
while True:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        s.recv(random.choice([1, 8, 18]))
        if random.random() < 0.5:
            s.send(b"\x00\x00\x00\x03IHAVEOPT"[: random.randint(1, 12)])
    except OSError:
        pass
    s.close()
    n += 1
    if n % 50 == 0:
        open(out, "w").write(str(n))
    time.sleep(0.01)
PY
}
churn & cpid=$!; pids+=("$cpid")
abrupt & apid=$!; pids+=("$apid")

steady_at=$((runtime / 4))
steady=0 peak=0 samples=0
: >"$dir/rss.log"
for ((t = 1; t <= runtime; t++)); do
  sleep 1
  r=$(rss)
  echo "$t $r $(threads)" >>"$dir/rss.log"
  if ((t == steady_at)); then steady=$r; fi
  if ((t > steady_at && r > peak)); then peak=$r; fi
done
for p in "${loads[@]}"; do wait "$p" || fail "a load client failed"; done
kill "$cpid" "$apid" 2>/dev/null
wait "$cpid" "$apid" 2>/dev/null
sleep 2
after=$(rss)

for e in mem file; do
  read -r ios reads writes errors verified mismatches err < <(json "$dir/load-$e.json" ios reads writes errors verified_reads mismatches error)
  echo "soak: load $e: $ios I/Os ($reads reads, $writes writes), $verified reads verified, $mismatches mismatches, $errors errors, error=$err"
  [[ $mismatches == 0 && $errors == 0 && $err == None ]] || fail "load on $e: $mismatches mismatches, $errors errors ($err)"
done
sessions=$(cat "$dir/churn-sessions" 2>/dev/null || echo 0)
churn_errors=0
[[ -f $dir/churn-errors ]] && churn_errors=$(wc -l <"$dir/churn-errors")
echo "soak: churn: $sessions short sessions ($churn_errors failed), $(cat "$dir/abrupt-count" 2>/dev/null || echo 0)+ abrupt connections"
((churn_errors == 0)) || fail "$churn_errors churn sessions failed"

# 3. verify every block
for e in mem file; do
  if "$perf" "$(uri $e)" --rw=read --bs=4k --iodepth=8 --ios=$blocks --verify --json >"$dir/verify-$e.json" 2>&1; then
    read -r verified unverified mismatches < <(json "$dir/verify-$e.json" verified_reads unverified_reads mismatches)
    echo "soak: verify $e: $verified of $blocks blocks hold their pattern, $unverified without one, $mismatches mismatches"
    ((verified == blocks && mismatches == 0)) || fail "verify of $e"
  else
    fail "verify of $e: $(cat "$dir/verify-$e.json")"
  fi
done

# 4. memory
kill -0 "$spid" 2>/dev/null || fail "the server exited"
echo "soak: server RSS: steady state $steady KiB (t=${steady_at}s), highest after it $peak KiB (+$((peak - steady))), once the clients are gone $after KiB ($((after - steady)))"
((peak - steady <= tolerance_kib)) || fail "RSS grew by $((peak - steady)) KiB after the steady state (tolerance $tolerance_kib KiB)"
((after - steady <= tolerance_kib)) || fail "RSS after the run is $((after - steady)) KiB above the steady state (tolerance $tolerance_kib KiB)"
if grep -qiE 'sanitizer|runtime error' "$dir/server.log"; then fail "sanitizer report in the server log"; fi

if ((failures)); then echo "soak: $failures failures (logs in $dir)"; keep=$dir; exit 1; fi
echo "soak: PASS"
