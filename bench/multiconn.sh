#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Four connections at once (multi-conn): aggregate throughput and server CPU of fio's nbd
# engine with 4 jobs, one connection each, against nbdwire-server with 1 and 2 event loops
# (memory export; a file export on /dev/shm with 2 loops), nbdkit's memory plugin and
# qemu-nbd (raw file on /dev/shm, --shared 4). Workloads: 4k randread 4 x QD8 and 1 MiB
# sequential writes 4 x QD2 (QD32 and QD8 in all). Servers are run in a rotated order each
# round, so drift on a shared machine spreads over all of them.
#
#   bench/multiconn.sh --build BUILD [--transport tcp|unix] [--rounds N] [--runtime S]
#
# Output: one line per run, "ROUND WORKLOAD SERVER VALUE CPU" (VALUE: IOPS for randread, GiB/s
# for writes; CPU: server µs per I/O, or s per GiB), then the medians, each with its ratio to
# the best peer (nbdkit or qemu-nbd). Every server it starts listens on loopback or a Unix
# socket and is stopped when it exits.
set -euo pipefail

build='' transport=tcp rounds=3 runtime=3
while (($#)); do
  case $1 in
  --build) build=$2; shift 2 ;;
  --transport) transport=$2; shift 2 ;;
  --rounds) rounds=$2; shift 2 ;;
  --runtime) runtime=$2; shift 2 ;;
  -h | --help) sed -n '3,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "multiconn.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
server=$build/examples/nbdwire-server
[[ -x $server ]] || { echo "multiconn.sh: no $server (--build: a build tree with the examples)" >&2; exit 2; }
[[ $transport == tcp || $transport == unix ]] || { echo "multiconn.sh: --transport tcp or unix" >&2; exit 2; }
for p in fio nbdkit qemu-nbd python3; do
  command -v $p >/dev/null || { echo "multiconn.sh: $p is not installed (scripts/install-deps.sh)" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/multiconn.XXXXXX")
shm=$(mktemp -d /dev/shm/multiconn.XXXXXX)
declare -A uri pid
stop_all() {
  local p
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" "$shm"
}
trap stop_all EXIT
port=$((43000 + RANDOM % 1000))
# endpoint NAME: sets L (nbdwire-server's listen arguments) and U (the URI without export)
endpoint() {
  if [[ $transport == unix ]]; then
    L=(--unix "$work/$1.sock") U="nbd+unix:///"; S="?socket=$work/$1.sock"
  else
    port=$((port + 1)) L=(--listen "127.0.0.1:$port") U="nbd://127.0.0.1:$port/" S=''
  fi
}
truncate -s 256M "$shm/qemu.img" "$shm/nbdwire.img"
endpoint t1; "$server" "${L[@]}" --threads 1 e=memory:256M >/dev/null 2>&1 & pid[nbdwire-mem-t1]=$!; uri[nbdwire-mem-t1]="${U}e$S"
endpoint t2; "$server" "${L[@]}" --threads 2 e=memory:256M >/dev/null 2>&1 & pid[nbdwire-mem-t2]=$!; uri[nbdwire-mem-t2]="${U}e$S"
endpoint tf; "$server" "${L[@]}" --threads 2 "e=file:$shm/nbdwire.img" >/dev/null 2>&1 & pid[nbdwire-file-t2]=$!; uri[nbdwire-file-t2]="${U}e$S"
if [[ $transport == unix ]]; then
  nbdkit -f -U "$work/k.sock" memory 256M >/dev/null 2>&1 & uri[nbdkit-mem]="nbd+unix:///?socket=$work/k.sock"
  pid[nbdkit-mem]=$!
  qemu-nbd -f raw -t -e 4 -x e -k "$work/q.sock" "$shm/qemu.img" >/dev/null 2>&1 & uri[qemu-nbd]="nbd+unix:///e?socket=$work/q.sock"
  pid[qemu-nbd]=$!
else
  port=$((port + 1)); nbdkit -f -i 127.0.0.1 -p $port memory 256M >/dev/null 2>&1 & uri[nbdkit-mem]="nbd://127.0.0.1:$port/"
  pid[nbdkit-mem]=$!
  port=$((port + 1)); qemu-nbd -f raw -t -e 4 -x e -b 127.0.0.1 -p $port "$shm/qemu.img" >/dev/null 2>&1 & uri[qemu-nbd]="nbd://127.0.0.1:$port/e"
  pid[qemu-nbd]=$!
fi
sleep 1.5
servers=(nbdwire-mem-t1 nbdwire-mem-t2 nbdwire-file-t2 nbdkit-mem qemu-nbd)
for s in "${servers[@]}"; do
  kill -0 "${pid[$s]}" 2>/dev/null || { echo "multiconn.sh: $s did not start" >&2; exit 1; }
  # Every export written once, so reads find data (no server answers from holes).
  fio --name=fill --ioengine=nbd --uri="${uri[$s]}" --size=256M --rw=write --bs=1m --iodepth=8 >/dev/null 2>&1 ||
    { echo "multiconn.sh: filling $s failed" >&2; exit 1; }
done

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# run SERVER FIO-ARGS...: prints "IOPS GiB/s" of 4 jobs together
run() {
  local s=$1; shift
  fio --name=j --ioengine=nbd --uri="${uri[$s]}" --size=256M --numjobs=4 --group_reporting --time_based \
    --runtime="$runtime" "$@" --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]
print(j["read"]["iops"]+j["write"]["iops"], (j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/2**30)'
}
hz=$(getconf CLK_TCK)
results=$work/results
n=${#servers[@]}
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  rot=$(((r - 1) % n))
  order=("${servers[@]:$rot}" "${servers[@]:0:$rot}")
  for s in "${order[@]}"; do
    c0=$(cpu_ticks "${pid[$s]}")
    read -r iops _ < <(run "$s" --rw=randread --bs=4k --iodepth=8)
    c1=$(cpu_ticks "${pid[$s]}")
    python3 -c "print($r, 'randread-4k', '$s', round($iops), round(($c1-$c0)/$hz/($iops*$runtime)*1e6, 2))" | tee -a "$results"
    read -r _ gib < <(run "$s" --rw=write --bs=1m --iodepth=2)
    c2=$(cpu_ticks "${pid[$s]}")
    python3 -c "print($r, 'write-1m', '$s', round($gib, 3), round(($c2-$c1)/$hz/($gib*$runtime), 3))" | tee -a "$results"
  done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$results" <<'EOF'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)  # (workload, server) -> [(round, value, cpu)]
for line in open(sys.argv[1]):
    r, w, s, v, c = line.split()
    runs[(w, s)].append((int(r), float(v), float(c)))
peers = ("nbdkit-mem", "qemu-nbd")
print("# medians; x best peer: the median over rounds of value / best peer's value in that round")
for w in ("randread-4k", "write-1m"):
    for (ww, s), rs in sorted(runs.items()):
        if ww != w:
            continue
        ratios = []
        for r, v, _ in rs:
            best = max(pv for p in peers for (pr, pv, _) in runs[(w, p)] if pr == r)
            ratios.append(v / best)
        print(f"{w} {s} value {statistics.median(v for _, v, _ in rs):.3f} cpu {statistics.median(c for *_, c in rs):.3f}"
              f" x-best-peer {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
EOF
