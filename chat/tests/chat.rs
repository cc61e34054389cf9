//! The chat service over a real store: every scenario on PostgreSQL (a fresh database per
//! test) and SQLite.

use std::time::{Duration, Instant};

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;
use veza_chat::{ChatConfig, ChatError, ChatPage, ChatService, Sender};
use veza_proto::chat::ChatEvent;
use veza_proto::{Role, RoomId, UserId, Visibility};
use veza_store::testing::TestDb;
use veza_store::{NewRoom, Store};

/// Runs each scenario once per backend, on a multi-threaded runtime (subscribers run beside
/// senders, as sessions do in the server).
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() {
                let db = veza_store::testing::TestDb::postgres().await.expect("PostgreSQL at 127.0.0.1:5432");
                super::$name(super::Backend::Postgres, db).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() {
                super::$name(super::Backend::Sqlite, veza_store::testing::TestDb::sqlite()).await;
            })*
        }
    };
}

both_backends!(
    messages_are_ordered_stored_and_paged,
    a_retry_is_stored_and_delivered_once,
    rate_limit_allows_a_burst_then_refills,
    invalid_messages_are_refused,
    the_word_filter_refuses_blocked_words,
    no_grant_muted_banned_and_strangers_are_refused,
    mutes_follow_the_ban_rules,
    edits_and_deletes_follow_permissions_and_go_out_live,
    fan_out_latency,
);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Postgres,
    Sqlite,
}

/// A room with an owner, a moderator and a speaker, and a chat service over it.
struct World {
    store: Store,
    chat: ChatService,
    room: RoomId,
    owner: Sender,
    moderator: Sender,
    speaker: Sender,
    _db: TestDb,
}

impl World {
    async fn new(db: TestDb, config: ChatConfig) -> Self {
        Self::with(db, config, Visibility::Public).await
    }

    async fn with(db: TestDb, config: ChatConfig, visibility: Visibility) -> Self {
        let store = db.store().await.expect("migrate");
        let owner = user(&store, "olga").await;
        let room = store
            .create_room(NewRoom {
                name: "chat",
                description: None,
                visibility,
                owner_id: owner,
            })
            .await
            .expect("room")
            .id;
        let moderator = user(&store, "mike").await;
        let speaker = user(&store, "sam").await;
        store
            .set_member_role(room, moderator, Role::Moderator)
            .await
            .expect("moderator");
        store
            .set_member_role(room, speaker, Role::Speaker)
            .await
            .expect("speaker");
        Self {
            chat: ChatService::new(store.clone(), config),
            owner: sender(owner, "olga", room, Role::Owner),
            moderator: sender(moderator, "mike", room, Role::Moderator),
            speaker: sender(speaker, "sam", room, Role::Speaker),
            store,
            room,
            _db: db,
        }
    }

    /// A new user with no role in the room, acting as a listener (as a public room's joiner).
    async fn stranger(&self, name: &str) -> Sender {
        sender(
            user(&self.store, name).await,
            name,
            self.room,
            Role::Listener,
        )
    }
}

async fn user(store: &Store, name: &str) -> UserId {
    store
        .create_user(name, "$argon2id$fake")
        .await
        .expect("user")
        .id
}

fn sender(user_id: UserId, name: &str, room: RoomId, role: Role) -> Sender {
    Sender {
        user_id,
        username: name.to_owned(),
        room,
        role,
        can_chat: role.grants().can_chat,
    }
}

/// No rate limit to speak of.
fn unlimited() -> ChatConfig {
    ChatConfig {
        rate_per_sec: 1_000_000,
        burst: 1_000_000,
        ..ChatConfig::default()
    }
}

/// The next event, waiting up to a second.
async fn next(rx: &mut Receiver<ChatEvent>) -> ChatEvent {
    tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("an event within a second")
        .expect("the channel is open")
}

/// Asserts nothing more arrives within 50 ms.
async fn assert_quiet(rx: &mut Receiver<ChatEvent>) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

async fn messages_are_ordered_stored_and_paged(_: Backend, db: TestDb) {
    let w = World::new(db, unlimited()).await;
    let before = veza_store::now_ms();
    for i in 1..=12 {
        let from = if i % 2 == 0 { &w.owner } else { &w.speaker };
        let ack = w
            .chat
            .send(from, &format!("c{i}"), &format!("message {i}"))
            .await
            .expect("send");
        assert!(ack.created);
        assert_eq!(ack.message.seq, i, "the room's next seq");
        assert_eq!(ack.message.room_id, w.room);
        assert_eq!(ack.message.user_id, from.user_id);
        assert_eq!(ack.message.username, from.username);
        assert!(ack.message.created_at >= before, "a server timestamp");
        assert!(!ack.message.deleted && ack.message.edited_at.is_none());
    }
    let seqs = |page: Vec<veza_proto::chat::ChatMessage>| {
        page.into_iter().map(|m| m.seq).collect::<Vec<_>>()
    };
    let reader = w.stranger("rita").await;
    let latest = w
        .chat
        .history(&reader, ChatPage::Latest, 5)
        .await
        .expect("latest");
    assert_eq!(latest[0].text, "message 12");
    assert_eq!(seqs(latest), [12, 11, 10, 9, 8]);
    let back = w
        .chat
        .history(&reader, ChatPage::Before(8), 5)
        .await
        .expect("before");
    assert_eq!(seqs(back), [7, 6, 5, 4, 3]);
    let catch_up = w
        .chat
        .history(&reader, ChatPage::After(9), 50)
        .await
        .expect("after");
    assert_eq!(seqs(catch_up), [10, 11, 12]);
    // The limit is clamped to 1..=200.
    assert_eq!(
        w.chat
            .history(&reader, ChatPage::Latest, 0)
            .await
            .expect("limit 0")
            .len(),
        1
    );
    assert_eq!(
        w.chat
            .history(&reader, ChatPage::After(0), 10_000)
            .await
            .expect("huge limit")
            .len(),
        12
    );
    assert!(matches!(
        w.chat
            .history(
                &Sender {
                    room: RoomId::new(),
                    ..reader.clone()
                },
                ChatPage::Latest,
                10
            )
            .await,
        Err(ChatError::RoomNotFound)
    ));
}

async fn a_retry_is_stored_and_delivered_once(_: Backend, db: TestDb) {
    let w = World::new(db, ChatConfig::default()).await;
    let mut rx = w.chat.subscribe(w.room);
    let first = w
        .chat
        .send(&w.speaker, "retry-1", "hello")
        .await
        .expect("send");
    assert!(first.created);
    let again = w
        .chat
        .send(&w.speaker, "retry-1", "hello")
        .await
        .expect("retry");
    assert!(!again.created, "the retry is acknowledged as a duplicate");
    assert_eq!(again.message, first.message, "with the stored message");

    let event = next(&mut rx).await;
    assert!(matches!(&event, ChatEvent::Created { message } if *message == first.message));
    assert_quiet(&mut rx).await;

    // Another user may use the same client id.
    let other = w.chat.send(&w.owner, "retry-1", "hi").await.expect("send");
    assert!(other.created);
    assert_eq!(other.message.seq, 2);
    let history = w
        .chat
        .history(&w.owner, ChatPage::Latest, 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 2, "stored once");
}

async fn rate_limit_allows_a_burst_then_refills(_: Backend, db: TestDb) {
    let w = World::new(db, ChatConfig::default()).await;
    for i in 0..10 {
        w.chat
            .send(&w.speaker, &format!("b{i}"), "burst")
            .await
            .expect("within the burst of 10");
    }
    let refused = w
        .chat
        .send(&w.speaker, "b10", "one too many")
        .await
        .expect_err("the 11th is refused");
    let ChatError::RateLimited { retry_after } = refused else {
        panic!("expected RateLimited, got {refused:?}");
    };
    assert_eq!(refused.code(), "chat_rate_limited");
    assert_eq!(refused.retry_after(), Some(retry_after));
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200),
        "one token every 200 ms at 5/s: {retry_after:?}"
    );
    // Users have separate buckets.
    w.chat
        .send(&w.owner, "o1", "not limited")
        .await
        .expect("another user");
    // After the advertised wait, exactly one more.
    tokio::time::sleep(retry_after + Duration::from_millis(5)).await;
    w.chat
        .send(&w.speaker, "b10", "refilled")
        .await
        .expect("a token refilled");
    assert!(matches!(
        w.chat.send(&w.speaker, "b11", "again").await,
        Err(ChatError::RateLimited { .. })
    ));
    // Refused messages were not stored.
    let stored = w
        .chat
        .history(&w.owner, ChatPage::Latest, 50)
        .await
        .expect("history");
    assert_eq!(stored.len(), 12);
}

async fn invalid_messages_are_refused(_: Backend, db: TestDb) {
    // A burst of 3: invalid messages must not use up tokens.
    let w = World::new(
        db,
        ChatConfig {
            burst: 3,
            ..ChatConfig::default()
        },
    )
    .await;
    let cases: [(&str, String, &str); 8] = [
        ("ok-1", String::new(), "empty_message"),
        ("ok-1", " \n\t ".into(), "empty_message"),
        ("ok-1", "x".repeat(4001), "message_too_long"),
        ("ok-1", "nul\0byte".into(), "invalid_text"),
        ("", "hello".into(), "invalid_client_id"),
        ("has space", "hello".into(), "invalid_client_id"),
        (&"c".repeat(65), "hello".into(), "invalid_client_id"),
        ("ünïcode", "hello".into(), "invalid_client_id"),
    ];
    for (client_id, text, code) in &cases {
        for _ in 0..3 {
            let err = w
                .chat
                .send(&w.speaker, client_id, text)
                .await
                .expect_err("refused");
            assert_eq!(
                err.code(),
                *code,
                "{client_id:?} {:?}",
                &text[..text.len().min(20)]
            );
        }
    }
    // Exactly 4000 characters (of two bytes each) is fine, and the burst is intact.
    let long = "é".repeat(4000);
    let ack = w
        .chat
        .send(&w.speaker, "ok-1", &long)
        .await
        .expect("4000 characters");
    assert_eq!(ack.message.text, long);
    w.chat
        .send(&w.speaker, "ok-2", "  spaces are kept  ")
        .await
        .expect("send");
    assert_eq!(
        w.chat
            .history(&w.speaker, ChatPage::Latest, 1)
            .await
            .expect("history")[0]
            .text,
        "  spaces are kept  "
    );
}

async fn the_word_filter_refuses_blocked_words(_: Backend, db: TestDb) {
    let w = World::new(
        db,
        ChatConfig {
            blocked_words: vec!["Darn".into(), "heck no".into()],
            ..unlimited()
        },
    )
    .await;
    let mut rx = w.chat.subscribe(w.room);
    for (i, text) in [
        "darn",
        "Oh DARN!",
        "well,darn.",
        "HECK NO",
        "it's a darn-shame",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            matches!(
                w.chat.send(&w.speaker, &format!("f{i}"), text).await,
                Err(ChatError::BlockedWord)
            ),
            "{text:?} is refused"
        );
    }
    assert_quiet(&mut rx).await;
    for (i, text) in ["darned socks", "undarn", "heck", "no heck"]
        .iter()
        .enumerate()
    {
        w.chat
            .send(&w.speaker, &format!("ok{i}"), text)
            .await
            .unwrap_or_else(|e| panic!("{text:?} is fine: {e}"));
    }
    // Edits go through the filter too.
    assert!(matches!(
        w.chat.edit(&w.speaker, 1, "darn").await,
        Err(ChatError::BlockedWord)
    ));
}

async fn no_grant_muted_banned_and_strangers_are_refused(_: Backend, db: TestDb) {
    let w = World::new(db, unlimited()).await;
    let mut rx = w.chat.subscribe(w.room);

    let no_grant = Sender {
        can_chat: false,
        ..w.speaker.clone()
    };
    assert!(matches!(
        w.chat.send(&no_grant, "g1", "hi").await,
        Err(ChatError::NoChatGrant)
    ));

    w.chat
        .mute(&w.moderator, w.speaker.user_id)
        .await
        .expect("mute");
    let muted = w
        .chat
        .send(&w.speaker, "m1", "hi")
        .await
        .expect_err("muted");
    assert!(matches!(muted, ChatError::Muted));
    assert_eq!(muted.code(), "chat_muted");
    assert!(
        w.store
            .is_chat_muted(w.room, w.speaker.user_id)
            .await
            .expect("stored"),
        "the mute is in the database, so it survives restarts and holds on every node"
    );
    // A second service on the same database (another node) sees the mute.
    let other_node = ChatService::new(w.store.clone(), unlimited());
    assert!(matches!(
        other_node.send(&w.speaker, "m1", "hi").await,
        Err(ChatError::Muted)
    ));
    w.chat
        .unmute(&w.moderator, w.speaker.user_id)
        .await
        .expect("unmute");
    w.chat
        .send(&w.speaker, "m1", "back")
        .await
        .expect("unmuted");

    // A banned user is refused at once, though their media token is still valid.
    w.store
        .ban(w.room, w.speaker.user_id, w.owner.user_id)
        .await
        .expect("ban");
    assert!(matches!(
        w.chat.send(&w.speaker, "m2", "hi").await,
        Err(ChatError::Banned)
    ));
    assert!(matches!(
        w.chat.history(&w.speaker, ChatPage::Latest, 10).await,
        Err(ChatError::Banned)
    ));

    // A public room's listener may chat; nobody may chat in a room that is gone.
    let listener = w.stranger("lars").await;
    w.chat
        .send(&listener, "l1", "hello from a listener")
        .await
        .expect("listeners chat");
    assert!(matches!(
        w.chat
            .send(
                &Sender {
                    room: RoomId::new(),
                    ..listener.clone()
                },
                "l2",
                "hi"
            )
            .await,
        Err(ChatError::RoomNotFound)
    ));
    // Exactly the two accepted messages went out.
    assert_eq!(next(&mut rx).await.message().text, "back");
    assert_eq!(next(&mut rx).await.message().text, "hello from a listener");
    assert_quiet(&mut rx).await;

    // A private room: strangers may neither read nor write.
    w.store
        .update_room(
            w.room,
            veza_store::RoomPatch {
                visibility: Some(Visibility::Private),
                ..Default::default()
            },
        )
        .await
        .expect("make private");
    assert!(matches!(
        w.chat.send(&listener, "l3", "hi").await,
        Err(ChatError::NotMember)
    ));
    assert!(matches!(
        w.chat.history(&listener, ChatPage::Latest, 10).await,
        Err(ChatError::NotMember)
    ));
    w.chat
        .send(&w.moderator, "p1", "members still chat")
        .await
        .expect("member");
}

async fn mutes_follow_the_ban_rules(_: Backend, db: TestDb) {
    let w = World::new(db, unlimited()).await;
    let other_moderator = sender(user(&w.store, "mo").await, "mo", w.room, Role::Moderator);
    w.store
        .set_member_role(w.room, other_moderator.user_id, Role::Moderator)
        .await
        .expect("moderator");
    let code = |r: Result<(), ChatError>| r.expect_err("refused").code();

    assert_eq!(
        code(w.chat.mute(&w.speaker, w.owner.user_id).await),
        "not_moderator"
    );
    assert_eq!(
        code(w.chat.mute(&w.speaker, w.moderator.user_id).await),
        "not_moderator"
    );
    assert_eq!(
        code(w.chat.mute(&w.owner, w.owner.user_id).await),
        "owner_protected",
        "not even the owner mutes the owner"
    );
    assert_eq!(
        code(w.chat.mute(&w.moderator, w.owner.user_id).await),
        "owner_protected"
    );
    assert_eq!(
        code(w.chat.mute(&w.moderator, other_moderator.user_id).await),
        "owner_only"
    );
    assert_eq!(
        code(w.chat.mute(&w.moderator, w.moderator.user_id).await),
        "owner_only",
        "a moderator cannot mute themselves"
    );
    assert!(matches!(
        w.chat.mute(&w.moderator, UserId::new()).await,
        Err(ChatError::UserNotFound)
    ));
    w.chat
        .mute(&w.owner, w.moderator.user_id)
        .await
        .expect("the owner mutes a moderator");
    assert!(matches!(
        w.chat.send(&w.moderator, "x", "hi").await,
        Err(ChatError::Muted)
    ));
    w.chat
        .unmute(&w.owner, w.moderator.user_id)
        .await
        .expect("unmute");
    assert!(matches!(
        w.chat.unmute(&w.owner, w.moderator.user_id).await,
        Err(ChatError::NotMuted)
    ));

    // A moderator in the token but no longer in the store (demoted since the join) cannot
    // moderate; nor can a member whose token says listener.
    w.store
        .set_member_role(w.room, w.moderator.user_id, Role::Speaker)
        .await
        .expect("demote");
    assert_eq!(
        code(w.chat.mute(&w.moderator, w.speaker.user_id).await),
        "not_moderator"
    );
    w.chat
        .mute(&other_moderator, w.speaker.user_id)
        .await
        .expect("a moderator mutes a speaker");
    w.chat
        .mute(&other_moderator, w.speaker.user_id)
        .await
        .expect("muting again is fine");
}

async fn edits_and_deletes_follow_permissions_and_go_out_live(_: Backend, db: TestDb) {
    let w = World::new(db, unlimited()).await;
    let mut rx = w.chat.subscribe(w.room);
    let listener = w.stranger("lena").await;
    let m1 = w
        .chat
        .send(&w.speaker, "e1", "frist")
        .await
        .expect("send")
        .message;
    let m2 = w
        .chat
        .send(&listener, "e2", "second")
        .await
        .expect("send")
        .message;
    let m3 = w
        .chat
        .send(&w.owner, "e3", "third")
        .await
        .expect("send")
        .message;
    for seq in 1..=3 {
        assert_eq!(next(&mut rx).await.message().seq, seq);
    }

    // Edits: the author only.
    let edited = w
        .chat
        .edit(&w.speaker, m1.seq, "first")
        .await
        .expect("edit");
    assert_eq!(edited.text, "first");
    assert!(edited.edited_at.is_some());
    assert_eq!((edited.id, edited.seq), (m1.id, m1.seq));
    match next(&mut rx).await {
        ChatEvent::Edited { message } => assert_eq!(message, edited),
        other => panic!("expected chat.edited, got {other:?}"),
    }
    for who in [&w.owner, &w.moderator, &listener] {
        assert!(matches!(
            w.chat.edit(who, m1.seq, "hijacked").await,
            Err(ChatError::NotAuthor)
        ));
    }
    assert!(matches!(
        w.chat.edit(&w.speaker, 99, "nothing").await,
        Err(ChatError::MessageNotFound)
    ));
    assert!(matches!(
        w.chat.edit(&w.speaker, m1.seq, "").await,
        Err(ChatError::EmptyMessage)
    ));

    // Deletes: the author, or the owner or a moderator; not another member.
    assert!(matches!(
        w.chat.delete(&listener, m1.seq).await,
        Err(ChatError::NotAuthor)
    ));
    assert!(matches!(
        w.chat.delete(&w.speaker, m3.seq).await,
        Err(ChatError::NotAuthor)
    ));
    let by_author = w.chat.delete(&listener, m2.seq).await.expect("own message");
    assert!(by_author.deleted && by_author.text.is_empty());
    let by_moderator = w
        .chat
        .delete(&w.moderator, m1.seq)
        .await
        .expect("a moderator deletes a speaker's message");
    assert_eq!(by_moderator.user_id, w.speaker.user_id);
    w.chat
        .delete(&w.moderator, m3.seq)
        .await
        .expect("a moderator deletes any message, the owner's too");
    for seq in [m2.seq, m1.seq, m3.seq] {
        match next(&mut rx).await {
            ChatEvent::Deleted { message } => {
                assert_eq!(message.seq, seq);
                assert!(message.deleted && message.text.is_empty());
            }
            other => panic!("expected chat.deleted, got {other:?}"),
        }
    }
    assert_quiet(&mut rx).await;

    // A deleted message can be neither edited nor deleted again, and stays in the history
    // as a tombstone.
    assert!(matches!(
        w.chat.edit(&w.speaker, m1.seq, "back").await,
        Err(ChatError::MessageDeleted)
    ));
    assert!(matches!(
        w.chat.delete(&w.owner, m1.seq).await,
        Err(ChatError::MessageDeleted)
    ));
    assert!(matches!(
        w.chat.delete(&w.owner, 99).await,
        Err(ChatError::MessageNotFound)
    ));
    let history = w
        .chat
        .history(&w.owner, ChatPage::After(0), 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|m| m.deleted && m.text.is_empty()));
    let stored = w.store.chat_message(w.room, m1.seq).await.expect("row");
    assert_eq!(stored.deleted_by, Some(w.moderator.user_id));
    assert_eq!(stored.text, "", "the text is erased from the database");
}

/// Send → receive latency of 200 messages to three subscribers (other members' sessions),
/// measured from the call to `send` to the subscriber task holding the event.
async fn fan_out_latency(backend: Backend, db: TestDb) {
    const MESSAGES: usize = 200;
    const SUBSCRIBERS: usize = 3;
    let w = World::new(db, unlimited()).await;
    let mut receivers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut rx = w.chat.subscribe(w.room);
        receivers.push(tokio::spawn(async move {
            let mut arrivals = Vec::with_capacity(MESSAGES);
            while arrivals.len() < MESSAGES {
                match rx.recv().await {
                    Ok(event) => arrivals.push((event.message().seq, Instant::now())),
                    Err(err) => panic!("subscriber: {err}"),
                }
            }
            arrivals
        }));
    }
    // Warm the pool and the caches, as a running server is.
    w.chat
        .history(&w.owner, ChatPage::Latest, 1)
        .await
        .expect("warm up");
    let mut sent_at = vec![Instant::now(); MESSAGES + 1];
    for i in 1..=MESSAGES {
        let start = Instant::now();
        let ack = w
            .chat
            .send(&w.speaker, &format!("lat-{i}"), "how fast is this?")
            .await
            .expect("send");
        sent_at[usize::try_from(ack.message.seq).expect("positive")] = start;
    }
    let mut latencies = Vec::with_capacity(MESSAGES * SUBSCRIBERS);
    for receiver in receivers {
        let arrivals = tokio::time::timeout(Duration::from_secs(10), receiver)
            .await
            .expect("every message arrives")
            .expect("subscriber task");
        let seqs: Vec<i64> = arrivals.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=MESSAGES as i64).collect::<Vec<_>>(),
            "in order, each once"
        );
        for (seq, at) in arrivals {
            latencies.push(at.duration_since(sent_at[seq as usize]));
        }
    }
    latencies.sort_unstable();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let (p50, p99, max) = (pct(50), pct(99), latencies[latencies.len() - 1]);
    println!(
        "chat fan-out latency ({backend:?}): {MESSAGES} messages x {SUBSCRIBERS} subscribers, \
         send -> receive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    // The goal is under 50 ms on one node; the figures are printed and kept in
    // docs/benchmarks.md. A timed assertion that tight would fail on a busy CI machine for
    // reasons that are not bugs, so the test asserts only what a broken fan-out (polling, a
    // lost wake-up) would break: every message arrives within a second.
    assert!(
        max < Duration::from_secs(1),
        "slowest delivery {max:?} ({backend:?})"
    );
}
