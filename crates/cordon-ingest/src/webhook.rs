//! Detections posted as JSON by a webhook (or `cordon report`): one object per request.
//!
//! The body is untrusted: [`parse`] never panics and names what is wrong in one line.

use std::net::IpAddr;

use cordon_model::{Detection, ThreatSeverity};
use serde::{Deserialize, Serialize};

use crate::time;

/// The most a webhook body may weigh; the API refuses a larger one before parsing.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Body of `POST /api/v1/detections`: one detection.
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

/// Reads a webhook body: the post itself, or why it is not one.
pub fn parse_post(body: &[u8]) -> Result<DetectionPost, String> {
    // serde's message may quote the input (an unknown field's name, a string of the wrong
    // type): keep it short.
    serde_json::from_slice(body).map_err(|error| {
        let text = error.to_string();
        let cut: String = text.chars().take(200).collect();
        format!("not a detection: {cut}{}", if cut.len() < text.len() { "…" } else { "" })
    })
}

/// The source a body names, even when the rest of it is not a valid post (so that the
/// rejection is counted against the right source).
pub fn source_of(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct SourceOnly {
        source: String,
    }
    serde_json::from_slice::<SourceOnly>(body).ok().map(|s| s.source)
}

/// The normalized detection of a post received at `received_at_us`.
pub fn to_detection(post: &DetectionPost, received_at_us: i64) -> Result<Detection, String> {
    let address = |text: &str, what: &str| {
        text.trim().parse::<IpAddr>().map_err(|_| format!("{what} `{}` is not an IP address", snippet(text)))
    };
    let subject = address(&post.subject, "subject")?;
    let peer = post.peer.as_deref().map(|p| address(p, "peer")).transpose()?;
    // The model's parse error quotes the whole text; the sender's text is cut here.
    let severity: ThreatSeverity = post.severity.trim().parse().map_err(|_| {
        format!("severity `{}` is not one of info, low, medium, high, critical", snippet(&post.severity))
    })?;
    let observed_at_us = match &post.observed_at {
        Some(text) => Some(
            time::parse_rfc3339(text.trim().as_bytes())
                .ok_or_else(|| format!("observed_at `{}` is not an RFC 3339 time", snippet(text)))?,
        ),
        None => None,
    };
    if post.signature.trim().is_empty() {
        return Err("signature is empty".into());
    }
    if post.source.trim().is_empty() {
        return Err("source is empty".into());
    }
    Ok(Detection {
        received_at_us,
        observed_at_us,
        source: post.source.clone(),
        sensor: post.sensor.clone(),
        subject,
        peer,
        src_ip: Some(subject),
        dest_ip: peer,
        target_ip: None,
        signature_id: post.signature_id.clone(),
        signature: post.signature.clone(),
        category: post.category.clone(),
        severity,
        raw: serde_json::to_string(post).unwrap_or_default(),
    })
}

/// [`parse_post`] then [`to_detection`].
pub fn parse(body: &[u8], received_at_us: i64) -> Result<Detection, String> {
    to_detection(&parse_post(body)?, received_at_us)
}

/// At most 64 characters of untrusted text, for an error message.
fn snippet(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_773_600_000_000;

    #[test]
    fn a_full_post_becomes_a_detection() {
        let body = br#"{"source":"av","subject":"10.0.0.5","peer":"203.0.113.9","signature":"Eicar","severity":"high",
            "observed_at":"2026-11-27T10:00:00Z","sensor":"clamd-1","file":"/tmp/x"}"#;
        let d = parse(body, NOW).unwrap();
        assert_eq!(d.subject.to_string(), "10.0.0.5");
        assert_eq!(d.peer.unwrap().to_string(), "203.0.113.9");
        assert_eq!(d.severity, ThreatSeverity::High);
        assert_eq!(d.observed_at_us, Some(1_795_773_600_000_000));
        assert_eq!(d.received_at_us, NOW);
    }

    #[test]
    fn bad_posts_say_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not a detection"),
            (b"[]", "not a detection"),
            (br#"{"source":"av","subject":"x","signature":"s","severity":"high"}"#, "subject `x` is not an IP"),
            (br#"{"source":"av","subject":"10.0.0.1","signature":" ","severity":"high"}"#, "signature is empty"),
            (br#"{"source":"av","subject":"10.0.0.1","signature":"s","severity":"dire"}"#, "dire"),
            (br#"{"source":"av","subject":"10.0.0.1","signature":"s","severity":"low","extra":1}"#, "unknown field"),
            (
                br#"{"source":"av","subject":"10.0.0.1","signature":"s","severity":"low","observed_at":"yesterday"}"#,
                "observed_at `yesterday`",
            ),
        ];
        for (body, expected) in cases {
            let error = parse(body, NOW).unwrap_err();
            assert!(error.contains(expected), "{}: {error}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_source_is_found_in_an_invalid_post() {
        assert_eq!(source_of(br#"{"source":"av","subject":"nope"}"#).as_deref(), Some("av"));
        assert_eq!(source_of(b"{"), None);
    }

    #[test]
    fn a_long_severity_is_cut_in_errors() {
        // Found by the webhook_json fuzz target: the error quoted the whole value.
        let body =
            format!(r#"{{"source":"av","subject":"10.0.0.1","signature":"s","severity":"{}"}}"#, "j at ".repeat(500));
        let error = parse(body.as_bytes(), NOW).unwrap_err();
        assert!(error.starts_with("severity `j at") && error.len() < 160, "{error}");
    }

    #[test]
    fn long_field_names_are_cut_in_errors() {
        let body = format!(r#"{{"{}":1}}"#, "f".repeat(10_000));
        let error = parse(body.as_bytes(), NOW).unwrap_err();
        assert!(error.starts_with("not a detection: unknown field") && error.len() < 260, "{error}");
    }

    #[test]
    fn long_untrusted_text_is_cut_in_errors() {
        let subject = "x".repeat(10_000);
        let body = format!(r#"{{"source":"av","subject":"{subject}","signature":"s","severity":"low"}}"#);
        let error = parse(body.as_bytes(), NOW).unwrap_err();
        assert!(error.len() < 120, "{error}");
    }
}
