//! QUIC transport: moq-lite sessions on one quinn endpoint, over raw QUIC (ALPN
//! `moq-lite-06`) and over WebTransport (ALPN `h3`, for browsers).
//!
//! A session is authorized by its media token before anything else happens. A raw QUIC
//! client names the room and the token in its SETUP's Path parameter
//! (`/room/{room_id}?jwt=…`); a WebTransport client puts the same path and query in its
//! CONNECT URL. The session then joins the room in the media shard as an attached
//! participant ([`MediaServer::attach`]): every other publisher of the room becomes a broadcast
//! the client can subscribe to, and a broadcast the client announces becomes its published
//! track (see [`bridge`] for how packets cross between RTP and moq-lite).

mod bridge;
pub mod cert;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use veza_moq::code::session as codes;
use veza_moq::message::{Setup, UniStreamType};
use veza_proto::{ParticipantId, RoomId, UserId};

use crate::TokenVerifier;
use crate::relay::CascadeKey;
use crate::webrtc::MediaServer;

use bridge::Who;
pub(crate) use bridge::receive_audio;

pub use cert::{CertStore, Certificate};

/// Where the QUIC endpoint listens and with which certificate.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// UDP address (`VEZA_QUIC_ADDR`, default `0.0.0.0:4443`).
    pub addr: SocketAddr,
    /// The certificate, resolved per handshake.
    pub certificate: CertStore,
    /// A silent connection is closed after this long (clients ping more often).
    pub idle_timeout: Duration,
    /// The cluster secret: other media nodes may pull rooms with tokens it signed.
    pub cascade: Option<CascadeKey>,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Binding the UDP socket failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A running QUIC endpoint.
#[derive(Debug, Clone)]
pub struct QuicServer {
    endpoint: quinn::Endpoint,
    certificate: CertStore,
    context: Context,
}

/// Each open session's room and user (none for another node's pull), with a number telling a
/// session from the one that took it over.
type Sessions = Arc<Mutex<HashMap<ParticipantId, (RoomId, Option<UserId>, u64)>>>;

/// What every session needs.
#[derive(Clone)]
struct Context {
    media: MediaServer,
    verifier: Arc<dyn TokenVerifier>,
    /// Checks the tokens of other nodes pulling a room; `None` refuses them all.
    cascade: Option<CascadeKey>,
    /// Who each open session is, for removals by user (REST bans).
    sessions: Sessions,
    /// Set by [`QuicServer::drain`].
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// Sessions the drain removed: they close with `GOING_AWAY`; any other removal (a kick or
    /// a ban, even during a drain) closes as unauthorized, so the client does not rejoin.
    sent_away: Arc<Mutex<std::collections::HashSet<ParticipantId>>>,
}

/// The ALPNs we accept: raw moq-lite, and HTTP/3 for WebTransport.
fn alpns() -> Vec<Vec<u8>> {
    vec![
        veza_moq::ALPN.as_bytes().to_vec(),
        web_transport_quinn::ALPN.as_bytes().to_vec(),
    ]
}

impl QuicServer {
    /// Binds the endpoint and starts accepting sessions on the current runtime.
    pub fn start(
        config: QuicConfig,
        media: MediaServer,
        verifier: Arc<dyn TokenVerifier>,
    ) -> Result<Self, QuicError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| QuicError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(config.certificate.clone()));
        tls.alpn_protocols = alpns();
        tls.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(config.idle_timeout.try_into().ok())
            // One stream per audio group: 50 per second per subscribed track.
            .max_concurrent_uni_streams(1024u32.into())
            .max_concurrent_bidi_streams(64u32.into())
            .datagram_receive_buffer_size(Some(256 * 1024))
            // Bounds what a congested session can have buffered (about 2 s of 100 listeners'
            // worth of audio at 96 kb/s... per connection: 2.6 s of ten 96 kb/s tracks).
            .send_window(320 * 1024);
        server.transport_config(Arc::new(transport));
        let endpoint =
            quinn::Endpoint::server(server, config.addr).map_err(|source| QuicError::Bind {
                addr: config.addr,
                source,
            })?;
        let local = endpoint.local_addr().map_err(|source| QuicError::Bind {
            addr: config.addr,
            source,
        })?;
        tracing::info!(
            addr = %local,
            sha256 = %config.certificate.sha256_hex(),
            "QUIC (moq-lite, WebTransport) listening"
        );
        let context = Context {
            media,
            verifier,
            cascade: config.cascade,
            sessions: Arc::default(),
            draining: Arc::default(),
            sent_away: Arc::default(),
        };
        tokio::spawn(accept_loop(endpoint.clone(), context.clone()));
        Ok(Self {
            endpoint,
            certificate: config.certificate,
            context,
        })
    }

    /// The media shard the sessions join.
    pub fn media(&self) -> &MediaServer {
        &self.context.media
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The certificate in use (its hash is served by the API).
    pub fn certificate(&self) -> &CertStore {
        &self.certificate
    }

    /// The current leaf certificate, DER encoded.
    pub fn certificate_der(&self) -> CertificateDer<'static> {
        self.certificate.current().der().clone()
    }

    /// Removes every QUIC session of `user` in `room` from the media path now (a ban); the
    /// sessions are closed.
    pub fn remove_user(&self, room: RoomId, user: UserId) {
        let participants: Vec<ParticipantId> = self
            .context
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (r, u, _))| (*r, *u) == (room, Some(user)))
            .map(|(participant, _)| *participant)
            .collect();
        let media = self.context.media.for_room(room);
        for participant in participants {
            media.leave(participant);
        }
    }

    /// Drains this node: every client session is closed with
    /// [`GOING_AWAY`](veza_moq::code::session::GOING_AWAY) (join again through the API) and new
    /// client sessions are refused the same way. Other nodes' cascade pulls stay until the
    /// endpoint closes, so listeners elsewhere keep hearing the publishers still here.
    pub fn drain(&self) {
        self.context
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let clients: Vec<ParticipantId> = self
            .context
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (_, user, _))| user.is_some())
            .map(|(participant, _)| *participant)
            .collect();
        self.context
            .sent_away
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(clients.iter().copied());
        for participant in clients {
            self.context.media.leave(participant);
        }
    }

    /// Closes every session and stops accepting.
    pub fn close(&self) {
        self.endpoint
            .close(codes::NO_ERROR.into(), b"server shutting down");
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, context: Context) {
    while let Some(incoming) = endpoint.accept().await {
        let context = context.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            if let Err(reason) = accept(incoming, context).await {
                tracing::debug!(%remote, reason, "QUIC session refused");
            }
        });
    }
}

/// How long a client may take from the first packet to a usable, authorized session.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Performs the handshake, authorizes the session and runs it.
async fn accept(incoming: quinn::Incoming, context: Context) -> Result<(), String> {
    let connecting = incoming.accept().map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .unwrap_or_default();
    let (transport, request, peer_setup) = if alpn == web_transport_quinn::ALPN.as_bytes() {
        let request = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            web_transport_quinn::Request::accept(conn),
        )
        .await
        .map_err(|_| "WebTransport CONNECT timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        let target = Target::parse(request.url.path(), request.url.query());
        let who = match target.and_then(|t| t.authorize(&context)) {
            Ok(who) => who,
            Err(refusal) => {
                let _ = request.reject(refusal.status()).await;
                return Err(refusal.reason);
            }
        };
        // Browsers that offer protocols get ours; others are assumed to speak it.
        let mut response = web_transport_quinn::proto::ConnectResponse::OK;
        if request.protocols.iter().any(|p| p == veza_moq::ALPN) {
            response = response.with_protocol(veza_moq::ALPN);
        }
        let datagrams = Target::parse(request.url.path(), request.url.query())
            .map(|t| t.datagrams)
            .unwrap_or(false);
        let session = request.respond(response).await.map_err(|e| e.to_string())?;
        (session, (who, datagrams), None)
    } else {
        // Raw QUIC: the path (and so the token) comes in the client's SETUP.
        let session = web_transport_quinn::Session::raw(conn);
        let setup = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_setup(&session))
            .await
            .map_err(|_| {
                session.close(codes::PROTOCOL_VIOLATION, b"no SETUP within 10 s");
                "no SETUP".to_owned()
            })?;
        let setup = match setup {
            Ok(setup) => setup,
            Err(reason) => {
                session.close(codes::PROTOCOL_VIOLATION, reason.as_bytes());
                return Err(reason);
            }
        };
        let path = setup.path().unwrap_or_default().to_owned();
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (path, None),
        };
        let target = Target::parse(&path, query.as_deref());
        let datagrams = target.as_ref().map(|t| t.datagrams).unwrap_or(false);
        let who = match target.and_then(|t| t.authorize(&context)) {
            Ok(who) => who,
            Err(refusal) => {
                session.close(refusal.code, refusal.reason.as_bytes());
                return Err(refusal.reason);
            }
        };
        (session, (who, datagrams), Some(setup))
    };
    let (who, datagrams) = request;
    bridge::run(transport, who, datagrams, peer_setup, context).await;
    Ok(())
}

/// Reads the client's SETUP stream (raw QUIC sessions, before authorization).
async fn read_setup(session: &web_transport_quinn::Session) -> Result<Setup, String> {
    use veza_moq::Decode;
    let mut recv = session.accept_uni().await.map_err(|e| e.to_string())?;
    // SETUP is small; the stream ends right after it.
    let bytes = recv
        .read_to_end(veza_moq::MAX_MESSAGE_SIZE)
        .await
        .map_err(|e| format!("reading SETUP: {e}"))?;
    let mut buf = &bytes[..];
    match UniStreamType::decode(&mut buf) {
        Ok(UniStreamType::Setup) => {}
        _ => return Err("the first stream must be the SETUP stream".into()),
    }
    let setup = Setup::decode(&mut buf).map_err(|e| format!("invalid SETUP: {e}"))?;
    if !buf.is_empty() {
        return Err("bytes after SETUP on the SETUP stream".into());
    }
    Ok(setup)
}

/// The room and credential a client asked for.
#[derive(Debug)]
struct Target {
    room: RoomId,
    credential: Credential,
    /// The client wants audio groups as datagrams.
    datagrams: bool,
}

/// A client's media token, or another node's cascade token.
#[derive(Debug)]
enum Credential {
    Media(String),
    Cascade(String),
}

/// Why a session is refused before it starts.
#[derive(Debug)]
struct Refusal {
    code: u32,
    reason: String,
}

impl Refusal {
    fn status(&self) -> http_status::StatusCode {
        match self.code {
            codes::UNAUTHORIZED => http_status::StatusCode::UNAUTHORIZED,
            _ => http_status::StatusCode::NOT_FOUND,
        }
    }
}

/// The `http` crate, as web-transport-quinn names it.
mod http_status {
    pub use web_transport_quinn::http::StatusCode;
}

impl Target {
    /// `/room/{room_id}` with `jwt=` (or `token=`, or a node's `cascade=`) and optional
    /// `datagrams=1` in the query.
    fn parse(path: &str, query: Option<&str>) -> Result<Target, Refusal> {
        let room = path
            .strip_prefix("/room/")
            .and_then(|id| id.trim_end_matches('/').parse::<RoomId>().ok())
            .ok_or_else(|| Refusal {
                code: codes::PROTOCOL_VIOLATION,
                reason: format!("unknown path {path:?}: use /room/{{room_id}}?jwt={{media token}}"),
            })?;
        let mut credential = None;
        let mut datagrams = false;
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("jwt" | "token", value)) => {
                    credential = Some(Credential::Media(value.to_owned()));
                }
                Some(("cascade", value)) => {
                    credential = Some(Credential::Cascade(value.to_owned()));
                }
                Some(("datagrams", value)) => datagrams = value == "1" || value == "true",
                _ => {}
            }
        }
        let credential = credential.ok_or_else(|| Refusal {
            code: codes::UNAUTHORIZED,
            reason: "missing media token: add ?jwt={media token}".into(),
        })?;
        Ok(Target {
            room,
            credential,
            datagrams,
        })
    }

    fn authorize(self, context: &Context) -> Result<Who, Refusal> {
        let token = match self.credential {
            Credential::Media(token) => token,
            Credential::Cascade(token) => {
                let refused = |reason: String| Refusal {
                    code: codes::UNAUTHORIZED,
                    reason,
                };
                let key = context
                    .cascade
                    .as_ref()
                    .ok_or_else(|| refused("this node takes no cascade sessions".into()))?;
                let node = key
                    .verify(&token, self.room)
                    .map_err(|e| refused(e.to_string()))?;
                tracing::debug!(%node, room = %self.room, "cascade pull authorized");
                return Ok(Who::cascade(self.room));
            }
        };
        let claims = context
            .verifier
            .verify_media(&token)
            .map_err(|reason| Refusal {
                code: codes::UNAUTHORIZED,
                reason: format!("invalid media token: {reason}"),
            })?;
        if claims.room != self.room {
            return Err(Refusal {
                code: codes::UNAUTHORIZED,
                reason: "the media token is for another room".into(),
            });
        }
        Ok(Who::client(&claims))
    }
}
