-- Cordon's schema on PostgreSQL: the same tables as SQLite's migrations 0001-0007 reach, with
-- PostgreSQL's types (BIGINT ids and counters, BOOLEAN flags, TIMESTAMPTZ times). Addresses
-- are their text form, as in SQLite, so that both backends compare them the same way.

CREATE TABLE networks (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    subnet      TEXT NOT NULL,
    quarantine_network TEXT,
    pool        TEXT,
    bridge      TEXT,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE tenants (
    name        TEXT PRIMARY KEY,
    admin_email TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE servers (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    tenant      TEXT,
    user_email  TEXT,
    state       TEXT NOT NULL,
    retired     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    hypervisor  TEXT,
    domain      TEXT,
    origin      TEXT NOT NULL DEFAULT 'config'
);

CREATE TABLE nics (
    server_id       BIGINT NOT NULL REFERENCES servers(id),
    mac             TEXT NOT NULL,
    position        BIGINT NOT NULL,
    network         TEXT NOT NULL,
    operational_ip  TEXT NOT NULL,
    switch          TEXT,
    port            TEXT,
    current_network TEXT NOT NULL,
    current_ip      TEXT,
    PRIMARY KEY (server_id, mac)
);
CREATE INDEX nics_by_operational_ip ON nics(operational_ip);
CREATE INDEX nics_by_current_ip ON nics(current_ip);

CREATE TABLE ip_leases (
    network     TEXT NOT NULL,
    ip          TEXT NOT NULL,
    server_id   BIGINT NOT NULL REFERENCES servers(id),
    mac         TEXT NOT NULL,
    leased_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (network, ip),
    UNIQUE (server_id, mac, network)
);

CREATE TABLE actions (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL,
    state        TEXT NOT NULL,
    generation   BIGINT NOT NULL,
    server_id    BIGINT REFERENCES servers(id),
    address      TEXT,
    reason       TEXT,
    trigger      TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    instance     TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    message_number BIGINT,
    message_text   TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    detections   BIGINT NOT NULL DEFAULT 0,
    decided_by   TEXT,
    -- When a retrying action may run again (Unix microseconds); NULL: now.
    not_before_us BIGINT,
    -- The instance running it and until when (Unix microseconds), renewed while it runs.
    lease_owner    TEXT,
    lease_until_us BIGINT
);
CREATE INDEX actions_by_state ON actions(state, id);
CREATE INDEX actions_by_server ON actions(server_id, id);
CREATE INDEX actions_by_address ON actions(address, id) WHERE server_id IS NULL;

CREATE TABLE action_steps (
    action_id   BIGINT NOT NULL REFERENCES actions(id),
    seq         BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    name        TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    message_number BIGINT,
    instance    TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (action_id, seq)
);

CREATE TABLE messages (
    id          BIGSERIAL PRIMARY KEY,
    number      BIGINT NOT NULL,
    severity    TEXT NOT NULL,
    text        TEXT NOT NULL,
    server_id   BIGINT REFERENCES servers(id),
    action_id   BIGINT REFERENCES actions(id),
    instance    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_by_action ON messages(action_id);

CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    origin      TEXT NOT NULL,
    verb        TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    instance    TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    -- SHA-256 of the token, hex. The token itself is never stored.
    hash        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

CREATE TABLE detections (
    id            BIGSERIAL PRIMARY KEY,
    received_at_us BIGINT NOT NULL,
    observed_at_us BIGINT,
    source        TEXT NOT NULL,
    sensor        TEXT,
    subject       TEXT NOT NULL,
    peer          TEXT,
    src_ip        TEXT,
    dest_ip       TEXT,
    target_ip     TEXT,
    signature_id  TEXT,
    signature     TEXT NOT NULL,
    category      TEXT,
    severity      TEXT NOT NULL,
    raw           TEXT NOT NULL,
    instance      TEXT NOT NULL,
    decision      TEXT,
    server_id     BIGINT REFERENCES servers(id),
    action_id     BIGINT REFERENCES actions(id)
);
CREATE INDEX detections_unprocessed ON detections(id) WHERE decision IS NULL;
CREATE INDEX detections_by_source ON detections(source, id);
CREATE INDEX detections_by_action ON detections(action_id);

CREATE TABLE address_history (
    id            BIGSERIAL PRIMARY KEY,
    ip            TEXT NOT NULL,
    server_id     BIGINT NOT NULL REFERENCES servers(id),
    mac           TEXT NOT NULL,
    kind          TEXT NOT NULL,
    valid_from_us BIGINT NOT NULL,
    valid_to_us   BIGINT
);
CREATE INDEX address_history_by_ip ON address_history(ip, valid_from_us);
CREATE INDEX address_history_by_server ON address_history(server_id, kind, valid_to_us);

CREATE TABLE source_checkpoints (
    source      TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    inode       BIGINT NOT NULL,
    byte_offset BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE instances (
    name         TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    until_us    BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL
);
