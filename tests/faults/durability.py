#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acknowledged writes survive SIGKILL of nbdwire-server.

    durability.py --server PATH --dir DIR --kills N [--seed S]

Serves DIR/disk.img (16 MiB) with nbdwire-server on a Unix socket and writes to it with a
small NBD client of its own that keeps up to 4 requests in flight and records every reply.
Half of the rounds write with FUA; the other half write without it and send FLUSH every few
writes. In each round, right after a randomly chosen acknowledgement (of a FUA write, of a
FLUSH, or of a plain write), with other requests still in flight, the server gets SIGKILL.
The file is then checked:

  - every write acknowledged with FUA, and every write acknowledged before a FLUSH that was
    acknowledged, is in the file (durable);
  - every other acknowledged write is in the file as well: the server writes with pwrite()
    before it replies, so killing the process (not the machine) must lose nothing;
  - bytes under writes that were in flight and never acknowledged are the old or the new data.

Then the server is restarted and the next round begins. Prints the counts; exits 1 on any
lost write. Same --seed, same writes and kill points.
"""

import argparse
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = b"IHAVEOPT"
OPT_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
CMD_WRITE, CMD_DISC, CMD_FLUSH = 1, 2, 3
FLAG_FUA = 1
TF_SEND_FLUSH, TF_SEND_FUA = 1 << 2, 1 << 3
SIZE = 16 * 1024 * 1024
BLOCK = 4096
DEPTH = 4


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        got = s.recv(n - len(b))
        if not got:
            raise EOFError("the server closed the connection")
        b += got
    return bytes(b)


class Client:
    def __init__(self, path, name):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(30)
        self.s.connect(path)
        g = recv_exact(self.s, 18)
        if g[:16] != NBDMAGIC + IHAVEOPT:
            raise RuntimeError("not a newstyle server")
        (hflags,) = struct.unpack(">H", g[16:18])
        self.s.sendall(struct.pack(">I", hflags & 3))  # fixed newstyle, no zeroes
        nm = name.encode()
        data = struct.pack(">I", len(nm)) + nm + struct.pack(">H", 0)
        self.s.sendall(IHAVEOPT + struct.pack(">II", 7, len(data)) + data)  # NBD_OPT_GO
        self.tflags = None
        while True:
            magic, _opt, rtype, length = struct.unpack(">QIII", recv_exact(self.s, 20))
            payload = recv_exact(self.s, length)
            if magic != OPT_REPLY_MAGIC:
                raise RuntimeError("bad option reply magic")
            if rtype == 1:  # ACK
                break
            if rtype & 0x80000000:
                raise RuntimeError("GO refused: %#x %r" % (rtype, payload))
            if rtype == 3 and struct.unpack(">H", payload[:2])[0] == 0:  # NBD_INFO_EXPORT
                self.size, self.tflags = struct.unpack(">QH", payload[2:12])
        if self.tflags is None or not (self.tflags & TF_SEND_FLUSH and self.tflags & TF_SEND_FUA):
            raise RuntimeError("the export does not offer FLUSH and FUA")
        self.cookie = 0

    def send(self, cmd, flags=0, offset=0, data=b"", length=None):
        self.cookie += 1
        n = len(data) if length is None else length
        self.s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, self.cookie, offset, n) + data)
        return self.cookie

    def reply(self):
        magic, err, cookie = struct.unpack(">IIQ", recv_exact(self.s, 16))
        if magic != SIMPLE_MAGIC:
            raise RuntimeError("bad reply magic %#x" % magic)
        return cookie, err


def start_server(args, sock, log):
    if os.path.exists(sock):
        os.unlink(sock)
    p = subprocess.Popen([args.server, "--unix", sock, "disk=file:" + os.path.join(args.dir, "disk.img")],
                         stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    r, _, _ = select.select([p.stdout], [], [], 10)
    if not r or not p.stdout.readline():
        p.kill()
        raise RuntimeError("nbdwire-server did not start")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--kills", type=int, default=40)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--corrupt", action="store_true",
                    help="self-check: undo one acknowledged write in the file after the first kill; must fail")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    print("durability: seed %d, %d kills" % (seed, args.kills), flush=True)

    disk = os.path.join(args.dir, "disk.img")
    with open(disk, "wb") as f:
        f.truncate(SIZE)
    expected = bytearray(SIZE)  # what the file must hold where no write is in doubt
    sock = os.path.join(args.dir, "durability.sock")
    log = open(os.path.join(args.dir, "durability-server.err"), "ab")
    stats = {"fua": 0, "flush": 0, "kill_after_fua": 0, "kill_after_flush": 0, "kill_after_write": 0,
             "acked_writes": 0, "durable_writes": 0, "flushes": 0, "in_flight_at_kill": 0,
             "in_flight_applied": 0, "bytes_checked": 0}
    failures = []
    write_id = 0

    for round_no in range(args.kills):
        mode = "fua" if round_no % 2 == 0 else "flush"
        stats[mode] += 1
        server = start_server(args, sock, log)
        c = Client(sock, "disk")
        kill_at = rng.randint(1, 24)  # the acknowledgement after which the server dies
        acks = 0
        in_flight = {}      # cookie -> ("write", offset, data, fua) or ("flush", writes it covers)
        done_unflushed = []  # acknowledged plain writes not yet covered by a FLUSH
        acked = []           # [offset, data, durable], in the order acknowledged
        since_flush = 0
        killed_after = None
        while killed_after is None:
            while len(in_flight) < DEPTH:
                if mode == "flush" and since_flush >= rng.randint(2, 6):
                    # FLUSH covers the writes acknowledged before it was sent.
                    in_flight[c.send(CMD_FLUSH)] = ("flush", list(done_unflushed))
                    done_unflushed = []
                    since_flush = 0
                    continue
                blocks = rng.randint(1, 16)
                off = rng.randrange(0, SIZE // BLOCK - blocks + 1) * BLOCK
                # Unmistakable data: the write's number in every 8 bytes, xor-ed with noise.
                write_id += 1
                stamp = struct.pack(">Q", write_id)
                n = blocks * BLOCK
                data = (int.from_bytes(stamp * (n // 8), "big") ^ int.from_bytes(rng.randbytes(n), "big")).to_bytes(n, "big")
                fua = mode == "fua"
                in_flight[c.send(CMD_WRITE, FLAG_FUA if fua else 0, off, data)] = ("write", off, data, fua)
                since_flush += 1
            cookie, err = c.reply()
            what = in_flight.pop(cookie)
            if err:
                failures.append("round %d: request failed with error %d" % (round_no, err))
                break
            acks += 1
            if what[0] == "write":
                _, off, data, fua = what
                entry = [off, data, fua]
                acked.append(entry)
                if not fua:
                    done_unflushed.append(entry)
                kind = "fua" if fua else "write"
            else:
                stats["flushes"] += 1
                for entry in what[1]:
                    entry[2] = True  # durable now
                kind = "flush"
            if acks >= kill_at and (mode == "fua" or kind == "flush" or rng.random() < 0.25):
                server.send_signal(signal.SIGKILL)  # right after this acknowledgement
                killed_after = kind
        server.wait()
        stats["kill_after_" + killed_after] += 1
        c.s.close()

        # Writes still in flight may or may not have reached the file, in part or whole.
        doubt = {}  # offset of a block -> the versions it may hold
        for what in in_flight.values():
            if what[0] != "write":
                continue
            stats["in_flight_at_kill"] += 1
            _, off, data, _ = what
            for i in range(0, len(data), BLOCK):
                doubt.setdefault(off + i, []).append(data[i:i + BLOCK])
        # Acknowledged writes, in the order acknowledged (later ones overwrite earlier ones).
        acked_blocks = {}
        for off, data, durable in acked:
            stats["acked_writes"] += 1
            stats["durable_writes"] += 1 if durable else 0
            expected[off:off + len(data)] = data
            for i in range(0, len(data), BLOCK):
                acked_blocks[off + i] = durable
        if args.corrupt and round_no == 0 and acked:
            with open(disk, "r+b") as f:
                f.seek(acked[-1][0])
                f.write(bytes(BLOCK))
        with open(disk, "rb") as f:
            actual = f.read()
        if len(actual) != SIZE:
            failures.append("round %d: the file is %d bytes" % (round_no, len(actual)))
            break
        applied = 0
        for b in range(0, SIZE, BLOCK):
            have = actual[b:b + BLOCK]
            want = expected[b:b + BLOCK]
            if have == want:
                continue
            versions = doubt.get(b)
            if versions is not None:
                # In doubt: each byte is the old one or one of the versions in flight.
                ok = all(have[i] == want[i] or any(v[i] == have[i] for v in versions) for i in range(BLOCK))
                if ok:
                    expected[b:b + BLOCK] = have
                    applied += 1
                    continue
            lost = "durable (FUA or flushed)" if acked_blocks.get(b) else "acknowledged"
            failures.append("round %d (%s, killed after a %s reply): block at offset %d lost an %s write"
                            % (round_no, mode, killed_after, b, lost))
            expected[b:b + BLOCK] = have  # report each loss once
        stats["in_flight_applied"] += applied
        stats["bytes_checked"] += SIZE

    print("durability: %d kills: %d in FUA rounds, %d in FLUSH rounds; killed right after %d FUA write, "
          "%d FLUSH and %d plain write acknowledgements" % (args.kills, stats["fua"], stats["flush"],
                                                            stats["kill_after_fua"], stats["kill_after_flush"],
                                                            stats["kill_after_write"]))
    print("durability: %d acknowledged writes checked (%d durable by FUA or FLUSH), %d FLUSHes acknowledged, "
          "%d writes in flight at a kill (%d blocks of them found applied)"
          % (stats["acked_writes"], stats["durable_writes"], stats["flushes"], stats["in_flight_at_kill"],
             stats["in_flight_applied"]))
    for f in failures[:20]:
        print("durability: LOST: " + f)
    print("durability: %s (seed %d)" % ("FAILED: %d losses" % len(failures) if failures else "no acknowledged write lost",
                                       seed), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
