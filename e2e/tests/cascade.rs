//! A cluster of one `veza api` and three `veza media` nodes on one fresh PostgreSQL database and
//! a Redis and a NATS server of the test's own (so they can be restarted mid-test). Placement
//! allows one participant per node, so a room's publisher and listeners land on different nodes
//! and the room is cascaded between them.
//!
//! * A publisher on one node is heard by listeners on the two others, over WebRTC and over
//!   QUIC; chat sent from different nodes reaches every receiver in one order.
//! * Redis, then NATS, restarted under load: media keeps flowing, chat catches up with no
//!   message lost or repeated.
//! * `kill -9` of a listener's node: the listener (`veza listen`) joins again through the API
//!   and hears again within 10 s. SIGTERM of another: the node drains, its listener moves,
//!   and the node exits. `kill -9` of the publisher's node: `veza broadcast` publishes again
//!   through the API and both listeners hear it again within 10 s.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::daemon::Daemon;
use support::{
    PASSWORD, PgDatabase, Serve, Server, TempDir, describe, last_json_line, number, run_veza,
    str_field, veza_bin, write_wav,
};

/// The nodes of one test.
struct Cluster {
    api: Server,
    /// `media-1`, `media-2`, …, in that order.
    media: Vec<Server>,
    redis: Daemon,
    nats: Daemon,
    _db: PgDatabase,
    _keys: TempDir,
}

const NODE_IDS: [&str; 4] = ["media-1", "media-2", "media-3", "media-4"];

/// The tests of this file run one at a time: each runs a whole cluster and load on a machine
/// that may have two cores, and their timing figures (10 s to hear again) are the point.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Cluster {
    /// The API node and `media` media nodes (at most four).
    async fn start(media: usize) -> Self {
        let db = PgDatabase::create();
        let redis = Daemon::redis();
        let nats = Daemon::nats();
        let keys = TempDir::new("cascade-keys");
        let key_file = keys.path().join("jwt-keys.json");
        let node = |role: &'static str| {
            Serve::new()
                .role(role)
                .env("DATABASE_URL", db.url())
                .env("REDIS_URL", redis.url())
                .env("NATS_URL", nats.url())
                .env("VEZA_JWT_KEYS_FILE", key_file.to_str().expect("utf-8 path"))
                .env("VEZA_JWT_ISSUER", "http://veza.cascade.test")
                .env("VEZA_CLUSTER_SECRET", "a cluster secret for the e2e tests")
                .env("VEZA_NODE_MAX_PARTICIPANTS", "1")
                .env("VEZA_DRAIN_TIMEOUT_SECS", "10")
        };
        // The API creates the key file the media nodes read.
        let api = node("api").start().await;
        let mut nodes = Vec::new();
        for id in &NODE_IDS[..media] {
            nodes.push(node("media").env("VEZA_NODE_ID", *id).start().await);
        }
        Self {
            api,
            media: nodes,
            redis,
            nats,
            _db: db,
            _keys: keys,
        }
    }

    /// People on a media node, as its last heartbeat reported them (`None`: not registered).
    fn participants(&self, id: &str) -> Option<u64> {
        self.redis
            .redis_cli(&["HGET", &format!("veza:node:{id}"), "participants"])
            .parse()
            .ok()
    }

    /// Waits until a node other than `taken` reports one participant; its index.
    async fn node_with_newcomer(&self, taken: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for (i, id) in NODE_IDS[..self.media.len()].iter().enumerate() {
                if !taken.contains(&i) && self.participants(id) == Some(1) {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new participant on a free node; registry: {:?}",
                NODE_IDS.map(|id| self.participants(id))
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        let mut all = format!("--- api ---\n{}", self.api.stderr());
        for (id, node) in NODE_IDS.iter().zip(&self.media) {
            all.push_str(&format!("\n--- {id} ---\n{}", node.stderr()));
        }
        all
    }

    async fn loadtest(&self, args: &[&str]) -> Value {
        loadtest(&self.api.base_url(), args)
            .await
            .unwrap_or_else(|failed| panic!("{failed}\n{}", self.logs()))
    }
}

/// Runs `veza loadtest --server <base> --json <args>`; its report, or why it failed.
async fn loadtest(base: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["loadtest", "--server", base, "--json"];
    all.extend_from_slice(args);
    let output = run_veza(&all, &[]).await;
    if !output.status.success() {
        return Err(format!("veza {}: {}", all.join(" "), describe(&output)));
    }
    let report = last_json_line(&output);
    println!("{}: {report}", args.join(" "));
    Ok(report)
}

/// One room, one publisher, two subscribers (on the two other nodes).
fn media_run(transport: &'static str, duration: &'static str) -> [&'static str; 10] {
    [
        "--transport",
        transport,
        "--rooms",
        "1",
        "--publishers",
        "1",
        "--subscribers",
        "2",
        "--duration",
        duration,
    ]
}

/// One room, two chat senders and two receivers spread over the nodes.
fn chat_run(duration: &'static str) -> [&'static str; 11] {
    [
        "--chat",
        "--rooms",
        "1",
        "--senders",
        "2",
        "--receivers",
        "2",
        "--rate",
        "6",
        "--duration",
        duration,
    ]
}

/// Checks a media report: everyone connected, about 50 packets/s per subscriber, little loss.
fn assert_media(report: &Value, subscribers: f64, max_loss: f64, what: &str) {
    assert_eq!(report["peers_failed"], 0, "{what}: {report}");
    assert_eq!(report["publishers_connected"], 1, "{what}: {report}");
    let pps = number(report, "/forwarded_pps");
    let expected = 50.0 * subscribers;
    assert!(
        (expected * 0.7..=expected * 1.3).contains(&pps),
        "{what}: {pps} packets/s, expected {expected}: {report}"
    );
    let loss = number(report, "/loss_ratio");
    assert!(loss < max_loss, "{what}: loss {loss}: {report}");
}

/// Checks a chat report: messages got through, none lost, gap-free and in order everywhere.
fn assert_chat(report: &Value, what: &str) {
    assert_eq!(report["peers_failed"], 0, "{what}: {report}");
    assert!(number(report, "/delivered") > 0.0, "{what}: {report}");
    assert_eq!(report["lost"], 0, "{what}: {report}");
    assert_eq!(report["seq_gaps"], 0, "{what}: {report}");
    assert_eq!(report["seq_regressions"], 0, "{what}: {report}");
}

#[tokio::test]
async fn a_room_spans_three_nodes_over_webrtc_and_quic_with_one_chat_order() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3).await;

    // One publisher and two subscribers, one per node: both subscribers hear the publisher
    // through the cascade.
    let webrtc = cluster.loadtest(&media_run("webrtc", "4s")).await;
    assert_media(&webrtc, 2.0, 0.05, "webrtc");
    let pulling = cluster
        .media
        .iter()
        .filter(|node| node.stderr().contains("cascade: pulling the room"))
        .count();
    assert_eq!(
        pulling,
        3,
        "every node hosting the room pulls it:\n{}",
        cluster.logs()
    );

    let quic = cluster.loadtest(&media_run("quic", "4s")).await;
    assert_media(&quic, 2.0, 0.05, "quic");

    // Two senders and two receivers spread over the nodes: every receiver gets every message,
    // in sequence order, with no gap and no duplicate.
    let chat = cluster.loadtest(&chat_run("4s")).await;
    assert_chat(&chat, "chat");
}

#[tokio::test]
async fn media_and_chat_survive_redis_and_nats_restarts() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3).await;
    let base = cluster.api.base_url();
    let (redis, nats) = (&mut cluster.redis, &mut cluster.nats);
    let restarts = async {
        // Both runs have joined (through the API, which needs Redis) well before.
        tokio::time::sleep(Duration::from_secs(6)).await;
        redis.stop();
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.start();
        tokio::time::sleep(Duration::from_secs(3)).await;
        nats.stop();
        tokio::time::sleep(Duration::from_secs(1)).await;
        nats.start();
    };
    let (media_args, chat_args) = (media_run("quic", "14s"), chat_run("14s"));
    let media = loadtest(&base, &media_args);
    let chat = loadtest(&base, &chat_args);
    let ((), media, chat) = tokio::join!(restarts, media, chat);
    let (media, chat) = match (media, chat) {
        (Ok(media), Ok(chat)) => (media, chat),
        (Err(failed), _) | (_, Err(failed)) => panic!("{failed}\n{}", cluster.logs()),
    };
    println!("media: {media}\nchat: {chat}");
    let context = cluster.logs();
    assert_media(
        &media,
        2.0,
        0.05,
        &format!("media across restarts\n{context}"),
    );
    assert_chat(&chat, &format!("chat across restarts\n{context}"));
    // The nodes found their way back into the new Redis.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &NODE_IDS[..3] {
        assert!(
            cluster.participants(id).is_some(),
            "{id} is not registered again"
        );
    }
}

/// `veza <args>` with the test's environment scrubbed, as a child.
fn veza(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(veza_bin());
    command
        .args(args)
        .env_remove("VEZA_USERNAME")
        .env_remove("VEZA_PASSWORD")
        .env_remove("VEZA_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Arrival times (unix µs) of the packets in a `--timing-log`.
fn arrivals(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How long after `at` (unix µs) the first packet arrived.
fn resumed_after(arrivals: &[u64], at: u64) -> Option<Duration> {
    arrivals
        .iter()
        .find(|&&t| t > at)
        .map(|&t| Duration::from_micros(t - at))
}

#[tokio::test]
async fn clients_of_a_killed_or_drained_node_go_on_elsewhere() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(4).await;
    let api = cluster.api.api();
    let owner = api.register("owner").await;
    let owner_access = str_field(&owner, "/access_token").to_owned();
    let room = api
        .post(
            "/api/v1/rooms",
            Some(&owner_access),
            json!({ "name": "failover", "visibility": "public" }),
        )
        .await
        .expect(201, "create room");
    let room = str_field(&room, "/id").to_owned();
    for name in ["first", "second"] {
        api.register(name).await;
    }
    let dir = TempDir::new("failover");
    let tone = dir.path().join("tone.wav");
    write_wav(&tone, 48_000, &[(440.0, 2.0)]);
    let base = cluster.api.base_url();
    let account = |name: &'static str| {
        [
            "--server",
            base.as_str(),
            "--room",
            room.as_str(),
            "--username",
            name,
            "--password",
            PASSWORD,
        ]
        .map(str::to_owned)
    };

    let mut broadcast = veza(&["broadcast", tone.to_str().expect("utf-8"), "--loop"])
        .args(account("owner"))
        .spawn()
        .expect("starting veza broadcast");
    let publisher_node = cluster.node_with_newcomer(&[]).await;
    let listen = |name: &'static str, log: &Path| {
        let out = dir.path().join(format!("{name}.ogg"));
        veza(&[
            "listen",
            "--out",
            out.to_str().expect("utf-8"),
            "--duration",
            "40",
            "--timing-log",
            log.to_str().expect("utf-8"),
        ])
        .args(account(name))
        .spawn()
        .expect("starting veza listen")
    };
    let (first_log, second_log) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let first = listen("first", &first_log);
    let first_node = cluster.node_with_newcomer(&[publisher_node]).await;
    let second = listen("second", &second_log);
    let second_node = cluster
        .node_with_newcomer(&[publisher_node, first_node])
        .await;
    println!(
        "publisher on {}, listeners on {} and {}",
        NODE_IDS[publisher_node], NODE_IDS[first_node], NODE_IDS[second_node]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // kill -9 the first listener's node.
    let killed_at = unix_micros();
    cluster.media[first_node].kill();
    tokio::time::sleep(Duration::from_secs(12)).await;

    // SIGTERM the second listener's node: it drains and exits.
    let drained_at = unix_micros();
    let status = cluster.media[second_node]
        .terminate(Duration::from_secs(12))
        .await;
    let drained_in = Duration::from_micros(unix_micros() - drained_at);
    assert!(
        status.is_some_and(|s| s.success()),
        "the drained node exited with {status:?} after {drained_in:?}:\n{}",
        cluster.logs()
    );
    let stderr = cluster.media[second_node].stderr();
    assert!(stderr.contains("draining"), "{stderr}");

    tokio::time::sleep(Duration::from_secs(6)).await;

    // kill -9 the publisher's node: the broadcast publishes again elsewhere.
    let publisher_killed_at = unix_micros();
    cluster.media[publisher_node].kill();

    let first = first.wait_with_output().await.expect("veza listen");
    let second = second.wait_with_output().await.expect("veza listen");
    let _ = broadcast.start_kill();
    let broadcast = broadcast.wait_with_output().await.expect("veza broadcast");
    let context = format!(
        "first listener: {}\nsecond listener: {}\nbroadcast: {}\n{}",
        describe(&first),
        describe(&second),
        describe(&broadcast),
        cluster.logs()
    );
    assert!(
        first.status.success() && second.status.success(),
        "{context}"
    );

    let first_arrivals = arrivals(&first_log);
    let resumed = resumed_after(&first_arrivals, killed_at + 100_000)
        .unwrap_or_else(|| panic!("the first listener never heard again: {context}"));
    println!("after kill -9: heard again in {resumed:?}; drained node exited in {drained_in:?}");
    assert!(resumed < Duration::from_secs(10), "{resumed:?}: {context}");
    let second_arrivals = arrivals(&second_log);
    let moved = resumed_after(&second_arrivals, drained_at + 100_000)
        .unwrap_or_else(|| panic!("the second listener never heard again: {context}"));
    println!("after SIGTERM: heard again in {moved:?}");
    assert!(moved < Duration::from_secs(5), "{moved:?}: {context}");
    for (name, times) in [("first", &first_arrivals), ("second", &second_arrivals)] {
        let again = resumed_after(times, publisher_killed_at + 100_000)
            .unwrap_or_else(|| panic!("{name} never heard the publisher again: {context}"));
        println!("after kill -9 of the publisher's node: {name} heard again in {again:?}");
        assert!(
            again < Duration::from_secs(10),
            "{name}: {again:?}: {context}"
        );
    }
    // Both went on hearing to the end: ~50 packets/s over the last 5 s.
    let end = unix_micros();
    for (name, times) in [("first", &first_arrivals), ("second", &second_arrivals)] {
        let last = times.iter().filter(|&&t| t > end - 8_000_000).count();
        assert!(
            last > 150,
            "{name}: {last} packets in the last 8 s: {context}"
        );
    }
}
