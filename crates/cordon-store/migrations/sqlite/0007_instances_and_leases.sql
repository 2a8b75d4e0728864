-- Several managers on one database (the same tables exist in SQLite, where one instance holds
-- every lease). A running action is leased by the instance that runs it and renewed while it
-- runs; an expired lease means that instance died, and another one resumes the action.
ALTER TABLE actions ADD COLUMN lease_owner TEXT;
ALTER TABLE actions ADD COLUMN lease_until_us INTEGER;
-- Heartbeats of the instances (`cordon status` lists them).
CREATE TABLE instances (
    name         TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
-- Named leases: one holder at a time (`reconciler`, `detections`).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    until_us    INTEGER NOT NULL,
    acquired_at TEXT NOT NULL
);
