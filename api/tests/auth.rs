//! Registration, login, refresh rotation with reuse detection, logout, TOTP, `/me`, JWKS and key
//! rotation — on PostgreSQL and SQLite.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{Method, StatusCode};
use common::{Db, TempDir, TestApp, assert_error, session};
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};
use veza_api::{AccessClaims, KeyRing};

both_backends!(
    register_returns_a_session_and_first_user_is_admin,
    register_validates_and_refuses_duplicates_ignoring_case,
    login_failures_do_not_reveal_whether_the_user_exists,
    refresh_rotates_and_reuse_revokes_the_family,
    logout_revokes_the_family,
    totp_setup_confirm_and_replay,
    forged_expired_and_misaddressed_tokens_are_refused,
    rotated_keys_keep_old_tokens_valid,
);

const PASSWORD: &str = "correct horse battery";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

async fn login(app: &TestApp, username: &str, password: &str, totp: Option<&str>) -> common::Reply {
    let mut body = json!({ "username": username, "password": password });
    if let Some(code) = totp {
        body["totp"] = Value::from(code);
    }
    app.post("/api/v1/auth/login", None, body).await
}

async fn refresh(app: &TestApp, token: &str) -> common::Reply {
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({ "refresh_token": token }),
    )
    .await
}

async fn register_returns_a_session_and_first_user_is_admin(db: Db) {
    let app = TestApp::new(db).await;
    let reply = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["expires_in"], 900);
    assert_eq!(reply.body["user"]["username"], "alice");
    assert_eq!(reply.body["user"]["is_admin"], true);
    let alice = session(&reply.body);
    let bob = app.register("bob").await;

    let me = app.get("/api/v1/me", &alice.access).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], alice.id.as_str());
    assert_eq!(me.body["is_admin"], true);
    let me = app.get("/api/v1/me", &bob.access).await;
    assert_eq!(me.body["is_admin"], false);

    // The access token is an EdDSA JWT with a kid listed in the JWKS.
    let jwks = app
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let key = &jwks.body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    let header = jsonwebtoken_header(&alice.access);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key["kid"]);
    // The password hash is argon2id with OWASP parameters and never leaves the store.
    let creds = app.state.store.credentials("alice").await.expect("stored");
    assert!(
        creds
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    assert!(!reply.body.to_string().contains("argon2"));
}

/// The decoded header of a JWT.
fn jsonwebtoken_header(token: &str) -> Value {
    use base64::Engine;
    let header = token.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json header")
}

async fn register_validates_and_refuses_duplicates_ignoring_case(db: Db) {
    let app = TestApp::new(db).await;
    app.register("Carol").await;
    let clash = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"username": "carol", "password": PASSWORD}),
        )
        .await;
    assert_error(&clash, StatusCode::CONFLICT, "username_taken");
    for (username, password, code) in [
        ("ab", PASSWORD, "invalid_username"),
        (&*"x".repeat(33), PASSWORD, "invalid_username"),
        ("white space", PASSWORD, "invalid_username"),
        ("emoji😀", PASSWORD, "invalid_username"),
        ("dave", "short", "weak_password"),
        ("dave", "123456789", "weak_password"),
    ] {
        let reply = app
            .post(
                "/api/v1/auth/register",
                None,
                json!({"username": username, "password": password}),
            )
            .await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    let ok = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"username": "d.a-v_e9", "password": "1234567890"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    // Case-insensitive login.
    assert_eq!(
        login(&app, "CAROL", PASSWORD, None).await.status,
        StatusCode::OK
    );
}

async fn login_failures_do_not_reveal_whether_the_user_exists(db: Db) {
    let app = TestApp::new(db).await;
    app.register("erin").await;
    let ok = login(&app, "erin", PASSWORD, None).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.body["access_token"].is_string() && ok.body["refresh_token"].is_string());
    let wrong_password = login(&app, "erin", "not the password", None).await;
    let unknown_user = login(&app, "nobody-here", "not the password", None).await;
    assert_error(
        &wrong_password,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_eq!(wrong_password.status, unknown_user.status);
    assert_eq!(
        wrong_password.body, unknown_user.body,
        "same body either way"
    );
    let audit = app.state.store.list_audit(None, 10).await.expect("audit");
    assert_eq!(
        audit.iter().filter(|e| e.action == "login_failed").count(),
        2
    );
    assert_eq!(audit.iter().filter(|e| e.action == "login").count(), 1);
    assert!(audit.iter().all(|e| e.ip.as_deref() == Some("127.0.0.1")));
}

async fn refresh_rotates_and_reuse_revokes_the_family(db: Db) {
    let app = TestApp::new(db).await;
    let first = app.register("frank").await;
    let second = refresh(&app, &first.refresh).await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    let second = session(&second.body);
    assert_ne!(second.refresh, first.refresh, "rotated");
    assert_eq!(
        app.get("/api/v1/me", &second.access).await.status,
        StatusCode::OK
    );
    let third = session(&refresh(&app, &second.refresh).await.body);

    // A second session (another device) is a separate family.
    let other_device = session(&login(&app, "frank", PASSWORD, None).await.body);

    // Replaying the first token: 401, and the live token of that family dies with it.
    let reuse = refresh(&app, &first.refresh).await;
    assert_error(&reuse, StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    let revoked = refresh(&app, &third.refresh).await;
    assert_error(&revoked, StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    assert_eq!(
        refresh(&app, &other_device.refresh).await.status,
        StatusCode::OK
    );
    let audit = app.state.store.list_audit(None, 50).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "refresh_reuse"));

    let garbage = refresh(&app, "not-a-token").await;
    assert_error(&garbage, StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

async fn logout_revokes_the_family(db: Db) {
    let app = TestApp::new(db).await;
    let gina = app.register("gina").await;
    let next = session(&refresh(&app, &gina.refresh).await.body);
    let out = app
        .post(
            "/api/v1/auth/logout",
            None,
            json!({"refresh_token": next.refresh}),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_error(
        &refresh(&app, &next.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    );
    let again = app
        .post(
            "/api/v1/auth/logout",
            None,
            json!({"refresh_token": "unknown"}),
        )
        .await;
    assert_error(&again, StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

fn totp(secret: &str) -> TOTP {
    let bytes = Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("base32 secret");
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        Some("Veza".into()),
        "hank".into(),
    )
    .expect("totp")
}

async fn totp_setup_confirm_and_replay(db: Db) {
    let app = TestApp::new(db).await;
    let hank = app.register("hank").await;
    let setup = app
        .call(
            Method::POST,
            "/api/v1/auth/totp/setup",
            Some(&hank.access),
            None,
        )
        .await;
    assert_eq!(setup.status, StatusCode::OK, "{:?}", setup.body);
    let secret = setup.body["secret"].as_str().expect("secret").to_owned();
    let url = setup.body["otpauth_url"].as_str().expect("url");
    assert!(
        url.starts_with("otpauth://totp/Veza:hank?") && url.contains(&format!("secret={secret}")),
        "{url}"
    );
    let generator = totp(&secret);

    // Until confirmed, login needs no code.
    assert_eq!(
        login(&app, "hank", PASSWORD, None).await.status,
        StatusCode::OK
    );
    let wrong = app
        .post(
            "/api/v1/auth/totp/confirm",
            Some(&hank.access),
            json!({"code": "000000"}),
        )
        .await;
    let t = now();
    if [t - 30, t, t + 30]
        .iter()
        .all(|&at| generator.generate(at) != "000000")
    {
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "invalid_totp");
    }
    let code = generator.generate(now());
    let confirm = app
        .post(
            "/api/v1/auth/totp/confirm",
            Some(&hank.access),
            json!({"code": code}),
        )
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{:?}", confirm.body);
    assert_eq!(
        app.get("/api/v1/me", &hank.access).await.body["totp_enabled"],
        true
    );

    // Now login needs a code, and the code used to confirm cannot be replayed.
    assert_error(
        &login(&app, "hank", PASSWORD, None).await,
        StatusCode::UNAUTHORIZED,
        "totp_required",
    );
    assert_error(
        &login(&app, "hank", PASSWORD, Some(&code)).await,
        StatusCode::UNAUTHORIZED,
        "totp_replayed",
    );
    let next_code = generator.generate(now() + 30);
    assert_eq!(
        login(&app, "hank", PASSWORD, Some(&next_code)).await.status,
        StatusCode::OK
    );
    assert_error(
        &login(&app, "hank", PASSWORD, Some(&next_code)).await,
        StatusCode::UNAUTHORIZED,
        "totp_replayed",
    );
    assert_error(
        &login(&app, "hank", "wrong password", Some(&next_code)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    // Setting up again while enabled is refused.
    let again = app
        .call(
            Method::POST,
            "/api/v1/auth/totp/setup",
            Some(&hank.access),
            None,
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "totp_enabled");
}

fn claims(app: &TestApp, user_id: &str, iat: u64, exp: u64) -> AccessClaims {
    AccessClaims {
        iss: app.state.keys.issuer().to_owned(),
        sub: user_id.parse().expect("uuid"),
        aud: "veza-api".into(),
        iat,
        exp,
        jti: "test".into(),
        name: "ivy".into(),
    }
}

async fn forged_expired_and_misaddressed_tokens_are_refused(db: Db) {
    let app = TestApp::new(db).await;
    let ivy = app.register("ivy").await;
    let t = now();
    let valid = app
        .state
        .keys
        .sign(&claims(&app, &ivy.id, t, t + 60))
        .expect("sign");
    assert_eq!(app.get("/api/v1/me", &valid).await.status, StatusCode::OK);

    let expired = app
        .state
        .keys
        .sign(&claims(&app, &ivy.id, t - 3600, t - 60))
        .expect("sign");
    assert_error(
        &app.get("/api/v1/me", &expired).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    // Signed by a key this server never had, with the same kid as the real one.
    let other_dir = TempDir::new();
    let forger = KeyRing::load_or_create(&other_dir.0.join("keys.json"), app.state.keys.issuer())
        .expect("keys");
    let forged = forger
        .sign(&claims(&app, &ivy.id, t, t + 60))
        .expect("sign");
    assert_error(
        &app.get("/api/v1/me", &forged).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    let (_, rest) = forged.split_once('.').expect("jwt");
    let real_header = valid.split('.').next().expect("header");
    let forged_same_kid = format!("{real_header}.{rest}");
    assert_error(
        &app.get("/api/v1/me", &forged_same_kid).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    // A tampered payload breaks the signature.
    let mut parts: Vec<&str> = valid.split('.').collect();
    let other_payload = expired.split('.').nth(1).expect("payload");
    parts[1] = other_payload;
    assert_error(
        &app.get("/api/v1/me", &parts.join(".")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    // Wrong audience and wrong issuer.
    let mut media = claims(&app, &ivy.id, t, t + 60);
    media.aud = "veza-media".into();
    let media = app.state.keys.sign(&media).expect("sign");
    assert_error(
        &app.get("/api/v1/me", &media).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    let mut foreign = claims(&app, &ivy.id, t, t + 60);
    foreign.iss = "http://elsewhere.test".into();
    let foreign = app.state.keys.sign(&foreign).expect("sign");
    assert_error(
        &app.get("/api/v1/me", &foreign).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    assert_error(
        &app.call(Method::GET, "/api/v1/me", None, None).await,
        StatusCode::UNAUTHORIZED,
        "missing_token",
    );
}

async fn rotated_keys_keep_old_tokens_valid(db: Db) {
    let app = TestApp::new(db).await;
    let jack = app.register("jack").await;
    let old_kid = app.state.keys.signing_kid();
    let path = app.dir.0.join("jwt-keys.json");
    let retain = Duration::from_secs(900);
    let new_kid = KeyRing::rotate_file(&path, retain).expect("rotate");
    assert_ne!(new_kid, old_kid);

    // Another node sharing the key file picks the new key up and signs with it; this node meets
    // the unknown kid, reloads the file at once and accepts the token.
    let other_node = KeyRing::load_or_create(&path, app.state.keys.issuer()).expect("load");
    assert_eq!(other_node.signing_kid(), new_kid);
    let t = now();
    let from_other_node = other_node
        .sign(&claims(&app, &jack.id, t, t + 60))
        .expect("sign");
    assert_eq!(
        app.get("/api/v1/me", &from_other_node).await.status,
        StatusCode::OK
    );
    assert_eq!(app.state.keys.signing_kid(), new_kid);

    let jwks = app
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );

    // The token signed by the old key still verifies; new tokens carry the new kid.
    assert_eq!(
        app.get("/api/v1/me", &jack.access).await.status,
        StatusCode::OK
    );
    let fresh = session(&login(&app, "jack", PASSWORD, None).await.body);
    assert_eq!(jsonwebtoken_header(&fresh.access)["kid"], new_kid.as_str());
    assert_eq!(
        app.get("/api/v1/me", &fresh.access).await.status,
        StatusCode::OK
    );

    // Once the successor is older than the longest token lifetime, the old key is dropped.
    let newest = KeyRing::rotate_file(&path, Duration::ZERO).expect("rotate again");
    app.state.keys.reload_if_changed().expect("reload");
    let jwks = app
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let kids: Vec<String> = jwks.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect();
    assert!(kids.contains(&newest), "{kids:?}");
    assert!(
        !kids.contains(&old_kid),
        "the retired key is gone: {kids:?}"
    );
}
