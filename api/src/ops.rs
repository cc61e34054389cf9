//! Operational endpoints: liveness, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;
use crate::error::ApiError;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/v1/quic/certificate-hash", get(quic_certificate_hash))
}

/// The QUIC endpoint's certificate hash, for WebTransport's `serverCertificateHashes` (the
/// embedded self-signed certificate changes every 10 days: fetch it before connecting).
#[utoipa::path(get, path = "/api/v1/quic/certificate-hash", tag = "ops",
    responses((status = 200, description = "`{\"algorithm\": \"sha-256\", \"value\": hex, \"url\": QUIC base URL}`"),
              (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn quic_certificate_hash(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.quic_endpoint() {
        Some(quic) => Ok(Json(serde_json::json!({
            "algorithm": "sha-256",
            "value": quic.sha256,
            "url": quic.url,
        }))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "quic_disabled",
            "this node does not serve QUIC",
        )),
    }
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "alive")))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready: the database answers and the node is not draining.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "ready"), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is draining and takes no new work",
        ));
    }
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match (
        state.store.count_rooms().await,
        state.store.count_users().await,
    ) {
        (Ok(rooms), Ok(users)) => state.metrics.set_counts(rooms, users),
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(%err, "metrics: could not count rooms and users")
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3 document")))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

/// Public keys that verify access and media tokens (not rate limited: verifiers poll it).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JWK Set (RFC 7517) of Ed25519 keys")))]
pub(crate) async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.keys.jwks())
}
