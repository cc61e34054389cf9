//! The rewrite math of one down-track slot.
//!
//! A slot's output is a sequence of *segments*, one per stretch of a single source track.
//! Within a segment the mapping is a pure offset, so out-of-order and retransmitted packets
//! land on the same numbers every time:
//!
//! ```text
//! out_ext_seq = segment.out_start + (in_ext_seq - segment.base_in)
//! out_ts      = in_ts + segment.ts_offset            (mod 2^32)
//! ```
//!
//! A new segment starts at the first packet of a new source (a speaker switch, or the slot's
//! first packet ever). It continues the output right after the last packet sent:
//!
//! ```text
//! out_start = highest_out + 1
//! out_ts    = last_out_ts + max(960, elapsed wall time since that packet × 48 kHz)
//! ```
//!
//! so the receiver's jitter buffer sees one continuous stream with a pause in it. The first
//! segment starts at the slot's random initial sequence number and timestamp. Packets older
//! than the start of the current segment are not forwarded (their numbers would collide with
//! the previous source's). The last few segments are kept to map NACKed sequence numbers
//! back to their source packets.

use std::time::{Duration, Instant};

use veza_proto::TrackId;

/// One 20 ms Opus frame at 48 kHz.
pub(crate) const FRAME_TICKS: u32 = 960;
/// Clock rate of Opus RTP timestamps.
const CLOCK_RATE: u128 = 48_000;
/// Largest timestamp step taken for a gap: 2^30 ticks (6.2 hours), well inside the 2^31
/// half-range receivers compare timestamps in.
const MAX_GAP_TICKS: u128 = 1 << 30;
/// How many segments are remembered for NACK mapping.
const SEGMENTS: usize = 4;

/// Converts wall time to 48 kHz timestamp ticks, rounding down, capped at 2^30.
pub(crate) fn elapsed_ticks(elapsed: Duration) -> u32 {
    let ticks = (elapsed.as_nanos() * CLOCK_RATE / 1_000_000_000).min(MAX_GAP_TICKS);
    // At most 2^30, which fits.
    ticks as u32
}

/// One stretch of output from a single source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    source: TrackId,
    base_in: u64,
    out_start: u64,
    ts_offset: u32,
}

/// A packet's place in the slot's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// Extended output sequence number (rollover count starts at 0).
    pub(crate) ext_seq: u64,
    /// Output timestamp.
    pub(crate) timestamp: u32,
    /// True for the first packet of a segment (the engine sets the marker bit on it).
    pub(crate) first: bool,
}

/// Where a NACKed output sequence number came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) source: TrackId,
    pub(crate) in_ext_seq: u64,
    pub(crate) ts_offset: u32,
    pub(crate) first: bool,
}

/// Sequence and timestamp rewriting state of one slot.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    segments: [Option<Segment>; SEGMENTS],
    /// Index of the current segment in `segments`.
    head: usize,
    highest_out: Option<u64>,
    last_ts: u32,
    last_sent: Option<Instant>,
    initial_seq: u16,
    initial_ts: u32,
    carry: Carry,
}

/// What the slot forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carry {
    /// Nothing (an empty active-speaker slot).
    Nothing,
    /// The next packet of this source starts a new segment.
    Await(TrackId),
    /// The current segment's source.
    Current,
}

impl Rewriter {
    /// A slot that starts at `initial_seq`/`initial_ts` and will carry `source`, if known.
    pub(crate) fn new(initial_seq: u16, initial_ts: u32, source: Option<TrackId>) -> Self {
        Rewriter {
            segments: [None; SEGMENTS],
            head: 0,
            highest_out: None,
            last_ts: initial_ts,
            last_sent: None,
            initial_seq,
            initial_ts,
            carry: source.map_or(Carry::Nothing, Carry::Await),
        }
    }

    /// From the next packet of `source` on, carry that source (or nothing).
    pub(crate) fn switch_to(&mut self, source: Option<TrackId>) {
        self.carry = source.map_or(Carry::Nothing, Carry::Await);
    }

    fn current(&self) -> Option<&Segment> {
        self.segments[self.head].as_ref()
    }

    fn start_segment(&mut self, now: Instant, source: TrackId, in_ext: u64, in_ts: u32) {
        let (out_start, out_ts) = match (self.highest_out, self.last_sent) {
            (Some(highest), Some(at)) => {
                let gap = elapsed_ticks(now.saturating_duration_since(at)).max(FRAME_TICKS);
                (highest.wrapping_add(1), self.last_ts.wrapping_add(gap))
            }
            _ => (u64::from(self.initial_seq), self.initial_ts),
        };
        let segment = Segment {
            source,
            base_in: in_ext,
            out_start,
            ts_offset: out_ts.wrapping_sub(in_ts),
        };
        if self.current().is_some() {
            self.head = (self.head + 1) % SEGMENTS;
        }
        self.segments[self.head] = Some(segment);
    }

    /// Maps one packet of `source` into the slot's output, or `None` if this slot does not
    /// forward it (another source, or older than the current segment).
    pub(crate) fn rewrite(
        &mut self,
        now: Instant,
        source: TrackId,
        in_ext: u64,
        in_ts: u32,
    ) -> Option<Rewritten> {
        match self.carry {
            Carry::Await(next) if next == source => {
                self.carry = Carry::Current;
                self.start_segment(now, source, in_ext, in_ts);
            }
            Carry::Current => {}
            Carry::Await(_) | Carry::Nothing => return None,
        }
        let seg = *self.current()?;
        if seg.source != source || in_ext < seg.base_in {
            return None;
        }
        let ext_seq = seg.out_start.wrapping_add(in_ext - seg.base_in);
        let timestamp = in_ts.wrapping_add(seg.ts_offset);
        if self.highest_out.is_none_or(|h| ext_seq > h) {
            self.highest_out = Some(ext_seq);
            self.last_ts = timestamp;
            self.last_sent = Some(now);
        }
        Some(Rewritten {
            ext_seq,
            timestamp,
            first: ext_seq == seg.out_start,
        })
    }

    /// Extends a 16-bit output sequence number from a NACK to the sent packet it names:
    /// the closest one at or below the highest sent. `None` for numbers never sent.
    pub(crate) fn unwrap_out(&self, seq: u16) -> Option<u64> {
        let highest = self.highest_out?;
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        if delta > 0 {
            return None;
        }
        highest.checked_add_signed(delta)
    }

    /// The source packet behind an extended output sequence number, if one of the remembered
    /// segments covers it.
    pub(crate) fn resolve(&self, out_ext: u64) -> Option<Origin> {
        if out_ext > self.highest_out? {
            return None;
        }
        let mut end = u64::MAX; // exclusive: where the next newer segment starts
        for back in 0..SEGMENTS {
            let Some(seg) = self.segments[(self.head + SEGMENTS - back) % SEGMENTS] else {
                break;
            };
            if out_ext >= seg.out_start && out_ext < end {
                return Some(Origin {
                    source: seg.source,
                    in_ext_seq: seg.base_in.wrapping_add(out_ext - seg.out_start),
                    ts_offset: seg.ts_offset,
                    first: out_ext == seg.out_start,
                });
            }
            end = seg.out_start;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(n: u8) -> TrackId {
        format!("00000000-0000-0000-0000-{n:012}")
            .parse()
            .expect("a valid uuid")
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn elapsed_ticks_rounds_down_and_caps() {
        assert_eq!(elapsed_ticks(Duration::from_millis(20)), 960);
        assert_eq!(elapsed_ticks(Duration::from_micros(20_999)), 1007);
        assert_eq!(elapsed_ticks(Duration::from_secs(1_000_000)), 1 << 30);
    }

    #[test]
    fn first_packet_starts_at_the_initial_values() {
        let now = Instant::now();
        let a = track(1);
        let mut rw = Rewriter::new(1000, 77, Some(a));
        let r = rw.rewrite(now, a, 70_000, 5_000).expect("forwarded");
        assert_eq!((r.ext_seq, r.timestamp, r.first), (1000, 77, true));
        let r = rw
            .rewrite(now + 20 * MS, a, 70_001, 5_960)
            .expect("forwarded");
        assert_eq!((r.ext_seq, r.timestamp, r.first), (1001, 77 + 960, false));
    }

    #[test]
    fn output_sequence_wraps_at_u16_and_timestamp_at_u32() {
        let now = Instant::now();
        let a = track(1);
        let mut rw = Rewriter::new(65534, u32::MAX - 500, Some(a));
        let mut out = Vec::new();
        for i in 0..4u64 {
            let r = rw
                .rewrite(now, a, 100 + i, (i as u32) * 960)
                .expect("forwarded");
            out.push((r.ext_seq as u16, r.ext_seq, r.timestamp));
        }
        assert_eq!(
            out,
            vec![
                (65534, 65534, u32::MAX - 500),
                (65535, 65535, 459),
                (0, 65536, 1419),
                (1, 65537, 2379),
            ]
        );
        // NACKs name the wrapped numbers; they extend to the right packets.
        assert_eq!(rw.unwrap_out(65535), Some(65535));
        assert_eq!(rw.unwrap_out(1), Some(65537));
        assert_eq!(rw.unwrap_out(2), None, "never sent");
        let o = rw.resolve(65535).expect("covered");
        assert_eq!((o.source, o.in_ext_seq), (a, 101));
    }

    #[test]
    fn input_wrap_maps_through_the_offset() {
        let now = Instant::now();
        let a = track(1);
        let mut rw = Rewriter::new(10, 0, Some(a));
        // Input timestamps wrap; output follows with the same spacing.
        let r0 = rw.rewrite(now, a, 65_535, u32::MAX - 479).expect("fwd");
        let r1 = rw.rewrite(now, a, 65_536, 480).expect("fwd");
        assert_eq!(r1.ext_seq - r0.ext_seq, 1);
        assert_eq!(r1.timestamp.wrapping_sub(r0.timestamp), 960);
    }

    #[test]
    fn out_of_order_keeps_the_mapping_and_stale_packets_are_dropped() {
        let now = Instant::now();
        let a = track(1);
        let mut rw = Rewriter::new(500, 0, Some(a));
        rw.rewrite(now, a, 10, 0).expect("fwd");
        let late = rw.rewrite(now, a, 12, 1920).expect("fwd");
        let early = rw.rewrite(now, a, 11, 960).expect("fwd");
        assert_eq!((late.ext_seq, early.ext_seq), (502, 501));
        assert_eq!(early.timestamp, 960);
        assert!(rw.rewrite(now, a, 9, 0).is_none(), "before the segment");
        assert!(rw.rewrite(now, track(2), 13, 0).is_none(), "not the source");
    }

    #[test]
    fn switch_continues_sequence_and_advances_timestamp_by_wall_time() {
        let t0 = Instant::now();
        let (a, b) = (track(1), track(2));
        let mut rw = Rewriter::new(65535, u32::MAX - 100, Some(a));
        let last = rw.rewrite(t0, a, 1, 0).expect("fwd");
        rw.switch_to(Some(b));
        assert!(rw.rewrite(t0 + MS, a, 2, 960).is_none(), "old source");
        // 5 ms later: less than a frame, so the timestamp advances by one frame.
        let r = rw.rewrite(t0 + 5 * MS, b, 9_000, 123_456).expect("fwd");
        assert_eq!(r.ext_seq, last.ext_seq + 1);
        assert_eq!(r.ext_seq as u16, 0);
        assert_eq!(r.timestamp, last.timestamp.wrapping_add(960));
        assert!(r.first);
        // Back to a after 1.5 s: timestamp advances by 72 000.
        rw.switch_to(Some(a));
        let r2 = rw.rewrite(t0 + 1505 * MS, a, 80, 7).expect("fwd");
        assert_eq!(r2.ext_seq, r.ext_seq + 1);
        assert_eq!(r2.timestamp, r.timestamp.wrapping_add(72_000));
        // Packets of a from before the switch back are refused.
        assert!(rw.rewrite(t0 + 1506 * MS, a, 79, 0).is_none());
        // NACKs resolve through every remembered segment.
        assert_eq!(
            rw.resolve(last.ext_seq).map(|o| (o.source, o.in_ext_seq)),
            Some((a, 1))
        );
        assert_eq!(
            rw.resolve(r.ext_seq).map(|o| (o.source, o.in_ext_seq)),
            Some((b, 9_000))
        );
        assert_eq!(
            rw.resolve(r2.ext_seq).map(|o| (o.source, o.in_ext_seq)),
            Some((a, 80))
        );
        assert!(rw.resolve(r2.ext_seq + 1).is_none());
    }

    #[test]
    fn old_segments_are_forgotten() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new(0, 0, None);
        assert!(rw.unwrap_out(0).is_none());
        for n in 0..6u8 {
            rw.switch_to(Some(track(n)));
            rw.rewrite(t0, track(n), 100, 0).expect("fwd");
        }
        // Six one-packet segments at out 0..=5; only the last four are remembered.
        assert!(rw.resolve(1).is_none());
        assert_eq!(rw.resolve(2).map(|o| o.source), Some(track(2)));
        assert_eq!(rw.resolve(5).map(|o| o.source), Some(track(5)));
    }
}
