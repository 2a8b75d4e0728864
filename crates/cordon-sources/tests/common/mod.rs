//! Test helpers: a parser of a toy format, a recording sink, waiting.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cordon_model::{Detection, Parsed, ThreatSeverity};
use cordon_sources::{Batch, Checkpoint, DetectionSink, Parser, SinkError};

/// `alert <ip> [anything]` → a detection (raw = the line); `skip [kind]` → skipped (kind
/// `skip` or the one given); anything else → malformed.
pub fn parser() -> Parser {
    Arc::new(|bytes: &[u8], ctx: &cordon_ingest::Context<'_>| {
        let text = String::from_utf8_lossy(bytes);
        let mut words = text.split_whitespace();
        match words.next() {
            Some("alert") => match words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                Some(ip) => Parsed::Detection(Box::new(Detection {
                    received_at_us: ctx.received_at_us,
                    observed_at_us: None,
                    source: ctx.source.to_owned(),
                    sensor: None,
                    subject: ip,
                    peer: None,
                    src_ip: Some(ip),
                    dest_ip: None,
                    target_ip: None,
                    signature_id: None,
                    signature: "test".to_owned(),
                    category: None,
                    severity: ThreatSeverity::High,
                    raw: text.into_owned(),
                })),
                None => Parsed::Malformed { reason: "alert without an address".to_owned() },
            },
            Some("skip") => Parsed::Skipped { kind: words.next().unwrap_or("skip").to_owned() },
            _ => Parsed::Malformed { reason: format!("unknown line {text:?}") },
        }
    })
}

/// Records every batch delivered; may fail the first deliveries, and may take its time.
#[derive(Debug, Default)]
pub struct RecordingSink {
    batches: Mutex<Vec<Batch>>,
    attempts: AtomicUsize,
    fail_first: usize,
    fail_always: bool,
    delay: Option<Duration>,
}

impl RecordingSink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn failing_first(n: usize) -> Arc<Self> {
        Arc::new(RecordingSink { fail_first: n, ..Self::default() })
    }
    pub fn always_failing() -> Arc<Self> {
        Arc::new(RecordingSink { fail_always: true, ..Self::default() })
    }
    pub fn slow(delay: Duration) -> Arc<Self> {
        Arc::new(RecordingSink { delay: Some(delay), ..Self::default() })
    }
    pub fn batches(&self) -> Vec<Batch> {
        self.batches.lock().unwrap().clone()
    }
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
    /// The raw lines of every detection delivered, in order.
    pub fn raws(&self) -> Vec<String> {
        self.batches.lock().unwrap().iter().flat_map(|b| b.detections.iter().map(|d| d.raw.clone())).collect()
    }
    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.batches.lock().unwrap().iter().rev().find_map(|b| b.checkpoint.clone())
    }
}

#[async_trait::async_trait]
impl DetectionSink for RecordingSink {
    async fn deliver(&self, batch: Batch) -> Result<(), SinkError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.delay {
            // A task aborted here has delivered nothing: the batch is recorded below or not at all.
            tokio::time::sleep(d).await;
        }
        if self.fail_always || attempt < self.fail_first {
            return Err(SinkError(format!("attempt {attempt} fails")));
        }
        self.batches.lock().unwrap().push(batch);
        Ok(())
    }
}

/// Waits until `cond` holds (polling), at most 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lines `alert 10.0.0.1 <tag>-<i>` for i in range.
pub fn alerts(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("alert 10.0.0.1 {tag}-{i}")).collect()
}

/// The lines as file content, each with its newline.
pub fn text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}
