//! The Subscribe Stream: SUBSCRIBE and SUBSCRIBE_UPDATE up, SUBSCRIBE_OK/END/DROP down.

use crate::coding::{
    decode_body, decode_plus_one, decode_sized, decode_string, decode_u8, decode_varint,
    encode_plus_one, encode_sized, encode_string, encode_varint, split_sized,
};
use crate::{Decode, DecodeError, Encode};

/// SUBSCRIBE: the first message on a Subscribe Stream.
///
/// Wire (moq-net Lite06): `Message Length, Subscribe ID (i), Broadcast (s), Track (s),
/// Priority (8), Max Latency (i), Group Start (i), Group End (i), Frame Start (i), Frame End (i)`.
///
/// Differences from the draft, following moq-net: no Epoch, no Ordered byte, Group Start is the
/// raw sequence rather than sequence + 1, and two frame bounds trail the message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// Chosen by the subscriber, never reused within the session; GROUP and DATAGRAM carry it.
    pub id: u64,
    /// Broadcast path.
    pub broadcast: String,
    /// Track name.
    pub track: String,
    /// Draft 06 generation pin. **Not on the wire** in moq-net 0.3.18: ignored by encode, 0 after decode.
    pub epoch: u64,
    /// Subscriber priority; higher is sent first.
    pub priority: u8,
    /// Draft `Subscriber Ordered`. **Not on the wire**: moq-net retired the byte on lite-06
    /// (it always delivers newest-first). Ignored by encode, `false` after decode.
    pub ordered: bool,
    /// Subscriber Max Latency in milliseconds (moq-net `max_age`).
    pub max_latency_ms: u64,
    /// The lowest group to deliver. moq-net lite-06 sends the *raw* sequence, and treats 0 as
    /// "no floor" (it then resolves the start from `max_latency_ms`, i.e. the latest group for 0):
    /// `None` is sent as 0, and a 0 decodes as `None` unless `frame_start` qualifies group 0.
    /// (The draft says sequence + 1 with 0 = latest; moq-net did not implement that for lite-06.)
    pub group_start: Option<u64>,
    /// The last group to deliver (inclusive), sent as sequence + 1 with 0 = unbounded.
    pub group_end: Option<u64>,
    /// moq-net only: first frame to deliver within `group_start`'s group; 0 = the whole group.
    pub frame_start: u64,
    /// moq-net only: last frame (inclusive) within `group_end`'s group, sent +1 (0 = whole
    /// group). Must be `None` when `group_end` is.
    pub frame_end: Option<u64>,
}

/// SUBSCRIBE_UPDATE: change a live subscription.
///
/// Wire (moq-net Lite06): `Message Length, Priority (8), Max Latency (i), Group Start (i),
/// Group End (i), Frame Start (i), Frame End (i)`. Field meanings as in [`Subscribe`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeUpdate {
    /// See [`Subscribe::priority`].
    pub priority: u8,
    /// **Not on the wire**; see [`Subscribe::ordered`].
    pub ordered: bool,
    /// See [`Subscribe::max_latency_ms`].
    pub max_latency_ms: u64,
    /// See [`Subscribe::group_start`].
    pub group_start: Option<u64>,
    /// See [`Subscribe::group_end`].
    pub group_end: Option<u64>,
    /// See [`Subscribe::frame_start`].
    pub frame_start: u64,
    /// See [`Subscribe::frame_end`].
    pub frame_end: Option<u64>,
}

/// The publisher's replies on a Subscribe Stream: `Type (i)` then a length-prefixed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeReply {
    /// SUBSCRIBE_OK (0x0, moq-net's `SubscribeStart`): the first group that will be delivered.
    Ok {
        /// Absolute sequence of the first group delivered.
        group: u64,
    },
    /// SUBSCRIBE_END (0x1): no group at or after `group` will be produced (exclusive bound).
    End {
        /// First sequence that will never be delivered; 0 = the track produced no groups.
        group: u64,
    },
    /// SUBSCRIBE_DROP (0x2): groups `start..=end` will not be delivered.
    Drop {
        /// First dropped sequence.
        start: u64,
        /// Last dropped sequence (inclusive).
        end: u64,
        /// Application error code; 0 = simply unavailable.
        code: u64,
    },
}

impl SubscribeReply {
    /// Type of SUBSCRIBE_OK.
    pub const OK: u64 = 0x0;
    /// Type of SUBSCRIBE_END.
    pub const END: u64 = 0x1;
    /// Type of SUBSCRIBE_DROP.
    pub const DROP: u64 = 0x2;
}

/// The shared tail of SUBSCRIBE and SUBSCRIBE_UPDATE after the priority byte.
struct Range {
    max_latency_ms: u64,
    group_start: Option<u64>,
    group_end: Option<u64>,
    frame_start: u64,
    frame_end: Option<u64>,
}

impl Range {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_varint(self.max_latency_ms, out);
        encode_varint(self.group_start.unwrap_or(0), out);
        encode_plus_one(self.group_end, out);
        encode_varint(self.frame_start, out);
        encode_plus_one(self.frame_end, out);
    }

    fn decode(b: &mut &[u8]) -> Result<Self, DecodeError> {
        let max_latency_ms = decode_varint(b)?;
        let start = decode_varint(b)?;
        let group_end = decode_plus_one(b)?;
        let frame_start = decode_varint(b)?;
        let frame_end = decode_plus_one(b)?;
        if frame_end.is_some() && group_end.is_none() {
            return Err(DecodeError::Invalid("frame end without a group end"));
        }
        // moq-net: a floor of 0 is no floor, unless a frame offset names group 0.
        let group_start = (start != 0 || frame_start != 0).then_some(start);
        Ok(Self {
            max_latency_ms,
            group_start,
            group_end,
            frame_start,
            frame_end,
        })
    }
}

impl Encode for Subscribe {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| {
            encode_varint(self.id, out);
            encode_string(&self.broadcast, out);
            encode_string(&self.track, out);
            out.push(self.priority);
            Range {
                max_latency_ms: self.max_latency_ms,
                group_start: self.group_start,
                group_end: self.group_end,
                frame_start: self.frame_start,
                frame_end: self.frame_end,
            }
            .encode(out);
        });
    }
}

impl Decode for Subscribe {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let id = decode_varint(b)?;
            let broadcast = decode_string(b)?;
            let track = decode_string(b)?;
            let priority = decode_u8(b)?;
            let r = Range::decode(b)?;
            Ok(Self {
                id,
                broadcast,
                track,
                epoch: 0,
                priority,
                ordered: false,
                max_latency_ms: r.max_latency_ms,
                group_start: r.group_start,
                group_end: r.group_end,
                frame_start: r.frame_start,
                frame_end: r.frame_end,
            })
        })
    }
}

impl Encode for SubscribeUpdate {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| {
            out.push(self.priority);
            Range {
                max_latency_ms: self.max_latency_ms,
                group_start: self.group_start,
                group_end: self.group_end,
                frame_start: self.frame_start,
                frame_end: self.frame_end,
            }
            .encode(out);
        });
    }
}

impl Decode for SubscribeUpdate {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let priority = decode_u8(b)?;
            let r = Range::decode(b)?;
            Ok(Self {
                priority,
                ordered: false,
                max_latency_ms: r.max_latency_ms,
                group_start: r.group_start,
                group_end: r.group_end,
                frame_start: r.frame_start,
                frame_end: r.frame_end,
            })
        })
    }
}

impl Encode for SubscribeReply {
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Ok { group } => {
                encode_varint(Self::OK, out);
                encode_sized(out, |out| encode_varint(group, out));
            }
            Self::End { group } => {
                encode_varint(Self::END, out);
                encode_sized(out, |out| encode_varint(group, out));
            }
            Self::Drop { start, end, code } => {
                encode_varint(Self::DROP, out);
                encode_sized(out, |out| {
                    encode_varint(start, out);
                    encode_varint(end, out);
                    encode_varint(code, out);
                });
            }
        }
    }
}

impl Decode for SubscribeReply {
    /// An unknown type is [`DecodeError::UnknownType`] (moq-net fails the stream on it).
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let mut b = *buf;
        let kind = decode_varint(&mut b)?;
        let (body, rest) = split_sized(b)?;
        let msg = match kind {
            Self::OK => decode_body(body, |b| {
                Ok(Self::Ok {
                    group: decode_varint(b)?,
                })
            })?,
            Self::END => decode_body(body, |b| {
                Ok(Self::End {
                    group: decode_varint(b)?,
                })
            })?,
            Self::DROP => decode_body(body, |b| {
                Ok(Self::Drop {
                    start: decode_varint(b)?,
                    end: decode_varint(b)?,
                    code: decode_varint(b)?,
                })
            })?,
            other => return Err(DecodeError::UnknownType(other)),
        };
        *buf = rest;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_util::{check, check_framing};

    /// moq-net's `subscribe_sample` on Lite06, bytes written out by hand.
    fn sample() -> (Subscribe, Vec<u8>) {
        let msg = Subscribe {
            id: 1,
            broadcast: "room".into(),
            track: "video".into(),
            epoch: 0,
            priority: 3,
            ordered: false,
            max_latency_ms: 250,
            group_start: Some(7),
            group_end: Some(9),
            frame_start: 4,
            frame_end: Some(2),
        };
        let mut wire = vec![0x13, 0x01, 0x04];
        wire.extend_from_slice(b"room");
        wire.push(0x05);
        wire.extend_from_slice(b"video");
        wire.extend_from_slice(&[
            0x03, // priority (u8, no Ordered byte after it)
            0x40, 0xFA, // max latency 250
            0x07, // group start: raw 7
            0x0A, // group end: 9 + 1
            0x04, // frame start
            0x03, // frame end: 2 + 1
        ]);
        (msg, wire)
    }

    #[test]
    fn subscribe() {
        let (msg, wire) = sample();
        check(&msg, Some(&wire));
        check_framing::<Subscribe>(&wire, 0);

        // The draft-only fields do not travel.
        let draft = Subscribe {
            epoch: 9,
            ordered: true,
            ..msg.clone()
        };
        assert_eq!(draft.to_bytes(), wire);
    }

    #[test]
    fn subscribe_latest() {
        let msg = Subscribe {
            id: 0,
            broadcast: String::new(),
            track: "audio".into(),
            priority: 80,
            ..Default::default()
        };
        let mut wire = vec![0x0e, 0x00, 0x00, 0x05];
        wire.extend_from_slice(b"audio");
        wire.extend_from_slice(&[80, 0, 0, 0, 0, 0]);
        check(&msg, Some(&wire));
        // A floor of 0 is "no floor" on lite-06: Some(0) sends the same bytes and decodes as None.
        let zero = Subscribe {
            group_start: Some(0),
            ..msg.clone()
        };
        assert_eq!(zero.to_bytes(), wire);
        // ...unless a frame offset names group 0.
        check(
            &Subscribe {
                group_start: Some(0),
                frame_start: 3,
                ..msg
            },
            None,
        );
    }

    #[test]
    fn subscribe_rejects_frame_end_without_group_end() {
        let (mut msg, _) = sample();
        msg.group_end = None;
        let wire = msg.to_bytes();
        assert_eq!(
            Subscribe::decode(&mut wire.as_slice()),
            Err(DecodeError::Invalid("frame end without a group end"))
        );
    }

    #[test]
    fn subscribe_rejects_bad_utf8() {
        let wire = [
            0x0a, 0x00, 0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            Subscribe::decode(&mut &wire[..]),
            Err(DecodeError::Invalid("string is not UTF-8"))
        );
    }

    #[test]
    fn update() {
        let msg = SubscribeUpdate {
            priority: 255,
            ordered: false,
            max_latency_ms: 16_384,
            group_start: Some(100),
            group_end: None,
            frame_start: 0,
            frame_end: None,
        };
        let wire = [
            0x0a, 0xFF, 0x80, 0x00, 0x40, 0x00, 0x40, 0x64, 0x00, 0x00, 0x00,
        ];
        check(&msg, Some(&wire));
        check_framing::<SubscribeUpdate>(&wire, 0);
    }

    #[test]
    fn replies() {
        // SUBSCRIBE_OK group=5: type 0, length 1, group 5.
        check(&SubscribeReply::Ok { group: 5 }, Some(&[0x00, 0x01, 0x05]));
        // moq-net `subscribe_end_roundtrips_on_lite05` (same on lite-06): [1, 1, 7].
        check(&SubscribeReply::End { group: 7 }, Some(&[0x01, 0x01, 0x07]));
        let drop = SubscribeReply::Drop {
            start: 1,
            end: 3,
            code: 64,
        };
        check(&drop, Some(&[0x02, 0x04, 0x01, 0x03, 0x40, 0x40]));
        for msg in [SubscribeReply::Ok { group: 5 }, drop] {
            check_framing::<SubscribeReply>(&msg.to_bytes(), 1);
        }
    }

    #[test]
    fn reply_unknown_type() {
        assert_eq!(
            SubscribeReply::decode(&mut &[0x03, 0x00][..]),
            Err(DecodeError::UnknownType(3))
        );
        assert_eq!(
            SubscribeReply::decode(&mut &[0x03][..]),
            Err(DecodeError::Short)
        );
    }
}
