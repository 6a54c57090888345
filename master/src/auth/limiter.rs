//! Failed sign-ins, counted per account and per client address over a sliding window; past the
//! configured number, further attempts are refused (429) until the oldest failure leaves the
//! window, even with the right password. Kept in memory: a restart forgets them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Keys with this many entries are dropped oldest-first when the map grows past it.
const MAX_KEYS: usize = 100_000;

impl Limiter {
    /// `Err(seconds to wait)` when `key` has `limit` failures within `window`.
    pub fn check(&self, key: &str, limit: u32, window: Duration) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = map.get_mut(key) else {
            return Ok(());
        };
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() as u32 >= limit {
            let oldest = *q.front().unwrap_or(&now);
            let wait = window.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        Ok(())
    }

    /// Counts an attempt for `key` before it is judged, unless `key` is already at `limit`
    /// (then `Err(seconds to wait)`): parallel attempts cannot all pass a check made before
    /// any of them failed. A successful attempt is taken back with [`Limiter::succeeded`].
    pub fn attempt(&self, key: &str, limit: u32, window: Duration) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(q) = map.get_mut(key) {
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            if q.len() as u32 >= limit {
                let oldest = *q.front().unwrap_or(&now);
                return Err(window
                    .saturating_sub(now.duration_since(oldest))
                    .as_secs()
                    .max(1));
            }
        }
        drop(map);
        self.failed(key);
        Ok(())
    }

    /// Takes back the newest attempt counted for `key` (it succeeded).
    pub fn succeeded(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = map.get_mut(key) {
            q.pop_back();
        }
    }

    pub fn failed(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let now = Instant::now();
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(3600))
            });
        }
        let q = map.entry(key.to_string()).or_default();
        q.push_back(Instant::now());
        while q.len() > 1000 {
            q.pop_front();
        }
    }

    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_and_clears() {
        let l = Limiter::default();
        let w = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.check("u:alice", 3, w).is_ok());
            l.failed("u:alice");
        }
        let wait = l.check("u:alice", 3, w).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.check("u:bob", 3, w).is_ok());
        l.clear("u:alice");
        assert!(l.check("u:alice", 3, w).is_ok());
    }

    #[test]
    fn attempts_count_before_they_are_judged() {
        let l = Limiter::default();
        let w = Duration::from_secs(60);
        // Five attempts in flight at once: the sixth is refused before any was judged.
        for _ in 0..5 {
            assert!(l.attempt("u:x", 5, w).is_ok());
        }
        assert!(l.attempt("u:x", 5, w).is_err());
        l.succeeded("u:x");
        assert!(l.attempt("u:x", 5, w).is_ok());
    }

    #[test]
    fn failures_leave_the_window() {
        let l = Limiter::default();
        l.failed("a");
        assert!(l.check("a", 1, Duration::from_millis(0)).is_ok());
    }
}
