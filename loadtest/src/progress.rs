//! The progress line on stderr: elapsed time, peers ready, packets received per second.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::live::Live;

/// Prints the progress of a run until `stop` becomes true: a `\r` line four times a second on
/// a terminal, else a line a second.
pub async fn show(
    live: Arc<Live>,
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
            "{:6.1} s  {:<10} publishers {}/{}  subscribers {}/{}  failed {}  {:8.0} pkt/s",
            started.elapsed().as_secs_f64(),
            *phase.borrow(),
            live.publishers_ready.load(Ordering::Relaxed),
            publishers,
            live.subscribers_ready.load(Ordering::Relaxed),
            subscribers,
            live.failed.load(Ordering::Relaxed),
            rate,
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
