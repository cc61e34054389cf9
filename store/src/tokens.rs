//! Refresh tokens: stored hashed, rotated on use, revoked by family on reuse (RFC 9700 §4.14.2).

use sqlx::Row;
use veza_proto::UserId;

use crate::{Store, StoreError, parse_id};

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was valid; it is now used and its successor is stored in the same family.
    Rotated {
        /// Whose token it was.
        user_id: UserId,
    },
    /// The token had already been used: the whole family is now revoked, since either the
    /// legitimate client or an attacker holds a copy.
    Reused {
        /// Whose token it was.
        user_id: UserId,
        /// The revoked family.
        family_id: String,
    },
    /// No such token, or it expired, or it was revoked.
    Invalid,
}

impl Store {
    /// Stores a new refresh token (by its hash) in `family_id`.
    pub async fn insert_refresh_token(
        &self,
        token_hash: &str,
        family_id: &str,
        user_id: UserId,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(family_id)
        .bind(user_id.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses the token hashed `old_hash` and stores `new_hash` as its successor, atomically.
    /// A second use of the same token — even a concurrent one — revokes the family.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT family_id, user_id, expires_at, used_at, revoked_at \
             FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        let family_id: String = row.try_get("family_id")?;
        let user_id: UserId = parse_id(
            "refresh_tokens.user_id",
            &row.try_get::<String, _>("user_id")?,
        )?;
        let used = row.try_get::<Option<i64>, _>("used_at")?.is_some();
        let revoked = row.try_get::<Option<i64>, _>("revoked_at")?.is_some();
        if used {
            self.revoke_family(&family_id, now).await?;
            return Ok(RefreshOutcome::Reused { user_id, family_id });
        }
        // Revoked but never used (logout, or its family was revoked for a reuse): dead, and
        // nothing more to revoke.
        if revoked || row.try_get::<i64, _>("expires_at")? <= now {
            return Ok(RefreshOutcome::Invalid);
        }

        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(old_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            // Another request used it between our read and this update.
            drop(tx);
            self.revoke_family(&family_id, now).await?;
            return Ok(RefreshOutcome::Reused { user_id, family_id });
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_hash)
        .bind(&family_id)
        .bind(user_id.to_string())
        .bind(now)
        .bind(new_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated { user_id })
    }

    /// Revokes the family of the token hashed `token_hash`. Returns whose it was, if it exists.
    pub async fn revoke_family_of(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<UserId>, StoreError> {
        let Some(row) =
            sqlx::query("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let family_id: String = row.try_get("family_id")?;
        self.revoke_family(&family_id, now).await?;
        Ok(Some(parse_id(
            "refresh_tokens.user_id",
            &row.try_get::<String, _>("user_id")?,
        )?))
    }

    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
        )
        .bind(family_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes tokens that expired before `now`; returns how many.
    pub async fn purge_expired_refresh_tokens(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
