//! The in-process GCRA backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Decision, Quota, ceil_millis};

/// Minimum number of checks between two pruning passes.
const PRUNE_EVERY: usize = 1024;

/// An in-process GCRA rate limiter.
///
/// Stores one theoretical arrival time per key in a mutex-protected map.
/// Entries whose TAT has passed carry no information (they behave exactly
/// like absent keys) and are pruned every 1024 checks — or, when `n > 1024`
/// entries survived the last pass, every `n` checks, keeping pruning
/// amortised O(1). The map thus holds at most about twice the number of keys
/// whose TAT is still in the future, plus 1024.
///
/// Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct MemoryRateLimiter {
    state: Arc<Mutex<State>>,
}

struct State {
    /// Theoretical arrival time per key.
    tats: HashMap<String, Instant>,
    /// Checks since the last pruning pass.
    checks_since_prune: usize,
    /// Checks between pruning passes: the number of entries that survived the
    /// last pass, but at least [`PRUNE_EVERY`].
    prune_interval: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            tats: HashMap::new(),
            checks_since_prune: 0,
            prune_interval: PRUNE_EVERY,
        }
    }
}

impl MemoryRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request for `key` against `quota` at time `now`.
    ///
    /// `now` should be `Instant::now()` in production; tests pass a synthetic
    /// clock. Zero fields in `quota` are treated as 1 (use
    /// [`RateLimiter::check`](super::RateLimiter::check) to reject them).
    pub fn check_at(&self, key: &str, quota: Quota, now: Instant) -> Decision {
        let interval = quota.emission_interval();
        let tolerance = quota.tolerance();

        let mut state = self.lock();
        state.checks_since_prune += 1;
        if state.checks_since_prune >= state.prune_interval {
            state.tats.retain(|_, tat| *tat > now);
            state.checks_since_prune = 0;
            state.prune_interval = state.tats.len().max(PRUNE_EVERY);
        }

        // How far the TAT lies ahead of `now` (zero if absent or in the past).
        let ahead = state
            .tats
            .get(key)
            .map_or(Duration::ZERO, |tat| tat.saturating_duration_since(now));
        if ahead > tolerance {
            return Decision::Limited {
                retry_after: ceil_millis(ahead - tolerance),
            };
        }

        let new_tat = now + ahead + interval;
        match state.tats.get_mut(key) {
            Some(tat) => *tat = new_tat,
            None => {
                state.tats.insert(key.to_owned(), new_tat);
            }
        }
        drop(state);

        let remaining = (tolerance - ahead).as_nanos() / interval.as_nanos();
        Decision::Allowed {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        }
    }

    /// Counts one request for `key` against `quota` now.
    pub fn check(&self, key: &str, quota: Quota) -> Decision {
        self.check_at(key, quota, Instant::now())
    }

    /// Number of keys currently tracked (including not yet pruned stale ones).
    pub fn len(&self) -> usize {
        self.lock().tats.len()
    }

    /// Whether no keys are tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The map is valid after any panic (every update is a single write),
        // so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("MemoryRateLimiter");
        match self.state.try_lock() {
            Ok(state) => s.field("keys", &state.tats.len()),
            Err(_) => s.field("keys", &"<locked>"),
        };
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fresh_key_gets_full_burst() {
        let limiter = MemoryRateLimiter::new();
        let now = Instant::now();
        assert_eq!(
            limiter.check_at("a", Quota::new(60, 3), now),
            Decision::Allowed { remaining: 2 }
        );
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn limited_requests_do_not_move_the_tat() {
        let limiter = MemoryRateLimiter::new();
        let quota = Quota::new(60, 1);
        let t0 = Instant::now();
        assert!(limiter.check_at("a", quota, t0).is_allowed());
        for i in 1..10 {
            assert_eq!(
                limiter.check_at("a", quota, t0 + i * 100 * MS),
                Decision::Limited {
                    retry_after: Duration::from_secs(1) - i * 100 * MS
                }
            );
        }
        assert!(limiter.check_at("a", quota, t0 + 1000 * MS).is_allowed());
    }

    #[test]
    fn pruning_drops_only_expired_entries() {
        let limiter = MemoryRateLimiter::new();
        let quota = Quota::per_minute(60); // T = 1 s
        let t0 = Instant::now();
        for i in 0..PRUNE_EVERY - 1 {
            limiter.check_at(&format!("old{i}"), quota, t0);
        }
        assert_eq!(limiter.len(), PRUNE_EVERY - 1);
        // The next check (the 1024th) prunes before counting: at t0 + 1 s
        // every old TAT (t0 + 1 s) has passed.
        let t1 = t0 + Duration::from_secs(1);
        limiter.check_at("fresh", quota, t1);
        assert_eq!(limiter.len(), 1);
        // A still-relevant entry survives pruning.
        for i in 0..PRUNE_EVERY {
            limiter.check_at(&format!("new{i}"), quota, t1);
        }
        assert_eq!(limiter.len(), PRUNE_EVERY + 1);
        assert_eq!(
            limiter.check_at("fresh", quota, t1),
            Decision::Allowed { remaining: 58 }
        );
    }

    #[test]
    fn debug_does_not_dump_keys() {
        let limiter = MemoryRateLimiter::new();
        limiter.check_at("secret-ip", Quota::per_minute(1), Instant::now());
        let s = format!("{limiter:?}");
        assert_eq!(s, "MemoryRateLimiter { keys: 1 }");
    }
}
