# nbdwire-client copy between two NBD servers, and how a copy ends when it cannot finish.
#   nbdkit-to-server   nbdkit memory (sparse) -> nbdwire-server export filled with data first:
#                      same sha256, and the target's map has the source's holes again
#                      (WRITE_ZEROES); then --target-is-zero onto a fresh export sends no
#                      request at all for the holes (nbdkit -v log)
#   server-to-nbdkit   nbdwire-server (sparse) -> nbdkit memory filled with data first, over
#                      two connections and 4 requests each, with -p: same sha256 and holes
#   sigint             SIGINT during a slow copy (nbdkit delay filter): exit status 130, the
#                      target flushed after its last write, NBD_CMD_DISC on every connection
#                      of both servers (nbdkit -v logs); SIGTERM during a copy into a new file:
#                      143 and the file removed; a failed copy leaves an existing file alone
. "$(dirname "$0")/lib.sh"

mode=${1:?usage: client-copy-nbd.sh SERVER CLIENT nbdkit-to-server|server-to-nbdkit|sigint}
need_client
need_peer nbdkit nbdinfo

size=$((8 * 1024 * 1024))

# sparse_source URI: data at 1 MiB (256 KiB) and 5 MiB (1 MiB) of an 8 MiB export, written by
# nbdwire-client; the rest is never written. Leaves the expected contents in $T/expected.
sparse_source() {
    rand_file "$T/a" 262144
    rand_file "$T/b" 1048576
    client write "$1" --offset 1M <"$T/a"
    client write "$1" --offset 5M <"$T/b"
    truncate -s "$size" "$T/expected"
    dd if="$T/a" of="$T/expected" bs=64K seek=16 conv=notrunc status=none
    dd if="$T/b" of="$T/expected" bs=64K seek=80 conv=notrunc status=none
}

# sha_of URI: sha256 of the whole export, read by nbdcopy when present, else by the client.
sha_of() { client read "$1" | sha256sum | cut -d' ' -f1; }

# holes_match SRC DST: nbdinfo --map of DST equals that of SRC (types and extents).
holes_match() {
    step "nbdinfo --map source" nbdinfo --map "$1" >"$T/src.map"
    step "nbdinfo --map target" nbdinfo --map "$2" >"$T/dst.map"
    sed 's/^/    | /' "$T/dst.map" >&2
    grep -q 'hole' "$T/src.map" || fail "the source has no holes to keep"
    cmp "$T/src.map" "$T/dst.map" >&2 || fail "the target's allocation differs from the source's"
    log "   the target has the source's holes and data extents"
}

# fill URI: the whole export written with random data (so holes must be made, not left).
fill() {
    rand_file "$T/fill" "$size"
    client write "$1" <"$T/fill"
    step "nbdinfo --map (filled)" nbdinfo --map "$1" >"$T/filled.map"
    grep -q hole "$T/filled.map" && fail "the filled export still has holes"
    return 0
}

case $mode in
    nbdkit-to-server)
        start_nbdkit "$T/k.sock" memory 8M
        src="nbd+unix:///?socket=$T/k.sock"
        sparse_source "$src"
        start_server_unix disk=memory:8M fresh=memory:8M
        dst=$(unix_uri disk)
        fill "$dst"
        client copy "$src" "$dst"
        expect_eq "$(sha_of "$dst")" "$(sha256sum <"$T/expected" | cut -d' ' -f1)" "sha256 of the target"
        holes_match "$src" "$dst"
        # --target-is-zero onto an export that reads as zeroes: the data arrives, nothing else.
        client copy "$src" "$(unix_uri fresh)" --target-is-zero
        expect_eq "$(sha_of "$(unix_uri fresh)")" "$(sha256sum <"$T/expected" | cut -d' ' -f1)" \
            "sha256 after --target-is-zero"
        holes_match "$src" "$(unix_uri fresh)"
        stop_server
        ;;
    server-to-nbdkit)
        start_server_unix disk=memory:8M
        src=$(unix_uri disk)
        sparse_source "$src"
        # nbdkit -v logs each request; the target is filled, then copied onto.
        start_nbdkit "$T/k.sock" -v memory 8M
        dst="nbd+unix:///?socket=$T/k.sock"
        fill "$dst"
        client copy "$src" "$dst" -p --connections 2 --requests 4
        # step leaves the command's stderr in $T/step.err: "NN%" lines, stderr not being a tty.
        grep -qx '100%' "$T/step.err" || fail "-p printed no 100% line"
        [ "$(grep -cx '[0-9]*%' "$T/step.err")" -ge 2 ] || fail "-p printed no progress before 100%"
        expect_eq "$(sha_of "$dst")" "$(sha256sum <"$T/expected" | cut -d' ' -f1)" "sha256 of the target"
        holes_match "$src" "$dst"
        grep -aq 'memory: zero' "$T/nbdkit.err" || fail "no WRITE_ZEROES reached nbdkit for the holes"
        # --target-is-zero: a fresh nbdkit gets the data and no zero request at all.
        bg zero nbdkit --foreground --exit-with-parent -v --unix "$T/z.sock" memory 8M
        wait_unix_socket "$T/z.sock" "$BG_PID"
        client copy "$src" "nbd+unix:///?socket=$T/z.sock" --target-is-zero
        grep -aq 'memory: pwrite' "$T/zero.err" || fail "no WRITE reached the fresh nbdkit"
        grep -aq 'memory: zero' "$T/zero.err" && fail "--target-is-zero still sent WRITE_ZEROES"
        expect_eq "$(sha_of "nbd+unix:///?socket=$T/z.sock")" "$(sha256sum <"$T/expected" | cut -d' ' -f1)" \
            "sha256 after --target-is-zero"
        stop_server
        ;;
    sigint)
        # The source answers each READ after 300 ms: 32 MiB in 2 MiB READs, one at a time,
        # take about 5 s, and the signal comes once the first WRITE is in.
        bg src nbdkit --foreground --exit-with-parent -v --unix "$T/src.sock" --filter=delay pattern 32M rdelay=300ms
        wait_unix_socket "$T/src.sock" "$BG_PID"
        bg dst nbdkit --foreground --exit-with-parent -v --unix "$T/dst.sock" memory 32M
        wait_unix_socket "$T/dst.sock" "$BG_PID"
        src="nbd+unix:///?socket=$T/src.sock"
        dst="nbd+unix:///?socket=$T/dst.sock"
        log "+ $NBDWIRE_CLIENT copy $src $dst --requests 1 (SIGINT after the first WRITE)"
        "$NBDWIRE_CLIENT" copy "$src" "$dst" --requests 1 2>"$T/copy.err" &
        pid=$!
        # The signal once the first WRITE has reached the target (at most 10 s).
        for i in $(seq 100); do grep -aq 'memory: pwrite' "$T/dst.err" && break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null || fail "the copy ended before the signal"
        kill -INT "$pid"
        rc=0
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; fail "the copy did not stop within 10 s of SIGINT"; }
        wait "$pid" || rc=$?
        sed 's/^/    | /' "$T/copy.err" >&2
        expect_eq "$rc" 130 "exit status after SIGINT"
        _sanitizer_report "$T/copy.err" && fail "sanitizer report"
        # The target: some writes, then a flush after the last of them, then the DISC.
        grep -a -n -E 'memory: (pwrite|flush)|NBD_CMD_DISC' "$T/dst.err" >"$T/dst.events" || true
        sed 's/^/    | /' "$T/dst.events" >&2
        last_write=$(grep -a 'pwrite' "$T/dst.events" | tail -n 1 | cut -d: -f1)
        flush=$(grep -a 'flush' "$T/dst.events" | tail -n 1 | cut -d: -f1)
        disc=$(grep -a 'NBD_CMD_DISC' "$T/dst.events" | tail -n 1 | cut -d: -f1)
        [ -n "$last_write" ] || fail "nothing was written before the signal"
        [ -n "$flush" ] && [ "$flush" -gt "$last_write" ] || fail "the target was not flushed after its last write"
        [ -n "$disc" ] && [ "$disc" -gt "$flush" ] || fail "no NBD_CMD_DISC to the target after the flush"
        # Every connection ended with a DISC, on both servers.
        for side in src dst; do
            opened=$(grep -ac 'newstyle negotiation: flags: global' "$T/$side.err" || true)
            discs=$(grep -ac 'client sent NBD_CMD_DISC' "$T/$side.err" || true)
            [ "$opened" -ge 1 ] || fail "$side: no connection in the log"
            expect_eq "$discs" "$opened" "$side: connections ended with NBD_CMD_DISC"
        done
        writes=$(grep -ac 'memory: pwrite' "$T/dst.err")
        [ "$writes" -lt 16 ] || fail "all 16 writes were made: the copy was not interrupted"
        log "   stopped after $writes of 16 writes"

        # SIGTERM during a copy into a file the copy creates: 143, and the file is gone.
        log "+ $NBDWIRE_CLIENT copy $src $T/new.img (SIGTERM once data is in the file)"
        "$NBDWIRE_CLIENT" copy "$src" "$T/new.img" --requests 1 2>"$T/copy.err" &
        pid=$!
        # The signal once data has reached the file (at most 10 s).
        for i in $(seq 100); do [ -s "$T/new.img" ] && break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null || fail "the copy into a file ended before the signal"
        [ -e "$T/new.img" ] || fail "the copy has not created its file"
        kill -TERM "$pid"
        rc=0
        wait "$pid" || rc=$?
        sed 's/^/    | /' "$T/copy.err" >&2
        expect_eq "$rc" 143 "exit status after SIGTERM"
        [ -e "$T/new.img" ] && fail "the interrupted copy left $T/new.img behind"
        log "   the file the copy created was removed"
        # A copy that fails leaves a file it did not create (truncated, not removed) and
        # creates nothing when it fails before the copy starts.
        echo existing >"$T/old.img"
        step_fails "copy from a server that does not exist" "$NBDWIRE_CLIENT" copy \
            "nbd+unix:///?socket=$T/none.sock" "$T/new2.img"
        [ -e "$T/new2.img" ] && fail "a failed copy left $T/new2.img behind"
        step_fails "copy from a server that does not exist onto an existing file" "$NBDWIRE_CLIENT" copy \
            "nbd+unix:///?socket=$T/none.sock" "$T/old.img"
        [ -e "$T/old.img" ] || fail "a failed copy removed a file it had not created"
        log "   failed copies leave no new file and keep existing ones"
        ;;
    *) fail "unknown mode '$mode'" ;;
esac
