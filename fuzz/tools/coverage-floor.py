#!/usr/bin/env python3
"""Line and branch coverage of include/nbdwire/ reached by the committed fuzz corpora, and the
floor it must not fall under.

The coverage replay (fuzz_coverage_replay: every target in one clang binary built with
-fprofile-instr-generate -fcoverage-mapping, see fuzz/CMakeLists.txt and coverage.sh) runs each
target's corpus once, without fuzzing; llvm-profdata merges the profiles and llvm-cov exports
the summary of every header. With --floor FILE the figures are checked against the floor file:
any figure under its floor fails (exit 1). A header of the floor file that no target reaches
any more fails too; a reached header with no floor is reported and passes.

  coverage-floor.py --replay BIN --corpus fuzz/corpus --include include/nbdwire \\
      --profdata llvm-profdata-14 --cov llvm-cov-14 --work DIR [--floor FILE] [--write-floor]
      [--markdown]

--write-floor rewrites FILE from the figures measured: 0.5 points under the total, and per
header 0.5 points or one line (branch) under its figure, whichever is lower. Exit 77 (ctest
SKIP_RETURN_CODE) when llvm-profdata or llvm-cov is missing.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

TARGETS = ["server_handshake", "client_handshake", "server_tx", "client_tx", "legacy_server",
           "legacy_client", "roundtrip", "split", "codec"]
MARGIN = 0.5  # points under the measured figure


def tool(name):
    if not name:
        return None
    return shutil.which(name) or (name if os.access(name, os.X_OK) else None)


def pct(covered, count):
    return 100.0 * covered / count if count else 100.0


def measure(args):
    os.makedirs(args.work, exist_ok=True)
    for f in os.listdir(args.work):
        if f.endswith(".profraw") or f.endswith(".profdata"):
            os.remove(os.path.join(args.work, f))
    start = time.monotonic()
    for t in TARGETS:
        corpus = os.path.join(args.corpus, t)
        env = dict(os.environ, LLVM_PROFILE_FILE=os.path.join(args.work, t + ".profraw"))
        env.pop("NBDWIRE_FUZZ_FAST", None)  # coverage is measured in normal mode
        t0 = time.monotonic()
        r = subprocess.run([args.replay, t, corpus], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if r.returncode != 0:
            sys.stdout.write(r.stdout)
            sys.exit(f"coverage-floor: replaying {corpus} failed (exit {r.returncode})")
        print(f"{r.stdout.strip()} ({time.monotonic() - t0:.1f} s)")
    profdata = os.path.join(args.work, "all.profdata")
    raws = [os.path.join(args.work, t + ".profraw") for t in TARGETS]
    subprocess.run([args.profdata, "merge", "-sparse", "-o", profdata, *raws], check=True)
    out = subprocess.run([args.cov, "export", "-summary-only", "-instr-profile=" + profdata, args.replay],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    data = json.loads(out)["data"][0]
    include = os.path.realpath(args.include) + os.sep
    rows = {}
    for f in data["files"]:
        name = os.path.realpath(f["filename"])
        if not name.startswith(include):
            continue
        s = f["summary"]
        rows[name[len(include):]] = (s["lines"]["count"], s["lines"]["covered"],
                                     s["branches"]["count"], s["branches"]["covered"])
    print(f"replay, merge and export: {time.monotonic() - start:.1f} s")
    return rows


def total(rows):
    t = [0, 0, 0, 0]
    for r in rows.values():
        t = [a + b for a, b in zip(t, r)]
    return tuple(t)


def order(rows):
    """Top-level headers first, then each directory, as the include tree lists them."""
    return sorted(rows, key=lambda h: (h.count("/"), h))


def print_table(rows, markdown):
    lc, lv, bc, bv = total(rows)
    if markdown:
        print("| header | lines | lines covered | branches | branches covered |")
        print("|---|---:|---:|---:|---:|")
        for h in order(rows):
            c = rows[h]
            print(f"| {h} | {c[0]} | {pct(c[1], c[0]):.2f}% | {c[2]} | {pct(c[3], c[2]):.2f}% |")
        print(f"| **all of include/nbdwire/** | {lc} | {pct(lv, lc):.2f}% | {bc} | {pct(bv, bc):.2f}% |")
        return
    print(f"{'header':<28} {'lines':>6} {'covered':>8} {'branches':>9} {'covered':>8}")
    for h in order(rows):
        c = rows[h]
        print(f"{h:<28} {c[0]:>6} {pct(c[1], c[0]):>7.2f}% {c[2]:>9} {pct(c[3], c[2]):>7.2f}%")
    print(f"{'TOTAL':<28} {lc:>6} {pct(lv, lc):>7.2f}% {bc:>9} {pct(bv, bc):>7.2f}%")


def read_floor(path):
    floor = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            if len(line) != 3:
                sys.exit(f"coverage-floor: {path}: expected 'header lines branches', got {' '.join(line)}")
            floor[line[0]] = (float(line[1]), float(line[2]))
    if "TOTAL" not in floor:
        sys.exit(f"coverage-floor: {path} has no TOTAL line")
    return floor


def write_floor(path, rows):
    def under(covered, count, whole):
        figure = pct(covered, count)
        unit = 0.0 if whole or count == 0 else pct(1, count)
        return max(0.0, figure - max(MARGIN, unit))

    lc, lv, bc, bv = total(rows)
    with open(path, "w") as f:
        f.write("# The coverage floor of include/nbdwire/ by the committed fuzz corpora: percent of lines and\n"
                "# of branches (llvm-cov) reached by replaying fuzz/corpus/ through every target. ctest\n"
                "# fuzz-coverage-floor fails when a figure falls under its floor (docs/fuzzing.md, \"Reach\").\n"
                "# Written by fuzz/tools/coverage-floor.py --write-floor: 0.5 points under the total, and per\n"
                "# header 0.5 points or one line (branch) under its figure, whichever is lower.\n"
                f"# {'header':<26} {'lines':>7} {'branches':>9}\n")
        f.write(f"{'TOTAL':<28} {under(lv, lc, True):>7.2f} {under(bv, bc, True):>9.2f}\n")
        for h in order(rows):
            c = rows[h]
            f.write(f"{h:<28} {under(c[1], c[0], False):>7.2f} {under(c[3], c[2], False):>9.2f}\n")
    print(f"coverage-floor: wrote {path}")


def check(rows, floor):
    failures = []
    figures = dict(rows)
    figures["TOTAL"] = total(rows)
    for h, (fl, fb) in floor.items():
        if h not in figures:
            failures.append(f"{h}: no target reaches it any more (floor {fl:.2f}% lines, {fb:.2f}% branches)")
            continue
        lc, lv, bc, bv = figures[h]
        if pct(lv, lc) + 1e-9 < fl:
            failures.append(f"{h}: lines {pct(lv, lc):.2f}% < floor {fl:.2f}%")
        if pct(bv, bc) + 1e-9 < fb:
            failures.append(f"{h}: branches {pct(bv, bc):.2f}% < floor {fb:.2f}%")
    for h in order(rows):
        if h not in floor:
            print(f"coverage-floor: note: {h} has no floor yet (fuzz/tools/coverage-floor.py --write-floor)")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replay", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--include", required=True)
    ap.add_argument("--profdata", default="llvm-profdata")
    ap.add_argument("--cov", default="llvm-cov")
    ap.add_argument("--work", required=True)
    ap.add_argument("--floor")
    ap.add_argument("--write-floor", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    missing = [n for n, v in (("llvm-profdata", args.profdata), ("llvm-cov", args.cov)) if not tool(v)]
    if missing:
        print(f"coverage-floor: SKIPPED: {' and '.join(missing)} not found (Debian: apt-get install llvm-14; "
              "scripts/install-deps.sh installs it)")
        return 77
    args.profdata, args.cov = tool(args.profdata), tool(args.cov)
    rows = measure(args)
    print_table(rows, args.markdown)
    if args.write_floor:
        if not args.floor:
            sys.exit("coverage-floor: --write-floor needs --floor FILE")
        write_floor(args.floor, rows)
        return 0
    if not args.floor:
        return 0
    failures = check(rows, read_floor(args.floor))
    if failures:
        print("coverage-floor: FAILED: coverage of include/nbdwire/ fell under the floor of " + args.floor)
        for f in failures:
            print("  " + f)
        return 1
    lc, lv, bc, bv = total(rows)
    print(f"coverage-floor: OK: {pct(lv, lc):.2f}% of lines, {pct(bv, bc):.2f}% of branches; every figure at or "
          f"above its floor ({args.floor})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
