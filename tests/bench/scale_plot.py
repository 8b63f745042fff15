#!/usr/bin/env python3
"""Draws the store scale bench's scan-time curves as one SVG.

    store-<hash> --bench scale --entries 10000000 --dir D | tee scale.txt
    tests/bench/scale_plot.py scale.txt docs/img/store-scans.svg

The bench prints `curve <phase> <x> <4 times in ms> <4 result sizes>` lines:
phase `load` (x = entries stored, fresh store), `churn` (x = entries
deleted so far, before any compaction; a run per store size, dashed but
the last) and `compacted` (after `compact_purged_ranges`). Left panel:
load; right panel: churn, with the compacted point as hollow markers.
Standard library only.
"""
import math
import sys

SCANS = ["list_by_host, limit 1000", "count_by_host (~10k)", "list_by_tag, limit 1000", "count_by_tag (~10k)"]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 460, 320, 60, 20, 40, 50


def read(path):
    """Returns the load points and the churn runs: one per store size the
    bench churned at (a churn starts again at x = 0), each with the size it
    ran at, its points and its compacted point."""
    load, runs = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 11 or parts[0] != "curve":
                continue
            phase, x, times = parts[1], int(parts[2]), [float(v) for v in parts[3:7]]
            if phase == "load":
                load.append((x, times))
            elif phase == "churn":
                if x == 0 or not runs:
                    runs.append({"size": max((p[0] for p in load), default=0), "points": [], "compacted": []})
                runs[-1]["points"].append((x, times))
            elif phase == "compacted" and runs:
                runs[-1]["compacted"].append((x, times))
    return load, runs


def ticks(hi):
    """About five round ticks from 0 to at least hi."""
    if hi <= 0:
        return [0, 1]
    mag = 10 ** math.floor(math.log10(hi))
    step = next(mag * m for m in (0.1, 0.2, 0.5, 1, 2, 5, 10) if hi / (mag * m) <= 6)
    n = math.ceil(hi / step - 1e-9)
    return [i * step for i in range(n + 1)]


def label(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def panel(ox, title, xlabel, runs):
    """runs: (series, hollow points, dash pattern or None, label or None)."""
    out = []
    every = [p for series, hollow, _, _ in runs for p in series + hollow]
    xs = [x for x, _ in every] or [1]
    ys = [t for _, ts in every for t in ts] or [1]
    xt, yt = ticks(max(xs)), ticks(max(ys))
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x):
        return ox + PAD_L + pw * x / xt[-1]

    def py(y):
        return PAD_T + ph * (1 - y / yt[-1])

    out.append(f'<text x="{ox + W / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>')
    for t in xt:
        out.append(f'<line x1="{px(t):.1f}" y1="{PAD_T}" x2="{px(t):.1f}" y2="{PAD_T + ph}" stroke="#eee"/>')
        out.append(f'<text x="{px(t):.1f}" y="{PAD_T + ph + 16}" text-anchor="middle">{label(t)}</text>')
    for t in yt:
        out.append(f'<line x1="{ox + PAD_L}" y1="{py(t):.1f}" x2="{ox + PAD_L + pw}" y2="{py(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{ox + PAD_L - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{ox + PAD_L + pw / 2}" y="{H - 10}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="{ox + 14}" y="{PAD_T + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 {ox + 14} {PAD_T + ph / 2})">median ms (21 runs)</text>')
    for series, hollow, dash, name in runs:
        style = f' stroke-dasharray="{dash}"' if dash else ""
        for k, color in enumerate(COLORS):
            pts = " ".join(f"{px(x):.1f},{py(ts[k]):.1f}" for x, ts in series)
            if pts:
                out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{style}/>')
            for x, ts in series:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(ts[k]):.1f}" r="3" fill="{color}"/>')
            for x, ts in hollow:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(ts[k]):.1f}" r="5" fill="none" stroke="{color}" '
                           f'stroke-width="2"/>')
        if name and series:
            x, ts = series[-1]
            out.append(f'<text x="{px(x) - 4:.1f}" y="{py(max(ts)) - 8:.1f}" text-anchor="end">{name}</text>')
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    load, runs = read(sys.argv[1])
    if not load and not runs:
        sys.exit(f"{sys.argv[1]}: no `curve` lines (run the bench's scale mode)")
    body = panel(0, "Fresh store: scans as it grows", "entries stored", [(load, [], None, None)])
    churns = [(r["points"], r["compacted"], None if k + 1 == len(runs) else "4 3", f"store of {label(r['size'])}")
              for k, r in enumerate(runs)]
    body += panel(W, "Scans as entries are deleted (tombstones)", "entries deleted (hollow: then compacted)",
                  churns)
    legend = []
    for k, (name, color) in enumerate(zip(SCANS, COLORS)):
        x = 20 + k * (2 * W - 40) / 4
        legend.append(f'<rect x="{x}" y="{H + 6}" width="12" height="12" fill="{color}"/>')
        legend.append(f'<text x="{x + 16}" y="{H + 16}">{name}</text>')
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 30}" '
           f'font-family="sans-serif" font-size="11">', f'<rect width="{2 * W}" height="{H + 30}" fill="white"/>']
    svg += body + legend + ["</svg>"]
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {sys.argv[2]}: {len(load)} load points, churns at " + ", ".join(label(r["size"]) for r in runs))


if __name__ == "__main__":
    main()
