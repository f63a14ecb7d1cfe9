#!/usr/bin/env python3
"""How repeatable a scenario's searches are: several runs' JSON (written by
scripts/bench.sh, kept by scripts/bench-repeat.sh) in, one Markdown table
out, with each row's delivered ticks/s at its highest passing rate per run,
the median, and the spread ((max - min) / median).

    python3 scripts/bench_spread.py OUT.md RUN1.json RUN2.json RUN3.json
"""
import json
import statistics
import sys

# The bar: three runs agree within +-15% of their median.
TOLERANCE = 0.15


def key(row):
    return (row["part"], row["target"], row["transport"], row["clients"], row["topics"])


def at_max(row):
    """Delivered ticks/s at the highest passing rate, else the run's own."""
    best = row.get("at_max") or row["report"]
    return (best.get("delivered") or {}).get("per_s")


def main():
    out, paths = sys.argv[1], sys.argv[2:]
    runs = [json.load(open(p)) for p in paths]
    order, values, flat = [], {}, {}
    for run in runs:
        for row in run["rows"]:
            if row.get("max_rate") is None:
                continue  # a fixed-rate row: no search to repeat
            k = key(row)
            if k not in values:
                order.append(k)
                values[k], flat[k] = [], []
            values[k].append(at_max(row) or 0.0)
            flat[k].append(bool(row.get("max_is_flat_out")))
    lines = [
        f"# {runs[0]['scenario']}: {len(runs)} runs of the search",
        "",
        "Commits: " + ", ".join(r["commit"] for r in runs) + "; dates: "
        + ", ".join(r["date"] for r in runs) + ".",
        "",
        "Delivered ticks/s at each run's highest rate with delivery >= 0.999 "
        "(* = the flat-out run passed: the publisher's path was the limit); "
        f"spread = (max - min) / median; ok = every run within +-{TOLERANCE:.0%} of the median.",
        "",
        "| part | target | transport | clients | topics | runs (M delivered/s) | median | spread | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in order:
        v = values[k]
        med = statistics.median(v)
        spread = (max(v) - min(v)) / med if med else float("inf")
        within = med > 0 and all(abs(x - med) <= TOLERANCE * med for x in v)
        cells = ", ".join(
            f"{x / 1e6:.2f}{'*' if f else ''}" for x, f in zip(v, flat[k])
        )
        part, target, transport, clients, topics = k
        lines.append(
            f"| {part} | {target} | {transport} | {clients:,} | {topics:,} | {cells} "
            f"| {med / 1e6:.2f} M | {spread:.0%} | {'yes' if within else 'no'} |"
        )
    open(out, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
