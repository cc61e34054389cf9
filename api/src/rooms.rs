//! Rooms, members with roles, bans, and joining (media tokens with grants).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use veza_proto::{
    Grants, MEDIA_AUDIENCE, MediaClaims, ParticipantId, Role, RoomId, UserId, Visibility,
    may_moderate,
};
use veza_store::{Member, NewAuditEntry, NewRoom, Room, RoomPatch, StoreError};
use veza_turn::IceServer;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, ClientIp};
use crate::{AppState, QuicEndpoint, unix_now};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/rooms", post(create_room).get(list_rooms))
        .route(
            "/api/v1/rooms/{id}",
            get(get_room).patch(update_room).delete(delete_room),
        )
        .route("/api/v1/rooms/{id}/members", get(list_members))
        .route(
            "/api/v1/rooms/{id}/members/{user_id}",
            put(set_member).delete(remove_member),
        )
        .route("/api/v1/rooms/{id}/bans/{user_id}", post(ban).delete(unban))
        .route("/api/v1/rooms/{id}/join", post(join))
        .route("/api/v1/rooms/{id}/live", get(live))
}

/// A room as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomView {
    #[schema(value_type = String, format = "uuid")]
    id: RoomId,
    name: String,
    description: Option<String>,
    #[schema(value_type = String, example = "public")]
    visibility: Visibility,
    #[schema(value_type = String, format = "uuid")]
    owner_id: UserId,
    /// Milliseconds since the Unix epoch.
    created_at: i64,
    updated_at: i64,
    /// The caller's role in the room, if a member.
    #[schema(value_type = Option<String>, example = "owner")]
    my_role: Option<Role>,
}

impl RoomView {
    fn new(room: Room, my_role: Option<Role>) -> Self {
        Self {
            id: room.id,
            name: room.name,
            description: room.description,
            visibility: room.visibility,
            owner_id: room.owner_id,
            created_at: room.created_at,
            updated_at: room.updated_at,
            my_role,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRoom {
    /// 1–100 characters.
    name: String,
    #[schema(value_type = String, example = "public")]
    visibility: Visibility,
    /// Up to 1000 characters.
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRoom {
    #[serde(default)]
    name: Option<String>,
    /// `null` clears the description; leaving it out keeps it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    visibility: Option<Visibility>,
}

/// Tells a field set to `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Page size, 1–100 (default 50).
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomPage {
    rooms: Vec<RoomView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberView {
    #[schema(value_type = String, format = "uuid")]
    user_id: UserId,
    username: String,
    #[schema(value_type = String, example = "speaker")]
    role: Role,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            username: m.username,
            role: m.role,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberList {
    members: Vec<MemberView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetRole {
    /// `moderator`, `speaker` or `listener`.
    #[schema(value_type = String, example = "speaker")]
    role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GrantsView {
    can_publish: bool,
    can_subscribe: bool,
    can_chat: bool,
}

impl From<Grants> for GrantsView {
    fn from(g: Grants) -> Self {
        Self {
            can_publish: g.can_publish,
            can_subscribe: g.can_subscribe,
            can_chat: g.can_chat,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JoinUrls {
    /// WebSocket signaling (`?token=` the media token).
    signaling: String,
    /// WHIP ingest (RFC 9725), `Authorization: Bearer` the media token.
    whip: String,
    /// WHEP playback.
    whep: String,
    /// moq-lite over QUIC or WebTransport (`?jwt=` the media token); absent when QUIC is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    quic: Option<String>,
    /// Lower-case hex SHA-256 of that node's QUIC certificate, for pinning (WebTransport's
    /// `serverCertificateHashes`); absent when QUIC is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    quic_sha256: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IceServerView {
    urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

impl From<IceServer> for IceServerView {
    fn from(s: IceServer) -> Self {
        Self {
            urls: s.urls,
            username: s.username,
            credential: s.credential,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JoinResponse {
    /// Media token: an EdDSA JWT for this room and participant.
    token: String,
    /// Seconds until the media token expires.
    expires_in: u64,
    #[schema(value_type = String, format = "uuid")]
    room_id: RoomId,
    #[schema(value_type = String, format = "uuid")]
    participant_id: ParticipantId,
    #[schema(value_type = String, example = "listener")]
    role: Role,
    grants: GrantsView,
    urls: JoinUrls,
    ice_servers: Vec<IceServerView>,
}

fn validate_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    // PostgreSQL text cannot hold U+0000.
    if name.is_empty() || name.chars().count() > 100 || name.contains('\0') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "room names are 1 to 100 characters, without U+0000",
        ));
    }
    Ok(name.to_owned())
}

fn validate_description(description: Option<String>) -> ApiResult<Option<String>> {
    match description {
        Some(d) if d.chars().count() > 1000 || d.contains('\0') => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_description",
            "descriptions are at most 1000 characters, without U+0000",
        )),
        other => Ok(other),
    }
}

pub(crate) fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> ApiResult<T> {
    raw.parse()
        .map_err(|_| ApiError::bad_request("invalid_id", format!("{what} is not a valid id")))
}

/// Loads the room and the caller's role; private rooms are visible to members only.
async fn visible_room(
    state: &AppState,
    id: RoomId,
    user: UserId,
) -> ApiResult<(Room, Option<Role>)> {
    let room = match state.store.room(id).await {
        Ok(room) => room,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("room")),
        Err(err) => return Err(err.into()),
    };
    let role = state.store.member_role(id, user).await?;
    if room.visibility == Visibility::Private && role.is_none() {
        return Err(ApiError::forbidden("not_a_member", "this room is private"));
    }
    Ok((room, role))
}

/// Loads the room and checks the caller owns it.
async fn owned_room(state: &AppState, id: RoomId, user: UserId) -> ApiResult<Room> {
    let (room, role) = visible_room(state, id, user).await?;
    if role != Some(Role::Owner) {
        return Err(ApiError::forbidden(
            "not_owner",
            "only the room's owner may do this",
        ));
    }
    Ok(room)
}

/// A moderation action the caller is allowed to take on `target` in `room`.
struct Moderation {
    room: RoomId,
    target: UserId,
    /// The caller's role: owner or moderator.
    actor_role: Role,
}

impl Moderation {
    /// Checks that `actor` moderates the room and may act on `target`: never on the owner, and
    /// a moderator not on another moderator (only the owner manages moderators).
    async fn check(
        state: &AppState,
        actor: UserId,
        (room, target): &(String, String),
    ) -> ApiResult<Self> {
        let (room, target): (RoomId, UserId) =
            (parse_id(room, "room id")?, parse_id(target, "user id")?);
        let (room, actor_role) = visible_room(state, room, actor).await?;
        let target_role = state.store.member_role(room.id, target).await?;
        may_moderate(actor_role, target_role)
            .map_err(|denied| ApiError::forbidden(denied.code(), denied.message()))?;
        // may_moderate allowed it, so the actor is the owner or a moderator.
        let actor_role = actor_role.unwrap_or(Role::Moderator);
        match state.store.user(target).await {
            Ok(_) => Ok(Self {
                room: room.id,
                target,
                actor_role,
            }),
            Err(StoreError::NotFound) => Err(ApiError::not_found("user")),
            Err(err) => Err(err.into()),
        }
    }

    /// Writes the audit entry of the action.
    async fn audit(
        &self,
        state: &AppState,
        actor: UserId,
        ip: ClientIp,
        action: &str,
        detail: String,
    ) {
        state
            .audit(NewAuditEntry {
                actor_id: Some(actor.to_string()),
                action,
                target: Some(self.target.to_string()),
                ip: ip.0,
                detail: Some(format!("room {}{detail}", self.room)),
            })
            .await;
    }
}

/// Create a room; the caller becomes its owner.
#[utoipa::path(post, path = "/api/v1/rooms", tag = "rooms", security(("bearer" = [])), request_body = CreateRoom,
    responses((status = 201, body = RoomView), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn create_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateRoom>,
) -> ApiResult<impl IntoResponse> {
    let name = validate_name(&req.name)?;
    let description = validate_description(req.description)?;
    let room = state
        .store
        .create_room(NewRoom {
            name: &name,
            description: description.as_deref(),
            visibility: req.visibility,
            owner_id: user.id,
        })
        .await?;
    let location = format!("/api/v1/rooms/{}", room.id);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(RoomView::new(room, Some(Role::Owner))),
    ))
}

/// Public rooms and the caller's rooms, newest first.
#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = RoomPage)))]
pub(crate) async fn list_rooms(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<RoomPage>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit is 1 to 100"));
    }
    let after = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(cursor) => {
            let invalid = || ApiError::bad_request("invalid_cursor", "the cursor is not valid");
            let (at, id) = cursor.split_once('_').ok_or_else(invalid)?;
            Some((
                at.parse().map_err(|_| invalid())?,
                id.parse().map_err(|_| invalid())?,
            ))
        }
    };
    // One more than asked tells whether another page exists.
    let mut rooms = state.store.list_rooms(user.id, limit + 1, after).await?;
    let more = rooms.len() as i64 > limit;
    rooms.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            rooms
                .last()
                .map(|r| format!("{}_{}", r.room.created_at, r.room.id))
        })
        .flatten();
    Ok(Json(RoomPage {
        rooms: rooms
            .into_iter()
            .map(|r| RoomView::new(r.room, r.role))
            .collect(),
        next_cursor,
    }))
}

/// One room (private rooms: members only).
#[utoipa::path(get, path = "/api/v1/rooms/{id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id")),
    responses((status = 200, body = RoomView), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RoomView>> {
    let (room, role) = visible_room(&state, parse_id(&id, "room id")?, user.id).await?;
    Ok(Json(RoomView::new(room, role)))
}

/// Change a room's name, description or visibility (owner only).
#[utoipa::path(patch, path = "/api/v1/rooms/{id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id")), request_body = UpdateRoom,
    responses((status = 200, body = RoomView), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn update_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateRoom>,
) -> ApiResult<Json<RoomView>> {
    let id = parse_id(&id, "room id")?;
    owned_room(&state, id, user.id).await?;
    let patch = RoomPatch {
        name: req.name.as_deref().map(validate_name).transpose()?,
        description: req.description.map(validate_description).transpose()?,
        visibility: req.visibility,
    };
    let room = state.store.update_room(id, patch).await?;
    Ok(Json(RoomView::new(room, Some(Role::Owner))))
}

/// Delete a room (owner only).
#[utoipa::path(delete, path = "/api/v1/rooms/{id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn delete_room(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let room = owned_room(&state, parse_id(&id, "room id")?, user.id).await?;
    state.store.delete_room(room.id).await?;
    state
        .audit(NewAuditEntry {
            actor_id: Some(user.id.to_string()),
            action: "room_deleted",
            target: Some(room.id.to_string()),
            ip: ip.0,
            detail: Some(room.name.chars().take(100).collect()),
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The room's members and their roles.
#[utoipa::path(get, path = "/api/v1/rooms/{id}/members", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id")),
    responses((status = 200, body = MemberList)))]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<MemberList>> {
    let (room, _) = visible_room(&state, parse_id(&id, "room id")?, user.id).await?;
    let members = state.store.list_members(room.id).await?;
    Ok(Json(MemberList {
        members: members.into_iter().map(Into::into).collect(),
    }))
}

/// Give a user a role in the room (owner or moderator; never the owner's role).
#[utoipa::path(put, path = "/api/v1/rooms/{id}/members/{user_id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), ("user_id" = String, Path, description = "user id")),
    request_body = SetRole,
    responses((status = 200, body = MemberView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn set_member(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiPath(ids): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SetRole>,
) -> ApiResult<Json<MemberView>> {
    let action = Moderation::check(&state, user.id, &ids).await?;
    match req.role {
        Role::Owner => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_role",
                "a room has one owner; assign moderator, speaker or listener",
            ));
        }
        Role::Moderator if action.actor_role != Role::Owner => {
            return Err(ApiError::forbidden(
                "owner_only",
                "only the room's owner may appoint moderators",
            ));
        }
        _ => {}
    }
    match state
        .store
        .set_member_role(action.room, action.target, req.role)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "banned",
                "the user is banned from this room; unban first",
            ));
        }
        Err(err) => return Err(err.into()),
    }
    action
        .audit(
            &state,
            user.id,
            ip,
            "role_change",
            format!(": {}", req.role),
        )
        .await;
    let username = state.store.user(action.target).await?.username;
    Ok(Json(MemberView {
        user_id: action.target,
        username,
        role: req.role,
    }))
}

/// Remove a user from the room's members (owner or moderator).
#[utoipa::path(delete, path = "/api/v1/rooms/{id}/members/{user_id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), ("user_id" = String, Path, description = "user id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiPath(ids): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let action = Moderation::check(&state, user.id, &ids).await?;
    if !state
        .store
        .remove_member(action.room, action.target)
        .await?
    {
        return Err(ApiError::not_found("member"));
    }
    action
        .audit(&state, user.id, ip, "member_removed", String::new())
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Ban a user from the room (owner or moderator); ends their membership.
#[utoipa::path(post, path = "/api/v1/rooms/{id}/bans/{user_id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), ("user_id" = String, Path, description = "user id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn ban(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiPath(ids): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    // Nobody can ban themselves: the owner is protected, a moderator cannot act on a moderator.
    let action = Moderation::check(&state, user.id, &ids).await?;
    state.store.ban(action.room, action.target, user.id).await?;
    state.remove_from_media(action.room, action.target);
    action
        .audit(&state, user.id, ip, "ban", String::new())
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Lift a ban (owner or moderator).
#[utoipa::path(delete, path = "/api/v1/rooms/{id}/bans/{user_id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id"), ("user_id" = String, Path, description = "user id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn unban(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiPath(ids): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let action = Moderation::check(&state, user.id, &ids).await?;
    if !state.store.unban(action.room, action.target).await? {
        return Err(ApiError::not_found("ban"));
    }
    action
        .audit(&state, user.id, ip, "unban", String::new())
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Who is in the room right now (participants over every transport, and how many publish),
/// for clients holding the room's media token — `veza broadcast` shows its listeners with it.
#[utoipa::path(get, path = "/api/v1/rooms/{id}/live", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id")),
    responses((status = 200, description = "`{\"participants\": n, \"publishers\": n}`"),
              (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn live(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id: RoomId = parse_id(&id, "room id")?;
    let token = crate::extract::bearer_in(&headers).ok_or_else(|| {
        ApiError::unauthorized("missing_token", "Authorization: Bearer <media token>")
    })?;
    let claims = state.keys.verify_media(token).map_err(|err| {
        ApiError::unauthorized(
            "invalid_token",
            format!("the media token is not valid: {err}"),
        )
    })?;
    if claims.room != id {
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the media token is for another room",
        ));
    }
    let (participants, publishers) = state.room_live(id);
    Ok(Json(serde_json::json!({
        "participants": participants,
        "publishers": publishers,
    })))
}

/// Join a room: a media token whose grants follow the caller's role, and where to connect.
#[utoipa::path(post, path = "/api/v1/rooms/{id}/join", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "room id")),
    responses((status = 200, body = JoinResponse), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn join(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JoinResponse>> {
    let id: RoomId = parse_id(&id, "room id")?;
    let outcome = join_room(&state, id, &user).await;
    state.metrics.join(match &outcome {
        Ok(_) => "ok",
        Err(e) => e.code,
    });
    outcome.map(Json)
}

async fn join_room(state: &AppState, id: RoomId, user: &AuthUser) -> ApiResult<JoinResponse> {
    let (room, role) = visible_room(state, id, user.id).await?;
    if state.store.is_banned(room.id, user.id).await? {
        return Err(ApiError::forbidden(
            "banned",
            "you are banned from this room",
        ));
    }
    let role = role.unwrap_or(Role::Listener);
    let grants = role.grants();
    let participant = ParticipantId::new();
    let now = unix_now();
    let claims = MediaClaims {
        iss: state.keys.issuer().to_owned(),
        sub: user.id,
        aud: MEDIA_AUDIENCE.to_owned(),
        iat: now,
        exp: now + state.config.media_ttl.as_secs(),
        jti: uuid::Uuid::new_v4().to_string(),
        room: room.id,
        participant,
        name: user.username.clone(),
        role,
        grants,
    };
    let token = state
        .keys
        .sign(&claims)
        .map_err(|e| ApiError::internal(&e))?;
    // The media node: the one placement picked, or this one.
    let node = state.place(room.id).await?;
    let (base, quic) = match &node {
        Some(node) => (
            node.http_url.trim_end_matches('/').to_owned(),
            node.quic_url
                .clone()
                .zip(node.quic_sha256.clone())
                .map(|(url, sha256)| QuicEndpoint { url, sha256 }),
        ),
        None => (state.config.public_url.clone(), state.quic_endpoint()),
    };
    let base = &base;
    let ws_base = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            base.strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .unwrap_or_else(|| base.clone());
    let mut ice_servers = Vec::new();
    if !state.config.stun_urls.is_empty() {
        ice_servers.push(IceServer::stun(state.config.stun_urls.clone()).into());
    }
    if let Some(turn) = &state.config.turn {
        ice_servers.push(turn.ice_server(&user.id.to_string(), now).into());
    }
    Ok(JoinResponse {
        token,
        expires_in: state.config.media_ttl.as_secs(),
        room_id: room.id,
        participant_id: participant,
        role,
        grants: grants.into(),
        urls: JoinUrls {
            signaling: format!("{ws_base}/rtc"),
            whip: format!("{base}/whip/{}", room.id),
            whep: format!("{base}/whep/{}", room.id),
            quic: quic
                .as_ref()
                .map(|quic| format!("{}/room/{}", quic.url.trim_end_matches('/'), room.id)),
            quic_sha256: quic.map(|quic| quic.sha256),
        },
        ice_servers,
    })
}
