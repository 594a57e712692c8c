#!/usr/bin/env bash
# kernel-attach: nbdwire-client attach inside the guest (6.1) against servers on the host:
# nbdwire-server (memory and file exports, netlink and ioctl), nbdkit's memory plugin,
# nbdwire-server in newstyle and oldstyle, and --persist through a restart of the server
# (guest/attach.sh says what runs there). The host kills the --persist server with SIGKILL
# when the guest starts writing and restarts it on the same port and file; afterwards it
# checks the file holds what the guest wrote, and that FLUSH and FUA reached the servers.
#   bash attach.sh SERVER CLIENT CACHE-DIR
# Exit status: 0 pass, 1 fail, 77 skip (no qemu-system-x86_64 and none installable).
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KT_NAME=kernel-attach
need_program nbdwire-server "$NBDWIRE_SERVER"
need_program nbdwire-client "$NBDWIRE_CLIENT"
command -v nbdkit >/dev/null || fail "nbdkit is missing (scripts/install-deps.sh)"

MiB=1048576
size=$((64 * MiB)) fs_mib=40 pat_mib=56
t0=$SECONDS
head -c $((4 * MiB)) /dev/urandom >"$T/pattern"
truncate -s "$size" "$T/disk.img"
# The newstyle and oldstyle servers serve a copy with the pattern in place.
truncate -s "$size" "$T/styles.img"
dd if="$T/pattern" of="$T/styles.img" bs=$MiB seek=$pat_mib conv=notrunc status=none
truncate -s "$size" "$T/persist.img"

start_server "$T/server.log" "mem=memory:$size" "file=file:$T/disk.img"
port=$SERVER_PORT
start_server "$T/newstyle.log" --style newstyle --read-only "styles=file:$T/styles.img"
newstyle_port=$SERVER_PORT
start_server "$T/oldstyle.log" --style oldstyle --read-only "styles=file:$T/styles.img"
oldstyle_port=$SERVER_PORT
start_server "$T/persist.log" "persist=file:$T/persist.img"
persist_port=$SERVER_PORT persist_pidfile=$SERVER_PIDFILE

# nbdkit's memory plugin, on a free port of its own
for _ in $(seq 20); do
  nbdkit_port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
  _port_free "$nbdkit_port" || continue
  KT_PIDFILES+=("$T/nbdkit.pid")
  setsid nbdkit -f -P "$T/nbdkit.pid" -i 127.0.0.1 -p "$nbdkit_port" --filter=log memory "$size" \
    logfile="$T/nbdkit-requests.log" \
    </dev/null >"$T/nbdkit.log" 2>&1 &
  for _ in $(seq 100); do [[ -s $T/nbdkit.pid ]] && break; sleep 0.05; done
  [[ -s $T/nbdkit.pid ]] && break
done
[[ -s $T/nbdkit.pid ]] || { cat "$T/nbdkit.log" >&2; fail "nbdkit did not start"; }
log "nbdkit (pid $(cat "$T/nbdkit.pid")) listens on 127.0.0.1:$nbdkit_port"

# The guest runs in the background: the --persist server is killed and restarted when the
# guest says PERSIST_IO_START on the console.
: >"$T/serial.log"
bash "$KT_VM" ${KT_CACHE:+--cache "$KT_CACHE"} --kernel 6.1 --scenario "$KT_DIR/guest/attach.sh" --smp 2 \
  --timeout 360 --log "$T/serial.log" --binary "$NBDWIRE_CLIENT" --file "$T/pattern" \
  --file "$KT_DIR/guest/checks.sh" \
  --env "PORT=$port" --env "NBDKIT_PORT=$nbdkit_port" --env "NEWSTYLE_PORT=$newstyle_port" \
  --env "OLDSTYLE_PORT=$oldstyle_port" --env "PERSIST_PORT=$persist_port" \
  --env "SIZE=$size" --env "FS_MIB=$fs_mib" --env "PAT_MIB=$pat_mib" &
KT_VM_PID=$!
restarted=0
while kill -0 "$KT_VM_PID" 2>/dev/null; do
  if ((restarted == 0)) && grep -q '@@KTEST PERSIST_IO_START' "$T/serial.log"; then
    sleep 1
    log "killing the --persist server (SIGKILL) in the middle of the guest's writes"
    kill -KILL "$(cat "$persist_pidfile")"
    sleep 2
    rm -f "$persist_pidfile"
    setsid "$NBDWIRE_SERVER" -v --listen "127.0.0.1:$persist_port" --pidfile "$persist_pidfile" \
      "persist=file:$T/persist.img" </dev/null >>"$T/persist.log" 2>&1 &
    for _ in $(seq 100); do [[ -s $persist_pidfile ]] && break; sleep 0.05; done
    [[ -s $persist_pidfile ]] || { cat "$T/persist.log" >&2; fail "the --persist server did not restart"; }
    log "the --persist server is back (pid $(cat "$persist_pidfile")) on 127.0.0.1:$persist_port"
    restarted=1
  fi
  sleep 0.2
done
rc=0
wait "$KT_VM_PID" || rc=$?
KT_VM_PID=''
((rc != 77)) || exit 77
if ((rc != 0)); then
  for f in server persist nbdkit; do sed "s/^/    $f| /" "$T/$f.log" >&2; done
  fail "the guest scenario failed (vm.sh exit status $rc)"
fi
((restarted == 1)) || fail "the guest never reached the --persist writes"

for _ in $(seq 50); do
  (($(grep -c 'closed after' "$T/server.log") >= 6)) && break
  sleep 0.1
done
for f in server persist; do sed "s/^/    $f| /" "$T/$f.log" >&2; done

log "checking the files on the host"
cmp <(dd if="$T/disk.img" bs=$MiB skip=$pat_mib count=4 status=none) "$T/pattern" ||
  fail "the file export holds no pattern at $pat_mib MiB"
e2fsck -fn "$T/disk.img" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out" >&2; fail "e2fsck -fn of the file export"; }
want=$(sed -n 's/.*@@KTEST EXT4_OK file data_sha256=\([0-9a-f]*\).*/\1/p' "$T/serial.log" | tail -n 1)
got=$(debugfs -R "cat /data" "$T/disk.img" 2>/dev/null | sha256sum | cut -d' ' -f1)
[[ -n $want && $got == "$want" ]] || fail "/data in the file export: sha256 $got, the guest wrote ${want:-nothing}"
log "   file export: pattern, e2fsck -fn, /data as the guest left them"

log "what the kernel sent through nbdwire-client attach:"
c=$(counters "$T/server.log")
log "   $(tr '\n' ' ' <<<"$c")"
# 3 attachments with 2 connections each
expect_count CONNECTIONS -eq 6 "$c"
for k in READ WRITE FLUSH FUA TRIM DISC; do expect_count "$k" -gt 0 "$c"; done
grep -qi 'flush' "$T/nbdkit-requests.log" || fail "nbdkit's log filter saw no FLUSH"
grep -q 'fua=1' "$T/nbdkit-requests.log" || fail "nbdkit's log filter saw no FUA write"
c=$(counters "$T/persist.log")
log "   --persist server: $(tr '\n' ' ' <<<"$c") (the killed server logged nothing)"
expect_count WRITE -gt 0 "$c"
log "PASS in $((SECONDS - t0)) s"
