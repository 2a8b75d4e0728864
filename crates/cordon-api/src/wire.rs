//! The JSON the API speaks; the CLI deserializes the same types. Field names are a contract
//! with scripts: add fields freely, never rename or remove one.

use serde::{Deserialize, Serialize};

use cordon_store::{ActionRecord, MessageRecord, NicRecord, ServerRecord, StepRecord};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerView {
    pub name: String,
    pub kind: String,
    pub tenant: Option<String>,
    pub user_email: Option<String>,
    /// `operational`, `quarantined`, a transitional state (`quarantining`, `unquarantining`)
    /// or a failed one (`quarantine_failed`, `unquarantine_failed`).
    pub state: String,
    /// The current network of the primary (first) NIC.
    pub network: Option<String>,
    /// The current address of the primary NIC, bare (no prefix length).
    pub ip: Option<String>,
    pub retired: bool,
    pub nics: Vec<NicView>,
    pub last_action: Option<ActionBrief>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NicView {
    pub mac: String,
    /// Where the NIC is now.
    pub network: String,
    pub ip: Option<String>,
    /// Its network and address when not quarantined.
    pub operational_network: String,
    /// Null for a VM imported from a hypervisor whose address is not configured yet.
    pub operational_ip: Option<String>,
    pub switch: Option<String>,
    pub port: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActionBrief {
    pub id: i64,
    pub kind: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageView {
    pub number: u32,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActionView {
    pub id: i64,
    pub kind: String,
    pub state: String,
    /// The server's name, or null when the address resolved to no server.
    pub server: Option<String>,
    /// The address that triggered the action, when one did.
    pub address: Option<String>,
    pub reason: Option<String>,
    pub trigger: String,
    pub requested_by: String,
    pub instance: String,
    pub attempts: u32,
    pub generation: i64,
    /// How many detections are attached to it.
    pub detections: u64,
    /// What decided it: `operator`, `rule <name>`, `default`, ...
    pub decided_by: Option<String>,
    /// The latest numbered message of the action.
    pub message: Option<MessageView>,
    pub created_at: String,
    pub updated_at: String,
    /// The journal, on `GET /actions/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    /// Every numbered message of the action, on `GET /actions/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<TimedMessageView>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepView {
    pub seq: i64,
    pub attempt: u32,
    pub name: String,
    pub target: String,
    /// `done`, `already_in_place` or `failed`.
    pub outcome: String,
    pub detail: String,
    pub message_number: Option<u32>,
    pub instance: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TimedMessageView {
    pub number: u32,
    pub text: String,
    pub instance: String,
    pub at: String,
}

/// Body of `POST /servers/{name}/quarantine` and `/unquarantine` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActRequest {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubmitResponse {
    pub action: ActionView,
    /// True when an open action of the same kind already existed and is returned instead.
    pub existing: bool,
    pub message: MessageView,
}

/// Every error body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorView,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorView {
    pub number: u32,
    pub severity: String,
    pub text: String,
    pub remedy: String,
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<&NicRecord> for NicView {
    fn from(nic: &NicRecord) -> Self {
        NicView {
            mac: nic.mac.to_string(),
            network: nic.current_network.clone(),
            ip: nic.current_ip.map(|ip| ip.to_string()),
            operational_network: nic.network.clone(),
            operational_ip: nic.operational_ip.map(|ip| ip.to_string()),
            switch: nic.switch.clone(),
            port: nic.port.clone(),
        }
    }
}

impl ServerView {
    pub fn new(server: &ServerRecord, last_action: Option<&ActionRecord>) -> Self {
        let nics: Vec<NicView> = server.nics.iter().map(NicView::from).collect();
        ServerView {
            name: server.name.clone(),
            kind: server.kind.to_string(),
            tenant: server.tenant.clone(),
            user_email: server.user_email.clone(),
            state: server.state.to_string(),
            network: nics.first().map(|n| n.network.clone()),
            ip: nics.first().and_then(|n| n.ip.clone()),
            retired: server.retired,
            nics,
            last_action: last_action.map(|a| ActionBrief {
                id: a.id,
                kind: a.kind.to_string(),
                state: a.state.to_string(),
            }),
            updated_at: time(&server.updated_at),
        }
    }
}

impl From<&ActionRecord> for ActionView {
    fn from(action: &ActionRecord) -> Self {
        ActionView {
            id: action.id,
            kind: action.kind.to_string(),
            state: action.state.to_string(),
            server: action.server_name.clone(),
            address: action.address.map(|a| a.to_string()),
            reason: action.reason.clone(),
            trigger: action.trigger.clone(),
            requested_by: action.requested_by.clone(),
            instance: action.instance.clone(),
            attempts: action.attempts,
            generation: action.generation,
            detections: action.detections,
            decided_by: action.decided_by.clone(),
            message: action.message.as_ref().map(|m| MessageView { number: m.number, text: m.text.clone() }),
            created_at: time(&action.created_at),
            updated_at: time(&action.updated_at),
            steps: None,
            messages: None,
        }
    }
}

impl From<&StepRecord> for StepView {
    fn from(record: &StepRecord) -> Self {
        let step = &record.step;
        StepView {
            seq: record.seq,
            attempt: step.attempt,
            name: step.name.clone(),
            target: step.target.clone(),
            outcome: step.outcome.as_str().to_string(),
            detail: step.detail.clone(),
            message_number: step.message_number,
            instance: step.instance.clone(),
            started_at: time(&step.started_at),
            finished_at: time(&step.finished_at),
        }
    }
}

impl From<&MessageRecord> for TimedMessageView {
    fn from(record: &MessageRecord) -> Self {
        TimedMessageView {
            number: record.message.number,
            text: record.message.text.clone(),
            instance: record.message.instance.clone(),
            at: time(&record.created_at),
        }
    }
}

/// A detection as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DetectionView {
    pub id: i64,
    /// When Cordon received it (RFC 3339, UTC).
    pub received_at: String,
    /// When the sensor saw it, if the event says.
    pub observed_at: Option<String>,
    pub source: String,
    pub sensor: Option<String>,
    /// The host at risk, canonical address form.
    pub subject: String,
    pub peer: Option<String>,
    pub signature_id: Option<String>,
    pub signature: String,
    pub category: Option<String>,
    /// `info`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// The action it started or was attached to, if any.
    pub action_id: Option<i64>,
    /// The server its subject resolved to, if any.
    pub server: Option<String>,
    /// What the engine decided (null while not processed yet).
    pub decision: Option<String>,
    /// The instance that received it.
    pub instance: String,
}

/// Body of `POST /api/v1/detections` (a webhook or `cordon report`): one detection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetectionPost {
    /// A configured source of type `webhook`.
    pub source: String,
    /// The host at risk.
    pub subject: String,
    #[serde(default)]
    pub peer: Option<String>,
    pub signature: String,
    #[serde(default)]
    pub signature_id: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// `info`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// When the sensor saw it (RFC 3339); default: now.
    #[serde(default)]
    pub observed_at: Option<String>,
    /// Which sensor or endpoint reported it.
    #[serde(default)]
    pub sensor: Option<String>,
    /// The infected file, for antivirus reports.
    #[serde(default)]
    pub file: Option<String>,
}

/// Answer to a detection post: everything counted, the accepted ones committed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestResponse {
    pub received: u64,
    pub accepted: u64,
    pub skipped: u64,
    pub rejected: u64,
    /// Ids of the committed detections.
    pub ids: Vec<i64>,
    /// Why lines were rejected (first few).
    pub errors: Vec<String>,
}

/// Body of `POST /api/v1/actions/{id}/approve` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Approve as this kind: `quarantine`, `reboot` or `quarantine_reboot` (a `notify` action
    /// becomes a quarantine by default).
    #[serde(default, rename = "as")]
    pub as_kind: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BreakerView {
    pub tripped: bool,
    /// Automatic actions counted within the window now.
    pub recent: u32,
    pub max_auto_actions: u32,
    pub window_secs: u64,
}

impl From<&cordon_store::DetectionRecord> for DetectionView {
    fn from(record: &cordon_store::DetectionRecord) -> Self {
        let d = &record.detection;
        let at =
            |us: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us).map(|t| time(&t)).unwrap_or_default();
        DetectionView {
            id: record.id,
            received_at: at(d.received_at_us),
            observed_at: d.observed_at_us.map(at),
            source: d.source.clone(),
            sensor: d.sensor.clone(),
            subject: d.subject.to_string(),
            peer: d.peer.map(|p| p.to_string()),
            signature_id: d.signature_id.clone(),
            signature: d.signature.clone(),
            category: d.category.clone(),
            severity: d.severity.to_string(),
            action_id: record.action_id,
            server: record.server_name.clone(),
            decision: record.decision.clone(),
            instance: record.instance.clone(),
        }
    }
}

/// Body of `POST /api/v1/hypervisors/{name}/import` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// Write the new servers to the store; default false (a dry run).
    #[serde(default)]
    pub apply: bool,
}

/// What an import found on a hypervisor (and added, when applied).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportView {
    pub hypervisor: String,
    pub applied: bool,
    pub servers: Vec<ImportedServerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportedServerView {
    pub name: String,
    pub running: bool,
    /// `new` (added, or to be added on a dry run), `exists`, or `skipped: <why>`.
    pub outcome: String,
    pub nics: Vec<ImportedNicView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportedNicView {
    pub mac: String,
    pub bridge: Option<String>,
    /// The operational network whose bridge the NIC is on, if any.
    pub network: Option<String>,
}

impl From<&cordon_engine::ImportReport> for ImportView {
    fn from(report: &cordon_engine::ImportReport) -> Self {
        ImportView {
            hypervisor: report.hypervisor.clone(),
            applied: report.applied,
            servers: report
                .servers
                .iter()
                .map(|s| ImportedServerView {
                    name: s.name.clone(),
                    running: s.running,
                    outcome: s.outcome.clone(),
                    nics: s
                        .nics
                        .iter()
                        .map(|n| ImportedNicView {
                            mac: n.mac.clone(),
                            bridge: n.bridge.clone(),
                            network: n.network.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// What one reconciler pass found (`POST /api/v1/reconcile`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReconcileView {
    /// NICs compared with what their switch or hypervisor reports.
    pub checked: usize,
    pub drifts: Vec<DriftView>,
    /// NICs that could not be observed, with the reason (not counted as drift).
    pub unobserved: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriftView {
    pub server: String,
    pub target: String,
    pub recorded: String,
    pub observed: String,
    /// The action created to undo it, with `on_drift = "enforce"`.
    pub action: Option<i64>,
}

impl From<&cordon_engine::ReconcileReport> for ReconcileView {
    fn from(report: &cordon_engine::ReconcileReport) -> Self {
        ReconcileView {
            checked: report.checked,
            drifts: report
                .drifts
                .iter()
                .map(|d| DriftView {
                    server: d.server.clone(),
                    target: d.target.clone(),
                    recorded: d.recorded.clone(),
                    observed: d.observed.clone(),
                    action: d.action,
                })
                .collect(),
            unobserved: report.unobserved.clone(),
        }
    }
}

/// `GET /api/v1/status`: is the manager healthy, and what is it doing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusView {
    pub version: String,
    pub instance: String,
    pub started_at: String,
    pub uptime_secs: u64,
    pub database: String,
    /// Action counts by state.
    pub actions: std::collections::BTreeMap<String, u64>,
    pub breaker: BreakerView,
    pub drivers: Vec<DriverHealthView>,
    pub sources: Vec<SourceStatusView>,
    /// The instances that share the database, from their heartbeats, with their leases.
    pub instances: Vec<InstanceView>,
}

/// One manager instance, as its heartbeats record it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceView {
    pub name: String,
    /// Where its API listens.
    pub address: String,
    pub started_at: String,
    pub heartbeat_at: String,
    /// False once it missed its heartbeats for a whole action lease (stopped or dead).
    pub live: bool,
    /// The running actions it holds a lease on.
    pub actions: Vec<ActionLeaseView>,
    /// The named leases it holds (`reconciler`, `detections`).
    pub leases: Vec<NamedLeaseView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActionLeaseView {
    pub action: i64,
    /// When the lease ends unless renewed.
    pub until: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedLeaseView {
    pub name: String,
    pub until: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriverHealthView {
    pub name: String,
    pub kind: String,
    /// Null when not checked (BMCs are never called by a status check).
    pub healthy: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceStatusView {
    pub name: String,
    pub received: u64,
    pub accepted: u64,
    pub skipped: u64,
    pub rejected: u64,
}
