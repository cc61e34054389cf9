//! The Veza media path. [`engine`] is the sans-IO forwarding core: rooms, tracks, per-subscriber
//! rewriting of SSRC, sequence numbers and timestamps, NACK answers from a packet cache, and
//! active-speaker detection from audio levels. It takes `now` as input and never reads a clock,
//! so it runs the same in production and on the virtual clock of the simulation tests.
//! [`webrtc`] drives it: one tokio task owning the UDP socket and every str0m peer. [`quic`]
//! joins moq-lite sessions (raw QUIC and WebTransport) to the same shard. [`relay`] is the
//! cluster cascade: a node pulls a room's tracks from the other nodes hosting it.

pub mod engine;
pub mod quic;
pub mod relay;
pub mod webrtc;

use veza_proto::MediaClaims;

/// Checks media tokens (the API's key ring in `veza serve`).
pub trait TokenVerifier: Send + Sync + 'static {
    /// The claims of a valid media token, or why it is not valid.
    fn verify_media(&self, token: &str) -> Result<MediaClaims, String>;
}
