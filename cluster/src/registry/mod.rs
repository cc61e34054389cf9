//! The node registry: which media nodes are alive, how loaded they are, and
//! which node should take the next participant of a room.
//!
//! Every media node calls [`NodeRegistry::heartbeat`] periodically with its
//! [`NodeInfo`] and a TTL a few heartbeat periods long; a node whose TTL
//! expires is dead and vanishes from every answer. Signaling asks
//! [`NodeRegistry::place`] where a joining participant should go.
//!
//! # Placement
//!
//! The *load* of a node is its `participants` (as of its last heartbeat) plus
//! its *reservations*: the placements made on it since that heartbeat. Each
//! room has a *home* node. [`NodeRegistry::place`] picks, among live
//! non-draining nodes:
//!
//! 1. the home, if it is alive, not draining and its load is below the limit;
//! 2. if the room has no home, or the home is dead or draining, the
//!    least-loaded node (ties broken by smallest id), which becomes the home;
//! 3. if the home is full, the least-loaded other node below the limit, or,
//!    when every node is full, the least-loaded node overall (home included).
//!
//! The chosen node gets one more reservation and is marked as hosting the
//! room for [`PLACEMENT_HOST_TTL`], so the cluster knows about it before the
//! participant arrives. Nodes then refresh that with [`NodeRegistry::host`]
//! while they host members of the room.
//!
//! A room's records (home and hosting nodes) expire together, when the last
//! hosting entry does, so abandoned rooms leave nothing behind.
//!
//! Two backends implement this: [`MemoryRegistry`] (in-process, for a single
//! node and tests) and [`RedisRegistry`] (shared by all nodes, atomic Lua
//! scripts on Redis's clock). [`NodeRegistry`] wraps either.

mod memory;
mod redis_store;

use std::time::Duration;

pub use memory::MemoryRegistry;
pub use redis_store::RedisRegistry;

use crate::ClusterError;

/// How long [`NodeRegistry::place`] marks the chosen node as hosting the room
/// (unless the node already hosts it for longer).
pub const PLACEMENT_HOST_TTL: Duration = Duration::from_secs(30);

/// Longest TTL accepted; longer ones are clamped to it.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// One media node as the cluster sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Unique per process (a restarted node should use a new id).
    pub id: String,
    /// `http(s)://host:port`: signaling WebSocket (`/rtc`), WHIP and WHEP.
    pub http_url: String,
    /// `https://host:port` of moq-lite over QUIC, if enabled.
    pub quic_url: Option<String>,
    /// Hex SHA-256 of the node's QUIC certificate (for self-signed ones).
    pub quic_sha256: Option<String>,
    /// `https://host:port` where other media nodes reach the QUIC endpoint for the cascade
    /// (a private address); `None`: the public `quic_url`.
    #[serde(default)]
    pub cascade_url: Option<String>,
    /// WebRTC UDP address; informational.
    pub udp_addr: String,
    /// Participants connected to the node, as of its heartbeat.
    pub participants: u32,
    /// Media packets per second handled by the node.
    pub packets_per_s: u64,
    /// CPU seconds per second used by the process.
    pub cpu: f32,
    /// A draining node takes no new rooms or participants.
    pub draining: bool,
}

/// Where [`NodeRegistry::place`] sends a participant.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The chosen node, as of its last heartbeat.
    pub node: NodeInfo,
    /// `true` when the chosen node is not the room's home, so media must be
    /// cascaded between nodes.
    pub cascaded: bool,
}

/// A registry of media nodes with either an in-process or a Redis backend.
///
/// Cheap to clone (`Arc` inside); clones share state.
#[derive(Clone, Debug)]
pub enum NodeRegistry {
    /// In-process registry; only sees nodes registered in this process.
    Memory(MemoryRegistry),
    /// Redis-backed registry shared by every node using the same Redis and
    /// key prefix.
    Redis(RedisRegistry),
}

impl NodeRegistry {
    /// An empty in-process registry.
    pub fn memory() -> Self {
        NodeRegistry::Memory(MemoryRegistry::new())
    }

    /// Connects to Redis at `url` (through a `ConnectionManager`, so it
    /// reconnects after failures) and loads the scripts. Every key is stored
    /// under `prefix` (e.g. `veza:`).
    ///
    /// Fails with [`ClusterError::Redis`] if Redis is unreachable. Requires
    /// Redis ≥ 4.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, ClusterError> {
        Ok(NodeRegistry::Redis(
            RedisRegistry::connect(url, prefix).await?,
        ))
    }

    /// Registers or refreshes `node` (its whole record) for `ttl`, and resets
    /// its placement reservations to zero.
    ///
    /// `ttl` is clamped to between 1 ms and one year. Fails with
    /// [`ClusterError::InvalidNode`] for an empty id or a non-finite `cpu`.
    pub async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), ClusterError> {
        validate(node)?;
        match self {
            NodeRegistry::Memory(r) => {
                r.heartbeat(node, ttl);
                Ok(())
            }
            NodeRegistry::Redis(r) => r.heartbeat(node, ttl).await,
        }
    }

    /// Removes the node at once (clean shutdown).
    pub async fn deregister(&self, id: &str) -> Result<(), ClusterError> {
        match self {
            NodeRegistry::Memory(r) => {
                r.deregister(id);
                Ok(())
            }
            NodeRegistry::Redis(r) => r.deregister(id).await,
        }
    }

    /// Every live node (draining ones included), sorted by id.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        match self {
            NodeRegistry::Memory(r) => Ok(r.nodes()),
            NodeRegistry::Redis(r) => r.nodes().await,
        }
    }

    /// Picks the media node for one more participant of `room`, atomically,
    /// following the rules in the [module docs](self). `None` when no live,
    /// non-draining node exists.
    pub async fn place(
        &self,
        room: &str,
        max_participants: u32,
    ) -> Result<Option<Placement>, ClusterError> {
        match self {
            NodeRegistry::Memory(r) => Ok(r.place(room, max_participants)),
            NodeRegistry::Redis(r) => r.place(room, max_participants).await,
        }
    }

    /// Records that `node` hosts members of `room` for `ttl` (the node
    /// refreshes this while it does). `ttl` is clamped like
    /// [`heartbeat`](Self::heartbeat)'s.
    pub async fn host(&self, room: &str, node: &str, ttl: Duration) -> Result<(), ClusterError> {
        match self {
            NodeRegistry::Memory(r) => {
                r.host(room, node, ttl);
                Ok(())
            }
            NodeRegistry::Redis(r) => r.host(room, node, ttl).await,
        }
    }

    /// Records that `node` hosts no more members of `room`.
    pub async fn unhost(&self, room: &str, node: &str) -> Result<(), ClusterError> {
        match self {
            NodeRegistry::Memory(r) => {
                r.unhost(room, node);
                Ok(())
            }
            NodeRegistry::Redis(r) => r.unhost(room, node).await,
        }
    }

    /// Live nodes hosting members of `room`, sorted by id.
    pub async fn room_nodes(&self, room: &str) -> Result<Vec<NodeInfo>, ClusterError> {
        match self {
            NodeRegistry::Memory(r) => Ok(r.room_nodes(room)),
            NodeRegistry::Redis(r) => r.room_nodes(room).await,
        }
    }
}

/// Rejects records that could not round-trip through the Redis backend.
fn validate(node: &NodeInfo) -> Result<(), ClusterError> {
    if node.id.is_empty() {
        return Err(ClusterError::InvalidNode("empty id".to_owned()));
    }
    if !node.cpu.is_finite() {
        return Err(ClusterError::InvalidNode(format!(
            "node {:?}: cpu must be finite, got {}",
            node.id, node.cpu
        )));
    }
    Ok(())
}

/// `ttl` clamped to `[1 ms, MAX_TTL]`.
fn clamp_ttl(ttl: Duration) -> Duration {
    ttl.clamp(Duration::from_millis(1), MAX_TTL)
}

/// A live, non-draining node that may take a participant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate<'a> {
    id: &'a str,
    /// Participants plus reservations.
    load: u64,
}

/// The outcome of [`choose`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Choice {
    /// Index into the candidates.
    index: usize,
    /// The chosen node is not the room's home.
    cascaded: bool,
    /// The chosen node becomes the room's (new) home.
    new_home: bool,
}

/// The placement rule, shared by the memory backend and mirrored by
/// `place.lua`. `candidates` are the live non-draining nodes.
fn choose(
    candidates: &[Candidate<'_>],
    home: Option<&str>,
    max_participants: u32,
) -> Option<Choice> {
    let max = u64::from(max_participants);
    // Least loaded, ties by smallest id (byte order).
    let best = |filter: &dyn Fn(&Candidate<'_>) -> bool| {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| filter(c))
            .min_by(|(_, a), (_, b)| a.load.cmp(&b.load).then_with(|| a.id.cmp(b.id)))
            .map(|(i, _)| i)
    };
    let home_index = home.and_then(|h| candidates.iter().position(|c| c.id == h));
    match home_index {
        Some(h) if candidates[h].load < max => Some(Choice {
            index: h,
            cascaded: false,
            new_home: false,
        }),
        Some(h) => {
            let index =
                best(&|c| c.id != candidates[h].id && c.load < max).or_else(|| best(&|_| true))?;
            Some(Choice {
                index,
                cascaded: index != h,
                new_home: false,
            })
        }
        None => best(&|_| true).map(|index| Choice {
            index,
            cascaded: false,
            new_home: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, load: u64) -> Candidate<'_> {
        Candidate { id, load }
    }

    fn pick(cands: &[Candidate<'_>], home: Option<&str>, max: u32) -> Option<(String, bool, bool)> {
        choose(cands, home, max).map(|ch| (cands[ch.index].id.to_owned(), ch.cascaded, ch.new_home))
    }

    #[test]
    fn no_candidates() {
        assert_eq!(pick(&[], None, 5), None);
        assert_eq!(pick(&[], Some("a"), 5), None);
    }

    #[test]
    fn no_home_picks_least_loaded_with_ties_by_id() {
        let cands = [c("b", 1), c("c", 0), c("a", 0)];
        assert_eq!(pick(&cands, None, 5), Some(("a".into(), false, true)));
        // A dead or draining home is simply not a candidate.
        assert_eq!(pick(&cands, Some("z"), 5), Some(("a".into(), false, true)));
    }

    #[test]
    fn home_below_limit_is_kept() {
        let cands = [c("a", 0), c("b", 4)];
        assert_eq!(pick(&cands, Some("b"), 5), Some(("b".into(), false, false)));
    }

    #[test]
    fn full_home_cascades_to_least_loaded_other() {
        let cands = [c("a", 5), c("b", 3), c("c", 2)];
        assert_eq!(pick(&cands, Some("a"), 5), Some(("c".into(), true, false)));
        // Others at the limit are skipped while one is below it.
        let cands = [c("a", 5), c("b", 5), c("c", 4)];
        assert_eq!(pick(&cands, Some("a"), 5), Some(("c".into(), true, false)));
    }

    #[test]
    fn all_full_picks_least_loaded_overall() {
        let cands = [c("a", 6), c("b", 7), c("c", 5)];
        assert_eq!(pick(&cands, Some("a"), 5), Some(("c".into(), true, false)));
        let cands = [c("a", 5), c("b", 5), c("c", 6)];
        assert_eq!(pick(&cands, Some("b"), 5), Some(("a".into(), true, false)));
        let cands = [c("a", 6), c("b", 5), c("c", 6)];
        assert_eq!(pick(&cands, Some("b"), 5), Some(("b".into(), false, false)));
        // A single full home stays the choice.
        assert_eq!(
            pick(&[c("a", 9)], Some("a"), 5),
            Some(("a".into(), false, false))
        );
    }

    #[test]
    fn ttl_is_clamped() {
        assert_eq!(clamp_ttl(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(clamp_ttl(Duration::MAX), MAX_TTL);
        assert_eq!(clamp_ttl(Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn validate_rejects_bad_records() {
        let mut node = NodeInfo {
            id: "n".into(),
            http_url: "http://x".into(),
            quic_url: None,
            quic_sha256: None,
            cascade_url: None,
            udp_addr: "x:1".into(),
            participants: 0,
            packets_per_s: 0,
            cpu: 0.5,
            draining: false,
        };
        assert!(validate(&node).is_ok());
        node.cpu = f32::NAN;
        assert!(matches!(validate(&node), Err(ClusterError::InvalidNode(_))));
        node.cpu = 0.0;
        node.id.clear();
        assert!(matches!(validate(&node), Err(ClusterError::InvalidNode(_))));
    }
}
