//! Per-user token buckets: `burst` messages at once, then `rate` per second. Sans-IO: every
//! call takes `now`, so tests drive a virtual clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use veza_proto::UserId;

/// Minimum number of checks between two pruning passes.
const PRUNE_EVERY: usize = 1024;

/// Token buckets by user, in a bounded map: a bucket that has refilled to `burst` behaves
/// exactly like a missing one, so such buckets are dropped every 1024 checks (or every `n`
/// checks when `n` buckets survived the last pass, which keeps pruning amortised O(1)). The map
/// holds at most about twice the number of users who sent a message in the last
/// `burst / rate` seconds, plus 1024.
#[derive(Debug)]
pub(crate) struct TokenBuckets {
    rate: f64,
    burst: f64,
    buckets: HashMap<UserId, Bucket>,
    checks_since_prune: usize,
    prune_interval: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl TokenBuckets {
    /// `rate` tokens per second, at most `burst` stored (zeroes count as one).
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            checks_since_prune: 0,
            prune_interval: PRUNE_EVERY,
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.burst)
    }

    /// Takes a token from `user`'s bucket, or says how long until one is there. A refused
    /// attempt takes nothing.
    pub(crate) fn take(&mut self, user: UserId, now: Instant) -> Result<(), Duration> {
        self.checks_since_prune += 1;
        if self.checks_since_prune >= self.prune_interval {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            self.checks_since_prune = 0;
            self.prune_interval = self.buckets.len().max(PRUNE_EVERY);
        }
        let tokens = match self.buckets.get(&user) {
            Some(bucket) => self.refilled(*bucket, now),
            None => self.burst,
        };
        if tokens < 1.0 {
            // Rounded up to the millisecond, so a client that waits this long gets in.
            let wait = (1.0 - tokens) / self.rate;
            return Err(Duration::from_millis((wait * 1000.0).ceil() as u64));
        }
        self.buckets.insert(
            user,
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_rate() {
        let mut buckets = TokenBuckets::new(5, 10);
        let (alice, bob) = (UserId::new(), UserId::new());
        let t0 = Instant::now();
        for _ in 0..10 {
            buckets.take(alice, t0).expect("within the burst");
        }
        let wait = buckets.take(alice, t0).expect_err("burst used up");
        assert_eq!(wait, 200 * MS, "one token every 200 ms");
        buckets.take(bob, t0).expect("users have their own buckets");
        // Refused attempts take nothing: after 200 ms exactly one more is allowed.
        assert!(buckets.take(alice, t0 + 100 * MS).is_err());
        buckets.take(alice, t0 + 200 * MS).expect("refilled one");
        assert!(buckets.take(alice, t0 + 200 * MS).is_err());
        // A quiet spell refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..10 {
            buckets.take(alice, later).expect("burst again");
        }
        assert!(buckets.take(alice, later).is_err());
    }

    #[test]
    fn zero_settings_count_as_one() {
        let mut buckets = TokenBuckets::new(0, 0);
        let user = UserId::new();
        let t0 = Instant::now();
        buckets.take(user, t0).expect("one");
        assert_eq!(buckets.take(user, t0), Err(Duration::from_secs(1)));
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut buckets = TokenBuckets::new(5, 10);
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            // Every user sends once; their buckets are full again 200 ms later.
            buckets
                .take(UserId::new(), t0 + Duration::from_millis(i))
                .expect("first message");
        }
        assert!(
            buckets.len() <= 2 * 200 + PRUNE_EVERY,
            "{} buckets kept",
            buckets.len()
        );
    }
}
