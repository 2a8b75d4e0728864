//! Per-source counters and their Prometheus rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// At most this many distinct `kind`s are counted apart; others are counted as `other`. Kinds
/// come from what sensors send (an EVE `event_type`), so their number must be bounded.
pub(crate) const MAX_SKIPPED_KINDS: usize = 64;
/// The kind that stands for every kind past [`MAX_SKIPPED_KINDS`].
pub(crate) const OTHER_KIND: &str = "other";

/// What one source counted since it was made. Cheap to update from many tasks (atomics).
#[derive(Debug, Default)]
pub struct SourceCounters {
    received: AtomicU64,
    accepted: AtomicU64,
    skipped: AtomicU64,
    skipped_by_kind: Mutex<BTreeMap<String, u64>>,
    rejected: AtomicU64,
    bytes: AtomicU64,
    delivery_failures: AtomicU64,
    connections: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    denied: [AtomicU64; Denied::ALL.len()],
}

/// Why input from a sender was refused before it was read (who sent it, not what it says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The peer is outside the source's `allowed_peers`.
    Peer,
    /// A missing or wrong token or signature, or a signed timestamp too far from now.
    Auth,
    /// A signature seen before, within the allowed skew: a replay.
    Replay,
    /// Over the source's rate limit.
    RateLimit,
}

impl Denied {
    pub const ALL: [Denied; 4] = [Denied::Peer, Denied::Auth, Denied::Replay, Denied::RateLimit];

    /// The `reason` label in the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Peer => "peer",
            Denied::Auth => "auth",
            Denied::Replay => "replay",
            Denied::RateLimit => "rate_limit",
        }
    }
}

/// The counters of one source at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Lines or messages read and handed to the parser (or refused as too long).
    pub received: u64,
    /// Detections delivered to the sink.
    pub accepted: u64,
    /// Well-formed events not acted on, all kinds together.
    pub skipped: u64,
    /// The same, by the parser's `kind` (at most 64 kinds, then `other`).
    pub skipped_by_kind: BTreeMap<String, u64>,
    /// Malformed input, lines or frames too long, and connections refused.
    pub rejected: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Deliveries that the sink failed (each retry counts).
    pub delivery_failures: u64,
    /// Connections accepted, in total.
    pub connections: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections refused (over the cap); also counted in `rejected`.
    pub connections_refused: u64,
    /// Input refused because of who sent it, by reason (in the order of [`Denied::ALL`]).
    pub denied: [u64; Denied::ALL.len()],
}

impl CounterSnapshot {
    pub fn denied(&self, reason: Denied) -> u64 {
        self.denied[reason as usize]
    }
}

impl SourceCounters {
    /// A copy of the counters now (each counter read on its own; not one atomic cut).
    pub fn snapshot(&self) -> CounterSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            received: load(&self.received),
            accepted: load(&self.accepted),
            skipped: load(&self.skipped),
            skipped_by_kind: self.kinds().clone(),
            rejected: load(&self.rejected),
            bytes: load(&self.bytes),
            delivery_failures: load(&self.delivery_failures),
            connections: load(&self.connections),
            connections_open: load(&self.connections_open),
            connections_refused: load(&self.connections_refused),
            denied: std::array::from_fn(|i| load(&self.denied[i])),
        }
    }

    fn kinds(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.skipped_by_kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_skipped(&self, kind: &str) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        let mut kinds = self.kinds();
        if let Some(n) = kinds.get_mut(kind) {
            *n += 1;
        } else if kinds.len() < MAX_SKIPPED_KINDS {
            kinds.insert(kind.to_owned(), 1);
        } else {
            *kinds.entry(OTHER_KIND.to_owned()).or_insert(0) += 1;
        }
    }
    pub fn add_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts input refused because of who sent it (also logged by the caller).
    pub fn add_denied(&self, reason: Denied) {
        self.denied[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_delivery_failure(&self) {
        self.delivery_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A metric family: name, type, help, and its value in a snapshot.
type Family = (&'static str, &'static str, &'static str, fn(&CounterSnapshot) -> u64);

/// Prometheus text for many sources, one family after another, each with `# HELP` and
/// `# TYPE` lines: `cordon_source_received_total{source="ids-1"} 12`, ...
pub fn render_metrics(sources: &[(String, Arc<SourceCounters>)]) -> String {
    let snaps: Vec<(String, CounterSnapshot)> = sources.iter().map(|(name, c)| (label(name), c.snapshot())).collect();
    let mut out = String::new();
    let simple: [Family; 7] = [
        ("cordon_source_received_total", "counter", "Lines or messages read by the source.", |s| s.received),
        ("cordon_source_accepted_total", "counter", "Detections delivered to the engine.", |s| s.accepted),
        (
            "cordon_source_rejected_total",
            "counter",
            "Malformed input, lines or frames too long, and connections refused.",
            |s| s.rejected,
        ),
        ("cordon_source_bytes_total", "counter", "Bytes read by the source.", |s| s.bytes),
        (
            "cordon_source_delivery_failures_total",
            "counter",
            "Deliveries to the engine that failed (and were retried).",
            |s| s.delivery_failures,
        ),
        ("cordon_source_connections_total", "counter", "Connections accepted by the source.", |s| s.connections),
        ("cordon_source_open_connections", "gauge", "Connections open now.", |s| s.connections_open),
    ];
    for (i, (name, kind, help, get)) in simple.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (source, snap) in &snaps {
            let _ = writeln!(out, "{name}{{source=\"{source}\"}} {}", get(snap));
        }
        if i == 2 {
            // After rejected, the refusals by reason.
            let name = "cordon_source_denied_total";
            let _ = writeln!(
                out,
                "# HELP {name} Input refused because of who sent it, by reason (peer, auth, replay, rate_limit).\n# TYPE {name} counter"
            );
            for (source, snap) in &snaps {
                for reason in Denied::ALL {
                    let _ = writeln!(
                        out,
                        "{name}{{source=\"{source}\",reason=\"{}\"}} {}",
                        reason.as_str(),
                        snap.denied(reason)
                    );
                }
            }
        }
        if i == 1 {
            // After accepted, the family with a second label.
            let name = "cordon_source_skipped_total";
            let _ = writeln!(out, "# HELP {name} Well-formed events not acted on, by kind.\n# TYPE {name} counter");
            for (source, snap) in &snaps {
                for (kind, n) in &snap.skipped_by_kind {
                    let _ = writeln!(out, "{name}{{source=\"{source}\",kind=\"{}\"}} {n}", label(kind));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_bounded() {
        let c = SourceCounters::default();
        for i in 0..(MAX_SKIPPED_KINDS + 10) {
            c.add_skipped(&format!("k{i}"));
        }
        c.add_skipped("k0");
        let s = c.snapshot();
        assert_eq!(s.skipped, MAX_SKIPPED_KINDS as u64 + 11);
        assert_eq!(s.skipped_by_kind.len(), MAX_SKIPPED_KINDS + 1);
        assert_eq!(s.skipped_by_kind["other"], 10);
        assert_eq!(s.skipped_by_kind["k0"], 2);
    }

    #[test]
    fn labels_are_escaped() {
        let c = Arc::new(SourceCounters::default());
        c.add_skipped("a\"b\\c\nd");
        let text = render_metrics(&[("x\"y".to_owned(), c)]);
        assert!(text.contains(r#"cordon_source_skipped_total{source="x\"y",kind="a\"b\\c\nd"} 1"#), "{text}");
    }
}
