//! The single-request streams: TRACK/TRACK_INFO, FETCH, PROBE and GOAWAY.

use crate::coding::{
    decode_plus_one, decode_sized, decode_string, decode_u8, decode_varint, encode_plus_one,
    encode_sized, encode_string, encode_varint,
};
use crate::{Decode, DecodeError, Encode};

/// Longest GOAWAY URI accepted, in bytes (moq-net's limit).
pub const MAX_GOAWAY_URI: usize = 8192;

/// TRACK: the subscriber asks for a track's immutable properties (Track Stream, type 6).
///
/// Wire (moq-net Lite06): `Message Length, Broadcast (s), Track (s)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Track {
    /// Broadcast path.
    pub broadcast: String,
    /// Track name.
    pub track: String,
    /// Draft 06 generation. **Not on the wire** in moq-net 0.3.18: ignored by encode, 0 after decode.
    pub epoch: u64,
}

impl Encode for Track {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| {
            encode_string(&self.broadcast, out);
            encode_string(&self.track, out);
        });
    }
}

impl Decode for Track {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            Ok(Self {
                broadcast: decode_string(b)?,
                track: decode_string(b)?,
                epoch: 0,
            })
        })
    }
}

/// TRACK_INFO: the publisher's only reply on a Track Stream.
///
/// Wire (moq-net Lite06): `Message Length, Priority (8), Max Latency (i), Timescale (i)`.
/// A timescale of 0 is [`DecodeError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Draft 06 resolved generation. **Not on the wire** in moq-net 0.3.18: ignored by encode,
    /// 0 ("unassigned") after decode.
    pub epoch: u64,
    /// Publisher priority, only a tie-break.
    pub priority: u8,
    /// Draft `Publisher Ordered`. **Not on the wire**: retired by moq-net on lite-06.
    /// Ignored by encode, `false` after decode.
    pub ordered: bool,
    /// Publisher Max Latency in milliseconds: how long a non-latest group stays cached.
    pub max_latency_ms: u64,
    /// Timestamp units per second for this track's FRAMEs and DATAGRAMs; never 0.
    pub timescale: u64,
}

impl Default for TrackInfo {
    /// moq-net's `track::Info::default()`: priority 127, 5 s retention, millisecond timescale.
    fn default() -> Self {
        Self {
            epoch: 0,
            priority: 127,
            ordered: false,
            max_latency_ms: 5000,
            timescale: 1000,
        }
    }
}

impl Encode for TrackInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.timescale != 0, "TRACK_INFO timescale must be non-zero");
        encode_sized(out, |out| {
            out.push(self.priority);
            encode_varint(self.max_latency_ms, out);
            encode_varint(self.timescale, out);
        });
    }
}

impl Decode for TrackInfo {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let priority = decode_u8(b)?;
            let max_latency_ms = decode_varint(b)?;
            let timescale = decode_varint(b)?;
            if timescale == 0 {
                return Err(DecodeError::Invalid("TRACK_INFO timescale is 0"));
            }
            Ok(Self {
                epoch: 0,
                priority,
                ordered: false,
                max_latency_ms,
                timescale,
            })
        })
    }
}

/// FETCH: request one group (Fetch Stream, type 3); the reply is bare FRAMEs, then FIN.
///
/// Wire (moq-net Lite06): `Message Length, Broadcast (s), Track (s), Priority (8), Group (i),
/// Frame Start (i), Frame End (i)`. A frame range ending before it starts is
/// [`DecodeError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fetch {
    /// Broadcast path.
    pub broadcast: String,
    /// Track name.
    pub track: String,
    /// Draft 06 generation. **Not on the wire** in moq-net 0.3.18: ignored by encode, 0 after decode.
    pub epoch: u64,
    /// Subscriber priority of the fetch.
    pub priority: u8,
    /// Group sequence to fetch.
    pub group: u64,
    /// moq-net only: first frame to return; 0 = from the start of the group.
    pub frame_start: u64,
    /// moq-net only: last frame to return (inclusive), sent +1 (0 = through the end).
    pub frame_end: Option<u64>,
}

impl Encode for Fetch {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| {
            encode_string(&self.broadcast, out);
            encode_string(&self.track, out);
            out.push(self.priority);
            encode_varint(self.group, out);
            encode_varint(self.frame_start, out);
            encode_plus_one(self.frame_end, out);
        });
    }
}

impl Decode for Fetch {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let broadcast = decode_string(b)?;
            let track = decode_string(b)?;
            let priority = decode_u8(b)?;
            let group = decode_varint(b)?;
            let frame_start = decode_varint(b)?;
            let frame_end = decode_plus_one(b)?;
            if frame_end.is_some_and(|end| end < frame_start) {
                return Err(DecodeError::Invalid(
                    "FETCH frame range ends before it starts",
                ));
            }
            Ok(Self {
                broadcast,
                track,
                epoch: 0,
                priority,
                group,
                frame_start,
                frame_end,
            })
        })
    }
}

/// PROBE: sent both ways on a Probe Stream (type 4).
///
/// Wire: `Message Length, Bitrate (i), RTT (i)`, as in the draft. 0 means unknown in both fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probe {
    /// Target (from the subscriber) or estimated (from the publisher) bitrate, bits per second.
    pub bitrate: u64,
    /// Smoothed RTT in milliseconds.
    pub rtt_ms: u64,
}

impl Encode for Probe {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| {
            encode_varint(self.bitrate, out);
            encode_varint(self.rtt_ms, out);
        });
    }
}

impl Decode for Probe {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            Ok(Self {
                bitrate: decode_varint(b)?,
                rtt_ms: decode_varint(b)?,
            })
        })
    }
}

/// GOAWAY: graceful shutdown, with an optional URI to reconnect to (Goaway Stream, type 5).
///
/// Wire: `Message Length, New Session URI (s)`, as in the draft. URIs over
/// [`MAX_GOAWAY_URI`] bytes are [`DecodeError::Invalid`], as in moq-net.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Goaway {
    /// Where to reconnect; empty = no redirect. Validate before following it.
    pub uri: String,
}

impl Encode for Goaway {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| encode_string(&self.uri, out));
    }
}

impl Decode for Goaway {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let uri = decode_string(b)?;
            if uri.len() > MAX_GOAWAY_URI {
                return Err(DecodeError::Invalid("GOAWAY URI too long"));
            }
            Ok(Self { uri })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_util::{check, check_framing};

    #[test]
    fn track() {
        let msg = Track {
            broadcast: "room".into(),
            track: "video".into(),
            epoch: 0,
        };
        let mut wire = vec![0x0b, 0x04];
        wire.extend_from_slice(b"room");
        wire.push(0x05);
        wire.extend_from_slice(b"video");
        check(&msg, Some(&wire));
        check_framing::<Track>(&wire, 0);
    }

    #[test]
    fn track_info() {
        // moq-net `track_info_defaults_match_cross_language_wire_bytes` is
        // [0x06, 0x7f, 0x00, 0x53, 0x88, 0x43, 0xe8] on lite-05; lite-06 drops the 0x00 Ordered byte.
        let wire = [0x05, 0x7f, 0x53, 0x88, 0x43, 0xe8];
        check(&TrackInfo::default(), Some(&wire));
        check_framing::<TrackInfo>(&wire, 0);

        let micro = TrackInfo {
            priority: 80,
            max_latency_ms: 30_000,
            timescale: 1_000_000,
            ..Default::default()
        };
        check(
            &micro,
            Some(&[0x09, 80, 0x80, 0x00, 0x75, 0x30, 0x80, 0x0F, 0x42, 0x40]),
        );

        assert_eq!(
            TrackInfo::decode(&mut &[0x03, 0x00, 0x00, 0x00][..]),
            Err(DecodeError::Invalid("TRACK_INFO timescale is 0"))
        );
    }

    #[test]
    fn fetch() {
        let msg = Fetch {
            broadcast: "b".into(),
            track: "t".into(),
            epoch: 0,
            priority: 3,
            group: 7,
            frame_start: 2,
            frame_end: Some(6),
        };
        let wire = [0x08, 0x01, b'b', 0x01, b't', 0x03, 0x07, 0x02, 0x07];
        check(&msg, Some(&wire));
        check_framing::<Fetch>(&wire, 0);

        let inverted = Fetch {
            frame_start: 6,
            frame_end: Some(2),
            ..msg
        };
        assert_eq!(
            Fetch::decode(&mut inverted.to_bytes().as_slice()),
            Err(DecodeError::Invalid(
                "FETCH frame range ends before it starts"
            ))
        );
    }

    #[test]
    fn probe() {
        let msg = Probe {
            bitrate: 1_000_000,
            rtt_ms: 40,
        };
        check(&msg, Some(&[0x05, 0x80, 0x0F, 0x42, 0x40, 0x28]));
        check_framing::<Probe>(&msg.to_bytes(), 0);
    }

    #[test]
    fn goaway() {
        check(&Goaway::default(), Some(&[0x01, 0x00]));
        let msg = Goaway {
            uri: "https://relay.example/new".into(),
        };
        check(&msg, None);
        check_framing::<Goaway>(&msg.to_bytes(), 0);

        check(
            &Goaway {
                uri: "a".repeat(8192),
            },
            None,
        );
        let long = Goaway {
            uri: "a".repeat(8193),
        }
        .to_bytes();
        assert_eq!(
            Goaway::decode(&mut long.as_slice()),
            Err(DecodeError::Invalid("GOAWAY URI too long"))
        );
    }
}
