//! 5 % loss (plus jitter, reordering and duplicates) on the downlinks: NACKs to the engine's
//! packet cache recover at least 99 % of the packets, and retransmissions stay bounded.

mod sim;

use std::collections::HashMap;
use std::time::Duration;

use sim::{LinkConfig, NackPolicy, Talker, World, grants, pid, rid, tid};
use veza_sfu::engine::Config;

const LISTENERS: u32 = 4;

fn lossy_world(seed: u64, nack: bool) -> World {
    let mut w = World::new(Config::default(), seed);
    w.downlink = LinkConfig::lossy(0.05);
    w.nack_uplink = LinkConfig {
        loss: 0.05,
        ..LinkConfig::lossy(0.0)
    };
    let room = rid(1);
    let speaker = pid(1);
    w.join(room, speaker, grants(true, true)).expect("join");
    for n in 0..LISTENERS {
        w.join(room, pid(10 + n), grants(false, true))
            .expect("join");
        w.receiver_mut(pid(10 + n)).policy = NackPolicy {
            enabled: nack,
            ..NackPolicy::default()
        };
    }
    let s = Duration::from_secs;
    // 30 s of speech in spurts with DTX silences.
    let spurts = (0..10)
        .map(|i| (s(3 * i), s(3 * i) + Duration::from_millis(2_400)))
        .collect();
    w.publish(speaker, tid(1), Talker::new(1, w.now, 1, 1, spurts))
        .expect("publish");
    w.run_for(s(31));
    w
}

#[test]
fn nacks_recover_at_least_99_percent() {
    let w = lossy_world(7, true);
    let sent_by_talker = w.talker(pid(1)).sent.len() as u64;
    assert!(sent_by_talker > 1000);
    let mut lost_on_link = 0;
    for n in 0..LISTENERS {
        let r = w.receiver(pid(10 + n));
        assert_eq!(r.streams.len(), 1);
        let s = r.streams.values().next().expect("a stream");
        assert_eq!(s.span(), sent_by_talker, "listener {n} saw the whole span");
        let recovered = s.distinct.len() as f64 / sent_by_talker as f64;
        assert!(recovered >= 0.99, "listener {n} recovered {recovered:.4}");
        eprintln!(
            "listener {n}: {} of {sent_by_talker} ({:.2} %)",
            s.distinct.len(),
            recovered * 100.0
        );
        lost_on_link += s.packets.iter().filter(|g| g.retransmission).count();
    }
    let stats = w.engine.stats();
    assert!(stats.retransmissions > 0 && lost_on_link > 0);
    assert!(stats.nacks_received > 0);
    eprintln!(
        "resent {} for {} NACKs naming {} packets; {} limited, {} misses",
        stats.retransmissions,
        stats.nacks_received,
        stats.nack_seqs,
        stats.nack_rate_limited,
        stats.nack_misses
    );
}

#[test]
fn retransmissions_are_bounded() {
    let w = lossy_world(11, true);
    let stats = w.engine.stats();
    let originals = w.sent.iter().filter(|s| !s.retransmission).count() as u64;
    // 5 % loss: about 5 % resent, a little more for lost resends; never more than 15 %.
    assert!(
        stats.retransmissions * 100 <= originals * 15,
        "{} of {originals}",
        stats.retransmissions
    );
    // No packet is resent to one slot more than max_resends times, nor twice within 20 ms.
    let mut per_packet: HashMap<(u32, u64), Vec<std::time::Instant>> = HashMap::new();
    for s in w.sent.iter().filter(|s| s.retransmission) {
        per_packet
            .entry((s.packet.ssrc.0, s.packet.ext_seq))
            .or_default()
            .push(s.at);
    }
    for times in per_packet.values() {
        assert!(times.len() <= 2);
        if let [a, b] = times[..] {
            assert!(b - a >= Duration::from_millis(20));
        }
    }
    // Retransmissions are exact copies of the originals.
    let originals_by_key: HashMap<(u32, u64), _> = w
        .sent
        .iter()
        .filter(|s| !s.retransmission)
        .map(|s| ((s.packet.ssrc.0, s.packet.ext_seq), &s.packet))
        .collect();
    for s in w.sent.iter().filter(|s| s.retransmission) {
        let orig = originals_by_key[&(s.packet.ssrc.0, s.packet.ext_seq)];
        assert_eq!(&s.packet, orig);
    }
    assert_eq!(stats.nack_misses, 0, "everything NACKed was cached");
}

#[test]
fn without_nack_the_loss_shows() {
    let w = lossy_world(7, false);
    let sent_by_talker = w.talker(pid(1)).sent.len() as f64;
    let r = w.receiver(pid(10));
    let s = r.streams.values().next().expect("a stream");
    let received = s.distinct.len() as f64 / sent_by_talker;
    assert!(received < 0.97, "{received}");
    assert_eq!(w.engine.stats().retransmissions, 0);
}
