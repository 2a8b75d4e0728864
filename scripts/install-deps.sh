#!/usr/bin/env bash
# Install every system package that building and testing Cordon needs.
# Idempotent: when everything is already installed it only runs `dpkg-query`.
set -euo pipefail

# One list, one place: later features append here (Suricata, libvirt, ...).
PACKAGES=(
    iproute2         # ip, bridge: the network lab and the linux-bridge driver
    iputils-ping     # ping: lab checks and tests
    build-essential  # cc/ld for crates with build scripts
    pkg-config       # crates that look up system libraries
    ca-certificates
    curl
    procps           # ps, pkill -- used by scripts and tests to inspect processes
    sqlite3          # operators inspect the store with the sqlite3 shell
    shellcheck       # tests lint scripts/*.sh and .ci/run
)

# Minimum Rust toolchain (rustc/cargo). rustup cannot be downloaded on the lab machines.
MIN_RUST_MAJOR=1
MIN_RUST_MINOR=95

usage() {
    cat <<EOF
Usage: scripts/install-deps.sh [--help]

Installs the system packages Cordon's build and tests need, with apt-get:
  ${PACKAGES[*]}
Packages already installed are skipped; when nothing is missing, apt-get is not run at all.
Then checks that cargo (Rust >= ${MIN_RUST_MAJOR}.${MIN_RUST_MINOR}) is on PATH.

Must run as root (re-executes itself with sudo when available).
EOF
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "install-deps.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} > 0)); then
    if [[ $EUID -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            echo "install-deps.sh: missing packages (${missing[*]}); re-running with sudo" >&2
            exec sudo -- "$0" "$@"
        fi
        echo "install-deps.sh: missing packages: ${missing[*]}" >&2
        echo "install-deps.sh: run this script as root to install them (sudo is not available)" >&2
        exit 1
    fi
    echo "==> installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "==> system packages: all ${#PACKAGES[@]} installed"
fi

# Rust toolchain: cargo is usually in ~/.cargo/bin, which sudo's PATH may lack.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<EOF
install-deps.sh: cargo not found on PATH.
  Cordon needs Rust >= ${MIN_RUST_MAJOR}.${MIN_RUST_MINOR}. Install it with rustup (https://rustup.rs) where
  the internet is reachable; on the lab machines it is preinstalled in ~/.cargo/bin
  (add it to PATH: export PATH="\$HOME/.cargo/bin:\$PATH").
EOF
    exit 1
fi
version=$(cargo --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1 || true)
major=${version%%.*}
rest=${version#*.}
minor=${rest%%.*}
if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] ||
    ((major < MIN_RUST_MAJOR || (major == MIN_RUST_MAJOR && minor < MIN_RUST_MINOR))); then
    echo "install-deps.sh: cargo ${version} is too old; Cordon needs Rust >= ${MIN_RUST_MAJOR}.${MIN_RUST_MINOR} (rustup update stable)" >&2
    exit 1
fi
echo "==> cargo ${version} (>= ${MIN_RUST_MAJOR}.${MIN_RUST_MINOR}) ok"
