//! Parsers of untrusted sensor input, normalized into `cordon_model::Detection`.
//!
//! Architecture invariant: no I/O here. A parser takes bytes and returns a `Parsed`; it never
//! panics, whatever the bytes, and one bad line never affects the lines around it.

/// What a parser knows besides the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The configured source name, copied into each detection.
    pub source: &'a str,
    /// When Cordon received the bytes (Unix microseconds).
    pub received_at_us: i64,
}
