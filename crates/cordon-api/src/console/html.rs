//! Building HTML safely: every value that reaches a page goes through [`escape`].

use std::fmt::Write;

use super::Session;

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value or path segment.
pub fn encode_query(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space); bad escapes
/// stay as they are and invalid UTF-8 is replaced, never a panic.
pub fn decode_form(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The CSS class of a state: its colour (the text label is always shown too).
pub fn state_class(state: &str) -> &'static str {
    match state {
        "operational" | "succeeded" | "done" | "already_in_place" => "s-ok",
        "quarantined" | "awaiting_approval" | "retrying" | "partial" => "s-warn",
        "quarantine_failed" | "unquarantine_failed" | "failed" | "critical" | "high" => "s-bad",
        "quarantining" | "unquarantining" | "pending" | "running" | "medium" => "s-info",
        _ => "s-idle",
    }
}

/// A state as a coloured badge with its text.
pub fn badge(state: &str) -> String {
    format!(
        r#"<span class="state {}" data-state="{}">{}</span>"#,
        state_class(state),
        escape(state),
        escape(&state.replace('_', " "))
    )
}

/// The hidden CSRF field of a session's forms.
pub fn csrf_field(session: &Session) -> String {
    format!(r#"<input type="hidden" name="{}" value="{}">"#, super::CSRF_FIELD, escape(&session.csrf))
}

/// A whole page: header with navigation and the signed-in user, then `body` inside `<main>`.
pub fn layout(title: &str, current: &str, session: Option<&Session>, body: &str) -> String {
    let mut nav = String::new();
    if session.is_some() {
        for (path, label) in [
            ("/", "Overview"),
            ("/servers", "Servers"),
            ("/actions", "Actions"),
            ("/detections", "Detections"),
            ("/messages", "Messages"),
        ] {
            let here = if path == current { r#" aria-current="page""# } else { "" };
            let _ = write!(nav, r#"<a href="{path}"{here}>{label}</a>"#);
        }
    }
    let who = match session {
        Some(s) => format!(
            r#"<div class="who"><span>{} <span class="muted">({})</span></span><form method="post" action="/logout">{}<button type="submit">Sign out</button></form></div>"#,
            escape(&s.user),
            escape(s.role.as_str()),
            csrf_field(s)
        ),
        None => String::new(),
    };
    let live = if session.is_some() { "1" } else { "0" };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Cordon</title><link rel="stylesheet" href="/assets/console.css"><script src="/assets/console.js" defer></script></head>
<body data-live="{live}"><header class="top"><a class="brand" href="/">CORDON</a><nav>{nav}</nav>{who}</header>
<main data-page="{page}">{body}</main></body></html>"#,
        title = escape(title),
        page = escape(current),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_components_decode_without_panicking_on_any_bytes() {
        assert_eq!(decode_form(b"a+b%20c%2Fd"), "a b c/d");
        for bad in [&b"%"[..], b"%4", b"%zz", b"x%", b"%%%", b"%ff%fe", b"\xff\x00+"] {
            let _ = decode_form(bad);
        }
        assert_eq!(decode_form(b"%zz"), "%zz");
        assert_eq!(decode_form(b"%4"), "%4");
        assert_eq!(decode_form(b"%ff"), "\u{fffd}");
        // Every byte string of length up to 3 over an alphabet that hits every branch.
        let alphabet = [b'%', b'+', b'a', b'F', b'0', 0xff];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    let _ = decode_form(&[a, b, c]);
                }
            }
        }
    }

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(encode_query("/servers/a b?"), "%2Fservers%2Fa%20b%3F");
    }
}
