# shellcheck shell=sh
# Guest scenario: the kernel's NBD client, configured by Debian's nbd-client, against the
# server on the host. For each mode (netlink, ioctl = -L) and each export, in that order:
# connect /dev/nbd0 with -C $CONNS, check the size, check what the previous mode left on the
# export (pattern, ext4 image and file), write the pattern with dd and read it back after
# dropping the caches, and again with O_DIRECT from each CPU in turn, zero a MiB (blkdiscard -z) and read zeroes back, discard a MiB,
# mkfs.ext4 on the first $FS_MIB MiB, mount, write /data/filedata to a file, sync, umount,
# e2fsck -fn, mount read-only after dropping the caches and compare the file, and
# nbd-client -d.
# Settings (vm.sh --env): PORT, EXPORTS ("mem file"), MODES ("netlink ioctl"), CONNS, SIZE
# (bytes each export must show), FS_MIB, PAT_MIB (where the pattern goes); vm.sh --file gives
# /data/pattern and /data/filedata.
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. /etc/ktest/lib.sh
set -u
DEV=/dev/nbd0
MiB=1048576
PAT=/data/pattern
X=$KTEST_SBIN
# vm.sh --env gives these
: "${PORT:?}" "${EXPORTS:?}" "${MODES:?}" "${CONNS:?}" "${SIZE:?}" "${FS_MIB:?}" "${PAT_MIB:?}"
[ -f "$PAT" ] || fail "no $PAT"
PAT_SHA=$(sha256 "$PAT")
PAT_LEN=$(stat -c %s "$PAT")
PAT_BLOCKS=$((PAT_LEN / MiB))
FILEDATA=/data/filedata
[ -f "$FILEDATA" ] || fail "no $FILEDATA"
FILE_SHA=$(sha256 "$FILEDATA")
ZERO_MIB=$((FS_MIB + 2))
TRIM_MIB=$((FS_MIB + 4))
ZERO_SHA=$(dd if=/dev/zero bs=$MiB count=1 2>/dev/null | sha256)
# dev_sha OFFSET_MIB COUNT_MIB: digest of that range of $DEV
dev_sha() { dd if=$DEV bs=$MiB skip="$1" count="$2" 2>/dev/null | sha256; }
q() { cat "/sys/block/nbd0/queue/$1" 2>/dev/null || echo '?'; }

for mode in $MODES; do
  for exp in $EXPORTS; do
    set -- "$KTEST_HOST" "$PORT" $DEV -N "$exp" -C "$CONNS"
    [ "$mode" = ioctl ] && set -- "$@" -L
    mark "CONNECT $mode $exp"
    echo "+ nbd-client $*"
    "$X"/nbd-client "$@" || fail "nbd-client $* failed"
    wait_nbd_size $DEV connected || fail "$DEV has no size after nbd-client ($mode, $exp)"
    size=$(blockdev --getsize64 $DEV)
    [ "$size" = "$SIZE" ] || fail "$DEV is $size bytes, the export $SIZE ($mode, $exp)"
    echo "@@KTEST QUEUE $mode $exp size=$size logical_block=$(q logical_block_size)" \
         "max_sectors_kb=$(q max_sectors_kb) discard_max=$(q discard_max_bytes)" \
         "write_zeroes_max=$(q write_zeroes_max_bytes) write_cache=$(q write_cache) fua=$(q fua)"

    # What the previous mode wrote to this export must still be there.
    if [ -f "/tmp/$exp.file_sha" ]; then
      [ "$(dev_sha "$PAT_MIB" "$PAT_BLOCKS")" = "$PAT_SHA" ] || fail "pattern lost after reconnecting ($mode, $exp)"
      "$X"/e2fsck -fn $DEV >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "e2fsck after reconnecting ($mode, $exp)"; }
      mount -t ext4 -o ro $DEV /mnt || fail "mount -o ro after reconnecting ($mode, $exp)"
      got=$(sha256 /mnt/data)
      umount /mnt || fail "umount ($mode, $exp)"
      [ "$got" = "$(cat "/tmp/$exp.file_sha")" ] || fail "file changed after reconnecting ($mode, $exp)"
      mark "PERSISTED $mode $exp"
    fi

    # Raw I/O: the pattern (FLUSH from conv=fsync), read back from the server.
    dd if="$PAT" of=$DEV bs=$MiB seek="$PAT_MIB" conv=fsync 2>/dev/null || fail "dd pattern ($mode, $exp)"
    drop_caches $DEV
    [ "$(dev_sha "$PAT_MIB" "$PAT_BLOCKS")" = "$PAT_SHA" ] || fail "pattern read back differs ($mode, $exp)"
    # O_DIRECT reads pinned to each CPU: blk-mq maps CPU i to hardware queue i, which nbd
    # maps to connection i, so every connection of -C carries requests.
    cpu=0
    while [ $cpu -lt "$(nproc)" ]; do
      got=$(taskset "$(printf %x $((1 << cpu)))" dd if=$DEV bs=$MiB skip="$PAT_MIB" count="$PAT_BLOCKS" \
            iflag=direct 2>/dev/null | sha256)
      [ "$got" = "$PAT_SHA" ] || fail "O_DIRECT read of the pattern on CPU $cpu differs ($mode, $exp)"
      cpu=$((cpu + 1))
    done
    mark "PATTERN_OK $mode $exp"
    # Zeroing (WRITE_ZEROES where the kernel sends it) over data, then a discard (TRIM).
    dd if="$PAT" of=$DEV bs=$MiB seek=$ZERO_MIB count=1 conv=fsync 2>/dev/null || fail "dd ($mode, $exp)"
    "$X"/blkdiscard -f -z -o $((ZERO_MIB * MiB)) -l $MiB $DEV || fail "blkdiscard -z ($mode, $exp)"
    drop_caches $DEV
    [ "$(dev_sha $ZERO_MIB 1)" = "$ZERO_SHA" ] || fail "zeroed MiB does not read back as zeroes ($mode, $exp)"
    [ "$(q discard_max_bytes)" != 0 ] || fail "the device takes no discards ($mode, $exp)"
    "$X"/blkdiscard -f -o $((TRIM_MIB * MiB)) -l $MiB $DEV || fail "blkdiscard ($mode, $exp)"
    mark "ZERO_TRIM_OK $mode $exp"

    # ext4 on the first FS_MIB MiB (the pattern lies beyond it).
    "$X"/mke2fs -q -F -t ext4 $DEV "${FS_MIB}M" || fail "mke2fs ($mode, $exp)"
    mount -t ext4 $DEV /mnt || fail "mount ($mode, $exp)"
    dd if="$FILEDATA" of=/mnt/data bs=$MiB 2>/dev/null || fail "writing /mnt/data ($mode, $exp)"
    sync
    umount /mnt || fail "umount ($mode, $exp)"
    "$X"/e2fsck -fn $DEV >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "e2fsck -fn ($mode, $exp)"; }
    drop_caches $DEV
    mount -t ext4 -o ro $DEV /mnt || fail "mount -o ro ($mode, $exp)"
    sha=$(sha256 /mnt/data)
    umount /mnt || fail "umount ($mode, $exp)"
    [ "$sha" = "$FILE_SHA" ] || fail "/mnt/data read back differs ($mode, $exp)"
    echo "$sha" >"/tmp/$exp.file_sha"
    mark "EXT4_OK $mode $exp data_sha256=$sha"

    "$X"/nbd-client -d $DEV || fail "nbd-client -d ($mode, $exp)"
    wait_nbd_size $DEV disconnected || fail "$DEV still has a size after nbd-client -d ($mode, $exp)"
    mark "DISCONNECTED $mode $exp"
  done
done
