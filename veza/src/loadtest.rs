//! `veza loadtest`: the command-line arguments of the load tool, on top of `veza-loadtest`.

use std::time::Duration;

use anyhow::Context;
use veza_loadtest::chat::ChatOptions;
use veza_loadtest::sessions::SignalingOptions;
use veza_loadtest::{Options, Transport};

/// `veza loadtest`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The server must allow the setup requests: start it with high API rate limits, e.g.
  VEZA_RATE_LIMIT_PER_MIN=1000000 VEZA_AUTH_RATE_LIMIT_PER_MIN=100000 veza serve
Every media run registers 1 + N + M accounts per room (names start with `lt`).

With --json the last line of standard output is one JSON object: forwarded_pps, loss_ratio,
latency_ms {p50, p95, p99, max}, jitter_ms, connect_ms {p50, p99}, duration_s,
publishers_connected, subscribers_connected, and with --server-pid server_cpu_seconds and
server_rss_bytes; with --misbehave also misbehaving_packets_sent and misbehaving_sessions.
With --baseline: udp_send_pps and srtp_protect_ns.

--signaling N opens N signaling WebSocket sessions (GET /rtc, one media token each, from a
few accounts; one room per 100 sessions unless --rooms), holds them for --duration and
reports sessions_open, join_rate_per_s, failed, and with --server-pid
server_rss_bytes_before/_after and server_rss_per_session_bytes. Each session is a socket:
the tool raises its open-file soft limit to the hard limit; if that is too low, raise it
first (`ulimit -n 65536` as root, or LimitNOFILE=). Every session needs one API request
(POST .../join), so VEZA_RATE_LIMIT_PER_MIN must exceed N.

--chat runs --senders and --receivers per room on the `chat` data channel, the senders
posting --rate messages/s together, and reports messages_per_s (delivered to all receivers),
messages_per_s_per_receiver, latency_ms, loss_ratio, refused and chat_errors. The server
limits chat to 5 messages/s per user (bursts of 10): a sender whose share of --rate is above
--rate-per-account (4) sends through several sessions, each its own account, in turn.")]
pub struct LoadtestArgs {
    /// Measure this machine's limits instead (UDP send rate, SRTP cost); needs no server.
    #[arg(long)]
    baseline: bool,
    /// The server's HTTP base URL.
    #[arg(
        long,
        value_name = "URL",
        env = "VEZA_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Open N idle signaling WebSocket sessions and hold them for --duration.
    #[arg(long, value_name = "N", conflicts_with_all = ["baseline", "chat"],
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    signaling: Option<u32>,
    /// Measure chat through the `chat` data channel (--senders, --receivers, --rate).
    #[arg(long, conflicts_with = "baseline")]
    chat: bool,
    /// Chat senders per room (one account each).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    senders: u32,
    /// Chat receivers per room.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    receivers: u32,
    /// Chat messages per second, all senders together.
    #[arg(long, value_name = "MSG_PER_S", default_value_t = 40.0, value_parser = parse_rate)]
    rate: f64,
    /// The most one chat account posts per second: a sender whose share is higher sends
    /// through several sessions, each its own account (the server allows 5/s per user).
    #[arg(long, value_name = "MSG_PER_S", default_value_t = veza_loadtest::chat::DEFAULT_RATE_PER_ACCOUNT,
          value_parser = parse_rate)]
    rate_per_account: f64,
    /// Misbehaving clients beside a media run: garbage datagrams to the media and QUIC ports,
    /// abandoned WebRTC, QUIC and signaling sessions, during the measured window.
    #[arg(long, value_name = "K", default_value_t = 0)]
    misbehave: u32,
    /// Garbage datagrams per second per misbehaving client.
    #[arg(long, default_value_t = veza_loadtest::misbehave::DEFAULT_PPS)]
    misbehave_pps: u32,
    /// Rooms (default 1; with --signaling one per 100 sessions).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rooms: Option<u32>,
    /// Publishers per room (a subscriber hears up to 16 over WebRTC).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    publishers: u32,
    /// Subscribers per room.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    subscribers: u32,
    /// How long to measure once every peer is connected: `20s`, `500ms`, `2m` or seconds.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// The transport the peers use.
    #[arg(long, value_enum, default_value_t = TransportArg::Webrtc)]
    transport: TransportArg,
    /// The server's process id: report its CPU time and memory from /proc.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Threads driving the peers (default: the CPU count).
    #[arg(long)]
    threads: Option<usize>,
    /// Peers connecting at once.
    #[arg(long, default_value_t = 32)]
    concurrent_connects: usize,
    /// Print the figures as one JSON object on the last line of standard output.
    #[arg(long)]
    json: bool,
}

/// `--transport`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    /// WHIP and WHEP, with str0m peers.
    Webrtc,
    /// moq-lite over QUIC.
    Quic,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|rate| rate.is_finite() && *rate > 0.0)
        .ok_or_else(|| format!("{text:?} is not a positive number of messages per second"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 20s, 500ms or 2m"))?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} must be a positive duration"))
}

/// Runs `veza loadtest`.
pub fn loadtest(args: LoadtestArgs) -> anyhow::Result<()> {
    if args.baseline {
        let baseline = veza_loadtest::baseline::run().context("measuring the baseline")?;
        eprint!("{}", baseline.summary());
        if args.json {
            println!("{}", baseline.to_json());
        }
        return Ok(());
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    if let Some(sessions) = args.signaling {
        let options = SignalingOptions {
            server: args.server,
            sessions: sessions as usize,
            rooms: args.rooms.map(|r| r as usize),
            duration: args.duration,
            server_pid: args.server_pid,
            threads,
            concurrent_connects: args.concurrent_connects,
            progress: true,
        };
        let report = veza_loadtest::sessions::run(&options)?;
        return print(args.json, &report.summary(), &report.to_json());
    }
    if args.chat {
        let options = ChatOptions {
            server: args.server,
            rooms: args.rooms.unwrap_or(1) as usize,
            senders: args.senders as usize,
            receivers: args.receivers as usize,
            rate: args.rate,
            rate_per_account: args.rate_per_account,
            duration: args.duration,
            server_pid: args.server_pid,
            threads,
            concurrent_connects: args.concurrent_connects,
            progress: true,
        };
        if options.rate_per_account > veza_loadtest::chat::SERVER_RATE_PER_USER {
            eprintln!(
                "warning: --rate-per-account {} is over the server's chat limit of {} messages/s \
                 per user: expect refusals",
                options.rate_per_account,
                veza_loadtest::chat::SERVER_RATE_PER_USER
            );
        }
        let report = veza_loadtest::chat::run(&options)?;
        return print(args.json, &report.summary(), &report.to_json());
    }
    let options = Options {
        server: args.server,
        rooms: args.rooms.unwrap_or(1) as usize,
        publishers: args.publishers as usize,
        subscribers: args.subscribers as usize,
        duration: args.duration,
        transport: match args.transport {
            TransportArg::Webrtc => Transport::WebRtc,
            TransportArg::Quic => Transport::Quic,
        },
        server_pid: args.server_pid,
        threads,
        concurrent_connects: args.concurrent_connects,
        progress: true,
        misbehave: args.misbehave as usize,
        misbehave_pps: args.misbehave_pps,
    };
    let report = veza_loadtest::run(&options)?;
    print(args.json, &report.summary(), &report.to_json())
}

/// The summary on standard output, or on standard error with the JSON object on standard
/// output.
fn print(json: bool, summary: &str, object: &impl std::fmt::Display) -> anyhow::Result<()> {
    if json {
        eprint!("{summary}");
        println!("{object}");
    } else {
        print!("{summary}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_parse() {
        assert_eq!(super::parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(
            super::parse_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(super::parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            super::parse_duration("1.5"),
            Ok(Duration::from_millis(1500))
        );
        assert!(super::parse_duration("0s").is_err());
        assert!(super::parse_duration("soon").is_err());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(super::parse_rate("20"), Ok(20.0));
        assert_eq!(super::parse_rate(" 2.5 "), Ok(2.5));
        assert!(super::parse_rate("0").is_err());
        assert!(super::parse_rate("-1").is_err());
        assert!(super::parse_rate("inf").is_err());
        assert!(super::parse_rate("fast").is_err());
    }
}
