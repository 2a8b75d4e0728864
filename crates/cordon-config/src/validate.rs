//! The meaning of the configuration: every value parsed, every rule and cross-reference checked,
//! every problem recorded before giving up.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cordon_model::policy::{Policy, PolicyAction, PolicyMode, Rule, SubjectSide};
use cordon_model::{AddressRange, MacAddr, NetworkRole, ServerKind, SwitchDriverKind, ThreatSeverity};
use ipnet::IpNet;

use crate::document::{Document, Entry, Leaf, List};
use crate::{
    BmcConfig, BmcDriverKind, CefProfile, Config, DEFAULT_DATA_DIR, DEFAULT_GRACEFUL_TIMEOUT_SECS,
    DEFAULT_LINK_TTL_SECS, DEFAULT_LISTEN, DEFAULT_REBOOT_DEADLINE_SECS, HypervisorConfig, HypervisorDriverKind,
    LinksConfig, MAX_INTERFACE_NAME, ManagerConfig, NetworkConfig, NicConfig, NotifyConfig, Problems, ServerConfig,
    SmtpConfig, SmtpSecurity, SourceConfig, SourceKind, SwitchConfig, TenantConfig, TlsFiles,
};

/// The longest path of a unix socket (`sun_path` is 108 bytes, with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Checks everything; returns the configuration only when nothing was wrong.
pub(crate) fn validate(path: &Path, document: &Document, problems: &mut Problems) -> Option<Config> {
    let mut v = Validator { problems };
    let manager = v.manager(path, document.manager.as_ref());
    let networks = v.networks(&document.networks);
    let switches = v.switches(&document.switches);
    let hypervisors = v.hypervisors(&document.hypervisors);
    let tenants = v.tenants(&document.tenants);
    let servers = v.servers(path, &document.servers, &networks, &switches, &hypervisors, &tenants);
    v.bridges(&networks, &switches, &servers);
    let sources = v.sources(path, &document.sources, manager.as_ref().map(|m| m.listen));
    let names = Names {
        sources: sources.iter().filter_map(|s| s.name.clone()).collect(),
        networks: networks.iter().filter_map(|n| n.name.clone()).collect(),
        tenants: tenants.iter().filter_map(|t| t.name.clone()).collect(),
        servers: servers.iter().filter_map(|s| s.name.clone()).collect(),
    };
    let policy = v.policy(document.policy.as_ref(), &names);
    let notify = match &document.notify {
        Some(entry) => v.notify(path, entry).map(Some),
        None => Some(None),
    };

    if !v.problems.is_empty() {
        return None;
    }
    Some(Config {
        path: path.to_path_buf(),
        manager: manager?,
        networks: networks.iter().map(Net::build).collect::<Option<_>>()?,
        switches: switches.iter().map(Switch::build).collect::<Option<_>>()?,
        hypervisors: hypervisors.iter().map(Hypervisor::build).collect::<Option<_>>()?,
        tenants: tenants.iter().map(Tenant::build).collect::<Option<_>>()?,
        servers: servers.iter().map(Server::build).collect::<Option<_>>()?,
        sources: sources.iter().map(Source::build).collect::<Option<_>>()?,
        policy: policy?,
        notify: notify?,
    })
}

/// The names that policy rules may refer to.
struct Names {
    sources: Vec<String>,
    networks: Vec<String>,
    tenants: Vec<String>,
    servers: Vec<String>,
}

/// A network as far as it could be read.
struct Net<'e> {
    entry: &'e Entry,
    name: Option<String>,
    role: Option<NetworkRole>,
    subnet: Option<IpNet>,
    gateway: Option<IpAddr>,
    quarantine_network: Option<&'e Leaf>,
    pool: Option<AddressRange>,
    bridge: Option<String>,
    vlan: Option<u16>,
}

impl Net<'_> {
    fn build(&self) -> Option<NetworkConfig> {
        Some(NetworkConfig {
            name: self.name.clone()?,
            role: self.role?,
            subnet: self.subnet?,
            gateway: self.gateway,
            quarantine_network: self.quarantine_network.map(|leaf| leaf.value.clone()),
            pool: self.pool,
            bridge: self.bridge.clone(),
            vlan: self.vlan,
        })
    }
}

struct Switch {
    name: Option<String>,
    driver: Option<SwitchDriverKind>,
    netns: Option<String>,
    ovsdb: Option<String>,
    bridge: Option<String>,
}

impl Switch {
    fn build(&self) -> Option<SwitchConfig> {
        Some(SwitchConfig {
            name: self.name.clone()?,
            driver: self.driver?,
            netns: self.netns.clone(),
            ovsdb: self.ovsdb.clone(),
            bridge: self.bridge.clone(),
        })
    }
}

struct Hypervisor {
    name: Option<String>,
    driver: Option<HypervisorDriverKind>,
    uri: Option<String>,
    netns: Option<String>,
}

impl Hypervisor {
    fn build(&self) -> Option<HypervisorConfig> {
        Some(HypervisorConfig {
            name: self.name.clone()?,
            driver: self.driver?,
            uri: self.uri.clone()?,
            netns: self.netns.clone(),
        })
    }
}

struct Tenant {
    name: Option<String>,
    admin_email: Option<String>,
}

impl Tenant {
    fn build(&self) -> Option<TenantConfig> {
        Some(TenantConfig { name: self.name.clone()?, admin_email: self.admin_email.clone()? })
    }
}

struct Server {
    name: Option<String>,
    kind: Option<ServerKind>,
    tenant: Option<String>,
    user_email: Option<String>,
    /// `Some(None)` when absent; `None` when wrong.
    action: Option<Option<PolicyAction>>,
    protected: bool,
    hypervisor: Option<String>,
    domain: Option<String>,
    /// `Some(None)` when absent; `None` when wrong.
    bmc: Option<Option<BmcConfig>>,
    nics: Vec<Nic>,
}

impl Server {
    fn build(&self) -> Option<ServerConfig> {
        Some(ServerConfig {
            name: self.name.clone()?,
            kind: self.kind?,
            tenant: self.tenant.clone(),
            user_email: self.user_email.clone(),
            action: self.action?,
            protected: self.protected,
            hypervisor: self.hypervisor.clone(),
            domain: self.domain.clone(),
            bmc: self.bmc.clone()?,
            nics: self.nics.iter().map(Nic::build).collect::<Option<_>>()?,
        })
    }
}

struct Nic {
    key: String,
    mac: Option<MacAddr>,
    network: Option<String>,
    ip: Option<IpAddr>,
    switch: Option<String>,
    port: Option<String>,
}

impl Nic {
    fn build(&self) -> Option<NicConfig> {
        Some(NicConfig {
            mac: self.mac?,
            network: self.network.clone()?,
            ip: self.ip?,
            switch: self.switch.clone(),
            port: self.port.clone(),
        })
    }
}

struct Source {
    name: Option<String>,
    kind: Option<SourceKind>,
    /// `Some(None)` when absent; `None` when wrong.
    max_rate: Option<Option<u32>>,
}

impl Source {
    fn build(&self) -> Option<SourceConfig> {
        Some(SourceConfig { name: self.name.clone()?, kind: self.kind.clone()?, max_rate: self.max_rate? })
    }
}

/// A source's `type`, before its keys are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceType {
    SuricataEve,
    CefSyslog,
    Webhook,
}

impl SourceType {
    const ALL: &'static [SourceType] = &[SourceType::SuricataEve, SourceType::CefSyslog, SourceType::Webhook];

    fn as_str(self) -> &'static str {
        match self {
            SourceType::SuricataEve => "suricata-eve",
            SourceType::CefSyslog => "cef-syslog",
            SourceType::Webhook => "webhook",
        }
    }

    /// The keys a source of this type may have.
    fn keys(self) -> &'static [&'static str] {
        match self {
            SourceType::SuricataEve => &["name", "type", "path", "socket", "max_rate"],
            SourceType::CefSyslog => {
                &["name", "type", "listen_udp", "listen_tcp", "profile", "allowed_peers", "max_rate"]
            }
            SourceType::Webhook => &["name", "type", "token_file", "hmac_secret_file", "max_rate"],
        }
    }
}

impl Display for SourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceType {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        SourceType::ALL.iter().copied().find(|t| t.as_str() == text).ok_or(())
    }
}

/// What sources already claimed (files, sockets, addresses), and by whom: `<key> of <entry>
/// (line N)`.
#[derive(Default)]
struct SourceRegistry {
    files: HashMap<PathBuf, String>,
    udp: HashMap<SocketAddr, String>,
    tcp: HashMap<SocketAddr, String>,
}

struct Validator<'p> {
    problems: &'p mut Problems,
}

impl Validator<'_> {
    fn at(&mut self, offset: usize, key: impl Into<String>, detail: impl Into<String>) {
        self.problems.add(Some(offset), key, detail);
    }

    fn line(&self, offset: usize) -> usize {
        self.problems.line_of(offset)
    }

    /// A key that must be present; `hint` says what it is for.
    fn required<'e>(&mut self, entry: &'e Entry, field: &str, hint: &str) -> Option<&'e Leaf> {
        let leaf = entry.get(field);
        if leaf.is_none() && !entry.mistyped.contains(field) {
            self.at(entry.start, entry.key_of(field), format!("missing: {hint}"));
        }
        leaf
    }

    /// Parses `leaf` with `parse`, recording its error.
    fn parse_with<T, E: Display>(
        &mut self,
        entry: &Entry,
        field: &str,
        leaf: &Leaf,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(&leaf.value) {
            Ok(value) => Some(value),
            Err(error) => {
                self.at(leaf.span.start, entry.key_of(field), error.to_string());
                None
            }
        }
    }

    /// Parses `leaf` with its type's `FromStr`, whose errors already quote the value.
    fn parse<T>(&mut self, entry: &Entry, field: &str, leaf: &Leaf) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse_with(entry, field, leaf, T::from_str)
    }

    /// Parses one of a fixed set of words (`all`, as their `Display` writes them).
    fn choice<T: FromStr + Display>(&mut self, entry: &Entry, field: &str, leaf: &Leaf, all: &[T]) -> Option<T> {
        self.parse_with(entry, field, leaf, |text| {
            text.parse::<T>().map_err(|_| {
                let words: Vec<String> = all.iter().map(ToString::to_string).collect();
                format!("`{text}` is not a known {field} (expected one of: {})", words.join(", "))
            })
        })
    }

    /// Checks `leaf` with `check` (which returns what is wrong), giving back its text when fine.
    fn check(
        &mut self,
        entry: &Entry,
        field: &str,
        leaf: &Leaf,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<String> {
        let text = leaf.value.clone();
        self.parse_with(entry, field, leaf, |t| check(t).map(|()| text))
    }

    /// An entry's `name`: present, well formed and not used before by an entry of its kind.
    fn name(&mut self, entry: &Entry, kind: &str, seen: &mut HashMap<String, String>) -> Option<String> {
        self.name_checked(entry, kind, seen, check_name)
    }

    /// [`name`](Self::name), with `check` saying what is well formed.
    fn name_checked(
        &mut self,
        entry: &Entry,
        kind: &str,
        seen: &mut HashMap<String, String>,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let leaf = self.required(entry, "name", &format!("every {kind} needs a name"))?;
        // A malformed name is reported here, and still used so that references to it do not
        // report it again.
        let name = leaf.value.clone();
        if self.check(entry, "name", leaf, check).is_none() {
            return Some(name);
        }
        let here = format!("{} (line {})", entry.key, self.line(entry.start));
        if let Some(first) = seen.get(&name) {
            let detail = format!("{kind} `{name}` is defined twice; the first is {first}");
            self.at(leaf.span.start, entry.key_of("name"), detail);
        } else {
            seen.insert(name.clone(), here);
        }
        Some(name)
    }

    fn manager(&mut self, path: &Path, entry: Option<&Entry>) -> Option<ManagerConfig> {
        let field = |name: &str| entry.and_then(|e| e.get(name).map(|leaf| (e, leaf)));
        let listen = match field("listen") {
            Some((e, leaf)) => self.parse_with(e, "listen", leaf, parse_listen),
            None => DEFAULT_LISTEN.parse().ok(),
        };
        let data_dir = match field("data_dir") {
            Some((e, leaf)) => {
                self.check(e, "data_dir", leaf, check_path).map(|text| resolve_path(path, Path::new(&text)))
            }
            None => Some(PathBuf::from(DEFAULT_DATA_DIR)),
        };
        let instance = match field("instance") {
            Some((e, leaf)) => self.check(e, "instance", leaf, check_name),
            None => Some(default_instance()),
        };
        let (graceful_timeout_secs, reboot_deadline_secs) = match entry {
            Some(e) => self.reboot_times(e),
            None => (Some(DEFAULT_GRACEFUL_TIMEOUT_SECS), Some(DEFAULT_REBOOT_DEADLINE_SECS)),
        };
        let (max_attempts, retry_backoff_secs, reconcile_interval_secs, on_drift_enforce) = match entry {
            Some(e) => self.recovery(e),
            None => (Some(3), Some(1), Some(30), Some(false)),
        };
        let driver_timeout_secs = match entry {
            Some(e) => self.duration(e, "driver_timeout", 10, false),
            None => Some(10),
        };
        let tls = match entry {
            Some(e) => self.tls(path, e),
            None => Some(None),
        };
        let allow_plain_http = entry.and_then(|e| e.get_bool("allow_plain_http")).is_some_and(|flag| flag.value);
        // The web console's sessions: idle 30 min, at most 12 h; `Secure` cookies behind TLS.
        let session_idle_timeout_secs = match entry {
            Some(e) => self.duration(e, "session_idle_timeout", 1800, false),
            None => Some(1800),
        };
        let session_lifetime_secs = match entry {
            Some(e) => self.duration(e, "session_lifetime", 12 * 3600, false),
            None => Some(12 * 3600),
        };
        let secure_cookies = entry.and_then(|e| e.get_bool("secure_cookies")).is_some_and(|flag| flag.value);
        let database = match field("database") {
            Some((e, leaf)) => self.parse_with(e, "database", leaf, parse_database_url).map(Some),
            None => Some(None),
        };
        let database_password_file = match field("database_password_file") {
            Some((e, leaf)) => {
                if e.absent("database") {
                    self.at(
                        leaf.span.start,
                        e.key_of("database_password_file"),
                        "only with `database` (a PostgreSQL URL): the embedded SQLite database has no password",
                    );
                }
                self.check(e, "database_password_file", leaf, check_path)
                    .map(|text| Some(resolve_path(path, Path::new(&text))))
            }
            None => Some(None),
        };
        let action_lease_secs = match entry {
            Some(e) => self.duration(e, "action_lease", 15, false),
            None => Some(15),
        };
        let workers = match entry.and_then(|e| e.get_int("workers").map(|number| (e, number))) {
            Some((e, number)) => {
                let workers = usize::try_from(number.value).ok().filter(|n| (1..=1024).contains(n));
                if workers.is_none() {
                    let detail = format!("`{}` is out of range: from 1 (one action at a time) to 1024", number.value);
                    self.at(number.start, e.key_of("workers"), detail);
                }
                workers
            }
            None => Some(64).filter(|_| entry.is_none_or(|e| e.absent("workers"))),
        };
        Some(ManagerConfig {
            listen: listen?,
            data_dir: data_dir?,
            instance: instance?,
            graceful_timeout_secs: graceful_timeout_secs?,
            reboot_deadline_secs: reboot_deadline_secs?,
            max_attempts: max_attempts?,
            retry_backoff_secs: retry_backoff_secs?,
            reconcile_interval_secs: reconcile_interval_secs?,
            on_drift_enforce: on_drift_enforce?,
            driver_timeout_secs: driver_timeout_secs?,
            tls: tls?,
            allow_plain_http,
            session_idle_timeout_secs: session_idle_timeout_secs?,
            session_lifetime_secs: session_lifetime_secs?,
            secure_cookies,
            database: database?,
            database_password_file: database_password_file?,
            action_lease_secs: action_lease_secs?,
            workers: workers?,
        })
    }

    /// `tls_cert_file` and `tls_key_file` of `[manager]`: both or neither.
    fn tls(&mut self, config: &Path, entry: &Entry) -> Option<Option<TlsFiles>> {
        let mut file = |field: &str| match entry.get(field) {
            Some(leaf) => {
                self.check(entry, field, leaf, check_path).map(|text| Some(resolve_path(config, Path::new(&text))))
            }
            None => Some(None),
        };
        let (cert, key) = (file("tls_cert_file")?, file("tls_key_file")?);
        match (cert, key) {
            (Some(cert_file), Some(key_file)) => Some(Some(TlsFiles { cert_file, key_file })),
            (None, None) => Some(None),
            (Some(_), None) => {
                self.at(
                    entry.start,
                    entry.key_of("tls_key_file"),
                    "missing: tls_cert_file needs tls_key_file (its private key)",
                );
                None
            }
            (None, Some(_)) => {
                self.at(
                    entry.start,
                    entry.key_of("tls_cert_file"),
                    "missing: tls_key_file needs tls_cert_file (its certificate chain)",
                );
                None
            }
        }
    }

    /// `max_attempts`, `retry_backoff`, `reconcile_interval` and `on_drift` of `[manager]`.
    fn recovery(&mut self, entry: &Entry) -> (Option<u32>, Option<u64>, Option<u64>, Option<bool>) {
        let max_attempts = match entry.get_int("max_attempts") {
            Some(number) => {
                let attempts = u32::try_from(number.value).ok().filter(|n| (1..=100).contains(n));
                if attempts.is_none() {
                    let detail = format!("`{}` is out of range: from 1 (no automatic retry) to 100", number.value);
                    self.at(number.start, entry.key_of("max_attempts"), detail);
                }
                attempts
            }
            None => Some(3).filter(|_| entry.absent("max_attempts")),
        };
        let retry_backoff = self.duration(entry, "retry_backoff", 1, false);
        let reconcile_interval = self.duration(entry, "reconcile_interval", 30, false);
        let on_drift = match entry.get("on_drift") {
            Some(leaf) => match leaf.value.as_str() {
                "report" => Some(false),
                "enforce" => Some(true),
                other => {
                    let detail = format!("`{other}` is not a known choice (expected one of: report, enforce)");
                    self.at(leaf.span.start, entry.key_of("on_drift"), detail);
                    None
                }
            },
            None => Some(false),
        };
        (max_attempts, retry_backoff, reconcile_interval, on_drift)
    }

    /// `graceful_timeout` and `reboot_deadline` of `[manager]`: the deadline must leave time
    /// after the graceful wait for a forced restart and its confirmation.
    fn reboot_times(&mut self, entry: &Entry) -> (Option<u64>, Option<u64>) {
        let graceful = self.duration(entry, "graceful_timeout", DEFAULT_GRACEFUL_TIMEOUT_SECS, false);
        let deadline = self.duration(entry, "reboot_deadline", DEFAULT_REBOOT_DEADLINE_SECS, false);
        if let (Some(graceful), Some(deadline)) = (graceful, deadline)
            && deadline <= graceful
        {
            let why = "a reboot waits up to graceful_timeout for a clean restart, then forces one, and must see \
                       the server restart before reboot_deadline";
            if let Some(leaf) = entry.get("reboot_deadline") {
                let graceful = written_duration(entry, "graceful_timeout", graceful);
                let detail = format!("`{}` must be longer than graceful_timeout ({graceful}): {why}", leaf.value);
                self.at(leaf.span.start, entry.key_of("reboot_deadline"), detail);
            } else if let Some(leaf) = entry.get("graceful_timeout") {
                let detail = format!(
                    "`{}` must be shorter than reboot_deadline (`{}`, its default; set reboot_deadline to allow \
                     more): {why}",
                    leaf.value,
                    format_duration(deadline)
                );
                self.at(leaf.span.start, entry.key_of("graceful_timeout"), detail);
            }
        }
        (graceful, deadline)
    }

    fn networks<'e>(&mut self, entries: &'e [Entry]) -> Vec<Net<'e>> {
        let mut seen = HashMap::new();
        let nets: Vec<Net<'e>> = entries.iter().map(|entry| self.network(entry, &mut seen)).collect();

        // Each operational network's quarantine network exists and is one.
        for net in &nets {
            let (Some(NetworkRole::Operational), Some(leaf)) = (net.role, net.quarantine_network) else {
                continue;
            };
            let key = net.entry.key_of("quarantine_network");
            match find(&nets, |n| n.name.as_deref() == Some(leaf.value.as_str())) {
                None => self.at(leaf.span.start, key, format!("no network is named `{}`", leaf.value)),
                Some(target) if target.role == Some(NetworkRole::Operational) => self.at(
                    leaf.span.start,
                    key,
                    format!(
                        "network `{}` is operational; quarantine_network must name a network with role \"quarantine\"",
                        leaf.value
                    ),
                ),
                Some(_) => {}
            }
        }

        // Pools of quarantine networks do not overlap.
        for (i, net) in nets.iter().enumerate() {
            let Some(pool) = net.pool.filter(|_| net.role == Some(NetworkRole::Quarantine)) else {
                continue;
            };
            let earlier = nets[..i].iter().find(|other| {
                other.role == Some(NetworkRole::Quarantine)
                    && other.pool.is_some_and(|o| o.contains(pool.first()) || pool.contains(o.first()))
            });
            if let Some(other) = earlier {
                let (Some(leaf), Some(other_pool)) = (net.entry.get("pool"), other.pool) else {
                    continue;
                };
                let detail = format!(
                    "`{pool}` overlaps the pool {other_pool} of {} (line {})",
                    other.entry.key,
                    self.line(other.entry.start)
                );
                self.at(leaf.span.start, net.entry.key_of("pool"), detail);
            }
        }

        // Each network has its own VLAN: sharing one would join the networks.
        let mut vlans: HashMap<u16, String> = HashMap::new();
        for net in &nets {
            let (Some(vlan), Some(number)) = (net.vlan, net.entry.get_int("vlan")) else {
                continue;
            };
            if let Some(first) = vlans.get(&vlan) {
                let detail = format!("vlan {vlan} is already the vlan of {first}; each network needs its own vlan");
                self.at(number.start, net.entry.key_of("vlan"), detail);
            } else {
                vlans.insert(vlan, net.entry.key.clone());
            }
        }

        // Each network has its own bridge: sharing one would join the networks.
        let mut bridges: HashMap<String, String> = HashMap::new();
        for net in &nets {
            let (Some(bridge), Some(leaf)) = (&net.bridge, net.entry.get("bridge")) else {
                continue;
            };
            if let Some(first) = bridges.get(bridge) {
                let detail =
                    format!("bridge `{bridge}` is already the bridge of {first}; each network needs its own bridge");
                self.at(leaf.span.start, net.entry.key_of("bridge"), detail);
            } else {
                bridges.insert(bridge.clone(), net.entry.key.clone());
            }
        }

        nets
    }

    fn network<'e>(&mut self, entry: &'e Entry, seen: &mut HashMap<String, String>) -> Net<'e> {
        let name = self.name(entry, "network", seen);
        let role = self
            .required(entry, "role", "every network needs a role (operational or quarantine)")
            .and_then(|leaf| self.choice(entry, "role", leaf, NetworkRole::ALL));
        let subnet = self
            .required(entry, "subnet", "every network needs a subnet, like 10.10.0.0/24")
            .and_then(|leaf| self.subnet(entry, leaf));
        let gateway = entry.get("gateway").and_then(|leaf| {
            let gateway = self.parse_with(entry, "gateway", leaf, parse_ip)?;
            if let Some(subnet) = subnet.filter(|s| !s.contains(&gateway)) {
                let detail = format!("`{gateway}` is outside the subnet {subnet}");
                self.at(leaf.span.start, entry.key_of("gateway"), detail);
            }
            Some(gateway)
        });
        let quarantine_network = entry.get("quarantine_network");
        let pool_leaf = entry.get("pool");
        let pool = pool_leaf.and_then(|leaf| self.parse::<AddressRange>(entry, "pool", leaf));
        let bridge = entry.get("bridge").and_then(|leaf| self.check(entry, "bridge", leaf, check_interface));
        let vlan = entry.get_int("vlan").and_then(|number| {
            let vlan = u16::try_from(number.value).ok().filter(|v| (1..=4094).contains(v));
            if vlan.is_none() {
                let detail = format!("`{}` is out of range: an 802.1Q VLAN id is from 1 to 4094", number.value);
                self.at(number.start, entry.key_of("vlan"), detail);
            }
            vlan
        });

        match role {
            Some(NetworkRole::Operational) => {
                if entry.absent("quarantine_network") {
                    self.at(
                        entry.start,
                        entry.key_of("quarantine_network"),
                        "missing: an operational network must name the quarantine network its servers are moved to",
                    );
                }
                if let Some(leaf) = pool_leaf {
                    self.at(
                        leaf.span.start,
                        entry.key_of("pool"),
                        "only a quarantine network has a pool; remove it or set role = \"quarantine\"",
                    );
                }
            }
            Some(NetworkRole::Quarantine) => {
                if let Some(leaf) = quarantine_network {
                    self.at(
                        leaf.span.start,
                        entry.key_of("quarantine_network"),
                        "a quarantine network must not name a quarantine_network",
                    );
                }
                match (pool_leaf, pool) {
                    (None, _) if entry.absent("pool") => self.at(
                        entry.start,
                        entry.key_of("pool"),
                        "missing: a quarantine network needs a pool of addresses for quarantined servers, like 10.99.0.100-10.99.0.199",
                    ),
                    (Some(leaf), Some(pool)) => {
                        if let Some(subnet) = subnet.filter(|s| {
                            !(s.contains(&pool.first()) && s.contains(&pool.last()))
                        }) {
                            let detail = format!("`{pool}` is not inside the subnet {subnet}");
                            self.at(leaf.span.start, entry.key_of("pool"), detail);
                        }
                        if let (Some(gateway), Some(leaf)) = (gateway, entry.get("gateway"))
                            && pool.contains(gateway)
                        {
                            let detail = format!(
                                "`{gateway}` is inside the pool {pool}, which would hand the gateway's address to a server"
                            );
                            self.at(leaf.span.start, entry.key_of("gateway"), detail);
                        }
                    }
                    _ => {}
                }
            }
            None => {}
        }

        Net { entry, name, role, subnet, gateway, quarantine_network, pool, bridge, vlan }
    }

    fn subnet(&mut self, entry: &Entry, leaf: &Leaf) -> Option<IpNet> {
        self.parse_with(entry, "subnet", leaf, |text| {
            let subnet = text
                .parse::<IpNet>()
                .map_err(|_| format!("`{text}` is not a subnet (expected address/prefix, like 10.10.0.0/24)"))?;
            if subnet.trunc() != subnet {
                return Err(format!("`{text}` has host bits set; did you mean {}?", subnet.trunc()));
            }
            Ok(subnet)
        })
    }

    fn switches(&mut self, entries: &[Entry]) -> Vec<Switch> {
        let mut seen = HashMap::new();
        entries
            .iter()
            .map(|entry| {
                let name = self.name(entry, "switch", &mut seen);
                let driver = self
                    .required(entry, "driver", "every switch needs a driver (linux-bridge or ovs)")
                    .and_then(|leaf| self.choice(entry, "driver", leaf, SwitchDriverKind::ALL));
                let netns = entry.get("netns").and_then(|leaf| self.check(entry, "netns", leaf, check_netns));
                let mut ovsdb = None;
                let mut bridge = None;
                match driver {
                    Some(SwitchDriverKind::Ovs) => {
                        ovsdb = self
                            .required(entry, "ovsdb", "an ovs switch needs its OVSDB address, like unix:/run/openvswitch/db.sock")
                            .and_then(|leaf| self.check(entry, "ovsdb", leaf, check_ovsdb));
                        bridge = self
                            .required(entry, "bridge", "an ovs switch needs the Open vSwitch bridge of its ports, like br-int")
                            .and_then(|leaf| self.check(entry, "bridge", leaf, check_interface));
                        if let Some(leaf) = entry.get("netns") {
                            let detail = "an ovs switch is reached through `ovsdb`, not a namespace; remove netns";
                            self.at(leaf.span.start, entry.key_of("netns"), detail);
                        }
                    }
                    Some(SwitchDriverKind::LinuxBridge) => {
                        for field in ["ovsdb", "bridge"] {
                            if let Some(leaf) = entry.get(field) {
                                let detail = format!(
                                    "only an ovs switch has {field} (a linux-bridge switch uses each network's bridge); remove it or set driver = \"ovs\""
                                );
                                self.at(leaf.span.start, entry.key_of(field), detail);
                            }
                        }
                    }
                    None => {}
                }
                Switch { name, driver, netns, ovsdb, bridge }
            })
            .collect()
    }

    fn hypervisors(&mut self, entries: &[Entry]) -> Vec<Hypervisor> {
        let mut seen = HashMap::new();
        entries
            .iter()
            .map(|entry| {
                let name = self.name(entry, "hypervisor", &mut seen);
                let driver = self
                    .required(entry, "driver", "every hypervisor needs a driver (libvirt)")
                    .and_then(|leaf| self.choice(entry, "driver", leaf, HypervisorDriverKind::ALL));
                let uri = self
                    .required(
                        entry,
                        "uri",
                        "every hypervisor needs the URI its driver connects to, like qemu:///system",
                    )
                    .and_then(|leaf| self.check(entry, "uri", leaf, check_uri));
                let netns = entry.get("netns").and_then(|leaf| self.check(entry, "netns", leaf, check_netns));
                Hypervisor { name, driver, uri, netns }
            })
            .collect()
    }

    fn tenants(&mut self, entries: &[Entry]) -> Vec<Tenant> {
        let mut seen = HashMap::new();
        entries
            .iter()
            .map(|entry| {
                let name = self.name(entry, "tenant", &mut seen);
                let admin_email = self
                    .required(entry, "admin_email", "every tenant needs the e-mail address of its administrator")
                    .and_then(|leaf| self.check(entry, "admin_email", leaf, check_email));
                Tenant { name, admin_email }
            })
            .collect()
    }

    fn servers(
        &mut self,
        config: &Path,
        entries: &[Entry],
        networks: &[Net<'_>],
        switches: &[Switch],
        hypervisors: &[Hypervisor],
        tenants: &[Tenant],
    ) -> Vec<Server> {
        let mut seen = HashMap::new();
        let mut nics = NicRegistry::default();
        let mut machines = MachineRegistry::default();
        let pools: Vec<(&Net<'_>, AddressRange)> = networks
            .iter()
            .filter(|n| n.role == Some(NetworkRole::Quarantine))
            .filter_map(|n| Some((n, n.pool?)))
            .collect();
        entries
            .iter()
            .map(|entry| {
                let name = self.name(entry, "server", &mut seen);
                let kind = self
                    .required(entry, "kind", "every server needs a kind (physical or virtual)")
                    .and_then(|leaf| self.choice(entry, "kind", leaf, ServerKind::ALL));
                let tenant = entry.get("tenant").map(|leaf| {
                    if !tenants.iter().any(|t| t.name.as_deref() == Some(leaf.value.as_str())) {
                        let detail = format!("no tenant is named `{}`", leaf.value);
                        self.at(leaf.span.start, entry.key_of("tenant"), detail);
                    }
                    leaf.value.clone()
                });
                let user_email =
                    entry.get("user_email").and_then(|leaf| self.check(entry, "user_email", leaf, check_email));
                let action = match entry.get("action") {
                    Some(leaf) => self.choice(entry, "action", leaf, PolicyAction::ALL).map(Some),
                    None => Some(None).filter(|_| entry.absent("action")),
                };
                let protected = entry.get_bool("protected").is_some_and(|flag| flag.value);
                let (hypervisor, domain) = self.server_vm(entry, kind, hypervisors, &mut machines);
                let bmc = match &entry.table {
                    Some(bmc) => self.bmc(config, bmc, &mut machines).map(Some),
                    None => Some(None).filter(|_| entry.absent("bmc")),
                };
                if let (Some(ServerKind::Virtual), Some(&at)) = (kind, entry.present.get("bmc")) {
                    self.at(
                        at,
                        entry.key_of("bmc"),
                        "only a physical server has a BMC; a virtual server is rebooted through its hypervisor",
                    );
                }
                if entry.children.is_empty() && !entry.mistyped.contains("nic") {
                    self.at(
                        entry.start,
                        entry.key_of("nic"),
                        "missing: every server needs at least one [[server.nic]]",
                    );
                }
                let nics = entry
                    .children
                    .iter()
                    .map(|nic| self.nic(nic, kind, networks, switches, &pools, &mut nics))
                    .collect();
                Server { name, kind, tenant, user_email, action, protected, hypervisor, domain, bmc, nics }
            })
            .collect()
    }

    /// A server's `hypervisor` and `domain`: required on a virtual server, refused on a physical
    /// one; no two servers share a domain on one hypervisor.
    fn server_vm(
        &mut self,
        entry: &Entry,
        kind: Option<ServerKind>,
        hypervisors: &[Hypervisor],
        registry: &mut MachineRegistry,
    ) -> (Option<String>, Option<String>) {
        let hypervisor = entry.get("hypervisor").map(|leaf| {
            // On a physical server it is wrong whatever it names (reported below).
            let physical = kind == Some(ServerKind::Physical);
            if !physical && find(hypervisors, |h| h.name.as_deref() == Some(leaf.value.as_str())).is_none() {
                let detail = format!("no hypervisor is named `{}`", leaf.value);
                self.at(leaf.span.start, entry.key_of("hypervisor"), detail);
            }
            leaf.value.clone()
        });
        let domain = entry.get("domain").and_then(|leaf| self.check(entry, "domain", leaf, check_domain));
        match kind {
            Some(ServerKind::Virtual) => {
                if entry.absent("hypervisor") {
                    self.at(
                        entry.start,
                        entry.key_of("hypervisor"),
                        "missing: a virtual server needs the [[hypervisor]] that runs its VM",
                    );
                }
                if entry.absent("domain") {
                    self.at(
                        entry.start,
                        entry.key_of("domain"),
                        "missing: a virtual server needs its domain, the name of its VM on the hypervisor (as \
                         `virsh list --all` shows it)",
                    );
                }
                if let (Some(hypervisor), Some(domain), Some(leaf)) = (&hypervisor, &domain, entry.get("domain")) {
                    let slot = (hypervisor.clone(), domain.clone());
                    if let Some(first) = registry.domains.get(&slot) {
                        let detail =
                            format!("domain `{domain}` of hypervisor `{hypervisor}` is already the VM of {first}");
                        self.at(leaf.span.start, entry.key_of("domain"), detail);
                    } else {
                        registry.domains.insert(slot, format!("{} (line {})", entry.key, self.line(entry.start)));
                    }
                }
            }
            Some(ServerKind::Physical) => {
                for field in ["hypervisor", "domain"] {
                    if let Some(leaf) = entry.get(field) {
                        let detail = format!(
                            "a physical server has no {field}; remove it, or set kind = \"virtual\" if the server \
                             is a VM"
                        );
                        self.at(leaf.span.start, entry.key_of(field), detail);
                    }
                }
            }
            None => {}
        }
        (hypervisor, domain)
    }

    /// A physical server's `[server.bmc]`; no two servers share a BMC's system.
    fn bmc(&mut self, config: &Path, entry: &Entry, registry: &mut MachineRegistry) -> Option<BmcConfig> {
        let driver = self
            .required(entry, "driver", "every BMC needs a driver (redfish)")
            .and_then(|leaf| self.choice(entry, "driver", leaf, BmcDriverKind::ALL));
        let endpoint = self
            .required(
                entry,
                "endpoint",
                "a BMC needs its endpoint, the base URL of its Redfish service, like https://10.0.0.5",
            )
            .and_then(|leaf| self.parse_with(entry, "endpoint", leaf, parse_endpoint));
        let system = self
            .required(
                entry,
                "system",
                "a BMC needs the Redfish path of the server's system, like /redfish/v1/Systems/1",
            )
            .and_then(|leaf| self.check(entry, "system", leaf, check_system));
        let username = self
            .required(entry, "username", "a BMC needs the username Cordon logs in with")
            .and_then(|leaf| self.check(entry, "username", leaf, check_text));
        let password_file = self
            .required(
                entry,
                "password_file",
                "a BMC needs password_file, a file holding its password (the configuration never holds secrets)",
            )
            .and_then(|leaf| self.check(entry, "password_file", leaf, check_path))
            .map(|text| resolve_path(config, Path::new(&text)));
        let ca_file = match entry.get("ca_file") {
            Some(leaf) => {
                self.check(entry, "ca_file", leaf, check_path).map(|text| Some(resolve_path(config, Path::new(&text))))
            }
            None => Some(None).filter(|_| entry.absent("ca_file")),
        };
        if let (Some(endpoint), Some(system), Some(leaf)) = (&endpoint, &system, entry.get("system")) {
            let slot = (endpoint.to_ascii_lowercase(), system.trim_end_matches('/').to_string());
            if let Some(first) = registry.systems.get(&slot) {
                let detail = format!("system `{system}` of `{endpoint}` is already the system of {first}");
                self.at(leaf.span.start, entry.key_of("system"), detail);
            } else {
                registry.systems.insert(slot, format!("{} (line {})", entry.key, self.line(entry.start)));
            }
        }
        Some(BmcConfig {
            driver: driver?,
            endpoint: endpoint?,
            system: system?,
            username: username?,
            password_file: password_file?,
            ca_file: ca_file?,
            insecure: entry.get_bool("insecure").is_some_and(|flag| flag.value),
        })
    }

    fn nic(
        &mut self,
        entry: &Entry,
        kind: Option<ServerKind>,
        networks: &[Net<'_>],
        switches: &[Switch],
        pools: &[(&Net<'_>, AddressRange)],
        registry: &mut NicRegistry,
    ) -> Nic {
        let here = |v: &Self| format!("{} (line {})", entry.key, v.line(entry.start));

        let mac =
            self.required(entry, "mac", "every NIC needs its MAC address, like 02:00:00:00:01:01").and_then(|leaf| {
                let mac = self.parse_with(entry, "mac", leaf, |text| {
                    let mac = text.parse::<MacAddr>()?;
                    if mac.0 == [0; 6] || mac.0[0] & 1 == 1 {
                        return Err(cordon_model::ParseError(format!(
                            "`{text}` is a multicast or null address, not the address of a NIC"
                        )));
                    }
                    Ok(mac)
                })?;
                if let Some(first) = registry.macs.get(&mac) {
                    let detail = format!("MAC `{mac}` is already the MAC of {first}");
                    self.at(leaf.span.start, entry.key_of("mac"), detail);
                } else {
                    registry.macs.insert(mac, here(self));
                }
                Some(mac)
            });

        let network = self
            .required(entry, "network", "every NIC needs the operational network it is on")
            .and_then(|leaf| {
                let name = leaf.value.as_str();
                let Some(net) = find(networks, |n| n.name.as_deref() == Some(name)) else {
                    let detail = format!("no network is named `{name}`");
                    self.at(leaf.span.start, entry.key_of("network"), detail);
                    return None;
                };
                if net.role == Some(NetworkRole::Quarantine) {
                    let detail = format!(
                        "network `{name}` is a quarantine network; a NIC is configured on its operational network and quarantine moves it"
                    );
                    self.at(leaf.span.start, entry.key_of("network"), detail);
                }
                Some(net)
            });

        let ip = self.required(entry, "ip", "every NIC needs its address on its network").and_then(|leaf| {
            let ip = self.parse_with(entry, "ip", leaf, parse_ip)?;
            let key = entry.key_of("ip");
            if let Some(net) = network {
                if let Some(subnet) = net.subnet.filter(|s| !s.contains(&ip)) {
                    let detail =
                        format!("`{ip}` is outside the subnet {subnet} of network `{}`", leaf_value(net.entry, "name"));
                    self.at(leaf.span.start, key.clone(), detail);
                } else if net.gateway == Some(ip) {
                    let detail = format!("`{ip}` is the gateway of network `{}`", leaf_value(net.entry, "name"));
                    self.at(leaf.span.start, key.clone(), detail);
                }
            }
            for (pool_net, pool) in pools {
                if pool.contains(ip) {
                    let detail = format!("`{ip}` is inside the quarantine pool {pool} of {}", pool_net.entry.key);
                    self.at(leaf.span.start, key.clone(), detail);
                }
            }
            if let Some(first) = registry.ips.get(&ip) {
                let detail = format!("`{ip}` is already the address of {first}");
                self.at(leaf.span.start, key, detail);
            } else {
                registry.ips.insert(ip, here(self));
            }
            Some(ip)
        });

        if kind == Some(ServerKind::Virtual) {
            for field in ["switch", "port"] {
                if let Some(leaf) = entry.get(field) {
                    let detail = format!(
                        "a NIC of a virtual server has no {field}: its hypervisor moves it between the networks' \
                         bridges; remove switch and port"
                    );
                    self.at(leaf.span.start, entry.key_of(field), detail);
                }
            }
            let network = network.and_then(|n| n.name.clone());
            return Nic { key: entry.key.clone(), mac, network, ip, switch: None, port: None };
        }
        let switch_leaf = entry.get("switch");
        let port_leaf = entry.get("port");
        let switch = switch_leaf.map(|leaf| {
            if find(switches, |s| s.name.as_deref() == Some(leaf.value.as_str())).is_none() {
                let detail = format!("no switch is named `{}`", leaf.value);
                self.at(leaf.span.start, entry.key_of("switch"), detail);
            }
            leaf.value.clone()
        });
        let port = port_leaf.and_then(|leaf| self.check(entry, "port", leaf, check_interface));
        match (switch_leaf, port_leaf) {
            (Some(leaf), None) if entry.absent("port") => self.at(
                leaf.span.start,
                entry.key_of("port"),
                "missing: a NIC with a switch needs its port on that switch",
            ),
            (None, Some(leaf)) if entry.absent("switch") => self.at(
                leaf.span.start,
                entry.key_of("switch"),
                "missing: a NIC with a port needs the switch that port is on",
            ),
            (None, None) if kind == Some(ServerKind::Physical) && entry.absent("switch") && entry.absent("port") => {
                self.at(
                    entry.start,
                    entry.key_of("switch"),
                    "missing: a NIC of a physical server needs its switch and port",
                )
            }
            _ => {}
        }
        if let (Some(switch), Some(port), Some(leaf)) = (&switch, &port, port_leaf) {
            let slot = (switch.clone(), port.clone());
            if let Some(first) = registry.ports.get(&slot) {
                let detail = format!("port `{port}` of switch `{switch}` is already the port of {first}");
                self.at(leaf.span.start, entry.key_of("port"), detail);
            } else {
                registry.ports.insert(slot, here(self));
            }
        }

        Nic { key: entry.key.clone(), mac, network: network.and_then(|n| n.name.clone()), ip, switch, port }
    }

    fn sources(&mut self, config: &Path, entries: &[Entry], manager_listen: Option<SocketAddr>) -> Vec<Source> {
        let mut seen = HashMap::new();
        let mut registry = SourceRegistry::default();
        entries
            .iter()
            .map(|entry| {
                let name = self.name(entry, "source", &mut seen);
                let Some(kind) = self
                    .required(entry, "type", "every source needs a type (suricata-eve, cef-syslog or webhook)")
                    .and_then(|leaf| self.choice(entry, "type", leaf, SourceType::ALL))
                else {
                    return Source { name, kind: None, max_rate: Some(None) };
                };
                let keys = kind.keys();
                for (&field, &at) in &entry.present {
                    if !keys.contains(&field) {
                        let detail = format!("does not apply to a {kind} source (its keys: {})", keys.join(", "));
                        self.at(at, entry.key_of(field), detail);
                    }
                }
                let kind = match kind {
                    SourceType::SuricataEve => self.eve_source(config, entry, &mut registry),
                    SourceType::CefSyslog => self.cef_source(entry, manager_listen, &mut registry),
                    SourceType::Webhook => self.webhook_source(config, entry, &mut registry),
                };
                let max_rate = match entry.get_int("max_rate") {
                    Some(number) => {
                        let rate = u32::try_from(number.value).ok().filter(|n| (1..=10_000_000).contains(n));
                        if rate.is_none() {
                            let detail =
                                format!("`{}` is out of range: events per second, from 1 to 10000000", number.value);
                            self.at(number.start, entry.key_of("max_rate"), detail);
                        }
                        rate.map(Some)
                    }
                    None => Some(None).filter(|_| entry.absent("max_rate")),
                };
                Source { name, kind, max_rate }
            })
            .collect()
    }

    fn eve_source(&mut self, config: &Path, entry: &Entry, registry: &mut SourceRegistry) -> Option<SourceKind> {
        let path = self.source_file(config, entry, "path", registry);
        let socket = self.source_file(config, entry, "socket", registry);
        if let (Some(Some(socket)), Some(leaf)) = (&socket, entry.get("socket")) {
            let length = socket.as_os_str().len();
            if length > MAX_SOCKET_PATH {
                let detail = format!(
                    "`{}` is {length} bytes long; unix socket paths are at most {MAX_SOCKET_PATH}",
                    socket.display()
                );
                self.at(leaf.span.start, entry.key_of("socket"), detail);
            }
        }
        if entry.absent("path") && entry.absent("socket") {
            self.at(
                entry.start,
                entry.key_of("path"),
                "missing: a suricata-eve source needs a path (an EVE JSON file, followed like tail -F), a socket \
                 (a unix_stream socket), or both",
            );
        }
        Some(SourceKind::SuricataEve { path: path?, socket: socket? })
    }

    fn cef_source(
        &mut self,
        entry: &Entry,
        manager_listen: Option<SocketAddr>,
        registry: &mut SourceRegistry,
    ) -> Option<SourceKind> {
        let listen = |v: &mut Self, field: &'static str, claimed: &mut HashMap<SocketAddr, String>| {
            let Some(leaf) = entry.get(field) else {
                return Some(None).filter(|_| entry.absent(field));
            };
            let address = v.parse_with(entry, field, leaf, parse_listen)?;
            let clash = if field == "listen_tcp" && address.port() != 0 && manager_listen == Some(address) {
                Some("the address of manager.listen".to_string())
            } else if address.port() != 0 {
                claimed.get(&address).cloned()
            } else {
                None
            };
            match clash {
                Some(first) => v.at(leaf.span.start, entry.key_of(field), format!("`{address}` is already {first}")),
                None => {
                    let here = format!("the {field} of {} (line {})", entry.key, v.line(entry.start));
                    claimed.entry(address).or_insert(here);
                }
            }
            Some(Some(address))
        };
        let listen_udp = listen(self, "listen_udp", &mut registry.udp);
        let listen_tcp = listen(self, "listen_tcp", &mut registry.tcp);
        if entry.absent("listen_udp") && entry.absent("listen_tcp") {
            self.at(
                entry.start,
                entry.key_of("listen_udp"),
                "missing: a cef-syslog source needs listen_udp, listen_tcp, or both (an IP:port, like 127.0.0.1:5514)",
            );
        }
        let profile = match entry.get("profile") {
            Some(leaf) => self.choice(entry, "profile", leaf, CefProfile::ALL),
            None => Some(CefProfile::Generic).filter(|_| entry.absent("profile")),
        };
        let allowed_peers = match entry.get_list("allowed_peers") {
            Some(list) => {
                self.non_empty(entry, "allowed_peers", list, "remove the key to accept every peer").and_then(|list| {
                    let peers: Vec<Option<IpNet>> = list
                        .items
                        .iter()
                        .enumerate()
                        .map(|(index, leaf)| {
                            let key = format!("{}[{index}]", entry.key_of("allowed_peers"));
                            match parse_peer(&leaf.value) {
                                Ok(net) => Some(net),
                                Err(detail) => {
                                    self.at(leaf.span.start, key, detail);
                                    None
                                }
                            }
                        })
                        .collect();
                    peers.into_iter().collect::<Option<Vec<_>>>()
                })
            }
            None => Some(Vec::new()).filter(|_| entry.absent("allowed_peers")),
        };
        Some(SourceKind::CefSyslog {
            listen_udp: listen_udp?,
            listen_tcp: listen_tcp?,
            profile: profile?,
            allowed_peers: allowed_peers?,
        })
    }

    fn webhook_source(&mut self, config: &Path, entry: &Entry, registry: &mut SourceRegistry) -> Option<SourceKind> {
        let token_file = self.source_file(config, entry, "token_file", registry);
        let hmac_secret_file = self.source_file(config, entry, "hmac_secret_file", registry);
        match (entry.present.get("token_file"), entry.present.get("hmac_secret_file")) {
            (None, None) => self.at(
                entry.start,
                entry.key_of("token_file"),
                "missing: a webhook source needs token_file (a file holding the bearer token senders present) or \
                 hmac_secret_file (a file holding the key senders sign requests with)",
            ),
            (Some(_), Some(&at)) => self.at(
                at,
                entry.key_of("hmac_secret_file"),
                "a webhook source takes token_file or hmac_secret_file, not both",
            ),
            _ => {}
        }
        Some(SourceKind::Webhook { token_file: token_file?, hmac_secret_file: hmac_secret_file? })
    }

    /// An optional file (or socket) of a source, resolved against the configuration's folder and
    /// not claimed by another source: `Some(None)` when absent, `None` when wrong.
    fn source_file(
        &mut self,
        config: &Path,
        entry: &Entry,
        field: &'static str,
        registry: &mut SourceRegistry,
    ) -> Option<Option<PathBuf>> {
        let Some(leaf) = entry.get(field) else {
            return Some(None).filter(|_| entry.absent(field));
        };
        let path = resolve_path(config, Path::new(&self.check(entry, field, leaf, check_path)?));
        if let Some(first) = registry.files.get(&path) {
            let detail = format!("`{}` is already {first}", path.display());
            self.at(leaf.span.start, entry.key_of(field), detail);
        } else {
            let here = format!("the {field} of {} (line {})", entry.key, self.line(entry.start));
            registry.files.insert(path.clone(), here);
        }
        Some(Some(path))
    }

    /// `list`, unless it was written empty (`why` says what to write instead).
    fn non_empty<'l>(&mut self, entry: &Entry, field: &str, list: &'l List, why: &str) -> Option<&'l List> {
        if list.written == 0 {
            self.at(list.start, entry.key_of(field), format!("must not be empty; {why}"));
            return None;
        }
        Some(list)
    }

    /// A list of non-empty strings; `why` says what to write instead of an empty list.
    fn strings(&mut self, entry: &Entry, field: &str, why: &str, item_why: &str) -> Option<Vec<String>> {
        let Some(list) = entry.get_list(field) else {
            return Some(Vec::new()).filter(|_| entry.absent(field));
        };
        let list = self.non_empty(entry, field, list, why)?;
        let mut ok = true;
        for (index, leaf) in list.items.iter().enumerate() {
            if leaf.value.is_empty() {
                let key = format!("{}[{index}]", entry.key_of(field));
                self.at(leaf.span.start, key, format!("must not be empty{item_why}"));
                ok = false;
            }
        }
        ok.then(|| list.items.iter().map(|leaf| leaf.value.clone()).collect())
    }

    /// A list of names, each of which must be one of `known` (things of kind `what`).
    fn references(&mut self, entry: &Entry, field: &str, what: &str, known: &[String]) -> Option<Vec<String>> {
        let why = format!("remove the key to match any {what}");
        let names = self.strings(entry, field, &why, "")?;
        let Some(list) = entry.get_list(field) else {
            return Some(names);
        };
        for (index, leaf) in list.items.iter().enumerate() {
            if !known.contains(&leaf.value) {
                let key = format!("{}[{index}]", entry.key_of(field));
                self.at(leaf.span.start, key, format!("no {what} is named `{}`", leaf.value));
            }
        }
        Some(names)
    }

    /// An optional word out of `all`: `Some(default)` when absent, `None` when wrong.
    fn choice_or<T: FromStr + Display + Copy>(
        &mut self,
        entry: &Entry,
        field: &str,
        all: &[T],
        default: Option<T>,
    ) -> Option<Option<T>> {
        match entry.get(field) {
            Some(leaf) => self.choice(entry, field, leaf, all).map(Some),
            None => Some(default).filter(|_| entry.absent(field)),
        }
    }

    /// An optional duration: `Some(default)` when absent, `None` when wrong.
    fn duration(&mut self, entry: &Entry, field: &str, default: u64, allow_zero: bool) -> Option<u64> {
        let Some(leaf) = entry.get(field) else {
            return Some(default).filter(|_| entry.absent(field));
        };
        self.parse_with(entry, field, leaf, |text| {
            let seconds = parse_duration(text)?;
            if seconds == 0 && !allow_zero {
                return Err(format!("`{text}` is no time at all; the {field} must be longer than 0s"));
            }
            Ok::<_, String>(seconds)
        })
    }

    fn policy(&mut self, entry: Option<&Entry>, names: &Names) -> Option<Policy> {
        let defaults = Policy::default();
        let Some(entry) = entry else {
            return Some(defaults);
        };
        let default_action =
            self.choice_or(entry, "default_action", PolicyAction::ALL, Some(defaults.default_action)).flatten();
        let default_mode =
            self.choice_or(entry, "default_mode", PolicyMode::ALL, Some(defaults.default_mode)).flatten();
        let exclude_keywords = match entry.get_list("exclude_keywords") {
            // An empty list is fine: no exclusions.
            Some(list) if list.written == 0 => Some(Vec::new()),
            _ => self.strings(entry, "exclude_keywords", "", " (it would match every signature)"),
        };
        let max_auto_actions = match entry.get_int("max_auto_actions") {
            Some(number) => {
                let key = entry.key_of("max_auto_actions");
                let max = u32::try_from(number.value).ok().filter(|&max| max >= 1);
                if max.is_none() {
                    let detail = if number.value < 1 {
                        format!(
                            "`{}` is too small: at least 1 (to hold every automatic action for approval, set \
                             default_mode = \"approve\")",
                            number.value
                        )
                    } else {
                        format!("`{}` is too large (at most {})", number.value, u32::MAX)
                    };
                    self.at(number.start, key, detail);
                }
                max
            }
            None => Some(defaults.max_auto_actions).filter(|_| entry.absent("max_auto_actions")),
        };
        let window_secs = self.duration(entry, "window", defaults.window_secs, false);
        let cooldown_secs = self.duration(entry, "cooldown", defaults.cooldown_secs, true);
        let shadow = entry.get_bool("shadow").is_some_and(|flag| flag.value);

        let mut seen = HashMap::new();
        let rules: Vec<Option<Rule>> = entry
            .children
            .iter()
            .map(|rule| self.rule(rule, default_mode.unwrap_or(defaults.default_mode), names, &mut seen))
            .collect();

        Some(Policy {
            default_action: default_action?,
            default_mode: default_mode?,
            exclude_keywords: exclude_keywords?,
            max_auto_actions: max_auto_actions?,
            window_secs: window_secs?,
            shadow,
            cooldown_secs: cooldown_secs?,
            rules: rules.into_iter().collect::<Option<_>>()?,
        })
    }

    /// The `[notify]` section: SMTP and its credentials, webhooks, approval links.
    fn notify(&mut self, config: &Path, entry: &Entry) -> Option<NotifyConfig> {
        let file = |v: &mut Self, field: &str| -> Option<Option<PathBuf>> {
            match entry.get(field) {
                Some(leaf) => {
                    v.check(entry, field, leaf, check_path).map(|text| Some(resolve_path(config, Path::new(&text))))
                }
                None => Some(None).filter(|_| entry.absent(field)),
            }
        };
        let email = |v: &mut Self, field: &str| -> Option<Option<String>> {
            match entry.get(field) {
                Some(leaf) => v.check(entry, field, leaf, check_email).map(Some),
                None => Some(None).filter(|_| entry.absent(field)),
            }
        };

        // SMTP: the URL, then the keys that only make sense with it.
        let starttls = entry.get_bool("starttls");
        let smtp = match entry.get("smtp") {
            Some(leaf) => {
                self.parse_with(entry, "smtp", leaf, |text| parse_smtp(text, starttls.is_some_and(|f| f.value)))
            }
            None => None,
        };
        let from = email(self, "from");
        let username = match entry.get("smtp_username") {
            Some(leaf) => self.check(entry, "smtp_username", leaf, check_text).map(Some),
            None => Some(None).filter(|_| entry.absent("smtp_username")),
        };
        let password_file = file(self, "smtp_password_file");
        let ca_file = file(self, "smtp_ca_file");
        let has_smtp = !entry.absent("smtp");
        if has_smtp {
            if entry.absent("from") {
                self.at(
                    entry.start,
                    entry.key_of("from"),
                    "missing: the sender address of the e-mails (like cordon@example.com)",
                );
            }
        } else {
            for field in ["starttls", "from", "smtp_username", "smtp_password_file", "smtp_ca_file"] {
                if let Some(&at) = entry.present.get(field) {
                    self.at(at, entry.key_of(field), "only with smtp (the SMTP server e-mails are sent through)");
                }
            }
        }
        match (entry.present.get("smtp_username"), entry.present.get("smtp_password_file")) {
            (Some(_), None) => self.at(
                entry.start,
                entry.key_of("smtp_password_file"),
                "missing: smtp_username needs smtp_password_file (a file holding the password)",
            ),
            (None, Some(&at)) => self.at(at, entry.key_of("smtp_password_file"), "only with smtp_username"),
            _ => {}
        }
        if let (Some((SmtpSecurity::Plain, _, _)), Some(&at)) = (&smtp, entry.present.get("smtp_username")) {
            self.at(
                at,
                entry.key_of("smtp_username"),
                "logging in over plain SMTP would send the password unencrypted: set starttls = true or use smtps://",
            );
        }
        if let (Some((SmtpSecurity::Plain, _, _)), Some(&at)) = (&smtp, entry.present.get("smtp_ca_file")) {
            self.at(at, entry.key_of("smtp_ca_file"), "only with TLS: set starttls = true or use smtps://");
        }

        let webhooks = match entry.get_list("webhooks") {
            Some(list) => {
                self.non_empty(entry, "webhooks", list, "remove the key to post to no webhook").and_then(|list| {
                    let urls: Vec<Option<String>> = list
                        .items
                        .iter()
                        .enumerate()
                        .map(|(index, leaf)| match parse_web_url(&leaf.value, "a webhook URL") {
                            Ok(url) => Some(url),
                            Err(detail) => {
                                self.at(leaf.span.start, format!("{}[{index}]", entry.key_of("webhooks")), detail);
                                None
                            }
                        })
                        .collect();
                    urls.into_iter().collect::<Option<Vec<_>>>()
                })
            }
            None => Some(Vec::new()).filter(|_| entry.absent("webhooks")),
        };
        if !has_smtp && entry.absent("webhooks") {
            self.at(
                entry.start,
                entry.key_of("smtp"),
                "missing: [notify] needs smtp (an SMTP server, like smtp://127.0.0.1:25), webhooks, or both",
            );
        }
        let operator_email = email(self, "operator_email");

        // Approval links: public_url and link_secret_file together, and only with e-mail.
        let public_url = match entry.get("public_url") {
            Some(leaf) => self.parse_with(entry, "public_url", leaf, |t| parse_web_url(t, "a public URL")).map(Some),
            None => Some(None).filter(|_| entry.absent("public_url")),
        };
        let secret_file = file(self, "link_secret_file");
        let ttl_secs = self.duration(entry, "link_ttl", DEFAULT_LINK_TTL_SECS, false);
        let links_wanted = ["public_url", "link_secret_file", "link_ttl"].iter().find_map(|f| entry.present.get(f));
        match (entry.present.get("public_url"), entry.present.get("link_secret_file")) {
            (Some(_), None) => self.at(
                entry.start,
                entry.key_of("link_secret_file"),
                "missing: approval links need link_secret_file (a file holding the key links are signed with)",
            ),
            (None, Some(_)) => self.at(
                entry.start,
                entry.key_of("public_url"),
                "missing: approval links need public_url (how administrators reach this Cordon, like \
                 https://cordon.example:8080)",
            ),
            (None, None) => {
                if let Some(&at) = entry.present.get("link_ttl") {
                    self.at(at, entry.key_of("link_ttl"), "only with public_url and link_secret_file");
                }
            }
            _ => {}
        }
        if let (Some(&at), false) = (links_wanted, has_smtp) {
            let field = ["public_url", "link_secret_file", "link_ttl"]
                .into_iter()
                .find(|f| !entry.absent(f))
                .unwrap_or("public_url");
            self.at(
                at,
                entry.key_of(field),
                "approval links are sent by e-mail only: set smtp too, or remove the link keys",
            );
        }

        let smtp = match (has_smtp, smtp) {
            (false, _) => None,
            (true, Some((security, host, port))) => Some(SmtpConfig {
                url: entry.get("smtp").map(|l| l.value.clone())?,
                host,
                port,
                security,
                from: from.flatten()?,
                username: username?,
                password_file: password_file?,
                ca_file: ca_file?,
            }),
            (true, None) => return None,
        };
        let links = match (public_url?, secret_file?) {
            (Some(public_url), Some(secret_file)) => Some(LinksConfig { public_url, secret_file, ttl_secs: ttl_secs? }),
            _ => None,
        };
        Some(NotifyConfig { smtp, webhooks: webhooks?, operator_email: operator_email?, links })
    }

    fn rule(
        &mut self,
        entry: &Entry,
        default_mode: PolicyMode,
        names: &Names,
        seen: &mut HashMap<String, String>,
    ) -> Option<Rule> {
        let name = self.name_checked(entry, "rule", seen, check_rule_name);
        let sources = self.references(entry, "sources", "source", &names.sources);
        let min_severity = self.choice_or(entry, "min_severity", ThreatSeverity::ALL, None);
        let signature_ids = self.strings(entry, "signature_ids", "remove the key to match any signature", "");
        let categories = self.strings(entry, "categories", "remove the key to match any category", "");
        let networks = self.references(entry, "networks", "network", &names.networks);
        let tenants = self.references(entry, "tenants", "tenant", &names.tenants);
        let servers = self.references(entry, "servers", "server", &names.servers);
        let action = self
            .required(
                entry,
                "action",
                "every rule needs an action (quarantine, reboot, quarantine_reboot, notify or ignore)",
            )
            .and_then(|leaf| self.choice(entry, "action", leaf, PolicyAction::ALL));
        let mode = self.choice_or(entry, "mode", PolicyMode::ALL, Some(default_mode)).flatten();
        let subject = self.choice_or(entry, "subject", SubjectSide::ALL, None);
        let shadow = entry.get_bool("shadow").is_some_and(|flag| flag.value);
        Some(Rule {
            name: name?,
            sources: sources?,
            min_severity: min_severity?,
            signature_ids: signature_ids?,
            categories: categories?,
            networks: networks?,
            tenants: tenants?,
            servers: servers?,
            action: action?,
            mode: mode?,
            shadow,
            subject: subject?,
        })
    }

    /// On a linux-bridge switch, a port is moved between the bridges of its operational network
    /// and of that network's quarantine network: both must have one. On an ovs switch, between
    /// their VLANs: both must have a `vlan`. So must the networks of a
    /// VM's NIC, whose hypervisor moves it between the same networks' bridges on its host.
    fn bridges(&mut self, networks: &[Net<'_>], switches: &[Switch], servers: &[Server]) {
        let mut reported: Vec<String> = Vec::new();
        for server in servers {
            for nic in &server.nics {
                let Some(network_name) = &nic.network else {
                    continue;
                };
                let mut key = "bridge";
                let (carries, moves) = if server.kind == Some(ServerKind::Virtual) {
                    let vm = format!("{} is the NIC of a VM, which its hypervisor", nic.key);
                    (
                        format!("{vm} connects to this network's bridge on the host"),
                        format!("{vm} moves to this network's bridge on quarantine"),
                    )
                } else {
                    let Some(switch_name) = &nic.switch else {
                        continue;
                    };
                    let Some(switch) = find(switches, |s| s.name.as_ref() == Some(switch_name)) else {
                        continue;
                    };
                    let driver = match switch.driver {
                        Some(SwitchDriverKind::LinuxBridge) => "linux-bridge",
                        Some(SwitchDriverKind::Ovs) => {
                            key = "vlan";
                            "ovs"
                        }
                        None => continue,
                    };
                    let port = format!("{} is on {driver} switch `{switch_name}`, which", nic.key);
                    (
                        format!("{port} carries it on this network"),
                        format!("{port} moves it to this network on quarantine"),
                    )
                };
                let Some(network) = find(networks, |n| n.name.as_ref() == Some(network_name)) else {
                    continue;
                };
                let quarantine = network
                    .quarantine_network
                    .and_then(|leaf| find(networks, |n| n.name.as_deref() == Some(leaf.value.as_str())));
                for (net, why) in [(Some(network), &carries), (quarantine, &moves)] {
                    let Some(net) = net else { continue };
                    let present = if key == "vlan" {
                        net.entry.get_int("vlan").is_some() || !net.entry.absent("vlan")
                    } else {
                        net.entry.get("bridge").is_some()
                    };
                    let seen = format!("{}.{key}", net.entry.key);
                    if present || reported.contains(&seen) {
                        continue;
                    }
                    reported.push(seen);
                    let detail = format!("missing: {why}, so the network needs a {key}");
                    self.at(net.entry.start, net.entry.key_of(key), detail);
                }
            }
        }
    }
}

/// What NICs already claimed, and by whom (a readable key with its line).
#[derive(Default)]
struct NicRegistry {
    macs: HashMap<MacAddr, String>,
    ips: HashMap<IpAddr, String>,
    ports: HashMap<(String, String), String>,
}

/// The machines servers claimed (VMs by hypervisor and domain, BMC systems by endpoint and
/// path), and by whom (a readable key with its line).
#[derive(Default)]
struct MachineRegistry {
    domains: HashMap<(String, String), String>,
    systems: HashMap<(String, String), String>,
}

/// The first item (in file order) matching `pred`.
fn find<T>(items: &[T], pred: impl Fn(&T) -> bool) -> Option<&T> {
    items.iter().find(|item| pred(item))
}

fn leaf_value<'e>(entry: &'e Entry, field: &str) -> &'e str {
    entry.get(field).map_or("", |leaf| leaf.value.as_str())
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .map_err(|_| format!("`{text}` is not a listen address (expected IP:port, like 127.0.0.1:8080 or [::1]:8080)"))
}

/// A peer allowed to send: a subnet, or one address (a /32 or /128).
fn parse_peer(text: &str) -> Result<IpNet, String> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(address));
    }
    let net = text
        .parse::<IpNet>()
        .map_err(|_| format!("`{text}` is not an address or a subnet (like 10.0.0.5 or 10.0.0.0/24)"))?;
    if net.trunc() != net {
        return Err(format!("`{text}` has host bits set; did you mean {}?", net.trunc()));
    }
    Ok(net)
}

/// A duration in whole seconds, written as a number and a unit: `30s`, `10m`, `2h`, `1d`.
fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration (expected a whole number and a unit, s, m, h or d, like \"30s\", \"10m\", \"2h\" or \"1d\")"
        )
    };
    let Some((at, unit)) = text.char_indices().last() else {
        return Err(bad());
    };
    let digits = &text[..at];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 60 * 60,
        'd' => 24 * 60 * 60,
        _ => return Err(bad()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(scale))
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// How a duration key was written (`` `2m` ``), or its default when absent.
fn written_duration(entry: &Entry, field: &str, seconds: u64) -> String {
    match entry.get(field) {
        Some(leaf) => format!("`{}`", leaf.value),
        None => format!("`{}`, its default", format_duration(seconds)),
    }
}

/// A duration in the largest unit that writes it whole: `30s`, `5m`, `2h`, `1d`.
fn format_duration(seconds: u64) -> String {
    let units = [(24 * 60 * 60, 'd'), (60 * 60, 'h'), (60, 'm')];
    match units.iter().find(|&&(scale, _)| seconds > 0 && seconds.is_multiple_of(scale)) {
        Some(&(scale, unit)) => format!("{}{unit}", seconds / scale),
        None => format!("{seconds}s"),
    }
}

/// A BMC's endpoint: `https://host[:port]` (plain HTTP is refused); given back without a
/// trailing `/`.
fn parse_endpoint(text: &str) -> Result<String, String> {
    let like = "like https://10.0.0.5 or https://bmc-07.example.com:8443";
    let bad = |why: &str| format!("`{text}` is not a BMC endpoint ({why}; {like})");
    if text.contains('@') {
        // Not quoted: what precedes the `@` may be a password.
        return Err("the endpoint holds credentials (`user:password@`), which belong in username and password_file, \
                    not in the URL"
            .to_string());
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(bad("expected an https:// URL"));
    };
    let plain = if scheme.eq_ignore_ascii_case("https") {
        false
    } else if scheme.eq_ignore_ascii_case("http") {
        true
    } else {
        return Err(bad("expected an https:// URL"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no spaces or control characters"));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "`{text}` is not a BMC endpoint: only the scheme, host and port ({like}); the Redfish path belongs in \
             system"
        ));
    }
    // The port, if any, after an `[IPv6]` address or a host name or IPv4 address.
    let port = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let Some((address, after)) = bracketed.split_once(']') else {
                return Err(bad("unclosed `[`"));
            };
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between `[` and `]`"));
            }
            match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| bad("expected `:port` after `]`"))?),
            }
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if host.is_empty() {
                return Err(bad("no host"));
            }
            if host.contains(['[', ']']) || port.is_some_and(|port| port.contains(':')) {
                return Err(bad("write an IPv6 address between `[` and `]`"));
            }
            port
        }
    };
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Err(bad("the port is a number from 1 to 65535"));
    }
    if plain {
        // Even `insecure = true` does not allow it: that only skips checking the certificate.
        return Err(format!(
            "`{text}` is plain HTTP, which would send the BMC's password unencrypted: use https:// (insecure = true \
             only skips checking the BMC's certificate)"
        ));
    }
    Ok(text.strip_suffix('/').unwrap_or(text).to_string())
}

/// `[notify] smtp`: `smtp://host[:port]` or `smtps://host[:port]`, giving (security, host, port).
fn parse_smtp(text: &str, starttls: bool) -> Result<(SmtpSecurity, String, u16), String> {
    let like = "like smtp://127.0.0.1:25 or smtps://mail.example.com";
    let bad = |why: &str| format!("`{text}` is not an SMTP server ({why}; {like})");
    if text.contains('@') {
        return Err("the URL holds credentials (`user:password@`), which belong in smtp_username and \
                    smtp_password_file"
            .to_string());
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(bad("expected smtp:// or smtps://"));
    };
    let security = match scheme.to_ascii_lowercase().as_str() {
        "smtp" if starttls => SmtpSecurity::StartTls,
        "smtp" => SmtpSecurity::Plain,
        "smtps" if starttls => {
            return Err(format!(
                "`{text}` is TLS from the first byte (smtps://): starttls = true only goes with smtp://"
            ));
        }
        "smtps" => SmtpSecurity::Tls,
        _ => return Err(bad("expected smtp:// or smtps://")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = split_authority(authority).map_err(|why| bad(&why))?;
    let port = match port {
        Some(port) => port,
        None => match security {
            SmtpSecurity::Plain => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
        },
    };
    Ok((security, host, port))
}

/// `host[:port]` or `[v6][:port]`: the host (without brackets) and the port if written.
fn split_authority(authority: &str) -> Result<(String, Option<u16>), String> {
    if authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("no spaces or control characters".to_string());
    }
    if authority.contains(['/', '?', '#']) {
        return Err("only a host and a port".to_string());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']').ok_or("unclosed `[`")?;
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("not an IPv6 address between `[` and `]`".to_string());
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("expected `:port` after `]`")?),
            };
            (address, port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if host.contains(['[', ']']) || port.is_some_and(|port| port.contains(':')) {
                return Err("write an IPv6 address between `[` and `]`".to_string());
            }
            (host, port)
        }
    };
    if host.is_empty() {
        return Err("no host".to_string());
    }
    let port = match port {
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Some(p),
            _ => return Err("the port is a number from 1 to 65535".to_string()),
        },
        None => None,
    };
    Ok((host.to_string(), port))
}

/// An `http://` or `https://` URL with a host, given back without a trailing `/` (`what`
/// names it in errors: a webhook, Cordon's public URL).
fn parse_web_url(text: &str, what: &str) -> Result<String, String> {
    let bad = |why: &str| format!("`{text}` is not {what} ({why}; like https://host.example:8443/path)");
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(bad("expected http:// or https://"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad("expected http:// or https://"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no spaces or control characters"));
    }
    if text.contains('#') {
        return Err(bad("no `#fragment`"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(format!("{what} must not hold credentials (`user:password@`)"));
    }
    split_authority(authority).map_err(|why| bad(&why))?;
    Ok(text.strip_suffix('/').unwrap_or(text).to_string())
}

/// A BMC's system: a Redfish path under `/redfish/v1/`.
fn check_system(text: &str) -> Result<(), String> {
    let rest = text.strip_prefix("/redfish/v1/").unwrap_or("");
    if rest.trim_matches('/').is_empty()
        || text.contains(['?', '#'])
        || text.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{text}` is not the Redfish path of a system (a path starting with /redfish/v1/, like \
             /redfish/v1/Systems/1)"
        ));
    }
    Ok(())
}

/// A hypervisor's `uri`, as its driver takes it (`qemu:///system`, `qemu+ssh://root@kvm-1/system`).
fn check_uri(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{text}` is not a URI (no spaces or control characters), like qemu:///system"));
    }
    Ok(())
}

/// A VM's name on its hypervisor (the libvirt domain).
fn check_domain(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.contains('/') || text.chars().any(char::is_control) {
        return Err(format!("`{text}` is not a valid domain name (no '/' or control characters)"));
    }
    Ok(())
}

/// Free text on one line, like a user name: not empty, no control characters.
fn check_text(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{text:?} must not contain control characters"));
    }
    Ok(())
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| format!("`{text}` is not an IP address"))
}

/// Names of networks, switches, tenants, servers and instances.
fn check_name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if !text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(format!("`{text}` is not a valid name (use only letters, digits, '.', '_' and '-')"));
    }
    Ok(())
}

/// Rule names: free text shown in decisions, on one line.
fn check_rule_name(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{text:?} is not a valid rule name (no control characters, such as line breaks)"));
    }
    if text.trim() != text {
        return Err(format!("{text:?} is not a valid rule name (no spaces at its start or end)"));
    }
    Ok(())
}

/// A path in the file: not empty, no NUL.
/// `[manager] database`: a PostgreSQL URL without a password.
fn parse_database_url(text: &str) -> Result<String, String> {
    let Some(rest) = text.strip_prefix("postgres://").or_else(|| text.strip_prefix("postgresql://")) else {
        return Err(format!(
            "`{text}` is not a PostgreSQL URL (expected postgres://USER@HOST:PORT/DATABASE; leave `database` out for \
             the embedded SQLite database)"
        ));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((user_info, _)) = authority.rsplit_once('@')
        && user_info.contains(':')
    {
        return Err("the URL holds a password: put it in a file named by `database_password_file` instead".into());
    }
    if authority.rsplit_once('@').map_or(authority, |(_, host)| host).is_empty() {
        return Err(format!("`{text}` names no host (expected postgres://USER@HOST:PORT/DATABASE)"));
    }
    Ok(text.to_string())
}

fn check_path(text: &str) -> Result<(), String> {
    if text.is_empty() {
        Err("must not be empty".to_string())
    } else if text.contains('\0') {
        Err("must not contain a NUL character".to_string())
    } else {
        Ok(())
    }
}

/// An OVSDB address: `unix:/ABSOLUTE/PATH` or `tcp:HOST:PORT` (the forms ovs-vsctl's --db takes
/// that Cordon's client speaks; no `ssl:`).
fn check_ovsdb(text: &str) -> Result<(), String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return if path.starts_with('/') {
            Ok(())
        } else {
            Err(format!("`{text}`: the socket path after unix: must be absolute"))
        };
    }
    if let Some(rest) = text.strip_prefix("tcp:") {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(format!("`{text}`: expected tcp:HOST:PORT, like tcp:127.0.0.1:6640"));
        };
        if host.trim_start_matches('[').trim_end_matches(']').is_empty() {
            return Err(format!("`{text}`: the host is missing (tcp:HOST:PORT)"));
        }
        return match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(()),
            _ => Err(format!("`{text}`: `{port}` is not a TCP port (1-65535)")),
        };
    }
    Err(format!("`{text}` is not an OVSDB address (expected unix:/PATH or tcp:HOST:PORT)"))
}

/// Linux interface names (bridges, ports), as the kernel's `dev_valid_name` accepts them.
fn check_interface(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.len() > MAX_INTERFACE_NAME {
        return Err(format!(
            "`{text}` is {} bytes long; Linux interface names are at most {MAX_INTERFACE_NAME}",
            text.len()
        ));
    }
    if text == "." || text == ".." || text.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{text}` is not a valid Linux interface name (no '/', ':', spaces or control characters; not . or ..)"
        ));
    }
    Ok(())
}

/// Network namespace names: a file name under /run/netns.
fn check_netns(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text == "." || text == ".." || text.contains('/') || text.contains('\0') {
        return Err(format!("`{text}` is not a valid network namespace name (no '/'; not . or ..)"));
    }
    Ok(())
}

/// A plausible e-mail address: `local@domain.tld`, nothing fancy.
fn check_email(text: &str) -> Result<(), String> {
    let bad = || Err(format!("`{text}` does not look like an e-mail address"));
    let Some((local, domain)) = text.split_once('@') else {
        return bad();
    };
    let local_ok = !local.is_empty()
        && local.chars().all(|c| {
            if c.is_ascii() {
                c.is_ascii_graphic() && !"@<>()[]\\,;:\"".contains(c)
            } else {
                !c.is_whitespace() && !c.is_control()
            }
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok { Ok(()) } else { bad() }
}

/// A relative path (`data_dir`, a source's files) is relative to the folder of the
/// configuration file.
fn resolve_path(config: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let folder = config.parent().unwrap_or(Path::new(""));
    let joined = folder.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// This host's name, or `cordon` if it has none.
fn default_instance() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result == 0 {
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        let name = String::from_utf8_lossy(&buffer[..end]).trim().to_string();
        if !name.is_empty() {
            return name;
        }
    }
    "cordon".to_string()
}
