#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turns recorded NBD sessions (nbd-log-proxy.py logs) and the golden vectors into seed
inputs for every fuzz target, in the input layouts of fuzz/surfaces.hpp.

    make-seeds.py OUTDIR LOG... [--vectors DIR]

Writes OUTDIR/<target>/<sha256>. Minimise afterwards with libFuzzer's -merge=1 (run-fuzz.sh
does both).
"""
import hashlib
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQUEST, SIMPLE, STRUCTURED = 0x25609513, 0x67446698, 0x668E33EF
LEGACY_REQ, LEGACY_REP = 0x12560953, 0x96744668
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7

# server cfg (surfaces.hpp): fixed newstyle with NO_ZEROES, exports "" (1 GiB) and "disk",
# default 0, 64 options of up to 1 MiB, a full set of transmission flags, default block sizes.
SERVER_CFG = bytes([0x00, 0x01, 0x00, 0x00, 0x0d, 0xed, 0x03, 0x00])
LEGACY_CFG = bytes([0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00])


def read_log(path):
    c2s, s2c = bytearray(), bytearray()
    with open(path, encoding="ascii") as f:
        for line in f:
            d, _, h = line.strip().partition(" ")
            (c2s if d == "C>S" else s2c).extend(bytes.fromhex(h))
    return bytes(c2s), bytes(s2c)


def parse_options(c2s):
    """Client options in order: (option, body), and where transmission starts in c2s."""
    if len(c2s) < 4:
        return [], None
    pos, opts = 4, []
    while pos + 16 <= len(c2s):
        magic, opt, length = struct.unpack_from(">QII", c2s, pos)
        if magic != IHAVEOPT:
            break
        body = c2s[pos + 16:pos + 16 + length]
        pos += 16 + length
        opts.append((opt, body))
        if opt in (OPT_GO, OPT_EXPORT_NAME):
            return opts, pos
    return opts, None


def split_replies(s2c, opts, no_zeroes=True):
    """Cuts s2c after the greeting into one segment per option; returns (greeting, segments, rest)."""
    if len(s2c) < 18 or s2c[8:16] != struct.pack(">Q", IHAVEOPT):
        return None
    pos, segs = 18, []
    for opt, _ in opts:
        start = pos
        if opt == OPT_EXPORT_NAME:
            pos += 10 if no_zeroes else 134
        else:
            while pos + 20 <= len(s2c):
                _, o, typ, length = struct.unpack_from(">QIII", s2c, pos)
                pos += 20 + length
                if typ == 1 or typ & 0x80000000:
                    break
        segs.append(s2c[start:pos])
    return s2c[:18], segs, s2c[pos:]


def requests(tx):
    """Compact requests: (type, flags, cookie, offset, length, payload)."""
    out, pos = [], 0
    while pos + 28 <= len(tx):
        magic, flags, typ, cookie, offset, length = struct.unpack_from(">IHHQQI", tx, pos)
        if magic != REQUEST:
            break
        pos += 28
        data = b""
        if typ == 1:
            data = tx[pos:pos + length]
            pos += length
        out.append((typ, flags, cookie, offset, length, data))
    return out


def rewrite_replies(rx, cookie_map, read_len):
    """Server replies with the peer's cookies replaced by the fuzz client's."""
    out, pos = bytearray(), 0
    while pos + 4 <= len(rx):
        (magic,) = struct.unpack_from(">I", rx, pos)
        if magic == SIMPLE and pos + 16 <= len(rx):
            err, cookie = struct.unpack_from(">IQ", rx, pos + 4)
            n = 16 + (read_len.get(cookie, 0) if err == 0 else 0)
            out += struct.pack(">IIQ", magic, err, cookie_map.get(cookie, cookie)) + rx[pos + 16:pos + n]
            pos += n
        elif magic == STRUCTURED and pos + 20 <= len(rx):
            flags, typ, cookie, length = struct.unpack_from(">HHQI", rx, pos + 4)
            out += struct.pack(">IHHQI", magic, flags, typ, cookie_map.get(cookie, cookie), length)
            out += rx[pos + 20:pos + 20 + length]
            pos += 20 + length
        else:
            out += rx[pos:]
            break
    return bytes(out)


def modern(opts, segs):
    """What a session settled: (structured replies, [context ids] of its last SET_META_CONTEXT)."""
    sr, ids = False, []
    for (opt, _), seg in zip(opts, segs):
        p, got = 0, []
        while p + 20 <= len(seg):
            _, _, typ, length = struct.unpack_from(">QIII", seg, p)
            if opt == 10 and typ == 4 and length >= 4:
                got.append(struct.unpack_from(">I", seg, p + 20)[0])
            if opt == 8 and typ == 1:
                sr = True
            p += 20 + length
        if opt == 10:
            ids = got
    return sr, ids if sr else []


def option_action(opt, body):
    kind = {OPT_GO: 0, OPT_INFO: 1, OPT_LIST: 2, OPT_ABORT: 3, OPT_EXPORT_NAME: 4}.get(opt)
    if kind is None:
        return None
    name = body if opt == OPT_EXPORT_NAME else body[4:4 + int.from_bytes(body[:4], "big")] if len(body) >= 4 else b""
    name_i = 0 if name == b"" else 1
    info = 0
    if opt in (OPT_GO, OPT_INFO) and len(body) >= 6 + len(name):
        n = int.from_bytes(body[4 + len(name):6 + len(name)], "big")
        for i in range(n):
            t = int.from_bytes(body[6 + len(name) + 2 * i:8 + len(name) + 2 * i], "big")
            if 1 <= t <= 3:
                info |= 1 << (t - 1)
    return kind | name_i << 3 | info << 5


def seeds_from_log(c2s, s2c, out):
    out["server_handshake"].append(SERVER_CFG + c2s[:4096])
    opts, tx_start = parse_options(c2s)
    oldstyle = len(s2c) >= 152 and s2c[8:16] == bytes.fromhex("0000420281861253")
    tx = c2s[tx_start:] if tx_start is not None else (c2s if oldstyle else b"")
    reqs = requests(tx)
    split = split_replies(s2c, opts) if not oldstyle else None
    sr, ids = modern(opts, split[1]) if split else (False, [])
    ids = ids[:2]
    if tx:
        cfg = bytearray(SERVER_CFG)
        if oldstyle:
            cfg[0] |= 1
        if sr:  # the canned client asks for structured replies, and base:allocation if the session did
            cfg[0] |= 0x02 | (0x80 if ids else 0)
            cfg[7] |= 0x40
        out["server_tx"].append(bytes(cfg) + tx[:4096])
    if reqs:  # the same requests in the 1997 framing (READ and WRITE only)
        legacy = bytearray()
        for typ, _, cookie, offset, length, data in reqs:
            if typ in (0, 1) and offset < 1 << 32:
                legacy += struct.pack(">IIIQI", LEGACY_REQ, offset, length, cookie, typ) + data
        out["legacy_server"].append(LEGACY_CFG + bytes(legacy[:4096]))

    if split:
        greeting, segs, rest = split
        actions, stream = [], bytearray(greeting)
        for (opt, body), seg in zip(opts, segs):
            a = option_action(opt, body)
            if a is None:
                continue  # an option this client does not send: drop its replies too
            actions.append(a)
            stream += seg
        out["client_handshake"].append(bytes([0, len(actions)] + actions) + bytes(stream[:4096]))

    # Transmission as the fuzz client would see it: its own cookies, requests up front.
    size = 1 << 20
    for seg in (split[1] if split else []):
        p = 0
        while p + 20 <= len(seg):
            _, _, typ, length = struct.unpack_from(">QIII", seg, p)
            if typ == 3 and length == 12 and seg[p + 20:p + 22] == b"\0\0":
                size, flags = struct.unpack_from(">QH", seg, p + 22)
            p += 20 + length
    if oldstyle:
        size = struct.unpack_from(">Q", s2c, 16)[0]
    kept = [r for r in reqs if r[0] in (0, 1, 3, 4, 5, 6) or (r[0] == 7 and ids)][:64]
    actions, cookie_map, read_len = bytearray(), {}, {}
    for i, (typ, flags, cookie, offset, length, _) in enumerate(kept):
        actions += struct.pack(">BHQI", typ, flags, offset, length)
        ours = (i + 1) << 16 | i
        cookie_map[cookie] = ours
        if typ == 0:
            read_len[cookie] = length
    if any(r[0] == 2 for r in reqs):
        actions += struct.pack(">BHQI", 0xFF, 0, 0, 0)
    if kept:
        # client_tx: ccfg bits 4-5 = 1 (structured replies), bits 6-7 = number of contexts
        ccfg = (0x10 | len(ids) << 6) if sr else 0
        ctx = b"".join(struct.pack(">I", i) for i in ids)
        head = bytes([ccfg]) + struct.pack(">QHB", size, 0x0ded, 0) + ctx + bytes([len(actions) // 15]) + actions
        rx = s2c[len(split[0]) + sum(map(len, split[1])):] if split else s2c[152:]
        out["client_tx"].append(head + rewrite_replies(rx, cookie_map, read_len)[:4096])
        head = bytes([0]) + struct.pack(">QHB", size, 0x0ded, 0) + bytes([len(actions) // 15]) + actions
        legacy = bytearray()
        for i, (typ, _, _, offset, length, _) in enumerate(kept):
            if typ in (0, 1):
                legacy += struct.pack(">IQI", LEGACY_REP, (i + 1) << 16 | i, 0) + (bytes(length) if typ == 0 else b"")
        out["legacy_client"].append(head + bytes(legacy[:4096]))
        # A round trip of the same requests (16-byte ops: the request plus a reply error).
        ops = b"".join(struct.pack(">BHQIB", t, 0, o, l, 1) for t, _, _, o, l, _ in kept)
        out["roundtrip"].append(SERVER_CFG + bytes([0x1C]) + ops[:2048])


def main():
    args = sys.argv[1:]
    vectors = None
    if "--vectors" in args:
        i = args.index("--vectors")
        vectors = args[i + 1]
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    outdir, logs = args[0], args[1:]
    targets = ["server_handshake", "client_handshake", "server_tx", "client_tx", "legacy_server",
               "legacy_client", "roundtrip", "split"]
    out = {t: [] for t in targets}
    for log in logs:
        seeds_from_log(*read_log(log), out)
    if vectors:  # each golden vector as the peer's first message, for every surface
        for name in sorted(os.listdir(vectors)):
            v = bytes.fromhex(open(os.path.join(vectors, name)).read().strip())
            out["server_handshake"].append(SERVER_CFG + v)
            out["server_tx"].append(SERVER_CFG + v)
            out["legacy_server"].append(LEGACY_CFG + v)
            out["client_handshake"].append(bytes([0, 1, 0]) + v)
            out["client_tx"].append(bytes(13) + v)
            out["legacy_client"].append(bytes(13) + v)
            out["roundtrip"].append(v)
    # The differential target: each surface's seeds, whole and with a few cuts.
    for s, t in enumerate(targets[:6]):
        surface = [0, 3, 1, 4, 2, 5][s]  # surfaces.hpp numbering
        for seed in out[t][:8]:
            out["split"].append(bytes([surface, 3]) + struct.pack(">HHH", 1, 17, 29) + seed)
    for t, seeds in out.items():
        os.makedirs(os.path.join(outdir, t), exist_ok=True)
        for s in seeds:
            with open(os.path.join(outdir, t, hashlib.sha256(s).hexdigest()), "wb") as f:
                f.write(s)
        print(f"{t}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
