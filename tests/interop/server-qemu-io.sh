# nbdwire-server under qemu-io: writes, pattern-verified reads, flush, FUA, zeroing, discard and
# concurrent requests in one session on a file-backed export, then the file is checked directly.
. "$(dirname "$0")/lib.sh"

need_server
need_peer qemu-io

size=$((16 * 1024 * 1024))
truncate -s "$size" "$T/disk.img"
start_server_unix disk=file:"$T/disk.img"

# qemu skips discard when the server does not offer trim, and writes zeros itself when it does
# not offer write-zeroes, so the same session fits any server.
cmds=(
    'write -P 0xa5 0 1M'
    'read -P 0xa5 0 1M'
    'write -P 0x5a 1M 64k'
    'flush'
    'read -P 0x5a 1M 64k'
    'write -z 256k 64k'
    'read -P 0 256k 64k'
    'read -P 0xa5 0 256k'
    'read -P 0xa5 320k 704k'
    'write -f -P 0x11 2M 4k'
    'read -P 0x11 2M 4k'
    'aio_write -P 0x22 3M 128k'
    'aio_write -P 0x33 4M 128k'
    'aio_write -P 0x44 5M 1M'
    'aio_flush'
    'read -P 0x22 3M 128k'
    'read -P 0x33 4M 128k'
    'read -P 0x44 5M 1M'
    'write -P 0x66 12345 777'
    'read -P 0x66 12345 777'
    'write -P 0x77 16773120 4096'
    'read -P 0x77 16773120 4096'
    'discard 8M 1M'
    'read -P 0x5a 1M 64k'
    'flush'
)
args=()
for c in "${cmds[@]}"; do args+=(-c "$c"); done
step "qemu-io session" qemu-io -f raw "${args[@]}" "$(unix_uri disk)" >"$T/qemu-io.out"
sed 's/^/    | /' "$T/qemu-io.out" >&2
if grep -Eiq 'fail|error|mismatch' "$T/qemu-io.out"; then
    fail "qemu-io reported an error"
fi
# One line per completed read, write or discard.
expect_eq "$(grep -Ec '^(read|wrote|discard) ' "$T/qemu-io.out")" 22 "completed qemu-io operations"

# The file behind the export holds what was written.
check_region() { # OFFSET LENGTH BYTE
    pattern_file "$3" "$2" >"$T/expected"
    slice "$T/disk.img" "$1" "$2" >"$T/actual"
    same_file "$T/expected" "$T/actual" "backing file at $1+$2"
}
check_region 0 12345 165
check_region 13122 249022 165
check_region 262144 65536 0
check_region 327680 720896 165
check_region 1048576 65536 90
check_region 2097152 4096 17
check_region 3145728 131072 34
check_region 4194304 131072 51
check_region 5242880 1048576 68
check_region 12345 777 102
check_region 16773120 4096 119
stop_server
log PASS
