//! `cordon servers import --from-libvirt`: the hypervisor's domains as servers, because nobody
//! types 2,500 VMs into TOML.

use cordon_model::{NetworkRole, ServerKind, messages};
use cordon_store::{NicSpec, ServerSpec};

use crate::{Actor, Engine, EngineError, ErrorKind};

/// One domain and what the import makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedServer {
    pub name: String,
    pub running: bool,
    pub nics: Vec<ImportedNic>,
    /// `new` (added, or would be added on a dry run), `exists`, or `skipped: <why>`.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedNic {
    pub mac: String,
    pub bridge: Option<String>,
    /// The operational network whose bridge the NIC is on.
    pub network: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub hypervisor: String,
    pub applied: bool,
    pub servers: Vec<ImportedServer>,
}

impl Engine {
    /// Lists the hypervisor's domains as servers; with `apply`, adds the new ones to the store.
    pub async fn import_from_hypervisor(
        &self,
        hypervisor: &str,
        apply: bool,
        actor: &Actor,
    ) -> Result<ImportReport, EngineError> {
        let topology = &self.inner.topology;
        let driver = topology.hypervisors.get(hypervisor).cloned().ok_or_else(|| {
            EngineError::new(ErrorKind::NotFound, &messages::HYPERVISOR_NOT_FOUND, &[("name", &hypervisor)])
        })?;
        let listing = tokio::task::spawn_blocking(move || driver.list_domains())
            .await
            .map_err(|e| EngineError::new(ErrorKind::Internal, &messages::INTERNAL_ERROR, &[("detail", &e)]))?;
        let domains = listing.map_err(|error| {
            let message = cordon_model::Message::find(error.message_number()).unwrap_or(&messages::DRIVER_FAILURE);
            EngineError::new(
                ErrorKind::Unprocessable,
                message,
                &[("target", &hypervisor), ("detail", &error), ("driver", &"libvirt"), ("switch", &hypervisor)],
            )
        })?;
        let known = self.inner.store.list_servers().await?;
        let mut report = ImportReport { hypervisor: hypervisor.to_string(), applied: apply, servers: Vec::new() };
        let mut specs = Vec::new();
        for domain in domains {
            let nics: Vec<ImportedNic> = domain
                .nics
                .iter()
                .map(|nic| ImportedNic {
                    mac: nic.mac.clone(),
                    bridge: nic.bridge.clone(),
                    network: topology
                        .networks
                        .values()
                        .find(|n| n.role == NetworkRole::Operational && n.bridge.is_some() && n.bridge == nic.bridge)
                        .map(|n| n.name.clone()),
                })
                .collect();
            let exists = known.iter().any(|s| {
                s.name == domain.name
                    || (s.hypervisor.as_deref() == Some(hypervisor)
                        && s.domain.as_deref() == Some(domain.name.as_str()))
            });
            let unmapped = nics.iter().find(|n| n.network.is_none());
            let parsed: Result<Vec<NicSpec>, String> = nics
                .iter()
                .map(|n| {
                    let mac = n.mac.parse().map_err(|e: cordon_model::ParseError| e.to_string())?;
                    Ok(NicSpec {
                        mac,
                        network: n.network.clone().unwrap_or_default(),
                        ip: None,
                        switch: None,
                        port: None,
                    })
                })
                .collect();
            let outcome = if exists {
                "exists".to_string()
            } else if nics.is_empty() {
                "skipped: the domain has no NIC".to_string()
            } else if let Some(nic) = unmapped {
                format!(
                    "skipped: NIC {} is on bridge {}, which is no operational network's bridge",
                    nic.mac,
                    nic.bridge.as_deref().unwrap_or("(none)")
                )
            } else {
                match parsed {
                    Ok(nic_specs) => {
                        specs.push(ServerSpec {
                            name: domain.name.clone(),
                            kind: ServerKind::Virtual,
                            tenant: None,
                            user_email: None,
                            nics: nic_specs,
                            hypervisor: Some(hypervisor.to_string()),
                            domain: Some(domain.name.clone()),
                        });
                        "new".to_string()
                    }
                    Err(detail) => format!("skipped: {detail}"),
                }
            };
            report.servers.push(ImportedServer { name: domain.name, running: domain.running, nics, outcome });
        }
        if apply {
            let added = self.inner.store.import_servers(&specs, &format!("import:{hypervisor}")).await?;
            // The imported servers' operational addresses, into the resolve path's index.
            self.load_address_index().await?;
            let count = |prefix: &str| report.servers.iter().filter(|s| s.outcome.starts_with(prefix)).count();
            let text = messages::SERVERS_IMPORTED.render(&[
                ("hypervisor", &hypervisor),
                ("added", &added.added.len()),
                ("existing", &count("exists")),
                ("skipped", &count("skipped")),
            ]);
            self.record_note(messages::SERVERS_IMPORTED.number, text.clone()).await;
            self.audit(actor, "import", &format!("hypervisor {hypervisor}"), &text).await?;
        }
        Ok(report)
    }
}
