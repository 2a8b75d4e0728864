//! What counts as proof that a system restarted, from the BMC's own reports.
//!
//! Two kinds of evidence, both read from the system resource after the reset request:
//! - `PowerState` seen leaving `On` (`Off`, `PoweringOff`, `PoweringOn`, ...) and then seen `On`
//!   again; a restart too quick to be caught between two polls is not seen this way;
//! - `LastResetTime` differing from its value before the request (only when the BMC offers it).
//!
//! A system that merely reads `On` after the request proves nothing, so it is not taken as a
//! restart.

/// The power-related part of a system resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SystemState {
    pub power_state: Option<String>,
    pub last_reset_time: Option<String>,
}

impl SystemState {
    pub fn is_on(&self) -> bool {
        self.power_state.as_deref() == Some("On")
    }

    pub fn is_off(&self) -> bool {
        self.power_state.as_deref() == Some("Off")
    }

    /// `On`, `Off` or `Paused`: not in the middle of a transition (nor unknown).
    pub fn is_settled(&self) -> bool {
        matches!(self.power_state.as_deref(), Some("On" | "Off" | "Paused"))
    }
}

/// Follows the system's reports after a restart request.
#[derive(Debug)]
pub(super) struct Evidence {
    baseline_reset_time: Option<String>,
    last: SystemState,
    left_on: bool,
    back_on: bool,
    reset_time_changed: bool,
}

impl Evidence {
    /// `before`: the system as read before the request.
    pub fn new(before: &SystemState) -> Self {
        Evidence {
            baseline_reset_time: before.last_reset_time.clone(),
            last: before.clone(),
            left_on: false,
            back_on: false,
            reset_time_changed: false,
        }
    }

    /// Takes one reading; returns the lines worth recording (changes only).
    pub fn observe(&mut self, state: &SystemState) -> Vec<String> {
        let mut lines = Vec::new();
        if state.power_state != self.last.power_state {
            lines.push(format!("PowerState {}", state.power_state.as_deref().unwrap_or("(none)")));
        }
        if state.last_reset_time != self.last.last_reset_time
            && let Some(time) = &state.last_reset_time
        {
            lines.push(format!("LastResetTime {time}"));
        }
        if state.is_on() {
            if self.left_on {
                self.back_on = true;
            }
        } else {
            self.left_on = true;
        }
        if let (Some(before), Some(now)) = (&self.baseline_reset_time, &state.last_reset_time)
            && before != now
        {
            self.reset_time_changed = true;
        }
        self.last = state.clone();
        lines
    }

    /// A restart was observed.
    pub fn confirmed(&self) -> bool {
        self.back_on || self.reset_time_changed
    }

    /// The system was seen not `On` since the request.
    pub fn left_on(&self) -> bool {
        self.left_on
    }

    /// The latest reading is `Off`.
    pub fn is_off(&self) -> bool {
        self.last.is_off()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(power: &str, reset: Option<&str>) -> SystemState {
        SystemState { power_state: Some(power.to_string()), last_reset_time: reset.map(str::to_string) }
    }

    #[test]
    fn staying_on_proves_nothing() {
        let mut evidence = Evidence::new(&state("On", None));
        for _ in 0..5 {
            assert!(evidence.observe(&state("On", None)).is_empty());
        }
        assert!(!evidence.confirmed());
        assert!(!evidence.left_on());
    }

    #[test]
    fn off_then_on_is_a_restart() {
        let mut evidence = Evidence::new(&state("On", None));
        assert_eq!(evidence.observe(&state("Off", None)), vec!["PowerState Off"]);
        assert!(!evidence.confirmed());
        assert!(evidence.left_on() && evidence.is_off());
        assert!(evidence.observe(&state("Off", None)).is_empty());
        assert_eq!(evidence.observe(&state("PoweringOn", None)), vec!["PowerState PoweringOn"]);
        assert!(!evidence.confirmed() && !evidence.is_off());
        assert_eq!(evidence.observe(&state("On", None)), vec!["PowerState On"]);
        assert!(evidence.confirmed());
    }

    #[test]
    fn last_reset_time_change_is_a_restart() {
        let mut evidence = Evidence::new(&state("On", Some("2026-11-27T10:00:00Z")));
        assert!(evidence.observe(&state("On", Some("2026-11-27T10:00:00Z"))).is_empty());
        assert!(!evidence.confirmed());
        assert_eq!(
            evidence.observe(&state("On", Some("2026-11-27T10:05:00Z"))),
            vec!["LastResetTime 2026-11-27T10:05:00Z"]
        );
        assert!(evidence.confirmed());
    }

    #[test]
    fn a_reset_time_appearing_is_not_a_change() {
        let mut evidence = Evidence::new(&state("On", None));
        evidence.observe(&state("On", Some("2026-11-27T10:05:00Z")));
        assert!(!evidence.confirmed());
    }

    #[test]
    fn settled_states() {
        assert!(state("On", None).is_settled());
        assert!(state("Paused", None).is_settled());
        assert!(!state("PoweringOff", None).is_settled());
        assert!(!SystemState::default().is_settled());
    }
}
