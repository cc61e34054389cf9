//! The progress line on stderr: elapsed time, peers ready, packets received per second.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::live::Live;

/// What the progress line calls the two kinds of peers and the received items.
#[derive(Debug, Clone, Copy)]
pub struct Labels {
    /// Counted by [`Live::publishers_ready`].
    pub first: &'static str,
    /// Counted by [`Live::subscribers_ready`].
    pub second: &'static str,
    /// The unit of [`Live::received`] per second.
    pub rate: &'static str,
}

/// Publishers, subscribers, packets per second.
pub const MEDIA: Labels = Labels {
    first: "publishers",
    second: "subscribers",
    rate: "pkt/s",
};

/// Prints the progress of a run until `stop` becomes true: a `\r` line four times a second on
/// a terminal, else a line a second.
pub async fn show(
    live: Arc<Live>,
    labels: Labels,
    publishers: usize,
    subscribers: usize,
    phase: watch::Receiver<&'static str>,
    mut stop: watch::Receiver<bool>,
) {
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(period);
    let mut last = (Instant::now(), live.received.load(Ordering::Relaxed));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        let received = live.received.load(Ordering::Relaxed);
        let rate = (received - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, received);
        let line = format!(
            "{:6.1} s  {:<10} {} {}/{}  {} {}/{}  failed {}  {:8.0} {}",
            started.elapsed().as_secs_f64(),
            *phase.borrow(),
            labels.first,
            live.publishers_ready.load(Ordering::Relaxed),
            publishers,
            labels.second,
            live.subscribers_ready.load(Ordering::Relaxed),
            subscribers,
            live.failed.load(Ordering::Relaxed),
            rate,
            labels.rate,
        );
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r{line}   ")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if terminal {
        eprintln!();
    }
}
