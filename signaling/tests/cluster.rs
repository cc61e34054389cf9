//! Rooms across nodes: two signaling instances ("nodes"), each with its own media shard on
//! loopback and its own NATS connection, share presence, mutes, speakers and moderation. Needs
//! NATS at 127.0.0.1:4222 (`VEZA_TEST_NATS_URL`); the outage scenario runs its own
//! `nats-server` (`VEZA_TEST_NATS_SERVER`, default `/usr/sbin/nats-server`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veza_chat::testing::NatsServer;
use veza_proto::signal::{ParticipantInfo, ServerMessage, Speaker};
use veza_proto::{MEDIA_AUDIENCE, MediaClaims, ParticipantId, Role, RoomId, UserId};
use veza_sfu::engine::Config;
use veza_sfu::webrtc::{MediaConfig, MediaMetrics, MediaServer};
use veza_signaling::{ClusterConfig, Frame, Signaling, TokenVerifier, run_session};

fn nats_url() -> String {
    std::env::var("VEZA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Announcements every 200 ms; a node silent for 800 ms is gone.
const ANNOUNCE: Duration = Duration::from_millis(200);
const STALE: Duration = Duration::from_millis(800);

/// Sessions here are started with their claims; no token is ever checked.
struct NoTokens;

impl TokenVerifier for NoTokens {
    fn verify_media(&self, _token: &str) -> Result<MediaClaims, String> {
        Err("not in these tests".into())
    }
}

/// A node: a media shard and its signaling, in the cluster at `url` as `id`.
async fn node(url: &str, id: &str) -> Signaling {
    node_with(
        url,
        ClusterConfig {
            announce_every: ANNOUNCE,
            stale_after: STALE,
            ..ClusterConfig::new(id)
        },
    )
    .await
}

async fn node_with(url: &str, cluster: ClusterConfig) -> Signaling {
    let config = MediaConfig {
        udp_addr: "127.0.0.1:0".parse().expect("addr"),
        ..MediaConfig::default()
    };
    let media = MediaServer::start(config, Config::default(), MediaMetrics::new())
        .await
        .expect("media");
    // A one-second grace period: a closed session is announced gone after a second.
    let signaling = Signaling::new(media, Arc::new(NoTokens), None, Duration::from_secs(1));
    signaling.join_cluster(url, cluster).await.expect("NATS");
    signaling
}

/// Two nodes with distinct ids on the shared NATS.
async fn pair() -> (Signaling, Signaling) {
    let tag = ParticipantId::new();
    (
        node(&nats_url(), &format!("a-{tag}")).await,
        node(&nats_url(), &format!("b-{tag}")).await,
    )
}

fn claims(room: RoomId, name: &str, role: Role) -> MediaClaims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    MediaClaims {
        iss: "test".into(),
        sub: UserId::new(),
        aud: MEDIA_AUDIENCE.into(),
        iat: now,
        exp: now + 600,
        jti: "t".into(),
        room,
        participant: ParticipantId::new(),
        name: name.into(),
        role,
        grants: role.grants(),
    }
}

/// A running session with a client's ends: frames in, decoded server messages out.
struct Client {
    id: ParticipantId,
    frames: mpsc::UnboundedSender<Frame>,
    replies: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl Client {
    fn start(signaling: &Signaling, claims: &MediaClaims) -> Self {
        let (frames, rx) = mpsc::unbounded_channel();
        let (tx, replies) = mpsc::unbounded_channel::<String>();
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let sink = futures_util::sink::unfold(tx, |tx, text: String| async move {
            tx.send(text).map_err(|_| ())?;
            Ok::<_, ()>(tx)
        });
        let task = tokio::spawn(run_session(
            signaling.clone(),
            claims.clone(),
            Box::pin(stream),
            Box::pin(sink),
        ));
        Self {
            id: claims.participant,
            frames,
            replies,
            task,
        }
    }

    /// Starts a session and reads its `joined` and `offer`; returns the participants listed.
    async fn join(signaling: &Signaling, claims: &MediaClaims) -> (Self, Vec<ParticipantInfo>) {
        let mut client = Self::start(signaling, claims);
        let ServerMessage::Joined { participants, .. } = client.next().await else {
            panic!("want joined")
        };
        assert!(matches!(client.next().await, ServerMessage::Offer { .. }));
        (client, participants)
    }

    async fn next(&mut self) -> ServerMessage {
        let text = tokio::time::timeout(Duration::from_secs(5), self.replies.recv())
            .await
            .expect("a reply within 5 s")
            .expect("session open");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The next message for which `want` is true, skipping others.
    async fn next_where(
        &mut self,
        what: &str,
        want: impl Fn(&ServerMessage) -> bool,
    ) -> ServerMessage {
        for _ in 0..50 {
            let message = self.next().await;
            if want(&message) {
                return message;
            }
        }
        panic!("no {what} among 50 messages");
    }

    async fn joined(&mut self, who: ParticipantId) -> ParticipantInfo {
        match self
            .next_where("participant_joined", |m| {
                matches!(m, ServerMessage::ParticipantJoined { participant } if participant.participant_id == who)
            })
            .await
        {
            ServerMessage::ParticipantJoined { participant } => participant,
            _ => unreachable!("matched above"),
        }
    }

    async fn left(&mut self, who: ParticipantId) {
        let left = ServerMessage::ParticipantLeft {
            participant_id: who,
        };
        self.next_where("participant_left", |m| *m == left).await;
    }

    /// Nothing but `pong` comes before the answer to a ping.
    async fn quiet(&mut self) {
        self.send(r#"{"type":"ping"}"#);
        assert_eq!(self.next().await, ServerMessage::Pong);
    }

    fn send(&self, text: &str) {
        self.frames
            .send(Frame::Text(text.to_owned()))
            .expect("session open");
    }

    fn moderate(&self, who: ParticipantId, action: &str) {
        self.send(&format!(
            r#"{{"type":"moderate","participant_id":"{who}","action":"{action}"}}"#
        ));
    }
}

/// A session on A and one on B see each other; B's member joining sees A's (in `joined`, or
/// right after).
async fn meet(
    a: &Signaling,
    b: &Signaling,
    on_a: &MediaClaims,
    on_b: &MediaClaims,
) -> (Client, Client) {
    let (mut ann, _) = Client::join(a, on_a).await;
    let (mut bob, listed) = Client::join(b, on_b).await;
    if !listed.iter().any(|p| p.participant_id == ann.id) {
        let info = bob.joined(ann.id).await;
        assert_eq!(info.name, on_a.name);
    }
    let info = ann.joined(bob.id).await;
    assert_eq!(
        (info.name.as_str(), info.role),
        (on_b.name.as_str(), on_b.role)
    );
    (ann, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_and_mutes_cross_nodes() {
    let (a, b) = pair().await;
    let room = RoomId::new();
    let (ann_claims, bob_claims) = (
        claims(room, "ann", Role::Speaker),
        claims(room, "bob", Role::Speaker),
    );
    let (mut ann, bob) = meet(&a, &b, &ann_claims, &bob_claims).await;

    // Bob publishes and mutes himself: ann hears of the mute, and a newcomer on A sees both.
    bob.send(r#"{"type":"publish"}"#);
    bob.send(r#"{"type":"mute","muted":true}"#);
    let muted = ServerMessage::Muted {
        participant_id: bob.id,
        muted: true,
        by_moderator: false,
    };
    ann.next_where("muted", |m| *m == muted).await;
    let (mut cleo, listed) = Client::join(&a, &claims(room, "cleo", Role::Listener)).await;
    let bob_info = listed
        .iter()
        .find(|p| p.participant_id == bob.id)
        .expect("bob is listed on A");
    assert!(bob_info.publishing && bob_info.muted, "{bob_info:?}");
    assert_eq!(listed.len(), 3);

    // Cleo's arrival reaches B.
    let mut bob = bob;
    bob.joined(cleo.id).await;

    // Bob's socket closes: after the leave notice (the one-second grace here) A hears he left.
    bob.frames.send(Frame::Closed).expect("open");
    ann.left(bob.id).await;
    cleo.left(bob.id).await;
    ann.quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moderator_mutes_and_kicks_a_member_of_another_node() {
    let (a, b) = pair().await;
    let room = RoomId::new();
    let (boss_claims, sam_claims) = (
        claims(room, "boss", Role::Owner),
        claims(room, "sam", Role::Speaker),
    );
    let (mut boss, mut sam) = meet(&a, &b, &boss_claims, &sam_claims).await;

    // The remote member's role is checked where the request is made.
    sam.moderate(boss.id, "kick");
    sam.next_where(
        "an error",
        |m| matches!(m, ServerMessage::Error { code, .. } if code == "not_moderator"),
    )
    .await;
    let (mut mod_b, _) = Client::join(&b, &claims(room, "mo", Role::Moderator)).await;
    mod_b.moderate(boss.id, "mute");
    mod_b
        .next_where(
            "an error",
            |m| matches!(m, ServerMessage::Error { code, .. } if code == "owner_protected"),
        )
        .await;
    mod_b.moderate(ParticipantId::new(), "kick");
    mod_b
        .next_where(
            "an error",
            |m| matches!(m, ServerMessage::Error { code, .. } if code == "unknown_participant"),
        )
        .await;

    // The owner on A mutes sam on B: B's media mutes him, both nodes hear of it.
    boss.moderate(sam.id, "mute");
    let muted = ServerMessage::Muted {
        participant_id: sam.id,
        muted: true,
        by_moderator: true,
    };
    sam.next_where("muted", |m| *m == muted).await;
    boss.next_where("muted", |m| *m == muted).await;

    // And kicks him: sam is told, A sees him leave.
    boss.moderate(sam.id, "kick");
    sam.next_where("kicked", |m| *m == ServerMessage::Kicked)
        .await;
    boss.left(sam.id).await;
    mod_b.left(sam.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_members_of_a_vanished_node_leave_after_the_staleness_window() {
    let (a, b) = pair().await;
    let room = RoomId::new();
    let (mut ann, bob) = meet(
        &a,
        &b,
        &claims(room, "ann", Role::Speaker),
        &claims(room, "bob", Role::Speaker),
    )
    .await;

    // B dies without a word: its session task and its last handle go, and with them its NATS
    // link (nothing runs the session's ending).
    let bob_id = bob.id;
    bob.task.abort();
    let _ = bob.task.await;
    drop(b);
    let gone = Instant::now();
    ann.left(bob_id).await;
    let after = gone.elapsed();
    assert!(
        after >= STALE - ANNOUNCE && after < STALE + 4 * ANNOUNCE,
        "left {after:?} after the node vanished"
    );
    ann.quiet().await;
}

/// Publishes `payload` on `subject` with a connection of the test's own.
async fn raw(client: &async_nats::Client, subject: String, payload: &str) {
    client
        .publish(subject, payload.to_owned().into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_are_dropped_and_a_fake_node_is_heard() {
    let a = node(&nats_url(), &format!("a-{}", ParticipantId::new())).await;
    let room = RoomId::new();
    let (mut ann, _) = Client::join(&a, &claims(room, "ann", Role::Speaker)).await;
    let nats = async_nats::connect(nats_url()).await.expect("NATS");
    let subject = format!("veza.room.{room}");
    let ghost = claims(room, "ghost", Role::Speaker);
    let ghost_info = serde_json::json!({
        "participant_id": ghost.participant, "user_id": ghost.sub, "name": "ghost",
        "role": "speaker", "publishing": true, "muted": false,
    });
    for junk in [
        "",
        "not json",
        "{}",
        "[1,2]",
        r#"{"node":"ghost"}"#,
        r#"{"node":"ghost","type":"wat"}"#,
        r#"{"node":"ghost","type":"member","participant":{"bad":1}}"#,
        r#"{"node":"ghost","type":"speaking","speakers":[{"participant_id":"nope","level":1}]}"#,
        r#"{"node":"ghost","type":"moderate","participant_id":"x","action":"explode"}"#,
    ] {
        raw(&nats, subject.clone(), junk).await;
    }
    // A good message on a subject that is not a room.
    let member = serde_json::json!({"node": "ghost", "type": "member", "participant": ghost_info});
    raw(&nats, "veza.room.lobby".into(), &member.to_string()).await;
    ann.quiet().await;

    // The node still hears a well-formed one: a member of node "ghost", then its speaker.
    raw(&nats, subject.clone(), &member.to_string()).await;
    let info = ann.joined(ghost.participant).await;
    assert!(info.publishing);
    let speaking = serde_json::json!({
        "node": "ghost", "type": "speaking",
        "speakers": [{"participant_id": ghost.participant, "level": 0.5}],
    });
    raw(&nats, subject.clone(), &speaking.to_string()).await;
    let heard = ServerMessage::Speaking {
        speakers: vec![Speaker {
            participant_id: ghost.participant,
            level: 0.5,
        }],
    };
    ann.next_where("speaking", |m| *m == heard).await;
    // Node "ghost" says nothing more: its member leaves and its speaker is dropped.
    ann.left(ghost.participant).await;
    let silent = ServerMessage::Speaking { speakers: vec![] };
    ann.next_where("speaking", |m| *m == silent).await;
    ann.quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_announces_its_members_and_answers_roster_requests() {
    // Announcements every 2 s, so that an answer is told from one.
    let period = Duration::from_secs(2);
    let config = ClusterConfig {
        announce_every: period,
        ..ClusterConfig::new(format!("a-{}", ParticipantId::new()))
    };
    let a = node_with(&nats_url(), config).await;
    let room = RoomId::new();
    let nats = async_nats::connect(nats_url()).await.expect("NATS");
    let subject = format!("veza.room.{room}");
    let mut seen = nats.subscribe(subject.clone()).await.expect("subscribe");
    nats.flush().await.expect("flush");
    let (ann, _) = Client::join(&a, &claims(room, "ann", Role::Speaker)).await;

    let mut next = async || -> serde_json::Value {
        let message = tokio::time::timeout(Duration::from_secs(5), seen.next())
            .await
            .expect("a message within 5 s")
            .expect("subscribed");
        serde_json::from_slice(&message.payload).expect("JSON")
    };
    // Its member, and a request for the others' rosters (it is the room's first here).
    let first = [next().await, next().await];
    let types: Vec<&str> = first
        .iter()
        .map(|m| m["type"].as_str().unwrap_or(""))
        .collect();
    assert!(
        types.contains(&"member") && types.contains(&"roster_request"),
        "{first:?}"
    );
    let member = first
        .iter()
        .find(|m| m["type"] == "member")
        .expect("member");
    assert_eq!(member["participant"]["participant_id"], ann.id.to_string());
    assert!(member["node"].as_str().is_some_and(|n| n.starts_with("a-")));

    // A request is answered at once with a roster; another follows every period.
    let request = serde_json::json!({"node": "ghost", "type": "roster_request"});
    raw(&nats, subject.clone(), &request.to_string()).await;
    let asked = Instant::now();
    let mut rosters = Vec::new();
    while rosters.len() < 2 {
        let message = next().await;
        if message["type"] == "roster" {
            assert_eq!(message["members"][0]["participant_id"], ann.id.to_string());
            assert_eq!(message["members"].as_array().map(Vec::len), Some(1));
            rosters.push(asked.elapsed());
        }
    }
    assert!(rosters[0] < period / 2, "answered after {:?}", rosters[0]);
    assert!(
        rosters[1] <= period + period / 2,
        "announced after {:?}",
        rosters[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_nats_outage_the_nodes_find_each_other_again() {
    let server = NatsServer::start(None).await;
    let a = node(&server.url(), "a").await;
    let b = node(&server.url(), "b").await;
    let room = RoomId::new();
    let (mut ann, mut bob) = meet(
        &a,
        &b,
        &claims(room, "ann", Role::Speaker),
        &claims(room, "bob", Role::Speaker),
    )
    .await;

    // NATS goes: each node loses the other's member after the staleness window, and sessions
    // go on meanwhile.
    let port = server.stop().await;
    ann.left(bob.id).await;
    bob.left(ann.id).await;
    ann.quiet().await;

    // NATS is back: on reconnection the nodes announce and ask, and meet again.
    let _server = NatsServer::start(Some(port)).await;
    ann.joined(bob.id).await;
    bob.joined(ann.id).await;
}
