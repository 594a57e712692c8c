#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A fault-injecting NBD proxy for tests.

    faultproxy.py --listen SOCK --upstream SOCK [FAULT] [--conn N] [--trace FILE]

Listens on the Unix socket SOCK, connects to the upstream server's Unix socket for every
client it accepts, and relays bytes both ways. It parses the NBD framing just enough to know
where each message starts and ends, and injects one fault:

    --cut DIR POS     close both sides once exactly POS has been relayed in direction DIR
    --stall DIR POS   stop relaying in both directions at POS, keeping both sockets open
    (neither)         relay everything (with --trace: record the messages of a clean run)

DIR is c2s (client to server) or s2c (server to client). POS is either a byte count N (the
first N bytes of that direction are relayed, then the fault) or KIND:K[+OFF]: OFF bytes into
the K-th (1-based) message of KIND in that direction; +0 (the default) is the boundary before
it, +LEN the boundary after it. Kinds, by direction:

    s2c  greeting, optreply (also EXPORT_NAME's reply), simple, chunk, reply (either)
    c2s  cflags, option, request

A kind may be narrowed with a dot: request.write, request.flush, request.disc, simple.flush,
chunk.read, option.go, optreply.go, ... (the request's command, for replies the command of
the request they answer; for options the option's name).

The fault applies to every connection, or with --conn N to the N-th accepted one only.
Bytes are relayed in the order they arrive; a partial message header is held back until it
is complete, so the position of every fault is exact and the same arguments give the same
fault. When a fault fires the proxy prints one line to standard error starting with
"faultproxy: FIRED" and, with --fired FILE, appends it to FILE. --trace FILE appends one line
per message: "conn DIR KIND INDEX START LENGTH".

Plain text (no TLS): STARTTLS is relayed, but nothing after it can be parsed.
"""

import argparse
import copy
import os
import select
import socket
import struct
import sys
import threading

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = b"IHAVEOPT"
OLDSTYLE_MAGIC = 0x00420281861253
OPT_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
SIMPLE_MAGIC = 0x67446698
CHUNK_MAGIC = 0x668E33EF
EXT_CHUNK_MAGIC = 0x6E8A278C

COMMANDS = {0: "read", 1: "write", 2: "disc", 3: "flush", 4: "trim", 5: "cache",
            6: "write_zeroes", 7: "block_status", 8: "resize"}
OPTIONS = {1: "export_name", 2: "abort", 3: "list", 4: "peek_export", 5: "starttls",
           6: "info", 7: "go", 8: "structured_reply", 9: "list_meta_context",
           10: "set_meta_context", 11: "extended_headers"}
OPT_EXPORT_NAME = 1
CFLAG_NO_ZEROES = 2
CMD_READ = 0
CMD_WRITE = 1
EXT_FLAG_PAYLOAD_LEN = 1 << 5


class Unparsable(Exception):
    pass


class Session:
    """What one connection's two parsers share: the handshake state and requests by cookie."""

    def __init__(self):
        self.newstyle = None        # set by the greeting
        self.no_zeroes = False
        self.export_name_sent = False
        self.last_option = None
        self.transmission = False
        self.cookies = {}           # cookie -> (command, length)


class Parser:
    """Splits one direction's byte stream into messages, incrementally."""

    def __init__(self, direction, session):
        self.dir = direction
        self.s = session
        self.buf = bytearray()      # bytes of the current, incomplete message header
        self.pos = 0                # stream position of buf[0]
        self.msg = None             # (kind, sub, start, length) of the message being passed
        self.counts = {}
        self.messages = []          # completed headers: (kind, sub, index_by_spec, start, length)
        self.broken = False

    def feed(self, data):
        """Parses `data`; returns the list of messages whose headers completed in it as
        (spec_names, start, length), spec_names being (kind, "kind.sub")."""
        found = []
        i = 0
        n = len(data)
        while i < n and not self.broken:
            if self.msg is not None:
                _, _, start, length = self.msg
                end = start + length
                here = self.pos + len(self.buf)
                take = min(n - i, end - here)
                i += take
                self.pos += take   # payload bytes are not kept
                if self.pos == end:
                    self.msg = None
                continue
            self.buf += data[i:i + 1]
            i += 1
            try:
                m = self.header()
            except Unparsable as e:
                self.broken = True
                sys.stderr.write("faultproxy: %s: cannot parse any further: %s\n" % (self.dir, e))
                break
            if m is None:
                continue
            kind, sub, length = m
            start = self.pos
            found.append((kind, sub, start, length))
            self.pos += len(self.buf)
            self.buf = bytearray()
            if length > self.pos - start:
                self.msg = (kind, sub, start, length)
        return found

    def pending_header(self):
        """Bytes of an incomplete header, held back so the next message's kind is known
        before any of it is relayed."""
        return 0 if self.broken else len(self.buf)

    # ---- headers: (kind, sub, total length) once complete, None while more is needed ----

    def header(self):
        b = self.buf
        s = self.s
        if self.dir == "s2c":
            if s.newstyle is None:  # the greeting
                if len(b) < 16:
                    return None
                if b[:8] != NBDMAGIC:
                    raise Unparsable("no NBDMAGIC greeting")
                if b[8:16] == IHAVEOPT:
                    if len(b) < 18:
                        return None
                    s.newstyle = True
                    return ("greeting", "newstyle", 18)
                if struct.unpack(">Q", b[8:16])[0] == OLDSTYLE_MAGIC:
                    s.newstyle = False
                    s.transmission = True
                    return ("greeting", "oldstyle", 152)
                raise Unparsable("unknown greeting")
            if not s.transmission:
                if len(b) < 8:
                    return None
                if struct.unpack(">Q", b[:8])[0] == OPT_REPLY_MAGIC:
                    if len(b) < 20:
                        return None
                    opt, rtype, length = struct.unpack(">IIL", b[8:20])
                    name = OPTIONS.get(opt, str(opt))
                    if opt == 7 and rtype == 1:  # GO acknowledged
                        s.transmission = True
                    return ("optreply", name, 20 + length)
                if s.export_name_sent:
                    s.transmission = True
                    return ("optreply", "export_name", 10 if s.no_zeroes else 134)
                raise Unparsable("no option reply magic")
            if len(b) < 4:
                return None
            magic = struct.unpack(">I", b[:4])[0]
            if magic == SIMPLE_MAGIC:
                if len(b) < 16:
                    return None
                err, cookie = struct.unpack(">IQ", b[4:16])
                cmd, length = s.cookies.get(cookie, (None, 0))
                data = length if cmd == CMD_READ and err == 0 else 0
                return ("simple", COMMANDS.get(cmd, "unknown"), 16 + data)
            if magic == CHUNK_MAGIC:
                if len(b) < 20:
                    return None
                _flags, _type, cookie, length = struct.unpack(">HHQI", b[4:20])
                cmd = s.cookies.get(cookie, (None, 0))[0]
                return ("chunk", COMMANDS.get(cmd, "unknown"), 20 + length)
            if magic == EXT_CHUNK_MAGIC:
                if len(b) < 32:
                    return None
                _flags, _type, cookie, _off, length = struct.unpack(">HHQQQ", b[4:32])
                cmd = s.cookies.get(cookie, (None, 0))[0]
                return ("chunk", COMMANDS.get(cmd, "unknown"), 32 + length)
            raise Unparsable("unknown reply magic 0x%08x" % magic)
        # c2s
        if s.newstyle is None:
            raise Unparsable("the client spoke before the greeting")
        if s.newstyle and not s.transmission and self.counts.get("cflags", 0) == 0:
            if len(b) < 4:
                return None
            self.counts["cflags"] = 1
            (flags,) = struct.unpack(">I", b[:4])
            s.no_zeroes = bool(flags & CFLAG_NO_ZEROES)
            return ("cflags", "flags", 4)
        if len(b) < 4:
            return None
        if b[:4] == IHAVEOPT[:4]:
            if len(b) < 16:
                return None
            if b[:8] != IHAVEOPT:
                raise Unparsable("bad option magic")
            opt, length = struct.unpack(">II", b[8:16])
            if opt == OPT_EXPORT_NAME:
                s.export_name_sent = True
            return ("option", OPTIONS.get(opt, str(opt)), 16 + length)
        magic = struct.unpack(">I", b[:4])[0]
        if magic == REQUEST_MAGIC:
            if len(b) < 28:
                return None
            _flags, cmd, cookie, _off, length = struct.unpack(">HHQQI", b[4:28])
            s.cookies[cookie] = (cmd, length)
            return ("request", COMMANDS.get(cmd, str(cmd)), 28 + (length if cmd == CMD_WRITE else 0))
        if magic == EXT_REQUEST_MAGIC:
            if len(b) < 32:
                return None
            flags, cmd, cookie, _off, length = struct.unpack(">HHQQQ", b[4:32])
            s.cookies[cookie] = (cmd, length)
            payload = length if cmd == CMD_WRITE or flags & EXT_FLAG_PAYLOAD_LEN else 0
            return ("request", COMMANDS.get(cmd, str(cmd)), 32 + payload)
        raise Unparsable("unknown request magic 0x%08x" % magic)


class Fault:
    def __init__(self, action, direction, pos):
        self.action = action        # "cut", "stall" or None
        self.dir = direction
        self.byte = None
        self.spec = None
        self.k = 0
        self.off = 0
        if pos is None:
            return
        if pos.isdigit():
            self.byte = int(pos)
            return
        spec, _, rest = pos.partition(":")
        if not rest:
            raise SystemExit("faultproxy: POS must be N or KIND:K[+OFF], not %r" % pos)
        k, _, off = rest.partition("+")
        self.spec, self.k, self.off = spec, int(k), int(off or 0)
        if self.k < 1:
            raise SystemExit("faultproxy: K counts from 1")

    def describe(self):
        where = "byte %d" % self.byte if self.byte is not None else "%s:%d+%d" % (self.spec, self.k, self.off)
        return "%s %s at %s" % (self.action, self.dir, where)


class Relay(threading.Thread):
    """One client connection and its upstream connection: a thread per direction, each
    receiving, parsing and relaying in order (so neither direction can block the other)."""

    def __init__(self, args, fault, number, client):
        super().__init__(daemon=True)
        self.args = args
        if args.conn == 0 or args.conn == number:
            self.fault = copy.copy(fault)
        else:
            self.fault = Fault(None, None, None)
        self.n = number
        self.client = client
        self.up = None
        self.session = Session()
        self.lock = threading.Lock()
        self.counts = {}                       # (direction, spec) -> messages seen
        self.target = self.fault.byte          # stream position of the fault, once known
        self.fault_note = ""
        self.state = "relay"                   # relay, stalled, cut

    def note_messages(self, direction, msgs):
        f = self.fault
        for kind, sub, start, length in msgs:
            specs = [kind, kind + "." + sub]
            if kind in ("simple", "chunk"):  # either form of a reply
                specs += ["reply", "reply." + sub]
            with self.lock:
                for spec in specs:
                    self.counts[(direction, spec)] = self.counts.get((direction, spec), 0) + 1
                    if (f.action and f.dir == direction and f.spec == spec and self.target is None
                            and self.counts[(direction, spec)] == f.k):
                        off = f.off
                        if off > length:
                            sys.stderr.write("faultproxy: %s: offset %d is past the end of %s #%d (%d bytes)\n"
                                             % (direction, off, spec, f.k, length))
                            off = length
                        self.target = start + off
                        self.fault_note = "%s #%d, %d bytes, at offset %d" % (kind + "." + sub, f.k, length, off)
                index = self.counts[(direction, kind)]
            if self.args.trace:
                with open(self.args.trace, "a") as t:
                    t.write("%d %s %s %s %d %d %d\n" % (self.n, direction, kind, sub, index, start, length))

    def fire(self, direction, sent):
        line = "faultproxy: FIRED conn %d: %s: %d bytes relayed %s%s\n" % (
            self.n, self.fault.describe(), sent, direction,
            " (" + self.fault_note + ")" if self.fault_note else "")
        sys.stderr.write(line)
        sys.stderr.flush()
        if self.args.fired:
            with open(self.args.fired, "a") as f:
                f.write(line)

    def run(self):
        try:
            self.up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.up.connect(self.args.upstream)
        except OSError as e:
            sys.stderr.write("faultproxy: cannot connect to %s: %s\n" % (self.args.upstream, e))
            self.client.close()
            return
        if self.fault.action and self.target == 0:  # a fault before the first byte
            self.fire(self.fault.dir, 0)
            self.state = "cut" if self.fault.action == "cut" else "stalled"
            if self.state == "cut":
                self.close()
                self.client.close()
                self.up.close()
                return
        threads = [threading.Thread(target=self.direction, args=("c2s", self.client, self.up), daemon=True),
                   threading.Thread(target=self.direction, args=("s2c", self.up, self.client), daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.close()
        self.client.close()
        self.up.close()

    def direction(self, d, src, dst):
        parser = Parser(d, self.session)
        pending = bytearray()   # received, not yet relayed
        sent = 0
        f = self.fault
        while self.state == "relay":
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if self.state == "cut":
                return
            if self.state == "stalled":
                break
            if not data:
                # EOF: relay what is held back, pass the close on, and end the pair (NBD
                # makes no use of half-closed connections).
                if pending:
                    try:
                        dst.sendall(bytes(pending))
                    except OSError:
                        pass
                return self.close()
            msgs = parser.feed(bytes(data))
            pending += data
            self.note_messages(d, msgs)
            limit = len(pending) - parser.pending_header()
            hit = False
            with self.lock:
                if f.action and f.dir == d and self.target is not None and self.target >= 0 \
                        and sent + limit >= self.target:
                    limit = self.target - sent
                    hit = True
                    self.target = -1  # fires once
            if limit > 0:
                try:
                    dst.sendall(bytes(pending[:limit]))
                except OSError:
                    pass
                del pending[:limit]
                sent += limit
            if hit:
                self.fire(d, sent)
                self.state = "cut" if f.action == "cut" else "stalled"
                if f.action == "cut":
                    return self.close()
                break
        if self.state == "stalled":
            # Relay nothing more, read nothing more, and keep both sockets open until this
            # side closes; then close the other as well.
            p = select.poll()
            p.register(src, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
            p.poll()
            self.close()

    def close(self):
        with self.lock:
            if self.state == "relay":
                self.state = "closed"
        for s in (self.client, self.up):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description="fault-injecting NBD proxy (Unix sockets)")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--cut", nargs=2, metavar=("DIR", "POS"))
    g.add_argument("--stall", nargs=2, metavar=("DIR", "POS"))
    ap.add_argument("--conn", type=int, default=0, help="fault only the N-th connection (default: all)")
    ap.add_argument("--trace", help="append one line per message to this file")
    ap.add_argument("--fired", help="append the FIRED line to this file")
    args = ap.parse_args()
    action, spec = ("cut", args.cut) if args.cut else ("stall", args.stall) if args.stall else (None, None)
    if spec and spec[0] not in ("c2s", "s2c"):
        raise SystemExit("faultproxy: DIR is c2s or s2c")
    fault = Fault(action, spec[0] if spec else None, spec[1] if spec else None)

    try:
        os.unlink(args.listen)
    except FileNotFoundError:
        pass
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(args.listen)
    ls.listen(16)
    print("faultproxy: listening on %s (%s)" % (args.listen, fault.describe() if action else "no fault"),
          flush=True)
    n = 0
    try:
        while True:
            c, _ = ls.accept()
            n += 1
            Relay(args, fault, n, c).start()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            os.unlink(args.listen)
        except OSError:
            pass


if __name__ == "__main__":
    main()
