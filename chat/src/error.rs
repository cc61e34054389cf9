//! What chat refuses, and why.

use std::time::Duration;

use veza_store::StoreError;

/// Why a chat operation was refused. [`ChatError::code`] is a stable snake_case code that the
/// API and signaling hand to clients; the API maps each variant to an HTTP status in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The text is empty or only whitespace.
    #[error("the message is empty")]
    EmptyMessage,
    /// The text is longer than the configured maximum.
    #[error("the message is longer than {max} characters")]
    MessageTooLong {
        /// The maximum, in characters.
        max: usize,
    },
    /// The text holds a control character other than tab, line feed or carriage return
    /// (U+0000 included, which PostgreSQL cannot store).
    #[error("the message contains control characters")]
    InvalidText,
    /// The client id is not 1–64 characters of `A-Z a-z 0-9 _ -`.
    #[error("client_id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidClientId,
    /// The text contains a word of the room's word filter.
    #[error("the message contains a blocked word")]
    BlockedWord,
    /// The user sent too many messages; try again after `retry_after`.
    #[error("too many chat messages; retry later")]
    RateLimited {
        /// When a message will be accepted again.
        retry_after: Duration,
    },
    /// The participant's media token does not grant `can_chat`.
    #[error("this participant may not chat")]
    NoChatGrant,
    /// A moderator muted the user in this room's chat.
    #[error("you are muted in this room's chat")]
    Muted,
    /// The user is banned from the room.
    #[error("you are banned from this room")]
    Banned,
    /// The room is private and the user is not a member.
    #[error("this room is private")]
    NotMember,
    /// The room does not exist.
    #[error("room not found")]
    RoomNotFound,
    /// The room has no message with this sequence number.
    #[error("message not found")]
    MessageNotFound,
    /// The target user does not exist.
    #[error("user not found")]
    UserNotFound,
    /// Unmute: the user is not muted.
    #[error("mute not found")]
    NotMuted,
    /// The message was deleted; it cannot be edited or deleted again.
    #[error("the message was deleted")]
    MessageDeleted,
    /// Edit: the caller did not write the message. Delete: the caller did not write it and
    /// does not moderate the room.
    #[error("only the message's author (or, to delete it, a moderator) may do this")]
    NotAuthor,
    /// Mute or unmute: the caller is not the room's owner or a moderator.
    #[error("only the room's owner or a moderator may do this")]
    NotModerator,
    /// Mute or unmute: the target is the room's owner.
    #[error("the room's owner cannot be muted")]
    OwnerProtected,
    /// Mute or unmute: a moderator acted on a moderator; only the owner may.
    #[error("only the room's owner may mute or unmute a moderator")]
    OwnerOnly,
    /// The database failed (or something the operation needs disappeared meanwhile).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChatError {
    /// The stable snake_case code clients match on (the HTTP API uses the same codes).
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::EmptyMessage => "empty_message",
            ChatError::MessageTooLong { .. } => "message_too_long",
            ChatError::InvalidText => "invalid_text",
            ChatError::InvalidClientId => "invalid_client_id",
            ChatError::BlockedWord => "blocked_word",
            ChatError::RateLimited { .. } => "chat_rate_limited",
            ChatError::NoChatGrant => "chat_not_allowed",
            ChatError::Muted => "chat_muted",
            ChatError::Banned => "banned",
            ChatError::NotMember => "not_a_member",
            ChatError::RoomNotFound
            | ChatError::MessageNotFound
            | ChatError::UserNotFound
            | ChatError::NotMuted => "not_found",
            ChatError::MessageDeleted => "message_deleted",
            ChatError::NotAuthor => "not_author",
            ChatError::NotModerator => "not_moderator",
            ChatError::OwnerProtected => "owner_protected",
            ChatError::OwnerOnly => "owner_only",
            ChatError::Store(_) => "internal",
        }
    }

    /// For [`ChatError::RateLimited`]: when to try again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ChatError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}
