# nbdwire-server in one handshake style (fixed-newstyle, newstyle or oldstyle) under libnbd and
# qemu clients, which both speak all three.
. "$(dirname "$0")/lib.sh"

style=${1:?usage: server-style.sh SERVER CLIENT fixed-newstyle|newstyle|oldstyle}
case $style in
    fixed-newstyle) proto=newstyle-fixed ;;
    newstyle)       proto=newstyle ;;
    oldstyle)       proto=oldstyle ;;
    *) fail "unknown style '$style'" ;;
esac
need_server
need_peer nbdinfo nbdcopy qemu-io sha256sum

# Oldstyle has no export names, so it serves exactly one export.
exports=(disk=memory:16M other=memory:8M)
[ "$style" = oldstyle ] && exports=(disk=memory:16M)
start_server_unix --style "$style" "${exports[@]}"
uri=$(unix_uri '')

step "nbdinfo --json" nbdinfo --json "$uri" >"$T/info.json"
sed 's/^/    | /' "$T/info.json" >&2
expect_eq "$(json_get "$T/info.json" protocol)" "$proto" "protocol seen by nbdinfo"
expect_eq "$(json_get "$T/info.json" export-size)" 16777216 "size of the default export"

if [ "$style" != oldstyle ]; then
    # Export names are carried by EXPORT_NAME (newstyle) or GO/INFO (fixed newstyle).
    step "nbdinfo --size other" nbdinfo --size "$(unix_uri other)" >"$T/size"
    expect_eq "$(cat "$T/size")" 8388608 "size of export 'other'"
    step "qemu-io on export 'other'" qemu-io -f raw -c 'write -P 0x3c 0 8M' -c 'read -P 0x3c 0 8M' \
        "$(unix_uri other)" >"$T/other.out"
    grep -Eiq 'fail|error' "$T/other.out" && fail "qemu-io on 'other': $(cat "$T/other.out")"
fi

step "qemu-io write/read" qemu-io -f raw -c 'write -P 0xc3 1M 3M' -c 'flush' -c 'read -P 0xc3 1M 3M' \
    -c 'read -P 0 0 1M' "$uri" >"$T/qemu-io.out"
sed 's/^/    | /' "$T/qemu-io.out" >&2
grep -Eiq 'fail|error' "$T/qemu-io.out" && fail "qemu-io reported an error"
expect_eq "$(grep -Ec '^(read|wrote) ' "$T/qemu-io.out")" 3 "completed qemu-io operations"

rand_file "$T/source.img" 16777216
sum=$(sha256sum <"$T/source.img" | cut -d' ' -f1)
step "nbdcopy in" nbdcopy "$T/source.img" "$uri"
step "nbdcopy out" nbdcopy "$uri" "$T/out.img"
expect_eq "$(sha256sum <"$T/out.img" | cut -d' ' -f1)" "$sum" "sha256 after the round trip"
stop_server
log PASS
