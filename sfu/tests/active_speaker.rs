//! Three publishers take turns. Speaker changes are reported within about a second, never
//! more often than every 500 ms; active-speaker slots follow the speaker and switch publishers
//! with continuous sequence numbers and timestamps, exactly by the documented rule.

mod sim;

use std::time::{Duration, Instant};

use sim::{Sent, Tag, Talker, World, grants, pid, rid, tid};
use veza_proto::ParticipantId;
use veza_sfu::engine::{Config, Event, SlotKind, SubscribeMode};

const S: fn(u64) -> Duration = Duration::from_secs;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A talks 0.5–4 s, B 4–8 s, C 8–12 s; W has one active-speaker slot, V has two, L is an
/// ordinary listener.
fn run() -> World {
    let mut w = World::new(Config::default(), 3);
    let room = rid(1);
    let (a, b, c) = (pid(1), pid(2), pid(3));
    for p in [a, b, c] {
        w.join(room, p, grants(true, true)).expect("join");
    }
    w.join_with(
        room,
        pid(9),
        grants(false, true),
        SubscribeMode::ActiveSpeakers { slots: 1 },
    )
    .expect("join w");
    w.join_with(
        room,
        pid(10),
        grants(false, true),
        SubscribeMode::ActiveSpeakers { slots: 2 },
    )
    .expect("join v");
    w.join(room, pid(11), grants(false, true)).expect("join l");
    let spurts = [(ms(500), S(4)), (S(4), S(8)), (S(8), S(12))];
    for (i, (p, spurt)) in [a, b, c].into_iter().zip(spurts).enumerate() {
        let n = i as u32 + 1;
        let talker = Talker::new(
            n,
            w.now,
            (n * 20_000) as u16,
            n * 1_000_000_000,
            vec![spurt],
        );
        w.publish(p, tid(n), talker).expect("publish");
    }
    w.run_for(S(13));
    w
}

fn since_start(w: &World, t: Instant) -> Duration {
    t - w.start
}

#[test]
fn speaker_changes_are_reported_within_a_second() {
    let w = run();
    let events = w.speaker_events();
    assert!(!events.is_empty());
    for pair in events.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= ms(500), "events {gap:?} apart");
    }
    for (who, starts) in [(pid(1), ms(500)), (pid(2), S(4)), (pid(3), S(8))] {
        let first_top = events
            .iter()
            .find(|(at, list)| since_start(&w, *at) >= starts && list.first() == Some(&who))
            .map(|(at, _)| since_start(&w, *at))
            .unwrap_or_else(|| panic!("{who} never reported: {events:?}"));
        assert!(
            first_top <= starts + S(1),
            "{who} reported at {first_top:?}"
        );
    }
    // After the last spurt, the room goes quiet within a second and stays so.
    let (last_at, last) = events.last().expect("events");
    assert!(last.is_empty());
    assert!(since_start(&w, *last_at) <= S(13));
    // Consecutive events always differ (only changes are reported).
    assert!(events.windows(2).all(|p| p[0].1 != p[1].1));
    assert_eq!(w.engine.stats().speaker_events, events.len() as u64);
}

fn talker_of(s: &Sent) -> u32 {
    Tag::decode(&s.packet.payload).talker
}

/// The rule: next seq = last + 1; timestamp += max(960, elapsed wall time × 48 kHz).
fn assert_exact_switches(sent: &[&Sent]) -> usize {
    let mut switches = 0;
    for pair in sent.windows(2) {
        let (x, y) = (pair[0], pair[1]);
        assert_eq!(y.packet.seq, x.packet.seq.wrapping_add(1));
        assert_eq!(y.packet.ext_seq, x.packet.ext_seq + 1);
        let step = y.packet.timestamp.wrapping_sub(x.packet.timestamp);
        if talker_of(x) == talker_of(y) {
            let (tx, ty) = (
                Tag::decode(&x.packet.payload),
                Tag::decode(&y.packet.payload),
            );
            assert_eq!(
                step,
                ty.ts.wrapping_sub(tx.ts),
                "same source: publisher spacing"
            );
        } else {
            switches += 1;
            let elapsed = (y.at - x.at).as_nanos() * 48_000 / 1_000_000_000;
            let expected = (elapsed as u32).max(960);
            assert_eq!(step, expected, "switch after {:?}", y.at - x.at);
            assert!(y.packet.marker, "first packet after a switch is marked");
        }
    }
    switches
}

#[test]
fn single_slot_follows_the_speaker_with_continuous_numbering() {
    let w = run();
    let sent: Vec<&Sent> = w.originals_to(pid(9)).collect();
    let order: Vec<u32> = sent
        .iter()
        .map(|s| talker_of(s))
        .fold(Vec::new(), |mut v, t| {
            if v.last() != Some(&t) {
                v.push(t);
            }
            v
        });
    assert_eq!(order, vec![1, 2, 3], "A, then B, then C");
    assert_eq!(assert_exact_switches(&sent), 2);
    // W hears each new speaker within a second of them starting.
    for (talker, starts) in [(2, S(4)), (3, S(8))] {
        let first = sent.iter().find(|s| talker_of(s) == talker).expect("heard");
        assert!(
            since_start(&w, first.at) <= starts + S(1),
            "{talker} at {:?}",
            first.at - w.start
        );
    }
    // One SSRC throughout, and the slot is an active-speaker slot.
    let slots = w.engine.slots_of(pid(9));
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].kind, SlotKind::ActiveSpeaker { index: 0 });
    assert!(sent.iter().all(|s| s.packet.ssrc == slots[0].ssrc));
}

#[test]
fn slot_switches_are_at_least_500_ms_apart() {
    let w = run();
    let switches: Vec<(Instant, ParticipantId)> = w
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::SlotSourceChanged { subscriber, .. } => Some((*at, *subscriber)),
            _ => None,
        })
        .collect();
    for sub in [pid(9), pid(10)] {
        let times: Vec<Instant> = switches
            .iter()
            .filter(|s| s.1 == sub)
            .map(|s| s.0)
            .collect();
        // The initial fills happen at publish time (t = 0); later switches are tick-paced.
        let later: Vec<&Instant> = times.iter().filter(|t| **t > w.start).collect();
        assert!(!later.is_empty());
        for pair in later.windows(2) {
            assert!(*pair[1] - *pair[0] >= ms(500));
        }
    }
}

#[test]
fn two_slots_keep_the_previous_speaker_and_replace_the_quietest() {
    let w = run();
    let slots = w.engine.slots_of(pid(10));
    assert_eq!(slots.len(), 2);
    // Filled at publish time with A and B; C replaced A (silent since 4 s), B kept its slot.
    let per_slot = |i: usize| -> Vec<u32> {
        let mut v: Vec<u32> = Vec::new();
        for s in w.originals_to(pid(10)).filter(|s| s.slot == slots[i].id) {
            if v.last() != Some(&talker_of(s)) {
                v.push(talker_of(s));
            }
        }
        v
    };
    assert_eq!(per_slot(0), vec![1, 3]);
    assert_eq!(per_slot(1), vec![2]);
    for slot in &slots {
        let sent: Vec<&Sent> = w
            .originals_to(pid(10))
            .filter(|s| s.slot == slot.id)
            .collect();
        assert_exact_switches(&sent);
    }
    // The in-room listener hears all three on their own track slots, never switched.
    let l = w.engine.slots_of(pid(11));
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|s| s.kind == SlotKind::Track));
}

#[test]
fn a_publisher_without_audio_levels_still_fills_an_empty_slot() {
    let mut w = World::new(Config::default(), 5);
    let room = rid(2);
    w.join(room, pid(1), grants(true, false)).expect("join");
    w.join_with(
        room,
        pid(2),
        grants(false, true),
        SubscribeMode::ActiveSpeakers { slots: 1 },
    )
    .expect("join");
    let mut obs = Talker::continuous(1, w.now, S(3));
    obs.with_levels = false;
    w.publish(pid(1), tid(1), obs).expect("publish");
    w.run_for(S(3));
    assert_eq!(w.originals_to(pid(2)).count(), w.talker(pid(1)).sent.len());
    assert!(w.speaker_events().is_empty(), "no levels, never a speaker");
}
