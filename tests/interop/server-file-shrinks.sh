# nbdwire-server with a file export whose file shrinks while it is served. Large READs are sent
# with sendfile() after their reply header: when the file cannot supply the bytes any more the
# server must close the connection rather than send a reply with missing or wrong data. Small
# READs are read first and get an error reply. Either way the client reports a failure and
# writes no wrong bytes, and the server keeps serving other clients.
. "$(dirname "$0")/lib.sh"
need_server
need_client

rand_file "$T/disk.img" $((4 * 1024 * 1024))
cp "$T/disk.img" "$T/orig.img"
rand_file "$T/other.img" $((1024 * 1024))
start_server_unix disk=file:"$T/disk.img" other=file:"$T/other.img"
uri=$(unix_uri disk)

# Before: both paths return the file's bytes.
client read "$uri" --offset 1048576 --length 1048576 >"$T/big.out"
slice "$T/orig.img" 1048576 1048576 | cmp - "$T/big.out" >&2 || fail "1 MiB read before the file shrank differs"
client read "$uri" --offset 8192 --length 4096 >"$T/small.out"
slice "$T/orig.img" 8192 4096 | cmp - "$T/small.out" >&2 || fail "4 KiB read before the file shrank differs"

truncate -s 65536 "$T/disk.img"

# read_to FILE ARGS...: nbdwire-client read ARGS with its standard output in FILE.
read_to=(bash -c 'out=$1; shift; exec "$0" read "$@" >"$out"' "$NBDWIRE_CLIENT")
step_fails "1 MiB read past the file's new end (sendfile path)" \
    "${read_to[@]}" "$T/big-fail.out" "$uri" --offset 1048576 --length 1048576
[ ! -s "$T/big-fail.out" ] || fail "the failed 1 MiB read wrote $(stat -c %s "$T/big-fail.out") bytes"
step_fails "4 KiB read past the file's new end (pread path)" \
    "${read_to[@]}" "$T/small-fail.out" "$uri" --offset 1048576 --length 4096
[ ! -s "$T/small-fail.out" ] || fail "the failed 4 KiB read wrote $(stat -c %s "$T/small-fail.out") bytes"
grep -q "NBD_EIO" "$T/step.err" || fail "the 4 KiB read did not fail with NBD_EIO"

# The server still serves: the other export reads back whole.
client read "$(unix_uri other)" >"$T/other.out"
same_file "$T/other.img" "$T/other.out" "other export after the failures"
grep -q "sendfile: the file ended" "$SERVER_ERR" || fail "the server did not log why it closed the connection"
stop_server
log PASS
