# nbdwire-client through the fault proxy, against nbdkit or nbdwire-server serving a file:
#   bash client.sh SERVER CLIENT PEER SET
# PEER is nbdkit or nbdwire-server; SET is default (a representative cut per message kind,
# direction and command), full (every message of a clean run of each command, cut at its
# boundary and at 1, half and all but one of its bytes; the list comes from the proxy's trace)
# or stall (the server stops sending: fails, as nbdwire-client has no timeout).
#
# Every case must end with nbdwire-client exiting 1 with one clear message, promptly, without
# a crash or sanitizer report; success is allowed only when the cut comes after the last reply
# (in NBD_CMD_DISC), and then its output must be right. A write or upload that reports success
# must have all its data in the server's file (so a cut during the FLUSH reply must fail); a
# download that fails must leave no file behind (the copy created it), and may say so in one
# more line before its error.
. "$(dirname "$0")/lib.sh"
need_client
PEER=${1:?PEER}
SET=${2:?SET}
SUMMARY_TAG="$PEER $SET"

SIZE=$((4 * 1024 * 1024))
rand_file "$T/disk.img" "$SIZE"
case $PEER in
    nbdkit)
        # One worker thread: nbdkit 1.32 with several aborts when a client vanishes while two
        # READ replies are being sent (connections.c raw_send_socket: Assertion `sock >= 0'),
        # a bug of nbdkit that would end every later case. Should it die anyway, it is
        # restarted and counted (ensure_upstream).
        need_peer nbdkit
        UP_SOCK=$T/up.sock
        start_nbdkit "$UP_SOCK" --threads 1 file "$T/disk.img"
        UP_PID=$BG_PID
        ;;
    nbdwire-server)
        start_server_unix -v disk=file:"$T/disk.img"
        UP_SOCK=$SERVER_SOCK
        UP_PID=$SERVER_PID
        ;;
    *) fail "unknown peer $PEER" ;;
esac

COMMANDS=(info read write copy-up copy-down)
PEER_DEATHS=0

# ensure_upstream: nbdkit is restarted if a case killed it (a bug of nbdkit, counted and
# reported); nbdwire-server must never die.
ensure_upstream() {
    kill -0 "$UP_PID" 2>/dev/null && return 0
    wait "$UP_PID" 2>/dev/null || true
    _forget_pid "$UP_PID"
    [ "$PEER" = nbdkit ] || { sed 's/^/    | /' "$SERVER_ERR" >&2; fail "nbdwire-server died"; }
    PEER_DEATHS=$((PEER_DEATHS + 1))
    sed 's/^/    | /' "$T/nbdkit.err" >&2
    log "   nbdkit died (its own bug, see above); restarting it"
    rm -f "$UP_SOCK"
    start_nbdkit "$UP_SOCK" --threads 1 file "$T/disk.img"
    UP_PID=$BG_PID
}

# run_command CMD URI: one command of nbdwire-client; output in $T/case.out, stderr in
# $T/case.err; sets RC and ELAPSED_MS. Prepares its input and the expected result.
# Options every command of a set gets (the stall set: --timeout).
CLIENT_EXTRA=()

run_command() {
    local cmd=$1 uri=$2
    case $cmd in
        info) run_timed "$T/case.out" "$T/case.err" "$NBDWIRE_CLIENT" info "$uri" "${CLIENT_EXTRA[@]}" ;;
        read)
            slice "$T/disk.img" 65536 $((3 * 1024 * 1024)) >"$T/expected"
            run_timed "$T/case.out" "$T/case.err" "$NBDWIRE_CLIENT" read "$uri" --offset 65536 \
                --length $((3 * 1024 * 1024)) "${CLIENT_EXTRA[@]}"
            ;;
        write)
            rand_file "$T/pattern" $((3 * 1024 * 1024))
            run_timed "$T/case.out" "$T/case.err" \
                bash -c 'exec "$0" write "$1" --offset 65536 <"$2"' "$NBDWIRE_CLIENT" "$uri" "$T/pattern"
            ;;
        copy-up)
            rand_file "$T/up.data" "$SIZE"
            run_timed "$T/case.out" "$T/case.err" "$NBDWIRE_CLIENT" copy "$T/up.data" "$uri" --connections 1
            ;;
        copy-down)
            rm -f "$T/down.img"
            run_timed "$T/case.out" "$T/case.err" "$NBDWIRE_CLIENT" copy "$uri" "$T/down.img" --connections 1
            ;;
        *) fail "unknown command $cmd" ;;
    esac
}

# check_success CMD ID: the command succeeded; its result must be right.
check_success() {
    local cmd=$1 id=$2
    case $cmd in
        info) grep -q "$SIZE" "$T/case.out" || case_fail "$id" "info succeeded without the export size" ;;
        read) cmp -s "$T/expected" "$T/case.out" || case_fail "$id" "read succeeded with wrong data" ;;
        write)
            slice "$T/disk.img" 65536 $((3 * 1024 * 1024)) | cmp -s - "$T/pattern" ||
                case_fail "$id" "write reported success but its data is not in the server's file"
            ;;
        copy-up) cmp -s "$T/up.data" "$T/disk.img" ||
            case_fail "$id" "upload reported success but the server's file differs" ;;
        copy-down) cmp -s "$T/disk.img" "$T/down.img" ||
            case_fail "$id" "download reported success with wrong data" ;;
    esac
}

# fault_case CMD ACTION DIR POS EXPECT: one case; EXPECT is fail or any.
fault_case() {
    local cmd=$1 action=$2 dir=$3 pos=$4 expect=$5 id msg
    CASES=$((CASES + 1))
    id="#$CASES $cmd --$action $dir $pos"
    ensure_upstream
    start_proxy "$UP_SOCK" "--$action" "$dir" "$pos"
    run_command "$cmd" "nbd+unix:///?socket=$PROXY_SOCK"
    stop_proxy
    msg=$(tail -n 1 "$T/case.err")
    if ! proxy_fired; then
        case_fail "$id" "the fault never fired (exit status $RC)"
    elif [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
        case_fail "$id" "nbdwire-client did not end within ${CASE_TIMEOUT}s"
    elif [ "$RC" -ge 128 ]; then
        case_fail "$id" "nbdwire-client was killed by signal $((RC - 128)): $msg"
    elif _sanitizer_report "$T/case.err"; then
        case_fail "$id" "sanitizer report"
    elif [ "$RC" -eq 0 ]; then
        if [ "$expect" = fail ]; then
            case_fail "$id" "nbdwire-client succeeded although the connection was cut before its last reply"
        fi
        check_success "$cmd" "$id"
        log "   $id: succeeded (allowed: the fault comes after the last reply), ${ELAPSED_MS} ms"
    elif [ "$RC" -ne 1 ]; then
        case_fail "$id" "exit status $RC, expected 1: $msg"
    elif [ "$(grep -cv '^nbdwire-client: removed .*, which the failed copy had created$' "$T/case.err")" -ne 1 ] ||
        [[ $msg != nbdwire-client:* ]] ||
        [[ $msg == *internal* ]] || [[ $msg == *terminate* ]]; then
        sed 's/^/    | /' "$T/case.err" >&2
        case_fail "$id" "the error is not one clear message"
    elif [ "$cmd" = copy-down ] && [ -e "$T/down.img" ]; then
        case_fail "$id" "the failed download left $T/down.img behind"
    else
        log "   $id: failed as required in ${ELAPSED_MS} ms: $msg"
        printf '%s\n' "$msg" | sed 's/[0-9][0-9]*/N/g' >>"$T/messages"
    fi
}

if [ "$SET" = default ]; then
    # One cut per message kind and direction at its boundary and one inside it, spread over
    # the commands; the FLUSH reply and WRITE payload cuts are the write-loss checks.
    while read -r cmd dir pos expect; do
        [ -n "$cmd" ] && [[ $cmd != \#* ]] || continue
        fault_case "$cmd" cut "$dir" "$pos" "$expect"
    done <<'EOF'
info      s2c greeting:1+0              fail
read      s2c greeting:1+9              fail
write     s2c optreply:1+0              fail
copy-up   s2c optreply.go:2+7           fail
write     s2c reply.write:1+0           fail
write     s2c reply.flush:1+0           fail
write     s2c reply.flush:1+9           fail
copy-up   s2c reply.flush:1+0           fail
copy-up   s2c reply.write:2+3           fail
read      s2c reply.read:1+0            fail
read      s2c reply.read:1+5000         fail
copy-down s2c reply.block_status:1+10   fail
copy-down s2c reply.read:2+0            fail
info      s2c reply.read:1+100          fail
read      s2c 300                       fail
info      c2s cflags:1+0                fail
read      c2s cflags:1+2                fail
write     c2s option:1+0                fail
copy-down c2s option.go:1+10            fail
write     c2s request.write:1+0         fail
copy-up   c2s request.write:1+70000     fail
copy-up   c2s request.write:2+27        fail
write     c2s request.flush:1+0         fail
copy-up   c2s request.flush:1+14        fail
read      c2s request.read:1+0          fail
copy-down c2s request.read:1+20         fail
write     c2s 200                       fail
info      c2s request.disc:1+0          any
write     c2s request.disc:1+0          any
EOF
    # The same messages in other kinds only the simple-reply server sends.
    if [ "$PEER" = nbdkit ]; then
        fault_case write cut s2c simple.flush:1+4 fail
        fault_case read cut s2c chunk.read:1+19 fail
    fi
elif [ "$SET" = stall ]; then
    # The server stops sending (without closing) in the handshake and in a READ reply: the
    # greeting has its own 10 s deadline, the rest --timeout.
    CLIENT_EXTRA=(--timeout 2)
    fault_case info stall s2c greeting:1+0 fail
    fault_case read stall s2c reply.read:1+100 fail
    fault_case info stall s2c optreply:1+10 fail
    grep -q "sent and took nothing for 2 s (--timeout)" "$T/case.err" ||
        fail "the last stall did not end with the --timeout message: $(cat "$T/case.err")"
else
    # Every message of a clean run of each command, from the proxy's trace.
    for cmd in "${COMMANDS[@]}"; do
        # A fresh upstream for each command: lib.sh gives peers a hard deadline of 300 s, and
        # the whole full set may take longer.
        if [ "$PEER" = nbdkit ]; then
            kill -TERM "$UP_PID" 2>/dev/null || true
            wait "$UP_PID" 2>/dev/null || true
            _forget_pid "$UP_PID"
            rm -f "$UP_SOCK"
            start_nbdkit "$UP_SOCK" --threads 1 file "$T/disk.img"
            UP_PID=$BG_PID
        else
            stop_server
            start_server_unix -v disk=file:"$T/disk.img"
            UP_SOCK=$SERVER_SOCK
            UP_PID=$SERVER_PID
        fi
        rm -f "$T/trace"
        start_proxy "$UP_SOCK" --trace "$T/trace"
        run_command "$cmd" "nbd+unix:///?socket=$PROXY_SOCK"
        stop_proxy
        [ "$RC" -eq 0 ] || { cat "$T/case.err" >&2; fail "clean run of $cmd through the proxy failed"; }
        check_success "$cmd" "clean $cmd"
        [ "$CASES_FAILED" -eq 0 ] || fail "clean run of $cmd gave a wrong result"
        log "clean run of $cmd: $(wc -l <"$T/trace") messages"
        # conn dir kind sub index start length
        while read -r conn dir kind sub index start length; do
            [ "$conn" = 1 ] || continue
            expect=fail
            [ "$sub" = disc ] && expect=any
            offs=$(printf '%s\n' 0 1 $((length / 2)) $((length - 1)) | awk -v l="$length" '$1 < l' | sort -nu)
            for off in $offs; do
                fault_case "$cmd" cut "$dir" "$kind:$index+$off" "$expect"
            done
        done <"$T/trace"
    done
fi

if [ -s "$T/messages" ]; then
    log "distinct error messages (numbers as N):"
    sort "$T/messages" | uniq -c | sort -rn | sed 's/^/    /' >&2
fi
ensure_upstream
[ "$PEER_DEATHS" -eq 0 ] || log "nbdkit died $PEER_DEATHS times during the cases (restarted each time)"
if [ "$PEER" = nbdwire-server ]; then
    _sanitizer_report "$SERVER_ERR" && fail "nbdwire-server: sanitizer report"
    stop_server
fi
summary
