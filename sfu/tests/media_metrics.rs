//! A real media shard on loopback: garbage datagrams from a stranger are counted as
//! `no_peer` drops, the shard keeps running, and a join after them still gets an offer and
//! shows up in the gauges; and a call between two str0m clients fills the forwarding and ICE
//! histograms, the packet counters and the data-channel counters.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Registry, TextEncoder};
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc;
use veza_proto::{Grants, ParticipantId, RoomId};
use veza_sfu::engine::Config;
use veza_sfu::webrtc::{JoinRequest, MediaConfig, MediaMetrics, MediaServer, ServerEvent};

fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encode");
    String::from_utf8(out).expect("utf-8")
}

/// The value of the sample `series` (name and labels, as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls the registry for up to 2 s until `series` satisfies `ok`; returns the last rendering.
async fn wait_for(registry: &Registry, series: &str, ok: impl Fn(f64) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let text = render(registry);
        if sample(&text, series).is_some_and(&ok) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} not as expected within 2 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn garbage_datagrams_are_counted_and_the_shard_keeps_serving() {
    let registry = Registry::new();
    let metrics = MediaMetrics::new();
    metrics.register(&registry).expect("register");
    let config = MediaConfig {
        udp_addr: "127.0.0.1:0".parse().expect("addr"),
        ..MediaConfig::default()
    };
    let media = MediaServer::start(config, Config::default(), metrics)
        .await
        .expect("media");

    const GARBAGE: usize = 5;
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let datagrams: [&[u8]; GARBAGE] = [
        b"hello",
        &[0u8; 1],
        &[0xff; 1200],
        // Looks like RTP (version 2), from nobody.
        &[0x80, 111, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
        // A STUN Binding request header for an unknown ufrag, cut short.
        &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42],
    ];
    for datagram in datagrams {
        stranger
            .send_to(datagram, media.local_addr())
            .expect("send");
    }
    let no_peer = "veza_media_packets_dropped_total{reason=\"no_peer\"}";
    let text = wait_for(&registry, no_peer, |n| n >= GARBAGE as f64).await;
    assert_eq!(
        sample(
            &text,
            "veza_media_packets_dropped_total{reason=\"unparseable\"}"
        ),
        Some(0.0),
        "nothing reached a peer:\n{text}"
    );
    assert_eq!(
        sample(&text, "veza_media_packets_received_total"),
        Some(0.0),
        "{text}"
    );

    // Still serving: a join gets its offer, and the gauges see the peer.
    let (events, _events) = mpsc::unbounded_channel();
    let offer = tokio::time::timeout(
        Duration::from_secs(2),
        media.join(
            JoinRequest {
                room: RoomId::new(),
                participant: ParticipantId::new(),
                grants: Grants {
                    can_publish: true,
                    can_subscribe: true,
                    can_chat: true,
                },
            },
            events,
        ),
    )
    .await
    .expect("a reply within 2 s")
    .expect("joined");
    assert!(offer.starts_with("v=0"), "{offer}");
    assert!(offer.contains("m=audio"), "{offer}");
    wait_for(&registry, "veza_media_peers", |n| n == 1.0).await;
    let text = wait_for(&registry, "veza_media_participants", |n| n == 1.0).await;
    assert_eq!(sample(&text, "veza_media_rooms"), Some(1.0), "{text}");
    // No ids in labels.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.split_once('{').map(|(_, rest)| rest).unwrap_or("");
        for key in ["room", "participant", "user", "track"] {
            assert!(!labels.contains(&format!("{key}=")), "{line}");
        }
    }
}

/// A str0m client on its own loopback socket, pumped by hand.
struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    connected: bool,
    publish_mid: Option<Mid>,
    chat: Option<ChannelId>,
    chat_in: Vec<String>,
    media_in: usize,
}

impl Client {
    fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let addr = socket.local_addr().expect("addr");
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Self {
            rtc,
            socket,
            addr,
            connected: false,
            publish_mid: None,
            chat: None,
            chat_in: Vec::new(),
            media_in: 0,
        }
    }

    fn answer(&mut self, offer: &str) -> String {
        let offer = SdpOffer::from_sdp_string(offer).expect("offer");
        self.rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("accept")
            .to_sdp_string()
    }

    /// Moves everything that is ready: timers, received datagrams, datagrams to send.
    fn pump(&mut self) {
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .expect("timeout");
        self.drain();
        let mut buf = [0u8; 2048];
        while let Ok((n, source)) = self.socket.recv_from(&mut buf) {
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.addr,
                    contents: buf[..n].try_into().expect("a WebRTC datagram"),
                },
            );
            self.rtc.handle_input(input).expect("input");
            self.drain();
        }
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().expect("output") {
                Output::Timeout(_) => return,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaAdded(added)) => {
                    if added.direction == Direction::SendOnly {
                        self.publish_mid = Some(added.mid);
                    }
                }
                Output::Event(Event::ChannelOpen(id, label)) if label == "chat" => {
                    self.chat = Some(id);
                }
                Output::Event(Event::ChannelData(data)) => {
                    self.chat_in
                        .push(String::from_utf8(data.data).expect("text"));
                }
                Output::Event(Event::MediaData(_)) => self.media_in += 1,
                Output::Event(_) => {}
            }
        }
    }

    /// Sends one 20 ms Opus frame (any bytes do; nobody decodes them).
    fn send_frame(&mut self, n: u64) {
        let mid = self.publish_mid.expect("a microphone section");
        let writer = self.rtc.writer(mid).expect("writer");
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .expect("opus")
            .pt();
        let time = MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ);
        writer
            .write(pt, Instant::now(), time, vec![0xf8, 0xff, 0xfe, n as u8])
            .expect("write");
        self.drain();
    }
}

fn speaker() -> Grants {
    Grants {
        can_publish: true,
        can_subscribe: true,
        can_chat: true,
    }
}

/// Answers every offer the shard sends `client` (renegotiations when slots open).
async fn answer_offers(
    media: &MediaServer,
    participant: ParticipantId,
    client: &mut Client,
    events: &mut mpsc::UnboundedReceiver<Box<ServerEvent>>,
) -> Vec<ServerEvent> {
    let mut other = Vec::new();
    while let Ok(event) = events.try_recv() {
        match *event {
            ServerEvent::Offer(sdp) => {
                let answer = client.answer(&sdp);
                media.answer(participant, answer).await.expect("answer");
            }
            event => other.push(event),
        }
    }
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_fills_the_latency_histograms_and_the_counters() {
    let registry = Registry::new();
    let metrics = MediaMetrics::new();
    metrics.register(&registry).expect("register");
    let config = MediaConfig {
        udp_addr: "127.0.0.1:0".parse().expect("addr"),
        ..MediaConfig::default()
    };
    let media = MediaServer::start(config, Config::default(), metrics)
        .await
        .expect("media");
    let room = RoomId::new();
    let (a, b) = (ParticipantId::new(), ParticipantId::new());
    let (mut alice, mut bob) = (Client::new(), Client::new());
    let (a_tx, mut a_events) = mpsc::unbounded_channel();
    let (b_tx, mut b_events) = mpsc::unbounded_channel();
    for (participant, client, events) in [(a, &mut alice, a_tx), (b, &mut bob, b_tx)] {
        let request = JoinRequest {
            room,
            participant,
            grants: speaker(),
        };
        let offer = media.join(request, events).await.expect("join");
        let answer = client.answer(&offer);
        media.answer(participant, answer).await.expect("answer");
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut a_server_events = Vec::new();
    while !(alice.connected && bob.connected && alice.chat.is_some()) {
        assert!(Instant::now() < deadline, "both connect within 10 s");
        alice.pump();
        bob.pump();
        a_server_events.extend(answer_offers(&media, a, &mut alice, &mut a_events).await);
        answer_offers(&media, b, &mut bob, &mut b_events).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    media.publish(a, true).await.expect("publish");

    // Alice talks and chats; Bob hears her once his slot is negotiated.
    let chat = alice.chat.expect("chat");
    let mut channel = alice.rtc.channel(chat).expect("channel");
    assert!(channel.write(false, b"{\"hello\":1}").expect("write"));
    media.send_chat(a, "{\"hi\":\"alice\"}".into());
    let mut n = 0;
    while bob.media_in < 10 || alice.chat_in.is_empty() {
        assert!(Instant::now() < deadline, "Bob hears Alice within 10 s");
        n += 1;
        alice.send_frame(n);
        alice.pump();
        bob.pump();
        a_server_events.extend(answer_offers(&media, a, &mut alice, &mut a_events).await);
        answer_offers(&media, b, &mut bob, &mut b_events).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        a_server_events.contains(&ServerEvent::ChatData("{\"hello\":1}".into())),
        "{a_server_events:?}"
    );

    let text = wait_for(&registry, "veza_media_packets_forwarded_total", |n| {
        n >= 10.0
    })
    .await;
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}"));
    assert!(value("veza_media_packets_received_total") >= 10.0, "{text}");
    assert!(value("veza_media_bytes_forwarded_total") >= 40.0, "{text}");
    assert!(
        value("veza_media_forwarding_seconds_count") >= 10.0,
        "{text}"
    );
    let sum = value("veza_media_forwarding_seconds_sum");
    assert!(sum > 0.0 && sum < 1.0, "{text}");
    assert_eq!(value("veza_media_ice_connect_seconds_count"), 2.0, "{text}");
    assert_eq!(
        value("veza_media_datachannel_messages_total{direction=\"in\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        value("veza_media_datachannel_messages_total{direction=\"out\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(value("veza_media_peers"), 2.0, "{text}");
    assert_eq!(value("veza_media_tracks"), 1.0, "{text}");
    assert!(value("veza_media_slots") >= 1.0, "{text}");
}
