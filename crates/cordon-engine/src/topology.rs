use std::collections::HashMap;
use std::sync::Arc;

use cordon_drivers::SwitchDriver;
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
    /// For an operational network: the quarantine network its servers go to.
    pub quarantine_network: Option<String>,
    /// For a quarantine network: the addresses handed to quarantined servers.
    pub pool: Option<AddressPool>,
}

/// The networks and the switch drivers, built from the configuration at start.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub networks: HashMap<String, NetworkPlan>,
    pub switches: HashMap<String, Arc<dyn SwitchDriver>>,
}

/// Everything needed to move one NIC.
#[derive(Debug, Clone)]
pub(crate) struct NicPlan {
    pub nic: NicRecord,
    pub switch: Arc<dyn SwitchDriver>,
    pub port: String,
    pub operational: NetworkPlan,
    pub operational_bridge: String,
    pub quarantine: NetworkPlan,
    pub quarantine_bridge: String,
}

impl Topology {
    /// Refuses, before an action is created, a server that Cordon could not move.
    pub fn check_movable(&self, server: &ServerRecord) -> Result<(), EngineError> {
        self.plan(server).map(|_| ())
    }

    /// A plan for every NIC of the server; a server without a single movable NIC, or with a
    /// NIC whose network or switch is unknown, is refused as a whole.
    pub(crate) fn plan(&self, server: &ServerRecord) -> Result<Vec<NicPlan>, EngineError> {
        let refuse =
            || EngineError::new(ErrorKind::Unprocessable, &messages::NO_MOVABLE_NIC, &[("server", &server.name)]);
        if server.nics.is_empty() {
            return Err(refuse());
        }
        let mut plans = Vec::new();
        for nic in &server.nics {
            let (Some(switch_name), Some(port)) = (&nic.switch, &nic.port) else {
                return Err(refuse());
            };
            let switch = self.switches.get(switch_name).ok_or_else(refuse)?;
            let operational = self.networks.get(&nic.network).ok_or_else(refuse)?;
            let quarantine =
                operational.quarantine_network.as_ref().and_then(|name| self.networks.get(name)).ok_or_else(refuse)?;
            let (Some(operational_bridge), Some(quarantine_bridge)) = (&operational.bridge, &quarantine.bridge) else {
                return Err(refuse());
            };
            plans.push(NicPlan {
                nic: nic.clone(),
                switch: switch.clone(),
                port: port.clone(),
                operational: operational.clone(),
                operational_bridge: operational_bridge.clone(),
                quarantine: quarantine.clone(),
                quarantine_bridge: quarantine_bridge.clone(),
            });
        }
        Ok(plans)
    }
}
