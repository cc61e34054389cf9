//! Cluster mode: two `veza serve` nodes sharing one fresh PostgreSQL database, one JWT key
//! file, Redis (rate limits, node registry) and NATS (chat fan-out).
//!
//! One test does every check in sequence, so nothing else in this binary touches the Redis
//! rate-limit keys (the binary's prefix is the fixed `veza:rl:`). The client connects from a
//! random loopback address of its own (127.x.y.z), so the limiter keys are this run's alone;
//! they are deleted before and after.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;
use support::{
    Api, PgDatabase, RedisKeys, Serve, TempDir, jwt_kid, run_veza, str_field, verify_jwt,
};

/// The auth budget of the cluster, per client IP and minute.
const AUTH_LIMIT: usize = 4;

/// A random address in 127.1-254.1-254.1-254 (never 127.0.0.1).
fn random_loopback() -> IpAddr {
    let b = uuid::Uuid::new_v4().into_bytes();
    IpAddr::V4(Ipv4Addr::new(
        127,
        b[0] % 254 + 1,
        b[1] % 254 + 1,
        b[2] % 254 + 1,
    ))
}

#[tokio::test]
async fn two_nodes_share_database_keys_and_rate_limits() {
    // Declared first so they are dropped last, after the nodes.
    let db = PgDatabase::create();
    let source = random_loopback();
    let _keys = RedisKeys::clear(vec![
        format!("veza:rl:auth:{source}"),
        format!("veza:rl:api:{source}"),
    ]);
    let shared = TempDir::new("cluster");
    let cluster = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let key_file = shared.path().join("jwt-keys.json");

    // `veza migrate` works on PostgreSQL and does not print the connection's secrets.
    let output = run_veza(&["migrate", "--database-url", &db.url()], &[]).await;
    assert!(
        output.status.success(),
        "migrate: {}",
        support::describe(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("migrations applied to postgres://"),
        "{stdout:?}"
    );

    let node = || {
        Serve::new()
            .env("DATABASE_URL", db.url())
            .env("REDIS_URL", "redis://127.0.0.1:6379")
            .env("NATS_URL", "nats://127.0.0.1:4222")
            // A cluster of its own: nodes of other tests on this Redis are not placed on.
            .env("VEZA_CLUSTER_NAME", &cluster)
            .env(
                "VEZA_JWT_KEYS_FILE",
                key_file.to_str().expect("utf-8 temp path"),
            )
            .env("VEZA_AUTH_RATE_LIMIT_PER_MIN", AUTH_LIMIT.to_string())
            // Tokens name their issuer: the nodes of one cluster share it (each node keeps its
            // own public URL).
            .env("VEZA_JWT_ISSUER", "http://veza.e2e.test")
            .start()
    };
    let node_a = node().await;
    let node_b = node().await;
    for node in [&node_a, &node_b] {
        let serving = node
            .json_logs()
            .into_iter()
            .find(|l| l["message"] == "veza is serving")
            .unwrap_or_else(|| panic!("no 'veza is serving' line:\n{}", node.stderr()));
        assert_eq!(serving["redis"], true, "{serving}");
        assert!(
            str_field(&serving, "/database").starts_with("postgres://"),
            "{serving}"
        );
        node.api().get("/readyz", None).await.expect(200, "readyz");
    }
    let a = Api::from_source(node_a.base_url(), source);
    let b = Api::from_source(node_b.base_url(), source);

    // A user registered on A logs in on B (auth requests 1 and 2: A, B).
    let on_a = a.register("carol").await;
    let on_b = b.login("carol").await;
    assert_eq!(on_a["user"]["id"], on_b["user"]["id"]);
    let token_a = str_field(&on_a, "/access_token");
    let token_b = str_field(&on_b, "/access_token");

    // A room created on A is visible on B.
    let body = json!({ "name": "Across nodes", "visibility": "public" });
    let room = a
        .post("/api/v1/rooms", Some(token_a), body)
        .await
        .expect(201, "create room on A");
    let room_id = str_field(&room, "/id");
    let seen = b
        .get(&format!("/api/v1/rooms/{room_id}"), Some(token_b))
        .await
        .expect(200, "get room on B");
    assert_eq!(seen["name"], "Across nodes");
    assert_eq!(seen["my_role"], "owner");
    let listed = b
        .get("/api/v1/rooms", Some(token_b))
        .await
        .expect(200, "list rooms on B");
    assert!(
        listed["rooms"]
            .as_array()
            .is_some_and(|rooms| rooms.iter().any(|r| r["id"] == room_id)),
        "{listed}"
    );

    // Tokens issued by one node are accepted by the other: one key file, one JWKS.
    b.get("/api/v1/me", Some(token_a))
        .await
        .expect(200, "A's token on B");
    a.get("/api/v1/me", Some(token_b))
        .await
        .expect(200, "B's token on A");
    assert_eq!(jwt_kid(token_a), jwt_kid(token_b));
    let jwks_a = a
        .get("/.well-known/jwks.json", None)
        .await
        .expect(200, "jwks A");
    let jwks_b = b
        .get("/.well-known/jwks.json", None)
        .await
        .expect(200, "jwks B");
    assert_eq!(jwks_a, jwks_b);
    let join = b
        .post(
            &format!("/api/v1/rooms/{room_id}/join"),
            Some(token_a),
            json!({}),
        )
        .await
        .expect(200, "join on B with A's token");
    verify_jwt(str_field(&join, "/token"), &jwks_a).unwrap_or_else(|e| panic!("{e}"));
    // The join names one of the two nodes, whichever answered.
    let signaling = str_field(&join, "/urls/signaling");
    assert!(
        [&node_a, &node_b]
            .iter()
            .any(|n| signaling == format!("ws://127.0.0.1:{}/rtc", n.port())),
        "{join}"
    );

    // Chat posted through A is read through B, in order.
    for (i, node) in [&a, &b, &a].into_iter().enumerate() {
        node.post(
            &format!("/api/v1/rooms/{room_id}/messages"),
            Some(token_a),
            json!({ "text": format!("message {i}"), "client_id": format!("c{i}") }),
        )
        .await
        .expect(201, "post chat");
    }
    let history = b
        .get(
            &format!("/api/v1/rooms/{room_id}/messages?after=0"),
            Some(token_b),
        )
        .await
        .expect(200, "history on B");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["message 0", "message 1", "message 2"], "{history}");

    // A refresh token from B is redeemed on A (auth request 3), then a login on B (4).
    let refresh = json!({ "refresh_token": str_field(&on_b, "/refresh_token") });
    a.post("/api/v1/auth/refresh", None, refresh)
        .await
        .expect(200, "B's refresh token on A");
    b.login("carol").await;

    // The budget of 4 is spent across both nodes: each has seen only 2, yet both refuse.
    let credentials = json!({ "username": "carol", "password": support::PASSWORD });
    for (name, node) in [("A", &a), ("B", &b)] {
        let reply = node
            .post("/api/v1/auth/login", None, credentials.clone())
            .await;
        assert_eq!(
            reply.status,
            429,
            "auth request {} (on {name}) should be limited: {}",
            AUTH_LIMIT + 1,
            reply.body
        );
        let retry_after: u64 = reply
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("429 on {name} without a numeric Retry-After"));
        assert!(
            (1..=60).contains(&retry_after),
            "Retry-After: {retry_after}"
        );
    }
    // The API budget is separate and still available.
    a.get("/api/v1/me", Some(token_a))
        .await
        .expect(200, "API requests are not auth requests");
}
