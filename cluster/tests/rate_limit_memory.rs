//! The in-process GCRA limiter on a synthetic clock.

use std::time::{Duration, Instant};

use veza_cluster::{Decision, MemoryRateLimiter, Quota, RateLimiter};

const MS: Duration = Duration::from_millis(1);

fn retry_after(d: Decision) -> Duration {
    match d {
        Decision::Limited { retry_after } => retry_after,
        Decision::Allowed { .. } => panic!("expected Limited, got {d:?}"),
    }
}

#[test]
fn burst_is_allowed_then_limited() {
    let limiter = MemoryRateLimiter::new();
    let quota = Quota::per_minute(5); // T = 12 s, burst 5
    let t0 = Instant::now();
    for expected in (0..5).rev() {
        assert_eq!(
            limiter.check_at("k", quota, t0),
            Decision::Allowed {
                remaining: expected
            }
        );
    }
    let wait = retry_after(limiter.check_at("k", quota, t0));
    assert_eq!(wait, Duration::from_secs(12));
    // Still limited, not counted: a little later the wait is shorter.
    let wait = retry_after(limiter.check_at("k", quota, t0 + 2500 * MS));
    assert_eq!(wait, Duration::from_millis(9500));
}

#[test]
fn retry_after_is_accurate_and_never_zero() {
    let limiter = MemoryRateLimiter::new();
    let quota = Quota::new(7, 2); // T = 8.571428572 s
    let t0 = Instant::now();
    assert!(limiter.check_at("k", quota, t0).is_allowed());
    assert!(limiter.check_at("k", quota, t0).is_allowed());
    let now = t0 + Duration::from_micros(1234);
    let wait = retry_after(limiter.check_at("k", quota, now));
    let exact = quota.emission_interval() - Duration::from_micros(1234);
    assert!(wait >= exact && wait - exact < MS, "{wait:?} vs {exact:?}");
    assert_eq!(wait.subsec_nanos() % 1_000_000, 0, "whole milliseconds");

    // Right before the TAT allows another request, the wait rounds up to 1 ms.
    let just_before = t0 + quota.emission_interval() - Duration::from_nanos(1);
    assert_eq!(retry_after(limiter.check_at("k", quota, just_before)), MS);
    // Waiting exactly `retry_after` is enough.
    assert!(limiter.check_at("k", quota, now + wait).is_allowed());
}

#[test]
fn refills_one_request_per_interval() {
    let limiter = MemoryRateLimiter::new();
    let quota = Quota::new(600, 3); // T = 100 ms
    let t0 = Instant::now();
    for _ in 0..3 {
        assert!(limiter.check_at("k", quota, t0).is_allowed());
    }
    assert!(!limiter.check_at("k", quota, t0).is_allowed());

    // After one interval exactly one more request fits.
    let t1 = t0 + 100 * MS;
    assert_eq!(
        limiter.check_at("k", quota, t1),
        Decision::Allowed { remaining: 0 }
    );
    assert_eq!(retry_after(limiter.check_at("k", quota, t1)), 100 * MS);

    // Steady state: one request per interval keeps being allowed.
    for i in 2..20 {
        assert!(limiter.check_at("k", quota, t0 + i * 100 * MS).is_allowed());
    }

    // After a long quiet period the full burst is back, but not more.
    let later = t0 + Duration::from_secs(60);
    assert_eq!(
        limiter.check_at("k", quota, later),
        Decision::Allowed { remaining: 2 }
    );
}

#[test]
fn partial_refill_restores_remaining() {
    let limiter = MemoryRateLimiter::new();
    let quota = Quota::new(60, 10); // T = 1 s
    let t0 = Instant::now();
    for _ in 0..10 {
        limiter.check_at("k", quota, t0);
    }
    // 3.5 s later, 3 requests have been earned back; this one uses one.
    assert_eq!(
        limiter.check_at("k", quota, t0 + 3500 * MS),
        Decision::Allowed { remaining: 2 }
    );
}

#[test]
fn different_keys_are_independent() {
    let limiter = MemoryRateLimiter::new();
    let quota = Quota::per_minute(2);
    let t0 = Instant::now();
    assert!(limiter.check_at("alice", quota, t0).is_allowed());
    assert!(limiter.check_at("alice", quota, t0).is_allowed());
    assert!(!limiter.check_at("alice", quota, t0).is_allowed());
    assert_eq!(
        limiter.check_at("bob", quota, t0),
        Decision::Allowed { remaining: 1 }
    );
    // Clones share state; new limiters do not.
    assert!(!limiter.clone().check_at("alice", quota, t0).is_allowed());
    assert!(
        MemoryRateLimiter::new()
            .check_at("alice", quota, t0)
            .is_allowed()
    );
}

#[test]
fn burst_smaller_and_larger_than_rate() {
    let limiter = MemoryRateLimiter::new();
    let t0 = Instant::now();
    // 120/min (T = 500 ms) with burst 1: strictly spaced.
    let strict = Quota::new(120, 1);
    assert_eq!(
        limiter.check_at("s", strict, t0),
        Decision::Allowed { remaining: 0 }
    );
    assert_eq!(retry_after(limiter.check_at("s", strict, t0)), 500 * MS);
    // 1/min with burst 3.
    let bursty = Quota::new(1, 3);
    for _ in 0..3 {
        assert!(limiter.check_at("b", bursty, t0).is_allowed());
    }
    assert_eq!(
        retry_after(limiter.check_at("b", bursty, t0)),
        Duration::from_secs(60)
    );
}

#[test]
fn pruning_keeps_map_bounded() {
    let limiter = MemoryRateLimiter::new();
    let quota = Quota::per_minute(60); // T = 1 s: each key is relevant for 1 s
    let t0 = Instant::now();
    // 100 000 distinct keys, one per millisecond: ~1000 are live at a time.
    let mut max_len = 0;
    for i in 0..100_000u32 {
        let now = t0 + i * MS;
        assert!(
            limiter
                .check_at(&format!("ip-{i}"), quota, now)
                .is_allowed()
        );
        max_len = max_len.max(limiter.len());
    }
    assert!(max_len <= 3 * 1024, "map grew to {max_len} entries");

    // Long after, traffic on a single key drains every stale entry.
    let later = t0 + Duration::from_secs(1000);
    for i in 0..1024u32 {
        limiter.check_at("one", quota, later + i * Duration::from_secs(1));
    }
    assert_eq!(limiter.len(), 1);
}

#[tokio::test]
async fn rate_limiter_memory_check_uses_real_clock() {
    let limiter = RateLimiter::memory();
    let quota = Quota::new(600, 1); // T = 100 ms
    assert_eq!(
        limiter.check("k", quota).await.unwrap(),
        Decision::Allowed { remaining: 0 }
    );
    let wait = retry_after(limiter.check("k", quota).await.unwrap());
    assert!(wait > 90 * MS && wait <= 100 * MS, "{wait:?}");
    tokio::time::sleep(wait).await;
    assert!(limiter.check("k", quota).await.unwrap().is_allowed());
}
