//! The UDP send rate of one thread on loopback: plain `send_to`, and UDP GSO (one `sendmsg`
//! carrying many equal-sized datagrams, split by the kernel) through `quinn-udp`.
//!
//! A second thread drains the receiving socket with plain `recv_from` (no GRO, so a GSO send
//! is split into datagrams on its way in, in the sender's system call) and counts what
//! arrives. It is slower than the sender: datagrams it had no room for are dropped after the
//! sender paid for them. The send rate is the sender's; the delivered rate says how much of
//! it the one reading thread took.
//!
//! GSO batches datagrams to *one* destination only. An SFU's fan-out sends each packet to a
//! different peer, so its limit is the plain `send_to` rate unless it batches with
//! `sendmmsg` (not reachable without `unsafe` here).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};

use super::DATAGRAM;

/// Sends between clock reads.
const BATCH: u64 = 256;
/// Upper bound on segments per GSO send (Linux allows 64).
const MAX_SEGMENTS: usize = 64;

/// Send and delivery rates of one measurement, datagrams per second.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Datagrams the sender handed to the kernel.
    pub sent: f64,
    /// Datagrams the receiving socket got.
    pub delivered: f64,
}

/// Counts the datagrams arriving on a socket until stopped.
struct Drain {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Drain {
    /// Reads with plain `recv_from`, one datagram per call and no GRO: a GSO send reaches it
    /// as separate datagrams, so the kernel's splitting is part of what the sender pays.
    fn start(socket: UdpSocket) -> io::Result<Self> {
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut count = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                if socket.recv_from(&mut buf).is_ok() {
                    count += 1;
                }
            }
            count
        });
        Ok(Self { stop, thread })
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

fn pair() -> io::Result<(UdpSocket, Drain, SocketAddr)> {
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let to = receiver.local_addr()?;
    Ok((sender, Drain::start(receiver)?, to))
}

/// Datagrams per second with one `send_to` each, for `duration`.
pub fn plain_send_pps(duration: Duration) -> io::Result<Rates> {
    let (sender, drain, to) = pair()?;
    let datagram = [0x80u8; DATAGRAM];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    while start.elapsed() < duration {
        for _ in 0..BATCH {
            match sender.send_to(&datagram, to) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        if errors > sent + 1000 {
            return Err(io::Error::other("UDP sends on loopback keep failing"));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the last datagrams arrive.
    std::thread::sleep(Duration::from_millis(20));
    Ok(Rates {
        sent: sent as f64 / elapsed,
        delivered: drain.finish() as f64 / elapsed,
    })
}

/// Datagrams per second with GSO, and the segments per send; `None` without GSO.
pub fn gso_send_pps(duration: Duration) -> io::Result<Option<(Rates, usize)>> {
    let (sender, drain, to) = pair()?;
    let state = UdpSocketState::new(UdpSockRef::from(&sender))?;
    let segments = state.max_gso_segments().min(MAX_SEGMENTS);
    if segments < 2 {
        drain.finish();
        return Ok(None);
    }
    let contents = vec![0x80u8; DATAGRAM * segments];
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents: &contents,
        segment_size: Some(DATAGRAM),
        src_ip: None,
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    while start.elapsed() < duration {
        for _ in 0..BATCH / segments as u64 + 1 {
            match state.try_send(UdpSockRef::from(&sender), &transmit) {
                Ok(()) => sent += segments as u64,
                Err(_) => errors += 1,
            }
        }
        if errors > 1000 && sent == 0 {
            // The kernel refused GSO after all.
            drain.finish();
            return Ok(None);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(20));
    let rates = Rates {
        sent: sent as f64 / elapsed,
        delivered: drain.finish() as f64 / elapsed,
    };
    Ok(Some((rates, segments)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn loopback_sends_are_counted() {
        let rates = super::plain_send_pps(Duration::from_millis(50)).unwrap();
        assert!(rates.sent > 1_000.0, "{rates:?}");
        assert!(rates.delivered > 0.0, "{rates:?}");
        assert!(rates.delivered <= rates.sent * 1.01, "{rates:?}");
        if let Some((rates, segments)) = super::gso_send_pps(Duration::from_millis(50)).unwrap() {
            assert!(segments >= 2);
            assert!(rates.sent > 1_000.0, "{rates:?}");
            assert!(rates.delivered > 0.0, "{rates:?}");
        }
    }
}
