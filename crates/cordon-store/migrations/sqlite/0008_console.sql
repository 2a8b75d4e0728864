-- The web console: local accounts and their sessions; API tokens that expire.

-- When the token stops working (NULL: never). An expired token is refused like an unknown one.
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;

CREATE TABLE console_users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    -- The argon2id hash in PHC string form (salt and parameters included). Never the password.
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE console_sessions (
    id           INTEGER PRIMARY KEY,
    -- SHA-256 of the session id in the cookie, hex. The id itself is never stored.
    hash         TEXT NOT NULL UNIQUE,
    user_id      INTEGER NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    -- The synchronizer token every form of this session must carry.
    csrf         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    -- The absolute end of the session, whatever its activity.
    expires_at   TEXT NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);
