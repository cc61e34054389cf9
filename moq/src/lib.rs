//! moq-lite (Media over QUIC, lite profile) for Veza: a sans-IO wire codec for
//! `moq-lite-06` and the hang `catalog.json` types.
//!
//! Nothing here does I/O. The session code reads bytes off QUIC streams into a buffer and calls
//! [`Decode::decode`] until it stops returning [`DecodeError::Short`]; it writes with
//! [`Encode::encode`]. The bytes follow what moq-net 0.3.18 sends for `Lite06` where that
//! differs from the draft text; [`message`] lists the differences.
//!
//! Stream layout recap (each stream starts with its type varint):
//!
//! - uni `0x1` Setup: [`message::Setup`], FIN. Each side opens one.
//! - uni `0x0` Group: [`message::Group`], then [`message::Frame`]s, FIN.
//! - bidi `0x1` Announce: [`message::AnnounceRequest`] up; [`message::AnnounceOk`] then
//!   [`message::Announce`]s down.
//! - bidi `0x2` Subscribe: [`message::Subscribe`] then [`message::SubscribeUpdate`]s up;
//!   [`message::SubscribeReply`]s down.
//! - bidi `0x3` Fetch: [`message::Fetch`] up; [`message::Frame`]s down.
//! - bidi `0x4` Probe: [`message::Probe`] both ways.
//! - bidi `0x5` Goaway: [`message::Goaway`].
//! - bidi `0x6` Track: [`message::Track`] up; [`message::TrackInfo`] down.
//! - QUIC datagrams: [`message::Datagram`].

pub mod catalog;
pub mod code;
pub mod coding;
#[doc(hidden)]
pub mod fuzz;
pub mod message;
pub mod session;

pub use coding::{Decode, DecodeError, Encode};

/// The ALPN / WebTransport protocol of the version we speak.
pub const ALPN: &str = "moq-lite-06";

/// Largest control message (length-prefixed body) we accept: 64 KiB.
///
/// moq-net accepts up to 64 MiB for control messages (64 KiB for SETUP) but never sends
/// anything near this in practice; a peer exceeding it gets [`DecodeError::TooLarge`].
pub const MAX_MESSAGE_SIZE: usize = 65_536;
