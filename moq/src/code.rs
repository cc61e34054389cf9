//! Application error codes for closing a session or resetting a stream, with moq-net 0.3.18's
//! values (`SessionError::to_code` / `StreamError::to_code` in its `error.rs`).
//!
//! moq-lite has **two disjoint registries**: one for CONNECTION_CLOSE (session) and one for
//! RESET_STREAM / STOP_SENDING (stream). The same number means different things in each
//! (a session close of 0 is a clean close, a stream reset of 0 is an internal error).
//! Codes 32..=47 are reserved; 64 and up are the application's (`APP_BASE + n`).
//!
//! The three names asked for at the top level are re-exported from the registry they belong to:
//! [`PROTOCOL_VIOLATION`] and [`UNAUTHORIZED`] close a session, [`NOT_FOUND`] resets a stream.

pub use session::{PROTOCOL_VIOLATION, UNAUTHORIZED};
pub use stream::NOT_FOUND;

/// First application-defined code, in both registries (moq-net `App(n)` = 64 + n).
pub const APP_BASE: u32 = 64;

/// Session close codes (QUIC CONNECTION_CLOSE / WebTransport session close).
pub mod session {
    /// Ending the session normally, no error.
    pub const NO_ERROR: u32 = 0x0;
    /// Something went wrong that has no dedicated code.
    pub const INTERNAL_ERROR: u32 = 0x1;
    /// The peer's credentials do not grant the requested path or role; retrying will not help.
    pub const UNAUTHORIZED: u32 = 0x2;
    /// The peer broke a protocol rule (malformed message, second SETUP, bad Path, ...).
    pub const PROTOCOL_VIOLATION: u32 = 0x3;
    /// A key-value pair (e.g. a SETUP parameter) was malformed or repeated.
    pub const KEY_VALUE_FORMATTING: u32 = 0x6;
    /// The peer did not close within the GOAWAY drain deadline.
    pub const GOAWAY_TIMEOUT: u32 = 0x10;
    /// A control message took too long.
    pub const CONTROL_TIMEOUT: u32 = 0x11;
    /// No version could be negotiated.
    pub const VERSION_NEGOTIATION_FAILED: u32 = 0x15;
    /// Veza's GOAWAY: this node is draining; connect again through the API, which places the
    /// session on another node. (moq-lite-06 has no GOAWAY message, so the close code says it.)
    pub const GOING_AWAY: u32 = super::APP_BASE + 1;
}

/// Stream reset / STOP_SENDING codes.
pub mod stream {
    /// Something went wrong that has no dedicated code.
    pub const INTERNAL_ERROR: u32 = 0x0;
    /// The sender is done with the stream: a routine unsubscribe or cancel, not a failure.
    pub const CANCELLED: u32 = 0x1;
    /// The content missed its delivery deadline.
    pub const DELIVERY_TIMEOUT: u32 = 0x2;
    /// The session ended, taking the stream with it (the reason is on the session close).
    pub const SESSION_CLOSED: u32 = 0x3;
    /// The session is going away (GOAWAY).
    pub const GOING_AWAY: u32 = 0x4;
    /// The reader fell too far behind and content was dropped.
    pub const TOO_FAR_BEHIND: u32 = 0x5;
    /// The track's content could not be parsed (e.g. FRAMEs that don't fit TRACK_INFO).
    pub const MALFORMED_TRACK: u32 = 0x12;
    /// A control request took too long to be answered.
    pub const CONTROL_TIMEOUT: u32 = 0x31;
    /// A group grew past its cache budget and was aborted.
    pub const GROUP_TOO_LARGE: u32 = 0x32;
    /// The requested broadcast or track does not exist here (reject a SUBSCRIBE/FETCH/TRACK).
    pub const NOT_FOUND: u32 = 0x33;
    /// The group was superseded by a newer one and dropped (expiration).
    pub const OLD: u32 = 0x34;
    /// The group was dropped under memory pressure while still current; it may be refetched.
    pub const EVICTED: u32 = 0x35;
    /// No route to the broadcast: neither announced nor served.
    pub const UNROUTABLE: u32 = 0x36;
    /// A frame's payload length disagreed with its declared size.
    pub const WRONG_SIZE: u32 = 0x37;
    /// A frame declared a payload larger than the receiver accepts.
    pub const FRAME_TOO_LARGE: u32 = 0x38;
    /// A frame's timestamp doesn't match its track's timescale.
    pub const TIMESTAMP_MISMATCH: u32 = 0x39;
}
