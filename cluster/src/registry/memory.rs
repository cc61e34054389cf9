//! The in-process registry backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Candidate, NodeInfo, PLACEMENT_HOST_TTL, Placement, choose, clamp_ttl};

/// Minimum number of operations between two pruning passes.
const PRUNE_EVERY: usize = 1024;

/// An in-process node registry, for single-node deployments and tests.
///
/// Expired nodes and rooms are ignored at once and pruned every 1024
/// operations (or every `n` when `n > 1024` entries survived the last pass).
///
/// Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
}

struct State {
    nodes: HashMap<String, NodeEntry>,
    rooms: HashMap<String, RoomEntry>,
    ops_since_prune: usize,
    prune_interval: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            nodes: HashMap::new(),
            rooms: HashMap::new(),
            ops_since_prune: 0,
            prune_interval: PRUNE_EVERY,
        }
    }
}

struct NodeEntry {
    info: NodeInfo,
    expires: Instant,
    /// Placements since the last heartbeat.
    reserved: u32,
}

struct RoomEntry {
    home: Option<String>,
    /// Hosting node ids and when their hosting expires.
    hosts: HashMap<String, Instant>,
    /// When the whole room record expires: the latest hosting expiry seen.
    expires: Instant,
}

impl State {
    /// Counts one operation and prunes expired entries when due.
    fn tick(&mut self, now: Instant) {
        self.ops_since_prune += 1;
        if self.ops_since_prune < self.prune_interval {
            return;
        }
        self.nodes.retain(|_, n| n.expires > now);
        self.rooms.retain(|_, r| r.expires > now);
        self.ops_since_prune = 0;
        self.prune_interval = (self.nodes.len() + self.rooms.len()).max(PRUNE_EVERY);
    }

    fn live_node(&self, id: &str, now: Instant) -> Option<&NodeEntry> {
        self.nodes.get(id).filter(|n| n.expires > now)
    }

    /// The room's live record, replacing an expired one with an empty record.
    fn room_mut(&mut self, room: &str, now: Instant) -> &mut RoomEntry {
        let entry = self
            .rooms
            .entry(room.to_owned())
            .or_insert_with(|| RoomEntry {
                home: None,
                hosts: HashMap::new(),
                expires: now,
            });
        if entry.expires <= now {
            entry.home = None;
            entry.hosts.clear();
        }
        entry
    }
}

impl RoomEntry {
    /// Marks `node` as hosting until `until` and extends the room record.
    fn host_until(&mut self, node: &str, until: Instant) {
        self.hosts.insert(node.to_owned(), until);
        self.expires = self.expires.max(until);
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`NodeRegistry::heartbeat`](super::NodeRegistry::heartbeat)
    /// (without its validation of `node`).
    pub fn heartbeat(&self, node: &NodeInfo, ttl: Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        state.tick(now);
        state.nodes.insert(
            node.id.clone(),
            NodeEntry {
                info: node.clone(),
                expires: now + clamp_ttl(ttl),
                reserved: 0,
            },
        );
    }

    /// See [`NodeRegistry::deregister`](super::NodeRegistry::deregister).
    pub fn deregister(&self, id: &str) {
        self.lock().nodes.remove(id);
    }

    /// See [`NodeRegistry::nodes`](super::NodeRegistry::nodes).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let now = Instant::now();
        let mut state = self.lock();
        state.nodes.retain(|_, n| n.expires > now);
        let mut nodes: Vec<_> = state.nodes.values().map(|n| n.info.clone()).collect();
        drop(state);
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// See [`NodeRegistry::place`](super::NodeRegistry::place).
    pub fn place(&self, room: &str, max_participants: u32) -> Option<Placement> {
        let now = Instant::now();
        let mut state = self.lock();
        state.tick(now);

        let candidates: Vec<Candidate<'_>> = state
            .nodes
            .values()
            .filter(|n| n.expires > now && !n.info.draining)
            .map(|n| Candidate {
                id: &n.info.id,
                load: u64::from(n.info.participants) + u64::from(n.reserved),
            })
            .collect();
        let home = state
            .rooms
            .get(room)
            .filter(|r| r.expires > now)
            .and_then(|r| r.home.as_deref());
        let choice = choose(&candidates, home, max_participants)?;
        let chosen = candidates[choice.index].id.to_owned();

        let node = state
            .nodes
            .get_mut(&chosen)
            .expect("candidates are taken from the node map");
        node.reserved = node.reserved.saturating_add(1);
        let info = node.info.clone();

        let entry = state.room_mut(room, now);
        if choice.new_home {
            entry.home = Some(chosen.clone());
        }
        let until = now + PLACEMENT_HOST_TTL;
        let current = entry.hosts.get(&chosen).copied();
        entry.host_until(&chosen, current.map_or(until, |c| c.max(until)));

        Some(Placement {
            node: info,
            cascaded: choice.cascaded,
        })
    }

    /// See [`NodeRegistry::host`](super::NodeRegistry::host).
    pub fn host(&self, room: &str, node: &str, ttl: Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        state.tick(now);
        state
            .room_mut(room, now)
            .host_until(node, now + clamp_ttl(ttl));
    }

    /// See [`NodeRegistry::unhost`](super::NodeRegistry::unhost).
    pub fn unhost(&self, room: &str, node: &str) {
        if let Some(entry) = self.lock().rooms.get_mut(room) {
            entry.hosts.remove(node);
        }
    }

    /// See [`NodeRegistry::room_nodes`](super::NodeRegistry::room_nodes).
    pub fn room_nodes(&self, room: &str) -> Vec<NodeInfo> {
        let now = Instant::now();
        let state = self.lock();
        let Some(entry) = state.rooms.get(room).filter(|r| r.expires > now) else {
            return Vec::new();
        };
        let mut nodes: Vec<_> = entry
            .hosts
            .iter()
            .filter(|(_, until)| **until > now)
            .filter_map(|(id, _)| state.live_node(id, now))
            .map(|n| n.info.clone())
            .collect();
        drop(state);
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the maps consistent, so a poisoned lock is safe
        // to reuse.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("MemoryRegistry");
        match self.state.try_lock() {
            Ok(state) => s
                .field("nodes", &state.nodes.len())
                .field("rooms", &state.rooms.len()),
            Err(_) => s.field("nodes", &"<locked>"),
        };
        s.finish()
    }
}
