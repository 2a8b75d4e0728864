//! An inventory of N servers (one NIC each) synced into a fresh SQLite store with its
//! production settings, then address lookups through the `Store` trait, and memory.
//!
//! To show where a lookup's time goes, the same lookup is also timed in parts: the round trip
//! to tokio's blocking pool that every store call makes, the bare SQL on a second connection to
//! the same file, and a `HashMap` of addresses as an in-memory index would hold it.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::Context as _;
use cordon_model::{MacAddr, NetworkRole, ServerKind};
use cordon_store::{Inventory, NetworkSpec, NicSpec, ServerSpec, SqliteStore, Store, TenantSpec};
use serde_json::json;

use crate::report::{BenchResult, Goal, Latencies, Rng, memory_mib};

pub fn run(servers: u32, lookups: u32) -> anyhow::Result<BenchResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(servers, lookups))
}

/// A synthetic inventory of physical servers, one NIC each on network `office`, addresses counted
/// up from `first`, quarantine addresses from `pool` on network `quarantine` (shared with `multi`).
pub(crate) struct Synthetic {
    pub office_subnet: &'static str,
    pub quarantine_subnet: &'static str,
    pub pool: &'static str,
    pub first: Ipv4Addr,
    /// How many servers share one switch (`tor-0`, `tor-1`, ...).
    pub per_switch: u32,
}

/// The 100,000-server inventory of this bench: 10.0.0.0/8 from 10.0.0.1 upwards.
const LARGE: Synthetic = Synthetic {
    office_subnet: "10.0.0.0/8",
    quarantine_subnet: "172.16.0.0/12",
    pool: "172.16.0.10-172.31.255.250",
    first: Ipv4Addr::new(10, 0, 0, 1),
    per_switch: 1000,
};

impl Synthetic {
    /// The `i`-th server's name.
    pub fn name(i: u32) -> String {
        format!("srv-{i:06}")
    }

    /// The `i`-th server's operational address.
    pub fn address(&self, i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(u32::from(self.first) + i))
    }

    pub fn inventory(&self, servers: u32) -> Inventory {
        Inventory {
            networks: vec![
                NetworkSpec {
                    name: "office".into(),
                    role: NetworkRole::Operational,
                    subnet: self.office_subnet.into(),
                    quarantine_network: Some("quarantine".into()),
                    pool: None,
                    bridge: Some("br-office".into()),
                },
                NetworkSpec {
                    name: "quarantine".into(),
                    role: NetworkRole::Quarantine,
                    subnet: self.quarantine_subnet.into(),
                    quarantine_network: None,
                    pool: Some(self.pool.into()),
                    bridge: Some("br-quarantine".into()),
                },
            ],
            tenants: vec![TenantSpec { name: "ops".into(), admin_email: "ops@example.com".into() }],
            servers: (0..servers)
                .map(|i| {
                    let b = i.to_be_bytes();
                    ServerSpec {
                        name: Self::name(i),
                        kind: ServerKind::Physical,
                        tenant: Some("ops".into()),
                        user_email: None,
                        hypervisor: None,
                        domain: None,
                        nics: vec![NicSpec {
                            mac: MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]]),
                            network: "office".into(),
                            ip: Some(self.address(i)),
                            switch: Some(format!("tor-{}", i / self.per_switch)),
                            port: Some(format!("p-{i}")),
                        }],
                    }
                })
                .collect(),
        }
    }
}

async fn bench(servers: u32, lookups: u32) -> anyhow::Result<BenchResult> {
    let mut result = BenchResult::new("inventory");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cordon.db");
    let (rss_before, _) = memory_mib();

    let build = Instant::now();
    let inventory = LARGE.inventory(servers);
    let build = build.elapsed();

    // First start: a fresh database, every server added.
    let start = Instant::now();
    let store = SqliteStore::open(&path)?;
    let opened = start.elapsed();
    let report = store.sync_inventory(&inventory).await?;
    let first_start = start.elapsed();
    anyhow::ensure!(report.added.len() == servers as usize, "sync added {} servers, not {servers}", report.added.len());
    result.figure(
        format!("start, fresh store: open + sync {servers} servers"),
        first_start.as_secs_f64(),
        "s",
        Some(Goal::AtMost(5.0)),
    );
    drop(store);

    // Every later start: the same inventory against the stored one, nothing changes.
    let start = Instant::now();
    let store = SqliteStore::open(&path)?;
    let report = store.sync_inventory(&inventory).await?;
    let restart = start.elapsed();
    result.figure(
        format!("start, existing store: open + sync {servers} unchanged"),
        restart.as_secs_f64(),
        "s",
        Some(Goal::AtMost(5.0)),
    );
    let restart_changed = report.added.len() + report.updated.len() + report.retired.len();

    // Lookups of addresses the inventory holds, in a deterministic random order.
    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    let targets: Vec<(u32, IpAddr)> = (0..lookups)
        .map(|_| {
            let i = rng.below(u64::from(servers)) as u32;
            (i, LARGE.address(i))
        })
        .collect();
    let now_us = chrono::Utc::now().timestamp_micros();
    for (_, ip) in targets.iter().take(200) {
        black_box(store.servers_holding(*ip, now_us).await?); // warm up
    }

    let mut holding = Latencies::with_capacity(targets.len());
    let mut misses = 0;
    for (_, ip) in &targets {
        let t = Instant::now();
        let held = store.servers_holding(*ip, now_us).await?;
        holding.push(t.elapsed());
        misses += usize::from(held.len() != 1);
    }
    anyhow::ensure!(misses == 0, "{misses} lookups (servers_holding) did not find exactly one server");
    result.figure("lookup Store::servers_holding p50", holding.percentile_us(50.0), "µs", None);
    result.figure("lookup Store::servers_holding p99", holding.percentile_us(99.0), "µs", None);

    let mut by_address = Latencies::with_capacity(targets.len());
    for (i, ip) in &targets {
        let t = Instant::now();
        let server = store.server_by_address(*ip).await?;
        by_address.push(t.elapsed());
        let name = server.map(|s| s.name);
        anyhow::ensure!(name.as_deref() == Some(Synthetic::name(*i).as_str()), "{ip} resolved to {name:?}");
    }
    result.figure("lookup Store::server_by_address p50", by_address.percentile_us(50.0), "µs", None);
    result.figure("lookup Store::server_by_address p99", by_address.percentile_us(99.0), "µs", None);

    // Where the time goes. (1) The round trip to the blocking pool that every store call makes.
    let mut hop = Latencies::with_capacity(targets.len());
    for _ in 0..targets.len() {
        let t = Instant::now();
        tokio::task::spawn_blocking(|| black_box(0)).await?;
        hop.push(t.elapsed());
    }
    // (2) The same SQL as servers_holding on a second connection to the file, no pool hop.
    let connection = rusqlite::Connection::open(&path).context("second connection")?;
    let mut sql = Latencies::with_capacity(targets.len());
    {
        let mut statement = connection.prepare_cached(
            "SELECT DISTINCT server_id FROM address_history
             WHERE ip = ?1 AND valid_from_us <= ?2 AND (valid_to_us IS NULL OR valid_to_us > ?2) ORDER BY server_id",
        )?;
        for (_, ip) in &targets {
            let t = Instant::now();
            let text = ip.to_string();
            let ids: Vec<i64> =
                statement.query_map(rusqlite::params![text, now_us], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            sql.push(t.elapsed());
            black_box(ids);
        }
    }
    let plans = json!({
        "servers_holding": plan(&connection, "SELECT DISTINCT server_id FROM address_history WHERE ip = '10.0.0.1' AND valid_from_us <= 0 AND (valid_to_us IS NULL OR valid_to_us > 0) ORDER BY server_id")?,
        "server_by_address": plan(&connection, "SELECT id FROM servers WHERE retired = 0 AND id IN (SELECT server_id FROM nics WHERE operational_ip = '10.0.0.1' OR current_ip = '10.0.0.1') ORDER BY id LIMIT 1")?,
        "sync_open_history": plan(&connection, "SELECT id, mac, ip FROM address_history WHERE server_id = 1 AND kind = 'operational' AND valid_to_us IS NULL")?,
        "sync_first_sight": plan(&connection, "SELECT COUNT(*) = 0 FROM address_history WHERE server_id = 1")?,
    });
    println!("query plans: {plans}");
    drop(connection);
    // (3) The engine's address index (what the resolve path uses), loaded from the store's
    // operational tenures as `cordon serve` does after the sync. Single lookups are timed one
    // by one (the clock's own cost, about 20 ns here, is included) and as a batch mean.
    let load = Instant::now();
    let tenures = store.operational_tenures().await?.context("the SQLite store offers tenures")?;
    let pools = vec!["172.16.0.10-172.31.255.250".parse()?];
    let index = cordon_engine::address_index::AddressIndex::new(tenures, pools);
    let index_load = load.elapsed();
    let mut indexed = Latencies::with_capacity(targets.len());
    for (_, ip) in &targets {
        let t = Instant::now();
        let held = black_box(index.lookup(black_box(*ip), now_us));
        indexed.push(t.elapsed());
        // The same answer as the store's.
        let stored = store.servers_holding(*ip, now_us).await?;
        anyhow::ensure!(
            held == cordon_engine::address_index::Lookup::Held(stored.clone()),
            "the index resolved {ip} to {held:?}, the store to {stored:?}"
        );
    }
    let t = Instant::now();
    for (_, ip) in &targets {
        black_box(index.lookup(black_box(*ip), now_us));
    }
    let map_ns = t.elapsed().as_nanos() as f64 / targets.len() as f64;
    result.figure("lookup, engine address index p50", indexed.percentile_us(50.0), "µs", Some(Goal::AtMost(1.0)));
    result.figure("lookup, engine address index p99", indexed.percentile_us(99.0), "µs", None);
    result.figure("lookup, engine address index, batch mean", map_ns / 1000.0, "µs", None);
    result.figure(format!("address index load ({servers} addresses)"), index_load.as_secs_f64(), "s", None);

    let hop_p50 = hop.percentile_us(50.0);
    let sql_p50 = sql.percentile_us(50.0);
    result.figure("  part: blocking-pool round trip p50", hop_p50, "µs", None);
    result.figure("  part: bare SQL (servers_holding's query) p50", sql_p50, "µs", None);
    drop(index);

    let (rss, hwm) = memory_mib();
    result.figure(format!("resident memory (VmRSS) with {servers} servers"), rss, "MiB", Some(Goal::AtMost(300.0)));
    result.figure("peak resident memory (VmHWM)", hwm, "MiB", None);
    let db_bytes: u64 = ["cordon.db", "cordon.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();

    result.detail(
        "inventory",
        json!({
            "servers": servers,
            "nics_per_server": 1,
            "generate_specs_s": build.as_secs_f64(),
            "open_fresh_s": opened.as_secs_f64(),
            "restart_changes": restart_changed,
            "database_bytes": db_bytes,
            "rss_before_mib": rss_before,
        }),
    );
    result.detail(
        "lookups",
        json!({
            "count": lookups,
            "servers_holding": holding.summary(),
            "server_by_address": by_address.summary(),
            "blocking_pool_round_trip": hop.summary(),
            "bare_sql_servers_holding": sql.summary(),
            "address_index": indexed.summary(),
            "address_index_batch_mean_us": map_ns / 1000.0,
            "address_index_load_s": index_load.as_secs_f64(),
            "query_plans": plans,
        }),
    );
    Ok(result)
}

/// SQLite's plan for `sql`, one line per step (`SCAN` is a full table scan).
fn plan(connection: &rusqlite::Connection, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let rows = statement.query_map([], |r| r.get::<_, String>(3))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
