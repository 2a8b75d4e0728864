//! From detections to actions: resolution, policy, one action per incident, safety.
//!
//! Detections are committed first (with the checkpoint of the file they came from), then
//! processed here, oldest first, by a single processor (one per database: a named lease). It
//! decides the detections of a batch in waves: a detection goes into the wave after the last one
//! that holds a detection touching any of the same servers (or the same unresolved subject), and the
//! detections of one wave are decided concurrently. So the detections of one server are decided
//! one at a time, in arrival order, and two detections can never race each other into two
//! actions for one server. A detection not yet processed when Cordon stops is processed at the
//! next start.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use cordon_model::policy::{Policy, PolicyAction, PolicyMode, ServerFacts};
use cordon_model::{ActionCommand, ActionKind, ActionState, Detection, ServerState, messages};
use cordon_store::{
    ActionFilter, ActionRecord, DetectionRecord, NewAction, ServerRecord, SourceCheckpoint, StoreError,
};

use crate::{Actor, Engine, EngineError, ErrorKind};

/// The policy and the per-server settings that go with it; replaced whole on reload.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub policy: Policy,
    /// Per server name: its own action (the seed's per-server action selection) and whether
    /// it is protected (never acted on automatically).
    pub servers: HashMap<String, (Option<PolicyAction>, bool)>,
}

/// A decided detection: its id, its source and the outcome.
type Decided = (i64, String, Result<&'static str, EngineError>);

/// What deciding a detection may touch, for ordering the decisions of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Server(i64),
    /// A subject no server held (its unresolved action).
    Address(IpAddr),
}

/// What an address resolved to at the detection's time.
#[derive(Debug, Clone)]
enum Resolution {
    None,
    One(Box<ServerRecord>),
    /// Several servers held it: never guess.
    Ambiguous(usize),
}

fn kind_of(action: PolicyAction) -> ActionKind {
    match action {
        PolicyAction::Quarantine => ActionKind::Quarantine,
        PolicyAction::Reboot => ActionKind::Reboot,
        PolicyAction::QuarantineReboot => ActionKind::QuarantineReboot,
        // Ignore never reaches here; Notify asks the administrator.
        PolicyAction::Notify | PolicyAction::Ignore => ActionKind::Notify,
    }
}

fn strength(kind: ActionKind) -> u8 {
    match kind {
        ActionKind::Notify => PolicyAction::Notify.strength(),
        ActionKind::Reboot => PolicyAction::Reboot.strength(),
        ActionKind::Quarantine => PolicyAction::Quarantine.strength(),
        ActionKind::QuarantineReboot => PolicyAction::QuarantineReboot.strength(),
        ActionKind::Unquarantine => 0,
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Engine {
    /// Replaces the policy (at start and on reload). The circuit breaker keeps its history.
    pub fn set_policy(&self, set: PolicySet) {
        {
            let mut breaker = self.inner.breaker.lock().unwrap_or_else(|p| p.into_inner());
            breaker.reconfigure(set.policy.max_auto_actions, set.policy.window_secs);
        }
        *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }

    pub fn policy(&self) -> Arc<PolicySet> {
        self.inner.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Commits detections (and the checkpoint of the file they were read from) and wakes the
    /// processor. Returns once they are durable: a sensor may be told "accepted" then.
    pub async fn accept_detections(
        &self,
        detections: &[Detection],
        checkpoint: Option<&SourceCheckpoint>,
    ) -> Result<Vec<i64>, EngineError> {
        let ids = self.inner.store.record_detections(detections, &self.inner.settings.instance, checkpoint).await?;
        if !ids.is_empty() {
            self.inner.detections_wake.notify_one();
        }
        Ok(ids)
    }

    /// Processes committed detections until `shutdown` completes.
    pub async fn run_detections(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let lease = self.inner.settings.action_lease;
        loop {
            // One processor across instances: the holder of the `detections` lease, taken or
            // renewed before each batch there is to process (so an idle instance writes
            // nothing); settling is also a compare-and-swap, for a holder that stalled.
            loop {
                match self.inner.store.unprocessed_detections(500).await {
                    Ok(batch) if batch.is_empty() => break,
                    Ok(_) if !self.hold_lease("detections", lease).await => break,
                    Ok(batch) => {
                        if !self.process_batch(batch).await {
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "could not read detections to process");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.inner.detections_wake.notified() => {}
                _ = tokio::time::sleep(self.inner.settings.poll_interval) => {}
            }
        }
    }

    /// Decides a batch of detections in waves (see the module's documentation). False when one
    /// could not be decided for a reason other than another instance deciding it first: it and
    /// the later waves stay queued.
    async fn process_batch(&self, batch: Vec<DetectionRecord>) -> bool {
        let mut waves: Vec<Vec<DetectionRecord>> = Vec::new();
        // The wave after the last detection of each lane; nothing goes before `barrier` (the
        // wave after a detection that could not be keyed, which orders against everything).
        let mut next: HashMap<Lane, usize> = HashMap::new();
        let mut barrier = 0;
        for record in batch {
            let wave = match self.lanes(&record).await {
                Ok(lanes) => {
                    let wave = lanes.iter().filter_map(|lane| next.get(lane)).copied().fold(barrier, usize::max);
                    for lane in lanes {
                        next.insert(lane, wave + 1);
                    }
                    wave
                }
                Err(error) => {
                    tracing::warn!(detection = record.id, %error, "could not resolve a detection in advance");
                    let wave = waves.len().max(barrier);
                    barrier = wave + 1;
                    wave
                }
            };
            if waves.len() <= wave {
                waves.resize_with(wave + 1, Vec::new);
            }
            waves[wave].push(record);
        }
        let deciders = self.inner.settings.deciders.max(1);
        for wave in waves {
            let mut running = tokio::task::JoinSet::new();
            let mut failed = false;
            for record in wave {
                if running.len() >= deciders {
                    failed |= !self.decided(running.join_next().await);
                }
                let engine = self.clone();
                running.spawn(async move {
                    let (id, source) = (record.id, record.detection.source.clone());
                    (id, source, engine.process(record).await)
                });
            }
            while let Some(joined) = running.join_next().await {
                failed |= !self.decided(Some(joined));
            }
            if failed {
                return false;
            }
        }
        true
    }

    /// Counts one decided detection; false when it could not be decided.
    fn decided(&self, joined: Option<Result<Decided, tokio::task::JoinError>>) -> bool {
        match joined {
            None => true,
            Some(Ok((_, source, Ok(outcome)))) => {
                self.inner.metrics.detection(&source, outcome);
                true
            }
            Some(Ok((id, _, Err(error)))) if error.kind == crate::ErrorKind::Conflict => {
                tracing::warn!(detection = id, "another instance processed this detection first");
                true
            }
            Some(Ok((id, _, Err(error)))) => {
                tracing::error!(detection = id, %error, "could not process a detection; it stays queued");
                false
            }
            Some(Err(join)) => {
                tracing::error!(error = %join, "a detection's decision stopped; it stays queued");
                false
            }
        }
    }

    /// What a detection's decision may touch: every server that one of its addresses resolves
    /// to, and its subject when that resolves to none (the unresolved path keys on the
    /// address). Other unresolved addresses (the external side: one C2 server that a whole
    /// outbreak talks to) are not lanes, or an outbreak would be decided one at a time; a rule
    /// that makes such an address the subject may then, at worst, record its unresolved action
    /// (67198) twice, never act on a server twice.
    async fn lanes(&self, record: &DetectionRecord) -> Result<Vec<Lane>, EngineError> {
        let detection = &record.detection;
        let at = detection.observed_at_us.unwrap_or(detection.received_at_us);
        let mut lanes = Vec::new();
        for address in
            [Some(detection.subject), detection.peer, detection.src_ip, detection.dest_ip, detection.target_ip]
                .into_iter()
                .flatten()
        {
            let ids = self.holders(address, at).await?;
            if ids.is_empty() && address == detection.subject {
                lanes.push(Lane::Address(address));
            }
            lanes.extend(ids.into_iter().map(Lane::Server));
        }
        Ok(lanes)
    }

    /// The servers that held `address` at `at_us`: from the address index when it knows, else
    /// from the store.
    async fn holders(&self, address: IpAddr, at_us: i64) -> Result<Vec<i64>, EngineError> {
        let index = self.inner.address_index.read().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(match index.map(|index| index.lookup(address, at_us)) {
            Some(crate::address_index::Lookup::Held(ids)) => ids,
            Some(crate::address_index::Lookup::AskStore) | None => {
                self.inner.store.servers_holding(address, at_us).await?
            }
        })
    }

    async fn resolve(&self, address: IpAddr, at_us: i64) -> Result<Resolution, EngineError> {
        let ids = self.holders(address, at_us).await?;
        Ok(match ids.as_slice() {
            [] => Resolution::None,
            [id] => match self.inner.store.server_by_id(*id).await? {
                Some(server) => Resolution::One(Box::new(server)),
                None => Resolution::None,
            },
            many => Resolution::Ambiguous(many.len()),
        })
    }

    /// Decides one detection and records the outcome on it.
    async fn process(&self, record: DetectionRecord) -> Result<&'static str, EngineError> {
        let store = &self.inner.store;
        let detection = &record.detection;
        let at = detection.observed_at_us.unwrap_or(detection.received_at_us);
        let mut resolved: HashMap<IpAddr, Resolution> = HashMap::new();
        for address in
            [Some(detection.subject), detection.peer, detection.src_ip, detection.dest_ip, detection.target_ip]
                .into_iter()
                .flatten()
        {
            if let std::collections::hash_map::Entry::Vacant(slot) = resolved.entry(address) {
                slot.insert(self.resolve(address, at).await?);
            }
        }
        let set = self.policy();
        let facts = |address: IpAddr| match resolved.get(&address) {
            Some(Resolution::One(server)) => {
                let (action, protected) = set.servers.get(&server.name).cloned().unwrap_or((None, false));
                Some(ServerFacts {
                    name: server.name.clone(),
                    tenant: server.tenant.clone(),
                    networks: server.nics.iter().map(|n| n.network.clone()).collect(),
                    action,
                    protected,
                })
            }
            _ => None,
        };
        let decision = set.policy.decide(detection, &facts);
        let subject = resolved.get(&decision.subject).cloned().unwrap_or(Resolution::None);
        let server = match &subject {
            Resolution::One(server) => Some(server.as_ref().clone()),
            _ => None,
        };
        let server_id = server.as_ref().map(|s| s.id);

        if decision.action == PolicyAction::Ignore {
            let text = format!("ignored ({}): {}", decision.decided_by, decision.reason);
            store.settle_detection(record.id, &text, server_id, None).await?;
            return Ok("ignored");
        }
        if decision.shadow {
            let whom = server.as_ref().map(|s| s.name.clone()).unwrap_or_else(|| decision.subject.to_string());
            let text =
                format!("shadow: would {} {whom} ({}): {}", decision.action, decision.decided_by, decision.reason);
            tracing::info!(detection = record.id, "{text}");
            store.settle_detection(record.id, &text, server_id, None).await?;
            return Ok("shadow");
        }
        let kind = kind_of(decision.action);

        let Some(server) = server else {
            return self.unresolved(&record, kind, decision.subject, &subject, &decision.decided_by).await;
        };

        // One action per incident: attach to the server's open action, escalating it if this
        // detection calls for something stronger and it has not started yet.
        let open = store.open_actions(server.id).await?;
        if let Some(action) = open.first() {
            let mut action = action.clone();
            if strength(kind) > strength(action.kind)
                && matches!(action.state, ActionState::AwaitingApproval | ActionState::Pending)
                && action.kind != ActionKind::Unquarantine
            {
                action = store.change_action_kind(action.id, action.generation, kind).await?;
                tracing::info!(action = action.id, %kind, "action escalated by a stronger detection");
                let automatic = decision.mode == PolicyMode::Auto && !self.is_protected(&set, &server.name);
                if action.state == ActionState::AwaitingApproval && automatic && self.admit_automatic() {
                    let message = EngineError::message_ref(
                        &messages::ACTION_APPROVED,
                        &[("action", &action.id), ("kind", &kind), ("actor", &"policy")],
                    );
                    store
                        .transition_action(action.id, action.generation, ActionCommand::Approve, Some(message))
                        .await?;
                    self.inner.wake.notify_one();
                }
            }
            let text = format!("attached to open action {} ({})", action.id, decision.decided_by);
            store.settle_detection(record.id, &text, Some(server.id), Some(action.id)).await?;
            return Ok("attached");
        }
        // The server as it is now: an action that ended since the resolution above has already
        // recorded where it put the server (the state is written before the action closes).
        let server = store.server_by_id(server.id).await?.unwrap_or(server);
        // Already where the action would put it: attach to the action that put it there.
        if kind.quarantines() && server.state == ServerState::Quarantined {
            let latest = store
                .list_actions(&ActionFilter { server_id: Some(server.id), limit: Some(1), ..Default::default() })
                .await?;
            let action_id = latest.first().map(|a| a.id);
            store
                .settle_detection(record.id, "attached: the server is already quarantined", Some(server.id), action_id)
                .await?;
            return Ok("attached");
        }
        if self.in_cooldown(&set, server.id).await? {
            store
                .settle_detection(record.id, "cooldown: the server was released recently", Some(server.id), None)
                .await?;
            return Ok("cooldown");
        }

        // Never isolate what Cordon itself depends on, whatever the policy says.
        if let Err(refused) = self.refuse_infrastructure(&server, kind) {
            let message = cordon_store::MessageRef { number: refused.number(), text: refused.text.clone() };
            self.note(&message, Some(server.id), None).await?;
            let text = format!("refused: {}", refused.text);
            store.settle_detection(record.id, &text, Some(server.id), None).await?;
            return Ok("refused");
        }
        // A new action. It waits for approval when the policy says so, for `notify`, for a
        // protected server, and when the circuit breaker has tripped.
        let protected = self.is_protected(&set, &server.name);
        let wants_approval = kind == ActionKind::Notify || decision.mode == PolicyMode::Approve || protected;
        let state = if wants_approval || !self.admit_automatic() {
            ActionState::AwaitingApproval
        } else {
            ActionState::Pending
        };
        let awaiting = (state == ActionState::AwaitingApproval).then(|| {
            let why = if protected {
                "the server is protected".to_string()
            } else if wants_approval {
                decision.reason.clone()
            } else {
                "the circuit breaker has tripped".to_string()
            };
            EngineError::message_ref(
                &messages::ACTION_AWAITS_APPROVAL,
                &[("kind", &kind), ("server", &server.name), ("reason", &why)],
            )
        });
        let settles = cordon_store::Settlement {
            detection_id: record.id,
            decision: format!("new action {{action}} ({}): {}", decision.decided_by, decision.reason),
        };
        // The action and the detection's decision: one commit.
        let action = store
            .create_action_settling(
                &NewAction {
                    kind,
                    server_id: Some(server.id),
                    address: Some(decision.subject),
                    state,
                    reason: Some(format!("{} [{}] {}", detection.source, detection.severity, detection.signature)),
                    trigger: "policy".into(),
                    requested_by: "policy".into(),
                    instance: self.inner.settings.instance.clone(),
                    decided_by: Some(decision.decided_by.clone()),
                    message: awaiting.clone(),
                },
                Some(&settles),
            )
            .await?;
        if state == ActionState::Pending {
            // Straight to a worker when one is free; the dispatcher otherwise.
            if self.start_worker(action.clone(), Some(server.clone())) != crate::Started::Yes {
                self.inner.wake.notify_one();
            }
        }
        self.inner.metrics.action_created(kind);
        if let Some(message) = &awaiting {
            self.note(message, Some(server.id), Some(action.id)).await?;
            self.emit(crate::EngineEvent::AwaitsApproval {
                action: action.id,
                kind,
                server: server.name.clone(),
                reason: message.text.clone(),
            });
        }
        let text = settles.decision_for(action.id);
        tracing::info!(detection = record.id, action = action.id, server = %server.name, %kind, %state, "{text}");
        Ok("new_action")
    }

    /// No server (or several) held the address: record a failed action with 67198 for an
    /// operator, once per address until it is checked. Nothing is guessed.
    async fn unresolved(
        &self,
        record: &DetectionRecord,
        kind: ActionKind,
        address: IpAddr,
        resolution: &Resolution,
        decided_by: &str,
    ) -> Result<&'static str, EngineError> {
        let store = &self.inner.store;
        if let Some(action) = store.unresolved_action(address).await? {
            let text = format!("attached to unresolved action {}", action.id);
            store.settle_detection(record.id, &text, None, Some(action.id)).await?;
            return Ok("attached");
        }
        let reason = match resolution {
            Resolution::Ambiguous(n) => format!("{n} servers held {address} at the detection's time"),
            _ => format!("no managed server held {address} at the detection's time"),
        };
        // Created failed in one commit: a crash can never leave an action without a server
        // open (no worker would ever finish it).
        let message = EngineError::message_ref(&messages::SERVER_NOT_FOUND_BY_ADDRESS, &[("address", &address)]);
        // The failed action and the detection's decision: one commit.
        let settles = cordon_store::Settlement { detection_id: record.id, decision: format!("unresolved: {reason}") };
        let action = store
            .create_action_settling(
                &NewAction {
                    kind,
                    server_id: None,
                    address: Some(address),
                    state: ActionState::Failed,
                    reason: Some(format!(
                        "{} [{}] {}: {reason}",
                        record.detection.source, record.detection.severity, record.detection.signature
                    )),
                    trigger: "policy".into(),
                    requested_by: "policy".into(),
                    instance: self.inner.settings.instance.clone(),
                    decided_by: Some(decided_by.to_string()),
                    message: Some(message.clone()),
                },
                Some(&settles),
            )
            .await?;
        self.note(&message, None, Some(action.id)).await?;
        self.emit(crate::EngineEvent::Failed {
            action: action.id,
            kind,
            server: None,
            number: message.number,
            text: format!("{}: {reason}", message.text),
        });
        tracing::warn!(action = action.id, %address, "{}: {reason}", message.text);
        Ok("unresolved")
    }

    fn is_protected(&self, set: &PolicySet, server: &str) -> bool {
        set.servers.get(server).is_some_and(|(_, protected)| *protected)
    }

    /// Counts one automatic action against the circuit breaker; false once it has tripped.
    fn admit_automatic(&self) -> bool {
        let mut breaker = self.inner.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let was_tripped = breaker.is_tripped();
        let admitted = breaker.admit(now_us());
        if !admitted && !was_tripped {
            let policy = self.policy();
            let text = messages::BREAKER_TRIPPED
                .render(&[("max", &policy.policy.max_auto_actions), ("window", &policy.policy.window_secs)]);
            tracing::warn!(number = messages::BREAKER_TRIPPED.number, "{text}");
            self.inner.metrics.breaker_tripped();
            let engine = self.clone();
            tokio::spawn(async move {
                let message = cordon_store::MessageRef { number: messages::BREAKER_TRIPPED.number, text };
                let _ = engine.note(&message, None, None).await;
            });
        }
        admitted
    }

    async fn in_cooldown(&self, set: &PolicySet, server_id: i64) -> Result<bool, EngineError> {
        if set.policy.cooldown_secs == 0 {
            return Ok(false);
        }
        let recent = self
            .inner
            .store
            .list_actions(&ActionFilter {
                server_id: Some(server_id),
                state: Some(ActionState::Succeeded),
                limit: Some(1),
            })
            .await?;
        Ok(recent.first().is_some_and(|a| {
            a.kind == ActionKind::Unquarantine
                && (chrono::Utc::now() - a.updated_at).num_seconds() < set.policy.cooldown_secs as i64
        }))
    }

    /// Whether the circuit breaker has tripped, and how many automatic actions it counts now.
    pub fn breaker_status(&self) -> (bool, u32) {
        let breaker = self.inner.breaker.lock().unwrap_or_else(|p| p.into_inner());
        (breaker.is_tripped(), breaker.recent(now_us()))
    }

    /// An operator resets the circuit breaker.
    pub async fn reset_breaker(&self, actor: &Actor) -> Result<(), EngineError> {
        self.inner.breaker.lock().unwrap_or_else(|p| p.into_inner()).reset();
        let message = EngineError::message_ref(&messages::BREAKER_RESET, &[("actor", &actor.name)]);
        self.note(&message, None, None).await?;
        self.audit(actor, "breaker_reset", "circuit breaker", "").await
    }

    /// An administrator approves an action that waits for approval, optionally as another
    /// kind (a `notify` becomes a quarantine unless told otherwise).
    pub async fn approve(
        &self,
        id: i64,
        actor: &Actor,
        as_kind: Option<ActionKind>,
    ) -> Result<ActionRecord, EngineError> {
        let store = &self.inner.store;
        let action = store
            .action(id)
            .await?
            .ok_or_else(|| EngineError::new(ErrorKind::NotFound, &messages::ACTION_NOT_FOUND, &[("action", &id)]))?;
        if action.state != ActionState::AwaitingApproval {
            return Err(EngineError::new(
                ErrorKind::Conflict,
                &messages::ACTION_STATE_FORBIDS,
                &[("action", &id), ("state", &action.state), ("command", &ActionCommand::Approve)],
            ));
        }
        let refuse = |detail: &str| {
            Err(EngineError::new(ErrorKind::Unprocessable, &messages::BAD_REQUEST, &[("detail", &detail)]))
        };
        let kind = match (action.kind, as_kind) {
            (ActionKind::Notify, None) => ActionKind::Quarantine,
            (current, None) => current,
            (current, Some(wanted)) if current == wanted && current != ActionKind::Notify => wanted,
            (ActionKind::Unquarantine, Some(_)) => return refuse("an unquarantine action is approved as it is"),
            (_, Some(ActionKind::Notify | ActionKind::Unquarantine)) => {
                return refuse("approve as quarantine, reboot or quarantine_reboot");
            }
            (_, Some(wanted)) => wanted,
        };
        let message = EngineError::message_ref(
            &messages::ACTION_APPROVED,
            &[("action", &id), ("kind", &kind), ("actor", &actor.name)],
        );
        // The kind and the state change together: a race can never leave a half-approved action.
        let action = store
            .transition_action_as(id, action.generation, ActionCommand::Approve, kind, Some(message.clone()))
            .await
            .map_err(|e| conflict(id, e))?;
        self.note(&message, action.server_id, Some(id)).await?;
        self.audit(actor, "approve", &format!("action {id}"), &format!("as {kind}")).await?;
        self.inner.wake.notify_one();
        Ok(action)
    }

    pub async fn reject(&self, id: i64, actor: &Actor) -> Result<ActionRecord, EngineError> {
        let message = EngineError::message_ref(&messages::ACTION_REJECTED, &[("action", &id), ("actor", &actor.name)]);
        let action = self.operator_command(id, ActionCommand::Reject, message.clone()).await?;
        self.note(&message, action.server_id, Some(id)).await?;
        self.audit(actor, "reject", &format!("action {id}"), "").await?;
        Ok(action)
    }
}

fn conflict(id: i64, error: StoreError) -> EngineError {
    match error {
        StoreError::Conflict { .. } | StoreError::InvalidTransition { .. } | StoreError::Backend(_) => {
            EngineError::new(
                ErrorKind::Conflict,
                &messages::ACTION_STATE_FORBIDS,
                &[("action", &id), ("state", &"changed meanwhile"), ("command", &ActionCommand::Approve)],
            )
        }
        other => other.into(),
    }
}
