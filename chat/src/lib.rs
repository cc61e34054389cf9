//! Veza chat: every room's text chat. A message `{client_id, text}` from a participant is
//! validated, moderated, rate-limited, given the room's next sequence number and a server
//! timestamp, stored, acknowledged to the sender and published to the room's subscribers.
//!
//! One [`ChatService`] serves a node: the REST API and signaling share it (it is cheap to
//! clone), so they share the rate limits and the fan-out.
//!
//! ```no_run
//! # async fn demo(store: veza_store::Store, claims: veza_proto::MediaClaims) -> Result<(), veza_chat::ChatError> {
//! use veza_chat::{ChatConfig, ChatService, Sender};
//!
//! let chat = ChatService::new(store, ChatConfig::default());
//! // Each member's session subscribes to its room and forwards events to its client.
//! let mut events = chat.subscribe(claims.room);
//! // A message from a participant, identified by its media token.
//! let ack = chat.send(&Sender::from_claims(&claims), "3f2b9c1e", "hello").await?;
//! assert_eq!(events.recv().await.ok().map(|e| e.message().seq), Some(ack.message.seq));
//! # Ok(()) }
//! ```
//!
//! # What a send checks, in order
//!
//! 1. The sender's `can_chat` grant ([`ChatError::NoChatGrant`]).
//! 2. The client id and the text: not blank, at most [`ChatConfig::max_len`] characters, no
//!    control characters but tab and newlines, no blocked word. No state is touched, so an
//!    invalid message costs no rate-limit token.
//! 3. The user's token bucket ([`ChatError::RateLimited`]), before any database work.
//! 4. The room exists, is visible to the user (public, or they are a member), the user is not
//!    banned and not chat-muted — one query, so a ban or mute holds at once even for media
//!    tokens minted before it.
//! 5. The insert, which assigns the seq; a `client_id` the user already used in the room
//!    returns the stored message ([`Ack::created`] false) and publishes nothing.
//!
//! # Delivery
//!
//! Every subscriber of the room receives the event, the sender's own sessions included (the
//! sender's [`Ack`] comes back from [`ChatService::send`]). Clients key messages by `seq`, so
//! an echo, an edit or a deletion simply replaces what they hold. A session that should not
//! echo its own messages handles sends and events in one loop: the event is published before
//! `send` returns, so it is still queued in the session's receiver when the loop remembers
//! `ack.message.id`, and can be skipped by id. The user's other sessions still get it. A subscriber that falls more
//! than [`bus::ROOM_CHANNEL_CAPACITY`] events behind gets `Lagged` and should catch up with
//! [`ChatService::history`] `After` the last seq it holds — which is also what a client does
//! after a reconnect.
//!
//! Across nodes ([`ChatBus::Nats`], built with [`ChatBus::nats`] and given to
//! [`ChatService::with_bus`]) the same holds on every node, in one order: each subscriber gets
//! a room's `Created` events in strictly increasing seq, without gaps or repeats, whichever node
//! sent them; what NATS loses or reorders is read back from the store (see [`NatsBus`]).
//!
//! # Permissions
//!
//! Moderation (deleting others' messages, mutes) needs the owner or moderator role both in the
//! [`Sender`] (from the media token) and in the store now: a demotion takes effect at once, a
//! promotion at the next join.

pub mod bus;
mod config;
mod error;
mod rate;
pub mod testing;
mod validate;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::broadcast;
use veza_proto::chat::{ChatEvent, ChatMessage};
use veza_proto::{MediaClaims, ModerationDenied, Role, RoomId, UserId, Visibility};
use veza_store::{ChatStanding, Store, StoreError};

pub use bus::{ChatBus, LocalBus, NatsBus, NatsBusError};
pub use config::ChatConfig;
pub use error::ChatError;
pub use validate::MAX_CLIENT_ID_LEN;
pub use veza_store::ChatPage;

/// Largest history page.
pub const MAX_PAGE: u32 = 200;

/// Who is acting in a room's chat: a participant, as its media token (or, for the REST API,
/// the access token and the store) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The user.
    pub user_id: UserId,
    /// The user's name (for logs; messages carry the name stored with the user).
    pub username: String,
    /// The room.
    pub room: RoomId,
    /// The role in the room when the token was minted (`listener` for non-members of a public
    /// room).
    pub role: Role,
    /// The `can_chat` grant.
    pub can_chat: bool,
}

impl Sender {
    /// The participant a media token admits.
    pub fn from_claims(claims: &MediaClaims) -> Self {
        Self {
            user_id: claims.sub,
            username: claims.name.clone(),
            room: claims.room,
            role: claims.role,
            can_chat: claims.grants.can_chat,
        }
    }
}

/// The answer to a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The stored message, with its seq and server timestamp.
    pub message: ChatMessage,
    /// `false` when the client id was already used: this is the message stored the first
    /// time, and nothing was published again.
    pub created: bool,
}

/// The chat domain: validation, moderation, rate limits, persistence and fan-out. Cheap to
/// clone; clones share everything.
#[derive(Debug, Clone)]
pub struct ChatService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: ChatConfig,
    filter: validate::WordFilter,
    limits: Mutex<rate::TokenBuckets>,
    bus: ChatBus,
}

impl ChatService {
    /// A service on `store` with the in-process bus.
    pub fn new(store: Store, config: ChatConfig) -> Self {
        Self::with_bus(store, config, ChatBus::local())
    }

    /// A service on `store` publishing on `bus`.
    pub fn with_bus(store: Store, config: ChatConfig, bus: ChatBus) -> Self {
        Self {
            inner: Arc::new(Inner {
                filter: validate::WordFilter::new(&config.blocked_words),
                limits: Mutex::new(rate::TokenBuckets::new(config.rate_per_sec, config.burst)),
                store,
                config,
                bus,
            }),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &ChatConfig {
        &self.inner.config
    }

    /// The bus events go out on.
    pub fn bus(&self) -> &ChatBus {
        &self.inner.bus
    }

    /// A receiver of every event in `room` from now on (see the crate docs on delivery).
    pub fn subscribe(&self, room: RoomId) -> broadcast::Receiver<ChatEvent> {
        self.inner.bus.subscribe(room)
    }

    /// Sends a message (see the crate docs for the checks, in order).
    pub async fn send(
        &self,
        sender: &Sender,
        client_id: &str,
        text: &str,
    ) -> Result<Ack, ChatError> {
        if !sender.can_chat {
            return Err(ChatError::NoChatGrant);
        }
        validate::client_id(client_id)?;
        self.check_text(text)?;
        self.take_token(sender.user_id)?;
        let standing = self.standing(sender).await?;
        if standing.muted {
            return Err(ChatError::Muted);
        }
        let (stored, created) = self
            .inner
            .store
            .insert_chat_message(sender.room, sender.user_id, client_id, text)
            .await
            .map_err(|e| match e {
                // The room was deleted meanwhile (the user's existence is the caller's token).
                StoreError::NotFound => ChatError::RoomNotFound,
                other => other.into(),
            })?;
        let message = wire(stored);
        if created {
            self.inner
                .bus
                .publish(ChatEvent::Created {
                    message: message.clone(),
                })
                .await;
        } else {
            tracing::debug!(user = %sender.user_id, seq = message.seq, "chat message retried");
        }
        Ok(Ack { message, created })
    }

    /// Replaces the text of the sender's own message (same rules and rate limit as a send) and
    /// publishes [`ChatEvent::Edited`].
    pub async fn edit(
        &self,
        sender: &Sender,
        seq: i64,
        text: &str,
    ) -> Result<ChatMessage, ChatError> {
        if !sender.can_chat {
            return Err(ChatError::NoChatGrant);
        }
        self.check_text(text)?;
        self.take_token(sender.user_id)?;
        let standing = self.standing(sender).await?;
        if standing.muted {
            return Err(ChatError::Muted);
        }
        let current = self.message(sender.room, seq).await?;
        if current.user_id != sender.user_id {
            return Err(ChatError::NotAuthor);
        }
        if current.is_deleted() {
            return Err(ChatError::MessageDeleted);
        }
        let edited = self
            .inner
            .store
            .edit_chat_message(sender.room, seq, sender.user_id, text)
            .await
            .map_err(|e| match e {
                // The author is fixed, so only a deletion can have got in between.
                StoreError::NotFound => ChatError::MessageDeleted,
                other => other.into(),
            })?;
        let message = wire(edited);
        self.inner
            .bus
            .publish(ChatEvent::Edited {
                message: message.clone(),
            })
            .await;
        Ok(message)
    }

    /// Deletes a message — the sender's own, or any if the sender moderates the room — and
    /// publishes [`ChatEvent::Deleted`]. The message keeps its seq; its text is erased.
    /// Returns the deleted message (compare its `user_id` with the sender's to tell a
    /// moderator's deletion).
    pub async fn delete(&self, sender: &Sender, seq: i64) -> Result<ChatMessage, ChatError> {
        let standing = self.standing(sender).await?;
        let current = self.message(sender.room, seq).await?;
        if current.user_id != sender.user_id && moderator_role(sender, &standing).is_none() {
            return Err(ChatError::NotAuthor);
        }
        if current.is_deleted() {
            return Err(ChatError::MessageDeleted);
        }
        let deleted = self
            .inner
            .store
            .delete_chat_message(sender.room, seq, sender.user_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ChatError::MessageDeleted,
                other => other.into(),
            })?;
        let message = wire(deleted);
        self.inner
            .bus
            .publish(ChatEvent::Deleted {
                message: message.clone(),
            })
            .await;
        Ok(message)
    }

    /// Mutes `target` in the room's chat (the sender must moderate it; the owner cannot be
    /// muted, and only the owner may mute a moderator). Muting again is fine.
    pub async fn mute(&self, sender: &Sender, target: UserId) -> Result<(), ChatError> {
        self.check_moderation(sender, target).await?;
        self.inner
            .store
            .mute_chat(sender.room, target, sender.user_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ChatError::UserNotFound,
                other => other.into(),
            })
    }

    /// Lifts a chat mute (same permissions as [`mute`](Self::mute));
    /// [`ChatError::NotMuted`] when there was none.
    pub async fn unmute(&self, sender: &Sender, target: UserId) -> Result<(), ChatError> {
        self.check_moderation(sender, target).await?;
        if self.inner.store.unmute_chat(sender.room, target).await? {
            Ok(())
        } else {
            Err(ChatError::NotMuted)
        }
    }

    /// A page of the room's history, at most `limit` (1–[`MAX_PAGE`]) messages:
    /// [`ChatPage::Latest`] and [`ChatPage::Before`] newest first, [`ChatPage::After`] oldest
    /// first. Deleted messages are included, with empty text. The reader must see the room
    /// and not be banned from it.
    pub async fn history(
        &self,
        reader: &Sender,
        page: ChatPage,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        self.standing(reader).await?;
        let messages = self
            .inner
            .store
            .chat_history(reader.room, page, i64::from(limit.clamp(1, MAX_PAGE)))
            .await?;
        Ok(messages.into_iter().map(wire).collect())
    }

    fn check_text(&self, text: &str) -> Result<(), ChatError> {
        validate::text(text, self.inner.config.max_len)?;
        if self.inner.filter.blocks(text) {
            return Err(ChatError::BlockedWord);
        }
        Ok(())
    }

    fn take_token(&self, user: UserId) -> Result<(), ChatError> {
        self.inner
            .limits
            .lock()
            // The buckets are valid after any panic (each update is one insert).
            .unwrap_or_else(PoisonError::into_inner)
            .take(user, Instant::now())
            .map_err(|retry_after| ChatError::RateLimited { retry_after })
    }

    /// The room exists, the actor may see it and is not banned from it.
    async fn standing(&self, actor: &Sender) -> Result<ChatStanding, ChatError> {
        let standing = self
            .inner
            .store
            .chat_standing(actor.room, actor.user_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ChatError::RoomNotFound,
                other => other.into(),
            })?;
        if standing.visibility == Visibility::Private && standing.role.is_none() {
            return Err(ChatError::NotMember);
        }
        if standing.banned {
            return Err(ChatError::Banned);
        }
        Ok(standing)
    }

    async fn message(&self, room: RoomId, seq: i64) -> Result<veza_store::ChatMessage, ChatError> {
        self.inner
            .store
            .chat_message(room, seq)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ChatError::MessageNotFound,
                other => other.into(),
            })
    }

    /// The checks of a mute or unmute, in the order the API documents for bans.
    async fn check_moderation(&self, sender: &Sender, target: UserId) -> Result<(), ChatError> {
        let standing = self.standing(sender).await?;
        let store = &self.inner.store;
        let target_role = store.member_role(sender.room, target).await?;
        veza_proto::may_moderate(moderator_role(sender, &standing), target_role).map_err(
            |denied| match denied {
                ModerationDenied::NotModerator => ChatError::NotModerator,
                ModerationDenied::OwnerProtected => ChatError::OwnerProtected,
                ModerationDenied::OwnerOnly => ChatError::OwnerOnly,
            },
        )?;
        match store.user(target).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound) => Err(ChatError::UserNotFound),
            Err(err) => Err(err.into()),
        }
    }
}

/// The sender's moderating role: owner or moderator in the token and in the store now.
fn moderator_role(sender: &Sender, standing: &ChatStanding) -> Option<Role> {
    standing
        .role
        .filter(|role| role.can_moderate() && sender.role.can_moderate())
}

/// The wire form of a stored message.
fn wire(m: veza_store::ChatMessage) -> ChatMessage {
    let deleted = m.is_deleted();
    ChatMessage {
        id: m.id,
        seq: m.seq,
        room_id: m.room_id,
        user_id: m.user_id,
        username: m.username,
        // Erased in the store already; never send a deleted message's text in any case.
        text: if deleted { String::new() } else { m.text },
        created_at: m.created_at,
        edited_at: m.edited_at,
        deleted,
    }
}
