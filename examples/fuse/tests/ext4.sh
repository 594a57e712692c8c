# A file system on MOUNTPOINT/nbd: mkfs.ext4, files and directories written with debugfs,
# e2fsck -fn clean; then a fresh mount reads the same files back and e2fsck is still clean.
# Argument: the backend (see start_backend in lib.sh).
source "$(dirname "$0")/lib.sh"
need_peer mkfs.ext4 debugfs e2fsck

KIND=${1:?backend}
start_backend "$KIND" $((128 * 1024 * 1024))
mount_fuse "$URI"

step "mkfs.ext4" mkfs.ext4 -q -F -E nodiscard "$FILE"

rand_file "$T/big" $((5 * 1024 * 1024 + 321))
rand_file "$T/mid" $((300 * 1024))
printf 'hello from nbdwire-fuse\n' >"$T/small"
cat >"$T/cmds" <<CMDS
mkdir dir
mkdir dir/sub
write $T/big dir/big
write $T/mid dir/sub/mid
write $T/small small
CMDS
for i in $(seq 20); do echo "write $T/small dir/f$i"; done >>"$T/cmds"
step "debugfs -w" debugfs -w -f "$T/cmds" "$FILE"
step "e2fsck -fn" e2fsck -fn "$FILE"

# check_files: dumps every file back with debugfs and compares.
check_files() {
    rm -rf "$T/out"
    mkdir "$T/out"
    step "debugfs dump" debugfs -R "rdump / $T/out" "$FILE"
    same_file "$T/big" "$T/out/dir/big" "dir/big"
    same_file "$T/mid" "$T/out/dir/sub/mid" "dir/sub/mid"
    same_file "$T/small" "$T/out/small" "small"
    local i
    for i in $(seq 20); do cmp -s "$T/small" "$T/out/dir/f$i" || fail "dir/f$i differs"; done
    log "   dir/f1..f20: identical"
}
check_files
unmount_fuse

log "a fresh mount sees the same file system"
mount_fuse "$URI"
step "e2fsck -fn (fresh mount)" e2fsck -fn "$FILE"
check_files
unmount_fuse

log "PASS"
