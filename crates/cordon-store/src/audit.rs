//! The audit trail is a hash chain: each row's hash covers its content and the hash of the row
//! before it, so a row changed, deleted or moved after it was written breaks the chain at a
//! row that [`AuditVerifier`] names.
//!
//! Backend-independent: every backend stores `prev_hash` and `hash` as written by
//! [`audit_hash`], and verification reads the rows in id order through the [`Store`] trait.
//!
//! What the chain cannot show on its own: rows cut off the *end* (the last rows deleted). The
//! verification reports the head (last id and hash) so that an operator or a monitor can keep it
//! elsewhere and compare (docs/security.md).
//!
//! [`Store`]: crate::Store

use sha2::{Digest, Sha256};

use cordon_model::{ActionCommand, ActionKind, ActionState};

use crate::{ActionRecord, AuditEntry, AuditRecord, MessageRef, Store};

/// The `prev_hash` of the first row.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of one row: SHA-256 over a versioned, length-prefixed encoding of the previous hash,
/// the row's id, its time (Unix microseconds) and every field of the entry.
pub fn audit_hash(prev_hash: &str, id: i64, at_us: i64, entry: &AuditEntry) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"cordon-audit-v1");
    let id = id.to_string();
    let at = at_us.to_string();
    for field in
        [prev_hash, &id, &at, &entry.actor, &entry.origin, &entry.verb, &entry.target, &entry.detail, &entry.instance]
    {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {id}: {detail}")]
pub struct AuditBreak {
    /// The first row that does not verify.
    pub id: i64,
    pub detail: String,
}

/// A verified chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSummary {
    pub rows: u64,
    /// The last row's id and hash (0 and the genesis hash when the trail is empty).
    pub head_id: i64,
    pub head_hash: String,
}

/// Checks rows fed in id order, oldest first.
#[derive(Debug, Clone)]
pub struct AuditVerifier {
    previous_id: i64,
    previous_hash: String,
    rows: u64,
}

impl Default for AuditVerifier {
    fn default() -> Self {
        AuditVerifier { previous_id: 0, previous_hash: AUDIT_GENESIS.to_string(), rows: 0 }
    }
}

impl AuditVerifier {
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), AuditBreak> {
        let id = record.id;
        let broken = |detail: String| Err(AuditBreak { id, detail });
        if id <= self.previous_id {
            return broken(format!("comes after row {}: the rows are out of order", self.previous_id));
        }
        let expected = audit_hash(&record.prev_hash, id, record.at.timestamp_micros(), &record.entry);
        if record.hash != expected {
            return broken("its content does not match its hash: the row was changed after it was written".into());
        }
        if record.prev_hash != self.previous_hash {
            let previous =
                if self.rows == 0 { "the start of the trail".to_string() } else { format!("row {}", self.previous_id) };
            return broken(format!("does not follow {previous}: a row before it was deleted, or rows were reordered"));
        }
        self.previous_id = id;
        self.previous_hash = record.hash.clone();
        self.rows += 1;
        Ok(())
    }

    pub fn finish(self) -> AuditSummary {
        AuditSummary { rows: self.rows, head_id: self.previous_id, head_hash: self.previous_hash }
    }
}

/// The audit rows the stores write for the changes they make themselves, built here once so that
/// every backend writes the same verbs, targets and details.
pub(crate) mod entries {
    use super::*;

    /// A change the store made itself (actor `cordon`, origin `engine`).
    pub fn state_change(instance: &str, verb: &str, target: String, detail: String) -> AuditEntry {
        AuditEntry {
            actor: "cordon".into(),
            origin: "engine".into(),
            verb: verb.into(),
            target,
            detail,
            instance: instance.into(),
        }
    }

    /// A new action, in the name of whoever requested it.
    pub fn action_created(record: &ActionRecord) -> AuditEntry {
        let on = match (&record.server_name, record.address) {
            (Some(server), _) => format!("server {server}"),
            (None, Some(address)) => format!("address {address} (no server)"),
            (None, None) => "no server".to_string(),
        };
        let mut detail = format!("{} on {on}, {}, by {}", record.kind, record.state, record.trigger);
        if let Some(reason) = &record.reason {
            detail.push_str(&format!(": {reason}"));
        }
        AuditEntry {
            actor: record.requested_by.clone(),
            origin: record.trigger.clone(),
            verb: "action_created".into(),
            target: format!("action {}", record.id),
            detail,
            instance: record.instance.clone(),
        }
    }

    /// An action's state moved: `pending -> running (start)`, with the kind and message it got.
    pub fn action_state(
        instance: &str,
        id: i64,
        (from, to): (ActionState, ActionState),
        command: ActionCommand,
        kind: Option<ActionKind>,
        message: Option<&MessageRef>,
    ) -> AuditEntry {
        let mut detail = format!("{from} -> {to} ({command})");
        if let Some(kind) = kind {
            detail.push_str(&format!(", as {kind}"));
        }
        if let Some(message) = message {
            detail.push_str(&format!(", message {}", message.number));
        }
        state_change(instance, "action_state", format!("action {id}"), detail)
    }

    /// A NIC moved: `NIC 02:..: office 10.10.0.11 -> quarantine 10.99.0.100`.
    pub fn nic_position(
        instance: &str,
        server: &str,
        mac: &str,
        before: (&str, Option<&str>),
        after: (&str, Option<&str>),
    ) -> AuditEntry {
        let shown = |(network, ip): (&str, Option<&str>)| format!("{network} {}", ip.unwrap_or("(no address)"));
        let detail = format!("NIC {mac}: {} -> {}", shown(before), shown(after));
        state_change(instance, "nic_position", format!("server {server}"), detail)
    }
}

/// What a verification of the whole trail found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerdict {
    /// The rows that verified: all of them, or those before the break.
    pub verified: AuditSummary,
    /// The first row that does not verify.
    pub broken: Option<AuditBreak>,
}

/// Reads the whole trail through the store, oldest first, in pages, and verifies the chain.
pub async fn verify_audit(store: &dyn Store) -> crate::Result<AuditVerdict> {
    const PAGE: u32 = 10_000;
    let mut verifier = AuditVerifier::default();
    let mut after = 0;
    loop {
        let rows = store.audit_rows(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for row in &rows {
            if let Err(broken) = verifier.check(row) {
                return Ok(AuditVerdict { verified: verifier.finish(), broken: Some(broken) });
            }
        }
    }
    Ok(AuditVerdict { verified: verifier.finish(), broken: None })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = AUDIT_GENESIS.to_string();
        (1..=n)
            .map(|id| {
                let at = Utc.timestamp_micros(1_795_773_600_000_000 + id).unwrap();
                let entry = AuditEntry {
                    actor: format!("user{id}"),
                    origin: "127.0.0.1".into(),
                    verb: "quarantine".into(),
                    target: format!("server s{id}"),
                    detail: String::new(),
                    instance: "i1".into(),
                };
                let hash = audit_hash(&prev, id, at.timestamp_micros(), &entry);
                let record = AuditRecord { id, at, entry, prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                record
            })
            .collect()
    }

    fn verify(rows: &[AuditRecord]) -> Result<AuditSummary, AuditBreak> {
        let mut verifier = AuditVerifier::default();
        for row in rows {
            verifier.check(row)?;
        }
        Ok(verifier.finish())
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let rows = chain(5);
        let summary = verify(&rows).unwrap();
        assert_eq!((summary.rows, summary.head_id), (5, 5));
        assert_eq!(summary.head_hash, rows[4].hash);
        assert_eq!(verify(&[]).unwrap().head_hash, AUDIT_GENESIS);
    }

    #[test]
    fn an_edited_row_is_named() {
        let mut rows = chain(5);
        rows[2].entry.actor = "someone else".into();
        assert_eq!(verify(&rows).unwrap_err().id, 3);
    }

    #[test]
    fn an_edited_row_with_a_recomputed_hash_breaks_the_next_row() {
        let mut rows = chain(5);
        rows[2].entry.actor = "someone else".into();
        rows[2].hash = audit_hash(&rows[2].prev_hash, 3, rows[2].at.timestamp_micros(), &rows[2].entry);
        let broken = verify(&rows).unwrap_err();
        assert_eq!(broken.id, 4);
        assert!(broken.detail.contains("does not follow row 3"), "{broken}");
    }

    #[test]
    fn a_deleted_row_is_named_by_the_row_after_it() {
        let mut rows = chain(5);
        rows.remove(2);
        let broken = verify(&rows).unwrap_err();
        assert_eq!(broken.id, 4);
        assert!(broken.detail.contains("does not follow row 2"), "{broken}");
        let mut first_gone = chain(3);
        first_gone.remove(0);
        assert!(verify(&first_gone).unwrap_err().detail.contains("the start of the trail"));
    }

    #[test]
    fn swapped_rows_are_named() {
        // Two rows trade places with everything they hold but their ids.
        let mut rows = chain(5);
        let (a, b) = (rows[1].clone(), rows[2].clone());
        rows[1] = AuditRecord { id: 2, ..b };
        rows[2] = AuditRecord { id: 3, ..a };
        assert_eq!(verify(&rows).unwrap_err().id, 2);
        // Or they keep their ids and come back in the other order.
        let mut rows = chain(5);
        rows.swap(1, 2);
        let broken = verify(&rows).unwrap_err();
        assert_eq!(broken.id, 3);
        assert!(broken.detail.contains("does not follow row 1"), "{broken}");
    }
}
