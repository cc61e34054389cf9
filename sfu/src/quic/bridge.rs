//! One moq-lite session joined to the media shard.
//!
//! * **Room → client.** The shard opens a slot for every other publisher in the room and sends
//!   its packets, already rewritten to one continuous stream per slot. Each slot becomes a
//!   broadcast named by the publisher's participant id, holding `catalog.json` and the Opus
//!   track `audio`. A packet's slot sequence number is its group number; its 48 kHz RTP
//!   timestamp, unwrapped, becomes microseconds. Opus bytes pass unchanged (a browser's RED
//!   packet gives its primary Opus block, no transcoding either way).
//! * **Client → room.** The server asks for the client's announcements; the first broadcast
//!   announced becomes the participant's published track: its catalog names the Opus track,
//!   whose frames enter the shard as RTP packets (48 kHz timestamps from microseconds,
//!   sequence numbers from group numbers, Opus payload type).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use veza_moq::code::session as codes;
use veza_moq::message::Setup;
use veza_moq::session::{AudioInfo, BroadcastWriter, Metrics, Options, Session, Subscriber};
use veza_proto::{Grants, MediaClaims, ParticipantId, RoomId, UserId};

use super::Context;
use crate::engine::{Event as EngineEvent, Payload, RtpIn, RtpOut, SlotId, SubscribeMode};
use crate::webrtc::{
    JoinRequest, MediaMetrics, MediaServer, OPUS_PAYLOAD_TYPE, RED_PAYLOAD_TYPE, RemoteOut,
};

/// The name of the Opus track in the broadcasts we serve.
pub const AUDIO_TRACK: &str = "audio";
/// Packets from the shard waiting for this session before newer ones are dropped.
const BACKLOG: usize = 1024;
/// How late an ingested group may be before the publisher should drop it.
const INGEST_MAX_LATENCY: Duration = Duration::from_millis(200);

/// The session's counters go to the media metrics.
#[derive(Debug)]
struct SessionMetrics(MediaMetrics);

impl Metrics for SessionMetrics {
    fn group_sent(&self) {
        self.0.quic_group_sent();
    }
    fn datagram_sent(&self) {
        self.0.quic_datagram_sent();
    }
    fn group_stale(&self) {
        self.0.quic_group_stale();
    }
}

/// Who an authorized session is.
#[derive(Debug, Clone)]
pub(super) struct Who {
    pub(super) room: RoomId,
    pub(super) participant: ParticipantId,
    pub(super) grants: Grants,
    /// The user of a client session; `None` for another node pulling the room.
    pub(super) user: Option<UserId>,
    /// [`SubscribeMode::AllTracks`] for clients, [`SubscribeMode::LocalTracks`] for the
    /// cascade.
    pub(super) mode: SubscribeMode,
}

impl Who {
    /// A client with a media token.
    pub(super) fn client(claims: &MediaClaims) -> Self {
        Who {
            room: claims.room,
            participant: claims.participant,
            grants: claims.grants,
            user: Some(claims.sub),
            mode: SubscribeMode::AllTracks,
        }
    }

    /// Another node pulling `room`'s local tracks.
    pub(super) fn cascade(room: RoomId) -> Self {
        Who {
            room,
            participant: ParticipantId::new(),
            grants: Grants {
                can_publish: false,
                can_subscribe: true,
                can_chat: false,
            },
            user: None,
            mode: SubscribeMode::LocalTracks,
        }
    }
}

/// Runs one authorized session until either side ends it.
pub(super) async fn run(
    transport: web_transport_quinn::Session,
    who: Who,
    datagrams: bool,
    peer_setup: Option<Setup>,
    context: Context,
) {
    // The room's shard: every media call of this session goes straight there.
    let media = context.media.for_room(who.room);
    let metrics = media.metrics().clone();
    let _open = metrics.quic_session();
    let session = Session::start(
        transport,
        Options {
            setup: Setup::default(),
            peer_setup,
            datagrams,
            metrics: Arc::new(SessionMetrics(metrics.clone())),
        },
    );
    let participant = who.participant;
    if who.user.is_some() && context.draining.load(std::sync::atomic::Ordering::Relaxed) {
        session.close(
            codes::GOING_AWAY,
            "this node is draining: join again through the API",
        );
        return;
    }
    let (tx, mut rx) = mpsc::channel(BACKLOG);
    let request = JoinRequest {
        room: who.room,
        participant,
        grants: who.grants,
    };
    if let Err(err) = context
        .media
        .attach_with(request, who.mode, tx.clone())
        .await
    {
        session.close(codes::UNAUTHORIZED, &format!("cannot join: {err}"));
        return;
    }
    tracing::info!(%participant, room = %who.room, cascade = who.user.is_none(), "QUIC session joined");
    static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let number = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    context
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(participant, (who.room, who.user, number));
    // Another node pulling the room publishes nothing here.
    let ingest = (who.mode != SubscribeMode::LocalTracks).then(|| {
        tokio::spawn(ingest(
            session.clone(),
            media.clone(),
            participant,
            who.grants,
        ))
    });
    let publisher = session.publisher();
    let mut slots: HashMap<SlotId, SlotBroadcast> = HashMap::new();
    let mut rtt = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(RemoteOut::Packet { slot, packet }) => {
                    if let Some(broadcast) = slots.get_mut(&slot) {
                        broadcast.write(&packet);
                    }
                }
                Some(RemoteOut::Event(EngineEvent::SlotOpened(info))) => {
                    if let Some(source) = info.source.filter(|_| info.subscriber == participant) {
                        let writer = publisher.publish(
                            &source.participant.to_string(),
                            AudioInfo { track: AUDIO_TRACK.into(), channels: 2, bitrate: None },
                        );
                        slots.insert(info.id, SlotBroadcast { writer, clock: RtpClock::default() });
                    }
                }
                Some(RemoteOut::Event(EngineEvent::SlotClosed { slot, .. })) => {
                    slots.remove(&slot);
                }
                Some(RemoteOut::Event(_)) => {}
                Some(RemoteOut::Removed) | None => {
                    let sent_away = context
                        .sent_away
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&participant);
                    if sent_away {
                        session.close(codes::GOING_AWAY, "this node is draining: join again through the API");
                    } else {
                        session.close(codes::UNAUTHORIZED, "removed from the room (kicked, banned, or the same token joined again)");
                    }
                    break;
                }
            },
            reason = session.closed() => {
                tracing::info!(%participant, reason, "QUIC session ended");
                break;
            }
            _ = rtt.tick() => metrics.quic_rtt(session.transport().rtt()),
        }
    }
    if let Some(ingest) = ingest {
        ingest.abort();
    }
    drop(slots);
    media.detach(participant, tx);
    let mut sessions = context.sessions.lock().unwrap_or_else(|p| p.into_inner());
    if sessions
        .get(&participant)
        .is_some_and(|(_, _, n)| *n == number)
    {
        sessions.remove(&participant);
    }
}

/// One slot of the room, served as a broadcast.
struct SlotBroadcast {
    writer: BroadcastWriter,
    clock: RtpClock,
}

impl SlotBroadcast {
    fn write(&mut self, packet: &RtpOut) {
        let Some(opus) = opus_payload(packet.payload_type, &packet.payload) else {
            return;
        };
        let timestamp_us = self.clock.micros(packet.timestamp);
        self.writer.write(packet.ext_seq, timestamp_us, opus);
    }
}

/// Unwraps 32-bit 48 kHz RTP timestamps into a continuous microsecond clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RtpClock {
    last: Option<(u32, i64)>,
}

impl RtpClock {
    /// Microseconds for `timestamp` (a wrap or a slightly older packet is handled).
    pub(crate) fn micros(&mut self, timestamp: u32) -> u64 {
        let extended = match self.last {
            None => i64::from(timestamp),
            Some((last, extended)) => extended + i64::from(timestamp.wrapping_sub(last) as i32),
        };
        self.last = Some((timestamp, extended));
        (extended.max(0) as u64) * 1000 / 48
    }
}

/// The Opus bytes of a packet, without a copy: the payload itself, or a RED packet's primary
/// block (RFC 2198). `None` for a malformed RED packet.
pub(crate) fn opus_payload(payload_type: u8, payload: &Payload) -> Option<Bytes> {
    let bytes = Bytes::from_owner(payload.clone());
    if payload_type != RED_PAYLOAD_TYPE {
        return Some(bytes);
    }
    let mut header = 0;
    let mut redundant = 0usize;
    loop {
        let first = *payload.get(header)?;
        if first & 0x80 == 0 {
            header += 1;
            break;
        }
        let length = payload.get(header + 2..header + 4)?;
        redundant += (usize::from(length[0] & 0x03) << 8) | usize::from(length[1]);
        header += 4;
    }
    let start = header + redundant;
    (start < payload.len()).then(|| bytes.slice(start..))
}

/// Reads the client's announcements: the first broadcast becomes its published track.
async fn ingest(session: Session, media: MediaServer, participant: ParticipantId, grants: Grants) {
    let subscriber = session.subscriber();
    let Ok(mut announcements) = subscriber.announced("").await else {
        return;
    };
    let mut current: Option<(String, tokio::task::JoinHandle<()>)> = None;
    loop {
        let announcement = match announcements.next().await {
            Ok(Some(announcement)) => announcement,
            Ok(None) => break,
            Err(failure) => {
                tracing::debug!(%participant, %failure, "announce stream failed");
                if let veza_moq::session::Failure::Protocol(reason) = failure {
                    session.close(codes::PROTOCOL_VIOLATION, &reason);
                }
                break;
            }
        };
        if announcement.active {
            if !grants.can_publish {
                session.close(codes::UNAUTHORIZED, "this token cannot publish");
                return;
            }
            if current.is_some() {
                continue;
            }
            if let Err(err) = media.publish(participant, true).await {
                session.close(codes::UNAUTHORIZED, &format!("cannot publish: {err}"));
                return;
            }
            let task = tokio::spawn(receive_audio(
                subscriber.clone(),
                announcement.path.clone(),
                media.clone(),
                participant,
            ));
            current = Some((announcement.path, task));
        } else if current
            .as_ref()
            .is_some_and(|(path, _)| *path == announcement.path)
        {
            if let Some((_, task)) = current.take() {
                task.abort();
            }
            let _ = media.publish(participant, false).await;
        }
    }
    if let Some((_, task)) = current {
        task.abort();
        let _ = media.publish(participant, false).await;
    }
}

/// Feeds one announced broadcast's Opus frames into the shard as `participant`'s track
/// (a client's broadcast, or a publisher relayed from another node).
pub(crate) async fn receive_audio(
    subscriber: Subscriber,
    path: String,
    media: MediaServer,
    participant: ParticipantId,
) {
    let mut track = match subscriber.subscribe_audio(&path, INGEST_MAX_LATENCY).await {
        Ok(track) => track,
        Err(failure) => {
            tracing::info!(%participant, path, %failure, "cannot receive the client's broadcast");
            return;
        }
    };
    // Groups travel on separate streams and may arrive out of order: the group number
    // orders them (the engine reorders and detects gaps by sequence number). A group with
    // several frames gets one more number per extra frame.
    let mut extra: u16 = 0;
    let mut last_group = None;
    while let Some(frame) = track.next().await {
        if last_group == Some(frame.group) {
            extra = extra.wrapping_add(1);
        }
        last_group = Some(frame.group);
        media.remote_packet(
            participant,
            RtpIn {
                seq: (frame.group as u16).wrapping_add(extra),
                // 48 kHz, modulo 2^32 like any RTP clock.
                timestamp: (frame.timestamp_us * 48 / 1000) as u32,
                marker: false,
                payload_type: OPUS_PAYLOAD_TYPE,
                payload: Payload::from(&frame.payload[..]),
                audio_level: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_timestamps_unwrap_into_microseconds() {
        let mut clock = RtpClock::default();
        assert_eq!(clock.micros(48_000), 1_000_000);
        assert_eq!(clock.micros(48_960), 1_020_000);
        // An older packet maps below, not 24 hours ahead.
        assert_eq!(clock.micros(48_000), 1_000_000);
        let mut clock = RtpClock::default();
        let near_wrap = u32::MAX - 479;
        let before = clock.micros(near_wrap);
        assert_eq!(clock.micros(near_wrap.wrapping_add(960)) - before, 20_000);
    }

    #[test]
    fn red_packets_give_their_primary_block() {
        let opus: Payload = Payload::from(&[1u8, 2, 3][..]);
        assert_eq!(
            &opus_payload(OPUS_PAYLOAD_TYPE, &opus).unwrap()[..],
            [1, 2, 3]
        );
        // One redundant block of 2 bytes (F=1, PT 111, offset 960, length 2), then the
        // primary header (F=0, PT 111), the redundant bytes, the primary bytes.
        let red: Payload = Payload::from(&[0xef, 0x0f, 0x00, 0x02, 0x6f, 9, 9, 7, 8, 9][..]);
        assert_eq!(
            &opus_payload(RED_PAYLOAD_TYPE, &red).unwrap()[..],
            [7, 8, 9]
        );
        let truncated: Payload = Payload::from(&[0xef, 0x0f][..]);
        assert!(opus_payload(RED_PAYLOAD_TYPE, &truncated).is_none());
        let nothing_left: Payload = Payload::from(&[0xef, 0x0f, 0x00, 0x02, 0x6f, 9, 9][..]);
        assert!(opus_payload(RED_PAYLOAD_TYPE, &nothing_left).is_none());
    }
}
