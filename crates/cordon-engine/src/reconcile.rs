//! The reconciler: compares where Cordon recorded each NIC with what the drivers observe, and
//! reports (or, with `enforce`, undoes) the differences.

use cordon_model::{ActionKind, ActionState, ServerState, messages};
use cordon_store::NewAction;

use crate::{Engine, EngineError, EngineEvent};

/// What to do about drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDrift {
    /// Raise a numbered message, a metric and a notification; change nothing.
    #[default]
    Report,
    /// Also re-apply the recorded state through an action (trigger `reconciler`).
    Enforce,
}

/// One difference between the records and the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub server: String,
    /// The switch port or VM NIC.
    pub target: String,
    /// Where Cordon recorded it: network, bridge, isolation.
    pub recorded: String,
    /// What the driver reports.
    pub observed: String,
    /// The action created to undo it (`enforce`).
    pub action: Option<i64>,
}

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// NICs compared.
    pub checked: usize,
    pub drifts: Vec<Drift>,
    /// NICs the drivers could not observe (with the reason); not counted as drift.
    pub unobserved: Vec<String>,
}

impl Engine {
    /// One pass over every server that has no action in flight.
    pub async fn reconcile(&self, on_drift: OnDrift) -> Result<ReconcileReport, EngineError> {
        let store = &self.inner.store;
        let mut report = ReconcileReport::default();
        for server in store.list_servers().await? {
            if server.retired || !store.open_actions(server.id).await?.is_empty() {
                continue;
            }
            let Some(plans) = self.inner.topology.plan_quietly(&server) else { continue };
            let mut drifted = false;
            for plan in &plans {
                let recorded_network = plan.nic.current_network.clone();
                let (bridge, isolated) = if recorded_network == plan.quarantine.name {
                    (plan.quarantine_bridge.clone(), true)
                } else {
                    (plan.operational_bridge.clone(), false)
                };
                let link = plan.link.clone();
                let observed = tokio::task::spawn_blocking(move || link.observe()).await;
                report.checked += 1;
                let observed = match observed {
                    Ok(Ok(observed)) => observed,
                    Ok(Err(error)) => {
                        report.unobserved.push(format!("{}: {error}", plan.link.target()));
                        continue;
                    }
                    Err(join) => {
                        report.unobserved.push(format!("{}: {join}", plan.link.target()));
                        continue;
                    }
                };
                if observed.bridge.as_deref() == Some(bridge.as_str()) && observed.isolated == isolated {
                    continue;
                }
                drifted = true;
                let recorded = format!(
                    "{recorded_network} ({})",
                    cordon_drivers::PortObservation {
                        port: String::new(),
                        bridge: Some(bridge.clone()),
                        isolated,
                        up: true
                    }
                    .membership()
                );
                let text = messages::DRIFT_FOUND.render(&[
                    ("server", &server.name),
                    ("nic", &plan.link.name()),
                    ("recorded", &recorded),
                    ("driver", &plan.link.driver_kind()),
                    ("observed", &observed.membership()),
                ]);
                tracing::warn!(number = messages::DRIFT_FOUND.number, server = %server.name, "{text}");
                self.inner.metrics.drift_found();
                self.note(
                    &cordon_store::MessageRef { number: messages::DRIFT_FOUND.number, text: text.clone() },
                    Some(server.id),
                    None,
                )
                .await?;
                self.emit(EngineEvent::Drift { server: server.name.clone(), detail: text });
                report.drifts.push(Drift {
                    server: server.name.clone(),
                    target: plan.link.target(),
                    recorded,
                    observed: observed.membership(),
                    action: None,
                });
            }
            if drifted && on_drift == OnDrift::Enforce {
                let kind = match server.state {
                    ServerState::Quarantined => Some(ActionKind::Quarantine),
                    ServerState::Operational => Some(ActionKind::Unquarantine),
                    // A failed or partial server: the operator decides.
                    _ => None,
                };
                let Some(kind) = kind else { continue };
                let action = store
                    .create_action(&NewAction {
                        kind,
                        server_id: Some(server.id),
                        address: None,
                        state: ActionState::Pending,
                        reason: Some("the network drifted from Cordon's records".into()),
                        trigger: "reconciler".into(),
                        requested_by: "reconciler".into(),
                        instance: self.inner.settings.instance.clone(),
                        decided_by: Some("on_drift = enforce".into()),
                        message: None,
                    })
                    .await?;
                self.inner.metrics.action_created(kind);
                if let Some(last) = report.drifts.last_mut() {
                    last.action = Some(action.id);
                }
                self.inner.wake.notify_one();
            }
        }
        Ok(report)
    }

    /// Runs [`Engine::reconcile`] now and every `interval` until `shutdown`, on one instance
    /// at a time: the one holding the `reconciler` lease (renewed at each pass, it lasts two
    /// intervals and an action lease, so another instance takes over only after a holder died).
    pub async fn run_reconciler(
        &self,
        interval: std::time::Duration,
        on_drift: OnDrift,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let lease = interval * 2 + self.inner.settings.action_lease;
        loop {
            if !self.hold_lease("reconciler", lease).await {
                tracing::debug!("another instance holds the reconciler lease: no pass here");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                continue;
            }
            match self.reconcile(on_drift).await {
                Ok(report) if !report.drifts.is_empty() => {
                    tracing::info!(
                        checked = report.checked,
                        drifts = report.drifts.len(),
                        "reconciler pass found drift"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "reconciler pass failed"),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
