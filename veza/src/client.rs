//! `veza broadcast` and `veza listen`: the command-line client's arguments, on top of
//! `veza-client`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use veza_client::audio::Application;
use veza_client::broadcast::{BroadcastOptions, Input};
use veza_client::listen::{ListenOptions, Output};
use veza_client::{Credentials, Target};

/// Where to connect and as whom.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// The server's HTTP base URL.
    #[arg(
        long,
        value_name = "URL",
        env = "VEZA_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// The room id.
    #[arg(long, value_name = "ROOM_ID")]
    room: String,
    /// A media token for the room (from POST /api/v1/rooms/{id}/join).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VEZA_TOKEN",
        conflicts_with = "username"
    )]
    token: Option<String>,
    /// Sign in with this account instead of a token.
    #[arg(long, env = "VEZA_USERNAME", requires = "password")]
    username: Option<String>,
    /// The account's password.
    #[arg(long, env = "VEZA_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl TargetArgs {
    fn target(self) -> anyhow::Result<Target> {
        let credentials = match (self.token, self.username, self.password) {
            (Some(token), _, _) => Credentials::Token(token),
            (None, Some(username), Some(password)) => Credentials::Password { username, password },
            _ => anyhow::bail!("give --token, or --username and --password"),
        };
        Ok(Target {
            server: self.server,
            room: self.room,
            credentials,
        })
    }
}

/// `veza broadcast`.
#[derive(Debug, clap::Args)]
pub struct BroadcastArgs {
    /// The audio file (WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus, AAC/M4A), or `-` for raw s16le
    /// PCM on stdin.
    #[arg(value_name = "FILE|-")]
    input: String,
    #[command(flatten)]
    target: TargetArgs,
    /// Opus bitrate in bits per second.
    #[arg(long, default_value_t = 96_000, value_parser = clap::value_parser!(u32).range(6_000..=510_000))]
    bitrate: u32,
    /// Tune Opus for music (the default).
    #[arg(long, conflicts_with = "voice")]
    music: bool,
    /// Tune Opus for speech.
    #[arg(long)]
    voice: bool,
    /// Start the file again at its end, until interrupted.
    #[arg(long = "loop")]
    looped: bool,
    /// Sample rate of stdin PCM.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// Channels of stdin PCM.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    channels: u16,
    /// The broadcast's name.
    #[arg(long, default_value = "broadcast")]
    name: String,
    /// Append `<packet hash> <unix µs>` per packet sent to FILE (latency measurement).
    #[arg(long, value_name = "FILE", hide = true)]
    timing_log: Option<PathBuf>,
}

/// `veza listen`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Output: FILE.wav (decoded, 48 kHz), FILE.ogg (Ogg Opus, not decoded) or `-` (WAV on
    /// stdout).
    #[arg(long, value_name = "FILE|-")]
    out: String,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Append `<packet hash> <unix µs>` per packet decoded to FILE (latency measurement).
    #[arg(long, value_name = "FILE", hide = true)]
    timing_log: Option<PathBuf>,
    /// Receive audio as QUIC datagrams (lower latency under loss, no retransmission).
    #[arg(long)]
    datagrams: bool,
    /// Follow this publisher (its participant id) rather than the first one announced.
    #[arg(long, value_name = "PARTICIPANT_ID")]
    broadcast: Option<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(
        |_| // symphonia logs every failed format probe as an error; the command says it once.
        tracing_subscriber::EnvFilter::new("warn,symphonia_core=off"),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs `veza broadcast`.
pub fn broadcast(args: BroadcastArgs) -> anyhow::Result<()> {
    init_logging();
    let input = if args.input == "-" {
        Input::Stdin {
            rate: args.rate,
            channels: args.channels,
        }
    } else {
        Input::File {
            path: PathBuf::from(&args.input),
            looped: args.looped,
        }
    };
    let options = BroadcastOptions {
        input,
        bitrate: args.bitrate,
        application: if args.voice {
            Application::Voice
        } else {
            Application::Music
        },
        name: args.name,
        progress: true,
        timing_log: args.timing_log,
    };
    let target = args.target.target()?;
    let summary = runtime()?.block_on(veza_client::broadcast::broadcast(&target, options))?;
    eprintln!(
        "broadcast {:.2} s: {} packets, {:.1} kb/s",
        summary.duration.as_secs_f64(),
        summary.frames,
        summary.bytes as f64 * 8.0 / summary.duration.as_secs_f64().max(0.02) / 1000.0
    );
    Ok(())
}

/// Runs `veza listen`.
pub fn listen(args: ListenArgs) -> anyhow::Result<()> {
    init_logging();
    let duration = args
        .duration
        .map(|secs| {
            Duration::try_from_secs_f64(secs).context("--duration must be a positive number")
        })
        .transpose()?;
    let options = ListenOptions {
        output: Output::parse(&args.out),
        duration,
        timing_log: args.timing_log,
        datagrams: args.datagrams,
        broadcast: args.broadcast,
    };
    let target = args.target.target()?;
    let summary = runtime()?.block_on(veza_client::listen::listen(&target, options))?;
    eprintln!(
        "listened: {} packets, {} lost, {:.2} s of audio",
        summary.packets, summary.lost, summary.seconds
    );
    Ok(())
}
