#!/usr/bin/env bash
# Quick start: install dependencies, build Cordon, bring up the network lab and run the
# orchestrator against it in the foreground. Ctrl-C stops Cordon and removes the lab.
set -euo pipefail

LAB_NAME=cordon
LAB_DIR=./lab
LISTEN=127.0.0.1:8080
BIN=./target/release/cordon

usage() {
    cat <<EOF
Usage: scripts/quickstart.sh [--keep-lab] [--help]

  1. scripts/install-deps.sh                         system packages, checks cargo
  2. cargo build --release --locked -p cordon
  3. scripts/lab.sh up --name $LAB_NAME --dir $LAB_DIR    network lab + $LAB_DIR/cordon.toml
  4. $BIN serve --config $LAB_DIR/cordon.toml   in the foreground (API on $LISTEN)

Ctrl-C (SIGINT) or SIGTERM stops Cordon, then runs \`scripts/lab.sh down --name $LAB_NAME\`.
  --keep-lab   leave the lab's namespaces in place when Cordon stops

Cordon's data (database, $LAB_DIR/data/admin.token) stays in $LAB_DIR/data across runs; remove
everything with: scripts/lab.sh down --name $LAB_NAME --dir $LAB_DIR --purge

Must run as root (the lab and the linux-bridge driver need network namespaces); re-executes
itself with sudo when available.
EOF
}

KEEP_LAB=0
ORIG_ARGS=("$@")
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --keep-lab) KEEP_LAB=1 ;;
        *) echo "quickstart.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

SCRIPT=$(readlink -f -- "${BASH_SOURCE[0]}")
ROOT=$(dirname -- "$(dirname -- "$SCRIPT")")

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        echo "quickstart.sh: not root; re-running with sudo (the lab needs network namespaces)" >&2
        exec sudo --preserve-env env "PATH=$PATH" bash "$SCRIPT" "${ORIG_ARGS[@]}"
    fi
    echo "quickstart.sh: must run as root (the lab needs network namespaces), and sudo is not available" >&2
    exit 1
fi

cd -- "$ROOT"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

LAB_UP=0
SERVE_PID=""
SIGNALS=0

# shellcheck disable=SC2317 # called from a trap
teardown() {
    local rc=$?
    trap - EXIT INT TERM
    if ((LAB_UP)); then
        echo
        if ((KEEP_LAB)); then
            echo "==> keeping lab '$LAB_NAME' (--keep-lab); remove it with: scripts/lab.sh down --name $LAB_NAME"
        else
            echo "==> removing lab '$LAB_NAME'"
            scripts/lab.sh down --name "$LAB_NAME" --dir "$LAB_DIR" || rc=1
        fi
    fi
    exit "$rc"
}

# Before Cordon runs, a signal just stops the script (the EXIT trap removes the lab).
# shellcheck disable=SC2317 # called from a trap
on_signal_early() { exit $((128 + $1)); }

# While Cordon runs, pass the signal on; a second signal kills it.
# shellcheck disable=SC2317 # called from a trap
on_signal_serving() {
    local sig=$1
    SIGNALS=$((SIGNALS + 1))
    [[ -n $SERVE_PID ]] && kill -0 "$SERVE_PID" 2>/dev/null || return 0
    if ((SIGNALS == 1)); then
        echo
        echo "==> stopping cordon (pid $SERVE_PID); press Ctrl-C again to kill it"
        kill -"$sig" "$SERVE_PID" 2>/dev/null || true
    else
        kill -KILL "$SERVE_PID" 2>/dev/null || true
    fi
}

trap teardown EXIT
trap 'on_signal_early 2' INT
trap 'on_signal_early 15' TERM

echo "==> installing dependencies"
scripts/install-deps.sh

echo "==> building cordon (release)"
cargo build --release --locked -p cordon

echo "==> starting the lab"
LAB_UP=1
scripts/lab.sh up --name "$LAB_NAME" --dir "$LAB_DIR" --listen "$LISTEN"

cat <<EOF

==> Cordon's API and web console will listen on http://$LISTEN
    On its first start Cordon writes an admin token to $LAB_DIR/data/admin.token (mode 0600);
    this script then adds a console user \`admin\` whose password it prints once and keeps in
    $LAB_DIR/data/console-admin.password (mode 0600). Open http://$LISTEN/ and sign in.

    Try, in another terminal (as root, from $ROOT):

      export CORDON_TOKEN=\$(cat $LAB_DIR/data/admin.token)
      $BIN servers list
      $BIN quarantine sbc-01 --reason "test" --wait
      $BIN servers show sbc-01
      ip netns exec $LAB_NAME-a ping -c1 -W1 10.10.0.12     # fails once sbc-01 is quarantined
      $BIN unquarantine sbc-01 --wait
      ip netns exec $LAB_NAME-a ping -c1 -W1 10.10.0.12     # works again
      $BIN actions list
      $BIN explain 67198
      scripts/lab.sh status --name $LAB_NAME                # ports, bridges, isolated flags

    Ctrl-C here stops Cordon and removes the lab$( ((KEEP_LAB)) && echo " (kept: --keep-lab)" ).

==> $BIN serve --config $LAB_DIR/cordon.toml
EOF

# Cordon runs as a child so that the lab can be removed after it stops. Job control (-m) gives
# it its own process group (Ctrl-C reaches only this script, which passes the signal on once)
# and keeps SIGINT from being ignored in it, as it would be for a background job otherwise.
set -m
"$BIN" serve --config "$LAB_DIR/cordon.toml" </dev/null &
SERVE_PID=$!
set +m
trap 'on_signal_serving INT' INT
trap 'on_signal_serving TERM' TERM

# The first run also creates a console user `admin` with a random password, written to a 0600
# file under the data dir and printed once, so that the console at http://$LISTEN/ is usable.
PASSWORD_FILE="$LAB_DIR/data/console-admin.password"
create_console_admin() {
    local tries=0
    until [[ -s "$LAB_DIR/data/admin.token" ]] && "$BIN" servers list --url "http://$LISTEN" \
        --token-file "$LAB_DIR/data/admin.token" >/dev/null 2>&1; do
        kill -0 "$SERVE_PID" 2>/dev/null || return 0
        tries=$((tries + 1))
        ((tries < 300)) || { echo "quickstart.sh: cordon did not answer; no console user created" >&2; return 0; }
        sleep 0.1
    done
    [[ -e $PASSWORD_FILE ]] && return 0
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$PASSWORD_FILE")
    if "$BIN" users add admin --role admin --password-file "$PASSWORD_FILE" --url "http://$LISTEN" \
        --token-file "$LAB_DIR/data/admin.token" >/dev/null; then
        echo "==> console: http://$LISTEN/  user admin, password $(cat "$PASSWORD_FILE") (kept in $PASSWORD_FILE)"
    else
        rm -f "$PASSWORD_FILE"
    fi
}
create_console_admin

rc=0
while :; do
    if wait "$SERVE_PID"; then rc=0; else rc=$?; fi
    # `wait` also returns when a trapped signal arrives: keep waiting while Cordon is alive.
    kill -0 "$SERVE_PID" 2>/dev/null || break
done
if ((SIGNALS > 0)); then
    echo "==> cordon stopped (exit $rc)"
    rc=0
elif ((rc != 0)); then
    echo "quickstart.sh: cordon serve exited with status $rc" >&2
fi
exit "$rc"
