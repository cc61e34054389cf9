//! Reaching a room over moq-lite: credentials to a media token through the HTTP API, the QUIC
//! endpoint and its certificate hash from the server, then a raw QUIC session (ALPN
//! `moq-lite-06`) whose SETUP path carries the room and the token.

use serde_json::Value;
use veza_moq::session::Session;

/// How the client proves who it is.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A media token for the room (from `POST /api/v1/rooms/{id}/join`).
    Token(String),
    /// An account: the client signs in and joins the room itself.
    Password {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's HTTP base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// The room id.
    pub room: String,
    /// Token or account.
    pub credentials: Credentials,
}

/// Why the client could not connect or lost the server.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The HTTP API refused or failed.
    #[error("{0}")]
    Api(String),
    /// The QUIC connection failed.
    #[error("QUIC connection to {url} failed: {reason}")]
    Quic {
        /// The QUIC URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// An open session, with what the server said about it.
#[derive(Debug)]
pub struct Connection {
    /// The moq-lite session.
    pub session: Session,
    /// The QUIC URL it went to.
    pub url: String,
    /// The media token in use.
    pub token: String,
}

/// How to connect, beyond where.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// Ask the server to send audio groups as QUIC datagrams (unreliable, never retransmitted)
    /// instead of one stream each.
    pub datagrams: bool,
}

/// Signs in if needed, finds the QUIC endpoint and connects.
pub async fn connect(target: &Target) -> Result<Connection, NetError> {
    connect_with(target, ConnectOptions::default()).await
}

/// [`connect`] with options.
pub async fn connect_with(
    target: &Target,
    options: ConnectOptions,
) -> Result<Connection, NetError> {
    let server = target.server.trim_end_matches('/');
    let http = reqwest::Client::new();
    let (token, url, sha256) = match &target.credentials {
        Credentials::Token(token) => {
            // A token names no node: this server's own QUIC endpoint.
            let hash = get_json(
                &http,
                &format!("{server}/api/v1/quic/certificate-hash"),
                None,
            )
            .await?;
            let base = hash["url"]
                .as_str()
                .ok_or_else(|| NetError::Api("the server has no QUIC URL".into()))?;
            let url = format!("{base}/room/{}", target.room);
            (
                token.clone(),
                url,
                hash["value"].as_str().and_then(parse_hex),
            )
        }
        Credentials::Password { username, password } => {
            let login = post_json(
                &http,
                &format!("{server}/api/v1/auth/login"),
                None,
                &serde_json::json!({ "username": username, "password": password }),
            )
            .await?;
            let access = login["access_token"]
                .as_str()
                .ok_or_else(|| NetError::Api("login answered without an access token".into()))?;
            // In a cluster the join answer names the media node and its certificate.
            let join = post_json(
                &http,
                &format!("{server}/api/v1/rooms/{}/join", target.room),
                Some(access),
                &serde_json::json!({}),
            )
            .await?;
            let token = join["token"].as_str().unwrap_or_default().to_owned();
            let url = join["urls"]["quic"]
                .as_str()
                .ok_or_else(|| NetError::Api("the join answer has no QUIC URL".into()))?
                .to_owned();
            (
                token,
                url,
                join["urls"]["quic_sha256"].as_str().and_then(parse_hex),
            )
        }
    };
    let sha256 =
        sha256.ok_or_else(|| NetError::Api("the server sent no QUIC certificate hash".into()))?;
    let query = if options.datagrams {
        format!("jwt={token}&datagrams=1")
    } else {
        format!("jwt={token}")
    };
    let session = dial(&url, &query, sha256).await?;
    Ok(Connection {
        session,
        url,
        token,
    })
}

/// With an account the client joins through the API, which may pick another node; a bare
/// media token can only go back to where it came from.
pub fn can_join_again(target: &Target) -> bool {
    matches!(target.credentials, Credentials::Password { .. })
}

/// Whether a session that ended with the peer's close `code` is worth joining again for: a
/// node that vanished (no code), drains (`GOING_AWAY`) or shuts down (`NO_ERROR`) is; a kick
/// or a refused token is not.
pub fn worth_joining_again(code: Option<u32>) -> bool {
    use veza_moq::code::session::{GOING_AWAY, NO_ERROR};
    code.is_none_or(|c| c == GOING_AWAY || c == NO_ERROR)
}

/// Connects to `url` (`https://host:port/room/{id}`) with `query` (`jwt={token}`, …) in the
/// SETUP path, pinning the certificate by its SHA-256.
pub async fn dial(url: &str, query: &str, sha256: [u8; 32]) -> Result<Session, NetError> {
    veza_moq::session::dial(url, query, sha256)
        .await
        .map_err(|e| NetError::Quic {
            url: e.url,
            reason: e.reason,
        })
}

pub use veza_moq::session::{parse_hex, pinned_client_config};

/// Who is in the room now: `(participants, publishers)`, from `GET /api/v1/rooms/{id}/live`.
pub async fn room_live(target: &Target, token: &str) -> Result<(u64, u64), NetError> {
    let server = target.server.trim_end_matches('/');
    let url = format!("{server}/api/v1/rooms/{}/live", target.room);
    let live = get_json(&reqwest::Client::new(), &url, Some(token)).await?;
    Ok((
        live["participants"].as_u64().unwrap_or(0),
        live["publishers"].as_u64().unwrap_or(0),
    ))
}

async fn get_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<Value, NetError> {
    let mut request = http.get(url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    answer(url, request.send().await).await
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &Value,
) -> Result<Value, NetError> {
    let mut request = http.post(url).json(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    answer(url, request.send().await).await
}

/// The JSON of a successful answer, or the API's error message.
async fn answer(
    url: &str,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<Value, NetError> {
    let response = response.map_err(|e| NetError::Api(format!("cannot reach {url}: {e}")))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]["message"]
        .as_str()
        .or(body["message"].as_str())
        .unwrap_or("no details");
    Err(NetError::Api(format!("{url} answered {status}: {message}")))
}
