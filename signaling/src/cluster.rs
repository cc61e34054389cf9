//! Rooms that span nodes: presence, speaking, mutes and moderation over core NATS.
//!
//! Every node's signaling keeps the roster of its own sessions ([`super::Room`]). With a
//! cluster link ([`Signaling::join_cluster`]) it also tells the other nodes what happens to
//! them, and keeps a [`RemoteRoom`] for each room it has members in: the other nodes' members
//! and speakers, shown to its own sessions as if they were local.
//!
//! Messages are JSON [`Envelope`]s, `{"node": "<node id>", "type": …}`, on `veza.room.<room
//! id>`; each node subscribes once to `veza.room.*` and ignores its own (the connection is made
//! with `no_echo`, and the node id is checked too). They are:
//!
//! | `type` | fields | when |
//! |---|---|---|
//! | `member` | `participant` (`ParticipantInfo`) | a member joined, came back, or started or stopped publishing |
//! | `left` | `participant_id` | a member left (or was told gone after the leave notice) |
//! | `muted` | `participant_id`, `muted`, `by_moderator` | a member muted itself, or the node's media muted it for a moderator |
//! | `speaking` | `speakers` [`{participant_id, level}`] | the node's own loudest speakers changed |
//! | `roster` | `members`, `speakers` | every [`ClusterConfig::announce_every`] for each room with members, after a `roster_request`, after every (re)connection |
//! | `roster_request` | | a node got its first member of the room, or (re)connected |
//! | `moderate` | `participant_id`, `action`, `by`, `role` | a moderator elsewhere acts on one of this node's members |
//!
//! A node that vanishes without goodbyes (kill -9, network split) stops announcing; after
//! [`ClusterConfig::stale_after`] without a message from it about a room, its members of that
//! room leave and its speakers are dropped. NATS being down never blocks a session: messages go
//! through a bounded queue to a writer task and are dropped when it is full (the next roster
//! heals what they would have said).
//!
//! Background tasks (NATS reader, writer, timer) hold the signaling weakly and end with it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use veza_proto::signal::{ModerateAction, ParticipantInfo, ServerMessage, Speaker};
use veza_proto::{ParticipantId, Role, RoomId};

use super::{Inner, Signaling};

/// Subjects are `veza.room.<room id>`.
pub const SUBJECT_PREFIX: &str = "veza.room.";

/// Messages waiting for the NATS client. When full (a long outage), messages are dropped: the
/// rosters announced after the reconnection say what they would have.
const OUTGOING_CAPACITY: usize = 4096;

/// How this node takes part in the cluster's signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster (the registry's node id).
    pub node_id: String,
    /// How often the node announces its members of each room. Default 5 s.
    pub announce_every: Duration,
    /// How long another node's members of a room stay without a message from it about the
    /// room. Default 15 s (three announcements).
    pub stale_after: Duration,
}

impl ClusterConfig {
    /// The defaults for node `node_id`.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            announce_every: Duration::from_secs(5),
            stale_after: Duration::from_secs(15),
        }
    }

    /// Checks the node id and that `stale_after` outlasts one announcement period.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.node_id.is_empty() {
            return Err(ClusterError::InvalidConfig("node_id is empty"));
        }
        if self.announce_every.is_zero() {
            return Err(ClusterError::InvalidConfig("announce_every is zero"));
        }
        if self.stale_after <= self.announce_every {
            return Err(ClusterError::InvalidConfig(
                "stale_after must be longer than announce_every",
            ));
        }
        Ok(())
    }
}

/// Why the cluster link could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration is not usable.
    #[error("invalid cluster configuration: {0}")]
    InvalidConfig(&'static str),
    /// The first connection failed (later ones are retried forever). The URL is left out: it
    /// may hold credentials.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// The subscription to `veza.room.*` failed.
    #[error("cannot subscribe to {SUBJECT_PREFIX}*: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// This signaling already has a cluster link.
    #[error("this signaling already joined the cluster")]
    AlreadyJoined,
}

/// One message on `veza.room.<room id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The node that sent it.
    pub node: String,
    /// What happened.
    #[serde(flatten)]
    pub event: RoomEvent,
}

/// What a node tells the others about one of its rooms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum RoomEvent {
    /// All of the sender's members of the room, and its speakers.
    Roster {
        members: Vec<ParticipantInfo>,
        speakers: Vec<Speaker>,
    },
    /// Every node with members of the room: announce your `roster`.
    RosterRequest,
    /// A member of the sender joined or changed (publishing, muted).
    Member { participant: ParticipantInfo },
    /// A member of the sender left.
    Left { participant_id: ParticipantId },
    /// A member of the sender was muted or unmuted.
    Muted {
        participant_id: ParticipantId,
        muted: bool,
        by_moderator: bool,
    },
    /// The sender's loudest speakers (of its own publishers), loudest first.
    Speaking { speakers: Vec<Speaker> },
    /// A moderator (`by`, with `role`) on the sender acts on a member of the receiver.
    Moderate {
        participant_id: ParticipantId,
        action: ModerateAction,
        by: ParticipantId,
        role: Role,
    },
}

/// What the other nodes have in one room. No I/O and no clock reads: the caller passes `now`.
#[derive(Debug, Default)]
pub(crate) struct RemoteRoom {
    /// Other nodes' members, each with the node that has it.
    members: HashMap<ParticipantId, RemoteMember>,
    /// The nodes heard from about this room.
    nodes: HashMap<String, RemoteNode>,
}

#[derive(Debug)]
struct RemoteMember {
    node: String,
    info: ParticipantInfo,
}

#[derive(Debug)]
struct RemoteNode {
    /// When the node last sent anything about the room.
    seen: Instant,
    /// Its latest speakers, loudest first.
    speakers: Vec<Speaker>,
}

impl RemoteRoom {
    /// Applies `event` from `node`; returns what this node's sessions are to be told.
    /// `is_local` says which participants are this node's own members: claims about those are
    /// not shown (a participant that moved here from another node).
    pub fn apply(
        &mut self,
        now: Instant,
        node: &str,
        event: &RoomEvent,
        is_local: impl Fn(ParticipantId) -> bool,
    ) -> Vec<ServerMessage> {
        let sender = self
            .nodes
            .entry(node.to_owned())
            .or_insert_with(|| RemoteNode {
                seen: now,
                speakers: Vec::new(),
            });
        sender.seen = now;
        let mut tell = Vec::new();
        match event {
            RoomEvent::Roster { members, speakers } => {
                sender.speakers.clone_from(speakers);
                let listed: Vec<ParticipantId> = members.iter().map(|m| m.participant_id).collect();
                self.members.retain(|id, member| {
                    let keep = member.node != node || listed.contains(id);
                    if !keep {
                        tell.push(ServerMessage::ParticipantLeft {
                            participant_id: *id,
                        });
                    }
                    keep
                });
                for info in members {
                    if let Some(joined) = self.upsert(node, info, &is_local) {
                        tell.push(joined);
                    }
                }
            }
            RoomEvent::Member { participant } => {
                if let Some(joined) = self.upsert(node, participant, &is_local) {
                    tell.push(joined);
                }
            }
            RoomEvent::Left { participant_id } => {
                if self
                    .members
                    .get(participant_id)
                    .is_some_and(|m| m.node == node)
                {
                    self.members.remove(participant_id);
                    // Who left speaks no more, even if their node has nobody left to say so.
                    sender
                        .speakers
                        .retain(|s| s.participant_id != *participant_id);
                    if !is_local(*participant_id) {
                        tell.push(ServerMessage::ParticipantLeft {
                            participant_id: *participant_id,
                        });
                    }
                }
            }
            RoomEvent::Muted {
                participant_id,
                muted,
                by_moderator,
            } => {
                if let Some(member) = self.members.get_mut(participant_id)
                    && member.node == node
                {
                    member.info.muted = *muted;
                    tell.push(ServerMessage::Muted {
                        participant_id: *participant_id,
                        muted: *muted,
                        by_moderator: *by_moderator,
                    });
                }
            }
            RoomEvent::Speaking { speakers } => sender.speakers.clone_from(speakers),
            RoomEvent::RosterRequest | RoomEvent::Moderate { .. } => {}
        }
        tell
    }

    /// Adds or updates a member of `node`; returns the `participant_joined` for a new one.
    fn upsert(
        &mut self,
        node: &str,
        info: &ParticipantInfo,
        is_local: impl Fn(ParticipantId) -> bool,
    ) -> Option<ServerMessage> {
        let id = info.participant_id;
        if is_local(id) {
            return None;
        }
        match self.members.get_mut(&id) {
            Some(member) => {
                member.node = node.to_owned();
                member.info = info.clone();
                None
            }
            None => {
                self.members.insert(
                    id,
                    RemoteMember {
                        node: node.to_owned(),
                        info: info.clone(),
                    },
                );
                Some(ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                })
            }
        }
    }

    /// Forgets the nodes not heard from about this room for longer than `stale_after`, with
    /// their members and speakers; returns the `participant_left` for those members.
    pub fn expire(&mut self, now: Instant, stale_after: Duration) -> Vec<ServerMessage> {
        self.nodes
            .retain(|_, n| now.saturating_duration_since(n.seen) <= stale_after);
        let nodes = &self.nodes;
        let mut tell = Vec::new();
        self.members.retain(|id, member| {
            let keep = nodes.contains_key(&member.node);
            if !keep {
                tell.push(ServerMessage::ParticipantLeft {
                    participant_id: *id,
                });
            }
            keep
        });
        tell
    }

    /// A member of another node.
    pub fn get(&self, participant: ParticipantId) -> Option<&ParticipantInfo> {
        self.members.get(&participant).map(|m| &m.info)
    }

    /// Every member of the other nodes.
    pub fn members(&self) -> impl Iterator<Item = &ParticipantInfo> {
        self.members.values().map(|m| &m.info)
    }

    /// The loudest speakers of the room: `local` (this node's, loudest first) and every other
    /// node's, loudest first, at most `limit` (or as many as `local`, which an engine configured
    /// for more may list). A participant listed twice counts once, at its loudest.
    pub fn merge_speakers(&self, local: &[Speaker], limit: usize) -> Vec<Speaker> {
        let limit = limit.max(local.len());
        let mut all: Vec<Speaker> = local.to_vec();
        let mut nodes: Vec<(&String, &RemoteNode)> = self.nodes.iter().collect();
        // A stable order between nodes, so that equal levels rank the same on every merge.
        nodes.sort_by(|a, b| a.0.cmp(b.0));
        for (_, node) in nodes {
            all.extend(node.speakers.iter().cloned());
        }
        // Stable: equal levels keep the order of the local list (the engine's ties).
        all.sort_by(|a, b| b.level.total_cmp(&a.level));
        let mut merged: Vec<Speaker> = Vec::with_capacity(limit.min(all.len()));
        for speaker in all {
            if merged.len() == limit {
                break;
            }
            if !merged
                .iter()
                .any(|s| s.participant_id == speaker.participant_id)
            {
                merged.push(speaker);
            }
        }
        merged
    }
}

/// The cluster link of a [`Signaling`]: the NATS connection and its tasks.
pub(crate) struct Link {
    pub config: ClusterConfig,
    outgoing: mpsc::Sender<(RoomId, Vec<u8>)>,
    _tasks: Tasks,
}

/// Aborts the background tasks when the link goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Link {
    /// Connects, subscribes to `veza.room.*` and starts the tasks for `signaling`.
    pub async fn connect(
        options: async_nats::ConnectOptions,
        url: &str,
        config: ClusterConfig,
        signaling: Weak<Inner>,
    ) -> Result<Self, ClusterError> {
        config.validate()?;
        let (client, connected) = veza_cluster::nats::connect(options, url, "signaling").await?;
        let subscriber = client.subscribe(format!("{SUBJECT_PREFIX}*")).await?;
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let tasks = Tasks(vec![
            tokio::spawn(read(signaling.clone(), subscriber, config.node_id.clone())),
            tokio::spawn(write(client, outgoing_rx)),
            tokio::spawn(tick(signaling, connected, config.announce_every)),
        ]);
        Ok(Self {
            config,
            outgoing,
            _tasks: tasks,
        })
    }

    /// Hands `event` about `room` to NATS without waiting.
    pub fn publish(&self, room: RoomId, event: RoomEvent) {
        let envelope = Envelope {
            node: self.config.node_id.clone(),
            event,
        };
        let payload = match serde_json::to_vec(&envelope) {
            Ok(payload) => payload,
            Err(err) => {
                // Not reachable: plain data.
                tracing::error!(%room, error = %err, "signaling cluster: message not serialisable");
                return;
            }
        };
        if self.outgoing.try_send((room, payload)).is_err() {
            tracing::debug!(%room, "signaling cluster: NATS backlog full, message dropped");
        }
    }
}

/// Feeds what NATS brings to the signaling.
async fn read(signaling: Weak<Inner>, mut subscriber: async_nats::Subscriber, node: String) {
    while let Some(message) = subscriber.next().await {
        let subject = message.subject.as_str();
        let Some(room) = subject
            .strip_prefix(SUBJECT_PREFIX)
            .and_then(|id| id.parse::<RoomId>().ok())
        else {
            tracing::debug!(%subject, "signaling cluster: not a room subject, dropped");
            continue;
        };
        let envelope: Envelope = match serde_json::from_slice(&message.payload) {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::debug!(%subject, error = %err, "signaling cluster: malformed message dropped");
                continue;
            }
        };
        if envelope.node == node {
            continue;
        }
        let Some(inner) = signaling.upgrade() else {
            return;
        };
        Signaling { inner }.on_cluster_message(Instant::now(), room, envelope);
    }
    tracing::warn!("signaling cluster: NATS subscription ended");
}

/// Publishes in order, waiting for the client as long as it takes (the queue in front absorbs
/// outages).
async fn write(client: async_nats::Client, mut outgoing: mpsc::Receiver<(RoomId, Vec<u8>)>) {
    while let Some((room, payload)) = outgoing.recv().await {
        if let Err(err) = client
            .publish(format!("{SUBJECT_PREFIX}{room}"), payload.into())
            .await
        {
            tracing::debug!(%room, error = %err, "signaling cluster: publish failed");
        }
    }
}

/// Announces the rosters and drops stale nodes every `every`; after every (re)connection also
/// asks the others for theirs.
async fn tick(signaling: Weak<Inner>, connected: Arc<Notify>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reconnected = tokio::select! {
            _ = ticks.tick() => false,
            () = connected.notified() => true,
        };
        let Some(inner) = signaling.upgrade() else {
            return;
        };
        Signaling { inner }.cluster_tick(Instant::now(), reconnected);
    }
}

impl super::Room {
    /// This node's roster of the room for the others: the members not announced gone, and
    /// its speakers.
    fn roster(&self) -> RoomEvent {
        RoomEvent::Roster {
            members: self
                .members
                .values()
                .filter(|m| !m.announced_left)
                .map(|m| m.info.clone())
                .collect(),
            speakers: self.local_speakers.clone(),
        }
    }
}

impl Signaling {
    /// Handles a message from another node about `room`. Rooms without members here are not
    /// followed: their messages are dropped.
    fn on_cluster_message(&self, now: Instant, room: RoomId, envelope: Envelope) {
        let Envelope { node, event } = envelope;
        let limit = self.inner.speaker_limit;
        let mut moderate = None;
        {
            let mut rooms = self.rooms();
            let Some(r) = rooms.get_mut(&room) else {
                return;
            };
            match &event {
                // Queued under the lock, like the periodic rosters.
                RoomEvent::RosterRequest => self.tell_cluster(room, r.roster()),
                RoomEvent::Moderate {
                    participant_id,
                    action,
                    by,
                    role,
                } => {
                    // Checked where the moderator is; checked again against this node's roster.
                    let target = r.members.get(participant_id).map(|m| m.info.role);
                    match target.map(|t| veza_proto::may_moderate(Some(*role), Some(t))) {
                        Some(Ok(())) => moderate = Some((*participant_id, *action)),
                        Some(Err(denied)) => tracing::debug!(
                            %room, %node, %by, target = %participant_id, code = denied.code(),
                            "signaling cluster: moderation refused"
                        ),
                        // Not here (or gone already).
                        None => {}
                    }
                }
                _ => {}
            }
            let members = &r.members;
            let tell = r
                .remote
                .apply(now, &node, &event, |p| members.contains_key(&p));
            for message in &tell {
                r.send_all(message);
            }
            if !matches!(event, RoomEvent::RosterRequest | RoomEvent::Moderate { .. }) {
                r.refresh_speaking(limit);
            }
        }
        if let Some((participant, action)) = moderate {
            super::moderate(&self.inner.media.for_room(room), participant, action);
        }
    }

    /// Every announcement period: forgets silent nodes and announces this node's rosters;
    /// after a (re)connection (`reconnected`) also asks the other nodes for theirs.
    pub(crate) fn cluster_tick(&self, now: Instant, reconnected: bool) {
        let Some(link) = self.cluster() else {
            return;
        };
        let stale_after = link.config.stale_after;
        let limit = self.inner.speaker_limit;
        // Rosters are queued under the rooms lock (queuing does not wait), so none can follow
        // the `left` of a member it still lists.
        let mut rooms = self.rooms();
        for (id, r) in rooms.iter_mut() {
            for message in r.remote.expire(now, stale_after) {
                r.send_all(&message);
            }
            r.refresh_speaking(limit);
            link.publish(*id, r.roster());
            if reconnected {
                link.publish(*id, RoomEvent::RosterRequest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veza_proto::UserId;

    fn info(name: &str) -> ParticipantInfo {
        ParticipantInfo {
            participant_id: ParticipantId::new(),
            user_id: UserId::new(),
            name: name.into(),
            role: Role::Speaker,
            publishing: false,
            muted: false,
        }
    }

    fn speaker(participant_id: ParticipantId, level: f32) -> Speaker {
        Speaker {
            participant_id,
            level,
        }
    }

    fn roster(members: &[&ParticipantInfo], speakers: Vec<Speaker>) -> RoomEvent {
        RoomEvent::Roster {
            members: members.iter().map(|m| (*m).clone()).collect(),
            speakers,
        }
    }

    const NOBODY: fn(ParticipantId) -> bool = |_| false;

    #[test]
    fn wire_form_is_flat_json_with_node_and_type() {
        let id = ParticipantId::new();
        let envelope = Envelope {
            node: "a".into(),
            event: RoomEvent::Left { participant_id: id },
        };
        let json = serde_json::to_value(&envelope).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"node": "a", "type": "left", "participant_id": id.to_string()})
        );
        let back: Envelope = serde_json::from_value(json).expect("parse");
        assert_eq!(back, envelope);
        let request: Envelope =
            serde_json::from_str(r#"{"node":"b","type":"roster_request"}"#).expect("parse");
        assert_eq!(request.event, RoomEvent::RosterRequest);
        for bad in [
            "",
            "null",
            "{}",
            r#"{"node":"b"}"#,
            r#"{"type":"roster_request"}"#,
            r#"{"node":"b","type":"nope"}"#,
            r#"{"node":"b","type":"left","participant_id":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Envelope>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rosters_add_update_and_remove_a_nodes_members() {
        let now = Instant::now();
        let mut room = RemoteRoom::default();
        let (ann, bob) = (info("ann"), info("bob"));
        let told = room.apply(now, "a", &roster(&[&ann, &bob], vec![]), NOBODY);
        assert_eq!(told.len(), 2);
        assert!(
            told.iter()
                .all(|m| matches!(m, ServerMessage::ParticipantJoined { .. }))
        );
        // The same roster again says nothing; a changed member is updated silently.
        let mut ann2 = ann.clone();
        ann2.publishing = true;
        assert!(
            room.apply(now, "a", &roster(&[&ann2, &bob], vec![]), NOBODY)
                .is_empty()
        );
        assert!(room.get(ann.participant_id).expect("ann").publishing);
        // Bob is missing from the next one: he left. Another node's roster leaves ann alone.
        assert_eq!(
            room.apply(now, "a", &roster(&[&ann2], vec![]), NOBODY),
            vec![ServerMessage::ParticipantLeft {
                participant_id: bob.participant_id
            }]
        );
        assert!(
            room.apply(now, "b", &roster(&[], vec![]), NOBODY)
                .is_empty()
        );
        assert_eq!(room.members().count(), 1);
    }

    #[test]
    fn members_leave_and_mute_only_through_their_own_node() {
        let now = Instant::now();
        let mut room = RemoteRoom::default();
        let ann = info("ann");
        let id = ann.participant_id;
        room.apply(now, "a", &RoomEvent::Member { participant: ann }, NOBODY);
        let left = RoomEvent::Left { participant_id: id };
        let muted = RoomEvent::Muted {
            participant_id: id,
            muted: true,
            by_moderator: false,
        };
        assert!(room.apply(now, "b", &left, NOBODY).is_empty());
        assert!(room.apply(now, "b", &muted, NOBODY).is_empty());
        assert_eq!(room.apply(now, "a", &muted, NOBODY).len(), 1);
        assert!(room.get(id).expect("ann").muted);
        assert_eq!(
            room.apply(now, "a", &left, NOBODY),
            vec![ServerMessage::ParticipantLeft { participant_id: id }]
        );
        assert!(room.apply(now, "a", &left, NOBODY).is_empty(), "once");
    }

    #[test]
    fn who_leaves_speaks_no_more() {
        let now = Instant::now();
        let mut room = RemoteRoom::default();
        let (ann, bob) = (info("ann"), info("bob"));
        let speakers = vec![
            speaker(ann.participant_id, 0.8),
            speaker(bob.participant_id, 0.4),
        ];
        room.apply(now, "a", &roster(&[&ann, &bob], speakers), NOBODY);
        room.apply(
            now,
            "a",
            &RoomEvent::Left {
                participant_id: ann.participant_id,
            },
            NOBODY,
        );
        let left: Vec<ParticipantId> = room
            .merge_speakers(&[], 3)
            .iter()
            .map(|s| s.participant_id)
            .collect();
        assert_eq!(left, vec![bob.participant_id]);
    }

    #[test]
    fn claims_about_local_members_are_not_shown() {
        let now = Instant::now();
        let mut room = RemoteRoom::default();
        let me = info("me");
        let id = me.participant_id;
        let mine = move |p: ParticipantId| p == id;
        assert!(
            room.apply(now, "a", &RoomEvent::Member { participant: me }, mine)
                .is_empty()
        );
        assert!(room.get(id).is_none());
    }

    #[test]
    fn silent_nodes_expire_with_their_members_and_speakers() {
        let start = Instant::now();
        let stale = Duration::from_secs(15);
        let mut room = RemoteRoom::default();
        let (ann, bob) = (info("ann"), info("bob"));
        room.apply(
            start,
            "a",
            &roster(&[&ann], vec![speaker(ann.participant_id, 0.5)]),
            NOBODY,
        );
        let later = start + Duration::from_secs(10);
        room.apply(later, "b", &roster(&[&bob], vec![]), NOBODY);
        assert!(room.expire(start + stale, stale).is_empty());
        assert_eq!(
            room.expire(start + stale + Duration::from_millis(1), stale),
            vec![ServerMessage::ParticipantLeft {
                participant_id: ann.participant_id
            }]
        );
        assert!(room.merge_speakers(&[], 3).is_empty());
        assert!(room.get(bob.participant_id).is_some());
    }

    #[test]
    fn speakers_merge_loudest_first_within_the_limit() {
        let now = Instant::now();
        let mut room = RemoteRoom::default();
        let ids: Vec<ParticipantId> = (0..5).map(|_| ParticipantId::new()).collect();
        room.apply(
            now,
            "a",
            &RoomEvent::Speaking {
                speakers: vec![speaker(ids[0], 0.9), speaker(ids[1], 0.2)],
            },
            NOBODY,
        );
        room.apply(
            now,
            "b",
            &RoomEvent::Speaking {
                speakers: vec![speaker(ids[2], 0.5)],
            },
            NOBODY,
        );
        let local = [speaker(ids[3], 0.7), speaker(ids[4], 0.7)];
        let merged: Vec<ParticipantId> = room
            .merge_speakers(&local, 3)
            .iter()
            .map(|s| s.participant_id)
            .collect();
        assert_eq!(merged, vec![ids[0], ids[3], ids[4]]);
        let all = room.merge_speakers(&local, 10);
        assert_eq!(all.len(), 5);
        assert_eq!(all[4].participant_id, ids[1]);
        // Without remote speakers the local list is kept as it is.
        let alone = RemoteRoom::default().merge_speakers(&local, 3);
        assert_eq!(alone, local.to_vec());
    }
}
