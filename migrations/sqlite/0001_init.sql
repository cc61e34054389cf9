-- Veza schema, version 1 (sqlite). Released migrations are never edited: add a new file.
-- Times are milliseconds since the Unix epoch (BIGINT); ids are UUID text; flags are 0/1 BIGINT,
-- so that one set of queries serves PostgreSQL and SQLite.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL,
    -- lowercased username: uniqueness is case-insensitive
    username_key   TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    is_admin       BIGINT NOT NULL DEFAULT 0,
    -- base32 TOTP secret; pending until totp_enabled = 1
    totp_secret    TEXT,
    totp_enabled   BIGINT NOT NULL DEFAULT 0,
    -- the last accepted TOTP time step, so that a code is never accepted twice
    totp_last_step BIGINT,
    created_at     BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the opaque token; the token itself is never stored
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);

CREATE TABLE rooms (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT,
    visibility  TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    owner_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX rooms_listing ON rooms(created_at, id);

CREATE TABLE room_members (
    room_id    TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'moderator', 'speaker', 'listener')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user ON room_members(user_id);

CREATE TABLE room_bans (
    room_id    TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    banned_by  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    actor_id   TEXT,
    action     TEXT NOT NULL,
    target     TEXT,
    ip         TEXT,
    detail     TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_created ON audit_log(created_at);
