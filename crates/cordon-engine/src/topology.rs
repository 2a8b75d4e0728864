use std::collections::HashMap;
use std::sync::Arc;

use cordon_drivers::{DriverError, EnsureOutcome, HypervisorDriver, PowerDriver, Segment, SegmentKind, SwitchDriver};
use cordon_model::ServerKind;
use cordon_model::{AddressPool, NetworkRole, messages};
use cordon_store::{NicRecord, ServerRecord};

use crate::{EngineError, ErrorKind};

/// What the engine needs to know about one network.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    pub name: String,
    pub role: NetworkRole,
    /// The Linux bridge that carries the network on linux-bridge switches.
    pub bridge: Option<String>,
    /// The 802.1Q VLAN that carries the network on ovs switches.
    pub vlan: Option<u16>,
    /// For an operational network: the quarantine network its servers go to.
    pub quarantine_network: Option<String>,
    /// For a quarantine network: the addresses handed to quarantined servers.
    pub pool: Option<AddressPool>,
}

/// Makes the power driver of one domain of a hypervisor.
pub type DomainPower = Arc<dyn Fn(&str) -> Arc<dyn PowerDriver> + Send + Sync>;

/// The networks and the drivers, built from the configuration at start.
#[derive(Clone, Default)]
pub struct Topology {
    pub networks: HashMap<String, NetworkPlan>,
    pub switches: HashMap<String, Arc<dyn SwitchDriver>>,
    pub hypervisors: HashMap<String, Arc<dyn HypervisorDriver>>,
    /// Per hypervisor: the power driver of a domain (VM reboot).
    pub domain_power: HashMap<String, DomainPower>,
    /// Per physical server name: its BMC.
    pub bmcs: HashMap<String, Arc<dyn PowerDriver>>,
    /// How long a graceful reboot may take before it is forced.
    pub graceful_timeout: std::time::Duration,
    /// How long a reboot may take in all before it counts as not confirmed.
    pub reboot_deadline: std::time::Duration,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("networks", &self.networks.keys().collect::<Vec<_>>())
            .field("switches", &self.switches.keys().collect::<Vec<_>>())
            .field("hypervisors", &self.hypervisors.keys().collect::<Vec<_>>())
            .field("bmcs", &self.bmcs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where a NIC plugs in: a port of a switch, or a VM's virtual NIC on a hypervisor.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    Port { driver: Arc<dyn SwitchDriver>, port: String },
    VmNic { driver: Arc<dyn HypervisorDriver>, domain: String, mac: String },
}

impl Link {
    /// Blocking: the driver call that puts the NIC on `segment` and reads it back.
    pub fn ensure(&self, segment: &Segment, isolated: bool) -> Result<EnsureOutcome, DriverError> {
        match (self, segment) {
            (Link::Port { driver, port }, segment) => driver.ensure_port(port, segment, isolated),
            (Link::VmNic { driver, domain, mac }, Segment::Bridge(bridge)) => {
                driver.ensure_nic(domain, mac, bridge, isolated)
            }
            (Link::VmNic { driver, .. }, Segment::Vlan(_)) => {
                Err(DriverError::WrongSegment { driver: driver.kind().to_string(), segment: segment.to_string() })
            }
        }
    }

    /// Blocking: where the NIC is now, as the switch or hypervisor reports it.
    pub fn observe(&self) -> Result<cordon_drivers::PortObservation, DriverError> {
        match self {
            Link::Port { driver, port } => driver.observe_port(port),
            Link::VmNic { driver, domain, mac } => driver.observe_nic(domain, mac),
        }
    }

    /// `tor-1/p-sbc-01` or `kvm-1/vpc-001/52:54:00:00:00:11`.
    pub fn target(&self) -> String {
        match self {
            Link::Port { driver, port } => format!("{}/{port}", driver.switch_name()),
            Link::VmNic { driver, domain, mac } => format!("{}/{domain}/{mac}", driver.hypervisor_name()),
        }
    }

    /// The port or NIC, for messages.
    pub fn name(&self) -> String {
        match self {
            Link::Port { port, .. } => port.clone(),
            Link::VmNic { domain, mac, .. } => format!("{domain} NIC {mac}"),
        }
    }

    pub fn driver_kind(&self) -> &'static str {
        match self {
            Link::Port { driver, .. } => driver.kind(),
            Link::VmNic { driver, .. } => driver.kind(),
        }
    }

    /// The switch or hypervisor name.
    pub fn owner(&self) -> String {
        match self {
            Link::Port { driver, .. } => driver.switch_name().to_string(),
            Link::VmNic { driver, .. } => driver.hypervisor_name().to_string(),
        }
    }
}

/// Everything needed to move one NIC.
#[derive(Debug, Clone)]
pub(crate) struct NicPlan {
    pub nic: NicRecord,
    pub link: Link,
    pub operational: NetworkPlan,
    /// Where the operational network is on the NIC's switch or hypervisor (bridge or VLAN).
    pub operational_segment: Segment,
    pub quarantine: NetworkPlan,
    pub quarantine_segment: Segment,
}

impl Topology {
    /// What reboots the server: its hypervisor for a VM, its BMC for a physical server.
    pub fn power(&self, server: &ServerRecord) -> Option<Arc<dyn PowerDriver>> {
        match server.kind {
            ServerKind::Virtual => {
                let (hypervisor, domain) = (server.hypervisor.as_ref()?, server.domain.as_ref()?);
                self.domain_power.get(hypervisor).map(|make| make(domain))
            }
            ServerKind::Physical => self.bmcs.get(&server.name).cloned(),
        }
    }

    /// Refuses, before an action is created, a server that Cordon could not move.
    pub fn check_movable(&self, server: &ServerRecord) -> Result<(), EngineError> {
        self.plan(server).map(|_| ())
    }

    /// A plan for every NIC of the server; a server without a single movable NIC, or with a
    /// NIC whose network or switch is unknown, is refused as a whole.
    /// The plan of every NIC, or `None` when the server cannot be moved by Cordon at all.
    pub(crate) fn plan_quietly(&self, server: &ServerRecord) -> Option<Vec<NicPlan>> {
        self.plan(server).ok()
    }

    pub(crate) fn plan(&self, server: &ServerRecord) -> Result<Vec<NicPlan>, EngineError> {
        let refuse =
            || EngineError::new(ErrorKind::Unprocessable, &messages::NO_MOVABLE_NIC, &[("server", &server.name)]);
        if server.nics.is_empty() {
            return Err(refuse());
        }
        let mut plans = Vec::new();
        for nic in &server.nics {
            let link = match server.kind {
                ServerKind::Physical => {
                    let (Some(switch_name), Some(port)) = (&nic.switch, &nic.port) else {
                        return Err(refuse());
                    };
                    let driver = self.switches.get(switch_name).ok_or_else(refuse)?;
                    Link::Port { driver: driver.clone(), port: port.clone() }
                }
                ServerKind::Virtual => {
                    let (Some(hypervisor), Some(domain)) = (&server.hypervisor, &server.domain) else {
                        return Err(refuse());
                    };
                    let driver = self.hypervisors.get(hypervisor).ok_or_else(refuse)?;
                    Link::VmNic { driver: driver.clone(), domain: domain.clone(), mac: nic.mac.to_string() }
                }
            };
            let operational = self.networks.get(&nic.network).ok_or_else(refuse)?;
            let quarantine =
                operational.quarantine_network.as_ref().and_then(|name| self.networks.get(name)).ok_or_else(refuse)?;
            let kind = match &link {
                Link::Port { driver, .. } => driver.segment_kind(),
                Link::VmNic { .. } => SegmentKind::Bridge,
            };
            let segment = |network: &NetworkPlan| match kind {
                SegmentKind::Bridge => network.bridge.clone().map(Segment::Bridge),
                SegmentKind::Vlan => network.vlan.map(Segment::Vlan),
            };
            let (Some(operational_segment), Some(quarantine_segment)) = (segment(operational), segment(quarantine))
            else {
                return Err(refuse());
            };
            plans.push(NicPlan {
                nic: nic.clone(),
                link,
                operational: operational.clone(),
                operational_segment,
                quarantine: quarantine.clone(),
                quarantine_segment,
            });
        }
        Ok(plans)
    }
}
