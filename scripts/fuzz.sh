#!/usr/bin/env bash
# Runs Cordon's fuzz targets (fuzz/, cargo-fuzz + libFuzzer) for a fixed time or a fixed number
# of inputs each. scripts/test.sh runs it briefly in every CI run; longer runs are for releases.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
TARGETS=(eve_line cef_syslog syslog_frames webhook_json)

usage() {
    cat <<EOF
Usage: scripts/fuzz.sh [--seconds N | --runs N] [TARGET...]

Fuzzes each TARGET (default: all of ${TARGETS[*]}) with libFuzzer, starting from the checked-in
seeds (fuzz/seeds/TARGET) and a fresh corpus directory under a temporary folder, then prints
how many inputs each target ran and how fast. Exits non-zero if a target crashes: the input is
kept under fuzz/artifacts/TARGET/ (replay it with \`cargo fuzz run TARGET FILE\`).

  --seconds N   run each target for N seconds (default 20)
  --runs N      run each target for N inputs instead (e.g. 10000000 for a release run)
  --sanitizer S cargo-fuzz's sanitizer: address (default) or none (about 5x faster; the
                parsers have no unsafe code, so long runs may use none)

Installs cargo-fuzz ${CARGO_FUZZ_VERSION} with \`cargo install\` when it is missing. cargo-fuzz needs
nightly compiler flags (-Zsanitizer=address); on a stable toolchain this script sets
RUSTC_BOOTSTRAP=1 for the fuzz build only (fuzz/ is its own workspace, outside Cordon's build).
EOF
}

SECONDS_EACH=20
RUNS=""
SANITIZER=address
SELECTED=()
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --seconds) SECONDS_EACH=${2:?--seconds needs a number}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --sanitizer) SANITIZER=${2:?--sanitizer needs address or none}; shift 2 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) SELECTED+=("$1"); shift ;;
    esac
done
((${#SELECTED[@]} > 0)) || SELECTED=("${TARGETS[@]}")

ROOT=$(dirname -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")")
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

cd -- "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
echo "building ${SELECTED[*]}"
for target in "${SELECTED[@]}"; do
    cargo fuzz build --sanitizer "$SANITIZER" "$target" >/dev/null
done

WORK=$(mktemp -d)
trap 'rm -rf -- "$WORK"' EXIT
status=0
printf '%-14s %12s %10s %10s  %s\n' TARGET INPUTS SECONDS "INPUTS/S" RESULT
for target in "${SELECTED[@]}"; do
    mkdir -p "$WORK/$target" "artifacts/$target"
    limit=(-max_total_time="$SECONDS_EACH")
    [[ -n $RUNS ]] && limit=(-runs="$RUNS")
    start=$(date +%s.%N)
    if cargo fuzz run --sanitizer "$SANITIZER" "$target" "$WORK/$target" "seeds/$target" -- "${limit[@]}" -print_final_stats=1 \
        >"$WORK/$target.log" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/artifacts/$target/)"
        status=1
        tail -n 40 "$WORK/$target.log" >&2
    fi
    end=$(date +%s.%N)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$target.log" | tail -n1)
    runs=${runs:-0}
    elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    rate=$(awk -v r="$runs" -v s="$elapsed" 'BEGIN { printf "%.0f", (s > 0 ? r / s : 0) }')
    printf '%-14s %12s %10s %10s  %s\n' "$target" "$runs" "$elapsed" "$rate" "$result"
done
exit "$status"
