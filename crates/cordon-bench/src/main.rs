//! Cordon's benchmarks (issue 7): each subcommand measures one group of figures, prints them
//! beside their goals and writes them, with the machine they ran on, to
//! `bench/results/<name>.json`. `all` runs every group and ends with one table.
//!
//! Benchmarks are never assertions: a missed goal is printed, not failed. Run in release, as
//! root for the lab: `scripts/bench.sh` (builds, installs what is missing, runs `all`).
//!
//! This file only dispatches: a new group is one module, one `Command` variant and one arm.

mod capture;
mod contain;
mod ingest;
mod inventory;
mod lab;
mod multi;
mod report;
mod store;
mod suricata;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::report::BenchResult;

#[derive(Debug, Parser)]
#[command(name = "cordon-bench", about = "Measures Cordon's figures and writes them to bench/results/")]
struct Cli {
    /// Where the `<name>.json` results go.
    #[arg(long, global = true, default_value_os_t = report::default_results_dir())]
    results: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// EVE and CEF (Deep Discovery) lines per second per core through parse → normalize.
    Ingest(IngestArgs),
    /// N servers synced into a fresh SQLite store: start-up time, address lookups, memory; then
    /// the store's durable writes with 1, 8 and 64 calls in flight (group commit).
    Inventory(InventoryArgs),
    /// On a real lab (root): time-to-contain and its floor, sustained actions/s, an outbreak, API.
    Contain(ContainArgs),
    /// Every group above in turn, then one table of figures and goals.
    All {
        #[command(flatten)]
        ingest: IngestArgs,
        #[command(flatten)]
        inventory: InventoryArgs,
        #[command(flatten)]
        contain: ContainArgs,
    },
    /// Sustained actions/s on PostgreSQL with one and two instances (real linux-bridge ports).
    Multi {
        #[arg(long, default_value_t = 100)]
        servers: u32,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
}

#[derive(Debug, Clone, Args)]
struct IngestArgs {
    /// Seconds spent measuring each ingest figure.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[derive(Debug, Clone, Args)]
struct InventoryArgs {
    #[arg(long, default_value_t = 100_000)]
    servers: u32,
    #[arg(long, default_value_t = 10_000)]
    lookups: u32,
    /// Seconds of `record_message` calls per concurrency level (1, 8, 64 tasks).
    #[arg(long, default_value_t = 2)]
    store_seconds: u64,
}

#[derive(Debug, Clone, Args)]
struct ContainArgs {
    /// The `cordon` binary to run (default: next to this one, i.e. the same build).
    #[arg(long)]
    cordon: Option<PathBuf>,
    /// Time-to-contain runs, one fresh server each.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// Servers alerted at once for the sustained figure.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    /// Outbreak: hosts (the 10,000: ten bridges of 1,000 ports).
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Outbreak: alerts per host, interleaved (the 100, a million detections, takes
    /// about 13 minutes on a 2-core machine, longer than the whole suite should; see
    /// docs/performance.md).
    #[arg(long, default_value_t = 3)]
    alerts: usize,
    /// `servers show` requests (and a tenth as many `servers list`).
    #[arg(long, default_value_t = 1000)]
    api_requests: usize,
    /// Rounds of lab traffic captured for the realistic Suricata ratio (each host: 5 HTTP
    /// requests, a TLS connection, 4 DNS queries; each client namespace: a 10 MiB download).
    /// The default makes `suricata -r` spend a few seconds (about 2.5 s here).
    #[arg(long, default_value_t = 12)]
    capture_rounds: usize,
}

impl ContainArgs {
    fn options(&self) -> anyhow::Result<contain::Options> {
        let cordon = match &self.cordon {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("cordon"),
        };
        Ok(contain::Options {
            cordon,
            runs: self.runs,
            burst: self.burst,
            hosts: self.hosts,
            alerts: self.alerts,
            api_requests: self.api_requests,
            capture_rounds: self.capture_rounds,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let machine = report::Machine::detect();
    println!("machine: {}", machine.describe());
    let groups: Vec<Box<dyn Fn() -> anyhow::Result<BenchResult>>> = match cli.command {
        Command::Ingest(a) => vec![Box::new(move || ingest::run(Duration::from_secs(a.seconds)))],
        Command::Inventory(a) => {
            vec![Box::new(move || inventory::run(a.servers, a.lookups)), Box::new(move || store::run(a.store_seconds))]
        }
        Command::Contain(a) => vec![Box::new(move || contain::run(&a.options()?))],
        Command::All { ingest, inventory, contain } => vec![
            Box::new(move || ingest::run(Duration::from_secs(ingest.seconds))),
            Box::new(move || inventory::run(inventory.servers, inventory.lookups)),
            Box::new(move || store::run(inventory.store_seconds)),
            Box::new(move || contain::run(&contain.options()?)),
        ],
        Command::Multi { servers, rounds } => vec![Box::new(move || multi::run(servers, rounds))],
    };
    let mut results = Vec::new();
    for group in groups {
        let result = group()?;
        let path = result.write(&cli.results, &machine)?;
        println!("written to {}\n", path.display());
        results.push(result);
    }
    report::print_table(&machine, &results);
    Ok(())
}
