//! The Redis GCRA limiter against a real Redis.
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`). These tests fail, not
//! skip, when Redis is unreachable: CI starts Redis. Every test uses its own
//! random key prefix so tests can run concurrently and repeatedly.

use std::time::Duration;

use redis::AsyncCommands;
use veza_cluster::{ClusterError, Decision, Quota, RateLimiter};

const MS: Duration = Duration::from_millis(1);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique_prefix() -> String {
    format!("veza-test:{}:", uuid::Uuid::new_v4())
}

async fn limiter(prefix: &str) -> RateLimiter {
    let url = redis_url();
    RateLimiter::redis(&url, prefix)
        .await
        .unwrap_or_else(|e| panic!("Redis must be reachable at {url} for these tests: {e}"))
}

async fn raw_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must be reachable")
}

fn retry_after(d: Decision) -> Duration {
    match d {
        Decision::Limited { retry_after } => retry_after,
        Decision::Allowed { .. } => panic!("expected Limited, got {d:?}"),
    }
}

#[tokio::test]
async fn burst_then_limited() {
    let prefix = unique_prefix();
    let limiter = limiter(&prefix).await;
    let quota = Quota::per_minute(5); // T = 12 s, burst 5
    for expected in (0..5).rev() {
        assert_eq!(
            limiter.check("user:1", quota).await.unwrap(),
            Decision::Allowed {
                remaining: expected
            }
        );
    }
    for _ in 0..3 {
        let wait = retry_after(limiter.check("user:1", quota).await.unwrap());
        // ~12 s minus the few ms the test has taken so far.
        assert!(
            wait > Duration::from_secs(11) && wait <= Duration::from_secs(12),
            "{wait:?}"
        );
        assert_eq!(wait.subsec_nanos() % 1_000_000, 0, "whole milliseconds");
    }
    // Other keys are unaffected.
    assert_eq!(
        limiter.check("user:2", quota).await.unwrap(),
        Decision::Allowed { remaining: 4 }
    );
}

#[tokio::test]
async fn two_nodes_share_one_budget() {
    let prefix = unique_prefix();
    let node_a = limiter(&prefix).await;
    let node_b = limiter(&prefix).await;
    let quota = Quota::new(60, 4);
    let mut remaining = Vec::new();
    for node in [&node_a, &node_b, &node_a, &node_b] {
        match node.check("ip:203.0.113.7", quota).await.unwrap() {
            Decision::Allowed { remaining: r } => remaining.push(r),
            d => panic!("unexpected {d:?}"),
        }
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    assert!(
        !node_a
            .check("ip:203.0.113.7", quota)
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(
        !node_b
            .check("ip:203.0.113.7", quota)
            .await
            .unwrap()
            .is_allowed()
    );

    // A node with a different prefix has its own budget.
    let other = limiter(&unique_prefix()).await;
    assert!(
        other
            .check("ip:203.0.113.7", quota)
            .await
            .unwrap()
            .is_allowed()
    );
}

#[tokio::test]
async fn concurrent_checks_from_two_nodes_are_atomic() {
    let prefix = unique_prefix();
    let nodes = [limiter(&prefix).await, limiter(&prefix).await];
    let quota = Quota::new(60, 10);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let node = nodes[i % 2].clone();
        tasks.spawn(async move { node.check("hot", quota).await.unwrap() });
    }
    let mut allowed = 0;
    while let Some(d) = tasks.join_next().await {
        if d.unwrap().is_allowed() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
}

#[tokio::test]
async fn keys_expire_when_no_longer_relevant() {
    let prefix = unique_prefix();
    let limiter = limiter(&prefix).await;
    let mut conn = raw_connection().await;

    // 60/min, burst 3: after three requests the TAT is ~3 s ahead.
    let quota = Quota::new(60, 3);
    for _ in 0..3 {
        limiter.check("k", quota).await.unwrap();
    }
    let key = format!("{prefix}k");
    let pttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(pttl > 2_900 && pttl <= 3_000, "PTTL {pttl}");
    let tat: String = conn.get(&key).await.unwrap();
    assert!(
        tat.len() >= 16 && tat.bytes().all(|b| b.is_ascii_digit()),
        "TAT should be integer microseconds, got {tat:?}"
    );

    // A limited request does not extend the expiry.
    assert!(!limiter.check("k", quota).await.unwrap().is_allowed());
    let pttl_after: i64 = conn.pttl(&key).await.unwrap();
    assert!(pttl_after > 0 && pttl_after <= pttl, "PTTL {pttl_after}");

    // A fast quota (T = 10 ms) disappears on its own.
    let fast = Quota::new(6000, 1);
    limiter.check("fast", fast).await.unwrap();
    let fast_key = format!("{prefix}fast");
    let pttl: i64 = conn.pttl(&fast_key).await.unwrap();
    assert!(pttl > 0 && pttl <= 10, "PTTL {pttl}");
    tokio::time::sleep(60 * MS).await;
    let exists: bool = conn.exists(&fast_key).await.unwrap();
    assert!(!exists, "key should have expired");
}

#[tokio::test]
async fn refills_after_waiting() {
    let prefix = unique_prefix();
    let limiter = limiter(&prefix).await;
    let quota = Quota::new(600, 2); // T = 100 ms
    assert!(limiter.check("k", quota).await.unwrap().is_allowed());
    assert!(limiter.check("k", quota).await.unwrap().is_allowed());
    let wait = retry_after(limiter.check("k", quota).await.unwrap());
    assert!(wait > 50 * MS && wait <= 100 * MS, "{wait:?}");

    tokio::time::sleep(wait).await;
    assert_eq!(
        limiter.check("k", quota).await.unwrap(),
        Decision::Allowed { remaining: 0 }
    );
    assert!(!limiter.check("k", quota).await.unwrap().is_allowed());

    // After a full burst window both requests are back.
    tokio::time::sleep(250 * MS).await;
    assert_eq!(
        limiter.check("k", quota).await.unwrap(),
        Decision::Allowed { remaining: 1 }
    );
}

#[tokio::test]
async fn survives_script_flush() {
    let prefix = unique_prefix();
    let limiter = limiter(&prefix).await;
    let quota = Quota::per_minute(10);
    assert!(limiter.check("k", quota).await.unwrap().is_allowed());
    // Simulate a Redis restart / failover that lost the script cache:
    // EVALSHA fails with NOSCRIPT and redis-rs reloads the script.
    let mut conn = raw_connection().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        limiter.check("k", quota).await.unwrap(),
        Decision::Allowed { remaining: 8 }
    );
}

#[tokio::test]
async fn invalid_quota_is_rejected() {
    let limiter = limiter(&unique_prefix()).await;
    assert!(matches!(
        limiter.check("k", Quota::per_minute(0)).await,
        Err(ClusterError::InvalidQuota(_))
    ));
}

#[tokio::test]
async fn unreachable_redis_fails_to_connect() {
    // Port 1 is never a Redis server.
    let started = std::time::Instant::now();
    let err = RateLimiter::redis("redis://127.0.0.1:1", "x:")
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Redis(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
