#!/usr/bin/env bash
# Runs the fuzz targets of a libFuzzer build, one after the other on one core at the lowest
# priority, then minimises each committed corpus with what the run found.
#   fuzz/tools/run-fuzz.sh BUILD_DIR SECONDS_PER_TARGET [TARGET...]
#   fuzz/tools/run-fuzz.sh BUILD_DIR --seed LOG_OR_SEED_DIR...   (add make-seeds.py output)
# BUILD_DIR was configured with clang and -DNBDWIRE_BUILD_FUZZ=ON. Each run's last status
# line (executions, coverage, exec/s) is appended to BUILD_DIR/fuzz/campaign.log. Crashes are
# left in BUILD_DIR/fuzz/work/<target>.artifacts/ as crash-*; keep one in fuzz/corpus/<target>/
# under a name saying what it found (crash-<what>): minimising keeps files named crash-*.
# NBDWIRE_FUZZ_FAST=1 in the environment runs the targets in fast mode (fuzz/mode.hpp: whole
# inputs only, no re-feeding split by split; fuzz_split is the same in both modes); the
# minimising merge always runs in normal mode, so every input kept passes the split checks.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(realpath "${1:?usage: run-fuzz.sh BUILD_DIR SECONDS|--seed DIR... [TARGET...]}")
shift
all=(server_handshake client_handshake server_tx client_tx legacy_server legacy_client roundtrip split codec
  client_minimal)
work=$build/fuzz/work
mkdir -p "$work"

# minimise TARGET DIR...: corpus/TARGET := the smallest set of inputs of corpus/TARGET and
# DIRs with the same coverage, named by SHA-256 (hand-named inputs the merge keeps keep their
# names).
minimise() {
  local t=$1; shift
  local bin=$build/fuzz/fuzz_$t new=$work/$t.merged
  rm -rf "$new"; mkdir -p "$new" "$work/$t.artifacts"
  NBDWIRE_FUZZ_FAST=0 nice -n 19 "$bin" -merge=1 -max_len=4096 -artifact_prefix="$work/$t.artifacts/merge-" "$new" \
    "$root/fuzz/corpus/$t" "$@" >"$work/$t.merge.log" 2>&1
  # Hand-named inputs (any name but a SHA-256) keep their names when the merge keeps them.
  local -A names=()
  local c
  for c in "$root/fuzz/corpus/$t"/*; do
    [[ -f $c ]] || continue
    local base=${c##*/}
    [[ $base =~ ^[0-9a-f]{64}$ ]] || names[$(sha256sum <"$c" | cut -c1-64)]=$base
  done
  find "$root/fuzz/corpus/$t" -maxdepth 1 -type f ! -name 'crash-*' -delete
  # a named regression input (crash-*) stays under its name only
  local named; named=$(for c in "$root/fuzz/corpus/$t"/crash-*; do [[ -f $c ]] && sha256sum <"$c" | cut -c1-64; done; true)
  for f in "$new"/*; do
    local h; h=$(sha256sum <"$f" | cut -c1-64)
    grep -qx "$h" <<<"$named" && continue
    cp "$f" "$root/fuzz/corpus/$t/${names[$h]:-$h}"
  done
  echo "$t: $(ls "$root/fuzz/corpus/$t" | wc -l) inputs, $(du -sb "$root/fuzz/corpus/$t" | cut -f1) bytes"
}

if [[ ${1:-} == --seed ]]; then
  shift
  for t in "${all[@]}"; do
    dirs=()
    for d in "$@"; do [[ -d $d/$t ]] && dirs+=("$d/$t"); done
    minimise "$t" "${dirs[@]}"
  done
  exit 0
fi

seconds=${1:?seconds per target}
shift
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$work/$t.artifacts"
  echo "== $t: ${seconds}s"
  # CPU time of the fuzzing itself (user + system of the fuzzer process), for the campaign table.
  TIMEFORMAT='%U %S'
  { time (cd "$work/$t" && nice -n 19 "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -max_len=4096 \
      -dict="$root/fuzz/nbd.dict" -artifact_prefix="$work/$t.artifacts/" -print_final_stats=1 \
      "$work/$t" "$root/fuzz/corpus/$t" \
      >"$work/$t.log" 2>&1) || echo "$t: FAILED, see $work/$t.log"; } 2>"$work/$t.cpu"
  cpu=$(awk '{printf "%.0f", $1 + $2}' "$work/$t.cpu")
  line=$(grep -E '^#[0-9]+' "$work/$t.log" | tail -n 1)
  execs=$(grep -E 'stat::number_of_executed_units' "$work/$t.log" | awk '{print $2}')
  rate=$(grep -E 'stat::average_exec_per_sec' "$work/$t.log" | awk '{print $2}')
  mode=normal; [[ ${NBDWIRE_FUZZ_FAST:-0} != 0 ]] && mode=fast
  echo "$(date -u +%FT%TZ) $t $mode ${seconds}s cpu=${cpu}s execs=$execs exec/s=$rate $line" | tee -a "$build/fuzz/campaign.log"
  minimise "$t" "$work/$t"
done
