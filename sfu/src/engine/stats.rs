//! Counters and gauges for metrics. Counters only grow (wrapping at `u64::MAX`); no room or
//! user ids, so exporting them never leaks who is talking.

/// Why incoming packets were dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The sender is not a participant of this engine.
    pub unknown_participant: u64,
    /// The track is not published, or not by this sender.
    pub unknown_track: u64,
    /// The sender is muted by the server.
    pub muted: u64,
    /// Already received (same extended sequence number).
    pub duplicate: u64,
    /// Older than the duplicate window (the NACK cache size).
    pub too_old: u64,
    /// A sequence jump too large to be loss, not (yet) confirmed as a publisher restart.
    pub seq_jump: u64,
    /// An empty payload (nothing to forward).
    pub empty_payload: u64,
}

impl Dropped {
    /// All drops added up.
    pub fn total(&self) -> u64 {
        [
            self.unknown_participant,
            self.unknown_track,
            self.muted,
            self.duplicate,
            self.too_old,
            self.seq_jump,
            self.empty_payload,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n))
    }
}

/// A snapshot of the engine's counters and gauges, from [`Engine::stats`](super::Engine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// RTP packets handed to `handle_rtp`.
    pub packets_in: u64,
    /// Their payload bytes.
    pub bytes_in: u64,
    /// Packets emitted as `Output::Forward`, retransmissions included.
    pub packets_out: u64,
    /// Their payload bytes.
    pub bytes_out: u64,
    /// Incoming packets dropped, by reason.
    pub dropped: Dropped,
    /// Packet-to-slot forwards skipped because the packet is older than the slot's current
    /// source segment (late packets after a speaker switch or a slot's start).
    pub stale_for_slot: u64,
    /// Publisher restarts (sequence discontinuities) spliced over.
    pub restarts: u64,
    /// `handle_nack` calls.
    pub nacks_received: u64,
    /// Sequence numbers named by NACKs.
    pub nack_seqs: u64,
    /// Retransmissions sent (also counted in `packets_out`).
    pub retransmissions: u64,
    /// NACKed sequence numbers not answered: never sent, evicted, too old, or unknown source.
    pub nack_misses: u64,
    /// NACKed sequence numbers refused by the resend limits.
    pub nack_rate_limited: u64,
    /// NACKs for an SSRC that is not one of the subscriber's slots.
    pub nack_unknown_ssrc: u64,
    /// Active-speaker slot source changes.
    pub slot_switches: u64,
    /// `Event::ActiveSpeakers` emitted.
    pub speaker_events: u64,
    /// Gauge: rooms with at least one participant.
    pub rooms: u64,
    /// Gauge: participants.
    pub participants: u64,
    /// Gauge: published tracks.
    pub tracks: u64,
    /// Gauge: open slots.
    pub slots: u64,
}
