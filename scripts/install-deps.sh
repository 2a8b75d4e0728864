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
    postgresql       # PostgreSQL 15: the store suite and the several-instances tests start a private server
    shellcheck       # tests lint scripts/*.sh and .ci/run
    clamav           # clamscan and the engine: ClamAV tests use custom signatures, no freshclam
    clamav-daemon    # clamd: its VirusEvent runs `cordon report`
    clamdscan        # clamdscan: asks that clamd to scan a file
    openssl          # s_server/s_client: TLS traffic in the Suricata corpus test
    tcpdump          # captures the lab traffic that the Suricata ratio bench replays (suricata -r)
    ethtool          # turns checksum offload off on the capture lab's veths (valid checksums in the pcap)
    python3          # http.server and a tiny DNS responder in the lab's namespaces
    python3-venv     # the Redfish driver's tests install sushy-tools (BMC emulator) in a venv
    python3-aiosmtpd # a real SMTP server on loopback for the notification tests (/usr/bin/python3)
    libvirt-daemon   # libvirtd (monolithic, 9.0): the libvirt hypervisor driver's tests
    libvirt-daemon-driver-qemu
    libvirt-dev      # libvirt.so + libvirt.pc: the `virt` crate links against it
    openvswitch-switch # ovsdb-server, ovs-vswitchd, ovsdb-tool: the ovs driver's tests (own daemons)
    chromium         # headless browser for the console's browser tests (driven over WebDriver)
    chromium-driver  # chromedriver: the WebDriver server the console tests start on loopback
)

# Packages that bookworm main lacks, installed from bookworm-backports (a deb822 source added
# only when one of them is missing, on the mirror the machine's Debian source already uses).
BACKPORTS_PACKAGES=(
    suricata         # the IDS whose EVE output Cordon follows (7.0 from bookworm-backports)
    # QEMU for libvirt's test VMs: from backports because the preinstalled qemu-utils is the
    # backports version (10.x); bookworm's QEMU 7.2 packages would conflict with it.
    qemu-system-x86
    qemu-system-common
    qemu-system-data
    seabios
)
BACKPORTS_SOURCE=/etc/apt/sources.list.d/cordon-backports.sources

# libvirtd refuses to start unless this user exists (normally created by libvirt-daemon-system).
LIBVIRT_QEMU_USER=libvirt-qemu

# Minimum Rust toolchain (rustc/cargo). rustup cannot be downloaded on the lab machines.
MIN_RUST_MAJOR=1
MIN_RUST_MINOR=95

usage() {
    cat <<EOF
Usage: scripts/install-deps.sh [--help]

Installs the system packages Cordon's build and tests need, with apt-get:
  ${PACKAGES[*]}
and from bookworm-backports (adding ${BACKPORTS_SOURCE} when needed):
  ${BACKPORTS_PACKAGES[*]}
Packages already installed are skipped; when nothing is missing, apt-get is not run at all.
Services are never started by the install (no freshclam: the tests bring their own signatures).
Creates the system user ${LIBVIRT_QEMU_USER} when missing (libvirtd aborts without it; Debian's
libvirt-daemon-system would create it, but that package also wants systemd).
Then checks that cargo (Rust >= ${MIN_RUST_MAJOR}.${MIN_RUST_MINOR}) is on PATH.

Must run as root (re-executes itself with sudo when available).
EOF
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "install-deps.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
missing_backports=()
for pkg in "${BACKPORTS_PACKAGES[@]}"; do
    installed "$pkg" || missing_backports+=("$pkg")
done

# The mirror of the machine's own Debian source (deb822 or one-line format), for backports.
debian_mirror() {
    local file uri
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$file" && "$file" != "$BACKPORTS_SOURCE" ]] || continue
        uri=$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$file" |
            grep -E '/debian/?$' | head -n1 || true)
        if [[ -n "$uri" ]]; then echo "${uri%/}"; return; fi
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$file" ]] || continue
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }' "$file" |
            grep -E '/debian/?$' | head -n1 || true)
        if [[ -n "$uri" ]]; then echo "${uri%/}"; return; fi
    done
    echo "http://deb.debian.org/debian"
}

need_user=0
getent passwd "$LIBVIRT_QEMU_USER" >/dev/null 2>&1 || need_user=1

if ((${#missing[@]} + ${#missing_backports[@]} + need_user > 0)); then
    if [[ $EUID -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            echo "install-deps.sh: missing packages or user (${missing[*]} ${missing_backports[*]}); re-running with sudo" >&2
            exec sudo -- "$0" "$@"
        fi
        echo "install-deps.sh: missing packages: ${missing[*]} ${missing_backports[*]}" >&2
        ((need_user == 0)) || echo "install-deps.sh: missing user: ${LIBVIRT_QEMU_USER}" >&2
        echo "install-deps.sh: run this script as root to install them (sudo is not available)" >&2
        exit 1
    fi
fi

if ((${#missing[@]} + ${#missing_backports[@]} > 0)); then
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start their services here (clamav-freshclam would try the internet;
    # openvswitch-switch would start the system's OVS, and the tests start their own):
    # without systemd, invoke-rc.d asks policy-rc.d; add a refusing one for the install only.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    if ((${#missing_backports[@]} > 0)) && [[ ! -f "$BACKPORTS_SOURCE" ]]; then
        mirror=$(debian_mirror)
        echo "==> adding bookworm-backports from ${mirror} (${BACKPORTS_SOURCE})"
        cat >"$BACKPORTS_SOURCE" <<EOF
# Added by Cordon's scripts/install-deps.sh for: ${BACKPORTS_PACKAGES[*]}
Types: deb
URIs: ${mirror}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    echo "==> installing: ${missing[*]} ${missing_backports[*]}"
    apt-get update -q
    if ((${#missing[@]} > 0)); then
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    if ((${#missing_backports[@]} > 0)); then
        apt-get install -y -q --no-install-recommends -t bookworm-backports "${missing_backports[@]}"
    fi
else
    echo "==> system packages: all $((${#PACKAGES[@]} + ${#BACKPORTS_PACKAGES[@]})) installed"
fi

if ((need_user > 0)); then
    echo "==> creating system user ${LIBVIRT_QEMU_USER} (libvirtd needs it)"
    getent group "$LIBVIRT_QEMU_USER" >/dev/null 2>&1 || groupadd --system "$LIBVIRT_QEMU_USER"
    useradd --system --gid "$LIBVIRT_QEMU_USER" --no-create-home --home-dir /var/lib/libvirt \
        --shell /usr/sbin/nologin --comment "Libvirt Qemu" "$LIBVIRT_QEMU_USER"
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
