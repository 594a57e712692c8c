# examples/embed/embed-server under nbdcopy: a random 64 MiB file copied in and back out over
# several connections at once (the export advertises multi-conn), compared byte for byte; then
# embed-client reads unaligned ranges of it, one larger than the maximum request size.
. "$(dirname "$0")/lib.sh"

need_server
need_client
need_peer nbdcopy
size=67108864
rand_file "$T/in.bin" "$size"
start_server_unix

step "nbdcopy file -> export (4 connections)" \
    nbdcopy --connections=4 --requests=16 --flush "$T/in.bin" "$(unix_uri disk)"
step "nbdcopy export -> file (4 connections)" \
    nbdcopy --connections=4 --requests=16 "$(unix_uri disk)" "$T/out.bin"
same_file "$T/in.bin" "$T/out.bin" "64 MiB round trip through nbdcopy"

# A second copy in with other request sizes overwrites part of the export; the default export
# name (empty) reaches the same memory.
rand_file "$T/in2.bin" $((9 * 1024 * 1024 + 4097))
step "nbdcopy a smaller file in" nbdcopy --request-size=65536 "$T/in2.bin" "$(unix_uri '')"
spliced "$T/in.bin" 0 "$T/in2.bin" >"$T/expected.bin"
step "nbdcopy export -> file again" nbdcopy "$(unix_uri disk)" "$T/out2.bin"
same_file "$T/expected.bin" "$T/out2.bin" "export after the second copy"

for range in "0 1" "4095 8194" "12345 1000000" "7 40000000" "$((size - 333)) 333"; do
    set -- $range
    step "embed-client $1 $2" "$NBDWIRE_CLIENT" "$(unix_uri disk)" "$1" "$2" >"$T/part.bin"
    slice "$T/expected.bin" "$1" "$2" >"$T/part.expected"
    same_file "$T/part.expected" "$T/part.bin" "embed-client read of $2 bytes at $1"
done
stop_server
log PASS
