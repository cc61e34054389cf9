//! Rooms, their members with roles, and bans.

use sqlx::Row;
use sqlx::any::AnyRow;
use veza_proto::{Role, RoomId, UserId, Visibility};

use crate::{Store, StoreError, conflict_or, now_ms, parse_id};

/// A room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Stable id.
    pub id: RoomId,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Who sees and may join it.
    pub visibility: Visibility,
    /// The user who created it.
    pub owner_id: UserId,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// A room with the viewing user's role in it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomWithRole {
    /// The room.
    pub room: Room,
    /// The viewer's role, `None` when not a member.
    pub role: Option<Role>,
}

/// What creating a room needs.
#[derive(Debug, Clone)]
pub struct NewRoom<'a> {
    /// Display name.
    pub name: &'a str,
    /// Free text.
    pub description: Option<&'a str>,
    /// Who sees and may join it.
    pub visibility: Visibility,
    /// The creator, who becomes its owner.
    pub owner_id: UserId,
}

/// A partial update of a room; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct RoomPatch {
    /// New name.
    pub name: Option<String>,
    /// New description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// New visibility.
    pub visibility: Option<Visibility>,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user_id: UserId,
    /// The user's name.
    pub username: String,
    /// The user's role in the room.
    pub role: Role,
    /// When the membership was created or last changed role, ms since the epoch.
    pub since: i64,
}

/// Room columns for queries that alias `rooms` as `r`.
const ROOM_COLUMNS: &str =
    "r.id, r.name, r.description, r.visibility, r.owner_id, r.created_at, r.updated_at";
/// Room columns for `RETURNING`, which may not use an alias.
const ROOM_RETURNING: &str = "id, name, description, visibility, owner_id, created_at, updated_at";

fn room_from_row(row: &AnyRow) -> Result<Room, StoreError> {
    let visibility: String = row.try_get("visibility")?;
    Ok(Room {
        id: parse_id("rooms.id", &row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        visibility: Visibility::parse(&visibility)
            .ok_or_else(|| StoreError::Corrupt(format!("rooms.visibility: {visibility:?}")))?,
        owner_id: parse_id("rooms.owner_id", &row.try_get::<String, _>("owner_id")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn role_from(value: &str) -> Result<Role, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("room_members.role: {value:?}")))
}

impl Store {
    /// Creates a room and makes its creator the owner, in one transaction.
    pub async fn create_room(&self, new: NewRoom<'_>) -> Result<Room, StoreError> {
        let id = RoomId::new();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO rooms (id, name, description, visibility, owner_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {ROOM_RETURNING}"
        ))
        .bind(id.to_string())
        .bind(new.name)
        .bind(new.description)
        .bind(new.visibility.as_str())
        .bind(new.owner_id.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(id.to_string())
        .bind(new.owner_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        room_from_row(&row)
    }

    /// The room with this id.
    pub async fn room(&self, id: RoomId) -> Result<Room, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM rooms r WHERE r.id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        room_from_row(&row)
    }

    /// Rooms `viewer` may see — public ones and those they are a member of — newest first,
    /// at most `limit`, strictly after the `(created_at, id)` cursor when one is given.
    pub async fn list_rooms(
        &self,
        viewer: UserId,
        limit: i64,
        after: Option<(i64, RoomId)>,
    ) -> Result<Vec<RoomWithRole>, StoreError> {
        let (cursor_at, cursor_id) =
            after.map_or((i64::MAX, String::new()), |(at, id)| (at, id.to_string()));
        let rows = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS}, m.role FROM rooms r \
             LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $1 \
             WHERE (r.visibility = 'public' OR m.user_id IS NOT NULL) \
               AND ($2 = '' OR r.created_at < $3 OR (r.created_at = $3 AND r.id < $2)) \
             ORDER BY r.created_at DESC, r.id DESC LIMIT $4"
        ))
        .bind(viewer.to_string())
        .bind(cursor_id)
        .bind(cursor_at)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let role: Option<String> = row.try_get("role")?;
                Ok(RoomWithRole {
                    room: room_from_row(row)?,
                    role: role.as_deref().map(role_from).transpose()?,
                })
            })
            .collect()
    }

    /// Applies `patch` to a room and returns it as it now is.
    pub async fn update_room(&self, id: RoomId, patch: RoomPatch) -> Result<Room, StoreError> {
        let current = self.room(id).await?;
        let name = patch.name.unwrap_or(current.name);
        let description = patch.description.unwrap_or(current.description);
        let visibility = patch.visibility.unwrap_or(current.visibility);
        let row = sqlx::query(&format!(
            "UPDATE rooms SET name = $2, description = $3, visibility = $4, updated_at = $5 \
             WHERE id = $1 RETURNING {ROOM_RETURNING}"
        ))
        .bind(id.to_string())
        .bind(name)
        .bind(description)
        .bind(visibility.as_str())
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        room_from_row(&row)
    }

    /// Deletes a room with its members and bans.
    pub async fn delete_room(&self, id: RoomId) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM rooms WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// How many rooms exist.
    pub async fn count_rooms(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM rooms")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The user's role in the room, `None` when not a member.
    pub async fn member_role(
        &self,
        room: RoomId,
        user: UserId,
    ) -> Result<Option<Role>, StoreError> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM room_members WHERE room_id = $1 AND user_id = $2")
                .bind(room.to_string())
                .bind(user.to_string())
                .fetch_optional(&self.pool)
                .await?;
        role.as_deref().map(role_from).transpose()
    }

    /// Gives the user `role` in the room, adding them as a member if needed. A banned user
    /// cannot be made a member ([`StoreError::Conflict`]).
    pub async fn set_member_role(
        &self,
        room: RoomId,
        user: UserId,
        role: Role,
    ) -> Result<(), StoreError> {
        if self.is_banned(room, user).await? {
            return Err(StoreError::Conflict("ban"));
        }
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET role = excluded.role, created_at = excluded.created_at",
        )
        .bind(room.to_string())
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => conflict_or(e, "member"),
        })?;
        Ok(())
    }

    /// Removes the user from the room's members. Returns whether they were one.
    pub async fn remove_member(&self, room: RoomId, user: UserId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The room's members, owner first, then by role and name.
    pub async fn list_members(&self, room: RoomId) -> Result<Vec<Member>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.username, m.role, m.created_at FROM room_members m \
             JOIN users u ON u.id = m.user_id WHERE m.room_id = $1 \
             ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'moderator' THEN 1 \
             WHEN 'speaker' THEN 2 ELSE 3 END, u.username_key",
        )
        .bind(room.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Member {
                    user_id: parse_id(
                        "room_members.user_id",
                        &row.try_get::<String, _>("user_id")?,
                    )?,
                    username: row.try_get("username")?,
                    role: role_from(&row.try_get::<String, _>("role")?)?,
                    since: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Bans the user from the room and ends their membership, in one transaction.
    pub async fn ban(&self, room: RoomId, user: UserId, by: UserId) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO room_bans (room_id, user_id, banned_by, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room.to_string())
        .bind(user.to_string())
        .bind(by.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => StoreError::Database(e),
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// Lifts a ban. Returns whether there was one.
    pub async fn unban(&self, room: RoomId, user: UserId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM room_bans WHERE room_id = $1 AND user_id = $2")
            .bind(room.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the user is banned from the room.
    pub async fn is_banned(&self, room: RoomId, user: UserId) -> Result<bool, StoreError> {
        let hit: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM room_bans WHERE room_id = $1 AND user_id = $2")
                .bind(room.to_string())
                .bind(user.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(hit.is_some())
    }
}
