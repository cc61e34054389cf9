//! Reaching a room over moq-lite: credentials to a media token through the HTTP API, the QUIC
//! endpoint and its certificate hash from the server, then a raw QUIC session (ALPN
//! `moq-lite-06`) whose SETUP path carries the room and the token.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use veza_moq::message::Setup;
use veza_moq::session::{Options, Session};

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
    let hash = get_json(
        &http,
        &format!("{server}/api/v1/quic/certificate-hash"),
        None,
    )
    .await?;
    let sha256 = hash["value"]
        .as_str()
        .and_then(parse_hex)
        .ok_or_else(|| NetError::Api("the server sent no QUIC certificate hash".into()))?;
    let (token, url) = match &target.credentials {
        Credentials::Token(token) => {
            let base = hash["url"]
                .as_str()
                .ok_or_else(|| NetError::Api("the server has no QUIC URL".into()))?;
            (token.clone(), format!("{base}/room/{}", target.room))
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
            (token, url)
        }
    };
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

/// Connects to `url` (`https://host:port/room/{id}`) with `query` (`jwt={token}`, …) in the
/// SETUP path, pinning the certificate by its SHA-256.
pub async fn dial(url: &str, query: &str, sha256: [u8; 32]) -> Result<Session, NetError> {
    let failed = |reason: String| NetError::Quic {
        url: url.to_owned(),
        reason,
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| failed("the URL must start with https://".into()))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: SocketAddr = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| failed(format!("cannot resolve {authority}: {e}")))?
        .next()
        .ok_or_else(|| failed(format!("{authority} has no address")))?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_matches(['[', ']']);
    let config = pinned_client_config(sha256, &[veza_moq::ALPN.as_bytes()]);
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().expect("valid address")
    } else {
        "0.0.0.0:0".parse().expect("valid address")
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| failed(e.to_string()))?;
    let connection = endpoint
        .connect_with(config, addr, host)
        .map_err(|e| failed(e.to_string()))?
        .await
        .map_err(|e| failed(e.to_string()))?;
    let transport = web_transport_quinn::Session::raw(connection);
    Ok(Session::start(
        transport,
        Options {
            setup: Setup::with_path(&format!("/{path}?{query}")),
            ..Options::default()
        },
    ))
}

/// A QUIC client configuration that accepts only the certificate with this SHA-256, offering
/// `alpns`, with keep-alives every 2 s and a 10 s idle timeout (a server that went away is
/// noticed within 10 s).
pub fn pinned_client_config(sha256: [u8; 32], alpns: &[&[u8]]) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate { sha256, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = alpns.iter().map(|alpn| alpn.to_vec()).collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .expect("a TLS 1.3 configuration with an initial cipher suite");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(std::time::Duration::from_secs(2)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(std::time::Duration::from_secs(10))
                .expect("10 s is a valid idle timeout"),
        ))
        .max_concurrent_uni_streams(1024u32.into());
    config.transport_config(Arc::new(transport));
    config
}

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

/// 64 hex digits as 32 bytes (a certificate hash from the API).
pub fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Accepts exactly the certificate whose SHA-256 the server published (as WebTransport's
/// `serverCertificateHashes` does), checking the handshake signature with it.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity);
        if digest.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one its API published".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used by QUIC".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    #[test]
    fn certificate_hashes_parse_from_hex() {
        let hex = "00ff".repeat(16);
        let parsed = parse_hex(&hex).unwrap();
        assert_eq!(parsed[0], 0);
        assert_eq!(parsed[1], 0xff);
        assert!(parse_hex("abc").is_none());
        assert!(parse_hex(&"zz".repeat(32)).is_none());
    }
}
