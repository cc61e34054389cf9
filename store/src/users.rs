//! Users, password hashes, admin flags and TOTP state.

use sqlx::Row;
use sqlx::any::AnyRow;
use veza_proto::UserId;

use crate::{Store, StoreError, conflict_or, now_ms, parse_id};

/// A registered user, as the API shows it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// The name as registered (case kept).
    pub username: String,
    /// May read the audit log.
    pub is_admin: bool,
    /// Login needs a TOTP code.
    pub totp_enabled: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A user with the secrets needed to check a login. Never logged.
pub struct Credentials {
    /// The user.
    pub user: User,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    /// Base32 TOTP secret, pending or enabled.
    pub totp_secret: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

const USER_COLUMNS: &str = "id, username, is_admin, totp_enabled, created_at";

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: parse_id("users.id", &row.try_get::<String, _>("id")?)?,
        username: row.try_get("username")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        totp_enabled: row.try_get::<i64, _>("totp_enabled")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// The case-insensitive key of a username.
fn username_key(username: &str) -> String {
    username.to_lowercase()
}

impl Store {
    /// Creates a user. The first user ever created is an admin. Fails with
    /// [`StoreError::Conflict`] when the name is taken, whatever its case.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let id = UserId::new();
        let row = sqlx::query(&format!(
            "INSERT INTO users (id, username, username_key, password_hash, is_admin, created_at) \
             SELECT $1, $2, $3, $4, CASE WHEN EXISTS (SELECT 1 FROM users) THEN 0 ELSE 1 END, $5 \
             RETURNING {USER_COLUMNS}"
        ))
        .bind(id.to_string())
        .bind(username)
        .bind(username_key(username))
        .bind(password_hash)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_or(e, "username"))?;
        user_from_row(&row)
    }

    /// The user with this id.
    pub async fn user(&self, id: UserId) -> Result<User, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        user_from_row(&row)
    }

    /// The user with this name (any case), with the secrets a login checks.
    pub async fn credentials(&self, username: &str) -> Result<Credentials, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash, totp_secret FROM users WHERE username_key = $1"
        ))
        .bind(username_key(username))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        self.credentials_from_row(&row)
    }

    /// The user with this id, with secrets.
    pub async fn credentials_by_id(&self, id: UserId) -> Result<Credentials, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash, totp_secret FROM users WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        self.credentials_from_row(&row)
    }

    fn credentials_from_row(&self, row: &AnyRow) -> Result<Credentials, StoreError> {
        Ok(Credentials {
            user: user_from_row(row)?,
            password_hash: row.try_get("password_hash")?,
            totp_secret: row.try_get("totp_secret")?,
        })
    }

    /// Makes the named user an admin. [`StoreError::NotFound`] if there is no such user.
    pub async fn grant_admin(&self, username: &str) -> Result<User, StoreError> {
        let done = sqlx::query("UPDATE users SET is_admin = 1 WHERE username_key = $1")
            .bind(username_key(username))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(self.credentials(username).await?.user)
    }

    /// Stores a new, not yet enabled, TOTP secret (replacing a pending one). Fails with
    /// [`StoreError::Conflict`] when TOTP is already enabled.
    pub async fn set_pending_totp(&self, id: UserId, secret: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_secret = $2, totp_last_step = NULL \
             WHERE id = $1 AND totp_enabled = 0",
        )
        .bind(id.to_string())
        .bind(secret)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            self.user(id).await?;
            return Err(StoreError::Conflict("two-factor authentication"));
        }
        Ok(())
    }

    /// Turns TOTP on for a user whose pending secret was just confirmed.
    pub async fn enable_totp(&self, id: UserId) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_enabled = 1 WHERE id = $1 AND totp_secret IS NOT NULL",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records that the TOTP code of time step `step` was used. Returns `false` when that step
    /// or a later one was already used: the code is a replay.
    pub async fn consume_totp_step(&self, id: UserId, step: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $2 \
             WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
        )
        .bind(id.to_string())
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many users exist.
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }
}
