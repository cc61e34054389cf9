//! The per-track packet cache: a ring of the last N packets indexed by extended sequence
//! number. It answers NACKs and tells duplicates apart. Its memory is allocated once when the
//! track is published; inserting a packet only moves a reference-counted handle.

use std::time::{Duration, Instant};

use super::types::Payload;

use super::types::AudioLevel;

/// One cached packet, in the track's normalised sequence and timestamp space.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) ext_seq: u64,
    pub(crate) timestamp: u32,
    pub(crate) marker: bool,
    pub(crate) payload_type: u8,
    pub(crate) payload: Payload,
    pub(crate) audio_level: Option<AudioLevel>,
    pub(crate) arrived: Instant,
}

/// Ring buffer of packets, slot `ext_seq & mask`.
#[derive(Debug)]
pub(crate) struct PacketCache {
    entries: Box<[Option<Cached>]>,
    mask: u64,
}

impl PacketCache {
    /// A cache of `capacity` packets; `capacity` must be a power of two (the config ensures
    /// it).
    pub(crate) fn new(capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        PacketCache {
            entries: vec![None; capacity].into_boxed_slice(),
            mask: capacity as u64 - 1,
        }
    }

    fn index(&self, ext_seq: u64) -> usize {
        // The mask keeps the value below the slice length, which is at most 4096.
        (ext_seq & self.mask) as usize
    }

    /// True if the packet with this extended sequence number is held.
    pub(crate) fn contains(&self, ext_seq: u64) -> bool {
        matches!(&self.entries[self.index(ext_seq)], Some(c) if c.ext_seq == ext_seq)
    }

    /// Stores a packet, evicting whatever shared its ring slot.
    pub(crate) fn insert(&mut self, packet: Cached) {
        let i = self.index(packet.ext_seq);
        self.entries[i] = Some(packet);
    }

    /// The packet with this extended sequence number, if held and not older than `max_age`.
    pub(crate) fn get(&self, ext_seq: u64, now: Instant, max_age: Duration) -> Option<&Cached> {
        match &self.entries[self.index(ext_seq)] {
            Some(c)
                if c.ext_seq == ext_seq && now.saturating_duration_since(c.arrived) <= max_age =>
            {
                Some(c)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ext_seq: u64, arrived: Instant) -> Cached {
        Cached {
            ext_seq,
            timestamp: ext_seq as u32 * 960,
            marker: false,
            payload_type: 111,
            payload: Payload::from(&b"opus"[..]),
            audio_level: None,
            arrived,
        }
    }

    #[test]
    fn keeps_the_last_capacity_packets() {
        let now = Instant::now();
        let mut cache = PacketCache::new(16);
        for s in 100..140 {
            cache.insert(packet(s, now));
        }
        assert!(!cache.contains(123));
        assert!(cache.contains(124));
        assert!(cache.contains(139));
        assert!(!cache.contains(140));
        assert_eq!(
            cache
                .get(130, now, Duration::from_secs(2))
                .map(|c| c.ext_seq),
            Some(130)
        );
        assert!(cache.get(110, now, Duration::from_secs(2)).is_none());
    }

    #[test]
    fn old_packets_are_not_served() {
        let t0 = Instant::now();
        let mut cache = PacketCache::new(16);
        cache.insert(packet(5, t0));
        let max = Duration::from_secs(2);
        assert!(cache.get(5, t0 + max, max).is_some());
        assert!(
            cache
                .get(5, t0 + max + Duration::from_millis(1), max)
                .is_none()
        );
        // Still known for duplicate detection.
        assert!(cache.contains(5));
    }
}
