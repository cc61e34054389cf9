//! One subscriber's measurement of what arrives: per stream loss and jitter, and every
//! packet's latency, counted only inside the measurement window.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::live::Live;
use crate::payload;
use crate::stats::{Measurements, SeqExtender, StreamStats};

/// Measures the streams one subscriber receives.
#[derive(Debug)]
pub struct Meter {
    live: Arc<Live>,
    streams: HashMap<u64, (SeqExtender, StreamStats)>,
    measured: Measurements,
}

impl Meter {
    /// A meter reporting to `live`.
    pub fn new(live: Arc<Live>) -> Self {
        Self {
            live,
            streams: HashMap::new(),
            measured: Measurements::default(),
        }
    }

    /// An RTP packet of stream `ssrc` arrived at `arrival_us`.
    pub fn rtp(&mut self, ssrc: u32, seq: u16, payload: &[u8], arrival_us: u64) {
        let (extender, _) = self.streams.entry(u64::from(ssrc)).or_default();
        let seq = extender.extend(seq);
        self.record(u64::from(ssrc), seq, payload, arrival_us);
    }

    /// A moq-lite frame of group `group` arrived at `arrival_us` (one meter per track).
    pub fn group(&mut self, group: u64, payload: &[u8], arrival_us: u64) {
        self.record(0, group, payload, arrival_us);
    }

    fn record(&mut self, stream: u64, seq: u64, payload: &[u8], arrival_us: u64) {
        self.live.received.fetch_add(1, Ordering::Relaxed);
        if !self.live.in_window(arrival_us) {
            return;
        }
        let (_, stats) = self.streams.entry(stream).or_default();
        stats.sequence.record(seq);
        match payload::read_stamp(payload) {
            Some(sent_us) => {
                self.measured
                    .latency
                    .record(arrival_us.saturating_sub(sent_us));
                stats
                    .jitter
                    .record(arrival_us as i64 - sent_us.min(i64::MAX as u64) as i64);
            }
            None => self.measured.malformed += 1,
        }
    }

    /// Everything measured.
    pub fn finish(self) -> Measurements {
        let mut measured = self.measured;
        for (_, stats) in self.streams.values() {
            measured.add_stream(stats);
        }
        measured
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Meter;
    use crate::live::Live;
    use crate::payload;

    fn packet(sent_us: u64) -> Vec<u8> {
        let mut out = Vec::new();
        payload::stamp(&[0xfc, 1, 2, 3], sent_us, &mut out).unwrap();
        out
    }

    #[test]
    fn only_the_window_is_measured() {
        let live = Arc::new(Live::default());
        let mut meter = Meter::new(live.clone());
        // Before the window: counted as received live, not measured.
        meter.rtp(7, 65_534, &packet(0), 1_000);
        live.open_window(2_000);
        meter.rtp(7, 65_535, &packet(1_000), 3_000);
        // 0 and 1 lost across the wrap.
        meter.rtp(7, 2, &packet(4_000), 6_000);
        meter.rtp(8, 100, &[0xfc, 1, 2], 6_500);
        live.close_window(10_000);
        meter.rtp(7, 3, &packet(5_000), 11_000);
        let m = meter.finish();
        assert_eq!(live.received.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert_eq!(m.received, 3);
        assert_eq!(m.lost, 2);
        assert_eq!(m.malformed, 1);
        assert_eq!(m.latency.count(), 2);
        assert_eq!(m.latency.max(), 2_000);
        // Transit 2000 then 2000: no jitter; the one-packet stream gives no estimate.
        assert_eq!(m.streams, 1);
        assert_eq!(m.mean_jitter_us(), 0.0);
    }
}
