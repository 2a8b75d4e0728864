#!/usr/bin/env bash
# THE test command of Cordon: installs dependencies, builds, lints and runs every test, then
# checks that the tests left no network namespace behind. CI (.ci/run) calls exactly this.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/test.sh [--help] [-- TEST-ARGS...]

Runs, from the repository root (any cwd works), each phase timed:
  deps        scripts/install-deps.sh
  build       cargo build --workspace --all-targets --locked
  fmt         cargo fmt --all -- --check
  clippy      cargo clippy --workspace --all-targets --locked -- -D warnings
  shellcheck  shellcheck scripts/*.sh .ci/run
  test        cargo nextest run --workspace --locked --no-fail-fast   (if cargo-nextest exists)
              cargo test --workspace --locked --no-fail-fast          (otherwise)
  netns-leaks fails if the tests left network namespaces behind (prints and deletes them)
  fuzz        scripts/fuzz.sh --seconds 15: every fuzz target for a short, fixed time

Arguments after `--` go to the test runner (e.g. `scripts/test.sh -- quarantine` to filter).
Every phase runs even when an earlier one failed, except that clippy and test are skipped
when the build fails. A summary table ends the output; the exit status is non-zero when any
phase failed.

Must run as root (the tests create network namespaces and bridges); re-executes itself with
sudo when available. The namespace leak check compares `ip netns list` before and after the
test phase, so do not run other labs or test runs on the same machine at the same time.
EOF
}

ORIG_ARGS=("$@")
TEST_ARGS=()
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --) shift; TEST_ARGS=("$@"); break ;;
        *) echo "test.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

SCRIPT=$(readlink -f -- "${BASH_SOURCE[0]}")
ROOT=$(dirname -- "$(dirname -- "$SCRIPT")")

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        echo "test.sh: not root; re-running with sudo (the tests create network namespaces)" >&2
        exec sudo --preserve-env env "PATH=$PATH" bash "$SCRIPT" "${ORIG_ARGS[@]}"
    fi
    echo "test.sh: must run as root (the tests create network namespaces and bridges), and sudo is not available" >&2
    exit 1
fi

cd -- "$ROOT"

# cargo lives in ~/.cargo/bin, which a root shell or sudo's PATH may lack.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

PHASE_NAMES=()
PHASE_RESULTS=()
PHASE_SECONDS=()
FAILED=0

# phase NAME COMMAND...: run COMMAND, timed, and record its result.
phase() {
    local name=$1 start end rc
    shift
    echo
    echo "==> phase $name"
    start=$(date +%s)
    if "$@"; then rc=0; else rc=$?; fi
    end=$(date +%s)
    echo "==> phase $name took $((end - start))s"
    PHASE_NAMES+=("$name")
    PHASE_SECONDS+=("$((end - start))")
    if ((rc == 0)); then
        PHASE_RESULTS+=(ok)
    else
        PHASE_RESULTS+=("FAILED (exit $rc)")
        FAILED=1
        echo "==> phase $name FAILED (exit $rc)" >&2
    fi
    return "$rc"
}

skip() {
    local name=$1 why=$2
    echo
    echo "==> phase $name skipped: $why"
    PHASE_NAMES+=("$name")
    PHASE_SECONDS+=(0)
    PHASE_RESULTS+=("skipped ($why)")
    FAILED=1
}

list_netns() {
    { ip netns list 2>/dev/null || true; } | awk '{print $1}' | sort -u
}

# shellcheck disable=SC2317 # invoked indirectly, through phase
run_shellcheck() {
    if ! command -v shellcheck >/dev/null 2>&1; then
        echo "shellcheck not found: apt-get install shellcheck (or scripts/install-deps.sh)" >&2
        return 1
    fi
    local files=(scripts/*.sh)
    [[ -e .ci/run ]] && files+=(.ci/run)
    echo "shellcheck ${files[*]}"
    shellcheck "${files[@]}"
}

# shellcheck disable=SC2317 # invoked indirectly, through phase
run_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --locked --no-fail-fast "${TEST_ARGS[@]}"
    else
        echo "(cargo-nextest not installed: using cargo test)"
        cargo test --workspace --locked --no-fail-fast "${TEST_ARGS[@]}"
    fi
}

NETNS_BEFORE=""

# shellcheck disable=SC2317 # invoked indirectly, through phase
check_netns_leaks() {
    local after leaked ns pids
    after=$(list_netns)
    leaked=$(comm -13 <(printf '%s\n' "$NETNS_BEFORE") <(printf '%s\n' "$after") | sed '/^$/d')
    if [[ -z $leaked ]]; then
        echo "no network namespace left behind"
        return 0
    fi
    echo "the tests left these network namespaces behind:" >&2
    while read -r ns; do
        pids=$(ip netns pids "$ns" 2>/dev/null | paste -sd' ' || true)
        echo "  $ns${pids:+ (processes: $pids)}" >&2
    done <<<"$leaked"
    echo "deleting them" >&2
    while read -r ns; do
        pids=$(ip netns pids "$ns" 2>/dev/null | paste -sd' ' || true)
        if [[ -n ${pids// /} ]]; then
            # shellcheck disable=SC2086 # word splitting of the pid list is intended
            kill -KILL $pids 2>/dev/null || true
        fi
        ip netns delete "$ns" || echo "could not delete $ns" >&2
    done <<<"$leaked"
    return 1
}

summary() {
    local i total=0
    echo
    echo "==> summary"
    printf '  %-12s %6s  %s\n' PHASE SECONDS RESULT
    for i in "${!PHASE_NAMES[@]}"; do
        printf '  %-12s %6s  %s\n' "${PHASE_NAMES[$i]}" "${PHASE_SECONDS[$i]}" "${PHASE_RESULTS[$i]}"
        total=$((total + PHASE_SECONDS[i]))
    done
    printf '  %-12s %6s  %s\n' total "$total" "$( ((FAILED)) && echo FAILED || echo ok)"
}

echo "==> cordon tests in $ROOT ($(date -u '+%Y-%m-%d %H:%M:%S UTC'))"

phase deps scripts/install-deps.sh || true
build_ok=1
phase build cargo build --workspace --all-targets --locked || build_ok=0
phase fmt cargo fmt --all -- --check || true
if ((build_ok)); then
    phase clippy cargo clippy --workspace --all-targets --locked -- -D warnings || true
else
    skip clippy "build failed"
fi
phase shellcheck run_shellcheck || true
NETNS_BEFORE=$(list_netns)
if ((build_ok)); then
    phase test run_tests || true
else
    skip test "build failed"
fi
phase netns-leaks check_netns_leaks || true
phase fuzz scripts/fuzz.sh --seconds "${CORDON_FUZZ_SECONDS:-15}" || true

summary
exit "$FAILED"
