//! Layers every request passes: metrics, security headers, CORS, body-size limit, per-IP rate
//! limits, and JSON answers for unknown routes and methods.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use veza_cluster::Decision;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ClientIp;

/// Counts each request by route, method and status, with its latency.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    state.metrics.request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Adds the security headers browsers honour, unless a handler set its own.
pub(crate) async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    );
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if is_api {
        set(header::CACHE_CONTROL, "no-store");
    }
    if state.config.public_url.starts_with("https://") {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
    response
}

/// CORS for the configured origins only; with none, browsers get same-origin access only.
pub(crate) fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER, header::LOCATION])
        .max_age(Duration::from_secs(3600))
}

/// Refuses a body whose declared length is over the limit before reading it. (Bodies without
/// a length are cut at the same limit by the extractors.)
pub(crate) async fn body_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = state.config.max_body_bytes as u64;
    if declared.is_some_and(|len| len > limit) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Per-IP budgets: `/api/v1/auth/*` spends the auth budget, everything else the API budget.
/// If the shared limiter (Redis) fails, requests are let through and the failure logged.
pub(crate) async fn rate_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let ip = ClientIp::from_parts(&parts)
        .0
        .unwrap_or_else(|| "unknown".to_owned());
    let (bucket, quota) = if parts.uri.path().starts_with("/api/v1/auth/") {
        ("auth", state.auth_quota())
    } else {
        ("api", state.api_quota())
    };
    match state.limiter.check(&format!("{bucket}:{ip}"), quota).await {
        Ok(Decision::Limited { retry_after }) => {
            state.metrics.rate_limited(bucket);
            return ApiError::rate_limited(retry_after).into_response();
        }
        Ok(Decision::Allowed { .. }) => {}
        Err(err) => tracing::warn!(%err, "rate limiter unavailable; letting the request through"),
    }
    next.run(Request::from_parts(parts, body)).await
}

/// 404 for unknown routes.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /api/openapi.json",
    )
}

/// 405 for a known route with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}
