# nbdwire-client against nbdkit's memory plugin in one handshake flavour:
#   default   fixed newstyle with structured replies
#   oldstyle  nbdkit --oldstyle (no options at all; nbdkit advertises FLUSH there but rejects it)
#   newstyle  nbdkit --mask-handshake=0 (plain newstyle: the client must fall back to EXPORT_NAME)
#   no-sr     nbdkit --no-sr (fixed newstyle, simple replies only)
. "$(dirname "$0")/lib.sh"

mode=${1:?usage: client-nbdkit.sh SERVER CLIENT default|oldstyle|newstyle|no-sr}
case $mode in
    default)  opts=();                   proto=newstyle-fixed; has_list=1 ;;
    oldstyle) opts=(--oldstyle);         proto=oldstyle;       has_list=0 ;;
    newstyle) opts=(--mask-handshake=0); proto=newstyle;       has_list=0 ;;
    no-sr)    opts=(--no-sr);            proto=newstyle-fixed; has_list=1 ;;
    *) fail "unknown mode '$mode'" ;;
esac
need_client
need_peer nbdkit nbdcopy

# An export size that is not a multiple of 512.
size=$((20 * 1024 * 1024 + 12345))
sock=$T/nbdkit.sock
uri="nbd+unix:///?socket=$sock"
start_nbdkit "$sock" "${opts[@]}" memory "$size"

# The peer fills the export, so reads are checked against data the client did not write.
rand_file "$T/base" "$size"
step "nbdcopy fills the export" nbdcopy "$T/base" "$uri"

client_info_check "$uri" "$size" "$proto"
# Written all over, so one data extent, whether or not the server has base:allocation (--no-sr
# and oldstyle have none: the whole export counts as data).
map_all_data "$uri" "$size"

if [ "$has_list" = 1 ]; then
    client list "$uri" >"$T/list.txt"
    sed 's/^/    | /' "$T/list.txt" >&2
    client list "$uri" --json >"$T/list.json"
    sed 's/^/    | /' "$T/list.json" >&2
else
    # This nbdkit mode offers no option haggling; listing must end cleanly either way.
    step_ends "nbdwire-client list" "$NBDWIRE_CLIENT" list "$uri"
fi

if [ "$mode" = oldstyle ]; then
    # nbdkit --oldstyle advertises FLUSH and then refuses it (checklist §5). The client must
    # report that as a failure, and --no-flush is how a user writes to such a server.
    head -c 4096 /dev/urandom >"$T/small"
    step_fails "write ending in a refused FLUSH" "$NBDWIRE_CLIENT" write "$uri" --offset 0 <"$T/small"
    grep -q "FLUSH failed: NBD_EINVAL" "$T/step.err" || fail "the refused FLUSH was not reported as such"
    head -c 4096 "$T/base" | "$NBDWIRE_CLIENT" write "$uri" --offset 0 --no-flush || fail "restoring the first block"
    WRITE_OPTS=(--no-flush)
fi

client_roundtrip "$uri" "$T/base"

# Independent check through the peer's own client: the whole export is the base with the block
# written at the right place.
spliced "$T/base" "$RT_OFFSET" "$RT_DATA" >"$T/expected"
step "nbdcopy reads the export" nbdcopy "$uri" "$T/actual"
same_file "$T/expected" "$T/actual" "export contents seen by nbdcopy"
log PASS
