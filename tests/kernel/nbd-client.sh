#!/usr/bin/env bash
# kernel-nbd-client-KERNEL: the Linux kernel's NBD client (nbd.ko, set up by Debian's
# nbd-client) against nbdwire-server on the host, in one boot of the guest: netlink and ioctl
# (-L) mode, each with -C 2 over 2 vCPUs, each over a memory export and a file export
# (guest/nbd-client.sh says what runs there). The host then checks the file export's contents
# (the pattern, e2fsck -fn of the ext4 image, the guest's file read out with debugfs) and
# the server's per-command counts: FLUSH and FUA reached it, and with 6.12 WRITE_ZEROES
# with NO_HOLE.
#   bash nbd-client.sh SERVER CLIENT CACHE-DIR 6.1|6.12
# Exit status: 0 pass, 1 fail, 77 skip (no qemu-system-x86_64 and none installable).
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kernel=${1-}
[[ $kernel == 6.1 || $kernel == 6.12 ]] || fail "usage: nbd-client.sh SERVER CLIENT CACHE 6.1|6.12"
KT_NAME=kernel-nbd-client-$kernel
need_program nbdwire-server "$NBDWIRE_SERVER"
command -v debugfs >/dev/null || fail "debugfs (e2fsprogs) is missing"

MiB=1048576
size=$((64 * MiB)) fs_mib=40 pat_mib=56 pat_len_mib=2
modes="netlink ioctl" exports="mem file" conns=2
t0=$SECONDS

head -c $((pat_len_mib * MiB)) /dev/urandom >"$T/pattern"
head -c $((2 * MiB)) /dev/urandom >"$T/filedata"
truncate -s "$size" "$T/disk.img"
start_server "$T/server.log" "mem=memory:$size" "file=file:$T/disk.img"

rc=0
vm --kernel "$kernel" --scenario "$KT_DIR/guest/nbd-client.sh" --smp 2 --timeout 300 \
  --log "$T/serial.log" --file "$T/pattern" --file "$T/filedata" \
  --env "PORT=$SERVER_PORT" --env "EXPORTS=$exports" --env "MODES=$modes" --env "CONNS=$conns" \
  --env "SIZE=$size" --env "FS_MIB=$fs_mib" --env "PAT_MIB=$pat_mib" || rc=$?
((rc != 77)) || exit 77
if ((rc != 0)); then
  sed 's/^/    server| /' "$T/server.log" >&2
  fail "the guest scenario failed (vm.sh exit status $rc)"
fi

# Every connection has closed once QEMU is gone; the server logs each as it notices.
want_conns=$(($(wc -w <<<"$modes") * $(wc -w <<<"$exports") * conns))
for _ in $(seq 50); do
  (($(grep -c 'closed after' "$T/server.log") >= want_conns)) && break
  sleep 0.1
done
stop_server
sed 's/^/    server| /' "$T/server.log" >&2

# The file export as the guest left it (the last mode's writes).
log "checking the file export on the host"
cmp <(dd if="$T/disk.img" bs=$MiB skip=$pat_mib count=$pat_len_mib status=none) "$T/pattern" ||
  fail "the file export holds no pattern at $pat_mib MiB"
e2fsck -fn "$T/disk.img" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out" >&2; fail "e2fsck -fn of the file export"; }
debugfs -R "dump /data $T/data.out" "$T/disk.img" >/dev/null 2>&1 || true
cmp "$T/data.out" "$T/filedata" || fail "/data in the file export's ext4 is not the file the guest wrote"
log "   the pattern at $pat_mib MiB, e2fsck -fn, and /data read with debugfs are as the guest left them"

log "what the kernel sent ($want_conns connections expected):"
c=$(counters "$T/server.log")
log "   $(tr '\n' ' ' <<<"$c")"
expect_count CONNECTIONS -eq "$want_conns" "$c"
expect_count READ -gt 0 "$c"
expect_count WRITE -gt 0 "$c"
expect_count FLUSH -gt 0 "$c"
expect_count FUA -gt 0 "$c"
expect_count TRIM -gt 0 "$c"
expect_count DISC -gt 0 "$c"
if [[ $kernel == 6.12 ]]; then
  expect_count WRITE_ZEROES -gt 0 "$c"
  expect_count NO_HOLE -gt 0 "$c"
fi
# -C 2 with 2 vCPUs: the guest read from each CPU, so every connection carried READs.
busy=$(grep 'closed after' "$T/server.log" | grep -c ' READ=' || true)
log "   connections that carried READs: $busy of $want_conns"
((busy == want_conns)) || fail "only $busy of $want_conns connections carried READs"
log "PASS in $((SECONDS - t0)) s"
