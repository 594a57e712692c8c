# shellcheck shell=sh
# Guest scenario: nbdwire-client attach/detach/devices against servers on the host.
#  1. nbdwire-server's memory export (netlink, then --ioctl), its file export and nbdkit's
#     memory plugin (netlink), each with --connections 2: the device checks (checks.sh),
#     `devices` while attached, detach.
#  2. nbdwire-server in newstyle and in oldstyle: attach (the handshake styles the kernel can
#     carry), read back what the host put there, detach.
#  3. --persist --timeout 5 against a file export the host kills (SIGKILL) and restarts once
#     the guest says PERSIST_IO_START: 1 MiB direct writes go on through the restart, every
#     byte reads back, the device is still attached, detach ends the background process.
# Settings (vm.sh --env): PORT, NBDKIT_PORT, NEWSTYLE_PORT, OLDSTYLE_PORT, PERSIST_PORT,
# SIZE, FS_MIB, PAT_MIB; /data/pattern, /data/checks.sh; /usr/local/bin/nbdwire-client.
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. /etc/ktest/lib.sh
# shellcheck source=SCRIPTDIR/checks.sh
. /data/checks.sh
set -u
: "${PORT:?}" "${NBDKIT_PORT:?}" "${NEWSTYLE_PORT:?}" "${OLDSTYLE_PORT:?}" "${PERSIST_PORT:?}" "${SIZE:?}" "${FS_MIB:?}" "${PAT_MIB:?}"
C=/usr/local/bin/nbdwire-client
H=$KTEST_HOST
DEV=/dev/nbd0

# attach_checked LABEL URI ATTACH-OPTIONS...: attach, check size and `devices`, run the checks
attach_checked() {
  _l=$1 _u=$2
  shift 2
  mark "ATTACH $_l"
  echo "+ nbdwire-client attach $_u $DEV $*"
  "$C" attach "$_u" $DEV "$@" || fail "attach $_l"
  wait_nbd_size $DEV connected || fail "$DEV has no size after attach ($_l)"
  [ "$(blockdev --getsize64 $DEV)" = "$SIZE" ] || fail "$DEV is $(blockdev --getsize64 $DEV) bytes, not $SIZE ($_l)"
  "$C" devices >/tmp/devices.out || fail "devices ($_l)"
  cat /tmp/devices.out
  # netlink names the URI as the backend; the ioctl interface has the background process
  case " $* " in
    *" --ioctl "*) _b="(ioctl, pid $(cat /sys/block/nbd0/pid))" ;;
    *) _b=$_u ;;
  esac
  grep -qF "$_b" /tmp/devices.out && grep -q "^$DEV  *connected  *$SIZE bytes  " /tmp/devices.out ||
    fail "devices does not show $DEV connected ($_b)"
  "$C" devices --json | grep -q "\"device\": \"$DEV\", \"connected\": true, \"size\": $SIZE" || fail "devices --json ($_l)"
}
detach_checked() {
  "$C" detach $DEV || fail "detach ($1)"
  wait_nbd_size $DEV disconnected || fail "$DEV still has a size after detach ($1)"
  "$C" devices | grep -q "^$DEV  *disconnected" || fail "devices does not show $DEV disconnected ($1)"
  mark "DETACHED $1"
}

# 1. the device checks, per server and interface
attach_checked nbdwire-mem-netlink "nbd://$H:$PORT/mem" --connections 2
device_checks $DEV mem
detach_checked nbdwire-mem-netlink
attach_checked nbdwire-mem-ioctl "nbd://$H:$PORT/mem" --connections 2 --ioctl
device_persisted $DEV mem
device_checks $DEV mem
detach_checked nbdwire-mem-ioctl
attach_checked nbdwire-file-netlink "nbd://$H:$PORT/file" --connections 2
device_checks $DEV file
detach_checked nbdwire-file-netlink
attach_checked nbdkit-netlink "nbd://$H:$NBDKIT_PORT/" --connections 2
device_checks $DEV nbdkit
detach_checked nbdkit-netlink

# 2. newstyle and oldstyle servers: the host wrote the pattern at PAT_MIB
for style in newstyle oldstyle; do
  if [ $style = newstyle ]; then p=$NEWSTYLE_PORT; else p=$OLDSTYLE_PORT; fi
  "$C" attach "nbd://$H:$p/" $DEV --read-only || fail "attach ($style)"
  wait_nbd_size $DEV connected || fail "$DEV has no size after attach ($style)"
  [ "$(_dev_sha $DEV "$PAT_MIB" $(($(stat -c %s /data/pattern) / MiB)))" = "$(sha256 /data/pattern)" ] ||
    fail "the host's pattern does not read back ($style)"
  [ "$(blockdev --getro $DEV)" = 1 ] || fail "--read-only device is writable ($style)"
  detach_checked "$style"
done

# 3. --persist through a server restart
head -c $((32 * MiB)) /dev/urandom >/tmp/big
"$C" attach "nbd://$H:$PERSIST_PORT/" $DEV --persist --timeout 5 2>/tmp/persist.log || fail "attach --persist"
wait_nbd_size $DEV connected || fail "$DEV has no size after attach --persist"
mark "PERSIST_IO_START"
start=$(ktest_uptime)
i=0 rounds=0
while :; do
  dd if=/tmp/big of=$DEV bs=$MiB skip=$i seek=$i count=1 oflag=direct 2>/tmp/dd.err || { cat /tmp/dd.err; cat /tmp/persist.log; fail "direct write at $i MiB failed"; }
  i=$((i + 1))
  if [ $i = 32 ]; then i=0 rounds=$((rounds + 1)); fi
  # Done once every MiB was written at least once after the reconnection.
  if grep -q reconnected /tmp/persist.log; then
    [ -n "${after:-}" ] || { after=$i; mark "PERSIST_RECONNECTED at $i MiB"; }
  fi
  [ -n "${after:-}" ] && [ $rounds -ge 1 ] && [ $i = "$after" ] && break
  [ "$(awk -v s="$start" '{ print ($1 - s > 150) }' /proc/uptime)" = 0 ] || { cat /tmp/persist.log; fail "no reconnection within 150 s"; }
done
cat /tmp/persist.log
drop_caches $DEV
[ "$(_dev_sha $DEV 0 32)" = "$(sha256 /tmp/big)" ] || fail "data lost across the server restart"
wait_nbd_size $DEV connected 1 || fail "$DEV lost its size across the server restart"
mark "PERSIST_OK"
detach_checked persist
n=0
while pidof nbdwire-client >/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
! pidof nbdwire-client >/dev/null || fail "the --persist process is still running after detach"
grep -q "disconnected; stopping" /tmp/persist.log || fail "the --persist process did not say it stopped"
