#!/bin/sh
# /init of the guest that tests/kernel/vm.sh boots (busybox sh). It mounts /proc, /sys, /dev
# (devtmpfs: /dev/nbd0.. appear by themselves), /tmp and /run, loads the NIC, nbd
# (nbds_max=4) and ext4 modules, brings eth0 up as 10.0.2.15 (the host's loopback is
# 10.0.2.2), runs /etc/ktest/scenario.sh with the settings of /etc/ktest/env exported, and
# prints "@@KTEST RESULT PASS" or "@@KTEST RESULT FAIL" before powering off.
PATH=/usr/local/bin:/usr/local/sbin:/bin:/sbin:/usr/bin:/usr/sbin
export PATH
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# shellcheck source=SCRIPTDIR/guest-lib.sh
. /etc/ktest/lib.sh

result() {
  sync
  echo "@@KTEST RESULT $1 t=$(ktest_uptime)"
  poweroff -f
  sleep 10
}
boot_fail() {
  echo "@@KTEST FAIL $* t=$(ktest_uptime)"
  dmesg | tail -n 30
  result FAIL
}

# shellcheck source=/dev/null  # written by vm.sh
. /etc/ktest/modules
# shellcheck source=/dev/null  # written by vm.sh
. /etc/ktest/env
echo "@@KTEST INIT kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) t=$(ktest_uptime)"

# insmod_all [ARG=VALUE...] -- MODULE...: loads each module not loaded yet, with the arguments
insmod_all() {
  args=
  while [ "$1" != -- ]; do args="$args $1"; shift; done
  shift
  for m in "$@"; do
    [ -d "/sys/module/$m" ] && continue
    # shellcheck disable=SC2086  # args is a list
    insmod "/lib/modules/$m.ko" $args || return 1
  done
}
# shellcheck disable=SC2086  # the module lists are lists
insmod_all -- $NET_MODS || boot_fail "insmod $NET_MODS"
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
{ ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; } ||
  boot_fail "configuring eth0"
# shellcheck disable=SC2086
insmod_all nbds_max=4 -- $NBD_MODS || boot_fail "insmod $NBD_MODS"
# shellcheck disable=SC2086
insmod_all -- $FS_MODS || boot_fail "insmod $FS_MODS"
n=0
while [ ! -b /dev/nbd3 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
{ [ -b /dev/nbd0 ] && [ -b /dev/nbd3 ]; } || boot_fail "no /dev/nbd0../dev/nbd3 after insmod nbd nbds_max=4"
echo "@@KTEST READY t=$(ktest_uptime)"

if sh /etc/ktest/scenario.sh; then
  result PASS
else
  echo "@@KTEST FAIL scenario exited with status $? t=$(ktest_uptime)"
  dmesg | tail -n 30
  result FAIL
fi
