//! Room chat over REST: history pages, posting (for integrations and bots), edits, deletes and
//! chat mutes. Every rule lives in `veza-chat`; these handlers check the caller's access to the
//! room, call the chat service and audit moderation. A message posted here is delivered live
//! to the room like one sent over a data channel.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use veza_chat::{ChatPage, MAX_PAGE, Sender};
use veza_proto::chat::ChatMessage;
use veza_proto::{MessageId, Role, RoomId, UserId, Visibility};
use veza_store::{NewAuditEntry, StoreError};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, ClientIp};
use crate::rooms::parse_id;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/rooms/{id}/messages",
            get(list_messages).post(post_message),
        )
        .route(
            "/api/v1/rooms/{id}/messages/{seq}",
            patch(edit_message).delete(delete_message),
        )
        .route(
            "/api/v1/rooms/{id}/chat-mutes/{user_id}",
            post(mute).delete(unmute),
        )
}

/// A chat message, as history pages, posts and live events (`veza-proto`'s `ChatMessage`)
/// show it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageView {
    #[schema(value_type = String, format = "uuid")]
    id: MessageId,
    /// Position in the room's chat: 1, 2, 3, … without gaps.
    seq: i64,
    #[schema(value_type = String, format = "uuid")]
    room_id: RoomId,
    #[schema(value_type = String, format = "uuid")]
    user_id: UserId,
    username: String,
    /// Empty once deleted.
    text: String,
    /// Server time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Time of the last edit; `null` if never edited.
    edited_at: Option<i64>,
    /// Deleted by its author or a moderator.
    deleted: bool,
}

impl From<ChatMessage> for MessageView {
    fn from(m: ChatMessage) -> Self {
        Self {
            id: m.id,
            seq: m.seq,
            room_id: m.room_id,
            user_id: m.user_id,
            username: m.username,
            text: m.text,
            created_at: m.created_at,
            edited_at: m.edited_at,
            deleted: m.deleted,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessagePage {
    messages: Vec<MessageView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    /// Messages with a lower seq, newest first (scrolling back). Exclusive.
    before: Option<i64>,
    /// Messages with a higher seq, oldest first (catching up after a reconnect). Exclusive.
    after: Option<i64>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendMessage {
    /// 1–4000 characters, not blank; no control characters but tab, LF and CR.
    text: String,
    /// 1–64 characters of `A-Z a-z 0-9 _ -`, chosen by the client (a UUID fits). Sending the
    /// same one again returns the stored message instead of a new one.
    client_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditMessage {
    /// The new text; same rules as when sending.
    text: String,
}

/// A message's seq in a path: a positive integer.
fn parse_seq(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|seq| *seq >= 1)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_id", "the message seq must be a positive integer")
        })
}

/// The caller as a chat participant of the room: the room exists, is visible to them (public,
/// or they are a member) and they are not banned. Non-members of a public room act as
/// listeners, as when they join.
async fn chat_sender(state: &AppState, room: RoomId, user: &AuthUser) -> ApiResult<Sender> {
    let standing = match state.store.chat_standing(room, user.id).await {
        Ok(standing) => standing,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("room")),
        Err(err) => return Err(err.into()),
    };
    if standing.visibility == Visibility::Private && standing.role.is_none() {
        return Err(ApiError::forbidden("not_a_member", "this room is private"));
    }
    if standing.banned {
        return Err(ApiError::forbidden(
            "banned",
            "you are banned from this room",
        ));
    }
    let role = standing.role.unwrap_or(Role::Listener);
    Ok(Sender {
        user_id: user.id,
        username: user.username.clone(),
        room,
        role,
        can_chat: role.grants().can_chat,
    })
}

/// A page of the room's chat history.
#[utoipa::path(get, path = "/api/v1/rooms/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), HistoryQuery),
    responses((status = 200, body = MessagePage), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<MessagePage>> {
    let sender = chat_sender(&state, parse_id(&id, "room id")?, &user).await?;
    let limit = query.limit.unwrap_or(50);
    let limit = u32::try_from(limit)
        .ok()
        .filter(|l| (1..=MAX_PAGE).contains(l))
        .ok_or_else(|| ApiError::bad_request("invalid_limit", "limit is 1 to 200"))?;
    let page = match (query.before, query.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "pass before or after, not both",
            ));
        }
        (Some(before), None) => ChatPage::Before(before),
        (None, Some(after)) => ChatPage::After(after),
        (None, None) => ChatPage::Latest,
    };
    let messages = state.chat.history(&sender, page, limit).await?;
    Ok(Json(MessagePage {
        messages: messages.into_iter().map(Into::into).collect(),
    }))
}

/// Post a message as the caller (for integrations and bots): the rules of chat apply, and the
/// room receives it live.
#[utoipa::path(post, path = "/api/v1/rooms/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id")), request_body = SendMessage,
    responses((status = 201, description = "stored and delivered", body = MessageView),
              (status = 200, description = "the client_id was already used: the stored message", body = MessageView),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn post_message(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SendMessage>,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    let sender = chat_sender(&state, parse_id(&id, "room id")?, &user).await?;
    let ack = state.chat.send(&sender, &req.client_id, &req.text).await?;
    let status = if ack.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ack.message.into())))
}

/// Edit one of the caller's messages; the room receives the change live.
#[utoipa::path(patch, path = "/api/v1/rooms/{id}/messages/{seq}", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), ("seq" = i64, Path, description = "message seq")),
    request_body = EditMessage,
    responses((status = 200, body = MessageView), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn edit_message(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, seq)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<EditMessage>,
) -> ApiResult<Json<MessageView>> {
    let room = parse_id(&id, "room id")?;
    let seq = parse_seq(&seq)?;
    let sender = chat_sender(&state, room, &user).await?;
    let message = state.chat.edit(&sender, seq, &req.text).await?;
    Ok(Json(message.into()))
}

/// Delete a message: the author's own, or any as the room's owner or a moderator. The message
/// keeps its seq with empty text and `deleted: true`; the room receives the change live.
#[utoipa::path(delete, path = "/api/v1/rooms/{id}/messages/{seq}", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), ("seq" = i64, Path, description = "message seq")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn delete_message(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiPath((id, seq)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let room = parse_id(&id, "room id")?;
    let seq = parse_seq(&seq)?;
    let sender = chat_sender(&state, room, &user).await?;
    let message = state.chat.delete(&sender, seq).await?;
    if message.user_id != user.id {
        state
            .audit(NewAuditEntry {
                actor_id: Some(user.id.to_string()),
                action: "chat_message_deleted",
                target: Some(message.user_id.to_string()),
                ip: ip.0,
                detail: Some(format!("room {room}: message {seq}")),
            })
            .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Mute a user in the room's chat (owner or moderator; the same protections as bans).
#[utoipa::path(post, path = "/api/v1/rooms/{id}/chat-mutes/{user_id}", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), ("user_id" = String, Path, description = "user id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn mute(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiPath((id, target)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (room, target): (RoomId, UserId) =
        (parse_id(&id, "room id")?, parse_id(&target, "user id")?);
    let sender = chat_sender(&state, room, &user).await?;
    state.chat.mute(&sender, target).await?;
    audit_mute(&state, &user, ip, "chat_mute", room, target).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Lift a chat mute (owner or moderator; the same protections as bans).
#[utoipa::path(delete, path = "/api/v1/rooms/{id}/chat-mutes/{user_id}", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), ("user_id" = String, Path, description = "user id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn unmute(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiPath((id, target)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (room, target): (RoomId, UserId) =
        (parse_id(&id, "room id")?, parse_id(&target, "user id")?);
    let sender = chat_sender(&state, room, &user).await?;
    state.chat.unmute(&sender, target).await?;
    audit_mute(&state, &user, ip, "chat_unmute", room, target).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit_mute(
    state: &AppState,
    user: &AuthUser,
    ip: ClientIp,
    action: &str,
    room: RoomId,
    target: UserId,
) {
    state
        .audit(NewAuditEntry {
            actor_id: Some(user.id.to_string()),
            action,
            target: Some(target.to_string()),
            ip: ip.0,
            detail: Some(format!("room {room}")),
        })
        .await;
}
