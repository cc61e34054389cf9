//! Chat across nodes over NATS: two chat services (two "nodes") on one PostgreSQL database,
//! each with its own NATS connection. Needs PostgreSQL at 127.0.0.1:5432 and NATS at
//! 127.0.0.1:4222 (`VEZA_TEST_NATS_URL`); the outage scenario runs its own `nats-server`
//! (`VEZA_TEST_NATS_SERVER`, default `/usr/sbin/nats-server`).

use std::time::{Duration, Instant};

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use veza_chat::testing::NatsServer;
use veza_chat::{ChatBus, ChatConfig, ChatPage, ChatService, Sender};
use veza_proto::chat::ChatEvent;
use veza_proto::{Role, RoomId, UserId, Visibility};
use veza_store::testing::TestDb;
use veza_store::{NewRoom, Store};

fn nats_url() -> String {
    std::env::var("VEZA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A room on one database, and a chat service per node.
struct Cluster {
    store: Store,
    room: RoomId,
    nodes: Vec<ChatService>,
    _db: TestDb,
}

impl Cluster {
    async fn new(nats_url: &str, nodes: usize) -> Self {
        let db = TestDb::postgres()
            .await
            .expect("PostgreSQL at 127.0.0.1:5432");
        let store = db.store().await.expect("migrate");
        let owner = user(&store, "olga").await;
        let room = store
            .create_room(NewRoom {
                name: "cluster",
                description: None,
                visibility: Visibility::Public,
                owner_id: owner,
            })
            .await
            .expect("room")
            .id;
        let mut services = Vec::new();
        for _ in 0..nodes {
            // A node of its own: its own pool on the database and its own NATS connection.
            let node_store = Store::connect(&db.url).await.expect("connect");
            let bus = ChatBus::nats(nats_url, node_store.clone())
                .await
                .expect("NATS");
            services.push(ChatService::with_bus(node_store, unlimited(), bus));
        }
        Self {
            store,
            room,
            nodes: services,
            _db: db,
        }
    }

    async fn speaker(&self, name: &str) -> Sender {
        let id = user(&self.store, name).await;
        self.store
            .set_member_role(self.room, id, Role::Speaker)
            .await
            .expect("speaker");
        Sender {
            user_id: id,
            username: name.to_owned(),
            room: self.room,
            role: Role::Speaker,
            can_chat: true,
        }
    }
}

async fn user(store: &Store, name: &str) -> UserId {
    store
        .create_user(name, "$argon2id$fake")
        .await
        .expect("user")
        .id
}

fn unlimited() -> ChatConfig {
    ChatConfig {
        rate_per_sec: 1_000_000,
        burst: 1_000_000,
        ..ChatConfig::default()
    }
}

/// The seqs of the `Created` events received until seq `until`, failing after `within`.
async fn created_until(rx: &mut Receiver<ChatEvent>, until: i64, within: Duration) -> Vec<i64> {
    let deadline = Instant::now() + within;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&until) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(ChatEvent::Created { message })) => seqs.push(message.seq),
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => panic!("lagged by {n}"),
            Ok(Err(RecvError::Closed)) => panic!("closed"),
            Err(_) => panic!(
                "waited {within:?} for seq {until}; got {} events, last {:?}",
                seqs.len(),
                seqs.last()
            ),
        }
    }
    seqs
}

/// Nothing more arrives for a while.
async fn quiet(rx: &mut Receiver<ChatEvent>, name: &str) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        panic!("{name}: unexpected {event:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_on_two_nodes_are_seen_in_one_order() {
    let cluster = Cluster::new(&nats_url(), 2).await;
    let mut subscribers = [
        cluster.nodes[0].subscribe(cluster.room),
        cluster.nodes[1].subscribe(cluster.room),
    ];
    let mut senders = Vec::new();
    for (i, name) in ["ann", "bob", "cid", "dee"].into_iter().enumerate() {
        let node = cluster.nodes[i % 2].clone();
        let sender = cluster.speaker(name).await;
        senders.push(tokio::spawn(async move {
            for n in 0..50 {
                node.send(&sender, &format!("{name}-{n}"), &format!("{name} {n}"))
                    .await
                    .expect("send");
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    let expected: Vec<i64> = (1..=200).collect();
    let mut seen = Vec::new();
    for rx in &mut subscribers {
        let seqs = created_until(rx, 200, Duration::from_secs(10)).await;
        assert_eq!(seqs, expected, "in order, no gaps, no repeats");
        seen.push(seqs);
    }
    assert_eq!(seen[0], seen[1]);
    // The store numbered the two nodes' concurrent inserts without gaps or repeats.
    let stored: Vec<i64> = cluster
        .store
        .chat_history(cluster.room, ChatPage::After(0), 500)
        .await
        .expect("history")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(stored, expected);
    for (i, rx) in subscribers.iter_mut().enumerate() {
        quiet(rx, &format!("node {i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_are_dropped() {
    let cluster = Cluster::new(&nats_url(), 2).await;
    let other = RoomId::new();
    let mut rx = cluster.nodes[1].subscribe(cluster.room);
    let mut elsewhere = cluster.nodes[1].subscribe(other);
    let sender = cluster.speaker("ann").await;

    let raw = async_nats::connect(nats_url()).await.expect("NATS");
    let subject = format!("veza.chat.{}", cluster.room);
    for junk in [
        &b"not json"[..],
        b"{\"type\":\"chat.created\"}",
        b"{\"type\":\"chat.unknown\",\"message\":{}}",
        b"\xff\xfe",
        b"",
    ] {
        raw.publish(subject.clone(), junk.to_vec().into())
            .await
            .expect("publish");
    }
    // A well-formed event of this room on another room's subject is not believed either.
    let ack = cluster.nodes[0]
        .send(&sender, "one", "one")
        .await
        .expect("send");
    raw.publish(
        format!("veza.chat.{other}"),
        serde_json::to_vec(&ChatEvent::Created {
            message: ack.message.clone(),
        })
        .expect("json")
        .into(),
    )
    .await
    .expect("publish");
    raw.flush().await.expect("flush");
    cluster.nodes[0]
        .send(&sender, "two", "two")
        .await
        .expect("send");

    assert_eq!(
        created_until(&mut rx, 2, Duration::from_secs(5)).await,
        [1, 2]
    );
    quiet(&mut rx, "room").await;
    quiet(&mut elsewhere, "other room").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_sent_during_a_nats_outage_reach_the_other_node_once() {
    let server = NatsServer::start(None).await;
    let cluster = Cluster::new(&server.url(), 2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_a = a.subscribe(cluster.room);
    let mut on_b = b.subscribe(cluster.room);
    let ann = cluster.speaker("ann").await;

    for n in 1..=5 {
        a.send(&ann, &format!("before-{n}"), "before")
            .await
            .expect("send");
    }
    for rx in [&mut on_a, &mut on_b] {
        assert_eq!(
            created_until(rx, 5, Duration::from_secs(5)).await,
            (1..=5).collect::<Vec<_>>()
        );
    }

    let port = server.stop().await;
    let bus_a = match a.bus() {
        ChatBus::Nats(bus) => bus.clone(),
        other => panic!("{other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while bus_a.connection_state() == async_nats::connection::State::Connected {
        assert!(
            Instant::now() < deadline,
            "node A did not notice the outage"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every other message comes from a node whose NATS publications are lost for good (an
    // in-process bus): node B can only read those from the store.
    let lost = ChatService::new(cluster.store.clone(), unlimited());
    for n in 1..=20 {
        let node = if n % 2 == 0 { &lost } else { a };
        let started = Instant::now();
        node.send(&ann, &format!("during-{n}"), "during")
            .await
            .expect("send while NATS is down");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a send waited for NATS"
        );
        if n == 1 {
            assert_eq!(
                created_until(&mut on_a, 6, Duration::from_millis(100)).await,
                [6],
                "node A's own subscribers do not wait for NATS"
            );
        }
    }
    assert_eq!(
        created_until(&mut on_a, 25, Duration::from_secs(5)).await,
        (7..=25).collect::<Vec<_>>(),
        "node A gets the lost node's messages from the store, in order"
    );

    let server = NatsServer::start(Some(port)).await;
    let restarted = Instant::now();
    assert_eq!(
        created_until(&mut on_b, 25, Duration::from_secs(8)).await,
        (6..=25).collect::<Vec<_>>(),
        "node B catches up, in order, once"
    );
    eprintln!(
        "node B caught up {:?} after the restart",
        restarted.elapsed()
    );
    for n in 1..=5 {
        a.send(&ann, &format!("after-{n}"), "after")
            .await
            .expect("send");
    }
    assert_eq!(
        created_until(&mut on_b, 30, Duration::from_secs(5)).await,
        (26..=30).collect::<Vec<_>>()
    );
    assert_eq!(
        created_until(&mut on_a, 30, Duration::from_secs(5)).await,
        (26..=30).collect::<Vec<_>>()
    );
    // Catch-ups and the periodic check (every 2 s) deliver nothing twice.
    tokio::time::sleep(veza_chat::bus::CATCH_UP_EVERY).await;
    quiet(&mut on_b, "node B").await;
    quiet(&mut on_a, "node A").await;
    server.stop().await;
}
