//! Durable commits of the SQLite store with many calls in flight: N tokio tasks each record
//! messages (`Store::record_message`, one small durable write) on a file store with its
//! production settings (WAL, `synchronous = FULL`) for a fixed time.
//!
//! Calls per second is what the engine sees; commits per second and jobs per commit show the
//! group commit at work (the store's writer thread commits every queued write in one
//! transaction, one `fdatasync`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon_store::{NewMessage, SqliteStore, Store};
use serde_json::json;

use crate::report::{BenchResult, Latencies};

/// The numbers of concurrent tasks measured.
const CONCURRENCY: [usize; 3] = [1, 8, 64];

pub fn run(seconds: u64) -> anyhow::Result<BenchResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(Duration::from_secs(seconds)))
}

async fn bench(period: Duration) -> anyhow::Result<BenchResult> {
    let mut result = BenchResult::new("store");
    let mut details = Vec::new();
    for tasks in CONCURRENCY {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SqliteStore::open(&dir.path().join("cordon.db"))?);
        let (jobs_before, commits_before) = store.commit_stats();
        let start = Instant::now();
        let deadline = start + period;
        let workers: Vec<_> = (0..tasks)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(4096);
                    let message = NewMessage {
                        number: 21001,
                        text: format!("bench task {task}"),
                        server_id: None,
                        action_id: None,
                        instance: "bench".into(),
                    };
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        store.record_message(&message).await?;
                        latencies.push(t.elapsed());
                    }
                    anyhow::Ok::<Vec<Duration>>(latencies)
                })
            })
            .collect();
        let mut latencies = Latencies::with_capacity(tasks * 4096);
        let mut calls = 0;
        for worker in workers {
            for elapsed in worker.await?? {
                latencies.push(elapsed);
                calls += 1;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (jobs, commits) = store.commit_stats();
        let (jobs, commits) = (jobs - jobs_before, commits - commits_before);
        let calls_per_s = calls as f64 / elapsed;
        let commits_per_s = commits as f64 / elapsed;
        let per_commit = if commits == 0 { 0.0 } else { jobs as f64 / commits as f64 };
        result.figure(format!("store record_message, {tasks} tasks: calls/s"), calls_per_s, "1/s", None);
        result.figure(format!("store record_message, {tasks} tasks: commits/s"), commits_per_s, "1/s", None);
        result.figure(format!("store record_message, {tasks} tasks: jobs per commit"), per_commit, "", None);
        details.push(json!({
            "tasks": tasks,
            "seconds": elapsed,
            "calls": calls,
            "jobs": jobs,
            "commits": commits,
            "latency": latencies.summary(),
        }));
    }
    result.detail("record_message", json!(details));
    Ok(result)
}
