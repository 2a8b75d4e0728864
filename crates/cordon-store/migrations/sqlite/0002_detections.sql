-- Detections, the addresses servers held over time (to resolve late alerts), the checkpoints
-- of followed files, and the detections attached to each action.

CREATE TABLE detections (
    id            INTEGER PRIMARY KEY,
    received_at_us INTEGER NOT NULL,
    observed_at_us INTEGER,
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
    -- Filled once the engine has decided; NULL = not processed yet (resumed at start).
    decision      TEXT,
    server_id     INTEGER REFERENCES servers(id),
    action_id     INTEGER REFERENCES actions(id)
);
CREATE INDEX detections_unprocessed ON detections(id) WHERE decision IS NULL;
CREATE INDEX detections_by_source ON detections(source, id);
CREATE INDEX detections_by_action ON detections(action_id);

CREATE TABLE address_history (
    id            INTEGER PRIMARY KEY,
    ip            TEXT NOT NULL,
    server_id     INTEGER NOT NULL REFERENCES servers(id),
    mac           TEXT NOT NULL,
    kind          TEXT NOT NULL,          -- operational | quarantine
    valid_from_us INTEGER NOT NULL,
    valid_to_us   INTEGER                 -- NULL: still held
);
CREATE INDEX address_history_by_ip ON address_history(ip, valid_from_us);

CREATE TABLE source_checkpoints (
    source      TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    inode       INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);

ALTER TABLE actions ADD COLUMN detections INTEGER NOT NULL DEFAULT 0;
ALTER TABLE actions ADD COLUMN decided_by TEXT;
CREATE INDEX actions_by_address ON actions(address, id) WHERE server_id IS NULL;

-- Operational addresses held since before Cordon knew of them: open from the beginning of time.
INSERT INTO address_history (ip, server_id, mac, kind, valid_from_us, valid_to_us)
    SELECT operational_ip, server_id, mac, 'operational', 0, NULL FROM nics;
INSERT INTO address_history (ip, server_id, mac, kind, valid_from_us, valid_to_us)
    SELECT ip, server_id, mac, 'quarantine', 0, NULL FROM ip_leases;
