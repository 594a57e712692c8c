# nbdwire-client map and structured-reply reads against other servers. The map must equal
# nbdinfo --map of the same server (text and JSON, line for line), and reads must return the data.
#   qemu-nbd                   raw image with data and holes
#   qemu-nbd-allocation-depth  the same with -A (qemu:allocation-depth offered too; map uses
#                              base:allocation only)
#   nbdkit-memory              nbdkit memory plugin, data written by nbdwire-client
#   nbdkit-sparse-random       nbdkit sparse-random 1G with a fixed seed
#   sr-qemu-nbd / sr-nbdkit    whole-export reads through structured replies, checksummed
. "$(dirname "$0")/lib.sh"

mode=${1:?usage: client-map.sh SERVER CLIENT MODE}
need_client
need_peer nbdinfo sha256sum

# map_matches URI: nbdwire-client map and nbdinfo --map agree, in both formats.
map_matches() {
    client map "$1" >"$T/map.txt"
    sed 's/^/    | /' "$T/map.txt" >&2
    step "nbdinfo --map" nbdinfo --map "$1" >"$T/nbdinfo.txt"
    cmp "$T/nbdinfo.txt" "$T/map.txt" >&2 || { diff "$T/nbdinfo.txt" "$T/map.txt" >&2; fail "map differs from nbdinfo --map"; }
    client map "$1" --json >"$T/map.json"
    step "nbdinfo --map --json" nbdinfo --map --json "$1" >"$T/nbdinfo.json"
    cmp "$T/nbdinfo.json" "$T/map.json" >&2 || fail "map --json differs from nbdinfo --map --json"
    log "   map agrees with nbdinfo --map ($(wc -l <"$T/map.txt") extents)"
}

# has_extent OFFSET LENGTH DESCRIPTION: the map has exactly this line.
has_extent() {
    awk -v o="$1" -v l="$2" -v d="$3" '$1 == o && $2 == l && $4 == d { f = 1 } END { exit !f }' "$T/map.txt" ||
        fail "map has no '$3' extent of $2 bytes at $1"
}

# sr_read URI FILE: the whole export read by nbdwire-client equals FILE, and the client used
# structured replies.
sr_read() {
    client info "$1" --json >"$T/info.json"
    expect_eq "$(json_get "$T/info.json" structured)" true "structured replies negotiated"
    client read "$1" >"$T/read.out"
    expect_eq "$(sha256sum <"$T/read.out" | cut -d' ' -f1)" "$(sha256sum <"$2" | cut -d' ' -f1)" \
        "sha256 of the export read through structured replies"
    # copy reads only the data extents, pipelined across them: holes stay holes in a file,
    # and a pipe gets them as zeroes.
    client copy "$1" "$T/copy.out"
    same_file "$2" "$T/copy.out" "export copied to a file"
    local size allocated
    size=$(stat -c %s "$T/copy.out")
    allocated=$(( $(stat -c %b "$T/copy.out") * $(stat -c %B "$T/copy.out") ))
    log "   copy: $allocated of $size bytes allocated"
    [ "$allocated" -lt $((size / 2)) ] || fail "the copy of a sparse export is not sparse ($allocated of $size bytes)"
    client copy "$1" - | cat >"$T/copy.pipe"
    same_file "$2" "$T/copy.pipe" "export copied to a pipe"
}

# A 64 MiB sparse image: data at 1 MiB (3 MiB), at 40 MiB (100 KiB) and in the last 4 KiB.
sparse_image() {
    truncate -s $((64 * 1024 * 1024)) "$1"
    rand_file "$T/d1" $((3 * 1024 * 1024))
    rand_file "$T/d2" $((100 * 1024))
    rand_file "$T/d3" 4096
    dd if="$T/d1" of="$1" bs=1M seek=1 conv=notrunc status=none
    dd if="$T/d2" of="$1" bs=1K seek=$((40 * 1024)) conv=notrunc status=none
    dd if="$T/d3" of="$1" bs=4K seek=$((64 * 256 - 1)) conv=notrunc status=none
}

case $mode in
    qemu-nbd|qemu-nbd-allocation-depth|sr-qemu-nbd)
        need_peer qemu-nbd
        sparse_image "$T/disk.img"
        opts=()
        [ "$mode" = qemu-nbd-allocation-depth ] && opts=(-A)
        bg qemu-nbd qemu-nbd -f raw -x disk -k "$T/qemu.sock" -t "${opts[@]}" "$T/disk.img"
        wait_unix_socket "$T/qemu.sock" "$BG_PID"
        uri="nbd+unix:///disk?socket=$T/qemu.sock"
        if [ "$mode" = sr-qemu-nbd ]; then
            sr_read "$uri" "$T/disk.img"
            # Windows that start and end inside holes and inside data.
            for w in 1000:2097152 1048000:4000000 41900000:300000 67100000:8864; do
                off=${w%%:*} len=${w#*:}
                client read "$uri" --offset "$off" --length "$len" >"$T/win"
                slice "$T/disk.img" "$off" "$len" >"$T/win.expected"
                same_file "$T/win.expected" "$T/win" "window $off+$len"
            done
        else
            map_matches "$uri"
            has_extent 1048576 3145728 data
            has_extent 0 1048576 hole,zero
            client info "$uri" --json >"$T/info.json"
            sed 's/^/    | /' "$T/info.json" >&2
            python3 -c 'import json, sys; sys.exit("base:allocation" not in json.load(sys.stdin)["exports"][0]["contexts"])' \
                <"$T/info.json" || fail "info does not list base:allocation"
            if [ "$mode" = qemu-nbd-allocation-depth ]; then
                grep -q '"qemu:allocation-depth"' "$T/info.json" || fail "info does not list qemu:allocation-depth"
                step "nbdinfo --map=base:allocation" nbdinfo --map=base:allocation "$uri" >"$T/nbdinfo.base"
                cmp "$T/nbdinfo.base" "$T/map.txt" >&2 || fail "map is not the base:allocation map"
            else
                grep -q 'qemu:allocation-depth' "$T/info.json" && fail "qemu:allocation-depth listed without -A"
            fi
        fi
        ;;
    nbdkit-memory)
        need_peer nbdkit
        start_nbdkit "$T/nbdkit.sock" memory 32M
        uri="nbd+unix:///?socket=$T/nbdkit.sock"
        rand_file "$T/d1" $((2 * 1024 * 1024))
        client write "$uri" --offset $((4 * 1024 * 1024)) <"$T/d1"
        rand_file "$T/d2" 65536
        client write "$uri" --offset $((20 * 1024 * 1024)) <"$T/d2"
        map_matches "$uri"
        grep -q ' data$' "$T/map.txt" && grep -q ' hole,zero$' "$T/map.txt" || fail "map shows no data and holes"
        has_extent 0 $((4 * 1024 * 1024)) hole,zero
        ;;
    nbdkit-sparse-random|sr-nbdkit)
        need_peer nbdkit nbdcopy
        # The map covers 1 GiB quickly; the read-through is kept to 256 MiB (sanitizer builds).
        size=1G
        [ "$mode" = sr-nbdkit ] && size=256M
        start_nbdkit "$T/nbdkit.sock" sparse-random "$size" seed=4242 runlength=1048576
        uri="nbd+unix:///?socket=$T/nbdkit.sock"
        if [ "$mode" = sr-nbdkit ]; then
            step "nbdcopy reads the export" nbdcopy "$uri" "$T/expected"
            sr_read "$uri" "$T/expected"
        else
            map_matches "$uri"
            [ "$(grep -c ' data$' "$T/map.txt")" -ge 10 ] || fail "sparse-random shows fewer than 10 data extents"
        fi
        ;;
    *) fail "unknown mode '$mode'" ;;
esac
log PASS
