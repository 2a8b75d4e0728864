//! The `ovs` switch driver: one Open vSwitch bridge, one 802.1Q VLAN per network. A port moves
//! between networks by changing its access tag (`Port.tag`); isolation inside a VLAN is
//! `Port.protected`. Spoken over OVSDB (RFC 7047, JSON-RPC 1.0 over a Unix or TCP stream) by a
//! small client of our own (`ovsdb.rs`); no `ovs-vsctl` process.

mod ovsdb;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::debug;

use crate::{DriverError, EnsureOutcome, PortObservation, Segment, SegmentKind, SwitchDriver, describe_request};
use ovsdb::{Client, OpError};

/// Where the OVSDB server listens: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvsdbAddress {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl FromStr for OvsdbAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("`{text}`: the socket path after unix: must be absolute"));
            }
            return Ok(OvsdbAddress::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("tcp:") {
            // `tcp:[::1]:6640` or `tcp:127.0.0.1:6640`.
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("`{text}`: expected tcp:HOST:PORT, like tcp:127.0.0.1:6640"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{text}`: `{port}` is not a TCP port (1-65535)"))?;
            if host.is_empty() {
                return Err(format!("`{text}`: the host is missing (tcp:HOST:PORT)"));
            }
            return Ok(OvsdbAddress::Tcp { host: host.to_string(), port });
        }
        Err(format!("`{text}` is not an OVSDB address (expected unix:/PATH or tcp:HOST:PORT)"))
    }
}

impl fmt::Display for OvsdbAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OvsdbAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            OvsdbAddress::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            OvsdbAddress::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

/// Called with the port's name between the read and the write of a change (fault injection).
type BeforeWrite = Box<dyn Fn(&str) + Send + Sync>;

/// An Open vSwitch switch: the OVSDB to talk to and the bridge whose ports Cordon manages.
pub struct OvsSwitch {
    switch_name: String,
    address: OvsdbAddress,
    bridge: String,
    /// Time allowed for connecting and for each OVSDB answer.
    rpc_timeout: Duration,
    /// Time allowed for ovs-vswitchd to report a committed change applied (`cur_cfg`).
    apply_timeout: Duration,
    /// Serialises the driver's calls: read, compare, write is one critical section per switch
    /// (another writer is caught by the transaction's `wait`).
    lock: Mutex<()>,
    /// Tests only: runs between the read and the write, to race a change in.
    before_write: Option<BeforeWrite>,
}

impl fmt::Debug for OvsSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OvsSwitch")
            .field("switch_name", &self.switch_name)
            .field("address", &self.address)
            .field("bridge", &self.bridge)
            .field("rpc_timeout", &self.rpc_timeout)
            .field("apply_timeout", &self.apply_timeout)
            .finish_non_exhaustive()
    }
}

/// A port as read from the OVSDB, with the raw column values the conflict check repeats.
struct PortRow {
    observation: PortObservation,
    uuid: String,
    raw_tag: Value,
    raw_protected: Value,
    /// `_uuid`, `next_cfg`, `cur_cfg` of the single `Open_vSwitch` row.
    root_uuid: String,
    next_cfg: i64,
    cur_cfg: i64,
}

impl OvsSwitch {
    /// Touches nothing: every call connects (a Unix-socket connect costs tens of microseconds).
    pub fn new(switch_name: impl Into<String>, address: OvsdbAddress, bridge: impl Into<String>) -> OvsSwitch {
        OvsSwitch {
            switch_name: switch_name.into(),
            address,
            bridge: bridge.into(),
            rpc_timeout: Duration::from_secs(5),
            apply_timeout: Duration::from_secs(5),
            lock: Mutex::new(()),
            before_write: None,
        }
    }

    /// Fault injection for tests: `hook(port)` runs after the driver has read the port and
    /// before its transaction, so a test can make a concurrent change land exactly there.
    #[doc(hidden)]
    pub fn with_hook_before_write(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> OvsSwitch {
        self.before_write = Some(Box::new(hook));
        self
    }

    /// Overrides the per-answer timeout and the time allowed for ovs-vswitchd to apply a change.
    pub fn with_timeouts(mut self, rpc_timeout: Duration, apply_timeout: Duration) -> OvsSwitch {
        self.rpc_timeout = rpc_timeout;
        self.apply_timeout = apply_timeout;
        self
    }

    pub fn address(&self) -> &OvsdbAddress {
        &self.address
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    fn connect(&self) -> Result<Client, DriverError> {
        Client::connect(&self.address, self.rpc_timeout).map_err(|detail| self.unreachable(detail))
    }

    fn unreachable(&self, detail: String) -> DriverError {
        DriverError::OvsdbUnreachable { detail: format!("{} ({}): {detail}", self.address, self.switch_name) }
    }

    /// Runs `ops` in one transaction, mapping every failure to its numbered error.
    fn transact(&self, client: &mut Client, what: &str, ops: Vec<Value>) -> Result<Vec<Value>, DriverError> {
        client.transact(ops).map_err(|error| match error {
            OpError::Io(detail) => self.unreachable(format!("{what}: {detail}")),
            OpError::WaitFailed(detail) => DriverError::OvsConflict {
                detail: format!(
                    "{what}: the port changed after Cordon read it ({detail}); nothing was applied by this transaction"
                ),
            },
            OpError::Db(detail) => DriverError::Ovsdb { detail: format!("{what} on {}: {detail}", self.address) },
        })
    }

    fn read_port(&self, client: &mut Client, port: &str) -> Result<PortRow, DriverError> {
        let results = self.transact(
            client,
            &format!("read port {port}"),
            vec![
                json!({"op": "select", "table": "Port", "where": [["name", "==", port]],
                       "columns": ["_uuid", "tag", "protected"]}),
                json!({"op": "select", "table": "Bridge", "where": [["name", "==", self.bridge]],
                       "columns": ["ports"]}),
                json!({"op": "select", "table": "Interface", "where": [["name", "==", port]],
                       "columns": ["admin_state"]}),
                json!({"op": "select", "table": "Open_vSwitch", "where": [],
                       "columns": ["_uuid", "next_cfg", "cur_cfg"]}),
            ],
        )?;
        let malformed = |what: &str| DriverError::Ovsdb {
            detail: format!("read port {port} on {}: malformed answer ({what})", self.address),
        };
        let rows = |index: usize| results.get(index).and_then(|r| r.get("rows")).and_then(Value::as_array);
        let not_found = |detail: String| DriverError::OvsPortNotFound {
            detail: format!("{detail} (switch {}, OVSDB {})", self.switch_name, self.address),
        };
        let bridge_rows = rows(1).ok_or_else(|| malformed("Bridge rows"))?;
        let Some(bridge_row) = bridge_rows.first() else {
            return Err(not_found(format!("bridge {} does not exist", self.bridge)));
        };
        let port_rows = rows(0).ok_or_else(|| malformed("Port rows"))?;
        let Some(port_row) = port_rows.first() else {
            return Err(not_found(format!("port {port} does not exist")));
        };
        let uuid = ovsdb::uuid(port_row.get("_uuid")).ok_or_else(|| malformed("Port _uuid"))?;
        let ports = ovsdb::uuid_set(bridge_row.get("ports")).ok_or_else(|| malformed("Bridge ports"))?;
        if !ports.contains(&uuid) {
            return Err(not_found(format!("port {port} is not a port of bridge {}", self.bridge)));
        }
        let raw_tag = port_row.get("tag").cloned().ok_or_else(|| malformed("Port tag"))?;
        let tag = ovsdb::optional_integer(&raw_tag).ok_or_else(|| malformed("Port tag"))?;
        let raw_protected = port_row.get("protected").cloned().unwrap_or(Value::Bool(false));
        let protected = raw_protected.as_bool().ok_or_else(|| malformed("Port protected"))?;
        let admin_state = rows(2)
            .and_then(|rows| rows.first())
            .and_then(|row| row.get("admin_state"))
            .and_then(ovsdb::optional_string);
        let root = rows(3).and_then(|rows| rows.first()).ok_or_else(|| malformed("no Open_vSwitch row"))?;
        let root_uuid = ovsdb::uuid(root.get("_uuid")).ok_or_else(|| malformed("Open_vSwitch _uuid"))?;
        let next_cfg = root.get("next_cfg").and_then(Value::as_i64).ok_or_else(|| malformed("next_cfg"))?;
        let cur_cfg = root.get("cur_cfg").and_then(Value::as_i64).ok_or_else(|| malformed("cur_cfg"))?;
        let vlan = match tag {
            None => None,
            Some(tag) => Some(u16::try_from(tag).map_err(|_| malformed("Port tag out of range"))?),
        };
        Ok(PortRow {
            observation: PortObservation {
                port: port.to_string(),
                bridge: Some(self.bridge.clone()),
                vlan,
                isolated: protected,
                up: admin_state.as_deref() == Some("up"),
            },
            uuid,
            raw_tag,
            raw_protected,
            root_uuid,
            next_cfg,
            cur_cfg,
        })
    }

    /// Waits until ovs-vswitchd reports configuration `target` applied (`cur_cfg >= target`),
    /// as `ovs-vsctl` does after a change.
    fn wait_applied(&self, client: &mut Client, root_uuid: &str, target: i64, port: &str) -> Result<(), DriverError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let results = self.transact(
                client,
                "read cur_cfg",
                vec![json!({"op": "select", "table": "Open_vSwitch", "where": [["_uuid", "==", ["uuid", root_uuid]]],
                            "columns": ["cur_cfg"]})],
            )?;
            let cur_cfg = results
                .first()
                .and_then(|r| r.get("rows"))
                .and_then(Value::as_array)
                .and_then(|rows| rows.first())
                .and_then(|row| row.get("cur_cfg"))
                .and_then(Value::as_i64)
                .ok_or_else(|| DriverError::Ovsdb {
                    detail: format!("read cur_cfg on {}: malformed answer", self.address),
                })?;
            if cur_cfg >= target {
                return Ok(());
            }
            if started.elapsed() >= self.apply_timeout {
                return Err(DriverError::OvsNotApplied {
                    detail: format!(
                        "port {port}: the change is committed (next_cfg {target}) but cur_cfg is still {cur_cfg} after \
                         {:.1} s; is ovs-vswitchd running?",
                        self.apply_timeout.as_secs_f64()
                    ),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn ensure_vlan(&self, port: &str, tag: u16, isolated: bool) -> Result<EnsureOutcome, DriverError> {
        let mut client = self.connect()?;
        let before = self.read_port(&mut client, port)?;
        let wanted = Segment::Vlan(tag);
        let in_place = before.observation.is_on(&wanted) && before.observation.isolated == isolated;
        if in_place {
            // Already there (by hand, or an earlier call whose wait timed out): make sure
            // ovs-vswitchd has applied what the database says before calling it done.
            if before.cur_cfg < before.next_cfg {
                self.wait_applied(&mut client, &before.root_uuid, before.next_cfg, port)?;
            }
            let after = before.observation.clone();
            return Ok(EnsureOutcome::between(before.observation, after, SegmentKind::Vlan));
        }
        if let Some(hook) = &self.before_write {
            hook(port);
        }
        // One transaction: check that the port is still as read, write only what differs, and
        // ask ovs-vswitchd to confirm (next_cfg), as ovs-vsctl does.
        let port_where = json!([["_uuid", "==", ["uuid", before.uuid]]]);
        let mut row = serde_json::Map::new();
        if !before.observation.is_on(&wanted) {
            row.insert("tag".into(), json!(tag));
        }
        if before.observation.isolated != isolated {
            row.insert("protected".into(), json!(isolated));
        }
        let ops = vec![
            json!({"op": "wait", "table": "Port", "where": port_where, "columns": ["tag", "protected"],
                   "until": "==", "rows": [{"tag": before.raw_tag, "protected": before.raw_protected}], "timeout": 0}),
            json!({"op": "update", "table": "Port", "where": port_where, "row": row}),
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [["_uuid", "==", ["uuid", before.root_uuid]]],
                   "mutations": [["next_cfg", "+=", 1]]}),
            json!({"op": "select", "table": "Open_vSwitch", "where": [["_uuid", "==", ["uuid", before.root_uuid]]],
                   "columns": ["next_cfg"]}),
            json!({"op": "comment",
                   "comment": format!("cordon: port {port} -> {}", describe_request(&wanted, isolated))}),
        ];
        let results = self.transact(&mut client, &format!("set port {port} to vlan {tag}"), ops)?;
        let updated = results.get(1).and_then(|r| r.get("count")).and_then(Value::as_i64);
        if updated != Some(1) {
            return Err(DriverError::OvsConflict {
                detail: format!("set port {port}: the update matched {updated:?} rows instead of 1"),
            });
        }
        let next_cfg = results
            .get(3)
            .and_then(|r| r.get("rows"))
            .and_then(Value::as_array)
            .and_then(|rows| rows.first())
            .and_then(|row| row.get("next_cfg"))
            .and_then(Value::as_i64)
            .ok_or_else(|| DriverError::Ovsdb { detail: format!("set port {port}: malformed answer (next_cfg)") })?;
        self.wait_applied(&mut client, &before.root_uuid, next_cfg, port)?;
        let after = self.read_port(&mut client, port)?.observation;
        if !(after.is_on(&wanted) && after.isolated == isolated) {
            return Err(DriverError::ReadBackMismatch {
                port: port.to_string(),
                expected: format!("bridge {}, {}", self.bridge, describe_request(&wanted, isolated)),
                observed: after.membership(),
            });
        }
        Ok(EnsureOutcome::between(before.observation, after, SegmentKind::Vlan))
    }
}

impl SwitchDriver for OvsSwitch {
    fn kind(&self) -> &'static str {
        "ovs"
    }

    fn switch_name(&self) -> &str {
        &self.switch_name
    }

    fn segment_kind(&self) -> SegmentKind {
        SegmentKind::Vlan
    }

    /// The bridge exists and ovs-vswitchd has applied the database (`cur_cfg == next_cfg`).
    fn check_reachable(&self) -> Result<String, DriverError> {
        let mut client = self.connect()?;
        let results = self.transact(
            &mut client,
            "check the switch",
            vec![
                json!({"op": "select", "table": "Bridge", "where": [["name", "==", self.bridge]], "columns": ["name"]}),
                json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg", "cur_cfg"]}),
            ],
        )?;
        let rows = |index: usize| results.get(index).and_then(|r| r.get("rows")).and_then(Value::as_array);
        if rows(0).is_none_or(|rows| rows.is_empty()) {
            return Err(DriverError::OvsPortNotFound {
                detail: format!(
                    "bridge {} does not exist (switch {}, OVSDB {})",
                    self.bridge, self.switch_name, self.address
                ),
            });
        }
        let root = rows(1).and_then(|rows| rows.first());
        let cfg = |column: &str| root.and_then(|row| row.get(column)).and_then(Value::as_i64).unwrap_or(-1);
        let (next_cfg, cur_cfg) = (cfg("next_cfg"), cfg("cur_cfg"));
        if cur_cfg < next_cfg {
            return Ok(format!(
                "reachable; ovs-vswitchd has not applied the latest change yet (cur_cfg {cur_cfg}, next_cfg {next_cfg})"
            ));
        }
        Ok(format!("reachable (bridge {}, cur_cfg {cur_cfg})", self.bridge))
    }

    fn observe_port(&self, port: &str) -> Result<PortObservation, DriverError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let mut client = self.connect()?;
        let observation = self.read_port(&mut client, port)?.observation;
        debug!(
            switch = %self.switch_name,
            port,
            vlan = ?observation.vlan,
            protected = observation.isolated,
            elapsed_us = started.elapsed().as_micros() as u64,
            "ovs: observed port"
        );
        Ok(observation)
    }

    fn ensure_port(&self, port: &str, segment: &Segment, isolated: bool) -> Result<EnsureOutcome, DriverError> {
        let Segment::Vlan(tag) = segment else {
            return Err(DriverError::WrongSegment { driver: self.kind().to_string(), segment: segment.to_string() });
        };
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let outcome = self.ensure_vlan(port, *tag, isolated)?;
        debug!(
            switch = %self.switch_name,
            port,
            from_vlan = ?outcome.before.vlan,
            to_vlan = tag,
            isolated,
            moved = outcome.moved,
            isolation_changed = outcome.isolation_changed,
            elapsed_us = started.elapsed().as_micros() as u64,
            "ovs: ensured port"
        );
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!("unix:/run/openvswitch/db.sock".parse(), Ok(OvsdbAddress::Unix("/run/openvswitch/db.sock".into())));
        assert_eq!("tcp:127.0.0.1:6640".parse(), Ok(OvsdbAddress::Tcp { host: "127.0.0.1".into(), port: 6640 }));
        let v6: OvsdbAddress = "tcp:[::1]:6640".parse().unwrap();
        assert_eq!(v6, OvsdbAddress::Tcp { host: "::1".into(), port: 6640 });
        assert_eq!(v6.to_string(), "tcp:[::1]:6640");
        for bad in ["unix:relative.sock", "tcp:host", "tcp:host:0", "tcp::6640", "ssl:1.2.3.4:6640", ""] {
            assert!(bad.parse::<OvsdbAddress>().is_err(), "{bad}");
        }
    }
}
