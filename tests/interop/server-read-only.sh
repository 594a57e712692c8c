# nbdwire-server --read-only: peers see a read-only export, their writes fail with a clear error,
# reads work, and the backing file is unchanged.
. "$(dirname "$0")/lib.sh"

need_server
need_peer nbdinfo nbdcopy qemu-io qemu-img sha256sum

rand_file "$T/disk.img" $((8 * 1024 * 1024))
sum=$(sha256sum <"$T/disk.img" | cut -d' ' -f1)
rand_file "$T/other.img" $((8 * 1024 * 1024))
start_server_unix --read-only disk=file:"$T/disk.img"
uri=$(unix_uri disk)

step "nbdinfo --json" nbdinfo --json "$uri" >"$T/info.json"
expect_eq "$(json_get "$T/info.json" is_read_only)" true "is_read_only seen by nbdinfo"

step_fails "qemu-io write" qemu-io -f raw -c 'write -P 0x55 0 64k' "$uri"
grep -Eiq 'read-only|permission denied|not permitted' "$T/step.err" ||
    fail "qemu-io gave no read-only error"
step_fails "qemu-img convert into the export" qemu-img convert -n -f raw -O raw "$T/other.img" "$uri"
grep -Eiq 'read-only|permission denied|not permitted' "$T/step.err" ||
    fail "qemu-img gave no read-only error"
step_fails "nbdcopy into the export" nbdcopy "$T/other.img" "$uri"
grep -Eiq 'read-only|permission denied|not permitted' "$T/step.err" ||
    fail "nbdcopy gave no read-only error"

step "qemu-io -r read" qemu-io -r -f raw -c 'read 0 1M' "$uri" >"$T/read.out"
step "nbdcopy out" nbdcopy "$uri" "$T/out.img"
same_file "$T/disk.img" "$T/out.img" "export read through nbdcopy"
expect_eq "$(sha256sum <"$T/disk.img" | cut -d' ' -f1)" "$sum" "sha256 of the backing file"
stop_server
log PASS
