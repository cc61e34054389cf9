//! `veza listen`: a room's audio to a WAV file (decoded) or an Ogg Opus file (the packets as
//! they arrive, not decoded), or WAV on stdout.
//!
//! The listener follows the first broadcast the server announces (another publisher of the
//! room), or the one named with `broadcast`, and when it ends the next one. Missing packets (a gap in group numbers) are
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
    /// Receive audio as QUIC datagrams rather than streams.
    pub datagrams: bool,
    /// Follow only this broadcast (a publisher's participant id); `None`: the first announced.
    pub broadcast: Option<String>,
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

/// How long to wait before joining again after a failed attempt.
const REJOIN_RETRY: Duration = Duration::from_millis(250);

/// Why following a session stopped.
enum Ended {
    /// The duration passed, Ctrl-C, or the server ended the room for us: finish.
    Done,
    /// The session was lost in a way worth joining again for (the node vanished or is
    /// draining).
    Lost(String),
}

/// Connects, follows the room's broadcasts and writes what arrives. When the session is lost
/// (the media node died, or drains and sends its clients away) the listener joins again
/// through the API, which places it on another node, and goes on writing to the same output.
pub async fn listen(target: &Target, options: ListenOptions) -> Result<ListenSummary, ClientError> {
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut timing = TimingLog::create(options.timing_log.as_deref())?;
    let mut sink: Option<Sink> = None;
    let mut summary = ListenSummary::default();
    let expired = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let mut lost: Option<String> = None;
    loop {
        let connect = net::connect_with(
            target,
            net::ConnectOptions {
                datagrams: options.datagrams,
            },
        );
        let connection = tokio::select! {
            () = &mut expired => break,
            _ = tokio::signal::ctrl_c() => break,
            connection = connect => connection,
        };
        let connection = match (connection, &lost) {
            (Ok(connection), _) => connection,
            (Err(err), None) => return Err(err.into()),
            (Err(err), Some(_)) => {
                tracing::warn!(%err, "cannot join again yet; retrying");
                tokio::select! {
                    () = &mut expired => break,
                    _ = tokio::signal::ctrl_c() => break,
                    () = tokio::time::sleep(REJOIN_RETRY) => continue,
                }
            }
        };
        if let Some(reason) = lost.take() {
            tracing::warn!(url = %connection.url, reason, "joined the room again");
        }
        let session = connection.session;
        let ended = follow(
            &session,
            &options,
            &mut sink,
            &mut summary,
            &mut timing,
            expired.as_mut(),
        )
        .await?;
        match ended {
            Ended::Done => {
                session.close(veza_moq::code::session::NO_ERROR, "listener finished");
                break;
            }
            Ended::Lost(reason) if net::can_join_again(target) => {
                tracing::warn!(reason, "session lost; joining again through the API");
                lost = Some(reason);
            }
            Ended::Lost(reason) => {
                if sink.is_none() {
                    return Err(ClientError::Closed(reason));
                }
                break;
            }
        }
    }
    // Nothing heard still leaves a valid, empty file.
    let sink = match sink {
        Some(sink) => sink,
        None => open_sink(&options.output, 2)?,
    };
    sink.finish()?;
    Ok(summary)
}

/// Follows one session's broadcasts until the deadline, Ctrl-C, or the session's end.
async fn follow(
    session: &veza_moq::session::Session,
    options: &ListenOptions,
    sink: &mut Option<Sink>,
    summary: &mut ListenSummary,
    timing: &mut TimingLog,
    mut expired: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Ended, ClientError> {
    let subscriber = session.subscriber();
    let mut announcements = subscriber
        .announced("")
        .await
        .map_err(|e| ClientError::Closed(e.to_string()))?;
    let closed = async {
        let (code, reason) = session.closed_with_code().await;
        if net::worth_joining_again(code) {
            Ended::Lost(reason)
        } else {
            tracing::warn!(reason, "the server ended the session");
            Ended::Done
        }
    };
    tokio::pin!(closed);
    loop {
        // The next broadcast.
        let path = loop {
            tokio::select! {
                () = &mut expired => return Ok(Ended::Done),
                _ = tokio::signal::ctrl_c() => return Ok(Ended::Done),
                ended = &mut closed => return Ok(ended),
                next = announcements.next() => match next {
                    Ok(Some(a)) if a.active && options.broadcast.as_ref().is_none_or(|b| *b == a.path) => {
                        break a.path;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(Ended::Done),
                    Err(err) => return Ok(Ended::Lost(err.to_string())),
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
            *sink = Some(open_sink(&options.output, channels)?);
        }
        let mut order = Reorder::default();
        loop {
            let frame = tokio::select! {
                () = &mut expired => return Ok(Ended::Done),
                _ = tokio::signal::ctrl_c() => return Ok(Ended::Done),
                frame = track.next() => frame,
            };
            let Some(frame) = frame else {
                // The broadcast ended; wait for the next.
                break;
            };
            order.push(frame.group, frame.payload);
            while let Some((missing, payload)) = order.pop() {
                summary.packets += 1;
                summary.lost += missing;
                write(sink.as_mut(), summary, timing, channels, missing, &payload)?;
            }
        }
    }
}

/// Writes one packet, after concealing `missing` ones before it (WAV).
fn write(
    sink: Option<&mut Sink>,
    summary: &mut ListenSummary,
    timing: &mut TimingLog,
    channels: u16,
    missing: u64,
    payload: &[u8],
) -> Result<(), ClientError> {
    match sink {
        Some(Sink::Wav { writer, decoder }) => {
            for _ in 0..missing.min(MAX_CONCEALED) {
                let pcm = decoder.conceal()?;
                summary.seconds += seconds(&pcm, channels);
                writer.write(&pcm)?;
            }
            let pcm = decoder.decode(payload)?;
            timing.record(payload);
            summary.seconds += seconds(&pcm, channels);
            writer.write(&pcm)?;
        }
        Some(Sink::Ogg(writer)) => {
            timing.record(payload);
            summary.seconds += crate::audio::opus_packet_samples(payload)
                .map_or(0.02, |n| f64::from(n) / 48_000.0);
            writer.write_packet(payload)?;
        }
        None => {}
    }
    Ok(())
}

/// Puts groups back in order: each group travels on its own stream, so they may arrive out
/// of order. A group waits until the one before it arrived, or until five newer ones did
/// (100 ms; then the missing ones are given up as lost); one older than the last given out is
/// dropped.
#[derive(Debug, Default)]
struct Reorder {
    pending: std::collections::BTreeMap<u64, bytes::Bytes>,
    next: Option<u64>,
}

impl Reorder {
    const DEPTH: usize = 5;

    fn push(&mut self, group: u64, payload: bytes::Bytes) {
        if self.next.is_none_or(|next| group >= next) {
            self.pending.insert(group, payload);
        }
    }

    /// The next packet in order and how many were skipped before it.
    fn pop(&mut self) -> Option<(u64, bytes::Bytes)> {
        let (&first, _) = self.pending.first_key_value()?;
        let missing = match self.next {
            Some(next) if first == next => 0,
            Some(next) if self.pending.len() > Self::DEPTH => first - next,
            Some(_) => return None,
            None => 0,
        };
        let payload = self.pending.remove(&first)?;
        self.next = Some(first + 1);
        Some((missing, payload))
    }
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

#[cfg(test)]
mod tests {
    use super::Reorder;

    fn drain(order: &mut Reorder) -> Vec<(u64, u8)> {
        std::iter::from_fn(|| order.pop())
            .map(|(missing, payload)| (missing, payload[0]))
            .collect()
    }

    #[test]
    fn groups_come_out_in_order_and_gaps_are_given_up_after_three() {
        let mut order = Reorder::default();
        order.push(10, vec![10].into());
        assert_eq!(drain(&mut order), [(0, 10)]);
        // 12 before 11: held, then both in order.
        order.push(12, vec![12].into());
        assert!(drain(&mut order).is_empty());
        order.push(11, vec![11].into());
        assert_eq!(drain(&mut order), [(0, 11), (0, 12)]);
        // 13 never comes: after six newer ones, it is counted lost.
        for g in 14..=18 {
            order.push(g, vec![g as u8].into());
        }
        assert!(drain(&mut order).is_empty());
        order.push(19, vec![19].into());
        assert_eq!(
            drain(&mut order),
            [(1, 14), (0, 15), (0, 16), (0, 17), (0, 18), (0, 19)]
        );
        // A straggler older than what went out is dropped.
        order.push(13, vec![13].into());
        assert!(drain(&mut order).is_empty());
    }
}
