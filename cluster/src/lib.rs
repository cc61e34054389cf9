//! Cluster-wide services for Veza nodes.
//!
//! Each service has two interchangeable backends: an in-process one for
//! single-node deployments and tests, and a Redis one shared by every node
//! talking to the same Redis. The Redis backends run Lua scripts, so each
//! operation is atomic, on Redis's own clock, so nodes with skewed clocks
//! still agree.
//!
//! * **Rate limiting** ([`RateLimiter`]) based on the generic cell rate
//!   algorithm (GCRA): [`RateLimiter::memory`] or [`RateLimiter::redis`].
//! * **Node registry and room placement** ([`NodeRegistry`]): media nodes
//!   announce themselves and their load with heartbeats, and signaling asks
//!   which node should take the next participant of a room (the room's home
//!   node while it has room, otherwise the least-loaded other node, cascaded).
//!   See the [`registry`] module for the rules.
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
//!
//! A media node heartbeats every few seconds; signaling places joins:
//!
//! ```no_run
//! # async fn demo(me: veza_cluster::NodeInfo) -> Result<(), veza_cluster::ClusterError> {
//! use std::time::Duration;
//! use veza_cluster::NodeRegistry;
//!
//! let registry = NodeRegistry::redis("redis://127.0.0.1:6379", "veza:").await?;
//! // On the media node, every 5 s (the TTL covers a few missed beats):
//! registry.heartbeat(&me, Duration::from_secs(15)).await?;
//! // In signaling, for each join:
//! match registry.place("room-42", 500).await? {
//!     Some(p) => println!("send to {} (cascaded: {})", p.node.http_url, p.cascaded),
//!     None => println!("503: no media node available"),
//! }
//! # Ok(()) }
//! ```

mod error;
pub mod nats;
pub mod rate_limit;
mod redis_conn;
pub mod registry;

pub use error::ClusterError;
pub use rate_limit::{Decision, MemoryRateLimiter, Quota, RateLimiter, RedisRateLimiter};
pub use registry::{MemoryRegistry, NodeInfo, NodeRegistry, Placement, RedisRegistry};
