-- Cordon's first schema. Times are RFC 3339 UTC strings; addresses are their text form.
-- Every action, message and audit row names the instance that produced it, so that several
-- managers can later share one (PostgreSQL) database.

CREATE TABLE networks (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    subnet      TEXT NOT NULL,
    quarantine_network TEXT,
    pool        TEXT,
    bridge      TEXT,
    updated_at  TEXT NOT NULL
);

CREATE TABLE tenants (
    name        TEXT PRIMARY KEY,
    admin_email TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE servers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    tenant      TEXT,
    user_email  TEXT,
    state       TEXT NOT NULL,
    -- 1 once the server left the configuration; never deleted while it has history.
    retired     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE nics (
    server_id       INTEGER NOT NULL REFERENCES servers(id),
    mac             TEXT NOT NULL,
    position        INTEGER NOT NULL,
    network         TEXT NOT NULL,      -- the operational network from the configuration
    operational_ip  TEXT NOT NULL,
    switch          TEXT,
    port            TEXT,
    current_network TEXT NOT NULL,      -- where Cordon last put (or found) the NIC
    current_ip      TEXT,
    PRIMARY KEY (server_id, mac)
);

CREATE TABLE ip_leases (
    network     TEXT NOT NULL,
    ip          TEXT NOT NULL,
    server_id   INTEGER NOT NULL REFERENCES servers(id),
    mac         TEXT NOT NULL,
    leased_at   TEXT NOT NULL,
    PRIMARY KEY (network, ip),
    UNIQUE (server_id, mac, network)
);

CREATE TABLE actions (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    state        TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    server_id    INTEGER REFERENCES servers(id),
    address      TEXT,
    reason       TEXT,
    trigger      TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    instance     TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    message_number INTEGER,
    message_text   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX actions_by_state ON actions(state, id);
CREATE INDEX actions_by_server ON actions(server_id, id);

CREATE TABLE action_steps (
    action_id   INTEGER NOT NULL REFERENCES actions(id),
    seq         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    message_number INTEGER,
    instance    TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (action_id, seq)
);

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    number      INTEGER NOT NULL,
    severity    TEXT NOT NULL,
    text        TEXT NOT NULL,
    server_id   INTEGER REFERENCES servers(id),
    action_id   INTEGER REFERENCES actions(id),
    instance    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX messages_by_action ON messages(action_id);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    origin      TEXT NOT NULL,
    verb        TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    instance    TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    -- SHA-256 of the token, hex. The token itself is never stored.
    hash        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
