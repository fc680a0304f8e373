#!/usr/bin/env bash
# Benchmark: the simulator's generator efficiency. catwar-sim's req/s against the lobby's
# GET /v1/me (scenarios/generator.toml: each client logs in once, then loops /v1/me on one
# kept-alive connection) divided by wrk's req/s against the same endpoint with the same
# number of connections, in the same run.
#
# Both generators run on one core (core 1) and the whole topology on the other (core 0).
# One core, because the figure is the cost per request of the simulator's client (HTTP,
# JSON checks, HDR recording, per-second series) against a minimal C client: on equal
# cores that is a ratio of req/s, whatever the machine; and on this 2-core machine the
# server needs the other core. catwar-sim's tokio runtime sizes itself from the available
# parallelism, which honours taskset, so it really runs on one core.
#
# The runs go wrk, sim, wrk; the reference is the mean of the two wrk runs, which bracket
# the simulator's in time, so a drift of the shared VM affects both sides alike. Only
# successful answers count, on both sides. Each run also prints the lobby's CPU and the
# generator's: the ratio compares the generators only while the lobby has headroom, and
# req/s per generator CPU-second is printed as a cross-check that other load on the
# shared machine does not skew.
# Traffic goes to 127.0.0.1 only. DURATION_S (default 10) sets each run's length,
# CONNECTIONS (default 32, as in ci/bench-login-lobby.sh) wrk's -c and the sim's clients.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION_S=${DURATION_S:-10}
CONNECTIONS=${CONNECTIONS:-32}
# The simulator's rate leaves out its first second (logins, ramp) and its last, so a
# shorter run would leave too few seconds to average.
[ "$DURATION_S" -ge 4 ] || { echo "DURATION_S must be at least 4" >&2; exit 64; }

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }; }
need wrk wrk; need taskset util-linux; need curl curl

cargo build --release --workspace --all-targets --locked
bin=target/release/catwar-server
out=target/bench/generator
rm -rf "$out"
work=$(mktemp -d)
up_pid=
cleanup() { [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

addr() { python3 -c 'import json,sys; print(next(s["addr"] for s in json.load(open(sys.argv[1]))["services"] if s["name"]==sys.argv[2]))' "$1/topology.json" "$2"; }
# cpu_use NAME GEN_PID: over a run's steady part (its 2nd second to 1 s before its end),
# the CPU of the lobby and of the generator (with its child processes, if any), each in %
# of a core, into $work/cpu-NAME.txt. The caller waits for it by $!, never with a bare
# `wait`, which would wait for the server too.
cpu_use() {
  (sleep 2; python3 - "$((DURATION_S - 3))" "$lobby_pid" "$2" <<'PY'
import os, sys, time
def ticks(pid):  # utime + stime of pid and its children
    total = 0
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if pid in (p, f[1]):
            total += int(f[11]) + int(f[12])
    return total
secs, lobby, gen = float(sys.argv[1]), sys.argv[2], sys.argv[3]
a = ticks(lobby), ticks(gen); start = time.monotonic(); time.sleep(secs)
b = ticks(lobby), ticks(gen); hz = os.sysconf("SC_CLK_TCK") * (time.monotonic() - start)
print(" ".join(f"{100 * (y - x) / hz:.0f}" for x, y in zip(a, b)))
PY
  ) >"$work/cpu-$1.txt" &
}

# wrk_run NAME: wrk on core 1 with the token of a user no simulated client logs in as, so
# the simulator's logins never touch wrk's session; prints successful answers per second,
# non-2xx answers, the lobby's and wrk's CPU.
wrk_run() {
  TOKEN=$token taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION_S}s" -s ci/wrk/bearer.lua "http://$lobby/v1/me" >"$work/$1.txt" &
  local gen=$!
  cpu_use "$1" "$gen"; local sampler=$!
  wait "$gen" || { echo "wrk failed:" >&2; cat "$work/$1.txt" >&2; return 1; }
  wait "$sampler"
  python3 - "$work/$1.txt" "$(cat "$work/cpu-$1.txt")" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
n, t, unit = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text).groups()
secs = float(t) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = int(bad.group(1)) if bad else 0
print(f"{(int(n) - bad) / secs:.0f} {bad} {sys.argv[2]}")
PY
}

echo "== generator efficiency: GET /v1/me, $CONNECTIONS connections, ${DURATION_S} s a run, server on core 0, generators on core 1"
dir=$work/topology; mkdir -p "$dir"
# One user per simulated client, and one more for wrk.
"$bin" users seed --data "$dir" --count "$((CONNECTIONS + 1))" --argon2 fast >/dev/null
taskset -c 0 "$bin" up --data "$dir" --base-port 0 --argon2 fast --file-nodes 1 >"$dir/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 100); do [ -f "$dir/topology.json" ] && break; sleep 0.1; done
[ -f "$dir/topology.json" ] || { echo "topology did not come up: $dir/up.log" >&2; cat "$dir/up.log" >&2; exit 1; }
profile=$(addr "$dir" profile)
lobby=$(addr "$dir" lobby)
lobby_pid=$(python3 -c 'import json,sys; print(next(s["pid"] for s in json.load(open(sys.argv[1]))["services"] if s["name"]=="lobby"))' "$dir/topology.json")
user=user$((CONNECTIONS + 1))
curl -sf --cacert "$dir/tls/cert.pem" "https://localhost:${profile##*:}/v1/login" -d "{\"id\":\"$user\",\"password\":\"pw-$user\"}" >"$work/t.json"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$work/t.json")

# The scenario as run: its length and clients from DURATION_S and CONNECTIONS.
python3 - scenarios/generator.toml "$work/generator.toml" "$DURATION_S" "$CONNECTIONS" <<'PY'
import re, sys
src, dst, duration, clients = sys.argv[1:]
text = open(src).read()
for key, value in (("duration_s", duration), ("clients", clients), ("users", clients)):
    text, n = re.subn(rf"^{key} = \d+", f"{key} = {value}", text, flags=re.M)
    assert n == 1, f"{src}: expected one '{key} = N' line, found {n}"
open(dst, "w").write(text)
PY

result=$(wrk_run wrk1); read -r wrk1 wrk1_bad lobby1_cpu wrk1_cpu <<<"$result"
echo "wrk (1st):   $wrk1 req/s, $wrk1_bad non-2xx; wrk $wrk1_cpu % of core 1, lobby $lobby1_cpu % of core 0"

taskset -c 1 target/release/catwar-sim run "$work/generator.toml" --target "$dir/topology.json" --out "$out" >"$work/sim.txt" 2>"$work/sim.err" &
gen=$!
cpu_use sim "$gen"; sampler=$!
sim_rc=0
wait "$gen" || sim_rc=$?
wait "$sampler"
read -r lobby_sim_cpu sim_cpu <"$work/cpu-sim.txt"
# 1: a threshold failed, 2: an invariant was violated; both still leave a report to read.
if [ "$sim_rc" -gt 2 ] || [ ! -f "$out/report.json" ]; then
  echo "catwar-sim failed (exit $sim_rc):" >&2; cat "$work/sim.txt" "$work/sim.err" >&2; exit 1
fi
grep -E '^(lobby\.me|login) |^errors by code|^threshold fail|^invariant violated' "$work/sim.txt" || true
result=$(python3 - "$out/report.json" "$DURATION_S" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
# Whole seconds of the run only, without the first (logins, ramp) and the last. The
# scenario's length bounds them too: the report's duration_s also counts the time the
# clients take to wind down after the deadline.
end_s = min(r["duration_s"], float(sys.argv[2]))
full = [p for p in r["timeseries"]["points"] if p["t_s"] + 1 <= end_s][1:-1]
me = [p["steps"].get("lobby.me", {"requests": 0, "errors": 0}) for p in full]
ok = sum(s["requests"] - s["errors"] for s in me)
print(f"{ok / len(full):.0f} {sum(s['errors'] for s in me)} {r['environment']['cores']}")
PY
)
read -r sim sim_bad sim_cores <<<"$result"
echo "catwar-sim:  $sim req/s, $sim_bad errors; catwar-sim $sim_cpu % of core 1 ($sim_cores core seen), lobby $lobby_sim_cpu % of core 0; exit $sim_rc, report $out/report.json"

result=$(wrk_run wrk2); read -r wrk2 wrk2_bad lobby2_cpu wrk2_cpu <<<"$result"
echo "wrk (2nd):   $wrk2 req/s, $wrk2_bad non-2xx; wrk $wrk2_cpu % of core 1, lobby $lobby2_cpu % of core 0"

python3 - "$sim" "$sim_cpu" "$wrk1" "$wrk1_cpu" "$wrk2" "$wrk2_cpu" <<'PY'
import sys
sim, sim_cpu, wrk1, wrk1_cpu, wrk2, wrk2_cpu = map(float, sys.argv[1:])
wrk = (wrk1 + wrk2) / 2
print(f"generator efficiency: catwar-sim {sim:.0f} req/s, wrk {wrk:.0f} req/s (mean of {wrk1:.0f} and {wrk2:.0f}), ratio {sim / wrk:.2f} (goal >= 0.8)")
# Per CPU-second of the generator itself: a cross-check that other load on core 1 (a
# shared VM, a build) does not skew, as it takes CPU from a generator without showing.
per = lambda rate, cpu: rate / max(cpu, 1) * 100
wrk_per = (per(wrk1, wrk1_cpu) + per(wrk2, wrk2_cpu)) / 2
print(f"per generator CPU-second: catwar-sim {per(sim, sim_cpu):.0f}, wrk {wrk_per:.0f} (mean), ratio {per(sim, sim_cpu) / wrk_per:.2f}")
PY
