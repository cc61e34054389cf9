//! The signaling protocol, version 1: JSON text frames on the WebSocket `GET /rtc?token=…`,
//! each an object with a `type`. See `docs/protocol.md`.

use serde::{Deserialize, Serialize};

use crate::{Grants, ParticipantId, Role, RoomId, UserId};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest text frame a client may send, in bytes.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// A participant as the room shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// The participant (one join of a user).
    pub participant_id: ParticipantId,
    /// The user.
    pub user_id: UserId,
    /// Display name.
    pub name: String,
    /// Role in the room.
    pub role: Role,
    /// Publishing audio now.
    pub publishing: bool,
    /// Muted (by themselves or a moderator).
    pub muted: bool,
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The answer to the server's latest offer.
    Answer {
        /// SDP.
        sdp: String,
    },
    /// A trickled ICE candidate (`candidate:…`); optional with this ICE-lite server.
    Candidate {
        /// The candidate line.
        candidate: String,
    },
    /// Start sending the microphone (needs the publish grant).
    Publish,
    /// Stop sending it.
    Unpublish,
    /// Mute or unmute oneself.
    Mute {
        /// The new state.
        muted: bool,
    },
    /// A moderator's action on another participant.
    Moderate {
        /// Whom.
        participant_id: ParticipantId,
        /// What.
        action: ModerateAction,
    },
    /// Keepalive; answered with `pong`.
    Ping,
}

/// What a moderator can do to a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerateAction {
    /// Stop forwarding their audio.
    Mute,
    /// Forward it again.
    Unmute,
    /// Remove them from the room now.
    Kick,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The first message: who you are and who is here. An `offer` follows.
    Joined {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The room.
        room_id: RoomId,
        /// You.
        participant_id: ParticipantId,
        /// What you may do.
        grants: Grants,
        /// Everyone in the room, you included.
        participants: Vec<ParticipantInfo>,
        /// True when this session resumed an earlier one (reconnect).
        resumed: bool,
    },
    /// An SDP offer to answer with `answer`.
    Offer {
        /// SDP.
        sdp: String,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left (or was kicked).
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
    },
    /// Someone started publishing.
    TrackPublished {
        /// Who.
        participant_id: ParticipantId,
    },
    /// Someone stopped publishing.
    TrackUnpublished {
        /// Who.
        participant_id: ParticipantId,
    },
    /// The loudest speakers, loudest first (at most every 500 ms, on change).
    Speaking {
        /// Speakers with levels from 0.0 to 1.0.
        speakers: Vec<Speaker>,
    },
    /// Someone was muted or unmuted.
    Muted {
        /// Who.
        participant_id: ParticipantId,
        /// The new state.
        muted: bool,
        /// True when a moderator did it (the server stops forwarding their audio).
        by_moderator: bool,
    },
    /// Media is connected.
    Connected,
    /// Answer to `ping`.
    Pong,
    /// You were removed from the room; the socket closes.
    Kicked,
    /// This media node is going away (draining or shutting down): join the room again
    /// through the API, which places you on another node. The socket closes.
    Reconnect {
        /// Why, e.g. `draining`.
        reason: String,
    },
    /// A request failed; the session goes on.
    Error {
        /// snake_case.
        code: String,
        /// A sentence.
        message: String,
    },
}

/// One entry of [`ServerMessage::Speaking`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speaker {
    /// Who.
    pub participant_id: ParticipantId,
    /// Smoothed level, 0.0 (silence) to 1.0.
    pub level: f32,
}

impl ServerMessage {
    /// An error message.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}
