# nbdwire-client in TLS-required mode (nbds://) against a fake server that tries every way
# around TLS ("TLS support"; docs/tls.md): each attempt must end the connection with a clear
# error, promptly, and the client must send nothing in plaintext after STARTTLS but an
# NBD_OPT_ABORT (after a refusal) or TLS records.
#   modes: policy unsup not-fixed oldstyle ack-data ack-forged ack-close tls11
# and, without TLS, shutdown: NBD_REP_ERR_SHUTDOWN to the first option, after which the client
# MUST send NBD_OPT_ABORT ("Option haggling") before it closes; list-flood and meta-flood:
# NBD_REP_SERVER or NBD_REP_META_CONTEXT replies without end, which the client must stop
# reading with a clear error and bounded memory; escape: an error message with ESC, BEL and
# bytes that are not UTF-8, which must reach the terminal escaped.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls-lib.sh"

mode=${1:?mode}
need_client
need_peer python3
[ -x /usr/bin/time ] || fail "GNU time (/usr/bin/time, Debian package time) is not installed"
tls_make_pki "$T/pki"
sock=$T/fake.sock

# The fake server: one connection, the scenario, and a record of what the client sent after
# its STARTTLS request (hex) in $T/after.hex.
python3 - "$sock" "$mode" "$T/pki/server" "$T/after.hex" >"$T/fake.log" 2>&1 <<'EOF' &
import os, socket, ssl, struct, sys, time
path, mode, pki, record = sys.argv[1:5]
IHAVEOPT, REPLY = 0x49484156454F5054, 0x3e889045565a9
ACK, ERR_UNSUP, ERR_POLICY = 1, 0x80000001, 0x80000002
srv = socket.socket(socket.AF_UNIX)
srv.bind(path + ".tmp"); srv.listen(1); os.rename(path + ".tmp", path)
c, _ = srv.accept()
c.settimeout(10)
def recvn(n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x: break
        b += x
    return b
def reply(opt, typ, data=b""):
    return struct.pack(">QIII", REPLY, opt, typ, len(data)) + data
if mode == "oldstyle":
    c.sendall(b"NBDMAGIC" + struct.pack(">QQH", 0x00420281861253, 1 << 20, 1) + bytes(124))
    time.sleep(2); sys.exit(0)
c.sendall(b"NBDMAGIC" + struct.pack(">QH", IHAVEOPT, 2 if mode == "not-fixed" else 3))
flags = recvn(4)
if mode == "not-fixed":
    rest = recvn(16)
    open(record, "w").write(rest.hex())
    sys.exit(0)
if mode in ("list-flood", "meta-flood"):
    sent = 0
    try:
        while True:
            _, opt, length = struct.unpack(">QII", recvn(16))
            recvn(length)
            if opt in (3, 9):  # LIST, LIST_META_CONTEXT: replies without end
                while True:
                    name = b"export-%09d" % sent if opt == 3 else b"base:context-%09d" % sent
                    body = struct.pack(">I", len(name)) + name if opt == 3 else struct.pack(">I", sent) + name
                    c.sendall(reply(opt, 2 if opt == 3 else 4, body))
                    sent += 1
            c.sendall(reply(opt, ERR_UNSUP))
    except (BrokenPipeError, ConnectionResetError, socket.timeout, struct.error):
        pass
    print(f"sent {sent} replies before the client stopped reading")
    sys.exit(0)
hdr = recvn(16)
_, opt, length = struct.unpack(">QII", hdr)
after = b""
if mode == "shutdown":
    recvn(length)
    c.sendall(reply(opt, 0x80000007, b"going down"))
elif mode == "escape":
    # Preliminaries (extended headers, structured replies) refused; GO or INFO answered with
    # ERR_UNKNOWN carrying the hostile message.
    while True:
        recvn(length)
        if opt in (6, 7):
            c.sendall(reply(opt, 0x80000006, b"\x1b]0;owned\x07\x1b[31mred\xff\xfe"))
            break
        c.sendall(reply(opt, ERR_UNSUP))
        _, opt, length = struct.unpack(">QII", recvn(16))
else:
    assert opt == 5 and length == 0, f"first option {opt} (length {length}), expected STARTTLS"
if mode in ("shutdown", "escape"):
    pass
elif mode in ("policy", "unsup"):
    c.sendall(reply(5, ERR_POLICY if mode == "policy" else ERR_UNSUP, b"no TLS here"))
elif mode == "ack-data":
    c.sendall(reply(5, ACK, b"junk"))
elif mode == "ack-forged":
    # The ACK and, in the same segment, a forged plaintext GO answer (INFO export + ACK).
    info = struct.pack(">HQH", 0, 1 << 20, 1)
    c.sendall(reply(5, ACK) + reply(7, 3, info) + reply(7, ACK))
elif mode == "ack-close":
    c.sendall(reply(5, ACK)); c.close(); open(record, "w").write(""); sys.exit(0)
elif mode == "tls11":
    c.sendall(reply(5, ACK))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    import warnings; warnings.simplefilter("ignore", DeprecationWarning)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.load_cert_chain(pki + "/server-cert.pem", pki + "/server-key.pem")
    try:
        ctx.wrap_socket(c, server_side=True)
        print("TLS 1.1 handshake completed")
    except (ssl.SSLError, OSError) as e:
        print("handshake ended:", e)
    sys.exit(0)
try:
    while True:
        x = c.recv(4096)
        if not x: break
        after += x
except socket.timeout:
    pass
open(record, "w").write(after.hex())
EOF
PIDS+=("$!")
fake=$!
wait_unix_socket "$sock"
uri="nbds+unix:///?socket=$sock&tls-certificates=$T/pki/client&tls-hostname=localhost"
case $mode in shutdown|list-flood|meta-flood|escape) uri="nbd+unix:///?socket=$sock" ;; esac
cmd=info
[ "$mode" = list-flood ] && cmd=list
# Memory stays bounded: the peak resident size is recorded (GNU time's %M, in KiB).
step_fails "nbdwire-client $cmd ($mode)" /usr/bin/time -f 'maxrss %M' -o "$T/rss" "$NBDWIRE_CLIENT" "$cmd" "$uri"
rss=$(sed -n 's/^maxrss //p' "$T/rss")
log "   peak resident memory: ${rss} KiB"
[ "${rss:-0}" -lt 262144 ] || fail "nbdwire-client grew to ${rss} KiB"
wait "$fake" || { sed 's/^/    | fake: /' "$T/fake.log" >&2; fail "the fake server failed"; }
sed 's/^/    | fake: /' "$T/fake.log" >&2
case $mode in
policy|unsup) grep -q "refused STARTTLS" "$T/step.err" || fail "no clear message for a refused STARTTLS" ;;
not-fixed) grep -q "not fixed newstyle\|fixed newstyle" "$T/step.err" || fail "no clear message for a non-fixed server" ;;
oldstyle) grep -q "oldstyle" "$T/step.err" || fail "no clear message for an oldstyle server" ;;
ack-data) grep -qi "ack_with_data\|ACK.*data" "$T/step.err" || fail "no clear message for an ACK with data" ;;
ack-forged|tls11) grep -qi "TLS\|handshake" "$T/step.err" || fail "no TLS handshake failure reported" ;;
ack-close) grep -qi "closed\|TLS\|handshake" "$T/step.err" || fail "no message for a close after the ACK" ;;
shutdown) grep -qi "shut" "$T/step.err" || fail "no message for ERR_SHUTDOWN" ;;
escape)
    if LC_ALL=C grep -q "$(printf '[\033\007\377\376]')" "$T/step.err"; then fail "raw control or invalid bytes reached stderr"; fi
    grep -qF '\x1b[31mred\xff\xfe' "$T/step.err" || fail "the message is not shown escaped: $(cat -v "$T/step.err")" ;;
list-flood) grep -q "listed more than 100000 exports" "$T/step.err" || fail "no clear message for an endless LIST" ;;
meta-flood) grep -q "listed more than 10000 metadata contexts" "$T/step.err" || fail "no clear message for endless contexts" ;;
esac
# What the client sent after STARTTLS: nothing, an NBD_OPT_ABORT, or TLS records (0x16...).
if [ -s "$T/after.hex" ]; then
    after=$(cat "$T/after.hex")
    abort=$(printf '%016x%08x%08x' 0x49484156454F5054 2 0)
    case $after in
    "$abort") log "   the client sent NBD_OPT_ABORT after the refusal" ;;
    16*) log "   the client sent only TLS records after STARTTLS" ;;
    *) fail "the client sent plaintext after STARTTLS: $after" ;;
    esac
fi
if [ "$mode" = not-fixed ] && [ -s "$T/after.hex" ]; then fail "the client sent options to a non-fixed server"; fi
# A refusal the client ends the connection over is followed by NBD_OPT_ABORT (a soft
# disconnect; after ERR_SHUTDOWN a MUST).
case $mode in policy|unsup|shutdown)
    [ "$(cat "$T/after.hex")" = "$(printf '%016x%08x%08x' 0x49484156454F5054 2 0)" ] ||
        fail "no NBD_OPT_ABORT after the refusal (got '$(cat "$T/after.hex")')" ;;
esac
log PASS
