# nbdwire-server through the fault proxy, under qemu-io, nbdcopy and nbdinfo:
#   bash server.sh SERVER CLIENT SET
# SET is default (representative cuts per message kind and direction, spread over the three
# peers), stall (stalls during the handshake, ended by --handshake-timeout, and stalls in the
# middle of a READ reply and a WRITE payload, during which other clients must be served) or full
# (every message of a clean run of each peer, cut at its boundary and at 1, half and all but
# one of its bytes).
#
# After every fault the server must close that connection promptly (its -v log shows why),
# stay up, serve a new client at once, never report a sanitizer error, and hold every write the
# peer saw acknowledged: each "wrote N/N bytes at offset X" of qemu-io is checked in the file,
# and an nbdcopy that succeeded must have copied everything.
. "$(dirname "$0")/lib.sh"
need_server
need_peer qemu-io nbdcopy nbdinfo
SET=${1:?SET}
SUMMARY_TAG=$SET

SIZE=$((8 * 1024 * 1024))
HANDSHAKE_TIMEOUT=2
rand_file "$T/disk.img" "$SIZE"
start_server_unix -v --handshake-timeout "$HANDSHAKE_TIMEOUT" disk=file:"$T/disk.img" other=memory:1M
rand_file "$T/up.data" "$SIZE"

# The peers' commands. qemu-io: a plain write, FLUSH, a FUA write, a read, a 1 MiB write.
# Patterns differ from case to case so that no earlier case's data can pass a check.
PATTERN=1
qemu_io_cmds() {
    local p=$PATTERN
    QEMU_WRITES=("0 $((p % 250 + 1)) 65536" "1048576 $(((p + 1) % 250 + 1)) 65536"
                 "2097152 $(((p + 2) % 250 + 1)) 1048576")
    QEMU_ARGS=(-c "write -P $((p % 250 + 1)) 0 64k" -c flush
               -c "write -f -P $(((p + 1) % 250 + 1)) 1M 64k"
               -c "read 0 64k" -c "write -P $(((p + 2) % 250 + 1)) 2M 1M")
}

# run_peer PEER URI: sets RC, ELAPSED_MS; output in $T/case.out and $T/case.err.
run_peer() {
    local peer=$1 uri=$2
    case $peer in
        qemu-io)
            qemu_io_cmds
            run_timed "$T/case.out" "$T/case.err" qemu-io -f raw "$uri" "${QEMU_ARGS[@]}"
            ;;
        qemu-io-bigread)
            run_timed "$T/case.out" "$T/case.err" qemu-io -f raw "$uri" -c "read 0 8M"
            ;;
        qemu-io-bigwrite)
            QEMU_WRITES=("0 $((PATTERN % 250 + 1)) $SIZE")
            run_timed "$T/case.out" "$T/case.err" qemu-io -f raw "$uri" -c "write -P $((PATTERN % 250 + 1)) 0 8M"
            ;;
        nbdcopy-up)
            rand_file "$T/up.data" "$SIZE"
            run_timed "$T/case.out" "$T/case.err" nbdcopy -C 1 --flush "$T/up.data" "$uri"
            ;;
        nbdcopy-down)
            rm -f "$T/down.img"
            run_timed "$T/case.out" "$T/case.err" nbdcopy -C 1 "$uri" "$T/down.img"
            ;;
        nbdinfo) run_timed "$T/case.out" "$T/case.err" nbdinfo "$uri" ;;
        nbdinfo-map) run_timed "$T/case.out" "$T/case.err" nbdinfo --map "$uri" ;;
        *) fail "unknown peer $peer" ;;
    esac
}

# check_acknowledged PEER ID: no write the peer saw acknowledged is missing from the file.
check_acknowledged() {
    local peer=$1 id=$2 w off pat len n=0
    case $peer in
        qemu-io*)
            for w in "${QEMU_WRITES[@]}"; do
                read -r off pat len <<<"$w"
                grep -q "^wrote $len/$len bytes at offset $off\$" "$T/case.out" || continue
                n=$((n + 1))
                slice "$T/disk.img" "$off" "$len" | cmp -s - <(pattern_file "$pat" "$len") ||
                    case_fail "$id" "qemu-io saw the write of $len bytes at $off acknowledged; it is not in the file"
            done
            ACKED=$n
            ;;
        nbdcopy-up)
            ACKED=0
            if [ "$RC" -eq 0 ]; then
                ACKED=1
                cmp -s "$T/up.data" "$T/disk.img" || case_fail "$id" "nbdcopy succeeded but the file differs"
            fi
            ;;
        *) ACKED=0 ;;
    esac
}

connected() { grep -c ': connected$' "$SERVER_ERR" || true; }
closed() { grep -c ': closed after ' "$SERVER_ERR" || true; }

# wait_closed LIMIT-SECONDS: until every connection the server accepted is closed; sets
# CLOSE_MS (from now). Returns 1 on timeout.
wait_closed() {
    local t0 t1 i
    t0=$(date +%s%N)
    for i in $(seq $(($1 * 50))); do
        if [ "$(connected)" -eq "$(closed)" ]; then
            t1=$(date +%s%N)
            CLOSE_MS=$(( (t1 - t0) / 1000000 ))
            return 0
        fi
        sleep 0.02
    done
    return 1
}

# server_serves ID: the server is up and a new client (straight to its socket) is served.
server_serves() {
    local size rc=0
    kill -0 "$SERVER_PID" 2>/dev/null || { case_fail "$1" "nbdwire-server died"; return 1; }
    size=$(timeout 10 nbdinfo --size "nbd+unix:///other?socket=$SERVER_SOCK" 2>"$T/direct.err") || rc=$?
    [ "$rc" -eq 0 ] && [ "$size" = 1048576 ] ||
        { case_fail "$1" "a new client was not served (status $rc, '$size')"; return 1; }
}

# fault_case PEER ACTION DIR POS: one case of a cut (or a stall during the handshake).
fault_case() {
    local peer=$1 action=$2 dir=$3 pos=$4 id before lines limit
    CASES=$((CASES + 1))
    PATTERN=$((PATTERN + 3))
    id="#$CASES $peer --$action $dir $pos"
    before=$(wc -l <"$SERVER_ERR")
    start_proxy "$SERVER_SOCK" "--$action" "$dir" "$pos"
    run_peer "$peer" "nbd+unix:///disk?socket=$PROXY_SOCK"
    # A cut closes at once; a stall in the handshake lasts until --handshake-timeout.
    limit=5
    [ "$action" = stall ] && limit=$((HANDSHAKE_TIMEOUT + 5))
    if ! wait_closed "$limit"; then
        case_fail "$id" "nbdwire-server did not close the connection within ${limit}s"
    fi
    stop_proxy
    wait_closed 5 || true
    lines=$(tail -n +"$((before + 1))" "$SERVER_ERR" | grep -v ': connected$' || true)
    if ! proxy_fired; then
        case_fail "$id" "the fault never fired (peer status $RC)"
    elif [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
        case_fail "$id" "$peer did not end within ${CASE_TIMEOUT}s"
    elif [ "$action" = stall ] && ! grep -q 'handshake not finished within the deadline; dropped' <<<"$lines"; then
        case_fail "$id" "the stalled handshake was not dropped by --handshake-timeout"
    elif server_serves "$id"; then
        check_acknowledged "$peer" "$id"
        log "   $id: $peer status $RC; ${ACKED} acknowledged write(s) checked; the server: $(tr '\n' ' ' <<<"$lines")"
        printf '%s\n' "$lines" | sed -E 's/^nbdwire-server: unix client [0-9]+( \(loop [0-9]+\))?: //; s/[0-9]+/N/g' >>"$T/messages"
    fi
    if _sanitizer_report "$SERVER_ERR"; then
        sed 's/^/    | /' "$SERVER_ERR" >&2
        fail "$id: nbdwire-server: sanitizer report"
    fi
}

# stall_transmission PEER DIR POS: a stall in the middle of transmission. The server must go on
# serving other clients while one client's reply (or payload) hangs; when the stalled peer is
# killed the server must close its connection promptly.
stall_transmission() {
    local peer=$1 dir=$2 pos=$3 id t0 i before lines
    CASES=$((CASES + 1))
    PATTERN=$((PATTERN + 3))
    id="#$CASES $peer --stall $dir $pos"
    before=$(wc -l <"$SERVER_ERR")
    start_proxy "$SERVER_SOCK" --stall "$dir" "$pos"
    case $peer in
        qemu-io-bigread) qemu-io -f raw "nbd+unix:///disk?socket=$PROXY_SOCK" -c "read 0 8M" \
            </dev/null >"$T/case.out" 2>"$T/case.err" & ;;
        qemu-io-bigwrite) qemu-io -f raw "nbd+unix:///disk?socket=$PROXY_SOCK" \
            -c "write -P $((PATTERN % 250 + 1)) 0 8M" </dev/null >"$T/case.out" 2>"$T/case.err" & ;;
    esac
    local peer_pid=$!
    PIDS+=("$peer_pid")
    for i in $(seq 250); do proxy_fired && break; sleep 0.02; done
    if ! proxy_fired; then
        case_fail "$id" "the stall never happened"
    else
        sleep 1  # the stalled connection's buffers fill
        # Other clients are served meanwhile: an nbdinfo and a 1 MiB write and read.
        t0=$(date +%s%N)
        server_serves "$id" &&
            { head -c 1048576 /dev/urandom >"$T/other.data"
              timeout 10 "$NBDWIRE_CLIENT" write "nbd+unix:///other?socket=$SERVER_SOCK" <"$T/other.data" 2>"$T/direct.err" &&
              timeout 10 "$NBDWIRE_CLIENT" read "nbd+unix:///other?socket=$SERVER_SOCK" 2>"$T/direct.err" |
                  cmp -s - "$T/other.data"; } ||
            case_fail "$id" "other clients were not served during the stall: $(cat "$T/direct.err")"
        log "   $id: other clients served during the stall in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
        [ "$(connected)" -gt "$(closed)" ] || case_fail "$id" "the stalled connection was closed during the stall"
    fi
    kill -KILL "$peer_pid" 2>/dev/null || true
    wait "$peer_pid" 2>/dev/null || true
    _forget_pid "$peer_pid"
    if wait_closed 5; then
        lines=$(tail -n +"$((before + 1))" "$SERVER_ERR" | grep -v ': connected$' || true)
        log "   $id: the server closed the connection ${CLOSE_MS} ms after the peer was killed: $(tr '\n' ' ' <<<"$lines")"
        printf '%s\n' "$lines" | sed -E 's/^nbdwire-server: unix client [0-9]+( \(loop [0-9]+\))?: //; s/[0-9]+/N/g' >>"$T/messages"
    else
        case_fail "$id" "nbdwire-server did not close the connection within 5 s of the peer's death"
    fi
    stop_proxy
    server_serves "$id" || true
}

case $SET in
default)
    while read -r peer dir pos; do
        [ -n "$peer" ] && [[ $peer != \#* ]] || continue
        fault_case "$peer" cut "$dir" "$pos"
    done <<'EOF'
# client to server
qemu-io      c2s cflags:1+0
nbdinfo      c2s cflags:1+2
qemu-io      c2s option:1+0
qemu-io      c2s option.go:1+5
nbdinfo      c2s option:2+3
qemu-io      c2s request.write:1+0
qemu-io      c2s request.write:1+30000
qemu-io      c2s request.write:2+28
qemu-io      c2s request.flush:1+0
qemu-io      c2s request.read:1+10
nbdcopy-up   c2s request.write:1+100
nbdcopy-up   c2s request.flush:1+0
nbdinfo-map  c2s request.block_status:1+0
qemu-io      c2s 100
# server to client
qemu-io      s2c greeting:1+0
nbdinfo      s2c greeting:1+10
qemu-io      s2c optreply:1+0
qemu-io      s2c optreply.go:1+4
nbdinfo      s2c optreply.go:2+0
qemu-io      s2c simple.write:1+0
qemu-io      s2c simple.flush:1+8
qemu-io      s2c simple.write:2+0
qemu-io      s2c chunk.read:1+0
qemu-io      s2c chunk.read:1+30
nbdcopy-up   s2c reply.write:1+0
nbdcopy-up   s2c reply.flush:1+8
nbdcopy-down s2c chunk.block_status:1+10
nbdcopy-down s2c chunk.read:1+500
nbdinfo-map  s2c chunk.block_status:1+20
qemu-io      s2c 1000
EOF
    ;;
stall)
    # Stalls in the handshake: the server's --handshake-timeout drops them.
    fault_case nbdinfo stall s2c greeting:1+10
    fault_case qemu-io stall c2s option.go:1+5
    fault_case nbdcopy-up stall s2c optreply:1+0
    fault_case nbdinfo stall c2s cflags:1+2
    fault_case qemu-io stall c2s option:1+0
    # Stalls in transmission: a READ reply the client stops reading, a WRITE payload that stops.
    stall_transmission qemu-io-bigread s2c chunk.read:1+1000
    stall_transmission qemu-io-bigwrite c2s request.write:1+1000
    ;;
full)
    for peer in qemu-io nbdcopy-up nbdcopy-down nbdinfo nbdinfo-map; do
        # A fresh server for each peer: lib.sh gives a server a hard deadline of 300 s, and the
        # whole full set takes longer.
        stop_server
        start_server_unix -v --handshake-timeout "$HANDSHAKE_TIMEOUT" disk=file:"$T/disk.img" other=memory:1M
        rm -f "$T/trace"
        start_proxy "$SERVER_SOCK" --trace "$T/trace"
        run_peer "$peer" "nbd+unix:///disk?socket=$PROXY_SOCK"
        stop_proxy
        [ "$RC" -eq 0 ] || { cat "$T/case.err" >&2; fail "clean run of $peer through the proxy failed"; }
        wait_closed 5 || fail "clean run of $peer: the server did not close the connection"
        log "clean run of $peer: $(wc -l <"$T/trace") messages"
        while read -r conn dir kind sub index start length; do
            [ "$conn" = 1 ] || continue
            offs=$(printf '%s\n' 0 1 $((length / 2)) $((length - 1)) | awk -v l="$length" '$1 < l' | sort -nu)
            for off in $offs; do
                fault_case "$peer" cut "$dir" "$kind:$index+$off"
            done
        done <"$T/trace"
    done
    ;;
*) fail "unknown set $SET" ;;
esac

if [ -s "$T/messages" ]; then
    log "what the server logged about the faulted connections (numbers as N):"
    sort "$T/messages" | grep -v '^$' | uniq -c | sort -rn | sed 's/^/    /' >&2
fi
_sanitizer_report "$SERVER_ERR" && fail "nbdwire-server: sanitizer report"
stop_server
summary
