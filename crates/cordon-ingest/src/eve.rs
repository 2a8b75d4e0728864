//! Suricata EVE JSON, one event per line.
//!
//! Most lines are not alerts (flow, dns, tls, http, stats, ...), so a line is read in one pass
//! into a small borrowed struct holding only the fields an alert needs; everything else is
//! skipped by the JSON scanner without being built (`IgnoredAny`), strings are borrowed from the
//! line unless they hold escapes.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use cordon_model::{Detection, Parsed, ThreatSeverity};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::Context;
use crate::syslog::{snippet, trim_line_end};
use crate::time;

/// A JSON string, borrowed from the line when it holds no escape.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fields of an EVE event that matter here; serde skips the others.
#[derive(Debug, Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event_type: Option<Text<'a>>,
    #[serde(borrow)]
    timestamp: Option<Text<'a>>,
    #[serde(borrow)]
    host: Option<Text<'a>>,
    #[serde(borrow)]
    src_ip: Option<Text<'a>>,
    #[serde(borrow)]
    dest_ip: Option<Text<'a>>,
    #[serde(borrow)]
    alert: Option<Alert<'a>>,
}

#[derive(Debug, Deserialize)]
struct Alert<'a> {
    signature_id: Option<u64>,
    #[serde(borrow)]
    signature: Option<Text<'a>>,
    #[serde(borrow)]
    category: Option<Text<'a>>,
    severity: Option<u64>,
    /// Present when the rule uses the `target` keyword.
    #[serde(borrow)]
    source: Option<Endpoint<'a>>,
    #[serde(borrow)]
    target: Option<Endpoint<'a>>,
}

#[derive(Debug, Deserialize)]
struct Endpoint<'a> {
    #[serde(borrow)]
    ip: Option<Text<'a>>,
}

fn malformed(reason: impl Into<String>) -> Parsed {
    Parsed::Malformed { reason: reason.into() }
}

/// serde_json quotes offending values in full; a reason stays short.
fn bounded(mut reason: String) -> String {
    const MAX: usize = 200;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// Suricata's severity: 1 is the most severe.
fn severity(value: Option<u64>) -> ThreatSeverity {
    match value {
        Some(1) => ThreatSeverity::High,
        Some(2) => ThreatSeverity::Medium,
        Some(3) => ThreatSeverity::Low,
        _ => ThreatSeverity::Info,
    }
}

/// The event type as a metrics label: Suricata's are short lowercase words; anything else is
/// reported as `other` so that hostile input cannot mint labels of any length.
fn kind_label(event_type: &str) -> String {
    let plausible = !event_type.is_empty()
        && event_type.len() <= 32
        && event_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plausible { event_type.to_owned() } else { "other".to_owned() }
}

fn address(field: &str, value: Option<&Text<'_>>) -> Result<Option<IpAddr>, Parsed> {
    match value {
        None => Ok(None),
        Some(text) => text
            .as_str()
            .parse()
            .map(Some)
            .map_err(|_| malformed(format!("unparsable {field} `{}`", snippet(text.as_str().as_bytes())))),
    }
}

/// Reads one line of Suricata EVE JSON: an `alert` becomes a detection, any other well-formed
/// event is `Skipped` with its event type as `kind`, an empty line is `Skipped { kind: "empty" }`.
pub fn parse_line(line: &[u8], ctx: &Context<'_>) -> Parsed {
    let line = trim_line_end(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let Some(first) = line.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Parsed::Skipped { kind: "empty".to_owned() };
    };
    // A struct also deserializes from a JSON array; EVE is objects only.
    if *first != b'{' {
        return malformed(if serde_json::from_slice::<de::IgnoredAny>(line).is_ok() {
            "not a JSON object"
        } else {
            "not JSON"
        });
    }
    let event: Event<'_> = match serde_json::from_slice(line) {
        Ok(event) => event,
        Err(e) if e.is_data() => return malformed(bounded(format!("unexpected EVE field: {e}"))),
        Err(e) => return malformed(bounded(format!("not JSON: {e}"))),
    };
    let Some(event_type) = event.event_type.as_ref() else {
        return malformed("no event_type");
    };
    if event_type.as_str() != "alert" {
        return Parsed::Skipped { kind: kind_label(event_type.as_str()) };
    }
    match alert(&event, line, ctx) {
        Ok(detection) => Parsed::Detection(Box::new(detection)),
        Err(parsed) => parsed,
    }
}

fn alert(event: &Event<'_>, line: &[u8], ctx: &Context<'_>) -> Result<Detection, Parsed> {
    let Some(alert) = event.alert.as_ref() else {
        return Err(malformed("alert event without an alert object"));
    };
    let src_ip = address("src_ip", event.src_ip.as_ref())?.ok_or_else(|| malformed("alert without src_ip"))?;
    let dest_ip = address("dest_ip", event.dest_ip.as_ref())?;
    let target_ip = address("alert.target.ip", alert.target.as_ref().and_then(|t| t.ip.as_ref()))?;
    let source_ip = address("alert.source.ip", alert.source.as_ref().and_then(|s| s.ip.as_ref()))?;

    let (subject, peer) = match target_ip {
        Some(target) => {
            let other = if target == src_ip {
                dest_ip
            } else if Some(target) == dest_ip {
                Some(src_ip)
            } else {
                dest_ip
            };
            (target, source_ip.or(other))
        }
        None => (src_ip, dest_ip),
    };
    let text = |t: Option<&Text<'_>>| t.map(|t| t.as_str().to_owned());
    Ok(Detection {
        received_at_us: ctx.received_at_us,
        observed_at_us: event.timestamp.as_ref().and_then(|t| time::parse_rfc3339(t.as_str().as_bytes())),
        source: ctx.source.to_owned(),
        sensor: text(event.host.as_ref()),
        subject,
        peer,
        src_ip: Some(src_ip),
        dest_ip,
        target_ip,
        signature_id: alert.signature_id.map(|id| id.to_string()),
        signature: text(alert.signature.as_ref()).unwrap_or_default(),
        category: text(alert.category.as_ref()).filter(|c| !c.is_empty()),
        severity: severity(alert.severity),
        raw: String::from_utf8_lossy(line).into_owned(),
    })
}

#[cfg(test)]
mod tests;
