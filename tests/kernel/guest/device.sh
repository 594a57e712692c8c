# shellcheck shell=sh
# Guest scenario: nbdwire-server --device in the guest serves a memory and a file export to
# the guest's own kernel as /dev/nbd2, through netlink and through --ioctl: the device checks
# (checks.sh), then SIGTERM: the server disconnects the device, answers what the kernel sent,
# flushes and exits 0; its -v line counts FLUSH and FUA. The file export is checked again
# after the server is gone (pattern, e2fsck -fn, the file in the ext4 image).
# Settings (vm.sh --env): SIZE, FS_MIB, PAT_MIB; /data/pattern, /data/checks.sh;
# /usr/local/bin/nbdwire-server.
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. /etc/ktest/lib.sh
# shellcheck source=SCRIPTDIR/checks.sh
. /data/checks.sh
set -u
: "${SIZE:?}" "${FS_MIB:?}" "${PAT_MIB:?}"
S=/usr/local/bin/nbdwire-server
DEV=/dev/nbd2
truncate -s "$SIZE" /tmp/disk.img

for backend in memory file; do
  for mode in netlink ioctl; do
    l=$backend-$mode
    if [ $backend = memory ]; then spec=disk=memory:$SIZE; else spec=disk=file:/tmp/disk.img; fi
    set -- -v --device $DEV "$spec"
    [ $mode = ioctl ] && set -- --ioctl "$@"
    mark "SERVE $l"
    echo "+ nbdwire-server $*"
    "$S" "$@" >/tmp/server.out 2>/tmp/server.log &
    pid=$!
    wait_nbd_size $DEV connected || { cat /tmp/server.out /tmp/server.log; fail "$DEV has no size ($l)"; }
    [ "$(blockdev --getsize64 $DEV)" = "$SIZE" ] || fail "$DEV is $(blockdev --getsize64 $DEV) bytes, not $SIZE ($l)"
    grep -q "serving export 'disk' as $DEV" /tmp/server.out || fail "no start-up line ($l)"
    # The file export keeps what the previous mode wrote; the memory export starts empty.
    [ $backend = file ] && [ $mode = ioctl ] && device_persisted $DEV file
    device_checks $DEV $backend
    kill -TERM $pid
    rc=0
    wait $pid || rc=$?
    cat /tmp/server.out /tmp/server.log
    [ $rc = 0 ] || fail "nbdwire-server exited with $rc after SIGTERM ($l)"
    wait_nbd_size $DEV disconnected || fail "$DEV still has a size after the server stopped ($l)"
    line=$(grep 'closed after' /tmp/server.log) || fail "no closing line ($l)"
    for k in READ WRITE FLUSH FUA TRIM DISC; do
      echo "$line" | grep -q " $k=[1-9]" || fail "the kernel sent no $k ($l): $line"
    done
    grep -q "shutting down: disconnecting $DEV" /tmp/server.log || fail "no shutdown line ($l)"
    mark "STOPPED $l"
  done
done

# The file as the server left it: everything reached it.
[ "$(dd if=/tmp/disk.img bs=$MiB skip="$PAT_MIB" count=4 2>/dev/null | sha256)" = "$(sha256 /data/pattern)" ] ||
  fail "the file holds no pattern after the server stopped"
"$KTEST_SBIN"/e2fsck -fn /tmp/disk.img >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "e2fsck -fn of the file"; }
mark "FILE_OK"
