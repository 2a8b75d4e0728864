use std::fmt;

use cordon_model::{Message, messages};
use cordon_store::{MessageRef, StoreError};

/// How an engine error maps onto a protocol (the API turns these into HTTP statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    /// The request contradicts the current state (already quarantined, forbidden transition).
    Conflict,
    /// The request cannot be carried out as configured.
    Unprocessable,
    Internal,
}

/// An error with its numbered message, ready for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: &'static Message,
    /// The rendered one-line text.
    pub text: String,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: &'static Message, args: &[(&str, &dyn fmt::Display)]) -> Self {
        EngineError { kind, message, text: message.render(args) }
    }

    pub fn message_ref(message: &'static Message, args: &[(&str, &dyn fmt::Display)]) -> MessageRef {
        MessageRef { number: message.number, text: message.render(args) }
    }

    pub fn number(&self) -> u32 {
        self.message.number
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.message.severity(), self.message.number, self.text)
    }
}

impl std::error::Error for EngineError {}

impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::PoolExhausted { network, range } => EngineError::new(
                ErrorKind::Unprocessable,
                &messages::POOL_EXHAUSTED,
                &[("network", network), ("range", range)],
            ),
            // Another instance settled the detection first: a conflict, not a failure.
            StoreError::AlreadySettled { .. } => {
                EngineError::new(ErrorKind::Conflict, &messages::STORE_FAILURE, &[("detail", &error)])
            }
            _ => EngineError::new(ErrorKind::Internal, &messages::STORE_FAILURE, &[("detail", &error)]),
        }
    }
}
