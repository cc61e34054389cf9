//! A small deterministic world for engine scenarios: a virtual clock, talkers that emit 20 ms
//! Opus frames in talk spurts with DTX silences, emulated links that lose, delay, reorder and
//! duplicate with a seeded generator, and receivers that track what they get and NACK gaps.
//! Each scenario file uses a part of it.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use veza_proto::{Grants, ParticipantId, RoomId, TrackId};
use veza_sfu::engine::Payload;
use veza_sfu::engine::{
    AudioLevel, Config, Engine, EngineError, Event, Output, RtpIn, RtpOut, SlotId, Ssrc,
    SubscribeMode,
};

/// One millisecond.
pub const MS: Duration = Duration::from_millis(1);
/// One Opus frame.
pub const FRAME: Duration = Duration::from_millis(20);

/// Grants for a participant.
pub fn grants(can_publish: bool, can_subscribe: bool) -> Grants {
    Grants {
        can_publish,
        can_subscribe,
        can_chat: true,
    }
}

/// A participant id numbered for readable failures.
pub fn pid(n: u32) -> ParticipantId {
    format!("00000000-0000-0000-0000-{n:012}")
        .parse()
        .expect("a valid uuid")
}

/// A track id numbered for readable failures.
pub fn tid(n: u32) -> TrackId {
    format!("70000000-0000-0000-0000-{n:012}")
        .parse()
        .expect("a valid uuid")
}

/// A room id.
pub fn rid(n: u32) -> RoomId {
    format!("40000000-0000-0000-0000-{n:012}")
        .parse()
        .expect("a valid uuid")
}

/// SplitMix64: the seeded generator of every random choice in a scenario.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A number in `lo..hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
}

// ----- payloads --------------------------------------------------------------------------

/// What a fake Opus payload says about itself: who sent it, which frame, and the publisher's
/// original sequence number and timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The talker's number.
    pub talker: u32,
    /// Frame counter of that talker.
    pub frame: u32,
    /// The publisher's sequence number.
    pub seq: u16,
    /// The publisher's timestamp.
    pub ts: u32,
}

impl Tag {
    fn encode(self) -> Payload {
        let mut b = Vec::with_capacity(60);
        b.extend_from_slice(&self.talker.to_be_bytes());
        b.extend_from_slice(&self.frame.to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.ts.to_be_bytes());
        b.resize(60, 0xAB);
        Payload::from(b)
    }

    /// Reads a tag back from a payload.
    pub fn decode(payload: &[u8]) -> Tag {
        let u32_at = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
        Tag {
            talker: u32_at(0),
            frame: u32_at(4),
            seq: u16::from_be_bytes(payload[8..10].try_into().expect("2 bytes")),
            ts: u32_at(10),
        }
    }
}

// ----- talkers ---------------------------------------------------------------------------

/// A publisher: 20 ms frames during talk spurts, nothing during silence (DTX). Timestamps
/// follow the wall clock (48 kHz), so a silence shows as a timestamp jump.
#[derive(Debug, Clone)]
pub struct Talker {
    /// The talker's number (written into payloads).
    pub id: u32,
    start: Instant,
    seq: u16,
    ts0: u32,
    /// Talk spurts as [from, to) offsets from `start`.
    spurts: Vec<(Duration, Duration)>,
    next_frame: Instant,
    frame: u32,
    /// RFC 6464 level while talking.
    pub level: u8,
    /// Send audio levels at all.
    pub with_levels: bool,
    was_talking: bool,
    /// Every packet sent, in order.
    pub sent: Vec<Tag>,
}

impl Talker {
    /// A talker starting at `start` with the given first sequence number and timestamp.
    pub fn new(
        id: u32,
        start: Instant,
        seq0: u16,
        ts0: u32,
        spurts: Vec<(Duration, Duration)>,
    ) -> Self {
        Talker {
            id,
            start,
            seq: seq0,
            ts0,
            spurts,
            next_frame: start,
            frame: 0,
            level: 30,
            with_levels: true,
            was_talking: false,
            sent: Vec::new(),
        }
    }

    /// Talks for the whole of `0..until`.
    pub fn continuous(id: u32, start: Instant, until: Duration) -> Self {
        Talker::new(
            id,
            start,
            (id * 1000) as u16,
            id.wrapping_mul(7_777_777),
            vec![(Duration::ZERO, until)],
        )
    }

    /// When the next frame is due.
    pub fn next_at(&self) -> Instant {
        self.next_frame
    }

    fn talking_at(&self, offset: Duration) -> bool {
        self.spurts.iter().any(|(a, b)| offset >= *a && offset < *b)
    }

    /// The frame due at or before `now`, if the talker talks then.
    pub fn poll(&mut self, now: Instant) -> Option<RtpIn> {
        while self.next_frame <= now {
            let at = self.next_frame;
            self.next_frame += FRAME;
            let offset = at - self.start;
            let talking = self.talking_at(offset);
            let first = talking && !self.was_talking;
            self.was_talking = talking;
            if !talking {
                continue;
            }
            let ticks = (offset.as_nanos() * 48_000 / 1_000_000_000) as u32;
            let tag = Tag {
                talker: self.id,
                frame: self.frame,
                seq: self.seq,
                ts: self.ts0.wrapping_add(ticks),
            };
            self.frame += 1;
            self.seq = self.seq.wrapping_add(1);
            self.sent.push(tag);
            let jitter = (tag.frame % 5) as u8;
            return Some(RtpIn {
                seq: tag.seq,
                timestamp: tag.ts,
                marker: first,
                payload_type: 111,
                payload: tag.encode(),
                audio_level: self
                    .with_levels
                    .then(|| AudioLevel::new(true, self.level.saturating_add(jitter))),
            });
        }
        None
    }
}

// ----- links -----------------------------------------------------------------------------

/// How a one-way link misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Base one-way delay.
    pub latency: Duration,
    /// Uniform extra delay 0..jitter.
    pub jitter: Duration,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability a packet is held back by `reorder_delay` (arriving after later ones).
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_delay: Duration,
}

impl LinkConfig {
    /// In order, nothing lost, 10 ms.
    pub fn perfect() -> Self {
        LinkConfig {
            latency: 10 * MS,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
        }
    }

    /// 20 ms ± 5 ms, `loss` lost, 1 % duplicated, 3 % reordered by 30 ms.
    pub fn lossy(loss: f64) -> Self {
        LinkConfig {
            latency: 20 * MS,
            jitter: 5 * MS,
            loss,
            duplicate: 0.01,
            reorder: 0.03,
            reorder_delay: 30 * MS,
        }
    }
}

/// An emulated one-way link.
#[derive(Debug)]
pub struct Link<T> {
    config: LinkConfig,
    rng: Rng,
    queue: BTreeMap<(Instant, u64), T>,
    counter: u64,
    /// Items offered.
    pub sent: u64,
    /// Items lost.
    pub lost: u64,
}

impl<T: Clone> Link<T> {
    /// A link with its own seeded generator.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Link {
            config,
            rng: Rng::new(seed),
            queue: BTreeMap::new(),
            counter: 0,
            sent: 0,
            lost: 0,
        }
    }

    fn delay(&mut self) -> Duration {
        let jitter = self.config.jitter.as_micros() as u64;
        let mut d = self.config.latency + Duration::from_micros(self.rng.range(0, jitter));
        if self.rng.chance(self.config.reorder) {
            d += self.config.reorder_delay;
        }
        d
    }

    /// Offers an item at `now`.
    pub fn send(&mut self, now: Instant, item: T) {
        self.sent += 1;
        if self.rng.chance(self.config.loss) {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + self.delay();
            self.counter += 1;
            self.queue.insert((at, self.counter), item.clone());
        }
    }

    /// When the next item arrives.
    pub fn next_at(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// The next item that has arrived by `now`.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        let (&key, _) = self.queue.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.queue.remove(&key)
    }
}

// ----- receivers -------------------------------------------------------------------------

/// One packet as a subscriber got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// Arrival time.
    pub at: Instant,
    /// The slot it came on.
    pub slot: SlotId,
    /// Sequence number on the wire.
    pub seq: u16,
    /// The receiver's own extension of `seq`.
    pub ext: u64,
    /// Timestamp on the wire.
    pub ts: u32,
    /// Marker bit.
    pub marker: bool,
    /// A retransmission.
    pub retransmission: bool,
    /// The payload's tag.
    pub tag: Tag,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    since: Instant,
    last_nack: Option<Instant>,
    tries: u8,
}

/// What a subscriber received on one SSRC.
#[derive(Debug, Default)]
pub struct RxStream {
    /// Every packet, in arrival order (duplicates included).
    pub packets: Vec<Got>,
    /// Distinct extended sequence numbers received.
    pub distinct: BTreeMap<u64, Got>,
    highest: Option<u64>,
    first: Option<u64>,
    missing: BTreeMap<u64, Missing>,
}

impl RxStream {
    fn extend(&self, seq: u16) -> u64 {
        match self.highest {
            None => (1 << 16) | u64::from(seq),
            Some(h) => h.wrapping_add_signed(i64::from(seq.wrapping_sub(h as u16) as i16)),
        }
    }

    /// Packets from the first to the highest sequence number received.
    pub fn span(&self) -> u64 {
        match (self.first, self.highest) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        }
    }

    /// Gaps never filled.
    pub fn lost(&self) -> u64 {
        self.span() - self.distinct.len() as u64
    }
}

/// How a receiver NACKs.
#[derive(Debug, Clone, Copy)]
pub struct NackPolicy {
    /// Off: never NACK.
    pub enabled: bool,
    /// Wait this long after noticing a gap (reordering).
    pub first_after: Duration,
    /// Then repeat every this long.
    pub retry_every: Duration,
    /// At most this many NACKs per packet.
    pub max_tries: u8,
}

impl Default for NackPolicy {
    fn default() -> Self {
        NackPolicy {
            enabled: true,
            first_after: 10 * MS,
            retry_every: 60 * MS,
            max_tries: 3,
        }
    }
}

/// A subscriber's receiving side.
#[derive(Debug, Default)]
pub struct Receiver {
    /// Per SSRC.
    pub streams: BTreeMap<Ssrc, RxStream>,
    /// NACK behaviour.
    pub policy: NackPolicy,
}

impl Receiver {
    /// Takes one delivered packet.
    pub fn receive(&mut self, at: Instant, slot: SlotId, packet: &RtpOut, retransmission: bool) {
        let s = self.streams.entry(packet.ssrc).or_default();
        let ext = s.extend(packet.seq);
        let got = Got {
            at,
            slot,
            seq: packet.seq,
            ext,
            ts: packet.timestamp,
            marker: packet.marker,
            retransmission,
            tag: Tag::decode(&packet.payload),
        };
        if s.first.is_none_or(|f| ext < f) {
            s.first = Some(ext);
        }
        match s.highest {
            Some(h) if ext > h => {
                for gap in h + 1..ext {
                    s.missing.insert(
                        gap,
                        Missing {
                            since: at,
                            last_nack: None,
                            tries: 0,
                        },
                    );
                }
                s.highest = Some(ext);
            }
            None => s.highest = Some(ext),
            _ => {}
        }
        s.missing.remove(&ext);
        s.distinct.entry(ext).or_insert_with(|| got.clone());
        s.packets.push(got);
    }

    /// NACKs due at `now`, per SSRC.
    pub fn nacks(&mut self, now: Instant) -> Vec<(Ssrc, Vec<u16>)> {
        let mut out = Vec::new();
        if !self.policy.enabled {
            return out;
        }
        let p = self.policy;
        for (&ssrc, s) in &mut self.streams {
            let mut seqs = Vec::new();
            for (&ext, m) in &mut s.missing {
                let due = match m.last_nack {
                    None => m.since + p.first_after,
                    Some(t) => t + p.retry_every,
                };
                if m.tries < p.max_tries && due <= now {
                    m.tries += 1;
                    m.last_nack = Some(now);
                    seqs.push(ext as u16);
                }
            }
            if !seqs.is_empty() {
                out.push((ssrc, seqs));
            }
        }
        out
    }

    /// When the next NACK is due.
    pub fn next_nack_at(&self) -> Option<Instant> {
        if !self.policy.enabled {
            return None;
        }
        let p = self.policy;
        self.streams
            .values()
            .flat_map(|s| s.missing.values())
            .filter(|m| m.tries < p.max_tries)
            .map(|m| match m.last_nack {
                None => m.since + p.first_after,
                Some(t) => t + p.retry_every,
            })
            .min()
    }
}

// ----- the world -------------------------------------------------------------------------

/// A forward as the engine emitted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// When.
    pub at: Instant,
    /// To whom.
    pub to: ParticipantId,
    /// On which slot.
    pub slot: SlotId,
    /// The packet.
    pub packet: RtpOut,
    /// A NACK answer.
    pub retransmission: bool,
}

struct Publisher {
    participant: ParticipantId,
    track: TrackId,
    talker: Talker,
    uplink: Link<RtpIn>,
}

struct Subscriber {
    downlink: Link<(SlotId, RtpOut, bool)>,
    receiver: Receiver,
    nack_link: Link<(Ssrc, Vec<u16>)>,
}

/// The engine, its participants' links and a virtual clock.
pub struct World {
    /// Virtual time now.
    pub now: Instant,
    /// Virtual time zero.
    pub start: Instant,
    /// The engine under test.
    pub engine: Engine,
    /// Link of every publisher to the engine.
    pub uplink: LinkConfig,
    /// Link of the engine to every subscriber.
    pub downlink: LinkConfig,
    /// Link carrying NACKs to the engine.
    pub nack_uplink: LinkConfig,
    /// Seeds the links.
    pub seed: u64,
    publishers: Vec<Publisher>,
    subscribers: BTreeMap<ParticipantId, Subscriber>,
    /// Every event, with its time.
    pub events: Vec<(Instant, Event)>,
    /// Every forward, with its time.
    pub sent: Vec<Sent>,
    /// RTP packets handed to the engine, per participant.
    pub handed: HashMap<ParticipantId, u64>,
}

impl World {
    /// A world with perfect links.
    pub fn new(config: Config, seed: u64) -> Self {
        let start = Instant::now();
        World {
            now: start,
            start,
            engine: Engine::new(config),
            uplink: LinkConfig::perfect(),
            downlink: LinkConfig::perfect(),
            nack_uplink: LinkConfig::perfect(),
            seed,
            publishers: Vec::new(),
            subscribers: BTreeMap::new(),
            events: Vec::new(),
            sent: Vec::new(),
            handed: HashMap::new(),
        }
    }

    /// The time `d` after virtual zero.
    pub fn at(&self, d: Duration) -> Instant {
        self.start + d
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn next_seed(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.seed
    }

    /// Adds an in-room participant; with `can_subscribe` it gets links and a receiver.
    pub fn join(&mut self, room: RoomId, p: ParticipantId, g: Grants) -> Result<(), EngineError> {
        self.join_with(room, p, g, SubscribeMode::AllTracks)
    }

    /// Adds a participant with a subscribe mode.
    pub fn join_with(
        &mut self,
        room: RoomId,
        p: ParticipantId,
        g: Grants,
        mode: SubscribeMode,
    ) -> Result<(), EngineError> {
        self.engine
            .add_participant_with(self.now, room, p, g, mode)?;
        if g.can_subscribe {
            let (a, b) = (self.next_seed(), self.next_seed());
            self.subscribers.insert(
                p,
                Subscriber {
                    downlink: Link::new(self.downlink, a),
                    receiver: Receiver::default(),
                    nack_link: Link::new(self.nack_uplink, b),
                },
            );
        }
        self.pump();
        Ok(())
    }

    /// Publishes `track` for `p`, fed by `talker`.
    pub fn publish(
        &mut self,
        p: ParticipantId,
        track: TrackId,
        talker: Talker,
    ) -> Result<(), EngineError> {
        self.engine.publish_track(self.now, p, track)?;
        let seed = self.next_seed();
        self.publishers.push(Publisher {
            participant: p,
            track,
            talker,
            uplink: Link::new(self.uplink, seed),
        });
        self.pump();
        Ok(())
    }

    /// Stops feeding `p`'s talker (after a kick, say) without telling the engine.
    pub fn silence(&mut self, p: ParticipantId) {
        self.publishers.retain(|x| x.participant != p);
    }

    /// A subscriber's receiver.
    pub fn receiver(&self, p: ParticipantId) -> &Receiver {
        &self.subscribers[&p].receiver
    }

    /// A subscriber's receiver, to change its NACK policy.
    pub fn receiver_mut(&mut self, p: ParticipantId) -> &mut Receiver {
        &mut self.subscribers.get_mut(&p).expect("a subscriber").receiver
    }

    /// A talker, by participant.
    pub fn talker(&self, p: ParticipantId) -> &Talker {
        &self
            .publishers
            .iter()
            .find(|x| x.participant == p)
            .expect("a publisher")
            .talker
    }

    /// Drains the engine: forwards onto downlinks, events into the log.
    pub fn pump(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Forward {
                    to,
                    slot,
                    packet,
                    retransmission,
                } => {
                    self.sent.push(Sent {
                        at: self.now,
                        to,
                        slot,
                        packet: packet.clone(),
                        retransmission,
                    });
                    if let Some(s) = self.subscribers.get_mut(&to) {
                        s.downlink.send(self.now, (slot, packet, retransmission));
                    }
                }
                Output::Event(e) => self.events.push((self.now, e)),
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let publishers = self
            .publishers
            .iter()
            .flat_map(|p| [Some(p.talker.next_at()), p.uplink.next_at()]);
        let subscribers = self.subscribers.values().flat_map(|s| {
            [
                s.downlink.next_at(),
                s.receiver.next_nack_at(),
                s.nack_link.next_at(),
            ]
        });
        publishers
            .chain(subscribers)
            .chain([self.engine.poll_timeout()])
            .flatten()
            .min()
    }

    /// Runs everything due at `self.now`.
    fn process(&mut self) {
        let now = self.now;
        for p in &mut self.publishers {
            while let Some(packet) = p.talker.poll(now) {
                p.uplink.send(now, packet);
            }
        }
        for i in 0..self.publishers.len() {
            while let Some(packet) = self.publishers[i].uplink.poll(now) {
                let (who, track) = (self.publishers[i].participant, self.publishers[i].track);
                *self.handed.entry(who).or_default() += 1;
                self.engine.handle_rtp(now, who, track, packet);
                self.pump();
            }
        }
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
            self.pump();
        }
        let ids: Vec<ParticipantId> = self.subscribers.keys().copied().collect();
        for id in ids {
            let s = self.subscribers.get_mut(&id).expect("listed");
            while let Some((slot, packet, re)) = s.downlink.poll(now) {
                s.receiver.receive(now, slot, &packet, re);
            }
            for (ssrc, seqs) in s.receiver.nacks(now) {
                s.nack_link.send(now, (ssrc, seqs));
            }
            let mut nacks = Vec::new();
            while let Some(n) = s.nack_link.poll(now) {
                nacks.push(n);
            }
            for (ssrc, seqs) in nacks {
                self.engine.handle_nack(now, id, ssrc, &seqs);
                self.pump();
            }
        }
    }

    /// Runs the world until virtual time `until`.
    pub fn run_until(&mut self, until: Instant) {
        self.process();
        while let Some(next) = self.next_event() {
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            self.process();
        }
        self.now = self.now.max(until);
    }

    /// Runs the world for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Forwards the engine sent to `to`, originals only.
    pub fn originals_to(&self, to: ParticipantId) -> impl Iterator<Item = &Sent> {
        self.sent
            .iter()
            .filter(move |s| s.to == to && !s.retransmission)
    }

    /// Events of one kind, with times.
    pub fn speaker_events(&self) -> Vec<(Instant, Vec<ParticipantId>)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::ActiveSpeakers { speakers, .. } => {
                    Some((*at, speakers.iter().map(|s| s.0).collect()))
                }
                _ => None,
            })
            .collect()
    }
}
