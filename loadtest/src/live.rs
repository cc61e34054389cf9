//! Counters every peer updates as it runs, for the progress line and the coordinator, and the
//! measurement window subscribers check each packet against.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shared by every peer of a run.
#[derive(Debug)]
pub struct Live {
    /// Publishers ready (connected and, over QUIC, subscribed to by the server).
    pub publishers_ready: AtomicUsize,
    /// Subscribers ready (connected and, over QUIC, subscribed to every publisher).
    pub subscribers_ready: AtomicUsize,
    /// Peers that gave up (their error is in their outcome).
    pub failed: AtomicUsize,
    /// Packets sent by all publishers.
    pub sent: AtomicU64,
    /// Packets received by all subscribers (in or out of the window).
    pub received: AtomicU64,
    window_start: AtomicU64,
    window_end: AtomicU64,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            publishers_ready: AtomicUsize::new(0),
            subscribers_ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
        }
    }
}

impl Live {
    /// Opens the measurement window at `at_us` ([`crate::clock`] time).
    pub fn open_window(&self, at_us: u64) {
        self.window_start.store(at_us, Ordering::Release);
    }

    /// Closes the measurement window at `at_us`.
    pub fn close_window(&self, at_us: u64) {
        self.window_end.store(at_us, Ordering::Release);
    }

    /// Whether a packet that arrived at `at_us` is measured.
    pub fn in_window(&self, at_us: u64) -> bool {
        at_us >= self.window_start.load(Ordering::Acquire)
            && at_us < self.window_end.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_window_opens_and_closes() {
        let live = super::Live::default();
        assert!(!live.in_window(5));
        live.open_window(10);
        assert!(!live.in_window(9));
        assert!(live.in_window(10));
        assert!(live.in_window(1_000_000));
        live.close_window(20);
        assert!(live.in_window(19));
        assert!(!live.in_window(20));
    }
}
