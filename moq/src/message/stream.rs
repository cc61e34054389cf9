//! STREAM_TYPE: the varint at the start of every stream.

use crate::coding::{decode_varint, encode_varint};
use crate::{Decode, DecodeError, Encode};

/// The type of a bidirectional (control) stream, its first varint.
///
/// moq-net also knows 0 (`Session`, lite-01/02 only); on lite-06 that decodes here as
/// [`DecodeError::UnknownType`]`(0)`, and moq-net itself rejects it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// Announce Stream (subscriber opens): ANNOUNCE_REQUEST, then ANNOUNCE_OK + announcements.
    Announce = 1,
    /// Subscribe Stream (subscriber opens): SUBSCRIBE, then SUBSCRIBE_OK/END/DROP.
    Subscribe = 2,
    /// Fetch Stream (subscriber opens): FETCH, then bare FRAMEs.
    Fetch = 3,
    /// Probe Stream (subscriber opens): PROBE both ways.
    Probe = 4,
    /// Goaway Stream (either side): GOAWAY.
    Goaway = 5,
    /// Track Stream (subscriber opens): TRACK, then TRACK_INFO.
    Track = 6,
}

impl StreamType {
    /// The stream type for a wire value, if known.
    pub fn from_u64(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Announce,
            2 => Self::Subscribe,
            3 => Self::Fetch,
            4 => Self::Probe,
            5 => Self::Goaway,
            6 => Self::Track,
            _ => return None,
        })
    }
}

impl Encode for StreamType {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_varint(*self as u64, out);
    }
}

impl Decode for StreamType {
    /// Unknown types are [`DecodeError::UnknownType`]: the draft says to reset that stream,
    /// not to fail the session.
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let mut b = *buf;
        let v = decode_varint(&mut b)?;
        let t = Self::from_u64(v).ok_or(DecodeError::UnknownType(v))?;
        *buf = b;
        Ok(t)
    }
}

/// The type of a unidirectional stream, its first varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UniStreamType {
    /// Group Stream (publisher opens): GROUP, then FRAMEs.
    Group = 0,
    /// Setup Stream (each side opens exactly one): a single SETUP, then FIN.
    Setup = 1,
}

impl UniStreamType {
    /// The stream type for a wire value, if known.
    pub fn from_u64(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::Group),
            1 => Some(Self::Setup),
            _ => None,
        }
    }
}

impl Encode for UniStreamType {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_varint(*self as u64, out);
    }
}

impl Decode for UniStreamType {
    /// Unknown types are [`DecodeError::UnknownType`].
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let mut b = *buf;
        let v = decode_varint(&mut b)?;
        let t = Self::from_u64(v).ok_or(DecodeError::UnknownType(v))?;
        *buf = b;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_types() {
        for (t, v) in [
            (StreamType::Announce, 1u8),
            (StreamType::Subscribe, 2),
            (StreamType::Fetch, 3),
            (StreamType::Probe, 4),
            (StreamType::Goaway, 5),
            (StreamType::Track, 6),
        ] {
            assert_eq!(t.to_bytes(), [v]);
            assert_eq!(StreamType::decode(&mut &[v][..]), Ok(t));
        }
        for v in [0u8, 7, 0x3F] {
            let mut b = &[v][..];
            assert_eq!(
                StreamType::decode(&mut b),
                Err(DecodeError::UnknownType(v.into()))
            );
            assert_eq!(b.len(), 1);
        }
        assert_eq!(StreamType::decode(&mut &[][..]), Err(DecodeError::Short));
        assert_eq!(
            StreamType::decode(&mut &[0x40][..]),
            Err(DecodeError::Short)
        );
        // Non-minimal encodings of a known type are fine.
        assert_eq!(
            StreamType::decode(&mut &[0x40, 0x02][..]),
            Ok(StreamType::Subscribe)
        );
    }

    #[test]
    fn uni_types() {
        assert_eq!(UniStreamType::Group.to_bytes(), [0]);
        assert_eq!(UniStreamType::Setup.to_bytes(), [1]);
        assert_eq!(
            UniStreamType::decode(&mut &[0][..]),
            Ok(UniStreamType::Group)
        );
        assert_eq!(
            UniStreamType::decode(&mut &[1][..]),
            Ok(UniStreamType::Setup)
        );
        assert_eq!(
            UniStreamType::decode(&mut &[2][..]),
            Err(DecodeError::UnknownType(2))
        );
        assert_eq!(UniStreamType::decode(&mut &[][..]), Err(DecodeError::Short));
    }
}
