//! The Announce Stream: ANNOUNCE_REQUEST, ANNOUNCE_OK, then typed ANNOUNCE_START/END/UPDATE.

use crate::coding::{
    decode_body, decode_sized, decode_string, decode_varint, encode_sized, encode_string,
    encode_varint, split_sized,
};
use crate::{Decode, DecodeError, Encode};

/// The most Hop IDs one announcement may carry (moq-net's `MAX_HOPS`).
pub const MAX_HOPS: usize = 32;

/// ANNOUNCE_REQUEST: the subscriber wants announcements for paths starting with `prefix`.
///
/// Wire (moq-net Lite06): `Message Length, Prefix (s)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceRequest {
    /// Broadcast path prefix, matched byte by byte.
    pub prefix: String,
    /// Draft 06 `Ended` opt-in. **Not on the wire**: moq-net 0.3.18 sends only the prefix on
    /// lite-06 (its Exclude Hop was lite-04/05 only, its hidden flag lite-07 only). Ignored by
    /// encode, `false` after decode.
    pub ended: bool,
}

impl Encode for AnnounceRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| encode_string(&self.prefix, out));
    }
}

impl Decode for AnnounceRequest {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            Ok(Self {
                prefix: decode_string(b)?,
                ended: false,
            })
        })
    }
}

/// ANNOUNCE_OK: the first message the publisher sends on an Announce Stream (untyped).
///
/// Wire: `Message Length, Hop ID (i), Active Count (i)`, as in the draft.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceOk {
    /// The publisher's own Hop ID, the implicit last entry of every path on this stream; 0 = unknown.
    pub hop_id: u64,
    /// How many ANNOUNCE_STARTs follow immediately as the initial set.
    pub active_count: u64,
}

impl Encode for AnnounceOk {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| {
            encode_varint(self.hop_id, out);
            encode_varint(self.active_count, out);
        });
    }
}

impl Decode for AnnounceOk {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            Ok(Self {
                hop_id: decode_varint(b)?,
                active_count: decode_varint(b)?,
            })
        })
    }
}

/// ANNOUNCE_START (type 0x0): a broadcast is available; implicitly assigns the next Announce ID
/// (0, 1, 2, ... per stream).
///
/// Wire (moq-net Lite06): `Type=0, Message Length, Suffix (s), Hop Count (i), Hop ID (i)...,
/// Warm Cost (i), Cold Cost (i)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceStart {
    /// Path suffix; the full path is the request prefix + this.
    pub suffix: String,
    /// Draft 06 content generation. **Not on the wire** in moq-net 0.3.18: ignored by encode, 0 after decode.
    pub epoch: u64,
    /// Draft 06 ended flag. **Not on the wire** in moq-net 0.3.18: ignored by encode, `false` after decode.
    pub ended: bool,
    /// Hop IDs from the origin up to (not including) the responder, at most [`MAX_HOPS`];
    /// a repeated non-zero hop is rejected, as moq-net does.
    pub hops: Vec<u64>,
    /// Route cost. moq-net's `Cost::warm`: what one more subscription via this route costs now.
    pub route_cost: u64,
    /// moq-net's `Cost::cold` (not in the draft): the same path priced as if nothing were cached.
    /// A publisher seeding its own production cost sets it equal to `route_cost`.
    pub cold_cost: u64,
}

/// ANNOUNCE_END (type 0x1): the broadcast with this Announce ID is no longer available.
///
/// Wire: `Type=1, Message Length, Announce ID (i)`, as in the draft.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceEnd {
    /// The Announce ID assigned by an earlier ANNOUNCE_START.
    pub id: u64,
}

/// ANNOUNCE_UPDATE (type 0x2, moq-net's "ANNOUNCE_RESTART"): atomically replace the advertisement
/// with this Announce ID.
///
/// Wire (moq-net Lite06): `Type=2, Message Length, Announce ID (i), Hop Count (i), Hop ID (i)...,
/// Warm Cost (i), Cold Cost (i)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceUpdate {
    /// The Announce ID assigned by an earlier ANNOUNCE_START.
    pub id: u64,
    /// Draft 06 content generation. **Not on the wire** in moq-net 0.3.18: ignored by encode, 0 after decode.
    pub epoch: u64,
    /// Draft 06 ended flag. **Not on the wire** in moq-net 0.3.18: ignored by encode, `false` after decode.
    pub ended: bool,
    /// See [`AnnounceStart::hops`].
    pub hops: Vec<u64>,
    /// See [`AnnounceStart::route_cost`].
    pub route_cost: u64,
    /// See [`AnnounceStart::cold_cost`].
    pub cold_cost: u64,
}

/// One announcement after ANNOUNCE_OK on an Announce Stream: `Type (i)` then a length-prefixed body.
///
/// moq-net *skips* an announcement of unknown type by its length instead of failing the stream;
/// we return [`DecodeError::UnknownType`] only once the whole message is buffered, so the caller
/// can do the same with [`typed_message_len`](crate::coding::typed_message_len).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// ANNOUNCE_START (0x0).
    Start(AnnounceStart),
    /// ANNOUNCE_END (0x1).
    End(AnnounceEnd),
    /// ANNOUNCE_UPDATE (0x2).
    Update(AnnounceUpdate),
}

impl Announce {
    /// Type of ANNOUNCE_START.
    pub const START: u64 = 0x0;
    /// Type of ANNOUNCE_END.
    pub const END: u64 = 0x1;
    /// Type of ANNOUNCE_UPDATE.
    pub const UPDATE: u64 = 0x2;
}

fn encode_route(hops: &[u64], warm: u64, cold: u64, out: &mut Vec<u8>) {
    encode_varint(hops.len() as u64, out);
    for hop in hops {
        encode_varint(*hop, out);
    }
    encode_varint(warm, out);
    encode_varint(cold, out);
}

fn decode_route(b: &mut &[u8]) -> Result<(Vec<u64>, u64, u64), DecodeError> {
    let count = decode_varint(b)?;
    if count > MAX_HOPS as u64 {
        return Err(DecodeError::Invalid("too many hops"));
    }
    let mut hops: Vec<u64> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let hop = decode_varint(b)?;
        if hop != 0 && hops.contains(&hop) {
            return Err(DecodeError::Invalid("repeated hop"));
        }
        hops.push(hop);
    }
    Ok((hops, decode_varint(b)?, decode_varint(b)?))
}

impl Encode for Announce {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Start(m) => {
                encode_varint(Self::START, out);
                encode_sized(out, |out| {
                    encode_string(&m.suffix, out);
                    encode_route(&m.hops, m.route_cost, m.cold_cost, out);
                });
            }
            Self::End(m) => {
                encode_varint(Self::END, out);
                encode_sized(out, |out| encode_varint(m.id, out));
            }
            Self::Update(m) => {
                encode_varint(Self::UPDATE, out);
                encode_sized(out, |out| {
                    encode_varint(m.id, out);
                    encode_route(&m.hops, m.route_cost, m.cold_cost, out);
                });
            }
        }
    }
}

impl Decode for Announce {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let mut b = *buf;
        let kind = decode_varint(&mut b)?;
        let (body, rest) = split_sized(b)?;
        let msg = match kind {
            Self::START => decode_body(body, |b| {
                let suffix = decode_string(b)?;
                let (hops, route_cost, cold_cost) = decode_route(b)?;
                Ok(Self::Start(AnnounceStart {
                    suffix,
                    epoch: 0,
                    ended: false,
                    hops,
                    route_cost,
                    cold_cost,
                }))
            })?,
            Self::END => decode_body(body, |b| {
                Ok(Self::End(AnnounceEnd {
                    id: decode_varint(b)?,
                }))
            })?,
            Self::UPDATE => decode_body(body, |b| {
                let id = decode_varint(b)?;
                let (hops, route_cost, cold_cost) = decode_route(b)?;
                Ok(Self::Update(AnnounceUpdate {
                    id,
                    epoch: 0,
                    ended: false,
                    hops,
                    route_cost,
                    cold_cost,
                }))
            })?,
            other => return Err(DecodeError::UnknownType(other)),
        };
        *buf = rest;
        Ok(msg)
    }
}

macro_rules! announce_variant {
    ($ty:ident, $variant:ident) => {
        impl Encode for $ty {
            /// Encodes with its Type prefix, like [`Announce`].
            fn encode(&self, out: &mut Vec<u8>) {
                Announce::$variant(self.clone()).encode(out)
            }
        }

        impl Decode for $ty {
            /// Decodes an [`Announce`] and requires it to be this variant.
            fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
                let mut b = *buf;
                match Announce::decode(&mut b)? {
                    Announce::$variant(m) => {
                        *buf = b;
                        Ok(m)
                    }
                    _ => Err(DecodeError::Invalid("unexpected announce type")),
                }
            }
        }

        impl From<$ty> for Announce {
            fn from(m: $ty) -> Self {
                Announce::$variant(m)
            }
        }
    };
}

announce_variant!(AnnounceStart, Start);
announce_variant!(AnnounceEnd, End);
announce_variant!(AnnounceUpdate, Update);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_util::{check, check_framing};

    #[test]
    fn request() {
        let msg = AnnounceRequest {
            prefix: "room/".into(),
            ended: false,
        };
        check(&msg, Some(&[0x06, 0x05, b'r', b'o', b'o', b'm', b'/']));
        check_framing::<AnnounceRequest>(&msg.to_bytes(), 0);
        // `ended` does not travel.
        let ended = AnnounceRequest {
            ended: true,
            ..msg.clone()
        };
        assert_eq!(ended.to_bytes(), msg.to_bytes());
        // Bad UTF-8 prefix.
        assert_eq!(
            AnnounceRequest::decode(&mut &[0x02, 0x01, 0xFF][..]),
            Err(DecodeError::Invalid("string is not UTF-8"))
        );
    }

    #[test]
    fn ok() {
        let msg = AnnounceOk {
            hop_id: 42,
            active_count: 3,
        };
        check(&msg, Some(&[0x02, 0x2a, 0x03]));
        check_framing::<AnnounceOk>(&msg.to_bytes(), 0);
    }

    #[test]
    fn end_is_three_bytes() {
        // moq-net `ended_by_id_is_three_bytes`: type, size, id.
        let msg = Announce::End(AnnounceEnd { id: 42 });
        check(&msg, Some(&[0x01, 0x01, 0x2a]));
        check(&AnnounceEnd { id: 42 }, Some(&[0x01, 0x01, 0x2a]));
        check_framing::<Announce>(&msg.to_bytes(), 1);
    }

    #[test]
    fn start() {
        let msg = AnnounceStart {
            suffix: "cam".into(),
            epoch: 0,
            ended: false,
            hops: vec![7, 300],
            route_cost: 12,
            cold_cost: 30,
        };
        let wire = [
            0x00, 0x0a, // type, length
            0x03, b'c', b'a', b'm', // suffix
            0x02, 0x07, 0x41, 0x2c, // hops [7, 300]
            0x0c, 0x1e, // warm 12, cold 30
        ];
        check(&msg, Some(&wire));
        check(&Announce::Start(msg.clone()), Some(&wire));
        check_framing::<Announce>(&wire, 1);
        // A START is not an END.
        assert_eq!(
            AnnounceEnd::decode(&mut &wire[..]),
            Err(DecodeError::Invalid("unexpected announce type"))
        );
    }

    #[test]
    fn update() {
        let msg = AnnounceUpdate {
            id: 3,
            epoch: 0,
            ended: false,
            hops: vec![],
            route_cost: 0,
            cold_cost: (1 << 62) - 1,
        };
        let mut wire = vec![0x02, 0x0c, 0x03, 0x00, 0x00];
        wire.extend_from_slice(&[0xFF; 8]);
        wire[1] = (wire.len() - 2) as u8;
        check(&msg, Some(&wire));
        check_framing::<Announce>(&wire, 1);
    }

    #[test]
    fn unknown_type_waits_for_the_whole_message() {
        let wire = [0x04, 0x02, 0xAA, 0xBB, 0x09];
        for cut in 0..4 {
            assert_eq!(Announce::decode(&mut &wire[..cut]), Err(DecodeError::Short));
        }
        let mut b = &wire[..];
        assert_eq!(Announce::decode(&mut b), Err(DecodeError::UnknownType(4)));
        assert_eq!(crate::coding::typed_message_len(b), Ok(4));
    }

    #[test]
    fn hop_limits() {
        let mut body = vec![0x00, 0x21];
        body.extend(std::iter::repeat_n(1u8, 33));
        body.extend_from_slice(&[0, 0]);
        let mut wire = vec![0x00, body.len() as u8];
        wire.extend_from_slice(&body);
        assert_eq!(
            Announce::decode(&mut &wire[..]),
            Err(DecodeError::Invalid("too many hops"))
        );

        let wire = [0x00, 0x06, 0x00, 0x02, 0x05, 0x05, 0x00, 0x00];
        assert_eq!(
            Announce::decode(&mut &wire[..]),
            Err(DecodeError::Invalid("repeated hop"))
        );
        // Repeated unknown (0) hops are fine.
        let wire = [0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00];
        assert!(Announce::decode(&mut &wire[..]).is_ok());
    }
}
