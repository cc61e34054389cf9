//! `veza keys rotate` against a running server: old tokens keep working, and the server
//! starts signing with the new key once it reloads the key file (every 30 s).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use support::{Serve, jwt_kid, run_veza, str_field, verify_jwt};

/// The server reloads the key file every 30 s; allow some slack.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(35);

#[tokio::test]
async fn rotation_with_a_running_server() {
    let server = Serve::new().start().await;
    let api = server.api();
    let session = api.register("alice").await;
    let token_a = str_field(&session, "/access_token").to_owned();
    let old_kid = jwt_kid(&token_a);

    let data = server
        .data_dir()
        .to_str()
        .expect("utf-8 temp path")
        .to_owned();
    let output = run_veza(&["keys", "rotate", "--data-dir", &data], &[]).await;
    assert!(
        output.status.success(),
        "rotate: {}",
        support::describe(&output)
    );
    // "new signing key <kid> in <path>; ..."
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let new_kid = stdout
        .strip_prefix("new signing key ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected rotate output {stdout:?}"))
        .to_owned();
    assert_ne!(new_kid, old_kid);
    let key_file = server.data_dir().join("jwt-keys.json");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "rotated key file mode is {mode:o}");

    // (a) A token signed by the old key still works.
    api.get("/api/v1/me", Some(&token_a))
        .await
        .expect(200, "/me with the pre-rotation token");

    // (b) Within 35 s the server publishes both keys...
    let started = Instant::now();
    let jwks = loop {
        let jwks = api
            .get("/.well-known/jwks.json", None)
            .await
            .expect(200, "jwks");
        if jwks["keys"].as_array().is_some_and(|k| k.len() == 2) {
            break jwks;
        }
        assert!(
            started.elapsed() < RELOAD_TIMEOUT,
            "the server did not pick up the rotated key within {RELOAD_TIMEOUT:?}: {jwks}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{jwks}"
    );

    // ...and signs new tokens with the new key; they work, and so does the old one.
    let session = api.login("alice").await;
    let token_b = str_field(&session, "/access_token");
    assert_eq!(jwt_kid(token_b), new_kid, "new tokens must use the new key");
    verify_jwt(token_b, &jwks).unwrap_or_else(|e| panic!("new token: {e}"));
    verify_jwt(&token_a, &jwks).unwrap_or_else(|e| panic!("old token: {e}"));
    api.get("/api/v1/me", Some(token_b))
        .await
        .expect(200, "/me with the post-rotation token");
    api.get("/api/v1/me", Some(&token_a))
        .await
        .expect(200, "/me with the pre-rotation token after the reload");
}
