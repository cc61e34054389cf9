//! moq-lite sessions over a QUIC connection or a WebTransport session: the async layer over
//! the sans-IO [codec](crate::message), shared by the server (which serves a room's
//! publishers and ingests a client's broadcast) and the command-line client (which does the
//! reverse).
//!
//! A [`Session`] runs one task that accepts the peer's streams and datagrams and hands each
//! to its handler task. Both roles are always on, as moq-lite wants:
//!
//! * [`Publisher`]: broadcasts we offer. Each holds a `catalog.json` track (hang format) and
//!   one Opus track; the peer discovers them through Announce streams, learns track properties
//!   through Track streams, and subscribes through Subscribe streams. Every group holds one
//!   Opus packet and goes on its own unidirectional stream (or in one datagram when the
//!   session was opened with [`Options::datagrams`]). Groups older than the subscriber's max
//!   latency are dropped before they are written; newer groups go first.
//! * [`Subscriber`]: broadcasts the peer offers ([`Subscriber::announced`]) and their audio
//!   ([`Subscriber::subscribe_audio`]).
//!
//! A protocol violation on any stream closes the session with
//! [`code::session::PROTOCOL_VIOLATION`](crate::code::session::PROTOCOL_VIOLATION) and a reason; an unknown stream type only resets that stream.

mod dial;
mod io;
mod publisher;
mod subscriber;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use web_transport_quinn::{RecvStream, SendStream};

use crate::code;
use crate::coding::{Decode, DecodeError, Encode, encode_varint};
use crate::message::{Datagram, Setup, StreamType, UniStreamType};

pub use dial::{
    DIAL_IDLE_TIMEOUT, DIAL_KEEP_ALIVE, DialError, dial, dial_with, parse_hex, pinned_client_config,
};
pub use publisher::{AudioInfo, BroadcastWriter, Publisher};
pub use subscriber::{Announcement, Announcements, AudioFrame, AudioTrack, Subscriber};

use io::Reader;

/// Why a stream handler stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The peer broke the protocol; the session is closed with this reason.
    Protocol(String),
    /// The stream or session went away (reset, closed, connection lost).
    Stream(String),
    /// The peer refused the request (reset the stream), with its code.
    Refused(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Protocol(reason) => write!(f, "protocol violation: {reason}"),
            Failure::Stream(reason) => write!(f, "stream closed: {reason}"),
            Failure::Refused(reason) => write!(f, "refused: {reason}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Counters a session reports to (the server's Prometheus metrics). Every method has a no-op
/// default.
pub trait Metrics: Send + Sync + fmt::Debug {
    /// A group went out on its own stream.
    fn group_sent(&self) {}
    /// A group went out as a datagram.
    fn datagram_sent(&self) {}
    /// A group was dropped or reset as older than the subscriber's max latency.
    fn group_stale(&self) {}
}

/// Metrics that count nothing.
#[derive(Debug, Default)]
pub struct NoMetrics;
impl Metrics for NoMetrics {}

/// How a session starts.
#[derive(Debug)]
pub struct Options {
    /// Our SETUP message (a raw-QUIC client puts its request path here).
    pub setup: Setup,
    /// The peer's SETUP when the caller has already read it (a raw-QUIC server needs its path
    /// before it can authorize); otherwise the session reads it.
    pub peer_setup: Option<Setup>,
    /// Send our audio groups to this peer as datagrams instead of streams.
    pub datagrams: bool,
    /// Where counters go.
    pub metrics: Arc<dyn Metrics>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            setup: Setup::default(),
            peer_setup: None,
            datagrams: false,
            metrics: Arc::new(NoMetrics),
        }
    }
}

/// One moq-lite session. Cheap to clone; the session ends when the transport closes.
#[derive(Debug, Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    transport: web_transport_quinn::Session,
    options: Options,
    /// Our Hop ID, random and non-zero, sent in ANNOUNCE_OK.
    hop_id: u64,
    publisher: publisher::State,
    /// Where incoming groups of our subscriptions go, by Subscribe ID.
    routes: Mutex<HashMap<u64, subscriber::Route>>,
    next_subscribe_id: AtomicU64,
    /// The peer's SETUP arrived (or was read by the caller).
    setup_seen: AtomicBool,
}

impl Session {
    /// Starts a session over `transport` (a WebTransport session, or a raw QUIC connection
    /// wrapped with `web_transport_quinn::Session::raw`): sends our SETUP and starts the task
    /// that serves the peer's streams.
    pub fn start(transport: web_transport_quinn::Session, options: Options) -> Session {
        // Varints hold 62 bits; 0 means "unknown".
        let hop_id = (random_u64() >> 2) | 1;
        let setup_seen = AtomicBool::new(options.peer_setup.is_some());
        let session = Session {
            shared: Arc::new(Shared {
                transport,
                options,
                hop_id,
                publisher: publisher::State::default(),
                routes: Mutex::new(HashMap::new()),
                next_subscribe_id: AtomicU64::new(0),
                setup_seen,
            }),
        };
        tokio::spawn(session.clone().run());
        session
    }

    /// Our side of the broadcasts.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.clone())
    }

    /// The peer's broadcasts.
    pub fn subscriber(&self) -> Subscriber {
        Subscriber::new(self.clone())
    }

    /// The transport, for stats (RTT) and closing.
    pub fn transport(&self) -> &web_transport_quinn::Session {
        &self.shared.transport
    }

    /// Closes the session with an application error code and a reason.
    pub fn close(&self, code: u32, reason: &str) {
        self.shared.transport.close(code, reason.as_bytes());
    }

    /// Resolves when the session is closed, by either side; returns the code and reason.
    pub async fn closed(&self) -> String {
        self.shared.transport.closed().await.to_string()
    }

    /// Like [`Session::closed`], with the peer's application close code (a
    /// [`code::session`] value) when the peer closed the session with one; `None` for a
    /// timeout, a reset, or a local close.
    pub async fn closed_with_code(&self) -> (Option<u32>, String) {
        use web_transport_quinn::{SessionError, WebTransportError, quinn::ConnectionError};
        let error = self.shared.transport.closed().await;
        let code = match &error {
            SessionError::WebTransportError(WebTransportError::Closed(code, _)) => Some(*code),
            SessionError::ConnectionError(ConnectionError::ApplicationClosed(close)) => {
                u32::try_from(close.error_code.into_inner()).ok()
            }
            _ => None,
        };
        (code, error.to_string())
    }

    /// Closes the session as a protocol violation.
    fn violation(&self, reason: &str) {
        tracing::debug!(reason, "moq-lite protocol violation; closing the session");
        self.close(code::session::PROTOCOL_VIOLATION, reason);
    }

    /// Acts on a handler's failure: protocol violations close the session.
    fn failed(&self, failure: Failure) {
        match failure {
            Failure::Protocol(reason) => self.violation(&reason),
            other => tracing::trace!(%other, "moq-lite stream ended"),
        }
    }

    async fn run(self) {
        let transport = self.shared.transport.clone();
        if let Err(err) = self.send_setup().await {
            tracing::debug!(%err, "sending SETUP failed");
            return;
        }
        loop {
            tokio::select! {
                bi = transport.accept_bi() => match bi {
                    Ok((send, recv)) => {
                        let session = self.clone();
                        tokio::spawn(async move {
                            if let Err(failure) = session.serve_bi(send, recv).await {
                                session.failed(failure);
                            }
                        });
                    }
                    Err(_) => break,
                },
                uni = transport.accept_uni() => match uni {
                    Ok(recv) => {
                        let session = self.clone();
                        tokio::spawn(async move {
                            if let Err(failure) = session.serve_uni(recv).await {
                                session.failed(failure);
                            }
                        });
                    }
                    Err(_) => break,
                },
                datagram = transport.read_datagram() => match datagram {
                    Ok(bytes) => self.receive_datagram(&bytes),
                    Err(_) => break,
                },
            }
        }
        self.shared.publisher.end_all();
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    async fn send_setup(&self) -> Result<(), Failure> {
        let mut stream = self.open_uni().await?;
        let mut buf = Vec::with_capacity(64);
        encode_varint(UniStreamType::Setup as u64, &mut buf);
        self.shared.options.setup.encode(&mut buf);
        write_all(&mut stream, &buf).await?;
        let _ = stream.finish();
        Ok(())
    }

    async fn serve_uni(&self, recv: RecvStream) -> Result<(), Failure> {
        let mut reader = Reader::new(recv);
        let kind = reader
            .next(|buf| match UniStreamType::decode(buf) {
                Ok(kind) => Ok(Some(kind)),
                Err(DecodeError::UnknownType(_)) => Ok(None),
                Err(err) => Err(err),
            })
            .await?;
        match kind {
            Some(Some(UniStreamType::Setup)) => {
                if self.shared.setup_seen.swap(true, Ordering::SeqCst) {
                    return Err(Failure::Protocol("a second SETUP stream".into()));
                }
                match reader.next(Setup::decode).await? {
                    Some(_) => Ok(()),
                    None => Err(Failure::Protocol("an empty SETUP stream".into())),
                }
            }
            Some(Some(UniStreamType::Group)) => self.receive_group(reader).await,
            // Unknown stream types are refused, not fatal.
            Some(None) => {
                reader.stop(code::stream::NOT_FOUND);
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn serve_bi(&self, mut send: SendStream, recv: RecvStream) -> Result<(), Failure> {
        let mut reader = Reader::new(recv);
        let kind = reader
            .next(|buf| match StreamType::decode(buf) {
                Ok(kind) => Ok(Some(kind)),
                Err(DecodeError::UnknownType(_)) => Ok(None),
                Err(err) => Err(err),
            })
            .await?;
        match kind {
            Some(Some(StreamType::Announce)) => self.serve_announce(send, reader).await,
            Some(Some(StreamType::Track)) => self.serve_track(send, reader).await,
            Some(Some(StreamType::Subscribe)) => self.serve_subscribe(send, reader).await,
            Some(Some(StreamType::Goaway)) => {
                // The peer is leaving; it closes the session when it is done.
                reader.closed().await;
                Ok(())
            }
            // Fetch (we keep no past groups), Probe (we advertise none) and unknown types are
            // refused by a reset, which the draft makes non-fatal.
            Some(_) => {
                let _ = send.reset(code::stream::NOT_FOUND);
                reader.stop(code::stream::NOT_FOUND);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn receive_datagram(&self, bytes: &[u8]) {
        let Ok(datagram) = Datagram::decode(bytes) else {
            // Malformed or oversized datagrams are dropped, as the draft says.
            return;
        };
        let route = self
            .shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&datagram.subscribe_id)
            .cloned();
        if let Some(route) = route {
            route.deliver(datagram.group, datagram.timestamp, datagram.payload);
        }
    }

    async fn open_uni(&self) -> Result<SendStream, Failure> {
        self.shared
            .transport
            .open_uni()
            .await
            .map_err(|e| Failure::Stream(e.to_string()))
    }

    async fn open_bi(&self) -> Result<(SendStream, RecvStream), Failure> {
        self.shared
            .transport
            .open_bi()
            .await
            .map_err(|e| Failure::Stream(e.to_string()))
    }

    fn metrics(&self) -> &dyn Metrics {
        self.shared.options.metrics.as_ref()
    }
}

/// Writes all of `buf` to `stream`.
async fn write_all(stream: &mut SendStream, buf: &[u8]) -> Result<(), Failure> {
    stream
        .write_all(buf)
        .await
        .map_err(|e| Failure::Stream(e.to_string()))
}

/// Encodes a message into a fresh buffer.
fn encoded(message: &impl Encode) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32);
    message.encode(&mut buf);
    buf
}

/// A random 64-bit value from the standard library's per-process random hasher keys and the
/// clock (ids, epochs: unpredictability is not needed, uniqueness is).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
