#!/usr/bin/env python3
"""Hand-built seeds for paths the captured sessions and make-modern-seeds.py do not start
from (see docs/fuzzing.md, "Reach"). Writes OUT/<target>/<name>; add them to the corpora with
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


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    for target, name, data in seeds():
        os.makedirs(os.path.join(out, target), exist_ok=True)
        with open(os.path.join(out, target, name), "wb") as f:
            f.write(data)
        print(f"{target}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
