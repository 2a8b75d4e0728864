//! A private PostgreSQL 15 server for tests, started once per test binary and shared by its
//! tests, each of which takes its own database (`CREATE DATABASE`).
//!
//! `initdb` (as user `postgres`, through `runuser`) and `pg_ctl start` in a temporary directory
//! owned by `postgres`, listening on 127.0.0.1 on a free port and on a Unix socket in that
//! directory, with trust authentication (nothing but this machine can reach it). About a
//! second. PostgreSQL's defaults are kept (fsync, synchronous_commit): the tests run the
//! production settings.
//!
//! Torn down at exit, also when tests panic: an `atexit` hook stops the server (`pg_ctl stop -m
//! immediate`) and removes the directory; a watchdog shell does the same if the test process
//! is killed before it can run its hooks. Needs root and the `postgresql` package
//! (`scripts/install-deps.sh` installs it).
//!
//! Shared by the store suite and by `crates/cordon/tests` (included with `#[path]`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub const BIN: &str = "/usr/lib/postgresql/15/bin";

#[derive(Debug)]
pub struct PgServer {
    /// The temporary directory: `data/`, the socket and `server.log`.
    pub dir: PathBuf,
    pub port: u16,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The shared server of this test binary, started on first use.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(start)
}

/// A new, empty database on the shared server; returns its URL (user `postgres`, no password).
pub fn fresh_database(prefix: &str) -> String {
    let server = server();
    let name = format!("{prefix}_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::Relaxed));
    let output = Command::new(format!("{BIN}/createdb"))
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "postgres", &name])
        .output()
        .expect("run createdb");
    assert!(output.status.success(), "createdb {name}: {}", String::from_utf8_lossy(&output.stderr));
    server.url(&name)
}

impl PgServer {
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL on `database` with psql, panicking with its stderr if it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", database, "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(output.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--", &format!("{BIN}/{program}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} as postgres: {e}"))
}

fn start() -> PgServer {
    assert!(
        Path::new(&format!("{BIN}/initdb")).exists(),
        "PostgreSQL 15 is missing: run scripts/install-deps.sh (package postgresql)"
    );
    let dir = tempfile::Builder::new().prefix("cordon-pg-").tempdir().expect("temp dir").keep();
    let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().expect("chown");
    assert!(chown.success(), "chown {} to postgres", dir.display());
    let data = dir.join("data");
    let data_text = data.display().to_string();
    let output = as_postgres(
        "initdb",
        &["-D", &data_text, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-N"],
    );
    assert!(output.status.success(), "initdb: {}", String::from_utf8_lossy(&output.stderr));
    let port = free_port();
    let options = format!("-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=200", dir.display());
    let log = dir.join("server.log").display().to_string();
    let output = as_postgres("pg_ctl", &["start", "-w", "-t", "30", "-D", &data_text, "-l", &log, "-o", &options]);
    if !output.status.success() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        panic!("pg_ctl start: {}\n{log}", String::from_utf8_lossy(&output.stderr));
    }
    watchdog(&dir);
    // SAFETY: registering a plain extern "C" function that takes no arguments.
    unsafe { libc::atexit(stop_at_exit) };
    PgServer { dir, port }
}

/// Stops the server and removes its directory if this process dies without running `atexit`
/// hooks (SIGKILL, abort).
fn watchdog(dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         runuser -u postgres -- {BIN}/pg_ctl stop -m immediate -D '{dir}/data' >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    // Detached: it outlives this process on purpose, and exits on its own right after it.
    let _ = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

extern "C" fn stop_at_exit() {
    if let Some(server) = SERVER.get() {
        let data = server.dir.join("data").display().to_string();
        let _ = as_postgres("pg_ctl", &["stop", "-m", "immediate", "-w", "-D", &data]);
        let _ = std::fs::remove_dir_all(&server.dir);
    }
}
