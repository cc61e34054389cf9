//! Operational endpoints, security headers, CORS, rate limits (in memory and on real Redis).

mod common;

use axum::http::{Method, StatusCode, header};
use common::{Db, TestApp, assert_error};
use serde_json::json;
use veza_cluster::RateLimiter;

both_backends!(
    health_and_readiness,
    metrics_count_requests_and_rooms,
    openapi_lists_every_endpoint
);

async fn health_and_readiness(db: Db) {
    let app = TestApp::new(db).await;
    let live = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.body["status"], "ok");
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    app.state.store.close().await;
    let down = app.call(Method::GET, "/readyz", None, None).await;
    assert_error(&down, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}

async fn metrics_count_requests_and_rooms(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    app.room(&alice, "public").await;
    let bad = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": "alice", "password": "wrong password!"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let reply = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.body.as_str().expect("text exposition");
    assert!(
        text.contains(
            r#"veza_http_requests_total{method="POST",route="/api/v1/rooms",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"veza_auth_failures_total{reason="bad_credentials"} 1"#),
        "{text}"
    );
    assert!(text.contains("veza_rooms 1"), "{text}");
    assert!(text.contains("veza_users 1"), "{text}");
    assert!(
        text.contains("veza_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(!text.contains(&alice.id), "no user ids in labels");
}

async fn openapi_lists_every_endpoint(db: Db) {
    let app = TestApp::new(db).await;
    let doc = app.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(
        doc.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    let paths = doc.body["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/auth/totp/setup",
        "/api/v1/auth/totp/confirm",
        "/api/v1/me",
        "/.well-known/jwks.json",
        "/api/v1/rooms",
        "/api/v1/rooms/{id}",
        "/api/v1/rooms/{id}/members",
        "/api/v1/rooms/{id}/members/{user_id}",
        "/api/v1/rooms/{id}/bans/{user_id}",
        "/api/v1/rooms/{id}/join",
        "/api/v1/rooms/{id}/messages",
        "/api/v1/rooms/{id}/messages/{seq}",
        "/api/v1/rooms/{id}/chat-mutes/{user_id}",
        "/api/v1/admin/audit",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn security_headers_and_strict_cors() {
    let app = TestApp::with(Db::Sqlite, |c| {
        c.cors_origins = vec!["https://app.example".into()]
    })
    .await;
    let reply = app.call(Method::GET, "/healthz", None, None).await;
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(
            reply.headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name}"
        );
    }
    assert!(reply.headers.contains_key("content-security-policy"));

    let preflight = |origin: &'static str| {
        axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/v1/rooms")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let allowed = app.send(preflight("https://app.example")).await;
    assert_eq!(
        allowed
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    let refused = app.send(preflight("https://evil.example")).await;
    assert!(
        !refused
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::new(Db::Sqlite).await;
    let missing = app.call(Method::GET, "/api/v1/nope", None, None).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    let wrong = app
        .call(Method::PUT, "/api/v1/auth/login", None, None)
        .await;
    assert_error(&wrong, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

/// Spends an auth budget of 3/min from one address and checks the 429.
async fn auth_budget_is_enforced(app: &TestApp, from: &str) {
    let body = json!({"username": "nobody", "password": "whatever123"});
    for _ in 0..3 {
        let reply = app
            .call_from(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(body.clone()),
                from,
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .call_from(Method::POST, "/api/v1/auth/login", None, Some(body), from)
        .await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = limited.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=20).contains(&retry), "retry after {retry}s");
}

#[tokio::test]
async fn rate_limits_per_ip_in_memory() {
    let app = TestApp::with(Db::Sqlite, |c| {
        c.auth_rate_limit_per_min = 3;
        c.rate_limit_per_min = 5;
    })
    .await;
    auth_budget_is_enforced(&app, "10.0.0.1:1000").await;
    // Another address has its own budget; the API budget is separate from the auth budget.
    let other = app
        .call_from(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "x", "password": "y"})),
            "10.0.0.2:1000",
        )
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    for _ in 0..5 {
        let reply = app
            .call_from(Method::GET, "/api/v1/me", None, None, "10.0.0.1:1000")
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .call_from(Method::GET, "/api/v1/me", None, None, "10.0.0.1:1000")
        .await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Probes are never limited.
    let health = app
        .call_from(Method::GET, "/healthz", None, None, "10.0.0.1:1000")
        .await;
    assert_eq!(health.status, StatusCode::OK);
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test]
async fn rate_limits_are_shared_by_nodes_through_real_redis() {
    let prefix = format!("veza-test:{}:", uuid::Uuid::new_v4());
    let limiter = |prefix: String| async move {
        RateLimiter::redis(&redis_url(), &prefix)
            .await
            .expect("Redis at 127.0.0.1:6379")
    };
    let configure = |c: &mut veza_api::ApiConfig| c.auth_rate_limit_per_min = 3;
    let node_a = TestApp::with_limiter(Db::Sqlite, limiter(prefix.clone()).await, configure).await;
    let node_b = TestApp::with_limiter(Db::Sqlite, limiter(prefix).await, configure).await;
    let body = json!({"username": "nobody", "password": "whatever123"});
    let from = "192.0.2.7:5000";
    // Two requests on node A, one on node B: the shared budget of 3 is spent.
    for node in [&node_a, &node_a, &node_b] {
        let reply = node
            .call_from(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(body.clone()),
                from,
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    for node in [&node_a, &node_b] {
        let limited = node
            .call_from(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(body.clone()),
                from,
            )
            .await;
        assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(limited.headers.contains_key(header::RETRY_AFTER));
    }
    // A fresh prefix (another deployment) has its own budget.
    let node_c = TestApp::with_limiter(
        Db::Sqlite,
        limiter(format!("veza-test:{}:", uuid::Uuid::new_v4())).await,
        configure,
    )
    .await;
    auth_budget_is_enforced(&node_c, from).await;
}
