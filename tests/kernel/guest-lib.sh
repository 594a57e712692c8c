# shellcheck shell=sh
# Helpers for guest scenarios (busybox sh), at /etc/ktest/lib.sh in the guest:
#   . /etc/ktest/lib.sh
# Busybox's sh runs its own applets (nbd-client, mke2fs, blkdiscard...) before anything on
# $PATH, so the real programs are called by absolute path: Debian's tools as $KTEST_SBIN/NAME,
# programs given to vm.sh --binary as /usr/local/bin/NAME.
# shellcheck disable=SC2034  # for the scenarios
KTEST_SBIN=/usr/local/sbin

ktest_uptime() { cut -d' ' -f1 /proc/uptime; }

# mark WORDS...: a progress line the host can find in the console log
mark() { echo "@@KTEST $* t=$(ktest_uptime)"; }

# fail WORDS...: reports the failure with the kernel's last messages and exits the scenario
fail() {
  echo "@@KTEST FAIL $* t=$(ktest_uptime)"
  echo "---- dmesg (last 30 lines) ----"
  dmesg | tail -n 30
  exit 1
}

# sha256 [FILE]: the hex digest of FILE (or stdin)
sha256() { sha256sum "$@" | cut -d' ' -f1; }

# wait_nbd_size DEV connected|disconnected [TENTHS]: waits until /sys says DEV has a size
# (connected) or none; gives up after TENTHS tenths of a second (default 100)
wait_nbd_size() {
  _f=/sys/block/${1#/dev/}/size _n=0
  while [ "$_n" -lt "${3:-100}" ]; do
    _s=$(cat "$_f")
    if [ "$2" = connected ]; then [ "$_s" != 0 ] && return 0; else [ "$_s" = 0 ] && return 0; fi
    sleep 0.1
    _n=$((_n + 1))
  done
  return 1
}

# drop_caches DEV: writes back and forgets DEV's cached pages, so the next reads go to the server
drop_caches() {
  blockdev --flushbufs "$1"
  echo 3 >/proc/sys/vm/drop_caches
}
