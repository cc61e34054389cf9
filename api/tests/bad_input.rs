//! Bad input on every endpoint: malformed, truncated, wrongly typed and oversized bodies, wrong
//! content types, garbage ids and query strings, forged and expired tokens. Nothing gets a 5xx:
//! every error is a 4xx `{"error":{"code":"snake_case","message":"..."}}` that echoes no
//! secret, and the server still serves afterwards.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Db, PUBLIC_URL, Reply, Session, TempDir, TestApp};
use serde_json::{Value, json};
use veza_api::{AccessClaims, KeyRing};

both_backends!(
    garbage_on_every_endpoint_never_gets_a_5xx,
    bad_input_gets_the_documented_error,
    bad_tokens_are_refused,
);

/// A password sent in bad bodies; no reply may contain it.
const SECRET_PASSWORD: &str = "S3cret-Passw0rd-never-echoed";
/// A numeric password, TOTP code or refresh token (wrongly typed); no reply may contain it.
const SECRET_NUMBER: u64 = 31_415_926_535_897;
/// The password `TestApp::register` uses.
const PASSWORD: &str = "correct horse battery";

// ---------------------------------------------------------------------------------------------
// The endpoints.

/// What an endpoint reads besides its path.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reads {
    Nothing,
    Json,
    Query,
}

use Reads::{Json, Nothing, Query};

#[derive(Debug)]
struct Endpoint {
    method: &'static str,
    /// With `{id}` (a room), `{user_id}` and `{seq}` (a chat message) placeholders.
    path: &'static str,
    /// Needs an access token.
    auth: bool,
    reads: Reads,
}

impl Endpoint {
    fn method(&self) -> Method {
        Method::from_bytes(self.method.as_bytes()).expect("a method")
    }
}

/// An endpoint that needs an access token.
const fn authed(method: &'static str, path: &'static str, reads: Reads) -> Endpoint {
    Endpoint {
        method,
        path,
        auth: true,
        reads,
    }
}

/// An endpoint open to all.
const fn public(method: &'static str, path: &'static str, reads: Reads) -> Endpoint {
    Endpoint {
        method,
        path,
        auth: false,
        reads,
    }
}

/// Every endpoint of the API. Deleting the room comes last so the others meet a live room.
const ENDPOINTS: &[Endpoint] = &[
    public("POST", "/api/v1/auth/register", Json),
    public("POST", "/api/v1/auth/login", Json),
    public("POST", "/api/v1/auth/refresh", Json),
    public("POST", "/api/v1/auth/logout", Json),
    authed("POST", "/api/v1/auth/totp/setup", Nothing),
    authed("POST", "/api/v1/auth/totp/confirm", Json),
    authed("GET", "/api/v1/me", Nothing),
    public("GET", "/.well-known/jwks.json", Nothing),
    authed("POST", "/api/v1/rooms", Json),
    authed("GET", "/api/v1/rooms", Query),
    authed("GET", "/api/v1/rooms/{id}", Nothing),
    authed("PATCH", "/api/v1/rooms/{id}", Json),
    authed("GET", "/api/v1/rooms/{id}/members", Nothing),
    authed("PUT", "/api/v1/rooms/{id}/members/{user_id}", Json),
    authed("DELETE", "/api/v1/rooms/{id}/members/{user_id}", Nothing),
    authed("POST", "/api/v1/rooms/{id}/bans/{user_id}", Nothing),
    authed("DELETE", "/api/v1/rooms/{id}/bans/{user_id}", Nothing),
    authed("POST", "/api/v1/rooms/{id}/join", Nothing),
    authed("GET", "/api/v1/rooms/{id}/messages", Query),
    authed("POST", "/api/v1/rooms/{id}/messages", Json),
    authed("PATCH", "/api/v1/rooms/{id}/messages/{seq}", Json),
    authed("DELETE", "/api/v1/rooms/{id}/messages/{seq}", Nothing),
    authed("POST", "/api/v1/rooms/{id}/chat-mutes/{user_id}", Nothing),
    authed("DELETE", "/api/v1/rooms/{id}/chat-mutes/{user_id}", Nothing),
    authed("GET", "/api/v1/admin/audit", Query),
    public("GET", "/healthz", Nothing),
    public("GET", "/readyz", Nothing),
    public("GET", "/metrics", Nothing),
    public("GET", "/api/openapi.json", Nothing),
    authed("DELETE", "/api/v1/rooms/{id}", Nothing),
];

/// Ids that are not ids.
fn garbage_ids() -> Vec<String> {
    [
        "not-a-uuid",
        "",
        "%00",
        "%FF",
        "%%%",
        "../../etc",
        "..%2F..%2Fetc",
        "00000000-0000-0000-0000-00000000000g",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([("x".repeat(5000))])
    .collect()
}

/// The seq of the chat message every scenario posts first.
const SEQ: &str = "1";

/// `template` with its placeholders filled.
fn fill(template: &str, room: &str, user: &str, seq: &str) -> String {
    template
        .replace("{id}", room)
        .replace("{user_id}", user)
        .replace("{seq}", seq)
}

/// The paths of `template`: with the real room, user and message, then with a garbage id in
/// each place. Returns (path, real ids?, routable?): a raw `/` in an id, or an empty last
/// segment, leaves the path without a route (404).
fn paths(template: &str, room: &str, user: &str) -> Vec<(String, bool, bool)> {
    let mut paths = vec![(fill(template, room, user, SEQ), true, true)];
    if template.contains("{id}") {
        for garbage in garbage_ids() {
            let mut filled = vec![fill(template, &garbage, user, SEQ)];
            if template.contains("{user_id}") {
                filled.push(fill(template, room, &garbage, SEQ));
            }
            if template.contains("{seq}") {
                filled.push(fill(template, room, user, &garbage));
            }
            for path in filled {
                let routes = !garbage.contains('/') && !path.ends_with('/');
                paths.push((path, false, routes));
            }
        }
    }
    paths
}

// ---------------------------------------------------------------------------------------------
// The bad inputs.

/// The answer a request must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// A 2xx.
    Success,
    /// This 4xx and error code.
    Error(StatusCode, &'static str),
    /// Depends on the endpoint: only "2xx, or a 4xx JSON error" is checked.
    Any,
}

const MALFORMED: Want = Want::Error(StatusCode::BAD_REQUEST, "malformed_json");
const INVALID_BODY: Want = Want::Error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
const TOO_LARGE: Want = Want::Error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
const UNSUPPORTED: Want = Want::Error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
const INVALID_QUERY: Want = Want::Error(StatusCode::BAD_REQUEST, "invalid_query");
const INVALID_LIMIT: Want = Want::Error(StatusCode::BAD_REQUEST, "invalid_limit");
const MISSING_TOKEN: Want = Want::Error(StatusCode::UNAUTHORIZED, "missing_token");
const INVALID_TOKEN: Want = Want::Error(StatusCode::UNAUTHORIZED, "invalid_token");

/// One bad request body (or query string).
#[derive(Debug, Clone)]
struct Bad {
    name: &'static str,
    content_type: Option<&'static str>,
    body: Bytes,
    /// Sent with a `Content-Length`; otherwise streamed with none.
    sized: bool,
    /// Appended to the path.
    query: &'static str,
    /// The answer of an endpoint that reads a JSON body.
    json: Want,
    /// The answer of an endpoint that reads a query string.
    list: Want,
}

impl Bad {
    /// A body sent as `application/json`, with its length.
    fn json(name: &'static str, body: impl Into<Bytes>, json: Want) -> Self {
        Self {
            name,
            content_type: Some("application/json"),
            body: body.into(),
            sized: true,
            query: "",
            json,
            list: Want::Success,
        }
    }

    /// A garbage query string, with no body.
    fn query(query: &'static str, list: Want) -> Self {
        Self {
            name: query,
            content_type: None,
            body: Bytes::new(),
            sized: true,
            query,
            json: UNSUPPORTED,
            list,
        }
    }
}

fn bad_inputs() -> Vec<Bad> {
    let valid = json!({"username": "mallory", "password": SECRET_PASSWORD}).to_string();
    let two_mib = format!(r#"{{"username":"{}"}}"#, "a".repeat(2 << 20));
    let text = |value: Value| value.to_string();
    vec![
        Bad::json("empty body", "", MALFORMED),
        Bad::json("lone brace", "{", MALFORMED),
        Bad::json("truncated key", r#"{"usern"#, MALFORMED),
        Bad::json("truncated value", r#"{"username": "ab"#, MALFORMED),
        Bad::json("null", "null", INVALID_BODY),
        Bad::json("empty array", "[]", INVALID_BODY),
        Bad::json("string", r#""string""#, INVALID_BODY),
        Bad::json("number", "123", INVALID_BODY),
        Bad::json(
            "every field wrongly typed",
            r#"{"username":5,"password":[],"name":{},"visibility":7,"role":true,"refresh_token":1,"code":null,"description":[1]}"#,
            INVALID_BODY,
        ),
        Bad::json(
            "credentials wrongly typed",
            text(json!({"username": "mallory", "password": SECRET_NUMBER, "totp": SECRET_NUMBER})),
            INVALID_BODY,
        ),
        Bad::json(
            "room wrongly typed",
            text(json!({"name": {"a": 1}, "visibility": 7, "description": [1]})),
            INVALID_BODY,
        ),
        Bad::json(
            "role wrongly typed",
            text(json!({"role": true})),
            INVALID_BODY,
        ),
        Bad::json(
            "token wrongly typed",
            text(json!({"refresh_token": SECRET_NUMBER})),
            INVALID_BODY,
        ),
        Bad::json(
            "code wrongly typed",
            text(json!({"code": SECRET_NUMBER})),
            INVALID_BODY,
        ),
        Bad::json(
            "unknown fields",
            text(
                json!({"name": "r", "visibility": "public", "username": "mallory",
                        "password": SECRET_PASSWORD, "is_admin": true}),
            ),
            INVALID_BODY,
        ),
        Bad::json(
            "invalid UTF-8 in a key",
            &b"{\"\xff\xfe\":\"\xc3\x28\"}"[..],
            MALFORMED,
        ),
        Bad::json("invalid UTF-8", &b"\xff\xfe\xfd"[..], MALFORMED),
        // No stack overflow: 400 or 422, depending on whether the typed reader meets a type
        // error before the end (or serde_json's recursion limit).
        Bad::json("10 000 nested arrays", "[".repeat(10_000), Want::Any),
        Bad::json(
            "10 000 nested arrays, closed",
            "[".repeat(10_000) + &"]".repeat(10_000),
            Want::Any,
        ),
        Bad::json(
            "5 000 nested objects",
            r#"{"name":"#.repeat(5_000),
            Want::Any,
        ),
        Bad::json("2 MiB with length", two_mib.clone(), TOO_LARGE),
        Bad {
            sized: false,
            ..Bad::json("2 MiB streamed", two_mib, TOO_LARGE)
        },
        Bad {
            content_type: Some("text/plain"),
            ..Bad::json("text/plain", valid.clone(), UNSUPPORTED)
        },
        Bad {
            content_type: Some("application/x-www-form-urlencoded"),
            ..Bad::json("form", "username=mallory&password=x", UNSUPPORTED)
        },
        Bad {
            content_type: None,
            ..Bad::json("no content type", valid, UNSUPPORTED)
        },
        Bad::json(
            "100 KB username",
            text(json!({"username": "u".repeat(100_000), "password": SECRET_PASSWORD})),
            TOO_LARGE,
        ),
        Bad::json(
            "60 KB username",
            text(json!({"username": "u".repeat(60_000), "password": SECRET_PASSWORD})),
            Want::Any,
        ),
        Bad::json(
            "60 KB password",
            text(json!({"username": "mallory", "password": "p".repeat(60_000)})),
            Want::Any,
        ),
        Bad::json(
            "60 KB room name",
            text(json!({"name": "n".repeat(60_000), "visibility": "public"})),
            Want::Any,
        ),
        Bad::json(
            "NUL in credentials",
            text(json!({"username": "nul\u{0}user", "password": SECRET_PASSWORD})),
            Want::Any,
        ),
        Bad::json(
            "NUL in room fields",
            text(json!({"name": "nul\u{0}room", "visibility": "public", "description": "a\u{0}b"})),
            Want::Any,
        ),
        Bad::query("?limit=abc&cursor=%%%", INVALID_QUERY),
        Bad::query("?limit=-1", INVALID_LIMIT),
        Bad::query("?limit=0", INVALID_LIMIT),
        Bad::query("?limit=99999999999999999999", INVALID_QUERY),
        Bad::query("?limit=1&limit=2", INVALID_QUERY),
        Bad::query("?before=1e999", INVALID_QUERY),
        Bad::query("?%00=%FF&&&==", INVALID_QUERY),
    ]
}

/// A body `endpoint` accepts.
fn valid_body(endpoint: &Endpoint) -> Bad {
    let body = match (endpoint.method, endpoint.path) {
        ("POST", "/api/v1/auth/totp/confirm") => r#"{"code":"123456"}"#,
        ("POST", "/api/v1/rooms") => r#"{"name":"ok","visibility":"public"}"#,
        ("PATCH", "/api/v1/rooms/{id}") => r#"{"name":"renamed"}"#,
        ("PUT", "/api/v1/rooms/{id}/members/{user_id}") => r#"{"role":"speaker"}"#,
        ("POST", "/api/v1/rooms/{id}/messages") => r#"{"text":"hi","client_id":"c-valid"}"#,
        ("PATCH", "/api/v1/rooms/{id}/messages/{seq}") => r#"{"text":"edited"}"#,
        _ => "{}",
    };
    Bad::json("valid body", body, Want::Any)
}

/// What `bad` must get from `endpoint` (with an access token or not; with the real ids or not).
fn expected(endpoint: &Endpoint, bad: &Bad, authorised: bool, real_ids: bool, max: usize) -> Want {
    if bad.sized && bad.body.len() > max {
        // Refused by the body-limit layer, before routing and authentication.
        return TOO_LARGE;
    }
    if !real_ids {
        // Routing and the order of extractors decide; see `bad_input_gets_the_documented_error`.
        return Want::Any;
    }
    if endpoint.auth && !authorised {
        return MISSING_TOKEN;
    }
    match endpoint.reads {
        Json => bad.json,
        Query => bad.list,
        Nothing => Want::Any,
    }
}

// ---------------------------------------------------------------------------------------------
// Sending and checking.

/// `method uri` with `bad`'s body and content type, an optional bearer token, from 127.0.0.1.
fn request(method: &Method, uri: &str, token: Option<&str>, bad: &Bad) -> Request<Body> {
    let mut builder = Request::builder().method(method.clone()).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(content_type) = bad.content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    let body = if bad.sized {
        builder = builder.header(header::CONTENT_LENGTH, bad.body.len());
        Body::from(bad.body.clone())
    } else {
        Body::from_stream(Body::from(bad.body.clone()).into_data_stream())
    };
    let mut request = builder.body(body).expect("a valid request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    request
}

/// A request with a raw `Authorization` header and no body.
fn with_authorization(method: &Method, uri: &str, authorization: &str) -> Request<Body> {
    Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::AUTHORIZATION, authorization)
        .body(Body::empty())
        .expect("a valid request")
}

fn is_snake_case(code: &str) -> bool {
    code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !code.ends_with('_')
        && !code.contains("__")
}

/// Asserts `reply` is a 2xx, or a 4xx JSON error with a snake_case code and a message — never
/// a 5xx — and contains none of `secrets`.
#[track_caller]
fn assert_sane(reply: &Reply, what: &str, secrets: &[&str]) {
    let status = reply.status;
    assert!(
        status.is_success() || status.is_client_error(),
        "{what}: got {status}: {}",
        reply.body
    );
    if status.is_client_error() {
        let code = reply.code();
        assert!(
            is_snake_case(code),
            "{what}: {status} without a snake_case error code: {}",
            reply.body
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty()),
            "{what}: {status} without an error message: {}",
            reply.body
        );
        assert!(
            reply
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "{what}: {status} error is not application/json: {:?}",
            reply.headers
        );
    }
    let text = reply.body.to_string();
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what}: the reply echoes a secret: {text}"
        );
    }
}

/// Asserts `reply` is what `want` says.
#[track_caller]
fn assert_want(reply: &Reply, want: Want, what: &str) {
    match want {
        Want::Success => assert!(
            reply.status.is_success(),
            "{what}: want a 2xx, got {}: {}",
            reply.status,
            reply.body
        ),
        Want::Error(status, code) => assert!(
            reply.status == status && reply.code() == code,
            "{what}: want {status} {code}, got {}: {}",
            reply.status,
            reply.body
        ),
        Want::Any => {}
    }
}

/// `key=count key=count ...`
fn histogram<K: std::fmt::Display>(map: &BTreeMap<K, usize>) -> String {
    map.iter()
        .map(|(key, n)| format!("{key}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The start of a long path, for messages.
fn short(path: &str) -> String {
    if path.len() > 80 {
        format!("{}…({} bytes)", &path[..80], path.len())
    } else {
        path.to_owned()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Signs into `app` as `username` (registered with [`PASSWORD`]).
async fn login(app: &TestApp, username: &str) -> Session {
    let reply = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": username, "password": PASSWORD}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "login: {}", reply.body);
    common::session(&reply.body)
}

/// Posts the room's first chat message (seq [`SEQ`]), so message paths meet a real message.
async fn first_message(app: &TestApp, who: &Session, room: &str) {
    let reply = app
        .post(
            &format!("/api/v1/rooms/{room}/messages"),
            Some(&who.access),
            json!({"text": "first", "client_id": "first"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["seq"].to_string(), SEQ);
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

/// Every bad body and query on every endpoint, with the admin's token and without: never a
/// 5xx. Then the server still serves.
async fn garbage_on_every_endpoint_never_gets_a_5xx(db: Db) {
    let app = TestApp::new(db).await;
    let admin = app.register("admin").await; // the first user: an admin and the room's owner
    let bob = app.register("bob").await;
    let room = app.room(&admin, "private").await;
    first_message(&app, &admin, &room).await;
    let max = app.state.config.max_body_bytes;
    let number = SECRET_NUMBER.to_string();
    let secrets = [SECRET_PASSWORD, number.as_str(), admin.access.as_str()];
    let bads = bad_inputs();

    let mut statuses = BTreeMap::<u16, usize>::new();
    let mut codes = BTreeMap::<String, usize>::new();
    for endpoint in ENDPOINTS {
        for (path, real_ids, _) in paths(endpoint.path, &room, &bob.id) {
            for bad in &bads {
                for token in [Some(admin.access.as_str()), None] {
                    let what = format!(
                        "{} {}{} [{}] {}",
                        endpoint.method,
                        short(&path),
                        bad.query,
                        bad.name,
                        if token.is_some() {
                            "as admin"
                        } else {
                            "anonymous"
                        }
                    );
                    let uri = format!("{path}{}", bad.query);
                    let reply = app
                        .send(request(&endpoint.method(), &uri, token, bad))
                        .await;
                    assert_sane(&reply, &what, &secrets);
                    let want = expected(endpoint, bad, token.is_some(), real_ids, max);
                    assert_want(&reply, want, &what);
                    *statuses.entry(reply.status.as_u16()).or_default() += 1;
                    if !reply.code().is_empty() {
                        *codes.entry(reply.code().to_owned()).or_default() += 1;
                    }
                }
            }
        }
    }
    let sent: usize = statuses.values().sum();
    println!(
        "bad input ({db:?}): {sent} requests, {} endpoints x {} bad inputs; statuses: {}",
        ENDPOINTS.len(),
        bads.len(),
        histogram(&statuses)
    );
    println!("bad input ({db:?}): error codes: {}", histogram(&codes));
    assert!(
        sent > 5000,
        "the matrix sent {sent} requests; it should cover every endpoint"
    );
    assert!(statuses.keys().all(|s| *s < 500), "no 5xx: {statuses:?}");

    // After all that, the server still serves: the admin's session, and a new user.
    let me = app.get("/api/v1/me", &admin.access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    app.register("carol").await;
    let carol = login(&app, "carol").await;
    let room = app.room(&carol, "public").await;
    let join = app
        .post(
            &format!("/api/v1/rooms/{room}/join"),
            Some(&carol.access),
            json!({}),
        )
        .await;
    assert_eq!(join.status, StatusCode::OK, "{}", join.body);
    assert!(join.body["token"].is_string(), "{}", join.body);
}

/// The documented status and code of each kind of bad input.
async fn bad_input_gets_the_documented_error(db: Db) {
    let app = TestApp::new(db).await;
    let admin = app.register("admin").await;
    let bob = app.register("bob").await;
    let room = app.room(&admin, "public").await;
    first_message(&app, &admin, &room).await;
    let number = SECRET_NUMBER.to_string();
    let secrets = [SECRET_PASSWORD, number.as_str(), admin.access.as_str()];
    let token = Some(admin.access.as_str());
    let send = |method: Method, uri: String, bad: Bad| {
        let app = &app;
        async move {
            let reply = app.send(request(&method, &uri, token, &bad)).await;
            let what = format!("{method} {} [{}]", short(&uri), bad.name);
            assert_sane(&reply, &what, &secrets);
            (reply, what)
        }
    };

    // Bodies: each bad input on each endpoint that reads JSON — exact status and code.
    for endpoint in ENDPOINTS.iter().filter(|e| e.reads == Json) {
        let uri = fill(endpoint.path, &room, &bob.id, SEQ);
        for bad in bad_inputs() {
            let want = bad.json;
            let (reply, what) = send(endpoint.method(), uri.clone(), bad).await;
            assert_want(&reply, want, &what);
        }
    }

    // Huge values in a body under the limit: the field's own validation answers.
    let cases = [
        (
            "/api/v1/auth/register",
            json!({"username": "u".repeat(60_000), "password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
        ),
        (
            "/api/v1/auth/register",
            json!({"username": "mallory", "password": "p".repeat(60_000)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_password",
        ),
        (
            "/api/v1/auth/login",
            json!({"username": "admin", "password": "p".repeat(60_000)}),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        (
            "/api/v1/auth/login",
            json!({"username": "u".repeat(60_000), "password": PASSWORD}),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        (
            "/api/v1/rooms",
            json!({"name": "n".repeat(60_000), "visibility": "public"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            "/api/v1/rooms",
            json!({"name": "ok", "visibility": "public", "description": "d".repeat(60_000)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_description",
        ),
        // PostgreSQL text cannot hold U+0000: refused up front, on both backends alike.
        (
            "/api/v1/auth/login",
            json!({"username": "nul\u{0}user", "password": PASSWORD}),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        (
            "/api/v1/rooms",
            json!({"name": "nul\u{0}room", "visibility": "public"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            "/api/v1/rooms",
            json!({"name": "ok", "visibility": "public", "description": "a\u{0}b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_description",
        ),
        (
            "/api/v1/auth/register",
            json!({"username": "u".repeat(100_000), "password": PASSWORD}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (path, body, status, code) in cases {
        let bad = Bad::json("huge value", body.to_string(), Want::Any);
        let (reply, what) = send(Method::POST, path.to_owned(), bad).await;
        assert_want(&reply, Want::Error(status, code), &what);
    }
    let patch = Bad::json("NUL in name", r#"{"name":"a\u0000b"}"#, Want::Any);
    let (reply, what) = send(Method::PATCH, format!("/api/v1/rooms/{room}"), patch).await;
    assert_want(
        &reply,
        Want::Error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"),
        &what,
    );
    // A failed login with a NUL in the username is still audited (the NUL replaced).
    let audit = app.get("/api/v1/admin/audit", &admin.access).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    let entries = audit.body["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "login_failed" && e["target"] == "nul\u{fffd}user"),
        "the failed login is audited: {}",
        audit.body
    );

    // Bodies are JSON objects: an array is refused even where serde could read a struct from it.
    for (method, path, body) in [
        (Method::PATCH, format!("/api/v1/rooms/{room}"), "[]"),
        (
            Method::POST,
            "/api/v1/auth/login".to_owned(),
            r#"["admin","correct horse battery",null]"#,
        ),
    ] {
        let (reply, what) = send(method, path, Bad::json("array body", body, Want::Any)).await;
        assert_want(
            &reply,
            Want::Error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            &what,
        );
    }
    let (reply, what) = send(
        Method::PUT,
        format!("/api/v1/rooms/{room}/members/{}", bob.id),
        Bad::json("owner role", r#"{"role":"owner"}"#, Want::Any),
    )
    .await;
    assert_want(
        &reply,
        Want::Error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_role"),
        &what,
    );

    // Garbage ids: 400 invalid_id (or invalid_path when not UTF-8); 404 when not routable. The
    // body is valid where one is read, so the id alone is at fault.
    let nowhere = uuid::Uuid::new_v4().to_string();
    for endpoint in ENDPOINTS.iter().filter(|e| e.path.contains("{id}")) {
        for (path, real_ids, routes) in paths(endpoint.path, &room, &bob.id) {
            if real_ids {
                continue;
            }
            let (reply, what) = send(endpoint.method(), path, valid_body(endpoint)).await;
            if routes {
                assert!(
                    reply.status == StatusCode::BAD_REQUEST
                        && ["invalid_id", "invalid_path"].contains(&reply.code()),
                    "{what}: want 400 invalid_id or invalid_path, got {}: {}",
                    reply.status,
                    reply.body
                );
            } else {
                assert_want(
                    &reply,
                    Want::Error(StatusCode::NOT_FOUND, "not_found"),
                    &what,
                );
            }
        }
        // A well-formed id of nothing: 404.
        let path = fill(endpoint.path, &nowhere, &bob.id, SEQ);
        let (reply, what) = send(endpoint.method(), path, valid_body(endpoint)).await;
        assert_want(
            &reply,
            Want::Error(StatusCode::NOT_FOUND, "not_found"),
            &what,
        );
    }

    // Query strings.
    let none = || Bad::json("no body", "", Want::Any);
    for (uri, want) in [
        ("/api/v1/rooms?limit=abc&cursor=%%%", INVALID_QUERY),
        ("/api/v1/rooms?limit=-1", INVALID_LIMIT),
        ("/api/v1/rooms?limit=101", INVALID_LIMIT),
        ("/api/v1/rooms?before=1e999", INVALID_QUERY),
        (
            "/api/v1/rooms?cursor=garbage",
            Want::Error(StatusCode::BAD_REQUEST, "invalid_cursor"),
        ),
        (
            "/api/v1/rooms?cursor=99999999999999999999999_00000000-0000-0000-0000-000000000000",
            Want::Error(StatusCode::BAD_REQUEST, "invalid_cursor"),
        ),
        (
            "/api/v1/rooms?cursor=1_not-a-uuid",
            Want::Error(StatusCode::BAD_REQUEST, "invalid_cursor"),
        ),
        (
            "/api/v1/rooms?cursor=-9223372036854775808_00000000-0000-0000-0000-000000000000",
            Want::Success,
        ),
        ("/api/v1/admin/audit?limit=abc&cursor=%%%", INVALID_QUERY),
        ("/api/v1/admin/audit?limit=-1", INVALID_LIMIT),
        ("/api/v1/admin/audit?limit=501", INVALID_LIMIT),
        ("/api/v1/admin/audit?before=1e999", INVALID_QUERY),
        (
            "/api/v1/admin/audit?before=-9223372036854775808",
            Want::Success,
        ),
        (
            "/api/v1/admin/audit?before=9223372036854775807",
            Want::Success,
        ),
    ] {
        let (reply, what) = send(Method::GET, uri.to_owned(), none()).await;
        assert_want(&reply, want, &what);
    }
    for (query, want) in [
        ("?limit=abc", INVALID_QUERY),
        ("?limit=0", INVALID_LIMIT),
        ("?limit=201", INVALID_LIMIT),
        ("?limit=4294967297", INVALID_LIMIT),
        ("?before=1e999", INVALID_QUERY),
        ("?before=1&after=1", INVALID_QUERY),
        ("?cursor=1", INVALID_QUERY),
        ("?before=-9223372036854775808", Want::Success),
        ("?after=9223372036854775807", Want::Success),
        ("?after=-1&limit=200", Want::Success),
    ] {
        let uri = format!("/api/v1/rooms/{room}/messages{query}");
        let (reply, what) = send(Method::GET, uri, none()).await;
        assert_want(&reply, want, &what);
    }
}

/// Forged, expired, unsigned, tampered and misdirected tokens: 401 invalid_token on every
/// endpoint that needs one; malformed `Authorization` headers: 401 missing_token.
async fn bad_tokens_are_refused(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.room(&alice, "public").await;
    first_message(&app, &alice, &room).await;
    let now = unix_now();
    let claims = |iss: &str, sub: &str, exp: u64| AccessClaims {
        iss: iss.to_owned(),
        sub: sub.parse().expect("a user id"),
        aud: veza_proto::ACCESS_AUDIENCE.to_owned(),
        iat: now - 60,
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
        name: "alice".to_owned(),
    };
    let sign = |claims: &AccessClaims| app.state.keys.sign(claims).expect("sign");

    // The control: a token this server signed verifies.
    let good = sign(&claims(PUBLIC_URL, &alice.id, now + 600));
    let me = app.get("/api/v1/me", &good).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);

    // Signed by another key ring (another kid).
    let other_dir = TempDir::new();
    let other = KeyRing::load_or_create(&other_dir.0.join("jwt-keys.json"), PUBLIC_URL)
        .expect("another key ring");
    let forged = other
        .sign(&claims(PUBLIC_URL, &alice.id, now + 600))
        .expect("sign");
    // Signed by another key under this server's kid.
    let forged_kid = {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .expect("a key");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(app.state.keys.signing_kid());
        jsonwebtoken::encode(
            &header,
            &claims(PUBLIC_URL, &alice.id, now + 600),
            &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
        )
        .expect("sign")
    };
    let expired = sign(&claims(PUBLIC_URL, &alice.id, now - 3600));
    let wrong_issuer = sign(&claims("http://evil.test", &alice.id, now + 600));
    let b64 = |value: Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let payload =
        b64(serde_json::to_value(claims(PUBLIC_URL, &alice.id, now + 600)).expect("json"));
    let unsigned = format!("{}.{payload}.", b64(json!({"alg": "none", "typ": "JWT"})));
    let unsigned_kid = format!(
        "{}.{payload}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": app.state.keys.signing_kid()}))
    );
    let hs256 = format!(
        "{}.{payload}.{}",
        b64(json!({"alg": "HS256", "typ": "JWT", "kid": app.state.keys.signing_kid()})),
        URL_SAFE_NO_PAD.encode([0u8; 32])
    );
    // Alice's token, now claiming to be Bob.
    let tampered = {
        let parts: Vec<&str> = alice.access.split('.').collect();
        let mut body: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64"))
                .expect("claims");
        body["sub"] = json!(bob.id);
        format!("{}.{}.{}", parts[0], b64(body), parts[2])
    };
    let join = app
        .post(
            &format!("/api/v1/rooms/{room}/join"),
            Some(&alice.access),
            json!({}),
        )
        .await;
    assert_eq!(join.status, StatusCode::OK, "{}", join.body);
    let media = join.body["token"].as_str().expect("media token").to_owned();
    let bad_tokens = [
        ("forged by another key ring", forged),
        ("forged under our kid", forged_kid),
        ("expired", expired),
        ("alg none", unsigned),
        ("alg none with our kid", unsigned_kid),
        ("alg HS256", hs256),
        ("tampered payload", tampered),
        ("media token (wrong audience)", media),
        ("wrong issuer", wrong_issuer),
        ("not a JWT", "not-a-jwt".to_owned()),
        ("three empty parts", "..".to_owned()),
        ("garbage base64", "%%%.###.$$$".to_owned()),
        ("10 KB token", "a".repeat(10_000)),
    ];
    for (name, token) in &bad_tokens {
        let reply = app.get("/api/v1/me", token).await;
        let what = format!("GET /api/v1/me with {name}");
        assert_sane(&reply, &what, &[token]);
        assert_want(&reply, INVALID_TOKEN, &what);
        // Every other endpoint that needs a token refuses it the same way.
        for endpoint in ENDPOINTS.iter().filter(|e| e.auth) {
            let path = fill(endpoint.path, &room, &bob.id, SEQ);
            let reply = app
                .send(request(
                    &endpoint.method(),
                    &path,
                    Some(token),
                    &valid_body(endpoint),
                ))
                .await;
            let what = format!("{} {path} with {name}", endpoint.method);
            assert_sane(&reply, &what, &[token]);
            assert_want(&reply, INVALID_TOKEN, &what);
        }
    }

    // A good signature for a user that does not exist (say, the database was reset but not
    // the keys): /me refuses it, and no endpoint answers a 5xx.
    let ghost = sign(&claims(
        PUBLIC_URL,
        &uuid::Uuid::new_v4().to_string(),
        now + 600,
    ));
    let reply = app.get("/api/v1/me", &ghost).await;
    assert_sane(&reply, "GET /api/v1/me as a ghost", &[&ghost]);
    assert_want(&reply, INVALID_TOKEN, "GET /api/v1/me as a ghost");
    for endpoint in ENDPOINTS.iter().filter(|e| e.auth) {
        let path = fill(endpoint.path, &room, &bob.id, SEQ);
        let reply = app
            .send(request(
                &endpoint.method(),
                &path,
                Some(&ghost),
                &valid_body(endpoint),
            ))
            .await;
        let what = format!("{} {path} as a ghost", endpoint.method);
        assert_sane(&reply, &what, &[&ghost]);
    }

    // Malformed `Authorization` headers: no bearer token at all.
    for authorization in [
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pw")
        ),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer      ".to_owned(),
        String::new(),
        format!("Token {}", alice.access),
        format!("Bearer{}", alice.access),
    ] {
        let reply = app
            .send(with_authorization(
                &Method::GET,
                "/api/v1/me",
                &authorization,
            ))
            .await;
        let what = format!("GET /api/v1/me with Authorization: {authorization:?}");
        assert_sane(&reply, &what, &[&alice.access]);
        assert_want(&reply, MISSING_TOKEN, &what);
    }
    // The scheme is case-insensitive; the real token still works after all that.
    let reply = app
        .send(with_authorization(
            &Method::GET,
            "/api/v1/me",
            &format!("bearer {}", alice.access),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
