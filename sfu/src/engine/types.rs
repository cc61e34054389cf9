//! The engine's own small value types: SSRCs, slot ids, RTP packets in and out, outputs and
//! events.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use veza_proto::{ParticipantId, RoomId, TrackId};

/// An RTP synchronization source identifier. The engine allocates one per down-track slot:
/// never 0, never two alike within one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One output slot (down-track) of a subscriber: one outgoing RTP stream with its own SSRC.
/// Unique within one engine; the transport maps it to a transceiver (`mid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u32);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot-{}", self.0)
    }
}

/// An RFC 6464 client-to-mixer audio level: the voice activity bit and the level in -dBov,
/// 0 (loudest) to 127 (silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioLevel {
    /// The V bit: the sender's voice activity detector says this packet holds speech.
    pub voice: bool,
    /// The level in -dBov, 0..=127; 127 is silence.
    pub level: u8,
}

impl AudioLevel {
    /// Silence without voice activity.
    pub const SILENCE: AudioLevel = AudioLevel {
        voice: false,
        level: 127,
    };

    /// A level, clamped to 0..=127 (the 7 bits RFC 6464 carries).
    pub fn new(voice: bool, level: u8) -> Self {
        AudioLevel {
            voice,
            level: level.min(127),
        }
    }
}

/// An RTP payload, shared by reference count: str0m hands it in as `Arc<[u8]>` and takes it
/// back as one, so forwarding never copies it.
pub type Payload = std::sync::Arc<[u8]>;

/// One RTP packet from a publisher, already SRTP-decrypted and parsed by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpIn {
    /// The publisher's sequence number.
    pub seq: u16,
    /// The publisher's RTP timestamp (48 kHz clock for Opus).
    pub timestamp: u32,
    /// The marker bit (first packet of a talk spurt for audio).
    pub marker: bool,
    /// The payload type as the publisher negotiated it.
    pub payload_type: u8,
    /// The Opus (or RED) payload. Shared with every subscriber, never copied.
    pub payload: Payload,
    /// The RFC 6464 audio level header extension, if the publisher sent one.
    pub audio_level: Option<AudioLevel>,
}

/// One RTP packet for a subscriber, rewritten for its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpOut {
    /// The slot's SSRC.
    pub ssrc: Ssrc,
    /// The slot's sequence number.
    pub seq: u16,
    /// The slot's extended sequence number (`seq` plus 65536 × rollover count; the rollover
    /// count starts at 0). str0m's `RtpWrite` takes this as its `SeqNo`.
    pub ext_seq: u64,
    /// The slot's RTP timestamp (48 kHz).
    pub timestamp: u32,
    /// The marker bit: the publisher's, or set on the first packet after a slot starts or
    /// switches publisher.
    pub marker: bool,
    /// The publisher's payload type, unchanged: the transport maps it to the subscriber's.
    pub payload_type: u8,
    /// The publisher's payload: the same buffer (a reference-count clone).
    pub payload: Payload,
    /// The publisher's audio level, unchanged.
    pub audio_level: Option<AudioLevel>,
}

/// What the engine asks its driver to do. Drain with [`Engine::poll_output`](super::Engine).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `packet` to participant `to` on its slot `slot` (whose SSRC is `packet.ssrc`).
    Forward {
        /// The subscriber.
        to: ParticipantId,
        /// The subscriber's slot.
        slot: SlotId,
        /// The rewritten packet.
        packet: RtpOut,
        /// True for an answer to a NACK (the same seq and timestamp as the original).
        retransmission: bool,
    },
    /// Something signaling or metrics should know.
    Event(Event),
}

/// Which publisher a slot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotSource {
    /// The publisher.
    pub participant: ParticipantId,
    /// The publisher's track.
    pub track: TrackId,
}

/// What a slot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// One publisher's track, for as long as it is published.
    Track,
    /// Whichever publisher is among the room's loudest; `index` is the slot's place among the
    /// subscriber's active-speaker slots, from 0.
    ActiveSpeaker {
        /// Position among this subscriber's active-speaker slots.
        index: u8,
    },
}

/// A snapshot of one slot: what the transport needs to route its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotInfo {
    /// The slot.
    pub id: SlotId,
    /// The subscriber that owns the slot.
    pub subscriber: ParticipantId,
    /// The slot's outgoing SSRC.
    pub ssrc: Ssrc,
    /// Track or active-speaker slot.
    pub kind: SlotKind,
    /// The publisher it carries now, if any.
    pub source: Option<SlotSource>,
}

/// How a participant receives the room's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SubscribeMode {
    /// One track slot per other publisher, opened and closed as they publish and leave (the
    /// in-room default).
    #[default]
    AllTracks,
    /// A fixed number of active-speaker slots that follow the loudest publishers (WHEP).
    ActiveSpeakers {
        /// How many slots, 1..=[`MAX_SPEAKER_SLOTS`](super::MAX_SPEAKER_SLOTS).
        slots: u8,
    },
    /// Cascade out: one track slot per publisher of *this* node (not for publishers that are
    /// themselves [`SubscribeMode::Relayed`]), so a track crosses each node pair once and never
    /// loops. What another node pulling the room gets.
    LocalTracks,
    /// Cascade in: a publisher relayed from another node. It receives nothing, and its track
    /// is not relayed on to further nodes.
    Relayed,
}

impl SubscribeMode {
    /// True for the cascade's own participants, which are not the room's people.
    pub fn is_relay(self) -> bool {
        matches!(self, SubscribeMode::LocalTracks | SubscribeMode::Relayed)
    }
}

/// Things that happened, for signaling (renegotiation, UI) and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A participant entered a room.
    ParticipantJoined {
        /// The room.
        room: RoomId,
        /// Who joined.
        participant: ParticipantId,
    },
    /// A participant left or was removed; nothing flows to or from it any more.
    ParticipantLeft {
        /// The room.
        room: RoomId,
        /// Who left.
        participant: ParticipantId,
    },
    /// A participant started publishing.
    TrackPublished {
        /// The room.
        room: RoomId,
        /// The publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// A track is gone (unpublished, or its publisher left).
    TrackUnpublished {
        /// The room.
        room: RoomId,
        /// The publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// A subscriber got a new slot: add a send transceiver with this SSRC.
    SlotOpened(SlotInfo),
    /// A slot is gone: its SSRC sends nothing more.
    SlotClosed {
        /// The subscriber.
        subscriber: ParticipantId,
        /// The slot.
        slot: SlotId,
        /// The SSRC it used.
        ssrc: Ssrc,
    },
    /// An active-speaker slot now carries another publisher (or none).
    SlotSourceChanged {
        /// The subscriber.
        subscriber: ParticipantId,
        /// The slot.
        slot: SlotId,
        /// The publisher it carries from now on.
        source: Option<SlotSource>,
    },
    /// A participant was muted or unmuted by the server.
    Muted {
        /// The room.
        room: RoomId,
        /// Who.
        participant: ParticipantId,
        /// The new state.
        muted: bool,
    },
    /// The room's loudest speakers changed, loudest first, with smoothed levels from 0.0
    /// (silence, 127 dBov) to 1.0 (0 dBov), linear in dB.
    ActiveSpeakers {
        /// The room.
        room: RoomId,
        /// Up to `Config::active_speakers` participants.
        speakers: Vec<(ParticipantId, f32)>,
    },
}

/// A multiplicative hasher for the engine's own small integer keys ([`SlotId`], [`Ssrc`]).
/// The engine allocates those keys itself, so the keyed-hash defence of the standard hasher
/// buys nothing and costs a SipHash per forwarded packet.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Ids are 16-byte UUIDs: two words, not sixteen bytes.
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(buf));
        }
        for &b in words.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses, mix all input bits.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `HashMap` builder for [`IdHasher`].
pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

/// SplitMix64: a tiny deterministic generator for SSRCs and initial sequence numbers.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_level_clamps_to_seven_bits() {
        assert_eq!(AudioLevel::new(true, 200).level, 127);
        assert_eq!(AudioLevel::new(false, 30).level, 30);
    }

    #[test]
    fn splitmix_is_deterministic() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
