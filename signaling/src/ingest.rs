//! WHIP ingest (RFC 9725) and WHEP playback: one HTTP POST with an SDP offer, answered at once;
//! DELETE on the returned `Location` ends the session. The media token goes in
//! `Authorization: Bearer`. Trickle ICE (PATCH) is not offered: the server is ICE-lite and its
//! answer carries all its candidates.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use veza_proto::{MediaClaims, ParticipantId, RoomId};
use veza_sfu::webrtc::{IngestKind, JoinRequest, MediaError};

use crate::{Signaling, refuse};

/// The largest SDP offer accepted.
const MAX_OFFER: usize = 64 * 1024;

pub(crate) fn router() -> Router<Signaling> {
    Router::new()
        .route("/whip/{room}", post(whip))
        .route("/whep/{room}", post(whep))
        .route(
            "/whip/{room}/{resource}",
            axum::routing::delete(end).patch(no_trickle),
        )
        .route(
            "/whep/{room}/{resource}",
            axum::routing::delete(end).patch(no_trickle),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER))
}

async fn whip(
    state: State<Signaling>,
    room: Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    start(state, room, headers, body, IngestKind::Whip).await
}

async fn whep(
    state: State<Signaling>,
    room: Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    start(state, room, headers, body, IngestKind::Whep).await
}

/// Why a request was refused: becomes the JSON error response.
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.0, self.1, &self.2)
    }
}

/// The claims of the bearer token, which must be for `room`.
fn authorize(
    signaling: &Signaling,
    headers: &HeaderMap,
    room: &str,
) -> Result<MediaClaims, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Refusal(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send the media token as Authorization: Bearer".to_owned(),
            )
        })?;
    let claims = signaling
        .inner
        .verifier
        .verify_media(token)
        .map_err(|reason| {
            Refusal(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                format!("the media token is not valid: {reason}"),
            )
        })?;
    match room.parse::<RoomId>() {
        Ok(id) if id == claims.room => Ok(claims),
        _ => Err(Refusal(
            StatusCode::FORBIDDEN,
            "wrong_room",
            "the media token is for another room".to_owned(),
        )),
    }
}

async fn start(
    State(signaling): State<Signaling>,
    Path(room): Path<String>,
    headers: HeaderMap,
    offer: String,
    kind: IngestKind,
) -> Response {
    let claims = match authorize(&signaling, &headers, &room) {
        Ok(claims) => claims,
        Err(refusal) => return refusal.into_response(),
    };
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
    if !sdp_type {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the SDP offer with Content-Type: application/sdp",
        );
    }
    let (allowed, what) = match kind {
        IngestKind::Whip => (claims.grants.can_publish, "publish"),
        IngestKind::Whep => (claims.grants.can_subscribe, "subscribe"),
    };
    if !allowed {
        return refuse(
            StatusCode::FORBIDDEN,
            "not_allowed",
            &format!("the media token has no {what} grant"),
        );
    }
    let request = JoinRequest {
        room: claims.room,
        participant: claims.participant,
        grants: claims.grants,
    };
    match signaling.inner.media.ingest(request, kind, offer).await {
        Ok(answer) => {
            let path = match kind {
                IngestKind::Whip => "whip",
                IngestKind::Whep => "whep",
            };
            let location = format!("/{path}/{}/{}", claims.room, claims.participant);
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_owned()),
                    (header::LOCATION, location),
                ],
                answer,
            )
                .into_response()
        }
        Err(MediaError::AlreadyJoined) => refuse(
            StatusCode::CONFLICT,
            "already_joined",
            "this media token is already in use; join again for a new one",
        ),
        Err(MediaError::InvalidSdp(reason)) => refuse(
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
            &format!("the offer could not be used: {reason}"),
        ),
        Err(MediaError::NotAllowed(reason)) => refuse(StatusCode::FORBIDDEN, "not_allowed", reason),
        Err(err) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &err.to_string(),
        ),
    }
}

/// `DELETE` on the session's `Location`, with the same token.
async fn end(
    State(signaling): State<Signaling>,
    Path((room, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let claims = match authorize(&signaling, &headers, &room) {
        Ok(claims) => claims,
        Err(refusal) => return refusal.into_response(),
    };
    if resource.parse::<ParticipantId>().ok() != Some(claims.participant) {
        return refuse(
            StatusCode::FORBIDDEN,
            "not_your_session",
            "a session is ended with the token that started it",
        );
    }
    signaling.inner.media.leave(claims.participant);
    StatusCode::OK.into_response()
}

async fn no_trickle() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "DELETE")],
        "trickle ICE is not supported: the answer carries every server candidate",
    )
        .into_response()
}
