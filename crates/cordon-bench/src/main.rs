//! Cordon's benchmarks (issue 7): each subcommand measures one figure, prints it beside its goal
//! and writes it, with the machine it ran on, to `bench/results/<name>.json`.
//!
//! Benchmarks are never assertions: a missed goal is printed, not failed. Run in release:
//! `CARGO_TARGET_DIR=/work/target-bench cargo run --release -p cordon-bench -- ingest`.

mod ingest;
mod inventory;
mod multi;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

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
    Ingest {
        /// Seconds spent measuring each figure.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// N servers synced into a fresh SQLite store: start-up time, address lookups, memory.
    Inventory {
        #[arg(long, default_value_t = 100_000)]
        servers: u32,
        #[arg(long, default_value_t = 10_000)]
        lookups: u32,
    },
    /// Sustained actions/s on PostgreSQL with one and two instances (real linux-bridge ports).
    Multi {
        #[arg(long, default_value_t = 100)]
        servers: u32,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let machine = report::Machine::detect();
    println!("machine: {}", machine.describe());
    let result = match cli.command {
        Command::Ingest { seconds } => ingest::run(Duration::from_secs(seconds))?,
        Command::Inventory { servers, lookups } => inventory::run(servers, lookups)?,
        Command::Multi { servers, rounds } => multi::run(servers, rounds)?,
    };
    let path = result.write(&cli.results, &machine)?;
    println!("written to {}", path.display());
    Ok(())
}
