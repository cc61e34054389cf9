//! Resend limits for one slot, so a NACK storm cannot amplify: each packet is resent at most
//! `max_resends` times and not twice within `resend_interval`, and a token bucket caps the
//! slot's resend rate whatever the NACKs name. Allocated on a slot's first NACK.

use std::time::Instant;

use super::config::Config;

/// Remembered resends, by extended output sequence number modulo this. A record evicted by a
/// newer one forgets its count; the token bucket still bounds the total.
const RECORDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Record {
    out_ext_seq: u64,
    count: u8,
    at: Instant,
}

/// Why a resend was refused, or that it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it.
    Allow,
    /// Resent too often or too recently, or the slot's budget is spent.
    Limited,
}

/// Per-slot resend bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct ResendLimiter {
    records: [Option<Record>; RECORDS],
    tokens: f64,
    refilled: Instant,
}

impl ResendLimiter {
    /// A limiter with a full bucket.
    pub(crate) fn new(now: Instant, config: &Config) -> Self {
        ResendLimiter {
            records: [None; RECORDS],
            tokens: f64::from(config.resend_burst),
            refilled: now,
        }
    }

    /// Decides on one resend of the packet `out_ext_seq` and books it if allowed.
    pub(crate) fn check(&mut self, now: Instant, out_ext_seq: u64, config: &Config) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(config.resend_rate))
            .min(f64::from(config.resend_burst));
        self.refilled = self.refilled.max(now);

        // The modulo keeps the index below RECORDS.
        let record = &mut self.records[(out_ext_seq % RECORDS as u64) as usize];
        let count = match record {
            Some(r) if r.out_ext_seq == out_ext_seq => {
                if r.count >= config.max_resends
                    || now.saturating_duration_since(r.at) < config.resend_interval
                {
                    return Verdict::Limited;
                }
                r.count
            }
            _ => 0,
        };
        if count >= config.max_resends || self.tokens < 1.0 {
            return Verdict::Limited;
        }
        self.tokens -= 1.0;
        *record = Some(Record {
            out_ext_seq,
            count: count + 1,
            at: now,
        });
        Verdict::Allow
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_packet_at_most_max_resends_and_spaced() {
        let config = Config::default();
        let t0 = Instant::now();
        let mut lim = ResendLimiter::new(t0, &config);
        assert_eq!(lim.check(t0, 7, &config), Verdict::Allow);
        assert_eq!(
            lim.check(t0 + Duration::from_millis(19), 7, &config),
            Verdict::Limited
        );
        assert_eq!(
            lim.check(t0 + Duration::from_millis(20), 7, &config),
            Verdict::Allow
        );
        assert_eq!(
            lim.check(t0 + Duration::from_millis(100), 7, &config),
            Verdict::Limited
        );
        assert_eq!(
            lim.check(t0 + Duration::from_millis(100), 8, &config),
            Verdict::Allow
        );
    }

    #[test]
    fn bucket_caps_a_storm() {
        let config = Config::default();
        let t0 = Instant::now();
        let mut lim = ResendLimiter::new(t0, &config);
        let allowed = (0..10_000u64)
            .filter(|&s| lim.check(t0, s, &config) == Verdict::Allow)
            .count();
        assert_eq!(allowed, config.resend_burst as usize);
        // One second later, the rate refills the bucket.
        let later = t0 + Duration::from_secs(1);
        let allowed = (20_000..30_000u64)
            .filter(|&s| lim.check(later, s, &config) == Verdict::Allow)
            .count();
        assert_eq!(
            allowed,
            config.resend_rate.min(config.resend_burst) as usize
        );
    }

    #[test]
    fn max_resends_zero_disables_resends() {
        let config = Config {
            max_resends: 0,
            ..Config::default()
        };
        let t0 = Instant::now();
        let mut lim = ResendLimiter::new(t0, &config);
        assert_eq!(lim.check(t0, 1, &config), Verdict::Limited);
    }
}
