//! cordon-drivers: switch drivers that move switch ports between networks.
//!
//! A [`SwitchDriver`] knows one switch. It can read a port's state
//! ([`SwitchDriver::observe_port`]) and idempotently make a port a member of
//! a network with a given isolation ([`SwitchDriver::ensure_port`]), reading
//! the port back after every change. The contract every driver follows is
//! written down in `docs/drivers.md`.
//!
//! The only driver so far is [`LinuxBridgeSwitch`] (`linux-bridge`): one
//! Linux bridge per network, a port moves by changing its master, spoken
//! over rtnetlink directly (no `ip` process).

mod linux_bridge;
mod netlink;

pub use linux_bridge::LinuxBridgeSwitch;

/// A driver that moves switch ports between networks. Blocking: the engine
/// calls it from `tokio::task::spawn_blocking`.
pub trait SwitchDriver: Send + Sync + std::fmt::Debug {
    /// The driver kind as written in the configuration, e.g. `"linux-bridge"`.
    fn kind(&self) -> &'static str;
    /// The configured switch name, e.g. `"tor-1"`.
    fn switch_name(&self) -> &str;
    /// Reads the port's current state without changing anything.
    fn observe_port(&self, port: &str) -> Result<PortObservation, DriverError>;
    /// Idempotent: makes `port` a member of `bridge` with the bridge-port
    /// `isolated` flag equal to `isolated`, changing only what differs, then
    /// reads the port back. A read-back that disagrees is
    /// [`DriverError::ReadBackMismatch`].
    fn ensure_port(&self, port: &str, bridge: &str, isolated: bool) -> Result<EnsureOutcome, DriverError>;
}

/// The state of one switch port as read from the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortObservation {
    /// The port's name on the switch.
    pub port: String,
    /// The name of the port's master (the bridge it belongs to); `None` if
    /// the port has no master.
    pub bridge: Option<String>,
    /// The bridge-port `isolated` flag (always `false` outside a bridge).
    pub isolated: bool,
    /// The port is administratively up (`IFF_UP`).
    pub up: bool,
}

impl PortObservation {
    /// A short human description of the membership, as used in
    /// [`DriverError::ReadBackMismatch`]: `"bridge br-office, not isolated"`.
    pub fn membership(&self) -> String {
        describe_membership(self.bridge.as_deref(), self.isolated)
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
}

impl DriverError {
    /// Cordon's numbered message for this error: 60011 (`read_back_mismatch`)
    /// for [`DriverError::ReadBackMismatch`], 60010 (`driver_failure`) for
    /// every other variant.
    pub fn message_number(&self) -> u32 {
        match self {
            DriverError::ReadBackMismatch { .. } => 60011,
            DriverError::Namespace { .. }
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
        let obs = PortObservation { port: "p1".into(), bridge: None, isolated: false, up: true };
        assert_eq!(obs.membership(), "no bridge, not isolated");
    }
}
