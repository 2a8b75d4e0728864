//! What a notification says: the e-mail's subject and plain-text body, and the webhook's JSON.
//! Pure functions of an engine event and what the store knows; no I/O here.

use cordon_engine::EngineEvent;
use cordon_model::{ActionKind, Message, messages};
use cordon_store::{ActionRecord, ServerRecord};
use serde_json::{Value, json};

use crate::links::{Choice, format_time};

/// Who a notice is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The tenant's administrator (or `[notify] operator_email`).
    Administrator,
    /// The server's user (`user_email`).
    User,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Administrator => "administrator",
            Audience::User => "user",
        }
    }
}

/// What the store knows around an event.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// This Cordon's instance name.
    pub instance: String,
    pub server: Option<ServerRecord>,
    pub action: Option<ActionRecord>,
    /// The server's tenant and its administrator's address.
    pub tenant: Option<String>,
    pub admin_email: Option<String>,
}

/// One approval link as it appears in an e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedLink {
    pub choice: Choice,
    pub url: String,
}

/// One notification, before it is addressed: the e-mail (subject and body, without links:
/// [`Notice::email_body`] adds them per recipient) and the webhook's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// `awaits_approval`, `quarantined`, `failed`, `drift`, `released`, `rebooted`.
    pub event: &'static str,
    pub audience: Audience,
    /// The numbered message the notice is about, if any.
    pub number: Option<u32>,
    /// The server's name, or the address for an action that resolved to no server.
    pub subject_name: String,
    /// For an action awaiting approval: its id and kind, to which links are added.
    pub approval: Option<(i64, ActionKind)>,
    pub subject: String,
    /// The body; `{links}` marks where approval links (or the commands) go.
    pub body: String,
    pub json: Value,
}

const LINKS_MARK: &str = "{links}";

impl Notice {
    /// The body as sent to one recipient: with their links, or the commands when links are off.
    pub fn email_body(&self, links: Option<(&[OfferedLink], i64)>) -> String {
        let Some((id, _)) = self.approval else {
            return self.body.clone();
        };
        let mut text = String::new();
        match links {
            Some((links, expires)) if !links.is_empty() => {
                text.push_str(&format!(
                    "Decide by following one link (each opens a page where you confirm; the first decision\n\
                     counts, and the links work until {}):\n\n",
                    format_time(expires)
                ));
                let width = links.iter().map(|l| capitalized(l.choice.label()).len()).max().unwrap_or(0) + 1;
                for link in links {
                    text.push_str(&format!(
                        "  {:<width$} {}\n",
                        format!("{}:", capitalized(link.choice.label())),
                        link.url
                    ));
                }
                text.push_str(&format!(
                    "\nOr with the command line: `cordon actions approve {id} --as quarantine|reboot|quarantine_reboot`\n\
                     or `cordon actions reject {id}`.\n"
                ));
            }
            _ => text.push_str(&format!(
                "Decide with the command line: `cordon actions approve {id} --as quarantine|reboot|quarantine_reboot`\n\
                 or `cordon actions reject {id}`.\n"
            )),
        }
        self.body.replace(LINKS_MARK, &text)
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The notices an event calls for (none, one for the administrator, or one for the user).
pub fn notices(event: &EngineEvent, facts: &Facts) -> Vec<Notice> {
    match event {
        EngineEvent::AwaitsApproval { action, kind, server, reason } => {
            vec![awaits_approval(*action, *kind, server, reason, facts)]
        }
        EngineEvent::Succeeded { action, kind, server, detail } => match kind {
            ActionKind::Quarantine | ActionKind::QuarantineReboot => {
                vec![quarantined(*action, *kind, server, detail, facts)]
            }
            ActionKind::Unquarantine => {
                vec![resume(*action, *kind, server, detail, facts, &messages::UNQUARANTINE_SUCCEEDED)]
            }
            ActionKind::Reboot => vec![resume(*action, *kind, server, detail, facts, &messages::REBOOT_CONFIRMED)],
            // A notify action never runs (it is approved as another kind).
            ActionKind::Notify => Vec::new(),
        },
        EngineEvent::Failed { action, kind, server, number, text } => {
            vec![failed(*action, *kind, server.as_deref(), *number, text, facts)]
        }
        EngineEvent::Drift { server, detail } => vec![drift(server, detail, facts)],
    }
}

fn awaits_approval(id: i64, kind: ActionKind, server: &str, reason: &str, facts: &Facts) -> Notice {
    let message = &messages::ACTION_AWAITS_APPROVAL;
    let subject = format!("[Cordon {}] {kind} of {server} awaits approval (action {id})", message.number);
    let mut body = format!("{} {}: {reason}\n\n", message.severity(), message.number);
    body.push_str(&action_lines(id, kind, facts));
    body.push_str(&server_lines(server, facts));
    body.push('\n');
    body.push_str(LINKS_MARK);
    body.push('\n');
    body.push_str(&remedy_lines(message));
    body.push_str(&footer(facts));
    let json = event_json("awaits_approval", Audience::Administrator, Some(id), Some(kind), server, facts).with(
        message.number,
        reason,
        message.remedy,
    );
    Notice {
        event: "awaits_approval",
        audience: Audience::Administrator,
        number: Some(message.number),
        subject_name: server.to_string(),
        approval: Some((id, kind)),
        subject,
        body,
        json,
    }
}

fn quarantined(id: i64, kind: ActionKind, server: &str, detail: &str, facts: &Facts) -> Notice {
    let message = if kind == ActionKind::QuarantineReboot {
        &messages::REBOOT_CONFIRMED
    } else {
        &messages::QUARANTINE_SUCCEEDED
    };
    let text = message.render(&[("server", &server), ("detail", &detail)]);
    let addresses = quarantine_addresses(facts);
    let subject = match addresses.is_empty() {
        true => format!("[Cordon {}] {server} is quarantined (action {id})", message.number),
        false => {
            format!("[Cordon {}] {server} is quarantined at {} (action {id})", message.number, addresses.join(", "))
        }
    };
    let mut body = format!("{} {}: {text}\n\n", message.severity(), message.number);
    body.push_str(&action_lines(id, kind, facts));
    body.push_str(&server_lines(server, facts));
    body.push('\n');
    if !addresses.is_empty() {
        body.push_str(&format!(
            "The server now has the quarantine address {}: adapt the guest's network settings if it does\n\
             not take it by itself, clean the machine, then release it with `cordon unquarantine {server}`.\n\n",
            addresses.join(", ")
        ));
    }
    body.push_str(&remedy_lines(&messages::QUARANTINE_SUCCEEDED));
    body.push_str(&footer(facts));
    let json = event_json("quarantined", Audience::Administrator, Some(id), Some(kind), server, facts).with(
        message.number,
        &text,
        messages::QUARANTINE_SUCCEEDED.remedy,
    );
    Notice {
        event: "quarantined",
        audience: Audience::Administrator,
        number: Some(message.number),
        subject_name: server.to_string(),
        approval: None,
        subject,
        body,
        json,
    }
}

/// To the server's user: the server is back (released, or rebooted); they may resume work.
fn resume(id: i64, kind: ActionKind, server: &str, detail: &str, facts: &Facts, message: &Message) -> Notice {
    let text = message.render(&[("server", &server), ("detail", &detail)]);
    let (event, what) = match kind {
        ActionKind::Unquarantine => ("released", "is back on its network"),
        _ => ("rebooted", "was rebooted"),
    };
    let subject = format!("[Cordon {}] {server} {what}: you may resume work", message.number);
    let mut body = format!("Hello,\n\nthe server {server} {what}, and you may resume your work on it.\n\n");
    if kind == ActionKind::Unquarantine {
        let operational: Vec<String> = facts
            .server
            .iter()
            .flat_map(|s| &s.nics)
            .filter_map(|n| n.operational_ip.map(|ip| format!("{ip} on {}", n.network)))
            .collect();
        if !operational.is_empty() {
            body.push_str(&format!(
                "Its address is {} again: if its network settings were changed while it was quarantined,\n\
                 set them back.\n\n",
                operational.join(", ")
            ));
        }
    }
    body.push_str(&format!("{} {}: {text}\n", message.severity(), message.number));
    body.push_str(&format!("(action {id})\n"));
    body.push_str(&footer(facts));
    let json = event_json(event, Audience::User, Some(id), Some(kind), server, facts).with(
        message.number,
        &text,
        message.remedy,
    );
    Notice {
        event,
        audience: Audience::User,
        number: Some(message.number),
        subject_name: server.to_string(),
        approval: None,
        subject,
        body,
        json,
    }
}

fn failed(id: i64, kind: ActionKind, server: Option<&str>, number: u32, text: &str, facts: &Facts) -> Notice {
    let message = Message::find(number);
    let name = server
        .map(str::to_string)
        .or_else(|| facts.action.as_ref().and_then(|a| a.address).map(|a| a.to_string()))
        .unwrap_or_else(|| "an unknown server".to_string());
    let subject = format!("[Cordon {number}] {kind} of {name} failed (action {id})");
    let severity = message.map(|m| m.severity().as_str()).unwrap_or("ERROR");
    let mut body = format!("{severity} {number}: {text}\n\n");
    body.push_str(&action_lines(id, kind, facts));
    match server {
        Some(server) => body.push_str(&server_lines(server, facts)),
        None => body.push_str(&format!("Server:    none found for {name}\n")),
    }
    body.push('\n');
    let remedy = message.map(|m| m.remedy).unwrap_or("See `cordon explain NUMBER` and the action's steps.");
    body.push_str(&format!("Remedy ({number}): {}\n", remedy.replace("ID", &id.to_string())));
    body.push_str(&format!("Details: `cordon actions show {id}`.\n"));
    body.push_str(&footer(facts));
    let json =
        event_json("failed", Audience::Administrator, Some(id), Some(kind), &name, facts).with(number, text, remedy);
    Notice {
        event: "failed",
        audience: Audience::Administrator,
        number: Some(number),
        subject_name: name,
        approval: None,
        subject,
        body,
        json,
    }
}

/// Drift: `detail` is the reconciler's message 41009.
fn drift(server: &str, detail: &str, facts: &Facts) -> Notice {
    let message = &messages::DRIFT_FOUND;
    let subject = format!("[Cordon {}] drift on {server}: the network differs from Cordon's records", message.number);
    let mut body = format!("{} {}: {detail}\n\n", message.severity(), message.number);
    body.push_str(&server_lines(server, facts));
    body.push('\n');
    body.push_str(&remedy_lines(message));
    body.push_str(&footer(facts));
    let json = event_json("drift", Audience::Administrator, None, None, server, facts).with(
        message.number,
        detail,
        message.remedy,
    );
    Notice {
        event: "drift",
        audience: Audience::Administrator,
        number: Some(message.number),
        subject_name: server.to_string(),
        approval: None,
        subject,
        body,
        json,
    }
}

fn action_lines(id: i64, kind: ActionKind, facts: &Facts) -> String {
    let mut out = format!("Action:    {id} ({kind})\n");
    if let Some(action) = &facts.action {
        if let Some(reason) = &action.reason {
            out.push_str(&format!("Reason:    {reason}\n"));
        }
        if action.detections > 1 {
            out.push_str(&format!("Detections: {}\n", action.detections));
        }
        if let Some(address) = action.address {
            out.push_str(&format!("Address:   {address} (as detected)\n"));
        }
    }
    out
}

fn server_lines(server: &str, facts: &Facts) -> String {
    let mut out = format!("Server:    {server}");
    if let Some(tenant) = &facts.tenant {
        out.push_str(&format!(" (tenant {tenant})"));
    }
    if let Some(record) = &facts.server {
        out.push_str(&format!(", {}", record.state));
    }
    out.push('\n');
    for nic in facts.server.iter().flat_map(|s| &s.nics) {
        let now = match nic.current_ip {
            Some(ip) => format!("{ip} on {}", nic.current_network),
            None => format!("on {}", nic.current_network),
        };
        let operational = match nic.operational_ip {
            Some(ip) => format!("{ip} on {}", nic.network),
            None => nic.network.clone(),
        };
        if nic.current_network == nic.network && nic.current_ip == nic.operational_ip {
            out.push_str(&format!("Network:   {now} (NIC {})\n", nic.mac));
        } else {
            out.push_str(&format!("Network:   {now} (NIC {}; operational: {operational})\n", nic.mac));
        }
    }
    out
}

/// The addresses the server holds on networks other than its operational ones.
fn quarantine_addresses(facts: &Facts) -> Vec<String> {
    facts
        .server
        .iter()
        .flat_map(|s| &s.nics)
        .filter(|n| n.current_network != n.network)
        .map(|n| match n.current_ip {
            Some(ip) => format!("{ip} ({})", n.current_network),
            None => n.current_network.clone(),
        })
        .collect()
}

fn remedy_lines(message: &Message) -> String {
    format!("What to do ({}): {}\n", message.number, message.remedy)
}

fn footer(facts: &Facts) -> String {
    format!("\n-- \nCordon {}; `cordon explain NUMBER` explains a message.\n", facts.instance)
}

/// The JSON common to every webhook post.
fn event_json(
    event: &str,
    audience: Audience,
    action: Option<i64>,
    kind: Option<ActionKind>,
    server: &str,
    facts: &Facts,
) -> Value {
    let nics: Vec<Value> = facts
        .server
        .iter()
        .flat_map(|s| &s.nics)
        .map(|n| {
            json!({
                "mac": n.mac.to_string(),
                "network": n.current_network,
                "address": n.current_ip.map(|ip| ip.to_string()),
                "operational_network": n.network,
                "operational_address": n.operational_ip.map(|ip| ip.to_string()),
            })
        })
        .collect();
    let recipient = match audience {
        Audience::Administrator => facts.admin_email.clone(),
        Audience::User => facts.server.as_ref().and_then(|s| s.user_email.clone()),
    };
    json!({
        "event": event,
        "audience": audience.as_str(),
        "recipient": recipient,
        "instance": facts.instance,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "action": action,
        "kind": kind.map(|k| k.as_str()),
        "server": server,
        "tenant": facts.tenant,
        "state": facts.server.as_ref().map(|s| s.state.as_str()),
        "reason": facts.action.as_ref().and_then(|a| a.reason.clone()),
        "nics": nics,
    })
}

trait WithMessage {
    fn with(self, number: u32, text: &str, remedy: &str) -> Self;
}

impl WithMessage for Value {
    fn with(mut self, number: u32, text: &str, remedy: &str) -> Value {
        let severity = Message::find(number).map(|m| m.severity().as_str()).unwrap_or("ERROR");
        self["number"] = Value::from(number);
        self["severity"] = Value::from(severity);
        self["text"] = Value::from(text);
        self["remedy"] = Value::from(remedy);
        self
    }
}

#[cfg(test)]
mod tests {
    use cordon_model::{ActionState, ServerKind, ServerState};
    use cordon_store::NicRecord;

    use super::*;

    fn facts(quarantined: bool) -> Facts {
        let nic = NicRecord {
            mac: "02:00:00:00:01:01".parse().unwrap(),
            network: "office".into(),
            operational_ip: Some("10.10.0.11".parse().unwrap()),
            switch: Some("tor-1".into()),
            port: Some("p-sbc-01".into()),
            current_network: if quarantined { "quarantine" } else { "office" }.into(),
            current_ip: Some(if quarantined { "10.99.0.100" } else { "10.10.0.11" }.parse().unwrap()),
        };
        let now = chrono::Utc::now();
        Facts {
            instance: "test-1".into(),
            server: Some(ServerRecord {
                id: 1,
                name: "sbc-01".into(),
                kind: ServerKind::Physical,
                tenant: Some("sales".into()),
                user_email: Some("user01@example.com".into()),
                state: if quarantined { ServerState::Quarantined } else { ServerState::Operational },
                retired: false,
                nics: vec![nic],
                updated_at: now,
                hypervisor: None,
                domain: None,
            }),
            action: Some(ActionRecord {
                id: 7,
                kind: ActionKind::Notify,
                state: ActionState::AwaitingApproval,
                generation: 1,
                server_id: Some(1),
                server_name: Some("sbc-01".into()),
                address: Some("10.10.0.11".parse().unwrap()),
                reason: Some("ids-1 [high] ET TROJAN test".into()),
                trigger: "policy".into(),
                requested_by: "policy".into(),
                instance: "test-1".into(),
                attempts: 0,
                message: None,
                detections: 1,
                decided_by: Some("rule x".into()),
                created_at: now,
                updated_at: now,
                lease_owner: None,
            }),
            tenant: Some("sales".into()),
            admin_email: Some("infra-sales@example.com".into()),
        }
    }

    #[test]
    fn awaiting_approval_lists_the_links_or_the_commands() {
        let event = EngineEvent::AwaitsApproval {
            action: 7,
            kind: ActionKind::Notify,
            server: "sbc-01".into(),
            reason: "notify of sbc-01 awaits approval: rule x".into(),
        };
        let notices = notices(&event, &facts(false));
        assert_eq!(notices.len(), 1);
        let notice = &notices[0];
        assert_eq!(notice.subject, "[Cordon 21014] notify of sbc-01 awaits approval (action 7)");
        assert_eq!(notice.audience, Audience::Administrator);
        let links = [
            OfferedLink { choice: Choice::ApproveQuarantine, url: "https://c.example/approve/AAA".into() },
            OfferedLink { choice: Choice::ApproveReboot, url: "https://c.example/approve/BBB".into() },
            OfferedLink { choice: Choice::Ignore, url: "https://c.example/approve/CCC".into() },
        ];
        let body = notice.email_body(Some((&links, 1_800_000_000)));
        for needle in [
            "INFO 21014: notify of sbc-01 awaits approval: rule x",
            "Server:    sbc-01 (tenant sales), operational",
            "Network:   10.10.0.11 on office (NIC 02:00:00:00:01:01)",
            "Reason:    ids-1 [high] ET TROJAN test",
            "Approve quarantine:",
            "https://c.example/approve/AAA",
            "Ignore (reject the action): https://c.example/approve/CCC",
            "2027-01-15 08:00:00 UTC",
            "What to do (21014)",
        ] {
            assert!(body.contains(needle), "no {needle:?} in:\n{body}");
        }
        assert!(!body.contains(LINKS_MARK));
        let without = notice.email_body(None);
        assert!(without.contains("cordon actions reject 7") && !without.contains("https://"), "{without}");
        assert_eq!(notice.json["number"], 21014);
        assert_eq!(notice.json["recipient"], "infra-sales@example.com");
        assert!(!notice.json.to_string().contains("approve/"), "webhooks never carry links");
    }

    #[test]
    fn quarantine_done_names_the_new_network_and_address() {
        let event = EngineEvent::Succeeded {
            action: 7,
            kind: ActionKind::Quarantine,
            server: "sbc-01".into(),
            detail: "02:00:00:00:01:01 → quarantine 10.99.0.100".into(),
        };
        let notice = &notices(&event, &facts(true))[0];
        assert_eq!(notice.subject, "[Cordon 21002] sbc-01 is quarantined at 10.99.0.100 (quarantine) (action 7)");
        assert!(
            notice.body.contains(
                "Network:   10.99.0.100 on quarantine (NIC 02:00:00:00:01:01; operational: 10.10.0.11 on office)"
            ),
            "{}",
            notice.body
        );
        assert_eq!(notice.json["nics"][0]["address"], "10.99.0.100");
        assert_eq!(notice.json["nics"][0]["network"], "quarantine");
    }

    #[test]
    fn failures_carry_number_text_and_remedy() {
        let event = EngineEvent::Failed {
            action: 9,
            kind: ActionKind::Quarantine,
            server: None,
            number: 67198,
            text: "server not found. ip=10.10.0.99".into(),
        };
        let mut facts = facts(false);
        facts.server = None;
        facts.action.as_mut().unwrap().address = Some("10.10.0.99".parse().unwrap());
        let notice = &notices(&event, &facts)[0];
        assert_eq!(notice.subject, "[Cordon 67198] quarantine of 10.10.0.99 failed (action 9)");
        assert!(notice.body.contains("ERROR 67198: server not found. ip=10.10.0.99"), "{}", notice.body);
        assert!(notice.body.contains("Remedy (67198): No managed server"), "{}", notice.body);
        assert!(notice.body.contains("`cordon actions check 9`"), "ID is replaced: {}", notice.body);
        assert_eq!(notice.json["remedy"], messages::SERVER_NOT_FOUND_BY_ADDRESS.remedy);
    }

    #[test]
    fn users_hear_that_they_may_resume() {
        for (kind, number) in [(ActionKind::Unquarantine, 21004), (ActionKind::Reboot, 21015)] {
            let event = EngineEvent::Succeeded { action: 3, kind, server: "sbc-01".into(), detail: "done".into() };
            let notice = &notices(&event, &facts(false))[0];
            assert_eq!(notice.audience, Audience::User);
            assert_eq!(notice.number, Some(number));
            assert!(notice.subject.ends_with("you may resume work"), "{}", notice.subject);
            assert_eq!(notice.json["recipient"], "user01@example.com");
        }
        let notify =
            EngineEvent::Succeeded { action: 3, kind: ActionKind::Notify, server: "s".into(), detail: String::new() };
        assert!(notices(&notify, &facts(false)).is_empty());
    }

    #[test]
    fn drift_goes_to_the_administrator() {
        let event = EngineEvent::Drift { server: "sbc-01".into(), detail: "port p-sbc-01 is on br-quarantine".into() };
        let notice = &notices(&event, &facts(false))[0];
        assert_eq!(notice.audience, Audience::Administrator);
        assert!(notice.body.contains("WARNING 41009: port p-sbc-01 is on br-quarantine"), "{}", notice.body);
        assert!(notice.subject.starts_with("[Cordon 41009] drift on sbc-01"), "{}", notice.subject);
        assert!(notice.body.contains("What to do (41009)"), "{}", notice.body);
        assert_eq!((notice.json["event"].as_str(), notice.json["number"].as_u64()), (Some("drift"), Some(41009)));
    }
}
