//! The sans-IO forwarding engine: rooms, participants, tracks, per-subscriber down-track
//! slots, NACK answers and active speakers. No I/O, no threads, no locks, no clock reads:
//! `now` is always an argument, so the same inputs give the same outputs, in production and
//! on the virtual clock of the simulation tests.
//!
//! # Model
//!
//! * A **participant** is one presence in one room, with [`Grants`]. Publishing needs
//!   `can_publish`, receiving needs `can_subscribe`.
//! * A publisher has one Opus **track** (48 kHz). Its packets go through
//!   [`Engine::handle_rtp`], are checked (unknown, muted, duplicate, too old), cached for
//!   NACKs, metered for audio level, and forwarded to every **slot** routed to the track.
//! * A **slot** is one outgoing RTP stream of one subscriber, with its own [`Ssrc`]. It
//!   rewrites sequence numbers and timestamps so its output is one continuous stream.
//!   *Track* slots carry one publisher (every in-room subscriber gets one per other
//!   publisher); *active-speaker* slots (WHEP, [`SubscribeMode::ActiveSpeakers`]) switch
//!   between the loudest publishers, continuing sequence numbers and timestamps across the
//!   switch. [`Event::SlotOpened`] and [`Event::SlotClosed`] tell the transport when to add or
//!   drop a send stream; [`Engine::slot`] and [`Engine::slot_by_ssrc`] answer "what is this
//!   slot"; the transport keeps its own slot → `mid` map.
//!
//! # Drive loop
//!
//! As with str0m's `Rtc` or quinn-proto's `Connection`: feed one input, then drain
//! [`Engine::poll_output`] until it returns `None`, then wait until the next input or the
//! instant [`Engine::poll_timeout`] names, whichever comes first, and feed that.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use veza_proto::{Grants, ParticipantId, RoomId, TrackId};
//! use veza_sfu::engine::{Config, Engine, Event, Output, Payload, RtpIn};
//!
//! let mut engine = Engine::new(Config::default());
//! let start = Instant::now();
//! let (room, alice, bob, mic) = (RoomId::new(), ParticipantId::new(), ParticipantId::new(), TrackId::new());
//! let grants = Grants { can_publish: true, can_subscribe: true, can_chat: true };
//! engine.add_participant(start, room, alice, grants)?;
//! engine.add_participant(start, room, bob, grants)?;
//! engine.publish_track(start, alice, mic)?;
//!
//! let mut forwarded = 0;
//! for i in 0..10u16 {
//!     let now = start + Duration::from_millis(20 * u64::from(i));
//!     // 1. Expired timers first, then the input that woke the loop.
//!     if engine.poll_timeout().is_some_and(|at| at <= now) {
//!         engine.handle_timeout(now);
//!     }
//!     let payload = Payload::from(&b"opus frame"[..]);
//!     let packet = RtpIn {
//!         seq: i,
//!         timestamp: u32::from(i) * 960,
//!         marker: i == 0,
//!         payload_type: 111,
//!         payload,
//!         audio_level: None,
//!     };
//!     engine.handle_rtp(now, alice, mic, packet);
//!     // 2. Drain every output.
//!     while let Some(output) = engine.poll_output() {
//!         match output {
//!             Output::Forward { to, slot, packet, .. } => {
//!                 // Look up `to`'s peer, write `packet` on the stream of `packet.ssrc`.
//!                 assert_eq!(to, bob);
//!                 let _ = (slot, packet);
//!                 forwarded += 1;
//!             }
//!             Output::Event(Event::SlotOpened(info)) => {
//!                 // Add a send stream with `info.ssrc` to `info.subscriber`'s peer.
//!                 let _ = info;
//!             }
//!             Output::Event(_) => {}
//!         }
//!     }
//!     // 3. Sleep until the next packet or `engine.poll_timeout()`.
//! }
//! assert_eq!(forwarded, 10);
//! # Ok::<(), veza_sfu::engine::EngineError>(())
//! ```
//!
//! Outputs are queued in order; control calls ([`Engine::remove_participant`],
//! [`Engine::set_muted`], closing a slot) also withdraw queued forwards they make obsolete,
//! but a driver that drains after every input never has any queued.
//!
//! # Rules
//!
//! * **Input.** Sequence numbers are extended to 64 bits (closest to the highest seen).
//!   Packets more than `Config::nack_cache_packets` behind the highest are dropped as too old;
//!   a jump of more than 3000 ahead (or a far-behind packet) is dropped, and if the next packet
//!   follows it, the publisher restarted: the new numbering is spliced right after the old
//!   one (timestamp advanced by the wall time in between), so subscribers see no jump.
//!   Duplicates (same extended number still in the cache) are dropped. Everything dropped is
//!   counted in [`Stats::dropped`].
//! * **Rewrite.** Per slot, `out seq = in ext seq + offset` and `out ts = in ts + offset`
//!   (mod 2^16, 2^32): out-of-order packets and DTX gaps keep their spacing. When a slot
//!   starts or switches source, the next packet gets `last out seq + 1` and
//!   `last out ts + max(960, 48 × ms since the last packet sent on the slot)` and the marker
//!   bit; packets of the new source older than that first one are not forwarded on the slot.
//! * **NACK.** Output numbers are mapped back through the slot's last four source segments
//!   to the track's packet cache and resent unchanged. Each packet goes at most
//!   `Config::max_resends` (2) times per slot, not twice within `Config::resend_interval`
//!   (20 ms), and a per-slot token bucket (`resend_rate` 50/s, `resend_burst` 50) caps the
//!   total, so no NACK pattern can amplify.
//! * **Active speakers.** A per-publisher moving average of RFC 6464 levels (300 ms time
//!   constant, silence after 100 ms without packets); a publisher speaks at or below 60
//!   -dBov. Every 500 ms a room ranks its unmuted publishers and reports the loudest
//!   `Config::active_speakers` (3) that speak as [`Event::ActiveSpeakers`], only when that
//!   ordered list changed, so never more often than every 500 ms. At the same ticks
//!   active-speaker slots are reassigned: a top speaker without a slot takes an empty one or
//!   replaces the quietest occupant that is not a top speaker; occupants otherwise stay; empty
//!   slots are filled with the best-ranked remaining publishers even if silent (a publisher
//!   without audio levels is still heard). Between ticks slots are only filled, never
//!   switched.

mod cache;
mod config;
mod error;
mod ingress;
mod nack;
mod room;
mod slot;
mod speakers;
mod stats;
mod types;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use veza_proto::{Grants, ParticipantId, RoomId, TrackId};

pub use config::Config;
pub use error::{EngineError, Permission};
pub use stats::{Dropped, Stats};
pub use types::{
    AudioLevel, Event, Output, Payload, RtpIn, RtpOut, SlotId, SlotInfo, SlotKind, SlotSource,
    Ssrc, SubscribeMode,
};

use cache::{Cached, PacketCache};
use ingress::{Accepted, Ingress};
use nack::{ResendLimiter, Verdict};
use room::{Participant, Room, Slot, Track};
use slot::Rewriter;
use speakers::{LevelMeter, MeterParams, Ranked};
pub(crate) use types::IdHash;
use types::SplitMix64;

/// The most active-speaker slots one subscriber may have.
pub const MAX_SPEAKER_SLOTS: u8 = 16;

/// The forwarding engine of one shard. See the [module documentation](self) for the drive
/// loop.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    meter: MeterParams,
    rooms: HashMap<RoomId, Room>,
    participants: HashMap<ParticipantId, Participant>,
    tracks: HashMap<TrackId, Track>,
    slots: HashMap<SlotId, Slot, IdHash>,
    ssrcs: HashMap<Ssrc, SlotId, IdHash>,
    /// Speaker evaluation ticks, earliest first.
    timers: BTreeSet<(Instant, RoomId)>,
    queue: VecDeque<Output>,
    rng: SplitMix64,
    next_slot: u32,
    stats: Stats,
}

impl Engine {
    /// An empty engine. The config is [validated](Config::validated) first.
    pub fn new(config: Config) -> Self {
        let config = config.validated();
        Engine {
            meter: MeterParams::new(&config),
            rng: SplitMix64::new(config.seed),
            config,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            tracks: HashMap::new(),
            slots: HashMap::default(),
            ssrcs: HashMap::default(),
            timers: BTreeSet::new(),
            queue: VecDeque::with_capacity(1024),
            next_slot: 1,
            stats: Stats::default(),
        }
    }

    /// The config in force (validated).
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- control -------------------------------------------------------------------------

    /// Adds `participant` to `room` (created on first use) as an in-room participant: with
    /// `can_subscribe` it gets a track slot for every other publisher, now and later.
    pub fn add_participant(
        &mut self,
        now: Instant,
        room: RoomId,
        participant: ParticipantId,
        grants: Grants,
    ) -> Result<(), EngineError> {
        self.add_participant_with(now, room, participant, grants, SubscribeMode::AllTracks)
    }

    /// Adds `participant` to `room` with an explicit [`SubscribeMode`]. Active-speaker slots
    /// need `can_subscribe` and 1..=[`MAX_SPEAKER_SLOTS`] slots; they are opened at once and
    /// filled with the room's best-ranked publishers.
    pub fn add_participant_with(
        &mut self,
        now: Instant,
        room_id: RoomId,
        participant: ParticipantId,
        grants: Grants,
        mode: SubscribeMode,
    ) -> Result<(), EngineError> {
        if self.participants.contains_key(&participant) {
            return Err(EngineError::ParticipantExists(participant));
        }
        if let SubscribeMode::ActiveSpeakers { slots } = mode {
            if !grants.can_subscribe {
                return Err(EngineError::NotAllowed {
                    participant,
                    needs: Permission::Subscribe,
                });
            }
            if slots == 0 || slots > MAX_SPEAKER_SLOTS {
                return Err(EngineError::InvalidSlotCount(slots));
            }
        }
        let room = self.rooms.entry(room_id).or_insert_with(Room::new);
        room.participants.push(participant);
        let existing_tracks = room.tracks.clone();
        let record = Participant {
            room: room_id,
            grants,
            mode,
            muted: false,
            track: None,
            slots: Vec::new(),
        };
        self.participants.insert(participant, record);
        self.emit(Event::ParticipantJoined {
            room: room_id,
            participant,
        });
        match mode {
            SubscribeMode::AllTracks | SubscribeMode::LocalTracks | SubscribeMode::Relayed => {
                for track in existing_tracks {
                    if self.wants_track(participant, track) {
                        self.open_track_slot(participant, track);
                    }
                }
            }
            SubscribeMode::ActiveSpeakers { slots } => {
                for index in 0..slots {
                    self.open_slot(participant, SlotKind::ActiveSpeaker { index }, None);
                }
                if let Some(room) = self.rooms.get_mut(&room_id) {
                    room.speaker_subscribers.push(participant);
                }
                self.assign_speaker_slots(now, room_id, Some(participant), false);
            }
        }
        Ok(())
    }

    /// Removes a participant (leave or kick): its track is unpublished, its slots closed, and
    /// forwards to it still queued are withdrawn. Nothing flows to or from it afterwards.
    pub fn remove_participant(
        &mut self,
        now: Instant,
        participant: ParticipantId,
    ) -> Result<(), EngineError> {
        let Some(record) = self.participants.get(&participant) else {
            return Err(EngineError::UnknownParticipant(participant));
        };
        let room_id = record.room;
        let track = record.track;
        let own_slots = record.slots.clone();
        if let Some(track) = track {
            self.drop_track(track);
        }
        for slot in own_slots {
            self.close_slot(slot);
        }
        self.participants.remove(&participant);
        self.queue
            .retain(|o| !matches!(o, Output::Forward { to, .. } if *to == participant));
        let mut empty = false;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.participants.retain(|p| *p != participant);
            room.speaker_subscribers.retain(|p| *p != participant);
            empty = room.participants.is_empty();
        }
        self.emit(Event::ParticipantLeft {
            room: room_id,
            participant,
        });
        if empty {
            if let Some(at) = self.rooms.remove(&room_id).and_then(|r| r.next_tick) {
                self.timers.remove(&(at, room_id));
            }
        } else {
            self.assign_speaker_slots(now, room_id, None, false);
        }
        Ok(())
    }

    /// Publishes `participant`'s audio track (Opus, 48 kHz): every other in-room subscriber
    /// gets a slot for it, and empty active-speaker slots in the room take it.
    pub fn publish_track(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        track: TrackId,
    ) -> Result<(), EngineError> {
        let Some(record) = self.participants.get_mut(&participant) else {
            return Err(EngineError::UnknownParticipant(participant));
        };
        if !record.grants.can_publish {
            return Err(EngineError::NotAllowed {
                participant,
                needs: Permission::Publish,
            });
        }
        if let Some(existing) = record.track {
            return Err(EngineError::AlreadyPublishing {
                participant,
                track: existing,
            });
        }
        if self.tracks.contains_key(&track) {
            return Err(EngineError::TrackExists(track));
        }
        record.track = Some(track);
        let room_id = record.room;
        let capacity = self.config.nack_cache_packets;
        self.tracks.insert(
            track,
            Track {
                owner: participant,
                room: room_id,
                muted: record.muted,
                ingress: Ingress::new(capacity as u64),
                cache: PacketCache::new(capacity),
                meter: LevelMeter::default(),
                routes: Vec::new(),
            },
        );
        let mut subscribers = Vec::new();
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.tracks.push(track);
            subscribers = room.participants.clone();
        }
        self.emit(Event::TrackPublished {
            room: room_id,
            participant,
            track,
        });
        for sub in subscribers {
            if sub != participant && self.wants_track(sub, track) {
                self.open_track_slot(sub, track);
            }
        }
        self.assign_speaker_slots(now, room_id, None, false);
        self.schedule(now, room_id);
        Ok(())
    }

    /// Unpublishes a track: its track slots close, active-speaker slots carrying it empty
    /// (and are refilled from the room).
    pub fn unpublish_track(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        track: TrackId,
    ) -> Result<(), EngineError> {
        if !self.participants.contains_key(&participant) {
            return Err(EngineError::UnknownParticipant(participant));
        }
        let room_id = match self.tracks.get(&track) {
            Some(t) if t.owner == participant => t.room,
            _ => return Err(EngineError::UnknownTrack(track)),
        };
        self.drop_track(track);
        self.assign_speaker_slots(now, room_id, None, false);
        Ok(())
    }

    /// Server-side mute. A muted participant's packets are dropped from the next one on, it
    /// leaves the active speakers (its level resets to silence) and its active-speaker slots
    /// are handed to others. Emits [`Event::Muted`] when the state changes.
    pub fn set_muted(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        muted: bool,
    ) -> Result<(), EngineError> {
        let Some(record) = self.participants.get_mut(&participant) else {
            return Err(EngineError::UnknownParticipant(participant));
        };
        if record.muted == muted {
            return Ok(());
        }
        record.muted = muted;
        let room_id = record.room;
        let mut speaker_slots = Vec::new();
        if let Some(track) = record.track.and_then(|t| self.tracks.get_mut(&t)) {
            track.muted = muted;
            if muted {
                track.meter.reset();
                speaker_slots = track.routes.clone();
            }
        }
        if muted {
            self.withdraw_forwards(&speaker_slots);
            for slot in speaker_slots {
                if matches!(
                    self.slots.get(&slot).map(|s| s.kind),
                    Some(SlotKind::ActiveSpeaker { .. })
                ) {
                    self.set_slot_source(slot, None);
                }
            }
        }
        self.emit(Event::Muted {
            room: room_id,
            participant,
            muted,
        });
        self.assign_speaker_slots(now, room_id, None, false);
        Ok(())
    }

    // ----- media ---------------------------------------------------------------------------

    /// One RTP packet from publisher `from` on `track`. Forwards it to every slot routed to
    /// the track, or drops and counts it (unknown sender or track, muted, empty, duplicate,
    /// too old, unconfirmed sequence jump).
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        from: ParticipantId,
        track_id: TrackId,
        packet: RtpIn,
    ) {
        let len = packet.payload.len() as u64;
        self.stats.packets_in += 1;
        self.stats.bytes_in += len;

        let Some(track) = self.tracks.get_mut(&track_id) else {
            if self.participants.contains_key(&from) {
                self.stats.dropped.unknown_track += 1;
            } else {
                self.stats.dropped.unknown_participant += 1;
            }
            return;
        };
        if track.owner != from {
            if self.participants.contains_key(&from) {
                self.stats.dropped.unknown_track += 1;
            } else {
                self.stats.dropped.unknown_participant += 1;
            }
            return;
        }
        if track.muted {
            self.stats.dropped.muted += 1;
            return;
        }
        if packet.payload.is_empty() {
            self.stats.dropped.empty_payload += 1;
            return;
        }
        let (ext_seq, timestamp) = match track.ingress.accept(now, packet.seq, packet.timestamp) {
            Accepted::Packet {
                ext_seq,
                timestamp,
                restarted,
            } => {
                if restarted {
                    self.stats.restarts += 1;
                }
                (ext_seq, timestamp)
            }
            Accepted::TooOld => {
                self.stats.dropped.too_old += 1;
                return;
            }
            Accepted::SeqJump => {
                self.stats.dropped.seq_jump += 1;
                return;
            }
        };
        if track.cache.contains(ext_seq) {
            self.stats.dropped.duplicate += 1;
            return;
        }
        if let Some(level) = packet.audio_level {
            track.meter.observe(now, level.level, &self.meter);
        }
        track.cache.insert(Cached {
            ext_seq,
            timestamp,
            marker: packet.marker,
            payload_type: packet.payload_type,
            payload: packet.payload.clone(),
            audio_level: packet.audio_level,
            arrived: now,
        });

        for &slot_id in &track.routes {
            // Routes only name open slots; a missing one is skipped, not trusted.
            let Some(slot) = self.slots.get_mut(&slot_id) else {
                continue;
            };
            let Some(out) = slot.rewriter.rewrite(now, track_id, ext_seq, timestamp) else {
                self.stats.stale_for_slot += 1;
                continue;
            };
            self.stats.packets_out += 1;
            self.stats.bytes_out += len;
            self.queue.push_back(Output::Forward {
                to: slot.subscriber,
                slot: slot_id,
                packet: RtpOut {
                    ssrc: slot.ssrc,
                    seq: out.ext_seq as u16,
                    ext_seq: out.ext_seq,
                    timestamp: out.timestamp,
                    marker: packet.marker || out.first,
                    payload_type: packet.payload_type,
                    payload: packet.payload.clone(),
                    audio_level: packet.audio_level,
                },
                retransmission: false,
            });
        }
    }

    /// A NACK from `subscriber` for its stream `ssrc`, naming output sequence numbers. Each
    /// one still cached and within the resend limits is resent with the same sequence number
    /// and timestamp; the rest are counted and ignored.
    pub fn handle_nack(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        ssrc: Ssrc,
        seqs: &[u16],
    ) {
        self.stats.nacks_received += 1;
        self.stats.nack_seqs += seqs.len() as u64;
        let slot_id = match self.ssrcs.get(&ssrc) {
            Some(&id)
                if self
                    .slots
                    .get(&id)
                    .is_some_and(|s| s.subscriber == subscriber) =>
            {
                id
            }
            _ => {
                self.stats.nack_unknown_ssrc += 1;
                return;
            }
        };
        let Some(slot) = self.slots.get_mut(&slot_id) else {
            return;
        };
        let limiter = slot
            .limiter
            .get_or_insert_with(|| Box::new(ResendLimiter::new(now, &self.config)));
        // A NACK cannot name more packets than a cache holds; anything past that is a storm.
        let budget = self.config.nack_cache_packets;
        self.stats.nack_rate_limited += seqs.len().saturating_sub(budget) as u64;
        for &seq in seqs.iter().take(budget) {
            let origin = slot
                .rewriter
                .unwrap_out(seq)
                .and_then(|out_ext| Some((out_ext, slot.rewriter.resolve(out_ext)?)));
            let cached = origin.and_then(|(out_ext, o)| {
                let track = self.tracks.get(&o.source)?;
                let c = track
                    .cache
                    .get(o.in_ext_seq, now, self.config.nack_cache_age)?;
                Some((out_ext, o, c))
            });
            let Some((out_ext, origin, c)) = cached else {
                self.stats.nack_misses += 1;
                continue;
            };
            if limiter.check(now, out_ext, &self.config) == Verdict::Limited {
                self.stats.nack_rate_limited += 1;
                continue;
            }
            self.stats.retransmissions += 1;
            self.stats.packets_out += 1;
            self.stats.bytes_out += c.payload.len() as u64;
            self.queue.push_back(Output::Forward {
                to: subscriber,
                slot: slot_id,
                packet: RtpOut {
                    ssrc,
                    seq: out_ext as u16,
                    ext_seq: out_ext,
                    timestamp: c.timestamp.wrapping_add(origin.ts_offset),
                    marker: c.marker || origin.first,
                    payload_type: c.payload_type,
                    payload: c.payload.clone(),
                    audio_level: c.audio_level,
                },
                retransmission: true,
            });
        }
    }

    // ----- time and output -----------------------------------------------------------------

    /// Runs every timer due at or before `now` (speaker evaluation of rooms).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, room_id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.tick_room(now, room_id);
        }
    }

    /// When [`Engine::handle_timeout`] next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The next output, in the order produced.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }

    // ----- queries -------------------------------------------------------------------------

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        Stats {
            rooms: self.rooms.len() as u64,
            participants: self.participants.len() as u64,
            tracks: self.tracks.len() as u64,
            slots: self.slots.len() as u64,
            ..self.stats
        }
    }

    /// A slot's routing data.
    pub fn slot(&self, slot: SlotId) -> Option<SlotInfo> {
        self.slots.get(&slot).map(|s| s.info(slot))
    }

    /// The slot that sends with this SSRC.
    pub fn slot_by_ssrc(&self, ssrc: Ssrc) -> Option<SlotInfo> {
        self.ssrcs.get(&ssrc).and_then(|&id| self.slot(id))
    }

    /// A participant's slots: active-speaker slots by index, then track slots in opening
    /// order. Empty for unknown participants.
    pub fn slots_of(&self, participant: ParticipantId) -> Vec<SlotInfo> {
        self.participants
            .get(&participant)
            .map(|p| p.slots.iter().filter_map(|&id| self.slot(id)).collect())
            .unwrap_or_default()
    }

    /// The room a participant is in.
    pub fn room_of(&self, participant: ParticipantId) -> Option<RoomId> {
        self.participants.get(&participant).map(|p| p.room)
    }

    /// Every room with at least one participant.
    pub fn rooms(&self) -> impl Iterator<Item = RoomId> + '_ {
        self.rooms.keys().copied()
    }

    /// Who is in `room`, in join order (empty for an unknown room).
    pub fn participants(&self, room: RoomId) -> &[ParticipantId] {
        self.rooms
            .get(&room)
            .map_or(&[], |r| r.participants.as_slice())
    }

    /// How a participant receives (and whether it is one of the cascade's own).
    pub fn mode_of(&self, participant: ParticipantId) -> Option<SubscribeMode> {
        self.participants.get(&participant).map(|p| p.mode)
    }

    /// The track a participant publishes.
    pub fn track_of(&self, participant: ParticipantId) -> Option<TrackId> {
        self.participants.get(&participant).and_then(|p| p.track)
    }

    /// The speakers last reported for a room, loudest first.
    pub fn active_speakers(&self, room: RoomId) -> &[ParticipantId] {
        self.rooms
            .get(&room)
            .map_or(&[], |r| r.last_speakers.as_slice())
    }

    // ----- internals -----------------------------------------------------------------------

    fn emit(&mut self, event: Event) {
        self.queue.push_back(Output::Event(event));
    }

    /// Removes queued forwards on these slots.
    fn withdraw_forwards(&mut self, slots: &[SlotId]) {
        if slots.is_empty() || self.queue.is_empty() {
            return;
        }
        self.queue
            .retain(|o| !matches!(o, Output::Forward { slot, .. } if slots.contains(slot)));
    }

    fn alloc_slot_id(&mut self) -> SlotId {
        loop {
            let id = SlotId(self.next_slot);
            self.next_slot = self.next_slot.wrapping_add(1);
            if !self.slots.contains_key(&id) {
                return id;
            }
        }
    }

    fn alloc_ssrc(&mut self) -> Ssrc {
        loop {
            let ssrc = Ssrc(self.rng.next_u64() as u32);
            if ssrc.0 != 0 && !self.ssrcs.contains_key(&ssrc) {
                return ssrc;
            }
        }
    }

    fn open_slot(
        &mut self,
        subscriber: ParticipantId,
        kind: SlotKind,
        source: Option<SlotSource>,
    ) -> SlotId {
        let id = self.alloc_slot_id();
        let ssrc = self.alloc_ssrc();
        let initial = self.rng.next_u64();
        let slot = Slot {
            subscriber,
            ssrc,
            kind,
            source,
            rewriter: Rewriter::new(
                initial as u16,
                (initial >> 32) as u32,
                source.map(|s| s.track),
            ),
            limiter: None,
        };
        let info = slot.info(id);
        self.slots.insert(id, slot);
        self.ssrcs.insert(ssrc, id);
        if let Some(p) = self.participants.get_mut(&subscriber) {
            p.slots.push(id);
        }
        if let Some(track) = source.and_then(|s| self.tracks.get_mut(&s.track)) {
            track.routes.push(id);
        }
        self.emit(Event::SlotOpened(info));
        id
    }

    /// True if `subscriber` gets a track slot for `track`.
    fn wants_track(&self, subscriber: ParticipantId, track: TrackId) -> bool {
        let owner_mode = self
            .tracks
            .get(&track)
            .and_then(|t| self.participants.get(&t.owner))
            .map(|p| p.mode);
        match (self.participants.get(&subscriber), owner_mode) {
            (Some(sub), Some(owner_mode)) => sub.wants_track_of(owner_mode),
            _ => false,
        }
    }

    fn open_track_slot(&mut self, subscriber: ParticipantId, track: TrackId) {
        let Some(owner) = self.tracks.get(&track).map(|t| t.owner) else {
            return;
        };
        let source = SlotSource {
            participant: owner,
            track,
        };
        self.open_slot(subscriber, SlotKind::Track, Some(source));
    }

    fn close_slot(&mut self, id: SlotId) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        self.ssrcs.remove(&slot.ssrc);
        if let Some(track) = slot.source.and_then(|s| self.tracks.get_mut(&s.track)) {
            track.routes.retain(|r| *r != id);
        }
        if let Some(p) = self.participants.get_mut(&slot.subscriber) {
            p.slots.retain(|s| *s != id);
        }
        self.withdraw_forwards(&[id]);
        self.emit(Event::SlotClosed {
            subscriber: slot.subscriber,
            slot: id,
            ssrc: slot.ssrc,
        });
    }

    /// Points an active-speaker slot at another source (or none).
    fn set_slot_source(&mut self, id: SlotId, source: Option<SlotSource>) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.source == source {
            return;
        }
        if let Some(old) = slot.source.and_then(|s| self.tracks.get_mut(&s.track)) {
            old.routes.retain(|r| *r != id);
        }
        slot.source = source;
        slot.rewriter.switch_to(source.map(|s| s.track));
        if let Some(new) = source.and_then(|s| self.tracks.get_mut(&s.track)) {
            new.routes.push(id);
        }
        let subscriber = slot.subscriber;
        self.stats.slot_switches += 1;
        self.emit(Event::SlotSourceChanged {
            subscriber,
            slot: id,
            source,
        });
    }

    /// Removes a track: closes its track slots, empties active-speaker slots carrying it.
    fn drop_track(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.remove(&track_id) else {
            return;
        };
        self.withdraw_forwards(&track.routes);
        for &slot_id in &track.routes {
            let Some(slot) = self.slots.get_mut(&slot_id) else {
                continue;
            };
            match slot.kind {
                SlotKind::Track => self.close_slot(slot_id),
                SlotKind::ActiveSpeaker { .. } => {
                    // The track is gone from the map, so only the slot needs changing.
                    slot.source = None;
                    slot.rewriter.switch_to(None);
                    let subscriber = slot.subscriber;
                    self.stats.slot_switches += 1;
                    self.emit(Event::SlotSourceChanged {
                        subscriber,
                        slot: slot_id,
                        source: None,
                    });
                }
            }
        }
        if let Some(p) = self.participants.get_mut(&track.owner) {
            p.track = None;
        }
        if let Some(room) = self.rooms.get_mut(&track.room) {
            room.tracks.retain(|t| *t != track_id);
        }
        self.emit(Event::TrackUnpublished {
            room: track.room,
            participant: track.owner,
            track: track_id,
        });
    }

    /// Arms the room's speaker tick if it is not armed.
    fn schedule(&mut self, now: Instant, room_id: RoomId) {
        let interval = self.config.speaker_interval;
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.next_tick.is_some() {
            return;
        }
        // `checked_add` only fails for instants centuries ahead; then tick at once.
        let after = |t: Instant| t.checked_add(interval).unwrap_or(t);
        let mut at = after(now);
        if let Some(last) = room.last_event_at {
            at = at.max(after(last));
        }
        room.next_tick = Some(at);
        self.timers.insert((at, room_id));
    }

    /// The room's unmuted publishers, loudest first.
    fn ranking(&mut self, now: Instant, room_id: RoomId) -> Vec<Ranked> {
        let Some(room) = self.rooms.get(&room_id) else {
            return Vec::new();
        };
        let threshold = f32::from(self.config.speaker_threshold);
        let mut ranking = Vec::with_capacity(room.tracks.len());
        for track_id in &room.tracks {
            let Some(track) = self.tracks.get_mut(track_id) else {
                continue;
            };
            if track.muted {
                continue;
            }
            let dbov = track.meter.level_at(now, &self.meter);
            ranking.push(Ranked {
                participant: track.owner,
                track: *track_id,
                dbov,
                speaking: dbov <= threshold,
            });
        }
        speakers::sort(&mut ranking);
        ranking
    }

    /// One speaker evaluation: report a changed speaker list, reassign active-speaker slots,
    /// re-arm while the room has tracks or reported speakers.
    fn tick_room(&mut self, now: Instant, room_id: RoomId) {
        let interval = self.config.speaker_interval;
        let ranking = self.ranking(now, room_id);
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        room.next_tick = None;
        let speakers: Vec<(ParticipantId, f32)> = ranking
            .iter()
            .filter(|r| r.speaking)
            .take(self.config.active_speakers)
            .map(|r| (r.participant, speakers::report_level(r.dbov)))
            .collect();
        let changed = room.last_speakers.len() != speakers.len()
            || room
                .last_speakers
                .iter()
                .zip(&speakers)
                .any(|(a, b)| *a != b.0);
        let spaced = room
            .last_event_at
            .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if changed && spaced {
            room.last_speakers = speakers.iter().map(|s| s.0).collect();
            room.last_event_at = Some(now);
            self.stats.speaker_events += 1;
            self.queue.push_back(Output::Event(Event::ActiveSpeakers {
                room: room_id,
                speakers,
            }));
        }
        let keep_ticking = !room.tracks.is_empty() || !room.last_speakers.is_empty() || changed;
        self.assign_with_ranking(room_id, &ranking, None, true);
        if keep_ticking {
            self.schedule(now, room_id);
        }
    }

    /// Reassigns active-speaker slots of the room (or of one subscriber) from a fresh ranking.
    fn assign_speaker_slots(
        &mut self,
        now: Instant,
        room_id: RoomId,
        only: Option<ParticipantId>,
        full: bool,
    ) {
        let has_subscribers = self
            .rooms
            .get(&room_id)
            .is_some_and(|r| !r.speaker_subscribers.is_empty());
        if !has_subscribers {
            return;
        }
        let ranking = self.ranking(now, room_id);
        self.assign_with_ranking(room_id, &ranking, only, full);
    }

    fn assign_with_ranking(
        &mut self,
        room_id: RoomId,
        ranking: &[Ranked],
        only: Option<ParticipantId>,
        full: bool,
    ) {
        let subscribers = match (only, self.rooms.get(&room_id)) {
            (Some(p), _) => vec![p],
            (None, Some(room)) => room.speaker_subscribers.clone(),
            (None, None) => return,
        };
        for sub in subscribers {
            let Some(p) = self.participants.get(&sub) else {
                continue;
            };
            let speaker_slots: Vec<SlotId> = p
                .slots
                .iter()
                .copied()
                .filter(|id| {
                    matches!(
                        self.slots.get(id).map(|s| s.kind),
                        Some(SlotKind::ActiveSpeaker { .. })
                    )
                })
                .collect();
            let current: Vec<Option<ParticipantId>> = speaker_slots
                .iter()
                .map(|id| {
                    self.slots
                        .get(id)
                        .and_then(|s| s.source)
                        .map(|s| s.participant)
                })
                .collect();
            let next = speakers::assign(&current, ranking, sub, full);
            for ((id, cur), new) in speaker_slots.iter().zip(current).zip(next) {
                if cur == new {
                    continue;
                }
                let source = new.and_then(|p| {
                    ranking
                        .iter()
                        .find(|r| r.participant == p)
                        .map(|r| SlotSource {
                            participant: p,
                            track: r.track,
                        })
                });
                self.set_slot_source(*id, source);
            }
        }
    }
}
