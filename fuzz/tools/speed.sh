#!/usr/bin/env bash
# Executions per second of each fuzz target in normal and in fast mode (fuzz/mode.hpp), one
# libFuzzer run of SECONDS per target and mode, one after the other on one core at nice 19,
# from the committed corpus (new inputs go to BUILD/fuzz/speed/, never into the corpus).
#   fuzz/tools/speed.sh BUILD_DIR [SECONDS (default 60)] [TARGET...]
# Prints one line per run and a Markdown table at the end (also in BUILD/fuzz/speed/table.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(realpath "${1:?usage: speed.sh BUILD_DIR [SECONDS] [TARGET...]}")
seconds=${2:-60}
shift $(($# >= 2 ? 2 : 1))
targets=("$@")
((${#targets[@]})) || targets=(server_handshake client_handshake server_tx client_tx legacy_server legacy_client roundtrip codec client_minimal split)
work=$build/fuzz/speed
mkdir -p "$work"
table=$work/table.md
echo "| target | normal: executions | normal: exec/s | fast: executions | fast: exec/s | fast / normal |" >"$table"
echo "|---|---:|---:|---:|---:|---:|" >>"$table"
run() {  # run TARGET MODE -> "execs rate"
  local t=$1 mode=$2 dir=$work/$t.$2
  mkdir -p "$dir" "$dir.artifacts"
  (cd "$dir" && NBDWIRE_FUZZ_FAST=$([[ $mode == fast ]] && echo 1 || echo 0) nice -n 19 "$build/fuzz/fuzz_$t" \
      -max_total_time="$seconds" -max_len=4096 -dict="$root/fuzz/nbd.dict" -artifact_prefix="$dir.artifacts/" \
      -print_final_stats=1 "$dir" "$root/fuzz/corpus/$t" >"$dir.log" 2>&1) || echo "$t $mode: FAILED, see $dir.log" >&2
  local execs rate
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$dir.log")
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$dir.log")
  echo "$(date -u +%FT%TZ) $t $mode ${seconds}s execs=$execs exec/s=$rate load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
  echo "$execs $rate"
}
for t in "${targets[@]}"; do
  read -r ne nr < <(run "$t" normal)
  if [[ $t == split ]]; then  # the split target has no fast mode: its point is the splits
    echo "| $t | $ne | $nr | (same) | | |" >>"$table"
    continue
  fi
  read -r fe fr < <(run "$t" fast)
  ratio=$(awk -v a="$fr" -v b="$nr" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }')
  echo "| $t | $ne | $nr | $fe | $fr | $ratio |" >>"$table"
done
cat "$table"
