//! The Redis registry backend, shared by all nodes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::{NodeInfo, PLACEMENT_HOST_TTL, Placement, clamp_ttl};
use crate::ClusterError;

/// Builds a script from `common.lua` (clock, helpers) and the named file.
macro_rules! script {
    ($file:literal) => {
        concat!(include_str!("common.lua"), "\n", include_str!($file))
    };
}

/// A node registry whose state lives in Redis, so every node using the same
/// Redis and key prefix sees the same nodes and rooms.
///
/// Each operation is one `EVALSHA` of a Lua script (re-loaded automatically
/// if Redis lost it), so placements are atomic across nodes, and reads
/// Redis's own clock with `TIME`, so nodes with skewed clocks agree on which
/// records have expired. The key layout is described in `common.lua`;
/// expired entries are removed lazily and every key carries a Redis TTL, so
/// nothing outlives its last refresh.
///
/// The scripts compute some key names themselves (node records), so this
/// backend needs a single Redis server (or primary), not Redis Cluster.
///
/// Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RedisRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    heartbeat: Script,
    nodes: Script,
    place: Script,
    host: Script,
    unhost: Script,
    room_nodes: Script,
}

impl RedisRegistry {
    /// Connects to Redis at `url` and loads the scripts.
    ///
    /// Fails if Redis is unreachable (after a couple of quick retries). The
    /// connection is a `ConnectionManager`, so later failures trigger
    /// reconnects; operations fail with [`ClusterError::Redis`] meanwhile.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ClusterError> {
        let conn = crate::redis_conn::connect(url).await?;
        Self::with_connection(conn, prefix).await
    }

    /// Uses an existing connection (e.g. one shared with other cluster
    /// services) and loads the scripts.
    pub async fn with_connection(
        mut conn: ConnectionManager,
        prefix: &str,
    ) -> Result<Self, ClusterError> {
        let inner = Inner {
            conn: conn.clone(),
            prefix: prefix.to_owned(),
            heartbeat: Script::new(script!("heartbeat.lua")),
            nodes: Script::new(script!("nodes.lua")),
            place: Script::new(script!("place.lua")),
            host: Script::new(script!("host.lua")),
            unhost: Script::new(script!("unhost.lua")),
            room_nodes: Script::new(script!("room_nodes.lua")),
        };
        for script in [
            &inner.heartbeat,
            &inner.nodes,
            &inner.place,
            &inner.host,
            &inner.unhost,
            &inner.room_nodes,
        ] {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        tracing::debug!(prefix, "redis node registry ready");
        Ok(RedisRegistry {
            inner: Arc::new(inner),
        })
    }

    /// The prefix prepended to every key.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// See [`NodeRegistry::heartbeat`](super::NodeRegistry::heartbeat)
    /// (without its validation of `node`).
    pub async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), ClusterError> {
        let inner = &*self.inner;
        let info = serde_json::to_string(node).map_err(ClusterError::Record)?;
        let () = inner
            .heartbeat
            .key(inner.nodes_key())
            .key(inner.node_key(&node.id))
            .arg(&node.id)
            .arg(millis(ttl))
            .arg(info)
            .arg(node.participants)
            .arg(u8::from(node.draining))
            .invoke_async(&mut inner.conn.clone())
            .await?;
        Ok(())
    }

    /// See [`NodeRegistry::deregister`](super::NodeRegistry::deregister).
    pub async fn deregister(&self, id: &str) -> Result<(), ClusterError> {
        let inner = &*self.inner;
        let () = redis::pipe()
            .atomic()
            .zrem(inner.nodes_key(), id)
            .ignore()
            .del(inner.node_key(id))
            .ignore()
            .query_async(&mut inner.conn.clone())
            .await?;
        Ok(())
    }

    /// See [`NodeRegistry::nodes`](super::NodeRegistry::nodes).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let inner = &*self.inner;
        let records: Vec<String> = inner
            .nodes
            .key(inner.nodes_key())
            .arg(&inner.prefix)
            .invoke_async(&mut inner.conn.clone())
            .await?;
        decode_sorted(records)
    }

    /// See [`NodeRegistry::place`](super::NodeRegistry::place).
    pub async fn place(
        &self,
        room: &str,
        max_participants: u32,
    ) -> Result<Option<Placement>, ClusterError> {
        let inner = &*self.inner;
        let placed: Option<(String, u8)> = inner
            .place
            .key(inner.nodes_key())
            .key(inner.home_key(room))
            .key(inner.hosts_key(room))
            .arg(&inner.prefix)
            .arg(max_participants)
            .arg(millis(PLACEMENT_HOST_TTL))
            .invoke_async(&mut inner.conn.clone())
            .await?;
        placed
            .map(|(record, cascaded)| {
                Ok(Placement {
                    node: decode(&record)?,
                    cascaded: cascaded == 1,
                })
            })
            .transpose()
    }

    /// See [`NodeRegistry::host`](super::NodeRegistry::host).
    pub async fn host(&self, room: &str, node: &str, ttl: Duration) -> Result<(), ClusterError> {
        let inner = &*self.inner;
        let () = inner
            .host
            .key(inner.home_key(room))
            .key(inner.hosts_key(room))
            .arg(node)
            .arg(millis(ttl))
            .invoke_async(&mut inner.conn.clone())
            .await?;
        Ok(())
    }

    /// See [`NodeRegistry::unhost`](super::NodeRegistry::unhost).
    pub async fn unhost(&self, room: &str, node: &str) -> Result<(), ClusterError> {
        let inner = &*self.inner;
        let () = inner
            .unhost
            .key(inner.hosts_key(room))
            .arg(node)
            .invoke_async(&mut inner.conn.clone())
            .await?;
        Ok(())
    }

    /// See [`NodeRegistry::room_nodes`](super::NodeRegistry::room_nodes).
    pub async fn room_nodes(&self, room: &str) -> Result<Vec<NodeInfo>, ClusterError> {
        let inner = &*self.inner;
        let records: Vec<String> = inner
            .room_nodes
            .key(inner.nodes_key())
            .key(inner.hosts_key(room))
            .arg(&inner.prefix)
            .invoke_async(&mut inner.conn.clone())
            .await?;
        decode_sorted(records)
    }
}

impl Inner {
    fn nodes_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// Must match `common.lua`.
    fn node_key(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }

    fn home_key(&self, room: &str) -> String {
        format!("{}room:{room}:home", self.prefix)
    }

    fn hosts_key(&self, room: &str) -> String {
        format!("{}room:{room}:hosts", self.prefix)
    }
}

/// A clamped TTL in whole milliseconds (rounded up).
fn millis(ttl: Duration) -> u64 {
    let ms = clamp_ttl(ttl).as_nanos().div_ceil(1_000_000);
    // The clamp keeps this far below u64::MAX.
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn decode(record: &str) -> Result<NodeInfo, ClusterError> {
    serde_json::from_str(record).map_err(ClusterError::Record)
}

fn decode_sorted(records: Vec<String>) -> Result<Vec<NodeInfo>, ClusterError> {
    let mut nodes = records
        .iter()
        .map(|r| decode(r))
        .collect::<Result<Vec<_>, _>>()?;
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}

impl fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}
