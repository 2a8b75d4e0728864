//! `cordon status`: the health of what the engine drives.

use crate::Engine;

/// One driver's health, from a harmless call (a switch's namespace and loopback, a
/// hypervisor's domain list). BMCs are listed but not called: a status must not touch them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverHealth {
    pub name: String,
    pub kind: String,
    /// `None`: not checked.
    pub healthy: Option<bool>,
    pub detail: String,
}

impl Engine {
    /// Checks every switch and hypervisor now (each on the blocking pool, with the driver
    /// timeout), and lists the BMCs.
    pub async fn driver_health(&self) -> Vec<DriverHealth> {
        let topology = &self.inner.topology;
        let timeout = self.inner.settings.driver_timeout;
        let mut health = Vec::new();
        let mut switches: Vec<_> = topology.switches.iter().collect();
        switches.sort_by(|a, b| a.0.cmp(b.0));
        for (name, driver) in switches {
            let driver = driver.clone();
            let kind = driver.kind().to_string();
            let call = tokio::task::spawn_blocking(move || driver.check_reachable());
            let (healthy, detail) = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(Ok(detail))) => (true, detail),
                Ok(Ok(Err(error))) => (false, error.to_string()),
                Ok(Err(join)) => (false, join.to_string()),
                Err(_) => (false, format!("no answer within {timeout:?}")),
            };
            health.push(DriverHealth { name: name.clone(), kind, healthy: Some(healthy), detail });
        }
        let mut hypervisors: Vec<_> = topology.hypervisors.iter().collect();
        hypervisors.sort_by(|a, b| a.0.cmp(b.0));
        for (name, driver) in hypervisors {
            let driver = driver.clone();
            let kind = driver.kind().to_string();
            let call = tokio::task::spawn_blocking(move || driver.list_domains());
            let (healthy, detail) = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(Ok(domains))) => (true, format!("reachable, {} domains", domains.len())),
                Ok(Ok(Err(error))) => (false, error.to_string()),
                Ok(Err(join)) => (false, join.to_string()),
                Err(_) => (false, format!("no answer within {timeout:?}")),
            };
            health.push(DriverHealth { name: name.clone(), kind, healthy: Some(healthy), detail });
        }
        let mut bmcs: Vec<_> = topology.bmcs.iter().collect();
        bmcs.sort_by(|a, b| a.0.cmp(b.0));
        for (server, driver) in bmcs {
            health.push(DriverHealth {
                name: format!("{server} BMC"),
                kind: driver.kind().to_string(),
                healthy: None,
                detail: format!("{} (not called by a status check)", driver.target()),
            });
        }
        health
    }
}
