-- The audit trail becomes a hash chain (cordon_store::audit): each row keeps the hash of the row
-- before it and its own. Rows written before this migration are sealed by the migration step
-- in Rust (hashes cannot be computed in SQL), in id order, right after these statements.
ALTER TABLE audit ADD COLUMN prev_hash TEXT;
ALTER TABLE audit ADD COLUMN hash TEXT;
