//! The audit log: who did what to whom, from where, and when.

use sqlx::Row;

use crate::{Store, StoreError, now_ms};

/// A new audit-log entry.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry<'a> {
    /// The user who acted, if known.
    pub actor_id: Option<String>,
    /// What happened, e.g. `login_failed`.
    pub action: &'a str,
    /// What it happened to: a user, room or token family id.
    pub target: Option<String>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// A short free-text detail (never a secret).
    pub detail: Option<String>,
}

/// A stored audit-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Increasing id, the page cursor.
    pub id: i64,
    /// The user who acted, if known.
    pub actor_id: Option<String>,
    /// What happened.
    pub action: String,
    /// What it happened to.
    pub target: Option<String>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// A short free-text detail.
    pub detail: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl Store {
    /// Appends an entry.
    pub async fn audit(&self, entry: NewAuditEntry<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (actor_id, action, target, ip, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry.actor_id)
        .bind(entry.action)
        .bind(entry.target)
        .bind(entry.ip)
        .bind(entry.detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Entries newest first, at most `limit`, with ids below `before` when given.
    pub async fn list_audit(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, actor_id, action, target, ip, detail, created_at FROM audit_log \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    actor_id: row.try_get("actor_id")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    ip: row.try_get("ip")?,
                    detail: row.try_get("detail")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }
}
