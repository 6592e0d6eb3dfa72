#!/usr/bin/env python3
"""Plots of the benchmark results (Debian's python3-matplotlib):
bench/results/start.png from start.json and start-vm.png from start-vm.json (median
start-to-exit per tool, p95 as a whisker), and
bench/results/density.png from the largest density-N.json (start time of the k-th guest)."""
import glob, json, os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
for base, title in (("start", "Start latency (this host)"),
                    ("start-vm", "Start latency (cgroup v2 VM, software emulation: ratios only)")):
    if not os.path.exists(base + ".json"):
        continue
    r = json.load(open(base + ".json"))["results"]
    names = list(r)
    med = [r[n]["median_ms"] for n in names]
    err = [r[n]["p95_ms"] - r[n]["median_ms"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names, med, xerr=[[0] * len(err), err], color="#4878a8")
    ax.invert_yaxis()
    ax.set_xlabel("start-to-exit of /bin/true, ms (bar: median, whisker: p95)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(base + ".png", dpi=100)
files = sorted(glob.glob("density-*.json"), key=lambda f: int(f.split("-")[1].split(".")[0]))
if files:
    d = json.load(open(files[-1]))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(range(1, len(d["start_ms"]) + 1), d["start_ms"], ".", markersize=2, color="#4878a8")
    ax.set_xlabel("guests already running + 1")
    ax.set_ylabel("vserver NAME start, ms")
    ax.set_title(f"Start time vs running guests ({d['guests']} guests)")
    fig.tight_layout()
    fig.savefig("density.png", dpi=100)
print("plots in bench/results/")
