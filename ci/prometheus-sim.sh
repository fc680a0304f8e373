#!/usr/bin/env bash
# The simulator's live endpoint scraped by a real Prometheus (Debian's package): a short
# embedded run with `--metrics-listen`, a Prometheus scraping it every second with a
# generated config, and a query through Prometheus's HTTP API for a series with a
# `step` label. Needs target/release/catwar-sim and catwar-server (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

# Installed where missing, as CI machines start without it.
if ! command -v prometheus >/dev/null; then
    apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
fi

work=$(mktemp -d)
sim_pid=""
prom_pid=""
cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null || true
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
sim_port=$(free_port)
prom_port=$(free_port)

# Long enough for a few scrapes after Prometheus is up; small enough for CI.
cat >"$work/scenario.toml" <<'EOF'
[scenario]
name = "prometheus-sim"
seed = 5
duration_s = 20

[population]
clients = 20

[load]
think_time_ms = 200

[script]
start = 0.0
observe = 0.0
EOF

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: catwar-sim
    static_configs:
      - targets: ["127.0.0.1:$sim_port"]
EOF
promtool check config "$work/prometheus.yml" >/dev/null

target/release/catwar-sim run "$work/scenario.toml" --out "$work/out" \
    --metrics-listen "127.0.0.1:$sim_port" >"$work/sim.log" 2>&1 &
sim_pid=$!
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!

# The exposition itself passes Prometheus's own linter once the run serves it.
for _ in $(seq 1 30); do
    curl -sf "http://127.0.0.1:$sim_port/metrics" >"$work/metrics.txt" && break
    sleep 1
done
promtool check metrics <"$work/metrics.txt" || {
    echo "prometheus-sim: promtool check metrics failed"; exit 1; }

query() {
    curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1"
}
found=""
# Bounded: the run lasts 20 s; Prometheus needs a few to start and scrape.
for _ in $(seq 1 40); do
    answer=$(query 'catwar_sim_requests_total{step="lobby.me"}' || true)
    if echo "$answer" | python3 -c '
import json, sys
data = json.load(sys.stdin)["data"]["result"]
sys.exit(0 if data and float(data[0]["value"][1]) > 0 else 1)' 2>/dev/null; then
        found="$answer"
        break
    fi
    sleep 1
done
if [ -z "$found" ]; then
    echo "prometheus-sim: no catwar_sim_requests_total{step=\"lobby.me\"} in Prometheus"
    tail -20 "$work/prometheus.log" "$work/sim.log"
    exit 1
fi
latency=$(query 'histogram_quantile(0.99, rate(catwar_sim_request_duration_seconds_bucket{step="lobby.me"}[5s]))')
echo "prometheus-sim: Prometheus scraped the run: $found"
echo "prometheus-sim: lobby.me p99 over 5 s: $latency"
wait "$sim_pid"
sim_pid=""
echo "prometheus-sim: ok"
