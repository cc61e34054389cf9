//! Raw signed 16-bit little-endian PCM from a reader (stdin).

use std::io::{ErrorKind, Read};

use super::frames::{ChunkReader, Framer};
use super::{AudioError, PcmSource};

/// Frames read from the underlying reader per chunk.
const CHUNK_FRAMES: usize = 4096;

/// Raw s16le PCM from a reader (stdin) at `rate` Hz with `channels`; resampled to 48 kHz.
///
/// More than two channels are downmixed to stereo. A trailing partial sample frame at the end
/// of the input is dropped. `duration()` is unknown (`None`).
pub fn raw_pcm<R: Read + Send + 'static>(
    reader: R,
    rate: u32,
    channels: u16,
) -> Result<Box<dyn PcmSource + Send>, AudioError> {
    if rate == 0 || channels == 0 {
        return Err(AudioError::InvalidInput(format!(
            "raw PCM at {rate} Hz with {channels} channels"
        )));
    }
    let raw = RawS16 {
        reader,
        frame_bytes: 2 * usize::from(channels),
        buf: Vec::new(),
        eof: false,
    };
    Ok(Box::new(Framer::new(
        Box::new(raw),
        rate,
        usize::from(channels),
        None,
    )?))
}

struct RawS16<R> {
    reader: R,
    frame_bytes: usize,
    /// Bytes read but not yet converted (a partial frame from the previous read).
    buf: Vec<u8>,
    eof: bool,
}

impl<R: Read + Send> ChunkReader for RawS16<R> {
    fn read_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        let mut tmp = vec![0u8; CHUNK_FRAMES * self.frame_bytes];
        // Read until at least one whole frame is buffered, or the input ends: a live pipe
        // gets through as soon as it delivers.
        while !self.eof && self.buf.len() < self.frame_bytes {
            match self.reader.read(&mut tmp) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(AudioError::Io(e)),
            }
        }
        let whole = self.buf.len() / self.frame_bytes * self.frame_bytes;
        if whole == 0 {
            return Ok(None);
        }
        let pcm = self.buf[..whole]
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect();
        self.buf.drain(..whole);
        Ok(Some(pcm))
    }
}
