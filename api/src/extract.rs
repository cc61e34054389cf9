//! Extractors whose rejections are [`ApiError`]s, so that every bad request gets the JSON error
//! body: JSON bodies, path and query parameters, the client's IP and the authenticated user.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use veza_proto::UserId;

use crate::AppState;
use crate::error::ApiError;

/// A JSON request body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// 415 without a JSON content type, 413 over the body limit, 400 for malformed JSON, 422
    /// for JSON that is not an object of the expected shape.
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is too large",
                )
            } else {
                ApiError::bad_request("unreadable_body", "the request body could not be read")
            }
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|err| {
            ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {err}"),
            )
        })?;
        let invalid = |message: String| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
        };
        if !value.is_object() {
            return Err(invalid("the body must be a JSON object".to_owned()));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|err| {
                let reason = without_value(&err.inner().to_string());
                match err.path().to_string().as_str() {
                    "." => invalid(reason),
                    path => invalid(format!("{path}: {reason}")),
                }
            })
    }
}

/// `application/json`, or `application/*+json`, with any parameters (as axum's `Json` accepts).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
}

/// serde names the value it refused ("password: invalid type: integer `123456`, expected a
/// string"), and that value may be a secret sent with the wrong type (a numeric password, code
/// or token). Keep the field, the kind of value and what was expected; drop the value.
fn without_value(message: &str) -> String {
    for marker in ["invalid type: ", "invalid value: "] {
        if let Some(start) = message.find(marker).map(|at| at + marker.len())
            && let Some(end) = message.rfind(", expected ").filter(|&end| end >= start)
        {
            let kind = message[start..end].split(['`', '"']).next().unwrap_or("");
            return format!(
                "{}{}{}",
                &message[..start],
                kind.trim_end(),
                &message[end..]
            );
        }
    }
    message.to_owned()
}

/// Path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::bad_request("invalid_path", rejection.body_text())),
        }
    }
}

/// Query-string parameters.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

/// The client's IP address as the socket saw it (`None` when served without connect info,
/// as in unit tests).
#[derive(Debug, Clone)]
pub struct ClientIp(pub Option<String>);

impl ClientIp {
    pub(crate) fn from_parts(parts: &Parts) -> Self {
        ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string()),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(Self::from_parts(parts))
    }
}

/// The user behind a valid access token (`Authorization: Bearer <jwt>`).
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The user's id.
    pub id: UserId,
    /// The username the token was minted for.
    pub username: String,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(|| {
            state.metrics.auth_failure("missing_token");
            ApiError::unauthorized(
                "missing_token",
                "an Authorization: Bearer token is required",
            )
        })?;
        let claims = state.keys.verify_access(token).map_err(|err| {
            state.metrics.auth_failure("invalid_token");
            ApiError::unauthorized(
                "invalid_token",
                format!("the access token is not valid: {err}"),
            )
        })?;
        Ok(AuthUser {
            id: claims.sub,
            username: claims.name,
        })
    }
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

/// The token of an `Authorization: Bearer` header in `headers`.
pub(crate) fn bearer_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
