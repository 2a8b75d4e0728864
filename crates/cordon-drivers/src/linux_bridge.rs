//! The `linux-bridge` switch driver: one Linux bridge per network; a port
//! moves between networks by changing its master (`IFLA_MASTER`), and the
//! bridge-port flag `isolated` keeps quarantined ports from talking to each
//! other. Speaks rtnetlink directly, inside the switch's network namespace.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tracing::debug;

use crate::netlink::{Connection, Link, NlError};
use crate::{DriverError, EnsureOutcome, PortObservation, Segment, SegmentKind, SwitchDriver, describe_membership};

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
const MAX_IFNAME_LEN: usize = 15;

/// The linux-bridge driver. `netns`: `None` = the current network namespace;
/// `Some(name)` = `/run/netns/<name>`.
///
/// Holds one rtnetlink socket, opened lazily on first use and reopened after
/// a socket-level failure or when the named namespace was deleted or
/// replaced (checked with one `stat` per call). Calls on one driver are serialised (the socket is
/// behind a mutex held for the whole operation), so two `ensure_port` calls
/// never interleave their steps.
#[derive(Debug)]
pub struct LinuxBridgeSwitch {
    switch_name: String,
    netns: Option<String>,
    connection: Mutex<Option<Connection>>,
}

impl LinuxBridgeSwitch {
    /// Creates the driver. Does not touch the system: the namespace is
    /// entered and the socket opened on first use.
    pub fn new(switch_name: impl Into<String>, netns: Option<String>) -> Self {
        LinuxBridgeSwitch { switch_name: switch_name.into(), netns, connection: Mutex::new(None) }
    }

    /// The network namespace this driver works in (`None` = current).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Runs `operation` with the (lazily opened) connection. A connection
    /// whose socket failed is dropped so that the next call reconnects.
    fn with_connection<T>(
        &self,
        operation: impl FnOnce(&mut Connection) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let mut slot = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|connection| !connection.namespace_is_current()) {
            debug!(
                switch = %self.switch_name,
                netns = self.netns.as_deref().unwrap_or("(current)"),
                "linux-bridge: namespace was deleted or replaced; reconnecting"
            );
            *slot = None;
        }
        let mut connection = match slot.take() {
            Some(connection) => connection,
            None => {
                let connection = Connection::open(self.netns.as_deref())?;
                debug!(
                    switch = %self.switch_name,
                    netns = self.netns.as_deref().unwrap_or("(current)"),
                    "linux-bridge: netlink socket opened"
                );
                connection
            }
        };
        let result = operation(&mut connection);
        if connection.is_broken() {
            debug!(
                switch = %self.switch_name,
                "linux-bridge: netlink socket dropped after a socket failure"
            );
        } else {
            *slot = Some(connection);
        }
        result
    }
}

impl SwitchDriver for LinuxBridgeSwitch {
    fn kind(&self) -> &'static str {
        "linux-bridge"
    }

    fn switch_name(&self) -> &str {
        &self.switch_name
    }

    fn observe_port(&self, port: &str) -> Result<PortObservation, DriverError> {
        let started = Instant::now();
        let observed = self.with_connection(|connection| observe(connection, port))?;
        debug!(
            switch = %self.switch_name,
            port,
            bridge = observed.observation.bridge.as_deref().unwrap_or("-"),
            isolated = observed.observation.isolated,
            up = observed.observation.up,
            elapsed_us = started.elapsed().as_micros() as u64,
            "linux-bridge: observed port"
        );
        Ok(observed.observation)
    }

    fn segment_kind(&self) -> SegmentKind {
        SegmentKind::Bridge
    }

    fn ensure_port(&self, port: &str, segment: &Segment, isolated: bool) -> Result<EnsureOutcome, DriverError> {
        match segment {
            Segment::Bridge(bridge) => LinuxBridgeSwitch::ensure_port(self, port, bridge, isolated),
            Segment::Vlan(_) => {
                Err(DriverError::WrongSegment { driver: self.kind().to_string(), segment: segment.to_string() })
            }
        }
    }
}

impl LinuxBridgeSwitch {
    /// [`SwitchDriver::ensure_port`] with the bridge named directly: makes `port` a member of
    /// `bridge` with the bridge-port `isolated` flag equal to `isolated`.
    pub fn ensure_port(&self, port: &str, bridge: &str, isolated: bool) -> Result<EnsureOutcome, DriverError> {
        let started = Instant::now();
        let outcome = self.with_connection(|connection| ensure(connection, port, bridge, isolated))?;
        debug!(
            switch = %self.switch_name,
            port,
            from_bridge = outcome.before.bridge.as_deref().unwrap_or("-"),
            to_bridge = bridge,
            isolated,
            moved = outcome.moved,
            isolation_changed = outcome.isolation_changed,
            elapsed_us = started.elapsed().as_micros() as u64,
            "linux-bridge: ensured port"
        );
        Ok(outcome)
    }
}

/// A port as read, with the raw links needed to act on it.
struct Observed {
    observation: PortObservation,
    port: Link,
    master: Option<Link>,
}

fn netlink_error(operation: String, error: &NlError) -> DriverError {
    DriverError::Netlink { operation, detail: error.detail() }
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && !name.contains(['/', '\0'])
        && !name.chars().any(char::is_whitespace)
}

fn lookup_port(connection: &mut Connection, port: &str) -> Result<Link, DriverError> {
    if !valid_ifname(port) {
        return Err(DriverError::PortNotFound { port: port.to_string() });
    }
    connection.link_by_name(port).map_err(|error| match error.errno() {
        Some(libc::ENODEV) => DriverError::PortNotFound { port: port.to_string() },
        _ => netlink_error(format!("read port {port}"), &error),
    })
}

fn lookup_bridge(connection: &mut Connection, bridge: &str) -> Result<Link, DriverError> {
    let not_found = || DriverError::BridgeNotFound { bridge: bridge.to_string() };
    if !valid_ifname(bridge) {
        return Err(not_found());
    }
    let link = connection.link_by_name(bridge).map_err(|error| match error.errno() {
        Some(libc::ENODEV) => not_found(),
        _ => netlink_error(format!("read bridge {bridge}"), &error),
    })?;
    if !link.is_bridge {
        debug!(
            bridge,
            kind = link.kind.as_deref().unwrap_or("(none)"),
            "linux-bridge: link exists but is not a bridge"
        );
        return Err(not_found());
    }
    Ok(link)
}

/// Reads the port and, if it has one, its master (to learn the master's
/// name). Two `RTM_GETLINK` round trips at most.
fn observe(connection: &mut Connection, port: &str) -> Result<Observed, DriverError> {
    let port_link = lookup_port(connection, port)?;
    let master = match port_link.master {
        None => None,
        Some(index) => Some(
            connection
                .link_by_index(index)
                .map_err(|error| netlink_error(format!("read the master (ifindex {index}) of port {port}"), &error))?,
        ),
    };
    // The kernel reports IFLA_BRPORT_ISOLATED for every bridge port; outside
    // a bridge the flag does not exist and reads as false.
    let isolated = port_link.is_bridge_port && port_link.isolated.unwrap_or(false);
    let observation = PortObservation {
        port: port.to_string(),
        bridge: master.as_ref().map(|link| link.name.clone()),
        vlan: None,
        isolated,
        up: port_link.up,
    };
    Ok(Observed { observation, port: port_link, master })
}

fn ensure(connection: &mut Connection, port: &str, bridge: &str, isolated: bool) -> Result<EnsureOutcome, DriverError> {
    let before = observe(connection, port)?;

    // The target bridge: the current master if it already is that bridge,
    // else look it up (which also proves it exists and is a bridge).
    let target = match &before.master {
        Some(master) if master.name == bridge && master.is_bridge => master.clone(),
        _ => lookup_bridge(connection, bridge)?,
    };

    let needs_move = before.port.master != Some(target.index);
    let mut current_isolated = before.observation.isolated;
    if needs_move {
        let started = Instant::now();
        connection.set_master_and_up(before.port.index, target.index).map_err(|error| match error.errno() {
            Some(libc::ENODEV) => DriverError::PortNotFound { port: port.to_string() },
            _ => netlink_error(format!("attach port {port} to bridge {bridge}"), &error),
        })?;
        debug!(
            port,
            from_bridge = before.observation.bridge.as_deref().unwrap_or("-"),
            to_bridge = bridge,
            elapsed_us = started.elapsed().as_micros() as u64,
            "linux-bridge: port attached"
        );
        // A freshly attached bridge port starts with default flags
        // (not isolated); the read-back below verifies this assumption.
        current_isolated = false;
    }

    if current_isolated != isolated {
        let started = Instant::now();
        connection.set_bridge_port_isolated(before.port.index, isolated).map_err(|error| match error.errno() {
            Some(libc::ENODEV) => DriverError::PortNotFound { port: port.to_string() },
            _ => netlink_error(format!("set isolated {} on port {port}", if isolated { "on" } else { "off" }), &error),
        })?;
        debug!(
            port,
            bridge,
            isolated,
            elapsed_us = started.elapsed().as_micros() as u64,
            "linux-bridge: isolation set"
        );
    }

    let changed = needs_move || current_isolated != isolated;
    let after = if changed { observe(connection, port)?.observation } else { before.observation.clone() };

    let membership_ok = after.bridge.as_deref() == Some(bridge) && after.isolated == isolated;
    // A moved port was brought up in the same request: it must read back up.
    let up_ok = !needs_move || after.up;
    if !membership_ok || !up_ok {
        let (expected, observed) = if up_ok {
            (describe_membership(Some(bridge), isolated), after.membership())
        } else {
            (
                format!("{}, up", describe_membership(Some(bridge), isolated)),
                format!("{}, {}", after.membership(), if after.up { "up" } else { "down" }),
            )
        };
        return Err(DriverError::ReadBackMismatch { port: port.to_string(), expected, observed });
    }

    let before = before.observation;
    Ok(EnsureOutcome {
        moved: before.bridge != after.bridge,
        isolation_changed: before.isolated != after.isolated,
        before,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_does_not_touch_the_system() {
        let driver = LinuxBridgeSwitch::new("tor-1", Some("cordon-no-such-netns".to_string()));
        assert_eq!(driver.kind(), "linux-bridge");
        assert_eq!(driver.switch_name(), "tor-1");
        assert_eq!(driver.netns(), Some("cordon-no-such-netns"));
        // The namespace is only looked up on first use.
        let error = driver.observe_port("p1").err();
        assert!(
            matches!(&error, Some(DriverError::Namespace { netns, .. }) if netns == "cordon-no-such-netns"),
            "{error:?}"
        );
    }

    #[test]
    fn interface_names() {
        assert!(valid_ifname("p1"));
        assert!(valid_ifname("br-quarantine12"));
        assert!(!valid_ifname("br-quarantine123"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a b"));
    }
}
