#!/usr/bin/env bash
# Fuzzing (README "Fuzzing"): builds every cargo-fuzz target of fuzz/ once, then runs
# each one from its committed seeds (fuzz/corpus/TARGET) with its dictionary
# (fuzz/dicts/TARGET.dict). Any crash, panic, hang or failed check fails the script,
# after every target has run; libFuzzer leaves the input under fuzz/artifacts/TARGET/.
#
#   bash ci/fuzz.sh             short: FUZZ_SECONDS (default 20) per target, ~2 min in all
#   LONG=1 bash ci/fuzz.sh      long: FUZZ_RUNS (default 10,000,000) executions per target
#   bash ci/fuzz.sh --long      the same; target names after the options run only those
#
# Stable Rust is enough: the targets are built optimized, with debug assertions and
# overflow checks, as cargo-fuzz builds by default, but without a sanitizer (panics,
# overflows and the targets' own checks are what safe Rust trips on, about three times as fast).
# FUZZ_SANITIZER=address builds them with AddressSanitizer; its -Zsanitizer flag is
# nightly-only, so the script then sets RUSTC_BOOTSTRAP=1 for stable rustc to take it.
# New inputs the fuzzer finds go to fuzz/work/ (ignored by git), and later runs start
# from them; FUZZ_TARGET_DIR moves the build out of fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(http_head json_bodies play_line watch_line scenario_toml sim_http_response)
long=${LONG:-0}
targets=()
for arg in "$@"; do
  case "$arg" in
    --long) long=1 ;;
    -*) echo "ci/fuzz.sh: unknown option $arg" >&2; exit 64 ;;
    *) targets+=("$arg") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
sanitizer=${FUZZ_SANITIZER:-none}
build=(--sanitizer "$sanitizer")
[ "$sanitizer" = none ] || export RUSTC_BOOTSTRAP=1
[ -z "${FUZZ_TARGET_DIR:-}" ] || build+=(--target-dir "$FUZZ_TARGET_DIR")
cargo fuzz build "${build[@]}"
if [ "$long" != 1 ]; then
  # The seeds still reach what they were written for (fuzz/tests/seeds.rs): a fixture or
  # route that broke would otherwise leave the fuzzer exploring 404s without failing.
  test_dir=()
  [ -z "${FUZZ_TARGET_DIR:-}" ] || test_dir=(--target-dir "$FUZZ_TARGET_DIR")
  cargo test --manifest-path fuzz/Cargo.toml "${test_dir[@]}" -q
fi

work=fuzz/work
# The fuzz targets' scratch data folders (user DBs, resources) live here.
export TMPDIR="$PWD/$work/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
if [ "$long" = 1 ]; then
  limit=(-runs="${FUZZ_RUNS:-10000000}")
else
  limit=(-max_total_time="${FUZZ_SECONDS:-20}")
fi

# Longest input per target: past the server's 16 KiB head limit for the request path
# (and bodies of several KiB), past the largest committed scenario for scenarios.
max_len() {
  case "$1" in
    http_head | json_bodies) echo 20480 ;;
    scenario_toml) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

failed=()
summary=()
for target in "${targets[@]}"; do
  mkdir -p "$work/corpus/$target" "fuzz/artifacts/$target"
  log="$work/$target.log"
  echo "=== $target: ${limit[*]}"
  start=$(date +%s)
  # New inputs go to the first corpus folder only; the committed seeds stay as they are.
  # A single input slower than -timeout seconds is reported as a hang.
  if cargo fuzz run "${build[@]}" "$target" "$work/corpus/$target" "fuzz/corpus/$target" -- \
      -dict="fuzz/dicts/$target.dict" "${limit[@]}" -max_len="$(max_len "$target")" \
      -timeout=60 -print_final_stats=1 \
      >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$target")
    tail -n 40 "$log" >&2
  fi
  seconds=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  corpus=$(find "$work/corpus/$target" -type f | wc -l)
  line=$(printf '%-18s %-6s %12s execs %8s execs/s %6s s  corpus %s' \
    "$target" "$status" "${runs:-?}" "${rate:-?}" "$seconds" "$corpus")
  echo "$line"
  summary+=("$line")
done

echo
echo "fuzzing summary ($(date -u +%Y-%m-%dT%H:%MZ), $([ "$long" = 1 ] && echo long || echo short))"
printf '%s\n' "${summary[@]}"
rm -rf "$TMPDIR"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes or failed checks in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
