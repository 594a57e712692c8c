#!/usr/bin/env bash
# --debug on both tools: every state change of each connection's protocol machine is logged
# (include/nbdwire/trace.hpp), one "FROM -TRIGGER-> TO" line each. Checked against real peers:
# nbdwire-server traced under nbdinfo and qemu-io, nbdwire-client traced against nbdkit and
# against nbdwire-server. Per connection the lines form one chain (each move leaves the state
# the last one reached) from the machine's first state, through the moves a session must make.
. "$(dirname "$0")/lib.sh"
need_server
need_client
need_peer python3 nbdinfo nbdkit qemu-io

# check_trace FILE WHO FIRST MOVE...: the --debug lines of WHO (nbdwire-server or
# nbdwire-client) in FILE, grouped by connection, are well-formed chains starting at FIRST,
# and each connection makes every MOVE ("FROM -TRIGGER-> TO").
check_trace() {
    python3 - "$@" <<'PY' || fail "$2 --debug lines in $1 are not what they must be"
import re, sys
path, who, first, *moves = sys.argv[1:]
line_re = {
    "nbdwire-server": re.compile(r"^nbdwire-server: (.+): debug: (.*)$"),
    "nbdwire-client": re.compile(r"^nbdwire-client: debug: (connection \d+): (.*)$"),
}[who]
move_re = re.compile(r"^([a-z0-9_]+) -([a-z0-9_]+)-> ([a-z0-9_]+)$")
chains = {}
for raw in open(path, encoding="utf-8", errors="replace"):
    m = line_re.match(raw.rstrip("\n"))
    if not m:
        continue
    mv = move_re.match(m.group(2))
    if not mv:
        sys.exit(f"malformed move: {raw!r}")
    chains.setdefault(m.group(1), []).append(mv.groups())
if not chains:
    sys.exit(f"no {who} --debug lines")
for conn, chain in chains.items():
    if chain[0][0] != first:
        sys.exit(f"{conn}: starts at {chain[0][0]}, not {first}")
    for a, b in zip(chain, chain[1:]):
        if b[0] != a[2]:
            sys.exit(f"{conn}: {a} then {b}: the chain breaks")
    seen = {f"{f} -{t}-> {to}" for f, t, to in chain}
    for want in moves:
        if want not in seen:
            sys.exit(f"{conn}: no move {want!r} among {len(chain)}")
    print(f"{conn}: {len(chain)} moves, a chain from {first}")
PY
}

# nbdwire-server, traced, under nbdinfo (LIST, then INFO/GO per export) and qemu-io (I/O).
start_server_unix --debug disk=memory:1M
step "nbdinfo --list" nbdinfo --list "nbd+unix://?socket=$SERVER_SOCK" >/dev/null
step "qemu-io writes and reads" qemu-io -f raw -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k' \
    "nbd+unix:///disk?socket=$SERVER_SOCK" >/dev/null
stop_server
check_trace "$SERVER_ERR" nbdwire-server start \
    "start -greeting_queued-> awaiting_client_flags" \
    "awaiting_client_flags -client_flags-> negotiating" \
    "negotiating -option_header-> option_data"
# qemu-io's connection reached transmission, wrote (payload) and ended with DISC.
grep -q ': debug: answering_option -export_chosen-> transmission$' "$SERVER_ERR" || fail "no export chosen in the trace"
grep -q ': debug: transmission -write_request-> write_payload$' "$SERVER_ERR" || fail "no WRITE payload in the trace"
grep -q ': debug: transmission -disc-> closed$' "$SERVER_ERR" || fail "no DISC in the trace"
# Without --debug, nothing of it.
start_server_unix disk=memory:1M
step "nbdinfo without --debug" nbdinfo "nbd+unix:///disk?socket=$SERVER_SOCK" >/dev/null
stop_server
if grep -q ': debug: ' "$SERVER_ERR"; then fail "debug lines without --debug"; fi

# nbdwire-client, traced, against nbdkit: the plan (extended headers, SET_META_CONTEXT, GO),
# a READ, and DISC.
sock=$T/nbdkit.sock
start_nbdkit "$sock" memory 1M
step "nbdwire-client --debug read" "$NBDWIRE_CLIENT" --debug read "nbd+unix:///?socket=$sock" --length 4096 >"$T/read.out"
cp "$T/step.err" "$T/client-nbdkit.err"
expect_eq "$(stat -c %s "$T/read.out")" 4096 "bytes read"
check_trace "$T/client-nbdkit.err" nbdwire-client awaiting_greeting \
    "awaiting_greeting -newstyle_greeting-> negotiating" \
    "awaiting_option_reply -go_acked-> transmission" \
    "transmission -disc_sent-> disconnecting"
# Against nbdwire-server, the same for an nbdinfo-style query, and a 4-connection copy gets
# four chains.
start_server_unix disk=memory:8M
step "nbdwire-client --debug --size" "$NBDWIRE_CLIENT" --debug --size "nbd+unix:///disk?socket=$SERVER_SOCK" >"$T/size.out"
expect_eq "$(cat "$T/size.out")" 8388608 "size"
check_trace "$T/step.err" nbdwire-client awaiting_greeting "awaiting_option_reply -go_acked-> transmission"
rand_file "$T/src" $((8 * 1024 * 1024))
step "nbdwire-client --debug copy, 4 connections" "$NBDWIRE_CLIENT" --debug copy --connections 4 "$T/src" \
    "nbd+unix:///disk?socket=$SERVER_SOCK"
cp "$T/step.err" "$T/copy.err"
check_trace "$T/copy.err" nbdwire-client awaiting_greeting "awaiting_option_reply -go_acked-> transmission"
conns=$(grep -o '^nbdwire-client: debug: connection [0-9]*:' "$T/copy.err" | sort -u | wc -l)
[ "$conns" -ge 2 ] || fail "copy with --connections 4 traced $conns connection(s)"
log "   the copy traced $conns connections"
stop_server
log PASS
