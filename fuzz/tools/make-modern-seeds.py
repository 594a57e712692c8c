#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Hand-built seeds for the modern protocol (structured replies, extended headers, metadata
contexts, block status), in the input layouts of fuzz/surfaces.hpp. The chunks follow the
golden vectors G11-G18 (structured and extended chunks and requests), G21 and G22
(LIST_META_CONTEXT and its META_CONTEXT reply).

    make-modern-seeds.py OUTDIR

Writes OUTDIR/<target>/<sha256>; minimise with run-fuzz.sh BUILD --seed OUTDIR.
"""
import hashlib
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQUEST, EXT_REQUEST = 0x25609513, 0x21E41C71
SIMPLE, STRUCTURED, EXTENDED = 0x67446698, 0x668E33EF, 0x6E8A278C
OPT_GO, OPT_SR, OPT_LIST_META, OPT_SET_META, OPT_EXT = 7, 8, 9, 10, 11
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WZ, BS = 0, 1, 2, 3, 4, 5, 6, 7
FUA, DF, REQ_ONE, PAYLOAD_LEN = 1, 4, 8, 32
DONE = 1
NONE, OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS, BLOCK_STATUS_EXT = 0, 1, 2, 5, 6
ERROR, ERROR_OFFSET = 0x8001, 0x8002
TFLAGS = 0x0DED  # flags, flush, fua, trim, write zeroes, df, multi-conn, cache, fast zero
SIZE = 1 << 30
OFF, LEN = 0x100000, 0x1000  # G11-G18 use this range


def u16(v): return struct.pack(">H", v)
def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)


def pattern(off, n):
    return bytes(((off + i) * 131 + 7) & 0xFF for i in range(n))


# ---- server -> client chunks -------------------------------------------------------------

def chunk(ext, flags, typ, cookie, payload, req_off=OFF):
    if ext:
        return u32(EXTENDED) + u16(flags) + u16(typ) + u64(cookie) + u64(req_off) + u64(len(payload)) + payload
    return u32(STRUCTURED) + u16(flags) + u16(typ) + u64(cookie) + u32(len(payload)) + payload


def data(ext, cookie, off, n, done=True):
    return chunk(ext, DONE if done else 0, OFFSET_DATA, cookie, u64(off) + pattern(off, n))


def hole(ext, cookie, off, n, done=True):
    return chunk(ext, DONE if done else 0, OFFSET_HOLE, cookie, u64(off) + u32(n))


def extents(ext, cookie, ctx, exts, done=True):
    if ext:
        body = u32(ctx) + u32(len(exts)) + b"".join(u64(l) + u64(f) for l, f in exts)
        return chunk(ext, DONE if done else 0, BLOCK_STATUS_EXT, cookie, body)
    body = u32(ctx) + b"".join(u32(l) + u32(f) for l, f in exts)
    return chunk(ext, DONE if done else 0, BLOCK_STATUS, cookie, body)


def error(ext, cookie, err, msg=b"", offset=None, done=True):
    body = u32(err) + u16(len(msg)) + msg
    if offset is None:
        return chunk(ext, DONE if done else 0, ERROR, cookie, body)
    return chunk(ext, DONE if done else 0, ERROR_OFFSET, cookie, body + u64(offset))


def none(ext, cookie, req_off=OFF):
    return chunk(ext, DONE, NONE, cookie, b"", req_off)


def simple(cookie, err=0):
    return u32(SIMPLE) + u32(err) + u64(cookie)


# ---- client -> server requests ----------------------------------------------------------

def request(ext, cmd, flags, cookie, off, n, payload=b""):
    if ext:
        if cmd == WRITE:
            flags |= PAYLOAD_LEN
        return u32(EXT_REQUEST) + u16(flags) + u16(cmd) + u64(cookie) + u64(off) + u64(n) + payload
    return u32(REQUEST) + u16(flags) + u16(cmd) + u64(cookie) + u64(off) + u32(n) + payload


def option(opt, body=b""):
    return u64(IHAVEOPT) + u32(opt) + u32(len(body)) + body


def meta_body(export, queries):
    return u32(len(export)) + export + u32(len(queries)) + b"".join(u32(len(q)) + q for q in queries)


def go_body(export):
    return u32(len(export)) + export + u16(1) + u16(3)


# ---- the targets ------------------------------------------------------------------------

def cookie(i):
    """The fuzz client's cookie for its i-th request (all submitted at once): sequence, slot."""
    return ((i + 1) << 16) | i


def client_tx(mode, ids, ccfg_low=0):
    """mode: 0 simple, 1 structured, 2 extended, 3 extended refused -> structured."""
    ext = mode == 2
    k = len(ids)
    ccfg = ccfg_low | (mode << 4) | (k << 6)
    reqs = [(READ, 0, OFF, LEN), (READ, DF, OFF, LEN), (WRITE, FUA, 0, 16), (FLUSH, 0, 0, 0)]
    if k:
        reqs += [(BS, 0, OFF, LEN), (BS, REQ_ONE, OFF, LEN)]
    head = bytes([ccfg]) + u64(SIZE) + u16(TFLAGS) + bytes([0]) + b"".join(u32(i) for i in ids)
    head += bytes([len(reqs)]) + b"".join(bytes([c]) + u16(f) + u64(o) + u32(n) for c, f, o, n in reqs)
    out = []
    for variant in range(3):
        s = b""
        if mode == 0:
            # DF needs structured replies: the client refuses that READ, so three requests go
            s += simple(cookie(0)) + pattern(OFF, LEN) + simple(cookie(1), 5) + simple(cookie(2))
        else:
            if variant == 0:
                s += data(ext, cookie(0), OFF, LEN // 2, False) + hole(ext, cookie(0), OFF + LEN // 2, LEN // 2)
                s += data(ext, cookie(1), OFF, LEN)
            elif variant == 1:
                s += hole(ext, cookie(0), OFF, LEN // 2, False) + data(ext, cookie(0), OFF + LEN // 2, LEN // 2, False)
                s += none(ext, cookie(0))
                s += error(ext, cookie(1), 5, b"media error", OFF + 16)
            else:
                s += error(ext, cookie(0), 22, b"", None, False) + none(ext, cookie(0))
                s += hole(ext, cookie(1), OFF, LEN)
            s += (none(ext, cookie(2), 0) if ext else simple(cookie(2)))
            s += (none(ext, cookie(3), 0) if ext else simple(cookie(3)))
            if k:
                for j, ctx in enumerate(ids):
                    last = j == k - 1
                    if variant == 2:
                        s += extents(ext, cookie(4), ctx, [(LEN, 3)], last)
                    else:
                        s += extents(ext, cookie(4), ctx, [(LEN // 4, 0), (LEN // 4, 1), (LEN // 2, 3)], last)
                for j, ctx in enumerate(ids):
                    s += extents(ext, cookie(5), ctx, [(LEN * (4 if variant == 1 else 1), 2)], j == k - 1)
        out.append(head + s)
        if mode == 0:
            break
    return out


def server_cfg(b0, contexts=2, policy=0, b1=0x01):
    return bytes([b0, b1, 0x00, 0x00]) + u16(TFLAGS) + bytes([3, (contexts << 6) | (policy << 3)])


def server_requests(ext, with_bs):
    s = b""
    for c in (0x0, 0x4, 0x8, 0xC, 0x1):  # cookie bits 2-3 choose the reply form
        s += request(ext, READ, 0, c, OFF, LEN)
    s += request(ext, READ, DF, 0x10, OFF, 512)
    s += request(ext, WRITE, FUA, 0x14, 0, 16, pattern(0, 16))
    s += request(ext, FLUSH, 0, 0x18, 0, 0)
    s += request(ext, TRIM, 0, 0x1D, OFF, LEN)
    if with_bs:
        for c in (0x20, 0x24, 0x28, 0x2C):
            s += request(ext, BS, 0, c, 0, 0x10000)
        s += request(ext, BS, REQ_ONE, 0x30, OFF, LEN)
    s += request(ext, DISC, 0, 0x40, 0, 0)
    return s


def server_tx():
    out = []
    # b0 bits: 1 ask structured replies, 6 ask extended headers, 7 SET_META_CONTEXT
    for b0, ext, bs in ((0x02, False, False), (0x82, False, True), (0x40, True, False), (0xC0, True, True),
                        (0xC2, True, True), (0x80, False, False)):
        for policy in (0, 5):
            out.append(server_cfg(b0, 2 if b0 != 0xC2 else 3, policy) + server_requests(ext, bs))
    out.append(server_cfg(0x82, 1, 4) + server_requests(False, True))
    return out


def server_handshake():
    out = []
    flags = u32(3)  # fixed newstyle, no zeroes
    base, bitmap = b"base:allocation", b"qemu:dirty-bitmap:b"
    # G21: LIST_META_CONTEXT for "disk" with base:allocation
    lm = option(OPT_LIST_META, meta_body(b"disk", [base]))
    for b0 in (0x00, 0x02, 0x40, 0x42):
        s = flags + option(OPT_EXT) + option(OPT_SR) + lm + option(OPT_LIST_META, meta_body(b"disk", []))
        s += option(OPT_LIST_META, meta_body(b"disk", [b"qemu:"])) + option(OPT_LIST_META, meta_body(b"nope", [base]))
        s += option(OPT_SET_META, meta_body(b"disk", [base, bitmap, b"other:x"])) + option(OPT_GO, go_body(b"disk"))
        ext = not (b0 & 0x40)
        sr = ext or not (b0 & 0x02)
        if sr:
            s += request(ext, BS, 0, 0x20, 0, 0x10000) + request(ext, READ, 0, 0x4, OFF, LEN)
        s += request(ext, DISC, 0, 0x40, 0, 0)
        out.append(server_cfg(b0) + s)
    # SET before structured replies, SR after EXT, contexts for a different export than GO's
    s = flags + option(OPT_SET_META, meta_body(b"disk", [base])) + option(OPT_EXT) + option(OPT_SR)
    s += option(OPT_SET_META, meta_body(b"disk", [base])) + option(OPT_GO, go_body(b""))
    out.append(server_cfg(0x00, 1) + s + request(True, BS, 0, 0x20, 0, 512))
    s = flags + option(OPT_SR) + option(OPT_SET_META, meta_body(b"", [bitmap, base])) + option(OPT_GO, go_body(b""))
    out.append(server_cfg(0x40, 3) + s + request(False, BS, REQ_ONE, 0x24, 0, 512) + request(False, READ, 0, 0x8, 0, 512))
    return out


def client_handshake():
    """ccfg bits 4-5 ask for structured replies / extended headers; action 0: GO ""."""
    out = []
    go, ack, info, meta = 7, 1, 3, 4

    def rep(opt, typ, body=b""):
        return u64(0x0003E889045565A9) + u32(opt) + u32(typ) + u32(len(body)) + body
    greet = u64(0x4E42444D41474943) + u64(IHAVEOPT) + u16(3)
    tail = rep(go, info, u16(0) + u64(SIZE) + u16(TFLAGS)) + rep(go, ack)
    out.append(bytes([0x30, 1, 0]) + greet + rep(OPT_EXT, ack) + tail)
    out.append(bytes([0x30, 1, 0]) + greet + rep(OPT_EXT, 0x80000001) + rep(OPT_SR, ack) + tail)
    out.append(bytes([0x10, 1, 0]) + greet + rep(OPT_SR, ack) + rep(OPT_SET_META, meta, u32(1) + b"base:allocation") + tail)
    return out


def roundtrip():
    """server cfg, option (bits 0-1 export, 2-5 info requests, 6-7 contexts), 16-byte ops."""
    out = []
    ops = [(READ, 0, OFF, LEN, 0), (READ, DF, OFF, 512, 3), (BS, 0, OFF, LEN, 0), (BS, REQ_ONE, 0, 3 * LEN, 0),
           (WRITE, FUA, 0, 16, 0), (BS, 0, 0, LEN, 3), (FLUSH, 0, 0, 0, 0)]
    body = b"".join(bytes([c]) + u16(f) + u64(o) + u32(n) + bytes([e]) for c, f, o, n, e in ops)
    for b0, ctx, asked in ((0x00, 2, 2), (0x40, 2, 3), (0x42, 1, 1), (0x00, 3, 1), (0x02, 2, 2)):
        out.append(server_cfg(b0, ctx) + bytes([0x3D | (asked << 6)]) + body)
    return out


def write(outdir, target, inputs):
    d = os.path.join(outdir, target)
    os.makedirs(d, exist_ok=True)
    for b in inputs:
        with open(os.path.join(d, hashlib.sha256(b).hexdigest()), "wb") as f:
            f.write(b)


def main():
    outdir = sys.argv[1]
    ctx = []
    for mode in range(4):
        for ids in ([], [1], [0, 7]):
            if mode == 0 and ids:
                continue
            ctx += client_tx(mode, ids)
    ctx += client_tx(1, [1], 0x08) + client_tx(2, [0, 7], 0x0C)  # payload read directly; EOF at the end
    write(outdir, "client_tx", ctx)
    stx = server_tx()
    write(outdir, "server_tx", stx)
    write(outdir, "server_handshake", server_handshake())
    write(outdir, "client_handshake", client_handshake())
    write(outdir, "roundtrip", roundtrip())
    # split: surface[1] cuts[1]=0 then the surface input (surface numbers as in surfaces.hpp)
    write(outdir, "split", [bytes([4, 0]) + x for x in ctx[:6]] + [bytes([1, 0]) + x for x in stx[:4]])


if __name__ == "__main__":
    main()
