# nbdwire-server's allocation map and sparse reads under other clients. Data is written, discarded
# and zeroed at known places by qemu-io; the map must show exactly those holes and data:
#   nbdinfo   nbdinfo --map (text and JSON) on a memory and a file export; nbdwire-client map
#             (extended headers) agrees; nbdcopy reads the data back (OFFSET_HOLE chunks)
#   qemu-img  qemu-img map --output=json (REQ_ONE requests) on the same exports
. "$(dirname "$0")/lib.sh"

mode=${1:?usage: server-map.sh SERVER CLIENT nbdinfo|qemu-img}
need_server
need_peer qemu-io sha256sum

truncate -s $((16 * 1024 * 1024)) "$T/backed.img"
start_server_unix mem=memory:16M backed=file:"$T/backed.img"

cmds=(
    'write -P 0x11 64k 4k'
    'write -P 0x22 1M 1M'
    'discard 1M 512k'
    'write -z -u 1792k 64k'
)
args=()
for c in "${cmds[@]}"; do args+=(-c "$c"); done
# The expected map (offset length type description), the same for both exports.
cat >"$T/expected" <<MAP
0 65536 3 hole,zero
65536 4096 0 data
69632 1503232 3 hole,zero
1572864 262144 0 data
1835008 65536 3 hole,zero
1900544 196608 0 data
2097152 14680064 3 hole,zero
MAP
# The contents: 0x11 at 64k, 0x22 in [1.5M, 1792k) and [1856k, 2M), zeroes elsewhere.
{ head -c 65536 /dev/zero; pattern_file 17 4096; head -c $((1024 * 1024 - 69632 + 512 * 1024)) /dev/zero
  pattern_file 34 262144; head -c 65536 /dev/zero; pattern_file 34 196608
  head -c $((14 * 1024 * 1024)) /dev/zero; } >"$T/contents"

for name in mem backed; do
    uri=$(unix_uri "$name")
    step "qemu-io on $name" qemu-io -f raw "${args[@]}" "$uri" >"$T/qemu-io.out"
    grep -Eiq 'fail|error' "$T/qemu-io.out" && fail "qemu-io reported an error: $(cat "$T/qemu-io.out")"
    case $mode in
        nbdinfo)
            need_peer nbdinfo nbdcopy
            step "nbdinfo --map $name" nbdinfo --map "$uri" >"$T/map.txt"
            sed 's/^/    | /' "$T/map.txt" >&2
            awk '{ print $1, $2, $3, $4 }' "$T/map.txt" | cmp - "$T/expected" >&2 ||
                fail "nbdinfo --map of $name is not the expected map"
            log "   nbdinfo --map of $name: as expected"
            step "nbdinfo --map --json $name" nbdinfo --map --json "$uri" >"$T/map.json"
            grep -q '{ "offset": 1572864, "length": 262144, "type": 0, "description": "data"}' "$T/map.json" ||
                fail "nbdinfo --map --json lacks the data extent at 1.5 MiB"
            # nbdwire-client negotiates extended headers with nbdwire-server.
            need_client
            client info "$uri" --json >"$T/info.json"
            expect_eq "$(json_get "$T/info.json" block_size_preferred)" 4096 "preferred block size"
            client --can extended-headers "$uri"  # exit 0: extended headers negotiated
            client map "$uri" >"$T/client.txt"
            cmp "$T/map.txt" "$T/client.txt" >&2 || fail "nbdwire-client map differs from nbdinfo --map"
            client map "$uri" --json >"$T/client.json"
            cmp "$T/map.json" "$T/client.json" >&2 || fail "nbdwire-client map --json differs"
            log "   nbdwire-client map agrees with nbdinfo --map"
            # Reads of holes and data: nbdcopy (structured replies) and nbdwire-client (extended).
            step "nbdcopy $name" nbdcopy "$uri" "$T/copy.out"
            same_file "$T/contents" "$T/copy.out" "$name read by nbdcopy"
            client read "$uri" >"$T/read.out"
            same_file "$T/contents" "$T/read.out" "$name read by nbdwire-client"
            client read "$uri" --offset 60000 --length 2000000 >"$T/win.out"
            slice "$T/contents" 60000 2000000 >"$T/win.expected"
            same_file "$T/win.expected" "$T/win.out" "unaligned window across holes"
            ;;
        qemu-img)
            need_peer qemu-img
            step "qemu-img map $name" qemu-img map -f raw --output=json "$uri" >"$T/map.json"
            sed 's/^/    | /' "$T/map.json" >&2
            sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\),.*"zero": \([a-z]*\), "data": \([a-z]*\).*/\1 \2 \3 \4/p' \
                "$T/map.json" >"$T/map.txt"
            awk '{ print $1, $2, ($3 == 3 ? "true false" : "false true") }' "$T/expected" | cmp - "$T/map.txt" >&2 ||
                fail "qemu-img map of $name is not the expected map"
            log "   qemu-img map of $name: as expected"
            step "qemu-img compare $name" qemu-img compare -f raw -F raw "$T/contents" "$uri"
            ;;
        *) fail "unknown mode '$mode'" ;;
    esac
done
stop_server
log PASS
