//! GCRA (generic cell rate algorithm) rate limiting.
//!
//! A [`Quota`] of `per_minute` requests with a `burst` defines the *emission
//! interval* `T = 60 s / per_minute` and the *tolerance* `τ = T · (burst − 1)`.
//! For every key the limiter stores one timestamp, the *theoretical arrival
//! time* (TAT). A request arriving at `now` is allowed when
//! `TAT − now ≤ τ` (with `TAT` taken as `now` when it lies in the past), after
//! which `TAT` becomes `max(TAT, now) + T`. In effect `burst` requests may
//! arrive at once, then one more every `T`.
//!
//! Two backends implement this: [`MemoryRateLimiter`] (in-process) and
//! [`RedisRateLimiter`] (shared by all nodes). [`RateLimiter`] wraps either.

mod memory;
mod redis_store;

use std::time::Duration;

pub use memory::MemoryRateLimiter;
pub use redis_store::RedisRateLimiter;

use crate::ClusterError;

/// A GCRA quota: `per_minute` requests per minute, with bursts of up to `burst`.
///
/// Both fields must be at least 1; [`RateLimiter::check`] rejects other
/// quotas with [`ClusterError::InvalidQuota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Sustained rate: requests allowed per minute.
    pub per_minute: u32,
    /// How many requests may arrive at once (after a quiet period).
    pub burst: u32,
}

impl Quota {
    /// `n` requests per minute, all of which may arrive at once (`burst = n`).
    pub fn per_minute(n: u32) -> Quota {
        Quota {
            per_minute: n,
            burst: n,
        }
    }

    /// `per_minute` requests per minute with bursts of up to `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Quota {
        Quota { per_minute, burst }
    }

    /// The same rate with a different burst size.
    #[must_use]
    pub fn with_burst(self, burst: u32) -> Quota {
        Quota { burst, ..self }
    }

    /// Whether both `per_minute` and `burst` are at least 1.
    pub fn is_valid(&self) -> bool {
        self.per_minute > 0 && self.burst > 0
    }

    /// The emission interval `T = 60 s / per_minute` (rounded up to whole
    /// nanoseconds): the steady-state time between two allowed requests.
    /// A zero `per_minute` is treated as 1.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(60_000_000_000u64.div_ceil(u64::from(self.per_minute.max(1))))
    }

    /// The emission interval in whole microseconds (rounded up, at least 1),
    /// as used by the Redis backend.
    fn emission_interval_micros(&self) -> u64 {
        60_000_000u64
            .div_ceil(u64::from(self.per_minute.max(1)))
            .max(1)
    }

    /// The tolerance `τ = T · (burst − 1)`. A zero `burst` is treated as 1.
    fn tolerance(&self) -> Duration {
        self.emission_interval()
            .saturating_mul(self.burst.max(1) - 1)
    }
}

/// The outcome of counting one request against a [`Quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed; `remaining` more requests would be allowed
    /// right now.
    Allowed {
        /// Requests that would still be allowed immediately after this one.
        remaining: u32,
    },
    /// The request must be rejected (HTTP 429). It was not counted.
    Limited {
        /// Time until the next request would be allowed; never zero and
        /// rounded up to whole milliseconds.
        retry_after: Duration,
    },
}

impl Decision {
    /// `true` for [`Decision::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// A rate limiter with either an in-process or a Redis backend.
///
/// Cheap to clone (`Arc` inside); shared by all request handlers.
#[derive(Clone, Debug)]
pub enum RateLimiter {
    /// In-process limiter; each node has its own budget.
    Memory(MemoryRateLimiter),
    /// Redis-backed limiter; all nodes using the same Redis and key prefix
    /// share one budget per key.
    Redis(RedisRateLimiter),
}

impl RateLimiter {
    /// An in-process limiter.
    pub fn memory() -> Self {
        RateLimiter::Memory(MemoryRateLimiter::new())
    }

    /// Connects to Redis at `url` (through a `ConnectionManager`, so it
    /// reconnects after failures) and loads the GCRA script. Keys are stored
    /// as `{key_prefix}{key}`.
    ///
    /// Fails if Redis is unreachable. Requires Redis ≥ 3.2 (the script calls
    /// `redis.replicate_commands()` where needed; on Redis ≥ 5 that is a no-op).
    pub async fn redis(url: &str, key_prefix: &str) -> Result<Self, ClusterError> {
        Ok(RateLimiter::Redis(
            RedisRateLimiter::connect(url, key_prefix).await?,
        ))
    }

    /// Counts one request for `key` against `quota`.
    ///
    /// Limited requests are not counted. Returns
    /// [`ClusterError::InvalidQuota`] for a quota with a zero field and
    /// [`ClusterError::Redis`] if the Redis backend fails.
    pub async fn check(&self, key: &str, quota: Quota) -> Result<Decision, ClusterError> {
        if !quota.is_valid() {
            return Err(ClusterError::InvalidQuota(quota));
        }
        match self {
            RateLimiter::Memory(limiter) => Ok(limiter.check(key, quota)),
            RateLimiter::Redis(limiter) => limiter.check(key, quota).await,
        }
    }
}

/// Rounds `d` up to whole milliseconds (so a positive duration is at least 1 ms).
fn ceil_millis(d: Duration) -> Duration {
    let millis = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_constructors() {
        assert_eq!(
            Quota::per_minute(10),
            Quota {
                per_minute: 10,
                burst: 10
            }
        );
        assert_eq!(Quota::new(10, 3), Quota::per_minute(10).with_burst(3));
        assert!(Quota::per_minute(1).is_valid());
        assert!(!Quota::per_minute(0).is_valid());
        assert!(!Quota::new(5, 0).is_valid());
    }

    #[test]
    fn emission_interval_and_tolerance() {
        let q = Quota::new(600, 5);
        assert_eq!(q.emission_interval(), Duration::from_millis(100));
        assert_eq!(q.emission_interval_micros(), 100_000);
        assert_eq!(q.tolerance(), Duration::from_millis(400));
        assert_eq!(
            Quota::per_minute(1).emission_interval(),
            Duration::from_secs(60)
        );
        assert_eq!(Quota::per_minute(1).tolerance(), Duration::ZERO);
        // Rounds up rather than allowing more than the quota.
        assert_eq!(
            Quota::per_minute(7).emission_interval(),
            Duration::from_nanos(8_571_428_572)
        );
        // Extreme rates stay positive.
        assert!(Quota::per_minute(u32::MAX).emission_interval() > Duration::ZERO);
        assert_eq!(Quota::per_minute(u32::MAX).emission_interval_micros(), 1);
        // Zero fields are clamped rather than dividing by zero.
        assert_eq!(
            Quota::new(0, 0).emission_interval(),
            Duration::from_secs(60)
        );
        assert_eq!(Quota::new(0, 0).tolerance(), Duration::ZERO);
    }

    #[test]
    fn ceil_millis_rounds_up() {
        assert_eq!(ceil_millis(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            ceil_millis(Duration::from_nanos(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            ceil_millis(Duration::from_millis(5)),
            Duration::from_millis(5)
        );
        assert_eq!(
            ceil_millis(Duration::from_micros(5_001)),
            Duration::from_millis(6)
        );
    }

    #[tokio::test]
    async fn check_rejects_invalid_quota() {
        let limiter = RateLimiter::memory();
        for quota in [Quota::per_minute(0), Quota::new(10, 0)] {
            match limiter.check("k", quota).await {
                Err(ClusterError::InvalidQuota(q)) => assert_eq!(q, quota),
                other => panic!("expected InvalidQuota, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn memory_variant_counts_requests() {
        let limiter = RateLimiter::memory();
        let quota = Quota::new(60, 2);
        assert_eq!(
            limiter.check("k", quota).await.unwrap(),
            Decision::Allowed { remaining: 1 }
        );
        assert_eq!(
            limiter.check("k", quota).await.unwrap(),
            Decision::Allowed { remaining: 0 }
        );
        assert!(!limiter.check("k", quota).await.unwrap().is_allowed());
        // Clones share state.
        assert!(
            !limiter
                .clone()
                .check("k", quota)
                .await
                .unwrap()
                .is_allowed()
        );
    }
}
