//! Per-packet timing logs, for measuring latency from the broadcaster's encoder to the
//! listener's decoder across processes: both sides write `<fnv64 of the Opus packet>
//! <unix µs>` lines, and the same packet (forwarded byte for byte) joins the two.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// A line-buffered timing log; `None` when no path was given.
#[derive(Debug)]
pub(crate) struct TimingLog(Option<std::io::BufWriter<std::fs::File>>);

impl TimingLog {
    pub(crate) fn create(path: Option<&Path>) -> Result<Self, crate::ClientError> {
        let file = path
            .map(|p| {
                std::fs::File::create(p).map_err(|e| {
                    crate::ClientError::Io(format!("creating timing log {}: {e}", p.display()))
                })
            })
            .transpose()?;
        Ok(Self(file.map(std::io::BufWriter::new)))
    }

    /// Records that `packet` passed this point now.
    pub(crate) fn record(&mut self, packet: &[u8]) {
        if let Some(out) = &mut self.0 {
            let _ = writeln!(out, "{:016x} {}", fnv64(packet), unix_micros());
        }
    }
}

impl Drop for TimingLog {
    fn drop(&mut self) {
        if let Some(out) = &mut self.0 {
            let _ = out.flush();
        }
    }
}

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// FNV-1a, 64 bits.
pub(crate) fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
