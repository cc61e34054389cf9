//! Garbage in, nothing breaks: unknown ids, empty payloads, duplicates, ancient packets, wild
//! sequence jumps, NACKs for unknown or foreign SSRCs and NACK storms are dropped and counted,
//! control calls with bad arguments return typed errors, and a long random mix of all of it
//! never panics.

mod sim;

use std::time::{Duration, Instant};

use sim::{Rng, grants, pid, rid, tid};
use veza_sfu::engine::Payload;
use veza_sfu::engine::{
    AudioLevel, Config, Engine, EngineError, Output, RtpIn, Ssrc, SubscribeMode,
};

fn packet(seq: u16, ts: u32, len: usize) -> RtpIn {
    RtpIn {
        seq,
        timestamp: ts,
        marker: false,
        payload_type: 111,
        payload: Payload::from(vec![0x55; len]),
        audio_level: Some(AudioLevel::new(true, 40)),
    }
}

fn drain(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

fn forwards(e: &mut Engine) -> usize {
    drain(e)
        .iter()
        .filter(|o| matches!(o, Output::Forward { .. }))
        .count()
}

/// A publishes, B listens.
fn pair() -> (Engine, Instant) {
    let now = Instant::now();
    let mut e = Engine::new(Config::default());
    e.add_participant(now, rid(1), pid(1), grants(true, true))
        .expect("a");
    e.add_participant(now, rid(1), pid(2), grants(false, true))
        .expect("b");
    e.publish_track(now, pid(1), tid(1)).expect("publish");
    drain(&mut e);
    (e, now)
}

#[test]
fn unknown_senders_and_tracks_are_dropped_and_counted() {
    let (mut e, now) = pair();
    e.handle_rtp(now, pid(99), tid(1), packet(1, 0, 10)); // stranger on a real track
    e.handle_rtp(now, pid(99), tid(99), packet(1, 0, 10)); // stranger, no track
    e.handle_rtp(now, pid(2), tid(1), packet(1, 0, 10)); // member on someone else's track
    e.handle_rtp(now, pid(2), tid(99), packet(1, 0, 10)); // member, no track
    e.handle_rtp(now, pid(1), tid(1), packet(1, 0, 0)); // empty payload
    assert_eq!(forwards(&mut e), 0);
    let d = e.stats().dropped;
    assert_eq!(
        (d.unknown_participant, d.unknown_track, d.empty_payload),
        (2, 2, 1)
    );
    assert_eq!(e.stats().packets_in, 5);
    assert_eq!(e.stats().bytes_in, 40);
}

#[test]
fn duplicates_and_ancient_packets_are_dropped() {
    let (mut e, now) = pair();
    for s in 1000..1600u16 {
        e.handle_rtp(now, pid(1), tid(1), packet(s, u32::from(s) * 960, 20));
    }
    assert_eq!(forwards(&mut e), 600);
    e.handle_rtp(now, pid(1), tid(1), packet(1599, 0, 20)); // duplicate of the newest
    e.handle_rtp(now, pid(1), tid(1), packet(1200, 0, 20)); // duplicate, in the window
    e.handle_rtp(now, pid(1), tid(1), packet(1000, 0, 20)); // older than the window
    e.handle_rtp(
        now,
        pid(1),
        tid(1),
        packet(1599u16.wrapping_add(40_000), 0, 20),
    ); // half a cycle back
    assert_eq!(forwards(&mut e), 0);
    let d = e.stats().dropped;
    assert_eq!((d.duplicate, d.too_old), (2, 2));
}

#[test]
fn wild_sequence_jumps_are_dropped_until_a_restart_is_confirmed() {
    let (mut e, now) = pair();
    for s in 0..10u16 {
        e.handle_rtp(now, pid(1), tid(1), packet(s, u32::from(s) * 960, 20));
    }
    let before: Vec<u16> = drain(&mut e)
        .into_iter()
        .filter_map(|o| match o {
            Output::Forward { packet, .. } => Some(packet.seq),
            _ => None,
        })
        .collect();
    // One packet far ahead: dropped. Then the old stream goes on normally.
    e.handle_rtp(now, pid(1), tid(1), packet(20_000, 5, 20));
    e.handle_rtp(now, pid(1), tid(1), packet(10, 9600, 20));
    assert_eq!(forwards(&mut e), 1);
    // The publisher restarted: two consecutive packets of a new numbering. The first is
    // dropped, the second continues the subscriber's stream right after the last one.
    let later = now + Duration::from_millis(100);
    e.handle_rtp(later, pid(1), tid(1), packet(30_000, 77, 20));
    e.handle_rtp(later, pid(1), tid(1), packet(30_001, 1037, 20));
    e.handle_rtp(later, pid(1), tid(1), packet(30_002, 1997, 20));
    let after: Vec<(u16, u32)> = drain(&mut e)
        .into_iter()
        .filter_map(|o| match o {
            Output::Forward { packet, .. } => Some((packet.seq, packet.timestamp)),
            _ => None,
        })
        .collect();
    let last_before = before.last().copied().expect("forwarded") as u32 + 1;
    assert_eq!(after.len(), 2);
    assert_eq!(u32::from(after[0].0), (last_before + 1) & 0xFFFF);
    assert_eq!(after[1].0, after[0].0.wrapping_add(1));
    assert_eq!(after[1].1.wrapping_sub(after[0].1), 960);
    let s = e.stats();
    assert_eq!((s.dropped.seq_jump, s.restarts), (2, 1));
}

#[test]
fn nacks_for_unknown_foreign_or_unsent_packets_are_counted() {
    let (mut e, now) = pair();
    // A second listener, to own a foreign SSRC.
    e.add_participant(now, rid(1), pid(3), grants(false, true))
        .expect("c");
    drain(&mut e);
    for s in 0..50u16 {
        e.handle_rtp(now, pid(1), tid(1), packet(s, u32::from(s) * 960, 20));
    }
    drain(&mut e);
    let b_ssrc = e.slots_of(pid(2))[0].ssrc;
    let c_ssrc = e.slots_of(pid(3))[0].ssrc;
    e.handle_nack(now, pid(2), Ssrc(0), &[1, 2]); // no such SSRC
    e.handle_nack(now, pid(2), c_ssrc, &[1, 2]); // someone else's SSRC
    e.handle_nack(now, pid(99), b_ssrc, &[1]); // a stranger
    assert_eq!(forwards(&mut e), 0);
    assert_eq!(e.stats().nack_unknown_ssrc, 3);
    // Numbers never sent: ahead of the stream, or far behind it.
    let last = e.slots_of(pid(2))[0];
    let sent_seq = {
        e.handle_rtp(now, pid(1), tid(1), packet(50, 50 * 960, 20));
        let to_b = drain(&mut e).into_iter().find_map(|o| match o {
            Output::Forward { to, packet, .. } if to == pid(2) => Some(packet.seq),
            _ => None,
        });
        to_b.expect("forwarded to b")
    };
    e.handle_nack(
        now,
        pid(2),
        last.ssrc,
        &[sent_seq.wrapping_add(1), sent_seq.wrapping_sub(5_000)],
    );
    e.handle_nack(now, pid(2), last.ssrc, &[]);
    assert_eq!(forwards(&mut e), 0);
    assert_eq!(e.stats().nack_misses, 2);
    // A real one is answered.
    e.handle_nack(now, pid(2), last.ssrc, &[sent_seq]);
    assert_eq!(forwards(&mut e), 1);
    assert_eq!(e.stats().retransmissions, 1);
}

#[test]
fn a_nack_storm_cannot_amplify() {
    let (mut e, now) = pair();
    for s in 0..500u16 {
        e.handle_rtp(now, pid(1), tid(1), packet(s, u32::from(s) * 960, 20));
    }
    let first = match drain(&mut e).first() {
        Some(Output::Forward { packet, .. }) => packet.seq,
        other => panic!("expected a forward, got {other:?}"),
    };
    let ssrc = e.slots_of(pid(2))[0].ssrc;
    let everything: Vec<u16> = (0..500).map(|i| first.wrapping_add(i)).collect();
    let huge: Vec<u16> = (0..100_000u32).map(|i| i as u16).collect();
    let mut resent = 0;
    for round in 0..100u64 {
        let t = now + Duration::from_millis(round);
        e.handle_nack(t, pid(2), ssrc, &everything);
        e.handle_nack(t, pid(2), ssrc, &huge);
        resent += forwards(&mut e);
    }
    // 100 ms of storm: the burst (50) plus 100 ms of the 50/s rate, at most.
    assert!(resent <= 55, "{resent} resent");
    assert!(e.stats().nack_rate_limited > 100_000);
}

#[test]
fn control_calls_with_bad_arguments_return_errors() {
    let (mut e, now) = pair();
    let room = rid(1);
    assert_eq!(
        e.add_participant(now, room, pid(1), grants(true, true)),
        Err(EngineError::ParticipantExists(pid(1)))
    );
    assert_eq!(
        e.publish_track(now, pid(1), tid(5)),
        Err(EngineError::AlreadyPublishing {
            participant: pid(1),
            track: tid(1)
        })
    );
    e.add_participant(now, room, pid(5), grants(true, true))
        .expect("e");
    assert_eq!(
        e.publish_track(now, pid(5), tid(1)),
        Err(EngineError::TrackExists(tid(1)))
    );
    assert_eq!(
        e.unpublish_track(now, pid(5), tid(1)),
        Err(EngineError::UnknownTrack(tid(1)))
    );
    assert_eq!(
        e.publish_track(now, pid(77), tid(7)),
        Err(EngineError::UnknownParticipant(pid(77)))
    );
    for slots in [0, 17] {
        assert_eq!(
            e.add_participant_with(
                now,
                room,
                pid(6),
                grants(false, true),
                SubscribeMode::ActiveSpeakers { slots }
            ),
            Err(EngineError::InvalidSlotCount(slots))
        );
    }
    assert!(matches!(
        e.add_participant_with(
            now,
            room,
            pid(6),
            grants(false, false),
            SubscribeMode::ActiveSpeakers { slots: 2 }
        ),
        Err(EngineError::NotAllowed { .. })
    ));
    // Errors changed nothing.
    assert_eq!(e.stats().participants, 3);
    assert!(e.slot(veza_sfu::engine::SlotId(123_456)).is_none());
    assert!(e.slot_by_ssrc(Ssrc(0)).is_none());
    assert!(e.slots_of(pid(77)).is_empty());
    assert!(e.active_speakers(rid(77)).is_empty());
    // Time going backwards does not panic either.
    e.handle_timeout(now - Duration::from_secs(1));
    e.handle_rtp(
        now - Duration::from_secs(5),
        pid(1),
        tid(1),
        packet(1, 0, 5),
    );
}

/// Thousands of random operations over a small pool of ids, with random packets and clock
/// steps (sometimes backwards). Nothing may panic, and the books must balance.
#[test]
fn random_mix_never_panics() {
    let mut totals = (0, 0, 0, 0);
    for seed in 0..8 {
        let mut rng = Rng::new(seed);
        let start = Instant::now() + Duration::from_secs(3600);
        let mut now = start;
        let mut e = Engine::new(Config {
            seed,
            nack_cache_packets: 16 << (seed % 4),
            ..Config::default()
        });
        let mut handed = 0;
        let mut last_out: std::collections::HashMap<Ssrc, u16> = std::collections::HashMap::new();
        for _ in 0..20_000 {
            now = match rng.range(0, 20) {
                0 => now - Duration::from_millis(rng.range(0, 50)),
                n => now + Duration::from_millis(n * rng.range(0, 3)),
            };
            let p = pid(rng.range(0, 6) as u32);
            let t = tid(rng.range(0, 6) as u32);
            let room = rid(rng.range(0, 2) as u32);
            match rng.range(0, 100) {
                0..=2 => {
                    let g = grants(rng.chance(0.7), rng.chance(0.8));
                    let mode = if rng.chance(0.3) {
                        SubscribeMode::ActiveSpeakers {
                            slots: rng.range(0, 4) as u8,
                        }
                    } else {
                        SubscribeMode::AllTracks
                    };
                    let _ = e.add_participant_with(now, room, p, g, mode);
                }
                3 => {
                    let _ = e.remove_participant(now, p);
                }
                4..=5 => {
                    let _ = e.publish_track(now, p, t);
                }
                6 => {
                    let _ = e.unpublish_track(now, p, t);
                }
                7 => {
                    let _ = e.set_muted(now, p, rng.chance(0.5));
                }
                8..=14 => {
                    let ssrc = match rng.range(0, 3) {
                        0 => Ssrc(rng.next_u64() as u32),
                        _ => e.slots_of(p).first().map_or(Ssrc(0), |s| s.ssrc),
                    };
                    let n = rng.range(0, 40) as usize;
                    let recent = last_out.get(&ssrc).copied();
                    let seqs: Vec<u16> = (0..n)
                        .map(|_| match recent {
                            Some(last) if rng.chance(0.7) => {
                                last.wrapping_sub(rng.range(0, 30) as u16)
                            }
                            _ => rng.next_u64() as u16,
                        })
                        .collect();
                    e.handle_nack(now, p, ssrc, &seqs);
                }
                15..=17 => e.handle_timeout(now),
                _ => {
                    let seq = match rng.range(0, 4) {
                        0 => rng.next_u64() as u16,
                        _ => (handed as u16).wrapping_add(rng.range(0, 5) as u16),
                    };
                    let level = rng
                        .chance(0.8)
                        .then(|| AudioLevel::new(rng.chance(0.5), rng.next_u64() as u8));
                    let mut pk = packet(seq, rng.next_u64() as u32, rng.range(0, 4) as usize);
                    pk.audio_level = level;
                    pk.marker = rng.chance(0.1);
                    e.handle_rtp(now, p, t, pk);
                    handed += 1;
                }
            }
            // Drain sometimes, so queued outputs meet control calls too.
            if rng.chance(0.5) {
                for o in drain(&mut e) {
                    if let Output::Forward { slot, packet, .. } = o
                        && let Some(info) = e.slot(slot)
                    {
                        assert_eq!(info.ssrc, packet.ssrc);
                        last_out.insert(packet.ssrc, packet.seq);
                    }
                }
            }
        }
        let s = e.stats();
        assert_eq!(s.packets_in, handed);
        assert!(s.dropped.total() <= s.packets_in);
        // SSRCs are unique and never 0.
        let mut ssrcs: Vec<u32> = (0..6)
            .flat_map(|n| e.slots_of(pid(n)))
            .map(|s| s.ssrc.0)
            .collect();
        assert!(ssrcs.iter().all(|s| *s != 0));
        let n = ssrcs.len();
        ssrcs.sort_unstable();
        ssrcs.dedup();
        assert_eq!(ssrcs.len(), n);
        assert_eq!(s.slots as usize, n);
        totals.0 += s.packets_out;
        totals.1 += s.retransmissions;
        totals.2 += s.slot_switches;
        totals.3 += s.restarts;
    }
    eprintln!("forwarded, resent, switches, restarts: {totals:?}");
    assert!(
        totals.0 > 1000 && totals.1 > 0 && totals.2 > 0,
        "the mix reached the media paths"
    );
}
