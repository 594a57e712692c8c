# shellcheck shell=sh
# The block-device checks every kernel scenario runs, sourced by guest scenarios (vm.sh
# --file puts this file at /data/checks.sh):
#   . /data/checks.sh
#   device_checks /dev/nbdN LABEL    pattern written and read back, zeroing, discard, ext4
#   device_persisted /dev/nbdN LABEL what device_checks LABEL left is still there
# They need /data/pattern (a few MiB of random data), PAT_MIB (where the pattern goes) and
# FS_MIB (the ext4 file system's size, from offset 0); the device must hold PAT_MIB + 4 MiB.
# shellcheck disable=SC2034
MiB=1048576
ZERO_SHA=$(dd if=/dev/zero bs=$MiB count=1 2>/dev/null | sha256)

# _dev_sha DEV OFFSET_MIB COUNT_MIB: digest of that range of DEV
_dev_sha() { dd if="$1" bs=$MiB skip="$2" count="$3" 2>/dev/null | sha256; }
_q() { cat "/sys/block/${1#/dev/}/queue/$2" 2>/dev/null || echo '?'; }

device_checks() {
  _d=$1 _l=$2
  _pat_sha=$(sha256 /data/pattern)
  _pat_blocks=$(($(stat -c %s /data/pattern) / MiB))
  _zero=$((FS_MIB + 2)) _trim=$((FS_MIB + 4))
  echo "@@KTEST QUEUE $_l size=$(blockdev --getsize64 "$_d") logical_block=$(_q "$_d" logical_block_size)" \
       "max_sectors_kb=$(_q "$_d" max_sectors_kb) discard_max=$(_q "$_d" discard_max_bytes)" \
       "write_zeroes_max=$(_q "$_d" write_zeroes_max_bytes) write_cache=$(_q "$_d" write_cache) fua=$(_q "$_d" fua)"
  # Raw I/O: the pattern (FLUSH from conv=fsync), read back from the server.
  dd if=/data/pattern of="$_d" bs=$MiB seek="$PAT_MIB" conv=fsync 2>/dev/null || fail "dd pattern ($_l)"
  drop_caches "$_d"
  [ "$(_dev_sha "$_d" "$PAT_MIB" "$_pat_blocks")" = "$_pat_sha" ] || fail "pattern read back differs ($_l)"
  mark "PATTERN_OK $_l"
  # Zeroing (WRITE_ZEROES where the kernel sends it) over data, then a discard (TRIM).
  dd if=/data/pattern of="$_d" bs=$MiB seek=$_zero count=1 conv=fsync 2>/dev/null || fail "dd ($_l)"
  "$KTEST_SBIN"/blkdiscard -f -z -o $((_zero * MiB)) -l $MiB "$_d" || fail "blkdiscard -z ($_l)"
  drop_caches "$_d"
  [ "$(_dev_sha "$_d" $_zero 1)" = "$ZERO_SHA" ] || fail "zeroed MiB does not read back as zeroes ($_l)"
  [ "$(_q "$_d" discard_max_bytes)" != 0 ] || fail "the device takes no discards ($_l)"
  "$KTEST_SBIN"/blkdiscard -f -o $((_trim * MiB)) -l $MiB "$_d" || fail "blkdiscard ($_l)"
  mark "ZERO_TRIM_OK $_l"
  # ext4 on the first FS_MIB MiB (the pattern lies beyond it).
  "$KTEST_SBIN"/mke2fs -q -F -t ext4 "$_d" "${FS_MIB}M" || fail "mke2fs ($_l)"
  mount -t ext4 "$_d" /mnt || fail "mount ($_l)"
  dd if=/dev/urandom of=/mnt/data bs=$MiB count=2 2>/dev/null || fail "writing /mnt/data ($_l)"
  _sha=$(sha256 /mnt/data)
  sync
  umount /mnt || fail "umount ($_l)"
  "$KTEST_SBIN"/e2fsck -fn "$_d" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "e2fsck -fn ($_l)"; }
  echo "$_sha" >"/tmp/$_l.file_sha"
  mark "EXT4_OK $_l data_sha256=$_sha"
}

device_persisted() {
  _d=$1 _l=$2
  [ -f "/tmp/$_l.file_sha" ] || fail "device_persisted $_l: device_checks $_l never ran"
  [ "$(_dev_sha "$_d" "$PAT_MIB" $(($(stat -c %s /data/pattern) / MiB)))" = "$(sha256 /data/pattern)" ] ||
    fail "pattern lost ($_l)"
  "$KTEST_SBIN"/e2fsck -fn "$_d" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "e2fsck after reconnecting ($_l)"; }
  mount -t ext4 -o ro "$_d" /mnt || fail "mount -o ro ($_l)"
  _got=$(sha256 /mnt/data)
  umount /mnt || fail "umount ($_l)"
  [ "$_got" = "$(cat "/tmp/$_l.file_sha")" ] || fail "file changed ($_l)"
  mark "PERSISTED $_l"
}
