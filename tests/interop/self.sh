# nbdwire-client against nbdwire-server in one handshake style (fixed-newstyle, newstyle,
# oldstyle or legacy1997), over a Unix socket and over TCP, plus a read-only export.
. "$(dirname "$0")/lib.sh"

style=${1:?usage: self.sh SERVER CLIENT fixed-newstyle|newstyle|oldstyle|legacy1997}
case $style in
    fixed-newstyle) proto=newstyle-fixed ;;
    newstyle)       proto=newstyle ;;
    oldstyle)       proto=oldstyle ;;
    # No handshake: the client is told the size, and nothing else can be reported.
    legacy1997)     proto=; CLIENT_GLOBAL=(--style legacy1997 --size 64M) ;;
    *) fail "unknown style '$style'" ;;
esac
need_server
need_client

size=$((64 * 1024 * 1024))
truncate -s "$size" "$T/zero.img"

# Unix socket: info, list, a round trip, then whole-export copies in and out.
# Without a handshake with names there is exactly one export.
if [ "$style" = oldstyle ] || [ "$style" = legacy1997 ]; then
    start_server_unix --style "$style" disk=memory:64M
    uri=$(unix_uri '')
else
    start_server_unix --style "$style" disk=memory:64M other=memory:1M
    uri=$(unix_uri disk)
fi
client_info_check "$uri" "$size" "$proto"
if [ "$style" = fixed-newstyle ]; then
    client list "$(unix_uri '')" >"$T/list.txt"
    sed 's/^/    | /' "$T/list.txt" >&2
    grep -qw disk "$T/list.txt" && grep -qw other "$T/list.txt" ||
        fail "list does not show both exports"
fi
if [ "$style" = fixed-newstyle ] || [ "$style" = newstyle ]; then
    client info "$(unix_uri other)" --json >"$T/other.json"
    expect_eq "$(json_get "$T/other.json" export-size)" 1048576 "size of export 'other'"
fi
client_roundtrip "$uri" "$T/zero.img"

rand_file "$T/source.img" "$size"
client copy "$T/source.img" "$uri"
client copy "$uri" "$T/out.img"
same_file "$T/source.img" "$T/out.img" "copy in and out"
client copy "$uri" - >"$T/out2.img"
same_file "$T/source.img" "$T/out2.img" "copy out to stdout"
# From a pipe: the data goes through the request buffers instead of sendfile().
rand_file "$T/piped.img" "$size"
cat "$T/piped.img" | client copy - "$uri"
client copy "$uri" "$T/out3.img"
same_file "$T/piped.img" "$T/out3.img" "copy in from a pipe"
stop_server

# TCP, with whole-export copies as well (WRITE payloads sent from the file after a corked header).
start_server_tcp --style "$style" disk=memory:64M
tcp_uri=$SERVER_URI/disk
if [ "$style" = oldstyle ] || [ "$style" = legacy1997 ]; then tcp_uri=$SERVER_URI; fi
client_roundtrip "$tcp_uri" "$T/zero.img"
client copy "$T/source.img" "$tcp_uri"
rm -f "$T/out.img"
client copy "$tcp_uri" "$T/out.img"
same_file "$T/source.img" "$T/out.img" "copy in and out over TCP"
stop_server

# Read-only: writes fail, reads work.
start_server_unix --style "$style" --read-only disk=memory:64M
uri=$(unix_uri '')
client read "$uri" --offset 0 --length 65536 >"$T/ro.read"
head -c 65536 /dev/zero | cmp - "$T/ro.read" || fail "read from the read-only export differs"
if [ "$style" != legacy1997 ]; then
    client info "$uri" --json >"$T/ro.json"
    expect_eq "$(json_get "$T/ro.json" is_read_only)" true "is_read_only in info --json"
fi
head -c 65536 /dev/urandom >"$T/ro.data"
step_fails "write to the read-only export" "$NBDWIRE_CLIENT" "${CLIENT_GLOBAL[@]}" write "$uri" \
    --offset 0 <"$T/ro.data"
client read "$uri" --offset 0 --length 65536 >"$T/ro.read"
head -c 65536 /dev/zero | cmp - "$T/ro.read" || fail "the refused write changed the export"
stop_server
log PASS
