//! WebRTC transport: str0m peers on one UDP socket, driven by one task (a shard) that owns the
//! socket, every peer and the [`Engine`].
//!
//! The server is ICE-lite and announces host candidates on the socket's port for each announced
//! IP. A datagram is routed to its peer by the local ufrag of a STUN Binding request, which
//! also records its 5-tuple, and afterwards by that 5-tuple — two hash-map lookups, never a
//! scan. Negotiation is server-driven: the server makes every offer (the first one, and one each
//! time the peer gets or loses a slot), the client answers. Peers run str0m in RTP mode so the
//! engine rewrites sequence numbers and timestamps itself and answers NACKs from its cache.
//!
//! Other tasks talk to the shard through a [`MediaServer`] handle (commands over a channel); the
//! shard talks back to each participant's session through its [`ServerEvent`] channel. It
//! reports to Prometheus through [`MediaMetrics`].

mod metrics;
mod outbox;
mod stun;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::{Extension, ExtensionValues, RawPacket, SeqNo};
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output as RtcOutput, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use veza_proto::{Grants, ParticipantId, RoomId, TrackId};

use crate::engine::{
    AudioLevel, Config as EngineConfig, Engine, Event as EngineEvent, IdHash, MAX_SPEAKER_SLOTS,
    Output as EngineOutput, RtpIn, RtpOut, SlotId, Stats, SubscribeMode,
};

pub use metrics::{JoinOutcome, MediaMetrics, QuicSessionGuard, SessionGuard};

/// The payload type the shard's peers use for Opus (str0m's default, in every offer we make).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// The payload type of RED (RFC 2198) carrying Opus, where a browser publishes with it.
pub const RED_PAYLOAD_TYPE: u8 = 63;
pub use stun::{is_stun, local_ufrag};

/// Where the media transport listens and what it announces.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The UDP socket every peer shares (`VEZA_RTC_UDP_ADDR`, default `0.0.0.0:7882`).
    pub udp_addr: SocketAddr,
    /// The IPs announced as host candidates, on the socket's port. Empty: the bound IP if it
    /// is specific, else 127.0.0.1 and the address of the default route.
    pub announce_ips: Vec<IpAddr>,
    /// How long a participant whose connection dropped is kept for an ICE restart.
    pub reconnect_grace: Duration,
    /// How many shards: one task, one engine and one UDP socket each, on consecutive ports
    /// from `udp_addr`'s (each its own ephemeral port when that is 0). A room lives in one
    /// shard, picked by its id, so shards share nothing and forward nothing to each other.
    pub shards: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            udp_addr: SocketAddr::from(([0, 0, 0, 0], 7882)),
            announce_ips: Vec::new(),
            reconnect_grace: Duration::from_secs(30),
            shards: 1,
        }
    }
}

/// Why a media operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// No such participant (gone, or never joined).
    #[error("unknown participant")]
    UnknownParticipant,
    /// The participant is already connected.
    #[error("participant already joined")]
    AlreadyJoined,
    /// The grants do not allow it.
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    /// The SDP could not be parsed or applied.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// There is no offer waiting for this answer.
    #[error("no offer is waiting for an answer")]
    NoPendingOffer,
    /// The media task is gone (shutting down).
    #[error("media server stopped")]
    Stopped,
    /// Binding or reading the UDP socket failed.
    #[error("UDP socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Who joins, as the media token says.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The room.
    pub room: RoomId,
    /// The participant identity of the token.
    pub participant: ParticipantId,
    /// What it may do.
    pub grants: Grants,
}

/// Where a peer's events go. Boxed: an idle session's channel then holds a block of pointers
/// (256 bytes) rather than a block of events (2 KiB).
pub type EventSender = mpsc::UnboundedSender<Box<ServerEvent>>;

/// What the shard tells one participant's session.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A new SDP offer to answer (renegotiation or ICE restart).
    Offer(String),
    /// ICE and DTLS are up.
    Connected,
    /// The connection dropped; an ICE restart within the grace period keeps the participant.
    Disconnected,
    /// Text received on the participant's `chat` data channel.
    ChatData(String),
    /// A room event from the engine, to pass on (joined, left, tracks, speakers, mutes).
    Room(EngineEvent),
    /// The participant was removed from the media path (kick, ban or timeout).
    Removed,
}

/// Who is in a room right now, as the media shard last counted (once a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomLive {
    /// Participants over every transport.
    pub participants: u32,
    /// Those publishing a track.
    pub publishers: u32,
}

/// Room counts, written by the shard and read by anyone.
type LiveRooms = Arc<std::sync::RwLock<HashMap<RoomId, RoomLive>>>;

/// What the shard sends a participant whose transport runs outside the shard (moq-lite over
/// QUIC): packets already rewritten for its slots, and room events.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteOut {
    /// A packet for one of the participant's slots.
    Packet {
        /// The slot ([`EngineEvent::SlotOpened`] said which publisher it carries).
        slot: SlotId,
        /// The packet, with the slot's continuous sequence numbers and timestamps.
        packet: RtpOut,
    },
    /// A room or slot event from the engine.
    Event(EngineEvent),
    /// The participant was removed from the media path (kick or ban).
    Removed,
}

/// A participant whose packets arrive and leave through a channel, not through the shard's
/// socket.
struct Remote {
    out: mpsc::Sender<RemoteOut>,
    grants: Grants,
    track: Option<TrackId>,
}

enum Command {
    Join {
        request: JoinRequest,
        events: EventSender,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    Answer {
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Candidate {
        participant: ParticipantId,
        candidate: String,
    },
    Publish {
        participant: ParticipantId,
        publish: bool,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    SetMuted {
        participant: ParticipantId,
        muted: bool,
    },
    SendChat {
        participant: ParticipantId,
        text: String,
    },
    Restart {
        participant: ParticipantId,
        events: EventSender,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    Leave {
        participant: ParticipantId,
    },
    Ingest {
        request: JoinRequest,
        kind: IngestKind,
        offer: String,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    Attach {
        request: JoinRequest,
        mode: SubscribeMode,
        out: mpsc::Sender<RemoteOut>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    RemotePacket {
        participant: ParticipantId,
        packet: RtpIn,
    },
    Detach {
        participant: ParticipantId,
        out: mpsc::Sender<RemoteOut>,
    },
}

/// What a client that offers first (WHIP, WHEP) wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestKind {
    /// Publish audio into the room (RFC 9725).
    Whip,
    /// Play the room's loudest speakers, one per offered audio section.
    Whep,
}

/// A handle to the media shards. Cheap to clone.
///
/// Calls that name a room go to the room's shard. Calls that name only a participant go to
/// the shard the handle is pinned to ([`MediaServer::for_room`]); an unpinned handle asks every
/// shard (fine for the occasional call, not for a per-packet one: sessions pin their handle).
#[derive(Debug, Clone)]
pub struct MediaServer {
    shards: Arc<[ShardHandle]>,
    pinned: Option<usize>,
    metrics: MediaMetrics,
}

/// One shard's command queue, room counts and address.
#[derive(Debug)]
struct ShardHandle {
    commands: mpsc::UnboundedSender<Command>,
    live: LiveRooms,
    local_addr: SocketAddr,
    candidates: Arc<[SocketAddr]>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl MediaServer {
    /// Binds the UDP sockets and starts the shards on the current tokio runtime, each with an
    /// engine made with `engine` (seeded apart); they report to `metrics` (register them where
    /// they are scraped).
    pub async fn start(
        config: MediaConfig,
        engine: EngineConfig,
        metrics: MediaMetrics,
    ) -> Result<Self, MediaError> {
        let mut shards = Vec::new();
        for index in 0..config.shards.max(1) {
            let mut addr = config.udp_addr;
            if addr.port() != 0 {
                let port = u16::try_from(usize::from(addr.port()) + index).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the shards' UDP ports run past 65535",
                    )
                })?;
                addr.set_port(port);
            }
            let socket = UdpSocket::bind(addr).await?;
            let local_addr = socket.local_addr()?;
            let ips = if !config.announce_ips.is_empty() {
                config.announce_ips.clone()
            } else if !local_addr.ip().is_unspecified() {
                vec![local_addr.ip()]
            } else {
                let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
                ips.extend(default_route_ip());
                ips
            };
            let candidates: Arc<[SocketAddr]> = ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, local_addr.port()))
                .collect();
            let (commands, rx) = mpsc::unbounded_channel();
            let live = LiveRooms::default();
            let mut shard = Shard::new(
                socket,
                rx,
                Engine::new(EngineConfig {
                    seed: engine.seed.wrapping_add(index as u64),
                    ..engine.clone()
                }),
                candidates.clone(),
                config.reconnect_grace,
                metrics.clone(),
            );
            shard.live = live.clone();
            tokio::spawn(shard.run());
            tracing::info!(shard = index, addr = %local_addr, candidates = ?candidates, "WebRTC media listening");
            shards.push(ShardHandle {
                commands,
                live,
                local_addr,
                candidates,
            });
        }
        Ok(Self {
            shards: shards.into(),
            pinned: None,
            metrics,
        })
    }

    /// A handle whose participant calls go straight to `room`'s shard: what a session of that
    /// room uses.
    pub fn for_room(&self, room: RoomId) -> MediaServer {
        MediaServer {
            shards: self.shards.clone(),
            pinned: Some(self.shard_of(room)),
            metrics: self.metrics.clone(),
        }
    }

    /// How many shards run.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard of `room`: a fixed hash of its id.
    fn shard_of(&self, room: RoomId) -> usize {
        use std::hash::{Hash, Hasher};
        if self.shards.len() == 1 {
            return 0;
        }
        // SipHash with fixed keys: the same room maps to the same shard for the process's life.
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        room.hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    /// The shard for participant calls: the pinned one, or the only one.
    fn participant_shard(&self) -> Option<usize> {
        self.pinned.or((self.shards.len() == 1).then_some(0))
    }

    /// The metrics the shard reports to; signaling counts its sessions here too.
    pub fn metrics(&self) -> &MediaMetrics {
        &self.metrics
    }

    /// Who is in `room` (as of the last second); `None` when nobody is.
    pub fn room_live(&self, room: RoomId) -> Option<RoomLive> {
        self.shards[self.shard_of(room)]
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&room)
            .copied()
    }

    /// Every room with people in it here (as of the last second), with its counts.
    pub fn live_rooms(&self) -> Vec<(RoomId, RoomLive)> {
        let mut rooms = Vec::new();
        for shard in self.shards.iter() {
            let live = shard.live.read().unwrap_or_else(|p| p.into_inner());
            rooms.extend(live.iter().map(|(room, live)| (*room, *live)));
        }
        rooms
    }

    /// The bound UDP address (of the pinned shard, else the first).
    pub fn local_addr(&self) -> SocketAddr {
        self.shards[self.pinned.unwrap_or(0)].local_addr
    }

    /// Every shard's bound UDP address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|s| s.local_addr).collect()
    }

    /// The announced host candidates (of the pinned shard, else the first).
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.shards[self.pinned.unwrap_or(0)].candidates
    }

    /// Asks `room`'s shard.
    async fn ask_room<T>(
        &self,
        room: RoomId,
        make: impl FnOnce(oneshot::Sender<Result<T, MediaError>>) -> Command,
    ) -> Result<T, MediaError> {
        ask_shard(&self.shards[self.shard_of(room)], make).await
    }

    /// Asks the participant's shard; unpinned, each shard in turn until one knows it.
    async fn ask<T>(
        &self,
        make: impl Fn(oneshot::Sender<Result<T, MediaError>>) -> Command,
    ) -> Result<T, MediaError> {
        if let Some(index) = self.participant_shard() {
            return ask_shard(&self.shards[index], make).await;
        }
        for shard in self.shards.iter() {
            match ask_shard(shard, &make).await {
                Err(MediaError::UnknownParticipant) => continue,
                other => return other,
            }
        }
        Err(MediaError::UnknownParticipant)
    }

    /// Tells the participant's shard; unpinned, every shard (the others ignore it).
    fn tell(&self, make: impl Fn() -> Command) {
        // A stopped shard has nothing left to tell.
        match self.participant_shard() {
            Some(index) => {
                let _ = self.shards[index].commands.send(make());
            }
            None => {
                for shard in self.shards.iter() {
                    let _ = shard.commands.send(make());
                }
            }
        }
    }

    /// Adds a participant; returns the first SDP offer for its client to answer.
    pub async fn join(
        &self,
        request: JoinRequest,
        events: EventSender,
    ) -> Result<String, MediaError> {
        self.ask_room(request.room, |reply| Command::Join {
            request,
            events,
            reply,
        })
        .await
    }

    /// Applies the client's answer to the pending offer.
    pub async fn answer(&self, participant: ParticipantId, sdp: String) -> Result<(), MediaError> {
        self.ask(|reply| Command::Answer {
            participant,
            sdp: sdp.clone(),
            reply,
        })
        .await
    }

    /// Adds a trickled remote candidate (`candidate:…` line).
    pub fn candidate(&self, participant: ParticipantId, candidate: String) {
        self.tell(|| Command::Candidate {
            participant,
            candidate: candidate.clone(),
        });
    }

    /// Starts or stops forwarding the participant's microphone.
    pub async fn publish(
        &self,
        participant: ParticipantId,
        publish: bool,
    ) -> Result<(), MediaError> {
        self.ask(|reply| Command::Publish {
            participant,
            publish,
            reply,
        })
        .await
    }

    /// Server-side mute (a moderator's) or unmute.
    pub fn set_muted(&self, participant: ParticipantId, muted: bool) {
        self.tell(|| Command::SetMuted { participant, muted });
    }

    /// Sends text on the participant's `chat` data channel.
    pub fn send_chat(&self, participant: ParticipantId, text: String) {
        self.tell(|| Command::SendChat {
            participant,
            text: text.clone(),
        });
    }

    /// A reconnecting session: ICE restart, with events going to the new session.
    pub async fn restart(
        &self,
        participant: ParticipantId,
        events: EventSender,
    ) -> Result<String, MediaError> {
        self.ask(|reply| Command::Restart {
            participant,
            events: events.clone(),
            reply,
        })
        .await
    }

    /// Answers a WHIP or WHEP offer for a new participant.
    pub async fn ingest(
        &self,
        request: JoinRequest,
        kind: IngestKind,
        offer: String,
    ) -> Result<String, MediaError> {
        self.ask_room(request.room, |reply| Command::Ingest {
            request,
            kind,
            offer,
            reply,
        })
        .await
    }

    /// Removes the participant from the media path at once.
    pub fn leave(&self, participant: ParticipantId) {
        self.tell(|| Command::Leave { participant });
    }

    /// Adds a participant whose transport runs elsewhere (a moq-lite session): the shard
    /// sends it packets and events on `out` and drops packets when `out` is full, so a slow
    /// session never holds up the shard. An attached participant already there is replaced
    /// (its old session gets [`RemoteOut::Removed`]). Publish with [`MediaServer::publish`], send packets
    /// with [`MediaServer::remote_packet`], leave with [`MediaServer::leave`].
    pub async fn attach(
        &self,
        request: JoinRequest,
        out: mpsc::Sender<RemoteOut>,
    ) -> Result<(), MediaError> {
        self.attach_with(request, SubscribeMode::AllTracks, out)
            .await
    }

    /// [`MediaServer::attach`] with a [`SubscribeMode`]: the cascade attaches the other nodes
    /// pulling a room as [`SubscribeMode::LocalTracks`] and the publishers it pulls from them
    /// as [`SubscribeMode::Relayed`].
    pub async fn attach_with(
        &self,
        request: JoinRequest,
        mode: SubscribeMode,
        out: mpsc::Sender<RemoteOut>,
    ) -> Result<(), MediaError> {
        self.ask_room(request.room, |reply| Command::Attach {
            request,
            mode,
            out,
            reply,
        })
        .await
    }

    /// Removes an attached participant if `out` is still its channel (a session that was taken
    /// over by a newer one removes nothing).
    pub fn detach(&self, participant: ParticipantId, out: mpsc::Sender<RemoteOut>) {
        self.tell(|| Command::Detach {
            participant,
            out: out.clone(),
        });
    }

    /// One packet of an attached participant's published track.
    pub fn remote_packet(&self, participant: ParticipantId, packet: RtpIn) {
        self.tell(|| Command::RemotePacket {
            participant,
            packet: packet.clone(),
        });
    }
}

/// Asks one shard and waits for its answer.
async fn ask_shard<T>(
    shard: &ShardHandle,
    make: impl FnOnce(oneshot::Sender<Result<T, MediaError>>) -> Command,
) -> Result<T, MediaError> {
    let (reply, rx) = oneshot::channel();
    shard
        .commands
        .send(make(reply))
        .map_err(|_| MediaError::Stopped)?;
    rx.await.map_err(|_| MediaError::Stopped)?
}

/// WHIP/WHEP sessions take no trickled candidates (PATCH answers 405; the ICE-lite server's
/// answer carries all of its own), so the answer does not claim `a=ice-options:trickle`.
fn without_trickle(answer: &str) -> String {
    answer
        .split_inclusive('\n')
        .filter(|line| line.trim_end() != "a=ice-options:trickle")
        .collect()
}

/// str0m rejects a section it cannot use (video, here) with port 0 and no formats, which
/// browsers refuse to parse; RFC 8866 wants at least one format, so the offer's are copied in.
fn with_rejected_formats(answer: &str, offer: &str) -> String {
    let mut offered = offer.lines().filter(|l| l.starts_with("m="));
    let mut out = String::with_capacity(answer.len() + 32);
    for line in answer.split_inclusive('\n') {
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        if !line.starts_with("m=") {
            out.push_str(line);
            continue;
        }
        let offered_line = offered.next();
        if fields.len() <= 3 && fields.get(1) == Some(&"0") {
            let formats: Vec<&str> = offered_line
                .map(|l| l.trim_end().split(' ').skip(3).collect())
                .unwrap_or_default();
            let formats = if formats.is_empty() {
                vec!["0"]
            } else {
                formats
            };
            out.push_str(&format!(
                "{} 0 {} {}\r\n",
                fields[0],
                fields.get(2).unwrap_or(&"UDP/TLS/RTP/SAVPF"),
                formats.join(" ")
            ));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The `a=mid` of each audio section of an SDP, in order.
fn audio_mids(sdp: &str) -> Vec<Mid> {
    sdp.split("\nm=")
        .skip(1)
        .filter(|section| section.starts_with("audio"))
        .filter_map(|section| {
            section
                .lines()
                .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
                .map(Mid::from)
        })
        .collect()
}

/// How every peer is set up: ICE-lite, RTP mode (the engine rewrites and answers NACKs), Opus
/// only, with RED where the client offers it, and NACK feedback for Opus — browsers NACK audio
/// only when it is negotiated, and send no RTX for it, so the engine's cache answers.
fn peer_config(certificate: Option<&DtlsCert>) -> str0m::RtcConfig {
    // Header extensions: the audio level (active speakers) and the mid (routing in browsers).
    // No transport-wide sequence numbers: audio needs no bandwidth estimation, and registering
    // and matching them cost str0m more per forwarded packet than anything else it does.
    let mut config = Rtc::builder()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .enable_raw_packets(true)
        .clear_extension_map()
        .set_extension(1, Extension::AudioLevel)
        .set_extension(4, Extension::RtpMid)
        .clear_codecs()
        .enable_opus(true, true);
    if let Some(certificate) = certificate {
        config = config.set_dtls_cert(certificate.clone());
    }
    for params in config.codec_config().iter_mut() {
        if params.spec().codec == str0m::format::Codec::Opus {
            params.set_fb_nack(true);
        }
    }
    config
}

/// The address of the interface of the default route, found without sending anything.
fn default_route_ip() -> Option<IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// One participant's WebRTC peer.
struct Peer {
    participant: ParticipantId,
    grants: Grants,
    rtc: Rtc,
    ufrag: String,
    events: EventSender,
    /// The offer the client has not answered yet.
    pending: Option<SdpPendingOffer>,
    /// Another offer is due once the pending one is answered.
    renegotiate: bool,
    /// The transceiver the client publishes on.
    publish_mid: Option<Mid>,
    /// The published track, while publishing.
    track: Option<TrackId>,
    /// Send transceivers by slot, and back.
    slot_mids: HashMap<SlotId, Mid>,
    mid_slots: HashMap<Mid, SlotId>,
    /// Send transceivers whose slot closed, reused for the next slot.
    free_mids: Vec<Mid>,
    /// Slots waiting for a transceiver (added at the next offer).
    unplaced: Vec<SlotId>,
    chat: Option<ChannelId>,
    /// When the peer was created, until it first connects (for the ICE connect time).
    connecting_since: Option<Instant>,
    /// When the connection dropped, for the reconnect grace period.
    disconnected_at: Option<Instant>,
    /// When str0m last asked to be woken.
    timeout: Instant,
    /// The earliest wake-up of this peer in the timer heap (so a peer drained after every
    /// forwarded packet does not push an entry each time).
    scheduled: Option<Instant>,
}

/// Datagrams taken from the socket per wake-up before the output is flushed.
const RECEIVE_BATCH: usize = 32;

/// The single task that owns the socket, the peers and the engine.
struct Shard {
    socket: UdpSocket,
    commands: mpsc::UnboundedReceiver<Command>,
    engine: Engine,
    candidates: Arc<[SocketAddr]>,
    grace: Duration,
    /// Boxed: a str0m peer is about 10 KB, and a table of them holds up to twice the slots it
    /// uses (and both tables while it grows); boxed, the slack is a pointer each.
    peers: HashMap<ParticipantId, Box<Peer>, IdHash>,
    remotes: HashMap<ParticipantId, Remote, IdHash>,
    by_ufrag: HashMap<String, ParticipantId>,
    by_addr: HashMap<SocketAddr, ParticipantId, IdHash>,
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    /// Peers with output to drain after an input.
    dirty: HashSet<ParticipantId, IdHash>,
    /// Reused buffer for draining `dirty`, so the hot path does not allocate.
    draining: Vec<ParticipantId>,
    /// Datagrams produced by a flush, sent in batches at its end.
    outbox: outbox::Outbox,
    /// The DTLS certificate of every peer (the server's identity; one key pair, not one per
    /// join). `None` if generating it failed: then each peer makes its own.
    certificate: Option<DtlsCert>,
    metrics: MediaMetrics,
    /// The engine's counters as last copied into the metrics.
    reported: Stats,
    /// The peer count as last added to the metrics (shards add their own share).
    reported_peers: usize,
    /// When the metrics are next synced with the engine.
    metrics_due: Instant,
    /// When the last fresh (not resent) forward of the current input was written to its
    /// subscriber's stream.
    forwarded_at: Option<Instant>,
    /// Room counts for [`MediaServer::room_live`], refreshed with the metrics.
    live: LiveRooms,
}

impl Shard {
    fn new(
        socket: UdpSocket,
        commands: mpsc::UnboundedReceiver<Command>,
        engine: Engine,
        candidates: Arc<[SocketAddr]>,
        grace: Duration,
        metrics: MediaMetrics,
    ) -> Self {
        Self {
            socket,
            commands,
            engine,
            candidates,
            grace,
            peers: HashMap::default(),
            remotes: HashMap::default(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::default(),
            timers: BinaryHeap::new(),
            dirty: HashSet::default(),
            draining: Vec::new(),
            outbox: outbox::Outbox::default(),
            certificate: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
            metrics,
            reported: Stats::default(),
            reported_peers: 0,
            metrics_due: Instant::now(),
            forwarded_at: None,
            live: LiveRooms::default(),
        }
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        loop {
            let next = self.next_deadline();
            let mut arrived = None;
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(Instant::now(), command),
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => {
                        let now = Instant::now();
                        arrived = Some(now);
                        self.handle_datagram(now, source, &buf[..n]);
                        // Whatever else is already queued is taken in the same wake-up, so
                        // each peer's output is drained once for all of it.
                        for _ in 1..RECEIVE_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, source)) => self.handle_datagram(now, source, &buf[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(err) => tracing::debug!(%err, "UDP receive failed"),
                },
                () = tokio::time::sleep_until(next.into()) => self.handle_timers(Instant::now()),
            }
            self.flush(Instant::now()).await;
            if let (Some(arrived), Some(written)) = (arrived, self.forwarded_at.take()) {
                self.metrics
                    .forwarded(written.saturating_duration_since(arrived));
            }
            let now = Instant::now();
            if now >= self.metrics_due {
                self.sync_metrics();
                self.metrics_due = now + metrics::SYNC_INTERVAL;
            }
        }
        self.sync_metrics();
        tracing::info!("WebRTC media stopped");
    }

    /// Copies the engine's counters and the gauges into the metrics.
    fn sync_metrics(&mut self) {
        let stats = self.engine.stats();
        self.metrics.sync_engine(&self.reported, &stats);
        self.metrics
            .add_peers(self.reported_peers, self.peers.len());
        self.reported_peers = self.peers.len();
        self.reported = stats;
        // The cascade's own participants are not people: a room held only by them is not
        // live here.
        let live: HashMap<RoomId, RoomLive> = self
            .engine
            .rooms()
            .filter_map(|room| {
                let people: Vec<ParticipantId> = self
                    .engine
                    .participants(room)
                    .iter()
                    .copied()
                    .filter(|p| self.engine.mode_of(*p).is_some_and(|m| !m.is_relay()))
                    .collect();
                let publishers = people
                    .iter()
                    .filter(|p| self.engine.track_of(**p).is_some())
                    .count();
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                let counts = RoomLive {
                    participants: count(people.len()),
                    publishers: count(publishers),
                };
                (!people.is_empty()).then_some((room, counts))
            })
            .collect();
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
    }

    fn next_deadline(&mut self) -> Instant {
        let engine = self.engine.poll_timeout();
        let peers = self.timers.peek().map(|Reverse((at, _))| *at);
        let far = Instant::now() + Duration::from_secs(1);
        [engine, peers, Some(self.metrics_due)]
            .into_iter()
            .flatten()
            .fold(far, Instant::min)
    }

    fn handle_timers(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        while let Some(Reverse((at, participant))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&participant) else {
                continue;
            };
            if peer.scheduled == Some(at) {
                peer.scheduled = None;
            }
            if peer.timeout <= now {
                // A failed input is the peer's problem alone; it is dropped below if dead.
                let _ = peer.rtc.handle_input(Input::Timeout(now));
                self.dirty.insert(participant);
            } else if peer.scheduled.is_none() {
                // str0m asked for a later wake-up after this entry was pushed.
                peer.scheduled = Some(peer.timeout);
                self.timers.push(Reverse((peer.timeout, participant)));
            }
            if peer
                .disconnected_at
                .is_some_and(|at| now.duration_since(at) > self.grace)
            {
                tracing::info!(participant = %participant, "reconnect grace over; removing");
                self.remove(now, participant);
            }
        }
    }

    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let participant = match stun::local_ufrag(data) {
            Some(ufrag) => self.by_ufrag.get(ufrag).copied().inspect(|p| {
                self.by_addr.insert(source, *p);
            }),
            None => self.by_addr.get(&source).copied(),
        };
        let destination = self.destination_for(source);
        let Some(peer) = participant.and_then(|p| self.peers.get_mut(&p)) else {
            tracing::trace!(%source, len = data.len(), "datagram for no peer dropped");
            self.metrics.dropped_no_peer();
            return;
        };
        let participant = peer.participant;
        let Ok(contents) = data.try_into() else {
            tracing::trace!(%source, "unparseable datagram dropped");
            self.metrics.dropped_unparseable();
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if let Err(err) = peer.rtc.handle_input(input) {
            tracing::debug!(participant = %participant, %err, "peer input failed");
        }
        self.dirty.insert(participant);
    }

    /// The announced address a datagram from `source` was sent to: loopback for loopback
    /// clients, otherwise the first other candidate.
    fn destination_for(&self, source: SocketAddr) -> SocketAddr {
        let loopback = source.ip().is_loopback();
        self.candidates
            .iter()
            .find(|c| c.ip().is_loopback() == loopback)
            .or_else(|| self.candidates.first())
            .copied()
            .unwrap_or(source)
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Join {
                request,
                events,
                reply,
            } => {
                let _ = reply.send(self.join(now, request, events));
            }
            Command::Answer {
                participant,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.answer(participant, &sdp));
                self.dirty.insert(participant);
            }
            Command::Candidate {
                participant,
                candidate,
            } => {
                if let (Some(peer), Ok(c)) = (
                    self.peers.get_mut(&participant),
                    Candidate::from_sdp_string(candidate.trim_start_matches("a=")),
                ) {
                    peer.rtc.add_remote_candidate(c);
                    self.dirty.insert(participant);
                }
            }
            Command::Publish {
                participant,
                publish,
                reply,
            } => {
                let _ = reply.send(self.publish(now, participant, publish));
            }
            Command::SetMuted { participant, muted } => {
                if let Err(err) = self.engine.set_muted(now, participant, muted) {
                    tracing::debug!(%err, "mute ignored");
                }
            }
            Command::SendChat { participant, text } => {
                if let Some(peer) = self.peers.get_mut(&participant)
                    && let Some(id) = peer.chat
                    && let Some(mut channel) = peer.rtc.channel(id)
                {
                    match channel.write(false, text.as_bytes()) {
                        Ok(true) => self.metrics.datachannel_out(),
                        Ok(false) => {
                            tracing::debug!(participant = %participant, "chat write refused")
                        }
                        Err(err) => {
                            tracing::debug!(participant = %participant, %err, "chat write failed")
                        }
                    }
                    self.dirty.insert(participant);
                }
            }
            Command::Restart {
                participant,
                events,
                reply,
            } => {
                let _ = reply.send(self.restart(participant, events));
            }
            Command::Leave { participant } => self.remove(now, participant),
            Command::Ingest {
                request,
                kind,
                offer,
                reply,
            } => {
                let _ = reply.send(self.ingest(now, request, kind, &offer));
            }
            Command::Attach {
                request,
                mode,
                out,
                reply,
            } => {
                let _ = reply.send(self.attach(now, request, mode, out));
            }
            Command::Detach { participant, out } => {
                let current = self
                    .remotes
                    .get(&participant)
                    .is_some_and(|remote| remote.out.same_channel(&out));
                if current {
                    self.detach(now, participant);
                }
            }
            Command::RemotePacket {
                participant,
                packet,
            } => {
                let track = self.remotes.get(&participant).and_then(|r| r.track);
                match track {
                    Some(track) => self.engine.handle_rtp(now, participant, track, packet),
                    None => self.metrics.dropped_no_peer(),
                }
            }
        }
    }

    fn attach(
        &mut self,
        now: Instant,
        request: JoinRequest,
        mode: SubscribeMode,
        out: mpsc::Sender<RemoteOut>,
    ) -> Result<(), MediaError> {
        let participant = request.participant;
        // A new session with the same token takes over (a client that reconnected before the
        // server noticed its old connection was gone).
        if let Some(old) = self.remotes.remove(&participant) {
            let _ = old.out.try_send(RemoteOut::Removed);
            if let Some(track) = old.track {
                let _ = self.engine.unpublish_track(now, participant, track);
            }
            if !self.peers.contains_key(&participant) {
                let _ = self.engine.remove_participant(now, participant);
            }
        }
        let remote = Remote {
            out,
            grants: request.grants,
            track: None,
        };
        if self.peers.contains_key(&participant) {
            // The participant's signaling session is here already (a web client with audio
            // over QUIC): its media moves to this session; the slots it has are handed over.
            for info in self.engine.slots_of(participant) {
                let _ = remote
                    .out
                    .try_send(RemoteOut::Event(EngineEvent::SlotOpened(info)));
            }
            self.remotes.insert(participant, remote);
            return Ok(());
        }
        // In the map first, so the slots the engine opens at once reach it.
        self.remotes.insert(participant, remote);
        if self
            .engine
            .add_participant_with(now, request.room, participant, request.grants, mode)
            .is_err()
        {
            self.remotes.remove(&participant);
            return Err(MediaError::AlreadyJoined);
        }
        Ok(())
    }

    /// Ends an attached session: with a signaling session still there, only the media it
    /// carried goes (its track); alone, the participant leaves.
    fn detach(&mut self, now: Instant, participant: ParticipantId) {
        if !self.peers.contains_key(&participant) {
            self.remove(now, participant);
            return;
        }
        if let Some(remote) = self.remotes.remove(&participant)
            && let Some(track) = remote.track
        {
            let _ = self.engine.unpublish_track(now, participant, track);
        }
    }

    fn join(
        &mut self,
        now: Instant,
        request: JoinRequest,
        events: EventSender,
    ) -> Result<String, MediaError> {
        if self.peers.contains_key(&request.participant) {
            return Err(MediaError::AlreadyJoined);
        }
        // With a QUIC session of the same participant already attached, the engine has it.
        if !self.remotes.contains_key(&request.participant) {
            self.engine
                .add_participant(now, request.room, request.participant, request.grants)
                .map_err(|_| MediaError::AlreadyJoined)?;
        }
        let mut peer = self.new_peer(now, &request, events);
        let offer = peer.offer(true).ok_or(MediaError::NoPendingOffer)?;
        self.insert_peer(peer);
        Ok(offer)
    }

    /// A peer for `request`, with the shard's host candidates.
    fn new_peer(&self, now: Instant, request: &JoinRequest, events: EventSender) -> Peer {
        let mut rtc = peer_config(self.certificate.as_ref()).build(now);
        for addr in self.candidates.iter() {
            if let Ok(candidate) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(candidate);
            }
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Peer {
            participant: request.participant,
            grants: request.grants,
            rtc,
            ufrag,
            events,
            pending: None,
            renegotiate: false,
            publish_mid: None,
            track: None,
            slot_mids: HashMap::new(),
            mid_slots: HashMap::new(),
            free_mids: Vec::new(),
            unplaced: Vec::new(),
            chat: None,
            connecting_since: Some(now),
            disconnected_at: None,
            timeout: now,
            scheduled: None,
        }
    }

    fn insert_peer(&mut self, peer: Peer) {
        self.by_ufrag.insert(peer.ufrag.clone(), peer.participant);
        self.dirty.insert(peer.participant);
        self.peers.insert(peer.participant, Box::new(peer));
    }

    /// WHIP and WHEP: the client offers, the server answers. A WHIP peer publishes whatever
    /// audio it sends; a WHEP peer gets one active-speaker slot per audio section it offered.
    fn ingest(
        &mut self,
        now: Instant,
        request: JoinRequest,
        kind: IngestKind,
        offer: &str,
    ) -> Result<String, MediaError> {
        if self.peers.contains_key(&request.participant) {
            return Err(MediaError::AlreadyJoined);
        }
        let invalid = |e: &dyn std::fmt::Display| MediaError::InvalidSdp(e.to_string());
        let sdp = SdpOffer::from_sdp_string(offer).map_err(|e| invalid(&e))?;
        let audio_mids = audio_mids(offer);
        if audio_mids.is_empty() {
            return Err(MediaError::InvalidSdp(
                "the offer has no audio section".into(),
            ));
        }
        // Nobody listens to a WHIP peer's events, and a WHEP viewer has no session either.
        let (events, _) = mpsc::unbounded_channel();
        let mut peer = self.new_peer(now, &request, events);
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(sdp)
            .map_err(|e| invalid(&e))?;
        let participant = request.participant;
        match kind {
            IngestKind::Whip => {
                self.engine
                    .add_participant(now, request.room, participant, request.grants)
                    .map_err(|_| MediaError::AlreadyJoined)?;
                let track = TrackId::new();
                if self.engine.publish_track(now, participant, track).is_err() {
                    let _ = self.engine.remove_participant(now, participant);
                    return Err(MediaError::NotAllowed("this token cannot publish"));
                }
                peer.track = Some(track);
            }
            IngestKind::Whep => {
                let slots = audio_mids.len().min(usize::from(MAX_SPEAKER_SLOTS));
                // The engine opens the slots at once; the flush after this command places them
                // on these sections, in offer order, before any packet is forwarded to them.
                peer.free_mids = audio_mids.into_iter().take(slots).rev().collect();
                let slots = u8::try_from(slots).unwrap_or(MAX_SPEAKER_SLOTS);
                self.engine
                    .add_participant_with(
                        now,
                        request.room,
                        participant,
                        request.grants,
                        SubscribeMode::ActiveSpeakers { slots },
                    )
                    .map_err(|_| MediaError::NotAllowed("this token cannot subscribe"))?;
            }
        }
        self.insert_peer(peer);
        Ok(without_trickle(&with_rejected_formats(
            &answer.to_sdp_string(),
            offer,
        )))
    }

    fn answer(&mut self, participant: ParticipantId, sdp: &str) -> Result<(), MediaError> {
        let peer = self
            .peers
            .get_mut(&participant)
            .ok_or(MediaError::UnknownParticipant)?;
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| MediaError::InvalidSdp(e.to_string()))?;
        let pending = peer.pending.take().ok_or(MediaError::NoPendingOffer)?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| MediaError::InvalidSdp(e.to_string()))?;
        if peer.renegotiate || !peer.unplaced.is_empty() {
            peer.renegotiate = false;
            if let Some(offer) = peer.offer(false) {
                let _ = peer.events.send(Box::new(ServerEvent::Offer(offer)));
            }
        }
        Ok(())
    }

    fn publish(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        publish: bool,
    ) -> Result<(), MediaError> {
        // An attached QUIC session carries the participant's media when there is one.
        let (grants, slot) = if let Some(remote) = self.remotes.get_mut(&participant) {
            (remote.grants, &mut remote.track)
        } else if let Some(peer) = self.peers.get_mut(&participant) {
            (peer.grants, &mut peer.track)
        } else {
            return Err(MediaError::UnknownParticipant);
        };
        if !grants.can_publish {
            return Err(MediaError::NotAllowed("this token has no publish grant"));
        }
        match (publish, *slot) {
            (true, None) => {
                let track = TrackId::new();
                self.engine
                    .publish_track(now, participant, track)
                    .map_err(|_| MediaError::NotAllowed("cannot publish"))?;
                *slot = Some(track);
            }
            (false, Some(track)) => {
                // The track is ours and published; an error means it is already gone.
                let _ = self.engine.unpublish_track(now, participant, track);
                *slot = None;
            }
            _ => {}
        }
        Ok(())
    }

    fn restart(
        &mut self,
        participant: ParticipantId,
        events: EventSender,
    ) -> Result<String, MediaError> {
        let peer = self
            .peers
            .get_mut(&participant)
            .ok_or(MediaError::UnknownParticipant)?;
        peer.events = events;
        peer.pending = None;
        let mut api = peer.rtc.sdp_api();
        let creds = api.ice_restart(true);
        let (offer, pending) = api.apply().ok_or(MediaError::NoPendingOffer)?;
        peer.pending = Some(pending);
        self.by_ufrag.remove(&peer.ufrag);
        peer.ufrag = creds.ufrag.clone();
        self.by_ufrag.insert(creds.ufrag, participant);
        self.dirty.insert(participant);
        Ok(offer.to_sdp_string())
    }

    fn remove(&mut self, now: Instant, participant: ParticipantId) {
        if let Some(remote) = self.remotes.remove(&participant) {
            // A full channel means the session is gone or going; it ends on its own then.
            let _ = remote.out.try_send(RemoteOut::Removed);
            if !self.peers.contains_key(&participant) {
                let _ = self.engine.remove_participant(now, participant);
                return;
            }
        }
        let Some(mut peer) = self.peers.remove(&participant) else {
            return;
        };
        self.by_ufrag.remove(&peer.ufrag);
        self.by_addr.retain(|_, p| *p != participant);
        peer.rtc.disconnect();
        let _ = peer.events.send(Box::new(ServerEvent::Removed));
        // Every peer was added to the engine when it joined.
        let _ = self.engine.remove_participant(now, participant);
    }

    /// Drains str0m and engine outputs: datagrams to send, events to act on.
    async fn flush(&mut self, now: Instant) {
        loop {
            let mut draining = std::mem::take(&mut self.draining);
            draining.extend(self.dirty.drain());
            for participant in draining.drain(..) {
                self.drain_peer(now, participant);
            }
            self.draining = draining;
            let mut fresh = false;
            while let Some(output) = self.engine.poll_output() {
                let resent = matches!(
                    output,
                    EngineOutput::Forward {
                        retransmission: true,
                        ..
                    }
                );
                // A written packet marks its peer dirty, so the loop drains it next.
                let written = self.handle_engine_output(now, output);
                fresh |= written && !resent;
            }
            if fresh {
                self.forwarded_at = Some(Instant::now());
            }
            if self.dirty.is_empty() {
                break;
            }
        }
        self.outbox.send(&self.socket).await;
    }

    fn drain_peer(&mut self, now: Instant, participant: ParticipantId) {
        let mut dead = false;
        loop {
            let Some(peer) = self.peers.get_mut(&participant) else {
                return;
            };
            if !peer.rtc.is_alive() {
                dead = true;
                break;
            }
            match peer.rtc.poll_output() {
                Ok(RtcOutput::Timeout(at)) => {
                    peer.timeout = at;
                    if peer.scheduled.is_none_or(|scheduled| at < scheduled) {
                        peer.scheduled = Some(at);
                        self.timers.push(Reverse((at, participant)));
                    }
                    break;
                }
                Ok(RtcOutput::Transmit(t)) => self.outbox.push(t.destination, t.contents),
                Ok(RtcOutput::Event(event)) => self.handle_rtc_event(now, participant, event),
                Err(err) => {
                    tracing::debug!(participant = %participant, %err, "peer failed");
                    dead = true;
                    break;
                }
            }
        }
        if dead {
            self.remove(now, participant);
        }
    }

    fn handle_rtc_event(&mut self, now: Instant, participant: ParticipantId, event: RtcEvent) {
        let Some(peer) = self.peers.get_mut(&participant) else {
            return;
        };
        if matches!(event, RtcEvent::ChannelData(_)) {
            self.metrics.datachannel_in();
        }
        match event {
            RtcEvent::Connected => {
                if let Some(since) = peer.connecting_since.take() {
                    self.metrics
                        .ice_connected(now.saturating_duration_since(since));
                }
                peer.disconnected_at = None;
                let _ = peer.events.send(Box::new(ServerEvent::Connected));
            }
            RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                peer.disconnected_at.get_or_insert(now);
                self.timers.push(Reverse((now + self.grace, participant)));
                let _ = peer.events.send(Box::new(ServerEvent::Disconnected));
            }
            RtcEvent::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => {
                peer.disconnected_at = None;
            }
            RtcEvent::RtpPacket(packet) => {
                let Some(track) = peer.track else {
                    return;
                };
                let ext = &packet.header.ext_vals;
                let audio_level = ext.audio_level.map(|dbov| {
                    AudioLevel::new(ext.voice_activity.unwrap_or(false), dbov.unsigned_abs())
                });
                let rtp = RtpIn {
                    seq: *packet.seq_no as u16,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload_type: *packet.header.payload_type,
                    payload: packet.payload,
                    audio_level,
                };
                self.engine.handle_rtp(now, participant, track, rtp);
            }
            RtcEvent::RawPacket(raw) => {
                if let RawPacket::RtcpRx(Rtcp::Nack(nack)) = *raw {
                    let Some(slot) = peer
                        .rtc
                        .direct_api()
                        .stream_tx(&nack.ssrc)
                        .map(|s| s.mid())
                        .and_then(|mid| peer.mid_slots.get(&mid).copied())
                    else {
                        return;
                    };
                    let seqs: Vec<u16> = nack
                        .reports
                        .iter()
                        .flat_map(|e| {
                            std::iter::once(e.pid).chain(
                                (0..16u16)
                                    .filter(move |bit| e.blp & (1 << bit) != 0)
                                    .map(move |bit| e.pid.wrapping_add(bit + 1)),
                            )
                        })
                        .collect();
                    if let Some(info) = self.engine.slot(slot) {
                        self.engine.handle_nack(now, participant, info.ssrc, &seqs);
                    }
                }
            }
            RtcEvent::ChannelOpen(id, label) if label == "chat" => peer.chat = Some(id),
            RtcEvent::ChannelData(data) if Some(data.id) == peer.chat && !data.binary => {
                match String::from_utf8(data.data) {
                    Ok(text) => {
                        let _ = peer.events.send(Box::new(ServerEvent::ChatData(text)));
                    }
                    Err(_) => {
                        tracing::debug!(participant = %participant, "non-UTF-8 chat data dropped")
                    }
                }
            }
            RtcEvent::ChannelClose(id) if peer.chat == Some(id) => peer.chat = None,
            _ => {}
        }
    }

    /// Acts on one engine output; true if a packet was written to a peer.
    fn handle_engine_output(&mut self, now: Instant, output: EngineOutput) -> bool {
        match output {
            EngineOutput::Forward {
                to, slot, packet, ..
            } => {
                if self.remotes.contains_key(&to) {
                    return self.forward_remote(to, slot, packet);
                }
                let Some(peer) = self.peers.get_mut(&to) else {
                    return false;
                };
                // Until the peer first connects, str0m would queue packets and deliver them
                // in one burst; a new listener starts with live audio instead.
                if peer.connecting_since.is_some() {
                    return false;
                }
                let Some(mid) = peer.slot_mids.get(&slot).copied() else {
                    return false;
                };
                // Every peer negotiates from our own offers, so payload types agree across
                // peers and pass through unchanged.
                let mut api = peer.rtc.direct_api();
                let Some(stream) = api.stream_tx_by_mid(mid, None) else {
                    return false;
                };
                let mut ext = ExtensionValues::default();
                if let Some(level) = packet.audio_level {
                    ext.audio_level = Some(-(i8::try_from(level.level).unwrap_or(127)));
                    ext.voice_activity = Some(level.voice);
                }
                stream.write_rtp(
                    str0m::rtp::RtpWrite::new(
                        packet.payload_type.into(),
                        SeqNo::from(packet.ext_seq),
                        packet.timestamp,
                        now,
                        packet.payload,
                    )
                    .marker(packet.marker)
                    .ext_vals(ext),
                );
                self.dirty.insert(to);
                true
            }
            EngineOutput::Event(event) => {
                self.handle_engine_event(event);
                false
            }
        }
    }

    /// Hands a packet to an attached participant's session; a full channel drops it.
    fn forward_remote(&mut self, to: ParticipantId, slot: SlotId, packet: RtpOut) -> bool {
        let Some(remote) = self.remotes.get(&to) else {
            return false;
        };
        match remote.out.try_send(RemoteOut::Packet { slot, packet }) {
            Ok(()) => true,
            Err(_) => {
                self.metrics.dropped_backlog();
                false
            }
        }
    }

    fn handle_engine_event(&mut self, event: EngineEvent) {
        match &event {
            EngineEvent::SlotOpened(info) => {
                if let Some(remote) = self.remotes.get(&info.subscriber) {
                    // The QUIC session carries it; the peer (if any) needs no transceiver.
                    let _ = remote.out.try_send(RemoteOut::Event(event.clone()));
                } else if let Some(peer) = self.peers.get_mut(&info.subscriber) {
                    if let Some(mid) = peer.free_mids.pop() {
                        peer.slot_mids.insert(info.id, mid);
                        peer.mid_slots.insert(mid, info.id);
                    } else {
                        peer.unplaced.push(info.id);
                        peer.request_offer();
                        self.dirty.insert(info.subscriber);
                    }
                }
            }
            EngineEvent::SlotClosed {
                subscriber, slot, ..
            } => {
                if let Some(remote) = self.remotes.get(subscriber) {
                    let _ = remote.out.try_send(RemoteOut::Event(event.clone()));
                }
                if let Some(peer) = self.peers.get_mut(subscriber) {
                    peer.unplaced.retain(|s| s != slot);
                    if let Some(mid) = peer.slot_mids.remove(slot) {
                        peer.mid_slots.remove(&mid);
                        peer.free_mids.push(mid);
                    }
                }
            }
            _ => {}
        }
        // Room events go to every session in the room: the room's members, not a scan of
        // every peer of the shard.
        if let Some(room) = event_room(&event) {
            for participant in self.engine.participants(room) {
                if let Some(peer) = self.peers.get(participant) {
                    let _ = peer.events.send(Box::new(ServerEvent::Room(event.clone())));
                }
                if let Some(remote) = self.remotes.get(participant) {
                    let _ = remote.out.try_send(RemoteOut::Event(event.clone()));
                }
            }
        }
    }
}

fn event_room(event: &EngineEvent) -> Option<RoomId> {
    match event {
        EngineEvent::ParticipantJoined { room, .. }
        | EngineEvent::ParticipantLeft { room, .. }
        | EngineEvent::TrackPublished { room, .. }
        | EngineEvent::TrackUnpublished { room, .. }
        | EngineEvent::Muted { room, .. }
        | EngineEvent::ActiveSpeakers { room, .. } => Some(*room),
        _ => None,
    }
}

impl Peer {
    /// Asks for an offer now if none is pending, else after the pending one is answered.
    fn request_offer(&mut self) {
        if self.pending.is_some() {
            self.renegotiate = true;
        } else if let Some(offer) = self.offer(false) {
            let _ = self.events.send(Box::new(ServerEvent::Offer(offer)));
        }
    }

    /// Builds an offer with everything the peer needs now: on the first one a receive
    /// transceiver for the microphone (with the publish grant) and the `chat` data channel; on
    /// every one a send transceiver per slot waiting for one.
    fn offer(&mut self, first: bool) -> Option<String> {
        let mut api = self.rtc.sdp_api();
        if first {
            if self.grants.can_publish {
                self.publish_mid =
                    Some(api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None));
            }
            api.add_channel("chat".to_owned());
        }
        for slot in self.unplaced.drain(..) {
            let mid = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some(format!("veza-{}", slot.0)),
                Some(format!("slot-{}", slot.0)),
                None,
            );
            self.slot_mids.insert(slot, mid);
            self.mid_slots.insert(mid, slot);
        }
        let (offer, pending) = api.apply()?;
        self.pending = Some(pending);
        Some(offer.to_sdp_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a2\r\n";

    #[tokio::test]
    async fn rooms_spread_over_shards_each_on_its_own_port() {
        let media = MediaServer::start(
            MediaConfig {
                udp_addr: "127.0.0.1:0".parse().expect("addr"),
                shards: 3,
                ..MediaConfig::default()
            },
            EngineConfig::default(),
            MediaMetrics::new(),
        )
        .await
        .expect("media");
        let mut ports: Vec<u16> = media.local_addrs().iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3, "one port per shard");
        let mut used = HashSet::new();
        for _ in 0..60 {
            let room = RoomId::new();
            let pinned = media.for_room(room);
            // A room always maps to one shard, whose address the pinned handle reports.
            assert_eq!(pinned.local_addr(), media.for_room(room).local_addr());
            assert_eq!(pinned.candidates()[0].port(), pinned.local_addr().port());
            used.insert(pinned.local_addr());
        }
        assert_eq!(used.len(), 3, "60 rooms use every shard");
        // Participant calls of an unpinned handle reach the shard that has the participant.
        let room = RoomId::new();
        let participant = ParticipantId::new();
        let (events, _rx) = mpsc::unbounded_channel();
        let grants = Grants {
            can_publish: true,
            can_subscribe: true,
            can_chat: true,
        };
        media
            .join(
                JoinRequest {
                    room,
                    participant,
                    grants,
                },
                events,
            )
            .await
            .expect("join");
        media
            .publish(participant, true)
            .await
            .expect("the unpinned handle finds the participant's shard");
        assert!(matches!(
            media.publish(ParticipantId::new(), true).await,
            Err(MediaError::UnknownParticipant)
        ));
    }

    #[test]
    fn audio_sections_are_found_in_order() {
        let mids: Vec<String> = audio_mids(OFFER).iter().map(|m| m.to_string()).collect();
        assert_eq!(mids, ["0", "a2"]);
        assert!(audio_mids("v=0\r\n").is_empty());
    }

    #[test]
    fn rejected_sections_get_the_offered_formats() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 0 UDP/TLS/RTP/SAVPF \r\na=mid:1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        let fixed = with_rejected_formats(answer, OFFER);
        assert!(
            fixed.contains("m=video 0 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{fixed}"
        );
        assert!(
            fixed.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0"),
            "{fixed}"
        );
        assert_eq!(fixed.lines().count(), answer.lines().count());
    }

    #[test]
    fn answers_do_not_offer_trickle() {
        let answer = "v=0\r\na=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(
            without_trickle(answer),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        );
    }
}
