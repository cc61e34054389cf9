//! One process-wide clock: publishers stamp packets with it and subscribers in the same
//! process read it on arrival, so latency needs no clock synchronisation.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// The clock's zero (the first time it is read).
pub fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Microseconds since [`start`].
pub fn now_us() -> u64 {
    micros(Instant::now())
}

/// `at` in microseconds since [`start`] (0 if before it).
pub fn micros(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(start()).as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_moves_forward() {
        let a = super::now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::now_us();
        assert!(b >= a + 2_000, "{a} then {b}");
    }
}
