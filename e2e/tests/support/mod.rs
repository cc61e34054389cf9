//! The harness of the end-to-end tests: runs the real `veza` binary as a child process on a
//! free loopback port with a fresh data folder, talks to it over HTTP, and cleans up (the
//! child is killed and the folder removed on drop).
//!
//! The children get a scrubbed environment: every inherited `VEZA_*`, `DATABASE_URL`,
//! `REDIS_URL`, `NATS_URL`, `RUST_LOG` and `RUST_*BACKTRACE` variable is removed, so a
//! developer's shell cannot change what a test sees.

// Each test file is its own crate and uses a different part of the harness.
#![allow(dead_code)]

pub mod daemon;
pub mod quic;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// How long a server may take to answer `GET /healthz` with 200.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a one-shot command (`migrate`, `admin grant`, `keys rotate`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A password the API accepts.
pub const PASSWORD: &str = "correct horse battery staple";

/// The `veza` binary: `$VEZA_BIN`, else `veza` next to the `deps/` folder of this test.
pub fn veza_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VEZA_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "VEZA_BIN={} is not a file", path.display());
        return path;
    }
    // current_exe is target/<profile>/deps/<test>-<hash>; the binary is target/<profile>/veza.
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("veza"))
        .filter(|bin| bin.is_file());
    bin.unwrap_or_else(|| {
        panic!(
            "the veza binary was not found next to {}; run `cargo build -p veza` first \
             (with the same CARGO_TARGET_DIR), or set VEZA_BIN",
            exe.display()
        )
    })
}

/// A `veza` command with a scrubbed environment (see the module docs).
fn veza_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(veza_bin());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("VEZA_")
            || name.starts_with("RUST_")
            || ["DATABASE_URL", "REDIS_URL", "NATS_URL"].contains(&name)
        {
            cmd.env_remove(name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs a one-shot `veza` command (not `serve`) to completion; panics if it takes longer than
/// [`COMMAND_TIMEOUT`] (the child is then killed).
pub async fn run_veza(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::from(veza_command());
    cmd.args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(COMMAND_TIMEOUT, cmd.output()).await {
        Ok(output) => output.expect("spawning veza"),
        Err(_) => panic!(
            "`veza {}` did not exit within {COMMAND_TIMEOUT:?}",
            args.join(" ")
        ),
    }
}

/// Standard output and error of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A folder under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `veza-e2e-<label>-<uuid>`.
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "veza-e2e-{label}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        Self(path)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on right now (bound to port 0, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// How to start `veza serve`: extra global flags and environment on top of the defaults
/// (JSON logs; API and auth rate limits so high that tests never meet them).
#[derive(Debug, Clone)]
pub struct Serve {
    /// `Some` sets a variable, `None` removes it.
    env: BTreeMap<String, Option<String>>,
    /// Global flags, placed before `serve`.
    args: Vec<OsString>,
    /// The subcommand: `serve`, `api` or `media`.
    role: &'static str,
}

impl Default for Serve {
    fn default() -> Self {
        Self::new()
    }
}

impl Serve {
    /// The defaults.
    pub fn new() -> Self {
        Self {
            env: BTreeMap::new(),
            args: Vec::new(),
            role: "serve",
        }
        .env("VEZA_LOG_FORMAT", "json")
        .env("VEZA_RATE_LIMIT_PER_MIN", "100000")
        .env("VEZA_AUTH_RATE_LIMIT_PER_MIN", "100000")
        // Each server its own media port, so tests run side by side.
        .env("VEZA_RTC_UDP_ADDR", "127.0.0.1:0")
        .env("VEZA_QUIC_ADDR", "127.0.0.1:0")
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(name.to_owned(), Some(value.into()));
        self
    }

    /// Leaves an environment variable (e.g. a default of [`Serve::new`]) unset.
    pub fn env_remove(mut self, name: &str) -> Self {
        self.env.insert(name.to_owned(), None);
        self
    }

    /// Runs `veza api` or `veza media` instead of `veza serve`.
    pub fn role(mut self, role: &'static str) -> Self {
        self.role = role;
        self
    }

    /// Adds a global flag (such as `--config FILE`) before `serve`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts `veza [args] --data-dir <fresh> serve --http-addr 127.0.0.1:<free port>` and
    /// waits until `/healthz` answers 200. Panics with the child's stderr if it does not
    /// within [`START_TIMEOUT`]. Retries with another port if the one picked was taken.
    pub async fn start(self) -> Server {
        let dir = TempDir::new("node");
        let data_dir = dir.path().join("data");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let log = dir.path().join(format!("stderr-{attempt}.log"));
            let mut cmd = veza_command();
            cmd.args(&self.args)
                .arg("--data-dir")
                .arg(&data_dir)
                .arg(self.role)
                .arg("--http-addr")
                .arg(format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("creating the stderr log"));
            for (name, value) in &self.env {
                match value {
                    Some(value) => cmd.env(name, value),
                    None => cmd.env_remove(name),
                };
            }
            let mut child = cmd.spawn().expect("spawning veza serve");
            match wait_healthy(&mut child, port, &log).await {
                Ok(()) => {
                    return Server {
                        child,
                        port,
                        log,
                        data_dir,
                        _dir: dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if attempt < 3 && why.contains("Address already in use") {
                        continue;
                    }
                    panic!("veza serve did not start: {why}");
                }
            }
        }
    }
}

/// Polls `GET /healthz` until 200, the child exits, or [`START_TIMEOUT`] passes.
async fn wait_healthy(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client");
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + START_TIMEOUT;
    let stderr = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("it exited with {status}; stderr:\n{}", stderr()));
        }
        if let Ok(response) = client.get(&url).send().await
            && response.status() == reqwest::StatusCode::OK
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{url} did not answer 200 within {START_TIMEOUT:?}; stderr:\n{}",
                stderr()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `veza serve`, killed (and its temp folder removed) on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    data_dir: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data folder (`--data-dir`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The stderr lines parsed as JSON (panics on a line that is not JSON).
    pub fn json_logs(&self) -> Vec<Value> {
        self.stderr()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// An API client for this server.
    pub fn api(&self) -> Api {
        Api::new(self.base_url())
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; `None` if it did not.
    pub async fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for veza") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Server {
    /// SIGKILL: the server vanishes without a goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small JSON client for one server.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

/// A response: status, headers and the JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The body, after asserting the status (`what` names the request in the message).
    #[track_caller]
    pub fn expect(self, status: u16, what: &str) -> Value {
        assert_eq!(
            self.status, status,
            "{what}: expected {status}, got {} with {}",
            self.status, self.body
        );
        self.body
    }
}

impl Api {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: String) -> Self {
        Self::with_client(base, reqwest::Client::builder())
    }

    /// A client whose connections come from `source` (any address in 127.0.0.0/8 works on
    /// Linux), so the server sees a client IP of the test's own.
    pub fn from_source(base: String, source: IpAddr) -> Self {
        Self::with_client(base, reqwest::Client::builder().local_address(source))
    }

    fn with_client(base: String, builder: reqwest::ClientBuilder) -> Self {
        let client = builder
            .timeout(Duration::from_secs(15))
            .build()
            .expect("HTTP client");
        Self { client, base }
    }

    /// `GET path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.client.get(format!("{}{path}", self.base)), token)
            .await
    }

    /// `GET path`, or `None` if nothing accepts the connection.
    pub async fn try_get(&self, path: &str) -> Option<u16> {
        let response = self.client.get(format!("{}{path}", self.base)).send().await;
        response.ok().map(|r| r.status().as_u16())
    }

    /// `POST path` with a JSON body and an optional bearer token.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let request = self.client.post(format!("{}{path}", self.base)).json(&body);
        self.send(request, token).await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder, token: Option<&str>) -> Reply {
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("HTTP request to veza");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("reading the response body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Registers `username` (201) and returns the session.
    pub async fn register(&self, username: &str) -> Value {
        let body = serde_json::json!({ "username": username, "password": PASSWORD });
        self.post("/api/v1/auth/register", None, body)
            .await
            .expect(201, "register")
    }

    /// Logs `username` in (200) and returns the session.
    pub async fn login(&self, username: &str) -> Value {
        let body = serde_json::json!({ "username": username, "password": PASSWORD });
        self.post("/api/v1/auth/login", None, body)
            .await
            .expect(200, "login")
    }
}

/// The JSON object on the last line of a command's standard output (`--json` reports).
pub fn last_json_line(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no output: {}", describe(output)));
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {}", describe(output)))
}

/// A number in a JSON value, panicking with the value if absent.
#[track_caller]
pub fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value}"))
}

/// A string field of a JSON value, panicking with the value if absent.
#[track_caller]
pub fn str_field<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// The decoded header and claims of a JWT, without verifying it.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let decode = |part: &str| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("JWT part is not base64url ({e}): {token}"));
        serde_json::from_slice(&bytes).expect("JWT part is JSON")
    };
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWT: {token}");
    (decode(parts[0]), decode(parts[1]))
}

/// The `kid` in a JWT's header.
pub fn jwt_kid(token: &str) -> String {
    str_field(&jwt_parts(token).0, "/kid").to_owned()
}

/// Verifies a JWT's EdDSA signature with the key of its `kid` in `jwks`, independently of
/// the server (with `ring`), and returns its claims.
pub fn verify_jwt(token: &str, jwks: &Value) -> Result<Value, String> {
    let (header, claims) = jwt_parts(token);
    if header["alg"] != "EdDSA" {
        return Err(format!("alg is not EdDSA: {header}"));
    }
    let kid = str_field(&header, "/kid");
    let keys = jwks["keys"]
        .as_array()
        .ok_or("the JWKS has no keys array")?;
    let jwk = keys
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} is not in the JWKS {jwks}"))?;
    if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
        return Err(format!("not an Ed25519 JWK: {jwk}"));
    }
    let public = URL_SAFE_NO_PAD
        .decode(str_field(jwk, "/x"))
        .map_err(|e| format!("x is not base64url: {e}"))?;
    let (signed, signature) = token.rsplit_once('.').ok_or("no signature")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("signature is not base64url: {e}"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| format!("bad signature for kid {kid}"))?;
    Ok(claims)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A fresh PostgreSQL database `veza_e2e_<uuid>` on 127.0.0.1:5432, dropped (`WITH (FORCE)`)
/// on drop.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
}

fn psql(sql: &str) -> std::io::Result<Output> {
    std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-v"])
        .args(["ON_ERROR_STOP=1", "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
}

impl PgDatabase {
    /// Creates the database.
    pub fn create() -> Self {
        let name = format!("veza_e2e_{}", uuid::Uuid::new_v4().simple());
        let output = psql(&format!("CREATE DATABASE {name}"))
            .expect("running psql (is the PostgreSQL client installed?)");
        assert!(
            output.status.success(),
            "creating {name}: {}",
            describe(&output)
        );
        Self { name }
    }

    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        match psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("could not drop {}: {}", self.name, describe(&output)),
            Err(err) => eprintln!("could not drop {}: {err}", self.name),
        }
    }
}

/// Redis keys deleted (with `redis-cli DEL`) when created and again on drop.
#[derive(Debug)]
pub struct RedisKeys(Vec<String>);

impl RedisKeys {
    /// Deletes `keys` now (panicking if Redis cannot be reached) and again on drop.
    pub fn clear(keys: Vec<String>) -> Self {
        let keys = Self(keys);
        let output = keys
            .delete()
            .expect("running redis-cli (are the Redis tools installed?)");
        assert!(
            output.status.success(),
            "redis-cli DEL: {}",
            describe(&output)
        );
        keys
    }

    fn delete(&self) -> std::io::Result<Output> {
        std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379", "DEL"])
            .args(&self.0)
            .stdin(Stdio::null())
            .output()
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// A response with a text body (an SDP answer, or an error message).
#[derive(Debug)]
pub struct TextReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Api {
    /// `POST path` with an SDP offer (`Content-Type: application/sdp`) and a bearer token, as
    /// WHIP and WHEP clients send it.
    pub async fn post_sdp(&self, path: &str, token: &str, sdp: &str) -> TextReply {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(sdp.to_owned())
            .send()
            .await
            .expect("HTTP request to veza");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("reading the response body");
        TextReply {
            status,
            headers,
            body,
        }
    }

    /// `PUT path` with a JSON body and an optional bearer token.
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let request = self.client.put(format!("{}{path}", self.base)).json(&body);
        self.send(request, token).await
    }

    /// `DELETE path` with an optional bearer token.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.client.delete(format!("{}{path}", self.base)), token)
            .await
    }
}

/// A 16-bit mono WAV of consecutive tones.
pub fn write_wav(path: &Path, rate: u32, tones: &[(f64, f64)]) {
    let mut samples = Vec::new();
    for &(frequency, seconds) in tones {
        let start = samples.len();
        for i in 0..(seconds * f64::from(rate)) as usize {
            let t = (start + i) as f64 / f64::from(rate);
            samples
                .push((0.4 * (2.0 * std::f64::consts::PI * frequency * t).sin() * 32767.0) as i16);
        }
    }
    let data_len = (samples.len() * 2) as u32;
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("writing the test WAV");
}
