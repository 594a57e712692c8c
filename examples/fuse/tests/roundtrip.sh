# dd/cmp round trips through MOUNTPOINT/nbd, checked against an independent client (nbdcopy,
# qemu-io): unaligned writes, writes by another client, fsync -> FLUSH, fallocate PUNCH_HOLE ->
# TRIM and ZERO_RANGE -> WRITE_ZEROES, the end of the export, read-only mounts, daemon mode,
# and NBD_CMD_DISC on every unmount.
# Argument: the backend (nbdwire, nbdkit, nbdkit-max4k; see start_backend in lib.sh).
source "$(dirname "$0")/lib.sh"

KIND=${1:?backend}
SIZE=$((64 * 1024 * 1024))
start_backend "$KIND" "$SIZE"
mount_fuse "$URI"

expect_eq "$(stat -c %s "$FILE")" "$SIZE" "size of $FILE"
expect_eq "$(ls -A "$MNT")" "nbd" "directory listing"

# The expected image, kept beside the export.
EXP=$T/expected
truncate -s "$SIZE" "$EXP"

log "unaligned write through the mount (3 MiB + 123 bytes at 1 MiB + 517)"
rand_file "$T/a" $((3 * 1024 * 1024 + 123))
step "dd write" dd if="$T/a" of="$FILE" bs=1M seek=$((1024 * 1024 + 517)) oflag=seek_bytes conv=notrunc,fsync status=none
splice_into "$EXP" $((1024 * 1024 + 517)) "$T/a"
step "cmp (page cache)" cmp "$FILE" "$EXP"
step "dd read O_DIRECT" dd if="$FILE" of="$T/direct" bs=256K iflag=direct status=none
same_file "$EXP" "$T/direct" "O_DIRECT read of the whole file"
export_dump "$T/dump1"
same_file "$EXP" "$T/dump1" "export as nbdcopy sees it"

log "small writes at odd offsets and lengths"
for off in 0 1 4095 4097 65535 $((SIZE - 7)); do
    rand_file "$T/s" 7
    step "dd small write" dd if="$T/s" of="$FILE" bs=7 seek="$off" oflag=seek_bytes conv=notrunc status=none
    splice_into "$EXP" "$off" "$T/s"
done
step "cmp after small writes" cmp "$FILE" "$EXP"

log "a write by another client shows up on the next open"
need_peer qemu-io
step "qemu-io write" qemu-io -f raw "$URI" -c "write -P 0x5a 10M 256K"
pattern_file 90 $((256 * 1024)) >"$T/p"
splice_into "$EXP" $((10 * 1024 * 1024)) "$T/p"
step "cmp after qemu-io write" cmp "$FILE" "$EXP"

log "fsync is NBD_CMD_FLUSH"
flushes=0
is_nbdkit && flushes=$(nbdkit_count 'debug: memory: flush')
step "sync FILE" sync "$FILE"
if is_nbdkit; then
    [ "$(nbdkit_count 'debug: memory: flush')" -gt "$flushes" ] || fail "fsync sent no NBD_CMD_FLUSH"
    log "   nbdkit served a FLUSH"
fi

log "fallocate: ZERO_RANGE is WRITE_ZEROES, PUNCH_HOLE is TRIM"
step "fallocate --zero-range" fallocate -z -o $((1024 * 1024 + 4096)) -l 100000 "$FILE"
zero_into "$EXP" $((1024 * 1024 + 4096)) 100000
step "fallocate --punch-hole" fallocate -p -o $((2 * 1024 * 1024)) -l $((512 * 1024)) "$FILE"
zero_into "$EXP" $((2 * 1024 * 1024)) $((512 * 1024))
if is_nbdkit; then
    [ "$(nbdkit_count 'debug: memory: zero')" -ge 1 ] || fail "ZERO_RANGE sent no NBD_CMD_WRITE_ZEROES"
    [ "$(nbdkit_count 'debug: memory: trim')" -ge 1 ] || fail "PUNCH_HOLE sent no NBD_CMD_TRIM"
    log "   nbdkit served WRITE_ZEROES and TRIM"
fi
step "cmp after fallocate" cmp "$FILE" "$EXP"
export_dump "$T/dump2"
same_file "$EXP" "$T/dump2" "export after fallocate"

log "the end of the export"
step "dd read at the end" dd if="$FILE" of="$T/tail" bs=4096 skip=$((SIZE / 4096)) status=none
expect_eq "$(stat -c %s "$T/tail")" 0 "bytes read at the end"
step_fails "write past the end" dd if="$T/s" of="$FILE" bs=7 seek="$SIZE" oflag=seek_bytes conv=notrunc status=none
grep -q 'No space left on device' "$T/step.err" || fail "write past the end: expected ENOSPC"
step_fails "truncate" truncate -s 1M "$FILE"
expect_eq "$(stat -c %s "$FILE")" "$SIZE" "size after refused truncate"

unmount_fuse

log "read-only mount, with --debug"
mount_fuse "$URI" --read-only --debug
step "cmp read-only" cmp "$FILE" "$EXP"
step_fails "write to read-only mount" dd if="$T/s" of="$FILE" bs=7 conv=notrunc status=none
grep -q 'Read-only file system' "$T/step.err" || fail "write to a read-only mount: expected EROFS"
unmount_fuse
# --debug: the handshake's machine up to GO's ACK, then the I/O thread's from the hand-over
# (READ data) to the DISC of the unmount, one "FROM -TRIGGER-> TO" line each.
for move in 'awaiting_greeting -newstyle_greeting-> negotiating' 'awaiting_option_reply -go_acked-> transmission' \
    'read_data -read_data_done-> transmission' 'transmission -disc_sent-> disconnecting'; do
    grep -qxF "nbdwire-fuse: debug: $move" "$FUSE_ERR" || fail "--debug: no '$move' in the log"
done
if grep -v '^nbdwire-fuse: debug: [a-z_]* -[a-z_]*-> [a-z_]*$' "$FUSE_ERR" | grep -q 'debug'; then
    fail "--debug: a malformed line"
fi
log "   --debug logged $(grep -c '^nbdwire-fuse: debug: ' "$FUSE_ERR") moves"

log "daemon mode"
mount_fuse_daemon "$URI"
rand_file "$T/d" $((512 * 1024))
step "dd write (daemon)" dd if="$T/d" of="$FILE" bs=64K seek=$((20 * 1024 * 1024)) oflag=seek_bytes conv=notrunc,fsync status=none
splice_into "$EXP" $((20 * 1024 * 1024)) "$T/d"
step "cmp (daemon)" cmp "$FILE" "$EXP"
unmount_fuse
export_dump "$T/dump3"
same_file "$EXP" "$T/dump3" "export after the daemon's writes"

log "PASS"
