# nbdwire-server under fio's nbd engine (libnbd): random reads and writes at queue depth 8 with
# crc32c verification of everything written.
. "$(dirname "$0")/lib.sh"

need_server
need_peer fio
step "fio --enghelp" fio --enghelp >"$T/engines.txt"
grep -qw nbd "$T/engines.txt" || fail "this fio has no nbd engine (fio --enghelp does not list it)"

start_server_unix disk=memory:64M
step "fio randrw with verify" fio --name=nbdwire-verify --ioengine=nbd \
    --uri="nbd+unix:///?socket=$SERVER_SOCK" --rw=randrw --bs=4k --size=64M --iodepth=8 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --runtime=20 >"$T/fio.out"
sed 's/^/    | /' "$T/fio.out" >&2
grep -q 'err= 0' "$T/fio.out" || fail "fio reports errors"
grep -Eq 'verify: (bad|failed)|verify failed' "$T/fio.out" && fail "fio reports verification failures"
stop_server

# With --busy-poll the server answers between polls instead of sleeping: the same checks at
# queue depth 1, and once fio is gone, an idle server must sleep again (a server that kept
# polling would use a whole CPU second per second).
start_server_unix --busy-poll 200 disk=memory:16M
step "fio randrw with verify, server polling" fio --name=nbdwire-verify-poll --ioengine=nbd \
    --uri="nbd+unix:///?socket=$SERVER_SOCK" --rw=randrw --bs=4k --size=16M --iodepth=1 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --runtime=5 >"$T/fio.out"
grep -q 'err= 0' "$T/fio.out" || fail "fio reports errors (server polling)"
grep -Eq 'verify: (bad|failed)|verify failed' "$T/fio.out" && fail "fio reports verification failures (server polling)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
before=$(cpu_ticks)
sleep 2
idle=$(( $(cpu_ticks) - before ))
hz=$(getconf CLK_TCK)
log "   idle server with --busy-poll 200: $idle ticks of CPU in 2 s (${hz} ticks/s)"
[ "$idle" -lt $((hz / 2)) ] || fail "an idle server with --busy-poll kept using the CPU ($idle ticks in 2 s)"
stop_server
log PASS
