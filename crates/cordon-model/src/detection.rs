//! Detections: what a sensor reported, normalized whatever the sensor.

use std::net::IpAddr;

use crate::inventory::text_enum;

text_enum! {
    /// How serious a detection is, on one scale for every sensor.
    ThreatSeverity {
        Info = "info",
        Low = "low",
        Medium = "medium",
        High = "high",
        Critical = "critical",
    }
}

/// One detection, normalized. Times are Unix microseconds (UTC) so that this crate needs no
/// time library; the store and the API render them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// When Cordon received it.
    pub received_at_us: i64,
    /// When the sensor saw it (its own event timestamp), when the event carries one. Address
    /// resolution uses this time: addresses move, and alerts arrive late.
    pub observed_at_us: Option<i64>,
    /// The configured source name (e.g. `ids-1`).
    pub source: String,
    /// The sensor that produced it, as the event names it (EVE `host`, CEF device product), if any.
    pub sensor: Option<String>,
    /// The host at risk, by the source's default rule (EVE: `alert.target` when the rule names a
    /// target, else `src_ip`; Deep Discovery: `interestedIp`, else the internal side).
    pub subject: IpAddr,
    /// The other side, when there is one.
    pub peer: Option<IpAddr>,
    /// The event's own addresses, so that a policy rule may pick another side as the subject.
    pub src_ip: Option<IpAddr>,
    pub dest_ip: Option<IpAddr>,
    /// The address the rule named as target (`alert.target`), when it did.
    pub target_ip: Option<IpAddr>,
    pub signature_id: Option<String>,
    pub signature: String,
    pub category: Option<String>,
    pub severity: ThreatSeverity,
    /// The event as received (one line of text), kept for the record.
    pub raw: String,
}

/// What a parser made of one line (or one message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An event to act on.
    Detection(Box<Detection>),
    /// A well-formed event that is not acted on (an EVE `flow`, `dns`, `stats` event, ...);
    /// `kind` says which, for the metrics.
    Skipped { kind: String },
    /// Input that could not be read; `reason` says why, for the log and the metrics.
    Malformed { reason: String },
}
