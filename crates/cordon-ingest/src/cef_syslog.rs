//! CEF carried by syslog (one UDP datagram or one TCP frame), as Trend Micro Deep Discovery
//! Inspector and most CEF emitters send it, normalized into a detection.

use std::net::IpAddr;

use cordon_model::{Detection, Parsed, ThreatSeverity};

use crate::Context;
use crate::cef::{self, CefEvent};
use crate::syslog::{self, trim_line_end};
use crate::time;

/// Which emitter's conventions to read the CEF with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Any CEF emitter: subject `src` (else `dst`), severity on the CEF 0–10 scale.
    Generic,
    /// Trend Micro Deep Discovery Inspector detection logs: subject `interestedIp` (else the
    /// internal side by `deviceDirection`), peer `peerIp`, severity 2/4/6/8.
    DeepDiscovery,
}

/// Where the CEF starts: the first `CEF:` that does not continue a word.
fn find_cef(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .enumerate()
        .position(|(i, w)| w == b"CEF:" && (i == 0 || bytes.get(i - 1).is_some_and(|b| !b.is_ascii_alphanumeric())))
}

/// One syslog message carrying CEF → a detection. A message without `CEF:` is
/// `Skipped { kind: "not-cef" }` (an empty one `Skipped { kind: "empty" }`); CEF that does not
/// parse, or names no usable address, is `Malformed`.
pub fn parse_message(bytes: &[u8], profile: Profile, ctx: &Context<'_>) -> Parsed {
    let bytes = trim_line_end(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Skipped { kind: "empty".to_owned() };
    }
    let Some(at) = find_cef(bytes) else {
        return Parsed::Skipped { kind: "not-cef".to_owned() };
    };
    let (header, cef_bytes) = bytes.split_at(at);
    let event = match cef::parse(&String::from_utf8_lossy(cef_bytes)) {
        Ok(event) => event,
        Err(e) => return Parsed::Malformed { reason: e.to_string() },
    };
    // Only the header's time and host matter here, and a broken header must not lose the CEF.
    let header = syslog::parse_with_reference(header, ctx.received_at_us).ok();
    match detection(&event, profile, header, bytes, ctx) {
        Some(detection) => Parsed::Detection(Box::new(detection)),
        None => Parsed::Malformed { reason: "CEF names no usable address (src, dst, interestedIp)".to_owned() },
    }
}

fn ip(event: &CefEvent, key: &str) -> Option<IpAddr> {
    event.extension(key).and_then(|v| v.trim().parse().ok())
}

fn detection(
    event: &CefEvent,
    profile: Profile,
    header: Option<syslog::SyslogMessage>,
    bytes: &[u8],
    ctx: &Context<'_>,
) -> Option<Detection> {
    let src = ip(event, "src");
    let dst = ip(event, "dst");
    let (subject, peer, target_ip, severity) = match profile {
        Profile::Generic => {
            let (subject, peer) = match (src, dst) {
                (Some(src), dst) => (src, dst),
                (None, Some(dst)) => (dst, None),
                (None, None) => return None,
            };
            (subject, peer, None, generic_severity(&event.severity))
        }
        Profile::DeepDiscovery => {
            let interested = ip(event, "interestedIp");
            // 0 = inbound (the destination is ours), 1 = outbound (the source is ours).
            let inbound = event.extension("deviceDirection").map(str::trim) == Some("0");
            let (internal, external) = if inbound { (dst, src) } else { (src, dst) };
            let subject = interested.or(internal).or(external)?;
            let other = if Some(subject) == src {
                dst
            } else if Some(subject) == dst {
                src
            } else {
                external
            };
            let peer = ip(event, "peerIp").or(other);
            (subject, peer, interested, ddi_severity(&event.severity))
        }
    };
    let observed_at_us =
        event.extension("rt").and_then(time::parse_cef_time).or_else(|| header.as_ref().and_then(|h| h.timestamp_us));
    let non_empty = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned);
    Some(Detection {
        received_at_us: ctx.received_at_us,
        observed_at_us,
        source: ctx.source.to_owned(),
        sensor: non_empty(&event.device_product).or_else(|| header.and_then(|h| h.hostname)),
        subject,
        peer,
        src_ip: src,
        dest_ip: dst,
        target_ip,
        signature_id: non_empty(&event.signature_id),
        signature: event.name.clone(),
        category: event.extension("cat").and_then(non_empty),
        severity,
        raw: String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// CEF severity: 0–3 Low, 4–6 Medium, 7–8 High, 9–10 Critical; or the words Low, Medium,
/// High, Very-High; anything else Info.
fn generic_severity(severity: &str) -> ThreatSeverity {
    let severity = severity.trim();
    if let Ok(n) = severity.parse::<u8>() {
        return match n {
            0..=3 => ThreatSeverity::Low,
            4..=6 => ThreatSeverity::Medium,
            7..=8 => ThreatSeverity::High,
            9..=10 => ThreatSeverity::Critical,
            _ => ThreatSeverity::Info,
        };
    }
    let word: String = severity.chars().filter(|c| c.is_ascii_alphabetic()).map(|c| c.to_ascii_lowercase()).collect();
    match word.as_str() {
        "low" => ThreatSeverity::Low,
        "medium" => ThreatSeverity::Medium,
        "high" => ThreatSeverity::High,
        "veryhigh" => ThreatSeverity::Critical,
        _ => ThreatSeverity::Info,
    }
}

/// Deep Discovery Inspector writes 2 (informational), 4 (low), 6 (medium), 8 (high).
fn ddi_severity(severity: &str) -> ThreatSeverity {
    match severity.trim() {
        "2" => ThreatSeverity::Info,
        "4" => ThreatSeverity::Low,
        "6" => ThreatSeverity::Medium,
        "8" => ThreatSeverity::High,
        other => generic_severity(other),
    }
}

#[cfg(test)]
mod tests;
