//! From decoded chunks of any rate and channel count to exact 48 kHz 20 ms frames.

use std::time::Duration;

use super::resample::StreamResampler;
use super::{AudioError, FRAME_SAMPLES, PcmSource, SAMPLE_RATE};

/// A decoder's side of the pipeline: interleaved f32 chunks of any length at its own rate.
pub(crate) trait ChunkReader: Send {
    /// The next decoded chunk (interleaved, `channels` wide), or `None` at the end.
    fn read_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError>;
}

/// Downmixes, resamples and cuts a [`ChunkReader`]'s output into 20 ms frames.
pub(crate) struct Framer {
    reader: Box<dyn ChunkReader>,
    in_channels: usize,
    out_channels: u16,
    resampler: Option<StreamResampler>,
    /// 48 kHz output not yet handed out as frames.
    pending: Vec<f32>,
    ended: bool,
    duration: Option<Duration>,
}

impl Framer {
    /// Wraps `reader`, which yields `channels`-wide PCM at `rate` Hz.
    pub(crate) fn new(
        reader: Box<dyn ChunkReader>,
        rate: u32,
        channels: usize,
        duration: Option<Duration>,
    ) -> Result<Self, AudioError> {
        if channels == 0 {
            return Err(AudioError::Unsupported("audio with 0 channels".into()));
        }
        let out_channels: u16 = if channels == 1 { 1 } else { 2 };
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            Some(StreamResampler::new(rate, usize::from(out_channels))?)
        };
        Ok(Self {
            reader,
            in_channels: channels,
            out_channels,
            resampler,
            pending: Vec::new(),
            ended: false,
            duration,
        })
    }

    fn frame_len(&self) -> usize {
        FRAME_SAMPLES * usize::from(self.out_channels)
    }

    /// Reads one more chunk through downmix and resampling into `pending`.
    fn fill(&mut self) -> Result<(), AudioError> {
        match self.reader.read_chunk()? {
            Some(chunk) => {
                let chunk = downmix(chunk, self.in_channels);
                match &mut self.resampler {
                    Some(r) => r.push(&chunk, &mut self.pending)?,
                    None => self.pending.extend_from_slice(&chunk),
                }
            }
            None => {
                if let Some(r) = &mut self.resampler {
                    r.finish(&mut self.pending)?;
                }
                self.ended = true;
            }
        }
        Ok(())
    }
}

impl PcmSource for Framer {
    fn channels(&self) -> u16 {
        self.out_channels
    }

    fn next_frame(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        let len = self.frame_len();
        while self.pending.len() < len && !self.ended {
            self.fill()?;
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let mut frame: Vec<f32> = self.pending.drain(..len.min(self.pending.len())).collect();
        frame.resize(len, 0.0);
        Ok(Some(frame))
    }

    fn duration(&self) -> Option<Duration> {
        self.duration
    }
}

/// Mixes interleaved PCM with more than two channels down to stereo.
///
/// Channels 0 and 1 are taken as left and right (the WAV/FLAC/Vorbis/AAC order for front
/// left/right); every other channel goes into both at -3 dB, and the sum is scaled so that
/// full-scale input cannot clip. Mono and stereo pass through untouched.
fn downmix(pcm: Vec<f32>, channels: usize) -> Vec<f32> {
    if channels <= 2 {
        return pcm;
    }
    const SIDE: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let scale = 1.0 / (1.0 + SIDE * (channels - 2) as f32);
    let mut out = Vec::with_capacity(pcm.len() / channels * 2);
    for frame in pcm.chunks_exact(channels) {
        let rest: f32 = frame[2..].iter().sum::<f32>() * SIDE;
        out.push((frame[0] + rest) * scale);
        out.push((frame[1] + rest) * scale);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::downmix;

    #[test]
    fn downmix_keeps_mono_and_stereo_and_folds_surround() {
        assert_eq!(downmix(vec![0.5, -0.5], 2), vec![0.5, -0.5]);
        assert_eq!(downmix(vec![0.25], 1), vec![0.25]);
        // 3 channels: L=1, R=0, C=1 → both sides get C at -3 dB, scaled to avoid clipping.
        let out = downmix(vec![1.0, 0.0, 1.0, 1.0, 0.0, 1.0], 3);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|s| s.abs() <= 1.0));
        assert!(out[0] > out[1] && out[1] > 0.0);
    }
}
