//! Actions and their one state machine, the same for every kind of action.
//!
//! ```text
//! awaiting_approval ─approve→ pending ─start→ running ─succeed→ succeeded
//!        │                      │               ├─backoff→ retrying ─start→ running
//!        └─reject→ rejected     └─cancel→ cancelled   │          ├─fail→ failed
//!                                               └─fail→ failed   └─check→ checked
//! failed ─retry→ pending | ─check→ checked
//! ```
//!
//! No command releases a server: only an `unquarantine` action does. Checking or cancelling an
//! action stops Cordon from acting further; it never undoes what was done.

use std::fmt;

use crate::inventory::text_enum;

text_enum! {
    /// What an action does to its server.
    ActionKind {
        /// Move every NIC to its quarantine network and give it a quarantine address.
        Quarantine = "quarantine",
        /// Move every NIC back to its operational network and address.
        Unquarantine = "unquarantine",
        /// Restart the server (through its hypervisor or BMC).
        Reboot = "reboot",
        /// Quarantine first, then reboot.
        QuarantineReboot = "quarantine_reboot",
        /// Ask the tenant's administrator, who approves it as another kind or rejects it.
        Notify = "notify",
    }
}

text_enum! {
    /// Where an action stands.
    ActionState {
        AwaitingApproval = "awaiting_approval",
        Pending = "pending",
        Running = "running",
        Retrying = "retrying",
        Succeeded = "succeeded",
        Failed = "failed",
        Rejected = "rejected",
        Cancelled = "cancelled",
        Checked = "checked",
    }
}

text_enum! {
    /// Everything that can happen to an action.
    ActionCommand {
        /// An administrator approved an action that policy held for approval.
        Approve = "approve",
        /// An administrator rejected it.
        Reject = "reject",
        /// A worker begins (or resumes) executing the action's steps.
        Start = "start",
        /// An operator withdrew an action before it started.
        Cancel = "cancel",
        /// Every step ended well.
        Succeed = "succeed",
        /// A step failed and will be tried again later (or the worker died mid-action).
        Backoff = "backoff",
        /// A step failed for good.
        Fail = "fail",
        /// An operator asked for another attempt of a failed action.
        Retry = "retry",
        /// An operator acknowledged the action and handled it by hand: no further attempts.
        Check = "check",
    }
}

impl ActionKind {
    /// Whether running this action moves the server into quarantine.
    pub fn quarantines(self) -> bool {
        matches!(self, ActionKind::Quarantine | ActionKind::QuarantineReboot)
    }
}

impl ActionState {
    /// Whether the action may still change the network (so it holds its server's turn).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ActionState::AwaitingApproval | ActionState::Pending | ActionState::Running | ActionState::Retrying
        )
    }

    /// Whether the action ended for good.
    pub fn is_final(self) -> bool {
        matches!(self, ActionState::Succeeded | ActionState::Rejected | ActionState::Cancelled | ActionState::Checked)
    }

    /// The state after `command`, or the forbidden transition.
    pub fn apply(self, command: ActionCommand) -> Result<ActionState, InvalidTransition> {
        use ActionCommand as C;
        use ActionState as S;
        let next = match (self, command) {
            (S::AwaitingApproval, C::Approve) => S::Pending,
            (S::AwaitingApproval, C::Reject) => S::Rejected,
            (S::Pending, C::Start) => S::Running,
            (S::Pending, C::Cancel) => S::Cancelled,
            (S::Running, C::Succeed) => S::Succeeded,
            (S::Running, C::Backoff) => S::Retrying,
            (S::Running, C::Fail) => S::Failed,
            (S::Retrying, C::Start) => S::Running,
            (S::Retrying, C::Fail) => S::Failed,
            (S::Retrying, C::Check) => S::Checked,
            (S::Failed, C::Retry) => S::Pending,
            (S::Failed, C::Check) => S::Checked,
            (from, command) => return Err(InvalidTransition { from, command }),
        };
        Ok(next)
    }
}

/// A command that the action's current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct InvalidTransition {
    pub from: ActionState,
    pub command: ActionCommand,
}

impl fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an action that is {} cannot {}", self.from, self.command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActionCommand as C;
    use ActionState as S;

    /// The whole allowed table; every pair not listed here must be refused.
    const ALLOWED: &[(ActionState, ActionCommand, ActionState)] = &[
        (S::AwaitingApproval, C::Approve, S::Pending),
        (S::AwaitingApproval, C::Reject, S::Rejected),
        (S::Pending, C::Start, S::Running),
        (S::Pending, C::Cancel, S::Cancelled),
        (S::Running, C::Succeed, S::Succeeded),
        (S::Running, C::Backoff, S::Retrying),
        (S::Running, C::Fail, S::Failed),
        (S::Retrying, C::Start, S::Running),
        (S::Retrying, C::Fail, S::Failed),
        (S::Retrying, C::Check, S::Checked),
        (S::Failed, C::Retry, S::Pending),
        (S::Failed, C::Check, S::Checked),
    ];

    #[test]
    fn allowed_transitions_land_where_documented() {
        for &(from, command, to) in ALLOWED {
            assert_eq!(from.apply(command), Ok(to), "{from} --{command}-->");
        }
    }

    #[test]
    fn every_other_transition_is_forbidden() {
        let mut forbidden = 0;
        for &from in ActionState::ALL {
            for &command in ActionCommand::ALL {
                if ALLOWED.iter().any(|&(f, c, _)| f == from && c == command) {
                    continue;
                }
                assert_eq!(
                    from.apply(command),
                    Err(InvalidTransition { from, command }),
                    "{from} --{command}--> must be refused"
                );
                forbidden += 1;
            }
        }
        assert_eq!(forbidden, ActionState::ALL.len() * ActionCommand::ALL.len() - ALLOWED.len());
    }

    #[test]
    fn final_states_accept_nothing() {
        for &from in ActionState::ALL.iter().filter(|s| s.is_final()) {
            for &command in ActionCommand::ALL {
                assert!(from.apply(command).is_err(), "{from} is final but accepts {command}");
            }
        }
    }

    #[test]
    fn no_command_exists_that_releases_a_server() {
        // Releasing a server is an `unquarantine` action, never a command on another action.
        let names: Vec<&str> = ActionCommand::ALL.iter().map(|c| c.as_str()).collect();
        for word in ["revert", "release", "undo", "unquarantine"] {
            assert!(!names.contains(&word));
        }
    }
}
