//! Per-track input normalisation: extends 16-bit sequence numbers to 64 bits, rejects packets
//! too old to tell from duplicates, and splices a publisher's restart (a sequence number jump
//! confirmed by a second packet) onto the previous stream so subscribers see one continuous
//! stream. Everything downstream (cache, slots) works in this normalised space.

use std::time::Instant;

use super::slot::{FRAME_TICKS, elapsed_ticks};

/// A forward jump larger than this (60 s of 20 ms packets) is not loss but a discontinuity.
pub(crate) const MAX_FORWARD_JUMP: i64 = 3000;
/// A discontinuity is accepted as a restart when the next packet follows the first
/// out-of-window one within this many sequence numbers.
const RESTART_CONFIRM: u16 = 16;

/// What became of one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Use it, with this normalised extended sequence number and timestamp.
    Packet {
        /// Normalised extended sequence number.
        ext_seq: u64,
        /// Normalised timestamp.
        timestamp: u32,
        /// True if the stream was spliced at this packet (publisher restart).
        restarted: bool,
    },
    /// Older than the duplicate window: cannot be told from a duplicate.
    TooOld,
    /// A forward jump too large to be loss; kept as a restart candidate.
    SeqJump,
}

/// Sequence and timestamp state of one published track.
#[derive(Debug, Clone)]
pub(crate) struct Ingress {
    /// Highest raw extended sequence number. Raw numbering starts at `65536 + seq`, so a
    /// packet from just before the first one still has a positive number.
    highest_raw: Option<u64>,
    /// Added (mod 2^64) to a raw extended sequence number to normalise it.
    seq_splice: u64,
    /// Added (mod 2^32) to a raw timestamp to normalise it.
    ts_splice: u32,
    /// Normalised timestamp of the highest packet, and when it arrived.
    last_ts: u32,
    last_arrival: Option<Instant>,
    /// The raw sequence number of the last out-of-window packet, if the one before this was.
    pending_jump: Option<u16>,
    /// Packets at least this far behind the highest are too old.
    window: i64,
}

impl Ingress {
    /// Input state whose duplicate window is `window` packets (the cache size).
    pub(crate) fn new(window: u64) -> Self {
        Ingress {
            highest_raw: None,
            seq_splice: 0,
            ts_splice: 0,
            last_ts: 0,
            last_arrival: None,
            pending_jump: None,
            window: i64::try_from(window).unwrap_or(i64::MAX),
        }
    }

    /// Normalises one packet's sequence number and timestamp.
    pub(crate) fn accept(&mut self, now: Instant, seq: u16, timestamp: u32) -> Accepted {
        let Some(highest) = self.highest_raw else {
            let raw = (1 << 16) | u64::from(seq);
            self.highest_raw = Some(raw);
            self.last_ts = timestamp;
            self.last_arrival = Some(now);
            return Accepted::Packet {
                ext_seq: raw,
                timestamp,
                restarted: false,
            };
        };
        // Closest extension to the highest: delta in -32768..=32767.
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        if delta > MAX_FORWARD_JUMP || -delta >= self.window {
            return self.out_of_window(now, seq, timestamp, delta);
        }
        self.pending_jump = None;
        // highest >= 65536 - 32768 after any history, and delta >= -32768: never negative.
        let raw = highest.wrapping_add_signed(delta);
        let ts = timestamp.wrapping_add(self.ts_splice);
        if delta > 0 {
            self.highest_raw = Some(raw);
            self.last_ts = ts;
            self.last_arrival = Some(now);
        }
        Accepted::Packet {
            ext_seq: raw.wrapping_add(self.seq_splice),
            timestamp: ts,
            restarted: false,
        }
    }

    fn out_of_window(&mut self, now: Instant, seq: u16, timestamp: u32, delta: i64) -> Accepted {
        let confirmed = self
            .pending_jump
            .is_some_and(|p| (1..=RESTART_CONFIRM).contains(&seq.wrapping_sub(p)));
        if !confirmed {
            self.pending_jump = Some(seq);
            return if delta > 0 {
                Accepted::SeqJump
            } else {
                Accepted::TooOld
            };
        }
        // A restart: this packet continues the normalised stream right after the highest one,
        // its timestamp advanced by the wall time since then (at least one frame).
        let old_highest = self.highest_raw.unwrap_or(0).wrapping_add(self.seq_splice);
        let raw = (1 << 16) | u64::from(seq);
        self.seq_splice = old_highest.wrapping_add(1).wrapping_sub(raw);
        let gap = self
            .last_arrival
            .map_or(FRAME_TICKS, |at| {
                elapsed_ticks(now.saturating_duration_since(at))
            })
            .max(FRAME_TICKS);
        let ts = self.last_ts.wrapping_add(gap);
        self.ts_splice = ts.wrapping_sub(timestamp);
        self.highest_raw = Some(raw);
        self.last_ts = ts;
        self.last_arrival = Some(now);
        self.pending_jump = None;
        Accepted::Packet {
            ext_seq: raw.wrapping_add(self.seq_splice),
            timestamp: ts,
            restarted: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ext(a: Accepted) -> (u64, u32) {
        match a {
            Accepted::Packet {
                ext_seq, timestamp, ..
            } => (ext_seq, timestamp),
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    #[test]
    fn sequence_wraps_into_the_next_cycle() {
        let now = Instant::now();
        let mut ing = Ingress::new(512);
        let (a, _) = ext(ing.accept(now, 65534, 0));
        let (b, _) = ext(ing.accept(now, 65535, 960));
        let (c, _) = ext(ing.accept(now, 0, 1920));
        let (d, _) = ext(ing.accept(now, 1, 2880));
        assert_eq!([b - a, c - a, d - a], [1, 2, 3]);
        // Reordered across the wrap: still the old cycle.
        let (e, _) = ext(ing.accept(now, 65533, 0));
        assert_eq!(e + 1, a);
    }

    #[test]
    fn timestamps_pass_through_unchanged_across_u32_wrap() {
        let now = Instant::now();
        let mut ing = Ingress::new(512);
        let (_, t0) = ext(ing.accept(now, 10, u32::MAX - 100));
        let (_, t1) = ext(ing.accept(now, 11, 859));
        assert_eq!(t0, u32::MAX - 100);
        assert_eq!(t1.wrapping_sub(t0), 960);
    }

    #[test]
    fn too_old_and_jumps_are_refused_once() {
        let now = Instant::now();
        let mut ing = Ingress::new(512);
        ext(ing.accept(now, 1000, 0));
        assert_eq!(ing.accept(now, 1000 - 512, 0), Accepted::TooOld);
        assert_eq!(
            ing.accept(now, 40_000, 0),
            Accepted::TooOld,
            "half a cycle back"
        );
        // An in-window packet clears the candidate.
        ext(ing.accept(now, 1001, 960));
        assert_eq!(ing.accept(now, 1001 + 5000, 0), Accepted::SeqJump);
        ext(ing.accept(now, 1002, 1920));
        assert_eq!(ing.accept(now, 1002 + 5000, 0), Accepted::SeqJump);
    }

    #[test]
    fn confirmed_restart_is_spliced_continuously() {
        let t0 = Instant::now();
        let mut ing = Ingress::new(512);
        let (a, ta) = ext(ing.accept(t0, 100, 5000));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(ing.accept(t1, 20_000, 7), Accepted::SeqJump);
        let got = ing.accept(t1, 20_001, 967);
        let Accepted::Packet {
            ext_seq,
            timestamp,
            restarted,
        } = got
        else {
            panic!("expected a restart, got {got:?}");
        };
        assert!(restarted);
        assert_eq!(ext_seq, a + 1);
        assert_eq!(timestamp, ta + 4800);
        // The new stream continues normally.
        let (b, tb) = ext(ing.accept(t1, 20_002, 1927));
        assert_eq!((b, tb), (a + 2, ta + 4800 + 960));
    }
}
