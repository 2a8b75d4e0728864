use super::*;

fn ok(text: &str) -> CefEvent {
    parse(text).unwrap_or_else(|e| panic!("{e} for {text}"))
}

fn ext(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn header_and_extensions() {
    let e = ok("CEF:0|security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232");
    assert_eq!(
        e,
        CefEvent {
            version: 0,
            device_vendor: "security".into(),
            device_product: "threatmanager".into(),
            device_version: "1.0".into(),
            signature_id: "100".into(),
            name: "worm successfully stopped".into(),
            severity: "10".into(),
            extensions: ext(&[("src", "10.0.0.1"), ("dst", "2.1.2.2"), ("spt", "1232")]),
        }
    );
    assert_eq!(e.extension("dst"), Some("2.1.2.2"));
    assert_eq!(e.extension("DST"), None);
    assert_eq!(e.extension("dpt"), None);
}

#[test]
fn header_escapes() {
    let e = ok(
        r"CEF:0|security|threatmanager|1.0|100|detected a \| in message|10|src=10.0.0.1 act=blocked a | dst=1.1.1.1",
    );
    assert_eq!(e.name, "detected a | in message");
    assert_eq!(e.extension("act"), Some("blocked a |"));
    let e = ok(
        r"CEF:0|Sec\\Vendor|thr\|eat|1.0|100|detected a \\ in packet|Very-High|src=10.0.0.1 act=blocked a \\ dst=1.1.1.1",
    );
    assert_eq!((e.device_vendor.as_str(), e.device_product.as_str()), (r"Sec\Vendor", "thr|eat"));
    assert_eq!(e.name, r"detected a \ in packet");
    assert_eq!(e.severity, "Very-High");
    assert_eq!(e.extension("act"), Some(r"blocked a \"));
    // A backslash before anything else stays.
    let e = ok(r"CEF:0|a\b|p|1|2|n\|3|5|x=1");
    assert_eq!((e.device_vendor.as_str(), e.name.as_str()), (r"a\b", "n|3"));
}

#[test]
fn extension_escapes_spaces_and_equals() {
    let e = ok(
        r"CEF:0|security|threatmanager|1.0|100|detected a = in message|10|src=10.0.0.1 act=blocked a \= dst=1.1.1.1",
    );
    assert_eq!(e.name, "detected a = in message");
    assert_eq!(e.extension("act"), Some("blocked a ="));
    assert_eq!(e.extension("dst"), Some("1.1.1.1"));

    let e = ok(
        r"CEF:0|v|p|1|2|n|5|msg=Detected a threat.\n No action needed.\r\nEnd filePath=C:\Windows\Temp\a b.exe request=http://203.0.113.5/gate.php?id=42&x=y cs1Label=Interesting Host cs1=www.example.com",
    );
    assert_eq!(
        e.extensions,
        ext(&[
            ("msg", "Detected a threat.\n No action needed.\r\nEnd"),
            ("filePath", r"C:\Windows\Temp\a b.exe"),
            ("request", "http://203.0.113.5/gate.php?id=42&x=y"),
            ("cs1Label", "Interesting Host"),
            ("cs1", "www.example.com"),
        ])
    );
    // An escaped backslash before a space does not escape the space.
    let e = ok(r"CEF:0|v|p|1|2|n|5|a=x\\ b=y");
    assert_eq!(e.extensions, ext(&[("a", r"x\"), ("b", "y")]));
    // An escaped `=` never starts a key, even after a space.
    let e = ok(r"CEF:0|v|p|1|2|n|5|a=x b\=y c=z");
    assert_eq!(e.extensions, ext(&[("a", "x b=y"), ("c", "z")]));
}

#[test]
fn unusual_extensions() {
    assert_eq!(ok("CEF:0|v|p|1|2|n|5|").extensions, []);
    assert_eq!(ok("CEF:0|v|p|1|2|n|5|   ").extensions, []);
    // Text before the first key is dropped; empty values are kept; keys may repeat.
    let e = ok("CEF:0|v|p|1|2|n|5|junk here k= k2=v k2=w dvc.custom-key_1=x\r\n");
    assert_eq!(e.extensions, ext(&[("k", ""), ("k2", "v"), ("k2", "w"), ("dvc.custom-key_1", "x")]));
    assert_eq!(e.extension("k2"), Some("v"));
    // Unicode values, a pipe in the extension.
    let e = ok("CEF:1|v|p|1|2|n|5|suser=zoë duser=a|b");
    assert_eq!(e.version, 1);
    assert_eq!(e.extensions, ext(&[("suser", "zoë"), ("duser", "a|b")]));
    // Leading whitespace before CEF: is allowed.
    assert_eq!(ok("  CEF:0|v|p|1|2|n|5|a=b").device_vendor, "v");
}

#[test]
fn errors() {
    assert_eq!(parse(""), Err(CefError::NotCef));
    assert_eq!(parse("LEEF:1.0|v|p|1|2|"), Err(CefError::NotCef));
    assert_eq!(parse("CEF:x|v|p|1|2|n|5|a=b"), Err(CefError::InvalidVersion("x".into())));
    assert_eq!(parse("CEF:0|v|p|1|2|n"), Err(CefError::TruncatedHeader { found: 5 }));
    assert_eq!(parse(r"CEF:0|v|p|1|2|n|5\|a=b"), Err(CefError::TruncatedHeader { found: 6 }));
    assert_eq!(
        CefError::TruncatedHeader { found: 2 }.to_string(),
        "truncated CEF header: 2 of the 7 `|`-separated fields before the extensions"
    );
}

#[test]
fn escape_helpers_round_trip() {
    let value = "a=b \\ c\nd\re | f";
    let line = format!("CEF:0|{}|p|1|2|n|5|k={} k2=end", escape_header(value), escape_value(value));
    let e = ok(&line);
    assert_eq!(e.device_vendor, value);
    assert_eq!(e.extension("k"), Some(value));
}
