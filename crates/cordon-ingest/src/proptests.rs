//! Properties of every parser, over generated input.

use std::net::{IpAddr, Ipv6Addr};

use cordon_model::{Parsed, ThreatSeverity};
use proptest::prelude::*;

use crate::cef_syslog::Profile;
use crate::syslog::{FrameDecoder, FrameError};
use crate::{Context, cef, cef_syslog, eve, syslog};

const CTX: Context<'static> = Context { source: "prop", received_at_us: 1_795_773_600_000_000 };

/// Valid inputs of every kind, to mutate: random bytes alone rarely get past the first check.
const SEEDS: &[&str] = &[
    r#"{"timestamp":"2026-11-27T10:00:00.123456+0000","event_type":"alert","src_ip":"10.10.0.11","src_port":1,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","alert":{"signature_id":2024897,"signature":"ET X","category":"C","severity":1,"source":{"ip":"203.0.113.5"},"target":{"ip":"10.10.0.11"}},"host":"ids-1"}"#,
    r#"{"timestamp":"2026-11-27T10:00:01.000000+0000","event_type":"flow","src_ip":"fe80:0000:0000:0000:0204:61ff:fe9d:f156","flow":{"pkts_toserver":6,"start":"x"}}"#,
    "<134>Mar  9 11:58:25 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|20|Malware URL requested|6|rt=Mar 09 2026 11:58:24 GMT+08:00 deviceDirection=1 dst=203.0.113.5 src=10.10.0.11 interestedIp=10.10.0.11 peerIp=203.0.113.5 cat=Malware msg=a\\=b\\\\c\\n",
    "<14>1 2026-03-09T11:58:24.5Z fw01 app - - [x@1 a=\"q\\\"]\"] \u{FEFF}CEF:1|A\\|B|IDS|1|42|x|Very-High|src=2001:db8::1 rt=1773057504000",
    "52 <13>Oct 11 22:14:15 mymachine su: 'su root' failed\n<13>1 - - - - - -\r\n",
];

/// Bytes that look like input: a seed with a few bytes replaced, inserted or cut.
fn near_valid() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(SEEDS),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..8),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(seed, edits, cut, truncate)| {
            let mut bytes = seed.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..512), near_valid()]
}

fn decode_all<'a>(max_frame: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut decoder = FrameDecoder::new(max_frame);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(frame) = decoder.next_frame() {
            out.push(frame);
        }
    }
    while let Some(frame) = decoder.finish() {
        out.push(frame);
        assert!(out.len() < 100_000, "finish() must end");
    }
    out
}

/// An oversize line's `at_least` depends on how much of it had arrived: not compared.
fn normalized(out: Vec<Result<Vec<u8>, FrameError>>) -> Vec<Result<Vec<u8>, FrameError>> {
    out.into_iter()
        .map(|r| {
            r.map_err(|e| match e {
                FrameError::TooLong { max, .. } => FrameError::TooLong { at_least: 0, max },
                e => e,
            })
        })
        .collect()
}

proptest! {
    #[test]
    fn no_parser_panics(bytes in any_input(), reference in any::<i64>()) {
        let _ = eve::parse_line(&bytes, &CTX);
        let _ = syslog::parse(&bytes);
        let _ = syslog::parse_with_reference(&bytes, reference);
        let _ = cef::parse(&String::from_utf8_lossy(&bytes));
        for profile in [Profile::Generic, Profile::DeepDiscovery] {
            let ctx = Context { source: "prop", received_at_us: reference };
            let _ = cef_syslog::parse_message(&bytes, profile, &ctx);
        }
    }

    #[test]
    fn frame_decoder_never_panics(
        bytes in any_input(),
        chunk in 1usize..64,
        max_frame in 0usize..600,
    ) {
        let chunked = decode_all(max_frame, bytes.chunks(chunk));
        for frame in chunked.iter().flatten() {
            prop_assert!(!frame.is_empty() && frame.len() <= max_frame);
        }
        // How the stream is cut into reads never changes what comes out.
        let whole = decode_all(max_frame, std::iter::once(bytes.as_slice()));
        prop_assert_eq!(normalized(whole), normalized(chunked));
    }
}

// ---- good input next to bad is never lost ----

#[derive(Debug, Clone)]
struct AlertSpec {
    src: IpAddr,
    dest: IpAddr,
    /// Whether the rule names a target, and which side.
    target: Option<bool>,
    sid: u32,
    signature: String,
    severity: u8,
    expanded_v6: bool,
}

/// As Suricata writes IPv6: all eight groups, four digits each.
fn eve_ip(ip: IpAddr, expanded: bool) -> String {
    match ip {
        IpAddr::V6(v6) if expanded => v6.segments().iter().map(|s| format!("{s:04x}")).collect::<Vec<_>>().join(":"),
        ip => ip.to_string(),
    }
}

impl AlertSpec {
    fn line(&self) -> String {
        let src = eve_ip(self.src, self.expanded_v6);
        let dest = eve_ip(self.dest, self.expanded_v6);
        let target = match self.target {
            None => String::new(),
            Some(dest_is_target) => {
                let (source, target) = if dest_is_target { (&src, &dest) } else { (&dest, &src) };
                format!(r#","source":{{"ip":"{source}","port":1}},"target":{{"ip":"{target}","port":2}}"#)
            }
        };
        format!(
            r#"{{"timestamp":"2026-11-27T10:00:00.000001+0000","flow_id":1,"event_type":"alert","src_ip":"{src}","src_port":1,"dest_ip":"{dest}","dest_port":2,"proto":"TCP","alert":{{"action":"allowed","gid":1,"signature_id":{},"rev":1,"signature":{},"category":"Misc","severity":{}{target}}},"host":"ids-1"}}"#,
            self.sid,
            serde_json::to_string(&self.signature).unwrap_or_default(),
            self.severity,
        )
    }

    fn subject(&self) -> IpAddr {
        match self.target {
            Some(true) => self.dest,
            _ => self.src,
        }
    }
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<std::net::Ipv4Addr>().prop_map(IpAddr::V4), any::<Ipv6Addr>().prop_map(IpAddr::V6),]
}

fn alert_spec() -> impl Strategy<Value = AlertSpec> {
    (any_ip(), any_ip(), any::<Option<bool>>(), any::<u32>(), any::<String>(), 1u8..6, any::<bool>()).prop_map(
        |(src, dest, target, sid, signature, severity, expanded_v6)| AlertSpec {
            src,
            dest,
            target,
            sid,
            signature,
            severity,
            expanded_v6,
        },
    )
}

/// A line that must not become a detection: noise, a cut alert, another event, a bad address.
fn bad_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        near_valid(),
        (alert_spec(), any::<prop::sample::Index>()).prop_map(|(spec, cut)| {
            let line = spec.line();
            // Any strict prefix of a JSON object is not one.
            line.as_bytes()[..cut.index(line.len())].to_vec()
        }),
        alert_spec().prop_map(|spec| spec.line().replacen("\"alert\"", "\"flow\"", 1).into_bytes()),
        alert_spec().prop_map(|spec| {
            let src = eve_ip(spec.src, spec.expanded_v6);
            spec.line().replacen(&format!("\"src_ip\":\"{src}\""), "\"src_ip\":\"10.0.0.256\"", 1).into_bytes()
        }),
    ]
    .prop_map(|mut line| {
        for b in &mut line {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        line
    })
    // A mutated seed may still be a valid alert: that is not a bad line.
    .prop_filter("still a valid alert", |line| !matches!(eve::parse_line(line, &CTX), Parsed::Detection(_)))
}

proptest! {
    #[test]
    fn good_lines_survive_bad_neighbours(
        lines in prop::collection::vec(
            prop_oneof![
                alert_spec().prop_map(Ok),
                bad_line().prop_map(Err),
            ],
            0..24,
        ),
        crlf in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for line in &lines {
            match line {
                Ok(spec) => stream.extend_from_slice(spec.line().as_bytes()),
                Err(bytes) => stream.extend_from_slice(bytes),
            }
            stream.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        let expected: Vec<&AlertSpec> = lines.iter().filter_map(|l| l.as_ref().ok()).collect();
        let got: Vec<_> = stream
            .split(|&b| b == b'\n')
            .filter_map(|line| match eve::parse_line(line, &CTX) {
                Parsed::Detection(d) => Some(d),
                _ => None,
            })
            .collect();
        prop_assert_eq!(got.len(), expected.len());
        for (d, spec) in got.iter().zip(expected) {
            prop_assert_eq!(d.subject, spec.subject());
            prop_assert_eq!(d.src_ip, Some(spec.src));
            prop_assert_eq!(d.dest_ip, Some(spec.dest));
            prop_assert_eq!(d.signature_id.clone(), Some(spec.sid.to_string()));
            prop_assert_eq!(&d.signature, &spec.signature);
            prop_assert_eq!(d.observed_at_us, Some(CTX.received_at_us + 1));
            prop_assert_eq!(&d.raw, &spec.line());
            let severity = match spec.severity {
                1 => ThreatSeverity::High,
                2 => ThreatSeverity::Medium,
                3 => ThreatSeverity::Low,
                _ => ThreatSeverity::Info,
            };
            prop_assert_eq!(d.severity, severity);
        }
    }

    #[test]
    fn cef_escapes_round_trip(a in any::<String>(), b in any::<String>(), header in any::<String>()) {
        let line = format!(
            "CEF:0|{}|Product|1.0|100|name|5|first={} msg={} last=x",
            cef::escape_header(&header),
            cef::escape_value(&a),
            cef::escape_value(&b),
        );
        let event = cef::parse(&line);
        prop_assert!(event.is_ok(), "{:?} for {}", event, line);
        let event = event.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(&event.device_vendor, &header);
        prop_assert_eq!(event.extension("first"), Some(a.as_str()));
        prop_assert_eq!(event.extension("msg"), Some(b.as_str()));
        prop_assert_eq!(event.extension("last"), Some("x"));
        prop_assert_eq!(event.extensions.len(), 3);
    }

    #[test]
    fn cef_syslog_keeps_escaped_values(value in any::<String>(), octets in any::<[u8; 4]>()) {
        let src = std::net::Ipv4Addr::from(octets);
        let line = format!(
            "<134>Mar  9 11:58:25 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0|20|{}|8|src={src} cat={} deviceDirection=1",
            cef::escape_header(&value),
            cef::escape_value(&value),
        );
        match cef_syslog::parse_message(line.as_bytes(), Profile::DeepDiscovery, &CTX) {
            Parsed::Detection(d) => {
                prop_assert_eq!(d.subject, IpAddr::V4(src));
                prop_assert_eq!(&d.signature, &value);
                let category = Some(value.trim()).filter(|c| !c.is_empty());
                prop_assert_eq!(d.category.as_deref(), category);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

// ---- framing ----

#[derive(Debug, Clone)]
enum Framing {
    Octet { trailing_lf: bool },
    Line(&'static [u8]),
}

const LINE_ENDS: &[&[u8]] = &[b"\n", b"\r\n", b"\0"];

/// A message and how it is framed; a LF-framed message is made framable that way (no LF or
/// NUL inside, not starting with a digit, no CR at either end).
fn framed_message() -> impl Strategy<Value = (Vec<u8>, Framing)> {
    (
        prop::collection::vec(any::<u8>(), 1..160),
        prop_oneof![
            any::<bool>().prop_map(|trailing_lf| Framing::Octet { trailing_lf }),
            prop::sample::select(LINE_ENDS).prop_map(Framing::Line),
        ],
    )
        .prop_map(|(mut message, framing)| {
            if let Framing::Line(_) = framing {
                for b in &mut message {
                    if matches!(*b, b'\n' | b'\0' | b'\r') {
                        *b = b'.';
                    }
                }
                if message.first().is_some_and(u8::is_ascii_digit) {
                    message.insert(0, b'<');
                }
            }
            (message, framing)
        })
}

fn frame(message: &[u8], framing: &Framing, out: &mut Vec<u8>) {
    match framing {
        Framing::Octet { trailing_lf } => {
            out.extend_from_slice(format!("{} ", message.len()).as_bytes());
            out.extend_from_slice(message);
            if *trailing_lf {
                out.push(b'\n');
            }
        }
        Framing::Line(end) => {
            out.extend_from_slice(message);
            out.extend_from_slice(end);
        }
    }
}

proptest! {
    #[test]
    fn frames_survive_any_chunking(
        messages in prop::collection::vec(framed_message(), 0..16),
        chunks in prop::collection::vec(1usize..80, 1..8),
        max_frame in 1usize..200,
    ) {
        let mut stream = Vec::new();
        for (message, framing) in &messages {
            frame(message, framing, &mut stream);
        }
        let mut decoder = FrameDecoder::new(max_frame);
        let mut got = Vec::new();
        let mut rest = stream.as_slice();
        for size in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            rest = tail;
            decoder.push(piece);
            while let Some(frame) = decoder.next_frame() {
                got.push(frame);
            }
        }
        while let Some(frame) = decoder.finish() {
            got.push(frame);
        }
        // A frame over the limit is one error in its place; every other frame comes out whole.
        let expected: Vec<Result<&[u8], ()>> = messages
            .iter()
            .map(|(m, _)| if m.len() > max_frame { Err(()) } else { Ok(m.as_slice()) })
            .collect();
        let got: Vec<Result<&[u8], ()>> = got
            .iter()
            .map(|r| match r {
                Ok(f) => Ok(f.as_slice()),
                Err(FrameError::TooLong { max, .. }) if *max == max_frame => Err(()),
                Err(_) => Err(()),
            })
            .collect();
        prop_assert_eq!(got, expected);
    }
}
