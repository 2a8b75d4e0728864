//! Counters exposed at `GET /metrics` in the Prometheus text format.
//!
//! A handful of atomics rendered by hand: no registry crate is needed for this few, and the
//! names are part of Cordon's interface (docs/metrics.md lists them).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cordon_model::ActionKind;

#[derive(Debug, Default)]
pub struct Metrics {
    created: [AtomicU64; KINDS],
    succeeded: [AtomicU64; KINDS],
    failed: [AtomicU64; KINDS],
    /// Sum of execution times of finished actions, in microseconds, per kind.
    duration_micros: [AtomicU64; KINDS],
    driver_calls: AtomicU64,
    driver_errors: AtomicU64,
    http_requests: AtomicU64,
    http_unauthorized: AtomicU64,
    http_forbidden: AtomicU64,
    breaker_trips: AtomicU64,
    /// Running actions this instance took over from an instance whose lease expired.
    taken_over: AtomicU64,
    drifts: AtomicU64,
    /// Detections processed, by source and outcome (new_action, attached, ignored, shadow,
    /// unresolved, cooldown).
    detections: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Driver call latency, per driver kind.
    driver_latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// From a detection's arrival to its server verified in quarantine.
    time_to_contain: Mutex<Histogram>,
}

/// Upper bounds of the histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

const KINDS: usize = ActionKind::ALL.len();

fn index(kind: ActionKind) -> usize {
    ActionKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Metrics {
    pub fn action_created(&self, kind: ActionKind) {
        self.created[index(kind)].fetch_add(1, Relaxed);
    }

    pub fn action_finished(&self, kind: ActionKind, succeeded: bool, elapsed: Duration) {
        let counter = if succeeded { &self.succeeded } else { &self.failed };
        counter[index(kind)].fetch_add(1, Relaxed);
        self.duration_micros[index(kind)].fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    pub fn driver_call(&self, ok: bool) {
        self.driver_calls.fetch_add(1, Relaxed);
        if !ok {
            self.driver_errors.fetch_add(1, Relaxed);
        }
    }

    /// One detection processed with this outcome.
    pub fn detection(&self, source: &str, outcome: &'static str) {
        let mut map = self.detections.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((source.to_string(), outcome)).or_default() += 1;
    }

    /// One driver call took this long.
    pub fn driver_latency(&self, driver: &'static str, elapsed: Duration) {
        let mut map = self.driver_latency.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(driver).or_default().observe(elapsed.as_secs_f64());
    }

    /// A server was verified in quarantine this long after the detection that caused it arrived.
    pub fn contained(&self, elapsed: Duration) {
        self.time_to_contain.lock().unwrap_or_else(|p| p.into_inner()).observe(elapsed.as_secs_f64());
    }

    pub fn drift_found(&self) {
        self.drifts.fetch_add(1, Relaxed);
    }

    pub fn breaker_tripped(&self) {
        self.breaker_trips.fetch_add(1, Relaxed);
    }

    pub fn action_taken_over(&self) {
        self.taken_over.fetch_add(1, Relaxed);
    }

    /// One HTTP request answered; `status` picks the refusal counters.
    pub fn http_request(&self, status: u16) {
        self.http_requests.fetch_add(1, Relaxed);
        match status {
            401 => self.http_unauthorized.fetch_add(1, Relaxed),
            403 => self.http_forbidden.fetch_add(1, Relaxed),
            _ => 0,
        };
    }

    /// The Prometheus text exposition of every counter. `actions` are the current counts by
    /// kind and state (read from the store), `breaker_tripped` the circuit breaker's state.
    pub fn render_with(
        &self,
        actions: &[(ActionKind, cordon_model::ActionState, u64)],
        breaker_tripped: bool,
    ) -> String {
        let mut out = self.render();
        let family = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(&mut out, "cordon_actions", "Actions by kind and state, now.", "gauge");
        for (kind, state, count) in actions {
            let _ = writeln!(out, "cordon_actions{{kind=\"{kind}\",state=\"{state}\"}} {count}");
        }
        family(
            &mut out,
            "cordon_breaker_tripped",
            "1 while the circuit breaker holds automatic actions for approval.",
            "gauge",
        );
        let _ = writeln!(out, "cordon_breaker_tripped {}", u8::from(breaker_tripped));
        family(&mut out, "cordon_detections_total", "Detections processed, by source and outcome.", "counter");
        for ((source, outcome), count) in self.detections.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let source = source.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "cordon_detections_total{{source=\"{source}\",outcome=\"{outcome}\"}} {count}");
        }
        family(&mut out, "cordon_driver_call_seconds", "Driver call latency, by driver.", "histogram");
        for (driver, histogram) in self.driver_latency.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            histogram.render(&mut out, "cordon_driver_call_seconds", &format!("driver=\"{driver}\""));
        }
        family(
            &mut out,
            "cordon_time_to_contain_seconds",
            "From a detection's arrival to its server verified in quarantine.",
            "histogram",
        );
        self.time_to_contain.lock().unwrap_or_else(|p| p.into_inner()).render(
            &mut out,
            "cordon_time_to_contain_seconds",
            "",
        );
        out
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family("cordon_actions_created_total", "Actions committed, by kind.", "counter");
        family("cordon_actions_finished_total", "Actions that ended a run, by kind and result.", "counter");
        family("cordon_action_duration_seconds_sum", "Total execution time of finished actions, by kind.", "counter");
        family("cordon_driver_calls_total", "Driver calls made.", "counter");
        family("cordon_driver_errors_total", "Driver calls that failed.", "counter");
        family("cordon_breaker_trips_total", "Times the circuit breaker tripped.", "counter");
        family(
            "cordon_actions_taken_over_total",
            "Running actions taken over from an instance whose lease expired.",
            "counter",
        );
        family(
            "cordon_drift_total",
            "Differences the reconciler found between the records and the network.",
            "counter",
        );
        family("cordon_http_requests_total", "HTTP requests answered.", "counter");
        family("cordon_http_refused_total", "HTTP requests refused for authentication (401) or role (403).", "counter");
        for &kind in ActionKind::ALL {
            let i = index(kind);
            let _ = writeln!(out, "cordon_actions_created_total{{kind=\"{kind}\"}} {}", self.created[i].load(Relaxed));
            let _ = writeln!(
                out,
                "cordon_actions_finished_total{{kind=\"{kind}\",result=\"succeeded\"}} {}",
                self.succeeded[i].load(Relaxed)
            );
            let _ = writeln!(
                out,
                "cordon_actions_finished_total{{kind=\"{kind}\",result=\"failed\"}} {}",
                self.failed[i].load(Relaxed)
            );
            let seconds = self.duration_micros[i].load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "cordon_action_duration_seconds_sum{{kind=\"{kind}\"}} {seconds}");
        }
        let _ = writeln!(out, "cordon_driver_calls_total {}", self.driver_calls.load(Relaxed));
        let _ = writeln!(out, "cordon_driver_errors_total {}", self.driver_errors.load(Relaxed));
        let _ = writeln!(out, "cordon_breaker_trips_total {}", self.breaker_trips.load(Relaxed));
        let _ = writeln!(out, "cordon_actions_taken_over_total {}", self.taken_over.load(Relaxed));
        let _ = writeln!(out, "cordon_drift_total {}", self.drifts.load(Relaxed));
        let _ = writeln!(out, "cordon_http_requests_total {}", self.http_requests.load(Relaxed));
        let _ = writeln!(out, "cordon_http_refused_total{{status=\"401\"}} {}", self.http_unauthorized.load(Relaxed));
        let _ = writeln!(out, "cordon_http_refused_total{{status=\"403\"}} {}", self.http_forbidden.load(Relaxed));
        out
    }
}
