#!/usr/bin/env python3
"""Does the size of the sessions table change what a login, a lobby load and a logout cost
in SQLite? For 500, 36,000 (the table of reports/soak/report.json after 30 minutes
without pruning) and 100,000 rows: one insert, one read by token hash and one revoke,
3,000 times each, on the schema and pragmas of reference-server/src/domain/db.rs.

    python3 reports/soak/2026-12-03/sessions_table.py
"""
import os
import secrets
import sqlite3
import tempfile
import time

SCHEMA = """CREATE TABLE sessions (token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL,
 ip TEXT NOT NULL, lobby TEXT NOT NULL, created_ms INTEGER NOT NULL,
 last_used_ms INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)"""
ROW = "INSERT OR IGNORE INTO sessions VALUES (?, 'user1', '127.10.0.1', '127.0.0.1:7300', ?, ?, 0)"


def run(rows, ops=3000):
    path = os.path.join(tempfile.mkdtemp(), "catwar.db")
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute(SCHEMA)
    now = int(time.time() * 1000)
    setup.execute("BEGIN")
    setup.executemany(ROW, [(secrets.token_hex(32), now, now) for _ in range(rows)])
    setup.execute("COMMIT")
    setup.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    setup.close()
    # Fresh connections with cold page caches, as each service has its own.
    writer, reader = (sqlite3.connect(path, isolation_level=None) for _ in range(2))
    for conn in (writer, reader):
        conn.execute("PRAGMA synchronous=NORMAL")
    timed = {"insert": [], "read": [], "revoke": []}
    for _ in range(ops):
        token_hash = secrets.token_hex(32)
        for name, conn, sql, args in (
            ("insert", writer, ROW, (token_hash, now, now)),
            ("read", reader, "SELECT * FROM sessions WHERE token_hash = ?", (token_hash,)),
            ("revoke", writer, "UPDATE sessions SET revoked = 1 WHERE token_hash = ?", (token_hash,)),
        ):
            started = time.perf_counter()
            conn.execute(sql, args).fetchall()
            timed[name].append((time.perf_counter() - started) * 1e6)
    figures = []
    for name, us in timed.items():
        us.sort()
        figures.append(f"{name} p50 {us[len(us) // 2]:6.1f} p99 {us[int(len(us) * 0.99)]:7.1f} µs")
    print(f"{rows:7d} rows: " + " | ".join(figures))


for rows in (500, 36_000, 100_000):
    run(rows)
