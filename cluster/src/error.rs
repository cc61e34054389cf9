//! The error type shared by all cluster services.

use crate::rate_limit::Quota;

/// Errors returned by the cluster services.
///
/// Marked `#[non_exhaustive]` because further services (node registry, event
/// bus) will add variants; match with a wildcard arm.
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
}
