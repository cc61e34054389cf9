//! Two participants talk: A hears B, B hears A, nobody hears themselves; each slot has its
//! own SSRC and a continuous, monotonic sequence and timestamp. The same inputs give the same
//! outputs.

mod sim;

use std::collections::BTreeSet;
use std::time::Duration;

use sim::{FRAME, Sent, Talker, World, grants, pid, rid, tid};
use veza_sfu::engine::{Config, Event, SlotKind};

/// A and B alternate talk spurts with DTX silences for 10 s over perfect links.
fn run() -> World {
    let mut w = World::new(Config::default(), 1);
    let (room, a, b) = (rid(1), pid(1), pid(2));
    w.join(room, a, grants(true, true)).expect("join a");
    w.join(room, b, grants(true, true)).expect("join b");
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let talk_a = Talker::new(
        1,
        w.now,
        100,
        1_000,
        vec![(s(0), s(3)), (s(5), s(7)), (ms(9_000), s(10))],
    );
    let talk_b = Talker::new(
        2,
        w.now,
        60_000,
        4_000_000_000,
        vec![(ms(2_500), ms(5_200)), (s(7), s(9))],
    );
    w.publish(a, tid(1), talk_a).expect("publish a");
    w.publish(b, tid(2), talk_b).expect("publish b");
    w.run_for(s(11));
    w
}

#[test]
fn each_hears_the_other_and_not_itself() {
    let w = run();
    let (a, b) = (pid(1), pid(2));
    for (listener, talker) in [(a, b), (b, a)] {
        let got: Vec<_> = w
            .receiver(listener)
            .streams
            .values()
            .flat_map(|s| &s.packets)
            .collect();
        assert!(!got.is_empty());
        let talker_id = if talker == a { 1 } else { 2 };
        assert!(
            got.iter().all(|g| g.tag.talker == talker_id),
            "{listener} heard only {talker}"
        );
        // Everything the talker said arrived, once.
        let frames: BTreeSet<u32> = got.iter().map(|g| g.tag.frame).collect();
        assert_eq!(frames.len(), w.talker(talker).sent.len());
        assert_eq!(got.len(), frames.len());
    }
    let stats = w.engine.stats();
    assert_eq!(stats.dropped.total(), 0);
    assert_eq!(stats.packets_out, stats.packets_in);
    assert_eq!(
        (stats.rooms, stats.participants, stats.tracks, stats.slots),
        (1, 2, 2, 2)
    );
}

#[test]
fn slots_have_distinct_ssrcs_and_signaling_events() {
    let w = run();
    let (a, b) = (pid(1), pid(2));
    let slots_a = w.engine.slots_of(a);
    let slots_b = w.engine.slots_of(b);
    assert_eq!((slots_a.len(), slots_b.len()), (1, 1));
    assert_ne!(slots_a[0].ssrc, slots_b[0].ssrc);
    assert!(slots_a[0].ssrc.0 != 0 && slots_b[0].ssrc.0 != 0);
    assert_eq!(slots_a[0].kind, SlotKind::Track);
    assert_eq!(slots_a[0].source.map(|s| s.participant), Some(b));
    assert_eq!(slots_b[0].source.map(|s| s.track), Some(tid(1)));
    assert_eq!(w.engine.slot_by_ssrc(slots_a[0].ssrc), Some(slots_a[0]));
    // Signaling saw: two joins, two publishes, one slot for each subscriber.
    let count = |f: &dyn Fn(&Event) -> bool| w.events.iter().filter(|(_, e)| f(e)).count();
    assert_eq!(count(&|e| matches!(e, Event::ParticipantJoined { .. })), 2);
    assert_eq!(count(&|e| matches!(e, Event::TrackPublished { .. })), 2);
    assert_eq!(count(&|e| matches!(e, Event::SlotOpened(_))), 2);
    // Every forward went out on the SSRC of its slot.
    for s in &w.sent {
        assert_eq!(Some(s.packet.ssrc), w.engine.slot(s.slot).map(|i| i.ssrc));
        assert_ne!(
            Some(s.to),
            w.engine
                .slot(s.slot)
                .and_then(|i| i.source)
                .map(|x| x.participant)
        );
    }
}

#[test]
fn sequence_and_timestamp_are_continuous_and_monotonic_per_slot() {
    let w = run();
    for p in [pid(1), pid(2)] {
        let sent: Vec<&Sent> = w.originals_to(p).collect();
        for pair in sent.windows(2) {
            let (x, y) = (&pair[0].packet, &pair[1].packet);
            assert_eq!(y.seq, x.seq.wrapping_add(1), "seq continuous");
            assert_eq!(y.ext_seq, x.ext_seq + 1);
            // Timestamps move exactly as the publisher's did (DTX gaps included).
            let tx = sim::Tag::decode(&x.payload);
            let ty = sim::Tag::decode(&y.payload);
            let step = y.timestamp.wrapping_sub(x.timestamp);
            assert_eq!(step, ty.ts.wrapping_sub(tx.ts));
            assert!((960..1 << 31).contains(&step), "monotonic");
        }
        // Talk spurt starts keep their marker bit; nothing else has one except the first.
        let marked = sent.iter().filter(|s| s.packet.marker).count();
        assert!((2..=4).contains(&marked), "{marked} markers");
        // The receiver saw the same thing in order (perfect link).
        let rx = &w.receiver(p).streams;
        assert_eq!(rx.len(), 1);
        let stream = rx.values().next().expect("one stream");
        assert_eq!(stream.lost(), 0);
        assert!(stream.packets.windows(2).all(|g| g[1].ext == g[0].ext + 1));
    }
    let _ = FRAME;
}

#[test]
fn same_inputs_same_outputs() {
    let (x, y) = (run(), run());
    let strip = |w: &World| -> Vec<_> {
        w.sent
            .iter()
            .map(|s| {
                (
                    s.at - w.start,
                    s.to,
                    s.slot,
                    s.packet.clone(),
                    s.retransmission,
                )
            })
            .collect()
    };
    assert_eq!(strip(&x), strip(&y));
    let events = |w: &World| -> Vec<_> {
        w.events
            .iter()
            .map(|(t, e)| (*t - w.start, e.clone()))
            .collect()
    };
    assert_eq!(events(&x), events(&y));
}
