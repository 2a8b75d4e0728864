//! What every result carries: the machine, the figures beside their goals, and latency
//! percentiles.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// The machine a result came from.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub date: String,
}

impl Machine {
    pub fn detect() -> Self {
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Machine { nproc, cpu_model, kernel, date }
    }

    pub fn describe(&self) -> String {
        format!("{} × {} (nproc {}), Linux {}, {}", self.nproc, self.cpu_model, self.nproc, self.kernel, self.date)
    }

    fn to_json(&self) -> Value {
        json!({ "nproc": self.nproc, "cpu_model": self.cpu_model, "kernel": self.kernel, "date": self.date })
    }
}

/// `bench/results` at the workspace root.
pub fn default_results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results")
}

/// One figure: a value, its unit, and the goal it is read against.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The goal as the issue states it (e.g. `≥ 200000`), when there is one.
    pub goal: Option<Goal>,
}

#[derive(Debug, Clone, Copy)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(goal) => value >= goal,
            Goal::AtMost(goal) => value <= goal,
        }
    }

    fn describe(self) -> String {
        match self {
            Goal::AtLeast(goal) => format!("≥ {}", number(goal)),
            Goal::AtMost(goal) => format!("≤ {}", number(goal)),
        }
    }
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// A benchmark's figures and anything else worth keeping (inputs, breakdowns).
#[derive(Debug)]
pub struct BenchResult {
    pub name: &'static str,
    pub figures: Vec<Figure>,
    pub details: Value,
}

impl BenchResult {
    pub fn new(name: &'static str) -> Self {
        BenchResult { name, figures: Vec::new(), details: json!({}) }
    }

    /// Records a figure and prints it at once.
    pub fn figure(&mut self, name: impl Into<String>, value: f64, unit: &'static str, goal: Option<Goal>) {
        let figure = Figure { name: name.into(), value, unit, goal };
        let verdict = match figure.goal {
            Some(goal) if goal.met(value) => format!("goal {} {unit}: met", goal.describe()),
            Some(goal) => format!("goal {} {unit}: MISSED", goal.describe()),
            None => String::new(),
        };
        println!("{:<52} {:>14} {:<10} {verdict}", figure.name, number(value), unit);
        self.figures.push(figure);
    }

    pub fn detail(&mut self, key: &str, value: Value) {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value);
        }
    }

    pub fn write(&self, dir: &Path, machine: &Machine) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "value": f.value,
                    "unit": f.unit,
                    "goal": f.goal.map(Goal::describe),
                    "met": f.goal.map(|g| g.met(f.value)),
                })
            })
            .collect();
        let document = json!({
            "benchmark": self.name,
            "machine": machine.to_json(),
            "figures": figures,
            "details": self.details,
        });
        let path = dir.join(format!("{}.json", self.name));
        std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")?;
        Ok(path)
    }
}

/// Latencies of single operations, in nanoseconds.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Latencies(Vec::with_capacity(n))
    }

    pub fn push(&mut self, elapsed: Duration) {
        self.0.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The `p`-th percentile (nearest rank) in microseconds.
    pub fn percentile_us(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1] as f64 / 1000.0
    }

    pub fn summary(&mut self) -> Value {
        let mean = self.0.iter().sum::<u64>() as f64 / self.0.len().max(1) as f64 / 1000.0;
        json!({
            "count": self.0.len(),
            "p50_us": self.percentile_us(50.0),
            "p90_us": self.percentile_us(90.0),
            "p99_us": self.percentile_us(99.0),
            "max_us": self.percentile_us(100.0),
            "mean_us": mean,
        })
    }
}

/// `VmRSS` and `VmHWM` (peak) of this process, in MiB, from `/proc/self/status`.
pub fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A small deterministic generator, so inputs differ (addresses, ports, ids) yet every run
/// measures the same ones.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The closing table of a run: every figure of every group beside its goal, as Markdown (it
/// goes into docs/performance.md as printed).
pub fn print_table(machine: &Machine, results: &[BenchResult]) {
    println!("## Figures ({})\n", machine.describe());
    println!("| group | figure | value | goal | |");
    println!("|---|---|---|---|---|");
    for result in results {
        for f in &result.figures {
            let (goal, verdict) = match f.goal {
                Some(goal) if goal.met(f.value) => (format!("{} {}", goal.describe(), f.unit), "met"),
                Some(goal) => (format!("{} {}", goal.describe(), f.unit), "**missed**"),
                None => (String::new(), ""),
            };
            println!("| {} | {} | {} {} | {goal} | {verdict} |", result.name, f.name, number(f.value), f.unit);
        }
    }
}
