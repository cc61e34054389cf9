//! Wire types shared by every Veza service: newtype IDs, room roles, grants, the claims of
//! the media token, and chat messages and events ([`chat`]). No I/O lives here.

pub mod chat;
pub mod signal;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (v4) id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A registered user.
    UserId
);
id_type!(
    /// A room.
    RoomId
);
id_type!(
    /// One presence of a user in a room: every join gets a new one.
    ParticipantId
);
id_type!(
    /// A published media track.
    TrackId
);
id_type!(
    /// A chat message (stable across edits and deletion; within a room, `seq` orders messages).
    MessageId
);

/// A user's role in a room, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the room; may do anything in it, cannot be removed.
    Owner,
    /// Manages members, mutes and kicks; cannot touch the owner.
    Moderator,
    /// Talks and listens.
    Speaker,
    /// Listens and chats.
    Listener,
}

impl Role {
    /// The stable lowercase name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Moderator => "moderator",
            Role::Speaker => "speaker",
            Role::Listener => "listener",
        }
    }

    /// True for the roles that manage members (owner, moderator).
    pub fn can_moderate(self) -> bool {
        matches!(self, Role::Owner | Role::Moderator)
    }

    /// What a participant with this role may do with media and chat.
    pub fn grants(self) -> Grants {
        Grants {
            can_publish: !matches!(self, Role::Listener),
            can_subscribe: true,
            can_chat: true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a member may not moderate another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModerationDenied {
    /// The actor is neither the owner nor a moderator.
    NotModerator,
    /// Nobody moderates the room's owner.
    OwnerProtected,
    /// Only the owner moderates a moderator.
    OwnerOnly,
}

impl ModerationDenied {
    /// The snake_case error code every service answers with.
    pub fn code(self) -> &'static str {
        match self {
            ModerationDenied::NotModerator => "not_moderator",
            ModerationDenied::OwnerProtected => "owner_protected",
            ModerationDenied::OwnerOnly => "owner_only",
        }
    }

    /// A sentence for people.
    pub fn message(self) -> &'static str {
        match self {
            ModerationDenied::NotModerator => "only the room's owner or a moderator may do this",
            ModerationDenied::OwnerProtected => "the room's owner cannot be moderated",
            ModerationDenied::OwnerOnly => "only the room's owner may change a moderator",
        }
    }
}

/// The one moderation rule of every service (roles, bans, chat mutes, media mute and kick):
/// owners and moderators moderate; nobody moderates the owner; only the owner moderates a
/// moderator. `None` is someone who is not a member.
pub fn may_moderate(actor: Option<Role>, target: Option<Role>) -> Result<(), ModerationDenied> {
    match (actor, target) {
        (Some(Role::Owner | Role::Moderator), Some(Role::Owner)) => {
            Err(ModerationDenied::OwnerProtected)
        }
        (Some(Role::Owner), _) => Ok(()),
        (Some(Role::Moderator), Some(Role::Moderator)) => Err(ModerationDenied::OwnerOnly),
        (Some(Role::Moderator), _) => Ok(()),
        _ => Err(ModerationDenied::NotModerator),
    }
}

/// The error for a string that names no role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRole;

impl fmt::Display for UnknownRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("role must be one of owner, moderator, speaker, listener")
    }
}

impl std::error::Error for UnknownRole {}

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "moderator" => Ok(Role::Moderator),
            "speaker" => Ok(Role::Speaker),
            "listener" => Ok(Role::Listener),
            _ => Err(UnknownRole),
        }
    }
}

/// Who can see and join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Listed to everyone; any user may join as a listener.
    Public,
    /// Listed to members only; only members may join.
    Private,
}

impl Visibility {
    /// The stable lowercase name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }

    /// Parses the database form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// What a media token allows its bearer to do in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// May send audio.
    pub can_publish: bool,
    /// May receive the room's audio.
    pub can_subscribe: bool,
    /// May send chat messages.
    pub can_chat: bool,
}

/// The audience of access tokens (REST API).
pub const ACCESS_AUDIENCE: &str = "veza-api";
/// The audience of media tokens (signaling, WHIP/WHEP, QUIC).
pub const MEDIA_AUDIENCE: &str = "veza-media";

/// Claims of a media token: a short-lived JWT that admits one participant to one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaClaims {
    /// Issuer: the public URL of the API that minted it.
    pub iss: String,
    /// Subject: the user.
    pub sub: UserId,
    /// Always [`MEDIA_AUDIENCE`].
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// The room this token admits to.
    pub room: RoomId,
    /// The participant identity inside the room.
    pub participant: ParticipantId,
    /// Display name.
    pub name: String,
    /// The user's role in the room when the token was minted.
    pub role: Role,
    /// What the participant may do.
    pub grants: Grants,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_grant_by_rank() {
        for role in [Role::Owner, Role::Moderator, Role::Speaker, Role::Listener] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert!(role.grants().can_subscribe && role.grants().can_chat);
        }
        assert!(!Role::Listener.grants().can_publish);
        assert!(Role::Speaker.grants().can_publish);
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn the_moderation_rule() {
        use ModerationDenied::*;
        use Role::*;
        let cases = [
            (Some(Owner), Some(Moderator), Ok(())),
            (Some(Owner), Some(Listener), Ok(())),
            (Some(Owner), None, Ok(())),
            (Some(Owner), Some(Owner), Err(OwnerProtected)),
            (Some(Moderator), Some(Owner), Err(OwnerProtected)),
            (Some(Moderator), Some(Moderator), Err(OwnerOnly)),
            (Some(Moderator), Some(Speaker), Ok(())),
            (Some(Moderator), None, Ok(())),
            (Some(Speaker), Some(Listener), Err(NotModerator)),
            (Some(Listener), None, Err(NotModerator)),
            (None, Some(Listener), Err(NotModerator)),
        ];
        for (actor, target, want) in cases {
            assert_eq!(may_moderate(actor, target), want, "{actor:?} on {target:?}");
        }
    }
}
