//! `veza broadcast`: a file (or live PCM on stdin) into a room at real-time pace.
//!
//! A decoding thread reads and resamples the input into 20 ms frames of 48 kHz PCM, a few
//! frames ahead; the sending loop encodes each frame with libopus when its time comes and
//! sends it as one group (group *n*, timestamp *n* × 20 ms). The clock starts once the server
//! subscribes, so the first second is not lost to the handshake.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use veza_moq::session::AudioInfo;

use crate::ClientError;
use crate::audio::{self, Application, OpusEncoder, PcmSource};
use crate::net::{self, Target};
use crate::timing::TimingLog;

/// One frame's duration.
const FRAME: Duration = Duration::from_millis(20);
/// How long to wait for the server to subscribe before giving up.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to broadcast.
#[derive(Debug, Clone)]
pub enum Input {
    /// An audio file (WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus, AAC/M4A).
    File {
        /// The file.
        path: PathBuf,
        /// Start again at the end, forever.
        looped: bool,
    },
    /// Raw s16le PCM on stdin.
    Stdin {
        /// Sample rate in Hz.
        rate: u32,
        /// Channels, interleaved.
        channels: u16,
    },
}

/// How to broadcast.
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    /// The source.
    pub input: Input,
    /// Opus bitrate in bits per second.
    pub bitrate: u32,
    /// Music or voice tuning.
    pub application: Application,
    /// The broadcast's name (its path on the session).
    pub name: String,
    /// Show a progress line on stderr (when it is a terminal).
    pub progress: bool,
    /// Write a timing line per packet (see the latency test).
    pub timing_log: Option<PathBuf>,
}

/// What a finished broadcast did.
#[derive(Debug, Clone, Copy)]
pub struct BroadcastSummary {
    /// Packets sent.
    pub frames: u64,
    /// Audio sent.
    pub duration: Duration,
    /// Opus bytes sent.
    pub bytes: u64,
}

/// Connects, publishes and sends until the input ends (or forever with `looped`).
pub async fn broadcast(
    target: &Target,
    options: BroadcastOptions,
) -> Result<BroadcastSummary, ClientError> {
    let source = open(&options.input).await?;
    let channels = source.channels();
    let total = source.duration();
    let mut encoder = OpusEncoder::new(channels, options.bitrate, options.application)?;
    let mut timing = TimingLog::create(options.timing_log.as_deref())?;
    let frames = decode_ahead(source);

    let (mut session, mut writer, token) = publish(target, &options, channels).await?;
    let listeners = Arc::new(AtomicU64::new(0));
    let counting = options
        .progress
        .then(|| tokio::spawn(count_listeners(target.clone(), token, listeners.clone())));

    let progress = options.progress && std::io::stderr().is_terminal();
    let mut frames = frames;
    let mut start = Instant::now();
    let mut summary = BroadcastSummary {
        frames: 0,
        duration: Duration::ZERO,
        bytes: 0,
    };
    let mut next_progress = start;
    loop {
        let due = start + FRAME * u32::try_from(summary.frames).unwrap_or(u32::MAX);
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            (code, reason) = session.closed_with_code() => {
                // The node died or drains: publish again through the API, which places the
                // broadcast on another node; the input goes on where it was.
                if !net::can_join_again(target) || !net::worth_joining_again(code) {
                    return Err(ClientError::Closed(reason));
                }
                tracing::warn!(reason, "session lost; publishing again through the API");
                (session, writer) = loop {
                    match publish(target, &options, channels).await {
                        Ok((session, writer, _)) => break (session, writer),
                        Err(err) => {
                            tracing::warn!(%err, "cannot publish again yet; retrying");
                            tokio::select! {
                                () = tokio::time::sleep(REJOIN_RETRY) => {}
                                _ = tokio::signal::ctrl_c() => return Ok(summary),
                            }
                        }
                    }
                };
                tracing::warn!("publishing again");
                // Pace from now on, without a burst to make up for the gap.
                start = Instant::now() - FRAME * u32::try_from(summary.frames).unwrap_or(u32::MAX);
                continue;
            }
            // Ctrl-C ends the broadcast cleanly: listeners see it end at once.
            _ = tokio::signal::ctrl_c() => break,
        }
        let pcm = match frames.recv().await {
            Some(Ok(pcm)) => pcm,
            Some(Err(err)) => return Err(err.into()),
            None => break,
        };
        let packet = encoder.encode(&pcm)?;
        timing.record(&packet);
        summary.bytes += packet.len() as u64;
        writer.write(
            summary.frames,
            summary.frames * FRAME.as_micros() as u64,
            Bytes::from(packet),
        );
        summary.frames += 1;
        summary.duration += FRAME;
        if progress && Instant::now() >= next_progress {
            next_progress += Duration::from_millis(250);
            print_progress(&summary, total, listeners.load(Ordering::Relaxed));
        }
    }
    if progress {
        eprintln!();
    }
    if let Some(task) = counting {
        task.abort();
    }
    // Let the last groups leave before the session closes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(writer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    session.close(veza_moq::code::session::NO_ERROR, "broadcast finished");
    Ok(summary)
}

/// How long to wait before publishing again after a failed attempt.
const REJOIN_RETRY: Duration = Duration::from_millis(250);

/// Connects and publishes the broadcast; returns once the server subscribed to it.
async fn publish(
    target: &Target,
    options: &BroadcastOptions,
    channels: u16,
) -> Result<
    (
        veza_moq::session::Session,
        veza_moq::session::BroadcastWriter,
        String,
    ),
    ClientError,
> {
    let connection = net::connect(target).await?;
    let session = connection.session;
    let writer = session.publisher().publish(
        &options.name,
        AudioInfo {
            track: "audio".into(),
            channels,
            bitrate: Some(options.bitrate),
        },
    );
    wait_for_subscriber(&session, &writer).await?;
    Ok((session, writer, connection.token))
}

async fn open(input: &Input) -> Result<Box<dyn PcmSource + Send>, ClientError> {
    let input = input.clone();
    tokio::task::spawn_blocking(move || match input {
        Input::File {
            path,
            looped: false,
        } => audio::open_file(&path),
        Input::File { path, looped: true } => audio::looped(path),
        Input::Stdin { rate, channels } => audio::raw_pcm(std::io::stdin(), rate, channels),
    })
    .await
    .map_err(|e| ClientError::Io(format!("decoder thread failed: {e}")))?
    .map_err(ClientError::from)
}

/// Decodes on a thread, a few frames ahead of the sending loop.
fn decode_ahead(
    mut source: Box<dyn PcmSource + Send>,
) -> mpsc::Receiver<Result<Vec<f32>, audio::AudioError>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        loop {
            let item = match source.next_frame() {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => break,
                Err(err) => Err(err),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
    });
    rx
}

async fn wait_for_subscriber(
    session: &veza_moq::session::Session,
    writer: &veza_moq::session::BroadcastWriter,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
    while writer.subscribers() == 0 {
        if Instant::now() >= deadline {
            return Err(ClientError::Closed(
                "the server did not subscribe to the broadcast within 10 s".into(),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
            reason = session.closed() => return Err(ClientError::Closed(reason)),
        }
    }
    Ok(())
}

/// Keeps `listeners` at the room's other participants, asking the API every 2 s.
async fn count_listeners(target: Target, token: String, listeners: Arc<AtomicU64>) {
    loop {
        if let Ok((participants, _)) = net::room_live(&target, &token).await {
            listeners.store(participants.saturating_sub(1), Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn print_progress(summary: &BroadcastSummary, total: Option<Duration>, listeners: u64) {
    let elapsed = clock(summary.duration);
    let total = total.map_or_else(|| "live".to_owned(), clock);
    let seconds = summary.duration.as_secs_f64().max(0.02);
    let kbps = summary.bytes as f64 * 8.0 / seconds / 1000.0;
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r{elapsed} / {total}  {kbps:5.1} kb/s  {listeners} listening   "
    );
    let _ = err.flush();
}

/// `m:ss`.
fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}:{:02}", secs / 60, secs % 60)
}
