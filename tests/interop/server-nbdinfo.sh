# nbdwire-server under nbdinfo (libnbd): sizes, export names, the export list, JSON output.
. "$(dirname "$0")/lib.sh"

need_server
need_peer nbdinfo

backed_size=$((5 * 1024 * 1024 + 4096))
truncate -s "$backed_size" "$T/backed.img"
start_server_unix disk=memory:64M small=memory:1M backed=file:"$T/backed.img"

# The first export is also the default one.
step "nbdinfo --size (default export)" nbdinfo --size "$(unix_uri '')" >"$T/size"
expect_eq "$(cat "$T/size")" 67108864 "size of the default export"
for pair in disk:67108864 small:1048576 backed:$backed_size; do
    step "nbdinfo --size ${pair%%:*}" nbdinfo --size "$(unix_uri "${pair%%:*}")" >"$T/size"
    expect_eq "$(cat "$T/size")" "${pair#*:}" "size of export '${pair%%:*}'"
done

step "nbdinfo --json small" nbdinfo --json "$(unix_uri small)" >"$T/small.json"
sed 's/^/    | /' "$T/small.json" >&2
expect_eq "$(json_get "$T/small.json" export-name)" small "nbdinfo export-name"
expect_eq "$(json_get "$T/small.json" export-size)" 1048576 "nbdinfo export-size"
expect_eq "$(json_get "$T/small.json" is_read_only)" false "nbdinfo is_read_only"

step "nbdinfo --list" nbdinfo --list "$(unix_uri '')" >"$T/list.txt"
sed 's/^/    | /' "$T/list.txt" >&2
for name in disk small backed; do
    grep -q "^export=\"$name\":" "$T/list.txt" || fail "nbdinfo --list does not show export '$name'"
done
step "nbdinfo --list --json" nbdinfo --list --json "$(unix_uri '')" >"$T/list.json"
for name in disk small backed; do
    grep -q "\"export-name\": *\"$name\"" "$T/list.json" ||
        fail "nbdinfo --list --json does not show export '$name'"
done

step_fails "nbdinfo on an export that does not exist" nbdinfo --size "$(unix_uri nosuchexport)"
stop_server

# The same over TCP.
start_server_tcp disk=memory:64M small=memory:1M
step "nbdinfo --size over TCP" nbdinfo --size "$SERVER_URI/small" >"$T/size"
expect_eq "$(cat "$T/size")" 1048576 "size of export 'small' over TCP"
step "nbdinfo --list over TCP" nbdinfo --list "$SERVER_URI" >"$T/list.txt"
grep -q '^export="small":' "$T/list.txt" || fail "nbdinfo --list over TCP does not show 'small'"
stop_server
log PASS
