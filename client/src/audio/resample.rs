//! Streaming sample-rate conversion to 48 kHz with rubato's FFT resampler.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use super::{AudioError, SAMPLE_RATE};

/// Input frames per resampler call (rubato rounds it to what the rate pair allows).
const CHUNK_FRAMES: usize = 1024;

/// Converts interleaved f32 PCM at any rate to [`SAMPLE_RATE`], chunk by chunk.
///
/// Input arrives in pieces of any size ([`push`](Self::push)); output is emitted as soon as a
/// full resampler chunk is available. The resampler's startup delay is dropped, and
/// [`finish`](Self::finish) flushes the tail so that the output holds exactly
/// `ceil(input_frames × 48000 / rate)` frames.
pub(crate) struct StreamResampler {
    inner: Fft<f32>,
    channels: usize,
    rate_in: u32,
    /// Interleaved input not yet consumed by the resampler.
    pending: Vec<f32>,
    /// Scratch output of one resampler call.
    scratch: Vec<f32>,
    /// Output frames still to drop: the resampler's delay.
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
}

impl StreamResampler {
    /// A resampler from `rate_in` Hz to 48 kHz for `channels` interleaved channels.
    pub(crate) fn new(rate_in: u32, channels: usize) -> Result<Self, AudioError> {
        if rate_in == 0 || channels == 0 {
            return Err(AudioError::InvalidInput(format!(
                "cannot resample {channels} channels at {rate_in} Hz"
            )));
        }
        let inner = Fft::<f32>::new(
            rate_in as usize,
            SAMPLE_RATE as usize,
            CHUNK_FRAMES,
            channels,
            FixedSync::Input,
        )
        .map_err(|e| AudioError::Resample(e.to_string()))?;
        let scratch = vec![0.0; inner.output_frames_max() * channels];
        let delay_left = inner.output_delay();
        Ok(Self {
            inner,
            channels,
            rate_in,
            pending: Vec::new(),
            scratch,
            delay_left,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Feeds interleaved input and appends whatever output is ready to `out`.
    pub(crate) fn push(&mut self, pcm: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.frames_in += (pcm.len() / self.channels) as u64;
        self.pending.extend_from_slice(pcm);
        let mut used = 0; // frames
        loop {
            let need = self.inner.input_frames_next();
            let available = self.pending.len() / self.channels - used;
            if available < need {
                break;
            }
            used += self.run(used, need, None, out, u64::MAX)?;
        }
        self.pending.drain(..used * self.channels);
        Ok(())
    }

    /// Flushes the input still buffered, padded with silence, and appends the remaining
    /// output to `out`, up to the exact resampled length.
    pub(crate) fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let expected = (self.frames_in * u64::from(SAMPLE_RATE)).div_ceil(u64::from(self.rate_in));
        // Each round consumes at least one chunk of (possibly silent) input, so this ends; the
        // bound guards against a resampler that would produce nothing.
        let mut rounds = 0;
        while self.frames_out < expected && rounds < 64 {
            let need = self.inner.input_frames_next();
            let available = (self.pending.len() / self.channels).min(need);
            let used = self.run(0, need, Some(available), out, expected)?;
            self.pending.drain(..used.min(available) * self.channels);
            rounds += 1;
        }
        Ok(())
    }

    /// One resampler call on `frames` input frames from frame offset `start` of `pending`
    /// (`partial`: only that many are real, the rest silence). Emits at most up to `limit`
    /// total output frames and returns the input frames consumed.
    fn run(
        &mut self,
        start: usize,
        frames: usize,
        partial: Option<usize>,
        out: &mut Vec<f32>,
        limit: u64,
    ) -> Result<usize, AudioError> {
        let ch = self.channels;
        let real = partial.unwrap_or(frames);
        let from = start * ch;
        let input = InterleavedSlice::new(&self.pending[from..from + real * ch], ch, real)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
        let out_frames = self.scratch.len() / ch;
        let mut output = InterleavedSlice::new_mut(&mut self.scratch, ch, out_frames)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
        let indexing = Indexing {
            input_offset: 0,
            output_offset: 0,
            partial_len: partial,
            active_channels_mask: None,
        };
        let (used, produced) = self
            .inner
            .process_into_buffer(&input, &mut output, Some(&indexing))
            .map_err(|e| AudioError::Resample(e.to_string()))?;

        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let room = limit.saturating_sub(self.frames_out);
        let keep = ((produced - skip) as u64).min(room) as usize;
        out.extend_from_slice(&self.scratch[skip * ch..(skip + keep) * ch]);
        self.frames_out += keep as u64;
        Ok(used)
    }
}
