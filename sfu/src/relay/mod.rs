//! The cascade: rooms that span media nodes.
//!
//! A node with people in a room pulls the room from every other node hosting it: one moq-lite
//! session per (room, peer node), authenticated with a [`CascadeKey`] token instead of a media
//! token. The peer serves that session only the tracks of its *own* publishers
//! ([`SubscribeMode::LocalTracks`]); each broadcast it announces becomes a publisher here
//! ([`SubscribeMode::Relayed`]), which every local subscriber receives like any other. So a
//! track crosses to each node once, never once per listener, and never loops back.
//!
//! Which nodes host a room comes from the cluster registry; the node's heartbeat calls
//! [`Relay::sync`] with the current peers of each of its rooms.

mod key;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veza_moq::session::{Failure, Session};
use veza_proto::{Grants, ParticipantId, RoomId};

use crate::engine::SubscribeMode;
use crate::quic::receive_audio;
use crate::webrtc::{JoinRequest, MediaServer, RemoteOut};

pub use key::{CascadeKey, CascadeTokenError, TOKEN_TTL};

/// Another media node, as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub id: String,
    /// Its QUIC base URL, `https://host:port`.
    pub quic_url: String,
    /// The SHA-256 of its QUIC certificate.
    pub sha256: [u8; 32],
}

/// How long a failed pull waits before dialing again.
const RETRY: Duration = Duration::from_millis(500);

/// The pulls of this node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: String,
    key: CascadeKey,
    media: MediaServer,
    pulls: Mutex<HashMap<(RoomId, String), Pull>>,
}

/// One running pull; dropping it stops the task (its relayed publishers leave).
#[derive(Debug)]
struct Pull {
    peer: Peer,
    task: JoinHandle<()>,
}

impl Drop for Pull {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Pulls for node `node` into `media`, signing with `key`.
    pub fn new(node: String, key: CascadeKey, media: MediaServer) -> Self {
        Self {
            inner: Arc::new(Inner {
                node,
                key,
                media,
                pulls: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn pulls(&self) -> std::sync::MutexGuard<'_, HashMap<(RoomId, String), Pull>> {
        self.inner.pulls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the pulls of `room` exactly one per peer in `peers` (this node is skipped):
    /// starts the missing ones, stops those to peers no longer listed or whose address
    /// changed. `sync(room, &[])` stops them all.
    pub fn sync(&self, room: RoomId, peers: &[Peer]) {
        let mut pulls = self.pulls();
        pulls.retain(|(r, id), pull| {
            *r != room || peers.iter().any(|p| p.id == *id && *p == pull.peer)
        });
        for peer in peers {
            if peer.id == self.inner.node || pulls.contains_key(&(room, peer.id.clone())) {
                continue;
            }
            tracing::info!(%room, peer = %peer.id, url = %peer.quic_url, "cascade: pulling the room");
            let task = tokio::spawn(pull(self.inner.clone(), room, peer.clone()));
            pulls.insert(
                (room, peer.id.clone()),
                Pull {
                    peer: peer.clone(),
                    task,
                },
            );
        }
    }

    /// The rooms with at least one pull.
    pub fn rooms(&self) -> Vec<RoomId> {
        let mut rooms: Vec<RoomId> = self.pulls().keys().map(|(room, _)| *room).collect();
        rooms.sort_unstable();
        rooms.dedup();
        rooms
    }

    /// How many pulls run.
    pub fn len(&self) -> usize {
        self.pulls().len()
    }

    /// True when nothing is pulled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pulls `room` from `peer` until aborted, dialing again whenever the session ends.
async fn pull(inner: Arc<Inner>, room: RoomId, peer: Peer) {
    loop {
        let url = format!("{}/room/{room}", peer.quic_url.trim_end_matches('/'));
        let token = inner.key.sign(&inner.node, room);
        match veza_moq::session::dial(&url, &format!("cascade={token}"), peer.sha256).await {
            Ok(session) => {
                // Closed however this ends, the task aborted included: the session's own
                // tasks and keep-alives would otherwise keep it (and the peer's sending) alive.
                let session = ClosesOnDrop(session);
                let reason = relay_session(&inner.media, room, &session.0).await;
                tracing::info!(%room, peer = %peer.id, reason, "cascade: session ended");
            }
            Err(err) => tracing::warn!(%room, peer = %peer.id, %err, "cascade: cannot dial"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// A pull's session, closed when dropped.
struct ClosesOnDrop(Session);

impl Drop for ClosesOnDrop {
    fn drop(&mut self) {
        self.0
            .close(veza_moq::code::session::NO_ERROR, "cascade pull stopped");
    }
}

/// One relayed publisher: its receive task, and its attachment here.
struct Relayed {
    participant: ParticipantId,
    task: JoinHandle<()>,
    out: mpsc::Sender<RemoteOut>,
}

/// The publishers one pull relays, by broadcast path. Dropping it — the session ended, or the
/// pull was stopped (aborted) mid-session — detaches them all, so none is left behind silent.
struct RelayedSet {
    media: MediaServer,
    entries: HashMap<String, Relayed>,
}

impl RelayedSet {
    fn remove(&mut self, path: &str) {
        if let Some(gone) = self.entries.remove(path) {
            gone.task.abort();
            self.media.detach(gone.participant, gone.out);
        }
    }
}

impl Drop for RelayedSet {
    fn drop(&mut self) {
        for (_, gone) in self.entries.drain() {
            gone.task.abort();
            self.media.detach(gone.participant, gone.out);
        }
    }
}

/// Mirrors the peer's announced broadcasts as relayed publishers until the session ends.
async fn relay_session(media: &MediaServer, room: RoomId, session: &Session) -> String {
    // The room's shard: every media call of this pull goes straight there.
    let media = &media.for_room(room);
    let subscriber = session.subscriber();
    let mut announcements = match subscriber.announced("").await {
        Ok(announcements) => announcements,
        Err(failure) => return failure.to_string(),
    };
    let mut relayed = RelayedSet {
        media: media.clone(),
        entries: HashMap::new(),
    };
    loop {
        let announcement = tokio::select! {
            next = announcements.next() => next,
            reason = session.closed() => break reason,
        };
        let announcement = match announcement {
            Ok(Some(announcement)) => announcement,
            Ok(None) => break "announcements ended".to_owned(),
            Err(Failure::Protocol(reason)) => break reason,
            Err(failure) => break failure.to_string(),
        };
        let Ok(participant) = announcement.path.parse::<ParticipantId>() else {
            tracing::debug!(
                path = announcement.path,
                "cascade: not a participant broadcast"
            );
            continue;
        };
        if !announcement.active {
            relayed.remove(&announcement.path);
            continue;
        }
        if relayed.entries.contains_key(&announcement.path) {
            continue;
        }
        let (out, mut events) = mpsc::channel(16);
        let request = JoinRequest {
            room,
            participant,
            grants: Grants {
                can_publish: true,
                can_subscribe: false,
                can_chat: false,
            },
        };
        if let Err(err) = media
            .attach_with(request, SubscribeMode::Relayed, out.clone())
            .await
        {
            tracing::warn!(%participant, %err, "cascade: cannot attach a relayed publisher");
            continue;
        }
        if let Err(err) = media.publish(participant, true).await {
            tracing::warn!(%participant, %err, "cascade: cannot publish a relayed track");
            media.detach(participant, out);
            continue;
        }
        let receive = receive_audio(
            subscriber.clone(),
            announcement.path.clone(),
            media.clone(),
            participant,
        );
        // A relayed publisher receives nothing; its events are only drained. One task for
        // both, so aborting it stops the receiving too.
        let task = tokio::spawn(async move {
            let drain = async { while events.recv().await.is_some() {} };
            tokio::select! {
                () = receive => {}
                () = drain => {}
            }
        });
        relayed.entries.insert(
            announcement.path,
            Relayed {
                participant,
                task,
                out,
            },
        );
    }
}
