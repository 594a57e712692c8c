# TLS material for the interoperability tests, made fresh by each test with GnuTLS's certtool
# and psktool (Debian: gnutls-bin). Sourced after lib.sh.
#
#   tls_make_pki DIR   DIR/server  ca-cert.pem server-cert.pem server-key.pem  (nbdkit's layout;
#                                  the server certificate names localhost and 127.0.0.1)
#                      DIR/client  ca-cert.pem client-cert.pem client-key.pem
#                      DIR/ca-only ca-cert.pem                                 (no client certificate)
#                      DIR/wrong-ca  ca-cert.pem of another CA                 (verification must fail)
#                      DIR/expired   a server directory whose certificate expired in 2020
#                      DIR/psk.keys  alice's key; DIR/wrong.keys another key for alice
#   All keys are ECDSA P-256 (fast to make).

tls_make_pki() {
    local d=$1
    need_peer certtool psktool
    mkdir -p "$d"/{ca,server,client,ca-only,wrong-ca,expired,other}
    _ct() { certtool "$@" >"$d/certtool.log" 2>&1 || { cat "$d/certtool.log" >&2; fail "certtool $*"; }; }
    # The CA.
    printf 'cn = nbdwire test CA\nca\ncert_signing_key\nexpiration_days = 3650\n' >"$d/ca.info"
    _ct --generate-privkey --key-type ecdsa --outfile "$d/ca/ca-key.pem"
    _ct --generate-self-signed --load-privkey "$d/ca/ca-key.pem" --template "$d/ca.info" --outfile "$d/ca/ca-cert.pem"
    # The server: localhost and 127.0.0.1, for TCP and for Unix sockets with tls-hostname.
    printf 'organization = nbdwire test\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 3650\n' >"$d/server.info"
    _ct --generate-privkey --key-type ecdsa --outfile "$d/server/server-key.pem"
    _ct --generate-certificate --load-privkey "$d/server/server-key.pem" --load-ca-certificate "$d/ca/ca-cert.pem" \
        --load-ca-privkey "$d/ca/ca-key.pem" --template "$d/server.info" --outfile "$d/server/server-cert.pem"
    # A client certificate (qemu-nbd and nbd-server ask for one).
    printf 'organization = nbdwire test\ncn = client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 3650\n' >"$d/client.info"
    _ct --generate-privkey --key-type ecdsa --outfile "$d/client/client-key.pem"
    _ct --generate-certificate --load-privkey "$d/client/client-key.pem" --load-ca-certificate "$d/ca/ca-cert.pem" \
        --load-ca-privkey "$d/ca/ca-key.pem" --template "$d/client.info" --outfile "$d/client/client-cert.pem"
    cp "$d/ca/ca-cert.pem" "$d/server/" && cp "$d/ca/ca-cert.pem" "$d/client/" && cp "$d/ca/ca-cert.pem" "$d/ca-only/"
    # Another CA, which signed nothing the server has.
    printf 'cn = some other CA\nca\ncert_signing_key\nexpiration_days = 3650\n' >"$d/other.info"
    _ct --generate-privkey --key-type ecdsa --outfile "$d/other/ca-key.pem"
    _ct --generate-self-signed --load-privkey "$d/other/ca-key.pem" --template "$d/other.info" --outfile "$d/wrong-ca/ca-cert.pem"
    # A server certificate that expired in 2020, signed by the right CA.
    printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nactivation_date = "2019-01-01 00:00:00 UTC"\nexpiration_date = "2020-12-31 00:00:00 UTC"\n' >"$d/expired.info"
    cp "$d/server/server-key.pem" "$d/server/ca-cert.pem" "$d/expired/"
    _ct --generate-certificate --load-privkey "$d/expired/server-key.pem" --load-ca-certificate "$d/ca/ca-cert.pem" \
        --load-ca-privkey "$d/ca/ca-key.pem" --template "$d/expired.info" --outfile "$d/expired/server-cert.pem"
    # Pre-shared keys: "alice:HEX" lines, as psktool writes them.
    psktool -u alice -p "$d/psk.keys" >/dev/null 2>&1 || fail "psktool"
    psktool -u alice -p "$d/wrong.keys" >/dev/null 2>&1 || fail "psktool"
    log "   TLS material in $d (CA, server, client, wrong CA, expired, PSK)"
}

# start_qemu_nbd_tls x509|psk IMAGE SOCKET: qemu-nbd serving IMAGE as export "disk" on SOCKET
# with TLS required, credentials from the tls_make_pki directory in $PKI; sets TLS_URI,
# the nbds+unix URI a client uses (qemu-nbd's X.509 server requires a client certificate).
start_qemu_nbd_tls() {
    local kind=$1 img=$2 sock=$3 creds
    need_peer qemu-nbd
    if [ "$kind" = x509 ]; then
        creds=tls-creds-x509,id=tls0,dir=$PKI/server,endpoint=server
        TLS_URI="nbds+unix:///disk?socket=$sock&tls-certificates=$PKI/client&tls-hostname=localhost"
    else
        mkdir -p "$T/qpsk" && cp "$PKI/psk.keys" "$T/qpsk/keys.psk"
        creds=tls-creds-psk,id=tls0,dir=$T/qpsk,endpoint=server
        TLS_URI="nbds+unix://alice@/disk?socket=$sock&tls-psk-file=$PKI/psk.keys"
    fi
    bg qemu-nbd qemu-nbd -t -k "$sock" --object "$creds" --tls-creds tls0 -f raw -x disk "$img"
    wait_unix_socket "$sock" "$BG_PID"
}
