# Several readers and writers at once on MOUNTPOINT/nbd: four readers check a prefilled region
# while four writers fill disjoint regions, all with O_DIRECT, then everything is checked through
# the mount and through nbdcopy. On nbdkit, whose log filter records when each request starts and
# ends (and a delay filter keeps each in flight a while), more than one request must have been
# in flight at once on the single connection.
# Argument: the backend (see start_backend in lib.sh).
source "$(dirname "$0")/lib.sh"

KIND=${1:?backend}
SIZE=$((64 * 1024 * 1024))
MIB=$((1024 * 1024))
if [ "$KIND" = nbdkit ]; then
    start_backend nbdkit "$SIZE" --filter=log --filter=delay logfile="$T/requests.log" \
        delay-read=5ms delay-write=5ms
else
    start_backend "$KIND" "$SIZE"
fi
mount_fuse "$URI"

EXP=$T/expected
truncate -s "$SIZE" "$EXP"
rand_file "$T/pre" $((16 * MIB))
step "prefill" dd if="$T/pre" of="$FILE" bs=1M oflag=direct conv=notrunc status=none
splice_into "$EXP" 0 "$T/pre"

log "4 readers and 4 writers at once"
pids=()
for i in 0 1 2 3; do
    dd if="$FILE" of="$T/read$i" bs=128K iflag=direct,skip_bytes,count_bytes \
        skip=$((i * 4 * MIB)) count=$((4 * MIB)) status=none 2>"$T/read$i.err" &
    pids+=($!)
    rand_file "$T/w$i" $((4 * MIB))
done
for i in 0 1 2 3; do
    dd if="$T/w$i" of="$FILE" bs=256K seek=$(((16 + 4 * i) * MIB)) oflag=direct,seek_bytes conv=notrunc \
        status=none 2>"$T/write$i.err" &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    rc=0
    timeout 60 tail --pid="${pids[$i]}" -f /dev/null || fail "reader/writer $i did not finish within 60 s"
    wait "${pids[$i]}" || rc=$?
    [ "$rc" -eq 0 ] || { cat "$T"/read*.err "$T"/write*.err >&2; fail "reader/writer $i failed ($rc)"; }
done
for i in 0 1 2 3; do
    slice "$T/pre" $((i * 4 * MIB)) $((4 * MIB)) >"$T/read$i.expected"
    same_file "$T/read$i.expected" "$T/read$i" "reader $i"
    splice_into "$EXP" $(((16 + 4 * i) * MIB)) "$T/w$i"
done
step "cmp through the mount" cmp "$FILE" "$EXP"
export_dump "$T/dump"
same_file "$EXP" "$T/dump" "export after concurrent writes"

if [ "$KIND" = nbdkit ]; then
    # Log lines: "connection=N Read id=I ..." when a request starts, "...Read id=I return=..."
    # when it ends.
    most=$(awk '/connection=[0-9]+ (Read|Write) id=/ { n++; if (n > m) m = n }
                /\.\.\.(Read|Write) id=/ { n-- }
                END { print m + 0 }' "$T/requests.log")
    log "   most requests in flight at once: $most"
    [ "$most" -gt 1 ] || fail "requests were sent one at a time (at most $most in flight)"
fi
unmount_fuse

log "PASS"
