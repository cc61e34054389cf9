//! Opening audio files: symphonia demuxes everything and decodes all but Opus, which goes to
//! libopus.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::{CODEC_ID_AAC, CODEC_ID_OPUS};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

use super::frames::{ChunkReader, Framer};
use super::opus::{OpusDecoder, opus_packet_samples};
use super::{AudioError, PcmSource, SAMPLE_RATE};

/// Priming samples that AAC-LC encoders put in front of the audio (ffmpeg, Apple, fdk-aac).
/// symphonia does not read the MP4 edit list that declares them, so they are dropped here.
const AAC_PRIMING: usize = 1024;

/// Packets in a row that may fail to decode before the file is declared corrupt.
const MAX_BAD_PACKETS: usize = 50;

/// Opens an audio file as 48 kHz 20 ms frames.
///
/// WAV, FLAC, MP3, Ogg Vorbis and AAC/M4A are decoded by symphonia; Ogg Opus is demuxed by
/// symphonia and decoded by libopus (pre-skip and end trimming applied). Anything not at
/// 48 kHz is resampled with rubato; more than two channels are downmixed to stereo.
pub fn open_file(path: &Path) -> Result<Box<dyn PcmSource + Send>, AudioError> {
    let file = File::open(path).map_err(|source| AudioError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| AudioError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let no_track = || AudioError::NoAudioTrack {
        path: path.to_owned(),
    };
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(no_track)?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(CodecParameters::audio)
        .ok_or_else(no_track)?
        .clone();
    let duration = track_duration(track);
    let track_id = track.id;

    if params.codec == CODEC_ID_OPUS {
        let channels = params.channels.as_ref().map_or(0, |c| c.count());
        let pre_skip = track.delay.unwrap_or(0) as usize;
        // symphonia counts the Opus pre-skip as playable frames; it is not.
        let duration =
            duration.map(|d| d.saturating_sub(Duration::from_secs_f64(pre_skip as f64 / 48_000.0)));
        let reader = OpusPackets::new(format, track_id, channels, pre_skip)?;
        return Ok(Box::new(Framer::new(
            Box::new(reader),
            SAMPLE_RATE,
            channels,
            duration,
        )?));
    }

    // symphonia's AAC decoder does not trim the encoder delay; trim it unless the container
    // already accounts for it.
    let skip = if params.codec == CODEC_ID_AAC && track.delay.is_none() {
        AAC_PRIMING
    } else {
        0
    };
    let duration = duration.map(|d| {
        let rate = params.sample_rate.unwrap_or(SAMPLE_RATE).max(1);
        d.saturating_sub(Duration::from_secs_f64(skip as f64 / f64::from(rate)))
    });
    let decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::Unsupported(format!("{}: {e}", path.display())))?;
    let mut reader = Decoded {
        path: path.to_owned(),
        format,
        decoder,
        track_id,
        skip,
        first: None,
    };
    // The first decoded buffer tells the real rate and channel count (containers may omit them).
    let (first, rate, channels) = reader.decode_next()?.ok_or_else(|| {
        AudioError::Decode(format!("{} contains no decodable audio", path.display()))
    })?;
    reader.first = Some(first);
    Ok(Box::new(Framer::new(
        Box::new(reader),
        rate,
        channels,
        duration,
    )?))
}

/// The playable length of a track, from its frame count or its container duration.
fn track_duration(track: &Track) -> Option<Duration> {
    let rate = track
        .codec_params
        .as_ref()
        .and_then(CodecParameters::audio)
        .and_then(|p| p.sample_rate)
        .filter(|&r| r > 0);
    if let (Some(frames), Some(rate)) = (track.num_frames, rate) {
        return Some(Duration::from_secs_f64(frames as f64 / f64::from(rate)));
    }
    let time = track.time_base?.calc_duration(track.duration?)?;
    Some(Duration::from_secs_f64(time.as_secs_f64().max(0.0)))
}

/// Reads the next packet of `track_id`, `None` at the end of the stream.
fn next_packet(format: &mut dyn FormatReader, track_id: u32) -> Result<Option<Packet>, AudioError> {
    loop {
        match format.next_packet() {
            Ok(Some(packet)) if packet.track_id == track_id => return Ok(Some(packet)),
            Ok(Some(_)) => continue,
            Ok(None) | Err(SymphoniaError::ResetRequired) => return Ok(None),
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(None);
            }
            Err(SymphoniaError::IoError(e)) => return Err(AudioError::Io(e)),
            Err(e) => return Err(AudioError::Decode(e.to_string())),
        }
    }
}

/// Packets decoded by a symphonia decoder.
struct Decoded {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// Leading frames still to drop (encoder priming).
    skip: usize,
    /// A chunk decoded ahead to learn the stream's format.
    first: Option<Vec<f32>>,
}

impl Decoded {
    /// Decodes the next non-empty chunk: (interleaved samples, rate, channels).
    fn decode_next(&mut self) -> Result<Option<(Vec<f32>, u32, usize)>, AudioError> {
        let mut bad = 0;
        loop {
            let Some(packet) = next_packet(self.format.as_mut(), self.track_id)? else {
                return Ok(None);
            };
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                Err(SymphoniaError::DecodeError(e)) => {
                    bad += 1;
                    if bad > MAX_BAD_PACKETS {
                        return Err(AudioError::Decode(format!(
                            "{}: {bad} packets in a row failed to decode ({e})",
                            self.path.display()
                        )));
                    }
                    continue;
                }
                Err(e) => return Err(AudioError::Decode(e.to_string())),
            };
            bad = 0;
            let channels = buf.spec().channels().count();
            let rate = buf.spec().rate();
            let mut pcm = vec![0.0f32; buf.samples_interleaved()];
            buf.copy_to_slice_interleaved(&mut pcm);
            if self.skip > 0 && channels > 0 {
                let drop = self.skip.min(pcm.len() / channels);
                pcm.drain(..drop * channels);
                self.skip -= drop;
            }
            if !pcm.is_empty() {
                return Ok(Some((pcm, rate, channels)));
            }
        }
    }
}

impl ChunkReader for Decoded {
    fn read_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        Ok(self.decode_next()?.map(|(pcm, _, _)| pcm))
    }
}

/// Ogg Opus packets from symphonia's demuxer, decoded with libopus.
struct OpusPackets {
    format: Box<dyn FormatReader>,
    track_id: u32,
    decoder: OpusDecoder,
    channels: usize,
    /// Leading samples (per channel) still to drop: the stream's pre-skip.
    skip: usize,
}

impl OpusPackets {
    fn new(
        format: Box<dyn FormatReader>,
        track_id: u32,
        channels: usize,
        pre_skip: usize,
    ) -> Result<Self, AudioError> {
        let ch = u16::try_from(channels)
            .ok()
            .filter(|c| matches!(c, 1 | 2))
            .ok_or_else(|| {
                AudioError::Unsupported(format!(
                    "Ogg Opus with {channels} channels (only mono and stereo are decoded)"
                ))
            })?;
        Ok(Self {
            format,
            track_id,
            decoder: OpusDecoder::new(ch)?,
            channels,
            skip: pre_skip,
        })
    }
}

impl ChunkReader for OpusPackets {
    fn read_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        loop {
            let Some(packet) = next_packet(self.format.as_mut(), self.track_id)? else {
                return Ok(None);
            };
            if opus_packet_samples(&packet.data).is_none() {
                continue; // not an audio packet (or an empty one); nothing to decode
            }
            let mut pcm = self.decoder.decode(&packet.data)?;
            let ch = self.channels;
            // End trimming from the final granule position, computed by the demuxer.
            let trim_end = (packet.trim_end.get() as usize).min(pcm.len() / ch);
            pcm.truncate(pcm.len() - trim_end * ch);
            // Pre-skip: the encoder's lookahead, decoded but not part of the audio.
            let drop = self.skip.min(pcm.len() / ch);
            self.skip -= drop;
            pcm.drain(..drop * ch);
            if !pcm.is_empty() {
                return Ok(Some(pcm));
            }
        }
    }
}
