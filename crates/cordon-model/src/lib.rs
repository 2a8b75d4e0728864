//! Cordon's domain: the vocabulary every other crate shares, and the pure decisions made on it.
//!
//! Architecture invariant: this crate does no I/O, starts no task and knows no wire format.
//! Nothing here is `Serialize`; the API and the store convert at their own boundaries.

pub mod action;
pub mod address;
pub mod detection;
pub mod inventory;
pub mod messages;
pub mod policy;

pub use action::{ActionCommand, ActionKind, ActionState, InvalidTransition};
pub use address::{AddressPool, AddressRange, MacAddr, ParseError};
pub use detection::{Detection, Parsed, ThreatSeverity};
pub use inventory::{NetworkRole, Role, ServerKind, ServerState, SwitchDriverKind};
pub use messages::{Message, Severity};
pub use policy::{CircuitBreaker, Decision, Policy, PolicyAction, PolicyMode, Rule, ServerFacts, SubjectSide};
