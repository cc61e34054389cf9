//! Test harness: the real router over a real database (a fresh PostgreSQL database or SQLite
//! file per test), driven in-process with `oneshot`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use veza_api::{ApiConfig, AppState, ChatConfig, ChatService, KeyRing};
use veza_cluster::RateLimiter;
use veza_store::testing::TestDb;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Db {
    Postgres,
    Sqlite,
}

/// Runs each async scenario `fn name(Db)` once on PostgreSQL and once on SQLite.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name($crate::common::Db::Postgres).await; })*
        }
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name($crate::common::Db::Sqlite).await; })*
        }
    };
}

/// A folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("veza-api-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const PUBLIC_URL: &str = "http://veza.test";

/// A running API on a fresh database.
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub dir: TempDir,
    _db: TestDb,
}

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The JSON error code, if this is an error reply.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A registered user with live tokens.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub username: String,
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    /// Generous rate limits, so only the rate-limit tests meet them.
    pub async fn new(db: Db) -> Self {
        Self::with(db, |_| {}).await
    }

    pub async fn with(db: Db, configure: impl FnOnce(&mut ApiConfig)) -> Self {
        Self::with_limiter(db, RateLimiter::memory(), configure).await
    }

    pub async fn with_limiter(
        db: Db,
        limiter: RateLimiter,
        configure: impl FnOnce(&mut ApiConfig),
    ) -> Self {
        Self::build(db, limiter, ChatConfig::default(), configure).await
    }

    /// With these chat settings (the default is 5 messages a second, bursts of 10, no filter).
    pub async fn with_chat(db: Db, chat: ChatConfig) -> Self {
        Self::build(db, RateLimiter::memory(), chat, |_| {}).await
    }

    async fn build(
        db: Db,
        limiter: RateLimiter,
        chat: ChatConfig,
        configure: impl FnOnce(&mut ApiConfig),
    ) -> Self {
        let test_db = match db {
            Db::Postgres => TestDb::postgres()
                .await
                .expect("PostgreSQL at 127.0.0.1:5432"),
            Db::Sqlite => TestDb::sqlite(),
        };
        let store = test_db.store().await.expect("migrate");
        let dir = TempDir::new();
        let keys = KeyRing::load_or_create(&dir.0.join("jwt-keys.json"), PUBLIC_URL).expect("keys");
        let mut config = ApiConfig::new(PUBLIC_URL);
        config.rate_limit_per_min = 100_000;
        config.auth_rate_limit_per_min = 100_000;
        configure(&mut config);
        let chat = ChatService::new(store.clone(), chat);
        let state = AppState::new(config, store, keys, limiter, chat);
        Self {
            router: veza_api::router(state.clone()),
            state,
            dir,
            _db: test_db,
        }
    }

    /// Sends a raw request.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends `method path` with an optional bearer token and JSON body, from 127.0.0.1.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_from(method, path, token, body, "127.0.0.1:40000")
            .await
    }

    /// Like [`call`](Self::call), from a given client address.
    pub async fn call_from(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        from: &str,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = builder.body(body).expect("request");
        let addr: SocketAddr = from.parse().expect("address");
        request.extensions_mut().insert(ConnectInfo(addr));
        self.send(request).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Registers `username` with a valid password.
    pub async fn register(&self, username: &str) -> Session {
        let reply = self
            .post(
                "/api/v1/auth/register",
                None,
                serde_json::json!({ "username": username, "password": "correct horse battery" }),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "register {username}: {:?}",
            reply.body
        );
        session(&reply.body)
    }

    /// Creates a room owned by `owner`; returns its id.
    pub async fn room(&self, owner: &Session, visibility: &str) -> String {
        let reply = self
            .post(
                "/api/v1/rooms",
                Some(&owner.access),
                serde_json::json!({ "name": "Room", "visibility": visibility }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["id"].as_str().expect("room id").to_owned()
    }
}

/// The tokens of a register/login/refresh reply.
pub fn session(body: &Value) -> Session {
    Session {
        id: body["user"]["id"].as_str().expect("user id").to_owned(),
        username: body["user"]["username"]
            .as_str()
            .expect("username")
            .to_owned(),
        access: body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned(),
        refresh: body["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned(),
    }
}

/// Asserts the reply is a JSON error with `status` and `code`.
#[track_caller]
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "body: {:?}", reply.body);
    assert_eq!(reply.code(), code, "body: {:?}", reply.body);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error has a message: {:?}",
        reply.body
    );
}
