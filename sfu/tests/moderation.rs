//! Moderation: a server-side mute stops a participant's audio at its next packet and takes it
//! out of the active speakers; a kick stops everything to and from it at once; a listener
//! without `can_publish` cannot publish.

mod sim;

use std::time::{Duration, Instant};

use sim::{Sent, Tag, Talker, World, grants, pid, rid, tid};
use veza_sfu::engine::{Config, EngineError, Event, Permission, SubscribeMode};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A and B talk all the time; L listens; W has one active-speaker slot.
fn world() -> World {
    let mut w = World::new(Config::default(), 9);
    let room = rid(1);
    w.join(room, pid(1), grants(true, true)).expect("join a");
    w.join(room, pid(2), grants(true, true)).expect("join b");
    w.join(room, pid(3), grants(false, true)).expect("join l");
    w.join_with(
        room,
        pid(4),
        grants(false, true),
        SubscribeMode::ActiveSpeakers { slots: 1 },
    )
    .expect("join w");
    let mut a = Talker::continuous(1, w.now, ms(20_000));
    a.level = 20; // A is louder than B
    let b = Talker::continuous(2, w.now, ms(20_000));
    w.publish(pid(1), tid(1), a).expect("publish a");
    w.publish(pid(2), tid(2), b).expect("publish b");
    w
}

fn from(s: &Sent) -> u32 {
    Tag::decode(&s.packet.payload).talker
}

/// The first time at or after `t` that `talker`'s packet reaches the engine (20 ms frames
/// from t = 0 plus 10 ms uplink).
fn next_packet_after(w: &World, t: Instant) -> Instant {
    let mut at = w.start + ms(10);
    while at <= t {
        at += ms(20);
    }
    at
}

#[test]
fn listener_cannot_publish() {
    let mut w = world();
    let err = w.engine.publish_track(w.now, pid(3), tid(3));
    assert_eq!(
        err,
        Err(EngineError::NotAllowed {
            participant: pid(3),
            needs: Permission::Publish
        })
    );
    assert!(
        err.expect_err("refused")
            .to_string()
            .contains("may not publish")
    );
    // A packet on a track it could not publish is dropped and counted.
    let before = w.engine.stats().dropped.unknown_track;
    let packet = Talker::continuous(3, w.now, ms(100))
        .poll(w.now)
        .expect("a frame");
    w.engine.handle_rtp(w.now, pid(3), tid(3), packet);
    assert_eq!(w.engine.stats().dropped.unknown_track, before + 1);
    assert_eq!(w.engine.poll_output(), None);
}

#[test]
fn mute_stops_audio_at_the_next_packet_and_unmute_restores_it() {
    let mut w = world();
    w.run_for(ms(2_005));
    assert_eq!(w.engine.active_speakers(rid(1)).first(), Some(&pid(1)));
    assert!(
        w.sent.iter().any(|s| s.to == pid(4) && from(s) == 1),
        "W hears A"
    );
    let muted_at = w.now;
    w.engine.set_muted(w.now, pid(1), true).expect("mute");
    w.pump();
    w.run_for(ms(2_000));
    let unmuted_at = w.now;
    w.engine.set_muted(w.now, pid(1), false).expect("unmute");
    w.pump();
    w.run_for(ms(1_000));

    // Nothing of A is forwarded between mute and unmute; B flows throughout.
    let a_during = w
        .sent
        .iter()
        .filter(|s| from(s) == 1 && s.at > muted_at && s.at < unmuted_at);
    assert_eq!(a_during.count(), 0);
    let b_during = w
        .sent
        .iter()
        .filter(|s| from(s) == 2 && s.at > muted_at && s.at < unmuted_at);
    assert!(b_during.count() > 150);
    // ... and A's very next packet after the unmute is forwarded to the in-room listener.
    let next = next_packet_after(&w, unmuted_at);
    assert!(
        w.sent
            .iter()
            .any(|s| s.to == pid(3) && from(s) == 1 && s.at == next)
    );
    // The muted packets were counted, one per frame.
    assert_eq!(w.engine.stats().dropped.muted, 100);
    // Events: Muted true, then false.
    let muted: Vec<bool> = w
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Muted {
                participant, muted, ..
            } if *participant == pid(1) => Some(*muted),
            _ => None,
        })
        .collect();
    assert_eq!(muted, vec![true, false]);
    // Muting twice changes nothing and says nothing.
    w.engine.set_muted(w.now, pid(2), false).expect("no-op");
    assert_eq!(w.engine.poll_output(), None);
}

#[test]
fn mute_removes_from_active_speakers_and_hands_over_the_slot() {
    let mut w = world();
    w.run_for(ms(2_005));
    let muted_at = w.now;
    w.engine.set_muted(w.now, pid(1), true).expect("mute");
    w.pump();
    w.run_for(ms(1_000));
    // Within one evaluation interval A is gone from the reported speakers.
    let after: Vec<_> = w
        .speaker_events()
        .into_iter()
        .filter(|(t, _)| *t > muted_at)
        .collect();
    let (at, list) = after.first().expect("a speaker event after the mute");
    assert!(*at - muted_at <= ms(500));
    assert_eq!(list, &vec![pid(2)]);
    // W's slot is handed to B at once (it was emptied by the mute and refilled).
    let w_after: Vec<&Sent> = w
        .sent
        .iter()
        .filter(|s| s.to == pid(4) && s.at > muted_at)
        .collect();
    assert!(!w_after.is_empty());
    assert!(w_after.iter().all(|s| from(s) == 2));
    assert!(w_after[0].at - muted_at <= ms(20));
}

#[test]
fn kick_stops_everything_to_and_from_at_once() {
    let mut w = world();
    w.run_for(ms(1_005));
    let kicked_at = w.now;
    let b_slots = w.engine.slots_of(pid(2));
    assert_eq!(b_slots.len(), 1);
    w.engine.remove_participant(w.now, pid(2)).expect("kick");
    w.pump();
    // B's own slot and the slots carrying B (A's and L's) are closed; W's slot empties.
    let closed: Vec<_> = w
        .events
        .iter()
        .filter(|(t, _)| *t == kicked_at)
        .filter_map(|(_, e)| match e {
            Event::SlotClosed { subscriber, .. } => Some(*subscriber),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 3, "{closed:?}");
    assert!(closed.contains(&pid(2)) && closed.contains(&pid(1)) && closed.contains(&pid(3)));
    assert!(w.events.iter().any(|(_, e)| matches!(e,
        Event::ParticipantLeft { participant, .. } if *participant == pid(2))));
    assert!(w.events.iter().any(|(_, e)| matches!(e,
        Event::TrackUnpublished { track, .. } if *track == tid(2))));
    // B's client keeps sending for a while: all of it is dropped as from a stranger.
    w.run_for(ms(1_000));
    assert!(
        w.sent
            .iter()
            .filter(|s| s.at > kicked_at)
            .all(|s| s.to != pid(2) && from(s) != 2)
    );
    let handed_after = 50; // one second of 20 ms frames
    assert_eq!(w.engine.stats().dropped.unknown_participant, handed_after);
    // A still reaches L.
    assert!(
        w.sent
            .iter()
            .any(|s| s.at > kicked_at && s.to == pid(3) && from(s) == 1)
    );
    // Kicking again, or muting the kicked, is an error, not a panic.
    assert_eq!(
        w.engine.remove_participant(w.now, pid(2)),
        Err(EngineError::UnknownParticipant(pid(2)))
    );
    assert!(w.engine.set_muted(w.now, pid(2), true).is_err());
    let stats = w.engine.stats();
    assert_eq!((stats.participants, stats.tracks), (3, 1));
}
