//! `veza loadtest --chat`: chat through the `chat` data channel (docs/protocol.md, "Chat on the
//! data channel").
//!
//! Every peer is a signaling session plus a str0m peer answering the server's offer; the
//! server opens the `chat` channel on it. Senders post `{"client_id","text"}` at an even share
//! of the aggregate rate, the send time in both the text and the client id; receivers (sharing
//! one account) measure when each `chat.created` arrives. The server limits chat per user
//! (5 messages/s, bursts of 10), so a sender whose share is above `rate_per_account` sends
//! through several sessions, each its own account, in turn. Everything sent in the
//! measured window and acknowledged should reach every receiver of its room: loss is what did
//! not within [`DRAIN`] of the window's end. Refusals (`chat.error`) are counted apart: those
//! for the rate limit as `refused`, others as `chat_errors`.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::config::DtlsCert;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::api::{self, Api};
use crate::live::Live;
use crate::peer::CONNECT_TIMEOUT;
use crate::report::round3;
use crate::stats::{Histogram, percentile};
use crate::ws::{self, Endpoint, Ws};
use crate::{Error, clock, proc, progress, webrtc};

/// After the window closes, how long messages sent in it may take to arrive.
pub const DRAIN: Duration = Duration::from_secs(2);
/// Time after every peer is ready and sending started before measuring.
const SETTLE: Duration = Duration::from_secs(1);
/// How long peers get to wind down.
/// A sender that fell this far behind its schedule starts afresh instead of bursting.
const MAX_BEHIND: Duration = Duration::from_millis(100);
/// The server's chat limit per user, messages per second (not configurable there).
pub const SERVER_RATE_PER_USER: f64 = 5.0;
/// The most a sender's account posts per second by default: under the server's limit.
pub const DEFAULT_RATE_PER_ACCOUNT: f64 = 4.0;
/// The code of a rate-limit refusal.
const RATE_LIMITED: &str = "chat_rate_limited";

/// What to run.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// The server's HTTP base URL.
    pub server: String,
    /// Rooms.
    pub rooms: usize,
    /// Senders per room.
    pub senders: usize,
    /// Receivers per room.
    pub receivers: usize,
    /// Messages per second sent by all senders together.
    pub rate: f64,
    /// The most one account (one sender session) posts per second.
    pub rate_per_account: f64,
    /// How long to measure.
    pub duration: Duration,
    /// The server's process id, for its CPU time and memory.
    pub server_pid: Option<u32>,
    /// Runtime threads.
    pub threads: usize,
    /// Peers connecting at once.
    pub concurrent_connects: usize,
    /// Show the progress line on stderr.
    pub progress: bool,
}

impl ChatOptions {
    /// Messages per second each sender sends.
    pub fn rate_per_sender(&self) -> f64 {
        self.rate / (self.rooms * self.senders).max(1) as f64
    }

    /// Sessions (accounts) each sender sends through, in turn.
    pub fn sessions_per_sender(&self) -> usize {
        let needed = self.rate_per_sender() / self.rate_per_account.max(1e-3);
        (needed.ceil() as usize).max(1)
    }

    /// Sender sessions of the whole run.
    pub fn sender_sessions(&self) -> usize {
        self.rooms * self.senders * self.sessions_per_sender()
    }
}

/// Sender or receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    /// Posts messages; `index` among all senders of the run.
    Sender {
        /// 0-based, over every room.
        index: usize,
    },
    /// Measures deliveries.
    Receiver,
}

/// What one chat peer did (window counts only).
#[derive(Debug, Clone)]
pub struct ChatOutcome {
    /// Its role.
    pub role: ChatRole,
    /// Its room's index.
    pub room: usize,
    /// From the first request until the chat channel opened.
    pub connect: Option<Duration>,
    /// Messages sent.
    pub sent: u64,
    /// Of those, acknowledged (stored and delivered by the server).
    pub acked: u64,
    /// Of those, refused by the chat rate limit.
    pub refused: u64,
    /// Of those, refused for another reason.
    pub chat_errors: u64,
    /// Messages the channel's buffer would not take (not sent).
    pub blocked: u64,
    /// Messages received (receivers).
    pub delivered: u64,
    /// Delivery latency, µs (receivers).
    pub latency: Histogram,
    /// From send to the server's acknowledgement, µs (senders).
    pub ack_latency: Histogram,
    /// The codes of refusals other than the rate limit (a few).
    pub error_codes: Vec<String>,
    /// Why the peer failed, if it did.
    pub error: Option<String>,
    /// The room sequence number of the last message received (receivers).
    pub last_seq: Option<i64>,
    /// Sequence numbers skipped between two received messages (receivers): each room's
    /// messages should arrive gap-free.
    pub seq_gaps: u64,
    /// Messages whose sequence number was not above the previous one (a duplicate or a
    /// reordering; receivers).
    pub seq_regressions: u64,
}

impl ChatOutcome {
    fn new(role: ChatRole, room: usize) -> Self {
        Self {
            role,
            room,
            connect: None,
            sent: 0,
            acked: 0,
            refused: 0,
            chat_errors: 0,
            blocked: 0,
            delivered: 0,
            latency: Histogram::default(),
            ack_latency: Histogram::default(),
            error_codes: Vec::new(),
            error: None,
            last_seq: None,
            seq_gaps: 0,
            seq_regressions: 0,
        }
    }

    /// Checks that `seq` follows the last one received.
    fn order(&mut self, seq: i64) {
        match self.last_seq {
            Some(last) if seq <= last => self.seq_regressions += 1,
            Some(last) => {
                self.seq_gaps += u64::try_from(seq - last - 1).unwrap_or(0);
                self.last_seq = Some(seq);
            }
            None => self.last_seq = Some(seq),
        }
    }
}

/// Shared by every chat peer.
#[derive(Debug, Clone)]
struct Ctx {
    endpoint: Arc<Endpoint>,
    live: Arc<Live>,
    connecting: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    /// True while senders send.
    go: watch::Receiver<bool>,
    interval: Duration,
    senders: usize,
    local_ip: IpAddr,
    cert: Option<DtlsCert>,
}

/// The figures of a chat run.
#[derive(Debug, Clone)]
pub struct ChatReport {
    /// The options' figures.
    pub rooms: usize,
    /// Senders per room.
    pub senders: usize,
    /// Sessions (accounts) per sender.
    pub sessions_per_sender: usize,
    /// Receivers per room.
    pub receivers: usize,
    /// The aggregate rate asked for.
    pub rate: f64,
    /// The measured window.
    pub duration: Duration,
    /// Sums over peers (window counts).
    pub sent: u64,
    /// Acknowledged.
    pub acked: u64,
    /// Refused by the rate limit.
    pub refused: u64,
    /// Refused otherwise.
    pub chat_errors: u64,
    /// Not taken by the channel's buffer.
    pub blocked: u64,
    /// Received by receivers.
    pub delivered: u64,
    /// Acknowledged messages × connected receivers of their room.
    pub expected: u64,
    /// Sequence numbers skipped, over all receivers (should be 0).
    pub seq_gaps: u64,
    /// Duplicated or reordered messages, over all receivers (should be 0).
    pub seq_regressions: u64,
    /// Delivery latency over all receivers, µs.
    pub latency: Histogram,
    /// Acknowledgement latency over all senders, µs.
    pub ack_latency: Histogram,
    /// Connect times, sorted, µs.
    pub connect_us: Vec<u64>,
    /// Senders whose channel opened.
    pub senders_connected: usize,
    /// Receivers whose channel opened.
    pub receivers_connected: usize,
    /// Peers that failed.
    pub failed: usize,
    /// Up to five distinct failure reasons and refusal codes.
    pub errors: Vec<String>,
    /// The server's CPU time in the window.
    pub server_cpu_seconds: Option<f64>,
    /// The server's resident memory at the end of the window.
    pub server_rss_bytes: Option<u64>,
    /// The load tool's CPU time in the window.
    pub loadtest_cpu_seconds: Option<f64>,
}

impl ChatReport {
    fn new(options: &ChatOptions, duration: Duration) -> Self {
        Self {
            rooms: options.rooms,
            senders: options.senders,
            sessions_per_sender: options.sessions_per_sender(),
            receivers: options.receivers,
            rate: options.rate,
            duration,
            sent: 0,
            acked: 0,
            refused: 0,
            chat_errors: 0,
            blocked: 0,
            delivered: 0,
            expected: 0,
            seq_gaps: 0,
            seq_regressions: 0,
            latency: Histogram::default(),
            ack_latency: Histogram::default(),
            connect_us: Vec::new(),
            senders_connected: 0,
            receivers_connected: 0,
            failed: 0,
            errors: Vec::new(),
            server_cpu_seconds: None,
            server_rss_bytes: None,
            loadtest_cpu_seconds: None,
        }
    }

    /// Adds the peers' outcomes: sums, and per room acknowledged × receivers for `expected`.
    pub fn outcomes(&mut self, outcomes: &[ChatOutcome]) {
        let mut acked = vec![0u64; self.rooms];
        let mut receivers = vec![0u64; self.rooms];
        for outcome in outcomes {
            let ok = outcome.error.is_none();
            if let Some(connect) = outcome.connect {
                self.connect_us
                    .push(u64::try_from(connect.as_micros()).unwrap_or(u64::MAX));
            }
            if let Some(err) = &outcome.error {
                self.failed += 1;
                if self.errors.len() < 5 && !self.errors.contains(err) {
                    self.errors.push(err.clone());
                }
            }
            for code in &outcome.error_codes {
                let code = format!("chat.error {code}");
                if self.errors.len() < 5 && !self.errors.contains(&code) {
                    self.errors.push(code);
                }
            }
            self.sent += outcome.sent;
            self.acked += outcome.acked;
            self.refused += outcome.refused;
            self.chat_errors += outcome.chat_errors;
            self.blocked += outcome.blocked;
            self.delivered += outcome.delivered;
            self.seq_gaps += outcome.seq_gaps;
            self.seq_regressions += outcome.seq_regressions;
            self.latency.merge(&outcome.latency);
            self.ack_latency.merge(&outcome.ack_latency);
            let room = outcome.room.min(self.rooms.saturating_sub(1));
            match outcome.role {
                ChatRole::Sender { .. } => {
                    if outcome.connect.is_some() && ok {
                        self.senders_connected += 1;
                    }
                    if let Some(a) = acked.get_mut(room) {
                        *a += outcome.acked;
                    }
                }
                ChatRole::Receiver => {
                    if outcome.connect.is_some() && ok {
                        self.receivers_connected += 1;
                        if let Some(r) = receivers.get_mut(room) {
                            *r += 1;
                        }
                    }
                }
            }
        }
        self.expected = acked.iter().zip(&receivers).map(|(a, r)| a * r).sum();
        self.connect_us.sort_unstable();
    }

    /// Expected deliveries that did not happen.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// Lost over expected.
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost() as f64 / self.expected as f64
        }
    }

    fn per_s(&self, count: u64) -> f64 {
        count as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// Messages delivered per second to all receivers.
    pub fn messages_per_s(&self) -> f64 {
        self.per_s(self.delivered)
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        let mut out = json!({
            "mode": "chat",
            "build": crate::BUILD,
            "rooms": self.rooms,
            "senders_per_room": self.senders,
            "sessions_per_sender": self.sessions_per_sender,
            "receivers_per_room": self.receivers,
            "rate_target_per_s": round3(self.rate),
            "rate_per_sender": round3(self.rate / (self.rooms * self.senders).max(1) as f64),
            "rate_per_sender_session": round3(
                self.rate / (self.rooms * self.senders * self.sessions_per_sender).max(1) as f64
            ),
            "duration_s": round3(self.duration.as_secs_f64()),
            "sent": self.sent,
            "acked": self.acked,
            "refused": self.refused,
            "chat_errors": self.chat_errors,
            "blocked": self.blocked,
            "delivered": self.delivered,
            "expected": self.expected,
            "lost": self.lost(),
            "loss_ratio": self.loss_ratio(),
            "seq_gaps": self.seq_gaps,
            "seq_regressions": self.seq_regressions,
            "sent_per_s": round3(self.per_s(self.sent)),
            "acked_per_s": round3(self.per_s(self.acked)),
            "messages_per_s": round3(self.messages_per_s()),
            "messages_per_s_per_receiver": round3(
                self.messages_per_s() / self.receivers_connected.max(1) as f64
            ),
            "latency_ms": {
                "p50": ms(self.latency.quantile(0.50)),
                "p95": ms(self.latency.quantile(0.95)),
                "p99": ms(self.latency.quantile(0.99)),
                "max": ms(self.latency.max()),
            },
            "ack_latency_ms": {
                "p50": ms(self.ack_latency.quantile(0.50)),
                "p99": ms(self.ack_latency.quantile(0.99)),
                "max": ms(self.ack_latency.max()),
            },
            "connect_ms": {
                "p50": ms(percentile(&self.connect_us, 0.50)),
                "p99": ms(percentile(&self.connect_us, 0.99)),
            },
            "senders_connected": self.senders_connected,
            "receivers_connected": self.receivers_connected,
            "peers_failed": self.failed,
            "errors": self.errors,
        });
        if let Some(cpu) = self.server_cpu_seconds {
            out["server_cpu_seconds"] = json!(round3(cpu));
            out["server_cpu_cores"] = json!(round3(cpu / self.duration.as_secs_f64().max(1e-9)));
        }
        if let Some(rss) = self.server_rss_bytes {
            out["server_rss_bytes"] = json!(rss);
        }
        if let Some(cpu) = self.loadtest_cpu_seconds {
            out["loadtest_cpu_seconds"] = json!(round3(cpu));
        }
        out
    }

    /// The summary for people.
    pub fn summary(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut text = format!(
            "chat: {rooms} room(s) × {s} senders ({k} session(s) each) × {r} receivers at \
             {rate:.0} messages/s, {d:.1} s measured\n\
             connected     {sc}/{st} sender sessions, {rc}/{rt} receivers, {f} failed\n\
             sent          {sent} ({acked} acknowledged, {refused} refused by the rate limit, \
             {errors} other refusals, {blocked} not taken by the channel)\n\
             delivered     {pps:.0} messages/s ({per:.0}/s per receiver)\n\
             loss          {loss:.3} % ({lost} of {expected})\n\
             order         {gaps} sequence gaps, {regressions} duplicates or reorderings\n\
             latency       p50 {p50:.2} ms  p95 {p95:.2} ms  p99 {p99:.2} ms  max {max:.2} ms\n\
             ack latency   p50 {a50:.2} ms  p99 {a99:.2} ms\n\
             connect       p50 {c50:.1} ms  p99 {c99:.1} ms\n",
            rooms = self.rooms,
            s = self.senders,
            k = self.sessions_per_sender,
            r = self.receivers,
            rate = self.rate,
            d = self.duration.as_secs_f64(),
            sc = self.senders_connected,
            st = self.rooms * self.senders * self.sessions_per_sender,
            rc = self.receivers_connected,
            rt = self.rooms * self.receivers,
            f = self.failed,
            sent = self.sent,
            acked = self.acked,
            refused = self.refused,
            errors = self.chat_errors,
            blocked = self.blocked,
            pps = self.messages_per_s(),
            per = self.messages_per_s() / self.receivers_connected.max(1) as f64,
            loss = self.loss_ratio() * 100.0,
            lost = self.lost(),
            expected = self.expected,
            gaps = self.seq_gaps,
            regressions = self.seq_regressions,
            p50 = ms(self.latency.quantile(0.5)),
            p95 = ms(self.latency.quantile(0.95)),
            p99 = ms(self.latency.quantile(0.99)),
            max = ms(self.latency.max()),
            a50 = ms(self.ack_latency.quantile(0.5)),
            a99 = ms(self.ack_latency.quantile(0.99)),
            c50 = ms(percentile(&self.connect_us, 0.5)),
            c99 = ms(percentile(&self.connect_us, 0.99)),
        );
        crate::report::costs(
            &mut text,
            self.duration,
            self.server_cpu_seconds,
            self.server_rss_bytes,
            self.loadtest_cpu_seconds,
        );
        for err in &self.errors {
            text.push_str(&format!("error         {err}\n"));
        }
        text
    }
}

/// Runs a chat load test.
pub fn run(options: &ChatOptions) -> Result<ChatReport, Error> {
    if options.rooms == 0 || options.senders == 0 || options.receivers == 0 {
        return Err(Error::Setup(
            "--rooms, --senders and --receivers must be at least 1".into(),
        ));
    }
    if !(options.rate.is_finite() && options.rate > 0.0) {
        return Err(Error::Setup("--rate must be a positive number".into()));
    }
    if !(options.rate_per_account.is_finite() && options.rate_per_account > 0.0) {
        return Err(Error::Setup(
            "--rate-per-account must be a positive number".into(),
        ));
    }
    let peers = (options.sender_sessions() + options.rooms * options.receivers) as u64;
    // A WebSocket and a UDP socket each.
    crate::fdlimit::raise(2 * peers + 256)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .thread_name("veza-loadtest")
        .enable_all()
        .build()?;
    runtime.block_on(coordinate(options))
}

async fn coordinate(options: &ChatOptions) -> Result<ChatReport, Error> {
    clock::start();
    let api = Api::new(&options.server)?;
    let addr = crate::run::resolve(&options.server).await?;
    let endpoint = Arc::new(Endpoint::new(&options.server, addr)?);
    let prefix = format!("lt{:06x}", crate::run::run_id() & 0xff_ffff);
    // Sender sessions: every sender's share through its own accounts, in turn.
    let per_room = options.senders * options.sessions_per_sender();
    let total_senders = options.sender_sessions();
    let total_receivers = options.rooms * options.receivers;

    // The owner, the receivers' account, one account per sender.
    let mut names = vec![format!("{prefix}-chat-owner"), format!("{prefix}-chat-rx")];
    names.extend((0..total_senders).map(|s| format!("{prefix}-chat-s{s}")));
    let accounts = api::register_many(&api, &names).await?;
    let rooms = api::create_rooms(&api, &accounts[0].0, &prefix, options.rooms).await?;
    let mut joins = Vec::with_capacity(total_senders + total_receivers);
    for (r, room) in rooms.iter().enumerate() {
        for s in 0..per_room {
            joins.push((accounts[2 + r * per_room + s].0.clone(), room.clone()));
        }
        for _ in 0..options.receivers {
            joins.push((accounts[1].0.clone(), room.clone()));
        }
    }
    let tickets = api::join_many(&api, joins, 16).await?;

    let live = Arc::new(Live::default());
    let (stop_tx, stop) = watch::channel(false);
    let (go_tx, go) = watch::channel(false);
    let (phase_tx, phase) = watch::channel("connecting");
    let (progress_stop, progress_stopped) = watch::channel(false);
    let progress = options.progress.then(|| {
        tokio::spawn(progress::show(
            live.clone(),
            progress::Labels {
                first: "senders",
                second: "receivers",
                rate: "msg/s received",
            },
            total_senders,
            total_receivers,
            phase,
            progress_stopped,
        ))
    });
    let ctx = Ctx {
        endpoint,
        live: live.clone(),
        connecting: Arc::new(Semaphore::new(options.concurrent_connects.max(1))),
        stop,
        go,
        interval: Duration::from_secs_f64(total_senders as f64 / options.rate),
        senders: total_senders,
        local_ip: webrtc::local_ip_towards(addr),
        cert: webrtc::certificate(),
    };
    let mut tasks = JoinSet::new();
    let mut tickets = tickets.into_iter();
    for room in 0..options.rooms {
        for s in 0..per_room {
            let Some(ticket) = tickets.next() else { break };
            let role = ChatRole::Sender {
                index: room * per_room + s,
            };
            tasks.spawn(peer(role, room, ticket, ctx.clone()));
        }
        for _ in 0..options.receivers {
            let Some(ticket) = tickets.next() else { break };
            tasks.spawn(peer(ChatRole::Receiver, room, ticket, ctx.clone()));
        }
    }
    let peers = total_senders + total_receivers;
    let waves = peers.div_ceil(options.concurrent_connects.max(1)) as u32;
    let deadline = Instant::now() + CONNECT_TIMEOUT + Duration::from_millis(200) * waves;
    while live.publishers_ready.load(Ordering::Relaxed)
        + live.subscribers_ready.load(Ordering::Relaxed)
        + live.failed.load(Ordering::Relaxed)
        < peers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nobody = live.publishers_ready.load(Ordering::Relaxed) == 0
        || live.subscribers_ready.load(Ordering::Relaxed) == 0;
    if !nobody {
        phase_tx.send_replace("sending");
        go_tx.send_replace(true);
        tokio::time::sleep(SETTLE).await;
    }

    phase_tx.send_replace("measuring");
    let window = proc::Window::open(options.server_pid)?;
    let opened = clock::now_us();
    live.open_window(opened);
    if !nobody {
        tokio::time::sleep(options.duration).await;
    }
    let closed = clock::now_us();
    live.close_window(closed);
    go_tx.send_replace(false);
    let usage = window.close()?;
    let duration = Duration::from_micros(closed - opened);
    if !nobody {
        phase_tx.send_replace("draining");
        tokio::time::sleep(DRAIN).await;
    }

    phase_tx.send_replace("stopping");
    stop_tx.send_replace(true);
    let outcomes = crate::run::gather(&mut tasks, progress_stop, progress, |err| {
        let mut outcome = ChatOutcome::new(ChatRole::Receiver, 0);
        outcome.error = Some(format!("peer task: {err}"));
        outcome
    })
    .await;

    let mut report = ChatReport::new(options, duration);
    report.server_cpu_seconds = usage.server_cpu_seconds;
    report.server_rss_bytes = usage.server_rss_bytes;
    report.loadtest_cpu_seconds = usage.loadtest_cpu_seconds;
    report.outcomes(&outcomes);
    Ok(report)
}

/// One chat peer until the run stops.
async fn peer(role: ChatRole, room: usize, ticket: api::Ticket, ctx: Ctx) -> ChatOutcome {
    let mut out = ChatOutcome::new(role, room);
    if let Err(err) = drive(&mut out, &ticket, &ctx).await {
        ctx.live.failed.fetch_add(1, Ordering::Relaxed);
        out.error = Some(err);
    }
    out
}

/// The sender's schedule.
struct Schedule {
    next: Instant,
    seq: u64,
}

async fn drive(out: &mut ChatOutcome, ticket: &api::Ticket, ctx: &Ctx) -> Result<(), String> {
    let token = ticket.token.as_str();
    let permit = ctx.connecting.clone().acquire_owned().await;
    let started = Instant::now();
    let give_up = started + CONNECT_TIMEOUT;
    let socket = UdpSocket::bind((ctx.local_ip, 0))
        .await
        .map_err(|e| format!("UDP bind: {e}"))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("UDP socket: {e}"))?;
    let (mut ws, offer) = tokio::time::timeout(CONNECT_TIMEOUT, async {
        // The node the API placed this peer on (the server itself when it is one node).
        let mut ws = if ticket.signaling.is_empty() || ticket.signaling == ctx.endpoint.url() {
            ctx.endpoint.connect(token).await?
        } else {
            Endpoint::at(&ticket.signaling)
                .await?
                .connect(token)
                .await?
        };
        let offer = ws::until_offer(&mut ws).await?;
        Ok::<_, String>((ws, offer))
    })
    .await
    .map_err(|_| format!("no offer within {CONNECT_TIMEOUT:?}"))??;

    let mut config = Rtc::builder().clear_codecs().enable_opus(true, false);
    if let Some(cert) = ctx.cert.clone() {
        config = config.set_dtls_cert(cert);
    }
    let mut rtc = config.build(Instant::now());
    let candidate = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
    rtc.add_local_candidate(candidate);
    answer(&mut rtc, &mut ws, &offer).await?;

    let mut permit = Some(permit);
    let mut channel: Option<ChannelId> = None;
    let mut schedule: Option<Schedule> = None;
    let mut going = false;
    let mut stop = ctx.stop.clone();
    let mut go = ctx.go.clone();
    let mut keepalive =
        tokio::time::interval_at((Instant::now() + ws::KEEPALIVE).into(), ws::KEEPALIVE);
    let mut buf = vec![0u8; 2048];
    let sender = match out.role {
        ChatRole::Sender { index } => Some(index),
        ChatRole::Receiver => None,
    };
    loop {
        let timeout = loop {
            match rtc.poll_output().map_err(|e| format!("str0m: {e}"))? {
                Output::Timeout(at) => break at,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(event) => match event {
                    Event::ChannelOpen(id, label) if label == "chat" && channel.is_none() => {
                        channel = Some(id);
                        out.connect = Some(started.elapsed());
                        // Let the next peer start its handshake.
                        drop(permit.take());
                        match out.role {
                            ChatRole::Sender { .. } => &ctx.live.publishers_ready,
                            ChatRole::Receiver => &ctx.live.subscribers_ready,
                        }
                        .fetch_add(1, Ordering::Relaxed);
                    }
                    Event::ChannelData(data) if Some(data.id) == channel => {
                        on_chat(out, &data.data, ctx);
                    }
                    Event::ChannelClose(id) if Some(id) == channel => {
                        return Err("the server closed the chat channel".into());
                    }
                    _ => {}
                },
            }
        };
        if !rtc.is_alive() {
            return Err("the WebRTC connection ended".into());
        }
        if channel.is_none() && Instant::now() > give_up {
            return Err(format!("no chat channel within {CONNECT_TIMEOUT:?}"));
        }
        let mut deadline = timeout;
        if let Some(schedule) = &schedule {
            deadline = deadline.min(schedule.next);
        }
        if channel.is_none() {
            deadline = deadline.min(give_up);
        }
        // Due work first: under load the socket is always ready, and the biased select below
        // would otherwise starve the timer (sends and str0m's timeouts).
        let now = Instant::now();
        if deadline <= now {
            on_timer(&mut rtc, sender, channel, &mut schedule, now, ctx, out)?;
            continue;
        }
        tokio::select! {
            biased;
            () = crate::peer::until(&mut stop, true) => break,
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let Ok(contents) = buf[..n].try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents,
                });
                rtc.handle_input(input).map_err(|e| format!("str0m: {e}"))?;
            }
            frame = ws::next(&mut ws) => match frame? {
                Some(frame) if frame.kind == "offer" => {
                    if let Some(sdp) = frame.sdp {
                        answer(&mut rtc, &mut ws, &sdp).await?;
                    }
                }
                Some(_) => {}
                None => return Err("the server closed the signaling session".into()),
            },
            () = crate::peer::until(&mut go, true), if sender.is_some() && !going => {
                going = true;
                // A sender whose channel is not open by then stays silent.
                if let (Some(index), Some(_)) = (sender, channel) {
                    // Senders spread evenly over one interval.
                    let offset = ctx.interval.mul_f64(index as f64 / ctx.senders.max(1) as f64);
                    schedule = Some(Schedule { next: Instant::now() + offset, seq: 0 });
                }
            }
            _ = keepalive.tick() => {
                ws::send(&mut ws, &json!({ "type": "ping" })).await?;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                on_timer(&mut rtc, sender, channel, &mut schedule, Instant::now(), ctx, out)?;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    rtc.disconnect();
    Ok(())
}

/// The timer: sends what is due (senders, while the run says go), then str0m's timeout.
fn on_timer(
    rtc: &mut Rtc,
    sender: Option<usize>,
    channel: Option<ChannelId>,
    schedule: &mut Option<Schedule>,
    now: Instant,
    ctx: &Ctx,
    out: &mut ChatOutcome,
) -> Result<(), String> {
    if let (Some(index), Some(id)) = (sender, channel) {
        if !*ctx.go.borrow() {
            *schedule = None;
        }
        if let Some(schedule) = schedule {
            send_due(rtc, id, index, schedule, now, ctx, out)?;
        }
    }
    rtc.handle_input(Input::Timeout(now))
        .map_err(|e| format!("str0m: {e}"))
}

/// Answers an offer of the server.
async fn answer(rtc: &mut Rtc, ws: &mut Ws, sdp: &str) -> Result<(), String> {
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("the offer: {e}"))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| format!("the offer: {e}"))?;
    ws::send(
        ws,
        &json!({ "type": "answer", "sdp": answer.to_sdp_string() }),
    )
    .await
}

/// Sends the messages due by `now`.
fn send_due(
    rtc: &mut Rtc,
    id: ChannelId,
    sender: usize,
    schedule: &mut Schedule,
    now: Instant,
    ctx: &Ctx,
    out: &mut ChatOutcome,
) -> Result<(), String> {
    if now.saturating_duration_since(schedule.next) > MAX_BEHIND {
        schedule.next = now;
    }
    while schedule.next <= now {
        let sent_us = clock::now_us();
        let frame = request(sender, schedule.seq, sent_us);
        let Some(mut channel) = rtc.channel(id) else {
            return Err("the chat channel is gone".into());
        };
        let taken = channel
            .write(false, frame.as_bytes())
            .map_err(|e| format!("str0m: {e}"))?;
        let counted = ctx.live.in_window(sent_us);
        if taken {
            ctx.live.sent.fetch_add(1, Ordering::Relaxed);
            if counted {
                out.sent += 1;
            }
        } else if counted {
            out.blocked += 1;
        }
        schedule.seq += 1;
        schedule.next += ctx.interval;
    }
    Ok(())
}

/// The frame a sender posts: the send time in the text (read by receivers) and in the client id
/// (read back from refusals).
fn request(sender: usize, seq: u64, sent_us: u64) -> String {
    json!({
        "client_id": format!("c{sender}-{seq}-{sent_us}"),
        "text": format!("lt {sent_us} {sender} {seq}"),
    })
    .to_string()
}

/// The send time in a message text of this tool.
fn sent_at_from_text(text: &str) -> Option<u64> {
    let mut fields = text.strip_prefix("lt ")?.split(' ');
    fields.next()?.parse().ok()
}

/// The send time in a client id of this tool.
fn sent_at_from_client_id(client_id: &str) -> Option<u64> {
    client_id.rsplit('-').next()?.parse().ok()
}

/// The fields of a `chat.created` or `chat.ack` frame the tool reads.
#[derive(Debug, Deserialize)]
struct ChatFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<ChatText<'a>>,
}

#[derive(Debug, Deserialize)]
struct ChatText<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(default)]
    seq: Option<i64>,
}

/// The fields of a `chat.error` frame the tool reads (its `message` is a sentence).
#[derive(Debug, Deserialize)]
struct ErrorFrame {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

/// What a chat frame means for the peer receiving it.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Someone's message, sent at µs, with its room sequence number.
    Created(u64, Option<i64>),
    /// Our message was stored; sent at µs.
    Acked(u64),
    /// Our message was refused by the rate limit; sent at µs.
    Refused(u64),
    /// Refused otherwise (the code; and the send time when known).
    Failed(String, Option<u64>),
    /// Not ours, or nothing to count.
    Other,
}

fn classify(data: &[u8]) -> Seen {
    if contains(data, b"\"chat.error\"") {
        let Ok(frame) = serde_json::from_slice::<ErrorFrame>(data) else {
            return Seen::Other;
        };
        let sent = frame.client_id.as_deref().and_then(sent_at_from_client_id);
        return match (frame.code.as_deref(), sent) {
            (Some(RATE_LIMITED), Some(sent)) => Seen::Refused(sent),
            (code, sent) => Seen::Failed(code.unwrap_or("unknown").to_owned(), sent),
        };
    }
    let Ok(frame) = serde_json::from_slice::<ChatFrame<'_>>(data) else {
        return Seen::Other;
    };
    let sent = frame
        .message
        .as_ref()
        .and_then(|m| sent_at_from_text(&m.text));
    let seq = frame.message.as_ref().and_then(|m| m.seq);
    match (&*frame.kind, sent) {
        ("chat.created", Some(sent)) => Seen::Created(sent, seq),
        ("chat.ack", Some(sent)) => Seen::Acked(sent),
        _ => Seen::Other,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn on_chat(out: &mut ChatOutcome, data: &[u8], ctx: &Ctx) {
    let now = clock::now_us();
    match (classify(data), out.role) {
        (Seen::Created(sent, seq), ChatRole::Receiver) => {
            ctx.live.received.fetch_add(1, Ordering::Relaxed);
            if let Some(seq) = seq {
                out.order(seq);
            }
            if ctx.live.in_window(sent) {
                out.delivered += 1;
                out.latency.record(now.saturating_sub(sent));
            }
        }
        (Seen::Acked(sent), ChatRole::Sender { .. }) if ctx.live.in_window(sent) => {
            out.acked += 1;
            out.ack_latency.record(now.saturating_sub(sent));
        }
        (Seen::Refused(sent), ChatRole::Sender { .. }) if ctx.live.in_window(sent) => {
            out.refused += 1;
        }
        (Seen::Failed(code, sent), ChatRole::Sender { .. }) => {
            if sent.is_none_or(|sent| ctx.live.in_window(sent)) {
                out.chat_errors += 1;
            }
            if out.error_codes.len() < 3 && !out.error_codes.contains(&code) {
                out.error_codes.push(code);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_times_round_trip_through_the_frames() {
        let frame = request(7, 42, 123_456_789);
        let value: Value = serde_json::from_str(&frame).unwrap();
        let text = value["text"].as_str().unwrap();
        let client_id = value["client_id"].as_str().unwrap();
        assert_eq!(sent_at_from_text(text), Some(123_456_789));
        assert_eq!(sent_at_from_client_id(client_id), Some(123_456_789));
        // The server's rules for client ids: 1–64 of A-Za-z0-9_-.
        assert!(client_id.len() <= 64);
        assert!(
            client_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(sent_at_from_text("hello"), None);
    }

    #[test]
    fn chat_frames_are_classified() {
        let message = |text: &str| {
            json!({"id":"x","seq":1,"room_id":"r","user_id":"u","username":"n","text":text,
                   "created_at":1,"edited_at":null,"deleted":false})
        };
        let created = json!({"type":"chat.created","message":message("lt 500 1 2")});
        assert_eq!(
            classify(created.to_string().as_bytes()),
            Seen::Created(500, Some(1))
        );
        let ack = json!({"type":"chat.ack","message":message("lt 600 1 3")});
        assert_eq!(classify(ack.to_string().as_bytes()), Seen::Acked(600));
        let refused = json!({"type":"chat.error","code":"chat_rate_limited",
                             "message":"slow down","client_id":"c1-4-700"});
        assert_eq!(classify(refused.to_string().as_bytes()), Seen::Refused(700));
        let other = json!({"type":"chat.error","code":"invalid_message","message":"?"});
        assert_eq!(
            classify(other.to_string().as_bytes()),
            Seen::Failed("invalid_message".into(), None)
        );
        let foreign = json!({"type":"chat.created","message":message("hi all")});
        assert_eq!(classify(foreign.to_string().as_bytes()), Seen::Other);
        assert_eq!(classify(b"not json"), Seen::Other);
    }

    #[test]
    fn receivers_count_sequence_gaps_and_regressions() {
        let mut out = ChatOutcome::new(ChatRole::Receiver, 0);
        for seq in [7, 8, 9, 11, 11, 10, 12] {
            out.order(seq);
        }
        assert_eq!(out.seq_gaps, 1);
        assert_eq!(out.seq_regressions, 2);
        assert_eq!(out.last_seq, Some(12));
    }

    #[test]
    fn loss_counts_every_receiver_of_the_room() {
        let options = ChatOptions {
            server: String::new(),
            rooms: 2,
            senders: 1,
            receivers: 2,
            rate: 10.0,
            rate_per_account: 4.0,
            duration: Duration::from_secs(1),
            server_pid: None,
            threads: 1,
            concurrent_connects: 1,
            progress: false,
        };
        assert_eq!(options.rate_per_sender(), 5.0);
        // 5/s per sender over accounts of at most 4/s: two sessions each.
        assert_eq!(options.sessions_per_sender(), 2);
        assert_eq!(options.sender_sessions(), 4);
        let slow = ChatOptions {
            rate: 1.0,
            ..options.clone()
        };
        assert_eq!(slow.sessions_per_sender(), 1);
        let peer = |role, room, acked, delivered| {
            let mut outcome = ChatOutcome::new(role, room);
            outcome.connect = Some(Duration::from_millis(5));
            outcome.sent = acked + 1;
            outcome.acked = acked;
            outcome.refused = 1;
            outcome.delivered = delivered;
            outcome
        };
        let mut failed = peer(ChatRole::Receiver, 1, 0, 0);
        failed.error = Some("gone".into());
        let outcomes = [
            peer(ChatRole::Sender { index: 0 }, 0, 10, 0),
            peer(ChatRole::Receiver, 0, 0, 10),
            peer(ChatRole::Receiver, 0, 0, 9),
            peer(ChatRole::Sender { index: 1 }, 1, 4, 0),
            peer(ChatRole::Receiver, 1, 0, 4),
            failed,
        ];
        let mut report = ChatReport::new(&options, Duration::from_secs(1));
        report.outcomes(&outcomes);
        // Room 0: 10 × 2 receivers; room 1: 4 × 1 connected receiver.
        assert_eq!(report.expected, 24);
        assert_eq!(report.delivered, 23);
        assert_eq!(report.lost(), 1);
        assert_eq!(report.refused, 6);
        assert_eq!(report.receivers_connected, 3);
        assert_eq!(report.failed, 1);
        assert_eq!(report.to_json()["messages_per_s"], 23.0);
    }
}
