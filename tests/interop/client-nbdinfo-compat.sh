# nbdwire-client as a drop-in for nbdinfo: against the same export, `nbdwire-client info
# --json`, `--map --json`, `--map --totals --json`, `--list --json`, `--size`, `--can` and
# `--is` must give what nbdinfo gives (JSON compared as parsed documents, exit codes of the
# queries compared one by one). One peer per run:
#   nbdkit           nbdkit memory with data, a named export with a description (UTF-8 and a
#                    tab) and advertised block sizes; info --json in oldstyle, newstyle and
#                    without structured replies too
#   qemu-nbd         qemu-nbd on a raw image with data, read-only, with a description and
#                    qemu:allocation-depth (--map of a context other than base:allocation)
#   nbdwire-server   two memory exports
. "$(dirname "$0")/lib.sh"

peer=${1:?usage: client-nbdinfo-compat.sh SERVER CLIENT nbdkit|qemu-nbd|nbdwire-server}
need_client
need_peer nbdinfo python3

# same_json DESCRIPTION A B: A and B are the same JSON document once parsed. Values that name
# the tool would be dropped here; nbdinfo's documents have none that nbdwire-client fills in
# differently, so nothing is.
same_json() {
    python3 - "$2" "$3" <<'PY' >&2 || fail "$1: the documents differ"
import json, sys
a, b = (json.load(open(p, encoding="utf-8")) for p in sys.argv[1:3])
if a != b:
    print(json.dumps(a, indent=1, sort_keys=True))
    print(json.dumps(b, indent=1, sort_keys=True))
    sys.exit(1)
PY
    log "   $1: same document"
}

# both_json NAME URI OPTIONS...: nbdinfo and nbdwire-client with OPTIONS on URI, JSON compared.
both_json() {
    local name=$1 uri=$2
    shift 2
    step "nbdinfo $*" nbdinfo "$@" "$uri" >"$T/$name.nbdinfo"
    client info "$uri" "$@" >"$T/$name.client"
    sed 's/^/    | /' "$T/$name.client" >&2
    same_json "$name ($*)" "$T/$name.nbdinfo" "$T/$name.client"
}

# status CMD...: the exit status of CMD (its output is dropped).
status() {
    local rc=0
    timeout -k 5 "$STEP_TIMEOUT" "$@" >/dev/null 2>"$T/status.err" || rc=$?
    echo "$rc"
}

# queries URI: --size, and every --can/--is feature, the same answers as nbdinfo's.
queries() {
    local uri=$1 f n c
    step "nbdinfo --size" nbdinfo --size "$uri" >"$T/size.nbdinfo"
    client --size "$uri" >"$T/size.client"
    cmp "$T/size.nbdinfo" "$T/size.client" >&2 || fail "--size differs from nbdinfo --size"
    client info "$uri" --size >"$T/size.client2"
    cmp "$T/size.nbdinfo" "$T/size.client2" >&2 || fail "info URI --size differs from nbdinfo --size"
    log "   --size: $(cat "$T/size.client")"
    for f in connect read write read-only rotational tls structured-reply cache df fast-zero flush fua \
             multi-conn trim zero; do
        n=$(status nbdinfo --can "$f" "$uri")
        c=$(status "$NBDWIRE_CLIENT" --can "$f" "$uri")
        [ "$n" = 0 ] || [ "$n" = 2 ] || fail "nbdinfo --can $f: exit status $n"
        expect_eq "$c" "$n" "--can $f exit status (as nbdinfo's)"
        # --cannot answers the other way round.
        c=$(status "$NBDWIRE_CLIENT" info "$uri" --cannot "$f")
        expect_eq "$c" "$((2 - n))" "--cannot $f exit status"
    done
    for f in read-only rotational tls; do
        n=$(status nbdinfo --is "$f" "$uri")
        expect_eq "$(status "$NBDWIRE_CLIENT" --is "$f" "$uri")" "$n" "--is $f exit status (as nbdinfo's)"
        expect_eq "$(status "$NBDWIRE_CLIENT" --is-not "$f" "$uri")" "$((2 - n))" "--is-not $f exit status"
    done
    expect_eq "$(status "$NBDWIRE_CLIENT" --can no-such-feature "$uri")" 1 "--can of an unknown feature"
}

# compare URI: everything nbdinfo can tell about the export at URI.
compare() {
    local uri=$1
    both_json info "$uri" --json
    both_json map "$uri" --map --json
    both_json totals "$uri" --map --totals --json
    both_json list "$uri" --list --json
    # The text forms of the map are nbdinfo's byte for byte.
    step "nbdinfo --map" nbdinfo --map "$uri" >"$T/map.txt.nbdinfo"
    client --map "$uri" >"$T/map.txt.client"
    cmp "$T/map.txt.nbdinfo" "$T/map.txt.client" >&2 || fail "--map text differs from nbdinfo's"
    step "nbdinfo --map --totals" nbdinfo --map --totals "$uri" >"$T/totals.txt.nbdinfo"
    client --map --totals "$uri" >"$T/totals.txt.client"
    cmp "$T/totals.txt.nbdinfo" "$T/totals.txt.client" >&2 || fail "--map --totals text differs from nbdinfo's"
    queries "$uri"
}

# Data at 1 MiB and 3 MiB of a 4 MiB export, the rest never written.
rand_file "$T/d1" 65536
rand_file "$T/d2" 131072

case $peer in
    nbdkit)
        need_peer nbdkit
        start_nbdkit "$T/k.sock" --filter=exportname --filter=blocksize-policy memory 4M \
            exportdesc=fixed:$'d\xc3\xa9scription\twith a tab' default-export=foo exportname-list=explicit \
            exportname=foo blocksize-minimum=512 blocksize-preferred=4096 blocksize-maximum=1M
        uri="nbd+unix:///foo?socket=$T/k.sock"
        client write "$uri" --offset 1M <"$T/d1"
        client write "$uri" --offset 3M <"$T/d2"
        compare "$uri"
        # The server's block sizes are shown, and only because it sent them.
        expect_eq "$(json_get "$T/info.client" block_size_minimum)" 512 "block_size_minimum"
        expect_eq "$(json_get "$T/info.client" export-name)" foo "export-name"
        # Without a description the key is left out, as nbdinfo leaves it out.
        grep -q '"description"' "$T/info.client" || fail "no description in info --json"
        expect_eq "$(status "$NBDWIRE_CLIENT" --can extended-headers "$uri")" 2 "--can extended-headers (nbdkit)"
        # The other handshakes nbdkit speaks: no contexts, no block sizes, no structured replies.
        for style in --oldstyle --newstyle --no-sr; do
            bg "nbdkit$style" nbdkit --foreground --exit-with-parent --unix "$T/k$style.sock" "$style" memory 1M
            wait_unix_socket "$T/k$style.sock" "$BG_PID"
            both_json "info$style" "nbd+unix:///?socket=$T/k$style.sock" --json
        done
        # The default export "" is listed visibly, as "" (nbdinfo: export="").
        start_nbdkit "$T/plain.sock" memory 1M
        client list "nbd+unix:///?socket=$T/plain.sock" >"$T/plain.list"
        expect_eq "$(cat "$T/plain.list")" '""' "list of a server with only the default export"
        both_json plain "nbd+unix:///?socket=$T/plain.sock" --list --json
        ;;
    qemu-nbd)
        need_peer qemu-nbd
        truncate -s 4M "$T/q.img"
        dd if="$T/d1" of="$T/q.img" bs=64K seek=16 conv=notrunc status=none
        bg qemu-nbd qemu-nbd -t -r -A -f raw -x disk -D "a read-only disk" --socket="$T/q.sock" "$T/q.img"
        wait_unix_socket "$T/q.sock" "$BG_PID"
        compare "nbd+unix:///disk?socket=$T/q.sock"
        # A map of another context (-A: qemu:allocation-depth), text and JSON, and its totals.
        both_json depth "nbd+unix:///disk?socket=$T/q.sock" --map=qemu:allocation-depth --json
        both_json depth-totals "nbd+unix:///disk?socket=$T/q.sock" --map=qemu:allocation-depth --totals --json
        step "nbdinfo --map=qemu:allocation-depth" nbdinfo --map=qemu:allocation-depth \
            "nbd+unix:///disk?socket=$T/q.sock" >"$T/depth.txt.nbdinfo"
        client map "nbd+unix:///disk?socket=$T/q.sock" --map=qemu:allocation-depth >"$T/depth.txt.client"
        cmp "$T/depth.txt.nbdinfo" "$T/depth.txt.client" >&2 || fail "--map=qemu:allocation-depth differs"
        grep -q local "$T/depth.txt.client" || fail "the allocation-depth map has no local extent"
        # A context the server does not have is an error, as in nbdinfo.
        step_fails "--map of a context the server lacks" "$NBDWIRE_CLIENT" --map=no:such "nbd+unix:///disk?socket=$T/q.sock"
        expect_eq "$(status "$NBDWIRE_CLIENT" --is read-only "nbd+unix:///disk?socket=$T/q.sock")" 0 \
            "--is read-only of a read-only export"
        ;;
    nbdwire-server)
        start_server_unix disk=memory:4M other=memory:1M
        uri=$(unix_uri disk)
        client write "$uri" --offset 1M <"$T/d1"
        compare "$uri"
        # A server that sends no block sizes gets none printed (text and JSON).
        both_json other "$(unix_uri other)" --json
        # Beyond nbdinfo 1.14: extended headers, which nbdwire-server offers and nbdkit does not.
        expect_eq "$(status "$NBDWIRE_CLIENT" --can extended-headers "$uri")" 0 "--can extended-headers"
        stop_server
        # Names that are not UTF-8 and hold control characters: valid JSON (each stray byte
        # U+FFFD, controls escaped) and escaped text, never the raw bytes.
        start_server_unix $'we\x01ird\xff\xc3\xa9 "q"=memory:1M'
        client info "$(unix_uri '')" --list --json >"$T/odd.json"
        python3 -c 'import json, sys
names = [e["export-name"] for e in json.load(open(sys.argv[1], encoding="utf-8", errors="strict"))["exports"]]
sys.exit(names != ["we\x01ird\ufffd\u00e9 \"q\""])' "$T/odd.json" || fail "odd export name wrongly encoded in JSON"
        client list "$(unix_uri '')" >"$T/odd.list"
        client info "$(unix_uri '')" --list >"$T/odd.txt"
        sed 's/^/    | /' "$T/odd.list" "$T/odd.txt" >&2
        LC_ALL=C grep -q $'[\x01\xff]' "$T/odd.list" "$T/odd.txt" && fail "raw control or non-UTF-8 bytes printed"
        grep -qF '"we\u0001ird' "$T/odd.list" || fail "list does not show the odd name escaped"
        log "   odd export names: valid JSON, escaped text"
        stop_server
        ;;
    *) fail "unknown peer '$peer'" ;;
esac
