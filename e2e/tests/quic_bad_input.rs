//! Bad input on the QUIC endpoint of the real `veza` binary, from a raw quinn client that
//! writes moq-lite bytes by hand. Each bad session must be closed with a clear application
//! error code and reason, or, for stream-level mistakes the draft lets a peer survive, have
//! just that stream refused while the session lives. Throughout, a well-behaved publisher and
//! listener in the same room (our `veza_moq` sessions) must keep exchanging audio, and the
//! server must never panic.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{ConnectionError, ReadError, TransportErrorCode, VarInt};
use support::quic::{Endpoint, Member, Room, opus_counter, opus_payload, room_path};
use support::{Serve, Server};
use tokio::time::timeout;
use veza_moq::code::{session as close_codes, stream as stream_codes};
use veza_moq::coding::encode_varint;
use veza_moq::message::{
    Announce, AnnounceOk, AnnounceRequest, AnnounceStart, Setup, StreamType, Subscribe,
    UniStreamType,
};
use veza_moq::session::AudioInfo;
use veza_moq::{Decode, DecodeError, Encode};

/// The whole test, a safety net over the bounded steps.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// One bounded step.
const STEP: Duration = Duration::from_secs(5);
/// How long the server waits for a raw client's SETUP (`HANDSHAKE_TIMEOUT` in sfu/src/quic).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames the good listener must receive after each case.
const MORE_FRAMES: u64 = 10;
/// Bytes of each fake Opus packet.
const PAYLOAD_LEN: usize = 40;

/// The well-behaved pair: our publisher writes at real time, our listener counts what it
/// gets and records the first anomaly.
struct Good {
    state: Arc<Mutex<Flow>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Flow {
    /// Counters received (each group travels on its own stream, so arrival order may differ
    /// from sending order by a frame or so; duplicates or altered bytes are errors).
    seen: HashSet<u64>,
    /// The highest counter received.
    highest: Option<u64>,
    /// Frames that arrived after a later one.
    late: u64,
    received: u64,
    error: Option<String>,
}

impl Good {
    async fn start(server: &Server, endpoint: &Endpoint, room: &Room, listener: &Member) -> Self {
        let publisher = endpoint.session(&room.id, &room.owner.token).await;
        let writer = publisher.publisher().publish(
            "microphone",
            AudioInfo {
                track: "audio".into(),
                channels: 1,
                bitrate: None,
            },
        );
        let send = tokio::spawn(async move {
            let _session = publisher;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for n in 0u64.. {
                tick.tick().await;
                writer.write(n, n * 20_000, Bytes::from(opus_payload(n, PAYLOAD_LEN)));
            }
        });
        let session = endpoint.session(&room.id, &listener.token).await;
        let subscriber = session.subscriber();
        let mut announcements = timeout(STEP, subscriber.announced(""))
            .await
            .expect("ANNOUNCE_OK")
            .expect("the announce stream");
        let path = loop {
            let announcement = timeout(STEP, announcements.next())
                .await
                .unwrap_or_else(|_| panic!("no announcement; server stderr:\n{}", server.stderr()))
                .expect("announcements")
                .expect("the announce stream ended");
            if announcement.active && announcement.path == room.owner.participant {
                break announcement.path;
            }
        };
        let mut track = timeout(
            STEP,
            subscriber.subscribe_audio(&path, Duration::from_millis(500)),
        )
        .await
        .expect("subscribing timed out")
        .expect("subscribing");
        let state = Arc::new(Mutex::new(Flow::default()));
        let receive = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let _session = session;
                let _announcements = announcements;
                while let Some(frame) = track.next().await {
                    let mut flow = state.lock().unwrap();
                    match opus_counter(&frame.payload) {
                        Some(n) if flow.seen.insert(n) => {
                            if flow.highest.is_some_and(|highest| n < highest) {
                                flow.late += 1;
                            }
                            flow.highest = flow.highest.max(Some(n));
                            flow.received += 1;
                        }
                        Some(n) => {
                            flow.error.get_or_insert(format!("frame {n} arrived twice"));
                        }
                        None => {
                            let error = format!("altered bytes: {:02x?}", frame.payload);
                            flow.error.get_or_insert(error);
                        }
                    }
                }
                let mut flow = state.lock().unwrap();
                flow.error
                    .get_or_insert_with(|| "the good subscription ended".into());
            })
        };
        let good = Self {
            state,
            tasks: vec![send, receive],
        };
        good.assert_flowing("the start").await;
        good
    }

    /// Waits until [`MORE_FRAMES`] more frames arrived, with no anomaly.
    async fn assert_flowing(&self, after: &str) {
        let before = self.state.lock().unwrap().received;
        let started = Instant::now();
        loop {
            let (received, late, error) = {
                let flow = self.state.lock().unwrap();
                (flow.received, flow.late, flow.error.clone())
            };
            if let Some(error) = error {
                panic!("the good listener, after {after}: {error}");
            }
            if received >= before + MORE_FRAMES {
                println!(
                    "  good pair after {after}: {received} frames so far ({late} late), \
                     {MORE_FRAMES} more in {:?}",
                    started.elapsed()
                );
                return;
            }
            assert!(
                started.elapsed() < STEP,
                "the good listener got no audio for {STEP:?} after {after}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Good {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A stream error code as it is on the wire: web-transport-quinn maps the application's
/// codes into the HTTP/3 range reserved for WebTransport (`0x52e4a40fa8db + n + n / 0x1e`)
/// for raw QUIC sessions too, on both ends (moq-net's peers do the same).
fn stream_code(code: u32) -> VarInt {
    let code = u64::from(code);
    VarInt::from_u64(0x52e4_a40f_a8db + code + code / 0x1e).expect("a varint")
}

/// `token` with its times moved ten minutes into the past, signed with the server's own key
/// from its data folder (`jwt-keys.json`: PKCS#8 Ed25519 keys by `kid`).
fn expired_copy(server: &Server, token: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let (header, mut claims) = support::jwt_parts(token);
    let kid = support::jwt_kid(token);
    let keys: serde_json::Value = serde_json::from_slice(
        &std::fs::read(server.data_dir().join("jwt-keys.json")).expect("reading jwt-keys.json"),
    )
    .expect("jwt-keys.json is JSON");
    let pkcs8 = keys["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|key| key["kid"] == kid.as_str()))
        .and_then(|key| key["pkcs8"].as_str())
        .unwrap_or_else(|| panic!("no key {kid} in {keys}"));
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(
        &STANDARD.decode(pkcs8).expect("base64 PKCS#8"),
    )
    .expect("an Ed25519 key");
    let now = support::unix_now();
    claims["iat"] = (now - 600).into();
    claims["exp"] = (now - 300).into();
    let encode = |value: &serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let signed = format!("{}.{}", encode(&header), encode(&claims));
    let signature = URL_SAFE_NO_PAD.encode(pair.sign(signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// The wire bytes of a SETUP stream.
fn setup_stream(setup: &Setup) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_varint(UniStreamType::Setup as u64, &mut bytes);
    setup.encode(&mut bytes);
    bytes
}

/// Opens a unidirectional stream and writes `bytes`; finishes it if `finish`.
async fn send_uni(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> quinn::SendStream {
    let mut stream = conn.open_uni().await.expect("open_uni");
    stream.write_all(bytes).await.expect("writing a uni stream");
    if finish {
        stream.finish().expect("finishing a uni stream");
    }
    stream
}

/// A raw QUIC session (ALPN moq-lite-06) that sent SETUP with `path`.
async fn raw_session(endpoint: &Endpoint, path: &str) -> quinn::Connection {
    let conn = endpoint.connect_moq().await;
    send_uni(&conn, &setup_stream(&Setup::with_path(path)), true).await;
    conn
}

/// Reads one message of type `T` from `recv`, buffering in `buf`.
async fn read_message<T: Decode>(recv: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> T {
    loop {
        let mut input = &buf[..];
        match T::decode(&mut input) {
            Ok(message) => {
                let used = buf.len() - input.len();
                buf.drain(..used);
                return message;
            }
            Err(DecodeError::Short) => {}
            Err(err) => panic!("the server sent a malformed message: {err}"),
        }
        let chunk = timeout(STEP, recv.read_chunk(65_536, true))
            .await
            .expect("the server did not answer")
            .expect("reading from the server")
            .expect("the server ended the stream");
        buf.extend_from_slice(&chunk.bytes);
    }
}

/// Asserts the server closes `conn` with `code` and a reason containing `reason`.
async fn expect_closed(case: &str, conn: &quinn::Connection, code: u32, reason: &str) {
    let error = timeout(SETUP_TIMEOUT + STEP, conn.closed())
        .await
        .unwrap_or_else(|_| panic!("{case}: the session stayed open"));
    match &error {
        ConnectionError::ApplicationClosed(close) => {
            let text = String::from_utf8_lossy(&close.reason);
            println!(
                "{case}: closed with code {:#x}, reason {text:?}",
                close.error_code.into_inner()
            );
            assert_eq!(
                close.error_code,
                VarInt::from_u32(code),
                "{case}: code (reason {text:?})"
            );
            assert!(
                text.contains(reason),
                "{case}: reason {text:?} does not mention {reason:?}"
            );
        }
        other => panic!("{case}: expected an application close, got {other:?}"),
    }
}

/// Asserts `conn` is still open and served: an Announce stream gets ANNOUNCE_OK.
async fn expect_alive(case: &str, conn: &quinn::Connection) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open_bi");
    let mut bytes = Vec::new();
    encode_varint(StreamType::Announce as u64, &mut bytes);
    AnnounceRequest {
        prefix: String::new(),
        ended: false,
    }
    .encode(&mut bytes);
    send.write_all(&bytes)
        .await
        .expect("writing ANNOUNCE_REQUEST");
    let ok: AnnounceOk = read_message(&mut recv, &mut Vec::new()).await;
    assert!(
        conn.close_reason().is_none(),
        "{case}: closed: {:?}",
        conn.close_reason()
    );
    println!("{case}: session alive (ANNOUNCE_OK, hop {})", ok.hop_id);
}

/// Accepts the server's Announce stream (it asks every session what it publishes) and
/// answers ANNOUNCE_OK.
async fn answer_announce(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = timeout(STEP, conn.accept_bi())
        .await
        .expect("the server opened no Announce stream")
        .expect("accept_bi");
    let mut buf = Vec::new();
    let kind: StreamType = read_message(&mut recv, &mut buf).await;
    assert_eq!(kind, StreamType::Announce);
    let _request: AnnounceRequest = read_message(&mut recv, &mut buf).await;
    let ok = AnnounceOk {
        hop_id: 1,
        active_count: 0,
    };
    send.write_all(&ok.to_bytes()).await.expect("ANNOUNCE_OK");
    (send, recv)
}

fn announce_start(suffix: &str) -> Vec<u8> {
    Announce::Start(AnnounceStart {
        suffix: suffix.into(),
        epoch: 0,
        ended: false,
        hops: Vec::new(),
        route_cost: 0,
        cold_cost: 0,
    })
    .to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_the_bad_session_only() {
    timeout(TEST_TIMEOUT, bad_input())
        .await
        .expect("the test did not finish within its timeout");
}

async fn bad_input() {
    let server = Serve::new().start().await;
    let endpoint = Endpoint::of(&server).await;
    let room = Room::create(&server, "owner").await;
    let good_listener = room.listener(&server, "good").await;
    let good = Good::start(&server, &endpoint, &room, &good_listener).await;

    // Sessions that never send SETUP are closed after the server's timeout: start one now.
    let silent = endpoint.connect_moq().await;
    let silent_since = Instant::now();

    // 1. Garbage on a bidirectional stream: a Subscribe stream whose message is nonsense.
    let bad = room.listener(&server, "garbage").await;
    let conn = raw_session(&endpoint, &room_path(&room.id, &bad.token)).await;
    let (mut send, _recv) = conn.open_bi().await.expect("open_bi");
    send.write_all(&[StreamType::Subscribe as u8, 0x04, 0xde, 0xad, 0xbe, 0xef])
        .await
        .expect("writing garbage");
    expect_closed(
        "garbage on a bidi stream",
        &conn,
        close_codes::PROTOCOL_VIOLATION,
        "invalid message",
    )
    .await;
    good.assert_flowing("garbage on a bidi stream").await;

    // 2. Unknown stream types: the stream is refused (reset / STOP_SENDING), the session lives.
    let bad = room.listener(&server, "unknowntype").await;
    let conn = raw_session(&endpoint, &room_path(&room.id, &bad.token)).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("open_bi");
    send.write_all(&[0x30])
        .await
        .expect("writing a stream type");
    let read = timeout(STEP, recv.read_chunk(1024, true))
        .await
        .expect("the unknown bidi stream was not reset");
    assert!(
        matches!(read, Err(ReadError::Reset(code)) if code == stream_code(stream_codes::NOT_FOUND)),
        "unknown bidi stream type: {read:?}"
    );
    let stopped = timeout(STEP, send.stopped())
        .await
        .expect("the unknown bidi stream was not stopped");
    assert_eq!(
        stopped.ok().flatten(),
        Some(stream_code(stream_codes::NOT_FOUND))
    );
    let uni = send_uni(&conn, &[0x30], false).await;
    let stopped = timeout(STEP, uni.stopped())
        .await
        .expect("the unknown uni stream was not stopped");
    assert_eq!(
        stopped.ok().flatten(),
        Some(stream_code(stream_codes::NOT_FOUND))
    );
    println!("unknown stream types: bidi reset and stopped, uni stopped, with NOT_FOUND (0x33)");
    expect_alive("unknown stream types", &conn).await;
    good.assert_flowing("unknown stream types").await;
    conn.close(0u32.into(), b"done");

    // 3a. An unknown type where an ANNOUNCE goes is skipped by its length (as moq-net does):
    // the stream goes on, so a following ANNOUNCE_START from this listener is read, and
    // refused for what it is.
    let bad = room.listener(&server, "unknownannounce").await;
    let conn = raw_session(&endpoint, &room_path(&room.id, &bad.token)).await;
    let (mut send, _recv) = answer_announce(&conn).await;
    send.write_all(&[0x2a, 0x02, 0xaa, 0xbb])
        .await
        .expect("writing an unknown announcement");
    tokio::time::sleep(Duration::from_millis(300)).await;
    expect_alive("unknown ANNOUNCE type", &conn).await;
    send.write_all(&announce_start("sneaky"))
        .await
        .expect("writing ANNOUNCE_START");
    expect_closed(
        "a listener announcing after an unknown ANNOUNCE type",
        &conn,
        close_codes::UNAUTHORIZED,
        "this token cannot publish",
    )
    .await;
    good.assert_flowing("an unknown ANNOUNCE type").await;

    // 3b. An unknown type where a SUBSCRIBE reply goes: a protocol violation.
    let speaker = room.speaker(&server, "unknownreply").await;
    let conn = raw_session(&endpoint, &room_path(&room.id, &speaker.token)).await;
    let (mut announce, _announce_recv) = answer_announce(&conn).await;
    announce
        .write_all(&announce_start("bad"))
        .await
        .expect("writing ANNOUNCE_START");
    // The server subscribes to the catalog of what we announced.
    let (mut send, mut recv) = timeout(STEP, conn.accept_bi())
        .await
        .expect("the server did not subscribe")
        .expect("accept_bi");
    let mut buf = Vec::new();
    let kind: StreamType = read_message(&mut recv, &mut buf).await;
    assert_eq!(kind, StreamType::Subscribe);
    let subscribe: Subscribe = read_message(&mut recv, &mut buf).await;
    println!(
        "the server subscribed to {}/{}",
        subscribe.broadcast, subscribe.track
    );
    send.write_all(&[0x2a, 0x01, 0x00])
        .await
        .expect("writing an unknown reply");
    expect_closed(
        "unknown SUBSCRIBE reply type",
        &conn,
        close_codes::PROTOCOL_VIOLATION,
        "unknown message type 42",
    )
    .await;
    good.assert_flowing("an unknown SUBSCRIBE reply type").await;

    // 4. A message length over 64 KiB.
    let bad = room.listener(&server, "oversized").await;
    let conn = raw_session(&endpoint, &room_path(&room.id, &bad.token)).await;
    let (mut send, _recv) = conn.open_bi().await.expect("open_bi");
    let mut bytes = vec![StreamType::Announce as u8];
    encode_varint(70_000, &mut bytes);
    bytes.extend_from_slice(&[0u8; 1000]);
    send.write_all(&bytes).await.expect("writing");
    expect_closed(
        "oversized message",
        &conn,
        close_codes::PROTOCOL_VIOLATION,
        "too large",
    )
    .await;
    good.assert_flowing("an oversized message").await;

    // 5. A second SETUP stream.
    let bad = room.listener(&server, "twosetups").await;
    let path = room_path(&room.id, &bad.token);
    let conn = raw_session(&endpoint, &path).await;
    send_uni(&conn, &setup_stream(&Setup::with_path(&path)), true).await;
    expect_closed(
        "second SETUP",
        &conn,
        close_codes::PROTOCOL_VIOLATION,
        "second SETUP",
    )
    .await;
    good.assert_flowing("a second SETUP").await;

    // 6. A wrong ALPN: the TLS handshake fails with no_application_protocol (alert 120).
    let error = endpoint
        .connect(&[b"moq-lite-05", b"h2"])
        .await
        .expect_err("a handshake with a wrong ALPN succeeded");
    println!("wrong ALPN: {error}");
    match &error {
        ConnectionError::ConnectionClosed(close) => {
            assert_eq!(close.error_code, TransportErrorCode::crypto(120), "{error}");
        }
        other => panic!("wrong ALPN: expected a TLS alert, got {other:?}"),
    }
    good.assert_flowing("a wrong ALPN").await;

    // 7. SETUP problems: no path, no token, a first stream that is not SETUP.
    let conn = raw_session(&endpoint, "").await;
    expect_closed(
        "SETUP without a path",
        &conn,
        close_codes::PROTOCOL_VIOLATION,
        "unknown path",
    )
    .await;
    let conn = raw_session(&endpoint, &format!("/room/{}", room.id)).await;
    expect_closed(
        "SETUP without a token",
        &conn,
        close_codes::UNAUTHORIZED,
        "missing media token",
    )
    .await;
    let conn = endpoint.connect_moq().await;
    send_uni(&conn, &[UniStreamType::Group as u8, 0x05, 0x00], true).await;
    expect_closed(
        "a first stream that is not SETUP",
        &conn,
        close_codes::PROTOCOL_VIOLATION,
        "SETUP",
    )
    .await;
    good.assert_flowing("SETUP problems").await;

    // 7b. Cascade credentials (another media node pulling the room): this node has no cluster
    // secret, so any is refused; the session is not a participant.
    let conn = raw_session(
        &endpoint,
        &format!("/room/{}?cascade=v1.node-x.99999999999.00", room.id),
    )
    .await;
    expect_closed(
        "a cascade token on a node without a cluster secret",
        &conn,
        close_codes::UNAUTHORIZED,
        "takes no cascade sessions",
    )
    .await;
    good.assert_flowing("a cascade token").await;

    // 8. Bad tokens: a forged signature, a token of another room, an expired one (minted with
    // the server's key), not a token at all.
    let token = &good_listener.token;
    let (signed, signature) = token.rsplit_once('.').expect("a JWT");
    let first = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}.{first}{}", &signature[1..]);
    let conn = raw_session(&endpoint, &room_path(&room.id, &forged)).await;
    expect_closed(
        "forged token",
        &conn,
        close_codes::UNAUTHORIZED,
        "invalid media token",
    )
    .await;
    let other = Room::create(&server, "elsewhere").await;
    let conn = raw_session(&endpoint, &room_path(&room.id, &other.owner.token)).await;
    expect_closed(
        "token of another room",
        &conn,
        close_codes::UNAUTHORIZED,
        "another room",
    )
    .await;
    let expired = expired_copy(&server, &good_listener.token);
    let conn = raw_session(&endpoint, &room_path(&room.id, &expired)).await;
    expect_closed(
        "expired token",
        &conn,
        close_codes::UNAUTHORIZED,
        "ExpiredSignature",
    )
    .await;
    let conn = raw_session(&endpoint, &room_path(&room.id, "not-a-token")).await;
    expect_closed(
        "not a token",
        &conn,
        close_codes::UNAUTHORIZED,
        "invalid media token",
    )
    .await;
    good.assert_flowing("bad tokens").await;

    // 9. A listener token announcing a broadcast.
    let bad = room.listener(&server, "sneaky").await;
    let conn = raw_session(&endpoint, &room_path(&room.id, &bad.token)).await;
    let (mut send, _recv) = answer_announce(&conn).await;
    send.write_all(&announce_start("sneaky"))
        .await
        .expect("writing ANNOUNCE_START");
    expect_closed(
        "listener announcing",
        &conn,
        close_codes::UNAUTHORIZED,
        "this token cannot publish",
    )
    .await;
    good.assert_flowing("a listener announcing").await;

    // 10. No SETUP at all.
    expect_closed(
        "no SETUP",
        &silent,
        close_codes::PROTOCOL_VIOLATION,
        "no SETUP",
    )
    .await;
    let waited = silent_since.elapsed();
    println!("no SETUP: closed after {waited:?}");
    assert!(
        waited >= SETUP_TIMEOUT - Duration::from_secs(1),
        "{waited:?}"
    );
    good.assert_flowing("no SETUP").await;

    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
    for line in server.json_logs() {
        assert_ne!(line["level"], "ERROR", "the server logged an error: {line}");
    }
}
