#!/usr/bin/env bash
# Debian's real Prometheus scrapes a running topology (SPEC §7, issue 13): `up` starts
# every service on free ports, `catwar-server prometheus-config` turns topology.json into
# a scrape configuration that `promtool check config` accepts, `promtool check metrics`
# accepts every service's exposition, and after a little load Prometheus's own HTTP API
# shows every target up with its process series. Installs prometheus when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prometheus scrapes every second, so a target is seen up within a few seconds of the
# start; this bounds the whole wait for every target and series.
wait_s_max=60
# Requests of the little load: enough for every route to have a count, bounded.
load_rounds=20

fail() {
  echo "ci/prometheus.sh: $*" >&2
  exit 1
}

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
fi
command -v curl >/dev/null || fail "curl is missing"

# The same build as ci/test.sh's, a no-op after it: building one package alone unifies
# other features and would rebuild half the tree.
cargo build --release --workspace --all-targets --locked
bin=target/release/catwar-server
work=$(mktemp -d)
up_pid=""
prometheus_pid=""
cleanup() {
  for pid in $prometheus_pid $up_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $prometheus_pid $up_pid; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

data=$work/data
"$bin" up --data "$data" --base-port 0 --argon2 fast --file-nodes 2 --play-servers 1 \
  >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 $((wait_s_max * 10))); do
  [ -f "$data/topology.json" ] && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log" >&2; fail "up exited"; }
  sleep 0.1
done
[ -f "$data/topology.json" ] || { cat "$work/up.log" >&2; fail "no topology.json after ${wait_s_max} s"; }
"$bin" users seed --data "$data" --count 2 --argon2 fast >/dev/null

# "name metrics-address service-address" per service.
python3 -c '
import json, sys
for s in json.load(open(sys.argv[1]))["services"]:
    print(s["name"], s["metrics"], s["addr"])
' "$data/topology.json" >"$work/services"
[ -s "$work/services" ] || fail "topology.json names no service"
addr_of() { awk -v n="$1" '$1 == n { print $3 }' "$work/services"; }

"$bin" prometheus-config --topology "$data/topology.json" --scrape-interval-s 1 >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml"
while read -r name metrics _; do
  curl -fsS "http://$metrics/metrics" >"$work/$name.metrics" || fail "$name: GET http://$metrics/metrics failed"
  promtool check metrics <"$work/$name.metrics" || fail "$name: promtool check metrics rejected its exposition ($work/$name.metrics)"
done <"$work/services"
echo "promtool: the scrape configuration and $(wc -l <"$work/services") expositions pass"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!

# A little load on storage, profile and the lobby.
storage=$(addr_of storage)
profile=$(addr_of profile)
lobby=$(addr_of lobby)
token=$(curl -fsS --cacert "$data/tls/cert.pem" --resolve "localhost:${profile##*:}:127.0.0.1" \
  -d '{"id":"user1","password":"pw-user1"}' "https://localhost:${profile##*:}/v1/login" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
for _ in $(seq 1 "$load_rounds"); do
  curl -fsS -o /dev/null "http://$storage/v1/update?version=0.0.0"
  curl -fsS -o /dev/null -H "Authorization: Bearer $token" "http://$lobby/v1/me"
  curl -sS -o /dev/null "http://$lobby/no/such/route"
done

# Every service must be a target that is up, with its process series and its own.
expected=$(awk '{ print $1 }' "$work/services" | sort | tr '\n' ' ')
query() {
  curl -fsS --get --data-urlencode "query=$1" "http://127.0.0.1:$port/api/v1/query" 2>/dev/null |
    python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    if sys.argv[1] == "any" or r["value"][1] == sys.argv[1]:
        print(r["metric"].get("service", "?"))
' "$2" | sort -u | tr '\n' ' '
}
missing_from() {
  comm -23 <(tr ' ' '\n' <<<"$expected" | sed '/^$/d') <(tr ' ' '\n' <<<"$1" | sed '/^$/d') | tr '\n' ' '
}
deadline=$((SECONDS + wait_s_max))
while :; do
  kill -0 "$prometheus_pid" 2>/dev/null || { cat "$work/prometheus.log" >&2; fail "prometheus exited"; }
  up=$(query 'up{job="catwar"}' 1 || true)
  rss=$(query 'process_resident_memory_bytes{job="catwar"}' any || true)
  if [ -z "$(missing_from "$up")" ] && [ -z "$(missing_from "$rss")" ]; then
    break
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    tail -20 "$work/prometheus.log" >&2
    fail "after ${wait_s_max} s, not up in Prometheus: [$(missing_from "$up")]; no process_resident_memory_bytes: [$(missing_from "$rss")]"
  fi
  sleep 1
done
# What the load left: requests by route at storage, the lobby's sessions, a ticking play.
for q in 'catwar_http_requests_total{service="storage",route="/v1/update",status="200"}' \
  'catwar_http_requests_total{service="lobby",route="unknown",status="404"}' \
  'catwar_lobby_sessions{service="lobby"}' \
  'catwar_job_queue_depth{service="profile",pool="login"}' \
  'catwar_balancer_epoch' \
  'catwar_play_tick_lateness_seconds_count'; do
  [ -n "$(query "$q" any)" ] || fail "Prometheus has no series for $q"
done
echo "prometheus: every service up and scraped: $expected"
