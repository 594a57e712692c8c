#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A logging proxy for NBD sessions, used to record fuzz seeds from real peers.

    nbd-log-proxy.py LISTEN UPSTREAM LOGDIR

LISTEN and UPSTREAM are Unix socket paths or HOST:PORT. Every connection accepted on LISTEN is
relayed to UPSTREAM unchanged; each one is written to LOGDIR/session-N.log, one line per
recv() chunk in arrival order: "C>S <hex>" (client to server) or "S>C <hex>" (server to client).
Runs until killed.
"""
import os
import select
import socket
import sys
import threading


def endpoint(spec):
    if "/" in spec:
        return socket.AF_UNIX, spec
    host, _, port = spec.rpartition(":")
    return socket.AF_INET, (host or "127.0.0.1", int(port))


def relay(client, upstream_spec, path):
    family, addr = endpoint(upstream_spec)
    server = socket.socket(family, socket.SOCK_STREAM)
    server.connect(addr)
    names = {client: "C>S", server: "S>C"}
    peer = {client: server, server: client}
    open_ends = {client, server}
    with open(path, "w", encoding="ascii") as log:
        while open_ends:
            ready, _, _ = select.select(list(open_ends), [], [])
            for s in ready:
                try:
                    data = s.recv(1 << 20)
                except OSError:
                    data = b""  # reset: end of this direction
                if not data:
                    open_ends.discard(s)
                    try:
                        peer[s].shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                log.write(f"{names[s]} {data.hex()}\n")
                log.flush()
                try:
                    peer[s].sendall(data)
                except OSError:
                    open_ends.clear()  # the other side is gone
                    break
    client.close()
    server.close()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    listen_spec, upstream_spec, logdir = sys.argv[1:]
    os.makedirs(logdir, exist_ok=True)
    family, addr = endpoint(listen_spec)
    if family == socket.AF_UNIX and os.path.exists(addr):
        os.unlink(addr)
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(addr)
    listener.listen(16)
    n = len([f for f in os.listdir(logdir) if f.startswith("session-")])
    while True:
        client, _ = listener.accept()
        n += 1
        path = os.path.join(logdir, f"session-{n:03d}.log")
        threading.Thread(target=relay, args=(client, upstream_spec, path), daemon=True).start()


if __name__ == "__main__":
    main()
