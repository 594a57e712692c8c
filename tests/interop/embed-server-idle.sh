# examples/embed/embed-server uses no CPU while idle: after a client that ends with NBD_OPT_ABORT
# (nbdinfo --list) and one that ends with NBD_CMD_DISC (qemu-io), and with one client connected
# but silent, the server's CPU time over 2 s stays below 0.05 s; it has closed the finished
# connections, and a new client is still served afterwards.
. "$(dirname "$0")/lib.sh"

need_server
need_peer nbdinfo qemu-io
start_server_unix

# SERVER_PID is the `timeout` wrapper; the server is its child.
pid=$(pgrep -P "$SERVER_PID" | head -n 1)
[ -n "$pid" ] || fail "no server process under $SERVER_PID"
sockets() { find "/proc/$pid/fd" -lname 'socket:*' 2>/dev/null | wc -l; }
cpu_ticks() { sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'; }  # utime + stime
base=$(sockets)
log "server pid $pid: $base sockets before any client (the listening one)"

step "nbdinfo --list (ends with NBD_OPT_ABORT)" nbdinfo --list "$(unix_uri '')" >"$T/list.txt"
grep -q '^export="disk":' "$T/list.txt" || fail "nbdinfo --list does not show 'disk'"
step "qemu-io session (ends with NBD_CMD_DISC)" qemu-io -f raw -c 'write -P 0x42 0 1M' -c 'read -P 0x42 0 1M' \
    "$(unix_uri disk)" >"$T/qemu-io.out"
grep -Eiq 'fail|error' "$T/qemu-io.out" && fail "qemu-io reported an error"

# A client that stays connected and silent: qemu-io in transmission, waiting on its stdin.
mkfifo "$T/qemu-io.in"
exec 4<>"$T/qemu-io.in"  # held open for writing, so qemu-io waits for commands
log "+ (background) qemu-io -f raw $(unix_uri disk) <fifo"
timeout -k 5 300 qemu-io -f raw "$(unix_uri disk)" <"$T/qemu-io.in" >"$T/idle-qemu-io.out" 2>&1 4>&- &
idle_pid=$!  # (not bg: a background job's stdin would be /dev/null)
PIDS+=("$idle_pid")
for i in $(seq 100); do [ "$(sockets)" -gt "$base" ] && break; sleep 0.05; done
expect_eq "$(sockets)" $((base + 1)) "server sockets with one silent client (finished ones were closed)"
sleep 0.5  # let qemu-io finish its handshake

before=$(cpu_ticks)
sleep 2
after=$(cpu_ticks)
hz=$(getconf CLK_TCK)
cpu=$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN { printf "%.3f", t / hz }')
log "   server CPU time over 2 s idle: ${cpu} s ($((after - before)) ticks at $hz Hz)"
awk -v c="$cpu" 'BEGIN { exit !(c < 0.05) }' || fail "idle server used ${cpu} s of CPU in 2 s (limit 0.05 s)"
echo "embed-server idle CPU: ${cpu} s over 2 s" >&2

# The silent client leaves (qemu-io sends NBD_CMD_DISC at the end of its input): closed too.
echo 'read -P 0x42 0 4k' >&4
exec 4>&-
for i in $(seq 100); do [ "$(sockets)" -eq "$base" ] && break; sleep 0.05; done
expect_eq "$(sockets)" "$base" "server sockets after the last client left"
wait "$idle_pid" || fail "the silent qemu-io ended with status $?"
grep -q 'read 4096/4096' "$T/idle-qemu-io.out" || fail "the idle client's last read failed: $(cat "$T/idle-qemu-io.out")"

step "nbdinfo --size after the idle period" nbdinfo --size "$(unix_uri disk)" >"$T/size"
expect_eq "$(cat "$T/size")" 67108864 "size seen by a new client"
stop_server
log PASS
