# nbdwire-client against nbd-server (the reference server) on 127.0.0.1, export "disk" on a file.
# nbd-server 3.24 answers NBD_OPT_INFO with size 0 and reports the real size only on GO.
. "$(dirname "$0")/lib.sh"

need_client
need_peer nbd-server

size=$((24 * 1024 * 1024))
rand_file "$T/base" "$size"
cp "$T/base" "$T/disk.img"

# nbd-server detaches; its pid file is how it gets stopped. Retry if the port was taken meanwhile.
for attempt in 1 2 3; do
    port=$(free_port)
    cat >"$T/nbd-server.conf" <<CONF
[generic]
    listenaddr = 127.0.0.1
    port = $port
    allowlist = true
[disk]
    exportname = $T/disk.img
CONF
    rm -f "$T/nbd-server.pid"
    PIDFILES+=("$T/nbd-server.pid")
    step "nbd-server starts" nbd-server -C "$T/nbd-server.conf" -p "$T/nbd-server.pid"
    for i in $(seq 100); do
        [ -s "$T/nbd-server.pid" ] && _tcp_listening "$port" && break
        sleep 0.05
    done
    _tcp_listening "$port" && break
    [ -s "$T/nbd-server.pid" ] && _stop_pid "$(cat "$T/nbd-server.pid")"
    log "nbd-server did not listen on $port (attempt $attempt)"
    [ "$attempt" = 3 ] && fail "nbd-server did not start"
done
uri="nbd://127.0.0.1:$port/disk"

client_info_check "$uri" "$size" newstyle-fixed
# No structured replies, so no base:allocation: the whole export counts as data.
map_all_data "$uri" "$size"

client list "nbd://127.0.0.1:$port" >"$T/list.txt"
sed 's/^/    | /' "$T/list.txt" >&2
grep -qw disk "$T/list.txt" || fail "list does not show export 'disk'"

client_roundtrip "$uri" "$T/base"

spliced "$T/base" "$RT_OFFSET" "$RT_DATA" >"$T/expected"
same_file "$T/expected" "$T/disk.img" "file behind nbd-server"
log PASS
