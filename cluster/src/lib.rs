//! Cluster-wide services for Veza nodes.
//!
//! Currently this crate provides request **rate limiting** based on the
//! generic cell rate algorithm (GCRA), with two interchangeable backends:
//!
//! * [`RateLimiter::memory`] — an in-process limiter for single-node
//!   deployments and tests;
//! * [`RateLimiter::redis`] — a Redis-backed limiter whose budget is shared by
//!   every node talking to the same Redis, using Redis's own clock so that
//!   nodes with skewed clocks still agree.
//!
//! ```no_run
//! # async fn demo() -> Result<(), veza_cluster::ClusterError> {
//! use veza_cluster::{Decision, Quota, RateLimiter};
//!
//! let limiter = RateLimiter::redis("redis://127.0.0.1:6379", "veza:rl:").await?;
//! match limiter.check("login:203.0.113.7", Quota::per_minute(10)).await? {
//!     Decision::Allowed { remaining } => println!("ok, {remaining} left"),
//!     Decision::Limited { retry_after } => println!("429, retry in {retry_after:?}"),
//! }
//! # Ok(()) }
//! ```

mod error;
pub mod rate_limit;

pub use error::ClusterError;
pub use rate_limit::{Decision, MemoryRateLimiter, Quota, RateLimiter, RedisRateLimiter};
