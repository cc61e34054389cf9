//! `veza listen`: a room's audio to a WAV file (decoded) or an Ogg Opus file (the packets as
//! they arrive, not decoded), or WAV on stdout.
//!
//! The listener follows the first broadcast the server announces (another publisher of the
//! room) and, when it ends, the next one. Missing packets (a gap in group numbers) are
//! concealed by the Opus decoder in the WAV, so the timeline stays true.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::ClientError;
use crate::audio::{OggOpusWriter, OpusDecoder, WavWriter};
use crate::net::{self, Target};
use crate::timing::TimingLog;

/// How late a packet may be before the server drops it rather than send it.
const MAX_LATENCY: Duration = Duration::from_millis(500);
/// Gaps longer than this (in packets) are not concealed: the broadcaster paused.
const MAX_CONCEALED: u64 = 25;

/// Where the audio goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// A WAV file, 48 kHz 16-bit.
    Wav(PathBuf),
    /// An Ogg Opus file, the packets unchanged.
    Ogg(PathBuf),
    /// WAV on stdout (a header with an unknown length, then samples).
    Stdout,
}

impl Output {
    /// `-` is stdout, `*.ogg`/`*.opus` Ogg Opus, anything else WAV.
    pub fn parse(out: &str) -> Self {
        let lower = out.to_ascii_lowercase();
        if out == "-" {
            Output::Stdout
        } else if lower.ends_with(".ogg") || lower.ends_with(".opus") {
            Output::Ogg(PathBuf::from(out))
        } else {
            Output::Wav(PathBuf::from(out))
        }
    }
}

/// How to listen.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Where to write.
    pub output: Output,
    /// Stop after this long (from connecting); `None` until the server ends the session.
    pub duration: Option<Duration>,
    /// Write a timing line per decoded packet (see the latency test).
    pub timing_log: Option<PathBuf>,
}

/// What a listen did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenSummary {
    /// Packets received.
    pub packets: u64,
    /// Packets missing from the received sequence (concealed in WAV output).
    pub lost: u64,
    /// Seconds of audio written.
    pub seconds: f64,
}

/// The writer in use.
enum Sink {
    Wav {
        writer: WavWriter,
        decoder: OpusDecoder,
    },
    Ogg(OggOpusWriter<std::io::BufWriter<std::fs::File>>),
}

/// Connects, follows the room's broadcasts and writes what arrives.
pub async fn listen(target: &Target, options: ListenOptions) -> Result<ListenSummary, ClientError> {
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut timing = TimingLog::create(options.timing_log.as_deref())?;
    let connection = net::connect(target).await?;
    let session = connection.session;
    let subscriber = session.subscriber();
    let mut announcements = subscriber
        .announced("")
        .await
        .map_err(|e| ClientError::Closed(e.to_string()))?;
    let mut sink: Option<Sink> = None;
    let mut summary = ListenSummary::default();
    let expired = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    'listening: loop {
        // The next broadcast.
        let path = loop {
            tokio::select! {
                () = &mut expired => break 'listening,
                _ = tokio::signal::ctrl_c() => break 'listening,
                reason = session.closed() => {
                    if sink.is_none() {
                        return Err(ClientError::Closed(reason));
                    }
                    break 'listening;
                }
                next = announcements.next() => match next {
                    Ok(Some(a)) if a.active => break a.path,
                    Ok(Some(_)) => {}
                    Ok(None) => break 'listening,
                    Err(err) => return Err(ClientError::Closed(err.to_string())),
                },
            }
        };
        let mut track = match subscriber.subscribe_audio(&path, MAX_LATENCY).await {
            Ok(track) => track,
            Err(err) => {
                tracing::warn!(path, %err, "cannot subscribe; waiting for another broadcast");
                continue;
            }
        };
        let channels = u16::try_from(track.info.number_of_channels.clamp(1, 2)).unwrap_or(2);
        if sink.is_none() {
            sink = Some(open_sink(&options.output, channels)?);
        }
        let mut last_group: Option<u64> = None;
        loop {
            let frame = tokio::select! {
                () = &mut expired => break 'listening,
                _ = tokio::signal::ctrl_c() => break 'listening,
                frame = track.next() => frame,
            };
            let Some(frame) = frame else {
                // The broadcast ended; wait for the next.
                break;
            };
            // Groups arrive in any order; one older than the last written is too late.
            if last_group.is_some_and(|last| frame.group <= last) {
                continue;
            }
            let missing = last_group.map_or(0, |last| frame.group - last - 1);
            last_group = Some(frame.group);
            summary.packets += 1;
            summary.lost += missing;
            match sink.as_mut() {
                Some(Sink::Wav { writer, decoder }) => {
                    for _ in 0..missing.min(MAX_CONCEALED) {
                        let pcm = decoder.conceal()?;
                        summary.seconds += seconds(&pcm, channels);
                        writer.write(&pcm)?;
                    }
                    let pcm = decoder.decode(&frame.payload)?;
                    timing.record(&frame.payload);
                    summary.seconds += seconds(&pcm, channels);
                    writer.write(&pcm)?;
                }
                Some(Sink::Ogg(writer)) => {
                    timing.record(&frame.payload);
                    summary.seconds += crate::audio::opus_packet_samples(&frame.payload)
                        .map_or(0.02, |n| f64::from(n) / 48_000.0);
                    writer.write_packet(&frame.payload)?;
                }
                None => {}
            }
        }
    }
    // Nothing heard still leaves a valid, empty file.
    let sink = match sink {
        Some(sink) => sink,
        None => open_sink(&options.output, 2)?,
    };
    sink.finish()?;
    session.close(veza_moq::code::session::NO_ERROR, "listener finished");
    Ok(summary)
}

fn seconds(pcm: &[f32], channels: u16) -> f64 {
    pcm.len() as f64 / f64::from(channels) / 48_000.0
}

fn open_sink(output: &Output, channels: u16) -> Result<Sink, ClientError> {
    Ok(match output {
        Output::Wav(path) => Sink::Wav {
            writer: WavWriter::to_path(path, channels)?,
            decoder: OpusDecoder::new(channels)?,
        },
        Output::Stdout => Sink::Wav {
            writer: WavWriter::streaming(std::io::stdout(), channels)?,
            decoder: OpusDecoder::new(channels)?,
        },
        Output::Ogg(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| ClientError::Io(format!("creating {}: {e}", path.display())))?;
            Sink::Ogg(OggOpusWriter::new(std::io::BufWriter::new(file), channels)?)
        }
    })
}

impl Sink {
    fn finish(self) -> Result<(), ClientError> {
        match self {
            Sink::Wav { writer, .. } => writer.finish()?,
            Sink::Ogg(writer) => {
                writer.finish()?;
            }
        }
        Ok(())
    }
}
