//! Registration, login, refresh-token rotation, logout, TOTP and `/me`.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router, extract::State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Secret, TOTP};
use utoipa::ToSchema;
use veza_proto::{ACCESS_AUDIENCE, UserId};
use veza_store::{NewAuditEntry, RefreshOutcome, StoreError, User};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, AuthUser, ClientIp};
use crate::keys::AccessClaims;
use crate::{AppState, password, unix_now};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/totp/setup", post(totp_setup))
        .route("/api/v1/auth/totp/confirm", post(totp_confirm))
        .route("/api/v1/me", get(me))
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserView {
    #[schema(value_type = String, format = "uuid")]
    id: UserId,
    username: String,
    is_admin: bool,
    totp_enabled: bool,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            username: user.username,
            is_admin: user.is_admin,
            totp_enabled: user.totp_enabled,
        }
    }
}

/// Tokens for a signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Session {
    user: UserView,
    /// EdDSA JWT for `Authorization: Bearer`.
    access_token: String,
    /// Opaque; single use; present it to `/auth/refresh` for new tokens.
    refresh_token: String,
    /// Seconds until the access token expires.
    expires_in: u64,
    token_type: &'static str,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    /// 3–32 characters of `a-z`, `0-9`, `_`, `.`, `-` (either case; unique ignoring case).
    username: String,
    /// At least 10 characters.
    password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    username: String,
    password: String,
    /// The current TOTP code, once two-factor authentication is on.
    #[serde(default)]
    totp: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TotpSetup {
    /// Base32 secret for authenticator apps.
    secret: String,
    /// `otpauth://totp/...` URI (for a QR code).
    otpauth_url: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpConfirm {
    code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TotpStatus {
    totp_enabled: bool,
}

const MAX_PASSWORD_LEN: usize = 1024;
const TOTP_STEP: u64 = 30;

fn validate_username(name: &str) -> ApiResult<()> {
    let ok_len = (3..=32).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
            "usernames are 3 to 32 characters of letters a-z (either case), digits, '_', '.' and '-'",
        ))
    }
}

fn validate_password(password: &str) -> ApiResult<()> {
    let chars = password.chars().count();
    if chars < 10 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            "passwords need at least 10 characters",
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_password",
            "passwords are at most 1024 bytes",
        ));
    }
    Ok(())
}

/// SHA-256 of a refresh token, the form in which it is stored.
fn hash_refresh_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl AppState {
    /// Signs an access token for `user`.
    fn access_token(&self, user: &User) -> ApiResult<String> {
        let now = unix_now();
        let claims = AccessClaims {
            iss: self.keys.issuer().to_owned(),
            sub: user.id,
            aud: ACCESS_AUDIENCE.to_owned(),
            iat: now,
            exp: now + self.config.access_ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            name: user.username.clone(),
        };
        self.keys.sign(&claims).map_err(|e| ApiError::internal(&e))
    }

    /// A new session in a new refresh-token family.
    async fn new_session(&self, user: User) -> ApiResult<Session> {
        let refresh_token = new_refresh_token();
        let now = veza_store::now_ms();
        self.store
            .insert_refresh_token(
                &hash_refresh_token(&refresh_token),
                &uuid::Uuid::new_v4().to_string(),
                user.id,
                now,
                now + ttl_ms(self.config.refresh_ttl),
            )
            .await?;
        self.session(user, refresh_token)
    }

    fn session(&self, user: User, refresh_token: String) -> ApiResult<Session> {
        Ok(Session {
            access_token: self.access_token(&user)?,
            refresh_token,
            expires_in: self.config.access_ttl.as_secs(),
            token_type: "Bearer",
            user: user.into(),
        })
    }

    /// Appends to the audit log; a failure is logged and does not fail the request.
    pub(crate) async fn audit(&self, mut entry: NewAuditEntry<'_>) {
        // Text from clients (a login's username) may hold U+0000, which PostgreSQL cannot store.
        for text in [&mut entry.target, &mut entry.detail].into_iter().flatten() {
            if text.contains('\0') {
                *text = text.replace('\0', "\u{fffd}");
            }
        }
        let action = entry.action;
        if let Err(err) = self.store.audit(entry).await {
            tracing::error!(%err, action, "could not write the audit log");
        }
    }
}

fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn totp_for(secret_b32: &str, username: &str) -> ApiResult<TOTP> {
    let bytes = Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .map_err(|e| ApiError::internal(&format!("stored TOTP secret: {e:?}")))?;
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        TOTP_STEP,
        bytes,
        Some("Veza".to_owned()),
        username.to_owned(),
    )
    .map_err(|e| ApiError::internal(&format!("TOTP: {e}")))
}

/// The time step whose code equals `code`, allowing one step of clock skew either way.
fn matching_step(totp: &TOTP, code: &str, now: u64) -> Option<u64> {
    let current = now / TOTP_STEP;
    [current.saturating_sub(1), current, current + 1]
        .into_iter()
        .find(|&step| {
            let expected = totp.generate(step * TOTP_STEP);
            expected.len() == code.len()
                && expected
                    .bytes()
                    .zip(code.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
}

/// Checks a TOTP code and burns its time step so it cannot be replayed.
async fn check_totp(state: &AppState, user_id: UserId, totp: &TOTP, code: &str) -> ApiResult<()> {
    let invalid = || ApiError::unauthorized("invalid_totp", "the two-factor code is not valid");
    let step = matching_step(totp, code.trim(), unix_now()).ok_or_else(invalid)?;
    let step = i64::try_from(step).map_err(|_| invalid())?;
    if state.store.consume_totp_step(user_id, step).await? {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "totp_replayed",
            "this two-factor code was already used; wait for the next one",
        ))
    }
}

/// Register a user; the first user becomes an admin.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = Session), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    let hash = password::hash(req.password).await?;
    let user = match state.store.create_user(&req.username, &hash).await {
        Ok(user) => user,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "username_taken",
                "that username is taken",
            ));
        }
        Err(err) => return Err(err.into()),
    };
    state
        .audit(NewAuditEntry {
            actor_id: Some(user.id.to_string()),
            action: "register",
            target: Some(user.id.to_string()),
            ip: ip.0,
            detail: user.is_admin.then(|| "first user: admin".to_owned()),
        })
        .await;
    Ok((StatusCode::CREATED, Json(state.new_session(user).await?)))
}

/// Log in with a password (and a TOTP code once enabled).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Session), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<Session>> {
    // No username holds U+0000 (see `validate_username`), which PostgreSQL text cannot store.
    let lookup = if req.username.contains('\0') {
        Err(StoreError::NotFound)
    } else {
        state.store.credentials(&req.username).await
    };
    let found = match lookup {
        Ok(creds) => Some(creds),
        Err(StoreError::NotFound) => None,
        Err(err) => return Err(err.into()),
    };
    let phc = found.as_ref().map(|c| c.password_hash.clone());
    let password_ok =
        req.password.len() <= MAX_PASSWORD_LEN && password::verify(req.password, phc).await?;
    let creds = match found {
        Some(creds) if password_ok => creds,
        other => {
            state.metrics.auth_failure("bad_credentials");
            state
                .audit(NewAuditEntry {
                    // Nobody proved who they are: no actor. The target is the account tried.
                    actor_id: None,
                    action: "login_failed",
                    target: Some(other.map_or_else(
                        || req.username.chars().take(64).collect(),
                        |c| c.user.id.to_string(),
                    )),
                    ip: ip.0,
                    detail: Some("bad credentials".into()),
                })
                .await;
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "invalid username or password",
            ));
        }
    };
    if creds.user.totp_enabled {
        let secret = creds.totp_secret.as_deref().unwrap_or_default();
        let totp = totp_for(secret, &creds.user.username)?;
        let Some(code) = req.totp.as_deref() else {
            return Err(ApiError::unauthorized(
                "totp_required",
                "this account needs a two-factor code",
            ));
        };
        if let Err(err) = check_totp(&state, creds.user.id, &totp, code).await {
            state.metrics.auth_failure(err.code);
            state
                .audit(NewAuditEntry {
                    actor_id: Some(creds.user.id.to_string()),
                    action: "login_failed",
                    target: Some(creds.user.id.to_string()),
                    ip: ip.0,
                    detail: Some(err.code.to_owned()),
                })
                .await;
            return Err(err);
        }
    }
    state
        .audit(NewAuditEntry {
            actor_id: Some(creds.user.id.to_string()),
            action: "login",
            target: Some(creds.user.id.to_string()),
            ip: ip.0,
            detail: None,
        })
        .await;
    Ok(Json(state.new_session(creds.user).await?))
}

/// Trade a refresh token for new tokens. A used token presented again revokes its family.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = Session), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<Session>> {
    let fresh = new_refresh_token();
    let now = veza_store::now_ms();
    let outcome = state
        .store
        .rotate_refresh_token(
            &hash_refresh_token(&req.refresh_token),
            &hash_refresh_token(&fresh),
            now,
            now + ttl_ms(state.config.refresh_ttl),
        )
        .await?;
    let invalid =
        || ApiError::unauthorized("invalid_refresh_token", "the refresh token is not valid");
    match outcome {
        RefreshOutcome::Rotated { user_id } => {
            let user = state.store.user(user_id).await?;
            Ok(Json(state.session(user, fresh)?))
        }
        RefreshOutcome::Reused { user_id, family_id } => {
            state.metrics.auth_failure("refresh_reuse");
            tracing::warn!(user = %user_id, "refresh token reused; family revoked");
            state
                .audit(NewAuditEntry {
                    actor_id: Some(user_id.to_string()),
                    action: "refresh_reuse",
                    target: Some(family_id),
                    ip: ip.0,
                    detail: Some("token family revoked".into()),
                })
                .await;
            Err(invalid())
        }
        RefreshOutcome::Invalid => {
            state.metrics.auth_failure("invalid_refresh");
            Err(invalid())
        }
    }
}

/// Revoke the refresh token's whole family (this device's session).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let user = state
        .store
        .revoke_family_of(
            &hash_refresh_token(&req.refresh_token),
            veza_store::now_ms(),
        )
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_refresh_token", "the refresh token is not valid")
        })?;
    state
        .audit(NewAuditEntry {
            actor_id: Some(user.to_string()),
            action: "logout",
            target: Some(user.to_string()),
            ip: ip.0,
            detail: None,
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Start two-factor setup: a new secret to confirm with a code.
#[utoipa::path(post, path = "/api/v1/auth/totp/setup", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TotpSetup), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn totp_setup(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<TotpSetup>> {
    let secret = match Secret::generate_secret().to_encoded() {
        Secret::Encoded(s) => s,
        Secret::Raw(_) => return Err(ApiError::internal(&"TOTP secret was not encoded")),
    };
    let totp = totp_for(&secret, &user.username)?;
    match state.store.set_pending_totp(user.id, &secret).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "totp_enabled",
                "two-factor authentication is already on",
            ));
        }
        Err(err) => return Err(err.into()),
    }
    Ok(Json(TotpSetup {
        otpauth_url: totp.get_url(),
        secret,
    }))
}

/// Confirm two-factor setup with a current code; from then on login needs a code.
#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "auth", security(("bearer" = [])),
    request_body = TotpConfirm,
    responses((status = 200, body = TotpStatus), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn totp_confirm(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    ApiJson(req): ApiJson<TotpConfirm>,
) -> ApiResult<Json<TotpStatus>> {
    let creds = state.store.credentials_by_id(user.id).await?;
    if creds.user.totp_enabled {
        return Err(ApiError::conflict(
            "totp_enabled",
            "two-factor authentication is already on",
        ));
    }
    let secret = creds.totp_secret.ok_or_else(|| {
        ApiError::conflict("totp_not_set_up", "call /api/v1/auth/totp/setup first")
    })?;
    let totp = totp_for(&secret, &creds.user.username)?;
    check_totp(&state, user.id, &totp, &req.code).await?;
    state.store.enable_totp(user.id).await?;
    state
        .audit(NewAuditEntry {
            actor_id: Some(user.id.to_string()),
            action: "totp_enabled",
            target: Some(user.id.to_string()),
            ip: ip.0,
            detail: None,
        })
        .await;
    Ok(Json(TotpStatus { totp_enabled: true }))
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<UserView>> {
    match state.store.user(user.id).await {
        Ok(found) => Ok(Json(found.into())),
        Err(StoreError::NotFound) => Err(ApiError::unauthorized(
            "invalid_token",
            "the user no longer exists",
        )),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_passwords_are_validated() {
        for ok in ["abc", "a.b-c_d", "Alice", &"x".repeat(32)] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "", "has space", "émile", "a/b", &"x".repeat(33)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
        assert!(validate_password("123456789").is_err());
        assert!(validate_password("1234567890").is_ok());
        assert!(validate_password(&"p".repeat(1025)).is_err());
    }

    #[test]
    fn totp_codes_match_their_step_only() {
        let secret = match Secret::generate_secret().to_encoded() {
            Secret::Encoded(s) => s,
            Secret::Raw(_) => unreachable!("to_encoded encodes"),
        };
        let totp = totp_for(&secret, "alice").expect("totp");
        let now = 1_700_000_000;
        let code = totp.generate(now);
        assert_eq!(matching_step(&totp, &code, now), Some(now / TOTP_STEP));
        assert_eq!(
            matching_step(&totp, &code, now + 30),
            Some(now / TOTP_STEP),
            "one step of skew"
        );
        assert_eq!(matching_step(&totp, &code, now + 300), None);
        assert_eq!(matching_step(&totp, "12345", now), None);
    }

    #[test]
    fn refresh_tokens_are_stored_as_sha256() {
        let token = new_refresh_token();
        assert_eq!(token.len(), 43);
        assert_eq!(hash_refresh_token("abc").len(), 64);
        assert_ne!(hash_refresh_token(&token), token);
    }
}
