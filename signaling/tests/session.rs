//! Signaling sessions against a real media shard on loopback: the join handshake, grants,
//! bad frames, and token checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::ServiceExt;
use veza_proto::signal::ServerMessage;
use veza_proto::{Grants, MEDIA_AUDIENCE, MediaClaims, ParticipantId, Role, RoomId, UserId};
use veza_sfu::engine::Config;
use veza_sfu::webrtc::{MediaConfig, MediaMetrics, MediaServer};
use veza_signaling::{Frame, Signaling, TokenVerifier, run_session};

/// Accepts the token "good" as `claims`, refuses everything else.
struct Tokens(MediaClaims);

impl TokenVerifier for Tokens {
    fn verify_media(&self, token: &str) -> Result<MediaClaims, String> {
        (token == "good")
            .then(|| self.0.clone())
            .ok_or_else(|| "ExpiredSignature".to_owned())
    }
}

fn claims(role: Role) -> MediaClaims {
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
        room: RoomId::new(),
        participant: ParticipantId::new(),
        name: "lena".into(),
        role,
        grants: role.grants(),
    }
}

async fn signaling(claims: &MediaClaims) -> Signaling {
    let config = MediaConfig {
        udp_addr: "127.0.0.1:0".parse().expect("addr"),
        // Two shards: sessions must reach their room's.
        shards: 2,
        ..MediaConfig::default()
    };
    let media = MediaServer::start(config, Config::default(), MediaMetrics::new())
        .await
        .expect("media");
    Signaling::new(
        media,
        Arc::new(Tokens(claims.clone())),
        None,
        Duration::from_secs(1),
    )
}

/// A running session with a client's ends: frames in, decoded server messages out.
struct Client {
    frames: mpsc::UnboundedSender<Frame>,
    replies: mpsc::UnboundedReceiver<String>,
}

impl Client {
    fn start(signaling: Signaling, claims: MediaClaims) -> Self {
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
        tokio::spawn(run_session(
            signaling,
            claims,
            Box::pin(stream),
            Box::pin(sink),
        ));
        Self { frames, replies }
    }

    async fn next(&mut self) -> ServerMessage {
        let text = tokio::time::timeout(Duration::from_secs(5), self.replies.recv())
            .await
            .expect("a reply within 5 s")
            .expect("session open");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn send(&self, text: &str) {
        self.frames
            .send(Frame::Text(text.to_owned()))
            .expect("session open");
    }
}

#[track_caller]
fn assert_error(message: &ServerMessage, want: &str) {
    match message {
        ServerMessage::Error { code, message } => {
            assert_eq!(code, want, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("want error {want}, got {other:?}"),
    }
}

#[tokio::test]
async fn join_then_offer_then_requests() {
    let claims = claims(Role::Listener);
    let mut client = Client::start(signaling(&claims).await, claims.clone());
    match client.next().await {
        ServerMessage::Joined {
            protocol,
            participant_id,
            grants,
            participants,
            resumed,
            ..
        } => {
            assert_eq!(protocol, 1);
            assert_eq!(participant_id, claims.participant);
            assert_eq!(
                grants,
                Grants {
                    can_publish: false,
                    can_subscribe: true,
                    can_chat: true
                }
            );
            assert_eq!(participants.len(), 1);
            assert_eq!(participants[0].name, "lena");
            assert!(!resumed);
        }
        other => panic!("want joined, got {other:?}"),
    }
    let ServerMessage::Offer { sdp } = client.next().await else {
        panic!("want offer")
    };
    assert!(
        sdp.contains("m=application"),
        "the chat data channel: {sdp}"
    );
    assert!(
        !sdp.contains("a=recvonly"),
        "a listener gets no microphone section: {sdp}"
    );

    // A listener may not publish; the session goes on.
    client.send(r#"{"type":"publish"}"#);
    assert_error(&client.next().await, "publish_not_allowed");
    client.send("not json");
    assert_error(&client.next().await, "invalid_message");
    client.send(r#"{"type":"answer"}"#);
    assert_error(&client.next().await, "invalid_message");
    client.send(r#"{"type":"answer","sdp":"v=0 garbage"}"#);
    assert_error(&client.next().await, "invalid_answer");
    client.frames.send(Frame::Unsupported).expect("open");
    assert_error(&client.next().await, "unsupported_frame");
    client.send(r#"{"type":"moderate","participant_id":"00000000-0000-0000-0000-000000000000","action":"kick"}"#);
    assert_error(&client.next().await, "not_moderator");
    client.send(r#"{"type":"ping"}"#);
    assert_eq!(client.next().await, ServerMessage::Pong);
}

#[tokio::test]
async fn a_speaker_is_offered_a_microphone_section_and_may_publish() {
    let claims = claims(Role::Speaker);
    let mut client = Client::start(signaling(&claims).await, claims.clone());
    assert!(matches!(client.next().await, ServerMessage::Joined { .. }));
    let ServerMessage::Offer { sdp } = client.next().await else {
        panic!("want offer")
    };
    assert!(
        sdp.contains("m=audio") && sdp.contains("a=recvonly"),
        "{sdp}"
    );
    assert!(sdp.contains("opus/48000/2"), "{sdp}");
    assert!(
        sdp.lines()
            .any(|l| l.starts_with("a=rtcp-fb:") && l.trim_end().ends_with(" nack")),
        "Opus NACK feedback is offered: {sdp}"
    );
    assert!(sdp.contains("red/48000/2"), "RED is offered: {sdp}");
    assert!(
        sdp.contains("ssrc-audio-level"),
        "the audio-level extension: {sdp}"
    );
    client.send(r#"{"type":"publish"}"#);
    client.send(r#"{"type":"ping"}"#);
    // The room (the publisher included) hears of the track; the ping is answered; no error.
    let replies = [client.next().await, client.next().await];
    let published = ServerMessage::TrackPublished {
        participant_id: claims.participant,
    };
    assert!(replies.contains(&published), "{replies:?}");
    assert!(replies.contains(&ServerMessage::Pong), "{replies:?}");
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let claims = claims(Role::Speaker);
    let router = veza_signaling::router(signaling(&claims).await);
    for (uri, code) in [
        ("/rtc", "missing_token"),
        ("/rtc?token=expired", "invalid_token"),
    ] {
        let response = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["code"], code);
    }
    // A good token without a WebSocket upgrade is told to upgrade.
    let response = router
        .oneshot(
            Request::get("/rtc?token=good")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test]
async fn a_closed_socket_keeps_the_participant_for_the_grace_period() {
    let claims = claims(Role::Speaker);
    let signaling = signaling(&claims).await;
    let mut first = Client::start(signaling.clone(), claims.clone());
    assert!(matches!(
        first.next().await,
        ServerMessage::Joined { resumed: false, .. }
    ));
    first.frames.send(Frame::Closed).expect("open");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Within the grace period (1 s here) the same participant resumes.
    let mut second = Client::start(signaling.clone(), claims.clone());
    assert!(matches!(
        second.next().await,
        ServerMessage::Joined { resumed: true, .. }
    ));
    assert!(matches!(second.next().await, ServerMessage::Offer { .. }));
    let _ = second.frames.send(Frame::Closed);
    // After the grace period the participant is gone: a new session is a fresh join.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut third = Client::start(signaling, claims);
    assert!(matches!(
        third.next().await,
        ServerMessage::Joined { resumed: false, .. }
    ));
}

/// Sends `POST uri` with `content_type` and `body` and the token "good"; returns status and code.
async fn post(
    router: &axum::Router,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, String) {
    let response = router
        .clone()
        .oneshot(
            Request::post(uri)
                .header("authorization", "Bearer good")
                .header("content-type", content_type)
                .body(Body::from(body.to_owned()))
                .expect("request"),
        )
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .map(|j| j["error"]["code"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    (status, code)
}

#[tokio::test]
async fn whip_and_whep_refuse_bad_requests() {
    let claims = claims(Role::Listener);
    let signaling = signaling(&claims).await;
    let router = veza_signaling::router(signaling.clone());
    let room = claims.room;
    let cases = [
        (
            format!("/whip/{room}"),
            "application/sdp",
            "v=0\r\n",
            StatusCode::FORBIDDEN,
            "not_allowed",
        ),
        (
            format!("/whep/{room}"),
            "application/sdp",
            "garbage",
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
        ),
        (
            format!("/whep/{room}"),
            "application/sdp",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
        ),
        (
            format!("/whep/{room}"),
            "text/plain",
            "v=0",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            format!("/whep/{}", RoomId::new()),
            "application/sdp",
            "v=0",
            StatusCode::FORBIDDEN,
            "wrong_room",
        ),
        (
            "/whep/not-a-room".to_owned(),
            "application/sdp",
            "v=0",
            StatusCode::FORBIDDEN,
            "wrong_room",
        ),
    ];
    for (uri, content_type, body, status, code) in cases {
        assert_eq!(
            post(&router, &uri, content_type, body).await,
            (status, code.to_owned()),
            "{uri} {body:?}"
        );
    }
    let oversized = "a".repeat(100 * 1024);
    let (status, _) = post(
        &router,
        &format!("/whep/{room}"),
        "application/sdp",
        &oversized,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // After all that, the same media shard still answers a real join.
    let mut client = Client::start(signaling, claims);
    assert!(matches!(client.next().await, ServerMessage::Joined { .. }));
}

/// The value of the sample `series` (name and labels, as rendered).
fn sample(signaling: &Signaling, series: &str) -> Option<f64> {
    signaling
        .media()
        .metrics()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn joins_are_counted_by_outcome_and_sessions_while_open() {
    let claims = claims(Role::Speaker);
    let signaling = signaling(&claims).await;
    let ok = "veza_signaling_joins_total{outcome=\"ok\"}";
    let resumed = "veza_signaling_joins_total{outcome=\"resumed\"}";
    let failed = "veza_signaling_joins_total{outcome=\"failed\"}";
    let sessions = "veza_signaling_sessions";

    let mut first = Client::start(signaling.clone(), claims.clone());
    assert!(matches!(first.next().await, ServerMessage::Joined { .. }));
    assert_eq!(sample(&signaling, ok), Some(1.0));
    assert_eq!(sample(&signaling, sessions), Some(1.0));
    first.frames.send(Frame::Closed).expect("open");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sample(&signaling, sessions), Some(0.0));

    let mut second = Client::start(signaling.clone(), claims.clone());
    assert!(matches!(
        second.next().await,
        ServerMessage::Joined { resumed: true, .. }
    ));
    assert_eq!(sample(&signaling, resumed), Some(1.0));
    assert_eq!(sample(&signaling, sessions), Some(1.0));

    // A participant the media shard already has, unknown to signaling: the join fails.
    let other = MediaClaims {
        participant: ParticipantId::new(),
        ..claims.clone()
    };
    let (events, _events) = mpsc::unbounded_channel();
    signaling
        .media()
        .join(
            veza_sfu::webrtc::JoinRequest {
                room: other.room,
                participant: other.participant,
                grants: other.grants,
            },
            events,
        )
        .await
        .expect("media join");
    let mut third = Client::start(signaling.clone(), other);
    assert_error(&third.next().await, "join_failed");
    assert_eq!(sample(&signaling, failed), Some(1.0));
    assert_eq!(sample(&signaling, ok), Some(1.0));
    assert_eq!(
        sample(&signaling, sessions),
        Some(1.0),
        "the failed one never opened"
    );
}

impl Client {
    /// The next message for which `want` is true, skipping others (at most 20).
    async fn next_where(
        &mut self,
        what: &str,
        want: impl Fn(&ServerMessage) -> bool,
    ) -> ServerMessage {
        for _ in 0..20 {
            let message = self.next().await;
            if want(&message) {
                return message;
            }
        }
        panic!("no {what} among 20 messages");
    }
}

#[tokio::test]
async fn moderators_mute_and_kick() {
    let owner = claims(Role::Owner);
    let speaker = MediaClaims {
        participant: ParticipantId::new(),
        sub: UserId::new(),
        name: "sam".into(),
        role: Role::Speaker,
        grants: Role::Speaker.grants(),
        ..owner.clone()
    };
    let signaling = signaling(&owner).await;
    let mut boss = Client::start(signaling.clone(), owner.clone());
    assert!(matches!(boss.next().await, ServerMessage::Joined { .. }));
    let mut sam = Client::start(signaling.clone(), speaker.clone());
    let ServerMessage::Joined { participants, .. } = sam.next().await else {
        panic!("want joined")
    };
    assert_eq!(participants.len(), 2);
    boss.next_where("participant_joined", |m| {
        matches!(m, ServerMessage::ParticipantJoined { participant } if participant.participant_id == speaker.participant)
    })
    .await;

    // A speaker may not moderate, and nobody moderates the owner.
    let kick_owner = format!(
        r#"{{"type":"moderate","participant_id":"{}","action":"kick"}}"#,
        owner.participant
    );
    sam.send(&kick_owner);
    sam.next_where(
        "an error",
        |m| matches!(m, ServerMessage::Error { code, .. } if code == "not_moderator"),
    )
    .await;
    boss.send(&kick_owner);
    boss.next_where(
        "an error",
        |m| matches!(m, ServerMessage::Error { code, .. } if code == "owner_protected"),
    )
    .await;

    // The owner mutes sam: everyone hears of it, as a moderator's mute.
    let muted = ServerMessage::Muted {
        participant_id: speaker.participant,
        muted: true,
        by_moderator: true,
    };
    boss.send(&format!(
        r#"{{"type":"moderate","participant_id":"{}","action":"mute"}}"#,
        speaker.participant
    ));
    boss.next_where("muted", |m| *m == muted).await;
    sam.next_where("muted", |m| *m == muted).await;

    // The owner kicks sam: sam is told and the room sees sam leave.
    boss.send(&format!(
        r#"{{"type":"moderate","participant_id":"{}","action":"kick"}}"#,
        speaker.participant
    ));
    sam.next_where("kicked", |m| *m == ServerMessage::Kicked)
        .await;
    boss.next_where("participant_left", |m| {
        *m == ServerMessage::ParticipantLeft {
            participant_id: speaker.participant,
        }
    })
    .await;
}
