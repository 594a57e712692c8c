#!/usr/bin/env python3
"""Summarises bench/servers.sh results: medians over rounds, min-max, ratios taken within a round.

usage: bench/summarize.py results.tsv [--reference nbdkit-mem] [--subject nbdwire-mem]

Per transport, workload and load generator (fio, nbdwire-perf), one row per server: median
rate (IOPS for 4 KiB workloads, GiB/s for 1 MiB ones), min-max over rounds, the median of
per-round ratios to the reference server, and the median server and client (the load
generator's own) CPU seconds per million I/Os. Then, per load generator, the subject against
the best peer in each round (the best of every server whose name does not start with
"nbdwire" and is not the bound), and against the bound. Then nbdwire-perf against fio on the
same server in the same round: client CPU per I/O (perf / fio), rate (perf / fio) and median
p50 latency of each. With TLS transports (TRANSPORT+tls, servers.sh --tls-plain), each server
over TLS against itself in plaintext in the same round: rate and server CPU per I/O.

The bound rows (nbdwire-socket-bound) have no load generator ("-"): they appear in every
load generator's tables. Results from before the client column count as fio.
"""
import argparse
import collections
import csv
import statistics

NAMES = {"fio": "fio", "perf": "nbdwire-perf"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--reference", default="nbdkit-mem")
    ap.add_argument("--subject", default="nbdwire-mem")
    a = ap.parse_args()

    rows = list(csv.DictReader(open(a.results), delimiter="\t"))
    clients = []
    for r in rows:
        r.setdefault("client", "fio")
        if r["client"] not in ("-", "") and r["client"] not in clients:
            clients.append(r["client"])
    if not clients:
        clients = ["fio"]
    # (transport, workload, client) -> server -> round -> row
    data = collections.defaultdict(lambda: collections.defaultdict(dict))
    order = []
    for r in rows:
        targets = clients if r["client"] in ("-", "") else [r["client"]]
        for c in targets:
            key = (r["transport"], r["workload"], c)
            if key not in data:
                order.append(key)
            data[key][r["server"]][r["round"]] = r
    first = {}
    for t, w, _ in order:
        first.setdefault((t, w), len(first))
    order.sort(key=lambda k: (first[(k[0], k[1])], clients.index(k[2])))

    def rate(r, big):
        return float(r["bytes_per_s"]) / 2**30 if big else float(r["iops"]) / 1000

    def ratio(servers, name, rd, r, big, out):
        """Appends r's rate over server `name`'s in the same round, if it ran."""
        other = servers.get(name, {}).get(rd)
        if other and rate(other, big) > 0:
            out.append(rate(r, big) / rate(other, big))

    def per_io(r, field):
        ios = float(r["ios"])
        v = r.get(field)
        if ios <= 0 or v in (None, "", "-"):
            return None
        return float(v) / ios * 1e6

    med = lambda v, f: (f % statistics.median(v)) if v else "-"
    headline = []
    for key in order:
        t, w, c = key
        big = "1m" in w
        unit = "GiB/s" if big else "kIOPS"
        servers = data[key]
        print(f"\n{t} {w}, load generator {NAMES.get(c, c)}")
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
                if (v := per_io(r, "server_cpu_s")) is not None:
                    cpu.append(v)
                if (v := per_io(r, "client_cpu_s")) is not None:
                    ccpu.append(v)
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
            headline.append((t, w, c, statistics.median(best), min(best), max(best),
                             statistics.median(vs_bound) if vs_bound else None,
                             statistics.median(vs_storage) if vs_storage else None))

    if headline:
        print(f"\n{a.subject} against the best peer of the same round (median, min-max), and the bound")
        print("| transport | workload | load generator | x best peer | min-max | x bound | x bound-storage |")
        print("|---|---|---|---:|---:|---:|---:|")
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"
        for t, w, c, m, lo, hi, vb, vs in headline:
            print(f"| {t} | {w} | {NAMES.get(c, c)} | {m:.2f} | {lo:.2f}-{hi:.2f} | {fmt(vb)} | {fmt(vs)} |")

    # nbdwire-perf against fio: same server, same round.
    if "fio" in clients and "perf" in clients:
        print("\nnbdwire-perf against fio on the same server in the same round (medians of per-round values)")
        print("| transport | workload | server | fio client µs / I/O | perf client µs / I/O | perf / fio CPU per I/O | "
              "perf / fio rate | min-max | fio p50 µs | perf p50 µs |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        seen = []
        for t, w, c in order:
            if (t, w) not in seen:
                seen.append((t, w))
        for t, w in seen:
            big = "1m" in w
            fio, perf = data.get((t, w, "fio"), {}), data.get((t, w, "perf"), {})
            for s in fio:
                if s.startswith("bound") or s not in perf:
                    continue
                fc, pc, cr, rr, fl, pl = [], [], [], [], [], []
                for rd, fr in fio[s].items():
                    pr = perf[s].get(rd)
                    if not pr:
                        continue
                    f_cpu, p_cpu = per_io(fr, "client_cpu_s"), per_io(pr, "client_cpu_s")
                    if f_cpu is not None:
                        fc.append(f_cpu)
                    if p_cpu is not None:
                        pc.append(p_cpu)
                    if f_cpu and p_cpu is not None:
                        cr.append(p_cpu / f_cpu)
                    if rate(fr, big) > 0:
                        rr.append(rate(pr, big) / rate(fr, big))
                    for src, dst in ((fr, fl), (pr, pl)):
                        if src.get("lat_p50_us") not in (None, "", "-"):
                            dst.append(float(src["lat_p50_us"]))
                print(f"| {t} | {w} | {s} | {med(fc, '%.1f')} | {med(pc, '%.1f')} | {med(cr, '%.2f')} | "
                      f"{med(rr, '%.2f')} | {f'{min(rr):.2f}-{max(rr):.2f}' if rr else '-'} | "
                      f"{med(fl, '%.1f')} | {med(pl, '%.1f')} |")

    # TLS against plaintext: the same server, load generator and workload in the same round.
    tls_keys = [k for k in order if k[0].endswith("+tls") and (k[0][:-4], k[1], k[2]) in data]
    if tls_keys:
        print("\nTLS against plaintext: the same server and load generator in the same round (medians of per-round ratios)")
        print("| transport | workload | load generator | server | TLS rate | TLS / plain rate | min-max | "
              "TLS / plain server CPU per I/O | TLS server CPU s / M I/O | TLS client CPU s / M I/O |")
        print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
        for t, w, c in tls_keys:
            big = "1m" in w
            unit = "GiB/s" if big else "kIOPS"
            tls, plain = data[(t, w, c)], data[(t[:-4], w, c)]
            for s, by_round in tls.items():
                rr, cr, vals, cpu, ccpu = [], [], [], [], []
                for rd, r in by_round.items():
                    vals.append(rate(r, big))
                    if (v := per_io(r, "server_cpu_s")) is not None:
                        cpu.append(v)
                    if (v := per_io(r, "client_cpu_s")) is not None:
                        ccpu.append(v)
                    p = plain.get(s, {}).get(rd)
                    if not p:
                        continue
                    if rate(p, big) > 0:
                        rr.append(rate(r, big) / rate(p, big))
                    a_cpu, b_cpu = per_io(r, "server_cpu_s"), per_io(p, "server_cpu_s")
                    if a_cpu is not None and b_cpu:
                        cr.append(a_cpu / b_cpu)
                print(f"| {t} | {w} | {NAMES.get(c, c)} | {s} | {med(vals, '%.2f')} {unit} | {med(rr, '%.2f')} | "
                      f"{f'{min(rr):.2f}-{max(rr):.2f}' if rr else '-'} | {med(cr, '%.2f')} | {med(cpu, '%.1f')} | "
                      f"{med(ccpu, '%.1f')} |")


if __name__ == "__main__":
    main()
