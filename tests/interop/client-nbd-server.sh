# nbdwire-client against nbd-server (the reference server) on 127.0.0.1, export "disk" on a file.
# nbd-server 3.24 answers NBD_OPT_INFO with size 0 and reports the real size only on GO.
. "$(dirname "$0")/lib.sh"

need_client
need_peer nbd-server

size=$((24 * 1024 * 1024))
rand_file "$T/base" "$size"
cp "$T/base" "$T/disk.img"

start_nbd_server "$T/disk.img"
port=$NBD_SERVER_PORT
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
