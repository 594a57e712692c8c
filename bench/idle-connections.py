#!/usr/bin/env python3
"""Server memory per idle connection: opens N connections to each server, takes every one
through a fixed-newstyle handshake (NBD_OPT_EXPORT_NAME) into transmission, leaves them idle,
and compares the server's memory before and after.

usage: bench/idle-connections.py [--build DIR] [--connections N] [--servers NAME...]

Servers: nbdwire (nbdwire-server, memory export), nbdkit (memory plugin), qemu-nbd and
nbd-server (both on a 1 MiB file). Installs nothing; missing peers are skipped. Memory is the
proportional set size (PSS, /proc/PID/smaps_rollup) summed over the server and its child
processes, so a server that forks per connection (nbd-server) is charged for its children
and shared pages are not counted twice; RSS is shown as well.
"""
import argparse
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def memory_kib(pid):
    pss = rss = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise ConnectionError("server closed during the handshake")
        b += chunk
    return b


def handshake(path, name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    greeting = recv_exact(s, 18)
    if greeting[:16] != b"NBDMAGICIHAVEOPT":
        raise ConnectionError("not a newstyle server")
    (sflags,) = struct.unpack(">H", greeting[16:])
    no_zeroes = bool(sflags & 2)
    s.sendall(struct.pack(">I", 1 | (2 if no_zeroes else 0)))
    n = name.encode()
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 1, len(n)) + n)  # NBD_OPT_EXPORT_NAME
    recv_exact(s, 10 if no_zeroes else 134)
    return s


def wait_socket(path, proc):
    for _ in range(200):
        if os.path.exists(path):
            try:
                t = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                t.connect(path)
                t.close()
                return True
            except OSError:
                pass
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--servers", nargs="*", default=["nbdwire", "nbdkit", "qemu-nbd", "nbd-server"])
    a = ap.parse_args()
    want = a.connections * 2 + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    work = tempfile.mkdtemp(prefix="nbdwire-idle.")
    img = os.path.join(work, "disk.img")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    print(f"| server | connections | PSS before KiB | PSS after KiB | KiB per connection (PSS) | KiB per connection (RSS) |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        for name in a.servers:
            sock = os.path.join(work, name + ".sock")
            pidfile = None
            if name == "nbdwire":
                cmd = [os.path.join(a.build, "examples", "nbdwire-server"), "--unix", sock, "e=memory:1M"]
                export = "e"
            elif name == "nbdkit":
                cmd = ["nbdkit", "-f", "-U", sock, "memory", "1M"]
                export = ""
            elif name == "qemu-nbd":
                cmd = ["qemu-nbd", "-f", "raw", "-t", "-x", "e", f"--shared={a.connections + 10}", "-k", sock, img]
                export = "e"
            elif name == "nbd-server":
                conf = os.path.join(work, "nbd-server.conf")
                pidfile = os.path.join(work, "nbd-server.pid")
                with open(conf, "w") as f:
                    f.write(f"[generic]\n    unixsock = {sock}\n    maxconnections = {a.connections + 10}\n"
                            f"[e]\n    exportname = {img}\n")
                cmd = ["nbd-server", "-C", conf, "-p", pidfile]
                export = "e"
            else:
                print(f"unknown server {name}", file=sys.stderr)
                continue
            if shutil.which(cmd[0]) is None and not os.path.exists(cmd[0]):
                print(f"{name}: not installed, skipped", file=sys.stderr)
                continue
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (want, want)))
            conns = []
            try:
                if pidfile:
                    proc.wait()
                    for _ in range(100):
                        if os.path.exists(pidfile) and open(pidfile).read().strip():
                            break
                        time.sleep(0.05)
                    pid = int(open(pidfile).read().strip())
                    ok = wait_socket(sock, None)
                else:
                    pid = proc.pid
                    ok = wait_socket(sock, proc)
                if not ok:
                    print(f"{name}: did not start", file=sys.stderr)
                    continue
                time.sleep(0.3)
                before = memory_kib(pid)
                note = ""
                for _ in range(a.connections):
                    try:
                        conns.append(handshake(sock, export))
                    except (OSError, ConnectionError) as e:
                        note = f" (connection {len(conns) + 1} failed: {e})"
                        break
                if not conns:
                    raise ConnectionError("no connection completed the handshake" + note)
                time.sleep(1.0)
                after = memory_kib(pid)
                n = len(conns)
                print(f"| {name} | {n} | {before[0]} | {after[0]} | {(after[0] - before[0]) / n:.1f} | "
                      f"{(after[1] - before[1]) / n:.1f} |{note}", flush=True)
            except (OSError, ConnectionError) as e:
                print(f"{name}: failed after {len(conns)} connections: {e}", file=sys.stderr)
            finally:
                for c in conns:
                    c.close()
                if pidfile:
                    try:
                        os.kill(pid, 15)
                    except (OSError, UnboundLocalError):
                        pass
                else:
                    proc.terminate()
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                time.sleep(0.3)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
