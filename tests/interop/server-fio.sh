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
log PASS
