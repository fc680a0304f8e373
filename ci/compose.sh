#!/usr/bin/env bash
# The containerized topology (SPEC §6): every service in its own container of the
# project's image on the project network `catwar-net`, ports published on 127.0.0.1
# only, and `scenarios/compose-failover.toml` run against it with real network faults.
# Everything the project started (containers, observer containers, the network) is
# removed at the end, also when a step fails, so a second run starts clean.
#
# Usage: bash ci/compose.sh [SCENARIO]   (the release binaries must be built, or are)
# Without a SCENARIO it runs compose-failover, then compose-agents with two agent
# containers (`ci/agents.sh --containers`).
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${1:-scenarios/compose-failover.toml}
out=target/ci/compose
data=$(mktemp -d /tmp/catwar-compose.XXXXXX)
export CATWAR_DATA=$data
compose() { docker-compose -p catwar -f "$data/docker-compose.yml" "$@"; }

cleanup() {
  status=$?
  if [ -f "$data/docker-compose.yml" ]; then
    [ "$status" -eq 0 ] || compose logs --tail 20 >&2 || true
    compose down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
  fi
  # Observer containers are started by the play servers, not by compose.
  ids=$(docker ps -aq --filter "label=catwar.data=$data")
  [ -z "$ids" ] || docker rm -f $ids >/dev/null
  docker network rm catwar-net >/dev/null 2>&1 || true
  rm -rf "$data"
  exit "$status"
}
trap cleanup EXIT

[ -x target/release/catwar-server ] && [ -x target/release/catwar-sim ] ||
  cargo build --release --locked -p catwar-server -p catwar-sim
docker image inspect catwar-server:local >/dev/null 2>&1 || bash ci/build-image.sh

# The server's knobs come from the scenario's [server] table, so the run's assumptions
# (token idle time, match length) hold for the containers too.
knobs=$(python3 - "$scenario" <<'EOF'
import sys, tomllib
server = tomllib.load(open(sys.argv[1], "rb")).get("server", {})
flags = {"argon2": "--argon2", "token_idle_s": "--token-idle-s",
         "players_per_match": "--players-per-match",
         "match_fill_timeout_s": "--match-fill-timeout-s", "match_ticks": "--match-ticks",
         "tick_hz": "--tick-hz"}
print(" ".join(f"{flags[k]} {v}" for k, v in server.items() if k in flags))
EOF
)
users=$(python3 -c "import sys,tomllib; print(tomllib.load(open(sys.argv[1],'rb'))['population'].get('users', 1000))" "$scenario")
# shellcheck disable=SC2086
target/release/catwar-server containers --data "$data" $knobs >/dev/null
target/release/catwar-server users seed --data "$data" --count "$users" --argon2 fast >/dev/null
compose up -d --no-build >/dev/null
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:7100/healthz" >/dev/null && curl -sf "http://127.0.0.1:7300/healthz" >/dev/null && break
  sleep 0.2
done

rm -rf "$out"
target/release/catwar-sim run "$scenario" --target "$data/topology.json" --out "$out"

# The default run goes on with the same containers: two simulator agents, themselves
# containers of the project's image, share a short scenario's clients (SPEC §4).
if [ "$#" -eq 0 ]; then
  bash ci/agents.sh --containers scenarios/compose-agents.toml -- --target "$data/topology.json"
fi
