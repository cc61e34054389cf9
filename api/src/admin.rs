//! Admin endpoints: the audit log.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, AuthUser};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/admin/audit", get(audit_log))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Entries with ids below this (the `next_before` of the previous page).
    before: Option<i64>,
    /// Page size, 1–500 (default 100).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEntryView {
    id: i64,
    actor_id: Option<String>,
    action: String,
    target: Option<String>,
    ip: Option<String>,
    detail: Option<String>,
    /// Milliseconds since the Unix epoch.
    created_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<AuditEntryView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

/// The audit log, newest first (admins only).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    if !state.store.user(user.id).await?.is_admin {
        return Err(ApiError::forbidden(
            "not_admin",
            "only admins may read the audit log",
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit is 1 to 500"));
    }
    // One more than asked tells whether another page exists.
    let mut entries = state.store.list_audit(query.before, limit + 1).await?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next_before = more.then(|| entries.last().map(|e| e.id)).flatten();
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryView {
                id: e.id,
                actor_id: e.actor_id,
                action: e.action,
                target: e.target,
                ip: e.ip,
                detail: e.detail,
                created_at: e.created_at,
            })
            .collect(),
        next_before,
    }))
}
