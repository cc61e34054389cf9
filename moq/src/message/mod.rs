//! Every message of moq-lite-06, as moq-net 0.3.18 puts it on the wire.
//!
//! Each control message struct implements [`Encode`](crate::Encode) and
//! [`Decode`](crate::Decode) *including* its Message Length prefix (and its Type discriminator
//! for the typed ones: [`Announce`] and [`SubscribeReply`]). Decoding:
//!
//! - returns [`DecodeError::Short`](crate::DecodeError::Short) while the buffer ends early,
//! - returns [`DecodeError::TooLarge`](crate::DecodeError::TooLarge) as soon as a length prefix
//!   exceeds [`MAX_MESSAGE_SIZE`](crate::MAX_MESSAGE_SIZE),
//! - requires the body to be consumed exactly (trailing bytes, or fields running past the
//!   length, are [`DecodeError::Invalid`](crate::DecodeError::Invalid)),
//! - leaves the input untouched on any error.
//!
//! # Where moq-net and the draft disagree
//!
//! The draft text (`draft-lcurley-moq-lite`, changelog "moq-lite-06") and moq-net 0.3.18
//! (`lite::Version::Lite06`, ALPN `moq-lite-06`) do not put the same bytes on the wire. We
//! follow moq-net, since that is what peers run. Fields the draft has but moq-net does not
//! send are kept on the structs for API stability, are **ignored when encoding**, and come back
//! as `0`/`false` when decoding; each is marked "not on the wire" below. Fields moq-net sends
//! but the draft lacks were added. In short:
//!
//! | message | draft 06 | moq-net 0.3.18 Lite06 (what we do) |
//! |---|---|---|
//! | ANNOUNCE_REQUEST | prefix, Ended | prefix only |
//! | ANNOUNCE_START/UPDATE | Epoch, Ended, Route Cost | no Epoch, no Ended; cost is two varints (warm, cold) |
//! | ANNOUNCE (unknown type) | — | skipped by length, stream stays up |
//! | SUBSCRIBE | Epoch, Ordered (8), Group Start = seq+1 | no Epoch, no Ordered byte, Group Start is the raw sequence (0 = no floor), + Frame Start, Frame End (+1) |
//! | SUBSCRIBE_UPDATE | Ordered (8), Group Start = seq+1 | no Ordered byte, raw Group Start, + Frame Start, Frame End (+1) |
//! | TRACK | Epoch | no Epoch |
//! | TRACK_INFO | Epoch, Ordered (8) | neither |
//! | FETCH | Epoch | no Epoch, + Frame Start, Frame End (+1) |
//! | GROUP | Subscribe ID, Sequence | + Frame Start |
//! | DATAGRAM | body <= 1200 bytes | not enforced by moq-net (we enforce it) |

mod announce;
mod group;
mod request;
mod setup;
mod stream;
mod subscribe;

pub use announce::*;
pub use group::*;
pub use request::*;
pub use setup::*;
pub use stream::*;
pub use subscribe::*;

#[cfg(test)]
pub(crate) mod test_util {
    use crate::{Decode, DecodeError, Encode, MAX_MESSAGE_SIZE};
    use std::fmt::Debug;

    /// Round trip `msg`, check it encodes to `wire` (if given), and check every
    /// truncation is `Short`, an oversized length is `TooLarge` and trailing bytes are `Invalid`.
    pub fn check<T: Encode + Decode + PartialEq + Debug>(msg: &T, wire: Option<&[u8]>) {
        let bytes = msg.to_bytes();
        if let Some(wire) = wire {
            assert_eq!(bytes, wire, "{msg:?}");
        }
        let mut b = bytes.as_slice();
        assert_eq!(&T::decode(&mut b).expect("decode"), msg);
        assert!(b.is_empty());

        // Followed by another message: only the first is consumed.
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let mut b = two.as_slice();
        assert_eq!(&T::decode(&mut b).unwrap(), msg);
        assert_eq!(b, bytes.as_slice());

        check_short(&bytes, |b| T::decode(b).map(|_| ()));
    }

    /// Every strict prefix of `bytes` is `Short` and leaves the buffer alone.
    pub fn check_short(bytes: &[u8], decode: impl Fn(&mut &[u8]) -> Result<(), DecodeError>) {
        for cut in 0..bytes.len() {
            let mut b = &bytes[..cut];
            assert_eq!(
                decode(&mut b),
                Err(DecodeError::Short),
                "cut at {cut} of {bytes:02x?}"
            );
            assert_eq!(b.len(), cut, "a failed decode consumed input");
        }
    }

    /// For a length-prefixed message starting at `at` (after any Type), an extra byte in the
    /// body is `Invalid`, a body one byte short of its fields is `Invalid`, and a length over
    /// the limit is `TooLarge`.
    pub fn check_framing<T: Decode + Debug>(bytes: &[u8], at: usize) {
        let mut b = &bytes[at..];
        let len = crate::coding::decode_varint(&mut b).unwrap();
        let prefix_len = bytes.len() - at - b.len();
        let body = &bytes[at + prefix_len..];
        assert_eq!(body.len() as u64, len);

        let reframe = |body: &[u8]| {
            let mut out = bytes[..at].to_vec();
            crate::coding::encode_varint(body.len() as u64, &mut out);
            out.extend_from_slice(body);
            out
        };

        let mut longer = body.to_vec();
        longer.push(0);
        let wire = reframe(&longer);
        assert_eq!(
            T::decode(&mut wire.as_slice()).unwrap_err(),
            DecodeError::Invalid("trailing bytes in message body")
        );

        if !body.is_empty() {
            let wire = reframe(&body[..body.len() - 1]);
            assert!(
                matches!(
                    T::decode(&mut wire.as_slice()),
                    Err(DecodeError::Invalid(_))
                ),
                "a body cut short must be Invalid"
            );
        }

        let mut huge = bytes[..at].to_vec();
        crate::coding::encode_varint(MAX_MESSAGE_SIZE as u64 + 1, &mut huge);
        assert_eq!(
            T::decode(&mut huge.as_slice()).unwrap_err(),
            DecodeError::TooLarge(MAX_MESSAGE_SIZE as u64 + 1)
        );
    }
}
