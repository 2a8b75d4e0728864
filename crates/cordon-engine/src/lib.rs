//! The engine: the one place where requests become actions and actions change the network.
//!
//! Architecture invariant: every entry point (API, CLI through the API, later the policy) goes
//! through [`Engine::request`], [`Engine::check`] or [`Engine::retry`]; nothing else creates or
//! moves an action.
//!
//! Architecture invariant: a request is committed (the action row exists) before it is
//! acknowledged; a worker then runs it as idempotent `ensure_*` steps, each journaled with its
//! outcome, so a crash at any point is recovered by running the action again.
//!
//! Architecture invariant: actions on one server run one at a time, oldest first.

mod accounts;
pub mod address_index;
mod error;
mod events;
mod execute;
mod import;
mod ingest;
pub mod metrics;
mod reconcile;
mod status;
mod topology;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cordon_model::{ActionCommand, ActionKind, ActionState, ServerState, messages};
use cordon_store::{ActionRecord, AuditEntry, MessageRef, NewAction, NewMessage, ServerRecord, Store, StoreError};
use tokio::sync::Notify;

pub use error::{EngineError, ErrorKind};
pub use events::EngineEvent;
pub use import::{ImportReport, ImportedNic, ImportedServer};
pub use ingest::PolicySet;
pub use metrics::Metrics;
pub use reconcile::{Drift, OnDrift, ReconcileReport};
pub use status::DriverHealth;
pub use topology::{DomainPower, NetworkPlan, Topology};

/// Who asked for something, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `token:<name>`, `user:<name>`, `policy`, ...
    pub name: String,
    /// Where the request came from: a peer address, or `engine`.
    pub origin: String,
}

/// A request to quarantine or unquarantine a server by name.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: ActionKind,
    pub server: String,
    pub reason: Option<String>,
    /// `api`, `cli`, `policy`, ...
    pub trigger: String,
    pub actor: Actor,
}

/// What [`Engine::request`] did.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub action: ActionRecord,
    /// True when an open action of the same kind already existed and was returned instead.
    pub existing: bool,
    /// The numbered message that describes the outcome (e.g. 41004 for an existing action).
    pub message: MessageRef,
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Which manager this is; recorded on every action, step and message.
    pub instance: String,
    /// How long one driver call may take before its step fails.
    pub driver_timeout: Duration,
    /// How often the dispatcher looks for runnable actions even when nobody pokes it.
    pub poll_interval: Duration,
    /// How many times an action is attempted in all when its failures may pass (a daemon down,
    /// a timeout); 1 means no automatic retry.
    pub max_attempts: u32,
    /// The first pause before a retry; it doubles with each attempt (with jitter), up to a minute.
    pub retry_base: Duration,
    /// The database, for `cordon status` (e.g. `sqlite:/var/lib/cordon/cordon.db`).
    pub database: String,
    /// Addresses that must never be cut off, each with what it is: the manager's own, the
    /// hypervisors' and BMCs' endpoints, the database host. A server holding one is never
    /// quarantined, not even by hand (60093).
    pub infrastructure: Vec<(std::net::IpAddr, String)>,
    /// How long a lease on a running action (and on the detection processor) lasts without
    /// renewal; renewed every third of it. Another instance takes an action over once its
    /// lease expired.
    pub action_lease: Duration,
    /// How many actions run at once on this instance (each on its own server). Enough to keep
    /// the store's group commit fed; more only queue on the store and on the drivers.
    pub workers: usize,
    /// How many detections the processor decides at once (each server's in arrival order).
    pub deciders: usize,
}

impl EngineSettings {
    pub fn new(instance: impl Into<String>) -> Self {
        EngineSettings {
            instance: instance.into(),
            driver_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            max_attempts: 3,
            retry_base: Duration::from_secs(1),
            database: String::new(),
            infrastructure: Vec::new(),
            action_lease: Duration::from_secs(15),
            workers: 64,
            deciders: 64,
        }
    }
}

/// Whether [`Engine::start_worker`] started one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Started {
    Yes,
    /// The server has a worker already (or the action none to run on).
    Not,
    NoWorkerFree,
}

#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    topology: Topology,
    settings: EngineSettings,
    /// Poked whenever an action becomes runnable or a server becomes free.
    wake: Notify,
    /// Servers that have a worker right now: the one-at-a-time rule.
    busy: Mutex<HashSet<i64>>,
    /// One permit per running worker (`settings.workers`).
    workers: Arc<tokio::sync::Semaphore>,
    /// When the dispatcher last looked for actions whose lease expired.
    orphans_checked: Mutex<Option<std::time::Instant>>,
    metrics: Arc<Metrics>,
    /// Poked when detections were committed.
    detections_wake: Notify,
    /// The policy in force; replaced whole on reload.
    policy: std::sync::RwLock<Arc<PolicySet>>,
    /// Counts automatic actions; once tripped, new automatic actions wait for approval.
    breaker: Mutex<cordon_model::policy::CircuitBreaker>,
    started_at: chrono::DateTime<chrono::Utc>,
    /// Where events go; listeners subscribe with [`Engine::subscribe`].
    events: tokio::sync::broadcast::Sender<EngineEvent>,
    /// Operational addresses in memory for the resolve path; `None` until loaded (every
    /// address then goes to the store). See `address_index.rs` for why it cannot go stale.
    address_index: std::sync::RwLock<Option<Arc<address_index::AddressIndex>>>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, topology: Topology, settings: EngineSettings) -> Self {
        let workers = settings.workers.max(1);
        Engine {
            inner: Arc::new(Inner {
                store,
                topology,
                settings,
                wake: Notify::new(),
                busy: Mutex::new(HashSet::new()),
                workers: Arc::new(tokio::sync::Semaphore::new(workers)),
                orphans_checked: Mutex::new(None),
                metrics: Arc::new(Metrics::default()),
                detections_wake: Notify::new(),
                policy: std::sync::RwLock::new(Arc::new(PolicySet::default())),
                events: tokio::sync::broadcast::channel(1024).0,
                address_index: std::sync::RwLock::new(None),
                started_at: chrono::Utc::now(),
                breaker: Mutex::new(cordon_model::policy::CircuitBreaker::new(
                    cordon_model::policy::Policy::default().max_auto_actions,
                    cordon_model::policy::Policy::default().window_secs,
                )),
            }),
        }
    }

    /// Loads the address index from the store's operational tenures. Call it after every
    /// inventory sync (serve does, at start). Returns the number of addresses indexed, or
    /// `None` when the backend offers no tenures (the store then answers every lookup).
    pub async fn load_address_index(&self) -> Result<Option<usize>, EngineError> {
        let Some(tenures) = self.inner.store.operational_tenures().await? else { return Ok(None) };
        let pools = self.inner.topology.networks.values().filter_map(|n| n.pool.as_ref().map(|p| p.range())).collect();
        let index = address_index::AddressIndex::new(tenures, pools);
        let count = index.len();
        *self.inner.address_index.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(index));
        Ok(Some(count))
    }

    /// When this engine started.
    pub fn started_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.started_at
    }

    /// The quarantine network that NICs of `network` move to, as configured.
    pub fn quarantine_network_of(&self, network: &str) -> Option<String> {
        self.inner.topology.networks.get(network).and_then(|plan| plan.quarantine_network.clone())
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Events as they happen (notifications subscribe here).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    /// Sends an event; nobody listening is fine.
    pub(crate) fn emit(&self, event: EngineEvent) {
        let _ = self.inner.events.send(event);
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn instance(&self) -> &str {
        &self.inner.settings.instance
    }

    /// Commits a quarantine or unquarantine action and wakes a worker. Returns once the action
    /// is durable; the network changes afterwards (follow the action to see it end).
    pub async fn request(&self, request: Request) -> Result<Submitted, EngineError> {
        let inner = &self.inner;
        let server = self.live_server(&request.server).await?;
        if let Some(action) = inner.store.open_action(server.id, request.kind).await? {
            let message = EngineError::message_ref(
                &messages::ACTION_ALREADY_OPEN,
                &[("server", &server.name), ("kind", &request.kind), ("action", &action.id)],
            );
            return Ok(Submitted { action, existing: true, message });
        }
        let opposite = match request.kind {
            ActionKind::Unquarantine => ActionKind::Quarantine,
            _ => ActionKind::Unquarantine,
        };
        // With an opposite action still open, the end state is not known yet: queue behind it.
        let opposite_open = inner.store.open_action(server.id, opposite).await?.is_some();
        if !opposite_open {
            match (request.kind, server.state) {
                (ActionKind::Quarantine, ServerState::Quarantined) => {
                    return Err(EngineError::new(
                        ErrorKind::Conflict,
                        &messages::ALREADY_QUARANTINED,
                        &[("server", &server.name)],
                    ));
                }
                (ActionKind::Unquarantine, ServerState::Operational) => {
                    return Err(EngineError::new(
                        ErrorKind::Conflict,
                        &messages::NOT_QUARANTINED,
                        &[("server", &server.name)],
                    ));
                }
                _ => {}
            }
        }
        self.refuse_infrastructure(&server, request.kind)?;
        if request.kind != ActionKind::Reboot {
            inner.topology.check_movable(&server)?;
        }
        if matches!(request.kind, ActionKind::Reboot | ActionKind::QuarantineReboot)
            && inner.topology.power(&server).is_none()
        {
            return Err(EngineError::new(
                ErrorKind::Unprocessable,
                &messages::NO_POWER_DRIVER,
                &[("server", &server.name)],
            ));
        }
        let action = inner
            .store
            .create_action(&NewAction {
                kind: request.kind,
                server_id: Some(server.id),
                address: None,
                state: ActionState::Pending,
                reason: request.reason.clone(),
                trigger: request.trigger.clone(),
                requested_by: request.actor.name.clone(),
                instance: inner.settings.instance.clone(),
                decided_by: Some("operator".into()),
                message: None,
            })
            .await?;
        inner.metrics.action_created(request.kind);
        self.audit(
            &request.actor,
            request.kind.as_str(),
            &format!("server {}", server.name),
            &format!("action {} created; reason: {}", action.id, request.reason.as_deref().unwrap_or("-")),
        )
        .await?;
        tracing::info!(action = action.id, server = %server.name, kind = %request.kind, actor = %request.actor.name, "action queued");
        inner.wake.notify_one();
        let message = EngineError::message_ref(
            &messages::ACTION_QUEUED,
            &[("kind", &request.kind), ("server", &server.name), ("action", &action.id)],
        );
        Ok(Submitted { action, existing: false, message })
    }

    /// An operator acknowledges a failed (or retrying) action: Cordon will not act on it again.
    /// The server stays where it is; only `unquarantine` releases a server.
    pub async fn check(&self, id: i64, actor: &Actor) -> Result<ActionRecord, EngineError> {
        let message = EngineError::message_ref(&messages::ACTION_CHECKED, &[("action", &id), ("actor", &actor.name)]);
        let action = self.operator_command(id, ActionCommand::Check, message.clone()).await?;
        self.note(&message, action.server_id, Some(id)).await?;
        self.audit(actor, "check", &format!("action {id}"), "").await?;
        Ok(action)
    }

    /// An operator asks for another attempt of a failed action. Steps are idempotent, so the
    /// attempt completes only what is missing.
    pub async fn retry(&self, id: i64, actor: &Actor) -> Result<ActionRecord, EngineError> {
        let message =
            EngineError::message_ref(&messages::ACTION_RETRY_QUEUED, &[("action", &id), ("actor", &actor.name)]);
        let action = self.operator_command(id, ActionCommand::Retry, message.clone()).await?;
        self.note(&message, action.server_id, Some(id)).await?;
        self.audit(actor, "retry", &format!("action {id}"), "").await?;
        self.inner.wake.notify_one();
        Ok(action)
    }

    /// An operator withdraws an action that has not started (pending, or awaiting approval).
    pub async fn cancel(&self, id: i64, actor: &Actor) -> Result<ActionRecord, EngineError> {
        let message = EngineError::message_ref(&messages::ACTION_CANCELLED, &[("action", &id), ("actor", &actor.name)]);
        let current =
            self.inner.store.action(id).await?.ok_or_else(|| {
                EngineError::new(ErrorKind::NotFound, &messages::ACTION_NOT_FOUND, &[("action", &id)])
            })?;
        // Awaiting approval, "cancel" is a rejection: the state machine has one way out of it.
        let command =
            if current.state == ActionState::AwaitingApproval { ActionCommand::Reject } else { ActionCommand::Cancel };
        let action = self.operator_command(id, command, message.clone()).await.map_err(|mut error| {
            if error.message.number == messages::ACTION_STATE_FORBIDS.number {
                error.text = messages::ACTION_STATE_FORBIDS.render(&[
                    ("action", &id),
                    ("state", &current.state),
                    ("command", &"cancel"),
                ]);
            }
            error
        })?;
        self.note(&message, action.server_id, Some(id)).await?;
        self.audit(actor, "cancel", &format!("action {id}"), "").await?;
        Ok(action)
    }

    async fn operator_command(
        &self,
        id: i64,
        command: ActionCommand,
        message: MessageRef,
    ) -> Result<ActionRecord, EngineError> {
        let store = &self.inner.store;
        let action = store
            .action(id)
            .await?
            .ok_or_else(|| EngineError::new(ErrorKind::NotFound, &messages::ACTION_NOT_FOUND, &[("action", &id)]))?;
        match store.transition_action(id, action.generation, command, Some(message)).await {
            Ok(action) => Ok(action),
            Err(StoreError::InvalidTransition { source, .. }) => Err(EngineError::new(
                ErrorKind::Conflict,
                &messages::ACTION_STATE_FORBIDS,
                &[("action", &id), ("state", &source.from), ("command", &command)],
            )),
            // Someone moved the action between our read and our write: say what it is now.
            Err(StoreError::Conflict { .. }) => {
                let now = store.action(id).await?.map(|a| a.state).unwrap_or(action.state);
                Err(EngineError::new(
                    ErrorKind::Conflict,
                    &messages::ACTION_STATE_FORBIDS,
                    &[("action", &id), ("state", &now), ("command", &command)],
                ))
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn live_server(&self, name: &str) -> Result<ServerRecord, EngineError> {
        match self.inner.store.server_by_name(name).await? {
            Some(server) if !server.retired => Ok(server),
            _ => Err(EngineError::new(ErrorKind::NotFound, &messages::SERVER_NOT_FOUND, &[("name", &name)])),
        }
    }

    /// Puts actions that a previous process left `running` back in line: their steps are
    /// idempotent, so running them again finishes what the dead process started.
    ///
    /// At start, these are the actions this instance itself held (its previous process died)
    /// and those whose lease expired; while running, [`Engine::run`] takes over the latter.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let instance = self.inner.settings.instance.clone();
        let now = chrono::Utc::now().timestamp_micros();
        let running = self.inner.store.orphaned_actions(now, Some(&instance)).await?;
        let mut resumed = 0;
        for action in running {
            resumed += usize::from(self.take_over(action).await?);
        }
        // An action without a server cannot run; one left open (by an older version, or a crash
        // between commits) is failed with the message that says why.
        for action in self.inner.store.runnable_actions(u32::MAX).await? {
            if action.server_id.is_some() {
                continue;
            }
            let address = action.address.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
            let message = EngineError::message_ref(&messages::SERVER_NOT_FOUND_BY_ADDRESS, &[("address", &address)]);
            let mut current = action;
            if current.state == ActionState::Pending {
                current = self
                    .inner
                    .store
                    .transition_action(current.id, current.generation, ActionCommand::Start, None)
                    .await?;
            }
            self.inner
                .store
                .transition_action(current.id, current.generation, ActionCommand::Fail, Some(message))
                .await?;
            tracing::warn!(action = current.id, "an action without a server was left open: failed with 67198");
        }
        self.inner.wake.notify_one();
        Ok(resumed)
    }

    /// Puts an action whose lease expired back in line (compare-and-swap: one instance does
    /// it); a worker then resumes it from its journal. False when another instance was first.
    async fn take_over(&self, action: ActionRecord) -> Result<bool, EngineError> {
        // Never an action a worker of this process is running (its server is busy here).
        if let Some(server_id) = action.server_id
            && self.inner.busy.lock().unwrap_or_else(|p| p.into_inner()).contains(&server_id)
        {
            return Ok(false);
        }
        let previous = action.lease_owner.clone().unwrap_or_else(|| "unknown".into());
        let message = EngineError::message_ref(
            &messages::ACTION_TAKEN_OVER,
            &[("action", &action.id), ("previous", &previous), ("instance", &self.inner.settings.instance)],
        );
        match self
            .inner
            .store
            .transition_action(action.id, action.generation, ActionCommand::Backoff, Some(message.clone()))
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. } | StoreError::InvalidTransition { .. }) => return Ok(false),
            Err(other) => return Err(other.into()),
        }
        self.note(&message, action.server_id, Some(action.id)).await?;
        self.inner.metrics.action_taken_over();
        Ok(true)
    }

    /// Takes over the running actions whose lease expired (their instance died or stalled).
    async fn take_over_orphans(&self) -> Result<(), EngineError> {
        let now = chrono::Utc::now().timestamp_micros();
        for action in self.inner.store.orphaned_actions(now, None).await? {
            if self.take_over(action).await? {
                self.inner.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Takes or renews the named lease (`reconciler`, `detections`) for `lease`; false when
    /// another instance holds it. A database error counts as not holding it.
    pub(crate) async fn hold_lease(&self, name: &str, lease: Duration) -> bool {
        let until = execute::lease_until(lease);
        match self.inner.store.acquire_lease(name, &self.inner.settings.instance, until).await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(%error, lease = name, "could not take the lease");
                false
            }
        }
    }

    /// Records this instance's heartbeat now and every third of the action lease until
    /// `shutdown` (`cordon status` lists the instances from these).
    pub async fn run_heartbeat(&self, address: String, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let settings = &self.inner.settings;
            if let Err(error) = self.inner.store.heartbeat(&settings.instance, &address, self.inner.started_at).await {
                tracing::warn!(%error, "could not record this instance's heartbeat");
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(settings.action_lease / 3) => {}
            }
        }
    }

    /// Runs actions until `shutdown` completes. Workers already started finish their step.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.dispatch().await {
                tracing::error!(%error, "dispatcher could not read runnable actions");
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.settings.poll_interval) => {}
            }
        }
    }

    /// Starts a worker for runnable actions, one per server and at most `settings.workers` at
    /// once; a worker that ends pokes the dispatcher, which then starts the next.
    async fn dispatch(&self) -> Result<(), EngineError> {
        let due = {
            let mut checked = self.inner.orphans_checked.lock().unwrap_or_else(|p| p.into_inner());
            let due = checked.is_none_or(|at| at.elapsed() >= self.inner.settings.poll_interval);
            if due {
                *checked = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            self.take_over_orphans().await?;
        }
        let free = self.inner.workers.available_permits();
        if free == 0 {
            return Ok(());
        }
        // Actions already handed to a worker stay runnable until it claims them (a moment), and
        // an action whose server is busy waits: read a little past them.
        let limit = u32::try_from(2 * free + 32).unwrap_or(u32::MAX);
        for action in self.inner.store.runnable_actions(limit).await? {
            if self.start_worker(action, None) == Started::NoWorkerFree {
                break;
            }
        }
        Ok(())
    }

    /// Starts a worker for a runnable action when a worker is free and its server has none.
    /// `server` is the server's record when the caller has just read it (the detection
    /// processor hands a new action straight to a worker this way, without waiting for the
    /// dispatcher); the worker reads it otherwise.
    pub(crate) fn start_worker(&self, action: ActionRecord, server: Option<ServerRecord>) -> Started {
        let Some(server_id) = action.server_id else { return Started::Not };
        let Ok(permit) = self.inner.workers.clone().try_acquire_owned() else { return Started::NoWorkerFree };
        let claimed = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner()).insert(server_id);
        if !claimed {
            return Started::Not;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let id = action.id;
            if let Err(error) = engine.execute(action, server).await {
                tracing::error!(action = id, %error, "action execution stopped on an internal error");
            }
            engine.inner.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&server_id);
            drop(permit);
            engine.inner.wake.notify_one();
        });
        Started::Yes
    }

    /// Records a numbered message that belongs to no action (start-up, reload, ...); a failure
    /// to record it is logged, never fatal.
    pub async fn record_note(&self, number: u32, text: String) {
        if let Err(error) = self.note(&MessageRef { number, text }, None, None).await {
            tracing::warn!(%error, "could not record message {number}");
        }
    }

    /// Refuses to isolate a server that holds an address Cordon itself or its drivers depend on
    /// (message 60093): cutting it off would cut Cordon off from the network it manages.
    pub(crate) fn refuse_infrastructure(&self, server: &ServerRecord, kind: ActionKind) -> Result<(), EngineError> {
        if !kind.quarantines() {
            return Ok(());
        }
        let infrastructure = &self.inner.settings.infrastructure;
        for address in server.nics.iter().flat_map(|nic| [nic.operational_ip, nic.current_ip]).flatten() {
            if let Some((_, what)) = infrastructure.iter().find(|(held, _)| *held == address) {
                return Err(EngineError::new(
                    ErrorKind::Unprocessable,
                    &messages::INFRASTRUCTURE_REFUSED,
                    &[("server", &server.name), ("address", &address), ("what", what)],
                ));
            }
        }
        Ok(())
    }

    /// The newest `limit` rows of the audit trail.
    pub async fn audit_trail(&self, limit: u32) -> Result<Vec<cordon_store::AuditRecord>, EngineError> {
        Ok(self.inner.store.list_audit(limit).await?)
    }

    /// Verifies the whole audit chain; a break is logged as message 60094 and returned.
    pub async fn verify_audit(&self) -> Result<cordon_store::AuditVerdict, EngineError> {
        let verdict = cordon_store::verify_audit(self.inner.store.as_ref()).await?;
        let summary = &verdict.verified;
        match &verdict.broken {
            None => tracing::info!(
                number = messages::AUDIT_VERIFIED.number,
                "{}",
                messages::AUDIT_VERIFIED.render(&[
                    ("rows", &summary.rows),
                    ("id", &summary.head_id),
                    ("hash", &summary.head_hash)
                ])
            ),
            Some(broken) => tracing::error!(
                number = messages::AUDIT_CHAIN_BROKEN.number,
                "{}",
                messages::AUDIT_CHAIN_BROKEN.render(&[("id", &broken.id), ("detail", &broken.detail)])
            ),
        }
        Ok(verdict)
    }

    /// Records a numbered message.
    async fn note(
        &self,
        message: &MessageRef,
        server_id: Option<i64>,
        action_id: Option<i64>,
    ) -> Result<(), EngineError> {
        self.inner.store.record_message(&self.message_row(message, server_id, action_id)).await?;
        self.announce(message, server_id, action_id);
        Ok(())
    }

    /// A numbered message as a row of the message log, for a store call that records it with
    /// other records; [`Engine::announce`] it once that call returned.
    pub(crate) fn message_row(
        &self,
        message: &MessageRef,
        server_id: Option<i64>,
        action_id: Option<i64>,
    ) -> NewMessage {
        NewMessage {
            number: message.number,
            text: message.text.clone(),
            server_id,
            action_id,
            instance: self.inner.settings.instance.clone(),
        }
    }

    /// What follows the recording of a numbered message: the structured log line (with its
    /// number) and the event that live consoles follow.
    pub(crate) fn announce(&self, message: &MessageRef, server_id: Option<i64>, action_id: Option<i64>) {
        let number = message.number;
        match number / 10_000 {
            2 => tracing::info!(number, action = action_id, "{}", message.text),
            4 => tracing::warn!(number, action = action_id, "{}", message.text),
            _ => tracing::error!(number, action = action_id, "{}", message.text),
        }
        self.emit(EngineEvent::Recorded { number, action: action_id, server: server_id });
    }

    async fn audit(&self, actor: &Actor, verb: &str, target: &str, detail: &str) -> Result<(), EngineError> {
        self.inner
            .store
            .append_audit(&AuditEntry {
                actor: actor.name.clone(),
                origin: actor.origin.clone(),
                verb: verb.to_string(),
                target: target.to_string(),
                detail: detail.to_string(),
                instance: self.inner.settings.instance.clone(),
            })
            .await?;
        Ok(())
    }
}
