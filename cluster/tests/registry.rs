//! Node registry conformance: every scenario runs against both backends.
//!
//! The Redis backend uses `REDIS_URL` (default `redis://127.0.0.1:6379`).
//! These tests fail, not skip, when Redis is unreachable: CI starts Redis.
//! Every test uses its own random key prefix so tests can run concurrently.

use std::collections::BTreeMap;
use std::time::Duration;

use veza_cluster::{ClusterError, NodeInfo, NodeRegistry};

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(300);
/// Comfortably past `SHORT`.
const AFTER_SHORT: Duration = Duration::from_millis(450);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

async fn registry(backend: Backend) -> NodeRegistry {
    match backend {
        Backend::Memory => NodeRegistry::memory(),
        Backend::Redis => {
            let url = redis_url();
            let prefix = format!("veza-test:{}:", uuid::Uuid::new_v4());
            NodeRegistry::redis(&url, &prefix)
                .await
                .unwrap_or_else(|e| panic!("Redis must be reachable at {url} for these tests: {e}"))
        }
    }
}

fn node(id: &str, participants: u32) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        http_url: format!("http://{id}.example:8080"),
        quic_url: Some(format!("https://{id}.example:4443")),
        quic_sha256: Some("ab".repeat(32)),
        cascade_url: None,
        udp_addr: format!("{id}.example:3478"),
        participants,
        packets_per_s: 1234,
        cpu: 0.25,
        draining: false,
    }
}

async fn beat(reg: &NodeRegistry, info: &NodeInfo, ttl: Duration) {
    reg.heartbeat(info, ttl).await.unwrap();
}

fn ids(nodes: &[NodeInfo]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

/// Places one participant and returns (node id, cascaded).
async fn place(reg: &NodeRegistry, room: &str, max: u32) -> (String, bool) {
    let p = reg
        .place(room, max)
        .await
        .unwrap()
        .expect("a node is available");
    (p.node.id, p.cascaded)
}

/// Runs each scenario against both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Memory).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Redis).await;
                }
            )*
        }
    };
}

conformance!(
    heartbeat_and_nodes,
    node_expires_after_ttl,
    deregister_removes_at_once,
    draining_round_trips_and_is_not_placed,
    first_join_picks_least_loaded_as_home,
    joins_stay_home_then_cascade_then_least_loaded_overall,
    dead_home_is_replaced,
    draining_home_is_replaced,
    reservations_spread_placements,
    concurrent_placements_respect_the_limit,
    heartbeat_resets_reservations,
    host_unhost_room_nodes,
    hosting_by_dead_node_is_not_reported,
    placement_marks_the_node_as_hosting,
    hosting_expires,
    invalid_records_are_rejected,
);

async fn heartbeat_and_nodes(b: Backend) {
    let reg = registry(b).await;
    assert!(reg.nodes().await.unwrap().is_empty());
    let (c, a, bb) = (node("c", 3), node("a", 1), node("b", 2));
    for n in [&c, &a, &bb] {
        beat(&reg, n, LONG).await;
    }
    assert_eq!(reg.nodes().await.unwrap(), vec![a.clone(), bb, c.clone()]);

    // A heartbeat replaces the whole record.
    let mut a2 = a.clone();
    a2.participants = 9;
    a2.quic_url = None;
    a2.cpu = 1.5;
    beat(&reg, &a2, LONG).await;
    let nodes = reg.nodes().await.unwrap();
    assert_eq!(nodes[0], a2);
    assert_eq!(nodes.len(), 3);

    // Clones share state.
    assert_eq!(reg.clone().nodes().await.unwrap(), nodes);
}

async fn node_expires_after_ttl(b: Backend) {
    let reg = registry(b).await;
    beat(&reg, &node("short", 0), SHORT).await;
    beat(&reg, &node("long", 0), LONG).await;
    assert_eq!(ids(&reg.nodes().await.unwrap()), ["long", "short"]);
    tokio::time::sleep(AFTER_SHORT).await;
    assert_eq!(ids(&reg.nodes().await.unwrap()), ["long"]);
    // A heartbeat brings it back.
    beat(&reg, &node("short", 0), LONG).await;
    assert_eq!(ids(&reg.nodes().await.unwrap()), ["long", "short"]);
}

async fn deregister_removes_at_once(b: Backend) {
    let reg = registry(b).await;
    beat(&reg, &node("a", 0), LONG).await;
    beat(&reg, &node("b", 0), LONG).await;
    reg.host("r", "a", LONG).await.unwrap();
    reg.deregister("a").await.unwrap();
    assert_eq!(ids(&reg.nodes().await.unwrap()), ["b"]);
    assert!(reg.room_nodes("r").await.unwrap().is_empty());
    assert_eq!(place(&reg, "r2", 5).await.0, "b");
    // Unknown ids are fine.
    reg.deregister("nobody").await.unwrap();
}

async fn draining_round_trips_and_is_not_placed(b: Backend) {
    let reg = registry(b).await;
    let mut a = node("a", 0);
    a.draining = true;
    beat(&reg, &a, LONG).await;
    assert_eq!(reg.nodes().await.unwrap(), vec![a.clone()]);
    assert!(reg.nodes().await.unwrap()[0].draining);
    // The only node is draining: nowhere to place.
    assert_eq!(reg.place("r", 5).await.unwrap(), None);
    beat(&reg, &node("b", 100), LONG).await;
    assert_eq!(place(&reg, "r", 5).await, ("b".to_owned(), false));
}

async fn first_join_picks_least_loaded_as_home(b: Backend) {
    let reg = registry(b).await;
    assert_eq!(reg.place("r", 5).await.unwrap(), None);
    beat(&reg, &node("a", 3), LONG).await;
    beat(&reg, &node("b", 1), LONG).await;
    beat(&reg, &node("c", 2), LONG).await;
    let p = reg.place("r", 5).await.unwrap().unwrap();
    assert_eq!(p.node, node("b", 1));
    assert!(!p.cascaded);
    // Ties go to the smallest id.
    beat(&reg, &node("b", 2), LONG).await;
    assert_eq!(place(&reg, "other", 5).await, ("b".to_owned(), false));
    let reg = registry(b).await;
    beat(&reg, &node("z", 0), LONG).await;
    beat(&reg, &node("m", 0), LONG).await;
    assert_eq!(place(&reg, "r", 5).await, ("m".to_owned(), false));
}

async fn joins_stay_home_then_cascade_then_least_loaded_overall(b: Backend) {
    let reg = registry(b).await;
    beat(&reg, &node("a", 0), LONG).await;
    beat(&reg, &node("b", 2), LONG).await;
    beat(&reg, &node("c", 3), LONG).await;
    // Home is `a`; it takes joins while its load < 4.
    for _ in 0..4 {
        assert_eq!(place(&reg, "r", 4).await, ("a".to_owned(), false));
    }
    // `a` is at the limit: least-loaded other node below the limit.
    assert_eq!(place(&reg, "r", 4).await, ("b".to_owned(), true));
    assert_eq!(place(&reg, "r", 4).await, ("b".to_owned(), true));
    assert_eq!(place(&reg, "r", 4).await, ("c".to_owned(), true));
    // All at 4: least loaded overall, ties by id, home included.
    assert_eq!(place(&reg, "r", 4).await, ("a".to_owned(), false));
    assert_eq!(place(&reg, "r", 4).await, ("b".to_owned(), true));
    assert_eq!(place(&reg, "r", 4).await, ("c".to_owned(), true));
    // The home did not move: once `a` has room again, joins go home.
    beat(&reg, &node("a", 1), LONG).await;
    assert_eq!(place(&reg, "r", 4).await, ("a".to_owned(), false));
}

async fn dead_home_is_replaced(b: Backend) {
    let reg = registry(b).await;
    beat(&reg, &node("a", 0), SHORT).await;
    beat(&reg, &node("b", 1), LONG).await;
    beat(&reg, &node("c", 2), LONG).await;
    assert_eq!(place(&reg, "r", 10).await, ("a".to_owned(), false));
    tokio::time::sleep(AFTER_SHORT).await;
    // `b` becomes the new home (not a cascade).
    assert_eq!(place(&reg, "r", 10).await, ("b".to_owned(), false));
    // `a` comes back, less loaded, but the home stays `b`.
    beat(&reg, &node("a", 0), LONG).await;
    assert_eq!(place(&reg, "r", 10).await, ("b".to_owned(), false));
}

async fn draining_home_is_replaced(b: Backend) {
    let reg = registry(b).await;
    beat(&reg, &node("a", 0), LONG).await;
    beat(&reg, &node("b", 1), LONG).await;
    assert_eq!(place(&reg, "r", 10).await, ("a".to_owned(), false));
    let mut a = node("a", 1);
    a.draining = true;
    beat(&reg, &a, LONG).await;
    assert_eq!(place(&reg, "r", 10).await, ("b".to_owned(), false));
    // Undraining `a` does not move the home back.
    beat(&reg, &node("a", 0), LONG).await;
    assert_eq!(place(&reg, "r", 10).await, ("b".to_owned(), false));
}

async fn three_empty_nodes(b: Backend) -> NodeRegistry {
    let reg = registry(b).await;
    for id in ["a", "b", "c"] {
        beat(&reg, &node(id, 0), LONG).await;
    }
    reg
}

fn count(placed: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for id in placed {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    counts
}

async fn reservations_spread_placements(b: Backend) {
    let reg = three_empty_nodes(b).await;
    let mut placed = Vec::new();
    for _ in 0..15 {
        placed.push(place(&reg, "r", 5).await.0);
    }
    assert_eq!(placed[..5], ["a", "a", "a", "a", "a"]);
    assert_eq!(
        count(&placed),
        BTreeMap::from([("a", 5), ("b", 5), ("c", 5)])
    );
    // All full: least loaded overall.
    assert_eq!(place(&reg, "r", 5).await, ("a".to_owned(), false));
    // Reservations count across rooms too.
    assert_eq!(place(&reg, "other", 5).await, ("b".to_owned(), false));
}

async fn concurrent_placements_respect_the_limit(b: Backend) {
    let reg = three_empty_nodes(b).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..15 {
        let reg = reg.clone();
        tasks.spawn(async move { place(&reg, "r", 5).await.0 });
    }
    let placed = tasks.join_all().await;
    assert_eq!(
        count(&placed),
        BTreeMap::from([("a", 5), ("b", 5), ("c", 5)])
    );
}

async fn heartbeat_resets_reservations(b: Backend) {
    let reg = three_empty_nodes(b).await;
    for _ in 0..5 {
        assert_eq!(place(&reg, "r", 5).await.0, "a");
    }
    assert_eq!(place(&reg, "r", 5).await, ("b".to_owned(), true));
    // `a` reports its real load (say two of the five never arrived).
    beat(&reg, &node("a", 3), LONG).await;
    assert_eq!(place(&reg, "r", 5).await, ("a".to_owned(), false));
    assert_eq!(place(&reg, "r", 5).await, ("a".to_owned(), false));
    assert_eq!(place(&reg, "r", 5).await, ("c".to_owned(), true));
}

async fn host_unhost_room_nodes(b: Backend) {
    let reg = registry(b).await;
    for id in ["a", "b", "c"] {
        beat(&reg, &node(id, 0), LONG).await;
    }
    assert!(reg.room_nodes("r").await.unwrap().is_empty());
    reg.host("r", "c", LONG).await.unwrap();
    reg.host("r", "a", LONG).await.unwrap();
    reg.host("other", "b", LONG).await.unwrap();
    assert_eq!(
        reg.room_nodes("r").await.unwrap(),
        vec![node("a", 0), node("c", 0)]
    );
    // Refreshing is idempotent.
    reg.host("r", "a", LONG).await.unwrap();
    assert_eq!(ids(&reg.room_nodes("r").await.unwrap()), ["a", "c"]);
    reg.unhost("r", "a").await.unwrap();
    assert_eq!(ids(&reg.room_nodes("r").await.unwrap()), ["c"]);
    reg.unhost("r", "c").await.unwrap();
    assert!(reg.room_nodes("r").await.unwrap().is_empty());
    // Unhosting twice, or an unknown room, is fine.
    reg.unhost("r", "c").await.unwrap();
    reg.unhost("nowhere", "c").await.unwrap();
    assert_eq!(ids(&reg.room_nodes("other").await.unwrap()), ["b"]);
    // Draining nodes still host their members.
    let mut b_draining = node("b", 0);
    b_draining.draining = true;
    beat(&reg, &b_draining, LONG).await;
    assert_eq!(reg.room_nodes("other").await.unwrap(), vec![b_draining]);
}

async fn hosting_by_dead_node_is_not_reported(b: Backend) {
    let reg = registry(b).await;
    beat(&reg, &node("a", 0), SHORT).await;
    beat(&reg, &node("b", 0), LONG).await;
    reg.host("r", "a", LONG).await.unwrap();
    reg.host("r", "b", LONG).await.unwrap();
    reg.host("r", "ghost", LONG).await.unwrap(); // never registered
    assert_eq!(ids(&reg.room_nodes("r").await.unwrap()), ["a", "b"]);
    tokio::time::sleep(AFTER_SHORT).await;
    assert_eq!(ids(&reg.room_nodes("r").await.unwrap()), ["b"]);
}

async fn placement_marks_the_node_as_hosting(b: Backend) {
    let reg = registry(b).await;
    beat(&reg, &node("a", 0), LONG).await;
    beat(&reg, &node("b", 0), LONG).await;
    place(&reg, "r", 1).await;
    assert_eq!(ids(&reg.room_nodes("r").await.unwrap()), ["a"]);
    assert_eq!(place(&reg, "r", 1).await, ("b".to_owned(), true));
    assert_eq!(ids(&reg.room_nodes("r").await.unwrap()), ["a", "b"]);
}

async fn hosting_expires(b: Backend) {
    let reg = registry(b).await;
    beat(&reg, &node("a", 0), LONG).await;
    beat(&reg, &node("b", 0), LONG).await;
    reg.host("r", "a", SHORT).await.unwrap();
    reg.host("r", "b", LONG).await.unwrap();
    tokio::time::sleep(AFTER_SHORT).await;
    assert_eq!(ids(&reg.room_nodes("r").await.unwrap()), ["b"]);
    // A refresh can also shorten the hosting.
    reg.host("r", "b", SHORT).await.unwrap();
    tokio::time::sleep(AFTER_SHORT).await;
    assert!(reg.room_nodes("r").await.unwrap().is_empty());
}

async fn invalid_records_are_rejected(b: Backend) {
    let reg = registry(b).await;
    let mut bad = node("", 0);
    let err = reg.heartbeat(&bad, LONG).await.unwrap_err();
    assert!(matches!(err, ClusterError::InvalidNode(_)), "{err:?}");
    bad.id = "a".to_owned();
    bad.cpu = f32::INFINITY;
    let err = reg.heartbeat(&bad, LONG).await.unwrap_err();
    assert!(matches!(err, ClusterError::InvalidNode(_)), "{err:?}");
    assert!(reg.nodes().await.unwrap().is_empty());
}

// Redis-only behaviour.

#[tokio::test]
async fn unreachable_redis_fails_to_connect() {
    // Port 1 is never a Redis server.
    let started = std::time::Instant::now();
    let err = NodeRegistry::redis("redis://127.0.0.1:1", "x:")
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Redis(_)), "{err:?}");
    assert!(!err.to_string().is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn redis_keys_carry_ttls_and_rooms_expire() {
    use redis::AsyncCommands;

    let url = redis_url();
    let prefix = format!("veza-test:{}:", uuid::Uuid::new_v4());
    let reg = NodeRegistry::redis(&url, &prefix).await.unwrap();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    beat(&reg, &node("a", 0), LONG).await;
    place(&reg, "r", 5).await;
    reg.host("r2", "a", SHORT).await.unwrap();

    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    assert_eq!(keys.len(), 5, "{keys:?}"); // nodes, node:a, r home + hosts, r2 hosts
    for key in &keys {
        let ttl: i64 = conn.pttl(key).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    // The home lives as long as the room's latest hosting entry (here the
    // 30 s one made by the placement).
    let home_ttl: i64 = conn.pttl(format!("{prefix}room:r:home")).await.unwrap();
    assert!(home_ttl > 29_000 && home_ttl <= 30_000, "{home_ttl}");
    tokio::time::sleep(AFTER_SHORT).await;
    let r2: bool = conn.exists(format!("{prefix}room:r2:hosts")).await.unwrap();
    assert!(!r2);
    reg.deregister("a").await.unwrap();
    let node_key: bool = conn.exists(format!("{prefix}node:a")).await.unwrap();
    assert!(!node_key);
}
