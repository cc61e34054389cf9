//! This process as a media node of the cluster: its record in the node registry (URLs and
//! load, refreshed every [`HEARTBEAT`]), the rooms it hosts, and the cascade pulls that bring
//! each hosted room's other publishers here.
//!
//! Everything is driven by one loop. When Redis is unreachable a tick only logs: the pulls
//! running keep running, so media keeps flowing between the nodes that were already linked.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use veza_cluster::{NodeInfo, NodeRegistry};
use veza_loadtest::proc;
use veza_proto::RoomId;
use veza_sfu::quic::QuicServer;
use veza_sfu::relay::{Peer, Relay};
use veza_sfu::webrtc::MediaServer;

/// How often the node reports itself and re-reads its rooms' peers.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a record outlives its last heartbeat: a dead node is gone from placement within
/// this (three missed beats).
pub const NODE_TTL: Duration = Duration::from_secs(3);

/// One media node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaNode {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: NodeRegistry,
    /// The node's URLs; load and certificate are filled in on every heartbeat.
    template: NodeInfo,
    media: MediaServer,
    quic: QuicServer,
    relay: Option<Relay>,
    draining: AtomicBool,
}

/// What the loop remembers between ticks.
struct Tick {
    hosted: HashSet<RoomId>,
    forwarded: u64,
    cpu_ticks: u64,
    at: Instant,
    ticks_per_second: u64,
    failing: bool,
}

impl MediaNode {
    /// A node described by `template` (id and URLs), reporting `media`'s load.
    pub fn new(
        registry: NodeRegistry,
        template: NodeInfo,
        media: MediaServer,
        quic: QuicServer,
        relay: Option<Relay>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                template,
                media,
                quic,
                relay,
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.inner.template.id
    }

    /// Registers the node once (so the first join can be placed here), then keeps it
    /// registered, hosting and pulling from a background task.
    pub async fn start(&self) -> anyhow::Result<()> {
        let info = self.info(0, 0.0);
        self.inner
            .registry
            .heartbeat(&info, NODE_TTL)
            .await
            .map_err(|e| anyhow::anyhow!("registering media node {}: {e}", info.id))?;
        tracing::info!(node = %info.id, url = %info.http_url, "media node registered");
        let node = self.clone();
        tokio::spawn(async move {
            let mut state = Tick {
                hosted: HashSet::new(),
                forwarded: node.inner.media.metrics().packets_forwarded(),
                cpu_ticks: proc::cpu_ticks("self").unwrap_or(0),
                at: Instant::now(),
                ticks_per_second: proc::ticks_per_second(),
                failing: false,
            };
            let mut interval = tokio::time::interval(HEARTBEAT);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                node.tick(&mut state).await;
            }
        });
        Ok(())
    }

    /// Stops taking new rooms and participants (placement skips a draining node).
    pub async fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
        let info = self.info(self.participants(), 0.0);
        if let Err(err) = self.inner.registry.heartbeat(&info, NODE_TTL).await {
            tracing::warn!(%err, "could not mark the node draining in the registry");
        }
    }

    /// Leaves the registry at once (a clean exit).
    pub async fn deregister(&self) {
        if let Err(err) = self.inner.registry.deregister(self.id()).await {
            tracing::warn!(%err, "could not remove the node from the registry");
        }
    }

    /// People on this node now, over every transport.
    pub fn participants(&self) -> u32 {
        self.inner
            .media
            .live_rooms()
            .iter()
            .map(|(_, live)| live.participants)
            .sum()
    }

    fn info(&self, participants: u32, cpu: f32) -> NodeInfo {
        NodeInfo {
            participants,
            cpu,
            quic_sha256: Some(self.inner.quic.certificate().sha256_hex()),
            draining: self.inner.draining.load(Ordering::Relaxed),
            ..self.inner.template.clone()
        }
    }

    async fn tick(&self, state: &mut Tick) {
        let live = self.inner.media.live_rooms();
        let now = Instant::now();
        let elapsed = now.duration_since(state.at).as_secs_f64().max(1e-3);
        let forwarded = self.inner.media.metrics().packets_forwarded();
        let cpu_ticks = proc::cpu_ticks("self").unwrap_or(state.cpu_ticks);
        let cpu = cpu_ticks.saturating_sub(state.cpu_ticks) as f64
            / state.ticks_per_second as f64
            / elapsed;
        let mut info = self.info(live.iter().map(|(_, l)| l.participants).sum(), cpu as f32);
        info.packets_per_s = (forwarded.saturating_sub(state.forwarded) as f64 / elapsed) as u64;
        (state.forwarded, state.cpu_ticks, state.at) = (forwarded, cpu_ticks, now);

        let rooms: HashSet<RoomId> = live.iter().map(|(room, _)| *room).collect();
        match self.report(&info, &rooms, &state.hosted).await {
            Ok(()) => {
                if state.failing {
                    tracing::info!("the node registry answers again");
                }
                state.failing = false;
                state.hosted.clone_from(&rooms);
            }
            Err(err) => {
                self.inner.media.metrics().registry_failure();
                if !state.failing {
                    tracing::warn!(%err, "node registry unreachable; the cascade keeps its links");
                }
                state.failing = true;
            }
        }
        if let Some(relay) = &self.inner.relay {
            for room in relay.rooms() {
                if !rooms.contains(&room) {
                    relay.sync(room, &[]);
                }
            }
            self.inner.media.metrics().set_cascade_pulls(relay.len());
        }
    }

    /// Heartbeat, hosting, and the peers of every hosted room.
    async fn report(
        &self,
        info: &NodeInfo,
        rooms: &HashSet<RoomId>,
        hosted: &HashSet<RoomId>,
    ) -> Result<(), veza_cluster::ClusterError> {
        let registry = &self.inner.registry;
        registry.heartbeat(info, NODE_TTL).await?;
        for room in hosted.difference(rooms) {
            registry.unhost(&room.to_string(), &info.id).await?;
        }
        for room in rooms {
            let key = room.to_string();
            registry.host(&key, &info.id, NODE_TTL).await?;
            if let Some(relay) = &self.inner.relay {
                let peers: Vec<Peer> = registry
                    .room_nodes(&key)
                    .await?
                    .into_iter()
                    .filter(|node| node.id != info.id)
                    .filter_map(peer)
                    .collect();
                relay.sync(*room, &peers);
            }
        }
        Ok(())
    }
}

/// A node the cascade can pull from: one with QUIC and a certificate hash, at its cascade
/// URL (else its public one).
fn peer(node: NodeInfo) -> Option<Peer> {
    let sha256 = veza_client::net::parse_hex(node.quic_sha256.as_deref()?)?;
    Some(Peer {
        id: node.id,
        quic_url: node.cascade_url.or(node.quic_url)?,
        sha256,
    })
}
