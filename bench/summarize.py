#!/usr/bin/env python3
"""Summarises bench/servers.sh results: medians over rounds, min-max, ratios taken within a round.

usage: bench/summarize.py results.tsv [--reference nbdkit-mem] [--subject nbdwire-mem]

Per transport and workload, one row per server: median rate (IOPS for 4 KiB workloads, GiB/s
for 1 MiB ones), min-max over rounds, the median of per-round ratios to the reference server,
and the median server and client (fio) CPU seconds per million I/Os. Then the subject against the best peer in
each round (the best of every server whose name does not start with "nbdwire" and is not the
bound), and against the bound.
"""
import argparse
import collections
import csv
import statistics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--reference", default="nbdkit-mem")
    ap.add_argument("--subject", default="nbdwire-mem")
    a = ap.parse_args()

    rows = list(csv.DictReader(open(a.results), delimiter="\t"))
    # (transport, workload) -> server -> round -> row
    data = collections.defaultdict(lambda: collections.defaultdict(dict))
    order = []
    for r in rows:
        key = (r["transport"], r["workload"])
        if key not in data:
            order.append(key)
        data[key][r["server"]][r["round"]] = r

    def rate(r, big):
        return float(r["bytes_per_s"]) / 2**30 if big else float(r["iops"]) / 1000

    def ratio(servers, name, rd, r, big, out):
        """Appends r's rate over server `name`'s in the same round, if it ran."""
        other = servers.get(name, {}).get(rd)
        if other and rate(other, big) > 0:
            out.append(rate(r, big) / rate(other, big))

    headline = []
    for key in order:
        t, w = key
        big = "1m" in w
        unit = "GiB/s" if big else "kIOPS"
        servers = data[key]
        print(f"\n{t} {w}")
        print(f"| server | median {unit} | min-max | x {a.reference} | x bound | x bound-storage | "
              f"server CPU s / M I/O | client CPU s / M I/O |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for s, by_round in servers.items():
            vals = [rate(r, big) for r in by_round.values()]
            ratios, bound_ratios, storage_ratios, cpu, ccpu = [], [], [], [], []
            for rd, r in by_round.items():
                ratio(servers, a.reference, rd, r, big, ratios)
                ratio(servers, "bound", rd, r, big, bound_ratios)
                ratio(servers, "bound-storage", rd, r, big, storage_ratios)
                ios = float(r["ios"])
                if ios > 0:
                    cpu.append(float(r["server_cpu_s"]) / ios * 1e6)
                    if r.get("client_cpu_s"):
                        ccpu.append(float(r["client_cpu_s"]) / ios * 1e6)
            med = lambda v, f: (f % statistics.median(v)) if v else "-"
            print(f"| {s} | {statistics.median(vals):.2f} | {min(vals):.2f}-{max(vals):.2f} | "
                  f"{med(ratios, '%.2f')} | {med(bound_ratios, '%.2f')} | {med(storage_ratios, '%.2f')} | "
                  f"{med(cpu, '%.1f')} | {med(ccpu, '%.1f')} |")
        # The subject against the best peer of the same round, and against the bound.
        best, vs_bound, vs_storage = [], [], []
        subj = servers.get(a.subject, {})
        for rd, r in subj.items():
            peers = [rate(p[rd], big) for s, p in servers.items()
                     if not s.startswith("nbdwire") and not s.startswith("bound") and rd in p]
            if peers and max(peers) > 0:
                best.append(rate(r, big) / max(peers))
            ratio(servers, "bound", rd, r, big, vs_bound)
            ratio(servers, "bound-storage", rd, r, big, vs_storage)
        if best:
            headline.append((t, w, statistics.median(best), min(best), max(best),
                             statistics.median(vs_bound) if vs_bound else None,
                             statistics.median(vs_storage) if vs_storage else None))

    if headline:
        print(f"\n{a.subject} against the best peer of the same round (median, min-max), and the bound")
        print("| transport | workload | x best peer | min-max | x bound | x bound-storage |")
        print("|---|---|---:|---:|---:|---:|")
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"
        for t, w, m, lo, hi, vb, vs in headline:
            print(f"| {t} | {w} | {m:.2f} | {lo:.2f}-{hi:.2f} | {fmt(vb)} | {fmt(vs)} |")


if __name__ == "__main__":
    main()
