# nbdwire-server as an administrator runs it. One mode per ctest:
#   options      several listeners, per-export read-only and description, duplicate names and
#                unknown export options refused, --pidfile, -v lines
#   max-conn     --max-connections 1: a second client waits unaccepted until the first leaves
#   activation   systemd socket activation (systemd-socket-activate), and LISTEN_FDS with
#                --listen refused
#   fd-limit     ulimit -n 32 and 60 idle clients: little stderr, little CPU, and a client is
#                served once descriptors are free again
#   sigterm      SIGTERM during qemu-io and nbdcopy writes: acknowledged writes are in the file,
#                the clients see NBD_ESHUTDOWN or finish, nothing sees EPIPE or a reset
. "$(dirname "$0")/lib.sh"

mode=${1:?mode: options, max-conn, activation, fd-limit or sigterm}
need_server
need_peer nbdinfo python3

# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

case $mode in
options)
    rand_file "$T/ro.img" $((1024 * 1024))
    sum=$(sha256sum <"$T/ro.img" | cut -d' ' -f1)
    port=$(free_port)
    SERVER_SOCK=$T/admin.sock
    _start_server_once --unix "$SERVER_SOCK" --listen "127.0.0.1:$port" -v --pidfile "$T/server.pid" \
        'disk=memory:1M,description=the disk, with a comma' "ro=file:$T/ro.img,read-only" ||
        fail "nbdwire-server did not start"
    grep -q "listening on unix:$SERVER_SOCK, 127.0.0.1:$port " "$SERVER_OUT" ||
        fail "the ready line does not name both listeners: $(cat "$SERVER_OUT")"
    expect_eq "$(readlink -f "/proc/$(cat "$T/server.pid")/exe")" "$(readlink -f "$NBDWIRE_SERVER")" \
        "the program of the process --pidfile names"
    step "nbdinfo over the Unix socket" nbdinfo --json "nbd+unix:///disk?socket=$SERVER_SOCK" >"$T/disk.json"
    expect_eq "$(json_get "$T/disk.json" description)" "the disk" "description (up to its comma)"
    grep -q '"description": "the disk, with a comma"' "$T/disk.json" || fail "description not sent whole"
    expect_eq "$(json_get "$T/disk.json" is_read_only)" false "disk is writable"
    step "nbdinfo over TCP" nbdinfo --json "nbd://127.0.0.1:$port/ro" >"$T/ro.json"
    expect_eq "$(json_get "$T/ro.json" is_read_only)" true "ro is read-only"
    need_peer qemu-io
    step_fails "qemu-io write to ro" qemu-io -f raw -c 'write -P 0x55 0 64k' "nbd://127.0.0.1:$port/ro"
    step "qemu-io write to disk" qemu-io -f raw -c 'write -P 0x55 0 64k' "nbd://127.0.0.1:$port/disk" >/dev/null
    expect_eq "$(sha256sum <"$T/ro.img" | cut -d' ' -f1)" "$sum" "the read-only file is unchanged"
    grep -q ": connected$" "$SERVER_ERR" || fail "-v logged no connection"
    grep -q ": export 'ro' (fixed-newstyle, structured replies, read-only)$" "$SERVER_ERR" ||
        fail "-v logged no handshake result for ro"
    grep -Eq ": closed after [0-9]+ requests?(: [A-Z_=0-9 ]+)? \(the client disconnected\)$" "$SERVER_ERR" ||
        fail "-v logged no disconnect"
    sed 's/^/    | /' "$SERVER_ERR" >&2
    stop_server
    [ ! -e "$T/server.pid" ] || fail "the pid file is left behind"
    [ ! -e "$SERVER_SOCK" ] || fail "the Unix socket is left behind"
    step_fails "duplicate export names" "$NBDWIRE_SERVER" --unix "$T/dup.sock" a=memory:1M a=memory:2M
    grep -q "export name 'a' given twice" "$T/step.err" || fail "no clear message for a duplicate name"
    step_fails "unknown export option" "$NBDWIRE_SERVER" --unix "$T/x.sock" a=memory:1M,read-only,bogus
    grep -q "unknown export option 'bogus'" "$T/step.err" || fail "no clear message for an unknown export option"
    ;;
max-conn)
    start_server_unix --max-connections 1 disk=memory:1M
    hold_clients "$SERVER_SOCK" 1 3 >"$T/first.out" &
    first=$!
    for i in $(seq 50); do [ -s "$T/first.out" ] && break; sleep 0.1; done
    expect_eq "$(cat "$T/first.out")" 1 "the first client is greeted"
    # The second waits: connected (backlog), but no greeting while the first holds the slot.
    hold_clients "$SERVER_SOCK" 1 0 >"$T/second.out"
    expect_eq "$(cat "$T/second.out")" 0 "a second client greeted while the first is connected"
    wait "$first"
    step "nbdinfo once the slot is free" nbdinfo --size "$(unix_uri disk)" >"$T/size"
    expect_eq "$(cat "$T/size")" 1048576 "size"
    stop_server
    ;;
activation)
    sock=$T/activated.sock
    if command -v systemd-socket-activate >/dev/null; then
        log "+ (background) systemd-socket-activate -l $sock $NBDWIRE_SERVER disk=memory:2M"
        systemd-socket-activate -l "$sock" "$NBDWIRE_SERVER" -v disk=memory:2M >"$T/act.out" 2>"$T/act.err" &
    else
        # The same protocol by hand (sd_listen_fds(3)): the listening socket as descriptor 3,
        # LISTEN_PID naming the process that execs the server.
        log "+ (background) LISTEN_FDS launcher: $NBDWIRE_SERVER disk=memory:2M on $sock"
        python3 - "$sock" "$NBDWIRE_SERVER" -v disk=memory:2M >"$T/act.out" 2>"$T/act.err" <<'EOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1] + ".tmp")
s.listen(16)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])  # appears only once it accepts
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execve(sys.argv[2], sys.argv[2:], env)
EOF
    fi
    PIDS+=("$!")
    act=$!
    wait_unix_socket "$sock"
    step "nbdinfo through the activated socket" nbdinfo --size "nbd+unix:///disk?socket=$sock" >"$T/size"
    expect_eq "$(cat "$T/size")" 2097152 "size"
    step "a second client" nbdinfo --size "nbd+unix:///disk?socket=$sock" >/dev/null
    grep -q "listening on socket-activated descriptor 3 " "$T/act.out" ||
        fail "the server did not take the passed socket: $(cat "$T/act.out")"
    kill -TERM "$act"
    wait "$act" || true
    # LISTEN_FDS for this very process (exec keeps the pid) and --listen together: refused.
    step_fails "socket activation plus --unix" bash -c \
        'exec 3<>/dev/null; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" --unix "$1" disk=memory:1M' \
        "$NBDWIRE_SERVER" "$T/y.sock"
    grep -q "cannot be added" "$T/step.err" || fail "no clear message for activation plus --unix"
    ;;
fd-limit)
    # 32 descriptors: the server's own (stdio, epoll, signalfd, listener) leave room for ~27
    # clients; 60 idle ones exhaust them.
    SERVER_SOCK=$T/fd.sock
    log "+ (background) ulimit -n 32; $NBDWIRE_SERVER --unix $SERVER_SOCK disk=memory:1M"
    (ulimit -n 32 && exec "$NBDWIRE_SERVER" --unix "$SERVER_SOCK" --handshake-timeout 0 disk=memory:1M) \
        >"$T/fd.out" 2>"$T/fd.err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_unix_socket "$SERVER_SOCK"
    hold_clients "$SERVER_SOCK" 60 4 >"$T/held.out" &
    holder=$!
    sleep 1
    before=$(cpu_ticks "$SERVER_PID")
    sleep 3
    after=$(cpu_ticks "$SERVER_PID")
    hz=$(getconf CLK_TCK)
    cpu_ms=$(( (after - before) * 1000 / hz ))
    err_bytes=$(wc -c <"$T/fd.err")
    log "   server CPU over 3 s with descriptors exhausted: ${cpu_ms} ms; stderr ${err_bytes} bytes"
    sed 's/^/    | /' "$T/fd.err" >&2
    [ "$cpu_ms" -lt 300 ] || fail "the server used ${cpu_ms} ms of CPU in 3 s (limit 300)"
    [ "$err_bytes" -lt 102400 ] || fail "stderr grew to $err_bytes bytes (limit 100 KB)"
    grep -q "Too many open files" "$T/fd.err" || fail "no message about running out of descriptors"
    greeted=$(head -n 1 "$T/held.out")
    log "   $greeted of 60 idle clients were accepted"
    [ "$greeted" -ge 1 ] && [ "$greeted" -lt 60 ] || fail "expected some but not all 60 clients accepted"
    wait "$holder"
    step "nbdinfo once descriptors are free" nbdinfo --size "nbd+unix:///disk?socket=$SERVER_SOCK" >"$T/size"
    expect_eq "$(cat "$T/size")" 1048576 "size"
    SERVER_ERR=$T/fd.err
    stop_server
    ;;
sigterm)
    need_peer qemu-io nbdcopy
    size=$((256 * 1024 * 1024))
    truncate -s "$size" "$T/qio.img" "$T/copy.img"
    rand_file "$T/source.img" "$size"
    start_server_unix -v --shutdown-timeout 5 qio=file:"$T/qio.img" copy=file:"$T/copy.img"
    # qemu-io: 4096 writes of 64 KiB read from its standard input (several seconds), each
    # with its own pattern byte; nbdcopy: 256 MiB over several connections (under a second).
    log "+ (background) qemu-io with 4096 writes; nbdcopy of 256 MiB"
    for i in $(seq 0 4095); do echo "write -P $((i % 250 + 1)) $((i * 65536)) 64k"; done >"$T/qio.cmds"
    qemu-io -f raw "$(unix_uri qio)" <"$T/qio.cmds" >"$T/qemu-io.out" 2>"$T/qemu-io.err" &
    qio=$!
    nbdcopy "$T/source.img" "$(unix_uri copy)" >"$T/nbdcopy.out" 2>"$T/nbdcopy.err" &
    cp=$!
    # SIGTERM once qemu-io's writes are under way (its first one, pattern 1, is in the file).
    for i in $(seq 200); do
        [ "$(head -c 1 "$T/qio.img" | od -An -tu1 | tr -d ' ')" = 1 ] && break
        sleep 0.1
    done
    sleep 0.3
    kill -TERM "$SERVER_PID"
    rc_qio=0 rc_cp=0
    wait "$qio" || rc_qio=$?
    wait "$cp" || rc_cp=$?
    for i in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && fail "the server still runs 10 s after SIGTERM"
    rc=0
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=
    [ "$rc" -eq 0 ] || fail "the server ended with status $rc"
    { grep -v 'ops/sec\|^qemu-io> wrote' "$T/qemu-io.out" || true; } | sort | uniq -c | sed 's/^/    | qemu-io: /' >&2
    sed 's/^/    | nbdcopy: /' "$T/nbdcopy.err" >&2
    sed 's/^/    | server: /' "$SERVER_ERR" >&2
    acked=$(grep -c 'wrote 65536/65536 bytes at offset' "$T/qemu-io.out" || true)
    log "   qemu-io: $acked of 4096 writes acknowledged (exit $rc_qio); nbdcopy exit $rc_cp"
    grep -q "shutting down: " "$SERVER_ERR" || fail "the server did not report its shutdown"
    # The server cut no connection: each one was ended by its client before the grace period.
    if grep -q "closing .* still open" "$SERVER_ERR"; then fail "connections were still open at the deadline"; fi
    opened=$(grep -c ": connected$" "$SERVER_ERR")
    ended=$(grep -Ec ": closed after [0-9]+ requests?(: [A-Z_=0-9 ]+)? \(the client (disconnected|closed the connection)\)$" "$SERVER_ERR")
    expect_eq "$ended" "$opened" "connections ended by their clients"
    if grep -Eiq 'broken pipe|connection reset' "$T/qemu-io.out" "$T/qemu-io.err" "$T/nbdcopy.err"; then
        fail "a client saw a broken connection"
    fi
    # qemu-io was cut short by the shutdown, and was told so: NBD_ESHUTDOWN.
    [ "$acked" -lt 4096 ] || fail "qemu-io finished before the shutdown; the test proves nothing"
    grep -q 'write failed: Cannot send after transport endpoint shutdown' "$T/qemu-io.out" ||
        fail "qemu-io's refused writes do not report ESHUTDOWN"
    if [ "$rc_cp" -eq 0 ]; then
        same_file "$T/source.img" "$T/copy.img" "nbdcopy, finished before the shutdown"
    fi
    # Every write qemu-io saw acknowledged is in the file (flushed at exit).
    python3 - "$T/qemu-io.out" "$T/qio.img" <<'EOF'
import re, sys
out, disk = sys.argv[1:3]
d = open(disk, 'rb').read()
acked = bad = 0
for m in re.finditer(r'wrote 65536/65536 bytes at offset (\d+)', open(out).read()):
    off = int(m.group(1))
    acked += 1
    if d[off:off + 65536] != bytes([off // 65536 % 250 + 1]) * 65536:
        bad += 1
if acked == 0 or bad:
    sys.exit(f"{bad} of {acked} acknowledged qemu-io writes are not in the file")
EOF
    log "   every acknowledged qemu-io write is in the file"
    ;;
*) fail "unknown mode $mode" ;;
esac
log PASS
