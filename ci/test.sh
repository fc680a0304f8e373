#!/usr/bin/env bash
# The project's test command (README): every test, then the smoke simulation gated by
# its thresholds and by the committed baseline. One release build serves the tests, the
# image and the smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests run under cargo-nextest (one process per test); installed when missing.
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
# No module of either crate may import a module that imports it (ARCHITECTURE.md).
python3 ci/module-cycles.py reference-server/src sim/src
# The Kubernetes manifests fit the API schema of a fixed release, strictly; no cluster.
bash ci/kubernetes.sh
cargo build --release --workspace --all-targets --locked
# The Docker tests run the project's own image; it is built from this same binary.
bash ci/build-image.sh
cargo nextest run --release --workspace --locked --no-fail-fast
bash ci/prometheus.sh

out=target/ci/smoke
rm -rf "$out"
target/release/catwar-sim run scenarios/smoke.toml --out "$out"
target/release/catwar-sim compare reports/smoke/report.json "$out/report.json" --max-regression 200 --relative

# The simulator's live endpoint (run --metrics-listen) scraped by Debian's Prometheus.
bash ci/prometheus-sim.sh

# The smoke again, its clients in two agents over TCP: a coordinator and two
# `catwar-sim agent` processes (README "Scale: agents on other hosts").
bash ci/agents.sh scenarios/smoke.toml

# The same path with every match observer a container of the project's image.
rm -rf target/ci/smoke-docker
target/release/catwar-sim run scenarios/smoke-docker.toml --out target/ci/smoke-docker

# Crash safety under load: every kind of process SIGKILLed in turn (~55 s); no invariant
# may break, results.no_loss and db.integrity included.
rm -rf target/ci/chaos
target/release/catwar-sim run scenarios/chaos.toml --out target/ci/chaos

# Every service in its own container on the project network, with real network faults
# (partition, loss, pause) and a container SIGKILL; nothing of it is left afterwards.
bash ci/compose.sh
