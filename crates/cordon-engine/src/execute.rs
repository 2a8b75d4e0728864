//! Running one action as journaled, idempotent steps.

use std::fmt::Display;
use std::time::Instant;

use chrono::Utc;
use cordon_drivers::{DriverError, EnsureOutcome, Segment};
use cordon_model::{ActionCommand, ActionKind, Message, ServerState, messages};
use cordon_store::{ActionRecord, Alongside, MessageRef, NewStep, NicPosition, ServerRecord, StepOutcome, StoreError};

use crate::topology::NicPlan;
use crate::{Engine, EngineError};

/// Why a step failed: its numbered message, already rendered.
struct StepFailure {
    message: MessageRef,
}

/// When a lease taken or renewed now for `lease` ends, in Unix microseconds.
pub(crate) fn lease_until(lease: std::time::Duration) -> i64 {
    Utc::now().timestamp_micros() + lease.as_micros() as i64
}

impl Engine {
    /// Runs one runnable action to its end (succeeded or failed).
    pub(crate) async fn execute(&self, action: ActionRecord, server: Option<ServerRecord>) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let Some(server_id) = action.server_id else { return Ok(()) };
        let server = match server {
            Some(server) if server.id == server_id => server,
            _ => match store.server_by_id(server_id).await? {
                Some(server) => server,
                None => return Ok(()),
            },
        };
        let kind = action.kind;
        let started_message = match kind {
            ActionKind::Quarantine | ActionKind::QuarantineReboot => &messages::QUARANTINE_STARTED,
            ActionKind::Unquarantine => &messages::UNQUARANTINE_STARTED,
            ActionKind::Reboot | ActionKind::Notify => &messages::ACTION_STARTED,
        };
        let started = EngineError::message_ref(
            started_message,
            &[("server", &server.name), ("action", &action.id), ("kind", &kind)],
        );
        let instance = self.inner.settings.instance.clone();
        let lease = self.inner.settings.action_lease;
        // The start, its message, the server's transitional state and (quarantine) the NICs'
        // quarantine addresses: one commit. An empty pool is the address step's failure to
        // report: then the claim goes without the leases.
        let mut alongside = Alongside {
            server_state: transitional_state(kind).map(|state| (server.id, state)),
            messages: vec![self.message_row(&started, Some(server.id), Some(action.id))],
            leases: self.leases_for(&server, kind),
            ..Default::default()
        };
        let until = lease_until(lease);
        let claimed = loop {
            let claimed = store
                .claim_action_alongside(
                    action.id,
                    action.generation,
                    &instance,
                    until,
                    Some(started.clone()),
                    &alongside,
                )
                .await;
            if matches!(claimed, Err(StoreError::PoolExhausted { .. })) && !alongside.leases.is_empty() {
                alongside.leases.clear();
                continue;
            }
            break claimed;
        };
        let action = match claimed {
            Ok(action) => action,
            // Another worker or instance (or an operator's cancel) moved it first, or another
            // action of the server runs on another instance: nothing to do now.
            Err(StoreError::Conflict { .. } | StoreError::InvalidTransition { .. } | StoreError::ServerBusy { .. }) => {
                return Ok(());
            }
            Err(other) => return Err(other.into()),
        };
        // The lease is renewed while the action runs; if another instance took the action over
        // (this one stalled past the lease), this worker stops where it is.
        let (lost_sender, lost) = tokio::sync::oneshot::channel::<()>();
        let renewer = {
            let (store, id, instance) = (store.clone(), action.id, instance.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match store.renew_action_lease(id, &instance, lease_until(lease)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = lost_sender.send(());
                            return;
                        }
                        Err(error) => tracing::warn!(action = id, %error, "could not renew the action's lease"),
                    }
                }
            })
        };
        let id = action.id;
        let result = tokio::select! {
            result = self.execute_claimed(action, server, started) => result,
            Ok(()) = lost => {
                let message = EngineError::message_ref(
                    &messages::ACTION_LEASE_LOST,
                    &[("instance", &instance), ("action", &id)],
                );
                self.note(&message, Some(server_id), Some(id)).await
            }
        };
        renewer.abort();
        result
    }

    /// The rest of [`Engine::execute`], once this instance holds the action's lease.
    async fn execute_claimed(
        &self,
        action: ActionRecord,
        server: ServerRecord,
        started: MessageRef,
    ) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let kind = action.kind;
        self.announce(&started, Some(server.id), Some(action.id));
        tracing::debug!(action = action.id, server = %server.name, %kind, attempt = action.attempts, "action started");
        let clock = Instant::now();

        // The network part (quarantine or unquarantine), then the power part (reboot).
        // The state the network part leaves the server in (its transitional state was recorded
        // with the claim, see `transitional_state`).
        let reached = match kind {
            ActionKind::Quarantine | ActionKind::QuarantineReboot => Some(ServerState::Quarantined),
            ActionKind::Unquarantine => Some(ServerState::Operational),
            ActionKind::Reboot | ActionKind::Notify => None,
        };
        let mut outcome = Ok(String::new());
        // The state an action that only moves NICs reached, recorded with its end (one commit).
        let mut reached_at_end = None;
        if let Some(reached) = reached {
            let plan = self.refuse_infrastructure(&server, kind).and_then(|()| self.inner.topology.plan(&server));
            outcome = match plan {
                Ok(plans) => self.run_steps(&action, &server.name, &plans).await?,
                Err(refused) => {
                    Err(StepFailure { message: MessageRef { number: refused.number(), text: refused.text } })
                }
            };
            // Contained: every port moved and read back. Measured here, before the commits
            // that only record it.
            if outcome.is_ok() && kind.quarantines() {
                self.observe_time_to_contain(action.id).await;
            }
            let state = match (&outcome, kind) {
                (Ok(_), _) => reached,
                (Err(_), kind) => {
                    // Some NICs moved and some did not: say so, rather than "failed" for all.
                    let now = store.server_by_id(server.id).await?.unwrap_or_else(|| server.clone());
                    let operational = now.nics.iter().filter(|n| n.current_network == n.network).count();
                    if operational > 0 && operational < now.nics.len() {
                        ServerState::Partial
                    } else if kind == ActionKind::Unquarantine {
                        ServerState::UnquarantineFailed
                    } else {
                        ServerState::QuarantineFailed
                    }
                }
            };
            if outcome.is_ok() && !reboots(kind) {
                reached_at_end = Some((server.id, state));
            } else {
                store.set_server_state(server.id, state).await?;
            }
        }
        if outcome.is_ok() {
            outcome = match kind {
                ActionKind::Reboot | ActionKind::QuarantineReboot => self.reboot(&action, &server).await?,
                ActionKind::Notify => {
                    let message = EngineError::message_ref(
                        &messages::INTERNAL_ERROR,
                        &[(
                            "detail",
                            &"a notify action cannot run: approve it as quarantine, reboot or quarantine_reboot",
                        )],
                    );
                    Err(StepFailure { message })
                }
                ActionKind::Quarantine | ActionKind::Unquarantine => outcome,
            };
        }
        let elapsed = clock.elapsed();
        match outcome {
            Ok(summary) => {
                let message = match kind {
                    ActionKind::Unquarantine => &messages::UNQUARANTINE_SUCCEEDED,
                    ActionKind::Reboot | ActionKind::QuarantineReboot => &messages::REBOOT_CONFIRMED,
                    _ => &messages::QUARANTINE_SUCCEEDED,
                };
                let message = EngineError::message_ref(message, &[("server", &server.name), ("detail", &summary)]);
                let alongside = Alongside {
                    server_state: reached_at_end,
                    messages: vec![self.message_row(&message, Some(server.id), Some(action.id))],
                    ..Default::default()
                };
                store
                    .transition_action_alongside(
                        action.id,
                        action.generation,
                        ActionCommand::Succeed,
                        Some(message.clone()),
                        &alongside,
                    )
                    .await?;
                self.announce(&message, Some(server.id), Some(action.id));
                self.emit(crate::EngineEvent::Succeeded {
                    action: action.id,
                    kind,
                    server: server.name.clone(),
                    detail: summary.clone(),
                });
                self.inner.metrics.action_finished(kind, true, elapsed);
                tracing::debug!(action = action.id, elapsed_ms = elapsed.as_secs_f64() * 1e3, "action took");
            }
            Err(failure) if may_pass(failure.message.number) && action.attempts < self.inner.settings.max_attempts => {
                let delay = backoff(self.inner.settings.retry_base, action.attempts);
                let message = EngineError::message_ref(
                    &messages::ACTION_RETRYING,
                    &[
                        ("attempt", &action.attempts),
                        ("action", &action.id),
                        ("seconds", &format!("{:.1}", delay.as_secs_f64())),
                        ("detail", &format!("{} {}", failure.message.number, failure.message.text)),
                    ],
                );
                let due = Utc::now().timestamp_micros() + delay.as_micros() as i64;
                store.defer_action(action.id, action.generation, due, message.clone()).await?;
                self.note(&message, Some(server.id), Some(action.id)).await?;
            }
            Err(failure) => {
                store
                    .transition_action(action.id, action.generation, ActionCommand::Fail, Some(failure.message.clone()))
                    .await?;
                self.note(&failure.message, Some(server.id), Some(action.id)).await?;
                self.emit(crate::EngineEvent::Failed {
                    action: action.id,
                    kind,
                    server: Some(server.name.clone()),
                    number: failure.message.number,
                    text: failure.message.text.clone(),
                });
                self.inner.metrics.action_finished(kind, false, elapsed);
            }
        }
        Ok(())
    }

    /// The steps of every NIC, in order; stops at the first failure (each NIC's record says
    /// where it stands). Returns a one-line summary of what was done.
    async fn run_steps(
        &self,
        action: &ActionRecord,
        server: &str,
        plans: &[NicPlan],
    ) -> Result<Result<String, StepFailure>, EngineError> {
        let mut summary = Vec::new();
        for plan in plans {
            let line = match action.kind {
                ActionKind::Unquarantine => self.unquarantine_nic(action, server, plan).await?,
                _ => self.quarantine_nic(action, server, plan).await?,
            };
            match line {
                Ok(line) => summary.push(line),
                Err(failure) => return Ok(Err(failure)),
            }
        }
        Ok(Ok(summary.join("; ")))
    }

    async fn quarantine_nic(
        &self,
        action: &ActionRecord,
        server: &str,
        plan: &NicPlan,
    ) -> Result<Result<String, StepFailure>, EngineError> {
        let store = &self.inner.store;
        let server_id = action.server_id.unwrap_or_default();
        let target = plan.link.target();
        let quarantine = &plan.quarantine.name;

        // Step 1: an address from the quarantine pool (kept if this NIC already has one).
        let begun = Utc::now();
        let leased = match &plan.quarantine.pool {
            // Configuration validation requires a pool; say so plainly if one is missing anyway.
            None => Err(EngineError::message_ref(
                &messages::POOL_EXHAUSTED,
                &[("network", quarantine), ("range", &"no pool")],
            )),
            Some(pool) => match store.lease_address(server_id, plan.nic.mac, quarantine, pool).await {
                Ok(address) => Ok(address),
                Err(error @ StoreError::PoolExhausted { .. }) => {
                    let error = EngineError::from(error);
                    Err(MessageRef { number: error.number(), text: error.text })
                }
                Err(other) => return Err(other.into()),
            },
        };
        let mut pending = Alongside::default();
        let address = match leased {
            Ok(address) => address,
            Err(message) => {
                self.journal(
                    action,
                    "ensure_quarantine_address",
                    &target,
                    StepOutcome::Failed,
                    &message.text,
                    Some(message.number),
                    begun,
                )
                .await?;
                return Ok(Err(StepFailure { message }));
            }
        };
        // The lease itself is committed; its journal row goes with the next commit (a crash in
        // between re-runs the step, which finds the same lease).
        pending.steps.push(self.step(
            action,
            "ensure_quarantine_address",
            &format!("{quarantine}/{}", plan.nic.mac),
            StepOutcome::Done,
            &format!("leased {address}"),
            None,
            begun,
        ));

        // Step 2: the port on the quarantine bridge, isolated from the other quarantined ports.
        let moved = match self.ensure_port(action, server, plan, &plan.quarantine_segment, true, &mut pending).await? {
            Ok(outcome) => outcome.moved,
            Err(failure) => return Ok(Err(failure)),
        };

        // Step 3: the record follows the network; with the journal of steps 1-3, one commit.
        let begun = Utc::now();
        let position = NicPosition { server_id, mac: plan.nic.mac, network: quarantine.clone(), ip: Some(address) };
        pending.nic_positions.push(position);
        pending.steps.push(self.step(
            action,
            "record_nic_position",
            &plan.nic.mac.to_string(),
            StepOutcome::Done,
            &format!("{quarantine} {address}"),
            None,
            begun,
        ));
        self.record_pending(pending).await?;
        let how = if moved { "moved" } else { "already there" };
        Ok(Ok(format!("{} on {} ({how}), address {address}", plan.link.name(), plan.quarantine_segment)))
    }

    async fn unquarantine_nic(
        &self,
        action: &ActionRecord,
        server: &str,
        plan: &NicPlan,
    ) -> Result<Result<String, StepFailure>, EngineError> {
        let server_id = action.server_id.unwrap_or_default();
        let mut pending = Alongside::default();
        let moved = match self.ensure_port(action, server, plan, &plan.operational_segment, false, &mut pending).await?
        {
            Ok(outcome) => outcome.moved,
            Err(failure) => return Ok(Err(failure)),
        };
        // The record follows the network and the quarantine address is released: with the
        // journal of the port step, one commit.
        let begun = Utc::now();
        let operational = &plan.operational.name;
        let position =
            NicPosition { server_id, mac: plan.nic.mac, network: operational.clone(), ip: plan.nic.operational_ip };
        pending.nic_positions.push(position);
        pending.steps.push(self.step(
            action,
            "record_nic_position",
            &plan.nic.mac.to_string(),
            StepOutcome::Done,
            &format!("{operational} {}", describe(plan.nic.operational_ip)),
            None,
            begun,
        ));
        pending.releases.push((server_id, plan.nic.mac, plan.quarantine.name.clone()));
        pending.steps.push(self.step(
            action,
            "release_quarantine_address",
            &format!("{}/{}", plan.quarantine.name, plan.nic.mac),
            StepOutcome::Done,
            "released",
            None,
            begun,
        ));
        self.record_pending(pending).await?;
        let how = if moved { "moved" } else { "already there" };
        Ok(Ok(format!(
            "{} on {} ({how}), address {}",
            plan.link.name(),
            plan.operational_segment,
            describe(plan.nic.operational_ip)
        )))
    }

    /// Time-to-contain: from the first attached detection's arrival in Cordon to now (every
    /// port verified), and from the sensor's own alert time when the detection carries one.
    /// Actions without a detection (an operator's request) are not observed.
    async fn observe_time_to_contain(&self, action: i64) {
        let now = Utc::now().timestamp_micros();
        let filter =
            cordon_store::DetectionFilter { action_id: Some(action), limit: Some(10_000), ..Default::default() };
        let Ok(detections) = self.inner.store.list_detections(&filter).await else { return };
        let Some(first) = detections.iter().min_by_key(|d| d.detection.received_at_us) else { return };
        let since = |at_us: i64| u64::try_from(now - at_us).ok().map(std::time::Duration::from_micros);
        if let Some(elapsed) = since(first.detection.received_at_us) {
            self.inner.metrics.contained(elapsed);
        }
        // A sensor clock ahead of ours gives a negative time: not observed.
        if let Some(elapsed) = first.detection.observed_at_us.and_then(since) {
            self.inner.metrics.contained_since_alert(elapsed);
        }
    }

    /// The power step: reboot through the hypervisor or the BMC, and only call it done when the
    /// driver observed the restart. Returns the summary (what was observed) or the failure.
    async fn reboot(
        &self,
        action: &ActionRecord,
        server: &ServerRecord,
    ) -> Result<Result<String, StepFailure>, EngineError> {
        let begun = Utc::now();
        let topology = &self.inner.topology;
        let Some(power) = topology.power(server) else {
            let message = EngineError::message_ref(&messages::NO_POWER_DRIVER, &[("server", &server.name)]);
            self.journal(
                action,
                "ensure_rebooted",
                &server.name,
                StepOutcome::Failed,
                &message.text,
                Some(message.number),
                begun,
            )
            .await?;
            return Ok(Err(StepFailure { message }));
        };
        let target = power.target();
        let (graceful, deadline) = (topology.graceful_timeout, topology.reboot_deadline);
        let driver = power.clone();
        let clock = Instant::now();
        let call = tokio::task::spawn_blocking(move || driver.reboot(graceful, deadline));
        let limit = deadline + std::time::Duration::from_secs(30);
        let result = match tokio::time::timeout(limit, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(DriverError::NotConfirmed { detail: join.to_string() }),
            Err(_) => Err(DriverError::NotConfirmed { detail: format!("no answer from the driver within {limit:?}") }),
        };
        self.inner.metrics.driver_call(result.is_ok());
        self.inner.metrics.driver_latency(power.kind(), clock.elapsed());
        match result {
            Ok(outcome) => {
                let seen = outcome.observed.join("; ");
                let detail = format!("{} via {}: {seen}", outcome.method, power.kind());
                if outcome.powered_on {
                    let message = EngineError::message_ref(
                        &messages::SERVER_POWERED_ON,
                        &[("server", &server.name), ("detail", &seen)],
                    );
                    self.note(&message, Some(server.id), Some(action.id)).await?;
                }
                self.journal(action, "ensure_rebooted", &target, StepOutcome::Done, &detail, None, begun).await?;
                let user = server.user_email.as_deref().map(|u| format!("; tell {u}")).unwrap_or_default();
                Ok(Ok(format!("{detail}{user}")))
            }
            Err(error) => {
                let message = driver_message(&error, power.kind(), &target);
                self.journal(
                    action,
                    "ensure_rebooted",
                    &target,
                    StepOutcome::Failed,
                    &message.text,
                    Some(message.number),
                    begun,
                )
                .await?;
                Ok(Err(StepFailure { message }))
            }
        }
    }

    /// The driver step, on the blocking pool with a deadline, journaled either way.
    async fn ensure_port(
        &self,
        action: &ActionRecord,
        server: &str,
        plan: &NicPlan,
        segment: &Segment,
        isolated: bool,
        pending: &mut Alongside,
    ) -> Result<Result<EnsureOutcome, StepFailure>, EngineError> {
        let begun = Utc::now();
        let target = plan.link.target();
        let link = plan.link.clone();
        let wanted = segment.clone();
        let clock = Instant::now();
        let mut call = tokio::task::spawn_blocking(move || link.ensure(&wanted, isolated));
        let timeout = self.inner.settings.driver_timeout;
        let result = match tokio::time::timeout(timeout, &mut call).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(DriverError::Netlink { operation: "driver call".into(), detail: join.to_string() }),
            Err(_) => {
                // The blocking call cannot be stopped: when it returns late it may still have
                // changed the network. Then compare the records with the network at once, so
                // that the change is reported (or undone with `on_drift = "enforce"`).
                let engine = self.clone();
                let target = plan.link.target();
                tokio::spawn(async move {
                    let _ = call.await;
                    tracing::warn!(%target, "a driver call answered after its deadline; reconciling");
                    if let Err(error) = engine.reconcile(crate::OnDrift::Report).await {
                        tracing::error!(%error, "reconcile after a late driver answer failed");
                    }
                });
                let detail = format!("no answer within {timeout:?}");
                Err(match &plan.link {
                    crate::topology::Link::VmNic { .. } => DriverError::HypervisorUnreachable { detail },
                    crate::topology::Link::Port { driver, .. } if driver.kind() == "ovs" => {
                        DriverError::OvsdbUnreachable { detail }
                    }
                    crate::topology::Link::Port { .. } => {
                        DriverError::Netlink { operation: "driver call".into(), detail }
                    }
                })
            }
        };
        self.inner.metrics.driver_call(result.is_ok());
        self.inner.metrics.driver_latency(plan.link.driver_kind(), clock.elapsed());
        match result {
            Ok(outcome) => {
                let (step_outcome, detail, number) = if outcome.moved || outcome.isolation_changed {
                    let detail = format!("{} -> {}", outcome.before.membership(), outcome.after.membership());
                    (StepOutcome::Done, detail, None)
                } else {
                    let message = EngineError::message_ref(
                        &messages::PORT_ALREADY_IN_PLACE,
                        &[("port", &plan.link.name()), ("server", &server), ("bridge", &segment)],
                    );
                    pending.messages.push(self.message_row(&message, action.server_id, Some(action.id)));
                    (StepOutcome::AlreadyInPlace, message.text, Some(messages::PORT_ALREADY_IN_PLACE.number))
                };
                // Journaled with the caller's next commit (the record of where the port is).
                pending.steps.push(self.step(
                    action,
                    "ensure_port_on_bridge",
                    &target,
                    step_outcome,
                    &detail,
                    number,
                    begun,
                ));
                Ok(Ok(outcome))
            }
            Err(error) => {
                let message = driver_message(&error, plan.link.driver_kind(), &plan.link.owner());
                pending.steps.push(self.step(
                    action,
                    "ensure_port_on_bridge",
                    &target,
                    StepOutcome::Failed,
                    &message.text,
                    Some(message.number),
                    begun,
                ));
                self.record_pending(std::mem::take(pending)).await?;
                Ok(Err(StepFailure { message }))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn journal(
        &self,
        action: &ActionRecord,
        name: &str,
        target: &str,
        outcome: StepOutcome,
        detail: &str,
        message_number: Option<u32>,
        started_at: chrono::DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let step = self.step(action, name, target, outcome, detail, message_number, started_at);
        self.inner.store.append_step(&step).await?;
        Ok(())
    }

    /// A journal row for a step that finished now.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        action: &ActionRecord,
        name: &str,
        target: &str,
        outcome: StepOutcome,
        detail: &str,
        message_number: Option<u32>,
        started_at: chrono::DateTime<Utc>,
    ) -> NewStep {
        NewStep {
            action_id: action.id,
            attempt: action.attempts,
            name: name.to_string(),
            target: target.to_string(),
            outcome,
            detail: detail.to_string(),
            message_number,
            instance: self.inner.settings.instance.clone(),
            started_at,
            finished_at: Utc::now(),
        }
    }

    /// Commits records gathered around a step in one transaction, then logs and announces the
    /// numbered messages among them (only once they are recorded).
    async fn record_pending(&self, pending: Alongside) -> Result<(), EngineError> {
        if pending.is_empty() {
            return Ok(());
        }
        self.inner.store.record_alongside(&pending).await?;
        for message in &pending.messages {
            let reference = MessageRef { number: message.number, text: message.text.clone() };
            self.announce(&reference, message.server_id, message.action_id);
        }
        Ok(())
    }
}

impl Engine {
    /// The quarantine addresses a quarantine of `server` will lease (none when it would be
    /// refused or cannot be planned: its steps then fail before any address is taken).
    fn leases_for(&self, server: &ServerRecord, kind: ActionKind) -> Vec<cordon_store::LeaseRequest> {
        if !kind.quarantines() || self.refuse_infrastructure(server, kind).is_err() {
            return Vec::new();
        }
        let Ok(plans) = self.inner.topology.plan(server) else { return Vec::new() };
        plans
            .iter()
            .filter_map(|plan| {
                Some(cordon_store::LeaseRequest {
                    server_id: server.id,
                    mac: plan.nic.mac,
                    network: plan.quarantine.name.clone(),
                    pool: plan.quarantine.pool.clone()?,
                })
            })
            .collect()
    }
}

/// The state a server is in while an action of `kind` moves its NICs, if it moves any.
fn transitional_state(kind: ActionKind) -> Option<ServerState> {
    match kind {
        ActionKind::Quarantine | ActionKind::QuarantineReboot => Some(ServerState::Quarantining),
        ActionKind::Unquarantine => Some(ServerState::Unquarantining),
        ActionKind::Reboot | ActionKind::Notify => None,
    }
}

/// Whether an action of `kind` has a power step after its network part.
fn reboots(kind: ActionKind) -> bool {
    matches!(kind, ActionKind::Reboot | ActionKind::QuarantineReboot)
}

/// The numbered message for a driver error: each kind of failure has its own number.
fn driver_message(error: &DriverError, driver: &str, target: &str) -> MessageRef {
    match error {
        DriverError::ReadBackMismatch { port, expected, observed } => EngineError::message_ref(
            &messages::READ_BACK_MISMATCH,
            &[("switch", &target), ("port", port), ("expected", expected), ("observed", observed)],
        ),
        DriverError::Namespace { .. }
        | DriverError::WrongSegment { .. }
        | DriverError::PortNotFound { .. }
        | DriverError::BridgeNotFound { .. }
        | DriverError::Netlink { .. } => {
            let detail: &dyn Display = error;
            EngineError::message_ref(
                &messages::DRIVER_FAILURE,
                &[("driver", &driver), ("switch", &target), ("detail", detail)],
            )
        }
        other => {
            let message = Message::find(other.message_number()).unwrap_or(&messages::DRIVER_FAILURE);
            let detail: &dyn Display = other;
            EngineError::message_ref(
                message,
                &[("target", &target), ("detail", detail), ("driver", &driver), ("switch", &target)],
            )
        }
    }
}

/// An address for a message; an unknown one says so.
fn describe(address: Option<std::net::IpAddr>) -> String {
    address.map(|a| a.to_string()).unwrap_or_else(|| "(address not configured)".into())
}

/// Whether a failure with this message number may pass by itself, so that trying again later
/// makes sense: a daemon or BMC that did not answer, a netlink error, a read-back that raced, an
/// OVSDB that is down or refused, a concurrent OVS change, an ovs-vswitchd that did not confirm.
/// A missing domain or NIC, refused credentials, an empty pool or an unconfirmed reboot need
/// an operator.
fn may_pass(number: u32) -> bool {
    matches!(number, 60010 | 60011 | 60014 | 60018 | 60019 | 60050 | 60052 | 60053 | 60054)
}

/// The pause before attempt `attempt + 1`: `base` doubled per attempt, capped at a minute, with
/// ±20 % jitter so that many actions failing together do not retry together.
fn backoff(base: std::time::Duration, attempt: u32) -> std::time::Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let pause = base.saturating_mul(1 << exponent).min(std::time::Duration::from_secs(60));
    let jitter = 0.8 + 0.4 * rand::random::<f64>();
    pause.mul_f64(jitter)
}
