//! libopus encoding and decoding at 48 kHz, and Opus TOC parsing (RFC 6716 §3.1).

use ::opus::{Bitrate, Channels, Decoder, Encoder};

use super::error::check_channels;
use super::{AudioError, FRAME_SAMPLES, SAMPLE_RATE};

/// Largest packet libopus is asked to produce (its recommended maximum).
const MAX_PACKET_BYTES: usize = 4000;

/// Longest Opus packet: 120 ms at 48 kHz, per channel.
const MAX_PACKET_SAMPLES: usize = 5760;

/// What the encoder tunes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Application {
    /// Full-band music (libopus `OPUS_APPLICATION_AUDIO`).
    Music,
    /// Speech intelligibility (libopus `OPUS_APPLICATION_VOIP`).
    Voice,
}

fn opus_channels(channels: u16) -> Result<Channels, AudioError> {
    check_channels(channels)?;
    Ok(if channels == 1 {
        Channels::Mono
    } else {
        Channels::Stereo
    })
}

/// libopus encoder, 48 kHz, 20 ms frames.
#[derive(Debug)]
pub struct OpusEncoder {
    inner: Encoder,
    channels: usize,
}

impl OpusEncoder {
    /// An encoder for `channels` (1 or 2) at `bitrate` bits per second.
    pub fn new(channels: u16, bitrate: u32, app: Application) -> Result<Self, AudioError> {
        let application = match app {
            Application::Music => ::opus::Application::Audio,
            Application::Voice => ::opus::Application::Voip,
        };
        let mut inner = Encoder::new(SAMPLE_RATE, opus_channels(channels)?, application)
            .map_err(AudioError::opus("encoder init"))?;
        let bits = i32::try_from(bitrate)
            .map_err(|_| AudioError::InvalidInput(format!("bitrate {bitrate} b/s")))?;
        inner
            .set_bitrate(Bitrate::Bits(bits))
            .map_err(AudioError::opus("set bitrate"))?;
        Ok(Self {
            inner,
            channels: usize::from(channels),
        })
    }

    /// Encodes one frame of interleaved PCM into one packet.
    ///
    /// `pcm` normally holds 20 ms ([`FRAME_SAMPLES`] × channels); the other Opus frame
    /// sizes (2.5, 5, 10, 40, 60 ms) are accepted too.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, AudioError> {
        let per_channel = pcm.len() / self.channels;
        let valid = [120, 240, 480, FRAME_SAMPLES, 1920, 2880];
        if !pcm.len().is_multiple_of(self.channels) || !valid.contains(&per_channel) {
            return Err(AudioError::InvalidInput(format!(
                "cannot encode {} samples as an Opus frame of {} channel(s); a 20 ms frame is {}",
                pcm.len(),
                self.channels,
                FRAME_SAMPLES * self.channels
            )));
        }
        self.inner
            .encode_vec_float(pcm, MAX_PACKET_BYTES)
            .map_err(AudioError::opus("encode"))
    }
}

/// libopus decoder to 48 kHz interleaved f32.
#[derive(Debug)]
pub struct OpusDecoder {
    inner: Decoder,
    channels: usize,
}

impl OpusDecoder {
    /// A decoder producing `channels` (1 or 2) interleaved channels, whatever the packets
    /// carry (libopus up- or downmixes).
    pub fn new(channels: u16) -> Result<Self, AudioError> {
        let inner = Decoder::new(SAMPLE_RATE, opus_channels(channels)?)
            .map_err(AudioError::opus("decoder init"))?;
        Ok(Self {
            inner,
            channels: usize::from(channels),
        })
    }

    /// Decodes one packet to interleaved f32 (up to 120 ms).
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, AudioError> {
        if packet.is_empty() {
            return Err(AudioError::InvalidInput(
                "empty Opus packet (use conceal() for a lost one)".into(),
            ));
        }
        self.run(packet, MAX_PACKET_SAMPLES)
    }

    /// Packet loss concealment for a missing 20 ms frame: [`FRAME_SAMPLES`] × channels samples.
    pub fn conceal(&mut self) -> Result<Vec<f32>, AudioError> {
        self.run(&[], FRAME_SAMPLES)
    }

    fn run(&mut self, packet: &[u8], max_samples: usize) -> Result<Vec<f32>, AudioError> {
        let mut pcm = vec![0.0f32; max_samples * self.channels];
        let n = self
            .inner
            .decode_float(packet, &mut pcm, false)
            .map_err(AudioError::opus("decode"))?;
        pcm.truncate(n * self.channels);
        Ok(pcm)
    }
}

/// Opus TOC parsing: number of samples (per channel) at 48 kHz in a packet, for timestamps
/// and Ogg granule positions. `None` for an empty or malformed packet.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame length in 48 kHz samples per configuration (RFC 6716, table 2).
    let frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)], // SILK
        12..=15 => [480, 960][usize::from(config % 2)],            // hybrid
        _ => [120, 240, 480, 960][usize::from(config % 4)],        // CELT
    };
    let frames: u32 = match toc & 0b11 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0b11_1111),
    };
    let total = frame * frames;
    (frames > 0 && total <= MAX_PACKET_SAMPLES as u32).then_some(total)
}

/// Channels of an Opus packet from its TOC stereo bit.
pub fn opus_packet_channels(packet: &[u8]) -> Option<u16> {
    packet
        .first()
        .map(|toc| if toc & 0b100 != 0 { 2 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_parsing_covers_all_frame_counts() {
        assert_eq!(opus_packet_samples(&[]), None);
        // config 31 (CELT FB 20 ms), code 0: one frame.
        assert_eq!(opus_packet_samples(&[31 << 3]), Some(960));
        // config 3 (SILK NB 60 ms), code 1: two frames = 120 ms.
        assert_eq!(opus_packet_samples(&[(3 << 3) | 1]), Some(5760));
        // config 16 (CELT NB 2.5 ms), code 3 with 6 frames.
        assert_eq!(opus_packet_samples(&[(16 << 3) | 3, 6]), Some(720));
        // code 3 without its frame-count byte, with 0 frames, or longer than 120 ms.
        assert_eq!(opus_packet_samples(&[(16 << 3) | 3]), None);
        assert_eq!(opus_packet_samples(&[(16 << 3) | 3, 0]), None);
        assert_eq!(opus_packet_samples(&[(3 << 3) | 3, 3]), None);
        // hybrid 10 ms.
        assert_eq!(opus_packet_samples(&[12 << 3]), Some(480));
        assert_eq!(opus_packet_channels(&[31 << 3]), Some(1));
        assert_eq!(opus_packet_channels(&[(31 << 3) | 0b100]), Some(2));
        assert_eq!(opus_packet_channels(&[]), None);
    }
}
