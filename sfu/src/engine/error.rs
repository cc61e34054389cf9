//! The engine's one error type for control calls. Media inputs (`handle_rtp`, `handle_nack`)
//! never fail: what they cannot use is dropped and counted in [`Stats`](super::Stats).

use std::fmt;

use veza_proto::{ParticipantId, TrackId};

/// The grant a call needed and the participant did not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `Grants::can_publish`.
    Publish,
    /// `Grants::can_subscribe`.
    Subscribe,
}

/// Why a control call was refused. Nothing changed in the engine when one is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// The participant's grants do not allow this.
    NotAllowed {
        /// Who asked.
        participant: ParticipantId,
        /// The grant it lacks.
        needs: Permission,
    },
    /// No such participant in this engine.
    UnknownParticipant(ParticipantId),
    /// This participant id is already in a room of this engine.
    ParticipantExists(ParticipantId),
    /// No such track, or not published by this participant.
    UnknownTrack(TrackId),
    /// This track id is already published.
    TrackExists(TrackId),
    /// The participant already publishes a track (one audio track each).
    AlreadyPublishing {
        /// Who asked.
        participant: ParticipantId,
        /// The track it publishes.
        track: TrackId,
    },
    /// Active-speaker slot count outside 1..=`MAX_SPEAKER_SLOTS`.
    InvalidSlotCount(u8),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::NotAllowed { participant, needs } => {
                let what = match needs {
                    Permission::Publish => "publish",
                    Permission::Subscribe => "subscribe",
                };
                write!(f, "participant {participant} may not {what}")
            }
            EngineError::UnknownParticipant(p) => write!(f, "unknown participant {p}"),
            EngineError::ParticipantExists(p) => write!(f, "participant {p} is already in a room"),
            EngineError::UnknownTrack(t) => write!(f, "unknown track {t}"),
            EngineError::TrackExists(t) => write!(f, "track {t} is already published"),
            EngineError::AlreadyPublishing { participant, track } => {
                write!(
                    f,
                    "participant {participant} already publishes track {track}"
                )
            }
            EngineError::InvalidSlotCount(n) => write!(
                f,
                "active-speaker slot count {n} is outside 1..={}",
                super::MAX_SPEAKER_SLOTS
            ),
        }
    }
}

impl std::error::Error for EngineError {}
