use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

/// examples/cordon.toml, which the documentation shows; it must stay valid.
const EXAMPLE: &str = include_str!("../../../examples/cordon.toml");

/// A second server, appended after the example's last line (40): its `[[server]]` is line 41.
const SERVER_2: &str = r#"
[[server]]
name = "sbc-02"
kind = "virtual"
[[server.nic]]
mac = "02:00:00:00:01:02"
network = "office"
ip = "10.10.0.12"
"#;

/// The example with each `(from, to)` applied once (an empty `from` appends `to`).
fn edited(edits: &[(&str, &str)]) -> String {
    let mut text = EXAMPLE.to_string();
    for (from, to) in edits {
        if from.is_empty() {
            text.push_str(to.trim_start_matches('\n'));
        } else {
            assert!(text.contains(from), "the example has no `{from}`");
            text = text.replacen(from, to, 1);
        }
    }
    text
}

/// "ok" or the error's Display.
fn outcome(text: &str) -> String {
    match parse(Path::new("cordon.toml"), text) {
        Ok(_) => "ok".to_string(),
        Err(error) => error.to_string(),
    }
}

fn parse_ok(text: &str) -> Config {
    parse(Path::new("cordon.toml"), text).unwrap_or_else(|e| panic!("should be valid:\n{e}"))
}

/// One table-driven case: a name, edits to the example, and the exact expected error text.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

fn check_cases(cases: &[Case<'_>]) {
    let mut failures = Vec::new();
    for (name, edits, expected) in cases {
        let actual = outcome(&edited(edits));
        if actual != *expected {
            failures.push(format!("case {name}:\n  expected: {expected}\n  actual:   {actual}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn example_parses_with_expected_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cordon.toml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.path, path);
    assert_eq!(config.manager.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(config.manager.data_dir, PathBuf::from("/var/lib/cordon"));
    assert!(!config.manager.instance.is_empty());

    assert_eq!(config.networks.len(), 2);
    let office = config.network("office").unwrap();
    assert_eq!(office.role, NetworkRole::Operational);
    assert_eq!(office.subnet, "10.10.0.0/24".parse::<ipnet::IpNet>().unwrap());
    assert_eq!(office.gateway, Some("10.10.0.1".parse().unwrap()));
    assert_eq!(office.quarantine_network.as_deref(), Some("quarantine"));
    assert_eq!(office.pool, None);
    assert_eq!(office.bridge.as_deref(), Some("br-office"));

    let quarantine = config.network("quarantine").unwrap();
    assert_eq!(quarantine.role, NetworkRole::Quarantine);
    assert_eq!(quarantine.subnet, "10.99.0.0/24".parse::<ipnet::IpNet>().unwrap());
    assert_eq!(quarantine.gateway, Some("10.99.0.1".parse().unwrap()));
    assert_eq!(quarantine.quarantine_network, None);
    assert_eq!(quarantine.pool, Some("10.99.0.100-10.99.0.199".parse().unwrap()));
    assert_eq!(quarantine.bridge.as_deref(), Some("br-quarantine"));
    assert_eq!(config.quarantine_network_of(office).map(|n| n.name.as_str()), Some("quarantine"));
    assert!(config.quarantine_network_of(quarantine).is_none());

    let switch = config.switch("tor-1").unwrap();
    assert_eq!(switch.driver, SwitchDriverKind::LinuxBridge);
    assert_eq!(switch.netns.as_deref(), Some("cordon-sw"));
    assert_eq!(config.switches.len(), 1);

    assert_eq!(config.tenants.len(), 1);
    assert_eq!(config.tenants[0].name, "sales");
    assert_eq!(config.tenants[0].admin_email, "infra-sales@example.com");
    assert_eq!(config.tenant("sales").map(|t| t.admin_email.as_str()), Some("infra-sales@example.com"));

    assert_eq!(config.servers.len(), 1);
    let server = config.server("sbc-01").unwrap();
    assert_eq!(server.kind, ServerKind::Physical);
    assert_eq!(server.tenant.as_deref(), Some("sales"));
    assert_eq!(server.user_email.as_deref(), Some("user01@example.com"));
    assert_eq!(server.nics.len(), 1);
    let nic = &server.nics[0];
    assert_eq!(nic.mac, "02:00:00:00:01:01".parse::<MacAddr>().unwrap());
    assert_eq!(nic.network, "office");
    assert_eq!(nic.ip, "10.10.0.11".parse::<IpAddr>().unwrap());
    assert_eq!(nic.switch.as_deref(), Some("tor-1"));
    assert_eq!(nic.port.as_deref(), Some("p-sbc-01"));

    assert!(config.network("nope").is_none());
    assert!(config.switch("nope").is_none());
    assert!(config.server("nope").is_none());
}

#[test]
fn empty_file_gives_defaults() {
    for text in ["", "\n# nothing but a comment\n", "[manager]\n"] {
        let config = parse_ok(text);
        assert_eq!(config.manager.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(config.manager.data_dir, PathBuf::from("/var/lib/cordon"));
        assert!(!config.manager.instance.is_empty());
        assert!(config.networks.is_empty() && config.switches.is_empty());
        assert!(config.tenants.is_empty() && config.servers.is_empty());
    }
}

#[test]
fn instance_defaults_to_a_valid_host_name() {
    let instance = parse_ok("").manager.instance;
    assert!(!instance.is_empty());
    assert!(!instance.contains('\0'));
    let config = parse_ok("[manager]\ninstance = \"cordon-a\"\n");
    assert_eq!(config.manager.instance, "cordon-a");
}

#[test]
fn listen_accepts_port_zero_and_ipv6() {
    let config = parse_ok("[manager]\nlisten = \"127.0.0.1:0\"\n");
    assert_eq!(config.manager.listen.port(), 0);
    let config = parse_ok("[manager]\nlisten = \"[::1]:9000\"\n");
    assert_eq!(config.manager.listen, "[::1]:9000".parse::<SocketAddr>().unwrap());
}

#[test]
fn relative_data_dir_is_resolved_against_the_config_folder() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("cordon.toml");
    std::fs::write(&path, "[manager]\ndata_dir = \"state/db\"\n").unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.manager.data_dir, folder.path().join("state/db"));
    assert!(config.manager.data_dir.is_absolute());

    // A relative configuration path still yields an absolute data_dir, under the current folder.
    let config = parse(Path::new("etc/cordon.toml"), "[manager]\ndata_dir = \"state\"\n").unwrap();
    let expected = std::env::current_dir().unwrap().join("etc/state");
    assert_eq!(config.manager.data_dir, expected);
    let config = parse(Path::new("cordon.toml"), "[manager]\ndata_dir = \"state\"\n").unwrap();
    assert_eq!(config.manager.data_dir, std::env::current_dir().unwrap().join("state"));

    // An absolute one is kept as written.
    let config = parse(Path::new("etc/cordon.toml"), "[manager]\ndata_dir = \"/srv/cordon\"\n").unwrap();
    assert_eq!(config.manager.data_dir, PathBuf::from("/srv/cordon"));
}

#[test]
fn a_virtual_server_may_have_nics_without_switch() {
    let config = parse_ok(&edited(&[("", SERVER_2)]));
    let server = config.server("sbc-02").unwrap();
    assert_eq!(server.kind, ServerKind::Virtual);
    assert_eq!(server.tenant, None);
    assert_eq!(server.nics[0].switch, None);
    assert_eq!(server.nics[0].port, None);
}

#[test]
fn inline_tables_are_accepted_too() {
    let text = r#"
network = [
  { name = "q", role = "quarantine", subnet = "10.99.0.0/24", pool = "10.99.0.10-10.99.0.20" },
  { name = "o", role = "operational", subnet = "10.10.0.0/24", quarantine_network = "q" },
]
[[server]]
name = "vm"
kind = "virtual"
nic = [{ mac = "02:00:00:00:00:01", network = "o", ip = "10.10.0.5" }]
"#;
    let config = parse_ok(text);
    assert_eq!(config.networks.len(), 2);
    assert_eq!(config.servers[0].nics.len(), 1);
}

#[test]
fn unreadable_file_is_a_problem_without_line() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("missing.toml");
    let error = load(&path).unwrap_err();
    assert_eq!(error.problems.len(), 1);
    let problem = &error.problems[0];
    assert_eq!(problem.file, path);
    assert_eq!(problem.line, None);
    assert_eq!(problem.key, "(file)");
    assert!(problem.detail.starts_with("cannot read the file: "), "{}", problem.detail);
    assert_eq!(error.to_string(), format!("{}: (file): {}", path.display(), problem.detail));
}

#[test]
fn non_utf8_file_names_its_line() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("cordon.toml");
    std::fs::write(&path, b"[manager]\nlisten = \"\xff\"\n").unwrap();
    let error = load(&path).unwrap_err();
    assert_eq!(error.to_string(), format!("{}:2: (file): the file is not UTF-8 text", path.display()));
}

#[test]
fn problem_fields_and_display() {
    let error = parse(Path::new("/etc/cordon/cordon.toml"), "[manager]\nlisten = \"nowhere\"\n").unwrap_err();
    assert_eq!(
        error.problems,
        vec![ConfigProblem {
            file: PathBuf::from("/etc/cordon/cordon.toml"),
            line: Some(2),
            key: "manager.listen".to_string(),
            detail: "`nowhere` is not a listen address (expected IP:port, like 127.0.0.1:8080 or [::1]:8080)"
                .to_string(),
        }]
    );
    assert_eq!(
        error.to_string(),
        "/etc/cordon/cordon.toml:2: manager.listen: `nowhere` is not a listen address (expected IP:port, like \
         127.0.0.1:8080 or [::1]:8080)"
    );
}

#[test]
fn manager_rules() {
    check_cases(&[
        (
            "listen not an address",
            &[("listen = \"127.0.0.1:8080\"", "listen = \"localhost:8080\"")],
            "cordon.toml:2: manager.listen: `localhost:8080` is not a listen address (expected IP:port, like \
             127.0.0.1:8080 or [::1]:8080)",
        ),
        (
            "empty data_dir",
            &[("data_dir = \"/var/lib/cordon\"", "data_dir = \"\"")],
            "cordon.toml:3: manager.data_dir: must not be empty",
        ),
        (
            "bad instance",
            &[("data_dir = \"/var/lib/cordon\"", "data_dir = \"/var/lib/cordon\"\ninstance = \"my host\"")],
            "cordon.toml:4: manager.instance: `my host` is not a valid name (use only letters, digits, '.', '_' \
             and '-')",
        ),
        (
            "manager written as an array",
            &[("[manager]", "[[manager]]")],
            "cordon.toml:1: manager: expected a table (write it [manager]), found an array",
        ),
    ]);
}

#[test]
fn unknown_keys_are_errors_with_their_line() {
    check_cases(&[
        (
            "typo in manager",
            &[("listen =", "lisen =")],
            "cordon.toml:2: manager.lisen: unknown key (expected one of: listen, data_dir, instance)",
        ),
        (
            "typo in a network",
            &[("gateway = \"10.99.0.1\"", "gatway = \"10.99.0.1\"")],
            "cordon.toml:17: network \"quarantine\".gatway: unknown key (expected one of: name, role, subnet, \
             gateway, quarantine_network, pool, bridge)",
        ),
        (
            "typo in a NIC",
            &[("port = ", "prot = ")],
            "cordon.toml:39: server \"sbc-01\".nic[0].port: missing: a NIC with a switch needs its port on that \
             switch\ncordon.toml:40: server \"sbc-01\".nic[0].prot: unknown key (expected one of: mac, network, ip, \
             switch, port)",
        ),
        (
            "typo in a server",
            &[("user_email =", "usr_email =")],
            "cordon.toml:34: server \"sbc-01\".usr_email: unknown key (expected one of: name, kind, tenant, \
             user_email, nic)",
        ),
        (
            "unknown section",
            &[("", "[managre]\nlisten = \"127.0.0.1:1\"\n")],
            "cordon.toml:41: managre: unknown section (expected one of: manager, network, switch, tenant, server)",
        ),
        (
            "quoted unknown key",
            &[("[manager]\n", "[manager]\n\"my key\" = \"x\"\n")],
            "cordon.toml:2: manager.\"my key\": unknown key (expected one of: listen, data_dir, instance)",
        ),
    ]);
}

#[test]
fn type_errors_name_key_and_line() {
    check_cases(&[
        (
            "integer port",
            &[("port = \"p-sbc-01\"", "port = 5")],
            "cordon.toml:40: server \"sbc-01\".nic[0].port: expected a string, found an integer",
        ),
        (
            "array listen",
            &[("listen = \"127.0.0.1:8080\"", "listen = [\"127.0.0.1:8080\"]")],
            "cordon.toml:2: manager.listen: expected a string, found an array",
        ),
        (
            "boolean role",
            &[("role = \"quarantine\"", "role = true")],
            "cordon.toml:15: network \"quarantine\".role: expected a string, found a boolean",
        ),
    ]);
    assert_eq!(
        outcome("[network]\nname = \"x\"\n"),
        "cordon.toml:1: network: expected an array of tables (write it [[network]]), found a table"
    );
    assert_eq!(
        outcome("server = \"x\"\n"),
        "cordon.toml:1: server: expected an array of tables (write it [[server]]), found a string"
    );
    assert_eq!(
        outcome("network = [1]\n"),
        "cordon.toml:1: network[0]: expected a table (write it [[network]]), found an integer"
    );
}

#[test]
fn syntax_errors_name_line_and_key() {
    check_cases(&[
        (
            "unterminated string",
            &[("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8080")],
            "cordon.toml:2: manager.listen: invalid TOML: invalid basic string, expected `\"`",
        ),
        (
            "missing equals",
            &[("role = \"operational\"", "role \"operational\"")],
            "cordon.toml:7: network \"office\".role: invalid TOML: key with no value, expected `=`",
        ),
        (
            "duplicate key",
            &[("ip = \"10.10.0.11\"", "ip = \"10.10.0.11\"\nip = \"10.10.0.12\"")],
            "cordon.toml:39: server \"sbc-01\".nic[0].ip: invalid TOML: duplicate key",
        ),
        (
            "broken header",
            &[("[[switch]]", "[[switch]")],
            "cordon.toml:21: switch: invalid TOML: unclosed array table, expected `]`",
        ),
    ]);
}

#[test]
fn network_rules() {
    const THIRD_QUARANTINE: &str = r#"
[[network]]
name = "quarantine-2"
role = "quarantine"
subnet = "10.99.0.0/23"
pool = "10.99.0.150-10.99.1.10"
"#;
    check_cases(&[
        (
            "invalid name",
            &[("name = \"tor-1\"", "name = \"tor 1\""), ("switch = \"tor-1\"", "switch = \"tor 1\"")],
            "cordon.toml:22: switch \"tor 1\".name: `tor 1` is not a valid name (use only letters, digits, '.', \
             '_' and '-')",
        ),
        (
            "empty name",
            &[("name = \"sales\"", "name = \"\""), ("tenant = \"sales\"\n", "")],
            "cordon.toml:27: tenant[0].name: must not be empty",
        ),
        (
            "duplicate name",
            &[(
                "",
                "[[network]]\nname = \"office\"\nrole = \"quarantine\"\nsubnet = \"10.98.0.0/24\"\npool = \"10.98.0.10-10.98.0.20\"\n",
            )],
            "cordon.toml:42: network \"office\".name: network `office` is defined twice; the first is network \
             \"office\" (line 5)",
        ),
        (
            "invalid role",
            &[("role = \"operational\"", "role = \"operationl\"")],
            "cordon.toml:7: network \"office\".role: `operationl` is not a known role (expected one of: \
             operational, quarantine)",
        ),
        (
            "missing role",
            &[("role = \"operational\"\n", "")],
            "cordon.toml:5: network \"office\".role: missing: every network needs a role (operational or \
             quarantine)",
        ),
        (
            "invalid subnet",
            &[("subnet = \"10.10.0.0/24\"", "subnet = \"10.10.0.0/33\"")],
            "cordon.toml:8: network \"office\".subnet: `10.10.0.0/33` is not a subnet (expected address/prefix, \
             like 10.10.0.0/24)",
        ),
        (
            "subnet with host bits",
            &[("subnet = \"10.10.0.0/24\"", "subnet = \"10.10.0.5/24\"")],
            "cordon.toml:8: network \"office\".subnet: `10.10.0.5/24` has host bits set; did you mean 10.10.0.0/24?",
        ),
        (
            "gateway outside subnet",
            &[("gateway = \"10.10.0.1\"", "gateway = \"10.10.1.1\"")],
            "cordon.toml:9: network \"office\".gateway: `10.10.1.1` is outside the subnet 10.10.0.0/24",
        ),
        (
            "gateway not an address",
            &[("gateway = \"10.10.0.1\"", "gateway = \"10.10.0\"")],
            "cordon.toml:9: network \"office\".gateway: `10.10.0` is not an IP address",
        ),
        (
            "operational without quarantine_network",
            &[("quarantine_network = \"quarantine\"\n", "")],
            "cordon.toml:5: network \"office\".quarantine_network: missing: an operational network must name the \
             quarantine network its servers are moved to",
        ),
        (
            "quarantine_network that does not exist",
            &[("quarantine_network = \"quarantine\"", "quarantine_network = \"quarantaine\"")],
            "cordon.toml:10: network \"office\".quarantine_network: no network is named `quarantaine`",
        ),
        (
            "quarantine_network that is operational",
            &[("quarantine_network = \"quarantine\"", "quarantine_network = \"office\"")],
            "cordon.toml:10: network \"office\".quarantine_network: network `office` is operational; \
             quarantine_network must name a network with role \"quarantine\"",
        ),
        (
            "operational network with a pool",
            &[("bridge = \"br-office\"", "bridge = \"br-office\"\npool = \"10.10.0.100-10.10.0.110\"")],
            "cordon.toml:12: network \"office\".pool: only a quarantine network has a pool; remove it or set role = \
             \"quarantine\"",
        ),
        (
            "quarantine network without pool",
            &[("pool = \"10.99.0.100-10.99.0.199\"", "")],
            "cordon.toml:13: network \"quarantine\".pool: missing: a quarantine network needs a pool of addresses \
             for quarantined servers, like 10.99.0.100-10.99.0.199",
        ),
        (
            "quarantine network naming a quarantine network",
            &[("role = \"quarantine\"", "role = \"quarantine\"\nquarantine_network = \"office\"")],
            "cordon.toml:16: network \"quarantine\".quarantine_network: a quarantine network must not name a \
             quarantine_network",
        ),
        (
            "pool that ends before it starts",
            &[("pool = \"10.99.0.100-10.99.0.199\"", "pool = \"10.99.0.100-10.98.0.1\"")],
            "cordon.toml:18: network \"quarantine\".pool: `10.99.0.100-10.98.0.1` ends before it starts",
        ),
        (
            "pool outside subnet",
            &[("pool = \"10.99.0.100-10.99.0.199\"", "pool = \"10.99.0.100-10.99.1.20\"")],
            "cordon.toml:18: network \"quarantine\".pool: `10.99.0.100-10.99.1.20` is not inside the subnet \
             10.99.0.0/24",
        ),
        (
            "gateway inside pool",
            &[("gateway = \"10.99.0.1\"", "gateway = \"10.99.0.150\"")],
            "cordon.toml:17: network \"quarantine\".gateway: `10.99.0.150` is inside the pool \
             10.99.0.100-10.99.0.199, which would hand the gateway's address to a server",
        ),
        (
            "overlapping pools",
            &[("", THIRD_QUARANTINE)],
            "cordon.toml:45: network \"quarantine-2\".pool: `10.99.0.150-10.99.1.10` overlaps the pool \
             10.99.0.100-10.99.0.199 of network \"quarantine\" (line 13)",
        ),
        (
            "bridge name too long",
            &[("bridge = \"br-office\"", "bridge = \"br-office-network\"")],
            "cordon.toml:11: network \"office\".bridge: `br-office-network` is 17 bytes long; Linux interface names \
             are at most 15",
        ),
        (
            "bridge name with a slash",
            &[("bridge = \"br-office\"", "bridge = \"br/office\"")],
            "cordon.toml:11: network \"office\".bridge: `br/office` is not a valid Linux interface name (no '/', ':', \
             spaces or control characters; not . or ..)",
        ),
        (
            "bridge shared by two networks",
            &[("bridge = \"br-quarantine\"", "bridge = \"br-office\"")],
            "cordon.toml:19: network \"quarantine\".bridge: bridge `br-office` is already the bridge of network \
             \"office\"; each network needs its own bridge",
        ),
    ]);
    // Three quarantine networks whose pools overlap pairwise are each reported once, against the first.
    assert_eq!(outcome(&edited(&[("", THIRD_QUARANTINE)])).lines().count(), 1);
}

#[test]
fn linux_bridge_switches_need_bridges() {
    check_cases(&[
        (
            "operational network without bridge",
            &[("bridge = \"br-office\"", "")],
            "cordon.toml:5: network \"office\".bridge: missing: server \"sbc-01\".nic[0] is on linux-bridge switch \
             `tor-1`, which carries it on this network, so the network needs a bridge",
        ),
        (
            "quarantine network without bridge",
            &[("bridge = \"br-quarantine\"", "")],
            "cordon.toml:13: network \"quarantine\".bridge: missing: server \"sbc-01\".nic[0] is on linux-bridge \
             switch `tor-1`, which moves it to this network on quarantine, so the network needs a bridge",
        ),
    ]);
    // Without a NIC on a linux-bridge switch, networks need no bridge.
    let text = edited(&[
        ("bridge = \"br-office\"", ""),
        ("bridge = \"br-quarantine\"", ""),
        ("kind = \"physical\"", "kind = \"virtual\""),
        ("switch = \"tor-1\"\n", ""),
        ("port = \"p-sbc-01\"", ""),
    ]);
    assert_eq!(outcome(&text), "ok");
}

#[test]
fn switch_and_tenant_rules() {
    check_cases(&[
        (
            "unknown driver",
            &[("driver = \"linux-bridge\"", "driver = \"ovs\"")],
            "cordon.toml:23: switch \"tor-1\".driver: `ovs` is not a known driver (expected one of: \
             linux-bridge)",
        ),
        (
            "missing driver",
            &[("driver = \"linux-bridge\"\n", "")],
            "cordon.toml:21: switch \"tor-1\".driver: missing: every switch needs a driver (linux-bridge)",
        ),
        (
            "netns with a slash",
            &[("netns = \"cordon-sw\"", "netns = \"../cordon-sw\"")],
            "cordon.toml:24: switch \"tor-1\".netns: `../cordon-sw` is not a valid network namespace name (no '/'; \
             not . or ..)",
        ),
        (
            "empty netns",
            &[("netns = \"cordon-sw\"", "netns = \"\"")],
            "cordon.toml:24: switch \"tor-1\".netns: must not be empty",
        ),
        (
            "duplicate switch",
            &[("", "[[switch]]\nname = \"tor-1\"\ndriver = \"linux-bridge\"\n")],
            "cordon.toml:42: switch \"tor-1\".name: switch `tor-1` is defined twice; the first is switch \"tor-1\" \
             (line 21)",
        ),
        (
            "missing switch name",
            &[("name = \"tor-1\"\n", "")],
            "cordon.toml:21: switch[0].name: missing: every switch needs a name\ncordon.toml:38: server \
             \"sbc-01\".nic[0].switch: no switch is named `tor-1`",
        ),
        (
            "bad admin_email",
            &[("admin_email = \"infra-sales@example.com\"", "admin_email = \"infra-sales\"")],
            "cordon.toml:28: tenant \"sales\".admin_email: `infra-sales` does not look like an e-mail address",
        ),
        (
            "admin_email without a domain",
            &[("admin_email = \"infra-sales@example.com\"", "admin_email = \"infra sales@example\"")],
            "cordon.toml:28: tenant \"sales\".admin_email: `infra sales@example` does not look like an e-mail address",
        ),
        (
            "missing admin_email",
            &[("admin_email = \"infra-sales@example.com\"\n", "")],
            "cordon.toml:26: tenant \"sales\".admin_email: missing: every tenant needs the e-mail address of its \
             administrator",
        ),
        (
            "duplicate tenant",
            &[("", "[[tenant]]\nname = \"sales\"\nadmin_email = \"b@example.com\"\n")],
            "cordon.toml:42: tenant \"sales\".name: tenant `sales` is defined twice; the first is tenant \"sales\" \
             (line 26)",
        ),
    ]);
}

#[test]
fn server_rules() {
    check_cases(&[
        (
            "invalid kind",
            &[("kind = \"physical\"", "kind = \"metal\"")],
            "cordon.toml:32: server \"sbc-01\".kind: `metal` is not a known kind (expected one of: physical, \
             virtual)",
        ),
        (
            "missing kind",
            &[("kind = \"physical\"\n", "")],
            "cordon.toml:30: server \"sbc-01\".kind: missing: every server needs a kind (physical or virtual)",
        ),
        (
            "unknown tenant",
            &[("tenant = \"sales\"", "tenant = \"marketing\"")],
            "cordon.toml:33: server \"sbc-01\".tenant: no tenant is named `marketing`",
        ),
        (
            "bad user_email",
            &[("user_email = \"user01@example.com\"", "user_email = \"user01@@example.com\"")],
            "cordon.toml:34: server \"sbc-01\".user_email: `user01@@example.com` does not look like an e-mail address",
        ),
        (
            "server without NIC",
            &[(
                "[[server.nic]]\nmac = \"02:00:00:00:01:01\"\nnetwork = \"office\"\nip = \"10.10.0.11\"\nswitch = \"tor-1\"\nport = \"p-sbc-01\"",
                "",
            )],
            "cordon.toml:30: server \"sbc-01\".nic: missing: every server needs at least one [[server.nic]]",
        ),
        (
            "duplicate server",
            &[("", SERVER_2), ("name = \"sbc-02\"", "name = \"sbc-01\"")],
            "cordon.toml:42: server \"sbc-01\".name: server `sbc-01` is defined twice; the first is server \
             \"sbc-01\" (line 30)",
        ),
    ]);
}

#[test]
fn nic_rules() {
    check_cases(&[
        (
            "invalid mac",
            &[("mac = \"02:00:00:00:01:01\"", "mac = \"02:00:00:00:01\"")],
            "cordon.toml:36: server \"sbc-01\".nic[0].mac: `02:00:00:00:01` is not a MAC address (expected six \
             hex pairs like 02:00:00:00:01:01)",
        ),
        (
            "multicast mac",
            &[("mac = \"02:00:00:00:01:01\"", "mac = \"01:00:5e:00:00:01\"")],
            "cordon.toml:36: server \"sbc-01\".nic[0].mac: `01:00:5e:00:00:01` is a multicast or null address, not \
             the address of a NIC",
        ),
        (
            "duplicate mac, written differently",
            &[("", SERVER_2), ("mac = \"02:00:00:00:01:02\"", "mac = \"02-00-00-00-01-01\"")],
            "cordon.toml:45: server \"sbc-02\".nic[0].mac: MAC `02:00:00:00:01:01` is already the MAC of server \
             \"sbc-01\".nic[0] (line 35)",
        ),
        (
            "missing mac",
            &[("mac = \"02:00:00:00:01:01\"\n", "")],
            "cordon.toml:35: server \"sbc-01\".nic[0].mac: missing: every NIC needs its MAC address, like \
             02:00:00:00:01:01",
        ),
        (
            "unknown network",
            &[("network = \"office\"", "network = \"offfice\"")],
            "cordon.toml:37: server \"sbc-01\".nic[0].network: no network is named `offfice`",
        ),
        (
            "quarantine network",
            &[("network = \"office\"", "network = \"quarantine\""), ("ip = \"10.10.0.11\"", "ip = \"10.99.0.11\"")],
            "cordon.toml:37: server \"sbc-01\".nic[0].network: network `quarantine` is a quarantine network; a NIC \
             is configured on its operational network and quarantine moves it",
        ),
        (
            "invalid ip",
            &[("ip = \"10.10.0.11\"", "ip = \"10.10.0.300\"")],
            "cordon.toml:38: server \"sbc-01\".nic[0].ip: `10.10.0.300` is not an IP address",
        ),
        (
            "ip outside subnet",
            &[("ip = \"10.10.0.11\"", "ip = \"10.20.0.11\"")],
            "cordon.toml:38: server \"sbc-01\".nic[0].ip: `10.20.0.11` is outside the subnet 10.10.0.0/24 of \
             network `office`",
        ),
        (
            "ip is the gateway",
            &[("ip = \"10.10.0.11\"", "ip = \"10.10.0.1\"")],
            "cordon.toml:38: server \"sbc-01\".nic[0].ip: `10.10.0.1` is the gateway of network `office`",
        ),
        (
            "ip inside a quarantine pool",
            &[
                ("subnet = \"10.10.0.0/24\"", "subnet = \"10.0.0.0/8\""),
                ("ip = \"10.10.0.11\"", "ip = \"10.99.0.150\""),
            ],
            "cordon.toml:38: server \"sbc-01\".nic[0].ip: `10.99.0.150` is inside the quarantine pool \
             10.99.0.100-10.99.0.199 of network \"quarantine\"",
        ),
        (
            "duplicate ip",
            &[("", SERVER_2), ("ip = \"10.10.0.12\"", "ip = \"10.10.0.11\"")],
            "cordon.toml:47: server \"sbc-02\".nic[0].ip: `10.10.0.11` is already the address of server \
             \"sbc-01\".nic[0] (line 35)",
        ),
        (
            "switch without port",
            &[("port = \"p-sbc-01\"", "")],
            "cordon.toml:39: server \"sbc-01\".nic[0].port: missing: a NIC with a switch needs its port on that \
             switch",
        ),
        (
            "port without switch",
            &[("switch = \"tor-1\"\n", "")],
            "cordon.toml:39: server \"sbc-01\".nic[0].switch: missing: a NIC with a port needs the switch that \
             port is on",
        ),
        (
            "physical server NIC without switch and port",
            &[("switch = \"tor-1\"\n", ""), ("port = \"p-sbc-01\"", "")],
            "cordon.toml:35: server \"sbc-01\".nic[0].switch: missing: a NIC of a physical server needs its switch \
             and port",
        ),
        (
            "unknown switch",
            &[("switch = \"tor-1\"", "switch = \"tor-2\"")],
            "cordon.toml:39: server \"sbc-01\".nic[0].switch: no switch is named `tor-2`",
        ),
        (
            "port used twice on one switch",
            &[("", SERVER_2), ("ip = \"10.10.0.12\"", "ip = \"10.10.0.12\"\nswitch = \"tor-1\"\nport = \"p-sbc-01\"")],
            "cordon.toml:49: server \"sbc-02\".nic[0].port: port `p-sbc-01` of switch `tor-1` is already the port \
             of server \"sbc-01\".nic[0] (line 35)",
        ),
        (
            "port name too long",
            &[("port = \"p-sbc-01\"", "port = \"p-sbc-01-eth0-long\"")],
            "cordon.toml:40: server \"sbc-01\".nic[0].port: `p-sbc-01-eth0-long` is 18 bytes long; Linux interface \
             names are at most 15",
        ),
    ]);
}

#[test]
fn several_problems_are_reported_together_in_file_order() {
    let text = edited(&[
        ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1\""),
        ("pool = \"10.99.0.100-10.99.0.199\"", "pool = \"10.99.0.100-10.98.0.1\""),
        ("driver = \"linux-bridge\"", "driver = \"ovs\""),
        ("mac = \"02:00:00:00:01:01\"", "mac = \"nope\""),
        ("", "[[server]]\nname = \"bad name\"\nkind = \"virtual\"\nextra = 1\n"),
    ]);
    let error = parse(Path::new("cordon.toml"), &text).unwrap_err();
    let expected = "\
cordon.toml:2: manager.listen: `127.0.0.1` is not a listen address (expected IP:port, like 127.0.0.1:8080 or [::1]:8080)
cordon.toml:18: network \"quarantine\".pool: `10.99.0.100-10.98.0.1` ends before it starts
cordon.toml:23: switch \"tor-1\".driver: `ovs` is not a known driver (expected one of: linux-bridge)
cordon.toml:36: server \"sbc-01\".nic[0].mac: `nope` is not a MAC address (expected six hex pairs like 02:00:00:00:01:01)
cordon.toml:41: server \"bad name\".nic: missing: every server needs at least one [[server.nic]]
cordon.toml:42: server \"bad name\".name: `bad name` is not a valid name (use only letters, digits, '.', '_' and '-')
cordon.toml:44: server \"bad name\".extra: unknown key (expected one of: name, kind, tenant, user_email, nic)";
    assert_eq!(error.to_string(), expected);
    assert_eq!(error.problems.len(), 7);
    assert!(error.problems.iter().all(|p| p.file == Path::new("cordon.toml") && p.line.is_some()));
}

#[test]
fn deeply_nested_input_does_not_overflow() {
    for text in
        ["[".repeat(100_000), format!("a = {}", "[".repeat(100_000)), format!("a = {}", "{ b = ".repeat(50_000))]
    {
        let _ = parse(Path::new("cordon.toml"), &text);
    }
}

/// Strings made of TOML-ish pieces, more likely than random text to reach deep into validation.
fn tomlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[manager]\n".to_string()),
        Just("[[network]]\n".to_string()),
        Just("[[server]]\n".to_string()),
        Just("[[server.nic]]\n".to_string()),
        Just("[[switch]]\n".to_string()),
        Just("[[tenant]]\n".to_string()),
        Just("\"".to_string()),
        Just("name = ".to_string()),
        Just("role = \"quarantine\"\n".to_string()),
        Just("role = \"operational\"\n".to_string()),
        Just("subnet = \"10.0.0.0/8\"\n".to_string()),
        Just("pool = \"10.0.0.1-10.0.0.9\"\n".to_string()),
        Just("quarantine_network = \"q\"\n".to_string()),
        Just("network = \"o\"\n".to_string()),
        Just("ip = \"10.0.0.5\"\n".to_string()),
        Just("mac = \"02:00:00:00:00:01\"\n".to_string()),
        Just("switch = \"s\"\nport = \"p\"\n".to_string()),
        Just("driver = \"linux-bridge\"\n".to_string()),
        Just("kind = \"physical\"\n".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("= [1, \"x\"]\n".to_string()),
        "[a-z\"= \\[\\]{}.,\n#-]{0,12}",
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let _ = parse(Path::new("cordon.toml"), &text);
    }

    #[test]
    fn tomlish_text_never_panics(text in tomlish()) {
        if let Err(error) = parse(Path::new("cordon.toml"), &text) {
            prop_assert!(!error.problems.is_empty());
            let lines = text.lines().count().max(1);
            for problem in &error.problems {
                prop_assert!(problem.line.is_some_and(|line| line >= 1 && line <= lines + 1), "{problem}");
                prop_assert!(!problem.key.is_empty());
            }
        }
    }

    #[test]
    fn mangled_example_never_panics(cut in 0..EXAMPLE.len(), len in 0usize..40, insert in "[a-z\"=\\[\\]\n .0-9]{0,8}") {
        let end = (cut + len).min(EXAMPLE.len());
        if EXAMPLE.is_char_boundary(cut) && EXAMPLE.is_char_boundary(end) {
            let text = format!("{}{}{}", &EXAMPLE[..cut], insert, &EXAMPLE[end..]);
            let _ = parse(Path::new("cordon.toml"), &text);
        }
    }
}
