//! `veza loadtest`: drives many WebRTC (str0m) or moq-lite (QUIC) peers against a running
//! Veza server and measures what the SFU forwards, and `veza loadtest --baseline`: what this
//! machine can do at most (UDP sends, SRTP protection), to compare with.
//!
//! A run creates its users, rooms and media tokens through the HTTP API ([`api`]), connects
//! every publisher, then every subscriber, and measures for the given duration once all are
//! ready. Publishers send a pre-encoded Opus tone ([`tone`]) at 50 packets/s, each packet
//! carrying its send time as Opus padding ([`payload`]); subscribers measure latency, loss,
//! jitter ([`stats`]) from what arrives. Every peer is a tokio task on a runtime of a few
//! threads ([`webrtc`], [`quic`]). With `--misbehave K`, K clients send garbage and abandon
//! sessions during the window ([`misbehave`]).
//!
//! Two more modes: `--signaling N` holds N idle signaling WebSocket sessions and reports the
//! join rate and the server's memory per session ([`sessions`]); `--chat` measures chat
//! messages through the `chat` data channel ([`chat`]).

pub mod api;
pub mod baseline;
pub mod chat;
pub mod clock;
pub mod fdlimit;
pub mod live;
pub mod meter;
pub mod misbehave;
pub mod payload;
pub mod peer;
pub mod proc;
pub mod progress;
pub mod quic;
pub mod report;
pub mod sessions;
pub mod stats;
pub mod tone;
pub mod webrtc;
pub mod ws;

mod run;

use std::time::Duration;

pub use report::Report;
pub use run::run;

/// Which build made these figures: a debug build measures mostly itself.
pub const BUILD: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// The transport the peers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WHIP/WHEP with str0m peers.
    WebRtc,
    /// moq-lite over raw QUIC.
    Quic,
}

impl Transport {
    /// `webrtc` or `quic`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebRtc => "webrtc",
            Transport::Quic => "quic",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's HTTP base URL.
    pub server: String,
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room.
    pub subscribers: usize,
    /// How long to measure once every peer is ready.
    pub duration: Duration,
    /// WebRTC or QUIC.
    pub transport: Transport,
    /// The server's process id, for its CPU time and memory.
    pub server_pid: Option<u32>,
    /// Runtime threads driving the peers.
    pub threads: usize,
    /// Peers connecting at once.
    pub concurrent_connects: usize,
    /// Show the progress line on stderr.
    pub progress: bool,
    /// Misbehaving clients beside the run ([`misbehave`]).
    pub misbehave: usize,
    /// Garbage datagrams per second per misbehaving client.
    pub misbehave_pps: u32,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP API refused or could not be reached.
    #[error("{0}")]
    Api(String),
    /// Setting up failed.
    #[error("{0}")]
    Setup(String),
    /// Encoding the tone failed.
    #[error(transparent)]
    Audio(#[from] veza_client::audio::AudioError),
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
