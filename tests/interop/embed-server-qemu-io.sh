# examples/embed/embed-server under qemu-io: writes with patterns, reads verified with -P,
# FUA, write_zeroes, discard, flush and concurrent requests in one session; a second session
# (a new connection) then checks that everything written is still there.
. "$(dirname "$0")/lib.sh"

need_server
need_peer qemu-io
start_server_unix

run_session() { # NAME EXPECTED-OPS COMMANDS...
    local name=$1 ops=$2 c args=()
    shift 2
    for c in "$@"; do args+=(-c "$c"); done
    step "qemu-io $name" qemu-io -f raw "${args[@]}" "$(unix_uri disk)" >"$T/$name.out"
    sed 's/^/    | /' "$T/$name.out" >&2
    if grep -Eiq 'fail|error|mismatch|pattern verification' "$T/$name.out"; then
        fail "qemu-io $name reported an error"
    fi
    expect_eq "$(grep -Ec '^(read|wrote|discard) ' "$T/$name.out")" "$ops" "completed operations in $name"
}

run_session writes 24 \
    'write -P 0xa5 0 1M' \
    'read -P 0xa5 0 1M' \
    'write -P 0x5a 1M 64k' \
    'flush' \
    'read -P 0x5a 1M 64k' \
    'write -z 256k 64k' \
    'read -P 0 256k 64k' \
    'read -P 0xa5 0 256k' \
    'read -P 0xa5 320k 704k' \
    'write -f -P 0x11 2M 4k' \
    'read -P 0x11 2M 4k' \
    'aio_write -P 0x22 3M 128k' \
    'aio_write -P 0x33 4M 128k' \
    'aio_write -P 0x44 5M 1M' \
    'aio_flush' \
    'read -P 0x22 3M 128k' \
    'read -P 0x33 4M 128k' \
    'read -P 0x44 5M 1M' \
    'write -P 0x66 12345 777' \
    'read -P 0x66 12345 777' \
    'write -P 0x77 67104768 4096' \
    'read -P 0x77 67104768 4096' \
    'write -P 0x99 8M 1M' \
    'discard 8M 512k' \
    'read -P 0 8M 512k' \
    'read -P 0x99 8704k 512k' \
    'flush'

# A new connection sees what the first one wrote (one memory export for every client).
run_session verify 11 \
    'read -P 0xa5 0 12345' \
    'read -P 0xa5 13122 249022' \
    'read -P 0 256k 64k' \
    'read -P 0x5a 1M 64k' \
    'read -P 0x11 2M 4k' \
    'read -P 0x22 3M 128k' \
    'read -P 0x44 5M 1M' \
    'read -P 0x66 12345 777' \
    'read -P 0x77 67104768 4096' \
    'read -P 0 8M 512k' \
    'read -P 0x99 8704k 512k'
stop_server
log PASS
