//! Policy: which action a detection calls for.
//!
//! [`Policy::decide`] is pure: the engine resolves the detection's few addresses to the servers
//! holding them and passes that knowledge in as a function. The precedence, first match wins:
//!
//! 1. **Exclusion.** A detection whose signature contains one of `exclude_keywords`
//!    (case-insensitive) is ignored, whatever the rules and the servers say
//!    (`decided_by = "exclusion <keyword>"`).
//! 2. **Rules, in order.** Each rule picks its subject ([`pick_subject`] with the rule's
//!    `subject`), resolves it to a server, and matches when every criterion it sets holds. The
//!    first rule that matches gives the action and the mode (`decided_by = "rule <name>"`).
//! 3. **Default.** No rule matched: `default_action` and `default_mode`, on the detection's own
//!    subject (`decided_by = "default"`).
//!
//! Then, on the server the subject resolved to: its own `action` **replaces** the action of the
//! rule or of the default (never an exclusion), and a `protected` server always gets mode
//! `approve`. `shadow` is the policy's `shadow` or the matching rule's.

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::detection::{Detection, ThreatSeverity};
use crate::inventory::text_enum;

text_enum! {
    /// What the policy does about a detection.
    PolicyAction {
        /// Move the server to its quarantine network, with a quarantine address.
        Quarantine = "quarantine",
        /// Reboot the server (through its hypervisor or its BMC); it stays on its network.
        Reboot = "reboot",
        /// Quarantine the server, then reboot it.
        QuarantineReboot = "quarantine_reboot",
        /// Change nothing; tell the administrator, who picks an action.
        Notify = "notify",
        /// Only record the detection.
        Ignore = "ignore",
    }
}

text_enum! {
    /// Whether a decided action runs at once or waits for an administrator.
    PolicyMode {
        /// Run at once (within the circuit breaker's limit).
        Auto = "auto",
        /// Hold the action as `awaiting_approval`.
        Approve = "approve",
    }
}

text_enum! {
    /// Which address of a detection a rule acts on.
    SubjectSide {
        /// The address the sensor's rule names as its target (EVE `alert.target`).
        Target = "target",
        /// The event's source address.
        Source = "source",
        /// The same as `source`.
        Src = "src",
        /// The event's destination address.
        Dest = "dest",
    }
}

impl PolicyAction {
    /// How strong the action is, to tell whether one escalates another:
    /// ignore (0) < notify (1) < reboot (2) < quarantine (3) < quarantine_reboot (4).
    ///
    /// Containment is what matters against a compromised machine, so ranking follows it rather
    /// than disruption: `ignore` does nothing; `notify` only involves a person; `reboot` acts on
    /// the machine but leaves it on its network, so whatever survives the reboot (or re-infects
    /// it) keeps talking; `quarantine` cuts the machine off its network, which contains it;
    /// `quarantine_reboot` contains it and also clears what ran in memory.
    ///
    /// The derived `Ord` is declaration order (the order of the original manual's action
    /// selection) and says nothing about strength: compare with this instead.
    pub fn strength(self) -> u8 {
        match self {
            PolicyAction::Ignore => 0,
            PolicyAction::Notify => 1,
            PolicyAction::Reboot => 2,
            PolicyAction::Quarantine => 3,
            PolicyAction::QuarantineReboot => 4,
        }
    }
}

/// One `[[policy.rule]]`. Every criterion that is set (non-empty, `Some`) must hold for the rule
/// to match; a rule that sets none matches every detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique within the policy; shown in decisions as `rule <name>`.
    pub name: String,
    /// Configured source names; empty = any source.
    pub sources: Vec<String>,
    /// The detection's severity is at least this.
    pub min_severity: Option<ThreatSeverity>,
    /// The detection's signature id is one of these (exactly).
    pub signature_ids: Vec<String>,
    /// The detection's category is one of these (case-insensitive).
    pub categories: Vec<String>,
    /// The subject's server has a NIC on one of these networks.
    pub networks: Vec<String>,
    /// The subject's server belongs to one of these tenants.
    pub tenants: Vec<String>,
    /// The subject's server is one of these.
    pub servers: Vec<String>,
    pub action: PolicyAction,
    pub mode: PolicyMode,
    /// Decide, record, but do not act.
    pub shadow: bool,
    /// Which address the rule acts on; `None` = the detection's own subject.
    pub subject: Option<SubjectSide>,
}

impl Rule {
    /// Whether every criterion the rule sets holds for `detection`, whose subject (as this
    /// rule picks it) resolved to `server`.
    pub fn matches(&self, detection: &Detection, server: Option<&ServerFacts>) -> bool {
        self.matched(detection, server).is_some()
    }

    /// The criteria that held, described, when all of them did.
    fn matched(&self, detection: &Detection, server: Option<&ServerFacts>) -> Option<Vec<String>> {
        let mut held = Vec::new();
        if !self.sources.is_empty() {
            if !self.sources.contains(&detection.source) {
                return None;
            }
            held.push(format!("source {}", detection.source));
        }
        if let Some(min) = self.min_severity {
            if detection.severity < min {
                return None;
            }
            held.push(format!("severity {} ≥ {min}", detection.severity));
        }
        if !self.signature_ids.is_empty() {
            let id = detection.signature_id.as_ref().filter(|id| self.signature_ids.contains(id))?;
            held.push(format!("signature id {id}"));
        }
        if !self.categories.is_empty() {
            let category = detection.category.as_ref()?;
            let wanted = category.to_lowercase();
            if !self.categories.iter().any(|c| c.to_lowercase() == wanted) {
                return None;
            }
            held.push(format!("category {category:?}"));
        }
        if !self.networks.is_empty() {
            let network = server?.networks.iter().find(|n| self.networks.contains(n))?;
            held.push(format!("network {network}"));
        }
        if !self.tenants.is_empty() {
            let tenant = server?.tenant.as_ref().filter(|t| self.tenants.contains(t))?;
            held.push(format!("tenant {tenant}"));
        }
        if !self.servers.is_empty() {
            let server = server.filter(|s| self.servers.contains(&s.name))?;
            held.push(format!("server {}", server.name));
        }
        Some(held)
    }
}

/// The `[policy]`: exclusions, ordered rules, defaults and the limits on automatic actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// When no rule matches; default `notify`.
    pub default_action: PolicyAction,
    /// When no rule matches (and the mode of rules that set none); default `auto`.
    pub default_mode: PolicyMode,
    /// A detection whose signature contains one of these (case-insensitive) is ignored.
    pub exclude_keywords: Vec<String>,
    /// Circuit breaker: at most this many automatic actions per `window_secs`; default 50.
    pub max_auto_actions: u32,
    /// The circuit breaker's sliding window; default 600 (10 minutes).
    pub window_secs: u64,
    /// Decide and record every detection, act on none.
    pub shadow: bool,
    /// How long after an action on a server further detections on it call for no new action
    /// (unless stronger); default 0. Applied by the engine, not by [`Policy::decide`].
    pub cooldown_secs: u64,
    /// In order; the first that matches decides.
    pub rules: Vec<Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_action: PolicyAction::Notify,
            default_mode: PolicyMode::Auto,
            exclude_keywords: Vec::new(),
            max_auto_actions: 50,
            window_secs: 600,
            shadow: false,
            cooldown_secs: 0,
            rules: Vec::new(),
        }
    }
}

/// What Cordon knows about the server an address resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    pub name: String,
    pub tenant: Option<String>,
    /// The networks its NICs are on.
    pub networks: Vec<String>,
    /// Its own action, which replaces the action of any rule and of the default.
    pub action: Option<PolicyAction>,
    /// Every action on it waits for approval.
    pub protected: bool,
}

/// What the policy made of one detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: PolicyAction,
    pub mode: PolicyMode,
    /// Record the decision, do not act on it.
    pub shadow: bool,
    /// The address to act on.
    pub subject: IpAddr,
    /// The other side of the event, when there is one.
    pub peer: Option<IpAddr>,
    /// "rule <name>", "default", "exclusion <keyword>"
    pub decided_by: String,
    /// One readable line: what matched, and what changed the outcome.
    pub reason: String,
}

impl Policy {
    /// Decides what `detection` calls for (see the module documentation for the precedence).
    ///
    /// `resolve` maps an address to the server holding it (the engine pre-resolves the
    /// detection's few addresses); it is called at most once per address.
    pub fn decide(&self, detection: &Detection, resolve: &dyn Fn(IpAddr) -> Option<ServerFacts>) -> Decision {
        let mut servers = Resolved { resolve, known: Vec::new() };

        if let Some(keyword) = self.exclusion(&detection.signature) {
            let (subject, peer) = pick_subject(detection, None);
            let reason = format!("signature {:?} contains the exclusion keyword {keyword:?}", detection.signature);
            let outcome = Outcome { action: PolicyAction::Ignore, mode: self.default_mode, shadow: self.shadow };
            // An exclusion outranks the server's own action; protection still holds.
            let server = servers.get(subject);
            return outcome.finish(subject, peer, server.as_ref(), false, format!("exclusion {keyword}"), reason);
        }

        for rule in &self.rules {
            // A rule that names a side the event does not have does not match: nothing is guessed.
            let side_missing = match rule.subject {
                Some(SubjectSide::Source | SubjectSide::Src) => detection.src_ip.is_none(),
                Some(SubjectSide::Dest) => detection.dest_ip.is_none(),
                Some(SubjectSide::Target) | None => false,
            };
            if side_missing {
                continue;
            }
            let (subject, peer) = pick_subject(detection, rule.subject);
            let server = servers.get(subject);
            let Some(held) = rule.matched(detection, server.as_ref()) else {
                continue;
            };
            let criteria = if held.is_empty() { "any detection".to_string() } else { held.join(", ") };
            let reason = format!("rule {:?} matched ({criteria}) on {}", rule.name, describe(subject, server.as_ref()));
            let outcome = Outcome { action: rule.action, mode: rule.mode, shadow: self.shadow || rule.shadow };
            // A rule that decides not to act is not overridden by the server's own action: the
            // server's action says *how* to act, the rule says *whether*.
            let overridable = rule.action != PolicyAction::Ignore;
            return outcome.finish(subject, peer, server.as_ref(), overridable, format!("rule {}", rule.name), reason);
        }

        let (subject, peer) = pick_subject(detection, None);
        let server = servers.get(subject);
        let reason = format!(
            "no rule matched; default action {} on {}",
            self.default_action,
            describe(subject, server.as_ref())
        );
        let outcome = Outcome { action: self.default_action, mode: self.default_mode, shadow: self.shadow };
        let overridable = self.default_action != PolicyAction::Ignore;
        outcome.finish(subject, peer, server.as_ref(), overridable, "default".to_string(), reason)
    }

    /// The first exclusion keyword (as configured) that `signature` contains, ignoring case.
    fn exclusion(&self, signature: &str) -> Option<&str> {
        let signature = signature.to_lowercase();
        self.exclude_keywords
            .iter()
            .find(|keyword| !keyword.is_empty() && signature.contains(&keyword.to_lowercase()))
            .map(String::as_str)
    }
}

/// The addresses resolved so far during one decision.
struct Resolved<'r> {
    resolve: &'r dyn Fn(IpAddr) -> Option<ServerFacts>,
    known: Vec<(IpAddr, Option<ServerFacts>)>,
}

impl Resolved<'_> {
    fn get(&mut self, address: IpAddr) -> Option<ServerFacts> {
        if let Some((_, server)) = self.known.iter().find(|(known, _)| *known == address) {
            return server.clone();
        }
        let server = (self.resolve)(address);
        self.known.push((address, server.clone()));
        server
    }
}

/// A decision before the server has had its say.
struct Outcome {
    action: PolicyAction,
    mode: PolicyMode,
    shadow: bool,
}

impl Outcome {
    /// Applies the server's own action (when `overridable`) and its protection, and says so.
    fn finish(
        mut self,
        subject: IpAddr,
        peer: Option<IpAddr>,
        server: Option<&ServerFacts>,
        overridable: bool,
        decided_by: String,
        mut reason: String,
    ) -> Decision {
        if let Some(server) = server {
            if let Some(action) = server.action.filter(|_| overridable) {
                if action != self.action {
                    reason.push_str(&format!(
                        "; server {} replaces {} with its own action {action}",
                        server.name, self.action
                    ));
                }
                self.action = action;
            }
            if server.protected {
                if self.mode != PolicyMode::Approve {
                    reason
                        .push_str(&format!("; server {} is protected, so the action waits for approval", server.name));
                }
                self.mode = PolicyMode::Approve;
            }
        }
        if self.shadow {
            reason.push_str("; shadow: recorded, not applied");
        }
        Decision { action: self.action, mode: self.mode, shadow: self.shadow, subject, peer, decided_by, reason }
    }
}

/// "10.10.0.11 (server sbc-01)" or "10.10.0.11 (no server)".
fn describe(subject: IpAddr, server: Option<&ServerFacts>) -> String {
    match server {
        Some(server) => format!("{subject} (server {})", server.name),
        None => format!("{subject} (no server)"),
    }
}

/// Which address a side names, and the other side.
///
/// `Target` → `detection.target_ip`, `Source`/`Src` → `src_ip`, `Dest` → `dest_ip`; when the
/// detection lacks that address, and for `None`, the detection's own subject and peer. The peer
/// of a picked side is the other of (src, dest) (for a target: the side it is not), else
/// `detection.peer`; never the subject itself.
pub fn pick_subject(detection: &Detection, side: Option<SubjectSide>) -> (IpAddr, Option<IpAddr>) {
    let default = (detection.subject, detection.peer);
    let (subject, other) = match side {
        None => return default,
        Some(SubjectSide::Target) => {
            let Some(target) = detection.target_ip else { return default };
            let other = if Some(target) == detection.src_ip {
                detection.dest_ip
            } else if Some(target) == detection.dest_ip {
                detection.src_ip
            } else {
                None
            };
            (target, other)
        }
        Some(SubjectSide::Source | SubjectSide::Src) => {
            let Some(src) = detection.src_ip else { return default };
            (src, detection.dest_ip)
        }
        Some(SubjectSide::Dest) => {
            let Some(dest) = detection.dest_ip else { return default };
            (dest, detection.src_ip)
        }
    };
    (subject, other.or(detection.peer).filter(|&peer| peer != subject))
}

/// Circuit breaker: at most `max` automatic actions within a sliding `window`; once more are
/// asked for it trips and stays tripped until [`reset`](CircuitBreaker::reset).
///
/// An action admitted at `t` counts while `now - t < window`. Times are Unix microseconds; a
/// clock that steps back only makes the breaker more careful (future times keep counting).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    max: u32,
    window_us: i64,
    /// When each still-counted action was admitted.
    admitted: VecDeque<i64>,
    tripped: bool,
}

impl CircuitBreaker {
    pub fn new(max: u32, window_secs: u64) -> Self {
        CircuitBreaker { max, window_us: window_us(window_secs), admitted: VecDeque::new(), tripped: false }
    }

    /// Records one automatic action at `now_us` if admitted; false = tripped (the caller must
    /// hold the action for approval). The request that finds the window full trips the breaker.
    pub fn admit(&mut self, now_us: i64) -> bool {
        if self.tripped {
            return false;
        }
        let horizon = now_us.saturating_sub(self.window_us);
        self.admitted.retain(|&at| at > horizon);
        if self.admitted.len() < self.max as usize {
            self.admitted.push_back(now_us);
            true
        } else {
            self.tripped = true;
            false
        }
    }

    pub fn is_tripped(&self) -> bool {
        self.tripped
    }

    /// Closes the breaker and forgets the actions counted so far: an operator who resets it has
    /// looked at them, and automatic actions resume at once.
    pub fn reset(&mut self) {
        self.tripped = false;
        self.admitted.clear();
    }

    /// How many automatic actions count in the window ending at `now_us`.
    pub fn recent(&self, now_us: i64) -> u32 {
        let horizon = now_us.saturating_sub(self.window_us);
        let count = self.admitted.iter().filter(|&&at| at > horizon).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// New limits (a reloaded policy); the actions counted so far still count, and a tripped
    /// breaker stays tripped until reset.
    pub fn reconfigure(&mut self, max: u32, window_secs: u64) {
        self.max = max;
        self.window_us = window_us(window_secs);
    }
}

fn window_us(window_secs: u64) -> i64 {
    i64::try_from(window_secs).unwrap_or(i64::MAX).saturating_mul(1_000_000)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use PolicyAction as A;
    use PolicyMode as M;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// src 10.0.0.1 → dest 10.0.0.2, the source's default subject being src; no target.
    fn detection() -> Detection {
        Detection {
            received_at_us: 1_000,
            observed_at_us: None,
            source: "ids-1".into(),
            sensor: None,
            subject: ip("10.0.0.1"),
            peer: Some(ip("10.0.0.2")),
            src_ip: Some(ip("10.0.0.1")),
            dest_ip: Some(ip("10.0.0.2")),
            target_ip: None,
            signature_id: Some("2019401".into()),
            signature: "ET TROJAN Something Bad".into(),
            category: Some("A Network Trojan was detected".into()),
            severity: ThreatSeverity::High,
            raw: "{}".into(),
        }
    }

    fn rule(name: &str, action: PolicyAction) -> Rule {
        Rule {
            name: name.into(),
            sources: vec![],
            min_severity: None,
            signature_ids: vec![],
            categories: vec![],
            networks: vec![],
            tenants: vec![],
            servers: vec![],
            action,
            mode: M::Auto,
            shadow: false,
            subject: None,
        }
    }

    fn server(name: &str) -> ServerFacts {
        ServerFacts {
            name: name.into(),
            tenant: Some("sales".into()),
            networks: vec!["office".into()],
            action: None,
            protected: false,
        }
    }

    /// 10.0.0.1 = web-01 (sales, office), 10.0.0.2 = db-01 (finance, lab), 10.0.0.3 = nothing.
    fn inventory() -> HashMap<IpAddr, ServerFacts> {
        let mut db = server("db-01");
        db.tenant = Some("finance".into());
        db.networks = vec!["lab".into(), "backup".into()];
        HashMap::from([(ip("10.0.0.1"), server("web-01")), (ip("10.0.0.2"), db)])
    }

    fn decide(policy: &Policy, detection: &Detection, inventory: &HashMap<IpAddr, ServerFacts>) -> Decision {
        policy.decide(detection, &|address| inventory.get(&address).cloned())
    }

    #[test]
    fn severity_and_strength_orderings() {
        use ThreatSeverity as S;
        assert!(S::Info < S::Low && S::Low < S::Medium && S::Medium < S::High && S::High < S::Critical);
        let mut actions = PolicyAction::ALL.to_vec();
        actions.sort_by_key(|a| a.strength());
        assert_eq!(actions, [A::Ignore, A::Notify, A::Reboot, A::Quarantine, A::QuarantineReboot]);
        let strengths: Vec<u8> = actions.iter().map(|a| a.strength()).collect();
        assert_eq!(strengths, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn texts_round_trip_and_defaults() {
        for &action in PolicyAction::ALL {
            assert_eq!(action.as_str().parse::<PolicyAction>(), Ok(action));
        }
        assert_eq!("quarantine_reboot".parse::<PolicyAction>(), Ok(A::QuarantineReboot));
        assert_eq!("src".parse::<SubjectSide>(), Ok(SubjectSide::Src));
        assert!("none".parse::<PolicyAction>().is_err());
        assert!("Auto".parse::<PolicyMode>().is_err());
        let policy = Policy::default();
        assert_eq!((policy.default_action, policy.default_mode), (A::Notify, M::Auto));
        assert_eq!((policy.max_auto_actions, policy.window_secs, policy.cooldown_secs), (50, 600, 0));
        assert!(!policy.shadow && policy.rules.is_empty() && policy.exclude_keywords.is_empty());
    }

    /// One precedence case: the policy, the detection, and the expected
    /// (action, mode, shadow, subject, decided_by).
    struct Case {
        name: &'static str,
        policy: Policy,
        detection: Detection,
        expected: (PolicyAction, PolicyMode, bool, &'static str, &'static str),
    }

    fn policy_with(rules: Vec<Rule>) -> Policy {
        Policy { rules, ..Policy::default() }
    }

    fn with<T>(mut value: T, edit: impl FnOnce(&mut T)) -> T {
        edit(&mut value);
        value
    }

    #[test]
    fn precedence_table() {
        let quarantine = rule("q", A::Quarantine);
        let cases = vec![
            Case {
                name: "no rules: default action and mode on the default subject",
                policy: Policy::default(),
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "configured default",
                policy: Policy { default_action: A::Reboot, default_mode: M::Approve, ..Policy::default() },
                detection: detection(),
                expected: (A::Reboot, M::Approve, false, "10.0.0.1", "default"),
            },
            Case {
                name: "a rule without criteria matches everything",
                policy: policy_with(vec![quarantine.clone()]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "the first matching rule wins",
                policy: policy_with(vec![
                    with(rule("other source", A::Ignore), |r| r.sources = vec!["ddi".into()]),
                    with(rule("first", A::Reboot), |r| r.mode = M::Approve),
                    rule("second", A::QuarantineReboot),
                ]),
                detection: detection(),
                expected: (A::Reboot, M::Approve, false, "10.0.0.1", "rule first"),
            },
            Case {
                name: "source matches",
                policy: policy_with(vec![with(rule("ids", A::Quarantine), |r| {
                    r.sources = vec!["ddi".into(), "ids-1".into()]
                })]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule ids"),
            },
            Case {
                name: "severity equal to the minimum matches",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.min_severity = Some(ThreatSeverity::High))]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "severity below the minimum falls to the default",
                policy: policy_with(vec![with(quarantine.clone(), |r| {
                    r.min_severity = Some(ThreatSeverity::Critical)
                })]),
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "signature id matches",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.signature_ids = vec!["2019401".into()])]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "signature id differs",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.signature_ids = vec!["1".into()])]),
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "signature ids set, detection without one",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.signature_ids = vec!["2019401".into()])]),
                detection: with(detection(), |d| d.signature_id = None),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "category matches ignoring case",
                policy: policy_with(vec![with(quarantine.clone(), |r| {
                    r.categories = vec!["a network TROJAN was detected".into()]
                })]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "categories set, detection without one",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.categories = vec!["x".into()])]),
                detection: with(detection(), |d| d.category = None),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "network of the subject's server",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.networks = vec!["office".into()])]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "network of the peer's server does not count",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.networks = vec!["lab".into()])]),
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "tenant",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.tenants = vec!["sales".into()])]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "server",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.servers = vec!["web-01".into()])]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "every criterion must hold",
                policy: policy_with(vec![with(quarantine.clone(), |r| {
                    r.sources = vec!["ids-1".into()];
                    r.min_severity = Some(ThreatSeverity::Low);
                    r.tenants = vec!["finance".into()];
                })]),
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "no server: network criterion fails",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.networks = vec!["office".into()])]),
                detection: with(detection(), |d| d.subject = ip("10.0.0.3")),
                expected: (A::Notify, M::Auto, false, "10.0.0.3", "default"),
            },
            Case {
                name: "no server: tenant criterion fails",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.tenants = vec!["sales".into()])]),
                detection: with(detection(), |d| d.subject = ip("10.0.0.3")),
                expected: (A::Notify, M::Auto, false, "10.0.0.3", "default"),
            },
            Case {
                name: "no server: server criterion fails",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.servers = vec!["web-01".into()])]),
                detection: with(detection(), |d| d.subject = ip("10.0.0.3")),
                expected: (A::Notify, M::Auto, false, "10.0.0.3", "default"),
            },
            Case {
                name: "no server: rules without server criteria still match",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.sources = vec!["ids-1".into()])]),
                detection: with(detection(), |d| d.subject = ip("10.0.0.3")),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.3", "rule q"),
            },
            Case {
                name: "subject dest: the rule's criteria apply to the destination's server",
                policy: policy_with(vec![with(quarantine.clone(), |r| {
                    r.subject = Some(SubjectSide::Dest);
                    r.tenants = vec!["finance".into()];
                })]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.2", "rule q"),
            },
            Case {
                name: "subject src",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.subject = Some(SubjectSide::Src))]),
                detection: with(detection(), |d| d.subject = ip("10.0.0.2")),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "subject target",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.subject = Some(SubjectSide::Target))]),
                detection: with(detection(), |d| d.target_ip = Some(ip("10.0.0.2"))),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.2", "rule q"),
            },
            Case {
                name: "subject target without a target: the default subject",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.subject = Some(SubjectSide::Target))]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, false, "10.0.0.1", "rule q"),
            },
            Case {
                name: "a rule whose subject side does not match falls through to the next",
                policy: policy_with(vec![
                    with(rule("dest in sales", A::QuarantineReboot), |r| {
                        r.subject = Some(SubjectSide::Dest);
                        r.tenants = vec!["sales".into()];
                    }),
                    with(rule("default side in sales", A::Reboot), |r| r.tenants = vec!["sales".into()]),
                ]),
                detection: detection(),
                expected: (A::Reboot, M::Auto, false, "10.0.0.1", "rule default side in sales"),
            },
            Case {
                name: "no rule matched: the default uses the default subject, not a rule's",
                policy: policy_with(vec![with(quarantine.clone(), |r| {
                    r.subject = Some(SubjectSide::Dest);
                    r.servers = vec!["web-01".into()];
                })]),
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "policy shadow",
                policy: Policy { shadow: true, ..policy_with(vec![quarantine.clone()]) },
                detection: detection(),
                expected: (A::Quarantine, M::Auto, true, "10.0.0.1", "rule q"),
            },
            Case {
                name: "rule shadow",
                policy: policy_with(vec![with(quarantine.clone(), |r| r.shadow = true)]),
                detection: detection(),
                expected: (A::Quarantine, M::Auto, true, "10.0.0.1", "rule q"),
            },
            Case {
                name: "shadow of a rule that did not match does not count",
                policy: policy_with(vec![with(quarantine.clone(), |r| {
                    r.shadow = true;
                    r.sources = vec!["ddi".into()];
                })]),
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "policy shadow applies to the default",
                policy: Policy { shadow: true, ..Policy::default() },
                detection: detection(),
                expected: (A::Notify, M::Auto, true, "10.0.0.1", "default"),
            },
            Case {
                name: "exclusion beats every rule, ignoring case",
                policy: Policy {
                    exclude_keywords: vec!["nothing".into(), "trojan something".into()],
                    ..policy_with(vec![quarantine.clone()])
                },
                detection: detection(),
                expected: (A::Ignore, M::Auto, false, "10.0.0.1", "exclusion trojan something"),
            },
            Case {
                name: "exclusion: upper-case keyword, lower-case signature",
                policy: Policy { exclude_keywords: vec!["TEST-IGNORE".into()], ..Policy::default() },
                detection: with(detection(), |d| d.signature = "local test-ignore rule".into()),
                expected: (A::Ignore, M::Auto, false, "10.0.0.1", "exclusion TEST-IGNORE"),
            },
            Case {
                name: "exclusion keywords only look at the signature",
                policy: Policy { exclude_keywords: vec!["ids-1".into(), "network trojan".into()], ..Policy::default() },
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
            Case {
                name: "an empty exclusion keyword excludes nothing",
                policy: Policy { exclude_keywords: vec![String::new()], ..Policy::default() },
                detection: detection(),
                expected: (A::Notify, M::Auto, false, "10.0.0.1", "default"),
            },
        ];
        let inventory = inventory();
        let mut failures = Vec::new();
        for case in cases {
            let d = decide(&case.policy, &case.detection, &inventory);
            let actual = (d.action, d.mode, d.shadow, d.subject.to_string(), d.decided_by.clone());
            let (action, mode, shadow, subject, decided_by) = case.expected;
            let expected = (action, mode, shadow, subject.to_string(), decided_by.to_string());
            if actual != expected {
                failures.push(format!("{}: expected {expected:?}, got {actual:?} ({})", case.name, d.reason));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn server_action_replaces_rule_and_default_but_not_exclusion() {
        let mut inventory = inventory();
        inventory.get_mut(&ip("10.0.0.1")).unwrap().action = Some(A::Reboot);
        inventory.get_mut(&ip("10.0.0.2")).unwrap().action = Some(A::Ignore);

        let d = decide(&policy_with(vec![rule("q", A::QuarantineReboot)]), &detection(), &inventory);
        assert_eq!((d.action, d.decided_by.as_str()), (A::Reboot, "rule q"));
        assert!(
            d.reason.contains("server web-01 replaces quarantine_reboot with its own action reboot"),
            "{}",
            d.reason
        );

        // Even a weaker action replaces: the server's choice is the administrator's.
        let d = decide(
            &policy_with(vec![with(rule("q", A::Quarantine), |r| r.subject = Some(SubjectSide::Dest))]),
            &detection(),
            &inventory,
        );
        assert_eq!((d.action, d.subject), (A::Ignore, ip("10.0.0.2")));

        let d = decide(&Policy::default(), &detection(), &inventory);
        assert_eq!((d.action, d.decided_by.as_str()), (A::Reboot, "default"));

        // The same action as the rule's is not reported as a replacement.
        let d = decide(&policy_with(vec![rule("r", A::Reboot)]), &detection(), &inventory);
        assert_eq!(d.action, A::Reboot);
        assert!(!d.reason.contains("replaces"), "{}", d.reason);

        let policy = Policy { exclude_keywords: vec!["trojan".into()], ..Policy::default() };
        let d = decide(&policy, &detection(), &inventory);
        assert_eq!((d.action, d.decided_by.as_str()), (A::Ignore, "exclusion trojan"));

        // A rule (or default) that decides not to act is not turned into an action by the
        // server's own action: the rule says whether, the server says how.
        let d = decide(&policy_with(vec![rule("noise", A::Ignore)]), &detection(), &inventory);
        assert_eq!((d.action, d.decided_by.as_str()), (A::Ignore, "rule noise"));
        let quiet = Policy { default_action: A::Ignore, ..Policy::default() };
        let d = decide(&quiet, &detection(), &inventory);
        assert_eq!((d.action, d.decided_by.as_str()), (A::Ignore, "default"));
    }

    #[test]
    fn a_rule_naming_a_missing_side_does_not_match() {
        let mut no_dest = detection();
        no_dest.dest_ip = None;
        no_dest.peer = None;
        let policy = policy_with(vec![with(rule("dest side", A::Quarantine), |r| r.subject = Some(SubjectSide::Dest))]);
        let d = decide(&policy, &no_dest, &inventory());
        assert_eq!(d.decided_by, "default", "the dest rule must not fall back to the source: {}", d.reason);
    }

    #[test]
    fn protected_server_always_needs_approval() {
        let mut inventory = inventory();
        inventory.get_mut(&ip("10.0.0.1")).unwrap().protected = true;
        let policies = [
            policy_with(vec![rule("q", A::Quarantine)]),
            Policy { default_action: A::Quarantine, ..Policy::default() },
            Policy { exclude_keywords: vec!["trojan".into()], ..Policy::default() },
            Policy { shadow: true, ..policy_with(vec![rule("q", A::Quarantine)]) },
        ];
        for policy in &policies {
            let d = decide(policy, &detection(), &inventory);
            assert_eq!(d.mode, M::Approve, "{d:?}");
        }
        let d = decide(&policies[0], &detection(), &inventory);
        assert!(d.reason.contains("server web-01 is protected, so the action waits for approval"), "{}", d.reason);

        // Protection together with the server's own action.
        inventory.get_mut(&ip("10.0.0.1")).unwrap().action = Some(A::Reboot);
        let d = decide(&policies[0], &detection(), &inventory);
        assert_eq!((d.action, d.mode), (A::Reboot, M::Approve));

        // Protection follows the rule's subject: the protected host is only the peer here.
        let dest = policy_with(vec![with(rule("q", A::Quarantine), |r| r.subject = Some(SubjectSide::Dest))]);
        let d = decide(&dest, &detection(), &inventory);
        assert_eq!((d.subject, d.mode), (ip("10.0.0.2"), M::Auto));
    }

    #[test]
    fn reasons_are_one_readable_line() {
        let inventory = inventory();
        let policy = Policy {
            shadow: true,
            ..policy_with(vec![with(rule("serious network alerts", A::Quarantine), |r| {
                r.sources = vec!["ids-1".into()];
                r.min_severity = Some(ThreatSeverity::High);
            })])
        };
        let d = decide(&policy, &detection(), &inventory);
        assert_eq!(d.decided_by, "rule serious network alerts");
        assert_eq!(
            d.reason,
            "rule \"serious network alerts\" matched (source ids-1, severity high ≥ high) on 10.0.0.1 (server \
             web-01); shadow: recorded, not applied"
        );
        let d = decide(&Policy::default(), &with(detection(), |d| d.subject = ip("10.0.0.3")), &inventory);
        assert_eq!(d.reason, "no rule matched; default action notify on 10.0.0.3 (no server)");
        let d = decide(&policy_with(vec![rule("all", A::Notify)]), &detection(), &inventory);
        assert_eq!(d.reason, "rule \"all\" matched (any detection) on 10.0.0.1 (server web-01)");
        let policy = Policy { exclude_keywords: vec!["TROJAN".into()], ..Policy::default() };
        let d = decide(&policy, &detection(), &inventory);
        assert_eq!(d.reason, "signature \"ET TROJAN Something Bad\" contains the exclusion keyword \"TROJAN\"");
    }

    #[test]
    fn each_address_is_resolved_once() {
        let calls = std::cell::RefCell::new(Vec::new());
        let inventory = inventory();
        let policy = policy_with(vec![
            with(rule("a", A::Quarantine), |r| r.servers = vec!["nobody".into()]),
            with(rule("b", A::Quarantine), |r| {
                r.subject = Some(SubjectSide::Dest);
                r.servers = vec!["nobody".into()];
            }),
            with(rule("c", A::Quarantine), |r| {
                r.subject = Some(SubjectSide::Src);
                r.servers = vec!["nobody".into()];
            }),
        ]);
        let d = policy.decide(&detection(), &|address| {
            calls.borrow_mut().push(address);
            inventory.get(&address).cloned()
        });
        assert_eq!(d.decided_by, "default");
        assert_eq!(*calls.borrow(), [ip("10.0.0.1"), ip("10.0.0.2")]);
    }

    #[test]
    fn pick_subject_sides() {
        let d = with(detection(), |d| {
            d.subject = ip("10.0.0.9");
            d.peer = Some(ip("10.0.0.8"));
            d.target_ip = Some(ip("10.0.0.2"));
        });
        let (a, b, t, x) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.9"), ip("10.0.0.8"));
        assert_eq!(pick_subject(&d, None), (t, Some(x)));
        assert_eq!(pick_subject(&d, Some(SubjectSide::Src)), (a, Some(b)));
        assert_eq!(pick_subject(&d, Some(SubjectSide::Source)), (a, Some(b)));
        assert_eq!(pick_subject(&d, Some(SubjectSide::Dest)), (b, Some(a)));
        assert_eq!(pick_subject(&d, Some(SubjectSide::Target)), (b, Some(a)));
        // A target that is the source has the destination as its peer.
        let d2 = with(d.clone(), |d| d.target_ip = Some(a));
        assert_eq!(pick_subject(&d2, Some(SubjectSide::Target)), (a, Some(b)));
        // A target on neither side: the detection's peer.
        let d3 = with(d.clone(), |d| d.target_ip = Some(ip("10.0.0.7")));
        assert_eq!(pick_subject(&d3, Some(SubjectSide::Target)), (ip("10.0.0.7"), Some(x)));
        // Missing sides fall back to the detection's own subject and peer.
        let bare = with(d.clone(), |d| {
            d.src_ip = None;
            d.dest_ip = None;
            d.target_ip = None;
        });
        for side in [None, Some(SubjectSide::Target), Some(SubjectSide::Src), Some(SubjectSide::Dest)] {
            assert_eq!(pick_subject(&bare, side), (t, Some(x)), "{side:?}");
        }
        // One side only: its peer is the detection's peer, but never the subject itself.
        let src_only = with(detection(), |d| d.dest_ip = None);
        assert_eq!(pick_subject(&src_only, Some(SubjectSide::Src)), (a, Some(b)));
        let looped = with(src_only, |d| d.peer = Some(a));
        assert_eq!(pick_subject(&looped, Some(SubjectSide::Src)), (a, None));
    }

    const S: i64 = 1_000_000;

    #[test]
    fn breaker_admits_exactly_max_within_the_window_then_stays_tripped() {
        let mut breaker = CircuitBreaker::new(3, 60);
        assert!(breaker.admit(0));
        assert!(breaker.admit(10 * S));
        assert!(breaker.admit(20 * S));
        assert_eq!(breaker.recent(20 * S), 3);
        assert!(!breaker.is_tripped());
        assert!(!breaker.admit(30 * S));
        assert!(breaker.is_tripped());
        // Stays tripped even once the window has long passed.
        assert!(!breaker.admit(3600 * S));
        assert!(breaker.is_tripped());
        assert_eq!(breaker.recent(20 * S), 3, "a refused request is not counted");
    }

    #[test]
    fn breaker_reset_closes_and_forgets() {
        let mut breaker = CircuitBreaker::new(2, 60);
        assert!(breaker.admit(0) && breaker.admit(S));
        assert!(!breaker.admit(2 * S));
        breaker.reset();
        assert!(!breaker.is_tripped());
        assert_eq!(breaker.recent(3 * S), 0);
        assert!(breaker.admit(3 * S) && breaker.admit(4 * S));
        assert!(!breaker.admit(5 * S));
    }

    #[test]
    fn breaker_window_slides() {
        let mut breaker = CircuitBreaker::new(2, 60);
        assert!(breaker.admit(0));
        assert!(breaker.admit(30 * S));
        // At 60 s the first action (at 0) has left the window: now - t < window is false.
        assert_eq!(breaker.recent(60 * S - 1), 2);
        assert_eq!(breaker.recent(60 * S), 1);
        assert!(breaker.admit(60 * S));
        assert!(!breaker.is_tripped());
        assert_eq!(breaker.recent(89 * S), 2);
        assert_eq!(breaker.recent(90 * S), 1);
        assert_eq!(breaker.recent(1000 * S), 0);
        // A steady rate at the limit never trips.
        let mut steady = CircuitBreaker::new(2, 60);
        for i in 0..100 {
            assert!(steady.admit(i * 30 * S), "action {i}");
        }
    }

    #[test]
    fn breaker_reconfigure_and_edges() {
        let mut breaker = CircuitBreaker::new(1, 60);
        assert!(breaker.admit(0));
        breaker.reconfigure(3, 60);
        assert!(breaker.admit(S) && breaker.admit(2 * S));
        assert!(!breaker.admit(3 * S));
        breaker.reconfigure(10, 60);
        assert!(breaker.is_tripped(), "reconfiguring does not reset");
        breaker.reset();
        breaker.reconfigure(2, 10);
        assert!(breaker.admit(0) && breaker.admit(S));
        assert!(breaker.admit(10 * S), "the shorter window applies");

        let mut none = CircuitBreaker::new(0, 60);
        assert!(!none.admit(0));
        assert!(none.is_tripped());

        // Huge windows and early times do not overflow.
        let mut wide = CircuitBreaker::new(1, u64::MAX);
        assert!(wide.admit(0));
        assert_eq!(wide.recent(i64::MAX - 1), 1);
        assert!(!wide.admit(i64::MAX - 1));
        let mut early = CircuitBreaker::new(1, 60);
        assert!(early.admit(i64::MIN + 1));
        assert_eq!(early.recent(i64::MIN + 1), 1);
        // A clock that steps back keeps counting what it admitted "later".
        let mut back = CircuitBreaker::new(1, 60);
        assert!(back.admit(100 * S));
        assert_eq!(back.recent(0), 1);
        assert!(!back.admit(0));
    }
}
