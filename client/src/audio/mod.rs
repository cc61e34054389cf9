//! The client's audio pipeline: files and raw PCM in, 48 kHz frames through Opus, WAV and Ogg
//! Opus out.
//!
//! Everything inside runs on one format: interleaved `f32` PCM at [`SAMPLE_RATE`], one or two
//! channels, cut into 20 ms frames of [`FRAME_SAMPLES`] samples per channel. Sources
//! ([`open_file`], [`raw_pcm`], [`looped`]) decode, downmix and resample into that format;
//! [`OpusEncoder`] and [`OpusDecoder`] turn frames into packets and back; [`WavWriter`] and
//! [`OggOpusWriter`] store what `veza listen` receives.

mod decode;
mod error;
mod frames;
mod ogg;
mod opus;
mod raw;
mod resample;
mod wav;

use std::path::PathBuf;
use std::time::Duration;

pub use decode::open_file;
pub use error::AudioError;
pub use ogg::OggOpusWriter;
pub use opus::{Application, OpusDecoder, OpusEncoder, opus_packet_channels, opus_packet_samples};
pub use raw::raw_pcm;
pub use wav::WavWriter;

/// Interleaved f32 PCM at 48 kHz, the pipeline's one internal format.
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples per channel in one 20 ms frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 960;

/// A source of 48 kHz interleaved f32 PCM, already resampled, yielding exact 20 ms frames.
///
/// Every frame holds `FRAME_SAMPLES * channels()` samples; the last one is zero-padded.
/// `channels()` is 1 or 2: inputs with more channels are downmixed to stereo.
pub trait PcmSource {
    /// Channels of every frame this source yields: 1 or 2.
    fn channels(&self) -> u16;

    /// The next 20 ms frame, or `None` at the end of the input.
    fn next_frame(&mut self) -> Result<Option<Vec<f32>>, AudioError>;

    /// Total duration if known (files), for the progress line.
    fn duration(&self) -> Option<Duration>;
}

/// Loops a file forever, re-opening it at its end — for `veza broadcast --loop`.
///
/// The file is opened once up front so that errors show at once. Its `duration()` is `None`
/// (a loop has no end). A file that yields no audio at all ends the loop instead of spinning.
pub fn looped(path: PathBuf) -> Result<Box<dyn PcmSource + Send>, AudioError> {
    let current = open_file(&path)?;
    Ok(Box::new(Looped {
        channels: current.channels(),
        path,
        current,
    }))
}

/// See [`looped`].
struct Looped {
    path: PathBuf,
    channels: u16,
    current: Box<dyn PcmSource + Send>,
}

impl PcmSource for Looped {
    fn channels(&self) -> u16 {
        self.channels
    }

    fn next_frame(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        if let Some(frame) = self.current.next_frame()? {
            return Ok(Some(frame));
        }
        self.current = open_file(&self.path)?;
        if self.current.channels() != self.channels {
            return Err(AudioError::Unsupported(format!(
                "{} changed from {} to {} channels while looping",
                self.path.display(),
                self.channels,
                self.current.channels()
            )));
        }
        // An empty file ends here rather than re-opening forever.
        self.current.next_frame()
    }

    fn duration(&self) -> Option<Duration> {
        None
    }
}
