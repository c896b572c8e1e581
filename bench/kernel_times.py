#!/usr/bin/env python3
"""Summarizes `ncu --csv --print-units base --metrics gpu__time_duration.sum` output (one row per
kernel launch): each kernel in launch order with its grid and GPU time, then the total and the
kernels grouped by name, slowest first.

Usage: kernel_times.py NCU.csv [TITLE]
"""
import csv
import sys
from collections import defaultdict


def main():
    path = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else path
    rows = []
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # skip ncu's own notes
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "ns")
        us = value / 1000 if unit in ("ns", "nsecond") else value * 1000 if unit == "msecond" else value
        rows.append((row["Kernel Name"], row.get("Grid Size", ""), us))
    total = sum(r[2] for r in rows)
    print(f"== {title}: {len(rows)} kernels, {total:.1f} us of GPU time")
    for name, grid, us in rows:
        print(f"  {us:8.1f} us  grid {grid:<14} {name[:90]}")
    by_name = defaultdict(lambda: [0, 0.0])
    for name, _, us in rows:
        key = name.split("(")[0][:70]
        by_name[key][0] += 1
        by_name[key][1] += us
    print("  -- by kernel:")
    for key, (n, us) in sorted(by_name.items(), key=lambda kv: -kv[1][1]):
        print(f"  {us:8.1f} us  {n:3d}x  {key}")


if __name__ == "__main__":
    main()
