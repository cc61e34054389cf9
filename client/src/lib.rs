//! The Veza command-line client: `veza broadcast` publishes an audio file or live PCM into a
//! room over moq-lite (QUIC), `veza listen` subscribes and writes WAV or Ogg Opus.
//!
//! [`audio`] is the sound side (decoding files, resampling, Opus, WAV and Ogg writers), [`net`]
//! the network side (credentials, the QUIC endpoint, a pinned certificate), and
//! [`broadcast`] and [`listen`] put them together at real-time pace.

pub mod audio;
pub mod broadcast;
pub mod listen;
pub mod net;
mod timing;

pub use net::{Credentials, Target};

/// Why a command failed; its message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading, decoding or encoding audio failed.
    #[error(transparent)]
    Audio(#[from] audio::AudioError),
    /// Connecting failed.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// The server ended the session (a refused token, a kick, a shutdown) or went silent.
    #[error("the server ended the session: {0}")]
    Closed(String),
    /// Writing output failed.
    #[error("{0}")]
    Io(String),
}
