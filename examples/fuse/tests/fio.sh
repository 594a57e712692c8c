# fio with the psync engine and verification on MOUNTPOINT/nbd: one job through the page cache,
# then four jobs at once with O_DIRECT and mixed block sizes on disjoint regions.
# Argument: the backend (see start_backend in lib.sh).
source "$(dirname "$0")/lib.sh"
need_peer fio

KIND=${1:?backend}
start_backend "$KIND" $((64 * 1024 * 1024))
mount_fuse "$URI"

common=(--ioengine=psync --filename="$FILE" --verify=crc32c --do_verify=1 --verify_fatal=1
    --output-format=normal)
step "fio buffered" fio --name=buffered "${common[@]}" --rw=randwrite --bs=4k --size=16M
step "fio direct, 4 jobs" fio --name=direct "${common[@]}" --direct=1 --rw=randwrite \
    --bsrange=4k-256k --offset=16M --size=8M --offset_increment=8M --numjobs=4 --group_reporting
unmount_fuse

log "PASS"
