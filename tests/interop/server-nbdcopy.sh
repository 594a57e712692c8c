# nbdwire-server under nbdcopy (libnbd, many requests in flight): random data with a zero run
# copied in and out of a memory export and a file-backed export, checked with sha256sum.
. "$(dirname "$0")/lib.sh"

need_server
need_peer nbdcopy sha256sum

size=$((32 * 1024 * 1024))
# Random data with a 1 MiB run of zeros, which nbdcopy may send as zeroing or trim requests.
{ head -c $((15 * 1024 * 1024)) /dev/urandom; head -c $((1024 * 1024)) /dev/zero;
  head -c $((16 * 1024 * 1024)) /dev/urandom; } >"$T/source.img"
sum=$(sha256sum <"$T/source.img" | cut -d' ' -f1)
truncate -s "$size" "$T/backed.img"
start_server_unix mem=memory:32M mem2=memory:32M backed=file:"$T/backed.img"

step "nbdcopy file -> mem" nbdcopy "$T/source.img" "$(unix_uri mem)"
step "nbdcopy mem -> file" nbdcopy "$(unix_uri mem)" "$T/mem.out"
expect_eq "$(sha256sum <"$T/mem.out" | cut -d' ' -f1)" "$sum" "sha256 after the round trip via mem"

step "nbdcopy --flush file -> backed" nbdcopy --flush "$T/source.img" "$(unix_uri backed)"
expect_eq "$(sha256sum <"$T/backed.img" | cut -d' ' -f1)" "$sum" "sha256 of the backing file"
step "nbdcopy backed -> stdout" nbdcopy "$(unix_uri backed)" - >"$T/backed.out"
expect_eq "$(sha256sum <"$T/backed.out" | cut -d' ' -f1)" "$sum" "sha256 after the round trip via backed"

# NBD to NBD on the same server, two connections at once.
step "nbdcopy backed -> mem2" nbdcopy "$(unix_uri backed)" "$(unix_uri mem2)"
step "nbdcopy mem2 -> file" nbdcopy "$(unix_uri mem2)" "$T/mem2.out"
expect_eq "$(sha256sum <"$T/mem2.out" | cut -d" " -f1)" "$sum" "sha256 after the NBD to NBD copy"
stop_server
log PASS
