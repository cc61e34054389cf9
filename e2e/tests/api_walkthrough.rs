//! One `veza serve` on embedded defaults (SQLite and a JWT key file in the data folder,
//! in-memory rate limits): the API from registration to joining a room, the one-shot
//! commands (`migrate`, `admin grant`), and graceful shutdown.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;
use support::{Serve, TempDir, jwt_kid, run_veza, str_field, unix_now, verify_jwt};

#[tokio::test]
async fn walkthrough_on_embedded_defaults() {
    let server = Serve::new().start().await;
    let api = server.api();

    // Embedded defaults: the database and the key file live in the data folder.
    let data = server.data_dir();
    assert!(data.join("veza.db").is_file(), "no veza.db in {data:?}");
    let keys = data.join("jwt-keys.json");
    let mode = std::fs::metadata(&keys)
        .expect("jwt-keys.json exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "jwt-keys.json mode is {mode:o}");

    // Register: the first user is an admin; the name is now taken.
    let session = api.register("alice").await;
    assert_eq!(session["user"]["username"], "alice");
    assert_eq!(session["user"]["is_admin"], true, "first user: {session}");
    assert_eq!(session["token_type"], "Bearer");
    let again = json!({ "username": "alice", "password": support::PASSWORD });
    let taken = api.post("/api/v1/auth/register", None, again).await;
    assert_eq!(
        taken.expect(409, "register twice")["error"]["code"],
        "username_taken"
    );

    // Login: a wrong password is refused; the right one gives a new session.
    let wrong = json!({ "username": "alice", "password": "not the password" });
    api.post("/api/v1/auth/login", None, wrong)
        .await
        .expect(401, "login with a wrong password");
    let session = api.login("alice").await;
    let first_refresh = str_field(&session, "/refresh_token").to_owned();

    // Refresh rotates the refresh token; presenting a used one revokes the whole family.
    let refresh = |token: &str| json!({ "refresh_token": token });
    let rotated = api
        .post("/api/v1/auth/refresh", None, refresh(&first_refresh))
        .await
        .expect(200, "first refresh");
    let second_refresh = str_field(&rotated, "/refresh_token").to_owned();
    assert_ne!(
        second_refresh, first_refresh,
        "refresh must rotate the token"
    );
    let access = str_field(&rotated, "/access_token").to_owned();
    let reuse = api
        .post("/api/v1/auth/refresh", None, refresh(&first_refresh))
        .await;
    assert_eq!(
        reuse.expect(401, "reusing a rotated refresh token")["error"]["code"],
        "invalid_refresh_token"
    );
    api.post("/api/v1/auth/refresh", None, refresh(&second_refresh))
        .await
        .expect(401, "the newest token of a revoked family");

    // /me needs a valid access token (the refreshed one still is: only refresh tokens died).
    let me = api
        .get("/api/v1/me", Some(&access))
        .await
        .expect(200, "/me");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["id"], session["user"]["id"]);
    api.get("/api/v1/me", None)
        .await
        .expect(401, "/me without a token");
    api.get("/api/v1/me", Some("not.a.jwt"))
        .await
        .expect(401, "/me with garbage");

    // Rooms: create, read, join.
    let body = json!({ "name": "Standup", "visibility": "public", "description": "daily" });
    let room = api
        .post("/api/v1/rooms", Some(&access), body)
        .await
        .expect(201, "create room");
    assert_eq!(room["my_role"], "owner");
    let room_id = str_field(&room, "/id").to_owned();
    let fetched = api
        .get(&format!("/api/v1/rooms/{room_id}"), Some(&access))
        .await
        .expect(200, "get room");
    assert_eq!(fetched["name"], "Standup");
    let join = api
        .post(
            &format!("/api/v1/rooms/{room_id}/join"),
            Some(&access),
            json!({}),
        )
        .await
        .expect(200, "join");
    assert_eq!(join["room_id"], room_id.as_str());
    assert_eq!(join["role"], "owner");
    assert_eq!(join["grants"]["can_publish"], true);

    // The media token verifies against the served JWKS: kid match and Ed25519 signature.
    let jwks = api
        .get("/.well-known/jwks.json", None)
        .await
        .expect(200, "jwks");
    let media = str_field(&join, "/token");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, [jwt_kid(media)], "one key, the one that signed");
    let claims = verify_jwt(media, &jwks).unwrap_or_else(|e| panic!("media token: {e}"));
    assert_eq!(claims["aud"], "veza-media");
    assert_eq!(claims["room"], room_id.as_str());
    assert_eq!(claims["sub"], session["user"]["id"]);
    assert_eq!(claims["iss"], server.base_url().as_str());
    assert!(claims["exp"].as_u64().expect("exp") > unix_now());
    let access_claims = verify_jwt(&access, &jwks).unwrap_or_else(|e| panic!("access: {e}"));
    assert_eq!(access_claims["aud"], "veza-api");
    // The check is real: a token with another signature does not verify.
    let (signed, signature) = media.rsplit_once('.').expect("three parts");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    assert!(
        verify_jwt(&forged, &jwks).is_err(),
        "a forged signature verified"
    );

    // Another user joins the public room as a listener, who may not publish.
    let bob = api.register("bob").await;
    assert_eq!(bob["user"]["is_admin"], false);
    let bob_join = api
        .post(
            &format!("/api/v1/rooms/{room_id}/join"),
            Some(str_field(&bob, "/access_token")),
            json!({}),
        )
        .await
        .expect(200, "bob joins");
    assert_eq!(bob_join["role"], "listener");
    assert_eq!(bob_join["grants"]["can_publish"], false);
}

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let dir = TempDir::new("migrate");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 temp path");
    for run in 1..=2 {
        let output = run_veza(&["migrate", "--data-dir", data_arg], &[]).await;
        assert!(
            output.status.success(),
            "migrate run {run}: {}",
            support::describe(&output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("migrations applied to sqlite://") && stdout.contains("veza.db"),
            "migrate run {run} printed {stdout:?}"
        );
    }
    assert!(
        data.join("veza.db").is_file(),
        "migrate did not create veza.db"
    );
}

#[tokio::test]
async fn admin_grant_makes_a_user_admin() {
    let server = Serve::new().start().await;
    let api = server.api();
    api.register("alice").await; // the first user is an admin already
    let bob = api.register("bob").await;
    let token = str_field(&bob, "/access_token").to_owned();
    let audit = "/api/v1/admin/audit";
    let denied = api.get(audit, Some(&token)).await;
    assert_eq!(
        denied.expect(403, "audit before grant")["error"]["code"],
        "not_admin"
    );

    let data = server
        .data_dir()
        .to_str()
        .expect("utf-8 temp path")
        .to_owned();
    let output = run_veza(&["admin", "grant", "bob", "--data-dir", &data], &[]).await;
    assert!(
        output.status.success(),
        "grant bob: {}",
        support::describe(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("bob") && stdout.contains("is now an admin"),
        "{stdout:?}"
    );

    // The running server sees the change at once, with the token bob already had.
    let page = api
        .get(audit, Some(&token))
        .await
        .expect(200, "audit after grant");
    let actions: Vec<&str> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"register"), "audit log: {page}");
    let me = api.get("/api/v1/me", Some(&token)).await.expect(200, "/me");
    assert_eq!(me["is_admin"], true);

    // An unknown user is an error that names the user.
    let output = run_veza(&["admin", "grant", "nobody", "--data-dir", &data], &[]).await;
    assert!(
        !output.status.success(),
        "grant nobody succeeded: {}",
        support::describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no user named \"nobody\""),
        "unclear error: {stderr}"
    );
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let mut server = Serve::new().start().await;
    server.api().register("alice").await;
    let status = server
        .terminate(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", server.stderr()));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.stderr()
    );
    let messages: Vec<String> = server
        .json_logs()
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        messages.iter().any(|m| m == "shutting down")
            && messages.last().is_some_and(|m| m == "veza stopped"),
        "log: {messages:?}"
    );
}
