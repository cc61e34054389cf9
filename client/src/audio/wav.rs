//! 48 kHz 16-bit WAV output for `veza listen`: seekable files through hound, pipes with a
//! streaming header.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use super::error::check_channels;
use super::{AudioError, SAMPLE_RATE};

/// Size written in the RIFF and data headers of a streamed WAV, whose length is unknown when
/// the header goes out; readers take it as "until the end of the stream".
const STREAMING_SIZE: u32 = 0xFFFF_FFFF;

/// Something hound can write to and seek back in to patch the header.
trait WriteSeek: Write + Seek + Send {}
impl<T: Write + Seek + Send> WriteSeek for T {}

enum Sink {
    /// Seekable output: hound writes the real sizes on finish.
    Seekable(hound::WavWriter<Box<dyn WriteSeek>>),
    /// Non-seekable output (stdout, a pipe): header with maximal sizes, then raw samples.
    Streaming(Box<dyn Write + Send>),
}

/// Writes 48 kHz 16-bit PCM WAV from interleaved f32 samples.
///
/// [`to_path`](Self::to_path) and [`create`](Self::create) produce a normal WAV whose sizes are
/// fixed up by [`finish`](Self::finish); [`streaming`](Self::streaming) is for outputs that
/// cannot seek (`-`, stdout): its header declares the maximal size (0xFFFFFFFF), as streaming
/// tools do, and every sample goes out as soon as it is written.
pub struct WavWriter {
    sink: Sink,
    channels: u16,
}

impl fmt::Debug for WavWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.sink {
            Sink::Seekable(_) => "seekable",
            Sink::Streaming(_) => "streaming",
        };
        f.debug_struct("WavWriter")
            .field("sink", &kind)
            .field("channels", &self.channels)
            .finish()
    }
}

impl WavWriter {
    /// Creates (or truncates) the file at `path`.
    pub fn to_path(path: &Path, channels: u16) -> Result<Self, AudioError> {
        let file = File::create(path).map_err(|source| AudioError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::create(BufWriter::new(file), channels)
    }

    /// Writes to any seekable output.
    pub fn create(
        out: impl Write + Seek + Send + 'static,
        channels: u16,
    ) -> Result<Self, AudioError> {
        check_channels(channels)?;
        let spec = hound::WavSpec {
            channels,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let out: Box<dyn WriteSeek> = Box::new(out);
        let writer = hound::WavWriter::new(out, spec).map_err(wav_error)?;
        Ok(Self {
            sink: Sink::Seekable(writer),
            channels,
        })
    }

    /// Writes to a non-seekable output such as stdout: the header is written at once.
    pub fn streaming(out: impl Write + Send + 'static, channels: u16) -> Result<Self, AudioError> {
        check_channels(channels)?;
        let mut out: Box<dyn Write + Send> = Box::new(out);
        out.write_all(&streaming_header(channels))?;
        Ok(Self {
            sink: Sink::Streaming(out),
            channels,
        })
    }

    /// Appends interleaved samples (clamped to [-1, 1], rounded to 16 bits).
    pub fn write(&mut self, pcm: &[f32]) -> Result<(), AudioError> {
        if !pcm.len().is_multiple_of(usize::from(self.channels)) {
            return Err(AudioError::InvalidInput(format!(
                "{} samples is not a whole number of {}-channel frames",
                pcm.len(),
                self.channels
            )));
        }
        match &mut self.sink {
            Sink::Seekable(w) => {
                let mut w = w.get_i16_writer(pcm.len() as u32);
                for &s in pcm {
                    w.write_sample(to_i16(s));
                }
                w.flush().map_err(wav_error)
            }
            Sink::Streaming(out) => {
                let bytes: Vec<u8> = pcm.iter().flat_map(|&s| to_i16(s).to_le_bytes()).collect();
                out.write_all(&bytes)?;
                Ok(())
            }
        }
    }

    /// Completes the file: fixes the header sizes (seekable) or flushes (streaming).
    pub fn finish(self) -> Result<(), AudioError> {
        match self.sink {
            Sink::Seekable(w) => w.finalize().map_err(wav_error),
            Sink::Streaming(mut out) => Ok(out.flush()?),
        }
    }
}

fn to_i16(sample: f32) -> i16 {
    (sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16
}

fn wav_error(e: hound::Error) -> AudioError {
    match e {
        hound::Error::IoError(e) => AudioError::Io(e),
        other => AudioError::InvalidInput(format!("WAV: {other}")),
    }
}

/// A 44-byte canonical PCM WAV header with maximal RIFF and data sizes.
fn streaming_header(channels: u16) -> [u8; 44] {
    let block_align = channels * 2;
    let byte_rate = SAMPLE_RATE * u32::from(block_align);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&STREAMING_SIZE.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&STREAMING_SIZE.to_le_bytes());
    h
}
