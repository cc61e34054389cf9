//! Ogg Opus output (RFC 7845 in Ogg pages, RFC 3533), written by hand.

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::check_channels;
use super::opus::opus_packet_samples;
use super::{AudioError, SAMPLE_RATE};

/// Samples (at 48 kHz) the decoder drops at the start: libopus's encoder lookahead.
const PRE_SKIP: u16 = 312;

/// Audio packets per page: 200 ms of 20 ms packets, a bounded delay for live output.
const PACKETS_PER_PAGE: usize = 10;

/// Ogg page header flags.
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;

/// Vendor string in the OpusTags header.
const VENDOR: &[u8] = b"veza";

/// Writes Opus packets as an Ogg Opus stream (RFC 7845) to any `Write`, stdout included.
///
/// The OpusHead and OpusTags headers go out on their own pages at creation. Audio packets are
/// gathered ten to a page (200 ms), each page carrying the granule position (48 kHz
/// samples, pre-skip included) at its last packet; [`finish`](Self::finish) writes the rest
/// on a final page flagged end-of-stream. Packets are never split across pages.
pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    sequence: u32,
    granule: u64,
    /// Packets waiting for the next page. At least one is always held back so that the
    /// end-of-stream flag can go on a page that carries audio.
    pending: Vec<Vec<u8>>,
}

impl<W: Write> fmt::Debug for OggOpusWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OggOpusWriter")
            .field("serial", &self.serial)
            .field("sequence", &self.sequence)
            .field("granule", &self.granule)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write> OggOpusWriter<W> {
    /// Starts a stream of `channels` (1 or 2) on `out` and writes its two header pages.
    pub fn new(out: W, channels: u16) -> Result<Self, AudioError> {
        check_channels(channels)?;
        let mut w = Self {
            out,
            serial: stream_serial(),
            sequence: 0,
            granule: 0,
            pending: Vec::new(),
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(channels as u8);
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&SAMPLE_RATE.to_le_bytes()); // input sample rate
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0: mono or stereo
        w.write_page(&[&head], 0, FLAG_BOS)?;

        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(VENDOR.len() as u32).to_le_bytes());
        tags.extend_from_slice(VENDOR);
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        w.write_page(&[&tags], 0, 0)?;
        w.out.flush()?;
        Ok(w)
    }

    /// Adds one Opus packet; a page goes out once enough packets are gathered.
    pub fn write_packet(&mut self, packet: &[u8]) -> Result<(), AudioError> {
        if opus_packet_samples(packet).is_none() {
            return Err(AudioError::InvalidInput(format!(
                "not an Opus packet ({} bytes)",
                packet.len()
            )));
        }
        // 255 lacing values of 255 bytes: the most one page can hold of one packet.
        if packet.len() >= 255 * 255 {
            return Err(AudioError::InvalidInput(format!(
                "Opus packet of {} bytes is too large",
                packet.len()
            )));
        }
        self.pending.push(packet.to_vec());
        if self.pending.len() > PACKETS_PER_PAGE || lacing_len(&self.pending) > 255 {
            let n = self.pending.len() - 1;
            self.flush_packets(n, 0)?;
        }
        Ok(())
    }

    /// Writes the remaining packets on a final page flagged end-of-stream, flushes and
    /// returns the output.
    pub fn finish(mut self) -> Result<W, AudioError> {
        let n = self.pending.len();
        self.flush_packets(n, FLAG_EOS)?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes the first `n` pending packets on one page.
    fn flush_packets(&mut self, n: usize, flags: u8) -> Result<(), AudioError> {
        let packets: Vec<Vec<u8>> = self.pending.drain(..n).collect();
        for p in &packets {
            self.granule += u64::from(opus_packet_samples(p).unwrap_or(0));
        }
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        self.write_page(&refs, self.granule, flags)?;
        self.out.flush()?;
        Ok(())
    }

    /// Writes one page holding whole `packets`.
    fn write_page(&mut self, packets: &[&[u8]], granule: u64, flags: u8) -> Result<(), AudioError> {
        let mut lacing = Vec::new();
        for p in packets {
            lacing.extend(std::iter::repeat_n(255u8, p.len() / 255));
            lacing.push((p.len() % 255) as u8);
        }
        let mut page =
            Vec::with_capacity(27 + lacing.len() + packets.iter().map(|p| p.len()).sum::<usize>());
        page.extend_from_slice(b"OggS");
        page.push(0); // version
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&0u32.to_le_bytes()); // CRC, filled in below
        page.push(lacing.len() as u8);
        page.extend_from_slice(&lacing);
        for p in packets {
            page.extend_from_slice(p);
        }
        let crc = crc32(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&page)?;
        self.sequence += 1;
        Ok(())
    }
}

/// Lacing values the given packets need on one page.
fn lacing_len(packets: &[Vec<u8>]) -> usize {
    packets.iter().map(|p| p.len() / 255 + 1).sum()
}

/// A stream serial number that differs between runs (chained or muxed streams need distinct
/// ones; nothing depends on its value).
fn stream_serial() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
    nanos ^ std::process::id().rotate_left(16)
}

/// CRC-32 as Ogg defines it: polynomial 0x04C11DB7, MSB first, initial value 0, no final XOR.
fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04C1_1DB7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn crc_matches_the_ogg_check_value() {
        // CRC-32/MPEG-2 without init/xorout ("CRC-32/OGG"): check value for "123456789".
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
        assert_eq!(crc32(b""), 0);
    }
}
