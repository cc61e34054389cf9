//! An independent WebRTC stack — webrtc-rs, the `webrtc` crate — publishes over WHIP and
//! listens over WHEP through the real `veza` binary, so interoperability does not rest on one
//! browser. The publisher sends distinct fake Opus payloads (the SFU never decodes them) at
//! real time; the listener must connect, get nearly every packet sent after it connected with
//! the payload bytes unchanged, sequence numbers and timestamps continuous, and an SSRC of its
//! own (the SFU rewrites the stream per subscriber). A third participant listens over QUIC
//! (moq-lite) and gets the same payloads byte for byte: no transcoding across transports.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, LOCATION};
use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use serde_json::{Value, json};
use support::{Serve, Server, str_field};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// The whole test, a safety net over the bounded steps.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Host candidates on loopback gather at once.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// From the POST of the offer to `PeerConnectionState::Connected`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the publisher keeps sending after the listener connected.
const LISTEN_FOR: Duration = Duration::from_secs(5);
/// Time for the last packets to arrive after the publisher stopped.
const DRAIN: Duration = Duration::from_millis(500);
/// One Opus frame.
const FRAME: Duration = Duration::from_millis(20);
/// RTP timestamp units per frame at 48 kHz.
const TICKS_PER_FRAME: u32 = 960;
/// Bytes of each fake payload: an 8-byte big-endian counter, then bytes derived from it.
const PAYLOAD_LEN: usize = 80;

/// Opus at 48 kHz, stereo, as browsers offer it.
fn opus() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    }
}

/// Payload number `n`: the counter, then a pattern that depends on it, so any change to any
/// byte shows.
fn payload(n: u64) -> Vec<u8> {
    let mut bytes = n.to_be_bytes().to_vec();
    bytes.extend((8..PAYLOAD_LEN).map(|i| (n as usize).wrapping_mul(31).wrapping_add(i) as u8));
    bytes
}

/// The counter of a payload that is exactly what [`payload`] made, else `None`.
fn decode(bytes: &[u8]) -> Option<u64> {
    let n = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    (bytes == payload(n).as_slice()).then_some(n)
}

/// What the peer connection reports, as channels the test can wait on.
struct Events {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    // Runs on the connection's driver: hand the track over, never read it here.
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

/// One webrtc-rs peer connection on loopback, with Opus only.
struct Peer {
    name: &'static str,
    pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<bool>,
    tracks: Option<mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>>,
}

impl Peer {
    async fn new(name: &'static str) -> Self {
        let mut media = MediaEngine::default();
        media
            .register_codec(opus(), RtpCodecKind::Audio)
            .expect("registering Opus");
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .expect("the default interceptors");
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(false);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let events = Events {
            state: state_tx,
            gathered: gathered_tx,
            tracks: tracks_tx,
        };
        // A concrete loopback address: the server announces 127.0.0.1, and a wildcard would
        // bind every interface except loopback.
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(events))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .unwrap_or_else(|e| panic!("{name}: building the peer connection: {e}"));
        Self {
            name,
            pc: Arc::new(pc),
            state,
            gathered,
            tracks: Some(tracks),
        }
    }

    /// Offers (after ICE gathering completed: there is no trickle), posts the offer to `path`
    /// (WHIP or WHEP) with `token`, applies the answer; returns the session's `Location`.
    async fn negotiate(&mut self, server: &Server, path: &str, token: &str) -> String {
        let name = self.name;
        let offer = self
            .pc
            .create_offer(None)
            .await
            .unwrap_or_else(|e| panic!("{name}: create_offer: {e}"));
        self.pc
            .set_local_description(offer)
            .await
            .unwrap_or_else(|e| panic!("{name}: set_local_description: {e}"));
        match timeout(GATHER_TIMEOUT, self.gathered.wait_for(|done| *done)).await {
            Ok(Ok(_)) => {}
            _ => panic!("{name}: ICE gathering did not complete within {GATHER_TIMEOUT:?}"),
        }
        let offer = self
            .pc
            .local_description()
            .await
            .unwrap_or_else(|| panic!("{name}: no local description"))
            .sdp;
        println!("--- {name}: offer ---\n{}", offer.trim_end());
        assert!(
            offer.contains("a=candidate:"),
            "{name}: the offer has no candidate (no trickle, so it must carry them):\n{offer}"
        );

        let reply = server.api().post_sdp(path, token, &offer).await;
        assert_eq!(
            reply.status,
            201,
            "{name}: POST {path} answered {}: {}\n--- server stderr ---\n{}",
            reply.status,
            reply.body,
            server.stderr()
        );
        let header = |name: reqwest::header::HeaderName| {
            reply
                .headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header(CONTENT_TYPE).as_deref(),
            Some("application/sdp"),
            "{name}: the answer's content type"
        );
        let location =
            header(LOCATION).unwrap_or_else(|| panic!("{name}: no Location in the 201 reply"));
        let answer = reply.body;
        println!("--- {name}: answer ({location}) ---\n{}", answer.trim_end());
        let description = RTCSessionDescription::answer(answer.clone()).unwrap_or_else(|e| {
            panic!("{name}: webrtc-rs cannot parse the answer ({e}):\n{answer}")
        });
        self.pc
            .set_remote_description(description)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{name}: webrtc-rs refuses the answer ({e}):\n{answer}\n--- offer ---\n{offer}"
                )
            });
        location
    }

    /// Waits until the connection is `Connected`; panics with the server's log if it fails or
    /// takes longer than [`CONNECT_TIMEOUT`].
    async fn connected(&mut self, server: &Server) {
        let name = self.name;
        let settled = |s: &RTCPeerConnectionState| {
            matches!(
                s,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        };
        let settled_in_time = timeout(CONNECT_TIMEOUT, self.state.wait_for(settled))
            .await
            .is_ok_and(|changed| changed.is_ok());
        let state = *self.state.borrow();
        assert!(
            settled_in_time && state == RTCPeerConnectionState::Connected,
            "{name}: not connected within {CONNECT_TIMEOUT:?} (state {state})\n\
             --- server stderr ---\n{}",
            server.stderr()
        );
    }

    async fn close(&self) {
        if let Err(err) = self.pc.close().await {
            println!("{}: close: {err}", self.name);
        }
    }
}

/// One RTP packet as the listener saw it.
#[derive(Debug)]
struct Received {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    payload_type: u8,
    payload: Vec<u8>,
    at: Instant,
}

/// Reads the first remote track into `out` until the track ends or the task is aborted.
fn read_first_track(
    mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    out: mpsc::UnboundedSender<Received>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(track) = tracks.recv().await else {
            return;
        };
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                let received = Received {
                    ssrc: packet.header.ssrc,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    payload_type: packet.header.payload_type,
                    payload: packet.payload.to_vec(),
                    at: Instant::now(),
                };
                if out.send(received).is_err() {
                    return;
                }
            }
        }
    })
}

/// Joins `room` with an access token (200) and returns the join reply.
async fn join(server: &Server, room: &str, access: &str) -> Value {
    server
        .api()
        .post(
            &format!("/api/v1/rooms/{room}/join"),
            Some(access),
            json!({}),
        )
        .await
        .expect(200, "join")
}

/// The path of one of the join reply's absolute URLs, which must be on this server.
fn path_of(server: &Server, join: &Value, pointer: &str) -> String {
    let url = str_field(join, pointer);
    url.strip_prefix(&server.base_url())
        .unwrap_or_else(|| panic!("{pointer} {url} is not on {}", server.base_url()))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_publishes_over_whip_and_listens_over_whep() {
    timeout(TEST_TIMEOUT, publish_and_listen())
        .await
        .expect("the webrtc-rs test did not finish within its timeout");
}

async fn publish_and_listen() {
    let server = Serve::new().start().await;
    let api = server.api();

    // An owner who publishes, a listener, a public room.
    let owner = api.register("owner").await;
    let owner_access = str_field(&owner, "/access_token").to_owned();
    let listener = api.register("listener").await;
    let listener_access = str_field(&listener, "/access_token").to_owned();
    let body = json!({ "name": "webrtc-rs", "visibility": "public" });
    let room = api
        .post("/api/v1/rooms", Some(&owner_access), body)
        .await
        .expect(201, "create room");
    let room_id = str_field(&room, "/id").to_owned();
    let owner_join = join(&server, &room_id, &owner_access).await;
    assert_eq!(owner_join["grants"]["can_publish"], true, "{owner_join}");
    let listener_join = join(&server, &room_id, &listener_access).await;
    assert_eq!(listener_join["role"], "listener", "{listener_join}");
    assert_eq!(listener_join["grants"]["can_publish"], false);
    let owner_token = str_field(&owner_join, "/token").to_owned();
    let listener_token = str_field(&listener_join, "/token").to_owned();
    let whip = path_of(&server, &owner_join, "/urls/whip");
    let whep = path_of(&server, &listener_join, "/urls/whep");
    assert_eq!(whip, format!("/whip/{room_id}"));
    assert_eq!(whep, format!("/whep/{room_id}"));

    // The publisher: one send-only Opus transceiver on a sample track with our own SSRC.
    let mut publisher = Peer::new("publisher").await;
    let publisher_ssrc = uuid::Uuid::new_v4().as_u128() as u32;
    let encoding = RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(publisher_ssrc),
            ..Default::default()
        },
        codec: opus().rtp_codec,
        active: true,
        ..Default::default()
    };
    let track = MediaStreamTrack::new(
        "veza-e2e".to_owned(),
        "microphone".to_owned(),
        "webrtc-rs microphone".to_owned(),
        RtpCodecKind::Audio,
        vec![encoding],
    );
    let track =
        Arc::new(TrackLocalStaticSample::new(Instant::now(), track).expect("an Opus sample track"));
    let send_only = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        streams: vec![],
        send_encodings: vec![],
    };
    let transceiver = publisher
        .pc
        .add_transceiver_from_track(Arc::clone(&track) as Arc<dyn TrackLocal>, Some(send_only))
        .await
        .expect("adding the send-only transceiver");
    let publish_started = Instant::now();
    let publisher_location = publisher.negotiate(&server, &whip, &owner_token).await;
    let owner_participant = str_field(&owner_join, "/participant_id");
    assert_eq!(publisher_location, format!("{whip}/{owner_participant}"));
    publisher.connected(&server).await;
    let publisher_connect = publish_started.elapsed();
    let payload_type = transceiver
        .sender()
        .await
        .expect("the transceiver's sender")
        .expect("a send-only transceiver has a sender")
        .get_parameters()
        .await
        .expect("the sender's parameters")
        .rtp_parameters
        .codecs
        .first()
        .map(|codec| codec.payload_type)
        .expect("a negotiated codec");

    // 20 ms samples at real time until told to stop; `sent` counts them.
    let sent = Arc::new(AtomicU64::new(0));
    let (stop, mut stopped) = watch::channel(false);
    let sender = {
        let sent = Arc::clone(&sent);
        let track = Arc::clone(&track);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FRAME);
            let mut errors = Vec::new();
            for n in 0u64.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let sample = Sample {
                    data: payload(n).into(),
                    duration: FRAME,
                    ..Sample::new(Instant::now())
                };
                if let Err(err) = track
                    .sample_writer(publisher_ssrc, payload_type)
                    .write_sample(&sample)
                    .await
                {
                    errors.push(format!("sample {n}: {err}"));
                }
                sent.store(n + 1, Ordering::SeqCst);
            }
            errors
        })
    };

    // The listener: one receive-only audio section, so one active-speaker slot.
    let mut subscriber = Peer::new("subscriber").await;
    subscriber
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Audio,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .expect("adding the receive-only transceiver");
    let (packets_tx, mut packets) = mpsc::unbounded_channel();
    let tracks = subscriber.tracks.take().expect("the track channel");
    let reader = read_first_track(tracks, packets_tx);
    let subscribe_started = Instant::now();
    let subscriber_location = subscriber.negotiate(&server, &whep, &listener_token).await;
    let listener_participant = str_field(&listener_join, "/participant_id");
    assert_eq!(
        subscriber_location,
        format!("{whep}/{listener_participant}")
    );
    subscriber.connected(&server).await;
    let subscriber_connected_at = Instant::now();
    let subscriber_connect = subscribe_started.elapsed();
    let first_after_connect = sent.load(Ordering::SeqCst);

    // A third participant listens over QUIC (moq-lite): the WebRTC publisher is a broadcast
    // named by its participant id, and its payloads arrive byte for byte.
    let quic_user = api.register("quic-listener").await;
    let quic_access = str_field(&quic_user, "/access_token").to_owned();
    let quic_join = join(&server, &room_id, &quic_access).await;
    let quic_session = support::quic::Endpoint::of(&server)
        .await
        .session(&room_id, str_field(&quic_join, "/token"))
        .await;
    let quic_subscriber = quic_session.subscriber();
    let mut announced = quic_subscriber.announced("").await.expect("announcements");
    let broadcast = timeout(Duration::from_secs(5), announced.next())
        .await
        .expect("an announcement within 5 s")
        .expect("the announce stream")
        .expect("a broadcast");
    assert_eq!(
        broadcast.path, owner_participant,
        "the broadcast is the publisher"
    );
    let mut quic_track = quic_subscriber
        .subscribe_audio(&broadcast.path, Duration::from_millis(500))
        .await
        .expect("subscribing over QUIC");
    let quic_first = sent.load(Ordering::SeqCst);
    let quic_reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(frame) = quic_track.next().await {
            frames.push(frame.payload);
        }
        frames
    });

    tokio::time::sleep(LISTEN_FOR).await;
    stop.send_replace(true);
    let send_errors = timeout(Duration::from_secs(5), sender)
        .await
        .expect("the sender stops")
        .expect("the sender task");
    let total_sent = sent.load(Ordering::SeqCst);
    tokio::time::sleep(DRAIN).await;
    reader.abort();
    quic_session.close(0, "done");
    let quic_frames = timeout(Duration::from_secs(5), quic_reader)
        .await
        .expect("the QUIC reader ends with the session")
        .expect("the QUIC reader task");
    let quic_counters: Vec<Option<u64>> = quic_frames.iter().map(|p| decode(p)).collect();
    let quic_expected = total_sent - quic_first;
    println!(
        "QUIC listener: {} frames of the {quic_expected} sent after it subscribed, {} altered",
        quic_frames.len(),
        quic_counters.iter().filter(|n| n.is_none()).count()
    );
    assert!(
        quic_counters.iter().all(Option::is_some),
        "a payload crossed from WebRTC to QUIC altered"
    );
    assert!(
        quic_frames.len() as f64 >= 0.9 * quic_expected as f64,
        "the QUIC listener got {} of {quic_expected} frames",
        quic_frames.len()
    );
    let mut received = Vec::new();
    while let Ok(packet) = packets.try_recv() {
        received.push(packet);
    }

    // The figures.
    let sent_after = total_sent - first_after_connect;
    let counters: Vec<Option<u64>> = received.iter().map(|p| decode(&p.payload)).collect();
    let mut unique: Vec<u64> = counters.iter().flatten().copied().collect();
    unique.sort_unstable();
    unique.dedup();
    let got_after = unique.iter().filter(|n| **n >= first_after_connect).count() as u64;
    let got_before = unique.len() as u64 - got_after;
    let ratio = if sent_after == 0 {
        0.0
    } else {
        got_after as f64 / sent_after as f64
    };
    println!(
        "publisher connected in {publisher_connect:?}; subscriber connected in \
         {subscriber_connect:?}, after packet {first_after_connect}"
    );
    println!(
        "sent {total_sent} packets ({sent_after} after the subscriber connected, {} send \
         errors); received {} RTP packets: {got_after} of those {sent_after} ({:.1} %), \
         {got_before} sent before it connected, {} duplicates",
        send_errors.len(),
        received.len(),
        ratio * 100.0,
        received.len() - unique.len(),
    );
    assert!(
        send_errors.is_empty(),
        "webrtc-rs could not send: {send_errors:?}"
    );
    assert!(
        !received.is_empty(),
        "the subscriber received no RTP at all\n--- server stderr ---\n{}",
        server.stderr()
    );

    // The payload bytes arrive unchanged: every one decodes back to its counter.
    let altered: Vec<&Received> = received
        .iter()
        .zip(&counters)
        .filter(|(_, n)| n.is_none())
        .map(|(p, _)| p)
        .collect();
    assert!(
        altered.is_empty(),
        "{} payloads were altered, e.g. {:?}",
        altered.len(),
        altered.first()
    );
    assert!(
        ratio >= 0.9,
        "received {got_after} of the {sent_after} packets sent after the subscriber connected"
    );

    // One stream with an SSRC of its own, Opus's payload type.
    let ssrc = received[0].ssrc;
    assert!(
        received.iter().all(|p| p.ssrc == ssrc),
        "more than one SSRC"
    );
    assert_ne!(
        ssrc, publisher_ssrc,
        "the subscriber sees the publisher's SSRC: the SFU must rewrite it"
    );
    let first_at = received[0].at;
    let burst = received
        .iter()
        .take_while(|p| p.at.duration_since(first_at) < Duration::from_millis(10))
        .count();
    let first_offset = if first_at >= subscriber_connected_at {
        format!("{:?} after", first_at - subscriber_connected_at)
    } else {
        format!("{:?} before", subscriber_connected_at - first_at)
    };
    println!(
        "payload counters {}..={}; the first packet arrived {first_offset} Connected was \
         reported, with {burst} packets within 10 ms of it",
        unique[0],
        unique[unique.len() - 1]
    );
    println!(
        "publisher SSRC {publisher_ssrc:#010x}, subscriber SSRC {ssrc:#010x}, payload type {} \
         (publisher {payload_type})",
        received[0].payload_type
    );

    // Sequence numbers step by one per packet sent and timestamps by 960 per 20 ms, gaps only
    // where packets were lost (in arrival order; loopback does not reorder).
    let mut seen = HashSet::new();
    let in_order: Vec<(u64, &Received)> = received
        .iter()
        .zip(&counters)
        .map(|(packet, n)| (n.expect("checked above"), packet))
        .filter(|(n, _)| seen.insert(*n))
        .collect();
    let mut lost = 0;
    for pair in in_order.windows(2) {
        let ((a, p), (b, q)) = (pair[0], pair[1]);
        assert!(b > a, "packet {b} arrived after packet {a}");
        let step = b - a;
        lost += step - 1;
        assert_eq!(
            q.seq.wrapping_sub(p.seq),
            step as u16,
            "sequence numbers from packet {a} ({}) to packet {b} ({})",
            p.seq,
            q.seq
        );
        assert_eq!(
            q.timestamp.wrapping_sub(p.timestamp),
            TICKS_PER_FRAME * step as u32,
            "timestamps from packet {a} ({}) to packet {b} ({})",
            p.timestamp,
            q.timestamp
        );
    }
    println!(
        "sequence numbers {}..={} and timestamps {}..={} continuous; {lost} packets lost in \
         between",
        in_order[0].1.seq,
        in_order[in_order.len() - 1].1.seq,
        in_order[0].1.timestamp,
        in_order[in_order.len() - 1].1.timestamp
    );

    // End both sessions on their Locations, then close the peers.
    for (location, token) in [
        (&subscriber_location, &listener_token),
        (&publisher_location, &owner_token),
    ] {
        api.delete(location, Some(token))
            .await
            .expect(200, "DELETE on the Location");
    }
    subscriber.close().await;
    publisher.close().await;
}
