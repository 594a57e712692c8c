# nbdwire-fuse over TLS against each TLS server: nbdkit with pre-shared keys and with client
# certificates required (--tls-verify-peer), qemu-nbd with X.509 (it requires a client
# certificate) and with PSK, and nbd-server with force_tls. For each: mount, compare the
# whole export, write through the mount with fsync, unmount, compare the file behind the
# server. tls.sh covers nbdkit with X.509 in depth (daemon mode, refusals).
#   tls-peers.sh SERVER CLIENT FUSE MODE   MODE: nbdkit-psk nbdkit-verify-peer qemu-nbd-x509
#                                                qemu-nbd-psk nbd-server
source "$(dirname "$0")/lib.sh"
# shellcheck source=../../../tests/interop/tls-lib.sh
source "$(dirname "$0")/../../../tests/interop/tls-lib.sh"

MODE=${1:?mode}
PKI=$T/pki
tls_make_pki "$PKI"
SIZE=$((8 * 1024 * 1024))
rand_file "$T/disk.img" "$SIZE"
cp "$T/disk.img" "$T/expected"
NBDKIT_LOG=
case $MODE in
nbdkit-psk)
    start_nbdkit "$T/s.sock" --tls=require --tls-psk="$PKI/psk.keys" file "$T/disk.img"
    URI="nbds+unix://alice@/?socket=$T/s.sock&tls-psk-file=$PKI/psk.keys" ;;
nbdkit-verify-peer)
    start_nbdkit "$T/s.sock" --tls=require --tls-certificates="$PKI/server" --tls-verify-peer file "$T/disk.img"
    URI="nbds+unix:///?socket=$T/s.sock&tls-certificates=$PKI/client&tls-hostname=localhost" ;;
qemu-nbd-x509 | qemu-nbd-psk)
    need_peer qemu-nbd
    if [ "$MODE" = qemu-nbd-x509 ]; then
        creds=tls-creds-x509,id=tls0,dir=$PKI/server,endpoint=server
        URI="nbds+unix:///disk?socket=$T/s.sock&tls-certificates=$PKI/client&tls-hostname=localhost"
    else
        mkdir "$T/qpsk" && cp "$PKI/psk.keys" "$T/qpsk/keys.psk"
        creds=tls-creds-psk,id=tls0,dir=$T/qpsk,endpoint=server
        URI="nbds+unix://alice@/disk?socket=$T/s.sock&tls-psk-file=$PKI/psk.keys"
    fi
    bg qemu-nbd qemu-nbd -t -k "$T/s.sock" --object "$creds" --tls-creds tls0 -f raw -x disk "$T/disk.img"
    wait_unix_socket "$T/s.sock" "$BG_PID" ;;
nbd-server)
    need_peer nbd-server
    for attempt in 1 2 3; do
        port=$(free_port)
        printf '[generic]\n    listenaddr = 127.0.0.1\n    port = %s\n    certfile = %s\n    keyfile = %s\n    cacertfile = %s\n    force_tls = true\n[disk]\n    exportname = %s\n' \
            "$port" "$PKI/server/server-cert.pem" "$PKI/server/server-key.pem" "$PKI/server/ca-cert.pem" \
            "$T/disk.img" >"$T/nbd-server.conf"
        rm -f "$T/nbd-server.pid"
        PIDFILES+=("$T/nbd-server.pid")
        step "nbd-server starts" nbd-server -C "$T/nbd-server.conf" -p "$T/nbd-server.pid"
        for i in $(seq 100); do
            [ -s "$T/nbd-server.pid" ] && _tcp_listening "$port" && break
            sleep 0.05
        done
        _tcp_listening "$port" && break
        [ -s "$T/nbd-server.pid" ] && _stop_pid "$(cat "$T/nbd-server.pid")"
        [ "$attempt" = 3 ] && fail "nbd-server did not start"
    done
    URI="nbds://localhost:$port/disk?tls-certificates=$PKI/client" ;;
*) fail "unknown mode $MODE" ;;
esac

mount_fuse "$URI"
expect_eq "$(stat -c %s "$FILE")" "$SIZE" "size of $FILE"
step "cmp through the mount" cmp "$FILE" "$T/expected"
rand_file "$T/a" $((300 * 1024 + 11))
step "dd write" dd if="$T/a" of="$FILE" bs=64K seek=$((1024 * 1024 + 3)) oflag=seek_bytes conv=notrunc,fsync status=none
splice_into "$T/expected" $((1024 * 1024 + 3)) "$T/a"
step "cmp after the write" cmp "$FILE" "$T/expected"
unmount_fuse
same_file "$T/expected" "$T/disk.img" "file behind the server ($MODE)"
log "PASS"
