# nbdwire-perf (bench/perf/) against a memory export of nbdkit or nbdwire-server:
#   bash perf.sh NBDWIRE-SERVER NBDWIRE-CLIENT NBDWIRE-PERF (nbdkit | nbdwire-server | nbdwire-server-tls)
# - usage errors exit 2, --help exits 0;
# - a randrw --verify run with two connections checks reads against what it wrote (exit 0,
#   no mismatch, reads verified);
# - a sequential --verify write pass, then a read-only --verify pass finds every block whole;
#   one block's bytes overwritten by nbdwire-client make the next read-only pass exit 1 and
#   name the first byte changed;
# - --json parses and holds every documented key with sane values (ios > 0,
#   min <= p50 <= p99 <= p99.9 <= max, bytes = ios x bs);
# - an error reply (nbdkit's error filter) or writes to a read-only export exit 1;
# - nbdkit: TCP, oldstyle and no structured replies work too.
# nbdwire-server-tls: nbdwire-server --tls=require and nbds+unix:// URIs (X.509 certificates
# made by tls-lib.sh): --verify runs with 4 KiB and 1 MiB blocks succeed over TLS (exit 0,
# reads verified); a plaintext URI, the wrong CA and a bad tls-* parameter fail (1, 1 and 2).
. "$(dirname "$0")/lib.sh"

PERF=${1-}
MODE=${2-}
[ -n "$PERF" ] || fail "nbdwire-perf: there is no CMake target nbdwire-perf in this build (NBDWIRE_BUILD_BENCH)"
[ -x "$PERF" ] || fail "nbdwire-perf: $PERF does not exist; build the target nbdwire-perf first"
need_client
size=$((16 * 1024 * 1024))

case $MODE in
    nbdkit)
        sock=$T/nbdkit.sock
        start_nbdkit "$sock" memory "$size"
        uri="nbd+unix:///?socket=$sock" ;;
    nbdwire-server)
        start_server_unix e=memory:$size ro=memory:1M,read-only
        uri=$(unix_uri e) ;;
    nbdwire-server-tls)
        . "$(dirname "$0")/tls-lib.sh"
        tls_make_pki "$T/pki"
        start_server_unix --tls=require --tls-certificates="$T/pki/server" e=memory:$size
        uri="nbds+unix:///e?socket=$SERVER_SOCK&tls-certificates=$T/pki/client" ;;
    *) fail "unknown mode '$MODE' (nbdkit, nbdwire-server or nbdwire-server-tls)" ;;
esac

# perf_json NAME ARGS...: nbdwire-perf --json as a step; the object in $T/NAME.json.
perf_json() {
    local name=$1
    shift
    step "nbdwire-perf $*" "$PERF" "$@" --json >"$T/$name.json"
    sed 's/^/    | /' "$T/$name.json" >&2
}

# check_json FILE BS: every documented key is there, and the values are consistent.
check_json() {
    python3 - "$1" "$2" <<'PY' || fail "JSON of $1 does not hold what it should"
import json, sys
d = json.load(open(sys.argv[1]))
bs = int(sys.argv[2])
keys = """uri rw bs iodepth connections rwmixread offset size ramp_s runtime_s structured_replies
extended_headers ios reads writes bytes errors iops bytes_per_s mib_per_s lat_min_us lat_mean_us
lat_p50_us lat_p99_us lat_p999_us lat_max_us cpu_user_s cpu_sys_s cpu_us_per_io coalesce recv_calls naps verify
verified_reads unverified_reads mismatches first_mismatch_offset error""".split()
missing = [k for k in keys if k not in d]
assert not missing, f"missing keys {missing}"
assert d["ios"] > 0, "no I/O"
assert d["reads"] + d["writes"] == d["ios"]
assert d["bytes"] == d["ios"] * bs, "bytes is not ios x bs"
assert d["bs"] == bs
assert d["iops"] > 0 and d["bytes_per_s"] > 0 and d["runtime_s"] > 0
assert abs(d["iops"] * d["runtime_s"] - d["ios"]) <= 1 + d["ios"] * 1e-3, "iops x runtime is not ios"
assert 0 < d["lat_min_us"] <= d["lat_p50_us"] <= d["lat_p99_us"] <= d["lat_p999_us"] <= d["lat_max_us"], "latencies out of order"
assert d["lat_min_us"] <= d["lat_mean_us"] <= d["lat_max_us"]
assert d["cpu_us_per_io"] > 0 and d["cpu_user_s"] + d["cpu_sys_s"] > 0
assert d["errors"] == 0 and d["mismatches"] == 0 and d["first_mismatch_offset"] is None and d["error"] is None
print(f"ios {d['ios']}, {d['iops']:.0f} IOPS, p50/p99/p99.9 {d['lat_p50_us']}/{d['lat_p99_us']}/{d['lat_p999_us']} us, "
      f"{d['cpu_us_per_io']} us CPU per I/O", file=sys.stderr)
PY
}

# TLS: verify runs over nbds+unix://, then the refusals; the rest of this script is plaintext.
if [ "$MODE" = nbdwire-server-tls ]; then
    perf_json tls-randrw "$uri" --rw=randrw --verify --bs=4k --iodepth=32 --connections=2 --runtime=1 --size=4m
    check_json "$T/tls-randrw.json" 4096
    python3 - "$T/tls-randrw.json" <<'PY' || fail "the randrw --verify run over TLS checked no reads or did no writes"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["verify"] is True and d["verified_reads"] > 0 and d["writes"] > 0 and d["connections"] == 2
PY
    # 1 MiB blocks: READ data received straight into the request's buffer, through TLS.
    perf_json tls-write "$uri" --rw=write --verify --bs=1m --iodepth=4 --size=8m --ios=8
    check_json "$T/tls-write.json" $((1024 * 1024))
    perf_json tls-read "$uri" --rw=read --verify --bs=1m --iodepth=4 --size=8m --ios=8
    check_json "$T/tls-read.json" $((1024 * 1024))
    expect_eq "$(json_get "$T/tls-read.json" verified_reads)" 8 "1 MiB blocks read back over TLS and verified"
    perf_json tls-randread "$uri" --rw=randread --bs=4k --iodepth=32 --runtime=0.5
    check_json "$T/tls-randread.json" 4096
    step_fails "plaintext against a TLS-only server" "$PERF" "nbd+unix:///e?socket=$SERVER_SOCK" --runtime=0.3
    grep -q "requires TLS" "$T/step.err" || fail "stderr does not say the server requires TLS"
    step_fails "a server certificate from another CA" "$PERF" \
        "nbds+unix:///e?socket=$SERVER_SOCK&tls-certificates=$T/pki/wrong-ca" --runtime=0.3
    usage_rc=0
    timeout 20 "$PERF" "nbds+unix:///e?socket=$SERVER_SOCK&tls-type=anon" >/dev/null 2>"$T/anon.err" || usage_rc=$?
    expect_eq "$usage_rc" 2 "exit status for tls-type=anon (a usage error)"
    log PASS
    exit 0
fi

# 1. Usage errors exit 2 and say why; --help exits 0.
usage_fails() {
    local rc=0
    log "+ (must exit 2) nbdwire-perf $*"
    timeout 20 "$PERF" "$@" >"$T/usage.out" 2>"$T/usage.err" || rc=$?
    sed 's/^/    | /' "$T/usage.err" >&2
    expect_eq "$rc" 2 "exit status of nbdwire-perf $*"
    [ -s "$T/usage.err" ] || fail "no message for a usage error"
}
usage_fails
usage_fails "$uri" --rw=bogus
usage_fails "$uri" --iodepth=0
usage_fails "$uri" --iodepth=65
usage_fails "$uri" --bs=4q
usage_fails "$uri" --rwmixread=101
usage_fails "$uri" --frobnicate
usage_fails "$uri" --runtime
usage_fails "$uri" "$uri"
usage_fails "not-a-uri"
usage_fails "nbds+unix:///?socket=$T/x.sock&tls-type=anon"
step "nbdwire-perf --help" "$PERF" --help >"$T/help.txt"
grep -q -- "--verify" "$T/help.txt" || fail "--help does not document --verify"
grep -q "first_mismatch_offset" "$T/help.txt" || fail "--help does not list the JSON keys"

# 2. Mixed random reads and writes with --verify over two connections: every read of a block
#    this run wrote must hold its last generation.
perf_json randrw "$uri" --rw=randrw --verify --bs=4k --iodepth=16 --connections=2 --runtime=1 --size=4m
check_json "$T/randrw.json" 4096
python3 - "$T/randrw.json" <<'PY' || fail "the randrw --verify run checked no reads or did no writes"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["verify"] is True and d["verified_reads"] > 0 and d["writes"] > 0 and d["connections"] == 2
PY

# 3. A write pass over 4 MiB in 64 KiB blocks, then read-only passes: all blocks whole, then
#    one changed byte range found.
bs=65536
perf_json write "$uri" --rw=write --verify --bs=64k --iodepth=8 --size=4m --ios=64
check_json "$T/write.json" $bs
expect_eq "$(json_get "$T/write.json" writes)" 64 "blocks written"
perf_json readback "$uri" --rw=read --verify --bs=64k --iodepth=8 --size=4m --ios=64
check_json "$T/readback.json" $bs
expect_eq "$(json_get "$T/readback.json" verified_reads)" 64 "blocks read back and verified"
perf_json randread-verify "$uri" --rw=randread --verify --bs=64k --iodepth=4 --connections=2 --size=4m --runtime=1
check_json "$T/randread-verify.json" $bs

# Overwrite 100 bytes at an offset inside block 5 with their complement (every byte differs).
bad=$((5 * bs + 1000 + RANDOM % 1000))
client read "$uri" --offset "$bad" --length 100 >"$T/orig.bin"
python3 -c 'import sys; sys.stdout.buffer.write(bytes(255 - b for b in sys.stdin.buffer.read()))' \
    <"$T/orig.bin" >"$T/flipped.bin"
client write "$uri" --offset "$bad" <"$T/flipped.bin"
log "+ (must exit 1) nbdwire-perf read-only verify pass after corrupting offset $bad"
rc=0
timeout 30 "$PERF" "$uri" --rw=read --verify --bs=64k --iodepth=8 --size=4m --ios=64 --json \
    >"$T/corrupt.json" 2>"$T/corrupt.err" || rc=$?
sed 's/^/    | /' "$T/corrupt.json" "$T/corrupt.err" >&2
expect_eq "$rc" 1 "exit status of the verify pass over the corrupted block"
expect_eq "$(json_get "$T/corrupt.json" first_mismatch_offset)" "$bad" "first mismatch offset (JSON)"
expect_eq "$(json_get "$T/corrupt.json" mismatches)" 1 "mismatches"
grep -q "the first at offset $bad:" "$T/corrupt.err" || fail "stderr does not name offset $bad"
# Rewriting the block with nbdwire-perf heals it: the next pass is clean again.
perf_json rewrite "$uri" --rw=write --verify --bs=64k --offset=$((5 * bs)) --size=64k --ios=1
perf_json reread "$uri" --rw=read --verify --bs=64k --iodepth=8 --size=4m --ios=64
expect_eq "$(json_get "$T/reread.json" verified_reads)" 64 "blocks verified after the rewrite"

# 4. Plain workloads: --json holds sane values; the summary names what it reports.
perf_json randread "$uri" --rw=randread --bs=4k --iodepth=32 --runtime=1
check_json "$T/randread.json" 4096
expect_eq "$(json_get "$T/randread.json" structured_replies)" true "structured replies on by default"
# (These writes stay above the first 8 MiB, which keeps the verify pattern for section 6.)
perf_json seqwrite "$uri" --rw=write --bs=1m --iodepth=4 --runtime=1 --ramp=0.2 --offset=8m
check_json "$T/seqwrite.json" $((1024 * 1024))
step "nbdwire-perf summary" "$PERF" "$uri" --rw=randwrite --bs=4k --iodepth=1 --runtime=0.5 --offset=8m >"$T/summary.txt"
sed 's/^/    | /' "$T/summary.txt" >&2
for word in IOPS MiB/s p50 p99 p99.9 "client CPU" "per I/O" errors; do
    grep -q -- "$word" "$T/summary.txt" || fail "the summary does not show '$word'"
done

# 5. Failures exit 1.
case $MODE in
    nbdkit)
        esock=$T/nbdkit-error.sock
        bg nbdkit-error nbdkit --foreground --exit-with-parent --unix "$esock" --filter=error memory 1M \
            error=EIO error-pread-rate=100%
        wait_unix_socket "$esock" "$BG_PID"
        log "+ (must exit 1) nbdwire-perf against reads that fail with EIO"
        rc=0
        timeout 30 "$PERF" "nbd+unix:///?socket=$esock" --rw=randread --runtime=0.3 --json >"$T/eio.json" 2>"$T/eio.err" || rc=$?
        sed 's/^/    | /' "$T/eio.json" "$T/eio.err" >&2
        expect_eq "$rc" 1 "exit status with error replies"
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["errors"] > 0 and "NBD_EIO" in d["error"]' \
            "$T/eio.json" || fail "errors or the error message missing from the JSON"
        ;;
    nbdwire-server)
        log "+ (must exit 1) nbdwire-perf writes to a read-only export"
        rc=0
        timeout 30 "$PERF" "$(unix_uri ro)" --rw=randwrite --runtime=0.3 2>"$T/ro.err" || rc=$?
        sed 's/^/    | /' "$T/ro.err" >&2
        expect_eq "$rc" 1 "exit status for writes to a read-only export"
        grep -q "read-only" "$T/ro.err" || fail "stderr does not say the export is read-only"
        ;;
esac
step_fails "no server at the socket" "$PERF" "nbd+unix:///?socket=$T/none.sock" --runtime=0.3
grep -q "cannot connect" "$T/step.err" || fail "stderr does not say it cannot connect"
[ "$(timeout 10 "$PERF" "nbd+unix:///?socket=$T/none.sock" >/dev/null 2>&1; echo $?)" = 1 ] || fail "no server: exit status is not 1"

# 6. nbdkit: TCP on 127.0.0.1, the oldstyle handshake, and simple replies only.
if [ "$MODE" = nbdkit ]; then
    port=$(free_port)
    bg nbdkit-tcp nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$port" memory 8M
    for i in $(seq 200); do _tcp_listening "$port" && break; sleep 0.05; done
    _tcp_listening "$port" || fail "nbdkit does not listen on port $port"
    perf_json tcp "nbd://127.0.0.1:$port" --rw=randrw --verify --iodepth=8 --connections=2 --runtime=0.5
    check_json "$T/tcp.json" 4096
    osock=$T/nbdkit-old.sock
    bg nbdkit-old nbdkit --foreground --exit-with-parent --oldstyle --unix "$osock" memory 8M
    wait_unix_socket "$osock" "$BG_PID"
    perf_json oldstyle "nbd+unix:///?socket=$osock" --rw=randrw --verify --iodepth=8 --runtime=0.5
    check_json "$T/oldstyle.json" 4096
    expect_eq "$(json_get "$T/oldstyle.json" structured_replies)" false "structured replies under oldstyle"
    perf_json nosr "$uri" --rw=randread --verify --iodepth=8 --size=4m --bs=64k --runtime=0.5 --no-structured-replies
    check_json "$T/nosr.json" $bs
    expect_eq "$(json_get "$T/nosr.json" structured_replies)" false "structured replies with --no-structured-replies"
fi
log PASS
