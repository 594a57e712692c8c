#!/usr/bin/env bash
# Copy benchmark: nbdwire-client copy against nbdcopy, reading from and writing to the same
# nbdkit export (file plugin on tmpfs), with a dense and a sparse image, file to NBD, NBD to
# file and NBD to NBD (one nbdkit export to another); and, when FUSE works
# here, nbdwire-fuse against nbdfuse read and written with dd. read-null reads the dense
# image and drops the data, which leaves out the cost of the destination's new tmpfs pages
# (on a VM that cost can vary several-fold from one run to the next).
#
#   bench/copies.sh [--build DIR] [--rounds N] [--size SIZE] [--out DIR]
#
# Installs nothing; tools that are missing are skipped with a note. Each round runs every
# case once (the tools in a rotated order); the summary gives median seconds, min-max,
# the median per-round ratio of nbdcopy's time to nbdwire's (above 1: nbdwire faster), and
# the copy's user + system CPU time.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build/bench
rounds=5
size=512M
out=
while [ $# -gt 0 ]; do
    case $1 in
        --build) build=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "copies.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
say() { echo "copies.sh: $*" >&2; }
client=$build/examples/nbdwire-client
fuse=$build/examples/fuse/nbdwire-fuse
[ -x "$client" ] || { say "no $client (build it, or pass --build)"; exit 1; }
for tool in nbdkit python3; do command -v "$tool" >/dev/null || { say "$tool is required"; exit 1; }; done
have() { command -v "$1" >/dev/null; }

work=$(mktemp -d /dev/shm/nbdwire-copies.XXXXXX)
out=${out:-$work/out}
mkdir -p "$out" "$work/mnt-a" "$work/mnt-b"
pids=()
cleanup() {
    local p
    for m in "$work/mnt-a" "$work/mnt-b"; do mountpoint -q "$m" && fusermount3 -u "$m" 2>/dev/null || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -f "$work"/*.img "$work"/*.sock "$work"/out.bin
    [ "$out" = "$work/out" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bytes=$(numfmt --from=iec "$size")
# dense: random data everywhere. sparse: 1/16 of it is data, in 1 MiB pieces 16 MiB apart.
head -c "$bytes" /dev/urandom >"$work/dense.img"
truncate -s "$bytes" "$work/sparse.img"
for ((o = 0; o < bytes / 1048576; o += 16)); do
    dd if="$work/dense.img" of="$work/sparse.img" bs=1M skip=$o seek=$o count=1 conv=notrunc status=none
done
cp "$work/dense.img" "$work/dst.img"

# One nbdkit per image, on Unix sockets; each copy reads from or writes to one of them.
serve() {  # serve NAME IMAGE
    nbdkit -f -U "$work/$1.sock" file "$2" >"$work/$1.log" 2>&1 &
    pids+=($!)
    local i
    for i in $(seq 100); do [ -S "$work/$1.sock" ] && return 0; sleep 0.05; done
    say "nbdkit $1 did not start"; exit 1
}
serve dense "$work/dense.img"
serve sparse "$work/sparse.img"
serve dst "$work/dst.img"
u() { echo "nbd+unix:///?socket=$work/$1.sock"; }

results=$out/copies.tsv
printf 'round\tcase\ttool\tseconds\tcpu_s\n' >"$results"
fuse_ok=0
if [ -x "$fuse" ] && have nbdfuse && have fusermount3 && [ -c /dev/fuse ]; then fuse_ok=1; fi
[ "$fuse_ok" = 1 ] || say "FUSE comparison skipped (needs nbdwire-fuse, nbdfuse, fusermount3, /dev/fuse)"

# timed CASE TOOL COMMAND...: runs the command, records wall (to the millisecond; time(1)
# rounds to 10 ms) and CPU seconds (children).
timed() {
    local c=$1 t=$2
    shift 2
    local t0 t1
    t0=$(date +%s.%N)
    if ! /usr/bin/time -f '%U %S' -o "$work/time.txt" "$@" >/dev/null 2>"$work/cmd.err"; then
        say "$c $t failed:"; cat "$work/cmd.err" >&2; return 0
    fi
    t1=$(date +%s.%N)
    local line wall us sy
    line=$(tail -n 1 "$work/time.txt")
    read -r us sy <<<"$line"
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$c" "$t" "$wall" "$(awk -v a="$us" -v b="$sy" 'BEGIN { print a + b }')" >>"$results"
    say "round $r $c $t: ${wall}s"
}

run_case() {  # run_case CASE TOOL
    local c=$1 t=$2
    rm -f "$work/out.bin"
    # Every write starts from the same dense destination: zeroing ranges that hold data
    # (pages to free) costs the server far more than zeroing holes, so otherwise whichever
    # tool ran second after a dense write would get the cheap case.
    case $c in write-*|nbd-*|fuse-write) cp "$work/dense.img" "$work/dst.img" ;; esac
    case $c/$t in
        read-dense/nbdwire) timed "$c" "$t" "$client" copy "$(u dense)" "$work/out.bin" ;;
        read-dense/nbdcopy) timed "$c" "$t" nbdcopy "$(u dense)" "$work/out.bin" ;;
        # The data read and dropped: what the tools cost without the destination file's
        # page allocation. nbdcopy gets its own null: (given /dev/null, a 2 GiB copy took it
        # over 130 s here).
        read-null/nbdwire) timed "$c" "$t" "$client" copy "$(u dense)" /dev/null ;;
        read-null/nbdcopy) timed "$c" "$t" nbdcopy "$(u dense)" null: ;;
        read-sparse/nbdwire) timed "$c" "$t" "$client" copy "$(u sparse)" "$work/out.bin" ;;
        read-sparse/nbdcopy) timed "$c" "$t" nbdcopy "$(u sparse)" "$work/out.bin" ;;
        write-dense/nbdwire) timed "$c" "$t" "$client" copy "$work/dense.img" "$(u dst)" ;;
        write-dense/nbdcopy) timed "$c" "$t" nbdcopy "$work/dense.img" "$(u dst)" ;;
        write-sparse/nbdwire) timed "$c" "$t" "$client" copy "$work/sparse.img" "$(u dst)" ;;
        write-sparse/nbdcopy) timed "$c" "$t" nbdcopy "$work/sparse.img" "$(u dst)" ;;
        # NBD to NBD: from one nbdkit export to another.
        nbd-dense/nbdwire) timed "$c" "$t" "$client" copy "$(u dense)" "$(u dst)" ;;
        nbd-dense/nbdcopy) timed "$c" "$t" nbdcopy "$(u dense)" "$(u dst)" ;;
        nbd-sparse/nbdwire) timed "$c" "$t" "$client" copy "$(u sparse)" "$(u dst)" ;;
        nbd-sparse/nbdcopy) timed "$c" "$t" nbdcopy "$(u sparse)" "$(u dst)" ;;
        fuse-read/*|fuse-write/*)
            local m=$work/mnt-a
            local fp=
            if [ "$t" = nbdwire-fuse ]; then "$fuse" "$m" "$(u dst)" 2>"$work/fuse.err" || { say "nbdwire-fuse failed"; cat "$work/fuse.err" >&2; return 0; }
            else nbdfuse "$m" "$(u dst)" 2>"$work/fuse.err" & fp=$!; fi
            local i
            for i in $(seq 100); do [ -e "$m/nbd" ] && break; sleep 0.05; done
            if [ "$c" = fuse-read ]; then timed "$c" "$t" dd if="$m/nbd" of=/dev/null bs=1M
            else timed "$c" "$t" dd if="$work/dense.img" of="$m/nbd" bs=1M conv=notrunc,fsync; fi
            fusermount3 -u "$m" 2>/dev/null || true
            [ -z "$fp" ] || wait "$fp" 2>/dev/null || true ;;
    esac
}

cases="read-dense read-null read-sparse write-dense write-sparse nbd-dense nbd-sparse"
[ "$fuse_ok" = 1 ] && cases="$cases fuse-read fuse-write"
for r in $(seq "$rounds"); do
    for c in $cases; do
        case $c in fuse-*) tools=(nbdwire-fuse nbdfuse) ;; *) tools=(nbdwire nbdcopy) ;; esac
        [ $((r % 2)) = 0 ] && tools=("${tools[1]}" "${tools[0]}")
        for t in "${tools[@]}"; do run_case "$c" "$t"; done
    done
done

python3 - "$results" <<'PY' | tee "$out/copies-summary.txt"
import collections, csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
d = collections.defaultdict(lambda: collections.defaultdict(dict))
for r in rows:
    d[r["case"]][r["tool"]][r["round"]] = r
print("| case | tool | median s | min-max | CPU s | x (other's time / this) |")
print("|---|---|---:|---:|---:|---:|")
for case, tools in d.items():
    names = list(tools)
    for t in names:
        secs = [float(x["seconds"]) for x in tools[t].values()]
        cpu = [float(x["cpu_s"]) for x in tools[t].values()]
        others = [o for o in names if o != t]
        ratios = []
        for rd, x in tools[t].items():
            for o in others:
                if rd in tools[o] and float(x["seconds"]) > 0:
                    ratios.append(float(tools[o][rd]["seconds"]) / float(x["seconds"]))
        rs = f"{statistics.median(ratios):.2f}" if ratios else "-"
        print(f"| {case} | {t} | {statistics.median(secs):.3f} | {min(secs):.3f}-{max(secs):.3f} | "
              f"{statistics.median(cpu):.2f} | {rs} |")
PY
