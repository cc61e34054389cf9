//! Media: the GROUP header of a Group Stream, FRAMEs, and QUIC datagram bodies.

use crate::coding::{
    decode_sized, decode_varint, encode_sized, encode_varint, zigzag_decode, zigzag_encode,
};
use crate::{Decode, DecodeError, Encode};

/// Largest QUIC datagram body sent or accepted (the draft's 1200-byte minimum path MTU bound).
pub const MAX_DATAGRAM: usize = 1200;

/// Largest FRAME payload [`Frame::decode`] / [`Frame::decode_header`] accept: 4 MiB.
/// (Plenty for audio and catalogs; moq-net's own limit is a per-group cache budget.)
pub const MAX_FRAME_SIZE: usize = 4 << 20;

/// GROUP: the header of a Group Stream (uni stream type 0), followed by FRAMEs until FIN.
///
/// Wire (moq-net Lite06): `Message Length, Subscribe ID (i), Group Sequence (i), Frame Start (i)`.
/// The draft has no Frame Start; moq-net sends it on lite-06.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    /// The subscription this group serves.
    pub subscribe_id: u64,
    /// The group's sequence number.
    pub sequence: u64,
    /// moq-net only: index of the first frame on this stream; 0 (the usual case) means the
    /// group from its beginning.
    pub frame_start: u64,
}

impl Encode for Group {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| {
            encode_varint(self.subscribe_id, out);
            encode_varint(self.sequence, out);
            encode_varint(self.frame_start, out);
        });
    }
}

impl Decode for Group {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            Ok(Self {
                subscribe_id: decode_varint(b)?,
                sequence: decode_varint(b)?,
                frame_start: decode_varint(b)?,
            })
        })
    }
}

/// FRAME: `Timestamp Delta (i, zigzag), Message Length (i), Payload`, on Group and Fetch streams.
///
/// The delta is against the previous frame of the same group (the first frame's is its
/// absolute timestamp), in the track's TRACK_INFO timescale. Matches moq-net byte for byte.
/// The payload is borrowed from the input, never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Signed timestamp delta from the previous frame; must lie within ±2^61.
    pub timestamp_delta: i64,
    /// The payload, opaque to moq-lite (a hang legacy frame is a varint µs timestamp + codec data).
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Read a whole frame, borrowing the payload. `Short` until the whole payload is buffered;
    /// payloads over [`MAX_FRAME_SIZE`] are `TooLarge` as soon as the header is read.
    pub fn decode(buf: &mut &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        let mut b = *buf;
        let (timestamp_delta, len) = Self::decode_header(&mut b)?;
        let len = len as usize;
        if b.len() < len {
            return Err(DecodeError::Short);
        }
        let (payload, rest) = b.split_at(len);
        *buf = rest;
        Ok(Frame {
            timestamp_delta,
            payload,
        })
    }

    /// Read only the header: `(timestamp delta, payload length)`, so the payload can be
    /// streamed instead of buffered. The length is at most [`MAX_FRAME_SIZE`].
    pub fn decode_header(buf: &mut &[u8]) -> Result<(i64, u64), DecodeError> {
        let mut b = *buf;
        let delta = zigzag_decode(decode_varint(&mut b)?);
        let len = decode_varint(&mut b)?;
        if len > MAX_FRAME_SIZE as u64 {
            return Err(DecodeError::TooLarge(len));
        }
        *buf = b;
        Ok((delta, len))
    }

    /// Append the whole frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        Self::encode_header(self.timestamp_delta, self.payload.len(), out);
        out.extend_from_slice(self.payload);
    }

    /// Writes only the header (zigzag delta + length) for a payload of `len` bytes, so the
    /// payload can be sent without copying.
    pub fn encode_header(timestamp_delta: i64, len: usize, out: &mut Vec<u8>) {
        encode_varint(zigzag_encode(timestamp_delta), out);
        encode_varint(len as u64, out);
    }
}

/// A QUIC datagram body (no length prefix). Bodies over [`MAX_DATAGRAM`] bytes are refused both ways.
///
/// Wire: `Subscribe ID (i), Group Sequence (i), Timestamp (i), Payload` (the rest), as in the
/// draft and moq-net. It carries a whole single-frame group; the timestamp is absolute.
/// Note moq-net itself does not enforce the 1200-byte bound (it caps payloads at 65535),
/// so an oversized datagram from it is dropped here, as the draft requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The subscription it belongs to; drop it silently if unknown.
    pub subscribe_id: u64,
    /// The group's sequence number.
    pub group: u64,
    /// Absolute timestamp of the single frame, in the track's timescale.
    pub timestamp: u64,
    /// The frame payload.
    pub payload: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Parse a whole datagram body. `TooLarge` over [`MAX_DATAGRAM`] bytes; `Short` if the
    /// header varints are cut off (a datagram cannot grow: drop it).
    pub fn decode(buf: &'a [u8]) -> Result<Datagram<'a>, DecodeError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLarge(buf.len() as u64));
        }
        let mut b = buf;
        Ok(Datagram {
            subscribe_id: decode_varint(&mut b)?,
            group: decode_varint(&mut b)?,
            timestamp: decode_varint(&mut b)?,
            payload: b,
        })
    }

    /// The encoded size of this datagram body.
    pub fn encoded_len(&self) -> usize {
        use crate::coding::varint_len;
        varint_len(self.subscribe_id)
            + varint_len(self.group)
            + varint_len(self.timestamp)
            + self.payload.len()
    }

    /// Append the body, or refuse with `TooLarge` (writing nothing) if it would exceed [`MAX_DATAGRAM`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let len = self.encoded_len();
        if len > MAX_DATAGRAM {
            return Err(DecodeError::TooLarge(len as u64));
        }
        encode_varint(self.subscribe_id, out);
        encode_varint(self.group, out);
        encode_varint(self.timestamp, out);
        out.extend_from_slice(self.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_util::{check, check_framing, check_short};

    #[test]
    fn group() {
        let msg = Group {
            subscribe_id: 5,
            sequence: 1 << 20,
            frame_start: 0,
        };
        let wire = [0x06, 0x05, 0x80, 0x10, 0x00, 0x00, 0x00];
        check(&msg, Some(&wire));
        check_framing::<Group>(&wire, 0);
        check(
            &Group {
                subscribe_id: 1,
                sequence: 7,
                frame_start: 4,
            },
            Some(&[0x03, 0x01, 0x07, 0x04]),
        );
    }

    #[test]
    fn frame() {
        // moq-net test_interop `lite_group` frames: (delta, size) pairs.
        for (delta, payload, head) in [
            (0i64, &b"0123456789"[..], &[0x00, 0x0a][..]),
            (
                33_333,
                &[0xAB; 300][..],
                &[0x80, 0x01, 0x04, 0x6a, 0x41, 0x2c][..],
            ),
            (-1_000, &[][..], &[0x47, 0xcf, 0x00][..]),
            (-1, &b"x"[..], &[0x01, 0x01][..]),
        ] {
            let frame = Frame {
                timestamp_delta: delta,
                payload,
            };
            let mut out = Vec::new();
            frame.encode(&mut out);
            assert_eq!(&out[..head.len()], head, "delta {delta}");
            assert_eq!(&out[head.len()..], payload);

            let mut header = Vec::new();
            Frame::encode_header(delta, payload.len(), &mut header);
            assert_eq!(header, head);

            let mut b = out.as_slice();
            assert_eq!(Frame::decode(&mut b), Ok(frame.clone()));
            assert!(b.is_empty());
            check_short(&out, |b| Frame::decode(b).map(|_| ()));
        }

        let mut huge = Vec::new();
        Frame::encode_header(0, MAX_FRAME_SIZE + 1, &mut huge);
        assert_eq!(
            Frame::decode(&mut huge.as_slice()),
            Err(DecodeError::TooLarge(MAX_FRAME_SIZE as u64 + 1))
        );
        let mut at_limit = Vec::new();
        Frame::encode_header(0, MAX_FRAME_SIZE, &mut at_limit);
        let mut b = at_limit.as_slice();
        assert_eq!(Frame::decode_header(&mut b), Ok((0, MAX_FRAME_SIZE as u64)));
        assert!(b.is_empty());
        assert_eq!(
            Frame::decode(&mut at_limit.as_slice()),
            Err(DecodeError::Short)
        );
    }

    #[test]
    fn datagram() {
        let dg = Datagram {
            subscribe_id: 1,
            group: 2,
            timestamp: 3,
            payload: b"world",
        };
        let mut out = Vec::new();
        dg.encode(&mut out).unwrap();
        // moq-net `no_inner_length_prefix`: 8 bytes, payload from byte 3.
        assert_eq!(out, [1, 2, 3, b'w', b'o', b'r', b'l', b'd']);
        assert_eq!(Datagram::decode(&out), Ok(dg));

        for cut in 0..3 {
            assert_eq!(Datagram::decode(&out[..cut]), Err(DecodeError::Short));
        }
        // Exactly 1200 bytes is fine, 1201 is not, either way.
        let payload = vec![0u8; MAX_DATAGRAM - 3];
        let dg = Datagram {
            subscribe_id: 0,
            group: 0,
            timestamp: 0,
            payload: &payload,
        };
        let mut out = Vec::new();
        dg.encode(&mut out).unwrap();
        assert_eq!(out.len(), MAX_DATAGRAM);
        assert_eq!(Datagram::decode(&out), Ok(dg));
        out.push(0);
        assert_eq!(Datagram::decode(&out), Err(DecodeError::TooLarge(1201)));
        let big = Datagram {
            subscribe_id: 64,
            group: 0,
            timestamp: 0,
            payload: &payload,
        };
        let mut out = vec![9];
        assert_eq!(big.encode(&mut out), Err(DecodeError::TooLarge(1201)));
        assert_eq!(out, [9], "a refused datagram writes nothing");
    }
}
