//! `veza loadtest --signaling N`: N concurrent signaling WebSocket sessions, held idle.
//!
//! A session is established once the server sent `joined` and its first `offer`. The offer is
//! never answered: the server keeps such a session (and its media peer, waiting for ICE) for as
//! long as the WebSocket stays open, and needs no pings, but each session pings every 15 s as
//! browsers do. Sessions open with bounded concurrency (the join rate is measured while
//! ramping), are held for the duration, and the server's resident memory is read before the
//! ramp and at the end of the hold.
//!
//! Tokens: few users, each joining many times (every join mints a new participant), spread
//! over rooms of [`SESSIONS_PER_ROOM`] (every join is announced to the whole room, so one huge
//! room costs the server O(N²) messages).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::api::{self, Api};
use crate::live::Live;
use crate::peer::CONNECT_TIMEOUT;
use crate::report::round3;
use crate::stats::percentile;
use crate::ws::{self, Endpoint};
use crate::{Error, clock, fdlimit, proc, progress};

/// Sessions per room unless `--rooms` says otherwise.
pub const SESSIONS_PER_ROOM: usize = 100;
/// Sessions per user account.
const SESSIONS_PER_USER: usize = 500;
/// Tokens minted at once.
const CONCURRENT_JOINS: usize = 16;
/// File descriptors the tool needs besides the sessions.
const SPARE_FDS: u64 = 256;

/// What to run.
#[derive(Debug, Clone)]
pub struct SignalingOptions {
    /// The server's HTTP base URL.
    pub server: String,
    /// Sessions to open.
    pub sessions: usize,
    /// Rooms to spread them over (default: one per [`SESSIONS_PER_ROOM`]).
    pub rooms: Option<usize>,
    /// How long to hold them once all are open.
    pub duration: Duration,
    /// The server's process id, for its memory and CPU time.
    pub server_pid: Option<u32>,
    /// Runtime threads.
    pub threads: usize,
    /// Sessions opening at once.
    pub concurrent_connects: usize,
    /// Show the progress line on stderr.
    pub progress: bool,
}

/// The figures of a signaling run.
#[derive(Debug, Clone, Default)]
pub struct SignalingReport {
    /// Sessions asked for.
    pub sessions: usize,
    /// Rooms they were spread over.
    pub rooms: usize,
    /// User accounts they joined as.
    pub users: usize,
    /// Sessions established (joined and offered).
    pub established: usize,
    /// Sessions still open at the end of the hold.
    pub sessions_open: usize,
    /// Sessions that never got established.
    pub failed: usize,
    /// Established sessions the server closed during the hold.
    pub closed_by_server: usize,
    /// From the first connection attempt to the last session established.
    pub ramp: Duration,
    /// The hold.
    pub duration: Duration,
    /// Minting the media tokens (not part of the join rate).
    pub setup: Duration,
    /// Connection (TCP, upgrade, `joined`, `offer`) times, sorted, µs.
    pub connect_us: Vec<u64>,
    /// Up to five distinct failure reasons.
    pub errors: Vec<String>,
    /// The open-file soft limit the tool ran with.
    pub fd_limit: u64,
    /// The server's resident memory before the ramp.
    pub server_rss_before: Option<u64>,
    /// The server's resident memory at the end of the hold.
    pub server_rss_after: Option<u64>,
    /// The server's CPU time during the ramp, seconds.
    pub server_cpu_ramp_seconds: Option<f64>,
    /// The server's CPU time during the hold, seconds.
    pub server_cpu_hold_seconds: Option<f64>,
}

impl SignalingReport {
    /// Sessions established per second while ramping.
    pub fn join_rate(&self) -> f64 {
        self.established as f64 / self.ramp.as_secs_f64().max(1e-9)
    }

    /// Server memory per open session, bytes.
    pub fn rss_per_session(&self) -> Option<f64> {
        let (before, after) = (self.server_rss_before?, self.server_rss_after?);
        (self.sessions_open > 0).then(|| (after as f64 - before as f64) / self.sessions_open as f64)
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        let mut out = json!({
            "mode": "signaling",
            "build": crate::BUILD,
            "sessions": self.sessions,
            "rooms": self.rooms,
            "users": self.users,
            "established": self.established,
            "sessions_open": self.sessions_open,
            "failed": self.failed,
            "closed_by_server": self.closed_by_server,
            "join_rate_per_s": round3(self.join_rate()),
            "ramp_s": round3(self.ramp.as_secs_f64()),
            "duration_s": round3(self.duration.as_secs_f64()),
            "setup_s": round3(self.setup.as_secs_f64()),
            "connect_ms": {
                "p50": ms(percentile(&self.connect_us, 0.50)),
                "p99": ms(percentile(&self.connect_us, 0.99)),
                "max": ms(percentile(&self.connect_us, 1.0)),
            },
            "fd_limit": self.fd_limit,
            "errors": self.errors,
        });
        if let Some(before) = self.server_rss_before {
            out["server_rss_bytes_before"] = json!(before);
        }
        if let Some(after) = self.server_rss_after {
            out["server_rss_bytes_after"] = json!(after);
        }
        if let Some(per) = self.rss_per_session() {
            out["server_rss_per_session_bytes"] = json!(per.round());
        }
        if let Some(cpu) = self.server_cpu_ramp_seconds {
            out["server_cpu_ramp_seconds"] = json!(round3(cpu));
        }
        if let Some(cpu) = self.server_cpu_hold_seconds {
            out["server_cpu_hold_seconds"] = json!(round3(cpu));
        }
        out
    }

    /// The summary for people.
    pub fn summary(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut text = format!(
            "signaling: {n} sessions in {rooms} room(s) as {users} user(s), held {d:.1} s\n\
             sessions      {open} open at the end, {est} established, {failed} failed, \
             {closed} closed by the server\n\
             join rate     {rate:.0} sessions/s ({ramp:.2} s ramp; tokens minted in {setup:.1} s)\n\
             connect       p50 {c50:.1} ms  p99 {c99:.1} ms  max {cmax:.1} ms\n",
            n = self.sessions,
            rooms = self.rooms,
            users = self.users,
            d = self.duration.as_secs_f64(),
            open = self.sessions_open,
            est = self.established,
            failed = self.failed,
            closed = self.closed_by_server,
            rate = self.join_rate(),
            ramp = self.ramp.as_secs_f64(),
            setup = self.setup.as_secs_f64(),
            c50 = ms(percentile(&self.connect_us, 0.5)),
            c99 = ms(percentile(&self.connect_us, 0.99)),
            cmax = ms(percentile(&self.connect_us, 1.0)),
        );
        if let (Some(before), Some(after)) = (self.server_rss_before, self.server_rss_after) {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            text.push_str(&format!(
                "server        {:.1} MiB resident before, {:.1} MiB after",
                mib(before),
                mib(after)
            ));
            if let Some(per) = self.rss_per_session() {
                text.push_str(&format!(": {:.1} KiB per session", per / 1024.0));
            }
            text.push('\n');
        }
        if let (Some(ramp), Some(hold)) =
            (self.server_cpu_ramp_seconds, self.server_cpu_hold_seconds)
        {
            text.push_str(&format!(
                "server CPU    {ramp:.2} s ramping, {hold:.2} s holding\n"
            ));
        }
        for err in &self.errors {
            text.push_str(&format!("error         {err}\n"));
        }
        text
    }
}

/// Runs a signaling load test.
pub fn run(options: &SignalingOptions) -> Result<SignalingReport, Error> {
    if options.sessions == 0 {
        return Err(Error::Setup("--signaling must be at least 1".into()));
    }
    let wanted = options.sessions as u64 + SPARE_FDS;
    let fd_limit = fdlimit::raise(wanted)?;
    if fd_limit < wanted {
        return Err(Error::Setup(format!(
            "{} sessions need about {wanted} open files, but the limit is {fd_limit}: raise the \
             hard limit (e.g. `ulimit -n 65536` as root, or LimitNOFILE= in a systemd unit)",
            options.sessions
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .thread_name("veza-loadtest")
        .enable_all()
        .build()?;
    let mut report = runtime.block_on(coordinate(options))?;
    report.fd_limit = fd_limit;
    Ok(report)
}

/// Counters of the sessions, besides [`Live`]'s.
#[derive(Debug, Default)]
struct Counters {
    /// Established sessions that ended before the run stopped them.
    closed: AtomicUsize,
    /// When the last session got established, [`clock`] µs.
    last_established_us: AtomicU64,
}

async fn coordinate(options: &SignalingOptions) -> Result<SignalingReport, Error> {
    clock::start();
    let api = Api::new(&options.server)?;
    let addr = crate::run::resolve(&options.server).await?;
    let endpoint = Arc::new(Endpoint::new(&options.server, addr)?);
    let prefix = format!("lt{:06x}", crate::run::run_id() & 0xff_ffff);
    let sessions = options.sessions;
    let rooms = options
        .rooms
        .unwrap_or_else(|| sessions.div_ceil(SESSIONS_PER_ROOM))
        .clamp(1, sessions);
    let users = sessions.div_ceil(SESSIONS_PER_USER).clamp(1, 20);

    let started = Instant::now();
    let names: Vec<String> = (0..users).map(|u| format!("{prefix}-sig{u}")).collect();
    let accounts = api::register_many(&api, &names).await?;
    let room_ids = api::create_rooms(&api, &accounts[0].0, &prefix, rooms).await?;
    let joins = (0..sessions)
        .map(|i| (accounts[i % users].0.clone(), room_ids[i % rooms].clone()))
        .collect();
    let tickets = api::join_many(&api, joins, CONCURRENT_JOINS).await?;
    let setup = started.elapsed();

    let live = Arc::new(Live::default());
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop) = watch::channel(false);
    let (phase_tx, phase) = watch::channel("connecting");
    let (progress_stop, progress_stopped) = watch::channel(false);
    let progress = options.progress.then(|| {
        tokio::spawn(progress::show(
            live.clone(),
            progress::Labels {
                first: "sessions",
                second: "open",
                rate: "pongs/s",
            },
            sessions,
            sessions,
            phase,
            progress_stopped,
        ))
    });

    let server_pid = options.server_pid.map(|pid| pid.to_string());
    let server_rss_before = server_pid.as_deref().map(proc::rss_bytes).transpose()?;
    let cpu_start = server_pid.as_deref().map(proc::cpu_ticks).transpose()?;
    let gate = Arc::new(Semaphore::new(options.concurrent_connects.max(1)));
    let ramp_start = clock::now_us();
    let mut tasks = JoinSet::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        // Keepalives spread evenly over the period.
        let first_ping = ws::KEEPALIVE.mul_f64((i as f64 + 0.5) / sessions as f64);
        tasks.spawn(session(
            endpoint.clone(),
            ticket.token,
            first_ping,
            gate.clone(),
            live.clone(),
            counters.clone(),
            stop.clone(),
        ));
    }
    let waves = sessions.div_ceil(options.concurrent_connects.max(1)) as u32;
    let deadline = Instant::now() + CONNECT_TIMEOUT + Duration::from_millis(100) * waves;
    while live.publishers_ready.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed)
        < sessions
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let established = live.publishers_ready.load(Ordering::Relaxed);
    let last = counters.last_established_us.load(Ordering::Relaxed);
    let ramp = Duration::from_micros(last.saturating_sub(ramp_start));
    let cpu_ramp_end = server_pid.as_deref().map(proc::cpu_ticks).transpose()?;

    phase_tx.send_replace("holding");
    let hold_start = Instant::now();
    if established > 0 {
        tokio::time::sleep(options.duration).await;
    }
    let duration = hold_start.elapsed();
    let closed_by_server = counters.closed.load(Ordering::Relaxed);
    let sessions_open = established.saturating_sub(closed_by_server);
    let server_rss_after = server_pid.as_deref().map(proc::rss_bytes).transpose()?;
    let cpu_end = server_pid.as_deref().map(proc::cpu_ticks).transpose()?;

    phase_tx.send_replace("closing");
    stop_tx.send_replace(true);
    let outcomes = crate::run::gather(&mut tasks, progress_stop, progress, |err| {
        Err(format!("session task: {err}"))
    })
    .await;

    let ticks = proc::ticks_per_second() as f64;
    let cpu = |from: Option<u64>, to: Option<u64>| Some(to?.saturating_sub(from?) as f64 / ticks);
    let mut report = SignalingReport {
        sessions,
        rooms,
        users,
        established,
        sessions_open,
        failed: sessions - established,
        closed_by_server,
        ramp,
        duration,
        setup,
        server_rss_before,
        server_rss_after,
        server_cpu_ramp_seconds: cpu(cpu_start, cpu_ramp_end),
        server_cpu_hold_seconds: cpu(cpu_ramp_end, cpu_end),
        ..SignalingReport::default()
    };
    for outcome in outcomes {
        match outcome {
            Ok(connect) => report
                .connect_us
                .push(u64::try_from(connect.as_micros()).unwrap_or(u64::MAX)),
            Err(err) => {
                if report.errors.len() < 5 && !report.errors.contains(&err) {
                    report.errors.push(err);
                }
            }
        }
    }
    report.connect_us.sort_unstable();
    Ok(report)
}

/// One session: opens, waits for the offer, holds until the run stops. Returns its connect
/// time, or why it failed or ended early.
async fn session(
    endpoint: Arc<Endpoint>,
    token: String,
    first_ping: Duration,
    gate: Arc<Semaphore>,
    live: Arc<Live>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Result<Duration, String> {
    let permit = gate.acquire_owned().await;
    let started = Instant::now();
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut ws = endpoint.connect(&token).await?;
        ws::until_offer(&mut ws).await?;
        Ok::<_, String>(ws)
    })
    .await
    .unwrap_or_else(|_| Err(format!("not established within {CONNECT_TIMEOUT:?}")));
    let mut ws = match opened {
        Ok(ws) => ws,
        Err(err) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            return Err(err);
        }
    };
    let connect = started.elapsed();
    drop(permit);
    live.publishers_ready.fetch_add(1, Ordering::Relaxed);
    live.subscribers_ready.fetch_add(1, Ordering::Relaxed);
    counters
        .last_established_us
        .fetch_max(clock::now_us(), Ordering::Relaxed);

    let mut keepalive =
        tokio::time::interval_at((Instant::now() + first_ping).into(), ws::KEEPALIVE);
    let ended = loop {
        tokio::select! {
            biased;
            () = crate::peer::until(&mut stop, true) => break None,
            _ = keepalive.tick() => {
                if let Err(err) = ws::send(&mut ws, &json!({ "type": "ping" })).await {
                    break Some(err);
                }
            }
            frame = ws::next(&mut ws) => match frame {
                Ok(Some(frame)) => {
                    if frame.kind == "pong" {
                        live.received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(None) => break Some("the server closed the session".to_owned()),
                Err(err) => break Some(err),
            },
        }
    };
    match ended {
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
            Ok(connect)
        }
        Some(err) => {
            counters.closed.fetch_add(1, Ordering::Relaxed);
            live.subscribers_ready.fetch_sub(1, Ordering::Relaxed);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SignalingReport;

    #[test]
    fn the_join_rate_and_memory_per_session_follow_the_counts() {
        let report = SignalingReport {
            sessions: 200,
            established: 200,
            sessions_open: 200,
            ramp: Duration::from_millis(500),
            server_rss_before: Some(10_000_000),
            server_rss_after: Some(12_000_000),
            ..SignalingReport::default()
        };
        assert_eq!(report.join_rate(), 400.0);
        assert_eq!(report.rss_per_session(), Some(10_000.0));
        let json = report.to_json();
        assert_eq!(json["server_rss_per_session_bytes"], 10_000.0);
        assert_eq!(json["join_rate_per_s"], 400.0);
        assert!(report.summary().contains("9.8 KiB per session"));
        let nobody = SignalingReport {
            server_rss_before: Some(1),
            server_rss_after: Some(2),
            ..SignalingReport::default()
        };
        assert_eq!(nobody.rss_per_session(), None);
    }
}
