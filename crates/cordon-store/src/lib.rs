//! Cordon's durable records behind one trait.
//!
//! Architecture invariant: nothing backend-specific crosses [`Store`]: no SQL, no connection, no
//! row type. The SQLite implementation is the embedded default; a PostgreSQL one implements the
//! same trait and runs the same suite (`tests/suite.rs`).
//!
//! Architecture invariant: an action's state only changes through [`Store::transition_action`],
//! which applies the model's state machine and compares-and-swaps the generation, so two
//! writers can never both move one action.

mod audit;
mod postgres;
mod sqlite;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use cordon_model::{
    ActionCommand, ActionKind, ActionState, AddressPool, Detection, InvalidTransition, MacAddr, NetworkRole, Role,
    ServerKind, ServerState,
};

pub use audit::{AUDIT_GENESIS, AuditBreak, AuditSummary, AuditVerdict, AuditVerifier, audit_hash, verify_audit};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub type Timestamp = DateTime<Utc>;

/// What can go wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("action {id} changed concurrently (expected generation {expected}, found {found})")]
    Conflict { id: i64, expected: i64, found: i64 },
    #[error("action {id}: {source}")]
    InvalidTransition { id: i64, source: InvalidTransition },
    #[error("action {id} is {state}: its kind can no longer change")]
    KindLocked { id: i64, state: ActionState },
    #[error("quarantine address pool of network {network} is exhausted ({range})")]
    PoolExhausted { network: String, range: String },
    #[error("database schema version {found} is newer than this binary knows ({known}); upgrade Cordon")]
    SchemaTooNew { found: i64, known: i64 },
    /// A name that must be unique (a token's, a console user's) is taken.
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// Another action of the same server is running (one action per server at a time, across
    /// every instance).
    #[error("action {id} cannot start: server {server_id} has another action running")]
    ServerBusy { id: i64, server_id: i64 },
    /// The detection was already settled (by another instance).
    #[error("detection {id} was already processed")]
    AlreadySettled { id: i64 },
    /// The database cannot be reached (refused, unknown host, authentication).
    #[error("cannot connect to the database: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A network as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub role: NetworkRole,
    pub subnet: String,
    pub quarantine_network: Option<String>,
    pub pool: Option<String>,
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub name: String,
    pub admin_email: String,
}

/// A server as configured; the store keeps it and adds where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub name: String,
    pub kind: ServerKind,
    pub tenant: Option<String>,
    pub user_email: Option<String>,
    pub nics: Vec<NicSpec>,
    /// For a virtual server: the hypervisor and the domain that run it.
    pub hypervisor: Option<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub mac: MacAddr,
    /// The operational network.
    pub network: String,
    /// The operational address; `None` for a VM imported from a hypervisor, whose address is
    /// not known yet (detections cannot resolve to that NIC until it is configured).
    pub ip: Option<IpAddr>,
    pub switch: Option<String>,
    pub port: Option<String>,
}

/// Everything the configuration says about the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub networks: Vec<NetworkSpec>,
    pub tenants: Vec<TenantSpec>,
    pub servers: Vec<ServerSpec>,
}

/// What an inventory sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    /// Servers that left the configuration in this sync (flagged, never deleted).
    pub retired: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    pub id: i64,
    pub name: String,
    pub kind: ServerKind,
    pub tenant: Option<String>,
    pub user_email: Option<String>,
    pub state: ServerState,
    pub retired: bool,
    pub nics: Vec<NicRecord>,
    pub updated_at: Timestamp,
    /// For a virtual server: the hypervisor and the domain that run it.
    pub hypervisor: Option<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRecord {
    pub mac: MacAddr,
    /// The operational network from the configuration.
    pub network: String,
    pub operational_ip: Option<IpAddr>,
    pub switch: Option<String>,
    pub port: Option<String>,
    /// The network Cordon last put the NIC on (or found it on).
    pub current_network: String,
    /// The address the NIC has on `current_network`, as Cordon assigned it.
    pub current_ip: Option<IpAddr>,
}

/// A numbered message attached to an action or server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub number: u32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAction {
    pub kind: ActionKind,
    pub server_id: Option<i64>,
    /// The address that triggered the action, when it came from one.
    pub address: Option<IpAddr>,
    /// `pending`, or `awaiting_approval` when policy holds it.
    pub state: ActionState,
    pub reason: Option<String>,
    /// Where the request came from: `api`, `cli`, `policy`, ...
    pub trigger: String,
    pub requested_by: String,
    pub instance: String,
    /// What decided it: `operator`, `rule <name>`, `default`, ...
    pub decided_by: Option<String>,
    /// Its first numbered message, if it starts with one (e.g. 21014 awaiting approval).
    pub message: Option<MessageRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    pub id: i64,
    pub kind: ActionKind,
    pub state: ActionState,
    pub generation: i64,
    pub server_id: Option<i64>,
    pub server_name: Option<String>,
    pub address: Option<IpAddr>,
    pub reason: Option<String>,
    pub trigger: String,
    pub requested_by: String,
    pub instance: String,
    /// How many times a worker started the action.
    pub attempts: u32,
    pub message: Option<MessageRef>,
    /// How many detections are attached to the action.
    pub detections: u64,
    pub decided_by: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// While `running`: the instance that holds the action's lease (runs it).
    pub lease_owner: Option<String>,
}

/// A stored detection and what the engine made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionRecord {
    pub id: i64,
    pub detection: Detection,
    pub instance: String,
    /// None until the engine has processed it.
    pub decision: Option<String>,
    pub server_id: Option<i64>,
    pub server_name: Option<String>,
    pub action_id: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectionFilter {
    pub source: Option<String>,
    pub action_id: Option<i64>,
    /// Newest first, at most this many (default 100).
    pub limit: Option<u32>,
}

/// Where a followed file stands, committed with the detections read before it.
/// One tenure of an operational address (a row of the address history of kind `operational`):
/// `server_id` held `ip` from `from_us` until `to_us` (open while it still holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationalTenure {
    pub ip: IpAddr,
    pub server_id: i64,
    pub from_us: i64,
    pub to_us: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCheckpoint {
    pub source: String,
    pub path: String,
    pub inode: u64,
    pub offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionFilter {
    pub state: Option<ActionState>,
    pub server_id: Option<i64>,
    /// Newest first, at most this many (default 500).
    pub limit: Option<u32>,
}

/// How a journaled step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step changed something and read it back.
    Done,
    /// The state already matched: nothing was changed.
    AlreadyInPlace,
    Failed,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Done => "done",
            StepOutcome::AlreadyInPlace => "already_in_place",
            StepOutcome::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [StepOutcome::Done, StepOutcome::AlreadyInPlace, StepOutcome::Failed].into_iter().find(|o| o.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStep {
    pub action_id: i64,
    pub attempt: u32,
    /// The idempotent step, e.g. `ensure_port_on_bridge`.
    pub name: String,
    /// What it acted on, e.g. `tor-1/p-sbc-01`.
    pub target: String,
    pub outcome: StepOutcome,
    pub detail: String,
    pub message_number: Option<u32>,
    pub instance: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub seq: i64,
    pub step: NewStep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub number: u32,
    pub text: String,
    pub server_id: Option<i64>,
    pub action_id: Option<i64>,
    pub instance: String,
}

/// A NIC's new position (network and address there), as [`Store::record_nic_position`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPosition {
    pub server_id: i64,
    pub mac: MacAddr,
    pub network: String,
    pub ip: Option<IpAddr>,
}

/// A NIC's address on a quarantine network, leased as [`Store::lease_address`] leases it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub server_id: i64,
    pub mac: MacAddr,
    pub network: String,
    pub pool: AddressPool,
}

/// Records written in the same transaction as a change, so that what the engine records around
/// one step costs one durable commit instead of several (and nothing less is recorded). Applied
/// after the change itself (before its audit row), in this order: leased and released quarantine addresses,
/// journal rows, numbered messages, the server's state, NIC positions (the last two write their
/// audit rows as their own calls would; last, so that PostgreSQL holds the audit chain's lock for
/// as short a time as possible). If any of them fails, nothing of the transaction is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alongside {
    /// (server, state), as [`Store::set_server_state`].
    pub server_state: Option<(i64, ServerState)>,
    pub nic_positions: Vec<NicPosition>,
    /// Quarantine addresses to lease (kept when the NIC holds one); an empty pool fails the
    /// whole call with [`StoreError::PoolExhausted`].
    pub leases: Vec<LeaseRequest>,
    /// (server, NIC, quarantine network), as [`Store::release_address`].
    pub releases: Vec<(i64, MacAddr, String)>,
    pub steps: Vec<NewStep>,
    pub messages: Vec<NewMessage>,
}

impl Alongside {
    pub fn is_empty(&self) -> bool {
        self == &Alongside::default()
    }
}

/// The detection a new action is created for, settled in the same transaction (see
/// [`Store::create_action_settling`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub detection_id: i64,
    /// The detection's decision; `{action}` in it stands for the new action's id.
    pub decision: String,
}

impl Settlement {
    /// The decision as recorded for the action `id`.
    pub fn decision_for(&self, id: i64) -> String {
        self.decision.replace("{action}", &id.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: i64,
    pub message: NewMessage,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub actor: String,
    /// Where the request came from (a peer address, `cli`, `engine`).
    pub origin: String,
    pub verb: String,
    pub target: String,
    pub detail: String,
    pub instance: String,
}

/// One row of the hash-chained audit trail (see [`audit`](crate::AuditVerifier)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Timestamp,
    pub entry: AuditEntry,
    /// The hash of the row before (the genesis hash for the first row).
    pub prev_hash: String,
    /// [`audit_hash`] of this row.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub revoked: bool,
    /// When the token stops working; `None`: never. An expired token is refused like an unknown one.
    pub expires_at: Option<Timestamp>,
}

/// A local account of the web console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// The argon2id hash in PHC string form; never the password.
    pub password_hash: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A console session as it is created at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// SHA-256 (hex) of the session id in the cookie; the id itself is never stored.
    pub hash: String,
    pub user_id: i64,
    /// The synchronizer token that every form of the session carries.
    pub csrf: String,
    /// The absolute end of the session, whatever its activity.
    pub expires_at: Timestamp,
}

/// A stored session with its user's name and role (read together: one query per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: i64,
    pub user_id: i64,
    pub user_name: String,
    pub role: Role,
    pub csrf: String,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A manager process, as its heartbeats record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// `[manager] instance`.
    pub name: String,
    /// Where its API listens, as it said.
    pub address: String,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    /// The running actions it holds a lease on, with the lease expiry (Unix microseconds).
    pub actions: Vec<(i64, i64)>,
    /// The named leases it holds (`reconciler`, `detections`), with their expiry.
    pub leases: Vec<(String, i64)>,
}

/// Cordon's durable state. Every method commits before it returns.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Upserts networks, tenants and servers by name; flags servers that left as retired.
    /// A NIC that stays keeps where it stands; a new NIC starts on its operational network.
    async fn sync_inventory(&self, inventory: &Inventory) -> Result<SyncReport>;
    /// Adds the servers whose names are not stored yet (an import from a hypervisor), marked with
    /// `origin`; such servers are not retired when they are absent from the configuration.
    async fn import_servers(&self, servers: &[ServerSpec], origin: &str) -> Result<SyncReport>;
    async fn list_servers(&self) -> Result<Vec<ServerRecord>>;
    async fn server_by_name(&self, name: &str) -> Result<Option<ServerRecord>>;
    async fn server_by_id(&self, id: i64) -> Result<Option<ServerRecord>>;
    /// The non-retired server that has `address` as an operational or current address.
    async fn server_by_address(&self, address: IpAddr) -> Result<Option<ServerRecord>>;
    async fn set_server_state(&self, server_id: i64, state: ServerState) -> Result<()>;
    /// Records where a NIC now is and which address it has there.
    async fn record_nic_position(&self, server_id: i64, mac: MacAddr, network: &str, ip: Option<IpAddr>) -> Result<()>;
    /// Writes every record of `records` in one transaction (see [`Alongside`]).
    async fn record_alongside(&self, records: &Alongside) -> Result<()>;

    /// The NIC's lease on `network`, taking the lowest free address of `pool` if it has none.
    /// Atomic: two NICs never hold one address.
    async fn lease_address(&self, server_id: i64, mac: MacAddr, network: &str, pool: &AddressPool) -> Result<IpAddr>;
    async fn release_address(&self, server_id: i64, mac: MacAddr, network: &str) -> Result<()>;

    async fn create_action(&self, action: &NewAction) -> Result<ActionRecord> {
        self.create_action_settling(action, None).await
    }
    /// Creates an action and, with `settles`, settles that detection on it in the same
    /// transaction ([`StoreError::AlreadySettled`] then writes nothing): an action exists if and
    /// only if the detection that asked for it says so.
    async fn create_action_settling(&self, action: &NewAction, settles: Option<&Settlement>) -> Result<ActionRecord>;
    async fn action(&self, id: i64) -> Result<Option<ActionRecord>>;
    async fn list_actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>>;
    /// How many actions there are of each kind in each state.
    async fn count_actions(&self) -> Result<Vec<(ActionKind, ActionState, u64)>>;
    /// The newest action of every server that has one.
    async fn latest_actions(&self) -> Result<Vec<ActionRecord>>;
    /// The oldest open action of `kind` on the server, if any.
    async fn open_action(&self, server_id: i64, kind: ActionKind) -> Result<Option<ActionRecord>>;
    /// Actions a worker should run now (pending, or retrying and due), oldest first.
    /// At most `limit` of them.
    async fn runnable_actions(&self, limit: u32) -> Result<Vec<ActionRecord>>;
    /// Every `running` action, oldest first.
    async fn running_actions(&self) -> Result<Vec<ActionRecord>>;
    /// Starts a runnable action for `instance`: the `start` transition (compare-and-swap on the
    /// generation, counting an attempt) and the action's lease until `until_us` (Unix
    /// microseconds), in one transaction. Fails with [`StoreError::ServerBusy`] when another
    /// action of the same server is running, whichever instance runs it.
    async fn claim_action(
        &self,
        id: i64,
        generation: i64,
        instance: &str,
        until_us: i64,
        message: Option<MessageRef>,
    ) -> Result<ActionRecord> {
        self.claim_action_alongside(id, generation, instance, until_us, message, &Alongside::default()).await
    }
    /// [`Store::claim_action`], writing `alongside` in the same transaction.
    async fn claim_action_alongside(
        &self,
        id: i64,
        generation: i64,
        instance: &str,
        until_us: i64,
        message: Option<MessageRef>,
        alongside: &Alongside,
    ) -> Result<ActionRecord>;
    /// Extends the lease of a running action held by `instance`; false when it no longer holds
    /// it (the action ended, or another instance took it over after the lease expired).
    async fn renew_action_lease(&self, id: i64, instance: &str, until_us: i64) -> Result<bool>;
    /// Running actions whose lease expired before `now_us` (their instance died or stalled),
    /// and, with `previous_life` (an instance starting), also those that instance itself held
    /// (its previous process died) and those without a lease (started by an older version).
    async fn orphaned_actions(&self, now_us: i64, previous_life: Option<&str>) -> Result<Vec<ActionRecord>>;
    /// Applies `command` if the action is still at `generation`; bumps the generation, counts
    /// an attempt on `start`, and sets the action's message when one is given.
    async fn transition_action(
        &self,
        id: i64,
        generation: i64,
        command: ActionCommand,
        message: Option<MessageRef>,
    ) -> Result<ActionRecord> {
        self.transition_action_alongside(id, generation, command, message, &Alongside::default()).await
    }
    /// [`Store::transition_action`], writing `alongside` in the same transaction.
    async fn transition_action_alongside(
        &self,
        id: i64,
        generation: i64,
        command: ActionCommand,
        message: Option<MessageRef>,
        alongside: &Alongside,
    ) -> Result<ActionRecord>;
    /// A running action whose attempt failed for a reason that may pass: `backoff` to
    /// `retrying`, not runnable before `not_before_us` (Unix microseconds).
    async fn defer_action(
        &self,
        id: i64,
        generation: i64,
        not_before_us: i64,
        message: MessageRef,
    ) -> Result<ActionRecord>;
    /// The same, setting the action's kind in the same step (approval as another kind).
    async fn transition_action_as(
        &self,
        id: i64,
        generation: i64,
        command: ActionCommand,
        kind: ActionKind,
        message: Option<MessageRef>,
    ) -> Result<ActionRecord>;

    /// The newest open action of the server, whatever its kind.
    async fn open_actions(&self, server_id: i64) -> Result<Vec<ActionRecord>>;
    /// The newest action recorded for an address that resolved to no server, while it is not
    /// yet checked (so repeated alerts for an unknown host attach to one action).
    async fn unresolved_action(&self, address: IpAddr) -> Result<Option<ActionRecord>>;
    /// Changes the kind of an action that has not started (escalation, or approval of a
    /// `notify` as another kind), compare-and-swap on the generation.
    async fn change_action_kind(&self, id: i64, generation: i64, kind: ActionKind) -> Result<ActionRecord>;

    /// Commits detections, and the checkpoint of the file they were read from, in one
    /// transaction. Returns their ids in order.
    async fn record_detections(
        &self,
        detections: &[Detection],
        instance: &str,
        checkpoint: Option<&SourceCheckpoint>,
    ) -> Result<Vec<i64>>;
    async fn checkpoint(&self, source: &str) -> Result<Option<SourceCheckpoint>>;
    /// Detections not processed yet, oldest first.
    async fn unprocessed_detections(&self, limit: u32) -> Result<Vec<DetectionRecord>>;
    /// Records what the engine decided; with an action, counts the detection on it. A
    /// compare-and-swap: [`StoreError::AlreadySettled`] when the detection has a decision.
    async fn settle_detection(
        &self,
        id: i64,
        decision: &str,
        server_id: Option<i64>,
        action_id: Option<i64>,
    ) -> Result<()>;
    async fn list_detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRecord>>;
    /// The servers that held `address` at `at_us` (Unix microseconds), from the address history.
    async fn servers_holding(&self, address: IpAddr, at_us: i64) -> Result<Vec<i64>>;
    /// Every tenure of an operational address, for the engine's in-memory address index.
    /// Operational tenures change only when the inventory is synced from the configuration.
    /// `None` (the default) means the backend offers none: the engine then resolves every
    /// address through [`Store::servers_holding`].
    async fn operational_tenures(&self) -> Result<Option<Vec<OperationalTenure>>> {
        Ok(None)
    }

    async fn append_step(&self, step: &NewStep) -> Result<StepRecord>;
    async fn steps(&self, action_id: i64) -> Result<Vec<StepRecord>>;

    async fn record_message(&self, message: &NewMessage) -> Result<MessageRecord>;
    async fn messages_for_action(&self, action_id: i64) -> Result<Vec<MessageRecord>>;
    async fn recent_messages(&self, limit: u32) -> Result<Vec<MessageRecord>>;

    /// Appends a row to the hash chain. Architecture invariant: the store also appends one, in
    /// the same transaction, for every change of an action's or a server's state and of a NIC's
    /// position, so that the trail holds every state change with the change itself.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord>;
    /// Newest first, at most `limit`.
    async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>>;
    /// Rows with an id above `after_id`, oldest first, at most `limit` (for verification).
    async fn audit_rows(&self, after_id: i64, limit: u32) -> Result<Vec<AuditRecord>>;

    /// A new token (`AlreadyExists` when the name is taken, even by a revoked token).
    async fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<TokenRecord>;
    /// The live token with this hash: not revoked and not expired.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;
    async fn count_tokens(&self) -> Result<u64>;
    /// Every token, revoked and expired ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Revokes a token for good (`NotFound` for an unknown id; revoking twice changes nothing).
    async fn revoke_token(&self, id: i64) -> Result<TokenRecord>;

    /// A console account (`AlreadyExists` when the name is taken).
    async fn create_user(&self, name: &str, role: Role, password_hash: &str) -> Result<UserRecord>;
    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Every console account, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Replaces the password hash and ends every session of the user (`NotFound` if unknown).
    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<()>;
    /// Removes the account and its sessions (`NotFound` if unknown).
    async fn remove_user(&self, name: &str) -> Result<()>;

    async fn create_session(&self, session: &NewSession) -> Result<SessionRecord>;
    /// The session with this hash, whether expired or not (the caller applies the lifetimes).
    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>>;
    /// Records activity on a session (the idle timeout counts from here).
    async fn touch_session(&self, id: i64, at: Timestamp) -> Result<()>;
    /// Ends a session (sign-out); an unknown hash is not an error.
    async fn delete_session(&self, hash: &str) -> Result<()>;
    /// Removes sessions idle since before `idle_before` or past their absolute end at `now`.
    async fn delete_expired_sessions(&self, idle_before: Timestamp, now: Timestamp) -> Result<u64>;

    /// Records that `instance` is alive now (its heartbeat), with where its API listens.
    async fn heartbeat(&self, instance: &str, address: &str, started_at: Timestamp) -> Result<()>;
    /// Every instance that ever sent a heartbeat, most recent first, with the leases it holds.
    async fn instances(&self) -> Result<Vec<InstanceRecord>>;
    /// Takes or renews the named lease `name` (`reconciler`, `detections`) for `holder` until
    /// `until_us` (Unix microseconds); false when another holder has it and it has not expired.
    async fn acquire_lease(&self, name: &str, holder: &str, until_us: i64) -> Result<bool>;
}
