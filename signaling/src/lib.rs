//! Veza signaling: the WebSocket session at `GET /rtc?token=<media token>`.
//!
//! A session checks the media token, joins the participant to the media shard, and then relays:
//! SDP offers from the server and answers from the client, room events (joined, left, tracks,
//! speaking, muted) and moderation. The protocol (`veza_proto::signal`, version 1) is documented
//! in `docs/protocol.md`. The session logic is written against a `Stream`/`Sink` of text frames
//! ([`run_session`]) so it can be driven without a socket.
//!
//! A dropped WebSocket does not end the participant at once: for the reconnect grace period the
//! media stays up, and a new session with the same participant (the same media token) resumes it
//! with an ICE restart.
//!
//! One node's signaling knows only its own sessions. Nodes of a cluster share their rooms'
//! presence, speakers, mutes and moderation over NATS once joined with
//! [`Signaling::join_cluster`] (see the `cluster` module); without it nothing crosses.

mod cluster;
mod ingest;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use veza_chat::{ChatService, Sender};
use veza_proto::chat::{ChatEvent, ChatReply, ChatRequest};
use veza_proto::signal::{
    ClientMessage, MAX_CLIENT_MESSAGE, ModerateAction, PROTOCOL_VERSION, ParticipantInfo,
    ServerMessage, Speaker,
};
use veza_proto::{MediaClaims, MessageId, ParticipantId, RoomId, UserId};
use veza_sfu::engine::Event as EngineEvent;
use veza_sfu::webrtc::{JoinOutcome, JoinRequest, MediaServer, ServerEvent};

pub use cluster::{ClusterConfig, ClusterError};
pub use veza_sfu::TokenVerifier;

/// Shared state of all sessions. Cheap to clone.
#[derive(Clone)]
pub struct Signaling {
    inner: Arc<Inner>,
}

struct Inner {
    media: MediaServer,
    verifier: Arc<dyn TokenVerifier>,
    chat: Option<ChatService>,
    grace: Duration,
    rooms: Mutex<HashMap<RoomId, Room>>,
    /// Set by [`Signaling::drain`]: new sessions are sent elsewhere, ending ones leave at once.
    draining: std::sync::atomic::AtomicBool,
    /// The other nodes, once [`Signaling::join_cluster`] succeeded.
    cluster: OnceLock<cluster::Link>,
    /// How many speakers a `speaking` message lists at most: as many as the engine reports.
    speaker_limit: usize,
}

/// Who is in a room, as signaling knows them.
#[derive(Default)]
struct Room {
    /// This node's members.
    members: HashMap<ParticipantId, Member>,
    /// Other nodes' members and speakers (empty without a cluster).
    remote: cluster::RemoteRoom,
    /// The session whose room events (speakers, moderators' mutes) this node reports to the
    /// cluster: every session gets the same events, one reports them.
    reporter: Option<ParticipantId>,
    /// This node's speakers as last reported, loudest first.
    local_speakers: Vec<Speaker>,
}

struct Member {
    info: ParticipantInfo,
    /// The live session's outbox; `None` while disconnected (within the grace period).
    /// Boxed messages: an idle session's channel holds a block of pointers (256 bytes), not
    /// of messages (2.3 KiB).
    outbox: Option<mpsc::UnboundedSender<Box<ServerMessage>>>,
    /// Bumped on every (re)connection, so a stale disconnect timer does nothing.
    generation: u64,
    /// The room was told this member left (while it may still resume).
    announced_left: bool,
    /// This node's speakers as this member's session last heard from the engine.
    local_speakers: Vec<Speaker>,
    /// The speakers this member's session was last sent, in order.
    speaking_sent: Vec<ParticipantId>,
}

impl Room {
    /// Everyone in the room: this node's members and the other nodes'.
    fn participants(&self) -> Vec<ParticipantInfo> {
        let local = self.members.values().map(|m| m.info.clone());
        let remote = self
            .remote
            .members()
            .filter(|info| !self.members.contains_key(&info.participant_id))
            .cloned();
        local.chain(remote).collect()
    }

    /// Sends `message` to every connected member.
    fn send_all(&self, message: &ServerMessage) {
        for member in self.members.values() {
            if let Some(outbox) = &member.outbox {
                let _ = outbox.send(Box::new(message.clone()));
            }
        }
    }

    /// True when `me` is (or now becomes) the session that reports the room's events to the
    /// cluster: the first to see one while the previous reporter is gone or disconnected.
    fn reporting(&mut self, me: ParticipantId) -> bool {
        if self.reporter == Some(me) {
            return true;
        }
        let current = self.reporter.and_then(|r| self.members.get(&r));
        if current.is_some_and(|m| m.outbox.is_some()) {
            return false;
        }
        self.reporter = Some(me);
        true
    }

    /// Sends every connected member whose merged speakers changed (after another node's
    /// changed) a new `speaking`.
    fn refresh_speaking(&mut self, limit: usize) {
        for member in self.members.values_mut() {
            let Some(outbox) = &member.outbox else {
                continue;
            };
            let merged = self.remote.merge_speakers(&member.local_speakers, limit);
            if let Some(message) = speaking_change(&mut member.speaking_sent, merged) {
                let _ = outbox.send(Box::new(message));
            }
        }
    }
}

/// The `speaking` message for `merged`, unless a session was already sent those speakers in
/// that order (`sent`, updated).
fn speaking_change(sent: &mut Vec<ParticipantId>, merged: Vec<Speaker>) -> Option<ServerMessage> {
    let ids: Vec<ParticipantId> = merged.iter().map(|s| s.participant_id).collect();
    if *sent == ids {
        return None;
    }
    *sent = ids;
    Some(ServerMessage::Speaking { speakers: merged })
}

/// How long after its WebSocket drops the room is told a participant left. It can still resume
/// until the grace period ends, and the room is then told it joined again.
const LEAVE_NOTICE: Duration = Duration::from_secs(8);

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling").finish_non_exhaustive()
    }
}

impl Signaling {
    /// Sessions over `media`, checking tokens with `verifier`, chat data to `chat`.
    pub fn new(
        media: MediaServer,
        verifier: Arc<dyn TokenVerifier>,
        chat: Option<ChatService>,
        grace: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                media,
                verifier,
                chat,
                grace,
                rooms: Mutex::new(HashMap::new()),
                draining: std::sync::atomic::AtomicBool::new(false),
                cluster: OnceLock::new(),
                speaker_limit: veza_sfu::engine::Config::default().active_speakers,
            }),
        }
    }

    /// Joins the cluster over the NATS server(s) at `url` (e.g. `nats://127.0.0.1:4222`, or
    /// several separated by commas): from now on this node's rooms share presence, speakers,
    /// mutes and moderation with the other nodes' signaling. Makes its own connection;
    /// reconnections are automatic and retried forever.
    pub async fn join_cluster(&self, url: &str, config: ClusterConfig) -> Result<(), ClusterError> {
        self.join_cluster_with(async_nats::ConnectOptions::new(), url, config)
            .await
    }

    /// [`join_cluster`](Self::join_cluster) with client options (credentials, TLS, name…).
    /// The link sets `no_echo`, its reconnection delay and the event callback itself.
    pub async fn join_cluster_with(
        &self,
        options: async_nats::ConnectOptions,
        url: &str,
        config: ClusterConfig,
    ) -> Result<(), ClusterError> {
        if self.inner.cluster.get().is_some() {
            return Err(ClusterError::AlreadyJoined);
        }
        let link =
            cluster::Link::connect(options, url, config, Arc::downgrade(&self.inner)).await?;
        self.inner
            .cluster
            .set(link)
            .map_err(|_| ClusterError::AlreadyJoined)?;
        // Rooms that already have sessions are announced now, not at the first tick.
        self.cluster_tick(Instant::now(), true);
        Ok(())
    }

    fn cluster(&self) -> Option<&cluster::Link> {
        self.inner.cluster.get()
    }

    /// Tells the other nodes `event` about `room`, if there are any.
    fn tell_cluster(&self, room: RoomId, event: cluster::RoomEvent) {
        if let Some(link) = self.cluster() {
            link.publish(room, event);
        }
    }

    /// The media shard.
    pub fn media(&self) -> &MediaServer {
        &self.inner.media
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Room>> {
        // A poisoned lock means a panic elsewhere; the map itself is still consistent.
        self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `message` to every connected member of `room`.
    fn broadcast(&self, room: RoomId, message: &ServerMessage) {
        if let Some(room) = self.rooms().get(&room) {
            for member in room.members.values() {
                if let Some(outbox) = &member.outbox {
                    let _ = outbox.send(Box::new(message.clone()));
                }
            }
        }
    }

    fn member_info(&self, room: RoomId, participant: ParticipantId) -> Option<ParticipantInfo> {
        self.rooms()
            .get(&room)?
            .members
            .get(&participant)
            .map(|m| m.info.clone())
    }

    fn remote_info(&self, room: RoomId, participant: ParticipantId) -> Option<ParticipantInfo> {
        self.rooms().get(&room)?.remote.get(participant).cloned()
    }

    /// Session `me` heard from the engine that `participant` was muted or unmuted (for a
    /// moderator): the reporting session records it and tells the cluster.
    fn media_muted(
        &self,
        room: RoomId,
        me: ParticipantId,
        participant: ParticipantId,
        muted: bool,
    ) {
        {
            let mut rooms = self.rooms();
            let Some(r) = rooms.get_mut(&room) else {
                return;
            };
            if !r.reporting(me) {
                return;
            }
            let Some(member) = r.members.get_mut(&participant) else {
                return;
            };
            member.info.muted = muted;
        }
        self.tell_cluster(
            room,
            cluster::RoomEvent::Muted {
                participant_id: participant,
                muted,
                by_moderator: true,
            },
        );
    }

    /// Session `me` heard from the engine that this node's loudest speakers are `speakers`:
    /// returns the `speaking` for its client (merged with the other nodes'), if that changed.
    /// The reporting session tells the cluster.
    fn local_speakers(
        &self,
        room: RoomId,
        me: ParticipantId,
        speakers: Vec<Speaker>,
    ) -> Option<ServerMessage> {
        let limit = self.inner.speaker_limit;
        let (message, report) = {
            let mut rooms = self.rooms();
            let r = rooms.get_mut(&room)?;
            let report = (r.reporting(me) && r.local_speakers != speakers).then(|| {
                r.local_speakers.clone_from(&speakers);
                speakers.clone()
            });
            let merged = r.remote.merge_speakers(&speakers, limit);
            let message = r.members.get_mut(&me).and_then(|member| {
                member.local_speakers = speakers;
                speaking_change(&mut member.speaking_sent, merged)
            });
            (message, report)
        };
        if let Some(speakers) = report {
            self.tell_cluster(room, cluster::RoomEvent::Speaking { speakers });
        }
        message
    }

    fn update_info(
        &self,
        room: RoomId,
        participant: ParticipantId,
        f: impl FnOnce(&mut ParticipantInfo),
    ) {
        if let Some(member) = self
            .rooms()
            .get_mut(&room)
            .and_then(|r| r.members.get_mut(&participant))
        {
            f(&mut member.info);
        }
    }

    /// Removes every participant of `user` in `room` from the media path now (a ban); their
    /// sessions are told `kicked` and the room `participant_left`.
    pub fn remove_user(&self, room: RoomId, user: UserId) {
        let participants: Vec<ParticipantId> = self
            .rooms()
            .get(&room)
            .map(|r| {
                r.members
                    .values()
                    .filter(|m| m.info.user_id == user)
                    .map(|m| m.info.participant_id)
                    .collect()
            })
            .unwrap_or_default();
        let media = self.inner.media.for_room(room);
        for participant in participants {
            media.leave(participant);
        }
    }

    /// Drains this node: every session is told to `reconnect` (join again through the API,
    /// which places it on another node) and closes; its participant leaves at once, without
    /// the reconnect grace period. Sessions that start afterwards get the same answer.
    pub fn drain(&self, reason: &str) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let message = ServerMessage::Reconnect {
            reason: reason.to_owned(),
        };
        for room in self.rooms().values() {
            for member in room.members.values() {
                if let Some(outbox) = &member.outbox {
                    let _ = outbox.send(Box::new(message.clone()));
                }
            }
        }
    }

    fn draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn forget(&self, room: RoomId, participant: ParticipantId) {
        let mut rooms = self.rooms();
        if let Some(r) = rooms.get_mut(&room) {
            r.members.remove(&participant);
            if r.members.is_empty() {
                rooms.remove(&room);
            }
        }
    }
}

/// `GET /rtc?token=…`, and WHIP/WHEP at `/whip/{room}` and `/whep/{room}`.
pub fn router(signaling: Signaling) -> Router {
    Router::new()
        .route("/rtc", get(upgrade))
        .merge(ingest::router())
        .with_state(signaling)
}

#[derive(Deserialize)]
struct RtcQuery {
    token: Option<String>,
}

/// The token is checked before the upgrade, so a bad one gets a plain 401 either way.
async fn upgrade(
    State(signaling): State<Signaling>,
    Query(query): Query<RtcQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(token) = query.token else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "pass the media token as ?token=",
        );
    };
    let claims = match signaling.inner.verifier.verify_media(&token) {
        Ok(claims) => claims,
        Err(reason) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                &format!("the media token is not valid: {reason}"),
            );
        }
    };
    match ws {
        // Small socket buffers: tungstenite's default 128 KiB read buffer, filled on the first
        // read, was most of an idle session's memory (188 KiB per session for 10 000); the
        // largest client message (an SDP answer) is read in a few chunks of 2 KiB.
        Ok(ws) => ws
            .read_buffer_size(2048)
            .write_buffer_size(0)
            .max_message_size(MAX_CLIENT_MESSAGE)
            .on_upgrade(move |socket| serve_socket(signaling, claims, socket)),
        Err(rejection) => refuse(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            &rejection.body_text(),
        ),
    }
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

async fn serve_socket(signaling: Signaling, claims: MediaClaims, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let frames = stream.filter_map(|msg| async move {
        match msg {
            Ok(Message::Text(text)) => Some(Frame::Text(text.to_string())),
            Ok(Message::Binary(_)) => Some(Frame::Unsupported),
            Ok(Message::Close(_)) | Err(_) => Some(Frame::Closed),
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
        }
    });
    let sink =
        sink.with(|text: String| async move { Ok::<_, axum::Error>(Message::Text(text.into())) });
    run_session(signaling, claims, Box::pin(frames), Box::pin(sink)).await;
}

/// One frame from the client, as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame: not part of the protocol.
    Unsupported,
    /// The connection ended.
    Closed,
}

/// Runs one session to its end: `frames` from the client, JSON text to `sink`.
pub async fn run_session<F, S>(signaling: Signaling, claims: MediaClaims, frames: F, mut sink: S)
where
    F: Stream<Item = Frame> + Unpin,
    S: Sink<String> + Unpin,
{
    let room = claims.room;
    let participant = claims.participant;
    if signaling.draining() {
        let _ = send(
            &mut sink,
            &ServerMessage::Reconnect {
                reason: "draining".into(),
            },
        )
        .await;
        return;
    }
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (outbox_tx, mut outbox) = mpsc::unbounded_channel();
    // The room's shard: every media call of this session goes straight there.
    let media = signaling.inner.media.for_room(room);

    // Join, or resume a participant still within its grace period.
    let resumed = signaling.member_info(room, participant).is_some();
    let offer = if resumed {
        media.restart(participant, events_tx).await
    } else {
        let request = JoinRequest {
            room,
            participant,
            grants: claims.grants,
        };
        media.join(request, events_tx).await
    };
    let metrics = media.metrics();
    let offer = match offer {
        Ok(offer) => {
            metrics.join(if resumed {
                JoinOutcome::Resumed
            } else {
                JoinOutcome::Ok
            });
            offer
        }
        Err(err) => {
            metrics.join(JoinOutcome::Failed);
            let _ = send(
                &mut sink,
                &ServerMessage::error("join_failed", err.to_string()),
            )
            .await;
            return;
        }
    };
    // Counted in `veza_signaling_sessions` until this function returns.
    let _session = metrics.session();
    // The hello's list is taken with the outbox in place, under one lock: any later change
    // reaches the session through the outbox, none is both listed and announced.
    let (generation, back_after_notice, first_here, participants) = {
        let mut rooms = signaling.rooms();
        let first_here = !rooms.contains_key(&room);
        let r = rooms.entry(room).or_default();
        let member = r.members.entry(participant).or_insert_with(|| Member {
            info: ParticipantInfo {
                participant_id: participant,
                user_id: claims.sub,
                name: claims.name.clone(),
                role: claims.role,
                publishing: false,
                muted: false,
            },
            outbox: None,
            generation: 0,
            announced_left: false,
            local_speakers: Vec::new(),
            speaking_sent: Vec::new(),
        });
        member.outbox = Some(outbox_tx);
        member.generation += 1;
        let back = std::mem::take(&mut member.announced_left);
        let generation = member.generation;
        let participants = r.participants();
        (generation, back, first_here, participants)
    };
    if (!resumed || back_after_notice)
        && let Some(me) = signaling.member_info(room, participant)
    {
        signaling.broadcast_except(
            room,
            participant,
            &ServerMessage::ParticipantJoined {
                participant: me.clone(),
            },
        );
        signaling.tell_cluster(room, cluster::RoomEvent::Member { participant: me });
    }
    if first_here {
        signaling.tell_cluster(room, cluster::RoomEvent::RosterRequest);
    }
    let hello = ServerMessage::Joined {
        protocol: PROTOCOL_VERSION,
        room_id: room,
        participant_id: participant,
        grants: claims.grants,
        participants,
        resumed,
    };
    let mut chat_events = signaling
        .inner
        .chat
        .as_ref()
        .map(|chat| chat.subscribe(room));
    // Messages this session sent and was acknowledged for: their own echo is not delivered.
    let mut acked: VecDeque<MessageId> = VecDeque::new();
    let mut frames = frames;
    // The hello (with the room's roster) and the offer are not kept for the session's life.
    let mut open = send(&mut sink, &hello).await;
    drop(hello);
    open = open && send(&mut sink, &ServerMessage::Offer { sdp: offer }).await;
    let mut kicked = false;
    while open {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Frame::Text(text)) => {
                    // Boxed, like the chat handler below: their futures (database queries
                    // among them) would otherwise make every idle session's task kilobytes
                    // bigger.
                    for reply in Box::pin(handle_client(&signaling, &claims, &text)).await {
                        open &= send(&mut sink, &reply).await;
                    }
                }
                Some(Frame::Unsupported) => {
                    open &= send(&mut sink, &ServerMessage::error("unsupported_frame", "send JSON text frames")).await;
                }
                Some(Frame::Closed) | None => open = false,
            },
            Some(event) = events.recv() => match *event {
                ServerEvent::Removed => {
                    kicked = true;
                    let _ = send(&mut sink, &ServerMessage::Kicked).await;
                    open = false;
                }
                ServerEvent::ChatData(text) => {
                    let reply = Box::pin(handle_chat(&signaling, &claims, &text, &mut acked)).await;
                    if let Ok(json) = serde_json::to_string(&reply) {
                        media.send_chat(participant, json);
                    }
                }
                event => {
                    if let Some(message) = server_message(&signaling, room, participant, event) {
                        open &= send(&mut sink, &message).await;
                    }
                }
            },
            Some(event) = next_chat(&mut chat_events) => {
                let own_echo = matches!(event, ChatEvent::Created { .. })
                    && acked.contains(&event.message().id);
                if !own_echo && let Ok(json) = serde_json::to_string(&event) {
                    media.send_chat(participant, json);
                }
            }
            Some(message) = outbox.recv() => {
                open &= send(&mut sink, &message).await;
                if matches!(*message, ServerMessage::Reconnect { .. }) {
                    // Sent elsewhere: no grace period here.
                    media.leave(participant);
                    kicked = true;
                    open = false;
                }
            }
        }
    }

    if kicked || signaling.draining() {
        if !kicked {
            media.leave(participant);
        }
        signaling.forget(room, participant);
        signaling.broadcast(
            room,
            &ServerMessage::ParticipantLeft {
                participant_id: participant,
            },
        );
        signaling.tell_cluster(
            room,
            cluster::RoomEvent::Left {
                participant_id: participant,
            },
        );
        return;
    }
    // Keep the participant for the grace period; a resumed session bumps the generation.
    if let Some(member) = signaling
        .rooms()
        .get_mut(&room)
        .and_then(|r| r.members.get_mut(&participant))
    {
        member.outbox = None;
    }
    let signaling = signaling.clone();
    tokio::spawn(async move {
        let grace = signaling.inner.grace;
        let notice = LEAVE_NOTICE.min(grace);
        tokio::time::sleep(notice).await;
        if !signaling.announce_left_if_gone(room, participant, generation) {
            return;
        }
        tokio::time::sleep(grace - notice).await;
        if signaling.still_gone(room, participant, generation) {
            signaling.inner.media.for_room(room).leave(participant);
            signaling.forget(room, participant);
        }
    });
}

impl Signaling {
    /// True while the member has not come back since session `generation` ended.
    fn still_gone(&self, room: RoomId, participant: ParticipantId, generation: u64) -> bool {
        self.rooms()
            .get(&room)
            .and_then(|r| r.members.get(&participant))
            .is_some_and(|m| m.generation == generation && m.outbox.is_none())
    }

    /// Tells the room the member left, if it is still gone; returns whether it was.
    fn announce_left_if_gone(
        &self,
        room: RoomId,
        participant: ParticipantId,
        generation: u64,
    ) -> bool {
        let gone = {
            let mut rooms = self.rooms();
            match rooms
                .get_mut(&room)
                .and_then(|r| r.members.get_mut(&participant))
            {
                Some(m) if m.generation == generation && m.outbox.is_none() => {
                    m.announced_left = true;
                    true
                }
                _ => false,
            }
        };
        if gone {
            self.broadcast(
                room,
                &ServerMessage::ParticipantLeft {
                    participant_id: participant,
                },
            );
            self.tell_cluster(
                room,
                cluster::RoomEvent::Left {
                    participant_id: participant,
                },
            );
        }
        gone
    }
}

impl Signaling {
    fn broadcast_except(&self, room: RoomId, except: ParticipantId, message: &ServerMessage) {
        if let Some(room) = self.rooms().get(&room) {
            for (id, member) in &room.members {
                if *id != except
                    && let Some(outbox) = &member.outbox
                {
                    let _ = outbox.send(Box::new(message.clone()));
                }
            }
        }
    }
}

async fn send<S: Sink<String> + Unpin>(sink: &mut S, message: &ServerMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => sink.send(text).await.is_ok(),
        Err(_) => true,
    }
}

/// Handles one client frame; returns the replies for this client.
async fn handle_client(
    signaling: &Signaling,
    claims: &MediaClaims,
    text: &str,
) -> Vec<ServerMessage> {
    let media = &signaling.inner.media.for_room(claims.room);
    let me = claims.participant;
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(err) => {
            return vec![ServerMessage::error(
                "invalid_message",
                format!("not a valid message: {err}"),
            )];
        }
    };
    match message {
        ClientMessage::Ping => vec![ServerMessage::Pong],
        ClientMessage::Answer { sdp } => match media.answer(me, sdp).await {
            Ok(()) => vec![],
            Err(err) => vec![ServerMessage::error("invalid_answer", err.to_string())],
        },
        ClientMessage::Candidate { candidate } => {
            media.candidate(me, candidate);
            vec![]
        }
        ClientMessage::Publish | ClientMessage::Unpublish => {
            let publish = matches!(message, ClientMessage::Publish);
            if !claims.grants.can_publish {
                return vec![ServerMessage::error(
                    "publish_not_allowed",
                    "your role in this room may listen but not publish",
                )];
            }
            match media.publish(me, publish).await {
                Ok(()) => {
                    signaling.update_info(claims.room, me, |info| info.publishing = publish);
                    if let Some(info) = signaling.member_info(claims.room, me) {
                        signaling.tell_cluster(
                            claims.room,
                            cluster::RoomEvent::Member { participant: info },
                        );
                    }
                    vec![]
                }
                Err(err) => vec![ServerMessage::error("publish_failed", err.to_string())],
            }
        }
        ClientMessage::Mute { muted } => {
            signaling.update_info(claims.room, me, |info| info.muted = muted);
            signaling.broadcast(
                claims.room,
                &ServerMessage::Muted {
                    participant_id: me,
                    muted,
                    by_moderator: false,
                },
            );
            signaling.tell_cluster(
                claims.room,
                cluster::RoomEvent::Muted {
                    participant_id: me,
                    muted,
                    by_moderator: false,
                },
            );
            vec![]
        }
        ClientMessage::Moderate {
            participant_id,
            action,
        } => {
            // A member of this node, or else of another one (whose node applies the action).
            let local = signaling.member_info(claims.room, participant_id);
            let remote = match local {
                Some(_) => None,
                None => signaling.remote_info(claims.room, participant_id),
            };
            let target_role = local.as_ref().or(remote.as_ref()).map(|t| t.role);
            if let Err(denied) = veza_proto::may_moderate(Some(claims.role), target_role) {
                return vec![ServerMessage::error(denied.code(), denied.message())];
            }
            if local.is_some() {
                moderate(media, participant_id, action);
            } else if remote.is_some() {
                signaling.tell_cluster(
                    claims.room,
                    cluster::RoomEvent::Moderate {
                        participant_id,
                        action,
                        by: me,
                        role: claims.role,
                    },
                );
            } else {
                return vec![ServerMessage::error(
                    "unknown_participant",
                    "no such participant in this room",
                )];
            }
            vec![]
        }
    }
}

/// Applies a moderator's `action` on `participant`, a member of this node.
fn moderate(media: &MediaServer, participant: ParticipantId, action: ModerateAction) {
    match action {
        ModerateAction::Mute => media.set_muted(participant, true),
        ModerateAction::Unmute => media.set_muted(participant, false),
        ModerateAction::Kick => media.leave(participant),
    }
}

/// Maps a media event for session `me` to what its client is told.
fn server_message(
    signaling: &Signaling,
    room: RoomId,
    me: ParticipantId,
    event: ServerEvent,
) -> Option<ServerMessage> {
    match event {
        ServerEvent::Offer(sdp) => Some(ServerMessage::Offer { sdp }),
        ServerEvent::Connected => Some(ServerMessage::Connected),
        ServerEvent::Disconnected | ServerEvent::Removed | ServerEvent::ChatData(_) => None,
        ServerEvent::Room(event) => match event {
            EngineEvent::TrackPublished { participant, .. } => {
                Some(ServerMessage::TrackPublished {
                    participant_id: participant,
                })
            }
            EngineEvent::TrackUnpublished { participant, .. } => {
                Some(ServerMessage::TrackUnpublished {
                    participant_id: participant,
                })
            }
            EngineEvent::Muted {
                participant, muted, ..
            } => {
                signaling.media_muted(room, me, participant, muted);
                Some(ServerMessage::Muted {
                    participant_id: participant,
                    muted,
                    by_moderator: true,
                })
            }
            EngineEvent::ActiveSpeakers { speakers, .. } => {
                let speakers = speakers
                    .into_iter()
                    .map(|(participant_id, level)| Speaker {
                        participant_id,
                        level,
                    })
                    .collect();
                signaling.local_speakers(room, me, speakers)
            }
            _ => None,
        },
    }
}

/// The largest chat frame accepted on the data channel (4000 characters of up to 4 bytes, and
/// the JSON around them).
const MAX_CHAT_FRAME: usize = 17 * 1024;

/// How many of its own message ids a session remembers to skip their echo.
const ACKED_REMEMBERED: usize = 64;

/// The next event of the room's chat, if the session follows one; waits forever otherwise.
async fn next_chat(events: &mut Option<broadcast::Receiver<ChatEvent>>) -> Option<ChatEvent> {
    let Some(rx) = events else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(event) => return Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // The client catches up with `?after=<seq>`; the gap shows in its seqs.
                tracing::warn!(missed, "chat delivery lagged; events skipped");
            }
            Err(broadcast::error::RecvError::Closed) => {
                *events = None;
                return std::future::pending().await;
            }
        }
    }
}

/// Handles one frame of the `chat` data channel; returns the reply for the sender.
async fn handle_chat(
    signaling: &Signaling,
    claims: &MediaClaims,
    text: &str,
    acked: &mut VecDeque<MessageId>,
) -> ChatReply {
    let error = |code: &str, message: String, client_id: Option<String>| ChatReply::Error {
        code: code.to_owned(),
        message,
        client_id,
    };
    let Some(chat) = &signaling.inner.chat else {
        return error(
            "chat_unavailable",
            "chat is not enabled on this server".into(),
            None,
        );
    };
    if text.len() > MAX_CHAT_FRAME {
        return error(
            "message_too_long",
            format!("chat frames are at most {MAX_CHAT_FRAME} bytes"),
            None,
        );
    }
    let request: ChatRequest = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(err) => {
            return error(
                "invalid_message",
                format!("not a chat request: {err}"),
                None,
            );
        }
    };
    let sender = Sender::from_claims(claims);
    let (result, client_id) = match request {
        ChatRequest::Send { client_id, text } => (
            chat.send(&sender, &client_id, &text)
                .await
                .map(|ack| ack.message),
            Some(client_id),
        ),
        ChatRequest::Edit { seq, text, .. } => (chat.edit(&sender, seq, &text).await, None),
        ChatRequest::Delete { seq, .. } => (chat.delete(&sender, seq).await, None),
    };
    match result {
        Ok(message) => {
            if acked.len() == ACKED_REMEMBERED {
                acked.pop_front();
            }
            acked.push_back(message.id);
            ChatReply::Ack { message }
        }
        Err(err) => error(err.code(), err.to_string(), client_id),
    }
}
