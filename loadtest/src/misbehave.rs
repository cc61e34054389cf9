//! `--misbehave K`: K clients that misbehave beside a normal run, during its measured window.
//!
//! Each sends garbage datagrams at a steady rate to the server's WebRTC media port (random
//! bytes, truncated STUN, STUN for unknown ICE users, fake RTP, RTCP and DTLS) and to its QUIC
//! port (random bytes, fake QUIC Initial packets), from a few sockets of its own; and keeps
//! opening sessions it abandons: signaling WebSockets dropped after `joined`, upgrades cut
//! mid-request, WebSockets sent garbage, upgrades with a forged token, WebRTC (WHEP) sessions
//! that connect and vanish without `DELETE` or DTLS close, and QUIC sessions that connect,
//! send SETUP and vanish without CONNECTION_CLOSE. The well-behaved peers' figures are
//! measured as usual; the report adds what the misbehaving clients sent.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use str0m::config::DtlsCert;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::api::{Api, Ticket};
use crate::live::Live;
use crate::peer::{Context, Role};
use crate::webrtc;
use crate::ws::{self, Endpoint};

/// Garbage datagrams per second per misbehaving client, by default.
pub const DEFAULT_PPS: u32 = 2000;
/// A misbehaving client starts an abandoned session this often.
const CHURN_EVERY: Duration = Duration::from_millis(250);
/// Abandoned sessions of one client in flight at most.
const CHURN_IN_FLIGHT: usize = 8;
/// How long a WebRTC or QUIC session lives before it vanishes.
const VANISH_AFTER: Duration = Duration::from_millis(1500);
/// Sockets each client sends garbage from.
const SOCKETS: usize = 4;

/// What the misbehaving clients need from the run.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The HTTP API.
    pub api: Api,
    /// The signaling endpoint.
    pub endpoint: Arc<Endpoint>,
    /// The misbehaving account's access token (a listener of `room`).
    pub access: String,
    /// The room they disturb.
    pub room: String,
    /// Audio sections their WHEP offers carry (the room's publishers).
    pub sections: usize,
    /// The QUIC endpoint's certificate hash, when the server runs QUIC.
    pub quic_sha256: Option<[u8; 32]>,
    /// The local address towards the server.
    pub local_ip: IpAddr,
    /// The DTLS certificate of the vanishing WebRTC peers.
    pub cert: Option<DtlsCert>,
    /// The tone (unused by subscribers, but part of their context).
    pub packets: Arc<[Vec<u8>]>,
}

/// What the misbehaving clients did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Garbage datagrams sent.
    pub packets_sent: u64,
    /// Abandoned sessions started.
    pub sessions: u64,
    /// Of those, ones that failed before being abandoned (refusals are expected for some).
    pub session_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    packets: AtomicU64,
    sessions: AtomicU64,
    failures: AtomicU64,
}

/// Where the garbage goes.
#[derive(Debug, Clone, Copy)]
struct Targets {
    media: SocketAddr,
    quic: Option<SocketAddr>,
}

/// Runs `clients` misbehaving clients, `pps` garbage datagrams per second each, until `stop`.
pub async fn run(
    clients: usize,
    pps: u32,
    setup: Setup,
    mut stop: watch::Receiver<bool>,
) -> Result<Stats, String> {
    let counters = Arc::new(Counters::default());
    let setup = Arc::new(setup);
    let targets = discover(&setup).await?;
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let seed = 0x9e37_79b9_7f4a_7c15 ^ ((client as u64 + 1) << 32) ^ crate::run::run_id();
        tasks.spawn(garbage(
            targets,
            setup.local_ip,
            pps,
            seed,
            counters.clone(),
            stop.clone(),
        ));
        tasks.spawn(churn(
            setup.clone(),
            targets,
            client,
            seed.rotate_left(17),
            counters.clone(),
            stop.clone(),
        ));
    }
    crate::peer::until(&mut stop, true).await;
    // Tasks stop on their own; abandoned sessions still in flight are cut.
    let grace = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            done = tasks.join_next() => if done.is_none() { break },
            () = &mut grace => { tasks.abort_all(); break; }
        }
    }
    Ok(Stats {
        packets_sent: counters.packets.load(Ordering::Relaxed),
        sessions: counters.sessions.load(Ordering::Relaxed),
        session_failures: counters.failures.load(Ordering::Relaxed),
    })
}

/// The media port from a signaling offer's candidate, the QUIC port from a join's URL.
async fn discover(setup: &Setup) -> Result<Targets, String> {
    let ticket = setup
        .api
        .join(&setup.access, &setup.room)
        .await
        .map_err(|e| e.to_string())?;
    let mut session = setup.endpoint.connect(&ticket.token).await?;
    let offer = ws::until_offer(&mut session).await?;
    drop(session);
    let media = ws::udp_candidate(&offer)
        .ok_or_else(|| "the server's offer has no UDP host candidate".to_owned())?;
    let quic = match (&ticket.quic, setup.quic_sha256) {
        (Some(url), Some(_)) => match quic_authority(url) {
            Some(authority) => tokio::net::lookup_host(authority)
                .await
                .ok()
                .and_then(|mut a| a.next()),
            None => None,
        },
        _ => None,
    };
    Ok(Targets { media, quic })
}

/// `host:port` of `https://host:port/…`.
fn quic_authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    authority
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map(|_| authority)
}

/// Sends garbage datagrams at `pps` until stopped.
async fn garbage(
    targets: Targets,
    local_ip: IpAddr,
    pps: u32,
    seed: u64,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        if let Ok(socket) = UdpSocket::bind((local_ip, 0)).await {
            sockets.push(socket);
        }
    }
    if sockets.is_empty() {
        return;
    }
    let mut rng = Rng(seed | 1);
    let mut buf = Vec::with_capacity(1500);
    let tick = Duration::from_millis(10);
    let per_tick = f64::from(pps) * tick.as_secs_f64();
    let mut owed = 0.0;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0usize;
    loop {
        tokio::select! {
            biased;
            () = crate::peer::until(&mut stop, true) => break,
            _ = ticker.tick() => {}
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            n += 1;
            // Two in five to the QUIC port when there is one.
            let (kind, target) = match targets.quic {
                Some(quic) if n % 5 < 2 => (Garbage::for_quic(n), quic),
                _ => (Garbage::for_media(n), targets.media),
            };
            kind.fill(&mut rng, &mut buf);
            let socket = &sockets[n % sockets.len()];
            if socket.send_to(&buf, target).await.is_ok() {
                counters.packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The kinds of garbage datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Garbage {
    /// Random bytes of random length.
    Random,
    /// A STUN header whose attributes are cut short.
    TruncatedStun,
    /// A STUN binding request for an ICE user nobody has.
    StunUnknownUser,
    /// An RTP header (Opus payload type) and random payload.
    FakeRtp,
    /// An RTCP receiver report header and random bytes.
    FakeRtcp,
    /// A DTLS handshake record header and random bytes.
    FakeDtls,
    /// A QUIC long-header Initial of version 1 with random connection ids, padded to 1200.
    FakeQuicInitial,
}

impl Garbage {
    const MEDIA: [Garbage; 6] = [
        Garbage::Random,
        Garbage::TruncatedStun,
        Garbage::StunUnknownUser,
        Garbage::FakeRtp,
        Garbage::FakeRtcp,
        Garbage::FakeDtls,
    ];

    fn for_media(n: usize) -> Self {
        Self::MEDIA[n % Self::MEDIA.len()]
    }

    fn for_quic(n: usize) -> Self {
        if n.is_multiple_of(2) {
            Garbage::FakeQuicInitial
        } else {
            Garbage::Random
        }
    }

    /// Writes one datagram of this kind into `buf`.
    fn fill(self, rng: &mut Rng, buf: &mut Vec<u8>) {
        buf.clear();
        match self {
            Garbage::Random => {
                let len = 1 + (rng.next() % 1200) as usize;
                rng.extend(buf, len);
            }
            Garbage::TruncatedStun => {
                // Binding request, claiming 64 bytes of attributes, carrying fewer.
                buf.extend_from_slice(&[0x00, 0x01, 0x00, 0x40, 0x21, 0x12, 0xa4, 0x42]);
                rng.extend(buf, 12);
                let len = (rng.next() % 40) as usize;
                rng.extend(buf, len);
            }
            Garbage::StunUnknownUser => {
                let ufrag: Vec<u8> = (0..8).map(|_| b'a' + (rng.next() % 26) as u8).collect();
                let username = [&ufrag[..], b":", b"lt00"].concat();
                let padded = username.len().div_ceil(4) * 4;
                // USERNAME, then a MESSAGE-INTEGRITY that cannot verify.
                let attributes = 4 + padded + 4 + 20;
                buf.extend_from_slice(&[0x00, 0x01]);
                buf.extend_from_slice(&(attributes as u16).to_be_bytes());
                buf.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                rng.extend(buf, 12);
                buf.extend_from_slice(&[0x00, 0x06]);
                buf.extend_from_slice(&(username.len() as u16).to_be_bytes());
                buf.extend_from_slice(&username);
                buf.resize(buf.len() + padded - username.len(), 0);
                buf.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
                rng.extend(buf, 20);
            }
            Garbage::FakeRtp => {
                buf.extend_from_slice(&[0x80, 111]);
                rng.extend(buf, 10);
                let len = 20 + (rng.next() % 140) as usize;
                rng.extend(buf, len);
            }
            Garbage::FakeRtcp => {
                buf.extend_from_slice(&[0x81, 201, 0x00, 0x07]);
                rng.extend(buf, 28);
            }
            Garbage::FakeDtls => {
                // Handshake record, DTLS 1.2, epoch 0.
                buf.extend_from_slice(&[22, 0xfe, 0xfd, 0, 0]);
                rng.extend(buf, 6);
                let len = 13 + (rng.next() % 200) as usize;
                buf.extend_from_slice(&(len as u16).to_be_bytes());
                rng.extend(buf, len);
            }
            Garbage::FakeQuicInitial => {
                buf.push(0xc0 | (rng.next() % 4) as u8);
                buf.extend_from_slice(&1u32.to_be_bytes());
                buf.push(8);
                rng.extend(buf, 8);
                buf.push(8);
                rng.extend(buf, 8);
                // No token, then a length and "protected" payload.
                buf.push(0);
                buf.extend_from_slice(&(0x4000u16 | 1162).to_be_bytes());
                let len = 1200 - buf.len();
                rng.extend(buf, len);
            }
        }
    }
}

/// xorshift64*: garbage needs no better randomness.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn extend(&mut self, buf: &mut Vec<u8>, len: usize) {
        let end = buf.len() + len;
        while buf.len() < end {
            let word = self.next().to_le_bytes();
            let take = (end - buf.len()).min(8);
            buf.extend_from_slice(&word[..take]);
        }
    }
}

/// The abandoned sessions, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abandon {
    /// A signaling session dropped after the server's offer, without a close frame.
    WsAfterJoin,
    /// An upgrade request cut off in the middle.
    WsMidUpgrade,
    /// A signaling session sent garbage bytes instead of frames.
    WsGarbage,
    /// An upgrade with a forged token.
    WsForgedToken,
    /// A WHEP session that connects and vanishes.
    WebRtcVanish,
    /// A QUIC session that connects, sends SETUP and vanishes.
    QuicVanish,
}

impl Abandon {
    const ALL: [Abandon; 6] = [
        Abandon::WsAfterJoin,
        Abandon::WebRtcVanish,
        Abandon::WsMidUpgrade,
        Abandon::QuicVanish,
        Abandon::WsGarbage,
        Abandon::WsForgedToken,
    ];
}

/// Starts abandoned sessions one after the other until stopped.
async fn churn(
    setup: Arc<Setup>,
    targets: Targets,
    client: usize,
    seed: u64,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let gate = Arc::new(Semaphore::new(CHURN_IN_FLIGHT));
    let mut sessions = JoinSet::new();
    let mut ticker = tokio::time::interval(CHURN_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rng = Rng(seed | 1);
    for n in client.. {
        tokio::select! {
            biased;
            () = crate::peer::until(&mut stop, true) => break,
            _ = ticker.tick() => {}
        }
        while sessions.try_join_next().is_some() {}
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            continue;
        };
        let kind = Abandon::ALL[n % Abandon::ALL.len()];
        if kind == Abandon::QuicVanish && (targets.quic.is_none() || setup.quic_sha256.is_none()) {
            continue;
        }
        let (setup, counters, stop) = (setup.clone(), counters.clone(), stop.clone());
        let noise = rng.next();
        sessions.spawn(async move {
            counters.sessions.fetch_add(1, Ordering::Relaxed);
            if abandon(kind, &setup, noise, stop).await.is_err() {
                counters.failures.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    sessions.abort_all();
}

async fn abandon(
    kind: Abandon,
    setup: &Setup,
    noise: u64,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let ticket = || async {
        setup
            .api
            .join(&setup.access, &setup.room)
            .await
            .map_err(|e| e.to_string())
    };
    match kind {
        Abandon::WsAfterJoin => {
            let ticket = ticket().await?;
            let mut session = setup.endpoint.connect(&ticket.token).await?;
            ws::until_offer(&mut session).await?;
            // Dropped: the TCP connection ends without a close frame.
            Ok(())
        }
        Abandon::WsMidUpgrade => {
            let ticket = ticket().await?;
            let mut stream = TcpStream::connect(setup.endpoint.addr())
                .await
                .map_err(|e| e.to_string())?;
            let request = format!(
                "GET /rtc?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConn",
                ticket.token,
                setup.endpoint.addr()
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }
        Abandon::WsGarbage => {
            let ticket = ticket().await?;
            let mut session = setup.endpoint.connect(&ticket.token).await?;
            let mut rng = Rng(noise | 1);
            let mut junk = Vec::with_capacity(512);
            rng.extend(&mut junk, 512);
            let _ = session.get_mut().write_all(&junk).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), ws::next(&mut session)).await;
            Ok(())
        }
        Abandon::WsForgedToken => {
            // A token-shaped string the server must refuse before upgrading.
            let forged = format!("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.{noise:016x}");
            match setup.endpoint.connect(&forged).await {
                Ok(_) => Err("a forged token was accepted".into()),
                Err(_) => Ok(()),
            }
        }
        Abandon::WebRtcVanish => {
            let ticket = ticket().await?;
            webrtc_vanish(setup, ticket, stop).await
        }
        Abandon::QuicVanish => {
            let ticket = ticket().await?;
            let (Some(url), Some(sha256)) = (ticket.quic.as_deref(), setup.quic_sha256) else {
                return Err("no QUIC".into());
            };
            quic_vanish(url, &ticket.token, sha256).await
        }
    }
}

/// A WHEP subscriber that connects, then vanishes after [`VANISH_AFTER`].
async fn webrtc_vanish(
    setup: &Setup,
    ticket: Ticket,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (vanish_tx, vanish) = watch::channel(false);
    let ctx = Context {
        api: setup.api.clone(),
        // Its own counters: nothing it receives counts.
        live: Arc::new(Live::default()),
        packets: setup.packets.clone(),
        connecting: Arc::new(Semaphore::new(1)),
        stop: vanish,
        vanish: true,
    };
    let peer = webrtc::run(
        Role::Subscriber,
        ticket,
        setup.sections,
        setup.local_ip,
        setup.cert.clone(),
        ctx,
    );
    tokio::pin!(peer);
    tokio::select! {
        outcome = &mut peer => return outcome.error.map_or(Ok(()), Err),
        () = tokio::time::sleep(VANISH_AFTER) => {}
        () = crate::peer::until(&mut stop, true) => {}
    }
    vanish_tx.send_replace(true);
    let outcome = peer.await;
    match outcome.error {
        Some(err) => Err(err),
        None if outcome.connect.is_none() => Err("vanished before connecting".into()),
        None => Ok(()),
    }
}

/// A QUIC session that connects, sends its SETUP, then vanishes: its socket swallows every
/// datagram from then on, CONNECTION_CLOSE included.
async fn quic_vanish(url: &str, token: &str, sha256: [u8; 32]) -> Result<(), String> {
    let rest = url.strip_prefix("https://").ok_or("not an https URL")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_matches(['[', ']']);
    let bind = SocketAddr::new(
        if addr.is_ipv6() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        },
        0,
    );
    let runtime = quinn::default_runtime().ok_or("no tokio runtime")?;
    let socket = runtime
        .wrap_udp_socket(std::net::UdpSocket::bind(bind).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let socket = Arc::new(Vanishing {
        inner: socket,
        gone: AtomicBool::new(false),
    });
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        socket.clone(),
        runtime,
    )
    .map_err(|e| e.to_string())?;
    let config = veza_client::net::pinned_client_config(sha256, &[veza_moq::ALPN.as_bytes()]);
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        endpoint
            .connect_with(config, addr, host)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let connection = match connected {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => return Err(err),
        Err(_) => return Err("QUIC handshake timed out".into()),
    };
    let session = veza_moq::session::Session::start(
        web_transport_quinn::Session::raw(connection),
        veza_moq::session::Options {
            setup: veza_moq::message::Setup::with_path(&format!("/{path}?jwt={token}")),
            ..Default::default()
        },
    );
    tokio::time::sleep(VANISH_AFTER).await;
    socket.gone.store(true, Ordering::Relaxed);
    drop(session);
    drop(endpoint);
    Ok(())
}

/// A UDP socket that, once `gone`, pretends to send and never receives.
#[derive(Debug)]
struct Vanishing {
    inner: Arc<dyn AsyncUdpSocket>,
    gone: AtomicBool,
}

impl AsyncUdpSocket for Vanishing {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.gone.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut TaskContext,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if self.gone.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_authorities_come_from_join_urls() {
        assert_eq!(
            quic_authority("https://127.0.0.1:4433/room/abc"),
            Some("127.0.0.1:4433")
        );
        assert_eq!(
            quic_authority("https://[::1]:4433/room/x"),
            Some("[::1]:4433")
        );
        assert_eq!(quic_authority("https://example.org/room/x"), None);
        assert_eq!(quic_authority("http://127.0.0.1:1/x"), None);
    }

    #[test]
    fn garbage_has_the_shape_it_claims() {
        let mut rng = Rng(42);
        let mut buf = Vec::new();
        for n in 0..600 {
            let kind = Garbage::for_media(n);
            kind.fill(&mut rng, &mut buf);
            assert!(
                !buf.is_empty() && buf.len() <= 1200,
                "{kind:?}: {}",
                buf.len()
            );
            match kind {
                Garbage::TruncatedStun => {
                    // Shorter than the header plus the attributes it claims.
                    assert_eq!(&buf[4..8], &[0x21, 0x12, 0xa4, 0x42]);
                    assert!(buf.len() < 20 + 0x40);
                }
                Garbage::StunUnknownUser => {
                    let claimed = u16::from_be_bytes([buf[2], buf[3]]) as usize;
                    assert_eq!(buf.len(), 20 + claimed);
                    assert_eq!(claimed % 4, 0);
                }
                Garbage::FakeRtp => assert_eq!(&buf[..2], &[0x80, 111]),
                Garbage::FakeDtls => {
                    let len = u16::from_be_bytes([buf[11], buf[12]]) as usize;
                    assert_eq!(buf.len(), 13 + len);
                }
                _ => {}
            }
        }
        Garbage::FakeQuicInitial.fill(&mut rng, &mut buf);
        assert_eq!(buf.len(), 1200);
        assert_eq!(buf[0] & 0xc0, 0xc0);
        assert_eq!(&buf[1..5], &1u32.to_be_bytes());
        // The kinds alternate.
        assert_ne!(Garbage::for_media(0), Garbage::for_media(1));
        assert_ne!(Garbage::for_quic(0), Garbage::for_quic(1));
    }

    #[test]
    fn random_bytes_fill_exact_lengths() {
        let mut rng = Rng(7);
        let mut buf = vec![1, 2, 3];
        rng.extend(&mut buf, 13);
        assert_eq!(buf.len(), 16);
        assert_eq!(&buf[..3], &[1, 2, 3]);
    }
}
