#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time.
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh backend_rings
#   FUZZ_SECONDS=0 FUZZ_RUNS=10000000 scripts/fuzz.sh   # make fuzz-long
#
# Environment:
#   FUZZ_SECONDS    seconds per target (libFuzzer -max_total_time), default 60;
#                   0 for no time limit
#   FUZZ_RUNS       executions per target (libFuzzer -runs), default unlimited;
#                   a target stops at whichever limit comes first
#   FUZZ_SANITIZER  address (default) or none; see "Stable toolchain" below
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang, default 10
#   FUZZ_ARGS       extra libFuzzer arguments, e.g. "-jobs=2 -workers=2"
#   CARGO_TARGET_DIR  default fuzz/target (gitignored)
#
# Stable toolchain: cargo-fuzz is meant for nightly, and only stable Rust is
# installed here. What works on stable (checked with rustc 1.95, cargo-fuzz
# 0.13.2):
#   - `--sanitizer none` needs nothing else: cargo-fuzz then passes only
#     stable flags (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*,
#     --cfg fuzzing), and libfuzzer-sys builds libFuzzer with the system C++
#     compiler.
#   - `--sanitizer address` (cargo-fuzz's default) adds -Zsanitizer=address,
#     which stable accepts with RUSTC_BOOTSTRAP=1; the ASan runtime ships with
#     the stable rust-std for x86_64-unknown-linux-gnu. The standard library
#     itself is not instrumented (that needs -Zbuild-std and the rust-src of a
#     nightly), but the project's crates are, including ring's `Window`, the
#     only unsafe code between a guest and the back end's memory.
# This script sets RUSTC_BOOTSTRAP=1 and uses address by default; if that
# build fails (a future stable without the runtime), it falls back to none,
# unless FUZZ_SANITIZER was given explicitly.
#
# Builds use `-O -a`: optimised (`--release`) but with debug assertions and
# overflow checks kept on, so an arithmetic overflow in the project is a
# crash, not a silent wrap.
#
# Corpora: fuzz/seeds/<target>/ holds the committed seeds (regenerate them
# with fuzz/seeds/make_seeds.py); new inputs go to fuzz/corpus/<target>/
# (gitignored) and crashes to fuzz/artifacts/<target>/ (gitignored).
#
# Exit status: non-zero if any target crashed, hung, leaked or failed to
# build. The crashing input's path and hex dump are printed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

seconds=${FUZZ_SECONDS:-60}
run_limit=${FUZZ_RUNS:--1}
timeout=${FUZZ_TIMEOUT:-10}
sanitizer=${FUZZ_SANITIZER:-address}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/fuzz/target}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

build() {
    cargo fuzz build -O -a --sanitizer "$sanitizer" "$@"
}

if ! build; then
    if [ "$sanitizer" = address ] && [ -z "${FUZZ_SANITIZER:-}" ]; then
        echo "fuzz.sh: ASan build failed on this toolchain; falling back to --sanitizer none" >&2
        sanitizer=none
        build
    else
        exit 1
    fi
fi

logs=$CARGO_TARGET_DIR/fuzz-logs
mkdir -p "$logs"
failed=()
summary=()
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    seeds=fuzz/seeds/$target
    mkdir -p "$corpus"
    dirs=("$corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")
    log=$logs/$target.log
    echo "== $target: ${seconds}s (0: no limit), runs $run_limit (-1: no limit), sanitizer $sanitizer, log $log"
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is split on purpose
    cargo fuzz run -O -a --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -runs="$run_limit" -timeout="$timeout" -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" || true)
    corp=$(grep -o 'corp: [0-9]*/[0-9A-Za-z]*' <<<"$last" || true)
    line="$target: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?}, ${corp:-corp: ?}"
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        line="$line: FAILED (exit $status)"
        echo "-- $target failed; end of its log:" >&2
        tail -n 60 "$log" >&2
        for input in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "-- crashing input $input:" >&2
            od -An -tx1 -v "$input" | tr -d ' \n' >&2
            echo >&2
        done
    fi
    summary+=("$line")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: failing targets: ${failed[*]}" >&2
    exit 1
fi
