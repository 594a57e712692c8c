# nbdwire-server under qemu-img over TCP: info shows the virtual size, convert in and out.
. "$(dirname "$0")/lib.sh"

need_server
need_peer qemu-img

size=$((16 * 1024 * 1024))
rand_file "$T/source.img" "$size"
start_server_tcp disk=memory:16M
uri=$SERVER_URI/disk

step "qemu-img info" qemu-img info "$uri" >"$T/info.txt"
sed 's/^/    | /' "$T/info.txt" >&2
grep -q "^virtual size: .*($size bytes)" "$T/info.txt" || fail "qemu-img info does not show $size bytes"
step "qemu-img info --output=json" qemu-img info --output=json "$uri" >"$T/info.json"
expect_eq "$(json_get "$T/info.json" virtual-size)" "$size" "qemu-img virtual-size"

step "qemu-img convert in" qemu-img convert -n -f raw -O raw "$T/source.img" "$uri"
step "qemu-img convert out" qemu-img convert -f raw -O raw "$uri" "$T/out.img"
same_file "$T/source.img" "$T/out.img" "image converted in and out"
step "qemu-img compare" qemu-img compare -f raw -F raw "$T/source.img" "$uri"
stop_server
log PASS
