//! moq-net 0.3.18, the moq-lite reference implementation (software we did not write), talks
//! to the real `veza` binary over raw QUIC (ALPN `moq-lite-06`), both ways:
//!
//! * **moq-net subscribes.** Our `veza_moq` session publishes distinct fake Opus packets into
//!   a room; a moq-net client in the same room discovers the broadcast through announcements,
//!   reads `catalog.json` and receives the audio track. The Opus bytes after hang's legacy
//!   timestamp prefix must be exactly what was published, in order, 20 000 µs apart.
//! * **moq-net publishes.** A moq-net client announces a hang-style broadcast (catalog with
//!   one Opus rendition in the legacy container, one frame per group); our `veza_moq`
//!   listener in the room must receive the same bytes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moq_net::{Client, Hop, Timescale, Timestamp, origin, track};
use support::quic::{Endpoint, Room, opus_counter, opus_payload, room_path};
use support::{Serve, Server};
use tokio::sync::watch;
use tokio::time::timeout;
use veza_moq::catalog::{Catalog, Container, legacy_payload, split_legacy_payload};
use veza_moq::session::AudioInfo;

/// The whole test, a safety net over the bounded steps.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// One bounded step (a handshake, an announcement, a subscription, the first frame).
const STEP: Duration = Duration::from_secs(10);
/// One Opus frame.
const FRAME: Duration = Duration::from_millis(20);
/// Its duration in microseconds: the timestamp step.
const FRAME_US: u64 = 20_000;
/// Frames the receiver must get before the sender stops.
const WANTED: usize = 100;
/// Bytes of each fake Opus packet.
const PAYLOAD_LEN: usize = 60;
/// Where publishers start their clock (arbitrary, non-zero).
const START_US: u64 = 1_000_000;

/// A moq-net origin with its driver running.
fn moq_origin(hop: u64) -> origin::Producer {
    let hop = Hop::new(hop).expect("a non-zero hop");
    let (producer, driver) = origin::Producer::new(origin::Config::new(hop));
    tokio::spawn(moq_net::time::run(driver));
    producer
}

/// A moq-net session over raw QUIC to `room` with `token`, configured by `client`.
async fn moq_net_session(
    endpoint: &Endpoint,
    room: &str,
    token: &str,
    client: Client,
) -> moq_net::Session {
    let conn = endpoint.connect_moq().await;
    let transport = web_transport_quinn::Session::raw(conn);
    let (session, driver) = timeout(
        STEP,
        client
            .with_path(room_path(room, token))
            .connect(Instant::now(), transport),
    )
    .await
    .expect("the moq-net handshake timed out")
    .expect("the moq-net handshake");
    tokio::spawn(moq_net::time::run(driver));
    session
}

/// What a receiver saw: `(counter, timestamp µs)` per frame, in arrival order.
#[derive(Debug, Default)]
struct Received {
    frames: Vec<(u64, u64)>,
    first_after: Option<Duration>,
}

impl Received {
    /// Asserts frames contiguous and 20 ms apart, in arrival order if `in_order` (else once
    /// sorted: each group travels on its own QUIC stream, so a listener that reads in
    /// arrival order may see one overtake another), and prints the figures.
    fn check(&self, who: &str, sent: u64, in_order: bool) {
        let late = self
            .frames
            .windows(2)
            .filter(|pair| pair[1].0 < pair[0].0)
            .count();
        let mut frames = self.frames.clone();
        if !in_order {
            frames.sort_unstable();
        }
        println!(
            "{who}: {} frames sent, {} received (counters {:?}..={:?}, {late} arrived after a \
             later one), first frame {:?} after subscribing",
            sent,
            frames.len(),
            frames.first().map(|f| f.0),
            frames.last().map(|f| f.0),
            self.first_after,
        );
        assert!(
            frames.len() >= WANTED,
            "{who}: only {} frames arrived",
            frames.len()
        );
        for pair in frames.windows(2) {
            let ((a, ta), (b, tb)) = (pair[0], pair[1]);
            assert_eq!(b, a + 1, "{who}: frame {b} followed {a}: lost or reordered");
            assert_eq!(
                tb.checked_sub(ta),
                Some(FRAME_US),
                "{who}: timestamps of frames {a} and {b}: {ta} then {tb}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_net_subscribes_to_a_veza_moq_publisher() {
    timeout(TEST_TIMEOUT, moq_net_subscribes())
        .await
        .expect("the test did not finish within its timeout");
}

async fn moq_net_subscribes() {
    let server = Serve::new().start().await;
    let endpoint = Endpoint::of(&server).await;
    let room = Room::create(&server, "publisher").await;
    let listener = room.listener(&server, "moqnet").await;

    // Our publisher: a veza-moq session announcing one broadcast.
    let publisher = endpoint.session(&room.id, &room.owner.token).await;
    let writer = publisher.publisher().publish(
        "microphone",
        AudioInfo {
            track: "audio".into(),
            channels: 2,
            bitrate: Some(32_000),
        },
    );
    // The server subscribes to it once it read the announcement and the catalog.
    wait_for(&server, "the server to subscribe to our broadcast", || {
        writer.subscribers() > 0
    })
    .await;

    // It sends at real time until told to stop.
    let sent = Arc::new(AtomicU64::new(0));
    let (stop, mut stopped) = watch::channel(false);
    let sender = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FRAME);
            for n in 0u64.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let payload = Bytes::from(opus_payload(n, PAYLOAD_LEN));
                writer.write(n, START_US + n * FRAME_US, payload);
                sent.store(n + 1, Ordering::SeqCst);
            }
            drop(writer);
        })
    };

    // moq-net, subscribing only.
    let origin = moq_origin(7);
    let _session = moq_net_session(
        &endpoint,
        &room.id,
        &listener.token,
        Client::new().with_subscriber(origin.clone()),
    )
    .await;
    let consumer = origin.consume();
    let mut announced = consumer.announced();
    let update = timeout(STEP, announced.next())
        .await
        .expect("no announcement reached moq-net")
        .expect("the announcements ended");
    println!("moq-net: announced {:?} ({:?})", update.prefix, update.kind);
    assert!(update.kind.is_active(), "{update:?}");
    assert_eq!(
        update.prefix.as_str(),
        room.owner.participant,
        "the broadcast is named by the publisher's participant id"
    );
    let broadcast = timeout(STEP, consumer.request_broadcast(update.prefix.as_str()))
        .await
        .expect("resolving the broadcast timed out")
        .unwrap_or_else(|e| panic!("resolving the broadcast: {e}"));

    // The catalog: one Opus rendition, 48 kHz, legacy container.
    let mut catalog_track = timeout(
        STEP,
        broadcast
            .track("catalog.json")
            .expect("the catalog track")
            .subscribe(None),
    )
    .await
    .expect("subscribing to the catalog timed out")
    .unwrap_or_else(|e| panic!("subscribing to the catalog: {e}"));
    let mut group = timeout(STEP, catalog_track.recv_group())
        .await
        .expect("no catalog group")
        .expect("reading the catalog group")
        .expect("the catalog track ended");
    let json = timeout(STEP, group.read_frame())
        .await
        .expect("no catalog frame")
        .expect("reading the catalog frame")
        .expect("an empty catalog group")
        .payload;
    println!("moq-net: catalog.json = {}", String::from_utf8_lossy(&json));
    let catalog = Catalog::from_json(&json).expect("the catalog parses");
    let (name, audio) = catalog
        .audio_tracks()
        .next()
        .expect("the catalog lists an audio track");
    assert_eq!(name, "audio");
    assert_eq!(audio.codec, "opus");
    assert_eq!(audio.sample_rate, 48_000);
    assert!(
        matches!(audio.number_of_channels, 1 | 2),
        "{}",
        audio.number_of_channels
    );
    assert_eq!(audio.container, Container::Legacy);
    let raw: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(raw["audio"]["renditions"]["audio"]["sampleRate"], 48_000);
    assert_eq!(
        raw["audio"]["renditions"]["audio"]["container"]["kind"],
        "legacy"
    );
    drop(catalog_track);

    // The audio track.
    let subscribed = Instant::now();
    // As an audio player would: in sequence order, waiting up to 500 ms for a late group.
    let mut subscription = track::Subscription::default();
    subscription.max_age = Duration::from_millis(500);
    let audio_track = timeout(
        STEP,
        broadcast
            .track(name)
            .expect("the audio track")
            .subscribe(subscription),
    )
    .await
    .expect("subscribing to the audio track timed out")
    .unwrap_or_else(|e| panic!("subscribing to the audio track: {e}"));
    assert_eq!(audio_track.info().timescale, Timescale::MICRO);
    let mut audio_track = audio_track.ordered();
    let mut received = Received::default();
    while received.frames.len() < WANTED {
        let mut group = timeout(STEP, audio_track.next_group())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no audio group within {STEP:?} after {} frames; server stderr:\n{}",
                    received.frames.len(),
                    server.stderr()
                )
            })
            .expect("reading an audio group")
            .expect("the audio track ended");
        let sequence = group.sequence;
        let frame = timeout(STEP, group.read_frame())
            .await
            .expect("no frame in the group")
            .expect("reading the frame")
            .expect("an empty group");
        received.first_after.get_or_insert(subscribed.elapsed());
        let (legacy_us, opus) = split_legacy_payload(&frame.payload)
            .unwrap_or_else(|e| panic!("group {sequence}: no legacy timestamp prefix: {e:?}"));
        let n = opus_counter(opus)
            .unwrap_or_else(|| panic!("group {sequence}: the Opus bytes changed: {opus:02x?}"));
        // The moq-lite frame timestamp, in the track's timescale (µs), agrees with the prefix.
        assert_eq!(
            frame.timestamp.as_micros(),
            u128::from(legacy_us),
            "group {sequence}"
        );
        assert_eq!(
            group.read_frame().await.ok().flatten().map(|f| f.payload),
            None,
            "group {sequence} holds more than one frame"
        );
        received.frames.push((n, legacy_us));
    }
    stop.send_replace(true);
    sender.await.expect("the sender task");
    received.check("moq-net subscriber", sent.load(Ordering::SeqCst), true);
    assert_no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_net_publishes_to_a_veza_moq_listener() {
    timeout(TEST_TIMEOUT, moq_net_publishes())
        .await
        .expect("the test did not finish within its timeout");
}

async fn moq_net_publishes() {
    let server = Serve::new().start().await;
    let endpoint = Endpoint::of(&server).await;
    let room = Room::create(&server, "moqnet").await;
    let listener = room.listener(&server, "listener").await;

    // moq-net: a hang-style broadcast with a catalog and an Opus track in microseconds.
    let origin = moq_origin(3);
    let broadcast = origin
        .create_broadcast("hang")
        .expect("creating the broadcast");
    let catalog_track = broadcast
        .create_track("catalog.json", None)
        .expect("the catalog track");
    let audio = broadcast
        .create_track(
            "audio",
            track::Info::default().with_timescale(Timescale::MICRO),
        )
        .expect("the audio track");
    let catalog = serde_json::json!({
        "audio": { "renditions": { "audio": {
            "codec": "opus",
            "sampleRate": 48_000,
            "numberOfChannels": 2,
            "bitrate": 64_000,
            "container": { "kind": "legacy" },
        } } }
    });
    let mut group = catalog_track.append_group().expect("a catalog group");
    group
        .write_frame(Timestamp::ZERO, catalog.to_string().into_bytes())
        .expect("writing the catalog");
    group.finish().expect("finishing the catalog group");
    broadcast
        .announce(Default::default())
        .expect("announcing the broadcast");
    let _session = moq_net_session(
        &endpoint,
        &room.id,
        &room.owner.token,
        Client::new().with_publisher(&origin),
    )
    .await;

    // Our listener sees the publisher's broadcast under its participant id.
    let session = endpoint.session(&room.id, &listener.token).await;
    let subscriber = session.subscriber();
    let mut announcements = timeout(STEP, subscriber.announced(""))
        .await
        .expect("ANNOUNCE_OK timed out")
        .expect("the announce stream");
    let announcement = timeout(STEP, announcements.next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no announcement reached the listener; server stderr:\n{}",
                server.stderr()
            )
        })
        .expect("the announce stream failed")
        .expect("the announce stream ended");
    println!("listener: announced {announcement:?}");
    assert!(announcement.active);
    assert_eq!(announcement.path, room.owner.participant);
    let subscribed = Instant::now();
    let mut track = timeout(
        STEP,
        subscriber.subscribe_audio(&announcement.path, Duration::from_millis(500)),
    )
    .await
    .expect("subscribing timed out")
    .expect("subscribing to the audio");
    println!("listener: track {:?} {:?}", track.name, track.info);
    assert_eq!(track.info.codec, "opus");
    assert_eq!(track.info.sample_rate, 48_000);

    // moq-net sends one frame per group at real time until told to stop.
    let sent = Arc::new(AtomicU64::new(0));
    let (stop, mut stopped) = watch::channel(false);
    let sender = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FRAME);
            for n in 0u64.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let ts = START_US + n * FRAME_US;
                let mut payload = Vec::with_capacity(PAYLOAD_LEN + 8);
                legacy_payload(ts, &opus_payload(n, PAYLOAD_LEN), &mut payload);
                let mut group = audio.append_group().expect("an audio group");
                group
                    .write_frame(Timestamp::from_micros(ts).expect("a timestamp"), payload)
                    .expect("writing a frame");
                group.finish().expect("finishing the group");
                sent.store(n + 1, Ordering::SeqCst);
            }
            let _ = audio.finish();
        })
    };

    let mut received = Received::default();
    while received.frames.len() < WANTED {
        let frame = timeout(STEP, track.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no audio within {STEP:?} after {} frames ({} sent); server stderr:\n{}",
                    received.frames.len(),
                    sent.load(Ordering::SeqCst),
                    server.stderr()
                )
            })
            .expect("the subscription ended");
        received.first_after.get_or_insert(subscribed.elapsed());
        let n = opus_counter(&frame.payload).unwrap_or_else(|| {
            panic!(
                "group {}: the Opus bytes changed: {:02x?}",
                frame.group, frame.payload
            )
        });
        received.frames.push((n, frame.timestamp_us));
    }
    stop.send_replace(true);
    sender.await.expect("the sender task");
    received.check("veza-moq listener", sent.load(Ordering::SeqCst), false);
    drop(broadcast);
    assert_no_panic(&server);
}

/// Polls `done` until it holds, for up to [`STEP`].
async fn wait_for(server: &Server, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {STEP:?} for {what}; server stderr:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_no_panic(server: &Server) {
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
}
