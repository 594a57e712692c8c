# nbdwire-client against qemu-nbd serving a raw image as export "disk" on a Unix socket.
. "$(dirname "$0")/lib.sh"

need_client
need_peer qemu-nbd

size=$((24 * 1024 * 1024))
sock=$T/qemu.sock
rand_file "$T/base" "$size"
cp "$T/base" "$T/disk.img"
bg qemu-nbd qemu-nbd -f raw -x disk -k "$sock" -t "$T/disk.img"
wait_unix_socket "$sock" "$BG_PID"
uri="nbd+unix:///disk?socket=$sock"

client_info_check "$uri" "$size" newstyle-fixed

client list "nbd+unix:///?socket=$sock" >"$T/list.txt"
sed 's/^/    | /' "$T/list.txt" >&2
grep -qw disk "$T/list.txt" || fail "list does not show export 'disk'"

client_roundtrip "$uri" "$T/base"

# Independent check: the image file itself.
spliced "$T/base" "$RT_OFFSET" "$RT_DATA" >"$T/expected"
same_file "$T/expected" "$T/disk.img" "image file behind qemu-nbd"
log PASS
