#!/usr/bin/env python3
"""Turns benches/results/SCENARIO.json (written by scripts/bench.sh) into
SCENARIO.md (a Markdown table) and SCENARIO.svg (a bar chart, hand-written
SVG: no plotting dependency).

    python3 scripts/bench_report.py benches/results/broadcast.json
"""
import json
import sys
from html import escape
from pathlib import Path

CEILING = 9.5e6


def get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


def num(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def headline(row):
    """Delivered ticks/s to chart and to set against the ceiling: at the
    highest passing rate when there was a search, else the run's own."""
    best = row.get("at_max")
    if best:
        return get(best, "delivered", "per_s"), "at max rate"
    return get(row["report"], "delivered", "per_s"), "in the run"


def table(doc):
    head = [
        "scenario", "target", "transport", "clients", "topics", "rate (ticks/s)",
        "max rate ≥0.999", "delivered/s at max", "% of ceiling",
        "delivered/s", "ratio", "gaps/dups", "latency p50 / p99 / p99.9 µs",
        "wire B/tick", "broker µs CPU/1k", "broker CPU %", "broker CPU-wait %", "broker RSS MiB (KiB/conn)",
        "loadgen CPU %", "loadgen CPU-wait %", "other procs CPU %",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in doc["rows"]:
        r = row["report"]
        lat = get(r, "sample", "latency_us") or {}
        best = row.get("at_max")
        at_max = get(best, "delivered", "per_s") if best else None
        top, _ = headline(row)
        max_rate = row.get("max_rate")
        if row["part"] == "idle":
            rate = "idle"
        else:
            rate = num(row.get("rate"))
        rss = get(r, "broker", "rss_mib")
        per_conn = get(r, "broker", "rss_kib_per_connection")
        cells = [
            row["part"], row["target"], row["transport"], num(row["clients"]),
            num(row["topics"]), rate,
            (num(max_rate) + (" (flat out)" if row.get("max_is_flat_out") else ""))
            if max_rate is not None else "—",
            num(at_max) if at_max is not None else "—",
            num((top or 0) / CEILING * 100, 3),
            num(get(r, "delivered", "per_s")),
            num(get(r, "delivered", "ratio"), 5),
            f'{get(r, "sample", "gaps")}/{get(r, "sample", "duplicates")}',
            f'{num(lat.get("p50"))} / {num(lat.get("p99"))} / {num(lat.get("p99_9"))}',
            num(get(r, "delivered", "bytes_per_tick"), 1),
            num(get(r, "broker", "cpu_us_per_1k_delivered"), 1),
            num(get(r, "broker", "cpu_pct")),
            num(get(r, "broker", "runqueue_wait_pct")),
            f"{num(rss, 1)} ({num(per_conn, 2)})",
            num(get(r, "loadgen", "cpu_pct")),
            num(get(r, "loadgen", "runqueue_wait_pct")),
            num(get(r, "other_processes_cpu_pct")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    m = doc["machine"]
    notes = [
        f'# {doc["scenario"]}',
        "",
        f'{doc["date"]}, commit {doc["commit"]}, {m["cores"]} cores ({m["cpu"]}), '
        f'Linux {m["kernel"]}. Broker pinned to core 0 (tickfan: 1 worker), '
        "tickfan-load to core 1; loopback only.",
        "",
        "**Noisy figures:** the machine is shared with other work; the last column is "
        "the CPU other processes took during each measured window (100 = one core).",
        "",
        "- *max rate ≥0.999*: highest publish rate (ticks/s over all topics) whose run "
        "delivered ≥ 99.9% of the ticks the subscriptions call for, found by a flat-out run "
        "and a short bounded search; *delivered/s at max* is that run's fan-out rate. "
        "*(flat out)*: the flat-out run itself passed, so the publisher's path (the broker "
        "reading one publisher connection while it fans out) is the limit, and queueing "
        "latency in that run is high.",
        "- *% of ceiling*: delivered ticks/s (at max when searched) over DESIGN.md's "
        f"{CEILING / 1e6:.1f}M ticks/s (64 ticks per writev).",
        "- The other columns are the reported run: at 50% of the max (broadcast), at the rate "
        "shared with the named peer (same-rate), at the fixed rate (ws-vs-longpoll, market) "
        "or idle.",
        "- *wire B/tick*: bytes the clients received (WebSocket frames or HTTP answers) plus "
        "long-poll request bytes, per delivered tick; TCP/IP headers not counted.",
        "- *broker µs CPU/1k*: broker CPU time per 1,000 delivered ticks; *broker CPU-wait %*: "
        "time its threads were runnable but waiting for a core (other processes' share: "
        "high values mean latency figures are mostly queueing behind other work); the same "
        "for the load generator, whose starved reader makes the broker queue and conflate.",
        "",
    ]
    return "\n".join(notes + lines) + "\n\n" + side_by_side(doc) + tls_summary(doc)


def ratio(a, b, digits=2):
    return f"{a / b:.{digits}f}×" if a and b else "n/a"


def side_by_side(doc):
    """The brief's comparisons, tickfan against each peer: delivered ticks/s
    at each one's max, and broker CPU per delivered tick and p99 latency
    when both run at the same rate ("same-rate vs PEER" rows: the peer,
    tickfan as configured by default, and tickfan with a flush interval)."""
    rows = doc["rows"]
    broadcast = {(r["target"], r["clients"]): r for r in rows if r["part"] == "broadcast"}

    def top(target, clients):
        row = broadcast.get((target, clients))
        return headline(row)[0] if row else None

    lines = []
    for row in rows:
        part = row["part"]
        if not part.startswith("same-rate vs ") or row["target"].startswith("tickfan"):
            continue
        peer, clients = row["target"], row["clients"]
        cpu_peer = get(row["report"], "broker", "cpu_us_per_1k_delivered")
        p99_peer = get(row["report"], "sample", "latency_us", "p99")
        for mine in rows:
            if mine["part"] != part or mine["clients"] != clients \
                    or not mine["target"].startswith("tickfan"):
                continue
            top_mine, top_peer = top("tickfan", clients), top(peer, clients)
            cpu_mine = get(mine["report"], "broker", "cpu_us_per_1k_delivered")
            p99_mine = get(mine["report"], "sample", "latency_us", "p99")
            lines.append(
                f"| {peer} | {num(clients)} | {mine['target']} "
                f"| {num(top_mine)} / {num(top_peer)} | {ratio(top_mine, top_peer)} "
                f"| {num(row['rate'])} | {num(cpu_mine, 1)} / {num(cpu_peer, 1)} "
                f"| {ratio(cpu_mine, cpu_peer)} | {num(p99_mine)} / {num(p99_peer)} "
                f"| {ratio(p99_mine, p99_peer, 3)} |"
            )
    if not lines:
        return ""
    head = ("| peer | subscribers | tickfan run | delivered/s at max, tickfan / peer "
            "| tickfan ÷ peer | same rate (ticks/s) | broker µs CPU/1k there, tickfan / peer "
            "| tickfan ÷ peer | p99 µs there, tickfan / peer | tickfan ÷ peer |")
    return "\n".join([
        "## tickfan side by side with each peer",
        "",
        "Throughput from the `broadcast` rows (each broker at its own highest passing rate, "
        "tickfan with its default config); CPU and latency from the `same-rate vs PEER` rows, "
        "where the peer, then tickfan as configured by default, then tickfan with "
        "`--flush-interval-ms` (fewer, fuller writes for up to that much added latency) ran "
        "at half the lower of the two maxima.",
        "",
        head,
        "|" + "---|" * 10,
        *lines,
        "",
    ]) + "\n"


def tls_summary(doc):
    """The wss scenario's comparisons: wss against plain ws (the cost of
    TLS in tickfan) and against uWebSockets' SSLApp, at each one's max and
    at one shared rate; idle RSS per connection; full handshakes per second."""
    if doc["scenario"] != "wss":
        return ""
    rows = doc["rows"]

    def find(part, target, transport):
        for r in rows:
            if r["part"] == part and r["target"] == target and r["transport"] == transport:
                return r
        return None

    def at_max(target, transport):
        r = find("broadcast over TLS", target, transport)
        return headline(r)[0] if r else None

    def cpu(target, transport):
        r = find("same rate over TLS", target, transport)
        return get(r["report"], "broker", "cpu_us_per_1k_delivered") if r else None

    def p99(target, transport):
        r = find("same rate over TLS", target, transport)
        return get(r["report"], "sample", "latency_us", "p99") if r else None

    ws, wss, uws = ("tickfan", "ws"), ("tickfan", "wss"), ("uws", "wss")
    same = find("same rate over TLS", "tickfan", "wss")
    lines = [
        "## TLS (wss) side by side",
        "",
        "| comparison | delivered/s at max | ratio | broker µs CPU/1k at the same rate | ratio "
        "| p99 µs there | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, a, b in [("tickfan wss / tickfan ws", wss, ws), ("tickfan wss / uWebSockets wss", wss, uws)]:
        lines.append(
            f"| {label} | {num(at_max(*a))} / {num(at_max(*b))} | {ratio(at_max(*a), at_max(*b))} "
            f"| {num(cpu(*a), 1)} / {num(cpu(*b), 1)} | {ratio(cpu(*a), cpu(*b))} "
            f"| {num(p99(*a))} / {num(p99(*b))} | {ratio(p99(*a), p99(*b), 3)} |"
        )
    if same:
        lines += ["", f"Same-rate runs at {num(same['rate'])} ticks/s × {num(same['clients'])} subscribers."]
    idle = [r for r in rows if r["part"] == "idle"]
    if idle:
        lines += ["", "| idle connections | transport | broker RSS KiB per connection |", "|---|---|---|"]
        for r in idle:
            lines.append(
                f"| {num(r['clients'])} | {r['transport']} "
                f"| {num(get(r['report'], 'broker', 'rss_kib_per_connection'), 2)} |"
            )
    hs = doc.get("tls_handshakes") or []
    if hs:
        lines += [
            "",
            "| full TLS handshakes (openssl s_time -new, 10 s) | per second | broker CPU s "
            "| handshakes per broker CPU second |",
            "|---|---|---|---|",
        ]
        for h in hs:
            lines.append(
                f"| {h['target']} | {num(h.get('per_s'))} | {num(h.get('broker_cpu_s'), 2)} "
                f"| {num(h.get('per_broker_cpu_s'))} |"
            )
    return "\n".join(lines) + "\n"


def bars_of(doc):
    """(label, value, annotation) per bar, and the chart's title. Fixed-rate
    comparisons (same-rate rows, the flush scenario) deliver what they were
    asked by design, so they chart broker CPU per delivered tick instead."""
    if doc["scenario"] == "flush":
        bars = []
        for row in doc["rows"]:
            r = row["report"]
            cpu = get(r, "broker", "cpu_us_per_1k_delivered") or 0.0
            p99 = get(r, "sample", "latency_us", "p99")
            label = f'{row["part"]} · {row["target"]}'
            note = f"{cpu:,.0f} µs CPU per 1k delivered, p99 {num((p99 or 0) / 1000, 1)} ms"
            bars.append((label, cpu, note))
        return bars, "broker µs CPU per 1,000 delivered ticks at the same rate (shorter is better)"
    bars = []
    for row in doc["rows"]:
        if row["part"].startswith("same-rate"):
            continue
        value, how = headline(row)
        label = f'{row["part"]} · {row["target"]} · {row["transport"]} · {row["clients"]:,} clients'
        value = value or 0.0
        bars.append((label, value, f"{value:,.0f} ({value / CEILING * 100:.2f}% of ceiling, {how})"))
    return bars, "delivered ticks/s (at the max rate with delivery ≥ 0.999 where searched)"


def svg(doc):
    bars, title = bars_of(doc)
    width, left, bar_h, gap, top = 980, 380, 22, 10, 60
    height = top + len(bars) * (bar_h + gap) + 40
    vmax = max([b[1] for b in bars] + [1.0])
    scale = (width - left - 250) / vmax
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="24" font-size="16" font-weight="bold">{escape(doc["scenario"])}: '
        f"{escape(title)}</text>",
        f'<text x="10" y="44" fill="#555">{escape(doc["date"])} · commit {escape(doc["commit"])} · '
        f'{doc["machine"]["cores"]}-core shared VM, noisy · ceiling {CEILING / 1e6:.1f}M ticks/s</text>',
    ]
    for i, (label, value, note) in enumerate(bars):
        y = top + i * (bar_h + gap)
        w = max(value * scale, 1)
        out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#3b7dd8"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    path = Path(sys.argv[1])
    doc = json.loads(path.read_text())
    path.with_suffix(".md").write_text(table(doc))
    path.with_suffix(".svg").write_text(svg(doc))


if __name__ == "__main__":
    main()
