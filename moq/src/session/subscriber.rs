//! The peer's broadcasts: discovering them and receiving their audio.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use web_transport_quinn::SendStream;

use crate::catalog::{self, AudioConfig, CATALOG_TRACK, Catalog, Container};
use crate::coding::{Decode, DecodeError, Encode, encode_varint, typed_message_len};
use crate::message::{
    Announce, AnnounceOk, AnnounceRequest, Frame, Group, StreamType, Subscribe, SubscribeReply,
    Track, TrackInfo,
};

use super::io::Reader;
use super::{Failure, Session, write_all};
use crate::code::stream as codes;

/// Frames of one subscription waiting for the reader before newer ones are dropped.
const FRAME_BACKLOG: usize = 256;
/// How long the catalog may take to arrive.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(5);

/// A broadcast of the peer appearing or disappearing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The full path (the requested prefix and the announced suffix).
    pub path: String,
    /// True when it became available, false when it went away.
    pub active: bool,
}

/// The live announcements of one Announce stream.
#[derive(Debug)]
pub struct Announcements {
    prefix: String,
    reader: Reader,
    _send: SendStream,
    /// Live announcements by Announce ID.
    live: HashMap<u64, String>,
    next_id: u64,
}

impl Announcements {
    /// The next change; `Ok(None)` when the peer closed the stream (every broadcast is then
    /// gone).
    pub async fn next(&mut self) -> Result<Option<Announcement>, Failure> {
        let announce = loop {
            let next = self
                .reader
                .next(|buf| match Announce::decode(buf) {
                    Ok(announce) => Ok(Some(announce)),
                    // An announcement of a type we do not know is skipped by its length, as
                    // moq-net does; the stream stays up.
                    Err(DecodeError::UnknownType(_)) => {
                        *buf = &buf[typed_message_len(buf)?..];
                        Ok(None)
                    }
                    Err(err) => Err(err),
                })
                .await?;
            match next {
                None => return Ok(None),
                Some(Some(announce)) => break announce,
                Some(None) => {}
            }
        };
        match announce {
            Announce::Start(start) => {
                let path = format!("{}{}", self.prefix, start.suffix);
                if self.live.values().any(|p| *p == path) {
                    return Err(Failure::Protocol(format!(
                        "ANNOUNCE_START for {path}, which is already announced"
                    )));
                }
                self.live.insert(self.next_id, path.clone());
                self.next_id += 1;
                Ok(Some(Announcement { path, active: true }))
            }
            Announce::End(end) => match self.live.remove(&end.id) {
                Some(path) => Ok(Some(Announcement {
                    path,
                    active: false,
                })),
                None => Err(Failure::Protocol(format!(
                    "ANNOUNCE_END for unknown announce id {}",
                    end.id
                ))),
            },
            Announce::Update(update) => match self.live.get(&update.id) {
                // A new route or cost for the same broadcast: nothing changes for us.
                Some(path) => Ok(Some(Announcement {
                    path: path.clone(),
                    active: !update.ended,
                })),
                None => Err(Failure::Protocol(format!(
                    "ANNOUNCE_UPDATE for unknown announce id {}",
                    update.id
                ))),
            },
        }
    }
}

/// One received Opus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// The group sequence number (one packet per group from Veza; frames of a group from
    /// other publishers share it).
    pub group: u64,
    /// Presentation time in microseconds.
    pub timestamp_us: u64,
    /// The Opus packet.
    pub payload: Bytes,
}

/// Where incoming groups of one subscription go.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    tx: mpsc::Sender<AudioFrame>,
    timescale: u64,
    /// Payloads start with a varint timestamp (hang's legacy container) to strip.
    legacy: bool,
}

impl Route {
    /// Hands one frame to the subscription; a full backlog drops it.
    pub(crate) fn deliver(&self, group: u64, timestamp: u64, payload: &[u8]) {
        let mut payload = payload;
        if self.legacy {
            match catalog::split_legacy_payload(payload) {
                Ok((_, codec)) => payload = codec,
                Err(_) => return,
            }
        }
        let timestamp_us = if self.timescale == 1_000_000 {
            timestamp
        } else {
            (u128::from(timestamp) * 1_000_000 / u128::from(self.timescale.max(1))) as u64
        };
        let _ = self.tx.try_send(AudioFrame {
            group,
            timestamp_us,
            payload: Bytes::copy_from_slice(payload),
        });
    }
}

/// A subscription to one audio track. Dropping it cancels the subscription.
#[derive(Debug)]
pub struct AudioTrack {
    session: Session,
    id: u64,
    send: SendStream,
    rx: mpsc::Receiver<AudioFrame>,
    /// The catalog's description of the track.
    pub info: AudioConfig,
    /// The track's name.
    pub name: String,
}

impl AudioTrack {
    /// The next packet, in arrival order; `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<AudioFrame> {
        self.rx.recv().await
    }
}

impl Drop for AudioTrack {
    fn drop(&mut self) {
        let _ = self.send.reset(codes::CANCELLED);
        self.session.unroute(self.id);
    }
}

/// Discovers and subscribes to the peer's broadcasts.
#[derive(Debug, Clone)]
pub struct Subscriber {
    session: Session,
}

impl Subscriber {
    pub(super) fn new(session: Session) -> Self {
        Self { session }
    }

    /// Asks the peer for its broadcasts under `prefix` (byte-wise prefix match).
    pub async fn announced(&self, prefix: &str) -> Result<Announcements, Failure> {
        let (mut send, recv) = self.session.open_bi().await?;
        let mut buf = Vec::new();
        encode_varint(StreamType::Announce as u64, &mut buf);
        AnnounceRequest {
            prefix: prefix.to_owned(),
            ended: false,
        }
        .encode(&mut buf);
        write_all(&mut send, &buf).await?;
        let mut reader = Reader::new(recv);
        reader.next(AnnounceOk::decode).await?.ok_or_else(|| {
            Failure::Refused("the announce stream closed before ANNOUNCE_OK".into())
        })?;
        Ok(Announcements {
            prefix: prefix.to_owned(),
            reader,
            _send: send,
            live: HashMap::new(),
            next_id: 0,
        })
    }

    /// Subscribes to the first Opus track that `broadcast`'s catalog lists: reads the
    /// catalog, the track's TRACK_INFO, then subscribes with `max_latency`.
    pub async fn subscribe_audio(
        &self,
        broadcast: &str,
        max_latency: Duration,
    ) -> Result<AudioTrack, Failure> {
        let catalog = tokio::time::timeout(CATALOG_TIMEOUT, self.catalog(broadcast))
            .await
            .map_err(|_| Failure::Stream(format!("no catalog from {broadcast} within 5 s")))??;
        let (name, info) = catalog
            .audio_tracks()
            // Only the legacy container (hang's default) is understood here.
            .find(|(_, audio)| {
                audio.codec.eq_ignore_ascii_case("opus") && audio.container == Container::Legacy
            })
            .map(|(name, audio)| (name.to_owned(), audio.clone()))
            .ok_or_else(|| {
                Failure::Refused(format!(
                    "{broadcast} has no Opus track in the legacy container"
                ))
            })?;
        let track_info = self.track_info(broadcast, &name).await?;
        let (id, send, rx) = self
            .subscribe(broadcast, &name, &track_info, max_latency, true)
            .await?;
        Ok(AudioTrack {
            session: self.session.clone(),
            id,
            send,
            rx,
            info,
            name,
        })
    }

    async fn catalog(&self, broadcast: &str) -> Result<Catalog, Failure> {
        let info = TrackInfo {
            epoch: 0,
            priority: 0,
            ordered: false,
            max_latency_ms: 0,
            timescale: 1_000_000,
        };
        let (id, mut send, mut rx) = self
            .subscribe(broadcast, CATALOG_TRACK, &info, Duration::ZERO, false)
            .await?;
        let frame = rx.recv().await;
        let _ = send.reset(codes::CANCELLED);
        self.session.unroute(id);
        let frame = frame.ok_or_else(|| Failure::Refused("the catalog track ended".into()))?;
        Catalog::from_json(&frame.payload)
            .map_err(|e| Failure::Refused(format!("{broadcast}'s catalog is not valid: {e}")))
    }

    async fn track_info(&self, broadcast: &str, track: &str) -> Result<TrackInfo, Failure> {
        let (mut send, recv) = self.session.open_bi().await?;
        let mut buf = Vec::new();
        encode_varint(StreamType::Track as u64, &mut buf);
        Track {
            broadcast: broadcast.to_owned(),
            track: track.to_owned(),
            epoch: 0,
        }
        .encode(&mut buf);
        write_all(&mut send, &buf).await?;
        let mut reader = Reader::new(recv);
        reader
            .next(TrackInfo::decode)
            .await?
            .ok_or_else(|| Failure::Refused(format!("no TRACK_INFO for {broadcast}/{track}")))
    }

    /// Opens a Subscribe stream and routes its groups to a channel.
    async fn subscribe(
        &self,
        broadcast: &str,
        track: &str,
        info: &TrackInfo,
        max_latency: Duration,
        legacy: bool,
    ) -> Result<(u64, SendStream, mpsc::Receiver<AudioFrame>), Failure> {
        let id = self
            .session
            .shared
            .next_subscribe_id
            .fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(FRAME_BACKLOG);
        self.session.route(
            id,
            Route {
                tx,
                timescale: info.timescale,
                legacy,
            },
        );
        let (mut send, recv) = self.session.open_bi().await?;
        let mut buf = Vec::new();
        encode_varint(StreamType::Subscribe as u64, &mut buf);
        Subscribe {
            id,
            broadcast: broadcast.to_owned(),
            track: track.to_owned(),
            epoch: info.epoch,
            priority: 128,
            ordered: false,
            max_latency_ms: max_latency.as_millis() as u64,
            group_start: None,
            group_end: None,
            frame_start: 0,
            frame_end: None,
        }
        .encode(&mut buf);
        write_all(&mut send, &buf).await?;
        // SUBSCRIBE_OK, END and DROP arrive on the stream; the route ends with it.
        let session = self.session.clone();
        let mut reader = Reader::new(recv);
        tokio::spawn(async move {
            loop {
                match reader.next(SubscribeReply::decode).await {
                    Ok(Some(SubscribeReply::End { .. })) | Ok(None) => break,
                    Ok(Some(_)) => {}
                    Err(failure) => {
                        session.failed(failure);
                        break;
                    }
                }
            }
            // Let groups already on their way arrive before the route goes.
            tokio::time::sleep(Duration::from_millis(500)).await;
            session.unroute(id);
        });
        Ok((id, send, rx))
    }
}

impl Session {
    fn route(&self, id: u64, route: Route) {
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, route);
    }

    fn unroute(&self, id: u64) {
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// A Group stream from the peer: GROUP, then frames, to the subscription it names.
    pub(super) async fn receive_group(&self, mut reader: Reader) -> Result<(), Failure> {
        let Some(group) = reader.next(Group::decode).await? else {
            return Err(Failure::Protocol("group stream without GROUP".into()));
        };
        let route = self
            .shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group.subscribe_id)
            .cloned();
        let Some(route) = route else {
            // A subscription we already dropped.
            reader.stop(codes::CANCELLED);
            return Ok(());
        };
        let mut timestamp: i64 = 0;
        while let Some(()) = reader
            .next(|buf| {
                let frame = Frame::decode(buf)?;
                timestamp = timestamp.wrapping_add(frame.timestamp_delta);
                route.deliver(group.sequence, timestamp.max(0) as u64, frame.payload);
                Ok(())
            })
            .await?
        {}
        Ok(())
    }
}
