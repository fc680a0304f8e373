"""The summary.md of a ci/perf.sh run: one row per figure of issue 14, the median over
rounds of ours, of its reference and of their ratio, the range of the ratio, and the goal.

    python3 ci/perf-summary.py REPORT_DIR TICK_LATE_P99_MS_MAX > REPORT_DIR/summary.md

Reads REPORT_DIR/raw/results.jsonl (one measurement a line, written by ci/perf.sh) and
REPORT_DIR/machine.txt. A figure without a measurement is listed with the reason.
"""

import json
import statistics
import sys
from pathlib import Path

# The play server's tick rate, as in ci/bench-play.sh's topology (`--tick-hz` default).
TICK_HZ = 20
# Goals of issue 14.
LOBBY_VS_NGINX_MIN = 1.1
GENERATOR_MIN = 1.0
LOGINS_OWASP_MIN = 0.9
LOGINS_FAST_MIN = 4.0
PLAY_EFFICIENCY_MIN = 0.8
PLAYERS_GOAL = 5000
FAILOVER_P99_MS_MAX = 400
IDLE_KIB_MAX = 4.0


def median_range(values):
    return statistics.median(values), min(values), max(values)


def fmt(x, digits=2):
    return f"{x:,.{digits}f}"


def ratio_cell(ratio, ratios):
    _, lo, hi = median_range(ratios)
    return f"**{fmt(ratio)}**" + (f" ({fmt(lo)}–{fmt(hi)})" if len(ratios) > 1 else "")


def verdict(ok):
    return "yes" if ok else "**no**"


def p99(values):
    """Nearest-rank 99th percentile: with 20 samples, the largest."""
    ordered = sorted(values)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


def main():
    report, late_max_ms = Path(sys.argv[1]), float(sys.argv[2])
    rows = [json.loads(line) for line in open(report / "raw/results.jsonl")] if (report / "raw/results.jsonl").exists() else []
    by = {}
    for row in rows:
        by.setdefault(row["figure"], []).append(row)
    failures = (report / "raw/failures.txt").read_text().split("\n") if (report / "raw/failures.txt").exists() else []
    failed = "; ".join(f for f in failures if f)
    missing = f"not measured: {failed} (raw/)" if failed else "not measured in this run"
    table = []

    def paired(figure, label, reference, unit, goal_text, goal_ok):
        got = by.get(figure)
        if not got:
            table.append((label, reference, missing, "", "", goal_text, ""))
            return
        # Ours and the reference of the round with the median ratio (the lower middle
        # one of an even count), so the three cells of a row belong together.
        ranked = sorted(got, key=lambda r: r["ours"] / r["reference"])
        middle = ranked[(len(ranked) - 1) // 2]
        ratios = [r["ours"] / r["reference"] for r in got]
        ratio = middle["ours"] / middle["reference"]
        table.append((label, reference, f"{fmt(middle['ours'], 0)} {unit}", f"{fmt(middle['reference'], 0)} {unit}",
                      ratio_cell(ratio, ratios), goal_text, verdict(goal_ok(ratio))))

    paired("lobby_vs_nginx", "lobby `GET /v1/me` req/s", "nginx (1 worker), same-size static JSON, same wrk",
           "req/s", f"≥ {LOBBY_VS_NGINX_MIN}", lambda r: r >= LOBBY_VS_NGINX_MIN)
    paired("generator_per_cpu_s", "simulator req/s per generator CPU-second", "wrk, same endpoint and connections",
           "req/CPU-s", f"≥ {GENERATOR_MIN}", lambda r: r >= GENERATOR_MIN)
    paired("logins_owasp", "logins/s, owasp", "as many threads as login workers, argon2 verifications only",
           "/s", f"≥ {LOGINS_OWASP_MIN}", lambda r: r >= LOGINS_OWASP_MIN)
    paired("logins_fast", "logins/s, fast, new TLS connection each", "`openssl s_time -new` against `openssl s_server` (P-256)",
           "/s", f"≥ {LOGINS_FAST_MIN}", lambda r: r >= LOGINS_FAST_MIN)

    play = by.get("play")
    if play:
        cpu_players = play[0]["cpu_players"]
        ours_us, effs = [], []
        for r in play:
            step = next(s for s in r["steps"] if s["players"] == cpu_players)
            # Per tick the server ran, for the players that connected: a loaded server
            # misses ticks and turns players away, and does less work for it. The
            # measured window is (ticks run + ticks missed) / TICK_HZ seconds.
            ticks = step.get("ticks")
            ran = ticks / (ticks + step["missed"]) if ticks else 1.0
            us = step["cores"] * 1e6 / (step["connected"] * TICK_HZ * ran)
            ours_us.append(us)
            effs.append(r["reference_us"] / us)
        table.append((f"play-server CPU per player-tick at {TICK_HZ} Hz, {cpu_players:,} players asked for",
                      "a mio program writing the same `state` line to as many sockets at 20 Hz (efficiency: its CPU ÷ ours)",
                      f"{fmt(statistics.median(ours_us), 3)} µs", f"{fmt(statistics.median(r['reference_us'] for r in play), 3)} µs",
                      ratio_cell(statistics.median(effs), effs), f"≥ {PLAY_EFFICIENCY_MIN}", verdict(statistics.median(effs) >= PLAY_EFFICIENCY_MIN)))
        held = []
        for r in play:
            ok = [s["players"] for s in r["steps"]
                  if s["p99_ms"] <= late_max_ms and s["missed"] == 0 and s["connected"] == s["players"]]
            held.append(max(ok, default=0))
        steps = [s["players"] for s in play[0]["steps"]]
        held_cell = f"{statistics.median(held):,.0f}" if statistics.median(held) else f"< {min(steps):,}"
        table.append((f"players one play server holds at {TICK_HZ} Hz, tick lateness p99 ≤ {late_max_ms:g} ms",
                      f"— (steps tried: {', '.join(map(str, steps))})", held_cell, "", "", f"{PLAYERS_GOAL:,}",
                      verdict(statistics.median(held) >= PLAYERS_GOAL)))
    else:
        table.append(("play-server CPU per player-tick", "", missing, "", "", f"≥ {PLAY_EFFICIENCY_MIN}", ""))
        table.append(("players one play server holds", "", missing, "", "", f"{PLAYERS_GOAL:,}", ""))

    fo = by.get("failover")
    if fo and fo[0]["gaps_ms"]:
        gaps, deadline = fo[0]["gaps_ms"], fo[0]["deadline_ms"]
        table.append((f"failover fresh-pick gap p99, {len(gaps)} kills (median {fmt(statistics.median(gaps), 0)} ms)",
                      "the heartbeat deadline", f"{fmt(p99(gaps), 0)} ms", f"{deadline} ms", f"**{fmt(p99(gaps) / deadline)}**",
                      f"p99 ≤ {FAILOVER_P99_MS_MAX} ms", verdict(p99(gaps) <= FAILOVER_P99_MS_MAX)))
    else:
        table.append(("failover fresh-pick gap p99", "the heartbeat deadline", missing, "", "", f"p99 ≤ {FAILOVER_P99_MS_MAX} ms", ""))

    idle = by.get("idle_connection")
    if idle:
        per = {r["service"]: (r["rss_after_kib"] - r["rss_before_kib"]) / r["connections"] for r in idle}
        worst = max(per, key=per.get)
        table.append((f"memory per idle connection, worst server process ({worst})", f"— ({idle[0]['connections']:,} connections each)",
                      f"{fmt(per[worst])} KiB", "", "", f"≤ {IDLE_KIB_MAX:g} KiB", verdict(per[worst] <= IDLE_KIB_MAX)))
    else:
        table.append(("memory per idle connection", "", missing, "", "", f"≤ {IDLE_KIB_MAX:g} KiB", ""))
    client = by.get("idle_client")
    if client and client[0]["kib"] is not None:
        kib = client[0]["kib"]
        table.append((f"memory per idle virtual client ({client[0]['peak_active']:,} active)", "—", f"{fmt(kib)} KiB", "", "",
                      f"≤ {IDLE_KIB_MAX:g} KiB", verdict(kib <= IDLE_KIB_MAX)))
    else:
        table.append(("memory per idle virtual client", "", missing, "", "", f"≤ {IDLE_KIB_MAX:g} KiB", ""))

    print("# Performance: each figure against a reference measured in the same run\n")
    print("Each row: the round with the median ratio (play: medians over rounds), the ratio's range over rounds in"
          " brackets. `bash ci/perf.sh`; raw outputs in `raw/`.\n")
    print("| figure | reference (same run) | ours | reference | ratio | goal | met |")
    print("|---|---|---|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    if idle:
        print("\n## Memory per idle connection, each server process\n")
        print("| service | RSS before (KiB) | with the connections (KiB) | KiB per connection |")
        print("|---|---|---|---|")
        for r in idle:
            print(f"| {r['service']} | {r['rss_before_kib']:,} | {r['rss_after_kib']:,} | {fmt(per[r['service']])} |")
    print("\n## Machine\n")
    print("```")
    print((report / "machine.txt").read_text().rstrip())
    print("```")


if __name__ == "__main__":
    main()
