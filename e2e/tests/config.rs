//! Configuration layering of the binary: defaults < TOML file (`--config`) < environment <
//! flags; unknown file keys are fatal; log formats.

mod support;

use std::time::Duration;

use support::{Api, Serve, TempDir, free_port, run_veza};

/// Sends `GET /api/v1/rooms` (no token: 401, but it spends the API budget) until the first
/// 429, at most `max` times; returns how many requests got through before it.
async fn requests_before_429(api: &Api, max: usize) -> usize {
    for sent in 0..max {
        let reply = api.get("/api/v1/rooms", None).await;
        match reply.status {
            429 => {
                assert!(
                    reply.headers.contains_key("retry-after"),
                    "429 without Retry-After"
                );
                return sent;
            }
            401 => {}
            other => panic!("unexpected status {other}: {}", reply.body),
        }
    }
    max
}

/// Writes `text` to `<dir>/veza.toml` and returns the path.
fn config_file(dir: &TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("veza.toml");
    std::fs::write(&path, text).expect("writing veza.toml");
    path
}

#[tokio::test]
async fn config_file_sets_the_rate_limit_and_the_environment_overrides_it() {
    let dir = TempDir::new("config");
    let file = config_file(&dir, "rate_limit_per_min = 3\nlog_format = \"json\"\n");
    let from_file = || {
        Serve::new()
            .env_remove("VEZA_RATE_LIMIT_PER_MIN")
            .arg("--config")
            .arg(&file)
    };

    let server = from_file().start().await;
    assert_eq!(
        requests_before_429(&server.api(), 20).await,
        3,
        "file: 3 per minute"
    );

    let server = from_file()
        .env("VEZA_RATE_LIMIT_PER_MIN", "6")
        .start()
        .await;
    assert_eq!(
        requests_before_429(&server.api(), 20).await,
        6,
        "env beats file"
    );
}

#[tokio::test]
async fn http_addr_flag_beats_environment_and_file() {
    let dir = TempDir::new("config");
    let (file_port, env_port) = (free_port(), free_port());
    let file = config_file(&dir, &format!("http_addr = \"127.0.0.1:{file_port}\"\n"));
    // Serve always passes --http-addr 127.0.0.1:<its own port> and waits for it to answer.
    let server = Serve::new()
        .arg("--config")
        .arg(&file)
        .env("VEZA_HTTP_ADDR", format!("127.0.0.1:{env_port}"))
        .start()
        .await;
    let serving = server
        .json_logs()
        .into_iter()
        .find(|l| l["message"] == "veza is serving")
        .unwrap_or_else(|| panic!("no 'veza is serving' line:\n{}", server.stderr()));
    assert_eq!(serving["addr"], format!("127.0.0.1:{}", server.port()));
    for port in [file_port, env_port] {
        let other = Api::new(format!("http://127.0.0.1:{port}"));
        let reached = tokio::time::timeout(Duration::from_secs(5), other.try_get("/healthz")).await;
        assert!(
            matches!(reached, Ok(None)),
            "something answers on {port}, which the flag should have overridden"
        );
    }
}

#[tokio::test]
async fn unknown_config_key_is_fatal_and_named() {
    let dir = TempDir::new("config");
    let file = config_file(&dir, "rate_limit_per_min = 5\nrate_limit_per_minute = 5\n");
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let args = [
        "--config",
        file.to_str().expect("utf-8 temp path"),
        "--data-dir",
        data.to_str().expect("utf-8 temp path"),
        "serve",
        "--http-addr",
        &addr,
    ];
    let output = run_veza(&args, &[]).await;
    assert!(!output.status.success(), "veza served with an unknown key");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rate_limit_per_minute") && stderr.contains("unknown field"),
        "the error does not name the key: {stderr}"
    );

    // A malformed environment value is fatal too, and names the variable.
    let args = ["--data-dir", args[3], "serve", "--http-addr", &addr];
    let output = run_veza(&args, &[("VEZA_RATE_LIMIT_PER_MIN", "lots")]).await;
    assert!(!output.status.success(), "veza served with a bad variable");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("VEZA_RATE_LIMIT_PER_MIN"), "{stderr}");
}

#[tokio::test]
async fn log_format_json_from_env_and_pretty_from_flag() {
    // VEZA_LOG_FORMAT=json (the harness default): every stderr line is a JSON object.
    let server = Serve::new().start().await;
    server.api().get("/api/v1/rooms", None).await;
    let logs = server.json_logs();
    assert!(!logs.is_empty(), "no logs at all");
    for line in &logs {
        assert!(
            line["level"].is_string() && line["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        logs.iter().any(|l| l["message"] == "veza is serving"),
        "{logs:?}"
    );

    // --log-format pretty beats the environment.
    let server = Serve::new()
        .env("VEZA_LOG_FORMAT", "json")
        .arg("--log-format")
        .arg("pretty")
        .start()
        .await;
    let stderr = server.stderr();
    assert!(stderr.contains("veza is serving"), "{stderr}");
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "a JSON line despite --log-format pretty: {line}"
        );
    }
}
