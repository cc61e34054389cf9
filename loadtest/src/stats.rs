//! What subscribers measure: a latency histogram, loss from sequence numbers, RFC 3550
//! interarrival jitter, and exact percentiles of small samples (connect times).

/// Sub-buckets per power of two: values are kept to within 1/64 (1.6 %).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 µs (12 days) have their own bucket; larger ones share the last.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;

/// A log-linear histogram of non-negative values (microseconds here): exact below 128, within
/// 1.6 % above, in a few kilobytes whatever the count.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn bucket(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exp = (63 - value.leading_zeros()).min(MAX_EXP);
    let value = value.min((1 << (MAX_EXP + 1)) - 1);
    let shift = exp - SUB_BITS;
    let mantissa = (value >> shift) & (SUB - 1);
    ((exp - SUB_BITS + 1) as usize) * SUB as usize + mantissa as usize
}

/// The smallest value of a bucket and the bucket's width.
fn bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, 1);
    }
    let shift = index / SUB - 1;
    let mantissa = index % SUB;
    ((SUB + mantissa) << shift, 1 << shift)
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value counted (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value below which a fraction `q` (0..=1) of the values lie: the middle of its
    /// bucket, never above the maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                let (low, width) = bounds(index);
                return (low + width / 2).min(self.max);
            }
        }
        self.max
    }
}

/// The nearest-rank percentile of a sorted slice (0 when empty).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

/// Extends 16-bit RTP sequence numbers to 64 bits: each is placed closest to the last one.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    /// The extended number of `seq`.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let extended = match self.last {
            // Start one cycle up, so a packet from before the first still has a number.
            None => (1 << 16) + u64::from(seq),
            Some(last) => {
                let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
                last.saturating_add_signed(delta)
            }
        };
        if self.last.is_none_or(|last| extended > last) {
            self.last = Some(extended);
        }
        extended
    }
}

/// Loss of one stream from its (extended) sequence numbers, counted from the first packet
/// received: expected = highest − first + 1, lost = expected − received (RFC 3550 §6.4.1;
/// duplicates make up for losses, as there).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sequence {
    first: Option<u64>,
    highest: u64,
    received: u64,
}

impl Sequence {
    /// Counts a packet.
    pub fn record(&mut self, seq: u64) {
        match self.first {
            None => {
                self.first = Some(seq);
                self.highest = seq;
            }
            Some(first) => {
                // A straggler from before the first packet moves the start back.
                if seq < first {
                    self.first = Some(seq);
                }
                self.highest = self.highest.max(seq);
            }
        }
        self.received += 1;
    }

    /// Packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets the sequence numbers say were sent.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |first| self.highest - first + 1)
    }

    /// Packets missing.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// RFC 3550 §6.4.1 interarrival jitter, in microseconds, from each packet's transit time
/// (arrival − send; any constant clock offset cancels out).
#[derive(Debug, Default, Clone, Copy)]
pub struct Jitter {
    last_transit: Option<i64>,
    jitter: f64,
}

impl Jitter {
    /// Counts a packet with this transit time.
    pub fn record(&mut self, transit_us: i64) {
        if let Some(last) = self.last_transit {
            let d = (transit_us - last).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit_us);
    }

    /// The current estimate in microseconds.
    pub fn micros(&self) -> f64 {
        self.jitter
    }
}

/// One received stream (one publisher as one subscriber hears it).
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamStats {
    /// Loss from sequence numbers.
    pub sequence: Sequence,
    /// Interarrival jitter.
    pub jitter: Jitter,
}

/// Everything subscribers measured, merged over streams and peers.
#[derive(Debug, Default, Clone)]
pub struct Measurements {
    /// Arrival − send of every packet, µs.
    pub latency: Histogram,
    /// Packets received in the window.
    pub received: u64,
    /// Packets missing from the sequence numbers.
    pub lost: u64,
    /// Packets without a readable send time.
    pub malformed: u64,
    /// Sum over streams of each stream's final jitter, µs.
    pub jitter_sum_us: f64,
    /// Streams that contributed a jitter estimate.
    pub streams: u64,
}

impl Measurements {
    /// Adds one finished stream.
    pub fn add_stream(&mut self, stream: &StreamStats) {
        self.received += stream.sequence.received();
        self.lost += stream.sequence.lost();
        if stream.sequence.received() > 1 {
            self.jitter_sum_us += stream.jitter.micros();
            self.streams += 1;
        }
    }

    /// Adds another peer's measurements.
    pub fn merge(&mut self, other: &Measurements) {
        self.latency.merge(&other.latency);
        self.received += other.received;
        self.lost += other.lost;
        self.malformed += other.malformed;
        self.jitter_sum_us += other.jitter_sum_us;
        self.streams += other.streams;
    }

    /// Lost / (received + lost).
    pub fn loss_ratio(&self) -> f64 {
        let expected = self.received + self.lost;
        if expected == 0 {
            0.0
        } else {
            self.lost as f64 / expected as f64
        }
    }

    /// Mean of the streams' jitter, µs.
    pub fn mean_jitter_us(&self) -> f64 {
        if self.streams == 0 {
            0.0
        } else {
            self.jitter_sum_us / self.streams as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_their_precision() {
        for value in [
            0,
            1,
            63,
            64,
            127,
            128,
            129,
            1000,
            20_000,
            123_456_789,
            1 << 40,
        ] {
            let (low, width) = bounds(bucket(value));
            assert!(
                low <= value && value < low + width,
                "{value}: [{low}, +{width})"
            );
            assert!(width as f64 <= (value as f64 / 64.0).max(1.0), "{value}");
        }
        // Consecutive buckets tile the line.
        for index in 0..BUCKETS - 1 {
            let (low, width) = bounds(index);
            assert_eq!(bounds(index + 1).0, low + width, "bucket {index}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_sample() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), 10_000);
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 / 60.0;
        assert!(close(h.quantile(0.5), 5_000), "{}", h.quantile(0.5));
        assert!(close(h.quantile(0.95), 9_500), "{}", h.quantile(0.95));
        assert!(close(h.quantile(0.99), 9_900), "{}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn small_values_are_exact_and_merging_adds() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in [5, 5, 5, 7] {
            a.record(v);
        }
        b.record(100);
        a.merge(&b);
        assert_eq!(a.count(), 5);
        assert_eq!(a.quantile(0.5), 5);
        assert_eq!(a.quantile(0.8), 7);
        assert_eq!(a.quantile(0.99), 100);
        assert_eq!(a.max(), 100);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
        assert_eq!(percentile(&sorted, 0.5), 50);
        assert_eq!(percentile(&sorted, 0.99), 100);
        assert_eq!(percentile(&sorted, 0.0), 10);
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    fn loss_of(seqs: &[u16]) -> (u64, u64, u64) {
        let mut ext = SeqExtender::default();
        let mut s = Sequence::default();
        for &seq in seqs {
            s.record(ext.extend(seq));
        }
        (s.received(), s.expected(), s.lost())
    }

    #[test]
    fn loss_from_sequence_numbers() {
        assert_eq!(loss_of(&[]), (0, 0, 0));
        assert_eq!(loss_of(&[100, 101, 102, 103]), (4, 4, 0));
        assert_eq!(loss_of(&[100, 101, 104, 105]), (4, 6, 2));
        // Reordered: nothing lost.
        assert_eq!(loss_of(&[100, 102, 101, 103]), (4, 4, 0));
        // A late packet from before the first one received.
        assert_eq!(loss_of(&[100, 101, 99, 102]), (4, 4, 0));
    }

    #[test]
    fn loss_across_the_wrap() {
        assert_eq!(loss_of(&[65_533, 65_534, 65_535, 0, 1, 2]), (6, 6, 0));
        assert_eq!(loss_of(&[65_534, 65_535, 2, 3]), (4, 6, 2));
        // Reordered across the wrap.
        assert_eq!(loss_of(&[65_535, 1, 0, 2]), (4, 4, 0));
        // Many cycles: 200,000 packets with every 1000th missing.
        let seqs: Vec<u16> = (0..200_000u32)
            .filter(|n| n % 1000 != 500)
            .map(|n| n as u16)
            .collect();
        assert_eq!(loss_of(&seqs), (199_800, 200_000, 200));
    }

    #[test]
    fn extension_places_numbers_near_the_highest() {
        let mut ext = SeqExtender::default();
        let a = ext.extend(65_535);
        let b = ext.extend(0);
        let c = ext.extend(65_534);
        assert_eq!(b, a + 1);
        assert_eq!(c, a - 1);
        assert_eq!(ext.extend(1), a + 2);
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut j = Jitter::default();
        // Constant transit: no jitter.
        for _ in 0..10 {
            j.record(5_000);
        }
        assert_eq!(j.micros(), 0.0);
        // One packet 1.6 ms late: J = 1600/16 = 100, then it decays by 15/16 per packet as
        // transit returns (|D| = 1600 once more, then 0).
        j.record(6_600);
        assert!((j.micros() - 100.0).abs() < 1e-9);
        j.record(5_000);
        assert!((j.micros() - (100.0 + (1600.0 - 100.0) / 16.0)).abs() < 1e-9);
        let before = j.micros();
        j.record(5_000);
        assert!((j.micros() - before * 15.0 / 16.0).abs() < 1e-9);
        // Alternating ±2 ms converges to 2 ms.
        let mut j = Jitter::default();
        for i in 0..1000 {
            j.record(if i % 2 == 0 { 0 } else { 2_000 });
        }
        assert!((j.micros() - 2_000.0).abs() < 1.0, "{}", j.micros());
    }

    #[test]
    fn measurements_merge_streams_and_peers() {
        let mut stream = StreamStats::default();
        let mut ext = SeqExtender::default();
        for (i, seq) in [10u16, 11, 13].into_iter().enumerate() {
            stream.sequence.record(ext.extend(seq));
            stream.jitter.record(1000 + 160 * i as i64);
        }
        let mut peer = Measurements::default();
        peer.add_stream(&stream);
        peer.malformed = 1;
        let mut all = Measurements::default();
        all.merge(&peer);
        all.merge(&peer);
        assert_eq!(all.received, 6);
        assert_eq!(all.lost, 2);
        assert_eq!(all.malformed, 2);
        assert!((all.loss_ratio() - 0.25).abs() < 1e-9);
        assert!((all.mean_jitter_us() - stream.jitter.micros()).abs() < 1e-9);
        assert_eq!(Measurements::default().loss_ratio(), 0.0);
    }
}
