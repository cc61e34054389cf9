//! Prometheus metrics of the media shard, and of the signaling sessions in front of it.
//!
//! Labels are constant reasons, directions and outcomes — never room, user or participant ids.
//! The engine keeps plain counters ([`Stats`]); the shard copies their growth into the
//! Prometheus counters about once a second ([`SYNC_INTERVAL`]) and sets the gauges, so the
//! packet path takes no lock. What only the shard sees (datagrams routed to nobody, forwarding
//! latency, data-channel messages, ICE connect time) is counted as it happens, on atomics.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::engine::Stats;

/// How often the shard copies the engine's counters into the metrics.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The engine's drop reasons, in the order of [`engine_drops`].
const ENGINE_DROP_REASONS: [&str; 7] = [
    "unknown_participant",
    "unknown_track",
    "muted",
    "duplicate",
    "too_old",
    "seq_jump",
    "empty_payload",
];

fn engine_drops(stats: &Stats) -> [u64; 7] {
    let d = &stats.dropped;
    [
        d.unknown_participant,
        d.unknown_track,
        d.muted,
        d.duplicate,
        d.too_old,
        d.seq_jump,
        d.empty_payload,
    ]
}

/// How a signaling session's join ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// A new participant joined the media path.
    Ok,
    /// A participant within its reconnect grace period resumed (ICE restart).
    Resumed,
    /// The media shard refused the join or the resume.
    Failed,
}

/// The media shard's metrics (`veza_media_*`) and the signaling sessions'
/// (`veza_signaling_*`). Cheap to clone: every clone updates the same metrics.
#[derive(Debug, Clone)]
pub struct MediaMetrics {
    /// Every metric below, for [`MediaMetrics::render`].
    own: Registry,
    rooms: IntGauge,
    participants: IntGauge,
    tracks: IntGauge,
    slots: IntGauge,
    peers: IntGauge,
    packets_received: IntCounter,
    bytes_received: IntCounter,
    packets_forwarded: IntCounter,
    bytes_forwarded: IntCounter,
    dropped: IntCounterVec,
    dropped_engine: [IntCounter; 7],
    dropped_no_peer: IntCounter,
    dropped_unparseable: IntCounter,
    dropped_backlog: IntCounter,
    nacks_received: IntCounter,
    retransmissions: IntCounter,
    nack_misses: IntCounter,
    datachannel: IntCounterVec,
    datachannel_in: IntCounter,
    datachannel_out: IntCounter,
    forwarding: Histogram,
    ice_connect: Histogram,
    joins: IntCounterVec,
    joins_ok: IntCounter,
    joins_resumed: IntCounter,
    joins_failed: IntCounter,
    sessions: IntGauge,
    quic_sessions: IntGauge,
    quic_groups: IntCounter,
    quic_datagrams: IntCounter,
    quic_stale: IntCounter,
    quic_rtt: Histogram,
    cascade_pulls: IntGauge,
    registry_failures: IntCounter,
}

impl Default for MediaMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric")
}

/// Decrements the open moq-lite sessions gauge when dropped.
#[derive(Debug)]
pub struct QuicSessionGuard(IntGauge);

impl Drop for QuicSessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A gauge value from a count.
fn as_gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl MediaMetrics {
    /// Fresh metrics, at zero, registered nowhere yet (see [`MediaMetrics::register`]).
    pub fn new() -> Self {
        // The names, help texts, label names and buckets below are constant and valid.
        let dropped = counter_vec(
            "veza_media_packets_dropped_total",
            "Incoming packets and datagrams dropped, by reason",
            "reason",
        );
        let datachannel = counter_vec(
            "veza_media_datachannel_messages_total",
            "Data-channel messages received from (in) and sent to (out) peers",
            "direction",
        );
        let joins = counter_vec(
            "veza_signaling_joins_total",
            "Signaling session joins by outcome (ok, resumed, failed)",
            "outcome",
        );
        let metrics = Self {
            own: Registry::new(),
            rooms: gauge("veza_media_rooms", "Rooms with at least one participant"),
            participants: gauge("veza_media_participants", "Participants in the engine"),
            tracks: gauge("veza_media_tracks", "Published tracks"),
            slots: gauge(
                "veza_media_slots",
                "Open forwarding slots (subscriber streams)",
            ),
            peers: gauge("veza_media_peers", "WebRTC peers of the media shard"),
            packets_received: counter(
                "veza_media_packets_received_total",
                "RTP packets received from publishers",
            ),
            bytes_received: counter(
                "veza_media_bytes_received_total",
                "RTP payload bytes received from publishers",
            ),
            packets_forwarded: counter(
                "veza_media_packets_forwarded_total",
                "RTP packets forwarded to subscribers, retransmissions included",
            ),
            bytes_forwarded: counter(
                "veza_media_bytes_forwarded_total",
                "RTP payload bytes forwarded to subscribers, retransmissions included",
            ),
            dropped_engine: ENGINE_DROP_REASONS.map(|r| dropped.with_label_values(&[r])),
            dropped_no_peer: dropped.with_label_values(&["no_peer"]),
            dropped_unparseable: dropped.with_label_values(&["unparseable"]),
            dropped_backlog: dropped.with_label_values(&["backlog"]),
            dropped,
            nacks_received: counter(
                "veza_media_nacks_received_total",
                "RTCP NACKs received from subscribers",
            ),
            retransmissions: counter(
                "veza_media_retransmissions_total",
                "Packets resent from the cache in answer to NACKs",
            ),
            nack_misses: counter(
                "veza_media_nack_misses_total",
                "NACKed packets that could not be resent (never sent, evicted or too old)",
            ),
            datachannel_in: datachannel.with_label_values(&["in"]),
            datachannel_out: datachannel.with_label_values(&["out"]),
            datachannel,
            forwarding: histogram(
                "veza_media_forwarding_seconds",
                "From a datagram's arrival in the shard to its forwarded packets written to the \
                 subscribers' streams",
                &[
                    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                    0.002_5, 0.005, 0.01,
                ],
            ),
            ice_connect: histogram(
                "veza_media_ice_connect_seconds",
                "From a peer's creation to ICE and DTLS connected",
                &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            joins_ok: joins.with_label_values(&["ok"]),
            joins_resumed: joins.with_label_values(&["resumed"]),
            joins_failed: joins.with_label_values(&["failed"]),
            joins,
            sessions: gauge(
                "veza_signaling_sessions",
                "Signaling sessions open (joined, WebSocket connected)",
            ),
            quic_sessions: gauge(
                "veza_quic_sessions",
                "moq-lite sessions open (raw QUIC and WebTransport)",
            ),
            quic_groups: counter(
                "veza_quic_groups_sent_total",
                "moq-lite groups sent to subscribers on streams",
            ),
            quic_datagrams: counter(
                "veza_quic_datagrams_sent_total",
                "moq-lite groups sent to subscribers as QUIC datagrams",
            ),
            quic_stale: counter(
                "veza_quic_groups_dropped_stale_total",
                "moq-lite groups reset or skipped because they were older than the subscriber's \
                 max latency",
            ),
            quic_rtt: histogram(
                "veza_quic_rtt_seconds",
                "Smoothed round-trip time of moq-lite sessions, sampled every 5 s",
                &[
                    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ],
            ),
            cascade_pulls: gauge(
                "veza_cascade_pulls",
                "Rooms pulled from other media nodes (one per room and node)",
            ),
            registry_failures: counter(
                "veza_registry_failures_total",
                "Heartbeats of this media node the node registry (Redis) did not take",
            ),
        };
        metrics
            .register(&metrics.own)
            .expect("metric names are unique");
        metrics
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.rooms.clone()),
            Box::new(self.participants.clone()),
            Box::new(self.tracks.clone()),
            Box::new(self.slots.clone()),
            Box::new(self.peers.clone()),
            Box::new(self.packets_received.clone()),
            Box::new(self.bytes_received.clone()),
            Box::new(self.packets_forwarded.clone()),
            Box::new(self.bytes_forwarded.clone()),
            Box::new(self.dropped.clone()),
            Box::new(self.nacks_received.clone()),
            Box::new(self.retransmissions.clone()),
            Box::new(self.nack_misses.clone()),
            Box::new(self.datachannel.clone()),
            Box::new(self.forwarding.clone()),
            Box::new(self.ice_connect.clone()),
            Box::new(self.joins.clone()),
            Box::new(self.sessions.clone()),
            Box::new(self.quic_sessions.clone()),
            Box::new(self.quic_groups.clone()),
            Box::new(self.quic_datagrams.clone()),
            Box::new(self.quic_stale.clone()),
            Box::new(self.quic_rtt.clone()),
            Box::new(self.cascade_pulls.clone()),
            Box::new(self.registry_failures.clone()),
        ]
    }

    /// A packet for a QUIC participant dropped because its session fell behind.
    pub fn dropped_backlog(&self) {
        self.dropped_backlog.inc();
    }

    /// How many cascade pulls run now.
    pub fn set_cascade_pulls(&self, pulls: usize) {
        self.cascade_pulls.set(as_gauge(pulls as u64));
    }

    /// A heartbeat the node registry did not take.
    pub fn registry_failure(&self) {
        self.registry_failures.inc();
    }

    /// Packets forwarded so far, over every transport (for the node's load report).
    pub fn packets_forwarded(&self) -> u64 {
        self.packets_forwarded.get() + self.quic_groups.get() + self.quic_datagrams.get()
    }

    /// Counts an open moq-lite session until the guard drops.
    pub fn quic_session(&self) -> QuicSessionGuard {
        self.quic_sessions.inc();
        QuicSessionGuard(self.quic_sessions.clone())
    }

    /// A group sent on its own stream.
    pub fn quic_group_sent(&self) {
        self.quic_groups.inc();
    }

    /// A group sent as a datagram.
    pub fn quic_datagram_sent(&self) {
        self.quic_datagrams.inc();
    }

    /// A group dropped as older than the subscriber's max latency.
    pub fn quic_group_stale(&self) {
        self.quic_stale.inc();
    }

    /// A session's smoothed RTT sample.
    pub fn quic_rtt(&self, rtt: Duration) {
        self.quic_rtt.observe(rtt.as_secs_f64());
    }

    /// Adds every metric to `registry` (the one `/metrics` renders). All or nothing: if one
    /// name is taken (registered twice, or by someone else) none stays registered, and the
    /// error says why.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        for (done, collector) in self.collectors().into_iter().enumerate() {
            if let Err(err) = registry.register(collector) {
                for collector in self.collectors().into_iter().take(done) {
                    // Registered just above, so it is there to remove.
                    let _ = registry.unregister(collector);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// The Prometheus text exposition of these metrics alone.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which these never hold.
        let _ = TextEncoder::new().encode(&self.own.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Counts a signaling join by outcome.
    pub fn join(&self, outcome: JoinOutcome) {
        match outcome {
            JoinOutcome::Ok => &self.joins_ok,
            JoinOutcome::Resumed => &self.joins_resumed,
            JoinOutcome::Failed => &self.joins_failed,
        }
        .inc();
    }

    /// Counts an open signaling session until the returned guard is dropped.
    pub fn session(&self) -> SessionGuard {
        self.sessions.inc();
        SessionGuard(self.sessions.clone())
    }

    /// Copies the growth of the engine's counters from `before` to `now`, and its gauges.
    pub(crate) fn sync_engine(&self, before: &Stats, now: &Stats) {
        let grown = |a: u64, b: u64| b.wrapping_sub(a);
        self.packets_received
            .inc_by(grown(before.packets_in, now.packets_in));
        self.bytes_received
            .inc_by(grown(before.bytes_in, now.bytes_in));
        self.packets_forwarded
            .inc_by(grown(before.packets_out, now.packets_out));
        self.bytes_forwarded
            .inc_by(grown(before.bytes_out, now.bytes_out));
        let drops = engine_drops(before).into_iter().zip(engine_drops(now));
        for (counter, (a, b)) in self.dropped_engine.iter().zip(drops) {
            counter.inc_by(grown(a, b));
        }
        self.nacks_received
            .inc_by(grown(before.nacks_received, now.nacks_received));
        self.retransmissions
            .inc_by(grown(before.retransmissions, now.retransmissions));
        self.nack_misses
            .inc_by(grown(before.nack_misses, now.nack_misses));
        // Gauges move by this shard's change: every shard adds its own share.
        let moved = |a: u64, b: u64| as_gauge(b) - as_gauge(a);
        self.rooms.add(moved(before.rooms, now.rooms));
        self.participants
            .add(moved(before.participants, now.participants));
        self.tracks.add(moved(before.tracks, now.tracks));
        self.slots.add(moved(before.slots, now.slots));
    }

    /// One shard's peers went from `before` to `now`.
    pub(crate) fn add_peers(&self, before: usize, now: usize) {
        self.peers
            .add(as_gauge(now as u64) - as_gauge(before as u64));
    }

    /// A datagram routed to no peer.
    pub(crate) fn dropped_no_peer(&self) {
        self.dropped_no_peer.inc();
    }

    /// A datagram of a peer that is neither STUN, DTLS, RTP nor RTCP.
    pub(crate) fn dropped_unparseable(&self) {
        self.dropped_unparseable.inc();
    }

    pub(crate) fn datachannel_in(&self) {
        self.datachannel_in.inc();
    }

    pub(crate) fn datachannel_out(&self) {
        self.datachannel_out.inc();
    }

    pub(crate) fn forwarded(&self, latency: Duration) {
        self.forwarding.observe(latency.as_secs_f64());
    }

    pub(crate) fn ice_connected(&self, after: Duration) {
        self.ice_connect.observe(after.as_secs_f64());
    }
}

/// An open signaling session, counted in `veza_signaling_sessions` until dropped.
#[derive(Debug)]
#[must_use = "the session is counted only while the guard lives"]
pub struct SessionGuard(IntGauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Dropped;

    /// Every metric name, as rendered.
    const NAMES: [&str; 25] = [
        "veza_media_rooms",
        "veza_media_participants",
        "veza_media_tracks",
        "veza_media_slots",
        "veza_media_peers",
        "veza_media_packets_received_total",
        "veza_media_bytes_received_total",
        "veza_media_packets_forwarded_total",
        "veza_media_bytes_forwarded_total",
        "veza_media_packets_dropped_total",
        "veza_media_nacks_received_total",
        "veza_media_retransmissions_total",
        "veza_media_nack_misses_total",
        "veza_media_datachannel_messages_total",
        "veza_media_forwarding_seconds",
        "veza_media_ice_connect_seconds",
        "veza_signaling_joins_total",
        "veza_signaling_sessions",
        "veza_quic_sessions",
        "veza_quic_groups_sent_total",
        "veza_quic_datagrams_sent_total",
        "veza_quic_groups_dropped_stale_total",
        "veza_quic_rtt_seconds",
        "veza_cascade_pulls",
        "veza_registry_failures_total",
    ];

    fn render(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("encode");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn registering_twice_fails_cleanly_and_every_metric_renders() {
        let registry = Registry::new();
        let metrics = MediaMetrics::new();
        metrics.register(&registry).expect("first registration");
        let err = metrics
            .register(&registry)
            .expect_err("second registration");
        assert!(matches!(err, prometheus::Error::AlreadyReg), "{err}");
        // Another instance clashes too, and the failed attempts left the first one intact.
        assert!(MediaMetrics::new().register(&registry).is_err());
        let text = render(&registry);
        for name in NAMES {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} in {text}"
            );
        }
        assert_eq!(
            text.matches("# TYPE ").count(),
            NAMES.len(),
            "no metric twice: {text}"
        );
        for reason in ENGINE_DROP_REASONS
            .iter()
            .chain(&["no_peer", "unparseable", "backlog"])
        {
            assert!(
                text.contains(&format!(
                    "veza_media_packets_dropped_total{{reason=\"{reason}\"}} 0"
                )),
                "{reason}: {text}"
            );
        }
        for label in [
            "direction=\"in\"",
            "direction=\"out\"",
            "outcome=\"ok\"",
            "outcome=\"resumed\"",
            "outcome=\"failed\"",
        ] {
            assert!(text.contains(label), "{label}: {text}");
        }
        assert_eq!(render(&registry), metrics.render());
    }

    #[test]
    fn a_failed_registration_leaves_nothing_behind() {
        let registry = Registry::new();
        // Takes a name in the middle of the list.
        let squatter = IntCounter::new("veza_media_nacks_received_total", "taken").expect("ok");
        registry.register(Box::new(squatter)).expect("register");
        assert!(MediaMetrics::new().register(&registry).is_err());
        let text = render(&registry);
        assert_eq!(text.matches("# TYPE ").count(), 1, "{text}");
    }

    #[test]
    fn engine_counters_are_copied_as_deltas_and_gauges_set() {
        let metrics = MediaMetrics::new();
        let first = Stats {
            packets_in: 10,
            bytes_in: 1000,
            packets_out: 20,
            bytes_out: 2000,
            dropped: Dropped {
                duplicate: 2,
                ..Dropped::default()
            },
            nacks_received: 1,
            retransmissions: 1,
            nack_misses: 3,
            rooms: 1,
            participants: 2,
            tracks: 1,
            slots: 1,
            ..Stats::default()
        };
        metrics.sync_engine(&Stats::default(), &first);
        let second = Stats {
            packets_in: 15,
            dropped: Dropped {
                duplicate: 3,
                seq_jump: 4,
                ..Dropped::default()
            },
            rooms: 0,
            participants: 0,
            ..first
        };
        metrics.sync_engine(&first, &second);
        metrics.dropped_no_peer();
        metrics.add_peers(0, 3);
        metrics.join(JoinOutcome::Resumed);
        let session = metrics.session();
        let text = metrics.render();
        for line in [
            "veza_media_packets_received_total 15",
            "veza_media_bytes_received_total 1000",
            "veza_media_packets_forwarded_total 20",
            "veza_media_nack_misses_total 3",
            "veza_media_packets_dropped_total{reason=\"duplicate\"} 3",
            "veza_media_packets_dropped_total{reason=\"seq_jump\"} 4",
            "veza_media_packets_dropped_total{reason=\"no_peer\"} 1",
            "veza_media_rooms 0",
            "veza_media_tracks 1",
            "veza_media_peers 3",
            "veza_signaling_joins_total{outcome=\"resumed\"} 1",
            "veza_signaling_sessions 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        drop(session);
        assert!(
            metrics
                .render()
                .lines()
                .any(|l| l == "veza_signaling_sessions 0")
        );
    }
}
