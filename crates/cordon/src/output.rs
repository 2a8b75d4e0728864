//! Human tables and JSON for the operator commands.

use cordon_api::wire::{ActionView, BreakerView, DetectionView, ImportView, ReconcileView, ServerView, StatusView};
use serde::Serialize;

use crate::cli::{Failure, Format};

pub fn print<T: Serialize + ?Sized>(format: Format, value: &T, table: fn(&T) -> String) -> Result<(), Failure> {
    match format {
        Format::Json => match serde_json::to_string_pretty(value) {
            Ok(json) => println!("{json}"),
            Err(e) => return Err(Failure::new(&cordon_model::messages::INTERNAL_ERROR, &[("detail", &e)])),
        },
        Format::Table => print!("{}", table(value)),
    }
    Ok(())
}

/// Left-aligned columns separated by two spaces.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn or_dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".into())
}

pub fn servers_table(servers: &[ServerView]) -> String {
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.clone(),
                or_dash(&s.tenant),
                if s.retired { format!("{} (retired)", s.state) } else { s.state.clone() },
                or_dash(&s.network),
                or_dash(&s.ip),
                s.last_action
                    .as_ref()
                    .map(|a| format!("#{} {} {}", a.id, a.kind, a.state))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render(&["NAME", "KIND", "TENANT", "STATE", "NETWORK", "IP", "LAST ACTION"], &rows)
}

pub fn server_detail(s: &ServerView) -> String {
    let mut out = format!(
        "name:     {}\nkind:     {}\ntenant:   {}\nuser:     {}\nstate:    {}{}\nnetwork:  {}\nip:       {}\nlast action: {}\n\n",
        s.name,
        s.kind,
        or_dash(&s.tenant),
        or_dash(&s.user_email),
        s.state,
        if s.retired { " (retired: no longer in the configuration)" } else { "" },
        or_dash(&s.network),
        or_dash(&s.ip),
        s.last_action.as_ref().map(|a| format!("#{} {} {}", a.id, a.kind, a.state)).unwrap_or_else(|| "-".into()),
    );
    let rows: Vec<Vec<String>> = s
        .nics
        .iter()
        .map(|n| {
            vec![
                n.mac.clone(),
                n.network.clone(),
                or_dash(&n.ip),
                format!("{} {}", n.operational_network, or_dash(&n.operational_ip)),
                match (&n.switch, &n.port) {
                    (Some(switch), Some(port)) => format!("{switch}/{port}"),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    out.push_str(&render(&["MAC", "NETWORK", "IP", "OPERATIONAL", "PORT"], &rows));
    out
}

fn message(a: &ActionView) -> String {
    a.message.as_ref().map(|m| format!("{} {}", m.number, m.text)).unwrap_or_else(|| "-".into())
}

pub fn actions_table(actions: &[ActionView]) -> String {
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.kind.clone(),
                a.state.clone(),
                a.server.clone().or_else(|| a.address.clone()).unwrap_or_else(|| "-".into()),
                a.created_at.clone(),
                message(a),
            ]
        })
        .collect();
    render(&["ID", "KIND", "STATE", "SERVER", "CREATED", "MESSAGE"], &rows)
}

pub fn action_detail(a: &ActionView) -> String {
    let mut out = format!(
        "action:   {}\nkind:     {}\nstate:    {}\nserver:   {}\naddress:  {}\nreason:   {}\ntrigger:  {} by {}\ninstance: {}\nattempts: {}\ncreated:  {}\nupdated:  {}\nmessage:  {}\n",
        a.id,
        a.kind,
        a.state,
        or_dash(&a.server),
        or_dash(&a.address),
        or_dash(&a.reason),
        a.trigger,
        a.requested_by,
        a.instance,
        a.attempts,
        a.created_at,
        a.updated_at,
        message(a),
    );
    if let Some(steps) = &a.steps {
        out.push_str("\nSteps:\n");
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                vec![
                    s.seq.to_string(),
                    s.attempt.to_string(),
                    s.name.clone(),
                    s.target.clone(),
                    s.outcome.clone(),
                    s.detail.clone(),
                ]
            })
            .collect();
        out.push_str(&render(&["#", "TRY", "STEP", "TARGET", "OUTCOME", "DETAIL"], &rows));
    }
    if let Some(messages) = &a.messages {
        out.push_str("\nMessages:\n");
        let rows: Vec<Vec<String>> = messages
            .iter()
            .map(|m| vec![m.at.clone(), m.number.to_string(), m.instance.clone(), m.text.clone()])
            .collect();
        out.push_str(&render(&["AT", "NUMBER", "INSTANCE", "TEXT"], &rows));
    }
    out
}

pub fn detections_table(detections: &[DetectionView]) -> String {
    let rows: Vec<Vec<String>> = detections
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.received_at.clone(),
                d.source.clone(),
                d.subject.clone(),
                d.severity.clone(),
                d.server.clone().unwrap_or_else(|| "-".into()),
                d.action_id.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                d.signature.clone(),
                d.decision.clone().unwrap_or_else(|| "(not processed yet)".into()),
            ]
        })
        .collect();
    render(&["ID", "RECEIVED", "SOURCE", "SUBJECT", "SEVERITY", "SERVER", "ACTION", "SIGNATURE", "DECISION"], &rows)
}

pub fn breaker_detail(b: &BreakerView) -> String {
    format!(
        "circuit breaker: {}
automatic actions in the last {} s: {} (at most {})
",
        if b.tripped { "TRIPPED: automatic actions wait for approval (`cordon breaker reset`)" } else { "closed" },
        b.window_secs,
        b.recent,
        b.max_auto_actions
    )
}

pub fn import_table(report: &ImportView) -> String {
    let rows: Vec<Vec<String>> = report
        .servers
        .iter()
        .flat_map(|s| {
            s.nics.iter().map(move |n| {
                vec![
                    s.name.clone(),
                    if s.running { "running".into() } else { "shut off".into() },
                    n.mac.clone(),
                    n.bridge.clone().unwrap_or_else(|| "-".into()),
                    n.network.clone().unwrap_or_else(|| "-".into()),
                    s.outcome.clone(),
                ]
            })
        })
        .collect();
    let mut out = render(&["DOMAIN", "STATE", "MAC", "BRIDGE", "NETWORK", "IMPORT"], &rows);
    if !report.applied {
        out.push_str("\n(dry run: nothing was written; add --apply to add the new servers)\n");
    }
    out
}

pub fn reconcile_table(report: &ReconcileView) -> String {
    let mut out = format!("{} NICs checked, {} drifted\n", report.checked, report.drifts.len());
    if !report.drifts.is_empty() {
        let rows: Vec<Vec<String>> = report
            .drifts
            .iter()
            .map(|d| {
                vec![
                    d.server.clone(),
                    d.target.clone(),
                    d.recorded.clone(),
                    d.observed.clone(),
                    d.action.map(|a| format!("action {a}")).unwrap_or_else(|| "reported".into()),
                ]
            })
            .collect();
        out.push_str(&render(&["SERVER", "NIC", "RECORDED", "OBSERVED", "DONE"], &rows));
    }
    for line in &report.unobserved {
        out.push_str(&format!("could not observe {line}\n"));
    }
    out
}

pub fn status_detail(s: &StatusView) -> String {
    let mut out = format!(
        "cordon {} running as instance {} since {} ({} s)\ndatabase: {}\n{}",
        s.version,
        s.instance,
        s.started_at,
        s.uptime_secs,
        s.database,
        breaker_detail(&s.breaker)
    );
    let actions: Vec<String> = s.actions.iter().map(|(state, n)| format!("{state} {n}")).collect();
    out.push_str(&format!("actions: {}\n", if actions.is_empty() { "none".to_string() } else { actions.join(", ") }));
    if !s.drivers.is_empty() {
        out.push_str("\nDrivers:\n");
        let rows: Vec<Vec<String>> = s
            .drivers
            .iter()
            .map(|d| {
                let health = match d.healthy {
                    Some(true) => "ok",
                    Some(false) => "FAILING",
                    None => "-",
                };
                vec![d.name.clone(), d.kind.clone(), health.to_string(), d.detail.clone()]
            })
            .collect();
        out.push_str(&render(&["NAME", "KIND", "HEALTH", "DETAIL"], &rows));
    }
    if !s.sources.is_empty() {
        out.push_str("\nSources:\n");
        let rows: Vec<Vec<String>> = s
            .sources
            .iter()
            .map(|x| {
                vec![
                    x.name.clone(),
                    x.received.to_string(),
                    x.accepted.to_string(),
                    x.skipped.to_string(),
                    x.rejected.to_string(),
                ]
            })
            .collect();
        out.push_str(&render(&["NAME", "RECEIVED", "ACCEPTED", "SKIPPED", "REJECTED"], &rows));
    }
    if !s.instances.is_empty() {
        out.push_str("\nInstances:\n");
        let rows: Vec<Vec<String>> = s
            .instances
            .iter()
            .map(|i| {
                let mut leases: Vec<String> =
                    i.leases.iter().map(|l| format!("{} until {}", l.name, clock(&l.until))).collect();
                leases.extend(i.actions.iter().map(|a| format!("action {} until {}", a.action, clock(&a.until))));
                vec![
                    i.name.clone(),
                    if i.live { "live" } else { "gone" }.to_string(),
                    i.address.clone(),
                    clock(&i.heartbeat_at).to_string(),
                    if leases.is_empty() { "-".to_string() } else { leases.join(", ") },
                ]
            })
            .collect();
        out.push_str(&render(&["NAME", "STATE", "ADDRESS", "HEARTBEAT", "LEASES"], &rows));
    }
    out
}

/// The time of day of an RFC 3339 timestamp (`12:00:01.250`), or the whole text.
fn clock(timestamp: &str) -> &str {
    timestamp.split_once('T').map_or(timestamp, |(_, time)| time.trim_end_matches('Z'))
}
