//! Cordon's configuration: one TOML file, loaded and validated as a whole.
//!
//! [`load`] (or [`parse`]) either returns a [`Config`] in which every cross-reference holds
//! (each NIC's network exists and is operational, each operational network names an existing
//! quarantine network, ...) or a [`ConfigError`] listing **every** problem found, each naming the
//! file, the line and the key, one per line:
//!
//! ```text
//! cordon.toml:23: network "quarantine".pool: `10.99.0.100-10.98.0.1` ends before it starts
//! cordon.toml:31: server "sbc-01".nic[0].mac: `02:00:00:00:01` is not a MAC address (...)
//! ```
//!
//! Keys name an entry of an array of tables by its `name` (`network "office"`), or by its 0-based
//! index where it has no usable name (`network[2]`, and always for NICs: `server "sbc-01".nic[0]`).
//!
//! Besides the inventory (manager, networks, switches, hypervisors, tenants, servers with their
//! BMCs), the file names the detection sources (`[[source]]`) and the policy (`[policy]`,
//! `[[policy.rule]]`) that turns their detections into actions. Reloading the policy is calling [`load`] again and taking
//! [`Config::policy`] and the servers' `action` and `protected` from the new configuration.
//!
//! The file is read with `toml`'s spanned document tree rather than `#[derive(Deserialize)]`, so
//! that every unknown key and every wrongly typed value is reported at once, with its position,
//! instead of only the first one serde meets.

mod document;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use cordon_model::policy::{Policy, PolicyAction, ServerFacts};
use cordon_model::{AddressRange, MacAddr, NetworkRole, ServerKind, SwitchDriverKind};

/// Where Cordon listens when `manager.listen` is absent.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where Cordon keeps its state when `manager.data_dir` is absent.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cordon";
/// Linux's limit on interface names (IFNAMSIZ, 16, including the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;
/// How long a reboot waits for a graceful restart when `manager.graceful_timeout` is absent.
pub const DEFAULT_GRACEFUL_TIMEOUT_SECS: u64 = 30;
/// How long a reboot may take, until confirmed, when `manager.reboot_deadline` is absent.
pub const DEFAULT_REBOOT_DEADLINE_SECS: u64 = 300;

/// Reads and validates the configuration file at `path`.
///
/// A file that cannot be read (or is not UTF-8) is a [`ConfigError`] too.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|error| {
        ConfigError::single(ConfigProblem {
            file: path.to_path_buf(),
            line: None,
            key: FILE_KEY.to_string(),
            detail: format!("cannot read the file: {error}"),
        })
    })?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        ConfigError::single(ConfigProblem {
            file: path.to_path_buf(),
            line: Some(line),
            key: FILE_KEY.to_string(),
            detail: "the file is not UTF-8 text".to_string(),
        })
    })?;
    parse(path, &text)
}

/// Validates configuration `text`; `path` is only used in messages and to resolve relative paths
/// (`manager.data_dir`, the files and sockets of sources, the files of BMCs). No file named in
/// the configuration is read.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut problems = Problems::new(path, text);
    let config = match document::read(text, &mut problems) {
        Some(document) => validate::validate(path, &document, &mut problems),
        None => None,
    };
    match (config, problems.into_sorted()) {
        (Some(config), problems) if problems.is_empty() => Ok(config),
        (_, problems) if !problems.is_empty() => Err(ConfigError { problems }),
        // Validation only gives up on a configuration after recording why; this is a bug.
        _ => Err(ConfigError::single(ConfigProblem {
            file: path.to_path_buf(),
            line: None,
            key: FILE_KEY.to_string(),
            detail: "internal error: the configuration was rejected without a reason".to_string(),
        })),
    }
}

/// The key of problems about the file as a whole rather than one of its keys.
const FILE_KEY: &str = "(file)";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, as given to [`load`] or [`parse`].
    pub path: PathBuf,
    pub manager: ManagerConfig,
    pub networks: Vec<NetworkConfig>,
    pub switches: Vec<SwitchConfig>,
    /// The `[[hypervisor]]`s, in file order; names are unique.
    pub hypervisors: Vec<HypervisorConfig>,
    pub tenants: Vec<TenantConfig>,
    pub servers: Vec<ServerConfig>,
    /// The `[[source]]`s, in file order; names are unique.
    pub sources: Vec<SourceConfig>,
    /// The `[policy]` with its rules in file order; [`Policy::default`] when the section is absent.
    pub policy: Policy,
    /// The `[notify]` section: how administrators and users are told what happened. Absent:
    /// Cordon notifies nobody.
    pub notify: Option<NotifyConfig>,
}

impl Config {
    /// Every file the configuration names that holds a secret (a private key, a token, a
    /// password, a signing key), with the key that names it, e.g. `[manager] tls_key_file`.
    /// `serve` refuses to start when one of them is readable by group or others.
    pub fn secret_files(&self) -> Vec<(String, &Path)> {
        let mut files = Vec::new();
        if let Some(tls) = &self.manager.tls {
            files.push(("[manager] tls_key_file".to_string(), tls.key_file.as_path()));
        }
        if let Some(file) = &self.manager.database_password_file {
            files.push(("[manager] database_password_file".to_string(), file.as_path()));
        }
        for source in &self.sources {
            if let SourceKind::Webhook { token_file, hmac_secret_file } = &source.kind {
                for (key, file) in [("token_file", token_file), ("hmac_secret_file", hmac_secret_file)] {
                    if let Some(file) = file {
                        files.push((format!("[[source]] {} {key}", source.name), file.as_path()));
                    }
                }
            }
        }
        for server in &self.servers {
            if let Some(bmc) = &server.bmc {
                files.push((format!("[server.bmc] of {} password_file", server.name), bmc.password_file.as_path()));
            }
        }
        if let Some(notify) = &self.notify {
            if let Some(file) = notify.smtp.as_ref().and_then(|smtp| smtp.password_file.as_ref()) {
                files.push(("[notify] smtp_password_file".to_string(), file.as_path()));
            }
            if let Some(links) = &notify.links {
                files.push(("[notify] link_secret_file".to_string(), links.secret_file.as_path()));
            }
        }
        files
    }

    pub fn network(&self, name: &str) -> Option<&NetworkConfig> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn switch(&self, name: &str) -> Option<&SwitchConfig> {
        self.switches.iter().find(|s| s.name == name)
    }

    pub fn hypervisor(&self, name: &str) -> Option<&HypervisorConfig> {
        self.hypervisors.iter().find(|h| h.name == name)
    }

    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The quarantine network that an operational network names (None for a quarantine network).
    pub fn quarantine_network_of(&self, network: &NetworkConfig) -> Option<&NetworkConfig> {
        match network.role {
            NetworkRole::Operational => self.network(network.quarantine_network.as_deref()?),
            NetworkRole::Quarantine => None,
        }
    }
}

/// The `[manager]` section.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where the API listens; default 127.0.0.1:8080 (port 0 is allowed: any free port).
    pub listen: SocketAddr,
    /// Where the database lives; default /var/lib/cordon. A relative path in the file is
    /// resolved against the folder of the configuration file.
    pub data_dir: PathBuf,
    /// This Cordon's name in records and messages; default: this host's name.
    pub instance: String,
    /// How long a reboot waits for the server to restart gracefully before forcing it; default
    /// 30 s, more than 0.
    pub graceful_timeout_secs: u64,
    /// How long a reboot may take, from the request until something observable confirmed the
    /// restart; default 300 s, longer than `graceful_timeout_secs`.
    pub reboot_deadline_secs: u64,
    /// How many times an action is attempted in all when its failures may pass; default 3.
    pub max_attempts: u32,
    /// The first pause before an automatic retry (doubling, with jitter); default 1 s.
    pub retry_backoff_secs: u64,
    /// How often the reconciler compares the records with the network; default 30 s.
    pub reconcile_interval_secs: u64,
    /// `on_drift = "enforce"`: the reconciler puts drifted servers back (default `"report"`).
    pub on_drift_enforce: bool,
    /// How long one switch or hypervisor call may take before its step fails; default 10 s.
    pub driver_timeout_secs: u64,
    /// `database = "postgres://user@host:port/name"`: several instances share this PostgreSQL
    /// database. `None`: the embedded SQLite database in `data_dir` (the default). The URL
    /// never holds a password (the validator refuses one).
    pub database: Option<String>,
    /// The file that holds the PostgreSQL password (only with `database`), read at start.
    pub database_password_file: Option<PathBuf>,
    /// How long an instance's lease on a running action lasts without renewal (renewed every
    /// third of it); an instance that died loses its actions to another one after this long.
    /// Default 15 s.
    pub action_lease_secs: u64,
    /// How many actions run at once on this instance, each on its own server; default 64.
    pub workers: usize,
    /// A console session unused this long ends; default 30 min.
    pub session_idle_timeout_secs: u64,
    /// A console session ends this long after sign-in whatever its use; default 12 h.
    pub session_lifetime_secs: u64,
    /// Mark the console's cookies `Secure` (when Cordon is served over TLS); default false.
    pub secure_cookies: bool,
    /// `tls_cert_file` and `tls_key_file` (both or neither): the API and console speak HTTPS.
    pub tls: Option<TlsFiles>,
    /// `allow_plain_http = true`: plain HTTP on an address other than loopback (default false:
    /// `serve` refuses, message 60091).
    pub allow_plain_http: bool,
}

/// The certificate chain and private key (PEM) of the API's TLS listener; reloaded on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// One `[[network]]`.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub name: String,
    pub role: NetworkRole,
    pub subnet: ipnet::IpNet,
    pub gateway: Option<IpAddr>,
    /// Set on (and only on) operational networks.
    pub quarantine_network: Option<String>,
    /// Set on (and only on) quarantine networks: the addresses handed to quarantined servers.
    pub pool: Option<AddressRange>,
    /// The Linux bridge carrying this network on linux-bridge switches, and on hypervisors the
    /// host bridge its VMs' NICs are attached to.
    pub bridge: Option<String>,
    /// The 802.1Q VLAN (1-4094) carrying this network on ovs switches.
    pub vlan: Option<u16>,
}

/// One `[[switch]]`.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    pub name: String,
    pub driver: SwitchDriverKind,
    /// The network namespace the switch lives in, if not the host's (linux-bridge only).
    pub netns: Option<String>,
    /// ovs only: where its OVSDB listens, `unix:/PATH` or `tcp:HOST:PORT`.
    pub ovsdb: Option<String>,
    /// ovs only: the Open vSwitch bridge whose ports Cordon retags.
    pub bridge: Option<String>,
}

/// One `[[hypervisor]]`: a host running the VMs of virtual servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorConfig {
    /// Unique; named by virtual servers.
    pub name: String,
    pub driver: HypervisorDriverKind,
    /// Where the driver connects, like `qemu:///system` for libvirt. Not empty.
    pub uri: String,
    /// The network namespace where the hypervisor's taps and bridges live (libvirtd runs
    /// there); absent: Cordon's own. Cordon reads the taps' bridge membership there.
    pub netns: Option<String>,
}

/// Which driver speaks to a hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorDriverKind {
    /// libvirt (`driver = "libvirt"`), through the connection URI `uri`.
    Libvirt,
}

impl HypervisorDriverKind {
    pub const ALL: &'static [HypervisorDriverKind] = &[HypervisorDriverKind::Libvirt];

    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorDriverKind::Libvirt => "libvirt",
        }
    }
}

impl fmt::Display for HypervisorDriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HypervisorDriverKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        HypervisorDriverKind::ALL
            .iter()
            .copied()
            .find(|driver| driver.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a hypervisor driver"))
    }
}

/// One `[[tenant]]`.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub name: String,
    pub admin_email: String,
}

/// One `[[server]]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub kind: ServerKind,
    pub tenant: Option<String>,
    pub user_email: Option<String>,
    /// Its own policy action, which replaces the action of any matching rule and the default.
    pub action: Option<PolicyAction>,
    /// Every action on it waits for an administrator's approval.
    pub protected: bool,
    /// Virtual servers only (and always): the `[[hypervisor]]` that runs the VM.
    pub hypervisor: Option<String>,
    /// Virtual servers only (and always): the VM's name on its hypervisor (the libvirt domain).
    /// No two servers have the same hypervisor and domain.
    pub domain: Option<String>,
    /// Physical servers only, optional: the `[server.bmc]` that reboots the machine.
    pub bmc: Option<BmcConfig>,
    /// At least one.
    pub nics: Vec<NicConfig>,
}

impl ServerConfig {
    /// What the policy needs to know about the server (its networks in NIC order, once each).
    pub fn facts(&self) -> ServerFacts {
        let mut networks: Vec<String> = Vec::new();
        for nic in &self.nics {
            if !networks.contains(&nic.network) {
                networks.push(nic.network.clone());
            }
        }
        ServerFacts {
            name: self.name.clone(),
            tenant: self.tenant.clone(),
            networks,
            action: self.action,
            protected: self.protected,
        }
    }
}

/// The `[server.bmc]` of a physical server: its baseboard management controller, through which
/// Cordon reboots it. Relative paths in the file are resolved against the folder of the
/// configuration file; the files are read when the driver needs them, not when parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcConfig {
    pub driver: BmcDriverKind,
    /// The BMC's base URL, scheme, host and optional port only, like `https://10.0.0.5:8443`
    /// (as written, without a trailing `/`). `http://` only with `insecure`.
    pub endpoint: String,
    /// The Redfish path of the computer system, like `/redfish/v1/Systems/1`.
    pub system: String,
    /// The user Cordon logs in as. Not empty.
    pub username: String,
    /// The file holding the password (the configuration never holds secrets).
    pub password_file: PathBuf,
    /// The CA certificate(s) the BMC's certificate is verified with, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// `insecure = true`: an `http://` endpoint is allowed and an `https://` endpoint's
    /// certificate is not verified. Default false.
    pub insecure: bool,
}

/// Which driver speaks to a BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmcDriverKind {
    /// DMTF Redfish (`driver = "redfish"`).
    Redfish,
}

impl BmcDriverKind {
    pub const ALL: &'static [BmcDriverKind] = &[BmcDriverKind::Redfish];

    pub fn as_str(self) -> &'static str {
        match self {
            BmcDriverKind::Redfish => "redfish",
        }
    }
}

impl fmt::Display for BmcDriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BmcDriverKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        BmcDriverKind::ALL
            .iter()
            .copied()
            .find(|driver| driver.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a BMC driver"))
    }
}

/// One `[[server.nic]]`.
#[derive(Debug, Clone)]
pub struct NicConfig {
    pub mac: MacAddr,
    /// An operational network.
    pub network: String,
    pub ip: IpAddr,
    /// `switch` and `port` are both present or both absent: always present on physical servers,
    /// never on virtual ones (a VM's NIC is moved by its hypervisor).
    pub switch: Option<String>,
    pub port: Option<String>,
}

/// One `[[source]]`: where detections come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// Unique; recorded on every detection and named by policy rules.
    pub name: String,
    pub kind: SourceKind,
    /// `max_rate`: at most this many events per second (bursts of one second's worth); absent:
    /// no limit. Datagrams and HTTP requests over it are refused and counted; stream senders
    /// (TCP, Unix socket) are slowed down instead. A followed file is never limited.
    pub max_rate: Option<u32>,
}

/// A source's `type` and the keys that belong to it. Relative paths in the file are resolved
/// against the folder of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `type = "suricata-eve"`: Suricata's EVE JSON, from a file followed like `tail -F`, a
    /// `unix_stream` socket Cordon listens on, or both (at least one).
    SuricataEve { path: Option<PathBuf>, socket: Option<PathBuf> },
    /// `type = "cef-syslog"`: CEF over syslog, on UDP, TCP or both (at least one).
    CefSyslog {
        listen_udp: Option<SocketAddr>,
        listen_tcp: Option<SocketAddr>,
        profile: CefProfile,
        /// The senders accepted; empty (the key absent) = any.
        allowed_peers: Vec<ipnet::IpNet>,
    },
    /// `type = "webhook"`: `POST /api/v1/detections`, authenticated by a bearer token or an HMAC
    /// signature whose secret is read from the file (exactly one of the two).
    Webhook { token_file: Option<PathBuf>, hmac_secret_file: Option<PathBuf> },
}

impl SourceKind {
    /// Every `type`, as written in the file.
    pub const TYPES: &'static [&'static str] = &["suricata-eve", "cef-syslog", "webhook"];

    /// The `type` as written in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::SuricataEve { .. } => "suricata-eve",
            SourceKind::CefSyslog { .. } => "cef-syslog",
            SourceKind::Webhook { .. } => "webhook",
        }
    }
}

/// How a CEF source reads the events' extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CefProfile {
    /// Standard CEF keys (`src`, `dst`, ...).
    Generic,
    /// Trend Micro Deep Discovery's keys (`interestedIp`, ...).
    DeepDiscovery,
}

impl CefProfile {
    pub const ALL: &'static [CefProfile] = &[CefProfile::Generic, CefProfile::DeepDiscovery];

    pub fn as_str(self) -> &'static str {
        match self {
            CefProfile::Generic => "generic",
            CefProfile::DeepDiscovery => "deep-discovery",
        }
    }
}

impl fmt::Display for CefProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CefProfile {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CefProfile::ALL
            .iter()
            .copied()
            .find(|profile| profile.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a CEF profile"))
    }
}

/// How long approval links stay valid when `[notify] link_ttl` is absent.
pub const DEFAULT_LINK_TTL_SECS: u64 = 24 * 60 * 60;

/// The `[notify]` section: e-mails through SMTP and JSON posted to webhooks. At least one of
/// the two. Relative paths are resolved against the folder of the configuration file; the
/// files are read by `cordon serve` at start, not when parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Where e-mails go out; absent: no e-mail (webhooks only).
    pub smtp: Option<SmtpConfig>,
    /// Every notification is posted as JSON to each of these `http(s)://` URLs.
    pub webhooks: Vec<String>,
    /// Who gets the e-mails that belong to no tenant (a server without a tenant, an address
    /// that no server held).
    pub operator_email: Option<String>,
    /// Signed approval links in the e-mails; absent: the e-mails name the commands instead.
    pub links: Option<LinksConfig>,
}

/// How Cordon reaches its SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// As written: `smtp://host[:port]` or `smtps://host[:port]`.
    pub url: String,
    /// A name or an address (without the `[]` of IPv6).
    pub host: String,
    /// Default 25 for `smtp://` (587 with `starttls`), 465 for `smtps://`.
    pub port: u16,
    pub security: SmtpSecurity,
    /// The sender address (`From:` and the envelope).
    pub from: String,
    /// Log in as this user, with the password in `password_file` (both or neither).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The CA certificate(s) the server's certificate is checked against, instead of the
    /// system's (TLS only).
    pub ca_file: Option<PathBuf>,
}

/// Whether and how the SMTP connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://` without `starttls`: plain text (loopback relays, labs). No login allowed.
    Plain,
    /// `smtp://` with `starttls = true`: the server must offer STARTTLS.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
}

/// Signed approval links: `<public_url>/approve/<token>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinksConfig {
    /// How administrators reach this Cordon's API, like `https://cordon.example:8080`, without
    /// a trailing `/`.
    pub public_url: String,
    /// The file holding the key links are signed with (at least 32 bytes).
    pub secret_file: PathBuf,
    /// How long a link stays valid; default 24 h.
    pub ttl_secs: u64,
}

/// One or more problems, each naming file, line and key; displayed one problem per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", Lines(&self.problems))]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    fn single(problem: ConfigProblem) -> Self {
        ConfigError { problems: vec![problem] }
    }
}

/// One thing wrong with a configuration file.
///
/// Displayed `<file>:<line>: <key>: <detail>`, or `<file>: <key>: <detail>` where no position is
/// known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// A readable path to the key: `manager.listen`, `network "quarantine".pool`,
    /// `server "sbc-01".nic[0].mac`, or `(file)` for the file as a whole.
    pub key: String,
    pub detail: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}: {}", self.file.display(), self.key, self.detail),
            None => write!(f, "{}: {}: {}", self.file.display(), self.key, self.detail),
        }
    }
}

struct Lines<'a>(&'a [ConfigProblem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// The problems found so far, with what is needed to turn byte offsets into lines.
pub(crate) struct Problems {
    file: PathBuf,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    list: Vec<ConfigProblem>,
}

impl Problems {
    fn new(file: &Path, text: &str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Problems { file: file.to_path_buf(), line_starts, list: Vec::new() }
    }

    /// The 1-based line holding byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset).max(1)
    }

    /// Records a problem at byte `offset` (or at no known position).
    pub(crate) fn add(&mut self, offset: Option<usize>, key: impl Into<String>, detail: impl Into<String>) {
        let line = offset.map(|offset| self.line_of(offset));
        self.list.push(ConfigProblem { file: self.file.clone(), line, key: key.into(), detail: detail.into() });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// In file order (problems without a line first), without exact duplicates.
    fn into_sorted(mut self) -> Vec<ConfigProblem> {
        self.list.sort_by_key(|p| p.line);
        self.list.dedup();
        self.list
    }
}

#[cfg(test)]
mod tests;
