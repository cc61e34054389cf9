//! The one error type of the API, mapped to an HTTP status and a JSON body in one place:
//! `{"error":{"code":"snake_case","message":"a sentence"}}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use veza_chat::ChatError;
use veza_store::StoreError;

/// An error answered to the client. Internal details are logged, never returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable snake_case code clients can match on.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// For 429: when to try again.
    pub retry_after: Option<Duration>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with a code naming what was wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: missing, invalid or expired credentials.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 429 with a `Retry-After`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry later",
            )
        }
    }

    /// 500; `cause` is logged, not returned.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
    }

    /// 503; `cause` is logged, not returned.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a dependency is unavailable; retry later",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up, and at least one.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Conflict(what) => {
                ApiError::conflict("conflict", format!("{what} already exists"))
            }
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                ApiError::unavailable(&err)
            }
            // E.g. a valid token whose user is gone, or a room deleted meanwhile.
            StoreError::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                ApiError::conflict(
                    "conflict",
                    "something this request refers to no longer exists",
                )
            }
            other => ApiError::internal(&other),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(err: ChatError) -> Self {
        let status = match &err {
            ChatError::EmptyMessage
            | ChatError::MessageTooLong { .. }
            | ChatError::InvalidText
            | ChatError::InvalidClientId
            | ChatError::BlockedWord => StatusCode::UNPROCESSABLE_ENTITY,
            ChatError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ChatError::NoChatGrant
            | ChatError::Muted
            | ChatError::Banned
            | ChatError::NotMember
            | ChatError::NotAuthor
            | ChatError::NotModerator
            | ChatError::OwnerProtected
            | ChatError::OwnerOnly => StatusCode::FORBIDDEN,
            ChatError::RoomNotFound
            | ChatError::MessageNotFound
            | ChatError::UserNotFound
            | ChatError::NotMuted => StatusCode::NOT_FOUND,
            ChatError::MessageDeleted => StatusCode::CONFLICT,
            // Database failures map like the store's own errors; anything newer is a bug here.
            _ => {
                return match err {
                    ChatError::Store(store) => store.into(),
                    other => ApiError::internal(&other),
                };
            }
        };
        Self {
            status,
            code: err.code(),
            message: err.to_string(),
            retry_after: err.retry_after(),
        }
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
