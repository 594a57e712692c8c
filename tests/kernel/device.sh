#!/usr/bin/env bash
# kernel-device: nbdwire-server --device inside the guest (6.1), serving a memory and a file
# export to the guest's own kernel through netlink and --ioctl (guest/device.sh says what
# runs there). Nothing runs on the host but the guest.
#   bash device.sh SERVER CLIENT CACHE-DIR
# Exit status: 0 pass, 1 fail, 77 skip (no qemu-system-x86_64 and none installable).
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KT_NAME=kernel-device
need_program nbdwire-server "$NBDWIRE_SERVER"
MiB=1048576
t0=$SECONDS
head -c $((4 * MiB)) /dev/urandom >"$T/pattern"
rc=0
vm --kernel 6.1 --scenario "$KT_DIR/guest/device.sh" --smp 2 --timeout 300 --log "$T/serial.log" \
  --binary "$NBDWIRE_SERVER" --file "$T/pattern" --file "$KT_DIR/guest/checks.sh" \
  --env "SIZE=$((64 * MiB))" --env "FS_MIB=40" --env "PAT_MIB=56" || rc=$?
((rc != 77)) || exit 77
((rc == 0)) || fail "the guest scenario failed (vm.sh exit status $rc)"
grep -c '@@KTEST STOPPED' "$T/serial.log" | grep -qx 4 || fail "not all four runs stopped cleanly"
log "PASS in $((SECONDS - t0)) s"
