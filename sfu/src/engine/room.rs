//! The engine's bookkeeping records: rooms, participants, tracks and slots. Plain data; the
//! rules live in the engine (`mod.rs`).

use std::time::Instant;

use veza_proto::{Grants, ParticipantId, RoomId, TrackId};

use super::cache::PacketCache;
use super::ingress::Ingress;
use super::nack::ResendLimiter;
use super::slot::Rewriter;
use super::speakers::LevelMeter;
use super::types::{SlotId, SlotInfo, SlotKind, SlotSource, Ssrc, SubscribeMode};

/// A room: who is in it, in join order, and its speaker state.
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) participants: Vec<ParticipantId>,
    /// Published tracks, in publish order.
    pub(crate) tracks: Vec<TrackId>,
    /// Participants with active-speaker slots.
    pub(crate) speaker_subscribers: Vec<ParticipantId>,
    /// The speakers last reported.
    pub(crate) last_speakers: Vec<ParticipantId>,
    pub(crate) last_event_at: Option<Instant>,
    /// When the next speaker evaluation is due (also a key in the engine's timer set).
    pub(crate) next_tick: Option<Instant>,
}

impl Room {
    pub(crate) fn new() -> Self {
        Room {
            participants: Vec::new(),
            tracks: Vec::new(),
            speaker_subscribers: Vec::new(),
            last_speakers: Vec::new(),
            last_event_at: None,
            next_tick: None,
        }
    }
}

/// A participant: one presence in one room.
#[derive(Debug)]
pub(crate) struct Participant {
    pub(crate) room: RoomId,
    pub(crate) grants: Grants,
    pub(crate) mode: SubscribeMode,
    pub(crate) muted: bool,
    pub(crate) track: Option<TrackId>,
    /// Its slots: active-speaker slots in index order, then track slots in opening order.
    pub(crate) slots: Vec<SlotId>,
}

impl Participant {
    /// True if it gets a track slot for the track of a publisher in `owner_mode`.
    pub(crate) fn wants_track_of(&self, owner_mode: SubscribeMode) -> bool {
        self.grants.can_subscribe
            && match self.mode {
                SubscribeMode::AllTracks => true,
                SubscribeMode::LocalTracks => owner_mode != SubscribeMode::Relayed,
                SubscribeMode::ActiveSpeakers { .. } | SubscribeMode::Relayed => false,
            }
    }
}

/// A published track: its input state, packet cache, level and the slots it feeds.
#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) owner: ParticipantId,
    pub(crate) room: RoomId,
    pub(crate) muted: bool,
    pub(crate) ingress: Ingress,
    pub(crate) cache: PacketCache,
    pub(crate) meter: LevelMeter,
    /// The slots this track's packets go to, in the order they were attached.
    pub(crate) routes: Vec<SlotId>,
}

/// One subscriber slot.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) subscriber: ParticipantId,
    pub(crate) ssrc: Ssrc,
    pub(crate) kind: SlotKind,
    pub(crate) source: Option<SlotSource>,
    pub(crate) rewriter: Rewriter,
    /// Allocated on the slot's first NACK.
    pub(crate) limiter: Option<Box<ResendLimiter>>,
}

impl Slot {
    pub(crate) fn info(&self, id: SlotId) -> SlotInfo {
        SlotInfo {
            id,
            subscriber: self.subscriber,
            ssrc: self.ssrc,
            kind: self.kind,
            source: self.source,
        }
    }
}
