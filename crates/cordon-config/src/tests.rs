use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use cordon_model::ThreatSeverity;
use cordon_model::policy::{PolicyMode, Rule, SubjectSide};
use proptest::prelude::*;

use super::*;

/// examples/cordon.toml, which the documentation shows; it must stay valid.
const EXAMPLE: &str = include_str!("../../../examples/cordon.toml");

/// Another server, appended after the example's last line (83): its `[[server]]` is line 84.
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

    assert_eq!(config.servers.len(), 2);
    let server = config.server("sbc-01").unwrap();
    assert_eq!((server.action, server.protected), (None, false));
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

    let db = config.server("db-01").unwrap();
    assert_eq!((db.kind, db.action, db.protected), (ServerKind::Virtual, Some(PolicyAction::Reboot), true));
    assert_eq!(
        db.facts(),
        ServerFacts {
            name: "db-01".into(),
            tenant: Some("sales".into()),
            networks: vec!["office".into()],
            action: Some(PolicyAction::Reboot),
            protected: true,
        }
    );

    assert_eq!(
        config.sources,
        vec![
            SourceConfig {
                name: "ids-1".into(),
                kind: SourceKind::SuricataEve { path: Some("/var/log/suricata/eve.json".into()), socket: None },
            },
            SourceConfig {
                name: "ddi".into(),
                kind: SourceKind::CefSyslog {
                    listen_udp: Some("127.0.0.1:5514".parse().unwrap()),
                    listen_tcp: Some("127.0.0.1:5514".parse().unwrap()),
                    profile: CefProfile::DeepDiscovery,
                    allowed_peers: vec![],
                },
            },
            SourceConfig {
                name: "hooks".into(),
                kind: SourceKind::Webhook { token_file: None, hmac_secret_file: Some("/etc/cordon/hook.key".into()) },
            },
        ]
    );
    assert_eq!(config.source("ddi").map(|s| s.kind.type_name()), Some("cef-syslog"));
    assert!(config.source("nope").is_none());

    assert_eq!(
        config.policy,
        Policy {
            default_action: PolicyAction::Notify,
            default_mode: PolicyMode::Auto,
            exclude_keywords: vec!["TEST-IGNORE".into()],
            max_auto_actions: 50,
            window_secs: 600,
            shadow: false,
            cooldown_secs: 0,
            rules: vec![Rule {
                name: "serious network alerts".into(),
                sources: vec!["ids-1".into(), "ddi".into()],
                min_severity: Some(ThreatSeverity::High),
                signature_ids: vec![],
                categories: vec![],
                networks: vec![],
                tenants: vec![],
                servers: vec![],
                action: PolicyAction::Quarantine,
                mode: PolicyMode::Auto,
                shadow: false,
                subject: None,
            }],
        }
    );
}

/// The sources and policy of the issue, exactly as written there, on their own.
const ISSUE_EXAMPLE: &str = r#"
[[source]]
name = "ids-1"
type = "suricata-eve"
path = "/var/log/suricata/eve.json"       # followed like tail -F
# socket = "/run/cordon/eve.sock"         # or a unix_stream socket

[[source]]
name = "ddi"
type = "cef-syslog"
listen_udp = "127.0.0.1:5514"
listen_tcp = "127.0.0.1:5514"
profile = "deep-discovery"

[[source]]
name = "hooks"
type = "webhook"                           # POST /api/v1/detections
hmac_secret_file = "/etc/cordon/hook.key"

[policy]
default_action = "notify"
exclude_keywords = ["TEST-IGNORE"]
max_auto_actions = 50                      # circuit breaker ...
window = "10m"                             # ... per this window
shadow = false

[[policy.rule]]
name = "serious network alerts"
sources = ["ids-1", "ddi"]
min_severity = "high"
action = "quarantine"
mode = "auto"

# and in a [[server]] table: action = "reboot" (per-server override), protected = true
"#;

#[test]
fn the_documentation_examples_parse() {
    let docs = include_str!("../../../docs/configuration.md");
    let mut text = String::from("[[tenant]]\nname = \"sales\"\nadmin_email = \"a@example.com\"\n");
    let mut blocks = 0;
    for block in docs.split("```toml\n").skip(1) {
        text.push_str(block.split("```").next().unwrap());
        blocks += 1;
    }
    assert!(blocks >= 2);
    let config = parse_ok(&text);
    assert_eq!(config.sources.len(), 2);
    assert_eq!(config.policy.rules.len(), 2);
    assert_eq!(config.policy.rules[1].subject, Some(SubjectSide::Dest));
}

#[test]
fn the_issue_example_parses_on_its_own() {
    let config = parse_ok(ISSUE_EXAMPLE);
    let example = parse_ok(EXAMPLE);
    assert_eq!(config.sources, example.sources);
    assert_eq!(config.policy, example.policy);
    assert!(config.servers.is_empty());
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
        assert!(config.sources.is_empty());
        assert_eq!(config.policy, Policy::default());
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
fn an_empty_nic_array_is_no_nic() {
    assert_eq!(
        outcome("[[server]]\nname = \"vm\"\nkind = \"virtual\"\nnic = []\n"),
        "cordon.toml:1: server \"vm\".nic: missing: every server needs at least one [[server.nic]]"
    );
    assert_eq!(
        outcome("[[server]]\nname = \"vm\"\nkind = \"virtual\"\nnic = \"eth0\"\n"),
        "cordon.toml:4: server \"vm\".nic: expected an array of tables (write it [[server.nic]]), found a string"
    );
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
             user_email, action, protected, nic)",
        ),
        (
            "unknown section",
            &[("", "[managre]\nlisten = \"127.0.0.1:1\"\n")],
            "cordon.toml:84: managre: unknown section (expected one of: manager, network, switch, tenant, server, \
             source, policy)",
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
            &[("name = \"sales\"", "name = \"\""), ("tenant = \"sales\"\n", ""), ("tenant = \"sales\"\n", "")],
            "cordon.toml:27: tenant[0].name: must not be empty",
        ),
        (
            "duplicate name",
            &[(
                "",
                "[[network]]\nname = \"office\"\nrole = \"quarantine\"\nsubnet = \"10.98.0.0/24\"\npool = \"10.98.0.10-10.98.0.20\"\n",
            )],
            "cordon.toml:85: network \"office\".name: network `office` is defined twice; the first is network \
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
            "cordon.toml:88: network \"quarantine-2\".pool: `10.99.0.150-10.99.1.10` overlaps the pool \
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
            "cordon.toml:85: switch \"tor-1\".name: switch `tor-1` is defined twice; the first is switch \"tor-1\" \
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
            "cordon.toml:85: tenant \"sales\".name: tenant `sales` is defined twice; the first is tenant \"sales\" \
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
            "cordon.toml:85: server \"sbc-01\".name: server `sbc-01` is defined twice; the first is server \
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
            "cordon.toml:88: server \"sbc-02\".nic[0].mac: MAC `02:00:00:00:01:01` is already the MAC of server \
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
            "cordon.toml:90: server \"sbc-02\".nic[0].ip: `10.10.0.11` is already the address of server \
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
            "cordon.toml:92: server \"sbc-02\".nic[0].port: port `p-sbc-01` of switch `tor-1` is already the port \
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
fn server_policy_keys() {
    check_cases(&[
        (
            "invalid server action",
            &[("action = \"reboot\"", "action = \"none\"")],
            "cordon.toml:46: server \"db-01\".action: `none` is not a known action (expected one of: quarantine, \
             reboot, quarantine_reboot, notify, ignore)",
        ),
        (
            "protected as a string",
            &[("protected = true", "protected = \"yes\"")],
            "cordon.toml:47: server \"db-01\".protected: expected a boolean (true or false), found a string",
        ),
        (
            "action as a boolean",
            &[("action = \"reboot\"", "action = true")],
            "cordon.toml:46: server \"db-01\".action: expected a string, found a boolean",
        ),
    ]);
    let config = parse_ok(&edited(&[("protected = true", "protected = false")]));
    assert!(!config.server("db-01").unwrap().protected);
}

#[test]
fn source_rules() {
    check_cases(&[
        (
            "duplicate source name",
            &[("name = \"ddi\"", "name = \"ids-1\""), ("sources = [\"ids-1\", \"ddi\"]", "sources = [\"ids-1\"]")],
            "cordon.toml:60: source \"ids-1\".name: source `ids-1` is defined twice; the first is source \"ids-1\" \
             (line 53)",
        ),
        (
            "invalid source name",
            &[("name = \"hooks\"", "name = \"web hooks\"")],
            "cordon.toml:67: source \"web hooks\".name: `web hooks` is not a valid name (use only letters, digits, \
             '.', '_' and '-')",
        ),
        (
            "missing type",
            &[("type = \"webhook\"                           # POST /api/v1/detections\n", "")],
            "cordon.toml:66: source \"hooks\".type: missing: every source needs a type (suricata-eve, cef-syslog or \
             webhook)",
        ),
        (
            "unknown type",
            &[("type = \"webhook\"", "type = \"clamav\"")],
            "cordon.toml:68: source \"hooks\".type: `clamav` is not a known type (expected one of: suricata-eve, \
             cef-syslog, webhook)",
        ),
        (
            "a key of another type",
            &[(
                "path = \"/var/log/suricata/eve.json\"",
                "path = \"/var/log/suricata/eve.json\"\nlisten_udp = \"127.0.0.1:1\"",
            )],
            "cordon.toml:57: source \"ids-1\".listen_udp: does not apply to a suricata-eve source (its keys: name, \
             type, path, socket)",
        ),
        (
            "a key of another type on a webhook",
            &[("hmac_secret_file = ", "profile = \"generic\"\nhmac_secret_file = ")],
            "cordon.toml:69: source \"hooks\".profile: does not apply to a webhook source (its keys: name, type, \
             token_file, hmac_secret_file)",
        ),
        (
            "unknown key in a source",
            &[("profile = \"deep-discovery\"", "profil = \"deep-discovery\"")],
            "cordon.toml:64: source \"ddi\".profil: unknown key (expected one of: name, type, path, socket, \
             listen_udp, listen_tcp, profile, allowed_peers, token_file, hmac_secret_file)",
        ),
        (
            "suricata-eve without path or socket",
            &[("path = \"/var/log/suricata/eve.json\"", "")],
            "cordon.toml:53: source \"ids-1\".path: missing: a suricata-eve source needs a path (an EVE JSON file, \
             followed like tail -F), a socket (a unix_stream socket), or both",
        ),
        (
            "empty path",
            &[("path = \"/var/log/suricata/eve.json\"", "path = \"\"")],
            "cordon.toml:56: source \"ids-1\".path: must not be empty",
        ),
        (
            "socket path too long",
            &[("# socket = \"/run/cordon/eve.sock\"", &format!("socket = \"/run/{}.sock\"", "s".repeat(100)))],
            &format!(
                "cordon.toml:57: source \"ids-1\".socket: `/run/{}.sock` is 110 bytes long; unix socket paths are at \
                 most 107",
                "s".repeat(100)
            ),
        ),
        (
            "two sources on one file",
            &[("hmac_secret_file = \"/etc/cordon/hook.key\"", "hmac_secret_file = \"/var/log/suricata/eve.json\"")],
            "cordon.toml:69: source \"hooks\".hmac_secret_file: `/var/log/suricata/eve.json` is already the path of \
             source \"ids-1\" (line 53)",
        ),
        (
            "cef-syslog without listen address",
            &[("listen_udp = \"127.0.0.1:5514\"\n", ""), ("listen_tcp = \"127.0.0.1:5514\"\n", "")],
            "cordon.toml:59: source \"ddi\".listen_udp: missing: a cef-syslog source needs listen_udp, listen_tcp, \
             or both (an IP:port, like 127.0.0.1:5514)",
        ),
        (
            "bad listen address",
            &[("listen_udp = \"127.0.0.1:5514\"", "listen_udp = \"5514\"")],
            "cordon.toml:62: source \"ddi\".listen_udp: `5514` is not a listen address (expected IP:port, like \
             127.0.0.1:8080 or [::1]:8080)",
        ),
        (
            "listen_tcp on the API's address",
            &[("listen_tcp = \"127.0.0.1:5514\"", "listen_tcp = \"127.0.0.1:8080\"")],
            "cordon.toml:63: source \"ddi\".listen_tcp: `127.0.0.1:8080` is already the address of manager.listen",
        ),
        (
            "two sources on one UDP address",
            &[("", "[[source]]\nname = \"ddi-2\"\ntype = \"cef-syslog\"\nlisten_udp = \"127.0.0.1:5514\"\n")],
            "cordon.toml:87: source \"ddi-2\".listen_udp: `127.0.0.1:5514` is already the listen_udp of source \
             \"ddi\" (line 59)",
        ),
        (
            "unknown profile",
            &[("profile = \"deep-discovery\"", "profile = \"ddi\"")],
            "cordon.toml:64: source \"ddi\".profile: `ddi` is not a known profile (expected one of: generic, \
             deep-discovery)",
        ),
        (
            "allowed_peers as a string",
            &[("profile = \"deep-discovery\"", "allowed_peers = \"10.0.0.1\"")],
            "cordon.toml:64: source \"ddi\".allowed_peers: expected an array of strings, like [\"10.0.0.1\"], found \
             a string",
        ),
        (
            "allowed_peers empty",
            &[("profile = \"deep-discovery\"", "allowed_peers = []")],
            "cordon.toml:64: source \"ddi\".allowed_peers: must not be empty; remove the key to accept every peer",
        ),
        (
            "allowed_peers with a bad item",
            &[("profile = \"deep-discovery\"", "allowed_peers = [\"10.0.0.1\", \"10.0.0.0/33\", 7]")],
            "cordon.toml:64: source \"ddi\".allowed_peers[2]: expected a string, found an integer\ncordon.toml:64: \
             source \"ddi\".allowed_peers[1]: `10.0.0.0/33` is not an address or a subnet (like 10.0.0.5 or \
             10.0.0.0/24)",
        ),
        (
            "allowed_peers with host bits",
            &[("profile = \"deep-discovery\"", "allowed_peers = [\"10.0.0.1/24\"]")],
            "cordon.toml:64: source \"ddi\".allowed_peers[0]: `10.0.0.1/24` has host bits set; did you mean \
             10.0.0.0/24?",
        ),
        (
            "webhook with both secrets",
            &[("hmac_secret_file = ", "token_file = \"hook.token\"\nhmac_secret_file = ")],
            "cordon.toml:70: source \"hooks\".hmac_secret_file: a webhook source takes token_file or \
             hmac_secret_file, not both",
        ),
        (
            "webhook with neither",
            &[("hmac_secret_file = \"/etc/cordon/hook.key\"", "")],
            "cordon.toml:66: source \"hooks\".token_file: missing: a webhook source needs token_file (a file \
             holding the bearer token senders present) or hmac_secret_file (a file holding the key senders sign \
             requests with)",
        ),
    ]);
    assert_eq!(
        outcome("[source]\nname = \"x\"\n"),
        "cordon.toml:1: source: expected an array of tables (write it [[source]]), found a table"
    );
}

#[test]
fn source_values_and_relative_paths() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("cordon.toml");
    let text = r#"
[[source]]
name = "eve"
type = "suricata-eve"
path = "logs/eve.json"
socket = "/run/cordon/eve.sock"

[[source]]
name = "syslog"
type = "cef-syslog"
listen_tcp = "[::1]:6514"
allowed_peers = ["10.0.0.5", "192.168.0.0/16", "fd00::/8"]

[[source]]
name = "hook"
type = "webhook"
token_file = "secrets/hook.token"
"#;
    std::fs::write(&path, text).unwrap();
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.source("eve").unwrap().kind,
        SourceKind::SuricataEve {
            path: Some(folder.path().join("logs/eve.json")),
            socket: Some("/run/cordon/eve.sock".into())
        }
    );
    assert_eq!(
        config.source("syslog").unwrap().kind,
        SourceKind::CefSyslog {
            listen_udp: None,
            listen_tcp: Some("[::1]:6514".parse().unwrap()),
            profile: CefProfile::Generic,
            allowed_peers: vec![
                "10.0.0.5/32".parse().unwrap(),
                "192.168.0.0/16".parse().unwrap(),
                "fd00::/8".parse().unwrap()
            ],
        }
    );
    assert_eq!(
        config.source("hook").unwrap().kind,
        SourceKind::Webhook { token_file: Some(folder.path().join("secrets/hook.token")), hmac_secret_file: None }
    );
    assert_eq!(config.source("hook").unwrap().kind.type_name(), "webhook");
    assert_eq!(SourceKind::TYPES, &["suricata-eve", "cef-syslog", "webhook"]);
    assert_eq!("deep-discovery".parse::<CefProfile>(), Ok(CefProfile::DeepDiscovery));
    assert!("Generic".parse::<CefProfile>().is_err());

    // Port 0 (any free port) may be used by several listeners.
    let text = "[[source]]\nname = \"a\"\ntype = \"cef-syslog\"\nlisten_udp = \"127.0.0.1:0\"\nlisten_tcp = \
                \"127.0.0.1:0\"\n[[source]]\nname = \"b\"\ntype = \"cef-syslog\"\nlisten_udp = \"127.0.0.1:0\"\n";
    assert_eq!(parse_ok(text).sources.len(), 2);
    // The same port on UDP and TCP is fine.
    assert_eq!(outcome(EXAMPLE), "ok");
}

#[test]
fn policy_rules() {
    check_cases(&[
        (
            "unknown default_action",
            &[("default_action = \"notify\"", "default_action = \"none\"")],
            "cordon.toml:72: policy.default_action: `none` is not a known default_action (expected one of: \
             quarantine, reboot, quarantine_reboot, notify, ignore)",
        ),
        (
            "unknown default_mode",
            &[("shadow = false", "default_mode = \"manual\"")],
            "cordon.toml:76: policy.default_mode: `manual` is not a known default_mode (expected one of: auto, \
             approve)",
        ),
        (
            "unknown key in policy",
            &[("shadow = false", "shadows = false")],
            "cordon.toml:76: policy.shadows: unknown key (expected one of: default_action, default_mode, \
             exclude_keywords, max_auto_actions, window, cooldown, shadow, rule)",
        ),
        (
            "shadow as a string",
            &[("shadow = false", "shadow = \"false\"")],
            "cordon.toml:76: policy.shadow: expected a boolean (true or false), found a string",
        ),
        (
            "empty exclusion keyword",
            &[("exclude_keywords = [\"TEST-IGNORE\"]", "exclude_keywords = [\"TEST-IGNORE\", \"\"]")],
            "cordon.toml:73: policy.exclude_keywords[1]: must not be empty (it would match every signature)",
        ),
        (
            "exclusion keyword not a string",
            &[("exclude_keywords = [\"TEST-IGNORE\"]", "exclude_keywords = [1]")],
            "cordon.toml:73: policy.exclude_keywords[0]: expected a string, found an integer",
        ),
        (
            "max_auto_actions 0",
            &[("max_auto_actions = 50", "max_auto_actions = 0")],
            "cordon.toml:74: policy.max_auto_actions: `0` is too small: at least 1 (to hold every automatic action \
             for approval, set default_mode = \"approve\")",
        ),
        (
            "max_auto_actions negative",
            &[("max_auto_actions = 50", "max_auto_actions = -3")],
            "cordon.toml:74: policy.max_auto_actions: `-3` is too small: at least 1 (to hold every automatic \
             action for approval, set default_mode = \"approve\")",
        ),
        (
            "max_auto_actions too large",
            &[("max_auto_actions = 50", "max_auto_actions = 5_000_000_000")],
            "cordon.toml:74: policy.max_auto_actions: `5000000000` is too large (at most 4294967295)",
        ),
        (
            "max_auto_actions as a string",
            &[("max_auto_actions = 50", "max_auto_actions = \"50\"")],
            "cordon.toml:74: policy.max_auto_actions: expected an integer, found a string",
        ),
        (
            "window without a unit",
            &[("window = \"10m\"", "window = \"600\"")],
            "cordon.toml:75: policy.window: `600` is not a duration (expected a whole number and a unit, s, m, h or \
             d, like \"30s\", \"10m\", \"2h\" or \"1d\")",
        ),
        (
            "window as an integer",
            &[("window = \"10m\"", "window = 600")],
            "cordon.toml:75: policy.window: expected a string, found an integer",
        ),
        (
            "window of zero",
            &[("window = \"10m\"", "window = \"0s\"")],
            "cordon.toml:75: policy.window: `0s` is no time at all; the window must be longer than 0s",
        ),
        (
            "compound cooldown",
            &[("shadow = false", "cooldown = \"1h30m\"")],
            "cordon.toml:76: policy.cooldown: `1h30m` is not a duration (expected a whole number and a unit, s, m, \
             h or d, like \"30s\", \"10m\", \"2h\" or \"1d\")",
        ),
        (
            "cooldown too long",
            &[("shadow = false", "cooldown = \"99999999999999999999s\"")],
            "cordon.toml:76: policy.cooldown: `99999999999999999999s` is too long a duration",
        ),
        (
            "policy written as an array",
            &[("[policy]", "[[policy]]")],
            "cordon.toml:71: policy: expected a table (write it [policy]), found an array",
        ),
        (
            "rule written as a table",
            &[("[[policy.rule]]", "[policy.rule]")],
            "cordon.toml:78: policy.rule: expected an array of tables (write it [[policy.rule]]), found a table",
        ),
    ]);
}

#[test]
fn policy_durations() {
    let policy = |extra: &str| parse_ok(&format!("[policy]\n{extra}\n")).policy;
    assert_eq!(policy("").window_secs, 600);
    assert_eq!(policy("window = \"30s\"").window_secs, 30);
    assert_eq!(policy("window = \"10m\"").window_secs, 600);
    assert_eq!(policy("window = \"2h\"").window_secs, 7200);
    assert_eq!(policy("window = \"1d\"").window_secs, 86_400);
    assert_eq!(policy("cooldown = \"0s\"").cooldown_secs, 0);
    assert_eq!(policy("cooldown = \"15m\"").cooldown_secs, 900);
    for bad in ["", "s", "10", "10 m", " 10m", "1.5h", "-5s", "+5s", "10M", "10w", "1h30m", "１0s", "10ms"] {
        let text = format!("[policy]\nwindow = {bad:?}\n");
        assert!(outcome(&text).contains("is not a duration"), "{bad:?}: {}", outcome(&text));
    }
    let all = parse_ok(
        "[policy]\ndefault_action = \"quarantine_reboot\"\ndefault_mode = \"approve\"\nmax_auto_actions = 1\nshadow = \
         true\nexclude_keywords = []\n",
    )
    .policy;
    assert_eq!((all.default_action, all.default_mode), (PolicyAction::QuarantineReboot, PolicyMode::Approve));
    assert_eq!((all.max_auto_actions, all.shadow), (1, true));
    assert!(all.exclude_keywords.is_empty());
}

#[test]
fn policy_rule_rules() {
    check_cases(&[
        (
            "rule without name",
            &[("name = \"serious network alerts\"\n", "")],
            "cordon.toml:78: policy.rule[0].name: missing: every rule needs a name",
        ),
        (
            "rule with a blank name",
            &[("name = \"serious network alerts\"", "name = \"  \"")],
            "cordon.toml:79: policy.rule \"  \".name: must not be empty",
        ),
        (
            "rule name on two lines",
            &[("name = \"serious network alerts\"", "name = \"serious\\nalerts\"")],
            "cordon.toml:79: policy.rule \"serious\\nalerts\".name: \"serious\\nalerts\" is not a valid rule name (no \
             control characters, such as line breaks)",
        ),
        (
            "duplicate rule name",
            &[("", "[[policy.rule]]\nname = \"serious network alerts\"\naction = \"notify\"\n")],
            "cordon.toml:85: policy.rule \"serious network alerts\".name: rule `serious network alerts` is defined \
             twice; the first is policy.rule \"serious network alerts\" (line 78)",
        ),
        (
            "rule without action",
            &[("action = \"quarantine\"\n", "")],
            "cordon.toml:78: policy.rule \"serious network alerts\".action: missing: every rule needs an action \
             (quarantine, reboot, quarantine_reboot, notify or ignore)",
        ),
        (
            "unknown rule action",
            &[("action = \"quarantine\"", "action = \"isolate\"")],
            "cordon.toml:82: policy.rule \"serious network alerts\".action: `isolate` is not a known action \
             (expected one of: quarantine, reboot, quarantine_reboot, notify, ignore)",
        ),
        (
            "unknown rule mode",
            &[("mode = \"auto\"", "mode = \"automatic\"")],
            "cordon.toml:83: policy.rule \"serious network alerts\".mode: `automatic` is not a known mode (expected \
             one of: auto, approve)",
        ),
        (
            "unknown severity",
            &[("min_severity = \"high\"", "min_severity = \"severe\"")],
            "cordon.toml:81: policy.rule \"serious network alerts\".min_severity: `severe` is not a known \
             min_severity (expected one of: info, low, medium, high, critical)",
        ),
        (
            "unknown subject",
            &[("mode = \"auto\"", "subject = \"victim\"")],
            "cordon.toml:83: policy.rule \"serious network alerts\".subject: `victim` is not a known subject \
             (expected one of: target, source, src, dest)",
        ),
        (
            "rule shadow as an integer",
            &[("mode = \"auto\"", "shadow = 1")],
            "cordon.toml:83: policy.rule \"serious network alerts\".shadow: expected a boolean (true or false), \
             found an integer",
        ),
        (
            "unknown key in a rule",
            &[("mode = \"auto\"", "severity = \"high\"")],
            "cordon.toml:83: policy.rule \"serious network alerts\".severity: unknown key (expected one of: name, \
             sources, min_severity, signature_ids, categories, networks, tenants, servers, action, mode, shadow, \
             subject)",
        ),
        (
            "unknown source",
            &[("sources = [\"ids-1\", \"ddi\"]", "sources = [\"ids-1\", \"ids-2\"]")],
            "cordon.toml:80: policy.rule \"serious network alerts\".sources[1]: no source is named `ids-2`",
        ),
        (
            "sources as a string",
            &[("sources = [\"ids-1\", \"ddi\"]", "sources = \"ids-1\"")],
            "cordon.toml:80: policy.rule \"serious network alerts\".sources: expected an array of strings, like \
             [\"ids-1\"], found a string",
        ),
        (
            "empty sources",
            &[("sources = [\"ids-1\", \"ddi\"]", "sources = []")],
            "cordon.toml:80: policy.rule \"serious network alerts\".sources: must not be empty; remove the key to \
             match any source",
        ),
        (
            "unknown network",
            &[("mode = \"auto\"", "networks = [\"office\", \"lab\"]")],
            "cordon.toml:83: policy.rule \"serious network alerts\".networks[1]: no network is named `lab`",
        ),
        (
            "unknown tenant",
            &[("mode = \"auto\"", "tenants = [\"finance\"]")],
            "cordon.toml:83: policy.rule \"serious network alerts\".tenants[0]: no tenant is named `finance`",
        ),
        (
            "unknown server",
            &[("mode = \"auto\"", "servers = [\"sbc-01\", \"db-02\"]")],
            "cordon.toml:83: policy.rule \"serious network alerts\".servers[1]: no server is named `db-02`",
        ),
        (
            "empty category",
            &[("mode = \"auto\"", "categories = [\"\"]")],
            "cordon.toml:83: policy.rule \"serious network alerts\".categories[0]: must not be empty",
        ),
        (
            "signature id that is a float",
            &[("mode = \"auto\"", "signature_ids = [2019401, 1.5]")],
            "cordon.toml:83: policy.rule \"serious network alerts\".signature_ids[1]: expected a string or an \
             integer, found a float",
        ),
        (
            "negative signature id",
            &[("mode = \"auto\"", "signature_ids = [-1]")],
            "cordon.toml:83: policy.rule \"serious network alerts\".signature_ids[0]: `-1` is not a valid id \
             (expected a string or a non-negative integer)",
        ),
        (
            "signature ids as an integer",
            &[("mode = \"auto\"", "signature_ids = 2019401")],
            "cordon.toml:83: policy.rule \"serious network alerts\".signature_ids: expected an array of strings or \
             integers, found an integer",
        ),
    ]);
}

#[test]
fn policy_rule_values() {
    let text = edited(&[(
        "mode = \"auto\"",
        "shadow = true\nsubject = \"dest\"\nsignature_ids = [2019401, \"ET-42\", 0x10]\ncategories = [\"Trojan\"]\n\
         networks = [\"office\"]\ntenants = [\"sales\"]\nservers = [\"sbc-01\", \"db-01\"]",
    )]);
    let config = parse_ok(&text);
    let rule = &config.policy.rules[0];
    assert_eq!(rule.signature_ids, ["2019401", "ET-42", "16"]);
    assert_eq!(rule.categories, ["Trojan"]);
    assert_eq!(
        (rule.networks.as_slice(), rule.tenants.as_slice()),
        (&["office".to_string()][..], &["sales".to_string()][..])
    );
    assert_eq!(rule.servers, ["sbc-01", "db-01"]);
    assert_eq!((rule.shadow, rule.subject), (true, Some(SubjectSide::Dest)));
    // Without `mode`, a rule takes the policy's default_mode.
    assert_eq!(rule.mode, PolicyMode::Auto);
    let text = edited(&[("mode = \"auto\"", ""), ("shadow = false", "default_mode = \"approve\"")]);
    assert_eq!(parse_ok(&text).policy.rules[0].mode, PolicyMode::Approve);
    // Rules keep their file order; a rule with no criterion is allowed (it matches everything).
    let text =
        edited(&[("", "[[policy.rule]]\nname = \"everything else\"\naction = \"notify\"\nmode = \"approve\"\n")]);
    let policy = parse_ok(&text).policy;
    let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["serious network alerts", "everything else"]);
    assert_eq!((policy.rules[1].action, policy.rules[1].mode), (PolicyAction::Notify, PolicyMode::Approve));
    // [[policy.rule]] without [policy] keys: the defaults, plus the rule.
    let policy = parse_ok("[[policy.rule]]\nname = \"all\"\naction = \"ignore\"\n").policy;
    assert_eq!(policy.rules.len(), 1);
    assert_eq!(Policy { rules: vec![], ..policy }, Policy::default());
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
cordon.toml:84: server \"bad name\".nic: missing: every server needs at least one [[server.nic]]
cordon.toml:85: server \"bad name\".name: `bad name` is not a valid name (use only letters, digits, '.', '_' and '-')
cordon.toml:87: server \"bad name\".extra: unknown key (expected one of: name, kind, tenant, user_email, action, protected, nic)";
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
        Just("[[source]]\n".to_string()),
        Just("type = \"cef-syslog\"\nlisten_udp = \"127.0.0.1:1\"\n".to_string()),
        Just("type = \"suricata-eve\"\npath = \"eve.json\"\n".to_string()),
        Just("[policy]\n".to_string()),
        Just("[[policy.rule]]\n".to_string()),
        Just("action = \"quarantine\"\n".to_string()),
        Just("sources = [\"a\", 1]\n".to_string()),
        Just("window = \"10m\"\n".to_string()),
        Just("protected = true\n".to_string()),
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
