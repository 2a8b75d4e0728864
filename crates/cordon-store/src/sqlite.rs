//! The embedded SQLite store (`<data_dir>/cordon.db`), through rusqlite.
//!
//! **Group commit.** One writer thread owns the write connection. A write call sends its work
//! (a job) over a channel and awaits the reply. The writer blocks for the first job, takes
//! whatever else is queued (at most [`BATCH_CAP`]), and runs them all in one `BEGIN IMMEDIATE`
//! transaction, each job in its own savepoint: a job that fails or panics is rolled back to its
//! savepoint and alone gets its error. Then one `COMMIT`, one `fdatasync` (WAL,
//! `synchronous = FULL`), and only then does every job of the batch get its reply. So a call
//! that returned `Ok` survives a power cut, as before, but many calls in flight share one fsync.
//!
//! **Reads** of a file database run on [`READERS`] separate read connections
//! (`PRAGMA query_only = ON`, so a write misfiled as a read fails loudly) through tokio's
//! blocking pool, each call in one read transaction (one snapshot). WAL lets them run while
//! the writer commits; a read started after a write was acknowledged sees it. Anything that
//! reads and then writes (a compare-and-swap, a lease, a claim) is a write job. An in-memory
//! database (tests) cannot be opened twice, so its reads go to the writer thread, between
//! batches.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, mpsc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use cordon_model::{ActionCommand, ActionKind, ActionState, AddressPool, Detection, MacAddr, Role, ServerState};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::oneshot;

use crate::audit::entries;
use crate::*;

/// Ordered migrations; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_initial.sql"),
    include_str!("../migrations/sqlite/0002_detections.sql"),
    include_str!("../migrations/sqlite/0003_virtual_servers.sql"),
    include_str!("../migrations/sqlite/0004_server_origin.sql"),
    include_str!("../migrations/sqlite/0005_retry_schedule.sql"),
    include_str!("../migrations/sqlite/0006_lookup_indexes.sql"),
    include_str!("../migrations/sqlite/0007_audit_chain.sql"),
    include_str!("../migrations/sqlite/0008_console.sql"),
    include_str!("../migrations/sqlite/0009_instances_and_leases.sql"),
];

/// The migration (1-based) after which rows written before the chain existed are sealed.
const AUDIT_CHAIN_MIGRATION: usize = 7;

/// The most write jobs one transaction (one fsync) takes; the rest wait for the next one.
const BATCH_CAP: usize = 256;

/// Read connections of a file database (two cores here: more would only queue on the CPU).
const READERS: usize = 2;

#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// The instance named in the audit rows the store writes for state changes.
    instance: Arc<str>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (jobs, commits) = self.commit_stats();
        f.debug_struct("SqliteStore")
            .field("instance", &self.instance)
            .field("readers", &self.shared.readers.len())
            .field("jobs", &jobs)
            .field("commits", &commits)
            .finish()
    }
}

/// What every clone of a store shares; dropping the last one stops the writer thread.
struct Shared {
    /// The writer thread's queue. `None` only while dropping: closing it lets the writer finish
    /// what is queued and exit.
    jobs: Option<mpsc::Sender<Job>>,
    /// Read connections of a file database; empty in memory (reads go to the writer).
    readers: Vec<Mutex<Connection>>,
    /// Round-robin start for picking a read connection.
    next_reader: AtomicUsize,
    stats: Arc<CommitStats>,
    /// Joined on drop, so that the database file is closed when the last store is gone (a
    /// reopen or a copy of the file then sees everything).
    writer: Option<JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take()
            && writer.thread().id() != std::thread::current().id()
        {
            let _ = writer.join();
        }
    }
}

/// Counted by the writer thread since the store was opened.
#[derive(Debug, Default)]
struct CommitStats {
    /// Write jobs run (whether they succeeded or not).
    jobs: AtomicU64,
    /// Batch transactions committed (each one fsync).
    commits: AtomicU64,
}

/// Work for the writer thread.
enum Job {
    /// Runs inside a batch transaction, in its own savepoint.
    Write(Box<dyn BatchJob>),
    /// Runs on the writer's connection between batches (in-memory databases only). It sends its
    /// own reply.
    Read(Box<dyn FnOnce(&Connection) + Send>),
}

/// A write job, type-erased so that jobs of every result type share one queue.
trait BatchJob: Send {
    /// Runs the work (once) and keeps its outcome; true when it succeeded.
    fn run(&mut self, connection: &Connection) -> bool;
    /// Sends the outcome after the batch ended: with `failure` when the batch did not commit,
    /// a job that succeeded gets that error instead (its writes are gone).
    fn reply(self: Box<Self>, failure: Option<&StoreError>);
}

struct WriteJob<T, F> {
    work: Option<F>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> BatchJob for WriteJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        let outcome = catch_unwind(AssertUnwindSafe(|| work(connection)))
            .unwrap_or_else(|panic| Err(backend(format!("store job panicked: {}", panic_text(panic.as_ref())))));
        let succeeded = outcome.is_ok();
        self.outcome = Some(outcome);
        succeeded
    }

    fn reply(self: Box<Self>, failure: Option<&StoreError>) {
        let outcome = match (self.outcome, failure) {
            (Some(Ok(_)), Some(failure)) => Err(failure.clone()),
            (Some(outcome), _) => outcome,
            (None, failure) => Err(failure.cloned().unwrap_or_else(|| backend("the store job did not run"))),
        };
        // The caller may have gone (its future dropped); the job's effect stands either way.
        let _ = self.reply.send(outcome);
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_string(),
        (None, Some(text)) => text.clone(),
        (None, None) => "unknown panic".to_string(),
    }
}

fn writer_stopped() -> StoreError {
    backend("the store's writer thread stopped")
}

/// Runs one statement through the statement cache (the batch's BEGIN, savepoints, COMMIT).
fn exec(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The writer thread: batches of write jobs, one transaction each, until every store is gone.
fn write_loop(connection: Connection, jobs: mpsc::Receiver<Job>, stats: &CommitStats) {
    let mut held: Option<Job> = None;
    loop {
        let job = match held.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                // Every sender is gone and the queue is empty.
                Err(mpsc::RecvError) => return,
            },
        };
        match job {
            Job::Read(read) => {
                // `query_only` while it runs, as on a file database's read connections, so that
                // a write misfiled as a read fails in the in-memory tests too. A panic drops the
                // reply sender: the caller gets an error, the writer goes on.
                if exec(&connection, "PRAGMA query_only = ON").is_ok() {
                    let _ = catch_unwind(AssertUnwindSafe(|| read(&connection)));
                }
                let _ = exec(&connection, "PRAGMA query_only = OFF");
            }
            Job::Write(first) => {
                let mut batch = VecDeque::from([first]);
                while batch.len() < BATCH_CAP {
                    match jobs.try_recv() {
                        Ok(Job::Write(job)) => batch.push_back(job),
                        // A read waits for this batch's commit, so it sees what was queued
                        // before it, and nothing uncommitted.
                        Ok(read) => {
                            held = Some(read);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                while !batch.is_empty() {
                    commit_batch(&connection, &mut batch, stats);
                }
            }
        }
    }
}

/// Runs jobs from the front of `batch` in one transaction, commits, then replies to each.
///
/// If the transaction ends under a job (SQLite rolls back by itself on a few errors, such as a
/// full disk), the jobs that ran get an error and those not run stay in `batch` for a new
/// transaction. If `COMMIT` fails, every job of the batch gets an error: none was acknowledged.
fn commit_batch(connection: &Connection, batch: &mut VecDeque<Box<dyn BatchJob>>, stats: &CommitStats) {
    if let Err(error) = exec(connection, "BEGIN IMMEDIATE") {
        let failure = backend(format!("cannot begin a write transaction: {error}"));
        for job in batch.drain(..) {
            job.reply(Some(&failure));
        }
        return;
    }
    let mut ran = Vec::with_capacity(batch.len());
    let mut failure = None;
    while let Some(mut job) = batch.pop_front() {
        if let Err(error) = exec(connection, "SAVEPOINT job") {
            // That job fails with the batch (never run), so that every pass makes progress.
            ran.push(job);
            failure = Some(backend(format!("cannot open a savepoint: {error}")));
            break;
        }
        stats.jobs.fetch_add(1, Ordering::Relaxed);
        let succeeded = job.run(connection);
        ran.push(job);
        let ended = if connection.is_autocommit() {
            Err(backend("the write transaction ended inside a job; its batch was rolled back"))
        } else if succeeded {
            exec(connection, "RELEASE job").map_err(backend)
        } else {
            exec(connection, "ROLLBACK TO job").and_then(|()| exec(connection, "RELEASE job")).map_err(backend)
        };
        if let Err(error) = ended {
            failure = Some(error);
            break;
        }
    }
    if failure.is_none() {
        match exec(connection, "COMMIT") {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => failure = Some(backend(format!("commit failed: {error}"))),
        }
    }
    if failure.is_some() && !connection.is_autocommit() {
        let _ = exec(connection, "ROLLBACK");
    }
    for job in ran {
        job.reply(failure.as_ref());
    }
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A timestamp as stored: RFC 3339 in UTC with microseconds, so that text order is time order.
fn time_text(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A unique constraint names a taken name; anything else is the backend's.
fn unique_violation(error: rusqlite::Error, what: &str) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _) if failure.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::AlreadyExists { what: what.to_string() }
        }
        _ => backend(error),
    }
}

const TOKEN_COLUMNS: &str = "id, name, role, created_at, revoked_at IS NOT NULL, expires_at";

fn token_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        role: parse_text(&row.get::<_, String>(2)?)?,
        created_at: parse_time(&row.get::<_, String>(3)?)?,
        revoked: row.get(4)?,
        expires_at: row.get::<_, Option<String>>(5)?.as_deref().map(parse_time).transpose()?,
    })
}

const USER_COLUMNS: &str = "id, name, role, password_hash, created_at, updated_at";

fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        role: parse_text(&row.get::<_, String>(2)?)?,
        password_hash: row.get(3)?,
        created_at: parse_time(&row.get::<_, String>(4)?)?,
        updated_at: parse_time(&row.get::<_, String>(5)?)?,
    })
}

const SESSION_SELECT: &str = "SELECT s.id, s.user_id, u.name, u.role, s.csrf, s.created_at, s.last_seen_at, s.expires_at \
     FROM console_sessions s JOIN console_users u ON u.id = s.user_id";

fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: row.get(0)?,
        user_id: row.get(1)?,
        user_name: row.get(2)?,
        role: parse_text(&row.get::<_, String>(3)?)?,
        csrf: row.get(4)?,
        created_at: parse_time(&row.get::<_, String>(5)?)?,
        last_seen_at: parse_time(&row.get::<_, String>(6)?)?,
        expires_at: parse_time(&row.get::<_, String>(7)?)?,
    })
}

fn parse_time(text: &str) -> rusqlite::Result<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// An address stored as text, where the empty text means "not known".
fn optional_address(text: &str) -> rusqlite::Result<Option<IpAddr>> {
    if text.is_empty() { Ok(None) } else { parse_text(text).map(Some) }
}

fn address_text(address: Option<IpAddr>) -> String {
    address.map(|a| a.to_string()).unwrap_or_default()
}

fn parse_text<T: std::str::FromStr>(text: &str) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse::<T>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let open = || Connection::open(path).map_err(|e| backend(format!("{}: {e}", path.display())));
        let mut connection = open()?;
        prepare_writer(&mut connection)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = open()?;
                reader
                    .execute_batch("PRAGMA query_only = ON; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                    .map_err(backend)?;
                reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::start(connection, readers)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let mut connection = Connection::open_in_memory().map_err(backend)?;
        prepare_writer(&mut connection)?;
        Self::start(connection, Vec::new())
    }

    /// Starts the writer thread on the migrated connection.
    fn start(connection: Connection, readers: Vec<Mutex<Connection>>) -> Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let writer = std::thread::Builder::new()
            .name("cordon-store-writer".into())
            .spawn({
                let stats = stats.clone();
                move || write_loop(connection, receiver, &stats)
            })
            .map_err(|e| backend(format!("cannot start the store's writer thread: {e}")))?;
        let shared =
            Shared { jobs: Some(sender), readers, next_reader: AtomicUsize::new(0), stats, writer: Some(writer) };
        Ok(SqliteStore { shared: Arc::new(shared), instance: Arc::from("cordon") })
    }

    /// Names the instance in the audit rows written for state changes (default `cordon`).
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = Arc::from(instance);
        self
    }

    /// Write jobs run and transactions committed (fsyncs) since the store was opened: their
    /// ratio is how many writes shared one commit.
    pub fn commit_stats(&self) -> (u64, u64) {
        let stats = &self.shared.stats;
        (stats.jobs.load(Ordering::Relaxed), stats.commits.load(Ordering::Relaxed))
    }

    fn send(&self, job: Job) -> Result<()> {
        let jobs = self.shared.jobs.as_ref().ok_or_else(writer_stopped)?;
        jobs.send(job).map_err(|_| writer_stopped())
    }

    /// Runs `work` on the writer thread inside a batch transaction (in its own savepoint) and
    /// returns its outcome once the batch committed. `work` must not open a transaction.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Write(Box::new(WriteJob { work: Some(work), outcome: None, reply })))?;
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Runs read-only `work` on a read connection (file), or on the writer between batches
    /// (memory).
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        if self.shared.readers.is_empty() {
            let (reply, answer) = oneshot::channel();
            self.send(Job::Read(Box::new(move |connection| {
                let _ = reply.send(work(connection));
            })))?;
            return answer.await.map_err(|_| writer_stopped())?;
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let guard = shared.reader();
            // One snapshot for the whole call (e.g. servers, then their NICs); dropped, it ends.
            let snapshot = guard.unchecked_transaction().map_err(backend)?;
            work(&snapshot)
        })
        .await
        .map_err(|e| backend(format!("store task failed: {e}")))?
    }
}

impl Shared {
    /// A free read connection if there is one, else the next in turn once it is free.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let count = self.readers.len();
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed) % count;
        for offset in 0..count {
            match self.readers[(first + offset) % count].try_lock() {
                Ok(guard) => return guard,
                // A panic while holding the lock leaves nothing half-written (the connection is
                // query_only), so a poisoned lock is still safe to use.
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[first].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The writer connection's settings and the migrations, before the writer thread starts.
fn prepare_writer(connection: &mut Connection) -> Result<()> {
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
        .map_err(backend)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    migrate(connection)
}

/// Prepared statements kept per connection: more than the store's distinct hot statements.
const STATEMENT_CACHE: usize = 256;

/// `execute` and `query_row` through the connection's statement cache: an action runs the same
/// few dozen statements, and parsing them again on every call showed in profiles of the
/// sustained-rate bench.
trait CachedStatements {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl CachedStatements for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

fn migrate(connection: &mut Connection) -> Result<()> {
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .map_err(backend)?;
    let current: i64 = connection
        .query_row_cached("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))
        .map_err(backend)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::SchemaTooNew { found: current, known });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = connection.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(|e| backend(format!("migration {}: {e}", index + 1)))?;
        if index + 1 == AUDIT_CHAIN_MIGRATION {
            seal_audit(&tx)?;
        }
        tx.execute_cached(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![index as i64 + 1, now()],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

const SERVER_COLUMNS: &str = "id, name, kind, tenant, user_email, state, retired, updated_at, hypervisor, domain";

fn server_row(row: &Row<'_>) -> rusqlite::Result<ServerRecord> {
    Ok(ServerRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        kind: parse_text(&row.get::<_, String>(2)?)?,
        tenant: row.get(3)?,
        user_email: row.get(4)?,
        state: parse_text(&row.get::<_, String>(5)?)?,
        retired: row.get::<_, i64>(6)? != 0,
        nics: Vec::new(),
        updated_at: parse_time(&row.get::<_, String>(7)?)?,
        hypervisor: row.get(8)?,
        domain: row.get(9)?,
    })
}

fn load_nics(connection: &Connection, server: &mut ServerRecord) -> rusqlite::Result<()> {
    let mut statement = connection.prepare_cached(
        "SELECT mac, network, operational_ip, switch, port, current_network, current_ip FROM nics WHERE server_id = ?1 ORDER BY position",
    )?;
    server.nics = statement
        .query_map([server.id], |row| {
            Ok(NicRecord {
                mac: parse_text(&row.get::<_, String>(0)?)?,
                network: row.get(1)?,
                operational_ip: optional_address(&row.get::<_, String>(2)?)?,
                switch: row.get(3)?,
                port: row.get(4)?,
                current_network: row.get(5)?,
                current_ip: row.get::<_, Option<String>>(6)?.map(|t| parse_text(&t)).transpose()?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(())
}

fn one_server(connection: &Connection, clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<ServerRecord>> {
    let sql = format!("SELECT {SERVER_COLUMNS} FROM servers WHERE {clause}");
    let server = connection.query_row_cached(&sql, [param], server_row).optional().map_err(backend)?;
    match server {
        Some(mut server) => {
            load_nics(connection, &mut server).map_err(backend)?;
            Ok(Some(server))
        }
        None => Ok(None),
    }
}

const ACTION_COLUMNS: &str = "a.id, a.kind, a.state, a.generation, a.server_id, s.name, a.address, a.reason, a.trigger, a.requested_by, \
     a.instance, a.attempts, a.message_number, a.message_text, a.detections, a.decided_by, a.created_at, a.updated_at, a.lease_owner";

fn action_row(row: &Row<'_>) -> rusqlite::Result<ActionRecord> {
    let number: Option<i64> = row.get(12)?;
    let text: Option<String> = row.get(13)?;
    Ok(ActionRecord {
        id: row.get(0)?,
        kind: parse_text(&row.get::<_, String>(1)?)?,
        state: parse_text(&row.get::<_, String>(2)?)?,
        generation: row.get(3)?,
        server_id: row.get(4)?,
        server_name: row.get(5)?,
        address: row.get::<_, Option<String>>(6)?.map(|t| parse_text(&t)).transpose()?,
        reason: row.get(7)?,
        trigger: row.get(8)?,
        requested_by: row.get(9)?,
        instance: row.get(10)?,
        attempts: row.get::<_, i64>(11)? as u32,
        message: number.map(|n| MessageRef { number: n as u32, text: text.unwrap_or_default() }),
        detections: row.get::<_, i64>(14)? as u64,
        decided_by: row.get(15)?,
        created_at: parse_time(&row.get::<_, String>(16)?)?,
        updated_at: parse_time(&row.get::<_, String>(17)?)?,
        lease_owner: row.get(18)?,
    })
}

fn one_action(connection: &Connection, id: i64) -> Result<Option<ActionRecord>> {
    let sql =
        format!("SELECT {ACTION_COLUMNS} FROM actions a LEFT JOIN servers s ON s.id = a.server_id WHERE a.id = ?1");
    connection.query_row_cached(&sql, [id], action_row).optional().map_err(backend)
}

fn many_actions(connection: &Connection, clause: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Vec<ActionRecord>> {
    let sql = format!("SELECT {ACTION_COLUMNS} FROM actions a LEFT JOIN servers s ON s.id = a.server_id {clause}");
    let mut statement = connection.prepare_cached(&sql).map_err(backend)?;
    let rows = statement.query_map(params, action_row).map_err(backend)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend)
}

fn message_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: row.get(0)?,
        message: NewMessage {
            number: row.get::<_, i64>(1)? as u32,
            text: row.get(2)?,
            server_id: row.get(3)?,
            action_id: row.get(4)?,
            instance: row.get(5)?,
        },
        created_at: parse_time(&row.get::<_, String>(6)?)?,
    })
}

const DETECTION_COLUMNS: &str = "d.id, d.received_at_us, d.observed_at_us, d.source, d.sensor, d.subject, d.peer, d.src_ip, \
     d.dest_ip, d.target_ip, d.signature_id, d.signature, d.category, d.severity, d.raw, d.instance, d.decision, d.server_id, \
     s.name, d.action_id";

fn detection_row(row: &Row<'_>) -> rusqlite::Result<DetectionRecord> {
    let address = |i: usize| -> rusqlite::Result<Option<IpAddr>> {
        row.get::<_, Option<String>>(i)?.map(|t| parse_text(&t)).transpose()
    };
    Ok(DetectionRecord {
        id: row.get(0)?,
        detection: Detection {
            received_at_us: row.get(1)?,
            observed_at_us: row.get(2)?,
            source: row.get(3)?,
            sensor: row.get(4)?,
            subject: parse_text(&row.get::<_, String>(5)?)?,
            peer: address(6)?,
            src_ip: address(7)?,
            dest_ip: address(8)?,
            target_ip: address(9)?,
            signature_id: row.get(10)?,
            signature: row.get(11)?,
            category: row.get(12)?,
            severity: parse_text(&row.get::<_, String>(13)?)?,
            raw: row.get(14)?,
        },
        instance: row.get(15)?,
        decision: row.get(16)?,
        server_id: row.get(17)?,
        server_name: row.get(18)?,
        action_id: row.get(19)?,
    })
}

fn many_detections(
    connection: &Connection,
    clause: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<DetectionRecord>> {
    let sql =
        format!("SELECT {DETECTION_COLUMNS} FROM detections d LEFT JOIN servers s ON s.id = d.server_id {clause}");
    let mut statement = connection.prepare_cached(&sql).map_err(backend)?;
    let rows = statement.query_map(params, detection_row).map_err(backend)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend)
}

const MESSAGE_COLUMNS: &str = "id, number, text, server_id, action_id, instance, created_at";

/// A stored server as the sync compares it with the configuration.
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

/// One server's stored NICs (in position order) and its open `operational` address rows
/// (id, mac, ip).
#[derive(Debug, Clone, Default)]
struct StoredNics {
    nics: Vec<StoredNic>,
    open: Vec<(i64, String, String)>,
}

/// Reads the stored NICs and open operational addresses of one server, or of all (`None`),
/// keyed by server id.
fn load_stored_nics(
    tx: &Connection,
    server_id: Option<i64>,
) -> rusqlite::Result<std::collections::HashMap<i64, StoredNics>> {
    let mut stored: std::collections::HashMap<i64, StoredNics> = std::collections::HashMap::new();
    let filter = if server_id.is_some() { "WHERE server_id = ?1" } else { "WHERE ?1 IS NULL" };
    let mut statement = tx.prepare_cached(&format!(
        "SELECT server_id, mac, position, network, operational_ip, switch, port, current_network, current_ip
         FROM nics {filter} ORDER BY server_id, position"
    ))?;
    let mut rows = statement.query([server_id])?;
    while let Some(r) = rows.next()? {
        stored.entry(r.get(0)?).or_default().nics.push(StoredNic {
            mac: r.get(1)?,
            position: r.get(2)?,
            network: r.get(3)?,
            operational_ip: r.get(4)?,
            switch: r.get(5)?,
            port: r.get(6)?,
            current_network: r.get(7)?,
            current_ip: r.get(8)?,
        });
    }
    let mut statement = tx.prepare_cached(&format!(
        "SELECT server_id, id, mac, ip FROM address_history {filter} AND kind = 'operational' AND valid_to_us IS NULL
         ORDER BY server_id, id"
    ))?;
    let mut rows = statement.query([server_id])?;
    while let Some(r) = rows.next()? {
        stored.entry(r.get(0)?).or_default().open.push((r.get(1)?, r.get(2)?, r.get(3)?));
    }
    Ok(stored)
}

/// Brings the stored inventory to the configuration's, in one transaction. The stored servers,
/// NICs and open addresses are read once and compared in memory: only differences are written,
/// so a restart with nothing changed reads three tables and writes (almost) nothing.
fn sync_inventory(tx: &Connection, inventory: &Inventory) -> rusqlite::Result<SyncReport> {
    let at = now();
    for network in &inventory.networks {
        tx.prepare_cached(
            "INSERT INTO networks (name, role, subnet, quarantine_network, pool, bridge, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, subnet = excluded.subnet, quarantine_network = excluded.quarantine_network,
             pool = excluded.pool, bridge = excluded.bridge, updated_at = excluded.updated_at",
        )?
        .execute(params![network.name, network.role.as_str(), network.subnet, network.quarantine_network, network.pool, network.bridge, at])?;
    }
    for tenant in &inventory.tenants {
        tx.prepare_cached(
            "INSERT INTO tenants (name, admin_email, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET admin_email = excluded.admin_email, updated_at = excluded.updated_at",
        )?
        .execute(params![tenant.name, tenant.admin_email, at])?;
    }

    // The stored inventory, once: servers in id order, NICs and open addresses by server.
    let mut order: Vec<String> = Vec::new();
    let mut servers: std::collections::HashMap<String, StoredServer> = std::collections::HashMap::new();
    {
        let mut statement = tx.prepare_cached(
            "SELECT id, name, kind, tenant, user_email, retired, hypervisor, domain, origin FROM servers ORDER BY id",
        )?;
        let mut rows = statement.query([])?;
        while let Some(r) = rows.next()? {
            let name: String = r.get(1)?;
            let server = StoredServer {
                id: r.get(0)?,
                kind: r.get(2)?,
                tenant: r.get(3)?,
                user_email: r.get(4)?,
                retired: r.get::<_, i64>(5)? != 0,
                hypervisor: r.get(6)?,
                domain: r.get(7)?,
                origin: r.get(8)?,
            };
            order.push(name.clone());
            servers.insert(name, server);
        }
    }
    let mut nics = load_stored_nics(tx, None)?;

    let mut report = SyncReport::default();
    let mut wanted = BTreeSet::new();
    for server in &inventory.servers {
        wanted.insert(server.name.clone());
        match servers.get_mut(&server.name) {
            None => {
                tx.prepare_cached(
                    "INSERT INTO servers (name, kind, tenant, user_email, state, retired, created_at, updated_at, hypervisor, domain)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6, ?7, ?8)",
                )?
                .execute(params![
                    server.name,
                    server.kind.as_str(),
                    server.tenant,
                    server.user_email,
                    ServerState::Operational.as_str(),
                    at,
                    server.hypervisor,
                    server.domain
                ])?;
                report.added.push(server.name.clone());
                let id = tx.last_insert_rowid();
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
                let stored = nics.entry(id).or_default();
                sync_nics_with(tx, id, server, stored)?;
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
                    tx.prepare_cached(
                        "UPDATE servers SET kind = ?2, tenant = ?3, user_email = ?4, retired = 0, updated_at = ?5, hypervisor = ?6,
                         domain = ?7, origin = 'config' WHERE id = ?1",
                    )?
                    .execute(params![
                        stored.id,
                        server.kind.as_str(),
                        server.tenant,
                        server.user_email,
                        at,
                        server.hypervisor,
                        server.domain
                    ])?;
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
                let nics_changed = nics_differ(&stored_nics.nics, server);
                if changed_fields || nics_changed {
                    report.updated.push(server.name.clone());
                }
                sync_nics_with(tx, id, server, stored_nics)?;
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
        tx.prepare_cached("UPDATE servers SET retired = 1, updated_at = ?2 WHERE id = ?1")?
            .execute(params![stored.id, at])?;
        tx.prepare_cached(
            "UPDATE address_history SET valid_to_us = ?2 WHERE server_id = ?1 AND kind = 'operational' AND valid_to_us IS NULL",
        )?
        .execute(params![stored.id, closed_at_us])?;
        report.retired.push(name.clone());
    }
    Ok(report)
}

/// Adds servers that no stored server has the name of (an import); existing ones are left alone.
fn import_servers(connection: &Connection, servers: &[ServerSpec], origin: &str) -> rusqlite::Result<SyncReport> {
    let at = now();
    let mut report = SyncReport::default();
    for server in servers {
        let exists: bool =
            connection
                .query_row_cached("SELECT COUNT(*) > 0 FROM servers WHERE name = ?1", [&server.name], |r| r.get(0))?;
        if exists {
            continue;
        }
        connection.execute_cached(
            "INSERT INTO servers (name, kind, tenant, user_email, state, retired, created_at, updated_at, hypervisor, domain, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6, ?7, ?8, ?9)",
            params![
                server.name,
                server.kind.as_str(),
                server.tenant,
                server.user_email,
                ServerState::Operational.as_str(),
                at,
                server.hypervisor,
                server.domain,
                origin
            ],
        )?;
        let id = connection.last_insert_rowid();
        sync_nics(connection, id, server)?;
        report.added.push(server.name.clone());
    }
    Ok(report)
}

/// Whether the configured NICs differ from the stored ones (before `sync_nics_with` rewrites
/// them): MAC, network, address, switch and port, in position order.
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

/// Keeps one open `operational` history row per configured (NIC, address) of the server and
/// closes the rows of addresses the configuration no longer gives it. `open` is the server's
/// open rows (id, mac, ip), kept current.
fn sync_address_history(
    tx: &Connection,
    server_id: i64,
    nics: &[NicSpec],
    open: &mut Vec<(i64, String, String)>,
) -> rusqlite::Result<()> {
    let wanted: Vec<(String, String)> =
        nics.iter().filter_map(|n| n.ip.map(|ip| (n.mac.to_string(), ip.to_string()))).collect();
    let unchanged =
        open.len() == wanted.len() && wanted.iter().all(|(mac, ip)| open.iter().any(|(_, m, i)| m == mac && i == ip));
    if unchanged {
        return Ok(());
    }
    let at = now_us();
    // A server's first addresses were its own before Cordon knew of it: late alerts from
    // before its first start still resolve.
    let first_sight: bool = tx
        .prepare_cached("SELECT COUNT(*) = 0 FROM address_history WHERE server_id = ?1")?
        .query_row([server_id], |r| r.get(0))?;
    let mut kept = Vec::with_capacity(wanted.len());
    for (id, mac, ip) in open.drain(..) {
        if wanted.iter().any(|(m, i)| *m == mac && *i == ip) {
            kept.push((id, mac, ip));
        } else {
            tx.prepare_cached("UPDATE address_history SET valid_to_us = ?2 WHERE id = ?1")?.execute(params![id, at])?;
        }
    }
    for (mac, ip) in wanted {
        if !kept.iter().any(|(_, m, i)| *m == mac && *i == ip) {
            let from = if first_sight { 0 } else { at };
            tx.prepare_cached(
                "INSERT INTO address_history (ip, server_id, mac, kind, valid_from_us) VALUES (?1, ?2, ?3, 'operational', ?4)",
            )?
            .execute(params![ip, server_id, mac, from])?;
            kept.push((tx.last_insert_rowid(), mac, ip));
        }
    }
    *open = kept;
    Ok(())
}

/// One server's NICs as the configuration gives them, for an import (one server at a time).
fn sync_nics(tx: &Connection, server_id: i64, server: &ServerSpec) -> rusqlite::Result<()> {
    let mut stored = load_stored_nics(tx, Some(server_id))?.remove(&server_id).unwrap_or_default();
    sync_nics_with(tx, server_id, server, &mut stored)
}

/// Brings one server's NICs and open addresses to the configuration's, writing only rows that
/// differ from `stored` (which is kept current).
fn sync_nics_with(
    tx: &Connection,
    server_id: i64,
    server: &ServerSpec,
    stored: &mut StoredNics,
) -> rusqlite::Result<()> {
    sync_address_history(tx, server_id, &server.nics, &mut stored.open)?;
    // NICs that left the configuration go; their leases (if any) stay until an unquarantine
    // would release them, so no address is handed out twice meanwhile.
    let macs: Vec<String> = server.nics.iter().map(|n| n.mac.to_string()).collect();
    let mut kept = Vec::with_capacity(macs.len());
    for nic in stored.nics.drain(..) {
        if macs.contains(&nic.mac) {
            kept.push(nic);
        } else {
            tx.prepare_cached("DELETE FROM nics WHERE server_id = ?1 AND mac = ?2")?
                .execute(params![server_id, nic.mac])?;
        }
    }
    let mut now_stored = Vec::with_capacity(server.nics.len());
    for ((position, nic), mac) in server.nics.iter().enumerate().zip(macs) {
        let operational_ip = address_text(nic.ip);
        let current_ip_if_home = (!operational_ip.is_empty()).then(|| operational_ip.clone());
        // What the upsert below makes of the row: a NIC at home (in its operational network)
        // follows the configuration; one elsewhere (quarantined) keeps where Cordon put it.
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
        tx.prepare_cached(
            "INSERT INTO nics (server_id, mac, position, network, operational_ip, switch, port, current_network, current_ip)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?4, NULLIF(?5, ''))
             ON CONFLICT(server_id, mac) DO UPDATE SET position = excluded.position, network = excluded.network,
             operational_ip = excluded.operational_ip, switch = excluded.switch, port = excluded.port,
             current_ip = CASE WHEN nics.current_network = excluded.network THEN NULLIF(excluded.operational_ip, '') ELSE nics.current_ip END,
             current_network = CASE WHEN nics.current_network = nics.network THEN excluded.network ELSE nics.current_network END",
        )?
        .execute(params![server_id, next.mac, next.position, next.network, next.operational_ip, next.switch, next.port])?;
        now_stored.push(next);
    }
    stored.nics = now_stored;
    Ok(())
}

/// Chains the audit rows written before the chain existed, in id order (once, in the migration
/// that adds the columns: sealing later would hide a row whose hash was removed).
fn seal_audit(connection: &Connection) -> Result<()> {
    let rows = {
        let mut statement = connection
            .prepare("SELECT id, at, actor, origin, verb, target, detail, instance FROM audit ORDER BY id")
            .map_err(backend)?;
        statement
            .query_map([], audit_row_unsealed)
            .map_err(backend)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(backend)?
    };
    let mut previous = AUDIT_GENESIS.to_string();
    for (id, at, entry) in rows {
        let hash = audit_hash(&previous, id, at.timestamp_micros(), &entry);
        connection
            .execute_cached("UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE id = ?1", params![id, previous, hash])
            .map_err(backend)?;
        previous = hash;
    }
    Ok(())
}

fn audit_row_unsealed(r: &Row<'_>) -> rusqlite::Result<(i64, Timestamp, AuditEntry)> {
    Ok((
        r.get(0)?,
        parse_time(&r.get::<_, String>(1)?)?,
        AuditEntry {
            actor: r.get(2)?,
            origin: r.get(3)?,
            verb: r.get(4)?,
            target: r.get(5)?,
            detail: r.get(6)?,
            instance: r.get(7)?,
        },
    ))
}

const AUDIT_COLUMNS: &str = "id, at, actor, origin, verb, target, detail, instance, prev_hash, hash";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let (id, at, entry) = audit_row_unsealed(r)?;
    Ok(AuditRecord {
        id,
        at,
        entry,
        prev_hash: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
        hash: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
    })
}

/// Appends one row to the audit chain inside the caller's transaction, which must hold the
/// write lock (IMMEDIATE) or be the only writer, so that two rows never claim one predecessor.
fn append_audit_in(connection: &Connection, entry: &AuditEntry) -> Result<AuditRecord> {
    let last: Option<(i64, Option<String>)> = connection
        .query_row_cached("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(backend)?;
    let (id, prev_hash) = match last {
        Some((id, hash)) => (id + 1, hash.unwrap_or_default()),
        None => (1, AUDIT_GENESIS.to_string()),
    };
    // Stored at microsecond precision, hashed from the same microseconds.
    let at = DateTime::from_timestamp_micros(now_us()).unwrap_or_default();
    let hash = audit_hash(&prev_hash, id, at.timestamp_micros(), entry);
    connection
        .execute_cached(
            "INSERT INTO audit (id, at, actor, origin, verb, target, detail, instance, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                id,
                at.to_rfc3339_opts(SecondsFormat::Micros, true),
                entry.actor,
                entry.origin,
                entry.verb,
                entry.target,
                entry.detail,
                entry.instance,
                prev_hash,
                hash
            ],
        )
        .map_err(backend)?;
    Ok(AuditRecord { id, at, entry: entry.clone(), prev_hash, hash })
}

/// One compare-and-swap move of an action's state.
struct Transition {
    id: i64,
    generation: i64,
    command: ActionCommand,
    /// Sets the kind in the same step (approval as another kind).
    kind: Option<ActionKind>,
    message: Option<MessageRef>,
    /// For `backoff`: not runnable before then (Unix microseconds).
    not_before_us: Option<i64>,
    /// With a lease (holder, expiry in Unix microseconds), the action is claimed: refused while
    /// another action of its server runs, and leased when it becomes `running`.
    lease: Option<(String, i64)>,
}

fn transition(
    connection: &Connection,
    instance: &str,
    change: Transition,
    alongside: &Alongside,
) -> Result<ActionRecord> {
    let Transition { id, generation, command, kind, message, not_before_us, lease } = change;
    let current: Option<(String, i64, Option<i64>)> = connection
        .query_row_cached("SELECT state, generation, server_id FROM actions WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(backend)?;
    let Some((state, found, server_id)) = current else {
        return Err(StoreError::NotFound { what: format!("action {id}") });
    };
    if found != generation {
        return Err(StoreError::Conflict { id, expected: generation, found });
    }
    let state: ActionState = state.parse().map_err(backend)?;
    let next = state.apply(command).map_err(|source| StoreError::InvalidTransition { id, source })?;
    if let (Some(_), Some(server_id)) = (&lease, server_id) {
        let busy: bool = connection
            .query_row_cached(
                "SELECT COUNT(*) > 0 FROM actions WHERE server_id = ?1 AND state = 'running' AND id != ?2",
                params![server_id, id],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if busy {
            return Err(StoreError::ServerBusy { id, server_id });
        }
    }
    let started = i64::from(command == ActionCommand::Start);
    let (number, text) = match &message {
        Some(m) => (Some(i64::from(m.number)), Some(m.text.clone())),
        None => (None, None),
    };
    connection
        .execute_cached(
            "UPDATE actions SET state = ?3, generation = generation + 1, attempts = attempts + ?4,
         message_number = COALESCE(?5, message_number), message_text = COALESCE(?6, message_text), updated_at = ?7,
         kind = COALESCE(?8, kind), not_before_us = ?9,
         lease_owner = CASE WHEN ?3 = 'running' THEN ?10 ELSE NULL END,
         lease_until_us = CASE WHEN ?3 = 'running' THEN ?11 ELSE NULL END
         WHERE id = ?1 AND generation = ?2",
            params![
                id,
                generation,
                next.as_str(),
                started,
                number,
                text,
                now(),
                kind.map(|k| k.as_str()),
                not_before_us,
                lease.as_ref().map(|l| l.0.as_str()),
                lease.as_ref().map(|l| l.1)
            ],
        )
        .map_err(backend)?;
    let record = one_action(connection, id)?.ok_or_else(|| StoreError::NotFound { what: format!("action {id}") })?;
    let entry = entries::action_state(instance, id, (state, next), command, kind, message.as_ref());
    apply_alongside(connection, instance, alongside)?;
    append_audit_in(connection, &entry)?;
    Ok(record)
}

fn set_server_state_in(tx: &Connection, instance: &str, server_id: i64, state: ServerState) -> Result<()> {
    let before: Option<(String, String)> = tx
        .query_row_cached("SELECT name, state FROM servers WHERE id = ?1", [server_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(backend)?;
    let Some((name, before)) = before else {
        return Err(StoreError::NotFound { what: format!("server {server_id}") });
    };
    tx.execute_cached(
        "UPDATE servers SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![server_id, state.as_str(), now()],
    )
    .map_err(backend)?;
    if before != state.as_str() {
        let detail = format!("{before} -> {state}");
        append_audit_in(tx, &entries::state_change(instance, "server_state", format!("server {name}"), detail))?;
    }
    Ok(())
}

fn record_nic_position_in(tx: &Connection, instance: &str, position: &NicPosition) -> Result<()> {
    let NicPosition { server_id, mac, network, ip } = position;
    let before: Option<(String, String, Option<String>)> = tx
        .query_row_cached(
            "SELECT s.name, n.current_network, n.current_ip FROM nics n JOIN servers s ON s.id = n.server_id
             WHERE n.server_id = ?1 AND n.mac = ?2",
            params![server_id, mac.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(backend)?;
    let Some((name, before_network, before_ip)) = before else {
        return Err(StoreError::NotFound { what: format!("NIC {mac} of server {server_id}") });
    };
    let ip_text = ip.map(|i| i.to_string());
    tx.execute_cached(
        "UPDATE nics SET current_network = ?3, current_ip = ?4 WHERE server_id = ?1 AND mac = ?2",
        params![server_id, mac.to_string(), network, ip_text],
    )
    .map_err(backend)?;
    tx.execute_cached("UPDATE servers SET updated_at = ?2 WHERE id = ?1", params![server_id, now()])
        .map_err(backend)?;
    if (before_network.as_str(), before_ip.as_deref()) != (network.as_str(), ip_text.as_deref()) {
        let before = (before_network.as_str(), before_ip.as_deref());
        let after = (network.as_str(), ip_text.as_deref());
        let mac = mac.to_string();
        append_audit_in(tx, &entries::nic_position(instance, &name, &mac, before, after))?;
    }
    Ok(())
}

fn existing_lease(connection: &Connection, server_id: i64, mac: MacAddr, network: &str) -> Result<Option<IpAddr>> {
    let existing: Option<String> = connection
        .query_row_cached(
            "SELECT ip FROM ip_leases WHERE server_id = ?1 AND mac = ?2 AND network = ?3",
            params![server_id, mac.to_string(), network],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    existing.map(|ip| ip.parse().map_err(backend)).transpose()
}

/// The NIC's lease on `network`, taking the lowest free address of `pool` if it has none. The
/// writer holds the database's write lock, so the read of leased addresses and the insert
/// cannot interleave with another writer.
fn lease_address_in(
    connection: &Connection,
    server_id: i64,
    mac: MacAddr,
    network: &str,
    pool: &AddressPool,
) -> Result<IpAddr> {
    if let Some(ip) = existing_lease(connection, server_id, mac, network)? {
        return Ok(ip);
    }
    let mac_text = mac.to_string();
    let mut statement = connection.prepare_cached("SELECT ip FROM ip_leases WHERE network = ?1").map_err(backend)?;
    let leased: BTreeSet<IpAddr> = statement
        .query_map([network], |r| r.get::<_, String>(0))
        .map_err(backend)?
        .filter_map(|r| r.ok().and_then(|t| t.parse().ok()))
        .collect();
    drop(statement);
    let Some(ip) = pool.allocate(&leased) else {
        return Err(StoreError::PoolExhausted { network: network.to_string(), range: pool.range().to_string() });
    };
    connection
        .execute_cached(
            "INSERT INTO ip_leases (network, ip, server_id, mac, leased_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![network, ip.to_string(), server_id, mac_text, now()],
        )
        .map_err(backend)?;
    connection
        .execute_cached(
            "INSERT INTO address_history (ip, server_id, mac, kind, valid_from_us) VALUES (?1, ?2, ?3, 'quarantine', ?4)",
            params![ip.to_string(), server_id, mac_text, now_us()],
        )
        .map_err(backend)?;
    Ok(ip)
}

fn release_address_in(tx: &Connection, server_id: i64, mac: MacAddr, network: &str) -> Result<()> {
    let mac = mac.to_string();
    let leased: Option<String> = tx
        .query_row_cached(
            "SELECT ip FROM ip_leases WHERE server_id = ?1 AND mac = ?2 AND network = ?3",
            params![server_id, mac, network],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    if let Some(ip) = leased {
        tx.execute_cached(
            "DELETE FROM ip_leases WHERE server_id = ?1 AND mac = ?2 AND network = ?3",
            params![server_id, mac, network],
        )
        .map_err(backend)?;
        tx.execute_cached(
            "UPDATE address_history SET valid_to_us = ?4
             WHERE server_id = ?1 AND mac = ?2 AND ip = ?3 AND kind = 'quarantine' AND valid_to_us IS NULL",
            params![server_id, mac, ip, now_us()],
        )
        .map_err(backend)?;
    }
    Ok(())
}

fn settle_detection_in(
    tx: &Connection,
    id: i64,
    decision: &str,
    server_id: Option<i64>,
    action_id: Option<i64>,
) -> Result<()> {
    let changed = tx
        .execute_cached(
            "UPDATE detections SET decision = ?2, server_id = ?3, action_id = ?4 WHERE id = ?1 AND decision IS NULL",
            params![id, decision, server_id, action_id],
        )
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::AlreadySettled { id });
    }
    if let Some(action_id) = action_id {
        tx.execute_cached("UPDATE actions SET detections = detections + 1 WHERE id = ?1", [action_id])
            .map_err(backend)?;
    }
    Ok(())
}

fn append_step_in(tx: &Connection, step: NewStep) -> Result<StepRecord> {
    let seq: i64 = tx
        .query_row_cached(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM action_steps WHERE action_id = ?1",
            [step.action_id],
            |r| r.get(0),
        )
        .map_err(backend)?;
    tx.execute_cached(
        "INSERT INTO action_steps (action_id, seq, attempt, name, target, outcome, detail, message_number, instance, started_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            step.action_id,
            seq,
            step.attempt,
            step.name,
            step.target,
            step.outcome.as_str(),
            step.detail,
            step.message_number,
            step.instance,
            step.started_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            step.finished_at.to_rfc3339_opts(SecondsFormat::Micros, true)
        ],
    )
    .map_err(backend)?;
    Ok(StepRecord { seq, step })
}

fn record_message_in(tx: &Connection, message: NewMessage) -> Result<MessageRecord> {
    let at = now();
    let severity = cordon_model::Message::find(message.number).map(|m| m.severity().as_str()).unwrap_or("ERROR");
    tx.execute_cached(
        "INSERT INTO messages (number, severity, text, server_id, action_id, instance, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![message.number, severity, message.text, message.server_id, message.action_id, message.instance, at],
    )
    .map_err(backend)?;
    Ok(MessageRecord { id: tx.last_insert_rowid(), created_at: parse_time(&at).map_err(backend)?, message })
}

/// Writes `records` inside the caller's transaction, in the order [`Alongside`] documents.
fn apply_alongside(tx: &Connection, instance: &str, records: &Alongside) -> Result<()> {
    for lease in &records.leases {
        lease_address_in(tx, lease.server_id, lease.mac, &lease.network, &lease.pool)?;
    }
    for (server_id, mac, network) in &records.releases {
        release_address_in(tx, *server_id, *mac, network)?;
    }
    for step in &records.steps {
        append_step_in(tx, step.clone())?;
    }
    for message in &records.messages {
        record_message_in(tx, message.clone())?;
    }
    if let Some((server_id, state)) = records.server_state {
        set_server_state_in(tx, instance, server_id, state)?;
    }
    for position in &records.nic_positions {
        record_nic_position_in(tx, instance, position)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn sync_inventory(&self, inventory: &Inventory) -> Result<SyncReport> {
        let inventory = inventory.clone();
        self.write(move |connection| {
            let report = sync_inventory(connection, &inventory).map_err(backend)?;
            Ok(report)
        })
        .await
    }

    async fn import_servers(&self, servers: &[ServerSpec], origin: &str) -> Result<SyncReport> {
        let (servers, origin) = (servers.to_vec(), origin.to_string());
        self.write(move |connection| {
            let report = import_servers(connection, &servers, &origin).map_err(backend)?;
            Ok(report)
        })
        .await
    }

    async fn list_servers(&self) -> Result<Vec<ServerRecord>> {
        self.read(|connection| {
            let sql = format!("SELECT {SERVER_COLUMNS} FROM servers ORDER BY name");
            let mut statement = connection.prepare_cached(&sql).map_err(backend)?;
            let mut servers: Vec<ServerRecord> = statement
                .query_map([], server_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<_>>()
                .map_err(backend)?;
            drop(statement);
            for server in &mut servers {
                load_nics(connection, server).map_err(backend)?;
            }
            Ok(servers)
        })
        .await
    }

    async fn server_by_name(&self, name: &str) -> Result<Option<ServerRecord>> {
        let name = name.to_string();
        self.read(move |connection| one_server(connection, "name = ?1", &name)).await
    }

    async fn server_by_id(&self, id: i64) -> Result<Option<ServerRecord>> {
        self.read(move |connection| one_server(connection, "id = ?1", &id)).await
    }

    async fn server_by_address(&self, address: IpAddr) -> Result<Option<ServerRecord>> {
        let address = address.to_string();
        self.read(move |connection| {
            one_server(
                connection,
                "retired = 0 AND id IN (SELECT server_id FROM nics WHERE operational_ip = ?1 OR current_ip = ?1) ORDER BY id LIMIT 1",
                &address,
            )
        })
        .await
    }

    async fn set_server_state(&self, server_id: i64, state: ServerState) -> Result<()> {
        let instance = self.instance.clone();
        self.write(move |connection| {
            set_server_state_in(connection, &instance, server_id, state)?;
            Ok(())
        })
        .await
    }

    async fn record_nic_position(&self, server_id: i64, mac: MacAddr, network: &str, ip: Option<IpAddr>) -> Result<()> {
        let network = network.to_string();
        let instance = self.instance.clone();
        self.write(move |connection| {
            record_nic_position_in(connection, &instance, &NicPosition { server_id, mac, network, ip })?;
            Ok(())
        })
        .await
    }

    async fn record_alongside(&self, records: &Alongside) -> Result<()> {
        let instance = self.instance.clone();
        let records = records.clone();
        self.write(move |connection| {
            apply_alongside(connection, &instance, &records)?;
            Ok(())
        })
        .await
    }

    async fn lease_address(&self, server_id: i64, mac: MacAddr, network: &str, pool: &AddressPool) -> Result<IpAddr> {
        // A lease the NIC holds already (taken with the action's claim, or by an earlier
        // attempt) is read without a write: only the NIC's own action, one at a time per server,
        // takes or releases it.
        let network = network.to_string();
        let lookup = network.clone();
        if let Some(ip) = self.read(move |connection| existing_lease(connection, server_id, mac, &lookup)).await? {
            return Ok(ip);
        }
        let pool = pool.clone();
        self.write(move |connection| lease_address_in(connection, server_id, mac, &network, &pool)).await
    }

    async fn release_address(&self, server_id: i64, mac: MacAddr, network: &str) -> Result<()> {
        let network = network.to_string();
        self.write(move |connection| {
            release_address_in(connection, server_id, mac, &network)?;
            Ok(())
        })
        .await
    }

    async fn create_action_settling(&self, action: &NewAction, settles: Option<&Settlement>) -> Result<ActionRecord> {
        let action = action.clone();
        let settles = settles.cloned();
        self.write(move |connection| {
            let at = now();
            connection
                .execute_cached(
                    "INSERT INTO actions (kind, state, generation, server_id, address, reason, trigger, requested_by, instance, attempts, decided_by,
                     message_number, message_text, created_at, updated_at)
                     VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?10, ?11, ?12, ?9, ?9)",
                    params![
                        action.kind.as_str(),
                        action.state.as_str(),
                        action.server_id,
                        action.address.map(|a| a.to_string()),
                        action.reason,
                        action.trigger,
                        action.requested_by,
                        action.instance,
                        at,
                        action.decided_by,
                        action.message.as_ref().map(|m| m.number),
                        action.message.as_ref().map(|m| m.text.clone())
                    ],
                )
                .map_err(backend)?;
            let id = connection.last_insert_rowid();
            let record = one_action(connection, id)?.ok_or_else(|| StoreError::NotFound { what: format!("action {id}") })?;
            append_audit_in(connection, &entries::action_created(&record))?;
            if let Some(settles) = &settles {
                settle_detection_in(connection, settles.detection_id, &settles.decision_for(id), action.server_id, Some(id))?;
            }
            Ok(record)
        })
        .await
    }

    async fn action(&self, id: i64) -> Result<Option<ActionRecord>> {
        self.read(move |connection| one_action(connection, id)).await
    }

    async fn list_actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRecord>> {
        let filter = filter.clone();
        self.read(move |connection| {
            let state = filter.state.map(|s| s.as_str().to_string());
            let limit = i64::from(filter.limit.unwrap_or(500));
            // A statement per filter, so that SQLite can use `actions_by_server` or
            // `actions_by_state` (an `?1 IS NULL OR` form makes it scan the table backwards).
            let clause = match (&state, filter.server_id) {
                (None, None) => "WHERE ?1 IS NULL AND ?2 IS NULL",
                (Some(_), None) => "WHERE a.state = ?1 AND ?2 IS NULL",
                (None, Some(_)) => "WHERE ?1 IS NULL AND a.server_id = ?2",
                (Some(_), Some(_)) => "WHERE a.state = ?1 AND a.server_id = ?2",
            };
            many_actions(
                connection,
                &format!("{clause} ORDER BY a.id DESC LIMIT ?3"),
                &[&state, &filter.server_id, &limit],
            )
        })
        .await
    }

    async fn count_actions(&self) -> Result<Vec<(ActionKind, ActionState, u64)>> {
        self.read(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT kind, state, COUNT(*) FROM actions GROUP BY kind, state ORDER BY kind, state")
                .map_err(backend)?;
            let rows = statement
                .query_map([], |r| {
                    Ok((
                        parse_text(&r.get::<_, String>(0)?)?,
                        parse_text(&r.get::<_, String>(1)?)?,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend)
        })
        .await
    }

    async fn latest_actions(&self) -> Result<Vec<ActionRecord>> {
        self.read(|connection| {
            many_actions(
                connection,
                "WHERE a.id IN (SELECT MAX(id) FROM actions WHERE server_id IS NOT NULL GROUP BY server_id) ORDER BY a.id",
                &[],
            )
        })
        .await
    }

    async fn open_action(&self, server_id: i64, kind: ActionKind) -> Result<Option<ActionRecord>> {
        self.read(move |connection| {
            let open: Vec<&str> = ActionState::ALL.iter().filter(|s| s.is_open()).map(|s| s.as_str()).collect();
            let clause = format!(
                "WHERE a.server_id = ?1 AND a.kind = ?2 AND a.state IN ({}) ORDER BY a.id LIMIT 1",
                open.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
            );
            Ok(many_actions(connection, &clause, &[&server_id, &kind.as_str()])?.into_iter().next())
        })
        .await
    }

    async fn runnable_actions(&self, limit: u32) -> Result<Vec<ActionRecord>> {
        let now = now_us();
        self.read(move |connection| {
            many_actions(
                connection,
                "WHERE a.state IN ('pending', 'retrying') AND (a.not_before_us IS NULL OR a.not_before_us <= ?1) ORDER BY a.id LIMIT ?2",
                &[&now, &limit],
            )
        })
        .await
    }

    async fn running_actions(&self) -> Result<Vec<ActionRecord>> {
        self.read(|connection| many_actions(connection, "WHERE a.state = 'running' ORDER BY a.id", &[])).await
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
        let instance = instance.to_string();
        let alongside = alongside.clone();
        self.write(move |connection| {
            let lease = Some((instance.clone(), until_us));
            let command = ActionCommand::Start;
            let change = Transition { id, generation, command, kind: None, message, not_before_us: None, lease };
            transition(connection, &instance, change, &alongside)
        })
        .await
    }

    async fn renew_action_lease(&self, id: i64, instance: &str, until_us: i64) -> Result<bool> {
        let instance = instance.to_string();
        self.write(move |connection| {
            let changed = connection
                .execute_cached(
                    "UPDATE actions SET lease_until_us = ?3 WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
                    params![id, instance, until_us],
                )
                .map_err(backend)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn orphaned_actions(&self, now_us: i64, previous_life: Option<&str>) -> Result<Vec<ActionRecord>> {
        let previous_life = previous_life.map(str::to_string);
        self.read(move |connection| {
            many_actions(
                connection,
                "WHERE a.state = 'running' AND (a.lease_until_us < ?1 OR (?2 IS NOT NULL AND (a.lease_until_us IS NULL OR a.lease_owner = ?2)))
                 ORDER BY a.id",
                &[&now_us, &previous_life],
            )
        })
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
        let instance = self.instance.clone();
        let alongside = alongside.clone();
        let change = Transition { id, generation, command, kind: None, message, not_before_us: None, lease: None };
        self.write(move |connection| transition(connection, &instance, change, &alongside)).await
    }

    async fn defer_action(
        &self,
        id: i64,
        generation: i64,
        not_before_us: i64,
        message: MessageRef,
    ) -> Result<ActionRecord> {
        let instance = self.instance.clone();
        let command = ActionCommand::Backoff;
        let change = Transition {
            id,
            generation,
            command,
            kind: None,
            message: Some(message),
            not_before_us: Some(not_before_us),
            lease: None,
        };
        self.write(move |connection| transition(connection, &instance, change, &Alongside::default())).await
    }

    async fn transition_action_as(
        &self,
        id: i64,
        generation: i64,
        command: ActionCommand,
        kind: ActionKind,
        message: Option<MessageRef>,
    ) -> Result<ActionRecord> {
        let instance = self.instance.clone();
        let change =
            Transition { id, generation, command, kind: Some(kind), message, not_before_us: None, lease: None };
        self.write(move |connection| transition(connection, &instance, change, &Alongside::default())).await
    }

    async fn open_actions(&self, server_id: i64) -> Result<Vec<ActionRecord>> {
        self.read(move |connection| {
            many_actions(
                connection,
                "WHERE a.server_id = ?1 AND a.state IN ('awaiting_approval', 'pending', 'running', 'retrying') ORDER BY a.id DESC",
                &[&server_id],
            )
        })
        .await
    }

    async fn unresolved_action(&self, address: IpAddr) -> Result<Option<ActionRecord>> {
        let address = address.to_string();
        self.read(move |connection| {
            Ok(many_actions(
                connection,
                "WHERE a.server_id IS NULL AND a.address = ?1 AND a.state NOT IN ('checked', 'cancelled', 'rejected')
                 ORDER BY a.id DESC LIMIT 1",
                &[&address],
            )?
            .into_iter()
            .next())
        })
        .await
    }

    async fn change_action_kind(&self, id: i64, generation: i64, kind: ActionKind) -> Result<ActionRecord> {
        let instance = self.instance.clone();
        self.write(move |connection| {
            let current: Option<(String, i64)> = connection
                .query_row_cached("SELECT state, generation FROM actions WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(backend)?;
            let Some((state, found)) = current else {
                return Err(StoreError::NotFound { what: format!("action {id}") });
            };
            if found != generation {
                return Err(StoreError::Conflict { id, expected: generation, found });
            }
            let state: ActionState = state.parse().map_err(backend)?;
            if !matches!(state, ActionState::AwaitingApproval | ActionState::Pending) {
                return Err(StoreError::KindLocked { id, state });
            }
            connection
                .execute_cached(
                    "UPDATE actions SET kind = ?2, generation = generation + 1, updated_at = ?3 WHERE id = ?1",
                    params![id, kind.as_str(), now()],
                )
                .map_err(backend)?;
            let record =
                one_action(connection, id)?.ok_or_else(|| StoreError::NotFound { what: format!("action {id}") })?;
            let detail = format!("kind now {kind} ({state})");
            append_audit_in(
                connection,
                &entries::state_change(&instance, "action_kind", format!("action {id}"), detail),
            )?;
            Ok(record)
        })
        .await
    }

    async fn record_detections(
        &self,
        detections: &[Detection],
        instance: &str,
        checkpoint: Option<&SourceCheckpoint>,
    ) -> Result<Vec<i64>> {
        let detections = detections.to_vec();
        let instance = instance.to_string();
        let checkpoint = checkpoint.cloned();
        self.write(move |connection| {
            let mut ids = Vec::with_capacity(detections.len());
            {
                let mut insert = connection
                    .prepare_cached(
                        "INSERT INTO detections (received_at_us, observed_at_us, source, sensor, subject, peer, src_ip, dest_ip,
                         target_ip, signature_id, signature, category, severity, raw, instance)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    )
                    .map_err(backend)?;
                let text = |a: Option<IpAddr>| a.map(|a| a.to_string());
                for d in &detections {
                    insert
                        .execute(params![
                            d.received_at_us,
                            d.observed_at_us,
                            d.source,
                            d.sensor,
                            d.subject.to_string(),
                            text(d.peer),
                            text(d.src_ip),
                            text(d.dest_ip),
                            text(d.target_ip),
                            d.signature_id,
                            d.signature,
                            d.category,
                            d.severity.as_str(),
                            d.raw,
                            instance
                        ])
                        .map_err(backend)?;
                    ids.push(connection.last_insert_rowid());
                }
            }
            if let Some(cp) = checkpoint {
                connection.execute_cached(
                    "INSERT INTO source_checkpoints (source, path, inode, offset, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(source) DO UPDATE SET path = excluded.path, inode = excluded.inode, offset = excluded.offset,
                     updated_at = excluded.updated_at",
                    params![cp.source, cp.path, cp.inode as i64, cp.offset as i64, now()],
                )
                .map_err(backend)?;
            }
            Ok(ids)
        })
        .await
    }

    async fn checkpoint(&self, source: &str) -> Result<Option<SourceCheckpoint>> {
        let source = source.to_string();
        self.read(move |connection| {
            connection
                .query_row_cached(
                    "SELECT source, path, inode, offset FROM source_checkpoints WHERE source = ?1",
                    [source],
                    |r| {
                        Ok(SourceCheckpoint {
                            source: r.get(0)?,
                            path: r.get(1)?,
                            inode: r.get::<_, i64>(2)? as u64,
                            offset: r.get::<_, i64>(3)? as u64,
                        })
                    },
                )
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn unprocessed_detections(&self, limit: u32) -> Result<Vec<DetectionRecord>> {
        self.read(move |connection| {
            many_detections(connection, "WHERE d.decision IS NULL ORDER BY d.id LIMIT ?1", &[&limit])
        })
        .await
    }

    async fn settle_detection(
        &self,
        id: i64,
        decision: &str,
        server_id: Option<i64>,
        action_id: Option<i64>,
    ) -> Result<()> {
        let decision = decision.to_string();
        self.write(move |connection| {
            settle_detection_in(connection, id, &decision, server_id, action_id)?;
            Ok(())
        })
        .await
    }

    async fn list_detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRecord>> {
        let filter = filter.clone();
        self.read(move |connection| {
            let limit = i64::from(filter.limit.unwrap_or(100));
            // A statement per filter, so that SQLite can use an index (see `list_actions`).
            let clause = match (&filter.source, filter.action_id) {
                (None, None) => "WHERE ?1 IS NULL AND ?2 IS NULL",
                (Some(_), None) => "WHERE d.source = ?1 AND ?2 IS NULL",
                (None, Some(_)) => "WHERE ?1 IS NULL AND d.action_id = ?2",
                (Some(_), Some(_)) => "WHERE d.source = ?1 AND d.action_id = ?2",
            };
            let sql = format!("{clause} ORDER BY d.id DESC LIMIT ?3");
            many_detections(connection, &sql, &[&filter.source, &filter.action_id, &limit])
        })
        .await
    }

    async fn servers_holding(&self, address: IpAddr, at_us: i64) -> Result<Vec<i64>> {
        let address = address.to_string();
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT DISTINCT server_id FROM address_history
                     WHERE ip = ?1 AND valid_from_us <= ?2 AND (valid_to_us IS NULL OR valid_to_us > ?2) ORDER BY server_id",
                )
                .map_err(backend)?;
            let rows = statement.query_map(params![address, at_us], |r| r.get(0)).map_err(backend)?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend)
        })
        .await
    }

    async fn operational_tenures(&self) -> Result<Option<Vec<OperationalTenure>>> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT ip, server_id, valid_from_us, valid_to_us FROM address_history WHERE kind = 'operational'",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?))
                })
                .map_err(backend)?;
            let mut tenures = Vec::new();
            for row in rows {
                let (ip, server_id, from_us, to_us) = row.map_err(backend)?;
                // An unparsable address cannot be in the index; the store still answers for it.
                let Ok(ip) = ip.parse() else { continue };
                tenures.push(OperationalTenure { ip, server_id, from_us, to_us });
            }
            Ok(Some(tenures))
        })
        .await
    }

    async fn append_step(&self, step: &NewStep) -> Result<StepRecord> {
        let step = step.clone();
        self.write(move |connection| {
            let record = append_step_in(connection, step)?;
            Ok(record)
        })
        .await
    }

    async fn steps(&self, action_id: i64) -> Result<Vec<StepRecord>> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT seq, attempt, name, target, outcome, detail, message_number, instance, started_at, finished_at
                     FROM action_steps WHERE action_id = ?1 ORDER BY seq",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map([action_id], |r| {
                    let outcome: String = r.get(4)?;
                    Ok(StepRecord {
                        seq: r.get(0)?,
                        step: NewStep {
                            action_id,
                            attempt: r.get(1)?,
                            name: r.get(2)?,
                            target: r.get(3)?,
                            outcome: StepOutcome::parse(&outcome).unwrap_or(StepOutcome::Failed),
                            detail: r.get(5)?,
                            message_number: r.get(6)?,
                            instance: r.get(7)?,
                            started_at: parse_time(&r.get::<_, String>(8)?)?,
                            finished_at: parse_time(&r.get::<_, String>(9)?)?,
                        },
                    })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend)
        })
        .await
    }

    async fn record_message(&self, message: &NewMessage) -> Result<MessageRecord> {
        let message = message.clone();
        self.write(move |connection| record_message_in(connection, message)).await
    }

    async fn messages_for_action(&self, action_id: i64) -> Result<Vec<MessageRecord>> {
        self.read(move |connection| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE action_id = ?1 ORDER BY id");
            let mut statement = connection.prepare_cached(&sql).map_err(backend)?;
            let rows = statement.query_map([action_id], message_row).map_err(backend)?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend)
        })
        .await
    }

    async fn recent_messages(&self, limit: u32) -> Result<Vec<MessageRecord>> {
        self.read(move |connection| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY id DESC LIMIT ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(backend)?;
            let rows = statement.query_map([limit], message_row).map_err(backend)?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend)
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord> {
        let entry = entry.clone();
        self.write(move |connection| {
            let record = append_audit_in(connection, &entry)?;
            Ok(record)
        })
        .await
    }

    async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?1"))
                .map_err(backend)?;
            let rows = statement.query_map([limit], audit_row).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn audit_rows(&self, after_id: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2"))
                .map_err(backend)?;
            let rows = statement.query_map(params![after_id, limit], audit_row).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<TokenRecord> {
        let (name, hash) = (name.to_string(), hash.to_string());
        self.write(move |connection| {
            let at = now();
            let expires = expires_at.map(time_text);
            connection
                .execute_cached(
                    "INSERT INTO api_tokens (name, role, hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![name, role.as_str(), hash, at, expires],
                )
                .map_err(|e| unique_violation(e, &format!("token {name}")))?;
            Ok(TokenRecord {
                id: connection.last_insert_rowid(),
                name,
                role,
                created_at: parse_time(&at).map_err(backend)?,
                revoked: false,
                expires_at: expires.as_deref().map(parse_time).transpose().map_err(backend)?,
            })
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let hash = hash.to_string();
        self.read(move |connection| {
            connection
                .query_row_cached(
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = ?1 AND revoked_at IS NULL \
                         AND (expires_at IS NULL OR expires_at > ?2)"
                    ),
                    params![hash, now()],
                    token_row,
                )
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn heartbeat(&self, instance: &str, address: &str, started_at: Timestamp) -> Result<()> {
        let (instance, address) = (instance.to_string(), address.to_string());
        self.write(move |connection| {
            connection
                .execute_cached(
                    "INSERT INTO instances (name, address, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET address = excluded.address, started_at = excluded.started_at,
                     heartbeat_at = excluded.heartbeat_at",
                    params![instance, address, started_at.to_rfc3339_opts(SecondsFormat::Micros, true), now()],
                )
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>> {
        let now = now_us();
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT name, address, started_at, heartbeat_at FROM instances ORDER BY heartbeat_at DESC, name")
                .map_err(backend)?;
            let mut instances: Vec<InstanceRecord> = statement
                .query_map([], |r| {
                    Ok(InstanceRecord {
                        name: r.get(0)?,
                        address: r.get(1)?,
                        started_at: parse_time(&r.get::<_, String>(2)?)?,
                        heartbeat_at: parse_time(&r.get::<_, String>(3)?)?,
                        actions: Vec::new(),
                        leases: Vec::new(),
                    })
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<_>>()
                .map_err(backend)?;
            drop(statement);
            for instance in &mut instances {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT id, lease_until_us FROM actions WHERE state = 'running' AND lease_owner = ?1 ORDER BY id",
                    )
                    .map_err(backend)?;
                instance.actions = statement
                    .query_map([&instance.name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(backend)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(backend)?;
                let mut statement = connection
                    .prepare_cached("SELECT name, until_us FROM leases WHERE holder = ?1 AND until_us >= ?2 ORDER BY name")
                    .map_err(backend)?;
                instance.leases = statement
                    .query_map(params![instance.name, now], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(backend)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(backend)?;
            }
            Ok(instances)
        })
        .await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, until_us: i64) -> Result<bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let now_micros = now_us();
        self.write(move |connection| {
            // Taken when free, expired, or already ours; the upsert's WHERE makes it one step.
            let changed = connection
                .execute_cached(
                    "INSERT INTO leases (name, holder, until_us, acquired_at) VALUES (?1, ?2, ?3, ?5)
                     ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until_us = excluded.until_us,
                     acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END
                     WHERE leases.holder = excluded.holder OR leases.until_us < ?4",
                    params![name, holder, until_us, now_micros, now()],
                )
                .map_err(backend)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"))
                .map_err(backend)?;
            let rows = statement.query_map([], token_row).map_err(backend)?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend)
        })
        .await
    }

    async fn revoke_token(&self, id: i64) -> Result<TokenRecord> {
        self.write(move |connection| {
            connection
                .execute_cached(
                    "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, now()],
                )
                .map_err(backend)?;
            connection
                .query_row_cached(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"), [id], token_row)
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound { what: format!("token {id}") })
        })
        .await
    }

    async fn create_user(&self, name: &str, role: Role, password_hash: &str) -> Result<UserRecord> {
        let (name, password_hash) = (name.to_string(), password_hash.to_string());
        self.write(move |connection| {
            let at = now();
            connection
                .execute_cached(
                    "INSERT INTO console_users (name, role, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![name, role.as_str(), password_hash, at],
                )
                .map_err(|e| unique_violation(e, &format!("user {name}")))?;
            let created = parse_time(&at).map_err(backend)?;
            Ok(UserRecord {
                id: connection.last_insert_rowid(),
                name,
                role,
                password_hash,
                created_at: created,
                updated_at: created,
            })
        })
        .await
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let name = name.to_string();
        self.read(move |connection| {
            connection
                .query_row_cached(
                    &format!("SELECT {USER_COLUMNS} FROM console_users WHERE name = ?1"),
                    [name],
                    user_row,
                )
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM console_users ORDER BY name"))
                .map_err(backend)?;
            let rows = statement.query_map([], user_row).map_err(backend)?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend)
        })
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<()> {
        let (name, password_hash) = (name.to_string(), password_hash.to_string());
        self.write(move |connection| {
            let changed = connection
                .execute_cached(
                    "UPDATE console_users SET password_hash = ?2, updated_at = ?3 WHERE name = ?1",
                    params![name, password_hash, now()],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::NotFound { what: format!("user {name}") });
            }
            // A new password ends every session opened with the old one.
            connection
                .execute_cached(
                    "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM console_users WHERE name = ?1)",
                    [&name],
                )
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |connection| {
            connection
                .execute_cached(
                    "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM console_users WHERE name = ?1)",
                    [&name],
                )
                .map_err(backend)?;
            let removed =
                connection.execute_cached("DELETE FROM console_users WHERE name = ?1", [&name]).map_err(backend)?;
            if removed == 0 {
                return Err(StoreError::NotFound { what: format!("user {name}") });
            }
            Ok(())
        })
        .await
    }

    async fn create_session(&self, session: &NewSession) -> Result<SessionRecord> {
        let session = session.clone();
        self.write(move |connection| {
            let at = now();
            connection
                .execute_cached(
                    "INSERT INTO console_sessions (hash, user_id, csrf, created_at, last_seen_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                    params![session.hash, session.user_id, session.csrf, at, time_text(session.expires_at)],
                )
                .map_err(backend)?;
            let id = connection.last_insert_rowid();
            connection
                .query_row_cached(&format!("{SESSION_SELECT} WHERE s.id = ?1"), [id], session_row)
                .map_err(backend)
        })
        .await
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>> {
        let hash = hash.to_string();
        self.read(move |connection| {
            connection
                .query_row_cached(&format!("{SESSION_SELECT} WHERE s.hash = ?1"), [hash], session_row)
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn touch_session(&self, id: i64, at: Timestamp) -> Result<()> {
        self.write(move |connection| {
            connection
                .execute_cached(
                    "UPDATE console_sessions SET last_seen_at = ?2 WHERE id = ?1",
                    params![id, time_text(at)],
                )
                .map(|_| ())
                .map_err(backend)
        })
        .await
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        let hash = hash.to_string();
        self.write(move |connection| {
            connection
                .execute_cached("DELETE FROM console_sessions WHERE hash = ?1", [hash])
                .map(|_| ())
                .map_err(backend)
        })
        .await
    }

    async fn delete_expired_sessions(&self, idle_before: Timestamp, now: Timestamp) -> Result<u64> {
        self.write(move |connection| {
            connection
                .execute_cached(
                    "DELETE FROM console_sessions WHERE last_seen_at < ?1 OR expires_at <= ?2",
                    params![time_text(idle_before), time_text(now)],
                )
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }

    async fn count_tokens(&self) -> Result<u64> {
        self.read(|connection| {
            connection
                .query_row_cached("SELECT COUNT(*) FROM api_tokens", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, last: u8) -> ServerSpec {
        ServerSpec {
            name: name.into(),
            kind: cordon_model::ServerKind::Physical,
            tenant: Some("t".into()),
            user_email: None,
            hypervisor: None,
            domain: None,
            nics: vec![NicSpec {
                mac: MacAddr([2, 0, 0, 0, 0, last]),
                network: "office".into(),
                ip: Some(IpAddr::from([10, 0, 0, last])),
                switch: Some("tor-1".into()),
                port: Some(format!("p-{name}")),
            }],
        }
    }

    /// A restart with nothing changed compares in memory and rewrites only the (few) networks
    /// and tenants; a changed address is still written, with its history.
    #[tokio::test]
    async fn a_sync_with_nothing_changed_writes_no_server_row() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut inventory = Inventory {
            networks: vec![NetworkSpec {
                name: "office".into(),
                role: cordon_model::NetworkRole::Operational,
                subnet: "10.0.0.0/24".into(),
                quarantine_network: None,
                pool: None,
                bridge: None,
            }],
            tenants: vec![TenantSpec { name: "t".into(), admin_email: "t@example.com".into() }],
            servers: vec![spec("a", 1), spec("b", 2)],
        };
        store.sync_inventory(&inventory).await.unwrap();
        // An in-memory store reads on the writer's connection: its count of changed rows.
        async fn changes(store: &SqliteStore) -> u64 {
            store.read(|connection| Ok(connection.total_changes())).await.unwrap()
        }
        let before = changes(&store).await;
        let report = store.sync_inventory(&inventory).await.unwrap();
        assert_eq!((report.added.len(), report.updated.len(), report.retired.len()), (0, 0, 0));
        assert_eq!(changes(&store).await - before, 2, "one network and one tenant upserted, nothing else");

        inventory.servers[1].nics[0].ip = Some(IpAddr::from([10, 0, 0, 9]));
        let before = changes(&store).await;
        let report = store.sync_inventory(&inventory).await.unwrap();
        assert_eq!(report.updated, ["b"]);
        // The network and tenant, the old address closed, the new one opened, the NIC.
        assert_eq!(changes(&store).await - before, 5);
        let now = now_us();
        assert_eq!(store.servers_holding(IpAddr::from([10, 0, 0, 9]), now).await.unwrap().len(), 1);
        assert!(store.servers_holding(IpAddr::from([10, 0, 0, 2]), now).await.unwrap().is_empty());
    }

    /// Rows written before migration 7 have no hashes; the migration seals them in id order,
    /// and the chain then verifies and goes on from the last one.
    #[tokio::test]
    async fn rows_from_before_the_chain_are_sealed_and_the_chain_goes_on() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .write(|connection| {
                for actor in ["a", "b"] {
                    connection
                        .execute_cached(
                            "INSERT INTO audit (at, actor, origin, verb, target, detail, instance)
                             VALUES ('2026-01-01T00:00:00.000000Z', ?1, 'o', 'v', 't', '', 'i')",
                            [actor],
                        )
                        .map_err(backend)?;
                }
                seal_audit(connection)
            })
            .await
            .unwrap();
        let entry = AuditEntry {
            actor: "c".into(),
            origin: "o".into(),
            verb: "v".into(),
            target: "t".into(),
            detail: String::new(),
            instance: "i".into(),
        };
        store.append_audit(&entry).await.unwrap();
        let verdict = crate::verify_audit(&store).await.unwrap();
        assert_eq!((verdict.verified.rows, verdict.broken), (3, None));
    }

    /// A connection as the writer thread holds it, and a batch to run on it.
    fn writer_connection() -> Connection {
        let mut connection = Connection::open_in_memory().unwrap();
        prepare_writer(&mut connection).unwrap();
        connection
    }

    type Reply = oneshot::Receiver<Result<i64>>;

    fn job<F>(batch: &mut VecDeque<Box<dyn BatchJob>>, work: F) -> Reply
    where
        F: FnOnce(&Connection) -> Result<i64> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        batch.push_back(Box::new(WriteJob { work: Some(work), outcome: None, reply }));
        answer
    }

    fn insert_message(connection: &Connection, text: &str) -> Result<i64> {
        connection
            .execute_cached(
                "INSERT INTO messages (number, severity, text, instance, created_at) VALUES (21001, 'INFO', ?1, 'i', ?2)",
                params![text, now()],
            )
            .map_err(backend)?;
        Ok(connection.last_insert_rowid())
    }

    fn texts(connection: &Connection) -> Vec<String> {
        let mut statement = connection.prepare("SELECT text FROM messages ORDER BY id").unwrap();
        statement.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    fn outcome(mut answer: Reply) -> Result<i64> {
        answer.try_recv().expect("every job is answered when its batch ends")
    }

    /// One batch, one commit: a job that wrote and then failed, and one that wrote and then
    /// panicked, are rolled back to their savepoints and get their own errors; the jobs around
    /// them are committed, and a later job sees the earlier ones' rows (as the audit chain's
    /// append must see the row before it).
    #[test]
    fn a_failing_or_panicking_job_is_rolled_back_alone_and_the_batch_commits_once() {
        let connection = writer_connection();
        let stats = CommitStats::default();
        let mut batch = VecDeque::new();
        let first = job(&mut batch, |c| insert_message(c, "first"));
        let failing = job(&mut batch, |c| {
            insert_message(c, "failing")?;
            Err(StoreError::Conflict { id: 7, expected: 1, found: 2 })
        });
        let panicking = job(&mut batch, |c| {
            insert_message(c, "panicking")?;
            panic!("a bug in a job");
        });
        let last = job(&mut batch, |c| {
            insert_message(c, "last")?;
            c.query_row_cached("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).map_err(backend)
        });
        commit_batch(&connection, &mut batch, &stats);
        assert!(batch.is_empty());
        assert!(outcome(first).is_ok());
        assert_eq!(outcome(failing), Err(StoreError::Conflict { id: 7, expected: 1, found: 2 }));
        let panicked = outcome(panicking).unwrap_err();
        assert!(panicked.to_string().contains("a bug in a job"), "{panicked}");
        assert_eq!(outcome(last), Ok(2), "the last job sees the first one's row and no rolled-back one");
        assert_eq!(texts(&connection), ["first", "last"]);
        assert!(connection.is_autocommit(), "the batch's transaction is over");
        assert_eq!((stats.jobs.load(Ordering::Relaxed), stats.commits.load(Ordering::Relaxed)), (4, 1));
    }

    /// A COMMIT that fails (here a deferred foreign key) fails every job of the batch, none of
    /// their rows stays, and the next batch starts clean.
    #[test]
    fn a_failed_commit_fails_every_job_of_the_batch() {
        let connection = writer_connection();
        let stats = CommitStats::default();
        let mut batch = VecDeque::new();
        let innocent = job(&mut batch, |c| insert_message(c, "innocent"));
        let culprit = job(&mut batch, |c| {
            c.execute_batch("PRAGMA defer_foreign_keys = ON").map_err(backend)?;
            c.execute_cached(
                "INSERT INTO messages (number, severity, text, action_id, instance, created_at) \
                 VALUES (21001, 'INFO', 'culprit', 999, 'i', ?1)",
                [now()],
            )
            .map_err(backend)?;
            Ok(0)
        });
        commit_batch(&connection, &mut batch, &stats);
        for answer in [innocent, culprit] {
            let error = outcome(answer).unwrap_err();
            assert!(matches!(&error, StoreError::Backend(text) if text.contains("commit failed")), "{error}");
        }
        assert!(texts(&connection).is_empty());
        assert!(connection.is_autocommit(), "the failed transaction was rolled back");

        let next = job(&mut batch, |c| insert_message(c, "next"));
        commit_batch(&connection, &mut batch, &stats);
        assert!(outcome(next).is_ok());
        assert_eq!(texts(&connection), ["next"]);
        assert_eq!((stats.jobs.load(Ordering::Relaxed), stats.commits.load(Ordering::Relaxed)), (3, 1));
    }

    /// A job that ends the transaction itself (as SQLite does on a full disk) loses the batch
    /// so far: those jobs get an error; the jobs not run yet go into a new transaction.
    #[test]
    fn a_transaction_ended_inside_a_job_fails_the_jobs_so_far_and_the_rest_run_anew() {
        let connection = writer_connection();
        let stats = CommitStats::default();
        let mut batch = VecDeque::new();
        let earlier = job(&mut batch, |c| insert_message(c, "earlier"));
        let ender = job(&mut batch, |c| c.execute_batch("ROLLBACK").map(|()| 0).map_err(backend));
        let later = job(&mut batch, |c| insert_message(c, "later"));
        commit_batch(&connection, &mut batch, &stats);
        assert!(outcome(earlier).unwrap_err().to_string().contains("ended inside a job"));
        assert!(outcome(ender).is_err());
        assert_eq!(batch.len(), 1, "the job not run waits for the next transaction");
        commit_batch(&connection, &mut batch, &stats);
        assert!(outcome(later).is_ok());
        assert_eq!(texts(&connection), ["later"]);
        assert_eq!((stats.jobs.load(Ordering::Relaxed), stats.commits.load(Ordering::Relaxed)), (3, 1));
    }

    /// In memory there is no read connection: reads go to the writer thread between batches.
    /// A read queued behind writes sees them; the writer stops when the last clone is dropped.
    #[tokio::test]
    async fn in_memory_reads_go_through_the_writer_and_see_acknowledged_writes() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert!(store.shared.readers.is_empty());
        let message =
            NewMessage { number: 21001, text: "m".into(), server_id: None, action_id: None, instance: "i".into() };
        let written = store.record_message(&message).await.unwrap();
        assert_eq!(store.recent_messages(10).await.unwrap().first().map(|m| m.id), Some(written.id));
        let misfiled = store.read(|c| insert_message(c, "misfiled")).await.unwrap_err();
        assert!(misfiled.to_string().contains("readonly"), "reads are query_only in memory too: {misfiled}");
        let clone = store.clone();
        drop(store);
        assert_eq!(clone.recent_messages(10).await.unwrap().len(), 1);
        clone.record_message(&message).await.unwrap();
    }

    /// A file database's reads run on `query_only` connections: a write filed as a read fails.
    #[tokio::test]
    async fn a_write_misfiled_as_a_read_fails_on_a_file_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("cordon.db")).unwrap();
        assert_eq!(store.shared.readers.len(), READERS);
        let error = store.read(|c| insert_message(c, "misfiled")).await.unwrap_err();
        assert!(error.to_string().contains("readonly"), "{error}");
        assert!(store.recent_messages(10).await.unwrap().is_empty());
    }
}
