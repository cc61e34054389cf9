//! `veza loadtest`: the command-line arguments of the load tool, on top of `veza-loadtest`.

use std::time::Duration;

use anyhow::Context;
use veza_loadtest::{Options, Transport};

/// `veza loadtest`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The server must allow the setup requests: start it with high API rate limits, e.g.
  VEZA_RATE_LIMIT_PER_MIN=100000 VEZA_AUTH_RATE_LIMIT_PER_MIN=100000 veza serve
Every run registers 1 + N + M accounts per room (names start with `lt`).

With --json the last line of standard output is one JSON object: forwarded_pps, loss_ratio,
latency_ms {p50, p95, p99, max}, jitter_ms, connect_ms {p50, p99}, duration_s,
publishers_connected, subscribers_connected, and with --server-pid server_cpu_seconds and
server_rss_bytes. With --baseline: udp_send_pps and srtp_protect_ns.")]
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
    /// Rooms.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rooms: u32,
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
    let options = Options {
        server: args.server,
        rooms: args.rooms as usize,
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
    };
    let report = veza_loadtest::run(&options)?;
    if args.json {
        eprint!("{}", report.summary());
        println!("{}", report.to_json());
    } else {
        print!("{}", report.summary());
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
}
