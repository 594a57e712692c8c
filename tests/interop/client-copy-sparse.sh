# nbdwire-client copy FILE URI with a sparse source file, into an nbdkit memory export that
# holds other data first: the holes must become zeroes in the export (WRITE_ZEROES), be
# found with SEEK_DATA/SEEK_HOLE instead of read, and only the data runs go as WRITE. Zeroes
# that the file holds as data go as WRITE_ZEROES too, and data that starts with a zero block
# still goes as WRITE. nbdkit's log filter records every request, so the test sees which
# ones were sent. Then copy URI FILE: the sparse export back down (holes kept), a dense one
# over several connections, and one from a server that refuses the extra connections.
. "$(dirname "$0")/lib.sh"
need_client
need_peer nbdkit nbdcopy

size=$((48 * 1024 * 1024 + 12345))
src=$T/sparse.img
truncate -s "$size" "$src"
head -c $((1024 * 1024)) /dev/urandom | dd of="$src" conv=notrunc status=none
printf 'tail' | dd of="$src" bs=1 seek=$((9 * 1024 * 1024 + 100)) conv=notrunc status=none
head -c $((2 * 1024 * 1024)) /dev/urandom | dd of="$src" bs=1M seek=20 conv=notrunc status=none
head -c 12345 /dev/urandom | dd of="$src" bs=1 seek=$((48 * 1024 * 1024)) conv=notrunc status=none
# 4 MiB of zeroes written as data (allocated, so SEEK_DATA reports them), then at 36 MiB a
# run whose first 8 KiB are zeroes and the next 1 MiB random.
dd if=/dev/zero of="$src" bs=1M seek=30 count=4 conv=notrunc status=none
dd if=/dev/zero of="$src" bs=8K seek=$((36 * 128)) count=1 conv=notrunc status=none
head -c $((1024 * 1024)) /dev/urandom | dd of="$src" bs=8K seek=$((36 * 128 + 1)) conv=notrunc status=none
allocated=$(( $(stat -c %b "$src") * $(stat -c %B "$src") ))
[ "$allocated" -lt $((12 * 1024 * 1024)) ] || fail "the file system under $T does not keep holes ($allocated bytes allocated)"

sock=$T/nbdkit.sock
uri="nbd+unix:///?socket=$sock"
start_nbdkit "$sock" --filter=log memory "$size" logfile="$T/requests.log"
rand_file "$T/base" "$size"
step "nbdcopy fills the export with other data" nbdcopy "$T/base" "$uri"
: >"$T/requests.log"

client copy "$src" "$uri"
step "nbdcopy reads the export" nbdcopy "$uri" "$T/actual"
same_file "$src" "$T/actual" "export contents after the sparse copy"

# Only the data runs (whole pages around them) are written; the holes and the 4 MiB of zeroes
# are zeroed: five holes, and the zeroes in two requests of at most 2 MiB.
written=0
while read -r count; do written=$((written + count)); done < <(sed -n 's/.* Write .*count=\(0x[0-9a-f]*\).*/\1/p' "$T/requests.log")
zeroes=$(grep -c ' Zero ' "$T/requests.log" || true)
log "   WRITE bytes: $written, WRITE_ZEROES requests: $zeroes"
[ "$written" -le $((4 * 1024 * 1024 + 8192 + 4096 + 16384)) ] || fail "$written bytes went as WRITE: zeroes were sent as data"
[ "$written" -ge $((4 * 1024 * 1024 + 8192 + 4 + 12345)) ] || fail "only $written bytes went as WRITE: data is missing"
[ "$zeroes" -ge 7 ] || fail "expected the five holes and the 4 MiB of zeroes as WRITE_ZEROES, saw $zeroes"
# And back down into a file: the same bytes, holes kept.
client copy "$uri" "$T/down.img"
same_file "$src" "$T/down.img" "file copied down"
allocated=$(( $(stat -c %b "$T/down.img") * $(stat -c %B "$T/down.img") ))
[ "$allocated" -lt $((16 * 1024 * 1024)) ] || fail "the copy down is not sparse ($allocated bytes allocated)"

# A dense 64 MiB file copied up over three connections and down again (nbdkit memory allows
# multi-conn): the WRITEs and the READs spread over more than one, and the data is whole.
# With --connections 1, one.
dense=$T/dense.img
rand_file "$dense" $((64 * 1024 * 1024))
# Each READ is held 50 ms (delay filter), so the first connection cannot take every slice
# before the others have opened.
start_nbdkit "$T/dense.sock" --filter=log --filter=delay memory 64M logfile="$T/dense.log" delay-read=50ms
duri="nbd+unix:///?socket=$T/dense.sock"
client copy "$dense" "$duri" --connections 3
writers=$(sed -n 's/.*connection=\([0-9]*\) Write .*/\1/p' "$T/dense.log" | sort -u | wc -l)
log "   copy up with --connections 3: WRITEs came on $writers connection(s)"
[ "$writers" -ge 2 ] || fail "the copy up used $writers connection(s) for its WRITEs, not several"
for n in 3 1; do
    : >"$T/dense.log"
    client copy "$duri" "$T/dense.down" --connections "$n"
    same_file "$dense" "$T/dense.down" "dense export copied down with --connections $n"
    readers=$(sed -n 's/.*connection=\([0-9]*\) Read .*/\1/p' "$T/dense.log" | sort -u | wc -l)
    log "   --connections $n: READs came on $readers connection(s)"
    if [ "$n" = 1 ]; then
        expect_eq "$readers" 1 "connections used with --connections 1"
    else
        [ "$readers" -ge 2 ] || fail "the copy down used $readers connection(s) for its READs, not several"
    fi
done

# A server that advertises multi-conn but takes one client at a time (nbdkit's limit filter
# closes the others): the copy goes on with the connection it has.
if nbdkit --filter=limit null --run true >/dev/null 2>&1; then
    cp "$dense" "$T/limit.img"
    start_nbdkit "$T/limit.sock" --filter=limit file "$T/limit.img" limit=1
    luri="nbd+unix:///?socket=$T/limit.sock"
    client copy "$luri" "$T/limit.down" --connections 3
    grep -q 'copying without one of the extra connections' "$T/step.err" ||
        fail "no note about the connections the server refused (copy down)"
    same_file "$dense" "$T/limit.down" "copy down from a server that takes one connection"
    # Up: the parts meant for the refused connections are written by the one that opened.
    rand_file "$T/other.img" $((64 * 1024 * 1024))
    client copy "$T/other.img" "$luri" --connections 3
    grep -q 'copying without one of the extra connections' "$T/step.err" ||
        fail "no note about the connections the server refused (copy up)"
    client copy "$luri" "$T/other.down" --connections 1
    same_file "$T/other.img" "$T/other.down" "copy up to a server that takes one connection"
else
    log "   (nbdkit has no limit filter here: that part is skipped)"
fi
log PASS
