#!/usr/bin/env bash
# Benchmarks of the login and lobby path, each a ratio against a reference measured in
# the same run on this machine:
#   1. logins/s with --argon2 owasp  vs  login workers / one argon2 verification (criterion)
#   2. logins/s with --argon2 fast   vs  openssl s_time -new handshakes/s on the same port
#   3. lobby GET /v1/me req/s (wrk, keep-alive) vs nginx returning a same-size JSON body,
#      server pinned to core 0 and wrk to core 1
#   4. lobby GET /v1/me p99 at a constant rate (benches/src/bin/lobby-probe.rs, free of
#      coordinated omission) while logins saturate the pool vs the same probe idle
#   5. a login flood at ten times what the argon2 workers verify (criterion's figure):
#      the same lobby probe during the flood vs idle, profile's answers (granted, busy),
#      and profile's resident memory before the flood and at its peak
# Traffic goes to 127.0.0.1 only. DURATION_S (default 10) sets each wrk run's length.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION_S=${DURATION_S:-10}
WORKERS=2
# The lobby probe's constant request rate: a busy lobby's worth of players, well below
# what it can serve, so the probe measures waiting and not saturation.
PROBE_RATE=${PROBE_RATE:-2000}
# The login flood of figure 5, in multiples of the workers' capacity (issue 10).
FLOOD_FACTOR=${FLOOD_FACTOR:-10}
# Its keep-alive connections: eight times profile's login queue, so the queue overflows
# while the many connections not waiting in it keep offering the flood's rate, each with
# pauses long beside its answers' round trips.
LOGIN_QUEUE=$(grep -oP 'pub const LOGIN_QUEUE_MAX: usize = \K\d+' reference-server/src/services/profile.rs)
FLOOD_CONNECTIONS=$((8 * LOGIN_QUEUE))

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }; }
need wrk wrk; need nginx nginx-light; need taskset util-linux; need openssl openssl

cargo build --release --workspace --all-targets --locked
bin=target/release/catwar-server
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

addr() { python3 -c 'import json,sys; print(next(s["addr"] for s in json.load(open(sys.argv[1]))["services"] if s["name"]==sys.argv[2]))' "$1/topology.json" "$2"; }
pid_of() { python3 -c 'import json,sys; print(next(s["pid"] for s in json.load(open(sys.argv[1]))["services"] if s["name"]==sys.argv[2]))' "$1/topology.json" "$2"; }
up() { # up DIR ARGON2: seed users, start the topology, wait for topology.json
  local dir=$1 preset=$2 users=$3
  "$bin" users seed --data "$dir" --count "$users" --argon2 "$preset" >/dev/null
  "$bin" up --data "$dir" --base-port 0 --argon2 "$preset" --login-workers "$WORKERS" --file-nodes 1 >"$dir/up.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -f "$dir/topology.json" ] && return; sleep 0.1; done
  echo "topology did not come up: $dir/up.log" >&2; exit 1
}
rps() { grep -E '^Requests/sec' | awk '{print $2}'; }

echo "== argon2 verification time (criterion)"
bench=$(cargo bench -p catwar-benches --bench login --locked -- --output-format bencher argon2_verify 2>/dev/null | grep '^test')
echo "$bench"
owasp_ns=$(echo "$bench" | awk '/owasp/ {print $5}')

echo "== 1. logins/s, argon2 owasp, $WORKERS workers"
d1=$work/owasp; mkdir -p "$d1"; up "$d1" owasp 200
profile=$(addr "$d1" profile)
out=$(USERS=200 wrk -t1 -c8 -d"${DURATION_S}s" -s ci/wrk/login.lua "https://$profile")
echo "$out" | grep -E 'Requests/sec|Non-2xx|Socket errors' || true
owasp_rps=$(echo "$out" | rps)
python3 -c "e=$WORKERS/($owasp_ns/1e9); print(f'logins/s {float($owasp_rps):.1f}, expected {e:.1f} (workers / {$owasp_ns/1e6:.2f} ms), ratio {float($owasp_rps)/e:.2f} (goal >= 0.9)')"

echo "== 4. lobby p99 idle vs while owasp logins saturate the pool"
curl -s --cacert "$d1/tls/cert.pem" "https://localhost:${profile##*:}/v1/login" -d '{"id":"user1","password":"pw-user1"}' >"$work/t.json"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$work/t.json")
lobby=$(addr "$d1" lobby)
probe() { target/release/lobby-probe "$lobby" "$token" "$PROBE_RATE" "$DURATION_S" | grep '^probe'; }
idle=$(probe); echo "idle:  $idle"
USERS=200 wrk -t1 -c8 -d"$((DURATION_S + 2))s" -s ci/wrk/login.lua "https://$profile" >"$work/storm.txt" &
storm=$!; sleep 1
busy=$(probe); echo "storm: $busy"
wait "$storm"
python3 - "$idle" "$busy" <<'PY'
import re, sys
p99 = lambda line: float(re.search(r"p99 ([\d.]+) ms", line).group(1))
i, b = p99(sys.argv[1]), p99(sys.argv[2])
print(f"lobby /v1/me p99 at a constant rate: idle {i:.3f} ms, during login storm {b:.3f} ms, ratio {b/i:.2f} (goal <= 2)")
PY

echo "== 5. a login flood at ${FLOOD_FACTOR}x capacity (owasp, $WORKERS workers, queue $LOGIN_QUEUE)"
flood_rate=$(python3 -c "print($FLOOD_FACTOR * $WORKERS / ($owasp_ns / 1e9))")
# Each connection pauses between its logins so that the ones not waiting in the queue
# offer the flood's rate between them.
delay_ms=$(python3 -c "print(round(1000 * ($FLOOD_CONNECTIONS - $LOGIN_QUEUE - $WORKERS) / $flood_rate))")
profile_pid=$(pid_of "$d1" profile)
echo 5 >"/proc/$profile_pid/clear_refs"   # resets VmHWM, so it is the flood's peak
rss_before=$(awk '/^VmRSS/ {print $2}' "/proc/$profile_pid/status")
# Idle again just before the flood, so both probes see the machine as it is then.
idle=$(probe); echo "idle:  $idle"
# Queued logins wait seconds for their answer; wrk must not count them as timeouts.
DELAY_MS=$delay_ms USERS=200 wrk -t2 -c"$FLOOD_CONNECTIONS" -d"$((DURATION_S + 2))s" --timeout 60s -s ci/wrk/flood.lua "https://$profile" >"$work/flood.txt" &
flood=$!; sleep 1
flooded=$(probe); echo "flood: $flooded"
wait "$flood"
rss_peak=$(awk '/^VmHWM/ {print $2}' "/proc/$profile_pid/status")
grep -E 'Requests/sec|answers|Socket errors' "$work/flood.txt" || true
python3 - "$idle" "$flooded" "$(rps <"$work/flood.txt")" "$flood_rate" "$FLOOD_FACTOR" "$rss_before" "$rss_peak" <<'PY'
import re, sys
p99 = lambda line: float(re.search(r"p99 ([\d.]+) ms", line).group(1))
i, f = p99(sys.argv[1]), p99(sys.argv[2])
answered, offered, factor = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
before, peak = int(sys.argv[6]), int(sys.argv[7])
print(f"logins answered {answered:.0f}/s = {factor * answered / offered:.1f}x capacity (aimed at {offered:.0f}/s)")
print(f"lobby /v1/me p99 at a constant rate: idle {i:.3f} ms, during the flood {f:.3f} ms, ratio {f/i:.2f} (goal <= 2)")
print(f"profile RSS before the flood {before / 1024:.1f} MiB, peak during it {peak / 1024:.1f} MiB")
PY

echo "== 2. logins/s, argon2 fast, vs openssl s_time -new"
d2=$work/fast; mkdir -p "$d2"; up "$d2" fast 10000
profile=$(addr "$d2" profile)
out=$(USERS=10000 wrk -t2 -c32 -d"${DURATION_S}s" -s ci/wrk/login.lua "https://$profile")
echo "$out" | grep -E 'Requests/sec|Non-2xx|Socket errors' || true
fast_rps=$(echo "$out" | rps)
st=$(openssl s_time -new -connect "$profile" -time "$DURATION_S" 2>/dev/null | grep 'connections in .* real seconds')
echo "s_time: $st"
python3 - "$fast_rps" "$st" <<'PY'
import re, sys
rps = float(sys.argv[1]); n, secs = map(float, re.search(r"(\d+) connections in ([\d.]+) real", sys.argv[2]).groups())
print(f"logins/s {rps:.0f}, s_time handshakes/s {n/secs:.0f}, ratio {rps/(n/secs):.2f} (goal >= 0.8)")
PY

echo "== 3. lobby GET /v1/me vs nginx, server on core 0, wrk on core 1"
curl -s --cacert "$d2/tls/cert.pem" "https://localhost:${profile##*:}/v1/login" -d '{"id":"user1","password":"pw-user1"}' >"$work/t.json"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$work/t.json")
lobby=$(addr "$d2" lobby)
taskset -a -cp 0 "$(pid_of "$d2" lobby)" >/dev/null
body=$(curl -s -H "Authorization: Bearer $token" "http://$lobby/v1/me")
lobby_rps=$(TOKEN=$token taskset -c 1 wrk -t1 -c32 -d"${DURATION_S}s" -s ci/wrk/bearer.lua "http://$lobby/v1/me" | rps)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location /v1/me { default_type application/json; return 200 '$body'; }
  }
}
NGINX
taskset -c 0 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!); sleep 0.5
nginx_rps=$(TOKEN=$token taskset -c 1 wrk -t1 -c32 -d"${DURATION_S}s" -s ci/wrk/bearer.lua "http://127.0.0.1:$port/v1/me" | rps)
python3 -c "print(f'lobby {float($lobby_rps):.0f} req/s, nginx {float($nginx_rps):.0f} req/s, ratio {float($lobby_rps)/float($nginx_rps):.2f} (goal >= 1.0); body {len(\"\"\"$body\"\"\")} bytes')"
