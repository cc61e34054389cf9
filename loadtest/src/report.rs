//! A run's figures: the summary for people and the JSON object for scripts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Transport;
use crate::peer::{Outcome, Role};
use crate::stats::{Measurements, percentile};

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The transport used.
    pub transport: Transport,
    /// Rooms, and publishers and subscribers per room.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room.
    pub subscribers: usize,
    /// The measured window.
    pub duration: Duration,
    /// What subscribers received in the window.
    pub measured: Measurements,
    /// Connect times of the peers that connected, sorted, µs.
    pub connect_us: Vec<u64>,
    /// Publishers that connected.
    pub publishers_connected: usize,
    /// Subscribers that connected.
    pub subscribers_connected: usize,
    /// Peers that failed, with the first few reasons.
    pub failed: usize,
    /// Up to five distinct failure reasons.
    pub errors: Vec<String>,
    /// Packets sent per second by all publishers over the run (informative).
    pub sent_pps: f64,
    /// The server's CPU time in the window, seconds (with `--server-pid`).
    pub server_cpu_seconds: Option<f64>,
    /// The server's resident memory at the end of the window (with `--server-pid`).
    pub server_rss_bytes: Option<u64>,
    /// The load tool's own CPU time in the window, seconds.
    pub loadtest_cpu_seconds: Option<f64>,
    /// Misbehaving clients asked for (`--misbehave`).
    pub misbehaving_clients: usize,
    /// What they did, when they ran.
    pub misbehaving: Option<crate::misbehave::Stats>,
}

impl Report {
    /// Collects peer outcomes.
    pub(crate) fn outcomes(&mut self, outcomes: &[Outcome]) {
        for outcome in outcomes {
            if let Some(connect) = outcome.connect {
                self.connect_us
                    .push(u64::try_from(connect.as_micros()).unwrap_or(u64::MAX));
                if outcome.error.is_none() {
                    match outcome.role {
                        Role::Publisher => self.publishers_connected += 1,
                        Role::Subscriber => self.subscribers_connected += 1,
                    }
                }
            }
            if let Some(err) = &outcome.error {
                self.failed += 1;
                if self.errors.len() < 5 && !self.errors.contains(err) {
                    self.errors.push(err.clone());
                }
            }
            self.measured.merge(&outcome.measured);
        }
        self.connect_us.sort_unstable();
    }

    /// Packets per second received by all subscribers in the window.
    pub fn forwarded_pps(&self) -> f64 {
        self.measured.received as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// The JSON object (one line with `to_string`).
    pub fn to_json(&self) -> Value {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        let latency = &self.measured.latency;
        let mut out = json!({
            "transport": self.transport.name(),
            "build": crate::BUILD,
            "rooms": self.rooms,
            "publishers_per_room": self.publishers,
            "subscribers_per_room": self.subscribers,
            "duration_s": round3(self.duration.as_secs_f64()),
            "forwarded_pps": round3(self.forwarded_pps()),
            "received": self.measured.received,
            "lost": self.measured.lost,
            "malformed": self.measured.malformed,
            "loss_ratio": self.measured.loss_ratio(),
            "latency_ms": {
                "p50": ms(latency.quantile(0.50)),
                "p95": ms(latency.quantile(0.95)),
                "p99": ms(latency.quantile(0.99)),
                "max": ms(latency.max()),
            },
            "jitter_ms": round3(self.measured.mean_jitter_us() / 1000.0),
            "connect_ms": {
                "p50": ms(percentile(&self.connect_us, 0.50)),
                "p99": ms(percentile(&self.connect_us, 0.99)),
            },
            "publishers_connected": self.publishers_connected,
            "subscribers_connected": self.subscribers_connected,
            "peers_failed": self.failed,
            "errors": self.errors,
            "sent_pps": round3(self.sent_pps),
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
        if self.misbehaving_clients > 0 {
            let stats = self.misbehaving.unwrap_or_default();
            out["misbehaving_clients"] = json!(self.misbehaving_clients);
            out["misbehaving_packets_sent"] = json!(stats.packets_sent);
            out["misbehaving_sessions"] = json!(stats.sessions);
            out["misbehaving_session_failures"] = json!(stats.session_failures);
        }
        out
    }

    /// The summary for people, several lines.
    pub fn summary(&self) -> String {
        let m = &self.measured;
        let ms = |us: u64| us as f64 / 1000.0;
        let mut text = format!(
            "{transport}: {rooms} room(s) × {p} publishers × {s} subscribers, {d:.1} s measured\n\
             connected     {pc}/{pt} publishers, {sc}/{st} subscribers, {f} failed\n\
             forwarded     {pps:.0} packets/s received ({sent:.0}/s sent)\n\
             loss          {loss:.3} % ({lost} of {expected}), {malformed} malformed\n\
             latency       p50 {p50:.2} ms  p95 {p95:.2} ms  p99 {p99:.2} ms  max {max:.2} ms\n\
             jitter        {jitter:.2} ms\n\
             connect       p50 {c50:.1} ms  p99 {c99:.1} ms\n",
            transport = self.transport.name(),
            rooms = self.rooms,
            p = self.publishers,
            s = self.subscribers,
            d = self.duration.as_secs_f64(),
            pc = self.publishers_connected,
            pt = self.rooms * self.publishers,
            sc = self.subscribers_connected,
            st = self.rooms * self.subscribers,
            f = self.failed,
            pps = self.forwarded_pps(),
            sent = self.sent_pps,
            loss = m.loss_ratio() * 100.0,
            lost = m.lost,
            expected = m.received + m.lost,
            malformed = m.malformed,
            p50 = ms(m.latency.quantile(0.5)),
            p95 = ms(m.latency.quantile(0.95)),
            p99 = ms(m.latency.quantile(0.99)),
            max = ms(m.latency.max()),
            jitter = m.mean_jitter_us() / 1000.0,
            c50 = ms(percentile(&self.connect_us, 0.5)),
            c99 = ms(percentile(&self.connect_us, 0.99)),
        );
        costs(
            &mut text,
            self.duration,
            self.server_cpu_seconds,
            self.server_rss_bytes,
            self.loadtest_cpu_seconds,
        );
        if self.misbehaving_clients > 0 {
            let stats = self.misbehaving.unwrap_or_default();
            text.push_str(&format!(
                "misbehaving   {k} clients: {p} garbage datagrams ({pps:.0}/s), {s} abandoned \
                 sessions ({f} failed early)\n",
                k = self.misbehaving_clients,
                p = stats.packets_sent,
                pps = stats.packets_sent as f64 / self.duration.as_secs_f64().max(1e-9),
                s = stats.sessions,
                f = stats.session_failures,
            ));
        }
        for err in &self.errors {
            text.push_str(&format!("error         {err}\n"));
        }
        text
    }
}

/// The summary lines on what the run cost: the server's CPU and memory (with `--server-pid`)
/// and the load tool's own CPU.
pub(crate) fn costs(
    text: &mut String,
    duration: Duration,
    server_cpu_seconds: Option<f64>,
    server_rss_bytes: Option<u64>,
    loadtest_cpu_seconds: Option<f64>,
) {
    if let (Some(cpu), Some(rss)) = (server_cpu_seconds, server_rss_bytes) {
        text.push_str(&format!(
            "server        {cpu:.2} CPU s ({cores:.2} cores), {mib:.1} MiB resident\n",
            cores = cpu / duration.as_secs_f64().max(1e-9),
            mib = rss as f64 / (1024.0 * 1024.0),
        ));
    }
    if let Some(cpu) = loadtest_cpu_seconds {
        text.push_str(&format!("load tool     {cpu:.2} CPU s\n"));
    }
}

/// Three decimals are plenty, and keep the JSON readable.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
