# nbdwire-client over TLS (nbds://, nbds+unix://) against nbdkit, qemu-nbd and nbd-server, and
# every way a TLS connection must be refused. Fresh certificates and keys each run
# (tls-lib.sh). Argument: the mode.
#   nbdkit-x509     Unix socket (tls-hostname=localhost) and TCP (nbds://localhost:PORT, with
#                   nbdkit --tls-verify-peer and the client certificate): info, --is tls, the
#                   round trip, copies export -> file, file -> export, export -> export,
#                   checked against the files behind the servers
#   nbdkit-psk      nbds+unix://alice@/?socket=..&tls-psk-file=..
#   qemu-nbd-x509   qemu-nbd with x509 credentials (it requires a client certificate)
#   qemu-nbd-psk    qemu-nbd with PSK credentials
#   nbd-server      nbd-server with force_tls (it always requires a client certificate)
#   opportunistic   nbdkit --tls=on: plain nbd+unix:// still works, without TLS; nbd+unix://
#                   with tls-certificates= uses TLS there and plaintext on a server without it
#   refusals        each must fail with a clear message and nothing written: nbd:// against
#                   --tls=require, a wrong CA, a wrong host name, an expired server certificate,
#                   a wrong PSK, an unknown PSK user, no client certificate for
#                   --tls-verify-peer, nbds:// against a server without TLS and against
#                   an oldstyle one, and malformed TLS URIs
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls-lib.sh"

MODE=${1:?mode}
need_client
PKI=$T/pki
tls_make_pki "$PKI"

size=$((16 * 1024 * 1024))
rand_file "$T/base" "$size"
cp "$T/base" "$T/disk.img"

# tls_checks URI: info --json says TLS, --is tls answers 0 and --is-not tls 2, as nbdinfo.
tls_checks() {
    local uri=$1 rc=0
    client_info_check "$uri" "$size" newstyle-fixed
    expect_eq "$(json_get "$T/info.json" TLS)" true "info --json TLS"
    grep -q 'with TLS' "$T/info.txt" || fail "info does not say 'with TLS'"
    client --is tls "$uri"
    log "+ $NBDWIRE_CLIENT --is-not tls $uri"
    timeout -k 5 "$STEP_TIMEOUT" "$NBDWIRE_CLIENT" --is-not tls "$uri" || rc=$?
    expect_eq "$rc" 2 "--is-not tls exit status"
}

# roundtrip_checked URI: the round trip, then the file behind the server must hold it.
roundtrip_checked() {
    client_roundtrip "$1" "$T/base"
    spliced "$T/base" "$RT_OFFSET" "$RT_DATA" >"$T/expected"
    same_file "$T/expected" "$T/disk.img" "file behind the server"
    cp "$T/expected" "$T/base"
}

# start_nbdkit_tcp NBDKIT-ARGS...: nbdkit on 127.0.0.1 and a free port; sets PORT.
start_nbdkit_tcp() {
    local attempt i
    need_peer nbdkit
    for attempt in 1 2 3; do
        PORT=$(free_port)
        bg nbdkit-tcp nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$PORT" "$@"
        for i in $(seq 100); do
            _tcp_listening "$PORT" && return 0
            kill -0 "$BG_PID" 2>/dev/null || break
            sleep 0.05
        done
        sed 's/^/    | /' "$T/nbdkit-tcp.err" >&2
        log "nbdkit did not listen on $PORT (attempt $attempt)"
    done
    fail "nbdkit did not start on 127.0.0.1"
}

# refused DESCRIPTION PATTERN URI: writing to URI must fail with a message matching PATTERN.
refused() {
    local desc=$1 pattern=$2 uri=$3
    step_fails "$desc" "$NBDWIRE_CLIENT" write "$uri" --offset 0 <"$T/junk"
    grep -qE "^nbdwire-client: .*($pattern)" "$T/step.err" || fail "$desc: expected a message matching '$pattern'"
    log "   $desc: refused as required"
}

case $MODE in
    nbdkit-x509)
        start_nbdkit "$T/x509.sock" --tls=require --tls-certificates="$PKI/server" file "$T/disk.img"
        uri="nbds+unix:///?socket=$T/x509.sock&tls-certificates=$PKI/client&tls-hostname=localhost"
        tls_checks "$uri"
        roundtrip_checked "$uri"
        client list "$uri" >"$T/list.txt"
        map_all_data "$uri" "$size"

        log "copies over TLS"
        client copy "$uri" "$T/copy.out"
        same_file "$T/base" "$T/copy.out" "copy export -> file"
        rand_file "$T/new" "$size"
        client copy "$T/new" "$uri"
        same_file "$T/new" "$T/disk.img" "copy file -> export"
        client copy - "$uri" <"$T/base"
        same_file "$T/base" "$T/disk.img" "copy stdin -> export"
        client copy "$uri" - >"$T/copy.stdout"
        same_file "$T/base" "$T/copy.stdout" "copy export -> stdout"

        log "TCP with a client certificate (nbdkit --tls-verify-peer)"
        rand_file "$T/disk2.img" "$size"
        start_nbdkit_tcp --tls=require --tls-verify-peer --tls-certificates="$PKI/server" file "$T/disk2.img"
        tcp="nbds://localhost:$PORT/?tls-certificates=$PKI/client"
        tls_checks "$tcp"
        # Export to export, both over TLS, more than one connection each (multi-conn).
        client copy --connections 2 "$tcp" "$uri"
        same_file "$T/disk2.img" "$T/disk.img" "copy export -> export (TCP -> Unix)"
        client copy "$T/base" "$tcp"
        same_file "$T/base" "$T/disk2.img" "copy file -> export (TCP)"
        ;;
    nbdkit-psk)
        start_nbdkit "$T/psk.sock" --tls=require --tls-psk="$PKI/psk.keys" file "$T/disk.img"
        uri="nbds+unix://alice@/?socket=$T/psk.sock&tls-psk-file=$PKI/psk.keys"
        tls_checks "$uri"
        roundtrip_checked "$uri"
        ;;
    qemu-nbd-x509 | qemu-nbd-psk)
        start_qemu_nbd_tls "${MODE#qemu-nbd-}" "$T/disk.img" "$T/qemu.sock"
        uri=$TLS_URI
        tls_checks "$uri"
        roundtrip_checked "$uri"
        if [ "$MODE" = qemu-nbd-x509 ]; then
            rand_file "$T/junk" 4096
            refused "no client certificate for qemu-nbd" "client certificate" \
                "nbds+unix:///disk?socket=$T/qemu.sock&tls-certificates=$PKI/ca-only&tls-hostname=localhost"
            same_file "$T/base" "$T/disk.img" "file behind qemu-nbd after the refusal"
        fi
        ;;
    nbd-server)
        start_nbd_server "$T/disk.img" "certfile = $PKI/server/server-cert.pem" \
            "keyfile = $PKI/server/server-key.pem" "cacertfile = $PKI/server/ca-cert.pem" "force_tls = true"
        port=$NBD_SERVER_PORT
        uri="nbds://localhost:$port/disk?tls-certificates=$PKI/client"
        tls_checks "$uri"
        roundtrip_checked "$uri"
        rand_file "$T/junk" 4096
        refused "plain nbd:// against force_tls" "requires TLS" "nbd://127.0.0.1:$port/disk"
        same_file "$T/base" "$T/disk.img" "file behind nbd-server after the refusal"
        ;;
    opportunistic)
        start_nbdkit "$T/on.sock" --tls=on --tls-certificates="$PKI/server" file "$T/disk.img"
        uri="nbd+unix:///?socket=$T/on.sock"
        client_info_check "$uri" "$size" newstyle-fixed
        expect_eq "$(json_get "$T/info.json" TLS)" false "info --json TLS (plain nbd://)"
        client --is-not tls "$uri"
        roundtrip_checked "$uri"
        # The same server with nbds: TLS.
        tls_checks "nbds+unix:///?socket=$T/on.sock&tls-certificates=$PKI/client&tls-hostname=localhost"
        # nbd with credentials: opportunistic (STARTTLS first, plaintext if refused).
        tls_checks "nbd+unix:///?socket=$T/on.sock&tls-certificates=$PKI/client&tls-hostname=localhost"
        start_nbdkit "$T/plain.sock" file "$T/disk.img"
        client_info_check "nbd+unix:///?socket=$T/plain.sock&tls-certificates=$PKI/client" "$size" newstyle-fixed
        expect_eq "$(json_get "$T/info.json" TLS)" false "opportunistic against a server without TLS"
        roundtrip_checked "nbd+unix:///?socket=$T/plain.sock&tls-certificates=$PKI/client"
        ;;
    refusals)
        rand_file "$T/junk" 65536
        start_nbdkit "$T/x509.sock" --tls=require --tls-certificates="$PKI/server" file "$T/disk.img"
        x509="nbds+unix:///?socket=$T/x509.sock&tls-hostname=localhost"
        # The good URI works (so the refusals below are the TLS checks, not a broken set-up).
        client --size "$x509&tls-certificates=$PKI/client" >/dev/null
        refused "plain nbd:// against --tls=require" "requires TLS" "nbd+unix:///?socket=$T/x509.sock"
        refused "wrong CA" "certificate verification failed.*issuer is unknown" \
            "$x509&tls-certificates=$PKI/wrong-ca"
        refused "wrong host name" "certificate verification failed.*name" \
            "nbds+unix:///?socket=$T/x509.sock&tls-certificates=$PKI/client&tls-hostname=wronghost"
        start_nbdkit "$T/expired.sock" --tls=require --tls-certificates="$PKI/expired" file "$T/disk.img"
        refused "expired server certificate" "certificate verification failed.*expired" \
            "nbds+unix:///?socket=$T/expired.sock&tls-certificates=$PKI/client&tls-hostname=localhost"
        start_nbdkit "$T/psk.sock" --tls=require --tls-psk="$PKI/psk.keys" file "$T/disk.img"
        client --size "nbds+unix://alice@/?socket=$T/psk.sock&tls-psk-file=$PKI/psk.keys" >/dev/null
        refused "wrong PSK" "PSK rejected" "nbds+unix://alice@/?socket=$T/psk.sock&tls-psk-file=$PKI/wrong.keys"
        sed 's/^alice:/mallory:/' "$PKI/psk.keys" >"$T/mallory.keys"
        refused "unknown PSK user" "PSK rejected" "nbds+unix://mallory@/?socket=$T/psk.sock&tls-psk-file=$T/mallory.keys"
        start_nbdkit "$T/verify.sock" --tls=require --tls-verify-peer --tls-certificates="$PKI/server" file "$T/disk.img"
        client --size "nbds+unix:///?socket=$T/verify.sock&tls-certificates=$PKI/client&tls-hostname=localhost" >/dev/null
        refused "no client certificate for --tls-verify-peer" "client certificate" \
            "nbds+unix:///?socket=$T/verify.sock&tls-certificates=$PKI/ca-only&tls-hostname=localhost"
        start_nbdkit "$T/plain.sock" file "$T/disk.img"
        refused "nbds:// against a server without TLS" "refused STARTTLS" \
            "nbds+unix:///?socket=$T/plain.sock&tls-certificates=$PKI/client"
        start_nbdkit "$T/old.sock" --oldstyle file "$T/disk.img"
        refused "nbds:// against an oldstyle server" "oldstyle negotiation, which cannot do TLS" \
            "nbds+unix:///?socket=$T/old.sock&tls-certificates=$PKI/client"
        # URIs refused before connecting.
        refused "TLS parameters without credentials on nbd://" "need an nbds" "nbd+unix:///?socket=$T/plain.sock&tls-hostname=localhost"
        refused "PSK without a user" "user name" "nbds+unix:///?socket=$T/psk.sock&tls-psk-file=$PKI/psk.keys"
        same_file "$T/base" "$T/disk.img" "file behind the servers after every refusal"
        ;;
    *) fail "unknown mode '$MODE'" ;;
esac
log PASS
