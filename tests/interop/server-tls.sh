# nbdwire-server with TLS (--tls=on|require) under real TLS clients. One mode per ctest:
#   x509       nbdinfo, nbdcopy (checksummed round trip), qemu-img and qemu-io (tls-creds-x509)
#              over Unix and TCP; a plaintext client is refused; --tls-verify-peer
#   psk        nbdinfo and qemu-io with pre-shared keys; a wrong key is refused
#   selective  --tls=on with a tls-only export and a plaintext one
#   hostile    raw clients: plaintext injected after STARTTLS, options before STARTTLS,
#              STARTTLS with data and twice, a pipelined ClientHello, TLS 1.1 offered
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls-lib.sh"

mode=${1:?mode: x509, psk, selective or hostile}
need_server
need_peer nbdinfo nbdcopy qemu-io qemu-img python3
tls_make_pki "$T/pki"
P=$T/pki

case $mode in
x509)
    rand_file "$T/data.img" $((8 * 1024 * 1024))
    truncate -s $((8 * 1024 * 1024)) "$T/disk.img"
    start_server_unix -v --tls=require --tls-certificates="$P/server" disk=file:"$T/disk.img"
    uri="nbds+unix:///disk?socket=$SERVER_SOCK&tls-certificates=$P/client"
    step "nbdinfo --json" nbdinfo --json "$uri" >"$T/info.json"
    grep -q '"TLS": true' "$T/info.json" || fail "nbdinfo does not report TLS"
    step "nbdcopy into the export" nbdcopy "$T/data.img" "$uri"
    step "nbdcopy out of it" nbdcopy "$uri" "$T/back.img"
    same_file "$T/data.img" "$T/back.img" "round trip over TLS"
    same_file "$T/data.img" "$T/disk.img" "the file behind the export"
    creds="tls-creds-x509,id=tls0,dir=$P/client,endpoint=client"
    opts="driver=nbd,server.type=unix,server.path=$SERVER_SOCK,export=disk,tls-creds=tls0,tls-hostname=localhost"
    step "qemu-img info" qemu-img info --object "$creds" --image-opts "$opts" >"$T/qemu-img.out"
    grep -q 'virtual size: 8 MiB' "$T/qemu-img.out" || fail "qemu-img info: $(cat "$T/qemu-img.out")"
    step "qemu-io write and read" qemu-io --object "$creds" --image-opts "$opts" \
        -c 'write -P 0xa5 1M 64k' -c 'read -P 0xa5 1M 64k' >"$T/qemu-io.out"
    grep -q 'read 65536/65536' "$T/qemu-io.out" || fail "qemu-io did not read back: $(cat "$T/qemu-io.out")"
    step_fails "plaintext nbdinfo" nbdinfo --size "nbd+unix:///disk?socket=$SERVER_SOCK"
    grep -qi 'requires TLS' "$T/step.err" || fail "nbdinfo gave no TLS message"
    grep -q ": TLS: TLS1.[23], X.509$" "$SERVER_ERR" || fail "-v logged no TLS session"
    stop_server
    # TCP, with the host name checked by libnbd.
    start_server_tcp --tls=require --tls-certificates="$P/server" disk=memory:1M
    step "nbdinfo over TCP" nbdinfo --size "nbds://localhost:$SERVER_PORT/disk?tls-certificates=$P/client" >"$T/size"
    expect_eq "$(cat "$T/size")" 1048576 "size over TCP"
    step_fails "a CA that did not sign the server" \
        nbdinfo --size "nbds://localhost:$SERVER_PORT/disk?tls-certificates=$P/wrong-ca"
    stop_server
    # Client certificates required.
    start_server_unix --tls=require --tls-certificates="$P/server" --tls-verify-peer disk=memory:1M
    step "nbdinfo with a client certificate" \
        nbdinfo --size "nbds+unix:///disk?socket=$SERVER_SOCK&tls-certificates=$P/client" >/dev/null
    step_fails "nbdinfo without one" nbdinfo --size "nbds+unix:///disk?socket=$SERVER_SOCK&tls-certificates=$P/ca-only"
    grep -qi "certificate" "$SERVER_ERR" || fail "the server logged nothing about the missing certificate"
    sed 's/^/    | /' "$SERVER_ERR" >&2
    stop_server
    step_fails "a missing certificate directory is refused at start" \
        "$NBDWIRE_SERVER" --unix "$T/x.sock" --tls=require --tls-certificates="$P/nonexistent" disk=memory:1M
    grep -q "cannot load .*/nonexistent/server-cert.pem" "$T/step.err" ||
        fail "no clear message for a missing certificate directory"
    ;;
psk)
    start_server_unix --tls=require --tls-psk="$P/psk.keys" disk=memory:2M
    step "nbdinfo with alice's key" nbdinfo --size "nbds+unix://alice@/disk?socket=$SERVER_SOCK&tls-psk-file=$P/psk.keys" >"$T/size"
    expect_eq "$(cat "$T/size")" 2097152 "size"
    mkdir -p "$T/pskdir" && cp "$P/psk.keys" "$T/pskdir/keys.psk"
    step "qemu-io with tls-creds-psk" qemu-io \
        --object "tls-creds-psk,id=tls0,dir=$T/pskdir,username=alice,endpoint=client" \
        --image-opts "driver=nbd,server.type=unix,server.path=$SERVER_SOCK,export=disk,tls-creds=tls0" \
        -c 'write -P 0x3c 0 4k' -c 'read -P 0x3c 0 4k' >"$T/qemu-io.out"
    grep -q 'read 4096/4096' "$T/qemu-io.out" || fail "qemu-io: $(cat "$T/qemu-io.out")"
    step_fails "a wrong key" nbdinfo --size "nbds+unix://alice@/disk?socket=$SERVER_SOCK&tls-psk-file=$P/wrong.keys"
    grep -q "PSK rejected" "$SERVER_ERR" || fail "the server did not say the PSK was rejected"
    stop_server
    ;;
selective)
    start_server_unix --tls=on --tls-certificates="$P/server" open=memory:1M 'secret=memory:2M,tls-only'
    plain="nbd+unix:///?socket=$SERVER_SOCK"
    step "plaintext list" nbdinfo --list --json "$plain" >"$T/list.json"
    grep -q '"export-name": "open"' "$T/list.json" || fail "LIST lacks the plaintext export"
    if grep -q '"secret"' "$T/list.json"; then fail "plaintext LIST shows the tls-only export"; fi
    step "plaintext open export" nbdinfo --size "nbd+unix:///open?socket=$SERVER_SOCK" >/dev/null
    step_fails "plaintext tls-only export" nbdinfo --size "nbd+unix:///secret?socket=$SERVER_SOCK"
    step "the tls-only export over TLS" \
        nbdinfo --size "nbds+unix:///secret?socket=$SERVER_SOCK&tls-certificates=$P/client" >"$T/size"
    expect_eq "$(cat "$T/size")" 2097152 "size of the tls-only export"
    step "TLS list" nbdinfo --list --json "nbds+unix:///?socket=$SERVER_SOCK&tls-certificates=$P/client" >"$T/tlist.json"
    grep -q '"export-name": "secret"' "$T/tlist.json" || fail "LIST over TLS lacks the tls-only export"
    stop_server
    ;;
hostile)
    start_server_unix -v --tls=require --tls-certificates="$P/server" disk=memory:1M
    step "raw clients" python3 - "$SERVER_SOCK" "$P/client/ca-cert.pem" <<'EOF'
import socket, ssl, struct, sys
path, ca = sys.argv[1], sys.argv[2]
IHAVEOPT, REPLY = 0x49484156454F5054, 0x3e889045565a9

def connect():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    g = recvn(s, 18)
    assert g[:8] == b"NBDMAGIC", g
    s.sendall(struct.pack(">I", 3))
    return s

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return b
        b += c
    return b

def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data

def reply(s):
    h = recvn(s, 20)
    assert len(h) == 20, f"short reply header {h!r}"
    magic, o, t, n = struct.unpack(">QIII", h)
    assert magic == REPLY, h
    return o, t, recvn(s, n)

ACK, ERR_INVALID, ERR_TLS_REQD = 1, 0x80000003, 0x80000005

# FORCEDTLS: options before STARTTLS are refused, their data consumed, the connection usable.
s = connect()
s.sendall(opt(7, struct.pack(">I", 4) + b"disk" + struct.pack(">H", 0)) + opt(3) + opt(99, b"x" * 9))
for want in (7, 3, 99):
    o, t, _ = reply(s)
    assert (o, t) == (want, ERR_TLS_REQD), (o, hex(t))
# STARTTLS with data: ERR_INVALID, the data consumed; then ABORT is acknowledged.
s.sendall(opt(5, b"abc") + opt(2))
assert reply(s)[:2] == (5, ERR_INVALID)
assert reply(s)[:2] == (2, ACK)
s.close()
print("FORCEDTLS refusals: ok")

# Plaintext injected after STARTTLS in the same segment: only the ACK comes back, the
# injected option is never answered, and the handshake fails.
s = connect()
s.sendall(opt(5) + opt(3))
assert reply(s)[:2] == (5, ACK)
rest = b""
try:
    while True:
        c = s.recv(4096)
        if not c:
            break
        rest += c
except (ConnectionResetError, socket.timeout):
    pass
assert struct.pack(">Q", REPLY) not in rest, "the injected option was answered"
assert not rest or rest[0] == 0x15, f"expected a TLS alert or nothing, got {rest[:8]!r}"
s.close()
print("plaintext after STARTTLS: never answered")

# A ClientHello pipelined in the same segment as STARTTLS: the handshake succeeds, and
# STARTTLS twice (now inside TLS) gets ERR_INVALID.
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname="localhost")
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
s = connect()
s.sendall(opt(5) + out.read())
assert reply(s)[:2] == (5, ACK)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        data = out.read()
        if data:
            s.sendall(data)
        c = s.recv(65536)
        assert c, "the server closed during the handshake"
        inc.write(c)
s.sendall(out.read())
tls.write(opt(5))
s.sendall(out.read())
buf = b""
while len(buf) < 20:
    try:
        buf += tls.read(20 - len(buf))
    except ssl.SSLWantReadError:
        inc.write(s.recv(65536))
_, o, t, _ = struct.unpack(">QIII", buf)
assert (o, t) == (5, ERR_INVALID), (o, hex(t))
s.close()
print("pipelined ClientHello: handshake ok; STARTTLS twice: ERR_INVALID")

# TLS 1.1 offered: refused by the server (a protocol_version alert), unlike the peers.
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
import warnings
warnings.simplefilter("ignore", DeprecationWarning)
ctx.minimum_version = ssl.TLSVersion.TLSv1
ctx.maximum_version = ssl.TLSVersion.TLSv1_1
s = connect()
s.sendall(opt(5))
assert reply(s)[:2] == (5, ACK)
try:
    ctx.wrap_socket(s, server_hostname="localhost")
    raise SystemExit("a TLS 1.1 handshake succeeded")
except ssl.SSLError as e:
    print("TLS 1.1 refused:", e.reason)
    # The server's own answer (not a local refusal to offer TLS 1.1).
    assert e.reason == "TLSV1_ALERT_PROTOCOL_VERSION", e.reason
EOF
    sed 's/^/    | /' "$SERVER_ERR" >&2
    stop_server
    ;;
*) fail "unknown mode $mode" ;;
esac
log PASS
