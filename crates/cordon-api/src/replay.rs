//! Signed webhook requests are accepted once: a signature seen before, while its timestamp is
//! still within the allowed skew, is a replay.
//!
//! Bounded: entries leave when their timestamp falls out of the skew window (after which the
//! skew check refuses the request anyway), and the set never holds more than `capacity`
//! signatures; when it is full of live entries, new signed requests are refused (and counted)
//! rather than letting an old signature be forgotten and replayed.
//!
//! Per process: with several instances, each keeps its own set (docs/security.md says so).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// What the guard says about a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First time seen: remembered until its timestamp leaves the window.
    Fresh,
    /// Seen before: refuse.
    Replay,
    /// Too many live signatures remembered: refuse (counted as a rate limit).
    Full,
}

#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    inner: Mutex<Seen>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(ReplayGuard::DEFAULT_CAPACITY)
    }
}

#[derive(Debug, Default)]
struct Seen {
    signatures: HashSet<[u8; 32]>,
    /// (the time the entry may be forgotten, the signature), in insertion order. Timestamps
    /// of accepted requests are within ±skew of the clock, so this is ordered to within
    /// 2 × skew; [`ReplayGuard::check`] only pops from the front while the front has expired,
    /// which may keep a few expired entries a little longer, never forget a live one early.
    expiries: VecDeque<(i64, [u8; 32])>,
}

impl ReplayGuard {
    pub const DEFAULT_CAPACITY: usize = 1_000_000;

    pub fn new(capacity: usize) -> Self {
        ReplayGuard { capacity, inner: Mutex::new(Seen::default()) }
    }

    /// Checks and remembers `signature` (already verified, its timestamp already within the
    /// skew) whose signed timestamp is `timestamp_secs`, at `now_secs`.
    pub fn check(&self, signature: [u8; 32], timestamp_secs: i64, now_secs: i64, skew_secs: i64) -> Verdict {
        // A panic while holding the lock cannot leave the set inconsistent with the queue in a
        // way that matters (at worst an entry is remembered a little longer).
        let mut seen = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while seen.expiries.front().is_some_and(|(until, _)| *until < now_secs) {
            if let Some((_, old)) = seen.expiries.pop_front() {
                seen.signatures.remove(&old);
            }
        }
        if seen.signatures.contains(&signature) {
            return Verdict::Replay;
        }
        if seen.signatures.len() >= self.capacity {
            return Verdict::Full;
        }
        seen.signatures.insert(signature);
        let until = timestamp_secs.saturating_add(skew_secs.max(0)).max(now_secs);
        seen.expiries.push_back((until, signature));
        Verdict::Fresh
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().signatures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn a_signature_is_accepted_once_within_the_window() {
        let guard = ReplayGuard::new(10);
        assert_eq!(guard.check(sig(1), 1000, 1000, 300), Verdict::Fresh);
        assert_eq!(guard.check(sig(1), 1000, 1200, 300), Verdict::Replay);
        assert_eq!(guard.check(sig(2), 1000, 1200, 300), Verdict::Fresh);
    }

    #[test]
    fn entries_leave_once_the_skew_check_would_refuse_them() {
        let guard = ReplayGuard::new(10);
        guard.check(sig(1), 1000, 1000, 300);
        // At 1301 the timestamp 1000 is more than 300 s old: the skew check refuses it, so the
        // guard may forget it.
        assert_eq!(guard.check(sig(2), 1301, 1301, 300), Verdict::Fresh);
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn a_full_guard_refuses_instead_of_forgetting() {
        let guard = ReplayGuard::new(2);
        assert_eq!(guard.check(sig(1), 1000, 1000, 300), Verdict::Fresh);
        assert_eq!(guard.check(sig(2), 1000, 1000, 300), Verdict::Fresh);
        assert_eq!(guard.check(sig(3), 1000, 1000, 300), Verdict::Full);
        assert_eq!(guard.check(sig(1), 1000, 1000, 300), Verdict::Replay);
        assert_eq!(guard.check(sig(3), 1400, 1400, 300), Verdict::Fresh, "room again once the old ones expired");
    }
}
