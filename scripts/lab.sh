#!/usr/bin/env bash
# Cordon's network lab: a switch namespace with two Linux bridges, three server namespaces and a
# remediation host, plus the matching cordon.toml. See `scripts/lab.sh --help`.
set -euo pipefail

PROG=lab.sh
DEFAULT_NAME=cordon
DEFAULT_DIR=./lab
DEFAULT_LISTEN=127.0.0.1:8080

# Servers: name, namespace suffix, MAC, operational address, switch port, user e-mail.
SERVERS=(sbc-01 sbc-02 sbc-03)
declare -A SRV_SUFFIX=([sbc-01]=a [sbc-02]=b [sbc-03]=c)
declare -A SRV_MAC=([sbc-01]=02:00:00:00:01:01 [sbc-02]=02:00:00:00:01:02 [sbc-03]=02:00:00:00:01:03)
declare -A SRV_IP=([sbc-01]=10.10.0.11 [sbc-02]=10.10.0.12 [sbc-03]=10.10.0.13)
declare -A SRV_EMAIL=([sbc-01]=user01@example.com [sbc-02]=user02@example.com [sbc-03]=user03@example.com)
OFFICE_BRIDGE=br-office
QUARANTINE_BRIDGE=br-quarantine
OFFICE_PREFIX=24
REM_MAC=02:00:00:00:09:01
REM_IP=10.99.0.10
REM_PREFIX=24
REM_PORT=p-rem

usage() {
    cat <<'EOF'
Usage:
  scripts/lab.sh up     [--name NAME] [--dir DIR] [--listen ADDR]
  scripts/lab.sh down   [--name NAME] [--dir DIR] [--purge]
  scripts/lab.sh status [--name NAME]
  scripts/lab.sh --help

Builds (up), shows (status) or removes (down) a network lab for Cordon out of Linux network
namespaces, veth pairs and bridges. Needs root and `ip` (iproute2). Nothing touches the root
namespace: every link lives in a namespace whose name starts with NAME-, so several labs with
different NAMEs coexist.

Options:
  --name NAME    lab name, [a-z0-9-], at most 10 characters       (default: cordon)
  --dir DIR      where `up` writes cordon.toml and lab.env        (default: ./lab)
  --listen ADDR  API address written into cordon.toml              (default: 127.0.0.1:8080)
  --purge        (down) also delete DIR

Topology (NAME=cordon):

   cordon-a            cordon-b            cordon-c             cordon-rem
   sbc-01              sbc-02              sbc-03               remediation host
   eth0 10.10.0.11/24  eth0 10.10.0.12/24  eth0 10.10.0.13/24   eth0 10.99.0.10/24
   02:00:00:00:01:01   02:00:00:00:01:02   02:00:00:00:01:03    02:00:00:00:09:01
      |                   |                   |                    |
   +--|-------------------|-------------------|--------------------|-----------------+
   |  p-sbc-01            p-sbc-02            p-sbc-03             p-rem             |
   |  \___________________|___________________/                    |                 |
   |            br-office (operational)                 br-quarantine (quarantine)   |
   |                      switch "tor-1" = namespace cordon-sw                       |
   +---------------------------------------------------------------------------------+

  Each server's eth0 is one end of a veth pair; the other end is its switch port p-sbc-0N in
  cordon-sw, enslaved to br-office. Quarantining a server moves its port's master from
  br-office to br-quarantine and sets the port's `isolated` flag, so quarantined servers reach
  the remediation host (p-rem, not isolated) but not each other, nor the office network.

  `up` tears down any existing lab of that NAME first, then writes DIR/cordon.toml (network
  office + quarantine, switch tor-1 with driver linux-bridge and netns NAME-sw, tenant sales,
  servers sbc-01..03) and DIR/lab.env (LAB_NAME, LAB_SWITCH_NETNS, LAB_HOSTS,
  LAB_REMEDIATION_NETNS, LAB_REMEDIATION_IP, ...). If a step fails it removes what it created.

Try it:
  scripts/lab.sh up --name lt1 --dir /tmp/lt1
  ip netns exec lt1-a ping -c1 -W1 10.10.0.12              # sbc-01 -> sbc-02 works
  ip -n lt1-sw link set p-sbc-01 master br-quarantine       # what Cordon does ...
  bridge -n lt1-sw link set dev p-sbc-01 isolated on        # ... to quarantine sbc-01
  ip netns exec lt1-a ping -c1 -W1 10.10.0.12              # now fails
  scripts/lab.sh status --name lt1
  scripts/lab.sh down --name lt1 --dir /tmp/lt1 --purge

Exit status of `status`: 0 when every namespace of the lab exists, 3 when none does, 1 when the
lab is partial.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Arguments

CMD=""
NAME=$DEFAULT_NAME
DIR=$DEFAULT_DIR
LISTEN=$DEFAULT_LISTEN
PURGE=0
SEEN_DIR=0
SEEN_LISTEN=0

parse_args() {
    if (($# == 0)); then
        usage >&2
        exit 2
    fi
    case "$1" in
        -h | --help | help) usage; exit 0 ;;
        up | down | status) CMD=$1; shift ;;
        *) echo "$PROG: unknown command: $1 (see --help)" >&2; exit 2 ;;
    esac
    while (($# > 0)); do
        local opt=$1 val=""
        case "$opt" in
            --*=*) val=${opt#*=}; opt=${opt%%=*} ;;
            --name | --dir | --listen)
                (($# >= 2)) || { echo "$PROG: $opt needs a value" >&2; exit 2; }
                val=$2
                shift
                ;;
        esac
        case "$opt" in
            -h | --help) usage; exit 0 ;;
            --name) NAME=$val ;;
            --dir)
                [[ $CMD != status ]] || { echo "$PROG: status takes no --dir" >&2; exit 2; }
                DIR=$val
                SEEN_DIR=1
                ;;
            --listen)
                [[ $CMD == up ]] || { echo "$PROG: --listen is only for up" >&2; exit 2; }
                LISTEN=$val
                SEEN_LISTEN=1
                ;;
            --purge)
                [[ $CMD == down ]] || { echo "$PROG: --purge is only for down" >&2; exit 2; }
                PURGE=1
                ;;
            *) echo "$PROG: unknown option: $1 (see --help)" >&2; exit 2 ;;
        esac
        shift
    done
    : "$SEEN_DIR" "$SEEN_LISTEN"

    if ! [[ $NAME =~ ^[a-z0-9-]{1,10}$ ]]; then
        echo "$PROG: invalid --name '$NAME': use 1 to 10 characters from [a-z0-9-]" >&2
        exit 2
    fi
    [[ -n $DIR ]] || { echo "$PROG: --dir must not be empty" >&2; exit 2; }
    if ! [[ $LISTEN =~ ^[^[:space:]\"\\]+:[0-9]{1,5}$ ]]; then
        echo "$PROG: invalid --listen '$LISTEN': expected HOST:PORT, e.g. 127.0.0.1:8080" >&2
        exit 2
    fi
}

require_tools() {
    if [[ $EUID -ne 0 ]]; then
        die "must run as root (network namespaces need CAP_SYS_ADMIN): sudo scripts/lab.sh $CMD ..."
    fi
    if ! command -v ip >/dev/null 2>&1 || ! command -v bridge >/dev/null 2>&1; then
        die "'ip' and 'bridge' (iproute2) are required: apt-get install iproute2 (or scripts/install-deps.sh)"
    fi
    if ! ip netns list >/dev/null 2>&1; then
        die "'ip netns' does not work here (is this kernel built without network namespaces?)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Names

sw_ns() { echo "$NAME-sw"; }
host_ns() { echo "$NAME-${SRV_SUFFIX[$1]}"; }
rem_ns() { echo "$NAME-rem"; }
port_of() { echo "p-$1"; }

all_ns() {
    local s
    sw_ns
    for s in "${SERVERS[@]}"; do host_ns "$s"; done
    rem_ns
}

ns_exists() {
    [[ -e /run/netns/$1 ]] || ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$1"
}

# ---------------------------------------------------------------------------------------------
# down

# Stop processes still running inside a namespace (pings, captures...), then delete it.
delete_ns() {
    local ns=$1 pids i
    ns_exists "$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null | paste -sd' ' || true)
    if [[ -n ${pids// /} ]]; then
        echo "$PROG: stopping processes still inside $ns: $pids" >&2
        # shellcheck disable=SC2086 # word splitting of the pid list is intended
        kill -TERM $pids 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            pids=$(ip netns pids "$ns" 2>/dev/null | paste -sd' ' || true)
            [[ -n ${pids// /} ]] || break
            sleep 0.1
        done
        # shellcheck disable=SC2086
        [[ -z ${pids// /} ]] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns delete "$ns" 2>/dev/null || true
    if ns_exists "$ns"; then
        echo "$PROG: could not delete namespace $ns" >&2
        return 1
    fi
    echo "    deleted namespace $ns"
}

teardown() {
    local ns rc=0
    # Delete the switch first: that removes the bridges and every veth pair at once.
    while read -r ns; do
        delete_ns "$ns" || rc=1
    done < <(all_ns)
    return $rc
}

cmd_down() {
    local rc=0 found=0 ns
    while read -r ns; do
        if ns_exists "$ns"; then found=1; fi
    done < <(all_ns)
    if ((found)); then
        echo "==> tearing down lab '$NAME'"
        teardown || rc=1
    else
        echo "==> lab '$NAME': no namespaces to remove"
    fi
    if ((PURGE)); then
        if [[ -d $DIR ]]; then
            rm -rf -- "$DIR"
            echo "    removed $DIR"
        fi
    fi
    ((rc == 0)) || die "some namespaces of lab '$NAME' could not be deleted"
}

# ---------------------------------------------------------------------------------------------
# up

STEP=""
CREATED_NS=()
UP_DONE=0
CREATED_DIR=""
TMP_CONFIG=""
TMP_ENV=""

step() {
    STEP=$*
}

on_up_exit() {
    local rc=$?
    ((UP_DONE)) && return 0
    trap - EXIT INT TERM
    ((rc != 0)) || rc=1
    echo "$PROG: up failed while: ${STEP:-starting}; removing what was created" >&2
    local ns
    for ns in "${CREATED_NS[@]}"; do
        if delete_ns "$ns" >/dev/null; then
            echo "    deleted namespace $ns" >&2
        else
            echo "$PROG: could not delete namespace $ns" >&2
        fi
    done
    [[ -z $TMP_CONFIG ]] || rm -f -- "$TMP_CONFIG" "$TMP_ENV"
    # A directory this run created is removed too (only when still empty).
    [[ -z $CREATED_DIR ]] || rmdir -- "$CREATED_DIR" 2>/dev/null || true
    exit "$rc"
}

on_up_int() { exit 130; }
on_up_term() { exit 143; }

new_ns() {
    step "creating namespace $1"
    ip netns add "$1"
    CREATED_NS+=("$1")
    ip -n "$1" link set lo up
}

# new_host NS MAC ADDR/PREFIX PORT BRIDGE: NS's eth0 <-> PORT in the switch, enslaved to BRIDGE.
new_host() {
    local ns=$1 mac=$2 cidr=$3 port=$4 bridge=$5 sw
    sw=$(sw_ns)
    new_ns "$ns"
    step "creating veth $ns/eth0 <-> $sw/$port"
    ip link add eth0 netns "$ns" address "$mac" type veth peer name "$port" netns "$sw"
    step "configuring $ns/eth0 ($cidr, $mac)"
    ip -n "$ns" addr add "$cidr" dev eth0
    ip -n "$ns" link set eth0 up
    step "attaching $sw/$port to $bridge"
    ip -n "$sw" link set "$port" master "$bridge"
    bridge -n "$sw" link set dev "$port" isolated off
    ip -n "$sw" link set "$port" up
}

write_config() {
    local abs=$1 out=$2 s
    {
        cat <<EOF
# Written by scripts/lab.sh for lab $NAME; \`scripts/lab.sh down --name $NAME\` removes the lab.
[manager]
listen = "$LISTEN"
data_dir = "$abs/data"

[[network]]
name = "office"
role = "operational"
subnet = "10.10.0.0/24"
gateway = "10.10.0.1"
quarantine_network = "quarantine"
bridge = "$OFFICE_BRIDGE"

[[network]]
name = "quarantine"
role = "quarantine"
subnet = "10.99.0.0/24"
gateway = "10.99.0.1"
pool = "10.99.0.100-10.99.0.199"
bridge = "$QUARANTINE_BRIDGE"

[[switch]]
name = "tor-1"
driver = "linux-bridge"
netns = "$(sw_ns)"

[[tenant]]
name = "sales"
admin_email = "infra-sales@example.com"
EOF
        for s in "${SERVERS[@]}"; do
            cat <<EOF

[[server]]
name = "$s"
kind = "physical"
tenant = "sales"
user_email = "${SRV_EMAIL[$s]}"
[[server.nic]]
mac = "${SRV_MAC[$s]}"
network = "office"
ip = "${SRV_IP[$s]}"
switch = "tor-1"
port = "$(port_of "$s")"
EOF
        done
    } >"$out"
}

write_env() {
    local abs=$1 out=$2 s hosts=""
    for s in "${SERVERS[@]}"; do
        hosts+="${hosts:+ }$s=$(host_ns "$s")"
    done
    cat >"$out" <<EOF
# Written by scripts/lab.sh for lab $NAME; source it: . $abs/lab.env
LAB_NAME=$NAME
LAB_DIR=$abs
LAB_CONFIG=$abs/cordon.toml
LAB_LISTEN=$LISTEN
LAB_SWITCH_NETNS=$(sw_ns)
LAB_HOSTS="$hosts"
LAB_REMEDIATION_NETNS=$(rem_ns)
LAB_REMEDIATION_IP=$REM_IP
EOF
}

cmd_up() {
    local ns s sw abs bridge
    sw=$(sw_ns)

    trap on_up_exit EXIT
    trap on_up_int INT
    trap on_up_term TERM

    # Idempotent: an existing lab with this name is replaced.
    step "tearing down the existing lab '$NAME'"
    local exists=0
    while read -r ns; do
        if ns_exists "$ns"; then exists=1; fi
    done < <(all_ns)
    if ((exists)); then
        echo "==> lab '$NAME' exists; tearing it down first"
        teardown || die "could not tear down the existing lab '$NAME'"
    fi

    step "creating directory $DIR"
    [[ -d $DIR ]] || CREATED_DIR=$DIR
    mkdir -p -- "$DIR"
    abs=$(cd -- "$DIR" && pwd -P)
    if [[ $abs == *[\"\\]* || $abs == *$'\n'* ]]; then
        echo "$PROG: directory path '$abs' contains a quote, backslash or newline" >&2
        exit 2
    fi

    echo "==> building lab '$NAME'"
    new_ns "$sw"
    for bridge in "$OFFICE_BRIDGE" "$QUARANTINE_BRIDGE"; do
        step "creating bridge $sw/$bridge"
        ip -n "$sw" link add "$bridge" type bridge stp_state 0 forward_delay 0
        ip -n "$sw" link set "$bridge" up
    done
    for s in "${SERVERS[@]}"; do
        new_host "$(host_ns "$s")" "${SRV_MAC[$s]}" "${SRV_IP[$s]}/$OFFICE_PREFIX" \
            "$(port_of "$s")" "$OFFICE_BRIDGE"
    done
    new_host "$(rem_ns)" "$REM_MAC" "$REM_IP/$REM_PREFIX" "$REM_PORT" "$QUARANTINE_BRIDGE"

    step "writing $abs/cordon.toml and $abs/lab.env"
    TMP_CONFIG=$abs/.cordon.toml.tmp
    TMP_ENV=$abs/.lab.env.tmp
    write_config "$abs" "$TMP_CONFIG"
    write_env "$abs" "$TMP_ENV"
    mv -f -- "$TMP_CONFIG" "$abs/cordon.toml"
    mv -f -- "$TMP_ENV" "$abs/lab.env"

    UP_DONE=1
    trap - EXIT INT TERM

    echo
    echo "Lab '$NAME' is up."
    printf '  %-8s %-12s %-10s %-19s %-16s %s\n' SERVER NETNS PORT MAC ADDRESS BRIDGE
    for s in "${SERVERS[@]}"; do
        printf '  %-8s %-12s %-10s %-19s %-16s %s\n' "$s" "$(host_ns "$s")" "$(port_of "$s")" \
            "${SRV_MAC[$s]}" "${SRV_IP[$s]}/$OFFICE_PREFIX" "$OFFICE_BRIDGE"
    done
    printf '  %-8s %-12s %-10s %-19s %-16s %s\n' remed. "$(rem_ns)" "$REM_PORT" "$REM_MAC" \
        "$REM_IP/$REM_PREFIX" "$QUARANTINE_BRIDGE"
    echo "  switch tor-1: namespace $sw, bridges $OFFICE_BRIDGE and $QUARANTINE_BRIDGE"
    echo "  config:  $abs/cordon.toml   (API on $LISTEN, data in $abs/data)"
    echo "  env:     $abs/lab.env"
    echo "  try:     ip netns exec $(host_ns sbc-01) ping -c1 -W1 ${SRV_IP[sbc-02]}"
    echo "  remove:  scripts/lab.sh down --name $NAME --dir $DIR [--purge]"
}

# ---------------------------------------------------------------------------------------------
# status

cmd_status() {
    local ns present=0 total=0 sw
    sw=$(sw_ns)
    echo "Lab '$NAME' namespaces:"
    while read -r ns; do
        total=$((total + 1))
        if ns_exists "$ns"; then
            present=$((present + 1))
            printf '  %-14s present\n' "$ns"
        else
            printf '  %-14s missing\n' "$ns"
        fi
    done < <(all_ns)

    if ns_exists "$sw"; then
        echo
        echo "Ports in $sw:"
        printf '  %-16s %-8s %-16s %-12s %s\n' PORT STATE MASTER STP-STATE ISOLATED
        # One line per link (-o); bridge ports carry "master X" and a bridge_slave section with
        # "state S" and "isolated on|off".
        ip -n "$sw" -d -o link show | awk '
            {
                name = $2; sub(/:$/, "", name); sub(/@.*/, "", name)
                master = "-"; isolated = "-"; stp = "-"; kind = ""; oper = "-"
                for (i = 3; i < NF; i++) {
                    if ($i == "master") master = $(i + 1)
                    else if ($i == "isolated") isolated = $(i + 1)
                    else if ($i == "state" && oper == "-") oper = $(i + 1)
                    else if ($i == "state") stp = $(i + 1)
                    else if ($i == "bridge" && kind == "") kind = "bridge"
                    else if ($i == "bridge_slave") kind = "port"
                }
                if (name == "lo") next
                if (kind == "bridge") { printf "  %-16s %-8s %-16s %-12s %s\n", name, oper, "(bridge)", "-", "-"; next }
                printf "  %-16s %-8s %-16s %-12s %s\n", name, oper, master, stp, isolated
            }'
    fi

    if ((present == total)); then
        return 0
    elif ((present == 0)); then
        echo
        echo "Lab '$NAME' is not running (scripts/lab.sh up --name $NAME)."
        return 3
    else
        echo
        echo "Lab '$NAME' is partial: run scripts/lab.sh up --name $NAME (rebuilds) or down." >&2
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------

main() {
    parse_args "$@"
    require_tools
    case "$CMD" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
    esac
}

main "$@"
