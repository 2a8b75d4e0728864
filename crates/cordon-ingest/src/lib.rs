//! Parsers of untrusted sensor input, normalized into `cordon_model::Detection`.
//!
//! Architecture invariant: no I/O here. A parser takes bytes and returns a `Parsed`; it never
//! panics, whatever the bytes, and one bad line never affects the lines around it.
//!
//! - [`eve`]: Suricata EVE JSON lines.
//! - [`syslog`]: syslog headers (RFC 5424, RFC 3164) and TCP framing (RFC 6587).
//! - [`cef`]: ArcSight Common Event Format.
//! - [`cef_syslog`]: CEF over syslog (generic, or Trend Micro Deep Discovery Inspector) into
//!   detections.
//! - [`webhook`]: one detection posted as JSON.

pub mod cef;
pub mod cef_syslog;
pub mod eve;
pub mod syslog;
mod time;
pub mod webhook;

#[cfg(test)]
mod proptests;

/// What a parser knows besides the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The configured source name, copied into each detection.
    pub source: &'a str,
    /// When Cordon received the bytes (Unix microseconds).
    pub received_at_us: i64,
}
