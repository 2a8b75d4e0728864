//! Counters exposed at `GET /metrics` in the Prometheus text format.
//!
//! A handful of atomics rendered by hand: no registry crate is needed for this few, and the
//! names are part of Cordon's interface (docs/metrics.md lists them).

use std::fmt::Write;
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
    drifts: AtomicU64,
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

    pub fn drift_found(&self) {
        self.drifts.fetch_add(1, Relaxed);
    }

    pub fn breaker_tripped(&self) {
        self.breaker_trips.fetch_add(1, Relaxed);
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
        let _ = writeln!(out, "cordon_drift_total {}", self.drifts.load(Relaxed));
        let _ = writeln!(out, "cordon_http_requests_total {}", self.http_requests.load(Relaxed));
        let _ = writeln!(out, "cordon_http_refused_total{{status=\"401\"}} {}", self.http_unauthorized.load(Relaxed));
        let _ = writeln!(out, "cordon_http_refused_total{{status=\"403\"}} {}", self.http_forbidden.load(Relaxed));
        out
    }
}
