# nbdwire-fuse over TLS: an nbds+unix:// URI against nbdkit --tls=require with X.509
# certificates (tls-lib.sh makes them). Writes and reads through the mount, checked by
# nbdwire-client over TLS as an independent reader and against the file behind nbdkit;
# NBD_CMD_DISC on unmount; daemon mode; and mounts that must be refused with a clear message: a wrong CA,
# plain nbd+unix:// against the TLS-only server.
source "$(dirname "$0")/lib.sh"
# shellcheck source=../../../tests/interop/tls-lib.sh
source "$(dirname "$0")/../../../tests/interop/tls-lib.sh"

need_client
PKI=$T/pki
tls_make_pki "$PKI"
SIZE=$((32 * 1024 * 1024))
rand_file "$T/disk.img" "$SIZE"
cp "$T/disk.img" "$T/expected"
start_nbdkit "$T/nbdkit.sock" -v --tls=require --tls-certificates="$PKI/server" file "$T/disk.img"
NBDKIT_LOG=$T/nbdkit.err
BACKEND_KIND=nbdkit
URI="nbds+unix:///?socket=$T/nbdkit.sock&tls-certificates=$PKI/client&tls-hostname=localhost"

mount_fuse "$URI"
expect_eq "$(stat -c %s "$FILE")" "$SIZE" "size of $FILE"
step "cmp through the mount" cmp "$FILE" "$T/expected"

log "unaligned write through the mount (2 MiB + 77 bytes at 3 MiB + 5)"
rand_file "$T/a" $((2 * 1024 * 1024 + 77))
step "dd write" dd if="$T/a" of="$FILE" bs=1M seek=$((3 * 1024 * 1024 + 5)) oflag=seek_bytes conv=notrunc,fsync status=none
splice_into "$T/expected" $((3 * 1024 * 1024 + 5)) "$T/a"
step "dd read O_DIRECT" dd if="$FILE" of="$T/direct" bs=256K iflag=direct status=none
same_file "$T/expected" "$T/direct" "O_DIRECT read of the whole file"
unmount_fuse
same_file "$T/expected" "$T/disk.img" "file behind nbdkit"
step "nbdwire-client read over TLS" "$NBDWIRE_CLIENT" read "$URI" >"$T/client.out"
same_file "$T/expected" "$T/client.out" "the export as nbdwire-client reads it"

log "daemon mode: the TLS session set up before the fork serves from the background"
mount_fuse_daemon "$URI"
rand_file "$T/d" $((512 * 1024))
step "dd write (daemon)" dd if="$T/d" of="$FILE" bs=64K seek=$((20 * 1024 * 1024)) oflag=seek_bytes conv=notrunc,fsync status=none
splice_into "$T/expected" $((20 * 1024 * 1024)) "$T/d"
step "cmp (daemon)" cmp "$FILE" "$T/expected"
unmount_fuse
same_file "$T/expected" "$T/disk.img" "file behind nbdkit after the daemon's writes"

log "mounts that must be refused"
mkdir -p "$T/refused"
step_fails "wrong CA" "$NBDWIRE_FUSE" --foreground "$T/refused" \
    "nbds+unix:///?socket=$T/nbdkit.sock&tls-certificates=$PKI/wrong-ca&tls-hostname=localhost"
grep -q '^nbdwire-fuse: certificate verification failed' "$T/step.err" || fail "wrong CA: no clear message"
step_fails "plain nbd+unix:// against --tls=require" "$NBDWIRE_FUSE" --foreground "$T/refused" \
    "nbd+unix:///?socket=$T/nbdkit.sock"
grep -q '^nbdwire-fuse: the server requires TLS' "$T/step.err" || fail "plaintext: no clear message"
is_mounted "$T/refused" && fail "$T/refused was mounted"
same_file "$T/expected" "$T/disk.img" "file behind nbdkit after the refusals"
log "PASS"
