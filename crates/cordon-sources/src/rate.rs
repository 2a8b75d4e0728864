//! Per-source rate limits (`max_rate` events per second): a token bucket holding one second's
//! worth of events.
//!
//! Datagram and HTTP senders over the limit are refused at once and counted
//! (`cordon_source_denied_total{reason="rate_limit"}`): UDP has no back channel, and an HTTP
//! sender gets `429` and retries. Stream senders (TCP, Unix sockets) are slowed instead: the
//! source stops reading until the bucket refills, and TCP's flow control pushes back on the
//! sender, so nothing is lost.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May go below zero: a stream reader that took more than there was waits it off.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// At most `per_second` events per second on average, bursts up to one second's worth.
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        RateLimiter { per_second, state: Mutex::new(Bucket { tokens: per_second, last: Instant::now() }) }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second as u32
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, Bucket> {
        // A panic while holding the lock leaves a consistent bucket (two floats).
        let mut bucket = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.per_second);
        bucket.last = now;
        bucket
    }

    /// Takes `n` events if the bucket holds them now; else takes nothing.
    pub fn try_take(&self, n: u64) -> bool {
        self.try_take_at(n, Instant::now())
    }

    fn try_take_at(&self, n: u64, now: Instant) -> bool {
        let mut bucket = self.refilled(now);
        let n = n as f64;
        if bucket.tokens >= n {
            bucket.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` events whatever the bucket holds and says how long the taker must wait before
    /// reading more (zero while within the limit).
    pub fn take_and_wait(&self, n: u64) -> Duration {
        self.take_and_wait_at(n, Instant::now())
    }

    fn take_and_wait_at(&self, n: u64, now: Instant) -> Duration {
        let mut bucket = self.refilled(now);
        bucket.tokens -= n as f64;
        if bucket.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-bucket.tokens / self.per_second) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let limiter = RateLimiter::new(100);
        let start = Instant::now();
        assert!(limiter.try_take_at(100, start));
        assert!(!limiter.try_take_at(1, start), "the burst is spent");
        assert!(!limiter.try_take_at(20, start + Duration::from_millis(100)), "10 refilled, not 20");
        assert!(limiter.try_take_at(10, start + Duration::from_millis(100)));
        assert!(limiter.try_take_at(100, start + Duration::from_secs(10)), "refills to one second's worth");
        assert!(!limiter.try_take_at(1, start + Duration::from_secs(10)), "not more");
    }

    #[test]
    fn a_stream_reader_over_the_limit_waits_it_off() {
        let limiter = RateLimiter::new(100);
        let start = Instant::now();
        assert_eq!(limiter.take_and_wait_at(50, start), Duration::ZERO);
        let wait = limiter.take_and_wait_at(150, start);
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9, "100 events over: a second at 100/s, got {wait:?}");
        assert_eq!(limiter.take_and_wait_at(0, start + Duration::from_secs(1)), Duration::ZERO);
    }
}
