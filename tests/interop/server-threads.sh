# nbdwire-server with several event loops (--threads):
#   - nbdcopy with 4 connections (multi-conn) into and out of memory and file exports, with
#     --threads 2 over TCP and --threads 4 over a Unix socket: checksums right, and the -v
#     lines show the connections spread over the loops;
#   - --max-connections counts across the loops;
#   - SIGTERM with connections on several loops: every loop refuses new requests with
#     NBD_ESHUTDOWN and the server exits 0 once the clients leave; clients that stay are
#     closed at --shutdown-timeout, and the server still exits 0 in time; a second SIGTERM
#     closes them at once.
. "$(dirname "$0")/lib.sh"

need_server
need_peer nbdcopy nbdinfo python3 sha256sum

size=$((32 * 1024 * 1024))
{ head -c $((15 * 1024 * 1024)) /dev/urandom; head -c $((1024 * 1024)) /dev/zero;
  head -c $((16 * 1024 * 1024)) /dev/urandom; } >"$T/source.img"
sum=$(sha256sum <"$T/source.img" | cut -d' ' -f1)
truncate -s "$size" "$T/backed.img"

# loops_seen: the loop numbers of the "connected" lines of the running server, sorted, unique.
loops_seen() { sed -n 's/.* (loop \([0-9]*\)): connected$/\1/p' "$SERVER_ERR" | sort -nu | tr '\n' ' '; }

# copies URI-BASE: nbdcopy with 4 connections and 4 threads into mem and backed, and back out.
copies() {
    local base=$1 q=$2
    # A fresh start for the file export (its size stays what the server saw).
    truncate -s 0 "$T/backed.img"
    truncate -s "$size" "$T/backed.img"
    step "nbdcopy -C 4 file -> mem" nbdcopy --connections=4 --threads=4 "$T/source.img" "$base/mem$q"
    step "nbdcopy -C 4 mem -> file" nbdcopy --connections=4 --threads=4 "$base/mem$q" "$T/mem.out"
    expect_eq "$(sha256sum <"$T/mem.out" | cut -d' ' -f1)" "$sum" "sha256 after the round trip via mem"
    step "nbdcopy -C 4 --flush file -> backed" nbdcopy --connections=4 --threads=4 --flush "$T/source.img" "$base/backed$q"
    expect_eq "$(sha256sum <"$T/backed.img" | cut -d' ' -f1)" "$sum" "sha256 of the backing file"
    step "nbdcopy -C 4 backed -> mem2" nbdcopy --connections=4 --threads=4 "$base/backed$q" "$base/mem2$q"
    step "nbdcopy -C 4 mem2 -> file" nbdcopy --connections=4 --threads=4 "$base/mem2$q" "$T/mem2.out"
    expect_eq "$(sha256sum <"$T/mem2.out" | cut -d' ' -f1)" "$sum" "sha256 after the NBD to NBD copy"
}

log "--- --threads 2, TCP, memory and file exports"
start_server_tcp -v --threads 2 --pidfile "$T/server.pid" mem=memory:32M mem2=memory:32M backed=file:"$T/backed.img"
grep -q ", 2 threads)$" "$SERVER_OUT" || fail "the ready line does not say 2 threads: $(cat "$SERVER_OUT")"
copies "$SERVER_URI" ""
expect_eq "$(loops_seen)" "0 1 " "loops that served connections"
stop_server
[ ! -e "$T/server.pid" ] || fail "the pidfile is still there after the server stopped"

log "--- --threads 4, Unix socket"
start_server_unix -v --threads 4 mem=memory:32M mem2=memory:32M backed=file:"$T/backed.img"
copies "nbd+unix://" "?socket=$SERVER_SOCK"
expect_eq "$(loops_seen)" "0 1 2 3 " "loops that served connections"
# One multi-conn copy alone, on an idle server: its 4 connections on 4 different loops.
before=$(grep -c ': connected$' "$SERVER_ERR")
step "nbdcopy -C 4 mem -> null" nbdcopy --connections=4 --threads=4 "$(unix_uri mem)" null:
loops=$(tail -n +"$((before + 1))" <(grep ': connected$' "$SERVER_ERR") |
    sed -n 's/.* (loop \([0-9]*\)): connected$/\1/p' | sort -nu | wc -l)
expect_eq "$loops" 4 "loops serving one 4-connection copy"
stop_server

log "--- --max-connections 3 across 2 loops"
start_server_unix -v --threads 2 --max-connections 3 mem=memory:1M
log "+ 5 idle clients for 2 s"
hold_clients "$SERVER_SOCK" 5 2 >"$T/held.out" &
holder=$!
PIDS+=("$holder")
wait "$holder"
expect_eq "$(head -n 1 "$T/held.out")" 3 "clients greeted with 3 slots"
step "nbdinfo once the slots are free" nbdinfo --size "$(unix_uri mem)" >"$T/size"
expect_eq "$(cat "$T/size")" 1048576 "size"
expect_eq "$(loops_seen)" "0 1 " "loops that served connections"
stop_server

# clients HOST PORT N GO-FILE: N clients that finish the handshake (NBD_OPT_EXPORT_NAME, simple
# replies) and print "ready"; once GO-FILE exists each sends a READ, prints the reply's error
# (NBD_ESHUTDOWN is 108) and disconnects. Without GO-FILE within 30 s they just stay.
clients() {
    python3 - "$@" <<'EOF'
import os, socket, struct, sys, time
host, port, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def recvall(s, k):
    b = b""
    while len(b) < k:
        d = s.recv(k - len(b))
        if not d:
            raise EOFError("server closed")
        b += d
    return b
socks = []
for _ in range(n):
    s = socket.create_connection((host, port))
    g = recvall(s, 18)
    assert g[:8] == b"NBDMAGIC", g
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 3) + b"mem")
    recvall(s, 10)
    socks.append(s)
print("ready", flush=True)
deadline = time.time() + 30
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.02)
for i, s in enumerate(socks):
    try:
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, 0, 4096))  # READ
        magic, err, cookie = struct.unpack(">IIQ", recvall(s, 16))
        print(err, flush=True)
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 99, 0, 0))  # DISC
    except (OSError, EOFError) as e:
        print("closed", flush=True)
    s.close()
EOF
}

# wait_line FILE PATTERN: up to 10 s for a line matching PATTERN.
wait_line() {
    local i
    for i in $(seq 200); do grep -q "$2" "$1" && return 0; sleep 0.05; done
    fail "no line '$2' in $1 after 10 s"
}

# term: one SIGTERM to nbdwire-server itself. (SERVER_PID is the timeout(1) that runs it,
# which passes a signal on to the server and to its process group, so the server could see
# it twice, and a second SIGTERM means "stop at once".)
term() { kill -TERM "$(pgrep -P "$SERVER_PID")"; }

# sigterm_exit T0 LIMIT-SECONDS: SIGTERM sent before; the server must exit 0 within the limit.
# Sets EXIT_MS.
sigterm_exit() {
    local i rc=0 t0=$1
    for i in $(seq $(($2 * 20))); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$SERVER_PID" 2>/dev/null && fail "the server still runs $2 s after SIGTERM"
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=
    EXIT_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
    sed 's/^/    | server: /' "$SERVER_ERR" >&2
    [ "$rc" -eq 0 ] || fail "the server ended with status $rc after SIGTERM"
    _sanitizer_report "$SERVER_ERR" && fail "sanitizer report"
    log "   the server exited 0, ${EXIT_MS} ms after SIGTERM"
}

log "--- SIGTERM with clients on 2 loops that then leave"
start_server_tcp -v --threads 2 --shutdown-timeout 20 mem=memory:1M
PORT=$SERVER_PORT
clients 127.0.0.1 "$PORT" 4 "$T/go1" >"$T/clients1.out" &
PIDS+=("$!")
cl=$!
wait_line "$T/clients1.out" ready
expect_eq "$(loops_seen)" "0 1 " "loops serving the 4 clients"
t0=$(date +%s%N)
term
wait_line "$SERVER_ERR" "shutting down: 4 connections open"
touch "$T/go1"
wait "$cl" || fail "the clients failed: $(cat "$T/clients1.out")"
expect_eq "$(grep -c '^108$' "$T/clients1.out")" 4 "READs answered NBD_ESHUTDOWN"
sigterm_exit "$t0" 10
if grep -q "still open" "$SERVER_ERR"; then fail "connections were cut at the deadline"; fi
[ "$EXIT_MS" -lt 10000 ] || fail "the server waited for the deadline although every client left"

log "--- SIGTERM with clients on 2 loops that stay: closed at --shutdown-timeout 2"
start_server_tcp -v --threads 2 --shutdown-timeout 2 mem=memory:1M
clients 127.0.0.1 "$SERVER_PORT" 4 "$T/never" >"$T/clients2.out" &
PIDS+=("$!")
wait_line "$T/clients2.out" ready
t0=$(date +%s%N)
term
sigterm_exit "$t0" 6
[ "$EXIT_MS" -ge 1900 ] || fail "the server exited before --shutdown-timeout with clients still open"
expect_eq "$(grep -c 'shutdown: closing 2 connections still open' "$SERVER_ERR")" 2 "loops that closed 2 connections each"

log "--- a second SIGTERM with clients on 2 loops that stay: the server stops at once"
start_server_tcp -v --threads 2 --shutdown-timeout 30 mem=memory:1M
clients 127.0.0.1 "$SERVER_PORT" 4 "$T/never" >"$T/clients3.out" &
PIDS+=("$!")
wait_line "$T/clients3.out" ready
t0=$(date +%s%N)
term
wait_line "$SERVER_ERR" "shutting down: 4 connections open"
term
sigterm_exit "$t0" 4
log PASS
