# examples/embed/embed-server under nbdinfo (libnbd): the export's size, name and capabilities,
# the default export, the export list, and a refused name. Run as
#   bash embed-server-nbdinfo.sh PATH-TO-embed-server PATH-TO-embed-client
. "$(dirname "$0")/lib.sh"

need_server
need_peer nbdinfo
start_server_unix

step "nbdinfo --json disk" nbdinfo --json "$(unix_uri disk)" >"$T/disk.json"
sed 's/^/    | /' "$T/disk.json" >&2
expect_eq "$(json_get "$T/disk.json" export-size)" 67108864 "export-size"
expect_eq "$(json_get "$T/disk.json" export-name)" disk "export-name"
expect_eq "$(json_get "$T/disk.json" protocol)" newstyle-fixed "protocol"
expect_eq "$(json_get "$T/disk.json" structured)" true "structured replies"
expect_eq "$(json_get "$T/disk.json" is_read_only)" false "is_read_only"
for cap in can_flush can_fua can_trim can_zero can_fast_zero can_cache can_multi_conn; do
    expect_eq "$(json_get "$T/disk.json" "$cap")" true "$cap"
done

# The empty name selects the default export, the only one.
step "nbdinfo --size (default export)" nbdinfo --size "$(unix_uri '')" >"$T/size"
expect_eq "$(cat "$T/size")" 67108864 "size of the default export"

step "nbdinfo --list" nbdinfo --list "$(unix_uri '')" >"$T/list.txt"
sed 's/^/    | /' "$T/list.txt" >&2
grep -q '^export="disk":' "$T/list.txt" || fail "nbdinfo --list does not show export 'disk'"
expect_eq "$(grep -c '^export=' "$T/list.txt")" 1 "exports listed"
step "nbdinfo --list --json" nbdinfo --list --json "$(unix_uri '')" >"$T/list.json"
grep -q '"export-name": *"disk"' "$T/list.json" || fail "nbdinfo --list --json does not show 'disk'"

step_fails "nbdinfo on an export that does not exist" nbdinfo --size "$(unix_uri nosuchexport)"
grep -qi 'no export named' "$T/step.err" ||
    fail "nbdinfo did not report the refused export"

# Still serving after all of that (each nbdinfo above was its own connection).
step "nbdinfo --size after the others" nbdinfo --size "$(unix_uri disk)" >"$T/size"
expect_eq "$(cat "$T/size")" 67108864 "size, last connection"
stop_server
log PASS
