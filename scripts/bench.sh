#!/usr/bin/env bash
# THE benchmark command of Cordon: installs what the lab needs, builds release, runs every
# figure (`cordon-bench all`) and prints one table of figure, value and goal. Results go to
# bench/results/<group>.json. See docs/performance.md.
set -euo pipefail

usage() {
    cat <<'EOF2'
Usage: scripts/bench.sh [--help] [-- CORDON-BENCH-ALL-ARGS...]

Runs, from the repository root (any cwd works):
  deps    scripts/install-deps.sh
  build   cargo build --release -p cordon -p cordon-bench --locked
  bench   target/release/cordon-bench all [ARGS...]   (about 10 minutes on 2 cores)

Arguments after `--` go to `cordon-bench all` (e.g. `-- --hosts 1000 --runs 200` for a quick
run; `cordon-bench all --help` lists them). Must run as root: the lab is made of network
namespaces (all named cbn-*), bridges and veth pairs; they are removed when the bench ends,
fails or is interrupted (Ctrl-C). Do not run two benches at once on one machine.
EOF2
}

ARGS=()
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --) shift; ARGS=("$@"); break ;;
        *) echo "bench.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null; then exec sudo -E "$0" "$@"; fi
    echo "bench.sh: must run as root (the lab builds network namespaces)" >&2
    exit 1
fi

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

# Every namespace of the bench is named cbn-* (the contain lab) or cbr-* (the Suricata ratio's
# capture lab): remove them whatever happens.
cleanup() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^cb[nr]-' || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

echo "==> deps"
scripts/install-deps.sh
echo "==> build (release)"
cargo build --release -p cordon -p cordon-bench --locked
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
echo "==> bench"
"$TARGET/release/cordon-bench" all --cordon "$TARGET/release/cordon" "${ARGS[@]}"
