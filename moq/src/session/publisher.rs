//! Our broadcasts: announcing them, describing their tracks, and sending their groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use web_transport_quinn::SendStream;

use crate::catalog::{self, CATALOG_TRACK, Catalog};
use crate::coding::{Decode, Encode, encode_varint, varint_len};
use crate::message::{
    Announce, AnnounceEnd, AnnounceOk, AnnounceRequest, AnnounceStart, Datagram, Frame, Group,
    Subscribe, SubscribeReply, SubscribeUpdate, Track, TrackInfo, UniStreamType,
};

use super::io::Reader;
use super::{Failure, Session, encoded, write_all};
use crate::code::stream as codes;

/// Timescale of our audio tracks' frame timestamps: microseconds (as hang's).
pub const TIMESCALE_US: u64 = 1_000_000;
/// Groups waiting for a slow subscription before newer ones push them out.
const SUBSCRIPTION_BACKLOG: usize = 64;

/// What a broadcast's catalog says about its one Opus track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// The track's name within the broadcast.
    pub track: String,
    /// 1 or 2.
    pub channels: u16,
    /// Target bitrate in bits per second, if known.
    pub bitrate: Option<u32>,
}

/// The broadcasts this session offers, shared by every handler.
#[derive(Debug)]
pub(crate) struct State {
    /// By path; Announce streams watch this.
    broadcasts: watch::Sender<BTreeMap<String, Arc<Broadcast>>>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            broadcasts: watch::channel(BTreeMap::new()).0,
        }
    }
}

impl State {
    /// Ends every broadcast (the session is over).
    pub(crate) fn end_all(&self) {
        self.broadcasts.send_modify(|map| {
            for broadcast in map.values() {
                broadcast.end();
            }
            map.clear();
        });
    }

    /// The broadcast at `path` if it has `track` (its catalog or its audio) and, when `epoch`
    /// is not 0, that epoch.
    fn find(&self, path: &str, track: &str, epoch: u64) -> Option<Arc<Broadcast>> {
        self.broadcasts
            .borrow()
            .get(path)
            .filter(|b| epoch == 0 || epoch == b.epoch)
            .filter(|b| track == CATALOG_TRACK || track == b.info.track)
            .cloned()
    }
}

/// One broadcast: a catalog and one Opus track, with the live subscriptions to it.
#[derive(Debug)]
struct Broadcast {
    path: String,
    epoch: u64,
    info: AudioInfo,
    catalog: Bytes,
    subscriptions: Mutex<Vec<mpsc::Sender<Outgoing>>>,
    /// Flips to true when the broadcast ends (catalog subscriptions watch it).
    ended: watch::Sender<bool>,
}

impl Broadcast {
    fn end(&self) {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.ended.send_replace(true);
    }
}

/// One group on its way to a subscription.
#[derive(Debug, Clone)]
struct Outgoing {
    group: u64,
    timestamp_us: u64,
    payload: Bytes,
    queued: Instant,
}

/// Offers broadcasts to the peer.
#[derive(Debug, Clone)]
pub struct Publisher {
    session: Session,
}

impl Publisher {
    pub(super) fn new(session: Session) -> Self {
        Self { session }
    }

    /// Announces a broadcast at `path` with one Opus track; it ends when the writer drops.
    /// A second broadcast at the same path replaces the first.
    pub fn publish(&self, path: &str, info: AudioInfo) -> BroadcastWriter {
        let broadcast = Arc::new(Broadcast {
            path: path.to_owned(),
            epoch: new_epoch(),
            catalog: Bytes::from(opus_catalog(&info)),
            info,
            subscriptions: Mutex::new(Vec::new()),
            ended: watch::channel(false).0,
        });
        self.session.shared.publisher.broadcasts.send_modify(|map| {
            if let Some(old) = map.insert(path.to_owned(), broadcast.clone()) {
                old.end();
            }
        });
        BroadcastWriter {
            session: self.session.clone(),
            broadcast,
        }
    }
}

/// Writes one broadcast's audio; dropping it ends the broadcast (ANNOUNCE_END, SUBSCRIBE_END).
#[derive(Debug)]
pub struct BroadcastWriter {
    session: Session,
    broadcast: Arc<Broadcast>,
}

impl BroadcastWriter {
    /// Sends one Opus packet as group `group` (increasing by one per packet) with its
    /// presentation time in microseconds, to every subscription. A subscription whose backlog
    /// is full loses the packet (counted as stale): a slow subscriber never slows the others.
    pub fn write(&self, group: u64, timestamp_us: u64, payload: Bytes) {
        let outgoing = Outgoing {
            group,
            timestamp_us,
            payload,
            queued: Instant::now(),
        };
        let mut subscriptions = self
            .broadcast
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        subscriptions.retain(|sub| match sub.try_send(outgoing.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.session.metrics().group_stale();
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Live subscriptions to the audio track.
    pub fn subscribers(&self) -> usize {
        self.broadcast
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The broadcast's path.
    pub fn path(&self) -> &str {
        &self.broadcast.path
    }
}

impl Drop for BroadcastWriter {
    fn drop(&mut self) {
        let broadcast = &self.broadcast;
        broadcast.end();
        self.session
            .shared
            .publisher
            .broadcasts
            .send_if_modified(|map| match map.get(&broadcast.path) {
                Some(current) if Arc::ptr_eq(current, broadcast) => {
                    map.remove(&broadcast.path);
                    true
                }
                _ => false,
            });
    }
}

/// The catalog of a broadcast with one Opus track in hang's legacy container.
fn opus_catalog(info: &AudioInfo) -> Vec<u8> {
    let mut catalog = Catalog::opus([(info.track.clone(), u32::from(info.channels))]);
    if let Some(rendition) = catalog.audio.renditions.get_mut(&info.track) {
        rendition.bitrate = info.bitrate.map(u64::from);
    }
    // Serializing plain strings and numbers cannot fail.
    catalog.to_json().unwrap_or_default()
}

/// A new epoch: wall-clock milliseconds shifted left 16 bits, low bits random (the draft's
/// recommended construction).
fn new_epoch() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (ms << 16) | (super::random_u64() & 0xffff) | 1
}

impl Session {
    /// An Announce stream: ANNOUNCE_OK with the matching broadcasts, then changes as they come
    /// and go, until the peer closes the stream.
    pub(super) async fn serve_announce(
        &self,
        mut send: SendStream,
        mut reader: Reader,
    ) -> Result<(), Failure> {
        let request = reader
            .next(AnnounceRequest::decode)
            .await?
            .ok_or_else(|| Failure::Protocol("announce stream without ANNOUNCE_REQUEST".into()))?;
        let mut watch = self.shared.publisher.broadcasts.subscribe();
        let matching = |map: &BTreeMap<String, Arc<Broadcast>>| -> BTreeMap<String, u64> {
            map.iter()
                .filter(|(path, _)| path.as_bytes().starts_with(request.prefix.as_bytes()))
                .map(|(path, b)| (path.clone(), b.epoch))
                .collect()
        };
        let mut current = matching(&watch.borrow_and_update());
        let mut buf = encoded(&AnnounceOk {
            hop_id: self.shared.hop_id,
            active_count: current.len() as u64,
        });
        let mut ids: HashMap<String, u64> = HashMap::new();
        let mut next_id = 0u64;
        for (path, epoch) in &current {
            start(&request.prefix, path, *epoch, &mut buf);
            ids.insert(path.clone(), next_id);
            next_id += 1;
        }
        write_all(&mut send, &buf).await?;
        loop {
            tokio::select! {
                changed = watch.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = matching(&watch.borrow_and_update());
                    let mut buf = Vec::new();
                    for (path, epoch) in &current {
                        if now.get(path) != Some(epoch)
                            && let Some(id) = ids.remove(path)
                        {
                            Announce::End(AnnounceEnd { id }).encode(&mut buf);
                        }
                    }
                    for (path, epoch) in &now {
                        if current.get(path) != Some(epoch) {
                            start(&request.prefix, path, *epoch, &mut buf);
                            ids.insert(path.clone(), next_id);
                            next_id += 1;
                        }
                    }
                    current = now;
                    if !buf.is_empty() {
                        write_all(&mut send, &buf).await?;
                    }
                }
                () = reader.closed() => break,
            }
        }
        let _ = send.finish();
        Ok(())
    }

    /// A Track stream: TRACK_INFO for the catalog or the audio track, else a reset.
    pub(super) async fn serve_track(
        &self,
        mut send: SendStream,
        mut reader: Reader,
    ) -> Result<(), Failure> {
        let request = reader
            .next(Track::decode)
            .await?
            .ok_or_else(|| Failure::Protocol("track stream without TRACK".into()))?;
        let found = self
            .shared
            .publisher
            .find(&request.broadcast, &request.track, request.epoch);
        let Some(broadcast) = found else {
            let _ = send.reset(codes::NOT_FOUND);
            return Ok(());
        };
        let audio = request.track != CATALOG_TRACK;
        let info = TrackInfo {
            epoch: broadcast.epoch,
            // Audio before the catalog when both wait.
            priority: if audio { 128 } else { 64 },
            ordered: false,
            // Only the latest group is kept.
            max_latency_ms: 0,
            timescale: TIMESCALE_US,
        };
        write_all(&mut send, &encoded(&info)).await?;
        let _ = send.finish();
        Ok(())
    }

    /// A Subscribe stream: the catalog (one group) or the audio track (one group per packet).
    pub(super) async fn serve_subscribe(
        &self,
        mut send: SendStream,
        mut reader: Reader,
    ) -> Result<(), Failure> {
        let request = reader
            .next(Subscribe::decode)
            .await?
            .ok_or_else(|| Failure::Protocol("subscribe stream without SUBSCRIBE".into()))?;
        let found = self
            .shared
            .publisher
            .find(&request.broadcast, &request.track, request.epoch);
        let Some(broadcast) = found else {
            let _ = send.reset(codes::NOT_FOUND);
            return Ok(());
        };
        if request.track == CATALOG_TRACK {
            self.send_catalog(send, reader, &request, &broadcast).await
        } else {
            self.send_audio(send, reader, request, &broadcast).await
        }
    }

    async fn send_catalog(
        &self,
        mut send: SendStream,
        mut reader: Reader,
        request: &Subscribe,
        broadcast: &Broadcast,
    ) -> Result<(), Failure> {
        let mut ended = broadcast.ended.subscribe();
        write_all(&mut send, &encoded(&SubscribeReply::Ok { group: 0 })).await?;
        let mut group = self.open_uni().await?;
        let mut buf = Vec::with_capacity(broadcast.catalog.len() + 16);
        encode_varint(UniStreamType::Group as u64, &mut buf);
        Group {
            subscribe_id: request.id,
            sequence: 0,
            frame_start: 0,
        }
        .encode(&mut buf);
        Frame {
            timestamp_delta: 0,
            payload: &broadcast.catalog,
        }
        .encode(&mut buf);
        write_all(&mut group, &buf).await?;
        let _ = group.finish();
        let ended = tokio::select! {
            result = ended.wait_for(|ended| *ended) => result.is_ok(),
            () = reader.closed() => false,
        };
        if ended {
            write_all(&mut send, &encoded(&SubscribeReply::End { group: 1 })).await?;
        }
        let _ = send.finish();
        Ok(())
    }

    async fn send_audio(
        &self,
        mut send: SendStream,
        mut reader: Reader,
        request: Subscribe,
        broadcast: &Broadcast,
    ) -> Result<(), Failure> {
        let (tx, mut rx) = mpsc::channel(SUBSCRIPTION_BACKLOG);
        broadcast
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        // The subscription may have been made just as the broadcast ended.
        if *broadcast.ended.borrow() {
            broadcast
                .subscriptions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        let mut max_latency = Duration::from_millis(request.max_latency_ms);
        let mut sender = GroupSender::new(self.clone(), request.id);
        let mut next_group = None;
        loop {
            tokio::select! {
                outgoing = rx.recv() => {
                    let Some(outgoing) = outgoing else {
                        // The broadcast ended.
                        let end = next_group.unwrap_or(0);
                        write_all(&mut send, &encoded(&SubscribeReply::End { group: end })).await?;
                        let _ = send.finish();
                        break;
                    };
                    if let Some(start) = request.group_start
                        && outgoing.group < start
                    {
                        continue;
                    }
                    if next_group.is_none() {
                        write_all(&mut send, &encoded(&SubscribeReply::Ok { group: outgoing.group })).await?;
                    }
                    next_group = Some(outgoing.group + 1);
                    sender.send(outgoing, max_latency).await?;
                    if request.group_end.is_some_and(|end| next_group > Some(end)) {
                        let end = next_group.unwrap_or(0);
                        write_all(&mut send, &encoded(&SubscribeReply::End { group: end })).await?;
                        let _ = send.finish();
                        break;
                    }
                }
                update = reader.next(SubscribeUpdate::decode) => match update? {
                    Some(update) => max_latency = Duration::from_millis(update.max_latency_ms),
                    None => {
                        let _ = send.finish();
                        break;
                    }
                },
            }
        }
        Ok(())
    }
}

/// Encodes an ANNOUNCE_START for `path` below `prefix`.
fn start(prefix: &str, path: &str, epoch: u64, buf: &mut Vec<u8>) {
    Announce::Start(AnnounceStart {
        suffix: path[prefix.len()..].to_owned(),
        epoch,
        ended: false,
        hops: Vec::new(),
        route_cost: 0,
        cold_cost: 0,
    })
    .encode(buf);
}

/// Sends one subscription's groups, one stream (or datagram) each, and drops stale ones.
///
/// A group that waited longer than the subscriber's max latency before it could be written is
/// dropped, never sent late. Once written, a group is quinn's: newer groups get a higher stream
/// priority, so after congestion fresh audio overtakes what is still buffered, and the
/// endpoint's send window bounds how much that can be.
struct GroupSender {
    session: Session,
    subscribe_id: u64,
    buf: Vec<u8>,
}

impl GroupSender {
    fn new(session: Session, subscribe_id: u64) -> Self {
        Self {
            session,
            subscribe_id,
            buf: Vec::with_capacity(1500),
        }
    }

    async fn send(&mut self, outgoing: Outgoing, max_latency: Duration) -> Result<(), Failure> {
        // Never below two round trips, so a 0 ms subscriber still gets the latest group.
        let patience = max_latency.max(self.session.shared.transport.rtt() * 2);
        if outgoing.queued.elapsed() > patience {
            self.session.metrics().group_stale();
            return Ok(());
        }
        if self.session.shared.options.datagrams {
            self.buf.clear();
            let mut payload = Vec::with_capacity(outgoing.payload.len() + 8);
            catalog::legacy_payload(outgoing.timestamp_us, &outgoing.payload, &mut payload);
            let datagram = Datagram {
                subscribe_id: self.subscribe_id,
                group: outgoing.group,
                timestamp: outgoing.timestamp_us,
                payload: &payload,
            };
            if datagram.encode(&mut self.buf).is_ok() {
                let bytes = Bytes::copy_from_slice(&self.buf);
                if self.session.shared.transport.send_datagram(bytes).is_ok() {
                    self.session.metrics().datagram_sent();
                }
                return Ok(());
            }
            // Too big for a datagram: it goes on a stream.
        }
        let mut stream = self.session.open_uni().await?;
        // Newer groups first when the connection is congested.
        let _ = stream.set_priority(outgoing.group as i32);
        self.buf.clear();
        encode_varint(UniStreamType::Group as u64, &mut self.buf);
        Group {
            subscribe_id: self.subscribe_id,
            sequence: outgoing.group,
            frame_start: 0,
        }
        .encode(&mut self.buf);
        // hang's legacy container: a varint microsecond timestamp before the Opus packet,
        // written straight after the frame header.
        Frame::encode_header(
            outgoing.timestamp_us as i64,
            varint_len(outgoing.timestamp_us) + outgoing.payload.len(),
            &mut self.buf,
        );
        catalog::legacy_payload(outgoing.timestamp_us, &[], &mut self.buf);
        let mut chunks = [Bytes::copy_from_slice(&self.buf), outgoing.payload];
        stream
            .write_all_chunks(&mut chunks)
            .await
            .map_err(|e| Failure::Stream(e.to_string()))?;
        let _ = stream.finish();
        self.session.metrics().group_sent();
        Ok(())
    }
}
