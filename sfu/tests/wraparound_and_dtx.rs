//! Sequence numbers wrap at 65535 and timestamps at 2^32, on the way in and on the way out;
//! DTX silences (no packets, timestamp jumps) pass through with their spacing unchanged.

mod sim;

use std::time::Duration;

use sim::{Sent, Tag, Talker, World, grants, pid, rid, tid};
use veza_sfu::engine::Payload;
use veza_sfu::engine::{Config, Engine, Output, RtpIn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn long_stream_wraps_everything_and_keeps_dtx_gaps() {
    let mut w = World::new(Config::default(), 21);
    let room = rid(1);
    w.join(room, pid(1), grants(true, false)).expect("join");
    w.join(room, pid(2), grants(false, true)).expect("join");
    // 2 s spurts (100 frames) separated by silences of 60 ms .. 7 s; 71 000 frames in all, so
    // the output sequence wraps at least once whatever its random start.
    let gaps = [60, 400, 1_300, 7_000, 140];
    let mut spurts = Vec::new();
    let mut t = ms(0);
    for i in 0..710 {
        spurts.push((t, t + ms(2_000)));
        t += ms(2_000 + gaps[i % gaps.len()]);
    }
    let end = t;
    let talker = Talker::new(1, w.now, 65_000, u32::MAX - 200_000, spurts);
    w.publish(pid(1), tid(1), talker).expect("publish");
    w.run_for(end + ms(100));

    let sent: Vec<&Sent> = w.originals_to(pid(2)).collect();
    assert_eq!(sent.len(), 71_000);
    assert_eq!(sent.len(), w.talker(pid(1)).sent.len());
    let (mut seq_wraps, mut ts_wraps_in, mut dtx_gaps) = (0, 0, 0);
    for pair in sent.windows(2) {
        let (x, y) = (&pair[0].packet, &pair[1].packet);
        let (tx, ty) = (Tag::decode(&x.payload), Tag::decode(&y.payload));
        assert_eq!(ty.seq, tx.seq.wrapping_add(1), "publisher has no gaps");
        assert_eq!(y.seq, x.seq.wrapping_add(1), "continuous across wraps");
        let in_step = ty.ts.wrapping_sub(tx.ts);
        assert_eq!(
            y.timestamp.wrapping_sub(x.timestamp),
            in_step,
            "same spacing"
        );
        seq_wraps += usize::from(y.seq < x.seq);
        ts_wraps_in += usize::from(ty.ts < tx.ts);
        dtx_gaps += usize::from(in_step > 960);
    }
    assert!(seq_wraps >= 1, "output seq wrapped");
    assert!(ts_wraps_in >= 1, "input timestamp wrapped");
    assert_eq!(dtx_gaps, 709);
    // (The output timestamp wraps wherever its random start puts it; the unit tests of
    // `engine::slot` pin that boundary exactly.)
    // The receiver extended every wrap itself and saw no loss.
    let stream = w
        .receiver(pid(2))
        .streams
        .values()
        .next()
        .expect("a stream");
    assert_eq!(stream.lost(), 0);
    assert_eq!(stream.span(), 71_000);
    // The DTX silences kept their length: e.g. a 7 s gap is 7 s + one frame of timestamp.
    let gap_7s = 48 * 7_000 + 960;
    assert!(
        sent.windows(2)
            .any(|p| p[1].packet.timestamp.wrapping_sub(p[0].packet.timestamp) == gap_7s)
    );
}

fn packet(seq: u16, ts: u32) -> RtpIn {
    RtpIn {
        seq,
        timestamp: ts,
        marker: false,
        payload_type: 111,
        payload: Payload::from(vec![1, 2, 3, seq as u8]),
        audio_level: None,
    }
}

fn forwards(engine: &mut Engine) -> Vec<(u16, u32, Payload)> {
    let mut v = Vec::new();
    while let Some(o) = engine.poll_output() {
        if let Output::Forward { packet, .. } = o {
            v.push((packet.seq, packet.timestamp, packet.payload));
        }
    }
    v
}

#[test]
fn reordering_across_the_wrap_keeps_one_mapping() {
    let now = std::time::Instant::now();
    let mut e = Engine::new(Config::default());
    let (room, a, b) = (rid(1), pid(1), pid(2));
    e.add_participant(now, room, a, grants(true, true))
        .expect("a");
    e.add_participant(now, room, b, grants(true, true))
        .expect("b");
    e.publish_track(now, a, tid(1)).expect("publish");
    forwards(&mut e);
    // In order: 65533, 65534; then 0 before 65535; then 1.
    let base = u32::MAX - 1_000;
    let order = [(65533u16, 0u32), (65534, 1), (0, 3), (65535, 2), (1, 4)];
    for (seq, k) in order {
        e.handle_rtp(now, a, tid(1), packet(seq, base.wrapping_add(960 * k)));
    }
    let out = forwards(&mut e);
    assert_eq!(out.len(), 5);
    let first = out[0].0;
    let first_ts = out[0].1;
    for ((seq, ts, _), (_, k)) in out.iter().zip(order) {
        assert_eq!(*seq, first.wrapping_add(k as u16), "out = in + offset");
        assert_eq!(*ts, first_ts.wrapping_add(960 * k), "ts = in + offset");
    }
    // The payload is the very same buffer, not a copy.
    e.handle_rtp(now, a, tid(1), packet(2, base.wrapping_add(960 * 5)));
    let input = packet(3, base.wrapping_add(960 * 6));
    let ptr = input.payload.as_ptr();
    e.handle_rtp(now, a, tid(1), input);
    let out = forwards(&mut e);
    assert_eq!(out.last().map(|o| o.2.as_ptr()), Some(ptr));
}

#[test]
fn late_joiner_starts_its_own_continuous_numbering_after_a_wrap() {
    let mut w = World::new(Config::default(), 22);
    let room = rid(1);
    w.join(room, pid(1), grants(true, false)).expect("join");
    w.join(room, pid(2), grants(false, true)).expect("join");
    let talker = Talker::new(
        1,
        w.now,
        65_500,
        u32::MAX - 10_000,
        vec![(ms(0), ms(4_000))],
    );
    w.publish(pid(1), tid(1), talker).expect("publish");
    w.run_for(ms(2_000)); // the input sequence wrapped at frame 36
    w.join(room, pid(3), grants(false, true))
        .expect("late join");
    w.run_for(ms(2_500));
    let late: Vec<&Sent> = w.originals_to(pid(3)).collect();
    assert_eq!(late.len(), 100);
    assert!(late[0].packet.marker, "a slot's first packet is marked");
    for p in late.windows(2) {
        assert_eq!(p[1].packet.seq, p[0].packet.seq.wrapping_add(1));
        assert_eq!(
            p[1].packet.timestamp.wrapping_sub(p[0].packet.timestamp),
            960
        );
    }
    let ssrc2 = w.engine.slots_of(pid(2))[0].ssrc;
    let ssrc3 = w.engine.slots_of(pid(3))[0].ssrc;
    assert_ne!(ssrc2, ssrc3);
}
