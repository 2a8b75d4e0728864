//! What every source shares: parsing with accounting, delivery with retry, shutdown, logs.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cordon_model::{Detection, Parsed, messages};
use tokio::sync::watch;

use crate::{Batch, Checkpoint, DetectionSink, Parser, SourceCounters};

/// The most detections in one batch.
pub(crate) const MAX_BATCH: usize = 1000;
/// The first wait after a failed delivery; it doubles up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At most one warning per source in this time.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Now, in Unix microseconds.
pub(crate) fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Whether shutdown was asked for (a dropped sender counts: nobody is left to ask).
pub(crate) fn is_shutdown(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow() || rx.has_changed().is_err()
}

/// Waits until shutdown is asked for (or the sender is dropped).
pub(crate) async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    // `wait_for` returns at once if the value is already true, and fails when the sender is gone.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Lets one warning through per [`WARN_EVERY`], counting those held back.
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    /// `Some(held back since the last one)` when a warning may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < WARN_EVERY => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// Logs a warning for a source, at most one per 10 s per source; the others are logged at debug
/// level (each event is logged once, at one level or the other).
macro_rules! limited_warn {
    ($core:expr, $($arg:tt)+) => {{
        let core: &$crate::core::Core = $core;
        match core.warns.allow() {
            Some(held) => tracing::warn!(source = %core.name, held_back = held, $($arg)+),
            None => tracing::debug!(source = %core.name, $($arg)+),
        }
    }};
}
pub(crate) use limited_warn;

/// One source's name, parser, sink and counters.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) name: String,
    parser: ParserBox,
    sink: Arc<dyn DetectionSink>,
    pub(crate) counters: Arc<SourceCounters>,
    pub(crate) warns: WarnLimiter,
    /// `max_rate`, when the source has one (set once, by the source's builder).
    pub(crate) limiter: std::sync::OnceLock<crate::RateLimiter>,
}

/// The parser, with a `Debug` that says nothing.
struct ParserBox(Parser);

impl std::fmt::Debug for ParserBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parser")
    }
}

/// What a delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    Yes,
    /// Shutdown was asked for before the batch could be delivered.
    ShutDown,
}

impl Core {
    pub(crate) fn new(
        name: String,
        parser: Parser,
        sink: Arc<dyn DetectionSink>,
        counters: Arc<SourceCounters>,
    ) -> Arc<Self> {
        Arc::new(Core {
            name,
            parser: ParserBox(parser),
            sink,
            counters,
            warns: WarnLimiter::default(),
            limiter: std::sync::OnceLock::new(),
        })
    }

    /// Parses one line or message and counts it; returns the detection, if it is one.
    pub(crate) fn parse(&self, bytes: &[u8], received_at_us: i64) -> Option<Detection> {
        self.counters.add_received(1);
        let ctx = cordon_ingest::Context { source: &self.name, received_at_us };
        // Parsers never panic by contract; if one does, one line is lost, not the source.
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| (self.parser.0)(bytes, &ctx)))
            .unwrap_or_else(|_| Parsed::Malformed { reason: "the parser panicked".to_owned() });
        match parsed {
            Parsed::Detection(d) => Some(*d),
            Parsed::Skipped { kind } => {
                self.counters.add_skipped(&kind);
                None
            }
            Parsed::Malformed { reason } => {
                self.counters.add_rejected();
                self.log_rejected(&reason);
                None
            }
        }
    }

    /// Counts a line or frame refused (too long, or not cut right), with the reason.
    /// Whether one datagram may be read now under `max_rate`; if not, it is counted as denied
    /// (reason `rate_limit`) and logged (message 41094, at most one warning per 10 s).
    pub(crate) fn admit_one(&self) -> bool {
        let Some(limiter) = self.limiter.get() else { return true };
        if limiter.try_take(1) {
            return true;
        }
        self.counters.add_received(1);
        self.counters.add_denied(crate::Denied::RateLimit);
        let text = messages::RATE_LIMITED.render(&[
            ("source", &self.name),
            ("rate", &limiter.per_second()),
            ("what", &"a datagram was dropped"),
        ]);
        limited_warn!(self, number = messages::RATE_LIMITED.number, "{text}");
        false
    }

    /// After reading `n` events from a stream: how long to pause before reading more, so that
    /// the sender is slowed to `max_rate` (nothing is dropped).
    pub(crate) fn pace(&self, n: u64) -> Duration {
        self.limiter.get().map_or(Duration::ZERO, |limiter| limiter.take_and_wait(n))
    }

    /// Input refused because of who sent it: counted as rejected and as denied for `why`.
    pub(crate) fn denied(&self, why: crate::Denied, reason: &str) {
        self.counters.add_denied(why);
        self.refused(reason);
    }

    pub(crate) fn refused(&self, reason: &str) {
        self.counters.add_received(1);
        self.counters.add_rejected();
        self.log_rejected(reason);
    }

    /// Logs rejected input as message 41007: a warning at most every 10 s per source, else at
    /// debug level.
    fn log_rejected(&self, detail: &str) {
        let number = messages::INPUT_REJECTED.number;
        let render = || messages::INPUT_REJECTED.render(&[("source", &self.name), ("detail", &detail)]);
        match self.warns.allow() {
            Some(held_back) => tracing::warn!(number, held_back, "{}", render()),
            None => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(number, "{}", render());
                }
            }
        }
    }

    /// Delivers a batch, retrying with backoff (100 ms doubling to 5 s) until it is committed
    /// or shutdown is asked for. An attempt under way is always awaited.
    pub(crate) async fn deliver(
        &self,
        detections: Vec<Detection>,
        checkpoint: Option<Checkpoint>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Delivered {
        let n = detections.len() as u64;
        let batch = Batch { source: self.name.clone(), detections, checkpoint };
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.sink.deliver(batch.clone()).await {
                Ok(()) => {
                    self.counters.add_accepted(n);
                    return Delivered::Yes;
                }
                Err(e) => {
                    self.counters.add_delivery_failure();
                    limited_warn!(self, error = %e, retry_in_ms = backoff.as_millis() as u64, "delivery failed");
                }
            }
            tokio::select! {
                biased;
                () = shutdown_requested(shutdown) => return Delivered::ShutDown,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One attempt, no retry (at shutdown, for what is not urgent).
    pub(crate) async fn deliver_once(&self, checkpoint: Checkpoint) -> bool {
        let batch = Batch { source: self.name.clone(), detections: Vec::new(), checkpoint: Some(checkpoint) };
        match self.sink.deliver(batch).await {
            Ok(()) => true,
            Err(e) => {
                self.counters.add_delivery_failure();
                limited_warn!(self, error = %e, "delivery failed at shutdown");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, SinkError};

    #[derive(Debug)]
    struct NullSink;

    #[async_trait::async_trait]
    impl DetectionSink for NullSink {
        async fn deliver(&self, _: Batch) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[test]
    fn one_warning_per_ten_seconds() {
        let w = WarnLimiter::default();
        assert_eq!(w.allow(), Some(0));
        assert_eq!(w.allow(), None);
        assert_eq!(w.allow(), None);
        // As if the last warning were older.
        *w.last.lock().unwrap() = Instant::now().checked_sub(WARN_EVERY);
        assert_eq!(w.allow(), Some(2));
        assert_eq!(w.allow(), None);
    }

    #[test]
    fn a_panicking_parser_costs_one_line() {
        let parser: Parser = Arc::new(|bytes: &[u8], _: &cordon_ingest::Context<'_>| {
            assert!(bytes != b"boom", "parser bug");
            Parsed::Skipped { kind: "ok".to_owned() }
        });
        let counters = Arc::new(SourceCounters::default());
        let core = Core::new("s".to_owned(), parser, Arc::new(NullSink), counters.clone());
        assert!(core.parse(b"boom", 0).is_none());
        assert!(core.parse(b"fine", 0).is_none());
        let s = counters.snapshot();
        assert_eq!((s.received, s.rejected, s.skipped), (2, 1, 1));
    }
}
