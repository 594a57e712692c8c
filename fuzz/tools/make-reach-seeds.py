#!/usr/bin/env python3
"""Hand-built seeds for paths the captured sessions and make-modern-seeds.py do not start
from (see docs/fuzzing.md, "Reach"): a server shutting down mid-handshake, and a client that
does not read while it sends (a server whose caller sends a few bytes at a time), and error
chunks padded after their fields. Writes OUT/<target>/<name>; add them to the corpora with
`fuzz/tools/run-fuzz.sh BUILD --seed OUT` (minimised) or copy them in under their names.

  fuzz/tools/make-reach-seeds.py OUT
"""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
OPT = {"export_name": 1, "abort": 2, "list": 3, "starttls": 5, "info": 6, "go": 7}


def option(name, data=b""):
    return struct.pack(">QII", IHAVEOPT, OPT[name], len(data)) + data


def go_body(name=b"", infos=()):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def server_cfg(b0=0, b1=0x01, b2=0, b3=0, tflags=0x0001, size=2, b7=0):
    return bytes([b0, b1, b2, b3]) + struct.pack(">H", tflags) + bytes([size, b7])


FLAGS = struct.pack(">I", 3)  # C_FIXED_NEWSTYLE | C_NO_ZEROES


def seeds():
    # server_handshake, cfg[0] bit 5: the server begins to shut down after two options.
    sd = server_cfg(b0=0x20)
    yield "server_handshake", "shutdown-then-export-name", sd + FLAGS + option("list") + option("list") + option(
        "export_name", b"disk")
    yield "server_handshake", "shutdown-then-go-abort", sd + FLAGS + option("list") + option("info", go_body()) + option(
        "go", go_body(b"disk", (3,))) + option("abort")
    yield "server_handshake", "shutdown-then-starttls", server_cfg(b0=0xa0) + FLAGS + option("list") + option(
        "list") + option("starttls") + option("go", go_body())


REQUEST_MAGIC = 0x25609513
CMD = {"read": 0, "write": 1, "disc": 2, "flush": 3}


def request(cmd, cookie, offset, length, flags=0):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, CMD[cmd], cookie, offset, length)


def split(surface, count, data, cuts=()):
    """fuzz_split: surface, cut count (bit 1: the server's split run sends at most
    drain_limits[(count >> 2) % 4] bytes per drain: 1, 7, 64, 1000), the cuts, the input."""
    cuts = list(cuts) + [0] * (count - len(cuts))
    return bytes([surface, count]) + b"".join(struct.pack(">H", c) for c in cuts) + data


def slow_reader_seeds():
    """A client that does not read while it sends: the server's caller sends only part of the
    output each time (drain_limit), so replies queue behind unsent bytes, the outbox compacts
    and fills, and the server holds input back (`blocked`) until it can send."""
    # server_handshake: one export "disk" with a description of max_string bytes (cfg[1] =
    # 0x28: name index 1, description index 2), three INFO options asking for it, then GO.
    long_desc = server_cfg(b1=0x28)
    infos = option("info", go_body(b"disk", (2,))) * 3 + option("go", go_body(b"disk", (2, 3)))
    hs = long_desc + FLAGS + infos
    yield "server_handshake", "slow-reader-long-info-replies", hs
    yield "split", "slow-reader-long-info-limit-1", split(0, 2, hs, (40, 4000))
    yield "split", "slow-reader-long-info-limit-1000", split(0, 14, hs, (40, 4000, 9000))
    # The same outbox filled to a few bytes short (two such INFO answers, then k STRUCTURED_REPLY
    # options, each ACK 20 bytes of which a drain sends 1), then the option whose reply no
    # longer fits: the server blocks before answering it, and answers once the caller has sent.
    fill = long_desc + FLAGS + option("info", go_body(b"disk", (2,))) * 2
    sr = struct.pack(">QII", IHAVEOPT, 8, 0)
    tls_fill = server_cfg(b0=0x80, b1=0x28) + FLAGS + option("info", go_body(b"disk", (2,))) * 2
    ctx_fill = server_cfg(b1=0x28, b7=0x80) + FLAGS + option("info", go_body(b"disk", (2,))) * 2
    query = struct.pack(">I", 4) + b"disk" + struct.pack(">I", 0)  # export "disk", no queries: all
    full = {
        "export-name": fill + sr * 8 + option("export_name", b"disk"),
        "abort": fill + sr * 14 + option("abort"),
        "structured-reply": fill + sr * 15 + option("go", go_body(b"disk")),
        "starttls": tls_fill + sr * 14 + option("starttls"),
        "list-meta-context-13": ctx_fill + sr * 13 + struct.pack(">QII", IHAVEOPT, 9, len(query)) + query,
        "list-meta-context-14": ctx_fill + sr * 14 + struct.pack(">QII", IHAVEOPT, 9, len(query)) + query,
    }
    for name, data in full.items():
        yield "split", f"slow-reader-full-outbox-{name}", split(0, 2, data)
    # LIST of three exports, one with a name of max_string bytes, three times: a list longer
    # than the room left is sent in parts, one export at a time.
    lists = server_cfg(b1=0x02) + FLAGS + option("list") * 3 + option("abort")
    yield "split", "slow-reader-list-long-names", split(0, 2, lists)
    # server_tx with structured replies (cfg[0] bit 1), a 1 MiB export (size index 2): 80
    # READs of 1 byte sent back to back; cookie bits 2-3 pick how each reply goes out (0: one
    # data chunk, 1: data then hole, 3: data back to front then NONE). With 1 byte a drain,
    # the READ data marks pile up until the outbox has none left for the next request.
    tx_cfg = server_cfg(b0=0x02, size=2)
    reads = b"".join(request("read", (i << 4) | ((i % 4) << 2), i * 512, 1 + (i % 3)) for i in range(80))
    tx = tx_cfg + reads + request("disc", 0xd15c, 0, 0)
    yield "split", "slow-reader-pipelined-reads-limit-1", split(1, 2, tx, (100,))
    yield "split", "slow-reader-pipelined-reads-limit-7", split(1, 6, tx, (100, 1000))
    # READs answered in four data chunks each (cookie style 3), more than a reply reserves:
    # with the data marks piling up, a chunk finds no payload mark left (outbox_full) until
    # the caller has sent what is queued. (The first READ, one chunk, shifts the count so
    # that the marks run out inside a reply rather than between two requests.)
    chunked = request("read", 0, 0, 1) + b"".join(
        request("read", ((i + 1) << 4) | (3 << 2), i * 512, 8) for i in range(20)) + request("disc", 0xd15c, 0, 0)
    yield "split", "slow-reader-pipelined-chunked-reads-limit-1", split(
        1, 2, tx_cfg + chunked, (len(chunked) - 2, len(chunked) - 2))
    # The same with simple replies: 16-byte headers and READ data.
    simple = server_cfg(b0=0x00, size=2) + reads + request("disc", 0xd15c, 0, 0)
    yield "split", "slow-reader-pipelined-reads-simple-limit-1", split(1, 2, simple, (28,))


def codec_seeds():
    """fuzz_codec: kind[1] (9: error chunk) chunk type[2] declared length[4] cut count[1] then
    the body. Error chunks with bytes after their fields: the strict decoder refuses them
    (error_chunk_trailing_data), the client's tolerant decoder skips them (checklist 6.5)."""
    err = struct.pack(">IH", 5, 2) + b"ab" + b"\0\0\0\0"
    yield "codec", "error-chunk-with-slop", bytes([9]) + struct.pack(">HIB", 0x8001, len(err), 0) + err
    off = struct.pack(">IH", 22, 3) + b"eio" + struct.pack(">Q", 4096) + b"xyz"
    yield "codec", "error-offset-chunk-with-slop", bytes([9]) + struct.pack(">HIB", 0x8002, len(off), 0) + off


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    for target, name, data in list(seeds()) + list(slow_reader_seeds()) + list(codec_seeds()):
        os.makedirs(os.path.join(out, target), exist_ok=True)
        with open(os.path.join(out, target, name), "wb") as f:
            f.write(data)
        print(f"{target}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
