#!/usr/bin/env bash
# Every performance figure of issue 14 as a ratio to a reference measured in the same
# run, on this machine: server and load pinned to different cores, each pair run ROUNDS
# times, the medians and ratios in reports/perf/<date>-<commit>/summary.md with every
# raw output beside it and the machine's facts. Not part of ci/test.sh: it takes about
# 25 minutes and its figures mean something only on a quiet machine.
#
#   bash ci/perf.sh                  ROUNDS=3 (default), 10 s per load run
#   ROUNDS=1 QUICK=1 bash ci/perf.sh a short pass over everything, for developing
#
# Where a ci/bench-*.sh script already measures a figure, it runs as is and its output
# is parsed: bench-login-lobby.sh (lobby vs nginx, logins/s), bench-generator.sh
# (simulator vs wrk per CPU-second), bench-play.sh (players at 20 Hz, the play server's
# CPU). The references those scripts do not measure are measured here: argon2 on as many
# threads as profile has login workers (benches/src/bin/argon2_threads.rs), openssl
# s_time against openssl s_server with the same kind of key as profile's, the floor of
# one state write per player per tick (benches/src/bin/state_writer.rs). Traffic goes to
# 127.0.0.1 only; every load is bounded in time and count.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
QUICK=${QUICK:-0}
SERVER_CORE=0
LOAD_CORE=1
if [ "$QUICK" = 1 ]; then
  # The shortest runs bench-generator.sh accepts, one play step, few kills and clients.
  DURATION_S=4 PLAYER_STEPS="1000" PLAY_CPU_PLAYERS=1000 FAILOVER_KILLS=3 IDLE_CONNS=500 IDLE_CLIENTS=500
else
  # The play steps bracket the goal (5,000) and today's figure (2,500); the CPU per
  # player-tick is compared at 2,500, which the server holds on time.
  DURATION_S=10 PLAYER_STEPS="2500 3500 5000" PLAY_CPU_PLAYERS=2500 FAILOVER_KILLS=20 IDLE_CONNS=2000 IDLE_CLIENTS=5000
fi
DURATION_S=${DURATION_S_OVERRIDE:-$DURATION_S}
# The failover scenario's spacing between kills, seconds: as in scenarios/failover.toml,
# long enough for the killed balancer to restart and catch up as standby.
KILL_EVERY_S=7
# Tick lateness the play server may show at the players it holds, ms (the issue's bar).
TICK_LATE_P99_MS_MAX=2
# profile's login workers in ci/bench-login-lobby.sh, read from it so the reference
# runs the same number of argon2 threads.
LOGIN_WORKERS=$(grep -oP '^WORKERS=\K\d+' ci/bench-login-lobby.sh)
HEARTBEAT_DEADLINE_MS=$(grep -oP 'pub const HEARTBEAT_DEADLINE_MS_DEFAULT: u64 = \K\d+' reference-server/src/config.rs)

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }; }
need wrk wrk; need nginx nginx-light; need openssl openssl; need taskset util-linux; need curl curl

started_s=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# One build for every script below, the one ci/test.sh makes: theirs find it done, and
# a narrower build would unify features differently and compile the tree again.
cargo build --release --workspace --all-targets --locked
bin=target/release

# The commit as the run starts: others may commit while it runs.
commit=$(git rev-parse HEAD)
dirty=$(git diff --quiet HEAD -- reference-server sim benches || echo ' (with uncommitted changes)')
out=reports/perf/$(date -u +%F)-${commit:0:7}
rm -rf "$out"; mkdir -p "$out/raw"
results=$out/raw/results.jsonl
work=$(mktemp -d)
# Job control: each step below runs in a process group of its own, so stopping the group
# stops whatever the step started, servers and bench scripts included, however it ended.
set -m
steps=()
cleanup() { for g in "${steps[@]}"; do kill -- "-$g" 2>/dev/null || true; wait "$g" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# record FIGURE ROUND JSON: one measurement into results.jsonl.
record() { echo "{\"figure\":\"$1\",\"round\":$2,$3}" >>"$results"; }
# field FILE REGEX: the first match of REGEX (\K and lookarounds pick the value) in
# FILE, or fails. Assign it (`x=$(field ...)`) so that a miss stops the step.
field() { grep -m1 -oP "$2" "$1" || { echo "no '$2' in $1" >&2; return 1; }; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# sim_run SCENARIO REPORT-DIR LOG: one simulator run; its exit code is a verdict on its
# thresholds, not on the measurement, so only a missing report fails the step.
sim_run() {
  "$bin/catwar-sim" run "$1" --out "$2" >"$3" 2>&1 || true
  [ -f "$2/report.json" ] || { echo "the run of $1 left no report: $3" >&2; return 1; }
}

# --- references and figures, one function each; every one writes its raw output ---

# Lobby vs nginx and both login rates, through ci/bench-login-lobby.sh; then the two
# login references, right after it in the same round.
login_lobby() {
  local r=$1 raw=$out/raw/login-lobby-$1.txt
  DURATION_S=$DURATION_S bash ci/bench-login-lobby.sh >"$raw" 2>&1 || { echo "bench-login-lobby.sh failed: $raw" >&2; return 1; }
  local lobby nginx owasp fast argon2 handshakes
  lobby=$(field "$raw" 'lobby \K[\d.]+(?= req/s, nginx)')
  nginx=$(field "$raw" 'nginx \K[\d.]+(?= req/s, ratio)')
  owasp=$(field "$raw" '^logins/s \K[\d.]+(?=, expected)')
  fast=$(field "$raw" '^logins/s \K[\d.]+(?=, s_time)')
  record lobby_vs_nginx "$r" "\"ours\":$lobby,\"reference\":$nginx"
  # The reference for owasp: as many threads as profile's workers doing only argon2.
  "$bin/argon2_threads" owasp "$LOGIN_WORKERS" "$DURATION_S" >"$out/raw/argon2-threads-$r.txt"
  argon2=$(field "$out/raw/argon2-threads-$r.txt" ': \K[\d.]+(?= verifications/s)')
  record logins_owasp "$r" "\"ours\":$owasp,\"reference\":$argon2"
  handshakes=$(s_time_reference "$r")
  record logins_fast "$r" "\"ours\":$fast,\"reference\":$handshakes"
}

# openssl s_time -new against openssl s_server with a P-256 key, as profile's
# certificate (domain/tls.rs): TLS handshakes/s with nothing behind them.
s_time_reference() {
  local r=$1 dir=$work/s_server port
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  openssl s_server -quiet -accept "127.0.0.1:$port" -cert "$dir/cert.pem" -key "$dir/key.pem" -www >/dev/null &
  local server=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  openssl s_time -new -connect "127.0.0.1:$port" -time "$DURATION_S" >"$out/raw/s_time-$r.txt" 2>&1
  stop "$server"
  python3 -c 'import re,sys; n,s=re.search(r"(\d+) connections in ([\d.]+) real", open(sys.argv[1]).read()).groups(); print(f"{int(n)/float(s):.1f}")' "$out/raw/s_time-$r.txt"
}

# catwar-sim vs wrk per generator CPU-second, through ci/bench-generator.sh.
generator() {
  local r=$1 raw=$out/raw/generator-$1.txt
  DURATION_S=$DURATION_S bash ci/bench-generator.sh >"$raw" 2>&1 || { echo "bench-generator.sh failed: $raw" >&2; return 1; }
  local sim wrk
  sim=$(field "$raw" 'CPU-second: catwar-sim \K[\d.]+')
  wrk=$(field "$raw" 'CPU-second: catwar-sim [\d.]+, wrk \K[\d.]+')
  record generator_per_cpu_s "$r" "\"ours\":$sim,\"reference\":$wrk"
}

# Players at 20 Hz and the play server's CPU, through ci/bench-play.sh; then the state
# writer at PLAY_CPU_PLAYERS, writer on the server's core and readers on the load's.
play() {
  local r=$1 raw=$out/raw/play-$1.txt
  DURATION_S=$DURATION_S PLAYERS=$PLAYER_STEPS bash ci/bench-play.sh >"$raw" 2>&1 || { echo "bench-play.sh failed: $raw" >&2; return 1; }
  local n line steps=""
  for n in $PLAYER_STEPS; do
    line=$(grep "^players $n " "$raw") || { echo "no capacity line for $n players in $raw" >&2; return 1; }
    steps+=$(python3 - "$line" <<'PY'
import re, sys
m = re.search(r"players (\d+) \(connected (\d+)\).*play CPU ([\d.]+) cores.*ticks (\d+), missed (\d+), tick lateness p99 ([\d.]+) ms", sys.argv[1])
n, connected, cores, ticks, missed, p99 = m.groups()
print(f'{{"players":{n},"connected":{connected},"cores":{cores},"ticks":{ticks},"missed":{missed},"p99_ms":{p99}}},')
PY
)
  done
  local writer=$out/raw/state-writer-$r.txt
  taskset -c "$SERVER_CORE" "$bin/state_writer" serve "$PLAY_CPU_PLAYERS" "$DURATION_S" >"$writer" &
  local serve=$! addr floor_us short
  for _ in $(seq 50); do grep -q '^listening' "$writer" && break; sleep 0.1; done
  addr=$(field "$writer" '^listening \K\S+')
  taskset -c "$LOAD_CORE" "$bin/state_writer" read "$addr" "$PLAY_CPU_PLAYERS"
  wait "$serve"
  floor_us=$(field "$writer" 'per player-tick \K[\d.]+')
  short=$(field "$writer" 'short writes \K\d+')
  record play "$r" "\"steps\":[${steps%,}],\"cpu_players\":$PLAY_CPU_PLAYERS,\"reference_us\":$floor_us,\"reference_short_writes\":$short"
}

# FAILOVER_KILLS kills of the active balancer under load: scenarios/failover.toml with
# its kills repeated every KILL_EVERY_S; the gaps come from the simulator's report.
failover() {
  local scenario=$work/failover.toml report=$out/raw/failover
  python3 - scenarios/failover.toml "$scenario" "$FAILOVER_KILLS" "$KILL_EVERY_S" <<'PY'
import re, sys
src, dst, kills, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
text = re.sub(r"\n\[\[faults\]\]\n(?:[^\[\n].*\n)*", "\n", open(src).read())
first = 5
text, n = re.subn(r"^duration_s = \d+", f"duration_s = {first + kills * every}", text, flags=re.M)
assert n == 1, "expected one duration_s"
faults = "".join(f'[[faults]]\nat_s = {first + k * every}.0\naction = "kill"\nservice = "active-balancer"\n\n' for k in range(kills))
text = text.replace("[thresholds]", faults + "[thresholds]")
open(dst, "w").write(text)
PY
  sim_run "$scenario" "$report" "$out/raw/failover.txt"
  local gaps
  gaps=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["failover"]["gaps_ms"]))' "$report/report.json")
  record failover 0 "\"gaps_ms\":$gaps,\"deadline_ms\":$HEARTBEAT_DEADLINE_MS"
  rm -f "$report/report.html"
}

# Resident memory per idle connection of each server process: IDLE_CONNS connections
# opened to it and held (accepted, nothing sent, well inside the loops' request and
# handshake timeouts), its RSS read before and while they are held. Profile is measured
# a second time with each connection past its TLS handshake, idle between requests.
idle_memory() {
  local dir=$work/idle
  mkdir -p "$dir"
  "$bin/catwar-server" users seed --data "$dir" --count 10 --argon2 fast >/dev/null
  taskset -c "$SERVER_CORE" "$bin/catwar-server" up --data "$dir" --base-port 0 --argon2 fast --file-nodes 1 >"$dir/up.log" 2>&1 &
  local up=$!
  for _ in $(seq 100); do [ -f "$dir/topology.json" ] && break; sleep 0.1; done
  [ -f "$dir/topology.json" ] || { echo "topology did not come up: $dir/up.log" >&2; return 1; }
  sleep 1
  taskset -c "$LOAD_CORE" python3 - "$dir/topology.json" "$IDLE_CONNS" >"$out/raw/idle-connections.txt" <<'PY'
import json, resource, socket, ssl, sys, time
topology, conns = json.load(open(sys.argv[1])), int(sys.argv[2])
# The self-signed test certificate: what is measured is the server's memory.
tls = ssl.create_default_context()
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def rss_kib(pid):
    return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
def hold(s, name, connect):
    host, port = s["addr"].rsplit(":", 1)
    before = rss_kib(s["pid"])
    held = [connect(socket.create_connection((host, int(port)))) for _ in range(conns)]
    time.sleep(1)  # the loop accepts and registers them all
    after = rss_kib(s["pid"])
    for c in held:
        c.close()
    print(json.dumps({"service": name, "connections": conns, "rss_before_kib": before, "rss_after_kib": after}))
    time.sleep(0.5)
for s in topology["services"]:
    hold(s, s["name"], lambda c: c)
    if s["name"] == "profile":
        hold(s, "profile, after the TLS handshake", tls.wrap_socket)
PY
  stop "$up"
  while read -r line; do record idle_connection 0 "${line:1:-1}"; done <"$out/raw/idle-connections.txt"
}

# Resident memory per idle virtual client: scenarios/scale-50k.toml scaled down to
# IDLE_CLIENTS in one process, players holding their match connection without inputs;
# the report's sim section divides what the clients added by the clients active.
idle_clients() {
  local scenario=$work/idle-clients.toml report=$out/raw/idle-clients
  python3 - scenarios/scale-50k.toml "$scenario" "$IDLE_CLIENTS" <<'PY'
import re, sys
src, dst, clients = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(src).read()
# Logins over 20 s, matches of 30 ticks at 1 Hz: every client is in a match together
# for a few seconds before the 60 s run ends.
for key, value in (("clients", clients), ("users", clients), ("workers", 1), ("start_spread_ms", 20000),
                   ("match_ticks", 30), ("duration_s", 60), ("play_servers", 1)):
    text, n = re.subn(rf"^{key} = \d+", f"{key} = {value}", text, flags=re.M)
    assert n == 1, f"expected one '{key} = N' line"
text = re.sub(r'^"play.match.count" = .*\n', "", text, flags=re.M)
open(dst, "w").write(text)
PY
  # Not pinned: the simulator starts its embedded topology, which would inherit the pin.
  sim_run "$scenario" "$report" "$out/raw/idle-clients.txt"
  local sim
  sim=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["sim"]; print(json.dumps({"kib": s["rss_per_active_kib"], "peak_active": s["peak_active"]})[1:-1])' "$report/report.json")
  record idle_client 0 "$sim"
  rm -f "$report/report.html"
}

# Each step runs in the background, in its own process group, where `set -e` holds (it
# would not in an `||` list); one that fails is named in failures.txt, the summary says
# which figures it left without a measurement, and the others still run. Its group is
# stopped afterwards, so nothing it started outlives it.
step() {
  "$@" &
  local s=$!
  steps+=("$s")
  wait "$s" || echo "$* failed (exit $?)" >>"$out/raw/failures.txt"
  kill -- "-$s" 2>/dev/null || true
  steps=()
}
for r in $(seq "$ROUNDS"); do
  echo "== round $r of $ROUNDS"
  step login_lobby "$r"
  step generator "$r"
  step play "$r"
done
echo "== failover, $FAILOVER_KILLS kills"; step failover
echo "== idle connections and clients"; step idle_memory; step idle_clients

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $commit$dirty"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "rounds: $ROUNDS, quick: $QUICK, load run: $DURATION_S s"
  echo "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wall time: $(( $(date +%s) - started_s )) s"
} >"$out/machine.txt"
python3 ci/perf-summary.py "$out" "$TICK_LATE_P99_MS_MAX" >"$out/summary.md"
cat "$out/summary.md"
echo "report: $out"
