-- Veza schema, version 2 (postgres): chat. Released migrations are never edited: add a new file.
-- Same conventions as 0001: ids are UUID text, times are ms since the Unix epoch in BIGINT.

-- The last chat sequence number handed out in each room. Bumped with UPDATE … RETURNING in the
-- transaction that inserts the message, so the row lock orders concurrent inserts and a rolled
-- back insert gives its number back: seqs are 1, 2, 3, … with no gaps and no repeats.
ALTER TABLE rooms ADD COLUMN chat_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE chat_messages (
    id         TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- chosen by the client (1–64 of [A-Za-z0-9_-]); a retry with the same one is not stored twice
    client_id  TEXT NOT NULL,
    -- emptied when the message is deleted
    text       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    edited_at  BIGINT,
    deleted_at BIGINT,
    -- the user who deleted it: the author, or a moderator
    deleted_by TEXT,
    UNIQUE (room_id, seq),
    UNIQUE (room_id, user_id, client_id)
);
CREATE INDEX chat_messages_user ON chat_messages(user_id);

-- Users who may not chat in a room (they may still listen). Kept in the database so that a mute
-- survives restarts and holds on every node.
CREATE TABLE room_chat_mutes (
    room_id    TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    muted_by   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
