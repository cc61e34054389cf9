//! The error type shared by all cluster services.

use crate::rate_limit::Quota;

/// Errors returned by the cluster services.
///
/// Marked `#[non_exhaustive]` because further services (e.g. an event bus)
/// will add variants; match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis was unreachable, timed out, or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A [`Quota`] with `per_minute == 0` or `burst == 0` was passed to a
    /// rate limiter.
    #[error("invalid quota {0:?}: per_minute and burst must both be at least 1")]
    InvalidQuota(Quota),
    /// A [`NodeInfo`](crate::NodeInfo) that cannot be registered (empty id,
    /// non-finite `cpu`).
    #[error("invalid node record: {0}")]
    InvalidNode(String),
    /// A node record could not be encoded, or one read from Redis could not
    /// be decoded (e.g. written by an incompatible version).
    #[error("node record: {0}")]
    Record(#[source] serde_json::Error),
}
