//! cordon-drivers: switch drivers that move switch ports between networks.
//!
//! A [`SwitchDriver`] knows one switch. It can read a port's state
//! ([`SwitchDriver::observe_port`]) and idempotently make a port a member of
//! a network with a given isolation ([`SwitchDriver::ensure_port`]), reading
//! the port back after every change. The contract every driver follows is
//! written down in `docs/drivers.md`.
//!
//! Two switch drivers: [`LinuxBridgeSwitch`] (`linux-bridge`): one Linux bridge per network, a
//! port moves by changing its master, spoken over rtnetlink directly (no `ip` process); and
//! [`OvsSwitch`] (`ovs`): one Open vSwitch bridge, a network is an 802.1Q VLAN and a port moves
//! by changing its access tag, spoken over OVSDB (RFC 7047) directly (no `ovs-vsctl`).

mod libvirt;
mod linux_bridge;
mod netlink;
mod ovs;
mod redfish;

pub use libvirt::{LibvirtHypervisor, LibvirtPower};
pub use linux_bridge::LinuxBridgeSwitch;
pub use ovs::{OvsSwitch, OvsdbAddress};
pub use redfish::{RedfishBmc, RedfishSettings};

/// A driver that moves switch ports between networks. Blocking: the engine
/// calls it from `tokio::task::spawn_blocking`.
pub trait SwitchDriver: Send + Sync + std::fmt::Debug {
    /// The driver kind as written in the configuration, e.g. `"linux-bridge"`.
    fn kind(&self) -> &'static str;
    /// The configured switch name, e.g. `"tor-1"`.
    fn switch_name(&self) -> &str;
    /// How this switch carries a network: one bridge per network, or one VLAN per network.
    fn segment_kind(&self) -> SegmentKind;
    /// A harmless call that proves the switch is reachable (for `cordon status`), changing
    /// nothing. The default reads the loopback device, which every Linux namespace has.
    fn check_reachable(&self) -> Result<String, DriverError> {
        self.observe_port("lo").map(|_| "reachable".to_string())
    }
    /// Reads the port's current state without changing anything.
    fn observe_port(&self, port: &str) -> Result<PortObservation, DriverError>;
    /// Idempotent: makes `port` a member of `segment` (a bridge, or an access VLAN) with its
    /// isolation equal to `isolated`, changing only what differs, then reads the port back. A
    /// read-back that disagrees is [`DriverError::ReadBackMismatch`]. A segment of the other
    /// kind than [`SwitchDriver::segment_kind`] is refused ([`DriverError::WrongSegment`]).
    fn ensure_port(&self, port: &str, segment: &Segment, isolated: bool) -> Result<EnsureOutcome, DriverError>;
}

/// Where a network is on a switch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A Linux bridge of its own (`linux-bridge` switches, hypervisor hosts).
    Bridge(String),
    /// An 802.1Q VLAN on a shared bridge: the port's access tag (`ovs` switches).
    Vlan(u16),
}

/// Which kind of [`Segment`] a switch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    Bridge,
    Vlan,
}

impl std::fmt::Display for Segment {
    /// `br-office` (the bridge name, as messages always printed it) or `vlan 999`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Segment::Bridge(name) => f.write_str(name),
            Segment::Vlan(tag) => write!(f, "vlan {tag}"),
        }
    }
}

/// A driver that reconnects a VM's virtual NIC between networks, live and in the VM's
/// persistent definition. Blocking, like [`SwitchDriver`]; the same contract (idempotent,
/// read back after every change, numbered errors) applies.
pub trait HypervisorDriver: Send + Sync + std::fmt::Debug {
    /// The driver kind as written in the configuration, e.g. `"libvirt"`.
    fn kind(&self) -> &'static str;
    /// The configured hypervisor name, e.g. `"kvm-1"`.
    fn hypervisor_name(&self) -> &str;
    /// Reads where the NIC with this MAC is (its tap's bridge and isolation), changing nothing.
    /// `port` in the observation is the tap's name (e.g. `vnet3`).
    fn observe_nic(&self, domain: &str, mac: &str) -> Result<PortObservation, DriverError>;
    /// Idempotent: the NIC with this MAC is connected to `bridge` with `<port isolated>` equal to
    /// `isolated`, live (if the domain runs) and in the persistent definition; read back from the
    /// live XML and from the tap's master.
    fn ensure_nic(&self, domain: &str, mac: &str, bridge: &str, isolated: bool) -> Result<EnsureOutcome, DriverError>;
    /// Every domain with its NICs (for `cordon servers import`).
    fn list_domains(&self) -> Result<Vec<DomainInfo>, DriverError>;
}

/// A domain as a hypervisor lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    pub running: bool,
    pub nics: Vec<DomainNic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainNic {
    /// Lower-case, colon-separated.
    pub mac: String,
    /// The bridge the NIC is connected to (for `type='network'` NICs: the network's bridge).
    pub bridge: Option<String>,
    pub model: Option<String>,
}

/// A driver that restarts a server and observes that it did: a hypervisor for its VMs, a BMC
/// for a physical server. Blocking.
pub trait PowerDriver: Send + Sync + std::fmt::Debug {
    /// The driver kind, e.g. `"libvirt"` or `"redfish"`.
    fn kind(&self) -> &'static str;
    /// What it acts on, for messages (e.g. `kvm-1/vpc-001`, `https://10.0.0.5/redfish/v1/Systems/1`).
    fn target(&self) -> String;
    /// Reboots gracefully, forcing it after `graceful_timeout`, and returns only once something
    /// observable confirmed the restart (or fails with [`DriverError::NotConfirmed`] after
    /// `deadline`). A server found powered off is powered on instead (`powered_on = true`).
    fn reboot(
        &self,
        graceful_timeout: std::time::Duration,
        deadline: std::time::Duration,
    ) -> Result<RebootOutcome, DriverError>;
}

/// What a reboot did and what confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootOutcome {
    /// `graceful`, `forced` (after the graceful timeout), or `power_on`.
    pub method: String,
    /// The server was off and was powered on rather than rebooted.
    pub powered_on: bool,
    /// What was observed, in order, one readable line each (e.g. "lifecycle event: rebooted",
    /// "power state On -> Off -> On", "LastResetTime 2026-11-27T10:00:00Z -> ...").
    pub observed: Vec<String>,
}

/// The state of one switch port as read from the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortObservation {
    /// The port's name on the switch.
    pub port: String,
    /// The name of the port's master (the bridge it belongs to); `None` if
    /// the port has no master.
    pub bridge: Option<String>,
    /// The port's 802.1Q access tag (`ovs`); `None` for an untagged port or a driver without
    /// VLANs.
    pub vlan: Option<u16>,
    /// The bridge-port `isolated` flag, or Open vSwitch's `Port.protected` (always `false`
    /// outside a bridge).
    pub isolated: bool,
    /// The port is administratively up (`IFF_UP`).
    pub up: bool,
}

impl PortObservation {
    /// A short human description of the membership, as used in
    /// [`DriverError::ReadBackMismatch`]: `"bridge br-office, not isolated"`, or with a tag
    /// `"bridge br-int, vlan 999, isolated"`.
    pub fn membership(&self) -> String {
        match self.vlan {
            None => describe_membership(self.bridge.as_deref(), self.isolated),
            Some(tag) => {
                let isolation = if self.isolated { "isolated" } else { "not isolated" };
                let bridge = self.bridge.as_deref().map(|b| format!("bridge {b}")).unwrap_or("no bridge".into());
                format!("{bridge}, vlan {tag}, {isolation}")
            }
        }
    }

    /// Whether the port is on `segment` (its bridge, or its access tag).
    pub fn is_on(&self, segment: &Segment) -> bool {
        match segment {
            Segment::Bridge(bridge) => self.bridge.as_deref() == Some(bridge.as_str()),
            Segment::Vlan(tag) => self.vlan == Some(*tag),
        }
    }

    /// The segment the port is on, as the given kind of switch sees it.
    pub fn segment(&self, kind: SegmentKind) -> Option<Segment> {
        match kind {
            SegmentKind::Bridge => self.bridge.clone().map(Segment::Bridge),
            SegmentKind::Vlan => self.vlan.map(Segment::Vlan),
        }
    }
}

/// `"vlan 999, isolated"` or `"bridge br-a, not isolated"`: what a request asks for.
pub fn describe_request(segment: &Segment, isolated: bool) -> String {
    match segment {
        Segment::Bridge(bridge) => describe_membership(Some(bridge), isolated),
        Segment::Vlan(tag) => format!("vlan {tag}, {}", if isolated { "isolated" } else { "not isolated" }),
    }
}

/// The result of [`SwitchDriver::ensure_port`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsureOutcome {
    /// The port as read before any change.
    pub before: PortObservation,
    /// The port as read back after the changes (equal to `before` when
    /// nothing had to change).
    pub after: PortObservation,
    /// The driver changed the port's bridge (master).
    pub moved: bool,
    /// The port's `isolated` flag differs between `before` and `after`.
    pub isolation_changed: bool,
}

impl EnsureOutcome {
    /// `moved`/`isolation_changed` computed from the two observations on a switch of `kind`.
    pub fn between(before: PortObservation, after: PortObservation, kind: SegmentKind) -> EnsureOutcome {
        let moved = before.segment(kind) != after.segment(kind);
        let isolation_changed = before.isolated != after.isolated;
        EnsureOutcome { before, after, moved, isolation_changed }
    }
}

/// A driver failure. Every variant maps to one of Cordon's numbered
/// messages, see [`DriverError::message_number`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The switch's network namespace cannot be entered (missing, not a
    /// namespace, or no permission).
    #[error("network namespace {netns} cannot be entered: {detail}")]
    Namespace { netns: String, detail: String },
    /// No link of that name exists on the switch.
    #[error("port {port} does not exist")]
    PortNotFound { port: String },
    /// No bridge of that name exists on the switch (a link of that name that
    /// is not a bridge counts as missing).
    #[error("bridge {bridge} does not exist")]
    BridgeNotFound { bridge: String },
    /// A netlink request failed (kernel error or socket failure).
    #[error("{operation} failed: {detail}")]
    Netlink { operation: String, detail: String },
    /// The read-back after a change disagrees with what was asked.
    #[error("port {port}: expected {expected}, observed {observed}")]
    ReadBackMismatch { port: String, expected: String, observed: String },
    /// The hypervisor cannot be reached (connection refused, libvirtd down).
    #[error("{detail}")]
    HypervisorUnreachable { detail: String },
    /// The configured domain does not exist on the hypervisor.
    #[error("domain {domain} does not exist")]
    DomainNotFound { domain: String },
    /// The domain has no NIC with the configured MAC.
    #[error("domain {domain} has no NIC with MAC {mac}")]
    NicNotFound { domain: String, mac: String },
    /// The BMC refused the credentials (401/403).
    #[error("{detail}")]
    BmcAuth { detail: String },
    /// The BMC did not answer within the time allowed.
    #[error("{detail}")]
    BmcTimeout { detail: String },
    /// The BMC answered with an error (5xx, an unexpected answer).
    #[error("{detail}")]
    Bmc { detail: String },
    /// Nothing observable confirmed the reboot before the deadline.
    #[error("{detail}")]
    NotConfirmed { detail: String },
    /// A segment of the wrong kind for the switch (a VLAN for `linux-bridge`, a bridge for
    /// `ovs`): a configuration error the config crate's validation normally prevents.
    #[error("a {driver} switch cannot put a port on {segment}")]
    WrongSegment { driver: String, segment: String },
    /// The OVSDB server cannot be reached (connection refused, no answer in time, connection
    /// dropped).
    #[error("{detail}")]
    OvsdbUnreachable { detail: String },
    /// The port is not in the OVSDB, or not on the configured bridge.
    #[error("{detail}")]
    OvsPortNotFound { detail: String },
    /// The port changed between the driver's read and its write: the transaction's `wait`
    /// failed, and nothing was applied.
    #[error("{detail}")]
    OvsConflict { detail: String },
    /// The OVSDB answered with an error (a failed operation, a malformed answer).
    #[error("{detail}")]
    Ovsdb { detail: String },
    /// The transaction committed but ovs-vswitchd did not report it applied (`cur_cfg`) in time.
    #[error("{detail}")]
    OvsNotApplied { detail: String },
}

impl DriverError {
    /// Cordon's numbered message for this error: 60011 (`read_back_mismatch`)
    /// for [`DriverError::ReadBackMismatch`], 60010 (`driver_failure`) for
    /// every other variant.
    pub fn message_number(&self) -> u32 {
        match self {
            DriverError::ReadBackMismatch { .. } => 60011,
            DriverError::HypervisorUnreachable { .. } => 60014,
            DriverError::DomainNotFound { .. } => 60015,
            DriverError::NicNotFound { .. } => 60016,
            DriverError::BmcAuth { .. } => 60017,
            DriverError::BmcTimeout { .. } => 60018,
            DriverError::Bmc { .. } => 60019,
            DriverError::NotConfirmed { .. } => 60036,
            DriverError::OvsdbUnreachable { .. } => 60050,
            DriverError::OvsPortNotFound { .. } => 60051,
            DriverError::OvsConflict { .. } => 60052,
            DriverError::Ovsdb { .. } => 60053,
            DriverError::OvsNotApplied { .. } => 60054,
            DriverError::WrongSegment { .. }
            | DriverError::Namespace { .. }
            | DriverError::PortNotFound { .. }
            | DriverError::BridgeNotFound { .. }
            | DriverError::Netlink { .. } => 60010,
        }
    }
}

/// `"bridge br-a, isolated"`, `"no bridge, not isolated"`.
pub(crate) fn describe_membership(bridge: Option<&str>, isolated: bool) -> String {
    let bridge = match bridge {
        Some(name) => format!("bridge {name}"),
        None => "no bridge".to_string(),
    };
    let isolation = if isolated { "isolated" } else { "not isolated" };
    format!("{bridge}, {isolation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_numbers() {
        let mismatch = DriverError::ReadBackMismatch {
            port: "p1".into(),
            expected: "bridge br-b, isolated".into(),
            observed: "bridge br-a, not isolated".into(),
        };
        assert_eq!(mismatch.message_number(), 60011);
        for other in [
            DriverError::Namespace { netns: "sw".into(), detail: "x".into() },
            DriverError::PortNotFound { port: "p1".into() },
            DriverError::BridgeNotFound { bridge: "br-x".into() },
            DriverError::Netlink { operation: "set master".into(), detail: "x".into() },
        ] {
            assert_eq!(other.message_number(), 60010, "{other}");
        }
    }

    #[test]
    fn error_texts() {
        let mismatch = DriverError::ReadBackMismatch {
            port: "p1".into(),
            expected: describe_membership(Some("br-quarantine"), true),
            observed: describe_membership(Some("br-office"), false),
        };
        assert_eq!(
            mismatch.to_string(),
            "port p1: expected bridge br-quarantine, isolated, observed bridge br-office, not isolated"
        );
        assert_eq!(DriverError::PortNotFound { port: "p9".into() }.to_string(), "port p9 does not exist");
        assert_eq!(
            DriverError::Namespace { netns: "sw".into(), detail: "gone".into() }.to_string(),
            "network namespace sw cannot be entered: gone"
        );
    }

    #[test]
    fn membership_text() {
        let obs = PortObservation { port: "p1".into(), bridge: None, vlan: None, isolated: false, up: true };
        assert_eq!(obs.membership(), "no bridge, not isolated");
        let tagged = PortObservation { bridge: Some("br-int".into()), vlan: Some(999), isolated: true, ..obs };
        assert_eq!(tagged.membership(), "bridge br-int, vlan 999, isolated");
        assert!(tagged.is_on(&Segment::Vlan(999)));
        assert!(!tagged.is_on(&Segment::Vlan(10)));
        assert!(tagged.is_on(&Segment::Bridge("br-int".into())));
    }
}
