//! Property checks shared by the deterministic fuzz test and the cargo-fuzz target.
//! Not part of the supported API.

use std::fmt::Debug;

use crate::catalog::{Catalog, split_legacy_payload};
use crate::message::*;
use crate::{Decode, DecodeError, Encode};

/// Feed `data` to every decoder and panic if a property breaks:
///
/// - no decoder panics;
/// - a failed decode leaves its input untouched;
/// - a successful decode re-encodes to exactly the bytes it consumed, or, when the input used
///   non-minimal varints, to a strictly shorter encoding that decodes to the same value;
/// - every strict prefix of a successfully decoded message is `Short`.
///
/// Returns how many decoders accepted the input.
pub fn check(data: &[u8]) -> usize {
    let mut ok = 0;
    ok += message::<StreamType>(data);
    ok += message::<UniStreamType>(data);
    ok += message::<Setup>(data);
    ok += message::<AnnounceRequest>(data);
    ok += message::<AnnounceOk>(data);
    ok += message::<Announce>(data);
    ok += message::<AnnounceStart>(data);
    ok += message::<AnnounceEnd>(data);
    ok += message::<AnnounceUpdate>(data);
    ok += message::<Subscribe>(data);
    ok += message::<SubscribeUpdate>(data);
    ok += message::<SubscribeReply>(data);
    ok += message::<Track>(data);
    ok += message::<TrackInfo>(data);
    ok += message::<Fetch>(data);
    ok += message::<Probe>(data);
    ok += message::<Goaway>(data);
    ok += message::<Group>(data);
    ok += frame(data);
    ok += datagram(data);
    ok += catalog(data);
    ok
}

fn message<T: Encode + Decode + PartialEq + Debug>(data: &[u8]) -> usize {
    let mut b = data;
    match T::decode(&mut b) {
        Ok(value) => {
            let consumed = &data[..data.len() - b.len()];
            let again = value.to_bytes();
            if again != consumed {
                assert!(
                    again.len() < consumed.len(),
                    "{value:?} re-encoded to {again:02x?}, consumed {consumed:02x?}"
                );
                let mut r = again.as_slice();
                assert_eq!(T::decode(&mut r).as_ref(), Ok(&value), "{again:02x?}");
                assert!(r.is_empty());
            }
            if consumed.len() <= 512 {
                for cut in 0..consumed.len() {
                    let mut p = &consumed[..cut];
                    assert_eq!(
                        T::decode(&mut p),
                        Err(DecodeError::Short),
                        "prefix {cut} of {consumed:02x?}"
                    );
                }
            }
            1
        }
        Err(_) => {
            assert_eq!(b.len(), data.len(), "a failed decode consumed input");
            0
        }
    }
}

fn frame(data: &[u8]) -> usize {
    let mut b = data;
    match Frame::decode(&mut b) {
        Ok(f) => {
            let consumed = &data[..data.len() - b.len()];
            let mut again = Vec::new();
            f.encode(&mut again);
            if again != consumed {
                assert!(again.len() < consumed.len());
                assert_eq!(Frame::decode(&mut again.as_slice()), Ok(f));
            }
            for cut in 0..consumed.len().min(512) {
                assert_eq!(
                    Frame::decode(&mut &consumed[..cut]),
                    Err(DecodeError::Short)
                );
            }
            1
        }
        Err(_) => {
            assert_eq!(b.len(), data.len());
            0
        }
    }
}

fn datagram(data: &[u8]) -> usize {
    match Datagram::decode(data) {
        Ok(d) => {
            let mut again = Vec::new();
            d.encode(&mut again).expect("a decoded datagram fits");
            if again != data {
                assert!(again.len() < data.len());
                assert_eq!(Datagram::decode(&again), Ok(d));
            }
            1
        }
        Err(DecodeError::TooLarge(n)) => {
            assert!(n as usize == data.len() && data.len() > MAX_DATAGRAM);
            0
        }
        Err(_) => 0,
    }
}

fn catalog(data: &[u8]) -> usize {
    let mut ok = 0;
    if let Ok(c) = Catalog::from_json(data) {
        let json = c.to_json().expect("a parsed catalog serializes");
        assert_eq!(Catalog::from_json(&json).expect("our own JSON parses"), c);
        ok += 1;
    }
    if let Ok((ts, rest)) = split_legacy_payload(data) {
        let mut again = Vec::new();
        crate::catalog::legacy_payload(ts, rest, &mut again);
        assert!(again.len() <= data.len() && again.ends_with(rest));
    }
    ok
}

/// Valid encodings of every message, to mutate from.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = vec![
        StreamType::Subscribe.to_bytes(),
        UniStreamType::Setup.to_bytes(),
        Setup::with_path("/room?jwt=abc")
            .with_varint(Setup::ROLE, 2)
            .with_varint(Setup::PROBE, 1)
            .with_varint(Setup::COST, 100)
            .with_varint(Setup::ORIGIN, 1 << 40)
            .with(0x77, vec![1, 2])
            .to_bytes(),
        AnnounceRequest {
            prefix: "room/".into(),
            ended: false,
        }
        .to_bytes(),
        AnnounceOk {
            hop_id: 42,
            active_count: 2,
        }
        .to_bytes(),
        Announce::Start(AnnounceStart {
            suffix: "alice.hang".into(),
            hops: vec![1, 0, 9000],
            route_cost: 3,
            cold_cost: 70_000,
            ..Default::default()
        })
        .to_bytes(),
        Announce::End(AnnounceEnd { id: 3 }).to_bytes(),
        Announce::Update(AnnounceUpdate {
            id: 2,
            hops: vec![5],
            route_cost: 1,
            cold_cost: 1,
            ..Default::default()
        })
        .to_bytes(),
        Subscribe {
            id: 7,
            broadcast: "room/alice.hang".into(),
            track: "audio/data".into(),
            priority: 80,
            max_latency_ms: 500,
            group_start: Some(12),
            group_end: Some(20),
            frame_start: 1,
            frame_end: Some(4),
            ..Default::default()
        }
        .to_bytes(),
        SubscribeUpdate {
            priority: 1,
            max_latency_ms: 100,
            group_start: None,
            group_end: Some(3),
            ..Default::default()
        }
        .to_bytes(),
        SubscribeReply::Ok { group: 5 }.to_bytes(),
        SubscribeReply::End { group: 300 }.to_bytes(),
        SubscribeReply::Drop {
            start: 1,
            end: 2,
            code: 3,
        }
        .to_bytes(),
        Track {
            broadcast: "b".into(),
            track: "catalog.json".into(),
            epoch: 0,
        }
        .to_bytes(),
        TrackInfo::default().to_bytes(),
        Fetch {
            broadcast: "b".into(),
            track: "t".into(),
            priority: 2,
            group: 9,
            frame_start: 1,
            frame_end: Some(1),
            ..Default::default()
        }
        .to_bytes(),
        Probe {
            bitrate: 64_000,
            rtt_ms: 30,
        }
        .to_bytes(),
        Goaway {
            uri: "https://x.example/".into(),
        }
        .to_bytes(),
        Group {
            subscribe_id: 7,
            sequence: 1 << 20,
            frame_start: 0,
        }
        .to_bytes(),
        Catalog::opus([("audio", 2)]).to_json().unwrap_or_default(),
    ];
    let mut frame = Vec::new();
    Frame {
        timestamp_delta: -20_000,
        payload: b"opus",
    }
    .encode(&mut frame);
    seeds.push(frame);
    let mut dg = Vec::new();
    let _ = Datagram {
        subscribe_id: 7,
        group: 12,
        timestamp: 1_000_000,
        payload: b"opus",
    }
    .encode(&mut dg);
    seeds.push(dg);
    seeds
}
