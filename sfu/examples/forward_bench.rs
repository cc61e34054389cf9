//! A deterministic forwarding benchmark of the engine alone (no sockets, no SRTP): pushes 20 ms
//! Opus-sized packets through `handle_rtp`, drains every output, and prints packets forwarded
//! per second and nanoseconds per forwarded packet.
//!
//! ```text
//! cargo run --release -p veza-sfu --example forward_bench [-- ROUNDS]
//! ```
//!
//! The engine runs on a virtual clock (20 ms per round); only the benchmark itself reads the
//! real clock, to time the work.

use std::time::{Duration, Instant};

use veza_proto::{Grants, ParticipantId, RoomId, TrackId};
use veza_sfu::engine::Payload;
use veza_sfu::engine::{AudioLevel, Config, Engine, Output, RtpIn};

const GRANTS: Grants = Grants {
    can_publish: true,
    can_subscribe: true,
    can_chat: true,
};

struct Publisher {
    participant: ParticipantId,
    track: TrackId,
}

/// Builds `rooms` rooms of `members` participants each, of which the first `publishers`
/// publish.
fn build(
    rooms: usize,
    members: usize,
    publishers: usize,
    start: Instant,
) -> (Engine, Vec<Publisher>) {
    let mut engine = Engine::new(Config::default());
    let mut pubs = Vec::new();
    for _ in 0..rooms {
        let room = RoomId::new();
        for m in 0..members {
            let p = ParticipantId::new();
            let grants = Grants {
                can_publish: m < publishers,
                ..GRANTS
            };
            engine
                .add_participant(start, room, p, grants)
                .expect("fresh id");
            if m < publishers {
                let track = TrackId::new();
                engine.publish_track(start, p, track).expect("may publish");
                pubs.push(Publisher {
                    participant: p,
                    track,
                });
            }
        }
    }
    while engine.poll_output().is_some() {}
    (engine, pubs)
}

struct Result {
    packets_in: u64,
    forwarded: u64,
    elapsed: Duration,
}

/// `rounds` rounds of one 20 ms packet from every publisher.
fn run(engine: &mut Engine, pubs: &[Publisher], rounds: u32, start: Instant) -> Result {
    let payload = Payload::from(vec![0xA5u8; 80]);
    let (mut packets_in, mut forwarded, mut checksum) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    for r in 0..rounds {
        let now = start + Duration::from_millis(20 * u64::from(r));
        if engine.poll_timeout().is_some_and(|at| at <= now) {
            engine.handle_timeout(now);
        }
        for (i, p) in pubs.iter().enumerate() {
            let packet = RtpIn {
                seq: r as u16,
                timestamp: r.wrapping_mul(960),
                marker: r == 0,
                payload_type: 111,
                // A new handle per packet, as a transport would make; the bytes are shared.
                payload: payload.clone(),
                audio_level: Some(AudioLevel::new(true, 30 + (i % 40) as u8)),
            };
            engine.handle_rtp(now, p.participant, p.track, packet);
            packets_in += 1;
            while let Some(out) = engine.poll_output() {
                if let Output::Forward { packet, .. } = out {
                    forwarded += 1;
                    checksum =
                        checksum.wrapping_add(u64::from(packet.seq) ^ u64::from(packet.ssrc.0));
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    std::hint::black_box(checksum);
    Result {
        packets_in,
        forwarded,
        elapsed,
    }
}

fn report(name: &str, r: &Result) {
    let secs = r.elapsed.as_secs_f64();
    println!(
        "{name:<44} {:>9} in {:>11} fwd {:>8.3} s {:>12.0} fwd/s {:>7.1} ns/fwd {:>8.0} ns/in",
        r.packets_in,
        r.forwarded,
        secs,
        r.forwarded as f64 / secs,
        r.elapsed.as_nanos() as f64 / r.forwarded as f64,
        r.elapsed.as_nanos() as f64 / r.packets_in as f64,
    );
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000);
    let start = Instant::now();
    println!("forward_bench: {rounds} rounds of 20 ms (virtual), release build expected");

    let (mut engine, pubs) = build(1, 1001, 1, start);
    let r = run(&mut engine, &pubs, rounds, start);
    report("1 room x 1 publisher x 1000 subscribers", &r);
    assert_eq!(r.forwarded, r.packets_in * 1000);

    let (mut engine, pubs) = build(100, 10, 10, start);
    let r = run(&mut engine, &pubs, rounds / 10, start);
    report("100 rooms x 10 participants (all publish)", &r);
    assert_eq!(r.forwarded, r.packets_in * 9);

    let (mut engine, pubs) = build(1000, 5, 1, start);
    let r = run(&mut engine, &pubs, rounds / 5, start);
    report("1000 rooms x 1 publisher x 4 subscribers", &r);
    assert_eq!(r.forwarded, r.packets_in * 4);

    let s = engine.stats();
    println!(
        "last engine: rooms {} participants {} tracks {} slots {} speaker events {}",
        s.rooms, s.participants, s.tracks, s.slots, s.speaker_events
    );
}
