# examples/embed/embed-client against nbdkit: ranges (unaligned ones, one above the 32 MiB maximum
# request size, the export's last bytes) read from a memory export with known content over a
# Unix socket and from the pattern plugin over TCP loopback, compared with cmp; a missing export,
# a range past the end and an error reply each end the client with status 1 and one stderr line.
. "$(dirname "$0")/lib.sh"

need_client
need_peer nbdkit nbdcopy
size=$((80 * 1024 * 1024))
ranges=("0 1" "1 4095" "4095 8194" "12345 1000000" "7 40000000" "33554431 33554434" "$((size - 333)) 333")

# client_step URI OFFSET LENGTH EXPECTED-FILE: embed-client's bytes equal the expected ones.
client_step() {
    step "embed-client $2 $3" timeout 20 "$NBDWIRE_CLIENT" "$1" "$2" "$3" >"$T/got.bin"
    slice "$4" "$2" "$3" >"$T/want.bin"
    same_file "$T/want.bin" "$T/got.bin" "$3 bytes at $2"
}

# client_fails DESCRIPTION PATTERN URI OFFSET LENGTH: exit status 1, one line on stderr matching
# PATTERN, nothing on stdout, within 20 s.
client_fails() {
    local desc=$1 pattern=$2 rc=0
    shift 2
    log "+ (must fail) embed-client $*"
    timeout 20 "$NBDWIRE_CLIENT" "$@" >"$T/fail.out" 2>"$T/fail.err" || rc=$?
    sed 's/^/    | /' "$T/fail.err" >&2
    [ "$rc" -eq 124 ] && fail "$desc: embed-client hung (killed after 20 s)"
    expect_eq "$rc" 1 "$desc: exit status"
    expect_eq "$(wc -l <"$T/fail.err")" 1 "$desc: lines on stderr"
    grep -q -- "$pattern" "$T/fail.err" || fail "$desc: stderr does not match '$pattern'"
    [ -s "$T/fail.out" ] && fail "$desc: wrote to stdout"
    _sanitizer_report "$T/fail.err" && fail "$desc: sanitizer report"
    return 0
}

# 1. Unix socket: nbdkit's memory plugin, filled by nbdcopy with random bytes; only the export
#    name "disk" is accepted.
rand_file "$T/content.bin" "$size"
sock=$T/nbdkit.sock
start_nbdkit "$sock" --filter=exportname memory size="$size" exportname=disk exportname-strict=true
uri="nbd+unix:///disk?socket=$sock"
step "nbdcopy the known content in" nbdcopy "$T/content.bin" "$uri"
for r in "${ranges[@]}"; do
    set -- $r
    client_step "$uri" "$1" "$2" "$T/content.bin"
done
client_fails "missing export" "export 'nosuch' refused" "nbd+unix:///nosuch?socket=$sock" 0 512
client_fails "export name with control bytes" 'export .bad\\x01\\x0aname. refused' \
    "nbd+unix:///bad%01%0Aname?socket=$sock" 0 512
client_fails "range past the end" "refused" "$uri" $((size - 100)) 200
client_fails "server not listening" "cannot connect" "nbd+unix:///disk?socket=$T/none.sock" 0 1

# 2. TCP loopback: the pattern plugin (each 8-byte word is its own offset, big-endian).
port=$(free_port)
bg nbdkit-tcp nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$port" pattern size="$size"
for i in $(seq 200); do _tcp_listening "$port" && break; sleep 0.05; done
_tcp_listening "$port" || fail "nbdkit does not listen on port $port"
uri=nbd://127.0.0.1:$port
step "nbdcopy the pattern out (the expected bytes)" nbdcopy "$uri" "$T/pattern.bin"
# The pattern itself, independently of any NBD client: the word at 0x4abcde8 is its offset.
expect_eq "$(od -An -tx1 -j $((0x4abcde8)) -N 8 "$T/pattern.bin" | tr -d ' ')" 0000000004abcde8 \
    "pattern word at 0x4abcde8"
for r in "${ranges[@]}"; do
    set -- $r
    client_step "$uri" "$1" "$2" "$T/pattern.bin"
done
client_step "$uri/" $((0x4abcdef)) 1000 "$T/pattern.bin"  # the empty export name

# 3. An error reply: nbdkit's error filter fails every read with EIO.
sock2=$T/nbdkit-error.sock
bg nbdkit-error nbdkit --foreground --exit-with-parent --unix "$sock2" --filter=error memory size=1M \
    error=EIO error-pread-rate=100%
wait_unix_socket "$sock2" "$BG_PID"
client_fails "read answered with EIO" "NBD_EIO" "nbd+unix:///?socket=$sock2" 4096 4096
log PASS
