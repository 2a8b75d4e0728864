//! The `libvirt` hypervisor driver: moves a VM's virtual NIC between Linux bridges through
//! libvirt's C API (the `virt` crate; never `virsh`), live and in the persistent definition,
//! and reboots VMs with confirmation from libvirt's domain events.
//!
//! libvirt says where a NIC *should* be (its XML); the kernel says where the tap *is*. The
//! driver reads both: the XML through libvirt, the tap's master and `isolated` bridge-port
//! flag over rtnetlink in the network namespace libvirtd runs in (`netns`; `None` = the
//! driver's own). That needs the driver on the hypervisor host; for a remote URI
//! (`qemu+ssh://host/system`) without a `netns` only the definitions can be read.
//!
//! `docs/drivers.md` (section `libvirt`) describes the behaviour in full.

mod events;
mod xml;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::debug;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt_sys as sys;

use crate::netlink::{Connection as Netlink, Link, NlError};
use crate::{
    DomainInfo, DomainNic, DriverError, EnsureOutcome, HypervisorDriver, PortObservation, PowerDriver, RebootOutcome,
    describe_membership,
};
use events::{DomainEvent, Subscription};
use xml::Nic;

const KIND: &str = "libvirt";
/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
const MAX_IFNAME_LEN: usize = 15;
/// libvirt keepalive: a probe every 5 s, the connection is declared dead after 3 unanswered
/// probes, so a hung libvirtd fails calls after about 20 s instead of blocking forever.
const KEEPALIVE_INTERVAL_S: i32 = 5;
const KEEPALIVE_COUNT: u32 = 3;
/// While waiting for a reboot's confirmation, check the connection this often.
const WAIT_SLICE: Duration = Duration::from_millis(250);

/// The libvirt hypervisor driver for one libvirtd (`uri`, e.g. `qemu:///system` or
/// `qemu:///system?socket=/run/x/libvirt-sock`).
///
/// Constructing it touches nothing; the connection is opened on first use, kept, checked
/// (`virConnectIsAlive`) before each use, and reopened after it was lost (also within a call:
/// an operation that fails because an old connection died is retried once on a new one).
/// The first connection of the process also starts libvirt's event loop thread (see
/// [`PowerDriver::reboot`]). Cloning shares the connection.
///
/// `ensure_nic` calls are serialised per driver; observations, listings and reboots run
/// concurrently (libvirt connections are thread-safe).
///
/// Taps are read from the kernel when libvirtd runs on this host: the URI has no host part
/// (`qemu:///system`), or a namespace was given with [`LibvirtHypervisor::with_netns`]. For
/// a remote URI without one, observations and read-backs come from libvirt's live and
/// persistent definitions only.
#[derive(Debug, Clone)]
pub struct LibvirtHypervisor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    uri: String,
    /// Network namespace libvirtd (and so every tap and bridge) lives in.
    netns: Option<String>,
    /// Taps and bridges can be read from the kernel: libvirtd runs on this host (a local
    /// URI, or a `netns` was given). Otherwise only libvirt's definitions are read.
    kernel_view: bool,
    connection: Mutex<Option<Connect>>,
    netlink: Mutex<Option<Netlink>>,
    /// Held for a whole `ensure_nic`.
    changes: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LibvirtHypervisor {
    /// Creates the driver for hypervisor `name` at `uri`. Touches nothing. Taps and bridges
    /// are looked up in the driver's own network namespace; see [`LibvirtHypervisor::with_netns`].
    pub fn new(name: impl Into<String>, uri: impl Into<String>) -> Self {
        LibvirtHypervisor { shared: Arc::new(Shared::new(name.into(), uri.into(), None)) }
    }

    /// The same driver, looking for taps and bridges in `/run/netns/<netns>` (the namespace
    /// libvirtd runs in, as created by `ip netns add`) instead of its own.
    pub fn with_netns(self, netns: Option<String>) -> Self {
        let shared = Shared::new(self.shared.name.clone(), self.shared.uri.clone(), netns);
        LibvirtHypervisor { shared: Arc::new(shared) }
    }

    /// The libvirt URI.
    pub fn uri(&self) -> &str {
        &self.shared.uri
    }

    /// The network namespace of libvirtd's taps and bridges (`None` = the driver's own).
    pub fn netns(&self) -> Option<&str> {
        self.shared.netns.as_deref()
    }

    /// A [`PowerDriver`] for one domain of this hypervisor, sharing the connection.
    pub fn power(&self, domain: impl Into<String>) -> LibvirtPower {
        LibvirtPower { shared: Arc::clone(&self.shared), domain: domain.into() }
    }
}

impl Shared {
    fn new(name: String, uri: String, netns: Option<String>) -> Self {
        Shared {
            kernel_view: netns.is_some() || !is_remote_uri(&uri),
            name,
            uri,
            netns,
            connection: Mutex::new(None),
            netlink: Mutex::new(None),
            changes: Mutex::new(()),
        }
    }

    fn unreachable(&self, what: &str, error: &VirtError) -> DriverError {
        DriverError::HypervisorUnreachable {
            detail: format!("libvirt at {} is unreachable ({what}): {}", self.uri, error.message()),
        }
    }

    /// The kept connection if it is alive, else a new one. `true` = newly opened.
    fn connect(&self) -> Result<(Connect, bool), DriverError> {
        let mut slot = lock(&self.connection);
        if let Some(connection) = slot.as_ref() {
            if connection.is_alive().unwrap_or(false) {
                return Ok((connection.clone(), false));
            }
            debug!(hypervisor = %self.name, uri = %self.uri, "libvirt: connection lost; reconnecting");
            *slot = None;
        }
        events::ensure_event_loop().map_err(|detail| DriverError::HypervisorUnreachable {
            detail: format!("libvirt at {}: cannot start the event loop: {detail}", self.uri),
        })?;
        let started = Instant::now();
        let connection = Connect::open(Some(&self.uri)).map_err(|error| self.unreachable("connect", &error))?;
        if let Err(error) = connection.set_keep_alive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT) {
            debug!(hypervisor = %self.name, error = %error, "libvirt: keepalive not enabled");
        }
        debug!(
            hypervisor = %self.name,
            uri = %self.uri,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "libvirt: connected"
        );
        *slot = Some(connection.clone());
        Ok((connection, true))
    }

    /// Drops the kept connection if it is `connection`.
    fn forget(&self, connection: &Connect) {
        let mut slot = lock(&self.connection);
        // SAFETY: only the pointer values are compared; nothing is dereferenced.
        let same = slot.as_ref().is_some_and(|kept| unsafe { kept.as_ptr() == connection.as_ptr() });
        if same {
            *slot = None;
        }
    }

    /// Runs `operation` on a live connection. If it fails because a kept (not new)
    /// connection turned out dead, runs it once more on a new connection: every operation
    /// of this driver reads before it acts, so a repeat is safe.
    fn with_connection<T>(&self, operation: impl Fn(&Connect) -> Result<T, DriverError>) -> Result<T, DriverError> {
        let (connection, fresh) = self.connect()?;
        match operation(&connection) {
            Err(DriverError::HypervisorUnreachable { detail }) if !fresh => {
                debug!(hypervisor = %self.name, detail = %detail, "libvirt: retrying on a new connection");
                self.forget(&connection);
                let (connection, _) = self.connect()?;
                operation(&connection)
            }
            other => other,
        }
    }

    /// Maps a failed libvirt call: a dead connection is `HypervisorUnreachable` (and
    /// forgotten), anything else a driver failure naming the operation.
    fn call_failed(&self, connection: &Connect, operation: String, error: &VirtError) -> DriverError {
        if !connection.is_alive().unwrap_or(false) {
            self.forget(connection);
            return DriverError::HypervisorUnreachable {
                detail: format!("libvirt at {}: connection lost during {operation}: {}", self.uri, error.message()),
            };
        }
        DriverError::Netlink { operation, detail: format!("libvirt says: {}", error.message()) }
    }

    fn lookup(&self, connection: &Connect, domain: &str) -> Result<Domain, DriverError> {
        if domain.is_empty() {
            return Err(DriverError::DomainNotFound { domain: domain.to_string() });
        }
        connection.lookup_domain_by_name(domain).map_err(|error| {
            if error.code().is(ErrorNumber::NoDomain) {
                DriverError::DomainNotFound { domain: domain.to_string() }
            } else {
                self.call_failed(connection, format!("look up domain {domain}"), &error)
            }
        })
    }

    /// The domain and where its NIC `mac` is defined (live and persistent).
    fn read_nic(&self, connection: &Connect, domain: &str, mac: &Mac) -> Result<(Domain, NicState), DriverError> {
        let dom = self.lookup(connection, domain)?;
        let failed =
            |what: &str, error: VirtError| self.call_failed(connection, format!("{what} of domain {domain}"), &error);
        let running = dom.is_active().map_err(|error| failed("read the state", error))?;
        let persistent = dom.is_persistent().map_err(|error| failed("read the persistence", error))?;
        let find = |flags: sys::virDomainXMLFlags, which: &str| -> Result<Option<Nic>, DriverError> {
            let text = dom.xml_desc(flags).map_err(|error| failed(&format!("read the {which} XML"), error))?;
            let nics = xml::parse_nics(&text).map_err(|detail| DriverError::Netlink {
                operation: format!("read the {which} XML of domain {domain}"),
                detail,
            })?;
            Ok(nics.into_iter().find(|nic| nic.mac == mac.normalized))
        };
        let live = if running { find(0, "live")? } else { None };
        let config = if persistent { find(sys::VIR_DOMAIN_XML_INACTIVE, "persistent")? } else { None };
        let found = if running { live.is_some() } else { config.is_some() };
        if !found {
            return Err(DriverError::NicNotFound { domain: domain.to_string(), mac: mac.given.clone() });
        }
        Ok((dom, NicState { running, live, config }))
    }

    /// The bridge a NIC definition connects to: `<source bridge>`, or for a `type='network'`
    /// NIC without one (persistent XML) the network's bridge.
    fn nic_bridge(&self, connection: &Connect, nic: &Nic) -> Option<String> {
        if let Some(bridge) = &nic.source_bridge {
            return Some(bridge.clone());
        }
        let network = nic.source_network.as_deref()?;
        match connection.lookup_network_by_name(network).and_then(|network| network.bridge_name()) {
            Ok(bridge) => Some(bridge),
            Err(error) => {
                debug!(network, error = %error, "libvirt: cannot read the bridge of network");
                None
            }
        }
    }

    /// True if the definition connects the NIC to `bridge` with `isolated`.
    fn definition_matches(&self, connection: &Connect, nic: &Nic, bridge: &str, isolated: bool) -> bool {
        (nic.kind == "bridge" || nic.kind == "network")
            && nic.isolated == isolated
            && self.nic_bridge(connection, nic).as_deref() == Some(bridge)
    }

    /// The NIC as it is: for a running domain its tap (master and flag read from the kernel),
    /// else its persistent definition.
    fn observe_state(
        &self,
        connection: &Connect,
        domain: &str,
        state: &NicState,
    ) -> Result<PortObservation, DriverError> {
        match (&state.live, &state.config) {
            (Some(live), _) if state.running => match &live.target_dev {
                Some(tap) if self.kernel_view => {
                    let (observation, _) =
                        self.with_netlink(|netlink| observe_tap(netlink, self.netns_label(), domain, tap))?;
                    Ok(PortObservation { up: observation.up && !live.link_down, ..observation })
                }
                // A remote hypervisor (its kernel is out of reach), or no tap (e.g.
                // `type='user'`): only the live definition can be read.
                tap => Ok(PortObservation {
                    port: tap.clone().unwrap_or_default(),
                    bridge: self.nic_bridge(connection, live),
                    vlan: None,
                    isolated: live.isolated,
                    up: !live.link_down,
                }),
            },
            (_, Some(config)) => Ok(PortObservation {
                port: config.target_dev.clone().unwrap_or_default(),
                bridge: self.nic_bridge(connection, config),
                vlan: None,
                isolated: config.isolated,
                up: false,
            }),
            // read_nic guarantees one of the two.
            _ => Err(DriverError::Netlink {
                operation: format!("observe a NIC of domain {domain}"),
                detail: "neither a live nor a persistent definition".to_string(),
            }),
        }
    }

    fn netns_label(&self) -> &str {
        self.netns.as_deref().unwrap_or("(current)")
    }

    /// Runs `operation` with the (lazily opened) rtnetlink socket in libvirtd's namespace,
    /// reopened after a socket failure or when the namespace was replaced.
    fn with_netlink<T>(
        &self,
        operation: impl FnOnce(&mut Netlink) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let mut slot = lock(&self.netlink);
        if slot.as_ref().is_some_and(|netlink| !netlink.namespace_is_current()) {
            *slot = None;
        }
        let mut netlink = match slot.take() {
            Some(netlink) => netlink,
            None => Netlink::open(self.netns.as_deref())?,
        };
        let result = operation(&mut netlink);
        if !netlink.is_broken() {
            *slot = Some(netlink);
        }
        result
    }

    fn ensure(
        &self,
        connection: &Connect,
        domain: &str,
        mac: &Mac,
        bridge: &str,
        isolated: bool,
    ) -> Result<EnsureOutcome, DriverError> {
        let (dom, state) = self.read_nic(connection, domain, mac)?;
        let before = self.observe_state(connection, domain, &state)?;
        let wanted = |observation: &PortObservation| {
            observation.bridge.as_deref() == Some(bridge) && observation.isolated == isolated
        };
        let live = state.live.as_ref().filter(|_| state.running);
        let live_ok = live.is_none_or(|nic| self.definition_matches(connection, nic, bridge, isolated));
        let tap_ok = !state.running || wanted(&before);
        let config_ok =
            state.config.as_ref().is_none_or(|nic| self.definition_matches(connection, nic, bridge, isolated));
        if live_ok && tap_ok && config_ok {
            return Ok(EnsureOutcome { after: before.clone(), before, moved: false, isolation_changed: false });
        }

        // The bridge must exist where libvirtd is (libvirt checks it for live updates only).
        if self.kernel_view {
            self.with_netlink(|netlink| lookup_bridge(netlink, bridge).map(|_| ()))?;
        }

        // The tap is not where the live definition says (moved behind libvirt's back, or its
        // bridge was recreated): put it where it must be first. libvirt acts on the bridge its
        // definition names (e.g. it only sets the flag when the bridge stays the same), so
        // after this its update applies to a tap in the state it expects, or is not needed.
        let mut tap_fixed = false;
        if let (Some(live), false, true) = (live, before.port.is_empty(), self.kernel_view) {
            let definition = (self.nic_bridge(connection, live), live.isolated);
            if !tap_ok && definition != (before.bridge.clone(), before.isolated) {
                tap_fixed = true;
                let tap = before.port.as_str();
                self.with_netlink(|netlink| fix_tap(netlink, self.netns_label(), domain, tap, bridge, isolated))?;
                debug!(
                    hypervisor = %self.name,
                    domain,
                    tap,
                    from_bridge = before.bridge.as_deref().unwrap_or("-"),
                    to_bridge = bridge,
                    isolated,
                    "libvirt: tap was not where libvirt had put it; re-attached"
                );
            }
        }

        // libvirt: one update for what is live and persistent, unless the two definitions
        // differ in shape (then each gets XML built from itself).
        let mut steps: Vec<(u32, String)> = Vec::new();
        match (live.filter(|_| !live_ok), state.config.as_ref().filter(|_| !config_ok)) {
            (Some(live), Some(config)) if live.shape() == config.shape() => steps.push((
                sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG,
                xml::bridge_interface_xml(live, bridge, isolated),
            )),
            (live, config) => {
                if let Some(live) = live {
                    steps.push((sys::VIR_DOMAIN_AFFECT_LIVE, xml::bridge_interface_xml(live, bridge, isolated)));
                }
                if let Some(config) = config {
                    steps.push((sys::VIR_DOMAIN_AFFECT_CONFIG, xml::bridge_interface_xml(config, bridge, isolated)));
                }
            }
        }
        for (index, (flags, interface)) in steps.iter().enumerate() {
            let started = Instant::now();
            if let Err(error) = dom.update_device_flags(interface, *flags) {
                let changed_before = tap_fixed || index > 0;
                return Err(self.update_failed(
                    connection,
                    domain,
                    mac,
                    bridge,
                    isolated,
                    *flags,
                    changed_before,
                    &error,
                ));
            }
            debug!(
                hypervisor = %self.name,
                domain,
                mac = %mac.normalized,
                to_bridge = bridge,
                isolated,
                affects = affects(*flags),
                elapsed_us = started.elapsed().as_micros() as u64,
                "libvirt: NIC definition updated"
            );
        }

        // Read everything back.
        let (_, after_state) = self.read_nic(connection, domain, mac)?;
        let after = self.observe_state(connection, domain, &after_state)?;
        let live_after = after_state.live.as_ref().filter(|_| after_state.running);
        let live_ok = live_after.is_none_or(|nic| self.definition_matches(connection, nic, bridge, isolated));
        let config_ok =
            after_state.config.as_ref().is_none_or(|nic| self.definition_matches(connection, nic, bridge, isolated));
        if !wanted(&after) || !live_ok || !config_ok {
            return Err(DriverError::ReadBackMismatch {
                port: port_label(domain, mac, &after),
                expected: describe_membership(Some(bridge), isolated),
                observed: self.describe_state(connection, &after_state, &after),
            });
        }
        Ok(EnsureOutcome {
            moved: before.bridge != after.bridge,
            isolation_changed: before.isolated != after.isolated,
            before,
            after,
        })
    }

    /// "tap vnet0: bridge br-office, not isolated; live definition: ...; persistent
    /// definition: ...".
    fn describe_state(&self, connection: &Connect, state: &NicState, observation: &PortObservation) -> String {
        let mut parts = Vec::new();
        if state.running && !observation.port.is_empty() {
            parts.push(format!("tap {}: {}", observation.port, observation.membership()));
        }
        let definition = |nic: &Nic| describe_membership(self.nic_bridge(connection, nic).as_deref(), nic.isolated);
        if let Some(live) = state.live.as_ref().filter(|_| state.running) {
            parts.push(format!("live definition: {}", definition(live)));
        }
        if let Some(config) = &state.config {
            parts.push(format!("persistent definition: {}", definition(config)));
        }
        parts.join("; ")
    }

    /// The error for a failed `virDomainUpdateDeviceFlags`, saying plainly what did and did
    /// not change (read back after the failure).
    #[allow(clippy::too_many_arguments)]
    fn update_failed(
        &self,
        connection: &Connect,
        domain: &str,
        mac: &Mac,
        bridge: &str,
        isolated: bool,
        flags: u32,
        changed_before: bool,
        error: &VirtError,
    ) -> DriverError {
        let operation = format!("libvirt update of NIC {} of domain {domain} ({})", mac.normalized, affects(flags));
        if !connection.is_alive().unwrap_or(false) {
            self.forget(connection);
            return DriverError::HypervisorUnreachable {
                detail: format!("libvirt at {}: connection lost during {operation}: {}", self.uri, error.message()),
            };
        }
        let bridge_missing = if self.kernel_view {
            matches!(
                self.with_netlink(|netlink| lookup_bridge(netlink, bridge).map(|_| ())),
                Err(DriverError::BridgeNotFound { .. })
            )
        } else {
            // libvirt 9: "operation failed: bridge br-x doesn't exist".
            error.message().contains(&format!("bridge {bridge} doesn't exist"))
        };
        if bridge_missing {
            return DriverError::BridgeNotFound { bridge: bridge.to_string() };
        }
        let now = match self.read_nic(connection, domain, mac) {
            Ok((_, state)) => {
                let live = state.live.as_ref().filter(|_| state.running);
                let live_moved = live.map(|nic| self.definition_matches(connection, nic, bridge, isolated));
                let config_moved =
                    state.config.as_ref().map(|nic| self.definition_matches(connection, nic, bridge, isolated));
                let observed = self
                    .observe_state(connection, domain, &state)
                    .map(|observation| self.describe_state(connection, &state, &observation))
                    .unwrap_or_else(|error| format!("({error})"));
                match (live_moved, config_moved) {
                    (Some(true), Some(false)) => format!(
                        "HALF DONE: the live NIC is connected as requested but the persistent definition is not \
                         (a restart of the domain would bring the old connection back); now {observed}"
                    ),
                    (Some(false), Some(true)) => format!(
                        "HALF DONE: the persistent definition is as requested but the live NIC is not; now {observed}"
                    ),
                    _ if !changed_before => format!("nothing was changed; now {observed}"),
                    _ => format!("now {observed}"),
                }
            }
            Err(read_error) => format!("the NIC could not be read back: {read_error}"),
        };
        DriverError::Netlink { operation, detail: format!("libvirt says: {}; {now}", error.message()) }
    }

    /// Lists every domain with its NICs.
    fn list(&self, connection: &Connect) -> Result<Vec<DomainInfo>, DriverError> {
        let domains = connection
            .list_all_domains(0)
            .map_err(|error| self.call_failed(connection, "list the domains".to_string(), &error))?;
        let mut infos = Vec::with_capacity(domains.len());
        for dom in domains {
            let Ok(name) = dom.name() else { continue };
            let listing = dom.is_active().and_then(|running| dom.xml_desc(0).map(|text| (running, text)));
            let (running, text) = match listing {
                Ok(listing) => listing,
                // Undefined between the listing and now.
                Err(error) if error.code().is(ErrorNumber::NoDomain) => continue,
                Err(error) => return Err(self.call_failed(connection, format!("read domain {name}"), &error)),
            };
            let nics = xml::parse_nics(&text)
                .map_err(|detail| DriverError::Netlink { operation: format!("read the XML of domain {name}"), detail })?
                .iter()
                .map(|nic| DomainNic {
                    mac: nic.mac.clone(),
                    bridge: self.nic_bridge(connection, nic),
                    model: nic.model.clone(),
                })
                .collect();
            infos.push(DomainInfo { name, running, nics });
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }
}

/// A MAC as given by the caller and normalised.
#[derive(Debug)]
struct Mac {
    given: String,
    normalized: String,
}

impl Mac {
    fn parse(domain: &str, mac: &str) -> Result<Mac, DriverError> {
        match xml::normalize_mac(mac) {
            Some(normalized) => Ok(Mac { given: mac.to_string(), normalized }),
            None => Err(DriverError::NicNotFound { domain: domain.to_string(), mac: mac.to_string() }),
        }
    }
}

/// Where the NIC is defined: live (running domains) and persistent (persistent domains).
#[derive(Debug)]
struct NicState {
    running: bool,
    live: Option<Nic>,
    config: Option<Nic>,
}

fn affects(flags: u32) -> &'static str {
    let live = flags & sys::VIR_DOMAIN_AFFECT_LIVE != 0;
    let config = flags & sys::VIR_DOMAIN_AFFECT_CONFIG != 0;
    match (live, config) {
        (true, true) => "live and persistent",
        (true, false) => "live",
        (false, true) => "persistent",
        (false, false) => "current",
    }
}

/// `vnet0`, or `vm1/52:54:00:00:00:11` when there is no tap.
fn port_label(domain: &str, mac: &Mac, observation: &PortObservation) -> String {
    if observation.port.is_empty() { format!("{domain}/{}", mac.normalized) } else { observation.port.clone() }
}

/// `qemu+ssh://root@kvm-1/system` is remote; `qemu:///system` and
/// `qemu:///system?socket=/run/x/libvirt-sock` are not.
fn is_remote_uri(uri: &str) -> bool {
    let Some((_, rest)) = uri.split_once("://") else { return false };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(address, _)| address.trim_start_matches('['))
    } else {
        host.split(':').next().unwrap_or("")
    };
    !host.is_empty()
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && !name.contains(['/', '\0', '\'', '"', '<', '>', '&'])
        && !name.chars().any(char::is_whitespace)
}

fn netlink_error(operation: String, error: &NlError) -> DriverError {
    DriverError::Netlink { operation, detail: error.detail() }
}

/// Reads a tap: its master's name, its `isolated` flag, `IFF_UP`.
fn observe_tap(
    netlink: &mut Netlink,
    netns: &str,
    domain: &str,
    tap: &str,
) -> Result<(PortObservation, Link), DriverError> {
    let not_here = || DriverError::Namespace {
        netns: netns.to_string(),
        detail: format!(
            "the tap {tap} of domain {domain} is not in this network namespace: the driver must look into the \
             namespace libvirtd runs in (netns)"
        ),
    };
    if !valid_ifname(tap) {
        return Err(not_here());
    }
    let link = netlink.link_by_name(tap).map_err(|error| match error.errno() {
        Some(libc::ENODEV) => not_here(),
        _ => netlink_error(format!("read tap {tap} of domain {domain}"), &error),
    })?;
    let bridge = match link.master {
        None => None,
        Some(index) => Some(
            netlink
                .link_by_index(index)
                .map_err(|error| netlink_error(format!("read the master (ifindex {index}) of tap {tap}"), &error))?
                .name,
        ),
    };
    let observation = PortObservation {
        port: tap.to_string(),
        bridge,
        vlan: None,
        isolated: link.is_bridge_port && link.isolated.unwrap_or(false),
        up: link.up,
    };
    Ok((observation, link))
}

fn lookup_bridge(netlink: &mut Netlink, bridge: &str) -> Result<Link, DriverError> {
    let not_found = || DriverError::BridgeNotFound { bridge: bridge.to_string() };
    if !valid_ifname(bridge) {
        return Err(not_found());
    }
    let link = netlink.link_by_name(bridge).map_err(|error| match error.errno() {
        Some(libc::ENODEV) => not_found(),
        _ => netlink_error(format!("read bridge {bridge}"), &error),
    })?;
    if link.is_bridge { Ok(link) } else { Err(not_found()) }
}

/// Makes the tap a port of `bridge` (up) with the `isolated` flag, like the linux-bridge
/// driver does for a switch port.
fn fix_tap(
    netlink: &mut Netlink,
    netns: &str,
    domain: &str,
    tap: &str,
    bridge: &str,
    isolated: bool,
) -> Result<(), DriverError> {
    let (observation, link) = observe_tap(netlink, netns, domain, tap)?;
    let target = lookup_bridge(netlink, bridge)?;
    let mut current_isolated = observation.isolated;
    if link.master != Some(target.index) {
        netlink
            .set_master_and_up(link.index, target.index)
            .map_err(|error| netlink_error(format!("attach tap {tap} to bridge {bridge}"), &error))?;
        current_isolated = false;
    }
    if current_isolated != isolated {
        netlink.set_bridge_port_isolated(link.index, isolated).map_err(|error| {
            netlink_error(format!("set isolated {} on tap {tap}", if isolated { "on" } else { "off" }), &error)
        })?;
    }
    Ok(())
}

impl HypervisorDriver for LibvirtHypervisor {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn hypervisor_name(&self) -> &str {
        &self.shared.name
    }

    fn observe_nic(&self, domain: &str, mac: &str) -> Result<PortObservation, DriverError> {
        let started = Instant::now();
        let mac = Mac::parse(domain, mac)?;
        let shared = &self.shared;
        let observation = shared.with_connection(|connection| {
            let (_, state) = shared.read_nic(connection, domain, &mac)?;
            shared.observe_state(connection, domain, &state)
        })?;
        debug!(
            hypervisor = %shared.name,
            domain,
            mac = %mac.normalized,
            port = %observation.port,
            bridge = observation.bridge.as_deref().unwrap_or("-"),
            isolated = observation.isolated,
            up = observation.up,
            elapsed_us = started.elapsed().as_micros() as u64,
            "libvirt: observed NIC"
        );
        Ok(observation)
    }

    fn ensure_nic(&self, domain: &str, mac: &str, bridge: &str, isolated: bool) -> Result<EnsureOutcome, DriverError> {
        let started = Instant::now();
        let mac = Mac::parse(domain, mac)?;
        if !valid_ifname(bridge) {
            return Err(DriverError::BridgeNotFound { bridge: bridge.to_string() });
        }
        let shared = &self.shared;
        let _serialised = lock(&shared.changes);
        let outcome = shared.with_connection(|connection| shared.ensure(connection, domain, &mac, bridge, isolated))?;
        debug!(
            hypervisor = %shared.name,
            domain,
            mac = %mac.normalized,
            port = %outcome.after.port,
            from_bridge = outcome.before.bridge.as_deref().unwrap_or("-"),
            to_bridge = bridge,
            isolated,
            moved = outcome.moved,
            isolation_changed = outcome.isolation_changed,
            elapsed_us = started.elapsed().as_micros() as u64,
            "libvirt: ensured NIC"
        );
        Ok(outcome)
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>, DriverError> {
        let started = Instant::now();
        let shared = &self.shared;
        let domains = shared.with_connection(|connection| shared.list(connection))?;
        debug!(
            hypervisor = %shared.name,
            domains = domains.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "libvirt: listed domains"
        );
        Ok(domains)
    }
}

/// Reboots one domain of a [`LibvirtHypervisor`] (see [`LibvirtHypervisor::power`]) and
/// confirms it with libvirt's domain events.
#[derive(Debug, Clone)]
pub struct LibvirtPower {
    shared: Arc<Shared>,
    domain: String,
}

impl LibvirtPower {
    /// The domain this driver reboots.
    pub fn domain(&self) -> &str {
        &self.domain
    }
}

/// How waiting for a confirmation ended.
enum Wait {
    Confirmed,
    TimedOut,
}

impl LibvirtPower {
    /// Waits until `until` for an event that proves the domain restarted: a REBOOT event, or a
    /// lifecycle STARTED event. A domain that stops meanwhile is started again. Every event is
    /// written to `observed`, with the time since `since`.
    fn wait_for_restart(
        &self,
        connection: &Connect,
        dom: &Domain,
        subscription: &Subscription,
        since: Instant,
        until: Instant,
        observed: &mut Vec<String>,
    ) -> Result<Wait, DriverError> {
        loop {
            match subscription.next(until, WAIT_SLICE) {
                Some((at, event)) => {
                    let after_ms = at.saturating_duration_since(since).as_millis();
                    observed.push(format!("{} after {after_ms} ms", event.describe()));
                    debug!(hypervisor = %self.shared.name, domain = %self.domain, event = %event.describe(), after_ms = after_ms as u64, "libvirt: domain event");
                    if event == DomainEvent::Reboot || event.is_lifecycle(sys::VIR_DOMAIN_EVENT_STARTED) {
                        return Ok(Wait::Confirmed);
                    }
                    if event.is_lifecycle(sys::VIR_DOMAIN_EVENT_STOPPED) {
                        // Shut down instead of restarting (e.g. <on_reboot>destroy</on_reboot>):
                        // start it; its STARTED event confirms.
                        dom.create().map_err(|error| {
                            self.shared.call_failed(connection, format!("start domain {}", self.domain), &error)
                        })?;
                        observed.push("domain stopped; started it again".to_string());
                    }
                }
                None => {
                    if Instant::now() >= until {
                        return Ok(Wait::TimedOut);
                    }
                    if !connection.is_alive().unwrap_or(false) {
                        self.shared.forget(connection);
                        return Err(DriverError::HypervisorUnreachable {
                            detail: format!(
                                "libvirt at {}: connection lost while waiting for the restart of {}; observed: {}",
                                self.shared.uri,
                                self.target(),
                                observed.join("; ")
                            ),
                        });
                    }
                }
            }
        }
    }

    fn power_on(
        &self,
        connection: &Connect,
        dom: &Domain,
        subscription: &Subscription,
        deadline_at: Instant,
        deadline: Duration,
    ) -> Result<RebootOutcome, DriverError> {
        let mut observed = vec!["domain was shut off; starting it".to_string()];
        let since = Instant::now();
        dom.create()
            .map_err(|error| self.shared.call_failed(connection, format!("start domain {}", self.domain), &error))?;
        observed.push(format!("domain started (create returned after {} ms)", since.elapsed().as_millis()));
        loop {
            match self.wait_for_restart(
                connection,
                dom,
                subscription,
                since,
                deadline_at.min(Instant::now() + WAIT_SLICE),
                &mut observed,
            )? {
                Wait::Confirmed => break,
                Wait::TimedOut => {
                    // No event (yet): the state is proof enough.
                    if dom.is_active().unwrap_or(false) {
                        observed.push(format!("state: running after {} ms", since.elapsed().as_millis()));
                        break;
                    }
                    if Instant::now() >= deadline_at {
                        return Err(DriverError::NotConfirmed {
                            detail: format!(
                                "{}: power-on not confirmed within {} s; observed: {}",
                                self.target(),
                                deadline.as_secs_f32(),
                                observed.join("; ")
                            ),
                        });
                    }
                }
            }
        }
        Ok(RebootOutcome { method: "power_on".to_string(), powered_on: true, observed })
    }
}

impl PowerDriver for LibvirtPower {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn target(&self) -> String {
        format!("{}/{}", self.shared.name, self.domain)
    }

    fn reboot(&self, graceful_timeout: Duration, deadline: Duration) -> Result<RebootOutcome, DriverError> {
        let started = Instant::now();
        let deadline_at = started + deadline;
        let shared = &self.shared;
        let (connection, dom) = shared.with_connection(|connection| {
            let dom = shared.lookup(connection, &self.domain)?;
            Ok((connection.clone(), dom))
        })?;
        // Subscribe before acting, so no event can be missed.
        let subscription = Subscription::new(&connection, &dom).map_err(|error| {
            shared.call_failed(&connection, format!("subscribe to the events of domain {}", self.domain), &error)
        })?;
        let running = dom.is_active().map_err(|error| {
            shared.call_failed(&connection, format!("read the state of domain {}", self.domain), &error)
        })?;
        if !running {
            let outcome = self.power_on(&connection, &dom, &subscription, deadline_at, deadline)?;
            debug!(hypervisor = %shared.name, domain = %self.domain, method = %outcome.method, elapsed_ms = started.elapsed().as_millis() as u64, "libvirt: domain powered on");
            return Ok(outcome);
        }

        let mut observed = Vec::new();
        let graceful_at = Instant::now();
        let graceful_until = (started + graceful_timeout).min(deadline_at);
        let asked = match dom.reboot(sys::VIR_DOMAIN_REBOOT_DEFAULT) {
            Ok(()) => {
                observed.push("graceful reboot requested".to_string());
                true
            }
            Err(error) => {
                if !connection.is_alive().unwrap_or(false) {
                    return Err(shared.call_failed(&connection, format!("reboot domain {}", self.domain), &error));
                }
                observed.push(format!("graceful reboot refused: {}", error.message()));
                false
            }
        };
        if asked {
            match self.wait_for_restart(&connection, &dom, &subscription, graceful_at, graceful_until, &mut observed)? {
                Wait::Confirmed => {
                    debug!(hypervisor = %shared.name, domain = %self.domain, method = "graceful", elapsed_ms = started.elapsed().as_millis() as u64, "libvirt: reboot confirmed");
                    return Ok(RebootOutcome { method: "graceful".to_string(), powered_on: false, observed });
                }
                Wait::TimedOut => {
                    observed.push(format!("no reboot event within {} s", graceful_timeout.as_secs_f32()));
                }
            }
        }

        let reset_at = Instant::now();
        dom.reset()
            .map_err(|error| shared.call_failed(&connection, format!("reset domain {}", self.domain), &error))?;
        observed.push("reset sent".to_string());
        match self.wait_for_restart(&connection, &dom, &subscription, reset_at, deadline_at, &mut observed)? {
            Wait::Confirmed => {
                debug!(hypervisor = %shared.name, domain = %self.domain, method = "forced", elapsed_ms = started.elapsed().as_millis() as u64, "libvirt: reboot confirmed");
                Ok(RebootOutcome { method: "forced".to_string(), powered_on: false, observed })
            }
            Wait::TimedOut => Err(DriverError::NotConfirmed {
                detail: format!(
                    "{}: reboot not confirmed within {} s; observed: {}",
                    self.target(),
                    deadline.as_secs_f32(),
                    observed.join("; ")
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_does_not_touch_the_system() {
        let driver = LibvirtHypervisor::new("kvm-1", "qemu:///system?socket=/nonexistent/libvirt-sock")
            .with_netns(Some("cordon-no-such-netns".to_string()));
        assert_eq!(driver.kind(), "libvirt");
        assert_eq!(driver.hypervisor_name(), "kvm-1");
        assert_eq!(driver.netns(), Some("cordon-no-such-netns"));
        let power = driver.power("vm-1");
        assert_eq!(power.kind(), "libvirt");
        assert_eq!(power.target(), "kvm-1/vm-1");
        assert_eq!(power.domain(), "vm-1");
    }

    #[test]
    fn unreachable_libvirtd() {
        let uri = "qemu:///system?socket=/nonexistent/libvirt-sock";
        let driver = LibvirtHypervisor::new("kvm-1", uri);
        for error in [
            driver.observe_nic("vm-1", "52:54:00:00:00:01").err(),
            driver.list_domains().err(),
            driver.ensure_nic("vm-1", "52:54:00:00:00:01", "br-q", true).err(),
            driver.power("vm-1").reboot(Duration::from_millis(10), Duration::from_millis(20)).err(),
        ] {
            match &error {
                Some(error @ DriverError::HypervisorUnreachable { detail }) => {
                    assert!(detail.contains(uri), "{detail}");
                    assert_eq!(error.message_number(), 60014);
                }
                other => panic!("expected HypervisorUnreachable, got {other:?}"),
            }
        }
    }

    #[test]
    fn arguments_are_checked_before_connecting() {
        let driver = LibvirtHypervisor::new("kvm-1", "qemu:///system?socket=/nonexistent/libvirt-sock");
        assert_eq!(
            driver.observe_nic("vm-1", "not-a-mac").err(),
            Some(DriverError::NicNotFound { domain: "vm-1".into(), mac: "not-a-mac".into() })
        );
        assert_eq!(
            driver.ensure_nic("vm-1", "52:54:00:00:00:01", "br-'x", false).err(),
            Some(DriverError::BridgeNotFound { bridge: "br-'x".into() })
        );
        assert_eq!(
            driver.ensure_nic("vm-1", "52:54:00:00:00:01", "br-quarantine-too-long", false).err(),
            Some(DriverError::BridgeNotFound { bridge: "br-quarantine-too-long".into() })
        );
    }

    #[test]
    fn remote_uris() {
        assert!(!is_remote_uri("qemu:///system"));
        assert!(!is_remote_uri("qemu:///system?socket=/tmp/x/libvirt-sock"));
        assert!(!is_remote_uri("test:///default"));
        assert!(is_remote_uri("qemu+ssh://root@kvm-1/system"));
        assert!(is_remote_uri("qemu+tcp://kvm-1:16509/system"));
        assert!(is_remote_uri("qemu+ssh://[fd00::5]/system"));
        assert!(!is_remote_uri("not a uri"));
        let remote = LibvirtHypervisor::new("kvm-1", "qemu+ssh://root@kvm-1/system");
        assert!(!remote.shared.kernel_view);
        assert!(remote.with_netns(Some("sw".into())).shared.kernel_view);
        assert!(LibvirtHypervisor::new("kvm-1", "qemu:///system").shared.kernel_view);
    }

    #[test]
    fn flag_texts() {
        assert_eq!(affects(sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG), "live and persistent");
        assert_eq!(affects(sys::VIR_DOMAIN_AFFECT_CONFIG), "persistent");
        assert_eq!(affects(sys::VIR_DOMAIN_AFFECT_LIVE), "live");
    }
}
