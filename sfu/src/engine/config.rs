//! Engine configuration. `Clone`, so one config makes the engine of every shard.

use std::time::Duration;

/// Tunables of one [`Engine`](super::Engine). Every field documents its default; out-of-range
/// values are clamped by [`Config::validated`] (which `Engine::new` applies).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Seed of the generator for SSRCs and initial sequence numbers and timestamps. Give each
    /// shard its own. Default `0x5645_5A41` ("VEZA").
    pub seed: u64,
    /// How many speakers an [`Event::ActiveSpeakers`](super::Event) lists at most. Default 3.
    pub active_speakers: usize,
    /// How often a room's speakers are evaluated; events come at most this often and only
    /// when the ordered list changed. Default 500 ms.
    pub speaker_interval: Duration,
    /// A smoothed level at or below this many -dBov counts as speaking. Default 60.
    pub speaker_threshold: u8,
    /// Time constant of the exponential moving average of audio levels (per 20 ms packet the
    /// weight of the new level is `1 - exp(-20 ms / this)`). Default 300 ms.
    pub level_smoothing: Duration,
    /// A publisher that sent no packet for this long is treated as silent from then on (DTX,
    /// loss). Default 100 ms.
    pub level_silence_after: Duration,
    /// Packets kept per track for NACK answers and duplicate detection (rounded up to a power
    /// of two, 16..=4096); packets older than this many sequence numbers are dropped as too
    /// old. Default 512 (about 10 s of 20 ms frames).
    pub nack_cache_packets: usize,
    /// Cached packets older than this are not resent. Default 2 s.
    pub nack_cache_age: Duration,
    /// How many times one packet is resent to one slot at most. Default 2.
    pub max_resends: u8,
    /// Minimum time between two resends of the same packet to the same slot. Default 20 ms.
    pub resend_interval: Duration,
    /// Sustained resends per second per slot (token bucket). Default 50 (one stream's worth).
    pub resend_rate: u32,
    /// Burst of resends per slot (token bucket size). Default 50.
    pub resend_burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0x5645_5A41,
            active_speakers: 3,
            speaker_interval: Duration::from_millis(500),
            speaker_threshold: 60,
            level_smoothing: Duration::from_millis(300),
            level_silence_after: Duration::from_millis(100),
            nack_cache_packets: 512,
            nack_cache_age: Duration::from_secs(2),
            max_resends: 2,
            resend_interval: Duration::from_millis(20),
            resend_rate: 50,
            resend_burst: 50,
        }
    }
}

/// Upper bound for every duration in the config, so `now + duration` cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(3600);

impl Config {
    /// The config with every value brought into its valid range: intervals and time constants
    /// between 1 ms and one hour, the cache a power of two in 16..=4096, at least one speaker
    /// listed, a threshold of at most 127.
    pub fn validated(mut self) -> Self {
        let clamp = |d: Duration| d.clamp(Duration::from_millis(1), MAX_DURATION);
        self.active_speakers = self.active_speakers.max(1);
        self.speaker_interval = clamp(self.speaker_interval);
        self.speaker_threshold = self.speaker_threshold.min(127);
        self.level_smoothing = clamp(self.level_smoothing);
        self.level_silence_after = clamp(self.level_silence_after);
        self.nack_cache_packets = self.nack_cache_packets.clamp(16, 4096).next_power_of_two();
        self.nack_cache_age = clamp(self.nack_cache_age);
        self.resend_interval = self.resend_interval.min(MAX_DURATION);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validated_clamps() {
        let c = Config {
            active_speakers: 0,
            speaker_interval: Duration::MAX,
            speaker_threshold: 255,
            nack_cache_packets: 500,
            ..Config::default()
        }
        .validated();
        assert_eq!(c.active_speakers, 1);
        assert_eq!(c.speaker_interval, MAX_DURATION);
        assert_eq!(c.speaker_threshold, 127);
        assert_eq!(c.nack_cache_packets, 512);
        assert_eq!(Config::default().validated(), Config::default());
    }
}
