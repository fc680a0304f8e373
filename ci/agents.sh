#!/usr/bin/env bash
# A scenario run by a coordinator and two agents over TCP on loopback (README "Scale:
# agents on other hosts"): as two local processes, or as two containers of the project's
# image (`--containers`, host networking: the services hand out the addresses the host
# reaches them at). Every process and container it started is gone at the end, also when
# a step fails.
#
# Usage: bash ci/agents.sh [--containers] [SCENARIO] [-- RUN-ARGS...]
#   RUN-ARGS go to `catwar-sim run` (e.g. `--target DIR/topology.json`); without a
#   target the coordinator starts the embedded topology.
set -euo pipefail
cd "$(dirname "$0")/.."

containers=false
if [ "${1:-}" = "--containers" ]; then
  containers=true
  shift
fi
scenario=${1:-scenarios/smoke.toml}
shift || true
[ "${1:-}" = "--" ] && shift
name=$(basename "$scenario" .toml)
out=target/ci/agents-$name$($containers && echo -containers || true)
# A fixed loopback port: the agents must know it before the coordinator prints it.
listen=127.0.0.1:${CATWAR_AGENTS_PORT:-7790}
CATWAR_AGENT_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CATWAR_AGENT_SECRET
project=catwar-agents-$$
pids=()

cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if $containers; then
    docker-compose -p "$project" -f deploy/compose/agents.yml down -t 2 >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT

[ -x target/release/catwar-sim ] || cargo build --release --locked -p catwar-server -p catwar-sim
if $containers; then
  docker image inspect catwar-server:local >/dev/null 2>&1 || bash ci/build-image.sh
fi

rm -rf "$out"
target/release/catwar-sim run "$scenario" --agents 2 --listen "$listen" --out "$out" "$@" &
coordinator=$!
pids+=("$coordinator")
if $containers; then
  CATWAR_COORDINATOR=$listen docker-compose -p "$project" -f deploy/compose/agents.yml \
    up -d --scale agent=2 >/dev/null
else
  for _ in 1 2; do
    target/release/catwar-sim agent --connect "$listen" &
    pids+=("$!")
  done
fi
set +e
wait "$coordinator"
status=$?
set -e
if $containers; then
  docker-compose -p "$project" -f deploy/compose/agents.yml logs --no-color >&2 || true
fi
exit "$status"
