#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The table of a fuzzing campaign run by run-fuzz.sh, in Markdown, for docs/fuzzing.md.

  fuzz/tools/campaign-table.py BUILD_DIR [TARGET...]

Reads what run-fuzz.sh leaves in BUILD_DIR/fuzz/work/: each target's libFuzzer log (<T>.log:
the INITED line, the final status line, the -print_final_stats figures), its CPU time
(<T>.cpu: user and system seconds of the fuzzer process) and its artifacts directory (any
crash-, leak-, timeout- or oom- file is a finding), and counts the inputs now in
fuzz/corpus/<T>/. Targets default to every one with a log. A target whose log has no final
status line (the run was cut short) is reported as such, never as a clean run.
"""
import os
import re
import sys


def parse_log(path):
    text = open(path, errors="replace").read()
    status = re.findall(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+)", text, re.M)
    inited = next(((int(c), int(f)) for _, kind, c, f in status if kind == "INITED"), None)
    done = next(((int(c), int(f)) for _, kind, c, f in status if kind == "DONE"), None)
    execs = re.search(r"^stat::number_of_executed_units:\s+(\d+)", text, re.M)
    rate = re.search(r"^stat::average_exec_per_sec:\s+(\d+)", text, re.M)
    wall = re.search(r"^Done (\d+) runs in (\d+) second", text, re.M)
    return {
        "inited": inited,
        "done": done,
        "execs": int(execs.group(1)) if execs else None,
        "rate": int(rate.group(1)) if rate else None,
        "wall": int(wall.group(2)) if wall else None,
        "sanitizer": bool(re.search(r"^==\d+==ERROR|^SUMMARY: |NBDWIRE_FUZZ_CHECK|invariant violated", text, re.M)),
    }


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    build = sys.argv[1]
    work = os.path.join(build, "fuzz", "work")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    targets = sys.argv[2:] or sorted(f[:-4] for f in os.listdir(work) if f.endswith(".log") and ".merge" not in f)
    print("| target | wall s | CPU s | executions | exec/s | edges: start → end | features: start → end | findings | corpus after merge |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    total_cpu = total_execs = total_wall = total_inputs = 0
    for t in targets:
        log = os.path.join(work, t + ".log")
        if not os.path.exists(log):
            print(f"| {t} | (no log) | | | | | | | |")
            continue
        r = parse_log(log)
        cpu = None
        cpu_file = os.path.join(work, t + ".cpu")
        if os.path.exists(cpu_file):
            fields = open(cpu_file).read().split()
            if len(fields) >= 2:
                cpu = float(fields[0]) + float(fields[1])
        art = os.path.join(work, t + ".artifacts")
        findings = [f for f in (os.listdir(art) if os.path.isdir(art) else [])
                    if re.match(r"(merge-)?(crash|leak|timeout|oom)-", f)]
        corpus = os.path.join(root, "fuzz", "corpus", t)
        inputs = len(os.listdir(corpus)) if os.path.isdir(corpus) else 0
        if r["done"] is None:
            print(f"| {t} | no final status line (still running, or cut short): {log} | | | | | | {len(findings)} | {inputs} |")
            continue
        start = r["inited"] or (0, 0)
        finding = str(len(findings)) + (" (sanitizer or invariant report in the log)" if r["sanitizer"] else "")
        cpu_text = "-" if cpu is None else f"{cpu:.0f}"
        print(f"| {t} | {r['wall'] or '-'} | {cpu_text} | {r['execs']:,} | {r['rate']:,} | "
              f"{start[0]:,} → {r['done'][0]:,} | {start[1]:,} → {r['done'][1]:,} | {finding} | {inputs:,} |")
        total_cpu += cpu or 0
        total_execs += r["execs"] or 0
        total_wall += r["wall"] or 0
        total_inputs += inputs
    print(f"| total | {total_wall:,} | {total_cpu:,.0f} | {total_execs:,} | | | | | {total_inputs:,} |")


if __name__ == "__main__":
    main()
