//! What the engine tells the outside world (notifications, later the console) as it happens.

use cordon_model::ActionKind;

/// One thing that happened to an action or a server. Sent on a broadcast channel: a slow
/// listener misses events (and is told how many) rather than slowing the engine down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// An action waits for an administrator's decision.
    AwaitsApproval { action: i64, kind: ActionKind, server: String, reason: String },
    /// An action ended well; `detail` says what was done (network, address, what was observed).
    Succeeded { action: i64, kind: ActionKind, server: String, detail: String },
    /// An action failed; `number` and `text` are its numbered message.
    Failed { action: i64, kind: ActionKind, server: Option<String>, number: u32, text: String },
    /// The network differs from Cordon's records.
    Drift { server: String, detail: String },
    /// A numbered message was recorded. Every change of an action's state records one (queued,
    /// started, retrying, succeeded, failed, checked, approved, ...), so the console follows
    /// this one event to refresh its pages; notifications ignore it.
    Recorded { number: u32, action: Option<i64>, server: Option<i64> },
}
