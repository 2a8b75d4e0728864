//! The PostgreSQL store: several managers on one database, through `tokio-postgres` and a
//! small `deadpool` pool.
//!
//! Every method takes a pooled connection and runs in one transaction when it writes more than
//! one row. Concurrency between instances is handled by the database itself: row locks
//! (`SELECT ... FOR UPDATE`, `SKIP LOCKED` when claiming an action), transaction-scoped
//! advisory locks where a whole set must be read before an insert (quarantine leases, the
//! inventory sync, migrations, the head of the audit chain), and compare-and-swap updates.
//! PostgreSQL's defaults (`synchronous_commit = on`) make a returned commit durable.
//!
//! The SQL mirrors `sqlite.rs` statement for statement, so that a new `Store` method is written
//! twice the same way: `$n` parameters, BIGINT for every integer, TIMESTAMPTZ for times.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cordon_model::{ActionCommand, ActionKind, ActionState, AddressPool, Detection, MacAddr, Role, ServerState};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::audit::entries;
use crate::*;

/// Ordered migrations; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_initial.sql"),
    include_str!("../migrations/postgres/0002_audit_chain_and_console.sql"),
];

/// The migration that adds the audit chain's columns; the rows before it are sealed with it.
const AUDIT_CHAIN_MIGRATION: usize = 2;

/// Keys of the transaction-scoped advisory locks (arbitrary, fixed: part of the schema).
const LOCK_MIGRATIONS: i64 = 0x636f_7264_6f6e_0001;
const LOCK_INVENTORY: i64 = 0x636f_7264_6f6e_0002;
/// Serializes audit appends across instances: two rows never claim one predecessor. Always the
/// last lock a transaction takes (right before its commit), so it cannot take part in a deadlock.
const LOCK_AUDIT: i64 = 0x636f_7264_6f6e_0003;

/// Connections per process: enough for the dispatcher, the workers, the API and the sources.
const POOL_SIZE: usize = 16;

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages.
    display: String,
    /// The instance named in the audit rows the store writes for state changes.
    instance: Arc<str>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PostgresStore").field("database", &self.display).field("instance", &self.instance).finish()
    }
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// A database error with its detail (tokio-postgres's `Display` alone says only "db error").
fn db(error: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(explain(&error))
}

/// The error with its causes ("error connecting to server: Connection refused (os error
/// 111)"), and a server error's SQLSTATE and message.
fn explain(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn parse<T: FromStr>(text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse::<T>().map_err(|e| backend(format!("stored value {text:?}: {e}")))
}

fn optional_parse<T: FromStr>(text: Option<String>) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    text.map(|t| parse(&t)).transpose()
}

fn address_text(address: Option<IpAddr>) -> String {
    address.map(|a| a.to_string()).unwrap_or_default()
}

/// The value of column `i`, with the column named in the error.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| backend(format!("column {i}: {e}")))
}

/// A unique constraint names a taken name; anything else is the backend's.
fn unique_violation(error: tokio_postgres::Error, what: &str) -> StoreError {
    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::AlreadyExists { what: what.to_string() }
    } else {
        db(error)
    }
}

const TOKEN_COLUMNS: &str = "id, name, role, created_at, revoked_at IS NOT NULL, expires_at";

fn token_row(row: &Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: get(row, 0)?,
        name: get(row, 1)?,
        role: parse(get::<&str>(row, 2)?)?,
        created_at: get(row, 3)?,
        revoked: get(row, 4)?,
        expires_at: get(row, 5)?,
    })
}

const USER_COLUMNS: &str = "id, name, role, password_hash, created_at, updated_at";

fn user_row(row: &Row) -> Result<UserRecord> {
    Ok(UserRecord {
        id: get(row, 0)?,
        name: get(row, 1)?,
        role: parse(get::<&str>(row, 2)?)?,
        password_hash: get(row, 3)?,
        created_at: get(row, 4)?,
        updated_at: get(row, 5)?,
    })
}

const SESSION_SELECT: &str = "SELECT s.id, s.user_id, u.name, u.role, s.csrf, s.created_at, s.last_seen_at, s.expires_at \
     FROM console_sessions s JOIN console_users u ON u.id = s.user_id";

fn session_row(row: &Row) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id: get(row, 0)?,
        user_id: get(row, 1)?,
        user_name: get(row, 2)?,
        role: parse(get::<&str>(row, 3)?)?,
        csrf: get(row, 4)?,
        created_at: get(row, 5)?,
        last_seen_at: get(row, 6)?,
        expires_at: get(row, 7)?,
    })
}

/// Chains the audit rows written before the chain existed, in id order (once, in the migration
/// that adds the columns: sealing later would hide a row whose hash was removed).
async fn seal_audit(tx: &impl GenericClient) -> Result<()> {
    let rows = tx
        .query("SELECT id, at, actor, origin, verb, target, detail, instance FROM audit ORDER BY id", &[])
        .await
        .map_err(db)?;
    let mut previous = AUDIT_GENESIS.to_string();
    for row in &rows {
        let (id, at, entry) = audit_row_unsealed(row)?;
        let hash = audit_hash(&previous, id, at.timestamp_micros(), &entry);
        tx.execute("UPDATE audit SET prev_hash = $2, hash = $3 WHERE id = $1", &[&id, &previous, &hash])
            .await
            .map_err(db)?;
        previous = hash;
    }
    Ok(())
}

fn audit_row_unsealed(r: &Row) -> Result<(i64, Timestamp, AuditEntry)> {
    Ok((
        get(r, 0)?,
        get(r, 1)?,
        AuditEntry {
            actor: get(r, 2)?,
            origin: get(r, 3)?,
            verb: get(r, 4)?,
            target: get(r, 5)?,
            detail: get(r, 6)?,
            instance: get(r, 7)?,
        },
    ))
}

const AUDIT_COLUMNS: &str = "id, at, actor, origin, verb, target, detail, instance, prev_hash, hash";

fn audit_row(r: &Row) -> Result<AuditRecord> {
    let (id, at, entry) = audit_row_unsealed(r)?;
    Ok(AuditRecord {
        id,
        at,
        entry,
        prev_hash: get::<Option<String>>(r, 8)?.unwrap_or_default(),
        hash: get::<Option<String>>(r, 9)?.unwrap_or_default(),
    })
}

/// Appends one row to the audit chain inside the caller's transaction. The advisory lock
/// serializes appenders across instances until the caller commits, so that two rows never
/// claim one predecessor (a row lock on the last row would not cover an empty trail); it is
/// the transaction's last lock. Read committed: the read of the last row after the lock sees
/// the previous holder's commit.
async fn append_audit_in(tx: &impl GenericClient, entry: &AuditEntry) -> Result<AuditRecord> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_AUDIT]).await.map_err(db)?;
    let last = tx.query_opt("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", &[]).await.map_err(db)?;
    let (id, prev_hash) = match last {
        Some(row) => (get::<i64>(&row, 0)? + 1, get::<Option<String>>(&row, 1)?.unwrap_or_default()),
        None => (1, AUDIT_GENESIS.to_string()),
    };
    // Stored at microsecond precision (TIMESTAMPTZ's), hashed from the same microseconds.
    let at = DateTime::from_timestamp_micros(now_us()).unwrap_or_default();
    let hash = audit_hash(&prev_hash, id, at.timestamp_micros(), entry);
    tx.execute(
        "INSERT INTO audit (id, at, actor, origin, verb, target, detail, instance, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &id,
            &at,
            &entry.actor,
            &entry.origin,
            &entry.verb,
            &entry.target,
            &entry.detail,
            &entry.instance,
            &prev_hash,
            &hash,
        ],
    )
    .await
    .map_err(db)?;
    Ok(AuditRecord { id, at, entry: entry.clone(), prev_hash, hash })
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db` or a key=value string), with
    /// `password` when it is kept out of the URL (read from a file), and applies pending
    /// migrations. Fails with [`StoreError::Unreachable`] when no connection can be made.
    pub async fn connect(url: &str, password: Option<&str>) -> Result<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Unreachable(format!("invalid database URL: {e}")))?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        config.application_name("cordon");
        let display = describe(&config);
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(backend)?;
        let store = PostgresStore { pool, display, instance: Arc::from("cordon") };
        store.migrate().await?;
        Ok(store)
    }

    /// Names the instance in the audit rows written for state changes (default `cordon`).
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = Arc::from(instance);
        self
    }

    /// Where this store connects, without the password (`postgres://user@host:port/db`).
    pub fn describe(&self) -> &str {
        &self.display
    }

    /// `url` as it may be shown: without its password, or as given when it does not parse.
    pub fn redact(url: &str) -> String {
        match tokio_postgres::Config::from_str(url) {
            Ok(config) => describe(&config),
            Err(_) => "(an invalid database URL)".to_string(),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(error) => StoreError::Unreachable(explain(&error)),
            other => StoreError::Unreachable(other.to_string()),
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // Two instances starting together: the second waits, then finds nothing to do.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATIONS]).await.map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)",
        )
        .await
        .map_err(db)?;
        let current: i64 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await.map_err(db)?.get(0);
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::SchemaTooNew { found: current, known });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await.map_err(|e| backend(format!("migration {}: {}", index + 1, db(e))))?;
            if index + 1 == AUDIT_CHAIN_MIGRATION {
                seal_audit(&tx).await?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[&(index as i64 + 1), &Utc::now()],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let name = config.get_dbname().unwrap_or("");
    format!("postgres://{user}@{host}:{port}/{name}")
}

const SERVER_COLUMNS: &str = "id, name, kind, tenant, user_email, state, retired, updated_at, hypervisor, domain";

fn server_row(row: &Row) -> Result<ServerRecord> {
    Ok(ServerRecord {
        id: get(row, 0)?,
        name: get(row, 1)?,
        kind: parse(get::<&str>(row, 2)?)?,
        tenant: get(row, 3)?,
        user_email: get(row, 4)?,
        state: parse(get::<&str>(row, 5)?)?,
        retired: get(row, 6)?,
        nics: Vec::new(),
        updated_at: get(row, 7)?,
        hypervisor: get(row, 8)?,
        domain: get(row, 9)?,
    })
}

async fn load_nics(client: &impl GenericClient, server: &mut ServerRecord) -> Result<()> {
    let rows = client
        .query(
            "SELECT mac, network, operational_ip, switch, port, current_network, current_ip FROM nics
             WHERE server_id = $1 ORDER BY position",
            &[&server.id],
        )
        .await
        .map_err(db)?;
    server.nics = rows
        .iter()
        .map(|row| {
            let operational: String = get(row, 2)?;
            Ok(NicRecord {
                mac: parse(get::<&str>(row, 0)?)?,
                network: get(row, 1)?,
                operational_ip: if operational.is_empty() { None } else { Some(parse(&operational)?) },
                switch: get(row, 3)?,
                port: get(row, 4)?,
                current_network: get(row, 5)?,
                current_ip: optional_parse(get(row, 6)?)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(())
}

async fn one_server(
    client: &impl GenericClient,
    clause: &str,
    param: &(dyn ToSql + Sync),
) -> Result<Option<ServerRecord>> {
    let sql = format!("SELECT {SERVER_COLUMNS} FROM servers WHERE {clause}");
    match client.query_opt(&sql, &[param]).await.map_err(db)? {
        Some(row) => {
            let mut server = server_row(&row)?;
            load_nics(client, &mut server).await?;
            Ok(Some(server))
        }
        None => Ok(None),
    }
}

const ACTION_COLUMNS: &str = "a.id, a.kind, a.state, a.generation, a.server_id, s.name, a.address, a.reason, a.trigger, a.requested_by, \
     a.instance, a.attempts, a.message_number, a.message_text, a.detections, a.decided_by, a.created_at, a.updated_at, a.lease_owner";

fn action_row(row: &Row) -> Result<ActionRecord> {
    let number: Option<i64> = get(row, 12)?;
    let text: Option<String> = get(row, 13)?;
    Ok(ActionRecord {
        id: get(row, 0)?,
        kind: parse(get::<&str>(row, 1)?)?,
        state: parse(get::<&str>(row, 2)?)?,
        generation: get(row, 3)?,
        server_id: get(row, 4)?,
        server_name: get(row, 5)?,
        address: optional_parse(get(row, 6)?)?,
        reason: get(row, 7)?,
        trigger: get(row, 8)?,
        requested_by: get(row, 9)?,
        instance: get(row, 10)?,
        attempts: get::<i64>(row, 11)? as u32,
        message: number.map(|n| MessageRef { number: n as u32, text: text.unwrap_or_default() }),
        detections: get::<i64>(row, 14)? as u64,
        decided_by: get(row, 15)?,
        created_at: get(row, 16)?,
        updated_at: get(row, 17)?,
        lease_owner: get(row, 18)?,
    })
}

async fn one_action(client: &impl GenericClient, id: i64) -> Result<Option<ActionRecord>> {
    let sql =
        format!("SELECT {ACTION_COLUMNS} FROM actions a LEFT JOIN servers s ON s.id = a.server_id WHERE a.id = $1");
    client.query_opt(&sql, &[&id]).await.map_err(db)?.map(|row| action_row(&row)).transpose()
}

async fn existing_action(client: &impl GenericClient, id: i64) -> Result<ActionRecord> {
    one_action(client, id).await?.ok_or_else(|| StoreError::NotFound { what: format!("action {id}") })
}

async fn many_actions(
    client: &impl GenericClient,
    clause: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<ActionRecord>> {
    let sql = format!("SELECT {ACTION_COLUMNS} FROM actions a LEFT JOIN servers s ON s.id = a.server_id {clause}");
    client.query(&sql, params).await.map_err(db)?.iter().map(action_row).collect()
}

const MESSAGE_COLUMNS: &str = "id, number, text, server_id, action_id, instance, created_at";

fn message_row(row: &Row) -> Result<MessageRecord> {
    Ok(MessageRecord {
        id: get(row, 0)?,
        message: NewMessage {
            number: get::<i64>(row, 1)? as u32,
            text: get(row, 2)?,
            server_id: get(row, 3)?,
            action_id: get(row, 4)?,
            instance: get(row, 5)?,
        },
        created_at: get(row, 6)?,
    })
}

const DETECTION_COLUMNS: &str = "d.id, d.received_at_us, d.observed_at_us, d.source, d.sensor, d.subject, d.peer, d.src_ip, \
     d.dest_ip, d.target_ip, d.signature_id, d.signature, d.category, d.severity, d.raw, d.instance, d.decision, d.server_id, \
     s.name, d.action_id";

fn detection_row(row: &Row) -> Result<DetectionRecord> {
    Ok(DetectionRecord {
        id: get(row, 0)?,
        detection: Detection {
            received_at_us: get(row, 1)?,
            observed_at_us: get(row, 2)?,
            source: get(row, 3)?,
            sensor: get(row, 4)?,
            subject: parse(get::<&str>(row, 5)?)?,
            peer: optional_parse(get(row, 6)?)?,
            src_ip: optional_parse(get(row, 7)?)?,
            dest_ip: optional_parse(get(row, 8)?)?,
            target_ip: optional_parse(get(row, 9)?)?,
            signature_id: get(row, 10)?,
            signature: get(row, 11)?,
            category: get(row, 12)?,
            severity: parse(get::<&str>(row, 13)?)?,
            raw: get(row, 14)?,
        },
        instance: get(row, 15)?,
        decision: get(row, 16)?,
        server_id: get(row, 17)?,
        server_name: get(row, 18)?,
        action_id: get(row, 19)?,
    })
}

async fn many_detections(
    client: &impl GenericClient,
    clause: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<DetectionRecord>> {
    let sql =
        format!("SELECT {DETECTION_COLUMNS} FROM detections d LEFT JOIN servers s ON s.id = d.server_id {clause}");
    client.query(&sql, params).await.map_err(db)?.iter().map(detection_row).collect()
}

/// A stored server as the sync compares it with the configuration (as in SQLite).
#[derive(Debug, Clone)]
struct StoredServer {
    id: i64,
    kind: String,
    tenant: Option<String>,
    user_email: Option<String>,
    retired: bool,
    hypervisor: Option<String>,
    domain: Option<String>,
    origin: String,
}

/// A stored NIC, every column the sync writes or reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredNic {
    mac: String,
    position: i64,
    network: String,
    operational_ip: String,
    switch: Option<String>,
    port: Option<String>,
    current_network: String,
    current_ip: Option<String>,
}

/// One server's stored NICs (in position order) and open `operational` addresses (id, mac, ip).
#[derive(Debug, Clone, Default)]
struct StoredNics {
    nics: Vec<StoredNic>,
    open: Vec<(i64, String, String)>,
}

/// The stored NICs and open operational addresses of one server, or of all (`None`).
async fn load_stored_nics(
    tx: &impl GenericClient,
    server_id: Option<i64>,
) -> Result<std::collections::HashMap<i64, StoredNics>> {
    let mut stored: std::collections::HashMap<i64, StoredNics> = std::collections::HashMap::new();
    // Two texts, not `$1 IS NULL OR ...`: a cached generic plan would scan for one server.
    let filter = if server_id.is_some() { "server_id = $1" } else { "$1::BIGINT IS NULL" };
    let statement = tx
        .prepare_cached(&format!(
            "SELECT server_id, mac, position, network, operational_ip, switch, port, current_network, current_ip
             FROM nics WHERE {filter} ORDER BY server_id, position"
        ))
        .await
        .map_err(db)?;
    for r in tx.query(&statement, &[&server_id]).await.map_err(db)? {
        stored.entry(get(&r, 0)?).or_default().nics.push(StoredNic {
            mac: get(&r, 1)?,
            position: get(&r, 2)?,
            network: get(&r, 3)?,
            operational_ip: get(&r, 4)?,
            switch: get(&r, 5)?,
            port: get(&r, 6)?,
            current_network: get(&r, 7)?,
            current_ip: get(&r, 8)?,
        });
    }
    let statement = tx
        .prepare_cached(&format!(
            "SELECT server_id, id, mac, ip FROM address_history
             WHERE {filter} AND kind = 'operational' AND valid_to_us IS NULL ORDER BY server_id, id"
        ))
        .await
        .map_err(db)?;
    for r in tx.query(&statement, &[&server_id]).await.map_err(db)? {
        stored.entry(get(&r, 0)?).or_default().open.push((get(&r, 1)?, get(&r, 2)?, get(&r, 3)?));
    }
    Ok(stored)
}

/// As in SQLite: the stored inventory is read once and compared in memory; only differences
/// are written.
async fn sync_inventory(tx: &impl GenericClient, inventory: &Inventory) -> Result<SyncReport> {
    let at = Utc::now();
    for network in &inventory.networks {
        let statement = tx
            .prepare_cached(
                "INSERT INTO networks (name, role, subnet, quarantine_network, pool, bridge, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT(name) DO UPDATE SET role = excluded.role, subnet = excluded.subnet, quarantine_network = excluded.quarantine_network,
                 pool = excluded.pool, bridge = excluded.bridge, updated_at = excluded.updated_at",
            )
            .await
            .map_err(db)?;
        tx.execute(
            &statement,
            &[
                &network.name,
                &network.role.as_str(),
                &network.subnet,
                &network.quarantine_network,
                &network.pool,
                &network.bridge,
                &at,
            ],
        )
        .await
        .map_err(db)?;
    }
    for tenant in &inventory.tenants {
        let statement = tx
            .prepare_cached(
                "INSERT INTO tenants (name, admin_email, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT(name) DO UPDATE SET admin_email = excluded.admin_email, updated_at = excluded.updated_at",
            )
            .await
            .map_err(db)?;
        tx.execute(&statement, &[&tenant.name, &tenant.admin_email, &at]).await.map_err(db)?;
    }

    let mut order: Vec<String> = Vec::new();
    let mut servers: std::collections::HashMap<String, StoredServer> = std::collections::HashMap::new();
    let statement = tx
        .prepare_cached(
            "SELECT id, name, kind, tenant, user_email, retired, hypervisor, domain, origin FROM servers ORDER BY id",
        )
        .await
        .map_err(db)?;
    for r in tx.query(&statement, &[]).await.map_err(db)? {
        let name: String = get(&r, 1)?;
        let server = StoredServer {
            id: get(&r, 0)?,
            kind: get(&r, 2)?,
            tenant: get(&r, 3)?,
            user_email: get(&r, 4)?,
            retired: get(&r, 5)?,
            hypervisor: get(&r, 6)?,
            domain: get(&r, 7)?,
            origin: get(&r, 8)?,
        };
        order.push(name.clone());
        servers.insert(name, server);
    }
    let mut nics = load_stored_nics(tx, None).await?;

    let mut report = SyncReport::default();
    let mut wanted = BTreeSet::new();
    for server in &inventory.servers {
        wanted.insert(server.name.clone());
        match servers.get_mut(&server.name) {
            None => {
                let statement = tx
                    .prepare_cached(
                        "INSERT INTO servers (name, kind, tenant, user_email, state, retired, created_at, updated_at, hypervisor, domain)
                         VALUES ($1, $2, $3, $4, $5, FALSE, $6, $6, $7, $8) RETURNING id",
                    )
                    .await
                    .map_err(db)?;
                let row = tx
                    .query_one(
                        &statement,
                        &[
                            &server.name,
                            &server.kind.as_str(),
                            &server.tenant,
                            &server.user_email,
                            &ServerState::Operational.as_str(),
                            &at,
                            &server.hypervisor,
                            &server.domain,
                        ],
                    )
                    .await
                    .map_err(db)?;
                report.added.push(server.name.clone());
                let id: i64 = get(&row, 0)?;
                // Kept current, so that a name given twice is found the second time.
                servers.insert(
                    server.name.clone(),
                    StoredServer {
                        id,
                        kind: server.kind.as_str().to_owned(),
                        tenant: server.tenant.clone(),
                        user_email: server.user_email.clone(),
                        retired: false,
                        hypervisor: server.hypervisor.clone(),
                        domain: server.domain.clone(),
                        origin: "config".to_owned(),
                    },
                );
                order.push(server.name.clone());
                sync_nics_with(tx, id, server, nics.entry(id).or_default()).await?;
            }
            Some(stored) => {
                let changed_fields = stored.kind != server.kind.as_str()
                    || stored.tenant != server.tenant
                    || stored.user_email != server.user_email
                    || stored.retired
                    || stored.hypervisor != server.hypervisor
                    || stored.domain != server.domain;
                // An imported server named in the configuration becomes the configuration's.
                if changed_fields || stored.origin != "config" {
                    let statement = tx
                        .prepare_cached(
                            "UPDATE servers SET kind = $2, tenant = $3, user_email = $4, retired = FALSE, updated_at = $5, hypervisor = $6,
                             domain = $7, origin = 'config' WHERE id = $1",
                        )
                        .await
                        .map_err(db)?;
                    tx.execute(
                        &statement,
                        &[
                            &stored.id,
                            &server.kind.as_str(),
                            &server.tenant,
                            &server.user_email,
                            &at,
                            &server.hypervisor,
                            &server.domain,
                        ],
                    )
                    .await
                    .map_err(db)?;
                    stored.kind = server.kind.as_str().to_owned();
                    stored.tenant.clone_from(&server.tenant);
                    stored.user_email.clone_from(&server.user_email);
                    stored.retired = false;
                    stored.hypervisor.clone_from(&server.hypervisor);
                    stored.domain.clone_from(&server.domain);
                    stored.origin = "config".to_owned();
                }
                let id = stored.id;
                let stored_nics = nics.entry(id).or_default();
                if changed_fields || nics_differ(&stored_nics.nics, server) {
                    report.updated.push(server.name.clone());
                }
                sync_nics_with(tx, id, server, stored_nics).await?;
            }
        }
    }
    // Imported servers are not in the configuration by design: they are never retired by it.
    let closed_at_us = now_us();
    for name in &order {
        let Some(stored) = servers.get(name) else { continue };
        if stored.retired || stored.origin != "config" || wanted.contains(name) {
            continue;
        }
        let statement =
            tx.prepare_cached("UPDATE servers SET retired = TRUE, updated_at = $2 WHERE id = $1").await.map_err(db)?;
        tx.execute(&statement, &[&stored.id, &at]).await.map_err(db)?;
        let statement = tx
            .prepare_cached(
                "UPDATE address_history SET valid_to_us = $2 WHERE server_id = $1 AND kind = 'operational' AND valid_to_us IS NULL",
            )
            .await
            .map_err(db)?;
        tx.execute(&statement, &[&stored.id, &closed_at_us]).await.map_err(db)?;
        report.retired.push(name.clone());
    }
    Ok(report)
}

async fn import_servers(tx: &impl GenericClient, servers: &[ServerSpec], origin: &str) -> Result<SyncReport> {
    let at = Utc::now();
    let mut report = SyncReport::default();
    for server in servers {
        let exists: bool =
            tx.query_one("SELECT COUNT(*) > 0 FROM servers WHERE name = $1", &[&server.name]).await.map_err(db)?.get(0);
        if exists {
            continue;
        }
        let row = tx
            .query_one(
                "INSERT INTO servers (name, kind, tenant, user_email, state, retired, created_at, updated_at, hypervisor, domain, origin)
                 VALUES ($1, $2, $3, $4, $5, FALSE, $6, $6, $7, $8, $9) RETURNING id",
                &[
                    &server.name,
                    &server.kind.as_str(),
                    &server.tenant,
                    &server.user_email,
                    &ServerState::Operational.as_str(),
                    &at,
                    &server.hypervisor,
                    &server.domain,
                    &origin,
                ],
            )
            .await
            .map_err(db)?;
        sync_nics(tx, get(&row, 0)?, server).await?;
        report.added.push(server.name.clone());
    }
    Ok(report)
}

/// Whether the configured NICs differ from the stored ones (before `sync_nics_with` rewrites them).
fn nics_differ(stored: &[StoredNic], server: &ServerSpec) -> bool {
    stored.len() != server.nics.len()
        || stored.iter().zip(&server.nics).any(|(s, n)| {
            s.mac != n.mac.to_string()
                || s.network != n.network
                || s.operational_ip != address_text(n.ip)
                || s.switch != n.switch
                || s.port != n.port
        })
}

/// As in SQLite: one open `operational` history row per configured (NIC, address); `open` is
/// the server's open rows, kept current.
async fn sync_address_history(
    tx: &impl GenericClient,
    server_id: i64,
    nics: &[NicSpec],
    open: &mut Vec<(i64, String, String)>,
) -> Result<()> {
    let wanted: Vec<(String, String)> =
        nics.iter().filter_map(|n| n.ip.map(|ip| (n.mac.to_string(), ip.to_string()))).collect();
    let unchanged =
        open.len() == wanted.len() && wanted.iter().all(|(mac, ip)| open.iter().any(|(_, m, i)| m == mac && i == ip));
    if unchanged {
        return Ok(());
    }
    let at = now_us();
    let statement =
        tx.prepare_cached("SELECT COUNT(*) = 0 FROM address_history WHERE server_id = $1").await.map_err(db)?;
    let first_sight: bool = tx.query_one(&statement, &[&server_id]).await.map_err(db)?.get(0);
    let mut kept = Vec::with_capacity(wanted.len());
    for (id, mac, ip) in std::mem::take(open) {
        if wanted.iter().any(|(m, i)| *m == mac && *i == ip) {
            kept.push((id, mac, ip));
        } else {
            let statement =
                tx.prepare_cached("UPDATE address_history SET valid_to_us = $2 WHERE id = $1").await.map_err(db)?;
            tx.execute(&statement, &[&id, &at]).await.map_err(db)?;
        }
    }
    for (mac, ip) in wanted {
        if !kept.iter().any(|(_, m, i)| *m == mac && *i == ip) {
            let from: i64 = if first_sight { 0 } else { at };
            let statement = tx
                .prepare_cached(
                    "INSERT INTO address_history (ip, server_id, mac, kind, valid_from_us)
                     VALUES ($1, $2, $3, 'operational', $4) RETURNING id",
                )
                .await
                .map_err(db)?;
            let row = tx.query_one(&statement, &[&ip, &server_id, &mac, &from]).await.map_err(db)?;
            kept.push((get(&row, 0)?, mac, ip));
        }
    }
    *open = kept;
    Ok(())
}

/// One server's NICs as the configuration gives them, for an import (one server at a time).
async fn sync_nics(tx: &impl GenericClient, server_id: i64, server: &ServerSpec) -> Result<()> {
    let mut stored = load_stored_nics(tx, Some(server_id)).await?.remove(&server_id).unwrap_or_default();
    sync_nics_with(tx, server_id, server, &mut stored).await
}

/// As in SQLite: brings one server's NICs and open addresses to the configuration's, writing
/// only rows that differ from `stored` (kept current).
async fn sync_nics_with(
    tx: &impl GenericClient,
    server_id: i64,
    server: &ServerSpec,
    stored: &mut StoredNics,
) -> Result<()> {
    sync_address_history(tx, server_id, &server.nics, &mut stored.open).await?;
    let macs: Vec<String> = server.nics.iter().map(|n| n.mac.to_string()).collect();
    let mut kept = Vec::with_capacity(macs.len());
    for nic in std::mem::take(&mut stored.nics) {
        if macs.contains(&nic.mac) {
            kept.push(nic);
        } else {
            let statement =
                tx.prepare_cached("DELETE FROM nics WHERE server_id = $1 AND mac = $2").await.map_err(db)?;
            tx.execute(&statement, &[&server_id, &nic.mac]).await.map_err(db)?;
        }
    }
    let mut now_stored = Vec::with_capacity(server.nics.len());
    for ((position, nic), mac) in server.nics.iter().enumerate().zip(macs) {
        let operational_ip = address_text(nic.ip);
        let current_ip_if_home = (!operational_ip.is_empty()).then(|| operational_ip.clone());
        // What the upsert below makes of the row (see `sqlite::sync_nics_with`).
        let next = match kept.iter().position(|s| s.mac == mac) {
            None => StoredNic {
                mac,
                position: position as i64,
                network: nic.network.clone(),
                operational_ip,
                switch: nic.switch.clone(),
                port: nic.port.clone(),
                current_network: nic.network.clone(),
                current_ip: current_ip_if_home,
            },
            Some(i) => {
                let old = kept.swap_remove(i);
                let current_ip =
                    if old.current_network == nic.network { current_ip_if_home } else { old.current_ip.clone() };
                let current_network =
                    if old.current_network == old.network { nic.network.clone() } else { old.current_network.clone() };
                let next = StoredNic {
                    mac,
                    position: position as i64,
                    network: nic.network.clone(),
                    operational_ip,
                    switch: nic.switch.clone(),
                    port: nic.port.clone(),
                    current_network,
                    current_ip,
                };
                if next == old {
                    now_stored.push(next);
                    continue;
                }
                next
            }
        };
        let statement = tx
            .prepare_cached(
                "INSERT INTO nics (server_id, mac, position, network, operational_ip, switch, port, current_network, current_ip)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $4, NULLIF($5, ''))
                 ON CONFLICT(server_id, mac) DO UPDATE SET position = excluded.position, network = excluded.network,
                 operational_ip = excluded.operational_ip, switch = excluded.switch, port = excluded.port,
                 current_ip = CASE WHEN nics.current_network = excluded.network THEN NULLIF(excluded.operational_ip, '') ELSE nics.current_ip END,
                 current_network = CASE WHEN nics.current_network = nics.network THEN excluded.network ELSE nics.current_network END",
            )
            .await
            .map_err(db)?;
        tx.execute(
            &statement,
            &[&server_id, &next.mac, &next.position, &next.network, &next.operational_ip, &next.switch, &next.port],
        )
        .await
        .map_err(db)?;
        now_stored.push(next);
    }
    stored.nics = now_stored;
    Ok(())
}

/// What a transition changes besides the state (see `sqlite::transition`).
#[derive(Default)]
struct TransitionExtras<'a> {
    kind: Option<ActionKind>,
    message: Option<MessageRef>,
    not_before_us: Option<i64>,
    /// Written in the same transaction, after the change.
    alongside: Option<&'a Alongside>,
    /// (holder, expiry): claim the action for a worker.
    lease: Option<(&'a str, i64)>,
}

impl PostgresStore {
    /// Applies `command` if the action is still at `generation`, under the action's row lock.
    async fn transition(
        &self,
        id: i64,
        generation: i64,
        command: ActionCommand,
        extras: TransitionExtras<'_>,
    ) -> Result<ActionRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // A claim skips a row another instance is claiming right now; others wait for it.
        let lock = if extras.lease.is_some() { "FOR UPDATE SKIP LOCKED" } else { "FOR UPDATE" };
        let sql = format!("SELECT state, generation, server_id FROM actions WHERE id = $1 {lock}");
        let Some(row) = tx.query_opt(&sql, &[&id]).await.map_err(db)? else {
            if extras.lease.is_some()
                && tx.query_opt("SELECT 1 FROM actions WHERE id = $1", &[&id]).await.map_err(db)?.is_some()
            {
                return Err(StoreError::Conflict { id, expected: generation, found: generation + 1 });
            }
            return Err(StoreError::NotFound { what: format!("action {id}") });
        };
        let (state, found, server_id): (String, i64, Option<i64>) = (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
        if found != generation {
            return Err(StoreError::Conflict { id, expected: generation, found });
        }
        let state: ActionState = parse(&state)?;
        let next = state.apply(command).map_err(|source| StoreError::InvalidTransition { id, source })?;
        if let (Some(_), Some(server_id)) = (extras.lease, server_id) {
            // One action per server at a time across instances: the server's row serializes
            // the claims of its actions.
            tx.execute("SELECT 1 FROM servers WHERE id = $1 FOR UPDATE", &[&server_id]).await.map_err(db)?;
            let busy: bool = tx
                .query_one(
                    "SELECT COUNT(*) > 0 FROM actions WHERE server_id = $1 AND state = 'running' AND id <> $2",
                    &[&server_id, &id],
                )
                .await
                .map_err(db)?
                .get(0);
            if busy {
                return Err(StoreError::ServerBusy { id, server_id });
            }
        }
        let started = i64::from(command == ActionCommand::Start);
        let (number, text) = match &extras.message {
            Some(m) => (Some(i64::from(m.number)), Some(m.text.clone())),
            None => (None, None),
        };
        let running = next == ActionState::Running;
        let (owner, until) = match extras.lease {
            Some((holder, until)) if running => (Some(holder.to_string()), Some(until)),
            _ => (None, None),
        };
        tx.execute(
            "UPDATE actions SET state = $3, generation = generation + 1, attempts = attempts + $4,
             message_number = COALESCE($5, message_number), message_text = COALESCE($6, message_text), updated_at = $7,
             kind = COALESCE($8, kind), not_before_us = $9, lease_owner = $10, lease_until_us = $11
             WHERE id = $1 AND generation = $2",
            &[
                &id,
                &generation,
                &next.as_str(),
                &started,
                &number,
                &text,
                &Utc::now(),
                &extras.kind.map(|k| k.as_str()),
                &extras.not_before_us,
                &owner,
                &until,
            ],
        )
        .await
        .map_err(db)?;
        let record = existing_action(&tx, id).await?;
        // A claim is written in the name of the claiming instance, as in SQLite.
        let instance = extras.lease.map(|(holder, _)| holder).unwrap_or(&self.instance);
        let entry = entries::action_state(instance, id, (state, next), command, extras.kind, extras.message.as_ref());
        if let Some(alongside) = extras.alongside {
            apply_alongside(&tx, instance, alongside).await?;
        }
        append_audit_in(&tx, &entry).await?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }
}

async fn set_server_state_in(
    tx: &impl GenericClient,
    instance: &str,
    server_id: i64,
    state: ServerState,
) -> Result<()> {
    let Some(row) =
        tx.query_opt("SELECT name, state FROM servers WHERE id = $1 FOR UPDATE", &[&server_id]).await.map_err(db)?
    else {
        return Err(StoreError::NotFound { what: format!("server {server_id}") });
    };
    let (name, before): (String, String) = (get(&row, 0)?, get(&row, 1)?);
    tx.execute(
        "UPDATE servers SET state = $2, updated_at = $3 WHERE id = $1",
        &[&server_id, &state.as_str(), &Utc::now()],
    )
    .await
    .map_err(db)?;
    if before != state.as_str() {
        let detail = format!("{before} -> {state}");
        append_audit_in(tx, &entries::state_change(instance, "server_state", format!("server {name}"), detail)).await?;
    }
    Ok(())
}

async fn record_nic_position_in(tx: &impl GenericClient, instance: &str, position: &NicPosition) -> Result<()> {
    let NicPosition { server_id, mac, network, ip } = position;
    let Some(row) = tx
        .query_opt(
            "SELECT s.name, n.current_network, n.current_ip FROM nics n JOIN servers s ON s.id = n.server_id
             WHERE n.server_id = $1 AND n.mac = $2 FOR UPDATE OF n",
            &[server_id, &mac.to_string()],
        )
        .await
        .map_err(db)?
    else {
        return Err(StoreError::NotFound { what: format!("NIC {mac} of server {server_id}") });
    };
    let (name, before_network, before_ip): (String, String, Option<String>) =
        (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
    let ip_text = ip.map(|i| i.to_string());
    tx.execute(
        "UPDATE nics SET current_network = $3, current_ip = $4 WHERE server_id = $1 AND mac = $2",
        &[server_id, &mac.to_string(), network, &ip_text],
    )
    .await
    .map_err(db)?;
    tx.execute("UPDATE servers SET updated_at = $2 WHERE id = $1", &[server_id, &Utc::now()]).await.map_err(db)?;
    if (before_network.as_str(), before_ip.as_deref()) != (network.as_str(), ip_text.as_deref()) {
        let before = (before_network.as_str(), before_ip.as_deref());
        let mac = mac.to_string();
        let entry = entries::nic_position(instance, &name, &mac, before, (network, ip_text.as_deref()));
        append_audit_in(tx, &entry).await?;
    }
    Ok(())
}

/// The NIC's lease on `network`, taking the lowest free address of `pool` if it has none.
async fn lease_address_in(
    tx: &impl GenericClient,
    server_id: i64,
    mac: MacAddr,
    network: &str,
    pool: &AddressPool,
) -> Result<IpAddr> {
    // The set of leased addresses is read and then extended: one leaser per network at a
    // time, whichever instance it runs in.
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended('cordon-lease:' || $1, 0))", &[&network])
        .await
        .map_err(db)?;
    let mac_text = mac.to_string();
    if let Some(row) = tx
        .query_opt(
            "SELECT ip FROM ip_leases WHERE server_id = $1 AND mac = $2 AND network = $3",
            &[&server_id, &mac_text, &network],
        )
        .await
        .map_err(db)?
    {
        return parse(get::<&str>(&row, 0)?);
    }
    let leased: BTreeSet<IpAddr> = tx
        .query("SELECT ip FROM ip_leases WHERE network = $1", &[&network])
        .await
        .map_err(db)?
        .iter()
        .filter_map(|r| r.try_get::<_, &str>(0).ok().and_then(|t| t.parse().ok()))
        .collect();
    let Some(ip) = pool.allocate(&leased) else {
        return Err(StoreError::PoolExhausted { network: network.to_string(), range: pool.range().to_string() });
    };
    tx.execute(
        "INSERT INTO ip_leases (network, ip, server_id, mac, leased_at) VALUES ($1, $2, $3, $4, $5)",
        &[&network, &ip.to_string(), &server_id, &mac_text, &Utc::now()],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "INSERT INTO address_history (ip, server_id, mac, kind, valid_from_us) VALUES ($1, $2, $3, 'quarantine', $4)",
        &[&ip.to_string(), &server_id, &mac_text, &now_us()],
    )
    .await
    .map_err(db)?;
    Ok(ip)
}

async fn release_address_in(tx: &impl GenericClient, server_id: i64, mac: MacAddr, network: &str) -> Result<()> {
    let mac = mac.to_string();
    let released = tx
        .query_opt(
            "DELETE FROM ip_leases WHERE server_id = $1 AND mac = $2 AND network = $3 RETURNING ip",
            &[&server_id, &mac, &network],
        )
        .await
        .map_err(db)?;
    if let Some(row) = released {
        let ip: String = get(&row, 0)?;
        tx.execute(
            "UPDATE address_history SET valid_to_us = $4
             WHERE server_id = $1 AND mac = $2 AND ip = $3 AND kind = 'quarantine' AND valid_to_us IS NULL",
            &[&server_id, &mac, &ip, &now_us()],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

async fn settle_detection_in(
    tx: &impl GenericClient,
    id: i64,
    decision: &str,
    server_id: Option<i64>,
    action_id: Option<i64>,
) -> Result<()> {
    let changed = tx
        .execute(
            "UPDATE detections SET decision = $2, server_id = $3, action_id = $4 WHERE id = $1 AND decision IS NULL",
            &[&id, &decision, &server_id, &action_id],
        )
        .await
        .map_err(db)?;
    if changed == 0 {
        return Err(StoreError::AlreadySettled { id });
    }
    if let Some(action_id) = action_id {
        tx.execute("UPDATE actions SET detections = detections + 1 WHERE id = $1", &[&action_id]).await.map_err(db)?;
    }
    Ok(())
}

async fn append_step_in(tx: &impl GenericClient, step: &NewStep) -> Result<StepRecord> {
    // The action's row lock orders the steps of one action.
    tx.execute("SELECT 1 FROM actions WHERE id = $1 FOR UPDATE", &[&step.action_id]).await.map_err(db)?;
    let seq: i64 = tx
        .query_one("SELECT COALESCE(MAX(seq), 0) + 1 FROM action_steps WHERE action_id = $1", &[&step.action_id])
        .await
        .map_err(db)?
        .get(0);
    tx.execute(
        "INSERT INTO action_steps (action_id, seq, attempt, name, target, outcome, detail, message_number, instance,
         started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &step.action_id,
            &seq,
            &i64::from(step.attempt),
            &step.name,
            &step.target,
            &step.outcome.as_str(),
            &step.detail,
            &step.message_number.map(i64::from),
            &step.instance,
            &step.started_at,
            &step.finished_at,
        ],
    )
    .await
    .map_err(db)?;
    Ok(StepRecord { seq, step: step.clone() })
}

async fn record_message_in(tx: &impl GenericClient, message: &NewMessage) -> Result<MessageRecord> {
    let at = Utc::now();
    let severity = cordon_model::Message::find(message.number).map(|m| m.severity().as_str()).unwrap_or("ERROR");
    let row = tx
        .query_one(
            "INSERT INTO messages (number, severity, text, server_id, action_id, instance, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, created_at",
            &[
                &i64::from(message.number),
                &severity,
                &message.text,
                &message.server_id,
                &message.action_id,
                &message.instance,
                &at,
            ],
        )
        .await
        .map_err(db)?;
    Ok(MessageRecord { id: get(&row, 0)?, created_at: get(&row, 1)?, message: message.clone() })
}

/// Writes `records` inside the caller's transaction, in the order [`Alongside`] documents.
async fn apply_alongside(tx: &impl GenericClient, instance: &str, records: &Alongside) -> Result<()> {
    for lease in &records.leases {
        lease_address_in(tx, lease.server_id, lease.mac, &lease.network, &lease.pool).await?;
    }
    for (server_id, mac, network) in &records.releases {
        release_address_in(tx, *server_id, *mac, network).await?;
    }
    for step in &records.steps {
        append_step_in(tx, step).await?;
    }
    for message in &records.messages {
        record_message_in(tx, message).await?;
    }
    // Last: these append to the audit chain, whose lock is then held until the commit.
    if let Some((server_id, state)) = records.server_state {
        set_server_state_in(tx, instance, server_id, state).await?;
    }
    for position in &records.nic_positions {
        record_nic_position_in(tx, instance, position).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn sync_inventory(&self, inventory: &Inventory) -> Result<SyncReport> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // Instances that start together sync one after the other.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_INVENTORY]).await.map_err(db)?;
        let report = sync_inventory(&tx, inventory).await?;
        tx.commit().await.map_err(db)?;
        Ok(report)
    }

    async fn import_servers(&self, servers: &[ServerSpec], origin: &str) -> Result<SyncReport> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_INVENTORY]).await.map_err(db)?;
        let report = import_servers(&tx, servers, origin).await?;
        tx.commit().await.map_err(db)?;
        Ok(report)
    }

    async fn list_servers(&self) -> Result<Vec<ServerRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {SERVER_COLUMNS} FROM servers ORDER BY name");
        let mut servers: Vec<ServerRecord> =
            client.query(&sql, &[]).await.map_err(db)?.iter().map(server_row).collect::<Result<_>>()?;
        // All NICs in one query rather than one per server.
        let rows = client
            .query(
                "SELECT server_id, mac, network, operational_ip, switch, port, current_network, current_ip FROM nics
                 ORDER BY server_id, position",
                &[],
            )
            .await
            .map_err(db)?;
        let mut by_server: std::collections::HashMap<i64, Vec<NicRecord>> = std::collections::HashMap::new();
        for row in &rows {
            let operational: String = get(row, 3)?;
            by_server.entry(get(row, 0)?).or_default().push(NicRecord {
                mac: parse(get::<&str>(row, 1)?)?,
                network: get(row, 2)?,
                operational_ip: if operational.is_empty() { None } else { Some(parse(&operational)?) },
                switch: get(row, 4)?,
                port: get(row, 5)?,
                current_network: get(row, 6)?,
                current_ip: optional_parse(get(row, 7)?)?,
            });
        }
        for server in &mut servers {
            server.nics = by_server.remove(&server.id).unwrap_or_default();
        }
        Ok(servers)
    }

    async fn server_by_name(&self, name: &str) -> Result<Option<ServerRecord>> {
        one_server(&self.client().await?, "name = $1", &name).await
    }

    async fn server_by_id(&self, id: i64) -> Result<Option<ServerRecord>> {
        one_server(&self.client().await?, "id = $1", &id).await
    }

    async fn server_by_address(&self, address: IpAddr) -> Result<Option<ServerRecord>> {
        one_server(
            &self.client().await?,
            "NOT retired AND id IN (SELECT server_id FROM nics WHERE operational_ip = $1 OR current_ip = $1) ORDER BY id LIMIT 1",
            &address.to_string(),
        )
        .await
    }

    async fn set_server_state(&self, server_id: i64, state: ServerState) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        set_server_state_in(&tx, &self.instance, server_id, state).await?;
        tx.commit().await.map_err(db)
    }

    async fn record_nic_position(&self, server_id: i64, mac: MacAddr, network: &str, ip: Option<IpAddr>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let position = NicPosition { server_id, mac, network: network.to_string(), ip };
        record_nic_position_in(&tx, &self.instance, &position).await?;
        tx.commit().await.map_err(db)
    }

    async fn record_alongside(&self, records: &Alongside) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        apply_alongside(&tx, &self.instance, records).await?;
        tx.commit().await.map_err(db)
    }

    async fn lease_address(&self, server_id: i64, mac: MacAddr, network: &str, pool: &AddressPool) -> Result<IpAddr> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let ip = lease_address_in(&tx, server_id, mac, network, pool).await?;
        tx.commit().await.map_err(db)?;
        Ok(ip)
    }

    async fn release_address(&self, server_id: i64, mac: MacAddr, network: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        release_address_in(&tx, server_id, mac, network).await?;
        tx.commit().await.map_err(db)
    }

    async fn create_action_settling(&self, action: &NewAction, settles: Option<&Settlement>) -> Result<ActionRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .query_one(
                "INSERT INTO actions (kind, state, generation, server_id, address, reason, trigger, requested_by, instance, attempts,
                 decided_by, message_number, message_text, created_at, updated_at)
                 VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, 0, $10, $11, $12, $9, $9) RETURNING id",
                &[
                    &action.kind.as_str(),
                    &action.state.as_str(),
                    &action.server_id,
                    &action.address.map(|a| a.to_string()),
                    &action.reason,
                    &action.trigger,
                    &action.requested_by,
                    &action.instance,
                    &Utc::now(),
                    &action.decided_by,
                    &action.message.as_ref().map(|m| i64::from(m.number)),
                    &action.message.as_ref().map(|m| m.text.clone()),
                ],
            )
            .await
            .map_err(db)?;
        let id: i64 = get(&row, 0)?;
        let record = existing_action(&tx, id).await?;
        append_audit_in(&tx, &entries::action_created(&record)).await?;
        if let Some(settles) = settles {
            settle_detection_in(&tx, settles.detection_id, &settles.decision_for(id), action.server_id, Some(id))
                .await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    async fn action(&self, id: i64) -> Result<Option<ActionRecord>> {
        one_action(&self.client().await?, id).await
    }

    async fn list_actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>> {
        let state = filter.state.map(|s| s.as_str().to_string());
        let limit = i64::from(filter.limit.unwrap_or(500));
        // A statement per filter, so that the plan can use an index.
        let clause = match (&state, filter.server_id) {
            (None, None) => "WHERE $1::text IS NULL AND $2::bigint IS NULL",
            (Some(_), None) => "WHERE a.state = $1 AND $2::bigint IS NULL",
            (None, Some(_)) => "WHERE $1::text IS NULL AND a.server_id = $2",
            (Some(_), Some(_)) => "WHERE a.state = $1 AND a.server_id = $2",
        };
        let sql = format!("{clause} ORDER BY a.id DESC LIMIT $3");
        many_actions(&self.client().await?, &sql, &[&state, &filter.server_id, &limit]).await
    }

    async fn count_actions(&self) -> Result<Vec<(ActionKind, ActionState, u64)>> {
        self.client()
            .await?
            .query("SELECT kind, state, COUNT(*) FROM actions GROUP BY kind, state ORDER BY kind, state", &[])
            .await
            .map_err(db)?
            .iter()
            .map(|r| Ok((parse(get::<&str>(r, 0)?)?, parse(get::<&str>(r, 1)?)?, get::<i64>(r, 2)? as u64)))
            .collect()
    }

    async fn latest_actions(&self) -> Result<Vec<ActionRecord>> {
        many_actions(
            &self.client().await?,
            "WHERE a.id IN (SELECT MAX(id) FROM actions WHERE server_id IS NOT NULL GROUP BY server_id) ORDER BY a.id",
            &[],
        )
        .await
    }

    async fn open_action(&self, server_id: i64, kind: ActionKind) -> Result<Option<ActionRecord>> {
        let open: Vec<&str> = ActionState::ALL.iter().filter(|s| s.is_open()).map(|s| s.as_str()).collect();
        let clause = format!(
            "WHERE a.server_id = $1 AND a.kind = $2 AND a.state IN ({}) ORDER BY a.id LIMIT 1",
            open.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
        );
        Ok(many_actions(&self.client().await?, &clause, &[&server_id, &kind.as_str()]).await?.into_iter().next())
    }

    async fn runnable_actions(&self, limit: u32) -> Result<Vec<ActionRecord>> {
        many_actions(
            &self.client().await?,
            "WHERE a.state IN ('pending', 'retrying') AND (a.not_before_us IS NULL OR a.not_before_us <= $1) ORDER BY a.id LIMIT $2",
            &[&now_us(), &i64::from(limit)],
        )
        .await
    }

    async fn running_actions(&self) -> Result<Vec<ActionRecord>> {
        many_actions(&self.client().await?, "WHERE a.state = 'running' ORDER BY a.id", &[]).await
    }

    async fn claim_action_alongside(
        &self,
        id: i64,
        generation: i64,
        instance: &str,
        until_us: i64,
        message: Option<MessageRef>,
        alongside: &Alongside,
    ) -> Result<ActionRecord> {
        let extras = TransitionExtras {
            message,
            lease: Some((instance, until_us)),
            alongside: Some(alongside),
            ..Default::default()
        };
        self.transition(id, generation, ActionCommand::Start, extras).await
    }

    async fn renew_action_lease(&self, id: i64, instance: &str, until_us: i64) -> Result<bool> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE actions SET lease_until_us = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                &[&id, &instance, &until_us],
            )
            .await
            .map_err(db)?;
        Ok(changed == 1)
    }

    async fn orphaned_actions(&self, now_us: i64, previous_life: Option<&str>) -> Result<Vec<ActionRecord>> {
        many_actions(
            &self.client().await?,
            "WHERE a.state = 'running'
             AND (a.lease_until_us < $1 OR ($2::text IS NOT NULL AND (a.lease_until_us IS NULL OR a.lease_owner = $2)))
             ORDER BY a.id",
            &[&now_us, &previous_life],
        )
        .await
    }

    async fn transition_action_alongside(
        &self,
        id: i64,
        generation: i64,
        command: ActionCommand,
        message: Option<MessageRef>,
        alongside: &Alongside,
    ) -> Result<ActionRecord> {
        let extras = TransitionExtras { message, alongside: Some(alongside), ..Default::default() };
        self.transition(id, generation, command, extras).await
    }

    async fn defer_action(
        &self,
        id: i64,
        generation: i64,
        not_before_us: i64,
        message: MessageRef,
    ) -> Result<ActionRecord> {
        let extras =
            TransitionExtras { message: Some(message), not_before_us: Some(not_before_us), ..Default::default() };
        self.transition(id, generation, ActionCommand::Backoff, extras).await
    }

    async fn transition_action_as(
        &self,
        id: i64,
        generation: i64,
        command: ActionCommand,
        kind: ActionKind,
        message: Option<MessageRef>,
    ) -> Result<ActionRecord> {
        self.transition(id, generation, command, TransitionExtras { kind: Some(kind), message, ..Default::default() })
            .await
    }

    async fn open_actions(&self, server_id: i64) -> Result<Vec<ActionRecord>> {
        many_actions(
            &self.client().await?,
            "WHERE a.server_id = $1 AND a.state IN ('awaiting_approval', 'pending', 'running', 'retrying') ORDER BY a.id DESC",
            &[&server_id],
        )
        .await
    }

    async fn unresolved_action(&self, address: IpAddr) -> Result<Option<ActionRecord>> {
        Ok(many_actions(
            &self.client().await?,
            "WHERE a.server_id IS NULL AND a.address = $1 AND a.state NOT IN ('checked', 'cancelled', 'rejected')
             ORDER BY a.id DESC LIMIT 1",
            &[&address.to_string()],
        )
        .await?
        .into_iter()
        .next())
    }

    async fn change_action_kind(&self, id: i64, generation: i64, kind: ActionKind) -> Result<ActionRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let Some(row) =
            tx.query_opt("SELECT state, generation FROM actions WHERE id = $1 FOR UPDATE", &[&id]).await.map_err(db)?
        else {
            return Err(StoreError::NotFound { what: format!("action {id}") });
        };
        let (state, found): (String, i64) = (get(&row, 0)?, get(&row, 1)?);
        if found != generation {
            return Err(StoreError::Conflict { id, expected: generation, found });
        }
        let state: ActionState = parse(&state)?;
        if !matches!(state, ActionState::AwaitingApproval | ActionState::Pending) {
            return Err(StoreError::KindLocked { id, state });
        }
        tx.execute(
            "UPDATE actions SET kind = $2, generation = generation + 1, updated_at = $3 WHERE id = $1",
            &[&id, &kind.as_str(), &Utc::now()],
        )
        .await
        .map_err(db)?;
        let record = existing_action(&tx, id).await?;
        let detail = format!("kind now {kind} ({state})");
        append_audit_in(&tx, &entries::state_change(&self.instance, "action_kind", format!("action {id}"), detail))
            .await?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    async fn record_detections(
        &self,
        detections: &[Detection],
        instance: &str,
        checkpoint: Option<&SourceCheckpoint>,
    ) -> Result<Vec<i64>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let insert = tx
            .prepare(
                "INSERT INTO detections (received_at_us, observed_at_us, source, sensor, subject, peer, src_ip, dest_ip,
                 target_ip, signature_id, signature, category, severity, raw, instance)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
            )
            .await
            .map_err(db)?;
        let text = |a: Option<IpAddr>| a.map(|a| a.to_string());
        let mut ids = Vec::with_capacity(detections.len());
        for d in detections {
            let row = tx
                .query_one(
                    &insert,
                    &[
                        &d.received_at_us,
                        &d.observed_at_us,
                        &d.source,
                        &d.sensor,
                        &d.subject.to_string(),
                        &text(d.peer),
                        &text(d.src_ip),
                        &text(d.dest_ip),
                        &text(d.target_ip),
                        &d.signature_id,
                        &d.signature,
                        &d.category,
                        &d.severity.as_str(),
                        &d.raw,
                        &instance,
                    ],
                )
                .await
                .map_err(db)?;
            ids.push(get(&row, 0)?);
        }
        if let Some(cp) = checkpoint {
            tx.execute(
                "INSERT INTO source_checkpoints (source, path, inode, byte_offset, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT(source) DO UPDATE SET path = excluded.path, inode = excluded.inode, byte_offset = excluded.byte_offset,
                 updated_at = excluded.updated_at",
                &[&cp.source, &cp.path, &(cp.inode as i64), &(cp.offset as i64), &Utc::now()],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(ids)
    }

    async fn checkpoint(&self, source: &str) -> Result<Option<SourceCheckpoint>> {
        self.client()
            .await?
            .query_opt("SELECT source, path, inode, byte_offset FROM source_checkpoints WHERE source = $1", &[&source])
            .await
            .map_err(db)?
            .map(|r| {
                Ok(SourceCheckpoint {
                    source: get(&r, 0)?,
                    path: get(&r, 1)?,
                    inode: get::<i64>(&r, 2)? as u64,
                    offset: get::<i64>(&r, 3)? as u64,
                })
            })
            .transpose()
    }

    async fn unprocessed_detections(&self, limit: u32) -> Result<Vec<DetectionRecord>> {
        many_detections(&self.client().await?, "WHERE d.decision IS NULL ORDER BY d.id LIMIT $1", &[&i64::from(limit)])
            .await
    }

    async fn settle_detection(
        &self,
        id: i64,
        decision: &str,
        server_id: Option<i64>,
        action_id: Option<i64>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        settle_detection_in(&tx, id, decision, server_id, action_id).await?;
        tx.commit().await.map_err(db)
    }

    async fn list_detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRecord>> {
        let limit = i64::from(filter.limit.unwrap_or(100));
        let clause = match (&filter.source, filter.action_id) {
            (None, None) => "WHERE $1::text IS NULL AND $2::bigint IS NULL",
            (Some(_), None) => "WHERE d.source = $1 AND $2::bigint IS NULL",
            (None, Some(_)) => "WHERE $1::text IS NULL AND d.action_id = $2",
            (Some(_), Some(_)) => "WHERE d.source = $1 AND d.action_id = $2",
        };
        let sql = format!("{clause} ORDER BY d.id DESC LIMIT $3");
        many_detections(&self.client().await?, &sql, &[&filter.source, &filter.action_id, &limit]).await
    }

    async fn servers_holding(&self, address: IpAddr, at_us: i64) -> Result<Vec<i64>> {
        self.client()
            .await?
            .query(
                "SELECT DISTINCT server_id FROM address_history
                 WHERE ip = $1 AND valid_from_us <= $2 AND (valid_to_us IS NULL OR valid_to_us > $2) ORDER BY server_id",
                &[&address.to_string(), &at_us],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| get(r, 0))
            .collect()
    }

    async fn append_step(&self, step: &NewStep) -> Result<StepRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let record = append_step_in(&tx, step).await?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    async fn steps(&self, action_id: i64) -> Result<Vec<StepRecord>> {
        self.client()
            .await?
            .query(
                "SELECT seq, attempt, name, target, outcome, detail, message_number, instance, started_at, finished_at
                 FROM action_steps WHERE action_id = $1 ORDER BY seq",
                &[&action_id],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                Ok(StepRecord {
                    seq: get(r, 0)?,
                    step: NewStep {
                        action_id,
                        attempt: get::<i64>(r, 1)? as u32,
                        name: get(r, 2)?,
                        target: get(r, 3)?,
                        outcome: StepOutcome::parse(get(r, 4)?).unwrap_or(StepOutcome::Failed),
                        detail: get(r, 5)?,
                        message_number: get::<Option<i64>>(r, 6)?.map(|n| n as u32),
                        instance: get(r, 7)?,
                        started_at: get(r, 8)?,
                        finished_at: get(r, 9)?,
                    },
                })
            })
            .collect()
    }

    async fn record_message(&self, message: &NewMessage) -> Result<MessageRecord> {
        record_message_in(&self.client().await?, message).await
    }

    async fn messages_for_action(&self, action_id: i64) -> Result<Vec<MessageRecord>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE action_id = $1 ORDER BY id");
        self.client().await?.query(&sql, &[&action_id]).await.map_err(db)?.iter().map(message_row).collect()
    }

    async fn recent_messages(&self, limit: u32) -> Result<Vec<MessageRecord>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY id DESC LIMIT $1");
        self.client().await?.query(&sql, &[&i64::from(limit)]).await.map_err(db)?.iter().map(message_row).collect()
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let record = append_audit_in(&tx, entry).await?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT $1");
        self.client().await?.query(&sql, &[&i64::from(limit)]).await.map_err(db)?.iter().map(audit_row).collect()
    }

    async fn audit_rows(&self, after_id: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id > $1 ORDER BY id LIMIT $2");
        self.client()
            .await?
            .query(&sql, &[&after_id, &i64::from(limit)])
            .await
            .map_err(db)?
            .iter()
            .map(audit_row)
            .collect()
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<TokenRecord> {
        let sql = format!(
            "INSERT INTO api_tokens (name, role, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING {TOKEN_COLUMNS}"
        );
        let row = self
            .client()
            .await?
            .query_one(&sql, &[&name, &role.as_str(), &hash, &Utc::now(), &expires_at])
            .await
            .map_err(|e| unique_violation(e, &format!("token {name}")))?;
        token_row(&row)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)"
        );
        self.client()
            .await?
            .query_opt(&sql, &[&hash, &Utc::now()])
            .await
            .map_err(db)?
            .map(|r| token_row(&r))
            .transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id");
        self.client().await?.query(&sql, &[]).await.map_err(db)?.iter().map(token_row).collect()
    }

    async fn revoke_token(&self, id: i64) -> Result<TokenRecord> {
        let client = self.client().await?;
        client
            .execute("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", &[&id, &Utc::now()])
            .await
            .map_err(db)?;
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1");
        client
            .query_opt(&sql, &[&id])
            .await
            .map_err(db)?
            .map(|r| token_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound { what: format!("token {id}") })
    }

    async fn create_user(&self, name: &str, role: Role, password_hash: &str) -> Result<UserRecord> {
        let sql = format!(
            "INSERT INTO console_users (name, role, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             RETURNING {USER_COLUMNS}"
        );
        let row = self
            .client()
            .await?
            .query_one(&sql, &[&name, &role.as_str(), &password_hash, &Utc::now()])
            .await
            .map_err(|e| unique_violation(e, &format!("user {name}")))?;
        user_row(&row)
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM console_users WHERE name = $1");
        self.client().await?.query_opt(&sql, &[&name]).await.map_err(db)?.map(|r| user_row(&r)).transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM console_users ORDER BY name");
        self.client().await?.query(&sql, &[]).await.map_err(db)?.iter().map(user_row).collect()
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let changed = tx
            .execute(
                "UPDATE console_users SET password_hash = $2, updated_at = $3 WHERE name = $1",
                &[&name, &password_hash, &Utc::now()],
            )
            .await
            .map_err(db)?;
        if changed == 0 {
            return Err(StoreError::NotFound { what: format!("user {name}") });
        }
        // A new password ends every session opened with the old one.
        tx.execute(
            "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM console_users WHERE name = $1)",
            &[&name],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn remove_user(&self, name: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM console_users WHERE name = $1)",
            &[&name],
        )
        .await
        .map_err(db)?;
        let removed = tx.execute("DELETE FROM console_users WHERE name = $1", &[&name]).await.map_err(db)?;
        if removed == 0 {
            return Err(StoreError::NotFound { what: format!("user {name}") });
        }
        tx.commit().await.map_err(db)
    }

    async fn create_session(&self, session: &NewSession) -> Result<SessionRecord> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO console_sessions (hash, user_id, csrf, created_at, last_seen_at, expires_at)
                 VALUES ($1, $2, $3, $4, $4, $5) RETURNING id",
                &[&session.hash, &session.user_id, &session.csrf, &Utc::now(), &session.expires_at],
            )
            .await
            .map_err(db)?;
        let id: i64 = get(&row, 0)?;
        session_row(&client.query_one(&format!("{SESSION_SELECT} WHERE s.id = $1"), &[&id]).await.map_err(db)?)
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>> {
        self.client()
            .await?
            .query_opt(&format!("{SESSION_SELECT} WHERE s.hash = $1"), &[&hash])
            .await
            .map_err(db)?
            .map(|r| session_row(&r))
            .transpose()
    }

    async fn touch_session(&self, id: i64, at: Timestamp) -> Result<()> {
        self.client()
            .await?
            .execute("UPDATE console_sessions SET last_seen_at = $2 WHERE id = $1", &[&id, &at])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        self.client().await?.execute("DELETE FROM console_sessions WHERE hash = $1", &[&hash]).await.map_err(db)?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, idle_before: Timestamp, now: Timestamp) -> Result<u64> {
        self.client()
            .await?
            .execute("DELETE FROM console_sessions WHERE last_seen_at < $1 OR expires_at <= $2", &[&idle_before, &now])
            .await
            .map_err(db)
    }

    async fn count_tokens(&self) -> Result<u64> {
        let row = self.client().await?.query_one("SELECT COUNT(*) FROM api_tokens", &[]).await.map_err(db)?;
        Ok(get::<i64>(&row, 0)? as u64)
    }

    async fn heartbeat(&self, instance: &str, address: &str, started_at: Timestamp) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO instances (name, address, started_at, heartbeat_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(name) DO UPDATE SET address = excluded.address, started_at = excluded.started_at,
                 heartbeat_at = excluded.heartbeat_at",
                &[&instance, &address, &started_at, &Utc::now()],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>> {
        let client = self.client().await?;
        let mut instances: Vec<InstanceRecord> = client
            .query(
                "SELECT name, address, started_at, heartbeat_at FROM instances ORDER BY heartbeat_at DESC, name",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                Ok(InstanceRecord {
                    name: get(r, 0)?,
                    address: get(r, 1)?,
                    started_at: get(r, 2)?,
                    heartbeat_at: get(r, 3)?,
                    actions: Vec::new(),
                    leases: Vec::new(),
                })
            })
            .collect::<Result<_>>()?;
        for instance in &mut instances {
            instance.actions = client
                .query(
                    "SELECT id, lease_until_us FROM actions WHERE state = 'running' AND lease_owner = $1 ORDER BY id",
                    &[&instance.name],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
                .collect::<Result<_>>()?;
            instance.leases = client
                .query(
                    "SELECT name, until_us FROM leases WHERE holder = $1 AND until_us >= $2 ORDER BY name",
                    &[&instance.name, &now_us()],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
                .collect::<Result<_>>()?;
        }
        Ok(instances)
    }

    async fn acquire_lease(&self, name: &str, holder: &str, until_us: i64) -> Result<bool> {
        // Taken when free, expired, or already ours; the upsert's WHERE makes it one step.
        let changed = self
            .client()
            .await?
            .execute(
                "INSERT INTO leases (name, holder, until_us, acquired_at) VALUES ($1, $2, $3, $5)
                 ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until_us = excluded.until_us,
                 acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END
                 WHERE leases.holder = excluded.holder OR leases.until_us < $4",
                &[&name, &holder, &until_us, &now_us(), &Utc::now()],
            )
            .await
            .map_err(db)?;
        Ok(changed == 1)
    }
}
