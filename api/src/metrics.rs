//! Prometheus metrics of the API. Labels carry routes and outcomes, never user or room ids.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The API's metrics and their registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    auth_failures: IntCounterVec,
    rate_limited: IntCounterVec,
    joins: IntCounterVec,
    rooms: IntGauge,
    users: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        // The names and label sets below are constant and unique, so registration cannot fail.
        let requests = IntCounterVec::new(
            Opts::new(
                "veza_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("veza_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "veza_auth_failures_total",
                "Failed authentications by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "veza_rate_limited_total",
                "Requests refused by a rate limit",
            ),
            &["bucket"],
        )
        .expect("valid metric");
        let joins = IntCounterVec::new(
            Opts::new("veza_room_joins_total", "Room join attempts by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let rooms = IntGauge::new("veza_rooms", "Rooms that exist").expect("valid metric");
        let users = IntGauge::new("veza_users", "Registered users").expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(auth_failures.clone()),
            Box::new(rate_limited.clone()),
            Box::new(joins.clone()),
            Box::new(rooms.clone()),
            Box::new(users.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            latency,
            auth_failures,
            rate_limited,
            joins,
            rooms,
            users,
        }
    }

    /// Counts one finished request.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    /// Counts a failed authentication.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// Counts a request refused by the rate limit `bucket` (`api` or `auth`).
    pub fn rate_limited(&self, bucket: &str) {
        self.rate_limited.with_label_values(&[bucket]).inc();
    }

    /// Counts a join attempt by outcome (`ok` or an error code).
    pub fn join(&self, outcome: &str) {
        self.joins.with_label_values(&[outcome]).inc();
    }

    /// Sets the gauges read from the database at scrape time.
    pub fn set_counts(&self, rooms: i64, users: i64) {
        self.rooms.set(rooms);
        self.users.set(users);
    }

    /// The registry `/metrics` renders; other components register their metrics here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which we never produce.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
