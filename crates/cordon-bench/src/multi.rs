//! Sustained actions per second on PostgreSQL, with one and with two instances (issue 9), and on
//! the embedded SQLite store for reference.
//!
//! Real parts: a private PostgreSQL 15 (started like the store suite's, with its default
//! durability), the real engine and the real `linux-bridge` driver moving real veth ports
//! between two bridges in a network namespace this bench makes (`cpgb-<pid>`, removed at the
//! end). An "instance" is an `Engine` with its own `PostgresStore` (its own connection pool)
//! and its own name; two instances run in this one process, so they share its two cores as
//! two processes on this machine would. Requests alternate between the instances ("any
//! instance accepts API calls"); each instance's dispatcher claims what it can, with the
//! production poll interval (1 s) and action lease (15 s).
//!
//! Each run: quarantine every server, wait until all succeeded, unquarantine every server,
//! wait again; `rounds` times. The figure is actions finished / wall time from the first
//! request to the last action's end.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cordon_drivers::{LinuxBridgeSwitch, SwitchDriver};
use cordon_engine::{Actor, Engine, EngineSettings, NetworkPlan, Request, Topology};
use cordon_model::{ActionKind, ActionState, AddressPool, NetworkRole};
use cordon_store::{PostgresStore, SqliteStore, Store};
use serde_json::json;

use crate::inventory::Synthetic;
use crate::report::BenchResult;

#[path = "../../cordon-store/tests/support/postgres.rs"]
mod postgres;

/// A network namespace with the two bridges and one veth port per server; deleted on drop.
struct Switch {
    netns: String,
}

impl Switch {
    fn new(servers: u32) -> anyhow::Result<Switch> {
        let netns = format!("cpgb-{}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["netns", "del", &netns]).stderr(std::process::Stdio::null()).status();
        ip(&["netns", "add", &netns])?;
        let switch = Switch { netns };
        // One `ip -batch` for every link: a few milliseconds per link otherwise.
        let mut batch = String::from(
            "link set lo up\nlink add br-office type bridge\nlink add br-quarantine type bridge\n\
             link set br-office up\nlink set br-quarantine up\n",
        );
        for i in 0..servers {
            batch.push_str(&format!(
                "link add p-{i} type veth peer name h-{i}\nlink set p-{i} master br-office\nlink set p-{i} up\nlink set h-{i} up\n"
            ));
        }
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), batch)?;
        ip(&["-n", &switch.netns, "-batch", &file.path().display().to_string()])?;
        Ok(switch)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output().context("run ip (iproute2)")?;
    if !output.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// 10.10.0.1 upwards on one switch, `tor-0`.
const SMALL: Synthetic = Synthetic {
    office_subnet: "10.10.0.0/16",
    quarantine_subnet: "10.99.0.0/16",
    pool: "10.99.0.10-10.99.255.250",
    first: Ipv4Addr::new(10, 10, 0, 1),
    per_switch: u32::MAX,
};

fn topology(netns: &str) -> Topology {
    let mut topology = Topology::default();
    topology.networks.insert(
        "office".into(),
        NetworkPlan {
            name: "office".into(),
            role: NetworkRole::Operational,
            bridge: Some("br-office".into()),
            vlan: None,
            quarantine_network: Some("quarantine".into()),
            pool: None,
        },
    );
    topology.networks.insert(
        "quarantine".into(),
        NetworkPlan {
            name: "quarantine".into(),
            role: NetworkRole::Quarantine,
            bridge: Some("br-quarantine".into()),
            vlan: None,
            quarantine_network: None,
            pool: Some(AddressPool::new("10.99.0.10-10.99.255.250".parse().expect("a valid range"), [])),
        },
    );
    let switch: Arc<dyn SwitchDriver> = Arc::new(LinuxBridgeSwitch::new("tor-0", Some(netns.to_string())));
    topology.switches.insert("tor-0".into(), switch);
    topology
}

/// One measured configuration: the stores of its instances.
async fn measure(
    label: &str,
    stores: Vec<Arc<dyn Store>>,
    netns: &str,
    servers: u32,
    rounds: u32,
) -> anyhow::Result<(f64, serde_json::Value)> {
    stores[0].sync_inventory(&SMALL.inventory(servers)).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut engines = Vec::new();
    for (index, store) in stores.iter().enumerate() {
        let settings = EngineSettings::new(format!("bench-{}", index + 1));
        let engine = Engine::new(store.clone(), topology(netns), settings);
        let mut stopped = stopped.clone();
        let runner = engine.clone();
        tokio::spawn(async move {
            runner
                .run(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        engines.push(engine);
    }
    let actor = Actor { name: "bench".into(), origin: "bench".into() };
    let started = Instant::now();
    let mut finished = 0u64;
    for _ in 0..rounds {
        for kind in [ActionKind::Quarantine, ActionKind::Unquarantine] {
            // The requests arrive together (many API clients at once), as detections do.
            let mut requests = tokio::task::JoinSet::new();
            for i in 0..servers {
                let engine = engines[i as usize % engines.len()].clone();
                let request = Request {
                    kind,
                    server: Synthetic::name(i),
                    reason: None,
                    trigger: "bench".into(),
                    actor: actor.clone(),
                };
                requests.spawn(async move { engine.request(request).await });
            }
            while let Some(joined) = requests.join_next().await {
                joined??;
            }
            finished += u64::from(servers);
            wait_for(&*stores[0], finished).await?;
        }
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    let mut by_instance: HashMap<String, u64> = HashMap::new();
    for action in
        stores[0].list_actions(&cordon_store::ActionFilter { limit: Some(u32::MAX), ..Default::default() }).await?
    {
        for step in stores[0].steps(action.id).await? {
            if step.step.name == "ensure_port_on_bridge" {
                *by_instance.entry(step.step.instance).or_default() += 1;
            }
        }
    }
    let rate = finished as f64 / elapsed.as_secs_f64();
    println!("{label}: {finished} actions in {:.2} s; ports moved per instance {by_instance:?}", elapsed.as_secs_f64());
    Ok((rate, json!({ "actions": finished, "seconds": elapsed.as_secs_f64(), "ports_moved_by": by_instance })))
}

/// Waits until `total` actions succeeded; any failed action stops the bench.
async fn wait_for(store: &dyn Store, total: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let counts = store.count_actions().await?;
        let count = |state: ActionState| counts.iter().filter(|(_, s, _)| *s == state).map(|(_, _, n)| n).sum::<u64>();
        if count(ActionState::Failed) > 0 {
            bail!("an action failed: {:?}", store.list_actions(&Default::default()).await?.first());
        }
        if count(ActionState::Succeeded) >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("actions did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn run(servers: u32, rounds: u32) -> anyhow::Result<BenchResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(servers, rounds))
}

async fn bench(servers: u32, rounds: u32) -> anyhow::Result<BenchResult> {
    let mut result = BenchResult::new("multi");
    let switch = Switch::new(servers)?;
    result.detail("servers", json!(servers));
    result.detail("rounds", json!(rounds));

    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("cordon.db"))?);
    let (rate, detail) = measure("1 instance, SQLite", vec![sqlite], &switch.netns, servers, rounds).await?;
    result.figure("sustained actions/s, 1 instance, SQLite (reference)", rate, "actions/s", None);
    result.detail("sqlite_1", detail);

    for instances in [1usize, 2] {
        let url = postgres::fresh_database("cpg_bench");
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..instances {
            stores.push(Arc::new(PostgresStore::connect(&url, None).await?));
        }
        let label = format!("{instances} instance{}, PostgreSQL", if instances == 1 { "" } else { "s" });
        let (rate, detail) = measure(&label, stores, &switch.netns, servers, rounds).await?;
        result.figure(format!("sustained actions/s, {label}"), rate, "actions/s", None);
        result.detail(&format!("postgres_{instances}"), detail);
    }
    Ok(result)
}
