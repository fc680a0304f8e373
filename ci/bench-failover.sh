#!/usr/bin/env bash
# Benchmark: balancer failover gap over ten kills of the active balancer under load.
# Prints every gap and the median; the full report lands in target/bench/failover.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --all-targets --locked
out=target/bench/failover
rm -rf "$out"
target/release/catwar-sim run scenarios/failover.toml --out "$out" | grep -E '^(failover|result)'
python3 - "$out/report.json" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))["failover"]
print(f"failover gaps (ms): {', '.join(f'{g:.0f}' for g in f['gaps_ms'])}")
print(f"median {f['median_ms']:.1f} ms, max {f['max_ms']:.1f} ms over {len(f['gaps_ms'])} kills")
PY
