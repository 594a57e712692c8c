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
    start_qemu_nbd_tls "${MODE#qemu-nbd-}" "$T/disk.img" "$T/s.sock"
    URI=$TLS_URI ;;
nbd-server)
    start_nbd_server "$T/disk.img" "certfile = $PKI/server/server-cert.pem" \
        "keyfile = $PKI/server/server-key.pem" "cacertfile = $PKI/server/ca-cert.pem" "force_tls = true"
    port=$NBD_SERVER_PORT
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
