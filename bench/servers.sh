#!/usr/bin/env bash
# NBD server benchmark: nbdwire-server against nbdkit (memory, file), qemu-nbd and nbd-server,
# driven over one connection by two load generators, fio's nbd engine and nbdwire-perf, on a
# Unix socket and on 127.0.0.1.
#
#   bench/servers.sh [--build DIR] [--rounds N] [--runtime SECONDS] [--size SIZE]
#                    [--transports "unix tcp"] [--workloads "NAME..."] [--servers "NAME..."]
#                    [--clients "fio perf"] [--out DIR] [--alt BINARY] [--busy-poll USEC]
#                    [--tls | --tls-plain]
#
# Installs nothing: it uses the peers found on PATH (missing ones are skipped with a note) and
# nbdwire-server / nbdwire-socket-bound / nbdwire-perf from the build tree DIR (default
# build/bench; build with -DCMAKE_BUILD_TYPE=Release). --clients picks the load generators:
# "fio" (its nbd engine, libnbd) and "perf" (bench/perf/nbdwire-perf, on nbdwire's client
# machine); each server runs each workload with both, back to back, in an order that
# alternates from round to round. Every server is started once per transport and runs for the
# whole benchmark; memory exports are filled with data first, so no server answers a READ
# with a hole. Each round runs every workload on every server once, in a rotated order, so
# background load hits all servers alike. Results: DIR/results.tsv (one line per run) and
# the summary printed at the end (also DIR/summary.txt): medians, min-max, the ratio to nbdkit
# memory in the same round, server CPU seconds per million I/Os from /proc/PID/stat
# (utime + stime, plus reaped children for nbd-server, which forks per connection), the load
# generator's own CPU per I/O, and nbdwire-perf against fio on the same server and round.
#
# --alt BINARY adds nbdwire-mem-alt and nbdwire-file-alt, served by another nbdwire-server
# build, to measure a change against its parent in the same rounds. nbdwire-mem-poll is the
# memory export served with --busy-poll USEC (default 100).
#
# The "bound" row is nbdwire-socket-bound: the same message sizes and queue depth over the
# same kind of socket with neither protocol nor storage on either end (see docs/benchmarks.md).
# "bound-storage" is the same with the server's payloads spread over a buffer the size of the
# exports (--span), so large blocks miss the CPU caches as every server's storage does.
#
# --tls runs every server with TLS required, X.509 certificates made for the run by certtool
# (nbdwire-server --tls=require, nbdkit --tls=require, qemu-nbd with a tls-creds-x509 object);
# fio and nbdwire-perf connect with nbds:// URIs, both finding the CA in $HOME/.pki/libnbd (a
# HOME made for the run). The transports are then called unix+tls and tcp+tls in the results.
# --tls-plain runs every server both ways in the same rounds, each transport in plaintext and
# with TLS (unix, tcp, unix+tls, tcp+tls), so TLS can be stated as a ratio to plaintext. The
# bound rows and nbd-server (which always asks for a client certificate) have no TLS variant,
# and are left out of the default server list with either option.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build/bench
rounds=5
runtime=4
size=256M
transports="unix tcp"
workloads="randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32 read-1m-qd8 write-1m-qd8"
servers="nbdwire-mem nbdwire-mem-poll nbdwire-file nbdkit-mem nbdkit-file qemu-nbd nbd-server bound bound-storage"
busy_poll=100
out=
alt=
tls=0
servers_given=0
clients="fio perf"
clients_given=0
while [ $# -gt 0 ]; do
    case $1 in
        --build) build=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --runtime) runtime=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --transports) transports=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        --servers) servers=$2; servers_given=1; shift 2 ;;
        --clients) clients=$2; clients_given=1; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --alt) alt=$2; shift 2 ;;
        --busy-poll) busy_poll=$2; shift 2 ;;
        --tls) tls=1; shift ;;
        --tls-plain) tls=2; shift ;;
        -h|--help) sed -n '2,41p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "servers.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

say() { echo "servers.sh: $*" >&2; }
if [ "$tls" != 0 ] && [ "$servers_given" = 0 ]; then servers="nbdwire-mem nbdwire-file nbdkit-mem nbdkit-file qemu-nbd"; fi
# TLS transports are named TRANSPORT+tls.
if [ "$tls" = 1 ]; then transports=$(for t in $transports; do printf '%s+tls ' "$t"; done)
elif [ "$tls" = 2 ]; then transports="$transports $(for t in $transports; do printf '%s+tls ' "$t"; done)"; fi
for c in $clients; do
    case $c in fio|perf) ;; *) say "unknown client $c (fio or perf)"; exit 2 ;; esac
done
case " $clients " in *" perf "*)
    [ -x "$build/bench/nbdwire-perf" ] || { say "no $build/bench/nbdwire-perf (build it, or pass --clients fio)"; exit 1; } ;;
esac
for tool in fio python3; do
    command -v "$tool" >/dev/null || { say "$tool is required"; exit 1; }
done
[ -x "$build/examples/nbdwire-server" ] || { say "no $build/examples/nbdwire-server (build it, or pass --build)"; exit 1; }
if [ -n "$alt" ]; then
    [ -x "$alt" ] || { say "--alt $alt is not an executable"; exit 1; }
    servers="$servers nbdwire-mem-alt nbdwire-file-alt"
fi
case " $servers " in *" bound "*|*" bound-storage "*)
    [ -x "$build/bench/nbdwire-socket-bound" ] || { say "no $build/bench/nbdwire-socket-bound"; exit 1; } ;;
esac

work=$(mktemp -d /dev/shm/nbdwire-bench.XXXXXX)   # tmpfs: file exports measure no disk
out=${out:-$work/out}
mkdir -p "$out"
pids=()
pidfiles=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pidfiles[@]}"; do [ -s "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
    sleep 0.3
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work/img" "$work"/*.sock "$work"/*.conf
    [ "$out" = "$work/out" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$tls" != 0 ]; then
    command -v certtool >/dev/null || { say "--tls needs certtool (gnutls-bin)"; exit 1; }
    pki=$work/pki
    mkdir -p "$pki/server" "$pki/client"
    printf 'cn = bench CA\nca\ncert_signing_key\nexpiration_days = 30\n' >"$pki/ca.info"
    printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n' >"$pki/server.info"
    certtool --generate-privkey --key-type ecdsa --outfile "$pki/ca-key.pem" 2>/dev/null
    certtool --generate-self-signed --load-privkey "$pki/ca-key.pem" --template "$pki/ca.info" \
        --outfile "$pki/server/ca-cert.pem" 2>/dev/null
    certtool --generate-privkey --key-type ecdsa --outfile "$pki/server/server-key.pem" 2>/dev/null
    certtool --generate-certificate --load-privkey "$pki/server/server-key.pem" --load-ca-certificate "$pki/server/ca-cert.pem" \
        --load-ca-privkey "$pki/ca-key.pem" --template "$pki/server.info" --outfile "$pki/server/server-cert.pem" 2>/dev/null
    cp "$pki/server/ca-cert.pem" "$pki/client/"
    # fio's nbd engine refuses file names in URIs (tls-certificates=); libnbd also looks in
    # $HOME/.pki/libnbd, so fio runs with a HOME that has the CA there.
    mkdir -p "$work/home/.pki"
    cp -r "$pki/client" "$work/home/.pki/libnbd"
    export HOME=$work/home
    say "TLS: every server requires it (X.509, certificates in $pki)"
fi

bytes=$(numfmt --from=iec "$size")
mkdir -p "$work/img"
# One image with data everywhere; each file export gets its own copy.
head -c "$bytes" /dev/urandom >"$work/img/base"

have() { command -v "$1" >/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() {  # wait_ready TRANSPORT ADDR PID
    local i
    for i in $(seq 200); do
        if [ "$1" = unix ]; then [ -S "$2" ] && return 0
        else (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; fi
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

declare -A uri pid_of
# start SERVER TRANSPORT: starts one server instance; sets uri[] and pid_of[] (or skips it).
start() {
    local s=$1 t=$2 key=$1/$2 addr img p listen e bt=${2%+tls} tls_on=0
    [ "$t" = "$bt" ] || tls_on=1
    if [ "$bt" = unix ]; then addr=$work/$s-$t.sock; else addr=$(free_port); fi
    img=$work/img/$s-$t.img
    case $s in
        nbdwire-*|nbdkit-*|qemu-nbd|nbd-server) ;;
        *) return 0 ;;
    esac
    case $s in *-file|*-file-alt|qemu-nbd|nbd-server) cp "$work/img/base" "$img" ;; esac
    if [ "$bt" = unix ]; then listen=(--unix "$addr"); else listen=(--listen "127.0.0.1:$addr"); fi
    local bin=$build/examples/nbdwire-server
    case $s in *-alt) bin=$alt ;; esac
    # TLS arguments of each server (--tls).
    local wtls=() ktls=() qtls=()
    if [ "$tls_on" = 1 ]; then
        wtls=(--tls=require "--tls-certificates=$pki/server")
        ktls=(--tls=require "--tls-certificates=$pki/server")
        qtls=(--object "tls-creds-x509,id=tls0,dir=$pki/server,endpoint=server,verify-peer=off" --tls-creds tls0)
        case $s in nbd-server|bound*) say "$s: no TLS variant here; skipped"; return 0 ;; esac
    fi
    case $s in
        nbdwire-mem|nbdwire-mem-alt) "$bin" "${listen[@]}" "${wtls[@]}" e=memory:"$bytes" >"$work/$s-$t.log" 2>&1 &
            p=$! ;;
        nbdwire-mem-poll) "$bin" "${listen[@]}" "${wtls[@]}" --busy-poll "$busy_poll" e=memory:"$bytes" >"$work/$s-$t.log" 2>&1 &
            p=$! ;;
        nbdwire-file|nbdwire-file-alt) "$bin" "${listen[@]}" "${wtls[@]}" e=file:"$img" >"$work/$s-$t.log" 2>&1 &
            p=$! ;;
        nbdkit-*)
            have nbdkit || { say "nbdkit not installed: skipping $s"; return 0; }
            if [ "$bt" = unix ]; then listen=(-U "$addr"); else listen=(-i 127.0.0.1 -p "$addr"); fi
            if [ "$s" = nbdkit-mem ]; then nbdkit -f "${listen[@]}" "${ktls[@]}" memory "$bytes" >"$work/$s-$t.log" 2>&1 &
            else nbdkit -f "${listen[@]}" "${ktls[@]}" file "$img" >"$work/$s-$t.log" 2>&1 &
            fi
            p=$! ;;
        qemu-nbd)
            have qemu-nbd || { say "qemu-nbd not installed: skipping"; return 0; }
            if [ "$bt" = unix ]; then listen=(-k "$addr"); else listen=(-b 127.0.0.1 -p "$addr"); fi
            qemu-nbd -f raw -t -x e "${listen[@]}" "${qtls[@]}" "$img" >"$work/$s-$t.log" 2>&1 &
            p=$! ;;
        nbd-server)
            have nbd-server || { say "nbd-server not installed: skipping"; return 0; }
            {
                echo "[generic]"
                if [ "$bt" = unix ]; then echo "    unixsock = $addr"
                else echo "    listenaddr = 127.0.0.1"; echo "    port = $addr"; fi
                echo "[e]"
                echo "    exportname = $img"
            } >"$work/$s-$t.conf"
            pidfiles+=("$work/$s-$t.pid")
            mkdir -p "$work/$s"
            nbd-server -C "$work/$s-$t.conf" -p "$work/$s-$t.pid" >"$work/$s-$t.log" 2>&1 || {
                say "nbd-server failed to start ($t)"; cat "$work/$s-$t.log" >&2; return 0; }
            local i
            for i in $(seq 100); do [ -s "$work/$s-$t.pid" ] && break; sleep 0.05; done
            p=$(cat "$work/$s-$t.pid") ;;
    esac
    pids+=("$p")
    if ! wait_ready "$bt" "$addr" "$p"; then
        say "$s ($t) did not start:"; cat "$work/$s-$t.log" >&2; return 0
    fi
    pid_of[$key]=$p
    case $s in nbdkit-*) e="" ;; *) e=e ;; esac
    if [ "$tls_on" = 1 ]; then
        if [ "$bt" = unix ]; then uri[$key]="nbds+unix:///$e?socket=$addr"; else uri[$key]="nbds://localhost:$addr/$e"; fi
    elif [ "$bt" = unix ]; then uri[$key]="nbd+unix:///$e?socket=$addr"; else uri[$key]="nbd://127.0.0.1:$addr/$e"; fi
}

# workload NAME -> fio arguments, and the socket-bound arguments.
fio_args() {
    case $1 in
        randread-4k-qd1) echo "--rw=randread --bs=4k --iodepth=1" ;;
        randread-4k-qd32) echo "--rw=randread --bs=4k --iodepth=32" ;;
        randwrite-4k-qd1) echo "--rw=randwrite --bs=4k --iodepth=1" ;;
        randwrite-4k-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
        read-1m-qd8) echo "--rw=read --bs=1m --iodepth=8" ;;
        write-1m-qd8) echo "--rw=write --bs=1m --iodepth=8" ;;
        *) say "unknown workload $1"; exit 2 ;;
    esac
}
bound_args() {
    case $1 in
        randread-4k-qd1) echo "--read --bs 4096 --qd 1" ;;
        randread-4k-qd32) echo "--read --bs 4096 --qd 32" ;;
        randwrite-4k-qd1) echo "--write --bs 4096 --qd 1" ;;
        randwrite-4k-qd32) echo "--write --bs 4096 --qd 32" ;;
        read-1m-qd8) echo "--read --bs 1048576 --qd 8" ;;
        write-1m-qd8) echo "--write --bs 1048576 --qd 8" ;;
    esac
}

# cpu_ticks PID: user + system time of the process and its reaped children, in clock ticks.
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
hz=$(getconf CLK_TCK)

# run_fio URI ARGS... -> "iops bytes_per_s ios client_cpu_s" on stdout (fio's own user + system
# time, the client side of the measurement).
run_fio() {
    local u=$1
    shift
    fio --name=job --ioengine=nbd --uri="$u" --size="$bytes" "$@" --output-format=json \
        >"$work/fio.json" 2>"$work/fio.err" || { cat "$work/fio.err" >&2; echo "0 0 0 0 - -"; return 0; }
    python3 - "$work/fio.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
d = json.loads(text[text.index("{"):])
j = d["jobs"][0]
r, w = j["read"], j["write"]
cpu = (j["usr_cpu"] + j["sys_cpu"]) / 100 * j["job_runtime"] / 1000
# Completion latency percentiles of the direction with the most I/Os (fio's clat).
op = r if r["total_ios"] >= w["total_ios"] else w
pct = op.get("clat_ns", {}).get("percentile", {})
lat = lambda k: f"{pct[k] / 1000:.1f}" if k in pct else "-"
print(r["iops"] + w["iops"], r["bw_bytes"] + w["bw_bytes"], r["total_ios"] + w["total_ios"], f"{cpu:.3f}",
      lat("50.000000"), lat("99.000000"))
PY
}

# run_perf URI ARGS... -> the same from nbdwire-perf --json (its client CPU is the user + system
# time of its connection thread over the measured window).
run_perf() {
    local u=$1
    shift
    "$build/bench/nbdwire-perf" "$u" "$@" --json >"$work/perf.json" 2>"$work/perf.err" ||
        { cat "$work/perf.err" >&2; echo "0 0 0 0 - -"; return 0; }
    python3 - "$work/perf.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(d["iops"], d["bytes_per_s"], d["ios"], f"{d['cpu_user_s'] + d['cpu_sys_s']:.3f}",
      f"{d['lat_p50_us']:.1f}", f"{d['lat_p99_us']:.1f}")
PY
}

results=$out/results.tsv
printf 'round\ttransport\tworkload\tclient\tserver\tiops\tbytes_per_s\tios\tserver_cpu_s\tclient_cpu_s\tlat_p50_us\tlat_p99_us\tload1\n' >"$results"

for t in $transports; do
    for s in $servers; do start "$s" "$t"; done
done

# Fill memory exports, so READs return data and never holes.
for key in "${!uri[@]}"; do
    case $key in *-mem/*|*-mem-alt/*|*-mem-poll/*)
        say "filling $key"
        run_fio "${uri[$key]}" --rw=write --bs=1m --iodepth=8 >/dev/null ;;
    esac
done

say "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
say "load before the first round: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
    # Rotate the server order each round, so no server always runs first or last.
    list=($servers)
    n=${#list[@]}
    rot=$(( (r - 1) % n ))
    order=("${list[@]:$rot}" "${list[@]:0:$rot}")
    for t in $transports; do
        for w in $workloads; do
            for s in "${order[@]}"; do
                if [ "$s" = bound ] || [ "$s" = bound-storage ]; then
                    [ "$t" = "${t%+tls}" ] || continue  # no TLS variant
                    span=0
                    [ "$s" = bound-storage ] && span=$bytes
                    line=$("$build/bench/nbdwire-socket-bound" "--$t" $(bound_args "$w") --seconds "$runtime" --span "$span")
                    iops=$(sed 's/.*ios_per_s=\([0-9.]*\).*/\1/' <<<"$line")
                    bw=$(sed 's/.*bytes_per_s=\([0-9.]*\).*/\1/' <<<"$line")
                    ios=$(sed 's/^ios=\([0-9]*\).*/\1/' <<<"$line")
                    cpu=$(sed 's/.*server_cpu_s=\([0-9.]*\).*/\1/' <<<"$line")
                    ccpu=$(sed 's/.*client_cpu_s=\([0-9.]*\).*/\1/' <<<"$line")
                    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$w" - "$s" "$iops" "$bw" "$ios" \
                        "$cpu" "$ccpu" - - "$(cut -d' ' -f1 /proc/loadavg)" >>"$results"
                    say "round $r $t $w $s: $iops IOPS, cpu ${cpu}s"
                    continue
                fi
                key=$s/$t
                [ -n "${uri[$key]:-}" ] || continue
                p=${pid_of[$key]}
                # Both load generators back to back; which goes first alternates by round.
                cl=($clients)
                [ $((r % 2)) = 0 ] && [ ${#cl[@]} = 2 ] && cl=("${cl[1]}" "${cl[0]}")
                for c in "${cl[@]}"; do
                    c0=$(cpu_ticks "$p")
                    if [ "$c" = fio ]; then
                        read -r iops bw ios ccpu p50 p99 < <(run_fio "${uri[$key]}" $(fio_args "$w") --time_based --runtime="$runtime")
                    else
                        read -r iops bw ios ccpu p50 p99 < <(run_perf "${uri[$key]}" $(fio_args "$w") --runtime="$runtime")
                    fi
                    sleep 0.2  # let a forking server reap the connection's child
                    c1=$(cpu_ticks "$p")
                    cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN { printf "%.3f", (b - a) / hz }')
                    load=$(cut -d' ' -f1 /proc/loadavg)
                    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$w" "$c" "$s" "$iops" "$bw" "$ios" \
                        "$cpu" "$ccpu" "$p50" "$p99" "$load" >>"$results"
                    say "round $r $t $w $s $c: $iops IOPS, server cpu ${cpu}s, client cpu ${ccpu}s, load $load"
                done
            done
        done
    done
done
say "load after the last round: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 "$root/bench/summarize.py" "$results" | tee "$out/summary.txt"
say "raw results: $results"
