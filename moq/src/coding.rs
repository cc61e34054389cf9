//! Wire primitives shared by every moq-lite message: QUIC varints, strings, zigzag, errors.
//!
//! Decoding works on `&mut &[u8]`: on success the slice is advanced past what was read, on
//! error it is left exactly as it was, so a caller that gets [`DecodeError::Short`] can append
//! more bytes and retry from the same place.

use crate::MAX_MESSAGE_SIZE;

/// Largest value a QUIC varint can carry: 2^62 - 1.
pub const MAX_VARINT: u64 = (1 << 62) - 1;

/// Why a decode failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// More bytes are needed; retry with a longer buffer (nothing was consumed that matters:
    /// callers keep their own copy and retry from the start of the message).
    #[error("message incomplete")]
    Short,
    /// A length prefix announced more bytes than the receiver accepts.
    #[error("message too large: {0} bytes")]
    TooLarge(u64),
    /// A stream type or typed-message discriminator we do not know.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// The bytes are complete but malformed.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// A value that can be written to the wire.
pub trait Encode {
    /// Append the wire form of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The wire form of `self` as a fresh buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A value that can be read from the wire.
pub trait Decode: Sized {
    /// Read one value from the front of `buf`, advancing it past the bytes consumed.
    /// On error `buf` is unchanged.
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError>;
}

/// Append `v` as a QUIC variable-length integer (RFC 9000 §16), always in its shortest form.
///
/// Values at or above 2^62 cannot be represented; that is a caller bug, caught by a
/// `debug_assert!` and otherwise clamped to 2^62 - 1.
pub fn encode_varint(v: u64, out: &mut Vec<u8>) {
    debug_assert!(v <= MAX_VARINT, "varint {v} does not fit in 62 bits");
    let v = v.min(MAX_VARINT);
    match varint_len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xC000_0000_0000_0000).to_be_bytes()),
    }
}

/// Read a QUIC varint. Non-minimal encodings are accepted, as RFC 9000 §16 allows.
pub fn decode_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let first = *buf.first().ok_or(DecodeError::Short)?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return Err(DecodeError::Short);
    }
    let mut v = u64::from(first & 0x3F);
    for &b in &buf[1..len] {
        v = (v << 8) | u64::from(b);
    }
    *buf = &buf[len..];
    Ok(v)
}

/// How many bytes [`encode_varint`] writes for `v`.
pub fn varint_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Map a signed value onto an unsigned one so small magnitudes of either sign stay small
/// (0, -1, 1, -2, ... become 0, 1, 2, 3, ...). Used by FRAME's timestamp delta.
pub fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag_encode`].
pub fn zigzag_decode(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Append a string (s): varint byte length then UTF-8.
pub fn encode_string(s: &str, out: &mut Vec<u8>) {
    encode_bytes(s.as_bytes(), out);
}

/// Read a string (s). Lengths over [`MAX_MESSAGE_SIZE`] are [`DecodeError::TooLarge`],
/// non-UTF-8 content is [`DecodeError::Invalid`].
pub fn decode_string(buf: &mut &[u8]) -> Result<String, DecodeError> {
    let mut b = *buf;
    let bytes = decode_bytes(&mut b)?;
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid("string is not UTF-8"))?;
    *buf = b;
    Ok(s.to_owned())
}

/// Append a length-prefixed byte string.
pub fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Read a length-prefixed byte string, borrowing it from `buf`.
pub fn decode_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let mut b = *buf;
    let len = decode_varint(&mut b)?;
    if len > MAX_MESSAGE_SIZE as u64 {
        return Err(DecodeError::TooLarge(len));
    }
    let len = len as usize;
    if b.len() < len {
        return Err(DecodeError::Short);
    }
    let (bytes, rest) = b.split_at(len);
    *buf = rest;
    Ok(bytes)
}

/// Read one byte (the `(8)` fields: priorities).
pub fn decode_u8(buf: &mut &[u8]) -> Result<u8, DecodeError> {
    let (&b, rest) = buf.split_first().ok_or(DecodeError::Short)?;
    *buf = rest;
    Ok(b)
}

/// Encode an optional value with the "+1" offset the draft uses: `None` is 0, `Some(n)` is n+1.
pub(crate) fn encode_plus_one(v: Option<u64>, out: &mut Vec<u8>) {
    encode_varint(v.map_or(0, |v| v.saturating_add(1)), out);
}

/// Decode the "+1" offset form of [`encode_plus_one`].
pub(crate) fn decode_plus_one(buf: &mut &[u8]) -> Result<Option<u64>, DecodeError> {
    Ok(decode_varint(buf)?.checked_sub(1))
}

/// Append a length-prefixed message whose body is written by `body`.
pub(crate) fn encode_sized(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    body(out);
    let len = out.len() - start;
    let mut prefix = Vec::with_capacity(8);
    encode_varint(len as u64, &mut prefix);
    out.splice(start..start, prefix);
}

/// Read the Message Length prefix and make sure the whole body is present, returning the
/// body and the bytes after it. Does not advance `buf`.
pub(crate) fn split_sized(buf: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let mut b = buf;
    let len = decode_varint(&mut b)?;
    if len > MAX_MESSAGE_SIZE as u64 {
        return Err(DecodeError::TooLarge(len));
    }
    let len = len as usize;
    if b.len() < len {
        return Err(DecodeError::Short);
    }
    Ok(b.split_at(len))
}

/// Decode a length-prefixed message body with `f`, which must consume the body exactly.
///
/// A body that runs out inside `f` is [`DecodeError::Invalid`]: the length said the message was
/// complete, so more bytes would not help.
pub(crate) fn decode_sized<T>(
    buf: &mut &[u8],
    f: impl FnOnce(&mut &[u8]) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let (body, rest) = split_sized(buf)?;
    let v = decode_body(body, f)?;
    *buf = rest;
    Ok(v)
}

/// Run `f` on a complete body, requiring it to consume every byte.
pub(crate) fn decode_body<T>(
    mut body: &[u8],
    f: impl FnOnce(&mut &[u8]) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let v = f(&mut body).map_err(|e| match e {
        DecodeError::Short => DecodeError::Invalid("message body shorter than its fields"),
        other => other,
    })?;
    if !body.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes in message body"));
    }
    Ok(v)
}

/// Total size of the typed message (Type + Message Length + body) at the front of `buf`.
///
/// Useful to skip a message whose type came back as [`DecodeError::UnknownType`]
/// (moq-net skips unknown ANNOUNCE types this way instead of failing the stream).
pub fn typed_message_len(buf: &[u8]) -> Result<usize, DecodeError> {
    let mut b = buf;
    decode_varint(&mut b)?;
    let (_, rest) = split_sized(b)?;
    Ok(buf.len() - rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_rfc9000_examples() {
        // RFC 9000 Appendix A.1.
        let cases: &[(&[u8], u64)] = &[
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (wire, value) in cases {
            let mut b = *wire;
            assert_eq!(decode_varint(&mut b), Ok(*value));
            assert!(b.is_empty());
            let mut out = Vec::new();
            encode_varint(*value, &mut out);
            assert_eq!(&out, wire);
            assert_eq!(varint_len(*value), wire.len());
        }
        // Non-minimal 37 is accepted.
        let mut b: &[u8] = &[0x40, 0x25];
        assert_eq!(decode_varint(&mut b), Ok(37));
    }

    #[test]
    fn varint_boundaries() {
        for (v, len) in [
            (0u64, 1),
            (63, 1),
            (64, 2),
            (16_383, 2),
            (16_384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            (MAX_VARINT, 8),
        ] {
            let mut out = Vec::new();
            encode_varint(v, &mut out);
            assert_eq!(out.len(), len, "{v}");
            let mut b = out.as_slice();
            assert_eq!(decode_varint(&mut b), Ok(v));
            // Every truncation is Short and leaves the buffer alone.
            for cut in 0..out.len() {
                let mut b = &out[..cut];
                assert_eq!(decode_varint(&mut b), Err(DecodeError::Short));
                assert_eq!(b.len(), cut);
            }
        }
        // moq-net's lite-06 vectors.
        let mut out = Vec::new();
        encode_varint(16_384, &mut out);
        assert_eq!(out, [0x80, 0x00, 0x40, 0x00]);
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn varint_clamps_in_release() {
        let mut out = Vec::new();
        encode_varint(u64::MAX, &mut out);
        assert_eq!(out, [0xFF; 8]);
    }

    #[test]
    fn zigzag() {
        for (s, u) in [
            (0i64, 0u64),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (2, 4),
            (i64::MAX, u64::MAX - 1),
            (i64::MIN, u64::MAX),
        ] {
            assert_eq!(zigzag_encode(s), u);
            assert_eq!(zigzag_decode(u), s);
        }
    }

    #[test]
    fn strings() {
        let mut out = Vec::new();
        encode_string("héllo", &mut out);
        assert_eq!(out[0], 6);
        let mut b = out.as_slice();
        assert_eq!(decode_string(&mut b).unwrap(), "héllo");
        assert!(b.is_empty());
        for cut in 0..out.len() {
            let mut b = &out[..cut];
            assert_eq!(decode_string(&mut b), Err(DecodeError::Short));
        }
        let mut bad: &[u8] = &[2, 0xC3, 0x28];
        assert_eq!(
            decode_string(&mut bad),
            Err(DecodeError::Invalid("string is not UTF-8"))
        );
        let mut out = Vec::new();
        encode_varint(MAX_MESSAGE_SIZE as u64 + 1, &mut out);
        assert_eq!(
            decode_string(&mut out.as_slice()),
            Err(DecodeError::TooLarge(MAX_MESSAGE_SIZE as u64 + 1))
        );
    }

    #[test]
    fn sized_prefix_is_spliced_in_front() {
        let mut out = vec![0xAA];
        encode_sized(&mut out, |o| o.extend(std::iter::repeat_n(7u8, 100)));
        assert_eq!(&out[..3], &[0xAA, 0x40, 100]);
        assert_eq!(out.len(), 103);
    }
}
