//! Moderation that must reach whichever node holds a participant. A REST ban answered by any
//! API node is published on NATS (`veza.control.remove`); every media node removes the user's
//! participants it holds. Without NATS (one node) removals stay in the process.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use veza_proto::{RoomId, UserId};
use veza_sfu::quic::QuicServer;
use veza_signaling::Signaling;

/// The subject removals travel on.
const REMOVE_SUBJECT: &str = "veza.control.remove";

#[derive(Debug, Serialize, Deserialize)]
struct Removal {
    room: RoomId,
    user: UserId,
}

/// The node's media path: signaling sessions and QUIC sessions.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    pub signaling: Signaling,
    pub quic: QuicServer,
    /// The QUIC URL clients reach this node at.
    pub quic_url: String,
}

impl LocalMedia {
    fn remove_user(&self, room: RoomId, user: UserId) {
        self.signaling.remove_user(room, user);
        self.quic.remove_user(room, user);
    }
}

/// REST moderation's way to the media path: NATS in a cluster, direct on one node.
#[derive(Debug)]
pub struct Control {
    nats: Option<async_nats::Client>,
    local: Option<LocalMedia>,
}

impl Control {
    /// Removals go to `nats` when given (every node, this one included, acts on them), else
    /// straight to `local`.
    pub fn new(nats: Option<async_nats::Client>, local: Option<LocalMedia>) -> Arc<Self> {
        Arc::new(Self { nats, local })
    }

    /// Acts on the removals published by any node, for as long as the process runs.
    pub async fn listen(nats: &async_nats::Client, local: LocalMedia) -> anyhow::Result<()> {
        let mut removals = nats
            .subscribe(REMOVE_SUBJECT)
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to {REMOVE_SUBJECT}: {e}"))?;
        tokio::spawn(async move {
            while let Some(message) = removals.next().await {
                match serde_json::from_slice::<Removal>(&message.payload) {
                    Ok(removal) => local.remove_user(removal.room, removal.user),
                    Err(err) => tracing::debug!(%err, "malformed removal on NATS ignored"),
                }
            }
        });
        Ok(())
    }
}

impl veza_api::MediaControl for Control {
    fn remove_user(&self, room: RoomId, user: UserId) {
        match (&self.nats, &self.local) {
            (Some(nats), _) => {
                let nats = nats.clone();
                let payload = serde_json::to_vec(&Removal { room, user }).unwrap_or_default();
                tokio::spawn(async move {
                    if let Err(err) = nats.publish(REMOVE_SUBJECT, payload.into()).await {
                        tracing::warn!(%err, %room, %user, "could not publish a removal");
                    }
                });
            }
            (None, Some(local)) => local.remove_user(room, user),
            (None, None) => {}
        }
    }

    fn room_live(&self, room: RoomId) -> (u32, u32) {
        self.local
            .as_ref()
            .and_then(|local| local.quic.media().room_live(room))
            .map_or((0, 0), |live| (live.participants, live.publishers))
    }

    fn quic_endpoint(&self) -> Option<veza_api::QuicEndpoint> {
        self.local.as_ref().map(|local| veza_api::QuicEndpoint {
            url: local.quic_url.clone(),
            sha256: local.quic.certificate().sha256_hex(),
        })
    }
}
