use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use cordon_model::ThreatSeverity;
use cordon_model::policy::{PolicyMode, Rule, SubjectSide};
use proptest::prelude::*;

use super::*;

/// examples/cordon.toml, which the documentation shows; it must stay valid.
const EXAMPLE: &str = include_str!("../../../examples/cordon.toml");

/// Another server, appended after the example's last line (120): its `[[server]]` is line 121.
const SERVER_2: &str = r#"
[[server]]
name = "sbc-03"
kind = "physical"
[[server.nic]]
mac = "02:00:00:00:01:03"
network = "office"
ip = "10.10.0.13"
switch = "tor-1"
port = "p-sbc-03"
"#;

/// The example with each `(from, to)` applied once (an empty `from` appends `to`).
fn edited(edits: &[(&str, &str)]) -> String {
    edited_from(EXAMPLE, edits)
}

/// `base` with each `(from, to)` applied once (an empty `from` appends `to`).
fn edited_from(base: &str, edits: &[(&str, &str)]) -> String {
    let mut text = base.to_string();
    for (from, to) in edits {
        if from.is_empty() {
            text.push_str(to.trim_start_matches('\n'));
        } else {
            assert!(text.contains(from), "the text has no `{from}`");
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
    check_cases_on(EXAMPLE, cases);
}

/// [`check_cases`] with edits to `base` instead of the example.
fn check_cases_on(base: &str, cases: &[Case<'_>]) {
    let mut failures = Vec::new();
    for (name, edits, expected) in cases {
        let actual = outcome(&edited_from(base, edits));
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
    assert_eq!((config.manager.graceful_timeout_secs, config.manager.reboot_deadline_secs), (30, 300));

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

    assert_eq!(
        config.hypervisors,
        vec![HypervisorConfig {
            name: "kvm-1".into(),
            driver: HypervisorDriverKind::Libvirt,
            uri: "qemu:///system".into(),
            netns: None,
        }]
    );
    assert_eq!(config.hypervisor("kvm-1"), Some(&config.hypervisors[0]));
    assert!(config.hypervisor("nope").is_none());

    assert_eq!(config.tenants.len(), 1);
    assert_eq!(config.tenants[0].name, "sales");
    assert_eq!(config.tenants[0].admin_email, "infra-sales@example.com");
    assert_eq!(config.tenant("sales").map(|t| t.admin_email.as_str()), Some("infra-sales@example.com"));

    let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["sbc-01", "sbc-02", "vpc-001", "db-01"]);
    let server = config.server("sbc-01").unwrap();
    assert_eq!((server.action, server.protected), (None, false));
    assert_eq!((server.hypervisor.as_deref(), server.domain.as_deref(), server.bmc.as_ref()), (None, None, None));
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

    let sbc = config.server("sbc-02").unwrap();
    assert_eq!((sbc.kind, sbc.tenant.as_deref(), sbc.user_email.as_deref()), (ServerKind::Physical, None, None));
    assert_eq!((sbc.hypervisor.as_deref(), sbc.domain.as_deref()), (None, None));
    assert_eq!(sbc.nics.len(), 1);
    assert_eq!(sbc.nics[0].mac, "02:00:00:00:01:02".parse::<MacAddr>().unwrap());
    assert_eq!((sbc.nics[0].network.as_str(), sbc.nics[0].ip), ("office", "10.10.0.12".parse::<IpAddr>().unwrap()));
    assert_eq!((sbc.nics[0].switch.as_deref(), sbc.nics[0].port.as_deref()), (Some("tor-1"), Some("p-sbc-02")));
    assert_eq!(
        sbc.bmc,
        Some(BmcConfig {
            driver: BmcDriverKind::Redfish,
            endpoint: "https://127.0.0.1:8443".into(),
            system: "/redfish/v1/Systems/1".into(),
            username: "admin".into(),
            password_file: "/etc/cordon/sbc-02.bmc".into(),
            ca_file: Some("/etc/cordon/bmc-ca.pem".into()),
            insecure: false,
        })
    );

    let vpc = config.server("vpc-001").unwrap();
    assert_eq!((vpc.kind, vpc.tenant.as_deref()), (ServerKind::Virtual, Some("sales")));
    assert_eq!(
        (vpc.hypervisor.as_deref(), vpc.domain.as_deref(), vpc.bmc.as_ref()),
        (Some("kvm-1"), Some("vpc-001"), None)
    );
    assert_eq!((vpc.action, vpc.protected), (None, false));
    assert_eq!(vpc.nics.len(), 1);
    assert_eq!(vpc.nics[0].mac, "52:54:00:00:00:11".parse::<MacAddr>().unwrap());
    assert_eq!((vpc.nics[0].network.as_str(), vpc.nics[0].ip), ("office", "10.10.0.21".parse::<IpAddr>().unwrap()));
    assert_eq!((vpc.nics[0].switch.as_deref(), vpc.nics[0].port.as_deref()), (None, None));
    // The VM's NIC is attached to its network's bridge on the host, and moved to the quarantine one.
    let vpc_network = config.network(&vpc.nics[0].network).unwrap();
    assert_eq!(vpc_network.bridge.as_deref(), Some("br-office"));
    let vpc_quarantine = config.quarantine_network_of(vpc_network).unwrap();
    assert_eq!(vpc_quarantine.bridge.as_deref(), Some("br-quarantine"));

    let db = config.server("db-01").unwrap();
    assert_eq!((db.kind, db.action, db.protected), (ServerKind::Virtual, Some(PolicyAction::Reboot), true));
    assert_eq!((db.hypervisor.as_deref(), db.domain.as_deref(), db.bmc.as_ref()), (Some("kvm-1"), Some("db-01"), None));
    assert_eq!(db.nics[0].ip, "10.10.0.22".parse::<IpAddr>().unwrap());
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
                max_rate: None,
            },
            SourceConfig {
                name: "ddi".into(),
                kind: SourceKind::CefSyslog {
                    listen_udp: Some("127.0.0.1:5514".parse().unwrap()),
                    listen_tcp: Some("127.0.0.1:5514".parse().unwrap()),
                    profile: CefProfile::DeepDiscovery,
                    allowed_peers: vec![],
                },
                max_rate: None,
            },
            SourceConfig {
                name: "hooks".into(),
                kind: SourceKind::Webhook { token_file: None, hmac_secret_file: Some("/etc/cordon/hook.key".into()) },
                max_rate: None,
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
    // What the blocks refer to: the example up to its hypervisor (manager, networks, switch).
    let mut text = EXAMPLE.split("[[hypervisor]]").next().unwrap().to_string();
    text.push_str("[[tenant]]\nname = \"sales\"\nadmin_email = \"a@example.com\"\n");
    let mut blocks = 0;
    for block in docs.split("```toml\n").skip(1) {
        text.push_str(block.split("```").next().unwrap());
        blocks += 1;
    }
    assert!(blocks >= 3);
    let config = parse_ok(&text);
    assert_eq!(config.hypervisor("kvm-1").map(|h| h.uri.as_str()), Some("qemu:///system"));
    assert_eq!(config.server("vpc-001").and_then(|s| s.domain.as_deref()), Some("vpc-001"));
    let bmc = config.server("sbc-02").and_then(|s| s.bmc.clone()).unwrap();
    assert_eq!((bmc.endpoint.as_str(), bmc.insecure), ("https://10.0.0.5", false));
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
        assert_eq!(config.manager.graceful_timeout_secs, DEFAULT_GRACEFUL_TIMEOUT_SECS);
        assert_eq!(config.manager.reboot_deadline_secs, DEFAULT_REBOOT_DEADLINE_SECS);
        assert_eq!((DEFAULT_GRACEFUL_TIMEOUT_SECS, DEFAULT_REBOOT_DEADLINE_SECS), (30, 300));
        assert!(config.networks.is_empty() && config.switches.is_empty() && config.hypervisors.is_empty());
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
        outcome("[[server]]\nname = \"vm\"\nkind = \"physical\"\nnic = []\n"),
        "cordon.toml:1: server \"vm\".nic: missing: every server needs at least one [[server.nic]]"
    );
    assert_eq!(
        outcome("[[server]]\nname = \"vm\"\nkind = \"physical\"\nnic = \"eth0\"\n"),
        "cordon.toml:4: server \"vm\".nic: expected an array of tables (write it [[server.nic]]), found a string"
    );
}

#[test]
fn a_server_appended_to_the_example_parses() {
    let config = parse_ok(&edited(&[("", SERVER_2)]));
    let server = config.server("sbc-03").unwrap();
    assert_eq!((server.kind, server.tenant.as_deref()), (ServerKind::Physical, None));
    assert_eq!((server.hypervisor.as_deref(), server.domain.as_deref(), server.bmc.as_ref()), (None, None, None));
    assert_eq!((server.nics[0].switch.as_deref(), server.nics[0].port.as_deref()), (Some("tor-1"), Some("p-sbc-03")));
}

#[test]
fn inline_tables_are_accepted_too() {
    let text = r#"
network = [
  { name = "q", role = "quarantine", subnet = "10.99.0.0/24", pool = "10.99.0.10-10.99.0.20", bridge = "br-q" },
  { name = "o", role = "operational", subnet = "10.10.0.0/24", quarantine_network = "q", bridge = "br-o" },
]
hypervisor = [{ name = "h", driver = "libvirt", uri = "qemu+ssh://root@h/system" }]
switch = [{ name = "s", driver = "linux-bridge" }]
[[server]]
name = "vm"
kind = "virtual"
hypervisor = "h"
domain = "vm"
nic = [{ mac = "02:00:00:00:00:01", network = "o", ip = "10.10.0.5" }]
[[server]]
name = "pm"
kind = "physical"
nic = [{ mac = "02:00:00:00:00:02", network = "o", ip = "10.10.0.6", switch = "s", port = "p-pm" }]
bmc = { driver = "redfish", endpoint = "https://[fd00::5]:8443/", system = "/redfish/v1/Systems/pm", username = "u", password_file = "/p" }
"#;
    let config = parse_ok(text);
    assert_eq!(config.networks.len(), 2);
    assert_eq!(config.servers[0].nics.len(), 1);
    assert_eq!(config.hypervisor("h").map(|h| h.uri.as_str()), Some("qemu+ssh://root@h/system"));
    let bmc = config.servers[1].bmc.as_ref().unwrap();
    assert_eq!((bmc.endpoint.as_str(), bmc.system.as_str()), ("https://[fd00::5]:8443", "/redfish/v1/Systems/pm"));
    assert_eq!((bmc.ca_file.as_ref(), bmc.insecure), (None, false));
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
            "cordon.toml:2: manager.lisen: unknown key (expected one of: listen, data_dir, instance, graceful_timeout, \
             reboot_deadline, max_attempts, retry_backoff, reconcile_interval, on_drift, driver_timeout, tls_cert_file, tls_key_file, allow_plain_http, session_idle_timeout, session_lifetime, secure_cookies, database, \
             database_password_file, action_lease, workers)",
        ),
        (
            "typo in a network",
            &[("gateway = \"10.99.0.1\"", "gatway = \"10.99.0.1\"")],
            "cordon.toml:19: network \"quarantine\".gatway: unknown key (expected one of: name, role, subnet, \
             gateway, quarantine_network, pool, bridge, vlan)",
        ),
        (
            "typo in a NIC",
            &[("port = ", "prot = ")],
            "cordon.toml:46: server \"sbc-01\".nic[0].port: missing: a NIC with a switch needs its port on that \
             switch\ncordon.toml:47: server \"sbc-01\".nic[0].prot: unknown key (expected one of: mac, network, ip, \
             switch, port)",
        ),
        (
            "typo in a server",
            &[("user_email =", "usr_email =")],
            "cordon.toml:41: server \"sbc-01\".usr_email: unknown key (expected one of: name, kind, tenant, \
             user_email, action, protected, hypervisor, domain, nic, bmc)",
        ),
        (
            "unknown section",
            &[("", "[managre]\nlisten = \"127.0.0.1:1\"\n")],
            "cordon.toml:121: managre: unknown section (expected one of: manager, network, switch, hypervisor, \
             tenant, server, source, policy, notify)",
        ),
        (
            "quoted unknown key",
            &[("[manager]\n", "[manager]\n\"my key\" = \"x\"\n")],
            "cordon.toml:2: manager.\"my key\": unknown key (expected one of: listen, data_dir, instance, graceful_timeout, \
             reboot_deadline, max_attempts, retry_backoff, reconcile_interval, on_drift, driver_timeout, tls_cert_file, tls_key_file, allow_plain_http, session_idle_timeout, session_lifetime, secure_cookies, database, \
             database_password_file, action_lease, workers)",
        ),
    ]);
}

#[test]
fn type_errors_name_key_and_line() {
    check_cases(&[
        (
            "integer port",
            &[("port = \"p-sbc-01\"", "port = 5")],
            "cordon.toml:47: server \"sbc-01\".nic[0].port: expected a string, found an integer",
        ),
        (
            "array listen",
            &[("listen = \"127.0.0.1:8080\"", "listen = [\"127.0.0.1:8080\"]")],
            "cordon.toml:2: manager.listen: expected a string, found an array",
        ),
        (
            "boolean role",
            &[("role = \"quarantine\"", "role = true")],
            "cordon.toml:17: network \"quarantine\".role: expected a string, found a boolean",
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
            "cordon.toml:9: network \"office\".role: invalid TOML: key with no value, expected `=`",
        ),
        (
            "duplicate key",
            &[("ip = \"10.10.0.11\"", "ip = \"10.10.0.11\"\nip = \"10.10.0.12\"")],
            "cordon.toml:46: server \"sbc-01\".nic[0].ip: invalid TOML: duplicate key",
        ),
        (
            "broken header",
            &[("[[switch]]", "[[switch]")],
            "cordon.toml:23: switch: invalid TOML: unclosed array table, expected `]`",
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
            &[
                ("name = \"tor-1\"", "name = \"tor 1\""),
                ("switch = \"tor-1\"", "switch = \"tor 1\""),
                ("switch = \"tor-1\"", "switch = \"tor 1\""),
            ],
            "cordon.toml:24: switch \"tor 1\".name: `tor 1` is not a valid name (use only letters, digits, '.', \
             '_' and '-')",
        ),
        (
            "empty name",
            &[
                ("name = \"sales\"", "name = \"\""),
                ("tenant = \"sales\"\n", ""),
                ("tenant = \"sales\"\n", ""),
                ("tenant = \"sales\"\n", ""),
            ],
            "cordon.toml:34: tenant[0].name: must not be empty",
        ),
        (
            "duplicate name",
            &[(
                "",
                "[[network]]\nname = \"office\"\nrole = \"quarantine\"\nsubnet = \"10.98.0.0/24\"\npool = \"10.98.0.10-10.98.0.20\"\n",
            )],
            "cordon.toml:122: network \"office\".name: network `office` is defined twice; the first is network \
             \"office\" (line 7)",
        ),
        (
            "invalid role",
            &[("role = \"operational\"", "role = \"operationl\"")],
            "cordon.toml:9: network \"office\".role: `operationl` is not a known role (expected one of: \
             operational, quarantine)",
        ),
        (
            "missing role",
            &[("role = \"operational\"\n", "")],
            "cordon.toml:7: network \"office\".role: missing: every network needs a role (operational or \
             quarantine)",
        ),
        (
            "invalid subnet",
            &[("subnet = \"10.10.0.0/24\"", "subnet = \"10.10.0.0/33\"")],
            "cordon.toml:10: network \"office\".subnet: `10.10.0.0/33` is not a subnet (expected address/prefix, \
             like 10.10.0.0/24)",
        ),
        (
            "subnet with host bits",
            &[("subnet = \"10.10.0.0/24\"", "subnet = \"10.10.0.5/24\"")],
            "cordon.toml:10: network \"office\".subnet: `10.10.0.5/24` has host bits set; did you mean 10.10.0.0/24?",
        ),
        (
            "gateway outside subnet",
            &[("gateway = \"10.10.0.1\"", "gateway = \"10.10.1.1\"")],
            "cordon.toml:11: network \"office\".gateway: `10.10.1.1` is outside the subnet 10.10.0.0/24",
        ),
        (
            "gateway not an address",
            &[("gateway = \"10.10.0.1\"", "gateway = \"10.10.0\"")],
            "cordon.toml:11: network \"office\".gateway: `10.10.0` is not an IP address",
        ),
        (
            "operational without quarantine_network",
            &[("quarantine_network = \"quarantine\"\n", "")],
            "cordon.toml:7: network \"office\".quarantine_network: missing: an operational network must name the \
             quarantine network its servers are moved to",
        ),
        (
            "quarantine_network that does not exist",
            &[("quarantine_network = \"quarantine\"", "quarantine_network = \"quarantaine\"")],
            "cordon.toml:12: network \"office\".quarantine_network: no network is named `quarantaine`",
        ),
        (
            "quarantine_network that is operational",
            &[("quarantine_network = \"quarantine\"", "quarantine_network = \"office\"")],
            "cordon.toml:12: network \"office\".quarantine_network: network `office` is operational; \
             quarantine_network must name a network with role \"quarantine\"",
        ),
        (
            "operational network with a pool",
            &[("bridge = \"br-office\"", "bridge = \"br-office\"\npool = \"10.10.0.100-10.10.0.110\"")],
            "cordon.toml:14: network \"office\".pool: only a quarantine network has a pool; remove it or set role = \
             \"quarantine\"",
        ),
        (
            "quarantine network without pool",
            &[("pool = \"10.99.0.100-10.99.0.199\"", "")],
            "cordon.toml:15: network \"quarantine\".pool: missing: a quarantine network needs a pool of addresses \
             for quarantined servers, like 10.99.0.100-10.99.0.199",
        ),
        (
            "quarantine network naming a quarantine network",
            &[("role = \"quarantine\"", "role = \"quarantine\"\nquarantine_network = \"office\"")],
            "cordon.toml:18: network \"quarantine\".quarantine_network: a quarantine network must not name a \
             quarantine_network",
        ),
        (
            "pool that ends before it starts",
            &[("pool = \"10.99.0.100-10.99.0.199\"", "pool = \"10.99.0.100-10.98.0.1\"")],
            "cordon.toml:20: network \"quarantine\".pool: `10.99.0.100-10.98.0.1` ends before it starts",
        ),
        (
            "pool outside subnet",
            &[("pool = \"10.99.0.100-10.99.0.199\"", "pool = \"10.99.0.100-10.99.1.20\"")],
            "cordon.toml:20: network \"quarantine\".pool: `10.99.0.100-10.99.1.20` is not inside the subnet \
             10.99.0.0/24",
        ),
        (
            "gateway inside pool",
            &[("gateway = \"10.99.0.1\"", "gateway = \"10.99.0.150\"")],
            "cordon.toml:19: network \"quarantine\".gateway: `10.99.0.150` is inside the pool \
             10.99.0.100-10.99.0.199, which would hand the gateway's address to a server",
        ),
        (
            "overlapping pools",
            &[("", THIRD_QUARANTINE)],
            "cordon.toml:125: network \"quarantine-2\".pool: `10.99.0.150-10.99.1.10` overlaps the pool \
             10.99.0.100-10.99.0.199 of network \"quarantine\" (line 15)",
        ),
        (
            "bridge name too long",
            &[("bridge = \"br-office\"", "bridge = \"br-office-network\"")],
            "cordon.toml:13: network \"office\".bridge: `br-office-network` is 17 bytes long; Linux interface names \
             are at most 15",
        ),
        (
            "bridge name with a slash",
            &[("bridge = \"br-office\"", "bridge = \"br/office\"")],
            "cordon.toml:13: network \"office\".bridge: `br/office` is not a valid Linux interface name (no '/', ':', \
             spaces or control characters; not . or ..)",
        ),
        (
            "bridge shared by two networks",
            &[("bridge = \"br-quarantine\"", "bridge = \"br-office\"")],
            "cordon.toml:21: network \"quarantine\".bridge: bridge `br-office` is already the bridge of network \
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
            "cordon.toml:7: network \"office\".bridge: missing: server \"sbc-01\".nic[0] is on linux-bridge switch \
             `tor-1`, which carries it on this network, so the network needs a bridge",
        ),
        (
            "quarantine network without bridge",
            &[("bridge = \"br-quarantine\"", "")],
            "cordon.toml:15: network \"quarantine\".bridge: missing: server \"sbc-01\".nic[0] is on linux-bridge \
             switch `tor-1`, which moves it to this network on quarantine, so the network needs a bridge",
        ),
    ]);
    // Without a NIC on a linux-bridge switch or of a VM, networks need no bridge.
    let no_nics = VM_ONLY.split("[[server]]").next().unwrap().replace("bridge = \"br-office\"\n", "");
    assert_eq!(outcome(&no_nics.replace("bridge = \"br-quarantine\"\n", "")), "ok");
}

/// Networks, a hypervisor and one VM, nothing else.
const VM_ONLY: &str = r#"[[network]]
name = "office"
role = "operational"
subnet = "10.10.0.0/24"
quarantine_network = "quarantine"
bridge = "br-office"

[[network]]
name = "quarantine"
role = "quarantine"
subnet = "10.99.0.0/24"
pool = "10.99.0.100-10.99.0.199"
bridge = "br-quarantine"

[[hypervisor]]
name = "kvm-1"
driver = "libvirt"
uri = "qemu:///system"

[[server]]
name = "vpc-001"
kind = "virtual"
hypervisor = "kvm-1"
domain = "vpc-001"
[[server.nic]]
mac = "52:54:00:00:00:11"
network = "office"
ip = "10.10.0.21"
"#;

#[test]
fn networks_of_virtual_servers_need_bridges() {
    assert_eq!(outcome(VM_ONLY), "ok");
    check_cases_on(
        VM_ONLY,
        &[
            (
                "operational network without bridge",
                &[("bridge = \"br-office\"", "")],
                "cordon.toml:1: network \"office\".bridge: missing: server \"vpc-001\".nic[0] is the NIC of a VM, which \
             its hypervisor connects to this network's bridge on the host, so the network needs a bridge",
            ),
            (
                "quarantine network without bridge",
                &[("bridge = \"br-quarantine\"", "")],
                "cordon.toml:8: network \"quarantine\".bridge: missing: server \"vpc-001\".nic[0] is the NIC of a VM, \
             which its hypervisor moves to this network's bridge on quarantine, so the network needs a bridge",
            ),
            (
                "both, reported once each",
                &[
                    ("bridge = \"br-office\"", ""),
                    ("bridge = \"br-quarantine\"", ""),
                    (
                        "",
                        "\n[[server]]\nname = \"vpc-002\"\nkind = \"virtual\"\nhypervisor = \"kvm-1\"\ndomain = \"vpc-002\"\n[[server.nic]]\nmac = \"52:54:00:00:00:12\"\nnetwork = \"office\"\nip = \"10.10.0.22\"\n",
                    ),
                ],
                "cordon.toml:1: network \"office\".bridge: missing: server \"vpc-001\".nic[0] is the NIC of a VM, which \
             its hypervisor connects to this network's bridge on the host, so the network needs a bridge\n\
             cordon.toml:8: network \"quarantine\".bridge: missing: server \"vpc-001\".nic[0] is the NIC of a VM, \
             which its hypervisor moves to this network's bridge on quarantine, so the network needs a bridge",
            ),
        ],
    );
}

#[test]
fn switch_and_tenant_rules() {
    check_cases(&[
        (
            "unknown driver",
            &[("driver = \"linux-bridge\"", "driver = \"cisco\"")],
            "cordon.toml:25: switch \"tor-1\".driver: `cisco` is not a known driver (expected one of: \
             linux-bridge, ovs)",
        ),
        (
            "missing driver",
            &[("driver = \"linux-bridge\"\n", "")],
            "cordon.toml:23: switch \"tor-1\".driver: missing: every switch needs a driver (linux-bridge or ovs)",
        ),
        (
            "netns with a slash",
            &[("netns = \"cordon-sw\"", "netns = \"../cordon-sw\"")],
            "cordon.toml:26: switch \"tor-1\".netns: `../cordon-sw` is not a valid network namespace name (no '/'; \
             not . or ..)",
        ),
        (
            "empty netns",
            &[("netns = \"cordon-sw\"", "netns = \"\"")],
            "cordon.toml:26: switch \"tor-1\".netns: must not be empty",
        ),
        (
            "duplicate switch",
            &[("", "[[switch]]\nname = \"tor-1\"\ndriver = \"linux-bridge\"\n")],
            "cordon.toml:122: switch \"tor-1\".name: switch `tor-1` is defined twice; the first is switch \"tor-1\" \
             (line 23)",
        ),
        (
            "missing switch name",
            &[("name = \"tor-1\"\n", "")],
            "cordon.toml:23: switch[0].name: missing: every switch needs a name\ncordon.toml:45: server \
             \"sbc-01\".nic[0].switch: no switch is named `tor-1`\ncordon.toml:55: server \"sbc-02\".nic[0].switch: \
             no switch is named `tor-1`",
        ),
        (
            "bad admin_email",
            &[("admin_email = \"infra-sales@example.com\"", "admin_email = \"infra-sales\"")],
            "cordon.toml:35: tenant \"sales\".admin_email: `infra-sales` does not look like an e-mail address",
        ),
        (
            "admin_email without a domain",
            &[("admin_email = \"infra-sales@example.com\"", "admin_email = \"infra sales@example\"")],
            "cordon.toml:35: tenant \"sales\".admin_email: `infra sales@example` does not look like an e-mail address",
        ),
        (
            "missing admin_email",
            &[("admin_email = \"infra-sales@example.com\"\n", "")],
            "cordon.toml:33: tenant \"sales\".admin_email: missing: every tenant needs the e-mail address of its \
             administrator",
        ),
        (
            "duplicate tenant",
            &[("", "[[tenant]]\nname = \"sales\"\nadmin_email = \"b@example.com\"\n")],
            "cordon.toml:122: tenant \"sales\".name: tenant `sales` is defined twice; the first is tenant \"sales\" \
             (line 33)",
        ),
    ]);
}

#[test]
fn server_rules() {
    check_cases(&[
        (
            "invalid kind",
            &[("kind = \"physical\"", "kind = \"metal\"")],
            "cordon.toml:39: server \"sbc-01\".kind: `metal` is not a known kind (expected one of: physical, \
             virtual)",
        ),
        (
            "missing kind",
            &[("kind = \"physical\"\n", "")],
            "cordon.toml:37: server \"sbc-01\".kind: missing: every server needs a kind (physical or virtual)",
        ),
        (
            "unknown tenant",
            &[("tenant = \"sales\"", "tenant = \"marketing\"")],
            "cordon.toml:40: server \"sbc-01\".tenant: no tenant is named `marketing`",
        ),
        (
            "bad user_email",
            &[("user_email = \"user01@example.com\"", "user_email = \"user01@@example.com\"")],
            "cordon.toml:41: server \"sbc-01\".user_email: `user01@@example.com` does not look like an e-mail address",
        ),
        (
            "server without NIC",
            &[(
                "[[server.nic]]\nmac = \"02:00:00:00:01:01\"\nnetwork = \"office\"\nip = \"10.10.0.11\"\nswitch = \"tor-1\"\nport = \"p-sbc-01\"",
                "",
            )],
            "cordon.toml:37: server \"sbc-01\".nic: missing: every server needs at least one [[server.nic]]",
        ),
        (
            "duplicate server",
            &[("", SERVER_2), ("name = \"sbc-03\"", "name = \"sbc-01\"")],
            "cordon.toml:122: server \"sbc-01\".name: server `sbc-01` is defined twice; the first is server \
             \"sbc-01\" (line 37)",
        ),
    ]);
}

#[test]
fn nic_rules() {
    check_cases(&[
        (
            "invalid mac",
            &[("mac = \"02:00:00:00:01:01\"", "mac = \"02:00:00:00:01\"")],
            "cordon.toml:43: server \"sbc-01\".nic[0].mac: `02:00:00:00:01` is not a MAC address (expected six \
             hex pairs like 02:00:00:00:01:01)",
        ),
        (
            "multicast mac",
            &[("mac = \"02:00:00:00:01:01\"", "mac = \"01:00:5e:00:00:01\"")],
            "cordon.toml:43: server \"sbc-01\".nic[0].mac: `01:00:5e:00:00:01` is a multicast or null address, not \
             the address of a NIC",
        ),
        (
            "duplicate mac, written differently",
            &[("", SERVER_2), ("mac = \"02:00:00:00:01:03\"", "mac = \"02-00-00-00-01-01\"")],
            "cordon.toml:125: server \"sbc-03\".nic[0].mac: MAC `02:00:00:00:01:01` is already the MAC of server \
             \"sbc-01\".nic[0] (line 42)",
        ),
        (
            "missing mac",
            &[("mac = \"02:00:00:00:01:01\"\n", "")],
            "cordon.toml:42: server \"sbc-01\".nic[0].mac: missing: every NIC needs its MAC address, like \
             02:00:00:00:01:01",
        ),
        (
            "unknown network",
            &[("network = \"office\"", "network = \"offfice\"")],
            "cordon.toml:44: server \"sbc-01\".nic[0].network: no network is named `offfice`",
        ),
        (
            "quarantine network",
            &[("network = \"office\"", "network = \"quarantine\""), ("ip = \"10.10.0.11\"", "ip = \"10.99.0.11\"")],
            "cordon.toml:44: server \"sbc-01\".nic[0].network: network `quarantine` is a quarantine network; a NIC \
             is configured on its operational network and quarantine moves it",
        ),
        (
            "invalid ip",
            &[("ip = \"10.10.0.11\"", "ip = \"10.10.0.300\"")],
            "cordon.toml:45: server \"sbc-01\".nic[0].ip: `10.10.0.300` is not an IP address",
        ),
        (
            "ip outside subnet",
            &[("ip = \"10.10.0.11\"", "ip = \"10.20.0.11\"")],
            "cordon.toml:45: server \"sbc-01\".nic[0].ip: `10.20.0.11` is outside the subnet 10.10.0.0/24 of \
             network `office`",
        ),
        (
            "ip is the gateway",
            &[("ip = \"10.10.0.11\"", "ip = \"10.10.0.1\"")],
            "cordon.toml:45: server \"sbc-01\".nic[0].ip: `10.10.0.1` is the gateway of network `office`",
        ),
        (
            "ip inside a quarantine pool",
            &[
                ("subnet = \"10.10.0.0/24\"", "subnet = \"10.0.0.0/8\""),
                ("ip = \"10.10.0.11\"", "ip = \"10.99.0.150\""),
            ],
            "cordon.toml:45: server \"sbc-01\".nic[0].ip: `10.99.0.150` is inside the quarantine pool \
             10.99.0.100-10.99.0.199 of network \"quarantine\"",
        ),
        (
            "duplicate ip",
            &[("", SERVER_2), ("ip = \"10.10.0.13\"", "ip = \"10.10.0.11\"")],
            "cordon.toml:127: server \"sbc-03\".nic[0].ip: `10.10.0.11` is already the address of server \
             \"sbc-01\".nic[0] (line 42)",
        ),
        (
            "switch without port",
            &[("port = \"p-sbc-01\"", "")],
            "cordon.toml:46: server \"sbc-01\".nic[0].port: missing: a NIC with a switch needs its port on that \
             switch",
        ),
        (
            "port without switch",
            &[("switch = \"tor-1\"\n", "")],
            "cordon.toml:46: server \"sbc-01\".nic[0].switch: missing: a NIC with a port needs the switch that \
             port is on",
        ),
        (
            "physical server NIC without switch and port",
            &[("switch = \"tor-1\"\n", ""), ("port = \"p-sbc-01\"", "")],
            "cordon.toml:42: server \"sbc-01\".nic[0].switch: missing: a NIC of a physical server needs its switch \
             and port",
        ),
        (
            "unknown switch",
            &[("switch = \"tor-1\"", "switch = \"tor-2\"")],
            "cordon.toml:46: server \"sbc-01\".nic[0].switch: no switch is named `tor-2`",
        ),
        (
            "port used twice on one switch",
            &[("", SERVER_2), ("port = \"p-sbc-03\"", "port = \"p-sbc-01\"")],
            "cordon.toml:129: server \"sbc-03\".nic[0].port: port `p-sbc-01` of switch `tor-1` is already the port \
             of server \"sbc-01\".nic[0] (line 42)",
        ),
        (
            "port name too long",
            &[("port = \"p-sbc-01\"", "port = \"p-sbc-01-eth0-long\"")],
            "cordon.toml:47: server \"sbc-01\".nic[0].port: `p-sbc-01-eth0-long` is 18 bytes long; Linux interface \
             names are at most 15",
        ),
    ]);
}

#[test]
fn manager_reboot_times() {
    let manager = |extra: &str| parse_ok(&format!("[manager]\n{extra}\n")).manager;
    let defaults = manager("");
    assert_eq!((defaults.graceful_timeout_secs, defaults.reboot_deadline_secs), (30, 300));
    let set = manager("graceful_timeout = \"2m\"\nreboot_deadline = \"1h\"");
    assert_eq!((set.graceful_timeout_secs, set.reboot_deadline_secs), (120, 3600));
    assert_eq!(manager("graceful_timeout = \"4m\"").reboot_deadline_secs, 300);
    assert_eq!(manager("reboot_deadline = \"31s\"").graceful_timeout_secs, 30);
    let why = "a reboot waits up to graceful_timeout for a clean restart, then forces one, and must see the server \
               restart before reboot_deadline";
    check_cases(&[
        (
            "graceful_timeout of zero",
            &[("graceful_timeout = \"30s\"", "graceful_timeout = \"0s\"")],
            "cordon.toml:4: manager.graceful_timeout: `0s` is no time at all; the graceful_timeout must be longer \
             than 0s",
        ),
        (
            "graceful_timeout without unit",
            &[("graceful_timeout = \"30s\"", "graceful_timeout = \"30\"")],
            "cordon.toml:4: manager.graceful_timeout: `30` is not a duration (expected a whole number and a unit, \
             s, m, h or d, like \"30s\", \"10m\", \"2h\" or \"1d\")",
        ),
        (
            "reboot_deadline as an integer",
            &[("reboot_deadline = \"5m\"", "reboot_deadline = 300")],
            "cordon.toml:5: manager.reboot_deadline: expected a string, found an integer",
        ),
        (
            "reboot_deadline of zero",
            &[("reboot_deadline = \"5m\"", "reboot_deadline = \"0m\"")],
            "cordon.toml:5: manager.reboot_deadline: `0m` is no time at all; the reboot_deadline must be longer \
             than 0s",
        ),
    ]);
    let cases: &[Case<'_>] = &[
        (
            "reboot_deadline equal to graceful_timeout",
            &[("reboot_deadline = \"5m\"", "reboot_deadline = \"30s\"")],
            &format!(
                "cordon.toml:5: manager.reboot_deadline: `30s` must be longer than graceful_timeout (`30s`): {why}"
            ),
        ),
        (
            "reboot_deadline shorter than graceful_timeout",
            &[
                ("graceful_timeout = \"30s\"", "graceful_timeout = \"2m\""),
                ("reboot_deadline = \"5m\"", "reboot_deadline = \"90s\""),
            ],
            &format!(
                "cordon.toml:5: manager.reboot_deadline: `90s` must be longer than graceful_timeout (`2m`): {why}"
            ),
        ),
        (
            "reboot_deadline shorter than the default graceful_timeout",
            &[
                (
                    "graceful_timeout = \"30s\"                # reboot: force the restart if a clean one takes longer\n",
                    "",
                ),
                ("reboot_deadline = \"5m\"", "reboot_deadline = \"20s\""),
            ],
            &format!(
                "cordon.toml:4: manager.reboot_deadline: `20s` must be longer than graceful_timeout (`30s`, its \
                 default): {why}"
            ),
        ),
        (
            "graceful_timeout beyond the default reboot_deadline",
            &[
                ("graceful_timeout = \"30s\"", "graceful_timeout = \"1h\""),
                ("reboot_deadline = \"5m\"                  # reboot: the restart must be seen within this\n", ""),
            ],
            &format!(
                "cordon.toml:4: manager.graceful_timeout: `1h` must be shorter than reboot_deadline (`5m`, its \
                 default; set reboot_deadline to allow more): {why}"
            ),
        ),
    ];
    check_cases(cases);
}

#[test]
fn hypervisor_rules() {
    check_cases(&[
        (
            "duplicate hypervisor",
            &[("", "[[hypervisor]]\nname = \"kvm-1\"\ndriver = \"libvirt\"\nuri = \"qemu+ssh://kvm-1/system\"\n")],
            "cordon.toml:122: hypervisor \"kvm-1\".name: hypervisor `kvm-1` is defined twice; the first is \
             hypervisor \"kvm-1\" (line 28)",
        ),
        (
            "invalid hypervisor name",
            &[("name = \"kvm-1\"", "name = \"kvm 1\"")],
            "cordon.toml:29: hypervisor \"kvm 1\".name: `kvm 1` is not a valid name (use only letters, digits, '.', \
             '_' and '-')\ncordon.toml:69: server \"vpc-001\".hypervisor: no hypervisor is named `kvm-1`\n\
             cordon.toml:80: server \"db-01\".hypervisor: no hypervisor is named `kvm-1`",
        ),
        (
            "missing hypervisor name",
            &[("name = \"kvm-1\"\n", "")],
            "cordon.toml:28: hypervisor[0].name: missing: every hypervisor needs a name\ncordon.toml:68: server \
             \"vpc-001\".hypervisor: no hypervisor is named `kvm-1`\ncordon.toml:79: server \"db-01\".hypervisor: no \
             hypervisor is named `kvm-1`",
        ),
        (
            "unknown driver",
            &[("driver = \"libvirt\"", "driver = \"xen\"")],
            "cordon.toml:30: hypervisor \"kvm-1\".driver: `xen` is not a known driver (expected one of: libvirt)",
        ),
        (
            "missing driver",
            &[("driver = \"libvirt\"\n", "")],
            "cordon.toml:28: hypervisor \"kvm-1\".driver: missing: every hypervisor needs a driver (libvirt)",
        ),
        (
            "missing uri",
            &[("uri = \"qemu:///system\"\n", "")],
            "cordon.toml:28: hypervisor \"kvm-1\".uri: missing: every hypervisor needs the URI its driver connects \
             to, like qemu:///system",
        ),
        (
            "empty uri",
            &[("uri = \"qemu:///system\"", "uri = \"\"")],
            "cordon.toml:31: hypervisor \"kvm-1\".uri: must not be empty",
        ),
        (
            "uri with a space",
            &[("uri = \"qemu:///system\"", "uri = \"qemu:///system \"")],
            "cordon.toml:31: hypervisor \"kvm-1\".uri: `qemu:///system ` is not a URI (no spaces or control \
             characters), like qemu:///system",
        ),
        (
            "uri as a boolean",
            &[("uri = \"qemu:///system\"", "uri = true")],
            "cordon.toml:31: hypervisor \"kvm-1\".uri: expected a string, found a boolean",
        ),
        (
            "unknown key in a hypervisor",
            &[("uri = ", "url = ")],
            "cordon.toml:28: hypervisor \"kvm-1\".uri: missing: every hypervisor needs the URI its driver connects \
             to, like qemu:///system\ncordon.toml:31: hypervisor \"kvm-1\".url: unknown key (expected one of: name, \
             driver, uri, netns)",
        ),
        (
            "hypervisor written as a table",
            &[("[[hypervisor]]", "[hypervisor]")],
            "cordon.toml:28: hypervisor: expected an array of tables (write it [[hypervisor]]), found a \
             table\ncordon.toml:69: server \"vpc-001\".hypervisor: no hypervisor is named `kvm-1`\ncordon.toml:80: \
             server \"db-01\".hypervisor: no hypervisor is named `kvm-1`",
        ),
    ]);
    // Two hypervisors; the same domain name on each is two VMs.
    let text = edited(&[
        ("", "[[hypervisor]]\nname = \"kvm-2\"\ndriver = \"libvirt\"\nuri = \"qemu+ssh://root@kvm-2/system\"\n"),
        ("hypervisor = \"kvm-1\"                    # the VM", "hypervisor = \"kvm-2\"                    # the VM"),
        ("domain = \"db-01\"", "domain = \"vpc-001\""),
    ]);
    let config = parse_ok(&text);
    let names: Vec<&str> = config.hypervisors.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["kvm-1", "kvm-2"]);
    let db = config.server("db-01").unwrap();
    assert_eq!((db.hypervisor.as_deref(), db.domain.as_deref()), (Some("kvm-2"), Some("vpc-001")));
    assert_eq!(HypervisorDriverKind::Libvirt.to_string(), "libvirt");
    assert_eq!("libvirt".parse::<HypervisorDriverKind>(), Ok(HypervisorDriverKind::Libvirt));
    assert_eq!("xen".parse::<HypervisorDriverKind>(), Err("`xen` is not a hypervisor driver".to_string()));
    assert_eq!(HypervisorDriverKind::ALL, [HypervisorDriverKind::Libvirt]);
}

#[test]
fn virtual_server_rules() {
    check_cases(&[
        (
            "virtual server without hypervisor",
            &[("hypervisor = \"kvm-1\"\n", "")],
            "cordon.toml:66: server \"vpc-001\".hypervisor: missing: a virtual server needs the [[hypervisor]] that \
             runs its VM",
        ),
        (
            "virtual server without domain",
            &[("domain = \"vpc-001\"\n", "")],
            "cordon.toml:66: server \"vpc-001\".domain: missing: a virtual server needs its domain, the name of its \
             VM on the hypervisor (as `virsh list --all` shows it)",
        ),
        (
            "virtual server without either",
            &[("hypervisor = \"kvm-1\"\n", ""), ("domain = \"vpc-001\"\n", "")],
            "cordon.toml:66: server \"vpc-001\".hypervisor: missing: a virtual server needs the [[hypervisor]] that \
             runs its VM\ncordon.toml:66: server \"vpc-001\".domain: missing: a virtual server needs its domain, the \
             name of its VM on the hypervisor (as `virsh list --all` shows it)",
        ),
        (
            "unknown hypervisor",
            &[("hypervisor = \"kvm-1\"", "hypervisor = \"kvm-2\"")],
            "cordon.toml:69: server \"vpc-001\".hypervisor: no hypervisor is named `kvm-2`",
        ),
        (
            "empty domain",
            &[("domain = \"vpc-001\"", "domain = \"\"")],
            "cordon.toml:70: server \"vpc-001\".domain: must not be empty",
        ),
        (
            "domain with a slash",
            &[("domain = \"vpc-001\"", "domain = \"vms/vpc-001\"")],
            "cordon.toml:70: server \"vpc-001\".domain: `vms/vpc-001` is not a valid domain name (no '/' or control \
             characters)",
        ),
        (
            "domain as an integer",
            &[("domain = \"vpc-001\"", "domain = 1")],
            "cordon.toml:70: server \"vpc-001\".domain: expected a string, found an integer",
        ),
        (
            "two servers on one VM",
            &[("domain = \"db-01\"", "domain = \"vpc-001\"")],
            "cordon.toml:81: server \"db-01\".domain: domain `vpc-001` of hypervisor `kvm-1` is already the VM of \
             server \"vpc-001\" (line 66)",
        ),
        (
            "NIC of a VM with switch and port",
            &[("ip = \"10.10.0.21\"", "ip = \"10.10.0.21\"\nswitch = \"tor-1\"\nport = \"p-vpc-001\"")],
            "cordon.toml:76: server \"vpc-001\".nic[0].switch: a NIC of a virtual server has no switch: its \
             hypervisor moves it between the networks' bridges; remove switch and port\ncordon.toml:77: server \
             \"vpc-001\".nic[0].port: a NIC of a virtual server has no port: its hypervisor moves it between the \
             networks' bridges; remove switch and port",
        ),
        (
            "NIC of a VM with a port only",
            &[("ip = \"10.10.0.21\"", "ip = \"10.10.0.21\"\nport = \"vnet0\"")],
            "cordon.toml:76: server \"vpc-001\".nic[0].port: a NIC of a virtual server has no port: its hypervisor \
             moves it between the networks' bridges; remove switch and port",
        ),
        (
            "virtual server with a BMC",
            &[(
                "ip = \"10.10.0.21\"",
                "ip = \"10.10.0.21\"\n[server.bmc]\ndriver = \"redfish\"\nendpoint = \"https://10.0.0.9\"\nsystem = \
                 \"/redfish/v1/Systems/1\"\nusername = \"admin\"\npassword_file = \"vpc-001.bmc\"",
            )],
            "cordon.toml:76: server \"vpc-001\".bmc: only a physical server has a BMC; a virtual server is rebooted \
             through its hypervisor",
        ),
        (
            "physical server with hypervisor and domain",
            &[("kind = \"physical\"", "kind = \"physical\"\nhypervisor = \"kvm-1\"\ndomain = \"sbc-01\"")],
            "cordon.toml:40: server \"sbc-01\".hypervisor: a physical server has no hypervisor; remove it, or set \
             kind = \"virtual\" if the server is a VM\ncordon.toml:41: server \"sbc-01\".domain: a physical server \
             has no domain; remove it, or set kind = \"virtual\" if the server is a VM",
        ),
        (
            "physical server with an unknown hypervisor",
            &[("kind = \"physical\"", "kind = \"physical\"\nhypervisor = \"kvm-9\"")],
            "cordon.toml:40: server \"sbc-01\".hypervisor: a physical server has no hypervisor; remove it, or set \
             kind = \"virtual\" if the server is a VM",
        ),
    ]);
    // A VM whose kind is wrong is not also told about its hypervisor, domain or NICs.
    assert_eq!(
        outcome(&edited(&[("kind = \"virtual\"", "kind = \"vm\"")])),
        "cordon.toml:68: server \"vpc-001\".kind: `vm` is not a known kind (expected one of: physical, virtual)"
    );
}

#[test]
fn bmc_rules() {
    check_cases(&[
        (
            "unknown driver",
            &[("driver = \"redfish\"", "driver = \"ipmi\"")],
            "cordon.toml:59: server \"sbc-02\".bmc.driver: `ipmi` is not a known driver (expected one of: redfish)",
        ),
        (
            "missing driver",
            &[("driver = \"redfish\"\n", "")],
            "cordon.toml:58: server \"sbc-02\".bmc.driver: missing: every BMC needs a driver (redfish)",
        ),
        (
            "missing endpoint",
            &[("endpoint = \"https://127.0.0.1:8443\"\n", "")],
            "cordon.toml:58: server \"sbc-02\".bmc.endpoint: missing: a BMC needs its endpoint, the base URL of its \
             Redfish service, like https://10.0.0.5",
        ),
        (
            "endpoint without scheme",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"127.0.0.1:8443\"")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: `127.0.0.1:8443` is not a BMC endpoint (expected an \
             https:// URL; like https://10.0.0.5 or https://bmc-07.example.com:8443)",
        ),
        (
            "endpoint of another scheme",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"ftp://127.0.0.1\"")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: `ftp://127.0.0.1` is not a BMC endpoint (expected an \
             https:// URL; like https://10.0.0.5 or https://bmc-07.example.com:8443)",
        ),
        (
            "endpoint with a path",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"https://127.0.0.1:8443/redfish/v1\"")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: `https://127.0.0.1:8443/redfish/v1` is not a BMC \
             endpoint: only the scheme, host and port (like https://10.0.0.5 or https://bmc-07.example.com:8443); \
             the Redfish path belongs in system",
        ),
        (
            "endpoint with credentials, not repeated",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"https://admin:s3cret@127.0.0.1:8443\"")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: the endpoint holds credentials (`user:password@`), \
             which belong in username and password_file, not in the URL",
        ),
        (
            "endpoint without host",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"https://:8443\"")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: `https://:8443` is not a BMC endpoint (no host; like \
             https://10.0.0.5 or https://bmc-07.example.com:8443)",
        ),
        (
            "endpoint with port 0",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"https://127.0.0.1:0\"")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: `https://127.0.0.1:0` is not a BMC endpoint (the port \
             is a number from 1 to 65535; like https://10.0.0.5 or https://bmc-07.example.com:8443)",
        ),
        (
            "endpoint with a bare IPv6 address",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"https://fd00::5\"")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: `https://fd00::5` is not a BMC endpoint (write an IPv6 \
             address between `[` and `]`; like https://10.0.0.5 or https://bmc-07.example.com:8443)",
        ),
        (
            "plain HTTP endpoint",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"http://127.0.0.1:8000\"")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: `http://127.0.0.1:8000` is plain HTTP, which would send \
             the BMC's password unencrypted: use https:// (insecure = true only skips checking the BMC's \
             certificate)",
        ),
        (
            "plain HTTP endpoint with insecure = false",
            &[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"http://127.0.0.1:8000\"\ninsecure = false")],
            "cordon.toml:60: server \"sbc-02\".bmc.endpoint: `http://127.0.0.1:8000` is plain HTTP, which would send \
             the BMC's password unencrypted: use https:// (insecure = true only skips checking the BMC's \
             certificate)",
        ),
        (
            "insecure as a string",
            &[("username = \"admin\"", "username = \"admin\"\ninsecure = \"yes\"")],
            "cordon.toml:63: server \"sbc-02\".bmc.insecure: expected a boolean (true or false), found a string",
        ),
        (
            "system outside /redfish/v1/",
            &[("system = \"/redfish/v1/Systems/1\"", "system = \"/Systems/1\"")],
            "cordon.toml:61: server \"sbc-02\".bmc.system: `/Systems/1` is not the Redfish path of a system (a path \
             starting with /redfish/v1/, like /redfish/v1/Systems/1)",
        ),
        (
            "system that is the service root",
            &[("system = \"/redfish/v1/Systems/1\"", "system = \"/redfish/v1/\"")],
            "cordon.toml:61: server \"sbc-02\".bmc.system: `/redfish/v1/` is not the Redfish path of a system (a \
             path starting with /redfish/v1/, like /redfish/v1/Systems/1)",
        ),
        (
            "missing system",
            &[("system = \"/redfish/v1/Systems/1\"\n", "")],
            "cordon.toml:58: server \"sbc-02\".bmc.system: missing: a BMC needs the Redfish path of the server's \
             system, like /redfish/v1/Systems/1",
        ),
        (
            "empty username",
            &[("username = \"admin\"", "username = \"\"")],
            "cordon.toml:62: server \"sbc-02\".bmc.username: must not be empty",
        ),
        (
            "missing username",
            &[("username = \"admin\"\n", "")],
            "cordon.toml:58: server \"sbc-02\".bmc.username: missing: a BMC needs the username Cordon logs in with",
        ),
        (
            "missing password_file",
            &[("password_file = \"/etc/cordon/sbc-02.bmc\"  # secrets only in files, never in this one\n", "")],
            "cordon.toml:58: server \"sbc-02\".bmc.password_file: missing: a BMC needs password_file, a file holding \
             its password (the configuration never holds secrets)",
        ),
        (
            "password written inline, not repeated",
            &[("password_file = \"/etc/cordon/sbc-02.bmc\"", "password = \"hunter2\"")],
            "cordon.toml:58: server \"sbc-02\".bmc.password_file: missing: a BMC needs password_file, a file holding \
             its password (the configuration never holds secrets)\ncordon.toml:63: server \"sbc-02\".bmc.password: a \
             password is never written in the configuration: put it in a file only Cordon can read and name that \
             file with password_file",
        ),
        (
            "password beside password_file, whatever its type",
            &[("username = \"admin\"", "username = \"admin\"\npassword = 1234")],
            "cordon.toml:63: server \"sbc-02\".bmc.password: a password is never written in the configuration: put \
             it in a file only Cordon can read and name that file with password_file",
        ),
        (
            "empty password_file",
            &[("password_file = \"/etc/cordon/sbc-02.bmc\"", "password_file = \"\"")],
            "cordon.toml:63: server \"sbc-02\".bmc.password_file: must not be empty",
        ),
        (
            "empty ca_file",
            &[("ca_file = \"/etc/cordon/bmc-ca.pem\"", "ca_file = \"\"")],
            "cordon.toml:64: server \"sbc-02\".bmc.ca_file: must not be empty",
        ),
        (
            "unknown key in a BMC",
            &[("username = \"admin\"", "user = \"admin\"")],
            "cordon.toml:58: server \"sbc-02\".bmc.username: missing: a BMC needs the username Cordon logs in \
             with\ncordon.toml:62: server \"sbc-02\".bmc.user: unknown key (expected one of: driver, endpoint, system, \
             username, password_file, ca_file, insecure)",
        ),
        (
            "BMC written as an array of tables",
            &[("[server.bmc]", "[[server.bmc]]")],
            "cordon.toml:58: server \"sbc-02\".bmc: expected a table (write it [server.bmc]), found an array",
        ),
        (
            "BMC written as a string",
            &[("user_email = \"user01@example.com\"", "user_email = \"user01@example.com\"\nbmc = \"10.0.0.5\"")],
            "cordon.toml:42: server \"sbc-01\".bmc: expected a table (write it [server.bmc]), found a string",
        ),
        (
            "two servers on one BMC system",
            &[
                ("", SERVER_2),
                (
                    "",
                    "[server.bmc]\ndriver = \"redfish\"\nendpoint = \"HTTPS://127.0.0.1:8443/\"\nsystem = \
                     \"/redfish/v1/Systems/1/\"\nusername = \"admin\"\npassword_file = \"/etc/cordon/sbc-02.bmc\"\n",
                ),
            ],
            "cordon.toml:133: server \"sbc-03\".bmc.system: system `/redfish/v1/Systems/1/` of \
             `HTTPS://127.0.0.1:8443` is already the system of server \"sbc-02\".bmc (line 58)",
        ),
    ]);
    // The password never appears in a message.
    let text = edited(&[("password_file = \"/etc/cordon/sbc-02.bmc\"", "password = \"hunter2\"")]);
    assert!(!outcome(&text).contains("hunter2"));
    let text = edited(&[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"ftp://admin:hunter2@127.0.0.1\"")]);
    assert!(!outcome(&text).contains("hunter2"));

    assert_eq!(BmcDriverKind::Redfish.to_string(), "redfish");
    assert_eq!("redfish".parse::<BmcDriverKind>(), Ok(BmcDriverKind::Redfish));
    assert_eq!("ipmi".parse::<BmcDriverKind>(), Err("`ipmi` is not a BMC driver".to_string()));
    assert_eq!(BmcDriverKind::ALL, [BmcDriverKind::Redfish]);
}

#[test]
fn bmc_values() {
    let bmc = |edits: &[(&str, &str)]| parse_ok(&edited(edits)).server("sbc-02").unwrap().bmc.clone().unwrap();
    // Plain HTTP is refused even with insecure (the Redfish driver never sends a password in clear).
    let plain = edited(&[
        ("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"http://127.0.0.1:8000/\"\ninsecure = true"),
        ("ca_file = \"/etc/cordon/bmc-ca.pem\"", ""),
    ]);
    assert!(parse(Path::new("cordon.toml"), &plain).is_err());
    // A trailing slash is dropped.
    let slash = bmc(&[("endpoint = \"https://127.0.0.1:8443\"", "endpoint = \"https://127.0.0.1:8443/\"")]);
    assert_eq!(slash.endpoint, "https://127.0.0.1:8443");
    // insecure over HTTPS too (an unverified certificate).
    let unverified = bmc(&[("username = \"admin\"", "username = \"admin\"\ninsecure = true")]);
    assert_eq!((unverified.endpoint.as_str(), unverified.insecure), ("https://127.0.0.1:8443", true));
    for endpoint in ["https://bmc-07.example.com", "https://[fd00::5]", "https://10.0.0.5:443", "HTTPS://BMC"] {
        let bmc = bmc(&[("endpoint = \"https://127.0.0.1:8443\"", &format!("endpoint = \"{endpoint}\""))]);
        assert_eq!(bmc.endpoint, endpoint);
    }
    // The same endpoint with another system is another machine (a multi-node chassis).
    let text = edited(&[
        ("", SERVER_2),
        (
            "",
            "[server.bmc]\ndriver = \"redfish\"\nendpoint = \"https://127.0.0.1:8443\"\nsystem = \
             \"/redfish/v1/Systems/2\"\nusername = \"admin\"\npassword_file = \"/etc/cordon/sbc-02.bmc\"\n",
        ),
    ]);
    let config = parse_ok(&text);
    assert_eq!(config.server("sbc-03").unwrap().bmc.as_ref().map(|b| b.system.as_str()), Some("/redfish/v1/Systems/2"));
    assert_eq!(config.server("sbc-03").unwrap().bmc.as_ref().map(|b| b.ca_file.is_none()), Some(true));
}

#[test]
fn relative_bmc_files_are_resolved_against_the_config_folder() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("cordon.toml");
    let text = edited(&[
        ("password_file = \"/etc/cordon/sbc-02.bmc\"", "password_file = \"secrets/sbc-02.bmc\""),
        ("ca_file = \"/etc/cordon/bmc-ca.pem\"", "ca_file = \"bmc-ca.pem\""),
    ]);
    std::fs::write(&path, text).unwrap();
    // The files do not exist: they are read when a reboot needs them, not when parsing.
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    let bmc = config.server("sbc-02").unwrap().bmc.clone().unwrap();
    assert_eq!(bmc.password_file, folder.path().join("secrets/sbc-02.bmc"));
    assert_eq!(bmc.ca_file, Some(folder.path().join("bmc-ca.pem")));
    let config = parse(
        Path::new("etc/cordon.toml"),
        &edited(&[("ca_file = \"/etc/cordon/bmc-ca.pem\"", "ca_file = \"ca.pem\"")]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let expected = std::env::current_dir().unwrap().join("etc/ca.pem");
    assert_eq!(config.server("sbc-02").unwrap().bmc.as_ref().unwrap().ca_file, Some(expected));
}

/// The virtual and physical servers of the issue, exactly as written there (with sbc-02's NIC),
/// after what they refer to.
const SERVERS_ISSUE_EXAMPLE: &str = r#"
[[network]]
name = "office"
role = "operational"
subnet = "10.10.0.0/24"
quarantine_network = "quarantine"
bridge = "br-office"

[[network]]
name = "quarantine"
role = "quarantine"
subnet = "10.99.0.0/24"
pool = "10.99.0.100-10.99.0.199"
bridge = "br-quarantine"

[[switch]]
name = "tor-1"
driver = "linux-bridge"

[[tenant]]
name = "sales"
admin_email = "infra-sales@example.com"

[[hypervisor]]
name = "kvm-1"
driver = "libvirt"
uri = "qemu:///system"

[[server]]
name = "vpc-001"
kind = "virtual"
hypervisor = "kvm-1"
domain = "vpc-001"
tenant = "sales"
[[server.nic]]
mac = "52:54:00:00:00:11"
network = "office"                 # the network's `bridge` is the host bridge of the VM's NIC
ip = "10.10.0.21"

[[server]]
name = "sbc-02"
kind = "physical"
[[server.nic]]
mac = "02:00:00:00:01:02"
network = "office"
ip = "10.10.0.12"
switch = "tor-1"
port = "p-sbc-02"
[server.bmc]
driver = "redfish"
endpoint = "https://127.0.0.1:8443"
system = "/redfish/v1/Systems/1"
username = "admin"
password_file = "/etc/cordon/sbc-02.bmc"
ca_file = "/etc/cordon/bmc-ca.pem"
"#;

#[test]
fn the_servers_issue_example_parses_as_in_the_example() {
    let config = parse_ok(SERVERS_ISSUE_EXAMPLE);
    let example = parse_ok(EXAMPLE);
    assert_eq!(config.hypervisors, example.hypervisors);
    for name in ["vpc-001", "sbc-02"] {
        let (ours, theirs) = (config.server(name).unwrap(), example.server(name).unwrap());
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
    }
}

#[test]
fn server_policy_keys() {
    check_cases(&[
        (
            "invalid server action",
            &[("action = \"reboot\"", "action = \"none\"")],
            "cordon.toml:83: server \"db-01\".action: `none` is not a known action (expected one of: quarantine, \
             reboot, quarantine_reboot, notify, ignore)",
        ),
        (
            "protected as a string",
            &[("protected = true", "protected = \"yes\"")],
            "cordon.toml:84: server \"db-01\".protected: expected a boolean (true or false), found a string",
        ),
        (
            "action as a boolean",
            &[("action = \"reboot\"", "action = true")],
            "cordon.toml:83: server \"db-01\".action: expected a string, found a boolean",
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
            "cordon.toml:97: source \"ids-1\".name: source `ids-1` is defined twice; the first is source \"ids-1\" \
             (line 90)",
        ),
        (
            "invalid source name",
            &[("name = \"hooks\"", "name = \"web hooks\"")],
            "cordon.toml:104: source \"web hooks\".name: `web hooks` is not a valid name (use only letters, digits, \
             '.', '_' and '-')",
        ),
        (
            "missing type",
            &[("type = \"webhook\"                           # POST /api/v1/detections\n", "")],
            "cordon.toml:103: source \"hooks\".type: missing: every source needs a type (suricata-eve, cef-syslog or \
             webhook)",
        ),
        (
            "unknown type",
            &[("type = \"webhook\"", "type = \"clamav\"")],
            "cordon.toml:105: source \"hooks\".type: `clamav` is not a known type (expected one of: suricata-eve, \
             cef-syslog, webhook)",
        ),
        (
            "a key of another type",
            &[(
                "path = \"/var/log/suricata/eve.json\"",
                "path = \"/var/log/suricata/eve.json\"\nlisten_udp = \"127.0.0.1:1\"",
            )],
            "cordon.toml:94: source \"ids-1\".listen_udp: does not apply to a suricata-eve source (its keys: name, \
             type, path, socket, max_rate)",
        ),
        (
            "a key of another type on a webhook",
            &[("hmac_secret_file = ", "profile = \"generic\"\nhmac_secret_file = ")],
            "cordon.toml:106: source \"hooks\".profile: does not apply to a webhook source (its keys: name, type, \
             token_file, hmac_secret_file, max_rate)",
        ),
        (
            "unknown key in a source",
            &[("profile = \"deep-discovery\"", "profil = \"deep-discovery\"")],
            "cordon.toml:101: source \"ddi\".profil: unknown key (expected one of: name, type, path, socket, \
             listen_udp, listen_tcp, profile, allowed_peers, token_file, hmac_secret_file, max_rate)",
        ),
        (
            "suricata-eve without path or socket",
            &[("path = \"/var/log/suricata/eve.json\"", "")],
            "cordon.toml:90: source \"ids-1\".path: missing: a suricata-eve source needs a path (an EVE JSON file, \
             followed like tail -F), a socket (a unix_stream socket), or both",
        ),
        (
            "empty path",
            &[("path = \"/var/log/suricata/eve.json\"", "path = \"\"")],
            "cordon.toml:93: source \"ids-1\".path: must not be empty",
        ),
        (
            "socket path too long",
            &[("# socket = \"/run/cordon/eve.sock\"", &format!("socket = \"/run/{}.sock\"", "s".repeat(100)))],
            &format!(
                "cordon.toml:94: source \"ids-1\".socket: `/run/{}.sock` is 110 bytes long; unix socket paths are at \
                 most 107",
                "s".repeat(100)
            ),
        ),
        (
            "two sources on one file",
            &[("hmac_secret_file = \"/etc/cordon/hook.key\"", "hmac_secret_file = \"/var/log/suricata/eve.json\"")],
            "cordon.toml:106: source \"hooks\".hmac_secret_file: `/var/log/suricata/eve.json` is already the path of \
             source \"ids-1\" (line 90)",
        ),
        (
            "cef-syslog without listen address",
            &[("listen_udp = \"127.0.0.1:5514\"\n", ""), ("listen_tcp = \"127.0.0.1:5514\"\n", "")],
            "cordon.toml:96: source \"ddi\".listen_udp: missing: a cef-syslog source needs listen_udp, listen_tcp, \
             or both (an IP:port, like 127.0.0.1:5514)",
        ),
        (
            "bad listen address",
            &[("listen_udp = \"127.0.0.1:5514\"", "listen_udp = \"5514\"")],
            "cordon.toml:99: source \"ddi\".listen_udp: `5514` is not a listen address (expected IP:port, like \
             127.0.0.1:8080 or [::1]:8080)",
        ),
        (
            "listen_tcp on the API's address",
            &[("listen_tcp = \"127.0.0.1:5514\"", "listen_tcp = \"127.0.0.1:8080\"")],
            "cordon.toml:100: source \"ddi\".listen_tcp: `127.0.0.1:8080` is already the address of manager.listen",
        ),
        (
            "two sources on one UDP address",
            &[("", "[[source]]\nname = \"ddi-2\"\ntype = \"cef-syslog\"\nlisten_udp = \"127.0.0.1:5514\"\n")],
            "cordon.toml:124: source \"ddi-2\".listen_udp: `127.0.0.1:5514` is already the listen_udp of source \
             \"ddi\" (line 96)",
        ),
        (
            "unknown profile",
            &[("profile = \"deep-discovery\"", "profile = \"ddi\"")],
            "cordon.toml:101: source \"ddi\".profile: `ddi` is not a known profile (expected one of: generic, \
             deep-discovery)",
        ),
        (
            "allowed_peers as a string",
            &[("profile = \"deep-discovery\"", "allowed_peers = \"10.0.0.1\"")],
            "cordon.toml:101: source \"ddi\".allowed_peers: expected an array of strings, like [\"10.0.0.1\"], found \
             a string",
        ),
        (
            "allowed_peers empty",
            &[("profile = \"deep-discovery\"", "allowed_peers = []")],
            "cordon.toml:101: source \"ddi\".allowed_peers: must not be empty; remove the key to accept every peer",
        ),
        (
            "allowed_peers with a bad item",
            &[("profile = \"deep-discovery\"", "allowed_peers = [\"10.0.0.1\", \"10.0.0.0/33\", 7]")],
            "cordon.toml:101: source \"ddi\".allowed_peers[2]: expected a string, found an integer\ncordon.toml:101: \
             source \"ddi\".allowed_peers[1]: `10.0.0.0/33` is not an address or a subnet (like 10.0.0.5 or \
             10.0.0.0/24)",
        ),
        (
            "allowed_peers with host bits",
            &[("profile = \"deep-discovery\"", "allowed_peers = [\"10.0.0.1/24\"]")],
            "cordon.toml:101: source \"ddi\".allowed_peers[0]: `10.0.0.1/24` has host bits set; did you mean \
             10.0.0.0/24?",
        ),
        (
            "webhook with both secrets",
            &[("hmac_secret_file = ", "token_file = \"hook.token\"\nhmac_secret_file = ")],
            "cordon.toml:107: source \"hooks\".hmac_secret_file: a webhook source takes token_file or \
             hmac_secret_file, not both",
        ),
        (
            "webhook with neither",
            &[("hmac_secret_file = \"/etc/cordon/hook.key\"", "")],
            "cordon.toml:103: source \"hooks\".token_file: missing: a webhook source needs token_file (a file \
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
            "cordon.toml:109: policy.default_action: `none` is not a known default_action (expected one of: \
             quarantine, reboot, quarantine_reboot, notify, ignore)",
        ),
        (
            "unknown default_mode",
            &[("shadow = false", "default_mode = \"manual\"")],
            "cordon.toml:113: policy.default_mode: `manual` is not a known default_mode (expected one of: auto, \
             approve)",
        ),
        (
            "unknown key in policy",
            &[("shadow = false", "shadows = false")],
            "cordon.toml:113: policy.shadows: unknown key (expected one of: default_action, default_mode, \
             exclude_keywords, max_auto_actions, window, cooldown, shadow, rule)",
        ),
        (
            "shadow as a string",
            &[("shadow = false", "shadow = \"false\"")],
            "cordon.toml:113: policy.shadow: expected a boolean (true or false), found a string",
        ),
        (
            "empty exclusion keyword",
            &[("exclude_keywords = [\"TEST-IGNORE\"]", "exclude_keywords = [\"TEST-IGNORE\", \"\"]")],
            "cordon.toml:110: policy.exclude_keywords[1]: must not be empty (it would match every signature)",
        ),
        (
            "exclusion keyword not a string",
            &[("exclude_keywords = [\"TEST-IGNORE\"]", "exclude_keywords = [1]")],
            "cordon.toml:110: policy.exclude_keywords[0]: expected a string, found an integer",
        ),
        (
            "max_auto_actions 0",
            &[("max_auto_actions = 50", "max_auto_actions = 0")],
            "cordon.toml:111: policy.max_auto_actions: `0` is too small: at least 1 (to hold every automatic action \
             for approval, set default_mode = \"approve\")",
        ),
        (
            "max_auto_actions negative",
            &[("max_auto_actions = 50", "max_auto_actions = -3")],
            "cordon.toml:111: policy.max_auto_actions: `-3` is too small: at least 1 (to hold every automatic \
             action for approval, set default_mode = \"approve\")",
        ),
        (
            "max_auto_actions too large",
            &[("max_auto_actions = 50", "max_auto_actions = 5_000_000_000")],
            "cordon.toml:111: policy.max_auto_actions: `5000000000` is too large (at most 4294967295)",
        ),
        (
            "max_auto_actions as a string",
            &[("max_auto_actions = 50", "max_auto_actions = \"50\"")],
            "cordon.toml:111: policy.max_auto_actions: expected an integer, found a string",
        ),
        (
            "window without a unit",
            &[("window = \"10m\"", "window = \"600\"")],
            "cordon.toml:112: policy.window: `600` is not a duration (expected a whole number and a unit, s, m, h or \
             d, like \"30s\", \"10m\", \"2h\" or \"1d\")",
        ),
        (
            "window as an integer",
            &[("window = \"10m\"", "window = 600")],
            "cordon.toml:112: policy.window: expected a string, found an integer",
        ),
        (
            "window of zero",
            &[("window = \"10m\"", "window = \"0s\"")],
            "cordon.toml:112: policy.window: `0s` is no time at all; the window must be longer than 0s",
        ),
        (
            "compound cooldown",
            &[("shadow = false", "cooldown = \"1h30m\"")],
            "cordon.toml:113: policy.cooldown: `1h30m` is not a duration (expected a whole number and a unit, s, m, \
             h or d, like \"30s\", \"10m\", \"2h\" or \"1d\")",
        ),
        (
            "cooldown too long",
            &[("shadow = false", "cooldown = \"99999999999999999999s\"")],
            "cordon.toml:113: policy.cooldown: `99999999999999999999s` is too long a duration",
        ),
        (
            "policy written as an array",
            &[("[policy]", "[[policy]]")],
            "cordon.toml:108: policy: expected a table (write it [policy]), found an array",
        ),
        (
            "rule written as a table",
            &[("[[policy.rule]]", "[policy.rule]")],
            "cordon.toml:115: policy.rule: expected an array of tables (write it [[policy.rule]]), found a table",
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
            "cordon.toml:115: policy.rule[0].name: missing: every rule needs a name",
        ),
        (
            "rule with a blank name",
            &[("name = \"serious network alerts\"", "name = \"  \"")],
            "cordon.toml:116: policy.rule \"  \".name: must not be empty",
        ),
        (
            "rule name on two lines",
            &[("name = \"serious network alerts\"", "name = \"serious\\nalerts\"")],
            "cordon.toml:116: policy.rule \"serious\\nalerts\".name: \"serious\\nalerts\" is not a valid rule name (no \
             control characters, such as line breaks)",
        ),
        (
            "duplicate rule name",
            &[("", "[[policy.rule]]\nname = \"serious network alerts\"\naction = \"notify\"\n")],
            "cordon.toml:122: policy.rule \"serious network alerts\".name: rule `serious network alerts` is defined \
             twice; the first is policy.rule \"serious network alerts\" (line 115)",
        ),
        (
            "rule without action",
            &[("action = \"quarantine\"\n", "")],
            "cordon.toml:115: policy.rule \"serious network alerts\".action: missing: every rule needs an action \
             (quarantine, reboot, quarantine_reboot, notify or ignore)",
        ),
        (
            "unknown rule action",
            &[("action = \"quarantine\"", "action = \"isolate\"")],
            "cordon.toml:119: policy.rule \"serious network alerts\".action: `isolate` is not a known action \
             (expected one of: quarantine, reboot, quarantine_reboot, notify, ignore)",
        ),
        (
            "unknown rule mode",
            &[("mode = \"auto\"", "mode = \"automatic\"")],
            "cordon.toml:120: policy.rule \"serious network alerts\".mode: `automatic` is not a known mode (expected \
             one of: auto, approve)",
        ),
        (
            "unknown severity",
            &[("min_severity = \"high\"", "min_severity = \"severe\"")],
            "cordon.toml:118: policy.rule \"serious network alerts\".min_severity: `severe` is not a known \
             min_severity (expected one of: info, low, medium, high, critical)",
        ),
        (
            "unknown subject",
            &[("mode = \"auto\"", "subject = \"victim\"")],
            "cordon.toml:120: policy.rule \"serious network alerts\".subject: `victim` is not a known subject \
             (expected one of: target, source, src, dest)",
        ),
        (
            "rule shadow as an integer",
            &[("mode = \"auto\"", "shadow = 1")],
            "cordon.toml:120: policy.rule \"serious network alerts\".shadow: expected a boolean (true or false), \
             found an integer",
        ),
        (
            "unknown key in a rule",
            &[("mode = \"auto\"", "severity = \"high\"")],
            "cordon.toml:120: policy.rule \"serious network alerts\".severity: unknown key (expected one of: name, \
             sources, min_severity, signature_ids, categories, networks, tenants, servers, action, mode, shadow, \
             subject)",
        ),
        (
            "unknown source",
            &[("sources = [\"ids-1\", \"ddi\"]", "sources = [\"ids-1\", \"ids-2\"]")],
            "cordon.toml:117: policy.rule \"serious network alerts\".sources[1]: no source is named `ids-2`",
        ),
        (
            "sources as a string",
            &[("sources = [\"ids-1\", \"ddi\"]", "sources = \"ids-1\"")],
            "cordon.toml:117: policy.rule \"serious network alerts\".sources: expected an array of strings, like \
             [\"ids-1\"], found a string",
        ),
        (
            "empty sources",
            &[("sources = [\"ids-1\", \"ddi\"]", "sources = []")],
            "cordon.toml:117: policy.rule \"serious network alerts\".sources: must not be empty; remove the key to \
             match any source",
        ),
        (
            "unknown network",
            &[("mode = \"auto\"", "networks = [\"office\", \"lab\"]")],
            "cordon.toml:120: policy.rule \"serious network alerts\".networks[1]: no network is named `lab`",
        ),
        (
            "unknown tenant",
            &[("mode = \"auto\"", "tenants = [\"finance\"]")],
            "cordon.toml:120: policy.rule \"serious network alerts\".tenants[0]: no tenant is named `finance`",
        ),
        (
            "unknown server",
            &[("mode = \"auto\"", "servers = [\"sbc-01\", \"db-02\"]")],
            "cordon.toml:120: policy.rule \"serious network alerts\".servers[1]: no server is named `db-02`",
        ),
        (
            "empty category",
            &[("mode = \"auto\"", "categories = [\"\"]")],
            "cordon.toml:120: policy.rule \"serious network alerts\".categories[0]: must not be empty",
        ),
        (
            "signature id that is a float",
            &[("mode = \"auto\"", "signature_ids = [2019401, 1.5]")],
            "cordon.toml:120: policy.rule \"serious network alerts\".signature_ids[1]: expected a string or an \
             integer, found a float",
        ),
        (
            "negative signature id",
            &[("mode = \"auto\"", "signature_ids = [-1]")],
            "cordon.toml:120: policy.rule \"serious network alerts\".signature_ids[0]: `-1` is not a valid id \
             (expected a string or a non-negative integer)",
        ),
        (
            "signature ids as an integer",
            &[("mode = \"auto\"", "signature_ids = 2019401")],
            "cordon.toml:120: policy.rule \"serious network alerts\".signature_ids: expected an array of strings or \
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
        ("driver = \"linux-bridge\"", "driver = \"cisco\""),
        ("mac = \"02:00:00:00:01:01\"", "mac = \"nope\""),
        ("", "[[server]]\nname = \"bad name\"\nkind = \"physical\"\nextra = 1\n"),
    ]);
    let error = parse(Path::new("cordon.toml"), &text).unwrap_err();
    let expected = "\
cordon.toml:2: manager.listen: `127.0.0.1` is not a listen address (expected IP:port, like 127.0.0.1:8080 or [::1]:8080)
cordon.toml:20: network \"quarantine\".pool: `10.99.0.100-10.98.0.1` ends before it starts
cordon.toml:25: switch \"tor-1\".driver: `cisco` is not a known driver (expected one of: linux-bridge, ovs)
cordon.toml:43: server \"sbc-01\".nic[0].mac: `nope` is not a MAC address (expected six hex pairs like 02:00:00:00:01:01)
cordon.toml:121: server \"bad name\".nic: missing: every server needs at least one [[server.nic]]
cordon.toml:122: server \"bad name\".name: `bad name` is not a valid name (use only letters, digits, '.', '_' and '-')
cordon.toml:124: server \"bad name\".extra: unknown key (expected one of: name, kind, tenant, user_email, action, protected, hypervisor, domain, nic, bmc)";
    assert_eq!(error.to_string(), expected);
    assert_eq!(error.problems.len(), 7);
    assert!(error.problems.iter().all(|p| p.file == Path::new("cordon.toml") && p.line.is_some()));
}

/// A complete `[notify]`, appended after the example's last line (120): its header is line 121.
const NOTIFY: &str = r#"
[notify]
smtp = "smtp://mail.example.com:2525"
starttls = true
from = "cordon@example.com"
smtp_username = "cordon"
smtp_password_file = "secrets/smtp.password"
webhooks = ["https://chat.example.com/hooks/cordon", "http://127.0.0.1:9000/"]
operator_email = "noc@example.com"
public_url = "https://cordon.example:8080/"
link_secret_file = "/etc/cordon/link.secret"
link_ttl = "12h"
"#;

#[test]
fn notify_section_parses_with_defaults_and_resolved_paths() {
    let config = parse(Path::new("/etc/cordon/cordon.toml"), &edited(&[("", NOTIFY)])).unwrap();
    let notify = config.notify.unwrap();
    let smtp = notify.smtp.unwrap();
    assert_eq!((smtp.host.as_str(), smtp.port, smtp.security), ("mail.example.com", 2525, SmtpSecurity::StartTls));
    assert_eq!(smtp.url, "smtp://mail.example.com:2525");
    assert_eq!(smtp.from, "cordon@example.com");
    assert_eq!(smtp.username.as_deref(), Some("cordon"));
    assert_eq!(smtp.password_file, Some(PathBuf::from("/etc/cordon/secrets/smtp.password")));
    assert_eq!(notify.webhooks, ["https://chat.example.com/hooks/cordon", "http://127.0.0.1:9000"]);
    assert_eq!(notify.operator_email.as_deref(), Some("noc@example.com"));
    let links = notify.links.unwrap();
    assert_eq!(links.public_url, "https://cordon.example:8080");
    assert_eq!(links.secret_file, PathBuf::from("/etc/cordon/link.secret"));
    assert_eq!(links.ttl_secs, 12 * 3600);

    // The smallest: plain SMTP on loopback, port 25 by default, no links; or webhooks only.
    let plain = parse_ok(&edited(&[("", "[notify]\nsmtp = \"smtp://127.0.0.1\"\nfrom = \"c@example.com\"\n")]));
    let notify = plain.notify.unwrap();
    let smtp = notify.smtp.unwrap();
    assert_eq!((smtp.port, smtp.security, notify.links), (25, SmtpSecurity::Plain, None));
    let tls = parse_ok(&edited(&[("", "[notify]\nsmtp = \"smtps://[fd00::25]\"\nfrom = \"c@example.com\"\n")]));
    let smtp = tls.notify.unwrap().smtp.unwrap();
    assert_eq!((smtp.host.as_str(), smtp.port, smtp.security), ("fd00::25", 465, SmtpSecurity::Tls));
    let hooks = parse_ok(&edited(&[("", "[notify]\nwebhooks = [\"https://h.example/x\"]\n")]));
    assert!(hooks.notify.unwrap().smtp.is_none());
    assert!(parse_ok(EXAMPLE).notify.is_none());
    // Without public_url the link TTL defaults to a day, when links are configured.
    let day = parse_ok(&edited(&[("", NOTIFY), ("link_ttl = \"12h\"\n", "")]));
    assert_eq!(day.notify.unwrap().links.unwrap().ttl_secs, DEFAULT_LINK_TTL_SECS);
}

#[test]
fn notify_rules() {
    let base = edited(&[("", NOTIFY)]);
    check_cases_on(
        &base,
        &[
            (
                "no from",
                &[("from = \"cordon@example.com\"\n", "")],
                "cordon.toml:121: notify.from: missing: the sender address of the e-mails (like cordon@example.com)",
            ),
            (
                "bad from",
                &[("\"cordon@example.com\"", "\"cordon\"")],
                "cordon.toml:124: notify.from: `cordon` does not look like an e-mail address",
            ),
            (
                "not smtp",
                &[("smtp://mail.example.com:2525", "http://mail.example.com")],
                "cordon.toml:122: notify.smtp: `http://mail.example.com` is not an SMTP server (expected smtp:// or smtps://; like smtp://127.0.0.1:25 or smtps://mail.example.com)",
            ),
            (
                "bad port",
                &[("mail.example.com:2525", "mail.example.com:99999")],
                "cordon.toml:122: notify.smtp: `smtp://mail.example.com:99999` is not an SMTP server (the port is a number from 1 to 65535; like smtp://127.0.0.1:25 or smtps://mail.example.com)",
            ),
            (
                "credentials in the URL",
                &[("smtp://mail", "smtp://cordon:hunter2@mail")],
                "cordon.toml:122: notify.smtp: the URL holds credentials (`user:password@`), which belong in smtp_username and smtp_password_file",
            ),
            (
                "smtps with starttls",
                &[("smtp://mail", "smtps://mail")],
                "cordon.toml:122: notify.smtp: `smtps://mail.example.com:2525` is TLS from the first byte (smtps://): starttls = true only goes with smtp://",
            ),
            (
                "password over plain SMTP",
                &[("starttls = true\n", "")],
                "cordon.toml:124: notify.smtp_username: logging in over plain SMTP would send the password unencrypted: set starttls = true or use smtps://",
            ),
            (
                "username without password file",
                &[("smtp_password_file = \"secrets/smtp.password\"\n", "")],
                "cordon.toml:121: notify.smtp_password_file: missing: smtp_username needs smtp_password_file (a file holding the password)",
            ),
            (
                "password file without username",
                &[("smtp_username = \"cordon\"\n", "")],
                "cordon.toml:125: notify.smtp_password_file: only with smtp_username",
            ),
            (
                "the password itself",
                &[("smtp_username = \"cordon\"\n", "smtp_username = \"cordon\"\nsmtp_password = \"hunter2\"\n")],
                "cordon.toml:126: notify.smtp_password: a password is never written in the configuration: put it in a file only Cordon can read and name that file with smtp_password_file",
            ),
            (
                "the link secret itself",
                &[("link_ttl", "link_secret = \"abc\"\nlink_ttl")],
                "cordon.toml:131: notify.link_secret: a secret is never written in the configuration: put it in a file only Cordon can read and name that file with link_secret_file",
            ),
            (
                "bad webhook",
                &[("\"http://127.0.0.1:9000/\"", "\"ftp://x\", \"https://u:p@h.example/\"")],
                "cordon.toml:127: notify.webhooks[1]: `ftp://x` is not a webhook URL (expected http:// or https://; like https://host.example:8443/path)\n\
                 cordon.toml:127: notify.webhooks[2]: a webhook URL must not hold credentials (`user:password@`)",
            ),
            (
                "empty webhooks",
                &[("[\"https://chat.example.com/hooks/cordon\", \"http://127.0.0.1:9000/\"]", "[]")],
                "cordon.toml:127: notify.webhooks: must not be empty; remove the key to post to no webhook",
            ),
            (
                "public_url without secret",
                &[("link_secret_file = \"/etc/cordon/link.secret\"\n", "")],
                "cordon.toml:121: notify.link_secret_file: missing: approval links need link_secret_file (a file holding the key links are signed with)",
            ),
            (
                "secret without public_url",
                &[("public_url = \"https://cordon.example:8080/\"\n", "")],
                "cordon.toml:121: notify.public_url: missing: approval links need public_url (how administrators reach this Cordon, like https://cordon.example:8080)",
            ),
            (
                "bad public_url",
                &[("https://cordon.example:8080/", "cordon.example")],
                "cordon.toml:129: notify.public_url: `cordon.example` is not a public URL (expected http:// or https://; like https://host.example:8443/path)",
            ),
            (
                "bad ttl",
                &[("\"12h\"", "\"0s\"")],
                "cordon.toml:131: notify.link_ttl: `0s` is no time at all; the link_ttl must be longer than 0s",
            ),
            (
                "bad operator",
                &[("noc@example.com", "noc")],
                "cordon.toml:128: notify.operator_email: `noc` does not look like an e-mail address",
            ),
            (
                "unknown key",
                &[("link_ttl", "ttl = 1\nlink_ttl")],
                "cordon.toml:131: notify.ttl: unknown key (expected one of: smtp, starttls, from, smtp_username, smtp_password_file, smtp_ca_file, webhooks, operator_email, public_url, link_secret_file, link_ttl)",
            ),
        ],
    );
    // Without smtp: the SMTP keys and the links have nothing to go through.
    check_cases(&[
        (
            "empty section",
            &[("", "[notify]\n")],
            "cordon.toml:121: notify.smtp: missing: [notify] needs smtp (an SMTP server, like smtp://127.0.0.1:25), webhooks, or both",
        ),
        (
            "smtp keys without smtp",
            &[("", "[notify]\nwebhooks = [\"https://h.example\"]\nfrom = \"c@example.com\"\nstarttls = true\n")],
            "cordon.toml:123: notify.from: only with smtp (the SMTP server e-mails are sent through)\n\
             cordon.toml:124: notify.starttls: only with smtp (the SMTP server e-mails are sent through)",
        ),
        (
            "links without smtp",
            &[(
                "",
                "[notify]\nwebhooks = [\"https://h.example\"]\npublic_url = \"https://c.example\"\nlink_secret_file = \"s\"\n",
            )],
            "cordon.toml:123: notify.public_url: approval links are sent by e-mail only: set smtp too, or remove the link keys",
        ),
        (
            "ttl alone",
            &[("", "[notify]\nsmtp = \"smtp://127.0.0.1\"\nfrom = \"c@example.com\"\nlink_ttl = \"1h\"\n")],
            "cordon.toml:124: notify.link_ttl: only with public_url and link_secret_file",
        ),
        (
            "ca file over plain SMTP",
            &[("", "[notify]\nsmtp = \"smtp://127.0.0.1\"\nfrom = \"c@example.com\"\nsmtp_ca_file = \"ca.pem\"\n")],
            "cordon.toml:124: notify.smtp_ca_file: only with TLS: set starttls = true or use smtps://",
        ),
    ]);
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
        Just("[[hypervisor]]\n".to_string()),
        Just("[notify]\n".to_string()),
        Just("smtp = \"smtp://h:25\"\nfrom = \"a@b.example\"\n".to_string()),
        Just("public_url = \"https://c\"\nlink_secret_file = \"s\"\n".to_string()),
        Just("driver = \"libvirt\"\nuri = \"qemu:///system\"\n".to_string()),
        Just("kind = \"virtual\"\nhypervisor = \"h\"\ndomain = \"d\"\n".to_string()),
        Just("[server.bmc]\n".to_string()),
        Just("driver = \"redfish\"\nendpoint = \"http://[::1]:8\"\nsystem = \"/redfish/v1/S\"\n".to_string()),
        Just("username = \"u\"\npassword_file = \"p\"\npassword = 1\ninsecure = true\n".to_string()),
        Just("[manager]\ngraceful_timeout = \"9m\"\nreboot_deadline = \"1m\"\n".to_string()),
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

#[test]
fn manager_recovery_settings() {
    let parse = |extra: &str| parse(Path::new("cordon.toml"), &format!("[manager]\n{extra}\n"));
    let defaults = parse("").unwrap().manager;
    assert_eq!(
        (
            defaults.max_attempts,
            defaults.retry_backoff_secs,
            defaults.reconcile_interval_secs,
            defaults.on_drift_enforce
        ),
        (3, 1, 30, false)
    );
    let set = parse("max_attempts = 5\nretry_backoff = \"2s\"\nreconcile_interval = \"1m\"\non_drift = \"enforce\"")
        .unwrap()
        .manager;
    assert_eq!(
        (set.max_attempts, set.retry_backoff_secs, set.reconcile_interval_secs, set.on_drift_enforce),
        (5, 2, 60, true)
    );
    assert_eq!((defaults.workers, parse("workers = 8").unwrap().manager.workers), (64, 8));
    let error = parse("workers = 0").unwrap_err().to_string();
    assert_eq!(error, "cordon.toml:2: manager.workers: `0` is out of range: from 1 (one action at a time) to 1024");
    let error = parse("max_attempts = 0").unwrap_err().to_string();
    assert_eq!(error, "cordon.toml:2: manager.max_attempts: `0` is out of range: from 1 (no automatic retry) to 100");
    let error = parse("on_drift = \"fix\"").unwrap_err().to_string();
    assert_eq!(
        error,
        "cordon.toml:2: manager.on_drift: `fix` is not a known choice (expected one of: report, enforce)"
    );
    assert!(parse("reconcile_interval = \"0s\"").is_err());
    assert_eq!(defaults.driver_timeout_secs, 10);
    assert_eq!(parse("driver_timeout = \"3s\"").unwrap().manager.driver_timeout_secs, 3);
    assert_eq!((defaults.session_idle_timeout_secs, defaults.session_lifetime_secs), (1800, 43_200));
    assert!(!defaults.secure_cookies);
    let console =
        parse("session_idle_timeout = \"15m\"\nsession_lifetime = \"8h\"\nsecure_cookies = true").unwrap().manager;
    assert_eq!(
        (console.session_idle_timeout_secs, console.session_lifetime_secs, console.secure_cookies),
        (900, 28_800, true)
    );
    assert!(parse("session_lifetime = \"0s\"").is_err());
}

#[test]
fn tls_files_come_in_pairs_and_secrets_are_never_inline() {
    let parse = |extra: &str| parse(Path::new("/etc/cordon/cordon.toml"), &format!("[manager]\n{extra}\n"));
    let manager = parse("").unwrap().manager;
    assert_eq!((manager.tls, manager.allow_plain_http), (None, false));
    let manager =
        parse("tls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"/k.pem\"\nallow_plain_http = true").unwrap().manager;
    assert_eq!(
        manager.tls,
        Some(TlsFiles { cert_file: "/etc/cordon/tls/cert.pem".into(), key_file: "/k.pem".into() }),
        "relative to the configuration file"
    );
    assert!(manager.allow_plain_http);
    let error = parse("tls_cert_file = \"c.pem\"").unwrap_err().to_string();
    assert!(error.contains("manager.tls_key_file: missing"), "{error}");
    let error = parse("tls_key_file = \"k.pem\"").unwrap_err().to_string();
    assert!(error.contains("manager.tls_cert_file: missing"), "{error}");
    let error = parse("tls_key = \"-----BEGIN PRIVATE KEY-----\"").unwrap_err().to_string();
    assert!(error.contains("tls_key_file") && !error.contains("BEGIN"), "the key is not repeated: {error}");
}

#[test]
fn max_rate_is_per_source_and_bounded() {
    let source = |extra: &str| {
        parse(
            Path::new("cordon.toml"),
            &format!("[[source]]\nname = \"hook\"\ntype = \"webhook\"\ntoken_file = \"/t\"\n{extra}\n"),
        )
    };
    assert_eq!(source("").unwrap().sources[0].max_rate, None);
    assert_eq!(source("max_rate = 200").unwrap().sources[0].max_rate, Some(200));
    for bad in ["0", "-1", "10000001"] {
        let error = source(&format!("max_rate = {bad}")).unwrap_err().to_string();
        assert!(error.contains("max_rate") && error.contains("out of range"), "{bad}: {error}");
    }
    let error = source("hmac_secret = \"abc\"").unwrap_err().to_string();
    assert!(error.contains("hmac_secret_file") && !error.contains("abc"), "{error}");
}

/// The configuration of issue 10, exactly as written there, plus one server on the ovs switch.
const OVS_CONFIG: &str = r#"[[network]]
name = "office"
role = "operational"
vlan = 10
subnet = "10.10.0.0/24"
quarantine_network = "quarantine"

[[network]]
name = "quarantine"
role = "quarantine"
vlan = 999
subnet = "10.99.0.0/24"
pool = "10.99.0.100-10.99.0.199"

[[switch]]
name = "ovs-1"
driver = "ovs"
ovsdb = "unix:/run/openvswitch/db.sock"
bridge = "br-int"

[[server]]
name = "sbc-01"
kind = "physical"
[[server.nic]]
mac = "02:00:00:00:01:01"
network = "office"
ip = "10.10.0.11"
switch = "ovs-1"
port = "p-sbc-01"
"#;

#[test]
fn ovs_switch_with_vlans() {
    let config = parse_ok(OVS_CONFIG);
    assert_eq!(config.networks[0].vlan, Some(10));
    assert_eq!(config.networks[1].vlan, Some(999));
    assert_eq!(config.networks[0].bridge, None);
    let switch = &config.switches[0];
    assert_eq!(switch.driver, SwitchDriverKind::Ovs);
    assert_eq!(switch.ovsdb.as_deref(), Some("unix:/run/openvswitch/db.sock"));
    assert_eq!(switch.bridge.as_deref(), Some("br-int"));
    assert_eq!(switch.netns, None);
    let tcp = parse_ok(&edited_from(OVS_CONFIG, &[("unix:/run/openvswitch/db.sock", "tcp:127.0.0.1:6640")]));
    assert_eq!(tcp.switches[0].ovsdb.as_deref(), Some("tcp:127.0.0.1:6640"));

    check_cases_on(
        OVS_CONFIG,
        &[
            (
                "operational network without vlan",
                &[("vlan = 10\n", "")],
                "cordon.toml:1: network \"office\".vlan: missing: server \"sbc-01\".nic[0] is on ovs switch `ovs-1`, \
                 which carries it on this network, so the network needs a vlan",
            ),
            (
                "quarantine network without vlan",
                &[("vlan = 999\n", "")],
                "cordon.toml:8: network \"quarantine\".vlan: missing: server \"sbc-01\".nic[0] is on ovs switch \
                 `ovs-1`, which moves it to this network on quarantine, so the network needs a vlan",
            ),
            (
                "vlan 0",
                &[("vlan = 10", "vlan = 0")],
                "cordon.toml:4: network \"office\".vlan: `0` is out of range: an 802.1Q VLAN id is from 1 to 4094",
            ),
            (
                "vlan 4095",
                &[("vlan = 999", "vlan = 4095")],
                "cordon.toml:11: network \"quarantine\".vlan: `4095` is out of range: an 802.1Q VLAN id is from 1 \
                 to 4094",
            ),
            (
                "vlan not a number",
                &[("vlan = 10", "vlan = \"ten\"")],
                "cordon.toml:4: network \"office\".vlan: expected an integer, found a string",
            ),
            (
                "shared vlan",
                &[("vlan = 999", "vlan = 10")],
                "cordon.toml:11: network \"quarantine\".vlan: vlan 10 is already the vlan of network \"office\"; \
                 each network needs its own vlan",
            ),
            (
                "missing ovsdb",
                &[("ovsdb = \"unix:/run/openvswitch/db.sock\"\n", "")],
                "cordon.toml:15: switch \"ovs-1\".ovsdb: missing: an ovs switch needs its OVSDB address, like \
                 unix:/run/openvswitch/db.sock",
            ),
            (
                "missing bridge",
                &[("bridge = \"br-int\"\n", "")],
                "cordon.toml:15: switch \"ovs-1\".bridge: missing: an ovs switch needs the Open vSwitch bridge of \
                 its ports, like br-int",
            ),
            (
                "bad ovsdb",
                &[("unix:/run/openvswitch/db.sock", "ssl:10.0.0.1:6640")],
                "cordon.toml:18: switch \"ovs-1\".ovsdb: `ssl:10.0.0.1:6640` is not an OVSDB address (expected \
                 unix:/PATH or tcp:HOST:PORT)",
            ),
            (
                "relative unix path",
                &[("unix:/run/openvswitch/db.sock", "unix:db.sock")],
                "cordon.toml:18: switch \"ovs-1\".ovsdb: `unix:db.sock`: the socket path after unix: must be absolute",
            ),
            (
                "tcp without port",
                &[("unix:/run/openvswitch/db.sock", "tcp:127.0.0.1:x")],
                "cordon.toml:18: switch \"ovs-1\".ovsdb: `tcp:127.0.0.1:x`: `x` is not a TCP port (1-65535)",
            ),
            (
                "netns on an ovs switch",
                &[("bridge = \"br-int\"\n", "bridge = \"br-int\"\nnetns = \"sw\"\n")],
                "cordon.toml:20: switch \"ovs-1\".netns: an ovs switch is reached through `ovsdb`, not a namespace; \
                 remove netns",
            ),
            (
                "ovsdb on a linux-bridge switch",
                &[("driver = \"ovs\"", "driver = \"linux-bridge\"")],
                "cordon.toml:1: network \"office\".bridge: missing: server \"sbc-01\".nic[0] is on linux-bridge \
                 switch `ovs-1`, which carries it on this network, so the network needs a bridge\n\
                 cordon.toml:8: network \"quarantine\".bridge: missing: server \"sbc-01\".nic[0] is on linux-bridge \
                 switch `ovs-1`, which moves it to this network on quarantine, so the network needs a bridge\n\
                 cordon.toml:18: switch \"ovs-1\".ovsdb: only an ovs switch has ovsdb (a linux-bridge switch uses \
                 each network's bridge); remove it or set driver = \"ovs\"\n\
                 cordon.toml:19: switch \"ovs-1\".bridge: only an ovs switch has bridge (a linux-bridge switch uses \
                 each network's bridge); remove it or set driver = \"ovs\"",
            ),
        ],
    );
}

#[test]
fn manager_database_is_sqlite_by_default_or_a_postgres_url_without_password() {
    let parse = |extra: &str| parse(Path::new("/etc/cordon/cordon.toml"), &format!("[manager]\n{extra}\n"));
    let defaults = parse("").unwrap().manager;
    assert_eq!((defaults.database, defaults.database_password_file, defaults.action_lease_secs), (None, None, 15));
    let set = parse(
        "database = \"postgres://cordon@db.example:5432/cordon\"\ndatabase_password_file = \"pg.pass\"\naction_lease = \"5s\"",
    )
    .unwrap()
    .manager;
    assert_eq!(set.database.as_deref(), Some("postgres://cordon@db.example:5432/cordon"));
    assert_eq!(set.database_password_file, Some(PathBuf::from("/etc/cordon/pg.pass")));
    assert_eq!(set.action_lease_secs, 5);
    let cases = [
        (
            "database = \"postgres://cordon:hunter2@db/cordon\"",
            "/etc/cordon/cordon.toml:2: manager.database: the URL holds a password: put it in a file named by \
             `database_password_file` instead",
        ),
        (
            "database = \"mysql://db/cordon\"",
            "/etc/cordon/cordon.toml:2: manager.database: `mysql://db/cordon` is not a PostgreSQL URL (expected \
             postgres://USER@HOST:PORT/DATABASE; leave `database` out for the embedded SQLite database)",
        ),
        (
            "database_password_file = \"pg.pass\"",
            "/etc/cordon/cordon.toml:2: manager.database_password_file: only with `database` (a PostgreSQL URL): the embedded \
             SQLite database has no password",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text).unwrap_err().to_string(), expected, "{text}");
    }
}
