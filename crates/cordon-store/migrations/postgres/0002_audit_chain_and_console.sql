-- SQLite's migrations 0007 (the audit hash chain) and 0008 (the web console) on PostgreSQL.

-- The audit trail becomes a hash chain (cordon_store::audit): each row keeps the hash of the row
-- before it and its own. Rows written before this migration are sealed by the migration step
-- in Rust (hashes cannot be computed in SQL), in id order, right after these statements. New
-- rows get their id explicitly (the last id + 1, under the audit advisory lock), not from the
-- sequence.
ALTER TABLE audit ADD COLUMN prev_hash TEXT;
ALTER TABLE audit ADD COLUMN hash TEXT;

-- When the token stops working (NULL: never). An expired token is refused like an unknown one.
ALTER TABLE api_tokens ADD COLUMN expires_at TIMESTAMPTZ;

CREATE TABLE console_users (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    -- The argon2id hash in PHC string form (salt and parameters included). Never the password.
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE console_sessions (
    id           BIGSERIAL PRIMARY KEY,
    -- SHA-256 of the session id in the cookie, hex. The id itself is never stored.
    hash         TEXT NOT NULL UNIQUE,
    user_id      BIGINT NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    -- The synchronizer token every form of this session must carry.
    csrf         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    -- The absolute end of the session, whatever its activity.
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);
