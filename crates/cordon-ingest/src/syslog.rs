//! Syslog messages (RFC 5424, RFC 3164, or a bare message) and RFC 6587 framing of TCP streams.

use crate::time::{self, Cursor};

/// One syslog message, its header read as far as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    /// `<PRI>`: facility × 8 + severity, when the message has one.
    pub priority: Option<u8>,
    /// The header's time (Unix microseconds, UTC). An RFC 3164 time names no year: [`parse`]
    /// leaves it out unless the header writes a year, [`parse_with_reference`] infers it.
    pub timestamp_us: Option<i64>,
    pub hostname: Option<String>,
    /// RFC 5424 APP-NAME, or the RFC 3164 TAG.
    pub app_name: Option<String>,
    /// The message itself (lossy UTF-8, a leading BOM removed).
    pub message: String,
}

/// Why bytes are not a syslog message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    #[error("empty syslog message")]
    Empty,
    #[error("invalid syslog priority `{0}` (expected <0> to <191>)")]
    InvalidPriority(String),
    #[error("truncated RFC 5424 header: no {0}")]
    TruncatedHeader(&'static str),
    #[error("invalid RFC 5424 timestamp `{0}`")]
    InvalidTimestamp(String),
    #[error("invalid RFC 5424 structured data: {0}")]
    InvalidStructuredData(&'static str),
}

/// Why a TCP stream could not be cut into a frame. The decoder has already skipped the bad
/// frame when it reports this; the next call returns the next frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("syslog frame of at least {at_least} bytes exceeds the {max}-byte limit; skipped")]
    TooLong { at_least: usize, max: usize },
    #[error("invalid octet-counting length `{0}`; skipped to the next line feed")]
    InvalidLength(String),
    #[error("stream ended inside an octet-counted frame ({received} of {expected} bytes)")]
    Truncated { expected: usize, received: usize },
    #[error("stream ended inside an octet-counting length")]
    TruncatedLength,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A short, printable excerpt of untrusted bytes for an error message.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(bytes.get(..MAX).unwrap_or(bytes));
    let mut out: String = text.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if bytes.len() > MAX {
        out.push('…');
    }
    out
}

/// `bytes` without trailing CR, LF and NUL.
pub(crate) fn trim_line_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n' | b'\0'] = bytes {
        bytes = rest;
    }
    bytes
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`) or RFC 3164
/// (`<PRI>Mmm dd hh:mm:ss HOST TAG: MSG`), detected; also a bare message without header.
/// An RFC 3164 time without a year gives `timestamp_us: None`; see [`parse_with_reference`].
pub fn parse(bytes: &[u8]) -> Result<SyslogMessage, SyslogError> {
    parse_inner(bytes, None)
}

/// As [`parse`], but an RFC 3164 time, which names no year, is given the year that puts it
/// nearest to `reference_us` (typically when the message was received), read as UTC.
pub fn parse_with_reference(bytes: &[u8], reference_us: i64) -> Result<SyslogMessage, SyslogError> {
    parse_inner(bytes, Some(reference_us))
}

fn parse_inner(bytes: &[u8], reference_us: Option<i64>) -> Result<SyslogMessage, SyslogError> {
    let bytes = trim_line_end(bytes);
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(SyslogError::Empty);
    }
    let (priority, rest) = match bytes.strip_prefix(b"<") {
        Some(after) => {
            let (pri, rest) = priority(after)?;
            (Some(pri), rest)
        }
        None => (None, bytes),
    };
    match rest.strip_prefix(b"1 ") {
        Some(header) if priority.is_some() => rfc5424(priority, header),
        _ => Ok(rfc3164(priority, rest, reference_us)),
    }
}

/// `PRI>` (the `<` already consumed): 1 to 3 digits, at most 191.
fn priority(after_lt: &[u8]) -> Result<(u8, &[u8]), SyslogError> {
    let close = after_lt.iter().take(4).position(|&b| b == b'>');
    let invalid = || SyslogError::InvalidPriority(snippet(after_lt.get(..4).unwrap_or(after_lt)));
    let close = close.ok_or_else(invalid)?;
    let digits = after_lt.get(..close).ok_or_else(invalid)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let value = digits.iter().fold(0u16, |v, &d| v * 10 + u16::from(d - b'0'));
    let value = u8::try_from(value).ok().filter(|&v| v <= 191).ok_or_else(invalid)?;
    Ok((value, after_lt.get(close + 1..).unwrap_or_default()))
}

/// Splits off the next space-terminated header field.
fn field<'a>(rest: &mut &'a [u8], name: &'static str) -> Result<&'a [u8], SyslogError> {
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let (value, after) = rest.split_at(end);
    if value.is_empty() {
        return Err(SyslogError::TruncatedHeader(name));
    }
    *rest = after.get(1..).unwrap_or_default();
    Ok(value)
}

fn nil_or_text(value: &[u8]) -> Option<String> {
    (value != b"-").then(|| lossy(value))
}

/// After `<PRI>1 `.
fn rfc5424(priority: Option<u8>, header: &[u8]) -> Result<SyslogMessage, SyslogError> {
    let mut rest = header;
    let timestamp = field(&mut rest, "TIMESTAMP")?;
    let hostname = field(&mut rest, "HOSTNAME")?;
    let app_name = field(&mut rest, "APP-NAME")?;
    let _procid = field(&mut rest, "PROCID")?;
    let _msgid = field(&mut rest, "MSGID")?;
    let timestamp_us = if timestamp == b"-" {
        None
    } else {
        Some(time::parse_rfc3339(timestamp).ok_or_else(|| SyslogError::InvalidTimestamp(snippet(timestamp)))?)
    };
    let message = structured_data_then_message(rest)?;
    let message = message.strip_prefix(UTF8_BOM).unwrap_or(message);
    Ok(SyslogMessage {
        priority,
        timestamp_us,
        hostname: nil_or_text(hostname),
        app_name: nil_or_text(app_name),
        message: lossy(message),
    })
}

/// Skips STRUCTURED-DATA (`-` or `[id k="v" ...]...`, values escaping `"`, `\` and `]`) and the
/// space after it; returns the MSG.
fn structured_data_then_message(sd: &[u8]) -> Result<&[u8], SyslogError> {
    let after = match sd.first() {
        None => return Err(SyslogError::TruncatedHeader("STRUCTURED-DATA")),
        Some(b'-') => 1,
        Some(b'[') => {
            let mut i = 0;
            // Invariant: sd[i] == '[' at the top of each element.
            loop {
                let mut in_quotes = false;
                i += 1;
                loop {
                    match sd.get(i) {
                        None => {
                            return Err(SyslogError::InvalidStructuredData("unterminated element"));
                        }
                        Some(b'\\') if in_quotes => i += 2,
                        Some(b'"') => {
                            in_quotes = !in_quotes;
                            i += 1;
                        }
                        Some(b']') if !in_quotes => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                if sd.get(i) != Some(&b'[') {
                    break i;
                }
            }
        }
        Some(_) => return Err(SyslogError::InvalidStructuredData("expected `-` or `[`")),
    };
    match sd.get(after..) {
        None | Some([]) => Ok(&[]),
        Some([b' ', message @ ..]) => Ok(message),
        Some(_) => Err(SyslogError::InvalidStructuredData("no space before the message")),
    }
}

/// After `<PRI>` (or from the start, without one): an RFC 3164 header as far as it goes.
fn rfc3164(priority: Option<u8>, rest: &[u8], reference_us: Option<i64>) -> SyslogMessage {
    let bare = |message: &[u8]| SyslogMessage {
        priority,
        timestamp_us: None,
        hostname: None,
        app_name: None,
        message: lossy(message),
    };
    let mut cur = Cursor::new(rest);
    // rsyslog's "high precision" format writes an RFC 3339 time in the 3164 position.
    let timestamp_us = if let Some(us) = time::rfc3339(&mut cur) {
        Some(us)
    } else {
        cur = Cursor::new(rest);
        match time::bsd(&mut cur) {
            Some((civil, true)) => civil.to_unix_us(0),
            Some((civil, false)) => reference_us.and_then(|r| time::resolve_year(civil, r)),
            None => return bare(rest),
        }
    };
    let after_time = cur.rest();
    let after_time = match after_time {
        [] => &[][..],
        [b' ', tail @ ..] => tail,
        _ => return bare(rest),
    };
    let mut message = after_time;
    let mut hostname = None;
    if let Some(space) = after_time.iter().position(|&b| b == b' ') {
        let (token, tail) = after_time.split_at(space);
        if is_hostname(token) {
            hostname = Some(lossy(token));
            message = tail.get(1..).unwrap_or_default();
        }
    }
    let (app_name, message) = match tag(message) {
        Some((tag, body)) => (Some(lossy(tag)), body),
        None => (None, message),
    };
    SyslogMessage { priority, timestamp_us, hostname, app_name, message: lossy(message) }
}

/// A host name or address as syslog writes it: `ddi01`, `ids-1.example.net`, `10.0.0.1`, `fe80::1`.
fn is_hostname(token: &[u8]) -> bool {
    !token.is_empty()
        && token.len() <= 255
        && token.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'))
        && (token.last() != Some(&b':') || token.ends_with(b"::"))
}

/// `TAG: MSG` or `TAG[PID]: MSG`; `None` if the message does not start with a tag (so that
/// `CEF:0|...` stays whole).
fn tag(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = message.iter().position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/')))?;
    if end == 0 || end > 48 {
        return None;
    }
    let (tag, mut rest) = message.split_at(end);
    if let Some(after_bracket) = rest.strip_prefix(b"[") {
        let close = after_bracket.iter().take(32).position(|&b| b == b']')?;
        rest = after_bracket.get(close + 1..)?;
    }
    match rest {
        [b':'] => Some((tag, &[])),
        [b':', b' ', body @ ..] => Some((tag, body)),
        _ => None,
    }
}

/// Cuts a TCP byte stream into syslog frames (RFC 6587): octet counting (`LEN SP MSG`) and
/// non-transparent framing (a message ended by LF, CRLF or NUL), detected per frame as rsyslog
/// does: a frame that starts with a digit is octet-counted. Empty frames are dropped.
///
/// Memory is bounded: the decoder holds at most one frame of `max_frame` bytes plus what the
/// last `push` brought. An oversize octet-counted frame is skipped by its length; an oversize
/// LF-terminated frame is skipped up to its LF; either is reported once as
/// [`FrameError::TooLong`], and decoding goes on.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    buf: Vec<u8>,
    /// Where the undecoded bytes start in `buf`.
    start: usize,
    /// Bytes of an oversize octet-counted frame still to drop.
    skip: usize,
    /// Dropping an oversize (or unreadable) frame up to the next LF or NUL.
    discard_line: bool,
    /// How many pending bytes are known to hold no LF or NUL, so that a line arriving in
    /// small pieces is scanned once, not once per piece.
    scanned: usize,
}

/// The longest octet-counting length we read: 9 digits (< 1 GB).
const MAX_LEN_DIGITS: usize = 9;

impl FrameDecoder {
    /// A decoder that accepts frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { max_frame, buf: Vec::new(), start: 0, skip: 0, discard_line: false, scanned: 0 }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if self.skip > 0 {
            let n = self.skip.min(bytes.len());
            self.skip -= n;
            bytes = bytes.get(n..).unwrap_or_default();
        }
        if self.discard_line {
            match bytes.iter().position(|&b| b == b'\n' || b == b'\0') {
                Some(lf) => {
                    self.discard_line = false;
                    bytes = bytes.get(lf + 1..).unwrap_or_default();
                }
                None => return,
            }
        }
        if bytes.is_empty() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.scanned = 0;
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Drops everything up to and including the next LF (or NUL, which also ends a frame), or
    /// everything if there is none yet (and the rest of the line as it arrives).
    fn discard_to_line_end(&mut self) {
        match self.pending().iter().position(|&b| b == b'\n' || b == b'\0') {
            Some(lf) => self.consume(lf + 1),
            None => {
                self.consume(self.pending().len());
                self.discard_line = true;
            }
        }
    }

    /// The next complete frame, an error about a skipped one, or `None` until more bytes come.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        loop {
            // Separators left between frames (a LF after an octet-counted frame, CRLF, NUL).
            let blank = self.pending().iter().take_while(|&&b| matches!(b, b'\n' | b'\r' | b'\0')).count();
            self.consume(blank);
            let first = *self.pending().first()?;
            let frame = if first.is_ascii_digit() { self.octet_counted()? } else { self.line()? };
            match frame {
                Ok(frame) if frame.is_empty() => continue,
                other => return Some(other),
            }
        }
    }

    /// `LEN SP MSG`: `None` until complete.
    fn octet_counted(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        let pending = self.pending();
        let digits = pending.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > MAX_LEN_DIGITS {
            // As many digits as make it invalid, however many have arrived.
            let text = snippet(pending.get(..=MAX_LEN_DIGITS).unwrap_or_default());
            self.discard_to_line_end();
            return Some(Err(FrameError::InvalidLength(text)));
        }
        match pending.get(digits) {
            None => return None,
            Some(b' ') => {}
            Some(_) => {
                let text = snippet(pending.get(..=digits).unwrap_or_default());
                self.discard_to_line_end();
                return Some(Err(FrameError::InvalidLength(text)));
            }
        }
        let len = pending.get(..digits).unwrap_or_default().iter().fold(0usize, |v, &d| v * 10 + usize::from(d - b'0'));
        let header = digits + 1;
        if len > self.max_frame {
            let available = pending.len() - header;
            let dropped = len.min(available);
            self.consume(header + dropped);
            self.skip = len - dropped;
            return Some(Err(FrameError::TooLong { at_least: len, max: self.max_frame }));
        }
        let frame = pending.get(header..header + len)?.to_vec();
        self.consume(header + len);
        Some(Ok(frame))
    }

    /// A frame ended by LF or NUL (a CR before the LF removed): `None` until complete.
    fn line(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        let pending = self.pending();
        let from = self.scanned.min(pending.len());
        let found = pending.get(from..).unwrap_or_default().iter().position(|&b| b == b'\n' || b == b'\0');
        let Some(end) = found.map(|i| from + i) else {
            let at_least = pending.len();
            self.scanned = at_least;
            // Room for a CR before the LF.
            if at_least > self.max_frame.saturating_add(1) {
                self.discard_to_line_end();
                return Some(Err(FrameError::TooLong { at_least, max: self.max_frame }));
            }
            return None;
        };
        let frame = pending.get(..end).unwrap_or_default();
        let frame = frame.strip_suffix(b"\r").unwrap_or(frame);
        let result = if frame.len() > self.max_frame {
            Err(FrameError::TooLong { at_least: frame.len(), max: self.max_frame })
        } else {
            Ok(frame.to_vec())
        };
        self.consume(end + 1);
        Some(result)
    }

    /// At the end of the stream: the frames still buffered, then what is left (an unterminated
    /// last line is a frame; a partial octet-counted frame is an error). Call until `None`.
    pub fn finish(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        if let Some(frame) = self.next_frame() {
            return Some(frame);
        }
        let discarding = self.skip > 0 || self.discard_line;
        self.skip = 0;
        self.discard_line = false;
        let pending = self.pending();
        if discarding || pending.is_empty() {
            self.consume(pending.len());
            return None;
        }
        let result = if pending.first().is_some_and(u8::is_ascii_digit) {
            let digits = pending.iter().take_while(|b| b.is_ascii_digit()).count();
            if pending.get(digits) == Some(&b' ') {
                let expected = pending
                    .get(..digits)
                    .unwrap_or_default()
                    .iter()
                    .fold(0usize, |v, &d| v * 10 + usize::from(d - b'0'));
                Err(FrameError::Truncated { expected, received: pending.len() - digits - 1 })
            } else {
                Err(FrameError::TruncatedLength)
            }
        } else {
            let frame = pending.strip_suffix(b"\r").unwrap_or(pending);
            if frame.len() > self.max_frame {
                Err(FrameError::TooLong { at_least: frame.len(), max: self.max_frame })
            } else {
                Ok(frame.to_vec())
            }
        };
        self.consume(self.pending().len());
        match result {
            Ok(frame) if frame.is_empty() => None,
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests;
