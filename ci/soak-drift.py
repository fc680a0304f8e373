#!/usr/bin/env python3
"""Latency drift of a soak run, from its report.json (issue 10: "long runs stay flat").

For each step, the median of the per-second p99s over the first five minutes after the
ramp (minutes 1-6 of scenarios/soak.toml) against the last five minutes, and the drift
between them. The medians of every five-minute window are printed too, with their spread (highest
over lowest): how far two windows of one run differ with nothing changed is the floor
below which a drift means nothing.

    python3 ci/soak-drift.py target/soak/report.json [--steps login,lobby.me] [--skip-s 60]
"""

import argparse
import json
import statistics

# The window both ends are measured over, as issue 10 defines the drift.
WINDOW_S = 300


def window_median(points, step, start_s, end_s):
    p99s = [
        p["steps"][step]["p99_us"] / 1000
        for p in points
        if start_s <= p["t_s"] < end_s and (p["steps"].get(step) or {}).get("p99_us") is not None
    ]
    return statistics.median(p99s) if p99s else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--steps", default="login,lobby.me")
    parser.add_argument("--skip-s", type=int, default=60, help="the ramp, left out of the first window")
    args = parser.parse_args()
    points = json.load(open(args.report))["timeseries"]["points"]
    end_s = max(p["t_s"] for p in points) + 1
    for step in args.steps.split(","):
        first = window_median(points, step, args.skip_s, args.skip_s + WINDOW_S)
        last = window_median(points, step, end_s - WINDOW_S, end_s)
        starts = list(range(args.skip_s, end_s - 2 * WINDOW_S + 1, WINDOW_S)) + [end_s - WINDOW_S]
        windows = [window_median(points, step, start, start + WINDOW_S) for start in starts]
        print(
            f"{step}: median per-second p99 {first:.3f} ms first five minutes, {last:.3f} ms "
            f"last five, drift {100 * (last - first) / first:+.1f} %; every window: "
            + " ".join(f"{w:.3f}" for w in windows if w is not None)
            + f" (spread {100 * (max(windows) / min(windows) - 1):.0f} %)"
        )


if __name__ == "__main__":
    main()
