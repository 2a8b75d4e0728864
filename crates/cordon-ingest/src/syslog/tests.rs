use super::*;

/// 2003-10-11T22:14:15.003Z
const RFC_EXAMPLE_US: i64 = 1_065_910_455_003_000;

fn ok(bytes: &[u8]) -> SyslogMessage {
    parse(bytes).unwrap_or_else(|e| panic!("{e} for {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn rfc3164_with_host_and_tag() {
    let m = ok(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8\n");
    assert_eq!(
        m,
        SyslogMessage {
            priority: Some(34),
            timestamp_us: None,
            hostname: Some("mymachine".into()),
            app_name: Some("su".into()),
            message: "'su root' failed for lonvick on /dev/pts/8".into(),
        }
    );
    // With a reference time the year is inferred: the one nearest to it.
    let reference = RFC_EXAMPLE_US + 3_600_000_000;
    let m = parse_with_reference(b"<34>Oct 11 22:14:15 mymachine su: failed", reference).unwrap();
    assert_eq!(m.timestamp_us, Some(RFC_EXAMPLE_US - 3_000));
}

#[test]
fn rfc3164_variants() {
    let m = ok(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!");
    assert_eq!(m.hostname.as_deref(), Some("10.0.0.99"));
    assert_eq!(m.app_name, None);
    assert_eq!(m.message, "Use the BFG!");

    let m = ok(b"<86>Nov 27 10:00:00 fw01 sshd[2412]: Accepted publickey for root from 10.10.0.5");
    assert_eq!((m.priority, m.hostname.as_deref()), (Some(86), Some("fw01")));
    assert_eq!(m.app_name.as_deref(), Some("sshd"));
    assert_eq!(m.message, "Accepted publickey for root from 10.10.0.5");

    // A year in the header (Cisco, Trend Micro) makes the time complete.
    let m = ok(b"<134>Oct 11 2003 22:14:15 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0|20|x|6|src=1.2.3.4");
    assert_eq!(m.timestamp_us, Some(RFC_EXAMPLE_US - 3_000));
    assert_eq!(m.hostname.as_deref(), Some("ddi01"));
    assert_eq!(m.app_name, None, "CEF:0 is not a tag");
    assert!(m.message.starts_with("CEF:0|Trend Micro|"));

    // rsyslog's high-precision template: an RFC 3339 time where the BSD time goes.
    let m = ok(b"<30>2003-10-11T23:14:15.003+01:00 host1 systemd[1]: Started cordon.service.");
    assert_eq!(m.timestamp_us, Some(RFC_EXAMPLE_US));
    assert_eq!((m.hostname.as_deref(), m.app_name.as_deref()), (Some("host1"), Some("systemd")));

    // No host name: the first word is a tag.
    let m = ok(b"<13>Nov 27 10:00:00 sshd[1]: hello");
    assert_eq!((m.hostname, m.app_name.as_deref()), (None, Some("sshd")));
    assert_eq!(m.message, "hello");

    // A BOM before the header, no PRI.
    let m = ok(b"\xEF\xBB\xBFNov 27 10:00:00 fw01 kernel: x");
    assert_eq!((m.priority, m.hostname.as_deref()), (None, Some("fw01")));

    // A PRI and no time: all of it is the message.
    let m = ok(b"<13>just some text");
    assert_eq!((m.priority, m.hostname, m.message.as_str()), (Some(13), None, "just some text"));
}

#[test]
fn bare_messages_have_no_header() {
    for text in ["hello world", "1 2 3", "Nov 27 garbage", "CEF:0|a|b|c|d|e|f|src=1.2.3.4"] {
        let m = ok(text.as_bytes());
        assert_eq!(
            m,
            SyslogMessage { priority: None, timestamp_us: None, hostname: None, app_name: None, message: text.into() }
        );
    }
    assert_eq!(ok(b"caf\xC3\xA9 \xFF").message, "café \u{FFFD}");
}

#[test]
fn rfc5424_rfc_examples() {
    let m = ok(b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8");
    assert_eq!(
        m,
        SyslogMessage {
            priority: Some(34),
            timestamp_us: Some(RFC_EXAMPLE_US),
            hostname: Some("mymachine.example.com".into()),
            app_name: Some("su".into()),
            message: "'su root' failed for lonvick on /dev/pts/8".into(),
        }
    );

    let m = ok(b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.");
    assert_eq!(m.timestamp_us, Some(1_061_727_255_000_003));
    assert_eq!(m.hostname.as_deref(), Some("192.0.2.1"));
    assert_eq!(m.app_name.as_deref(), Some("myproc"));
    assert_eq!(m.message, "%% It's time to make the do-nuts.");

    let m = ok(br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry..."#);
    assert_eq!(m.app_name.as_deref(), Some("evntslog"));
    assert_eq!(m.message, "An application event log entry...");

    // Two elements and no MSG.
    let m = ok(br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#);
    assert_eq!(m.message, "");

    // Escaped `]` and `"` inside a parameter value do not end the element.
    let m = ok(br#"<14>1 2003-10-11T22:14:15.003Z h app - - [x@1 a="q\"]" b="c\]d\\"] CEF:0|v|p|1|2|n|5|src=10.0.0.1"#);
    assert_eq!(m.message, "CEF:0|v|p|1|2|n|5|src=10.0.0.1");
}

#[test]
fn rfc5424_nil_values() {
    let m = ok(b"<14>1 - - - - - -");
    assert_eq!(
        m,
        SyslogMessage {
            priority: Some(14),
            timestamp_us: None,
            hostname: None,
            app_name: None,
            message: String::new()
        }
    );
    let m = ok(b"<14>1 - - - - - - \xEF\xBB\xBFmessage\r\n");
    assert_eq!(m.message, "message");
}

#[test]
fn errors_are_readable() {
    let cases: [(&[u8], SyslogError); 11] = [
        (b"", SyslogError::Empty),
        (b"  \r\n", SyslogError::Empty),
        (b"<192>Nov 27 10:00:00 h x", SyslogError::InvalidPriority("192>".into())),
        (b"<abc>hello", SyslogError::InvalidPriority("abc>".into())),
        (b"<13", SyslogError::InvalidPriority("13".into())),
        (b"<>1 - - - - - -", SyslogError::InvalidPriority(">1 -".into())),
        (b"<13>1 2003-10-11T22:14:15.003Z host", SyslogError::TruncatedHeader("APP-NAME")),
        (b"<13>1 - h a p m", SyslogError::TruncatedHeader("STRUCTURED-DATA")),
        (b"<13>1 yesterday h a - - - msg", SyslogError::InvalidTimestamp("yesterday".into())),
        (b"<13>1 - h a - - [x@1 a=\"]", SyslogError::InvalidStructuredData("unterminated element")),
        (b"<13>1 - h a - - msg", SyslogError::InvalidStructuredData("expected `-` or `[`")),
    ];
    for (bytes, expected) in cases {
        assert_eq!(parse(bytes), Err(expected), "{}", String::from_utf8_lossy(bytes));
    }
    assert_eq!(
        SyslogError::InvalidPriority("999>".into()).to_string(),
        "invalid syslog priority `999>` (expected <0> to <191>)"
    );
}

// ---- framing ----

fn octet(message: &str) -> String {
    format!("{} {}", message.len(), message)
}

/// Decodes `chunks` pushed one by one, then finishes.
fn decode(max: usize, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut decoder = FrameDecoder::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(frame) = decoder.next_frame() {
            out.push(frame);
        }
    }
    while let Some(frame) = decoder.finish() {
        out.push(frame);
    }
    out
}

fn frames(results: Vec<Result<Vec<u8>, FrameError>>) -> Vec<String> {
    results
        .into_iter()
        .map(|r| match r {
            Ok(f) => String::from_utf8(f).unwrap(),
            Err(e) => format!("ERR {e}"),
        })
        .collect()
}

const M1: &str = "<134>Nov 27 10:00:00 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|20|Malware URL requested - Type 1|6|src=10.10.0.11";
const M2: &str = "<14>1 2026-11-27T10:00:00Z h app - - - second message";
const M3: &str = "third, with an embedded\ttab";

#[test]
fn octet_counting() {
    let stream = format!("{}{}{}", octet(M1), octet(M2), octet("with\nnewline"));
    assert_eq!(frames(decode(4096, &[stream.as_bytes()])), [M1, M2, "with\nnewline"]);
}

#[test]
fn non_transparent_lf_crlf_nul() {
    let stream = format!("{M1}\n{M2}\r\n{M3}\0last\n");
    assert_eq!(frames(decode(4096, &[stream.as_bytes()])), [M1, M2, M3, "last"]);
    // Empty lines are not frames.
    assert_eq!(frames(decode(4096, &[b"\n\r\n\0a\n\n\nb\n"])), ["a", "b"]);
}

#[test]
fn mixed_framing() {
    // rsyslog-style: some senders follow an octet-counted frame with a LF.
    let stream = format!("{}\n{M2}\n{}{M3}\r\n", octet(M1), octet(M2));
    assert_eq!(frames(decode(4096, &[stream.as_bytes()])), [M1, M2, M2, M3]);
}

#[test]
fn split_at_every_byte_boundary() {
    let stream = format!("{}{M2}\r\n{}\n{M3}\0{}", octet(M1), octet(M3), "unterminated");
    let stream = stream.as_bytes();
    let expected = [M1, M2, M3, M3, "unterminated"];
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(frames(decode(4096, &[a, b])), expected, "split at {at}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(frames(decode(4096, &bytes)), expected);
}

#[test]
fn oversize_lf_frame_is_skipped_then_decoding_resumes() {
    let long = "x".repeat(100);
    let stream = format!("{M3}\n{long}\n{M2}\n");
    let out = frames(decode(64, &[stream.as_bytes()]));
    assert_eq!(
        out,
        [M3.to_owned(), "ERR syslog frame of at least 100 bytes exceeds the 64-byte limit; skipped".into(), M2.into()]
    );
    // Arriving in small pieces, the long line is dropped as it comes, never buffered whole.
    let pieces: Vec<&[u8]> = stream.as_bytes().chunks(7).collect();
    let out = decode(64, &pieces);
    assert!(matches!(out.as_slice(), [Ok(_), Err(FrameError::TooLong { max: 64, .. }), Ok(m)] if m == M2.as_bytes()));
}

#[test]
fn oversize_octet_frame_is_skipped_by_its_length() {
    let long = "y\n".repeat(60);
    let stream = format!("{}{}{}", octet(M3), octet(&long), octet(M2));
    let expected = vec![
        M3.to_owned(),
        "ERR syslog frame of at least 120 bytes exceeds the 64-byte limit; skipped".to_owned(),
        M2.to_owned(),
    ];
    assert_eq!(frames(decode(64, &[stream.as_bytes()])), expected);
    let pieces: Vec<&[u8]> = stream.as_bytes().chunks(5).collect();
    assert_eq!(frames(decode(64, &pieces)), expected);
}

#[test]
fn invalid_length_resynchronises_at_the_next_lf() {
    let stream = format!("2026-11-27 is a date, not a length\n{M3}\n1234567890123 x\n{M2}\n");
    let out = frames(decode(4096, &[stream.as_bytes()]));
    assert_eq!(
        out,
        [
            "ERR invalid octet-counting length `2026-`; skipped to the next line feed",
            M3,
            "ERR invalid octet-counting length `1234567890`; skipped to the next line feed",
            M2
        ]
    );
}

#[test]
fn finish_reports_what_is_left() {
    assert_eq!(frames(decode(64, &[b"unterminated\r"])), ["unterminated"]);
    assert_eq!(decode(64, &[b"10 abc"]), [Err(FrameError::Truncated { expected: 10, received: 3 })]);
    assert_eq!(decode(64, &[b"12"]), [Err(FrameError::TruncatedLength)]);
    assert!(decode(64, &[b""]).is_empty());
    // An oversize frame cut by the end of the stream was already reported.
    let out = decode(4, &[b"100 abcdef"]);
    assert_eq!(out, [Err(FrameError::TooLong { at_least: 100, max: 4 })]);
    // finish() may be called again: nothing more.
    let mut decoder = FrameDecoder::new(64);
    decoder.push(b"a\nb");
    assert_eq!(decoder.finish(), Some(Ok(b"a".to_vec())));
    assert_eq!(decoder.finish(), Some(Ok(b"b".to_vec())));
    assert_eq!(decoder.finish(), None);
}

#[test]
fn memory_stays_bounded_whatever_the_stream() {
    let mut decoder = FrameDecoder::new(1024);
    let chunk = [b'z'; 512];
    for _ in 0..10_000 {
        decoder.push(&chunk);
        while decoder.next_frame().is_some() {}
        assert!(decoder.buf.len() <= 1024 + 1 + chunk.len(), "buffered {}", decoder.buf.len());
    }
    decoder.push(b"\nok\n");
    assert_eq!(decoder.next_frame(), Some(Ok(b"ok".to_vec())));
    // A huge declared length is skipped, not awaited in memory.
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(b"999999999 ");
    for _ in 0..1000 {
        decoder.push(&chunk);
        while decoder.next_frame().is_some() {}
        assert!(decoder.buf.is_empty());
    }
}

#[test]
fn a_line_arriving_byte_by_byte_is_scanned_once() {
    let mut decoder = FrameDecoder::new(64 * 1024);
    let line = vec![b'a'; 64 * 1024];
    for byte in line.chunks(1) {
        decoder.push(byte);
        assert_eq!(decoder.next_frame(), None);
        assert_eq!(decoder.scanned, decoder.pending().len());
    }
    decoder.push(b"\n");
    assert_eq!(decoder.next_frame(), Some(Ok(line)));
    assert_eq!(decoder.scanned, 0);
}
