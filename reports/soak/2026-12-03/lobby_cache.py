#!/usr/bin/env python3
"""Does the size of the lobby's session cache change what a fresh session's first
`GET /v1/me` costs (the miss every soak session makes)? Two topologies started with
`catwar-server up` (2,000 users, `--argon2 fast`); B's lobby first caches N extra
sessions; then rounds of 1,000 fresh sessions each, alternating A and B.

    catwar-server users seed --data A --count 2000 --argon2 fast   # and B
    catwar-server up --data A --base-port 0 --argon2 fast &          # and B
    python3 reports/soak/2026-12-03/lobby_cache.py A B 100000
"""
import hashlib
import http.client
import json
import secrets
import sqlite3
import statistics
import sys
import time

ROUNDS = 6
PER_ROUND = 1000


def lobby(data):
    services = json.load(open(f"{data}/topology.json"))["services"]
    host, port = next(s["addr"] for s in services if s["name"] == "lobby").split(":")
    return http.client.HTTPConnection(host, int(port))


def new_sessions(data, count):
    """Live sessions from 127.0.0.1 written straight into the DB; returns their tokens."""
    db = sqlite3.connect(f"{data}/catwar.db", timeout=30)
    now = int(time.time() * 1000)
    tokens = [secrets.token_hex(32) for _ in range(count)]
    db.executemany(
        "INSERT INTO sessions VALUES (?, ?, '127.0.0.1', 'x', ?, ?, 0)",
        [(hashlib.sha256(t.encode()).hexdigest(), f"user{i % 2000 + 1}", now, now) for i, t in enumerate(tokens)],
    )
    db.commit()
    return tokens


def me(conn, token):
    conn.request("GET", "/v1/me", headers={"Authorization": f"Bearer {token}"})
    answer = conn.getresponse()
    answer.read()
    assert answer.status == 200, answer.status


def round_ms(data):
    conn, times = lobby(data), []
    for token in new_sessions(data, PER_ROUND):
        started = time.perf_counter()
        me(conn, token)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.002)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


a, b, extra = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = lobby(b)
for token in new_sessions(b, extra):
    me(conn, token)
rounds = {a: [], b: []}
for i in range(ROUNDS):
    for data in (a, b) if i % 2 == 0 else (b, a):
        rounds[data].append(round_ms(data))
for name, data in ((f"A (empty)", a), (f"B ({extra} cached)", b)):
    p50s, p99s = [r[0] for r in rounds[data]], [r[1] for r in rounds[data]]
    print(f"{name}: p50 median {statistics.median(p50s):.3f} ms, p99 median {statistics.median(p99s):.3f} ms "
          f"(rounds {min(p99s):.1f}-{max(p99s):.1f})")
