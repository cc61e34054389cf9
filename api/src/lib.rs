//! The Veza REST API: auth (argon2id passwords, EdDSA JWTs with `kid` and JWKS, rotating
//! refresh tokens, TOTP), rooms with roles and bans, join tokens with grants and ICE servers,
//! room chat (history, posts, edits, deletes and mutes, through `veza-chat`), the audit log,
//! and the operational endpoints (`/healthz`, `/readyz`, `/metrics`, `/api/openapi.json`).
//!
//! [`router`] builds the whole service from an [`AppState`]; the binary serves it with
//! `into_make_service_with_connect_info::<SocketAddr>()` so rate limits and the audit log see
//! the client's address.

mod admin;
mod auth;
mod error;
mod extract;
mod keys;
mod messages;
mod metrics;
mod middleware;
mod openapi;
mod ops;
mod password;
mod rooms;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use veza_cluster::{Quota, RateLimiter};
use veza_proto::{RoomId, UserId};
use veza_store::Store;
use veza_turn::TurnSettings;

pub use error::{ApiError, ApiResult};
pub use keys::{AccessClaims, KeyError, KeyRing, RELOAD_INTERVAL};
pub use metrics::Metrics;
/// The chat service in [`AppState`], shared with signaling.
pub use veza_chat::{ChatConfig, ChatService};

/// Settings of the API service.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The URL clients reach this node at, e.g. `http://127.0.0.1:8080`; tokens' issuer.
    pub public_url: String,
    /// Lifetime of access tokens.
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
    /// Lifetime of media (join) tokens.
    pub media_ttl: Duration,
    /// Requests per minute per IP on the API.
    pub rate_limit_per_min: u32,
    /// Requests per minute per IP on `/api/v1/auth/*`.
    pub auth_rate_limit_per_min: u32,
    /// Origins allowed by CORS; empty means same-origin only.
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// STUN URLs handed to clients.
    pub stun_urls: Vec<String>,
    /// coturn settings; `None` hands out STUN only.
    pub turn: Option<TurnSettings>,
}

impl ApiConfig {
    /// Defaults for a node reachable at `public_url`.
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            media_ttl: Duration::from_secs(10 * 60),
            rate_limit_per_min: 100,
            auth_rate_limit_per_min: 10,
            cors_origins: Vec::new(),
            max_body_bytes: 64 * 1024,
            stun_urls: Vec::new(),
            turn: None,
        }
    }

    /// How long a retired signing key must keep verifying: the longest lifetime of any JWT
    /// this service signs, plus the time nodes may go on signing with it before they re-read
    /// the key file, plus the verification leeway.
    pub fn key_retention(&self) -> Duration {
        self.access_ttl.max(self.media_ttl) + keys::RELOAD_INTERVAL + keys::LEEWAY
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub struct Inner {
    /// Settings.
    pub config: ApiConfig,
    /// The database.
    pub store: Store,
    /// JWT keys.
    pub keys: KeyRing,
    /// Per-IP request budgets.
    pub limiter: RateLimiter,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Room chat: the service signaling shares, so both deliver to the same subscribers.
    pub chat: ChatService,
    /// The media path, told when REST moderation removes someone (set once at start).
    media: OnceLock<Arc<dyn MediaControl>>,
    /// Where joins go: the cluster's media nodes (set once at start; without it, this node).
    placement: OnceLock<Placement>,
    /// Set when the node drains: `/readyz` answers 503 so load balancers stop sending it work.
    draining: std::sync::atomic::AtomicBool,
}

/// How joins are spread over media nodes.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The live media nodes and room homes.
    pub registry: veza_cluster::NodeRegistry,
    /// A room's later joiners go to its home node until it holds this many participants.
    pub max_participants: u32,
}

/// What the API asks of the media path: removals when moderation happens over REST, and the
/// QUIC endpoint's certificate hash.
pub trait MediaControl: Send + Sync + std::fmt::Debug + 'static {
    /// Removes every participant of `user` in `room` from the media path now.
    fn remove_user(&self, room: RoomId, user: UserId);

    /// The QUIC endpoint, if QUIC runs.
    fn quic_endpoint(&self) -> Option<QuicEndpoint> {
        None
    }

    /// Who is in `room` now: (participants, publishers), over every transport.
    fn room_live(&self, _room: RoomId) -> (u32, u32) {
        (0, 0)
    }
}

/// Where clients reach moq-lite over QUIC, and the certificate they should expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicEndpoint {
    /// Base URL, `https://host:port`.
    pub url: String,
    /// Lower-case hex SHA-256 of the current certificate.
    pub sha256: String,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Bundles the parts of the service.
    pub fn new(
        config: ApiConfig,
        store: Store,
        keys: KeyRing,
        limiter: RateLimiter,
        chat: ChatService,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                keys,
                limiter,
                metrics: Metrics::new(),
                chat,
                media: OnceLock::new(),
                placement: OnceLock::new(),
                draining: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Connects the media path (once; later calls are ignored).
    pub fn set_media_control(&self, media: Arc<dyn MediaControl>) {
        let _ = self.inner.media.set(media);
    }

    /// Marks the node draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends joins to the media nodes of `placement` (once; later calls are ignored).
    pub fn set_placement(&self, placement: Placement) {
        let _ = self.inner.placement.set(placement);
    }

    /// The media node for one more participant of `room`, when joins are placed.
    pub(crate) async fn place(
        &self,
        room: RoomId,
    ) -> Result<Option<veza_cluster::NodeInfo>, ApiError> {
        let Some(placement) = self.inner.placement.get() else {
            return Ok(None);
        };
        match placement
            .registry
            .place(&room.to_string(), placement.max_participants)
            .await
        {
            Ok(Some(chosen)) => Ok(Some(chosen.node)),
            Ok(None) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "no_media_node",
                "no media node is available; retry shortly",
            )),
            Err(err) => Err(ApiError::unavailable(&err)),
        }
    }

    /// Who is in `room` now on the media path: (participants, publishers).
    pub(crate) fn room_live(&self, room: RoomId) -> (u32, u32) {
        self.inner
            .media
            .get()
            .map_or((0, 0), |media| media.room_live(room))
    }

    /// The QUIC endpoint, when a media path with QUIC is connected.
    pub(crate) fn quic_endpoint(&self) -> Option<QuicEndpoint> {
        self.inner.media.get()?.quic_endpoint()
    }

    /// Tells the media path to drop `user` from `room` (a ban).
    pub(crate) fn remove_from_media(&self, room: RoomId, user: UserId) {
        if let Some(media) = self.inner.media.get() {
            media.remove_user(room, user);
        }
    }

    fn api_quota(&self) -> Quota {
        Quota::per_minute(self.config.rate_limit_per_min.max(1))
    }

    fn auth_quota(&self) -> Quota {
        Quota::per_minute(self.config.auth_rate_limit_per_min.max(1))
    }
}

/// The whole API: routes, then the layers every request passes (metrics, security headers,
/// CORS, rate limits, body limit).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(auth::router())
        .merge(rooms::router())
        .merge(messages::router())
        .merge(admin::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::rate_limit,
        ));
    Router::new()
        .merge(api)
        .merge(ops::router())
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::body_limit,
        ))
        .layer(middleware::cors(&state.config.cors_origins))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::security_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::track,
        ))
        // A span per request (method, path, status, latency) for the logs; headers — and so
        // tokens — are not recorded.
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// What a media node serves beside signaling: liveness, readiness, metrics, JWKS and its
/// QUIC certificate hash (no REST API).
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .merge(ops::router())
        .fallback(middleware::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::track,
        ))
        .with_state(state)
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
