//! The Redis GCRA backend, shared by all nodes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::{Decision, Quota};
use crate::ClusterError;

/// The GCRA script; see `gcra.lua` for its contract.
const GCRA_SCRIPT: &str = include_str!("gcra.lua");

/// A GCRA rate limiter whose state lives in Redis, so every node using the
/// same Redis and key prefix shares one budget per key.
///
/// Each check is one `EVALSHA` of a Lua script (re-loaded automatically if
/// Redis lost it) that reads Redis's own clock with `TIME`, so nodes with
/// skewed clocks still agree. The TAT is stored in microseconds under
/// `{key_prefix}{key}` and expires as soon as it is no longer relevant.
///
/// Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    script: Script,
    key_prefix: String,
}

impl RedisRateLimiter {
    /// Connects to Redis at `url` and loads the script.
    ///
    /// Fails if Redis is unreachable (after a couple of quick retries). The
    /// connection is a `ConnectionManager`, so later failures trigger
    /// reconnects; checks fail with [`ClusterError::Redis`] meanwhile.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, ClusterError> {
        let conn = crate::redis_conn::connect(url).await?;
        Self::with_connection(conn, key_prefix).await
    }

    /// Uses an existing connection (e.g. one shared with other cluster
    /// services) and loads the script.
    pub async fn with_connection(
        mut conn: ConnectionManager,
        key_prefix: &str,
    ) -> Result<Self, ClusterError> {
        let script = Script::new(GCRA_SCRIPT);
        script.prepare_invoke().load_async(&mut conn).await?;
        tracing::debug!(key_prefix, "redis rate limiter ready");
        Ok(RedisRateLimiter {
            inner: Arc::new(Inner {
                conn,
                script,
                key_prefix: key_prefix.to_owned(),
            }),
        })
    }

    /// The prefix prepended to every key.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// Counts one request for `key` against `quota`.
    ///
    /// Zero fields in `quota` are treated as 1 (use
    /// [`RateLimiter::check`](super::RateLimiter::check) to reject them).
    pub async fn check(&self, key: &str, quota: Quota) -> Result<Decision, ClusterError> {
        let inner = &*self.inner;
        let mut conn = inner.conn.clone();
        let (allowed, remaining, retry_after_ms): (i64, i64, i64) = inner
            .script
            .key(format!("{}{key}", inner.key_prefix))
            .arg(quota.emission_interval_micros())
            .arg(quota.burst.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(if allowed == 1 {
            Decision::Allowed {
                remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            }
        } else {
            Decision::Limited {
                retry_after: Duration::from_millis(
                    u64::try_from(retry_after_ms).unwrap_or(0).max(1),
                ),
            }
        })
    }
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("key_prefix", &self.inner.key_prefix)
            .finish_non_exhaustive()
    }
}
