#!/usr/bin/env python3
"""Pairs nbdwire-bench's *_nbdwire and *_baseline codec benchmarks and prints their time ratio.

usage: nbdwire-bench --benchmark_filter='_(nbdwire|baseline)$' --benchmark_repetitions=5 \\
           --benchmark_format=json > codec.json
       bench/codec-ratios.py codec.json

Uses the median aggregate when repetitions were run, else the single result. A ratio of 1.00
means the record layer costs nothing over hand-written memcpy + byte swap; the target is <= 1.2.
"""
import json
import sys


def main():
    d = json.load(open(sys.argv[1]))
    times = {}
    for b in d["benchmarks"]:
        name = b.get("run_name", b["name"])
        agg = b.get("aggregate_name")
        if agg not in (None, "median"):
            continue
        if agg is None and name in times:
            continue  # keep the median when both are present
        times[name] = (b["real_time"], b["time_unit"], agg == "median")
    print("| codec | nbdwire ns | baseline ns | ratio |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    for name in sorted(times):
        if not name.endswith("_nbdwire"):
            continue
        base = name[: -len("_nbdwire")] + "_baseline"
        if base not in times:
            continue
        a, b = times[name][0], times[base][0]
        ratio = a / b if b else float("inf")
        worst = max(worst, ratio)
        print(f"| {name[: -len('_nbdwire')]} | {a:.2f} | {b:.2f} | {ratio:.2f} |")
    print(f"\nworst ratio: {worst:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
