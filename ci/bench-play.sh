#!/usr/bin/env bash
# Benchmarks of the play path:
#   1. players per play-server core at 20 Hz, with tick lateness p99 and missed ticks:
#      play-0 pinned to core 0, the load client (benches/src/bin/play-load.rs) to core 1,
#      each player sending 10 inputs/s and receiving every state;
#   2. observer start latency through play-0, process backend then Docker backend.
# Traffic goes to 127.0.0.1 only. PLAYERS (default "1000 2500 5000") and DURATION_S (10).
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYERS=${PLAYERS:-"1000 2500 5000"}
SECONDS_RUN=${DURATION_S:-10}
cargo build --release --workspace --all-targets --locked
work=$(mktemp -d)
up_pid=
cleanup() { [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

up() { # up DIR ARGS...: start a topology with one long-running play server
  local dir=$1; shift
  target/release/catwar-server users seed --data "$dir" --count 10 --argon2 fast >/dev/null
  target/release/catwar-server up --data "$dir" --base-port 0 --play-servers 1 --match-ticks 1000000 \
    --players-per-match 4 --file-nodes 1 "$@" >"$dir/up.log" 2>&1 &
  up_pid=$!
  for _ in $(seq 100); do [ -f "$dir/topology.json" ] && return; sleep 0.1; done
  echo "topology did not come up: $dir/up.log" >&2; exit 1
}
down() { kill "$up_pid"; wait "$up_pid" 2>/dev/null || true; up_pid=; }
play_pid() { python3 -c 'import json,sys; print(next(s["pid"] for s in json.load(open(sys.argv[1]))["services"] if s["name"]=="play-0"))' "$1/topology.json"; }

echo "== 1. players per play-server core at 20 Hz"
for n in $PLAYERS; do
  d=$work/cap-$n; mkdir -p "$d"; up "$d"
  taskset -a -cp 0 "$(play_pid "$d")" >/dev/null
  taskset -c 1 target/release/play-load capacity "$d" "$n" "$SECONDS_RUN" | grep players
  down
done

echo "== 2. observer start latency"
d=$work/obs-process; mkdir -p "$d"; up "$d"
echo -n "process: "; target/release/play-load observers "$d" 50 | grep observer
down
if docker image inspect catwar-server:local >/dev/null 2>&1 || bash ci/build-image.sh; then
  d=$work/obs-docker; mkdir -p "$d"; up "$d" --observer-backend docker
  echo -n "docker:  "; target/release/play-load observers "$d" 30 | grep observer
  down
fi
