//! Chat messages with their per-room sequence numbers, and chat mutes.
//!
//! Every room has a counter (`rooms.chat_seq`). Inserting a message bumps it with
//! `UPDATE … RETURNING` as the first statement of the transaction that inserts the row: on
//! PostgreSQL the row lock, on SQLite the database's single writer, makes concurrent inserts in
//! a room take turns, and a transaction that rolls back gives its number back. Sequence numbers
//! are therefore 1, 2, 3, … in commit order, with no gaps and no repeats, on both databases.

use sqlx::Row;
use sqlx::any::AnyRow;
use veza_proto::{MessageId, Role, RoomId, UserId, Visibility};

use crate::{Store, StoreError, conflict_or, now_ms, parse_id};

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Stable id.
    pub id: MessageId,
    /// The room.
    pub room_id: RoomId,
    /// Position in the room's chat, from 1, without gaps.
    pub seq: i64,
    /// The author.
    pub user_id: UserId,
    /// The author's name.
    pub username: String,
    /// The id the author's client gave the message.
    pub client_id: String,
    /// The text; empty once deleted.
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When the text last changed, ms since the epoch.
    pub edited_at: Option<i64>,
    /// When the message was deleted, ms since the epoch.
    pub deleted_at: Option<i64>,
    /// Who deleted it.
    pub deleted_by: Option<UserId>,
}

impl ChatMessage {
    /// Whether the message was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// Which page of a room's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatPage {
    /// The newest messages, newest first.
    Latest,
    /// Messages with a seq below this one, newest first (scrolling back).
    Before(i64),
    /// Messages with a seq above this one, oldest first (catching up after a reconnect).
    After(i64),
}

/// What a user may do in a room's chat, read in one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatStanding {
    /// The room's visibility.
    pub visibility: Visibility,
    /// The room's owner.
    pub owner_id: UserId,
    /// The user's role, `None` when not a member.
    pub role: Option<Role>,
    /// The user is banned from the room.
    pub banned: bool,
    /// The user is muted in the room's chat.
    pub muted: bool,
}

const MESSAGE_COLUMNS: &str = "c.id, c.room_id, c.seq, c.user_id, u.username, c.client_id, \
     c.text, c.created_at, c.edited_at, c.deleted_at, c.deleted_by";

fn message_from_row(row: &AnyRow) -> Result<ChatMessage, StoreError> {
    let deleted_by: Option<String> = row.try_get("deleted_by")?;
    Ok(ChatMessage {
        id: parse_id("chat_messages.id", &row.try_get::<String, _>("id")?)?,
        room_id: parse_id(
            "chat_messages.room_id",
            &row.try_get::<String, _>("room_id")?,
        )?,
        seq: row.try_get("seq")?,
        user_id: parse_id(
            "chat_messages.user_id",
            &row.try_get::<String, _>("user_id")?,
        )?,
        username: row.try_get("username")?,
        client_id: row.try_get("client_id")?,
        text: row.try_get("text")?,
        created_at: row.try_get("created_at")?,
        edited_at: row.try_get("edited_at")?,
        deleted_at: row.try_get("deleted_at")?,
        deleted_by: deleted_by
            .as_deref()
            .map(|id| parse_id("chat_messages.deleted_by", id))
            .transpose()?,
    })
}

fn foreign_key_is_not_found(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        _ => StoreError::Database(err),
    }
}

impl Store {
    /// Stores a message with the room's next sequence number and returns it with `true`; or,
    /// when this user already sent a message with this `client_id` in the room, returns that one
    /// with `false` and stores nothing. [`StoreError::NotFound`] when the room or user does not
    /// exist.
    pub async fn insert_chat_message(
        &self,
        room: RoomId,
        user: UserId,
        client_id: &str,
        text: &str,
    ) -> Result<(ChatMessage, bool), StoreError> {
        match self
            .try_insert_chat_message(room, user, client_id, text)
            .await
        {
            // Only reachable if the counter did not serialise the two inserts (it does on both
            // databases); the stored message is the answer all the same.
            Err(StoreError::Conflict("chat message")) => Ok((
                self.chat_message_by_client_id(room, user, client_id)
                    .await?
                    .ok_or(StoreError::Conflict("chat message"))?,
                false,
            )),
            other => other,
        }
    }

    async fn try_insert_chat_message(
        &self,
        room: RoomId,
        user: UserId,
        client_id: &str,
        text: &str,
    ) -> Result<(ChatMessage, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        // First statement, and a write: it takes the room's lock (PostgreSQL) or the database's
        // write lock (SQLite) before anything is read, so the duplicate check below sees every
        // committed message and SQLite never has to upgrade a read transaction.
        let seq: i64 = sqlx::query_scalar(
            "UPDATE rooms SET chat_seq = chat_seq + 1 WHERE id = $1 RETURNING chat_seq",
        )
        .bind(room.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let existing = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM chat_messages c JOIN users u ON u.id = c.user_id \
             WHERE c.room_id = $1 AND c.user_id = $2 AND c.client_id = $3"
        ))
        .bind(room.to_string())
        .bind(user.to_string())
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            // Gives the sequence number back.
            tx.rollback().await?;
            return Ok((message_from_row(&row)?, false));
        }
        let username: String = sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
            .bind(user.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let message = ChatMessage {
            id: MessageId::new(),
            room_id: room,
            seq,
            user_id: user,
            username,
            client_id: client_id.to_owned(),
            text: text.to_owned(),
            created_at: now_ms(),
            edited_at: None,
            deleted_at: None,
            deleted_by: None,
        };
        sqlx::query(
            "INSERT INTO chat_messages (id, room_id, seq, user_id, client_id, text, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(message.id.to_string())
        .bind(room.to_string())
        .bind(seq)
        .bind(user.to_string())
        .bind(client_id)
        .bind(text)
        .bind(message.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => conflict_or(e, "chat message"),
        })?;
        tx.commit().await?;
        Ok((message, true))
    }

    async fn chat_message_by_client_id(
        &self,
        room: RoomId,
        user: UserId,
        client_id: &str,
    ) -> Result<Option<ChatMessage>, StoreError> {
        sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM chat_messages c JOIN users u ON u.id = c.user_id \
             WHERE c.room_id = $1 AND c.user_id = $2 AND c.client_id = $3"
        ))
        .bind(room.to_string())
        .bind(user.to_string())
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(message_from_row)
        .transpose()
    }

    /// The message with this seq in the room, deleted or not.
    pub async fn chat_message(&self, room: RoomId, seq: i64) -> Result<ChatMessage, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM chat_messages c JOIN users u ON u.id = c.user_id \
             WHERE c.room_id = $1 AND c.seq = $2"
        ))
        .bind(room.to_string())
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        message_from_row(&row)
    }

    /// Replaces the text of `author`'s message and sets `edited_at`. [`StoreError::NotFound`]
    /// unless the room has a message with this seq, by `author`, not deleted.
    pub async fn edit_chat_message(
        &self,
        room: RoomId,
        seq: i64,
        author: UserId,
        text: &str,
    ) -> Result<ChatMessage, StoreError> {
        let done = sqlx::query(
            "UPDATE chat_messages SET text = $4, edited_at = $5 \
             WHERE room_id = $1 AND seq = $2 AND user_id = $3 AND deleted_at IS NULL",
        )
        .bind(room.to_string())
        .bind(seq)
        .bind(author.to_string())
        .bind(text)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.chat_message(room, seq).await
    }

    /// Deletes a message: the row stays (its seq stays taken) but its text is erased, and
    /// `deleted_at`/`deleted_by` are set. [`StoreError::NotFound`] unless the room has a message
    /// with this seq that is not deleted yet.
    pub async fn delete_chat_message(
        &self,
        room: RoomId,
        seq: i64,
        by: UserId,
    ) -> Result<ChatMessage, StoreError> {
        let done = sqlx::query(
            "UPDATE chat_messages SET text = '', deleted_at = $3, deleted_by = $4 \
             WHERE room_id = $1 AND seq = $2 AND deleted_at IS NULL",
        )
        .bind(room.to_string())
        .bind(seq)
        .bind(now_ms())
        .bind(by.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.chat_message(room, seq).await
    }

    /// A page of the room's messages, at most `limit`: [`ChatPage::Latest`] and
    /// [`ChatPage::Before`] newest first, [`ChatPage::After`] oldest first. The bounds are
    /// exclusive. Deleted messages are included (with empty text).
    pub async fn chat_history(
        &self,
        room: RoomId,
        page: ChatPage,
        limit: i64,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let (condition, order, bound) = match page {
            ChatPage::Latest => ("", "DESC", 0),
            ChatPage::Before(seq) => ("AND c.seq < $3", "DESC", seq),
            ChatPage::After(seq) => ("AND c.seq > $3", "ASC", seq),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM chat_messages c JOIN users u ON u.id = c.user_id \
             WHERE c.room_id = $1 {condition} ORDER BY c.seq {order} LIMIT $2"
        );
        let query = sqlx::query(&sql).bind(room.to_string()).bind(limit);
        let query = if condition.is_empty() {
            query
        } else {
            query.bind(bound)
        };
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(message_from_row).collect()
    }

    /// What the user may do in the room's chat: the room's visibility and owner, the user's
    /// role, ban and mute, in one query. [`StoreError::NotFound`] when the room does not exist.
    pub async fn chat_standing(
        &self,
        room: RoomId,
        user: UserId,
    ) -> Result<ChatStanding, StoreError> {
        let row = sqlx::query(
            "SELECT r.visibility, r.owner_id, \
               (SELECT m.role FROM room_members m WHERE m.room_id = r.id AND m.user_id = $2) AS role, \
               (SELECT COUNT(*) FROM room_bans b WHERE b.room_id = r.id AND b.user_id = $2) AS banned, \
               (SELECT COUNT(*) FROM room_chat_mutes x WHERE x.room_id = r.id AND x.user_id = $2) AS muted \
             FROM rooms r WHERE r.id = $1",
        )
        .bind(room.to_string())
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let visibility: String = row.try_get("visibility")?;
        let role: Option<String> = row.try_get("role")?;
        Ok(ChatStanding {
            visibility: Visibility::parse(&visibility)
                .ok_or_else(|| StoreError::Corrupt(format!("rooms.visibility: {visibility:?}")))?,
            owner_id: parse_id("rooms.owner_id", &row.try_get::<String, _>("owner_id")?)?,
            role: role
                .as_deref()
                .map(|r| {
                    r.parse()
                        .map_err(|_| StoreError::Corrupt(format!("room_members.role: {r:?}")))
                })
                .transpose()?,
            banned: row.try_get::<i64, _>("banned")? != 0,
            muted: row.try_get::<i64, _>("muted")? != 0,
        })
    }

    /// Mutes the user in the room's chat (muting again is fine). [`StoreError::NotFound`] when
    /// the room or user does not exist.
    pub async fn mute_chat(
        &self,
        room: RoomId,
        user: UserId,
        by: UserId,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO room_chat_mutes (room_id, user_id, muted_by, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room.to_string())
        .bind(user.to_string())
        .bind(by.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(foreign_key_is_not_found)?;
        Ok(())
    }

    /// Lifts a chat mute. Returns whether there was one.
    pub async fn unmute_chat(&self, room: RoomId, user: UserId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM room_chat_mutes WHERE room_id = $1 AND user_id = $2")
            .bind(room.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the user is muted in the room's chat.
    pub async fn is_chat_muted(&self, room: RoomId, user: UserId) -> Result<bool, StoreError> {
        let hit: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM room_chat_mutes WHERE room_id = $1 AND user_id = $2")
                .bind(room.to_string())
                .bind(user.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(hit.is_some())
    }
}
