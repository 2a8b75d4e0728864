use super::*;

use std::net::IpAddr;

/// 2026-03-09T11:58:24Z
const T_RT: i64 = 1_773_057_504_000_000;
const CTX: Context<'static> = Context { source: "ddi", received_at_us: T_RT + 2_000_000 };

/// A Deep Discovery Inspector detection log as DDI 6 sends it: outbound, `interestedIp` and
/// `peerIp` set, severity 6.
const DDI_OUTBOUND: &str = "<134>Mar  9 11:58:25 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|20|Malware URL requested - Type 1|6|dvc=10.201.156.143 dvchost=ddi01 dvcmac=00:0C:29:A6:53:0C deviceExternalId=6B593E17AFB7-40FBBB28-A4CE-0462-A536 rt=Mar 09 2026 11:58:24 GMT+00:00 app=HTTP deviceDirection=1 dhost=www.example.com dst=203.0.113.5 dpt=80 dmac=00:1b:21:35:8b:98 shost=10.10.0.11 src=10.10.0.11 spt=12121 smac=fe:ed:be:ef:5a:c6 cs3Label=HostName_Ext cs3=www.example.com cs2Label=Rule_ID cs2=20 cs1Label=Interesting_Host cs1=10.10.0.11 cn1Label=Threat_Type cn1=1 cn2Label=Protocol_Group cn2=HTTP cn3Label=Request_Type cn3=0 request=http://www.example.com/9227/zuma/build/zuma.jar?id=1&t=2 requestClientApplication=Java/1.7.0_51 reason=Malware URL requested - Type 1 act=not blocked cs4Label=Threat_Name cs4=Mal_Url cs5Label=Threat_Subtype cs5=Mal_Url cat=Malware interestedIp=10.10.0.11 peerIp=203.0.113.5 ptype=IDS cnt=1 aggregatedCnt=1";

/// Inbound exploit, no `interestedIp`/`peerIp`: the internal side is the destination.
const DDI_INBOUND: &str = "<132>Mar  9 11:58:25 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|1828|SMB2 Remote Code Execution Exploit - CVE-2017-0144|8|dvc=10.201.156.143 dvchost=ddi01 deviceExternalId=6B593E17AFB7-40FBBB28-A4CE-0462-A536 rt=1773057504000 app=SMB2 deviceDirection=0 dst=10.10.0.20 dpt=445 src=198.51.100.23 spt=40112 cs2Label=Rule_ID cs2=1828 cn1Label=Threat_Type cn1=0 reason=SMB2 Remote Code Execution Exploit - CVE-2017-0144 act=not blocked cs4Label=Threat_Name cs4=CVE-2017-0144_SMB2_RCE_EXPLOIT cat=Exploit ptype=IDS cnt=1";

fn detection(text: &str, profile: Profile) -> Detection {
    match parse_message(text.as_bytes(), profile, &CTX) {
        Parsed::Detection(d) => *d,
        other => panic!("expected a detection, got {other:?} for {text}"),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn ddi_outbound_with_interested_ip() {
    let d = detection(DDI_OUTBOUND, Profile::DeepDiscovery);
    assert_eq!(
        d,
        Detection {
            received_at_us: CTX.received_at_us,
            observed_at_us: Some(T_RT),
            source: "ddi".into(),
            sensor: Some("Deep Discovery Inspector".into()),
            subject: ip("10.10.0.11"),
            peer: Some(ip("203.0.113.5")),
            src_ip: Some(ip("10.10.0.11")),
            dest_ip: Some(ip("203.0.113.5")),
            target_ip: Some(ip("10.10.0.11")),
            signature_id: Some("20".into()),
            signature: "Malware URL requested - Type 1".into(),
            category: Some("Malware".into()),
            severity: ThreatSeverity::Medium,
            raw: DDI_OUTBOUND.into(),
        }
    );
}

#[test]
fn ddi_inbound_subject_is_the_destination() {
    let d = detection(DDI_INBOUND, Profile::DeepDiscovery);
    assert_eq!(d.subject, ip("10.10.0.20"));
    assert_eq!(d.peer, Some(ip("198.51.100.23")));
    assert_eq!(d.target_ip, None);
    assert_eq!(d.severity, ThreatSeverity::High);
    assert_eq!(d.observed_at_us, Some(T_RT), "rt in epoch milliseconds");
    assert_eq!(d.category.as_deref(), Some("Exploit"));
    assert_eq!(d.signature_id.as_deref(), Some("1828"));
}

#[test]
fn ddi_direction_rules() {
    let strip = |text: &str| text.replace(" interestedIp=10.10.0.11 peerIp=203.0.113.5", "");
    // Outbound without interestedIp: the source is internal.
    let d = detection(&strip(DDI_OUTBOUND), Profile::DeepDiscovery);
    assert_eq!((d.subject, d.peer), (ip("10.10.0.11"), Some(ip("203.0.113.5"))));
    // No direction at all: the source.
    let d = detection(&strip(DDI_OUTBOUND).replace(" deviceDirection=1", ""), Profile::DeepDiscovery);
    assert_eq!((d.subject, d.peer), (ip("10.10.0.11"), Some(ip("203.0.113.5"))));
    // Inbound but no destination: whatever address there is.
    let d = detection(&DDI_INBOUND.replace(" dst=10.10.0.20", ""), Profile::DeepDiscovery);
    assert_eq!((d.subject, d.peer), (ip("198.51.100.23"), None));
    // interestedIp overrides the direction, even inbound; peerIp names the peer.
    let line = DDI_INBOUND.replace(" ptype=IDS", " interestedIp=10.10.0.20 peerIp=198.51.100.23 ptype=IDS");
    let d = detection(&line, Profile::DeepDiscovery);
    assert_eq!((d.subject, d.peer), (ip("10.10.0.20"), Some(ip("198.51.100.23"))));
    // An interestedIp on neither side (a host behind a proxy): the external side is the peer.
    let line = DDI_INBOUND.replace(" ptype=IDS", " interestedIp=10.10.0.99 ptype=IDS");
    let d = detection(&line, Profile::DeepDiscovery);
    assert_eq!((d.subject, d.peer), (ip("10.10.0.99"), Some(ip("198.51.100.23"))));
    assert_eq!(d.target_ip, Some(ip("10.10.0.99")));
    // An unusable interestedIp falls back to the direction rule.
    let line = DDI_INBOUND.replace(" ptype=IDS", " interestedIp=N/A ptype=IDS");
    assert_eq!(detection(&line, Profile::DeepDiscovery).subject, ip("10.10.0.20"));
}

#[test]
fn ddi_severities() {
    for (sev, expected) in [
        ("2", ThreatSeverity::Info),
        ("4", ThreatSeverity::Low),
        ("6", ThreatSeverity::Medium),
        ("8", ThreatSeverity::High),
        ("10", ThreatSeverity::Critical),
        ("3", ThreatSeverity::Low),
        ("High", ThreatSeverity::High),
    ] {
        let line = DDI_OUTBOUND
            .replace("|Malware URL requested - Type 1|6|", &format!("|Malware URL requested - Type 1|{sev}|"));
        assert_eq!(detection(&line, Profile::DeepDiscovery).severity, expected, "DDI severity {sev}");
    }
}

#[test]
fn generic_severities() {
    for (sev, expected) in [
        ("0", ThreatSeverity::Low),
        ("3", ThreatSeverity::Low),
        ("4", ThreatSeverity::Medium),
        ("6", ThreatSeverity::Medium),
        ("7", ThreatSeverity::High),
        ("8", ThreatSeverity::High),
        ("9", ThreatSeverity::Critical),
        ("10", ThreatSeverity::Critical),
        ("11", ThreatSeverity::Info),
        ("Low", ThreatSeverity::Low),
        ("medium", ThreatSeverity::Medium),
        ("HIGH", ThreatSeverity::High),
        ("Very-High", ThreatSeverity::Critical),
        ("Unknown", ThreatSeverity::Info),
        ("", ThreatSeverity::Info),
    ] {
        let line = format!("CEF:0|Acme|IDS|1.0|42|Bad thing|{sev}|src=10.0.0.1");
        assert_eq!(detection(&line, Profile::Generic).severity, expected, "severity {sev:?}");
    }
}

#[test]
fn generic_profile_subject_and_fields() {
    let line = "<14>1 2026-03-09T11:58:24.5Z fw01 acme-ids - - - CEF:0|Acme|IDS|1.0|42|Port scan|5|src=198.51.100.23 dst=10.10.0.20";
    let d = detection(line, Profile::Generic);
    assert_eq!((d.subject, d.peer), (ip("198.51.100.23"), Some(ip("10.10.0.20"))));
    assert_eq!(d.observed_at_us, Some(T_RT + 500_000), "no rt: the syslog header's time");
    assert_eq!(d.sensor.as_deref(), Some("IDS"));
    assert_eq!(d.category, None);
    assert_eq!(d.target_ip, None);
    // Only a destination.
    let d = detection("CEF:0|Acme|IDS|1.0|42|x|5|dst=10.10.0.20 cat=Recon", Profile::Generic);
    assert_eq!((d.subject, d.peer, d.src_ip), (ip("10.10.0.20"), None, None));
    assert_eq!(d.category.as_deref(), Some("Recon"));
    // IPv6.
    let d = detection("CEF:0|Acme|IDS|1.0|42|x|5|src=2001:0db8:0000:0000:0000:0000:0000:0011", Profile::Generic);
    assert_eq!(d.subject.to_string(), "2001:db8::11");
    // No product: the syslog host names the sensor; a BSD time takes the nearest year.
    let d = detection("<13>Mar  9 11:58:24 fw02 CEF:0|Acme||1.0|42|x|5|src=10.0.0.1", Profile::Generic);
    assert_eq!(d.sensor.as_deref(), Some("fw02"));
    assert_eq!(d.observed_at_us, Some(T_RT));
    // A header Cordon cannot read does not lose the CEF.
    let d = detection("<999>garbage CEF:0|Acme|IDS|1.0|42|x|5|src=10.0.0.1", Profile::Generic);
    assert_eq!((d.subject, d.observed_at_us), (ip("10.0.0.1"), None));
}

#[test]
fn not_cef_empty_and_malformed() {
    for profile in [Profile::Generic, Profile::DeepDiscovery] {
        let parse = |text: &str| parse_message(text.as_bytes(), profile, &CTX);
        assert_eq!(parse("<13>Mar  9 11:58:24 fw01 sshd[1]: hello"), Parsed::Skipped { kind: "not-cef".into() });
        assert_eq!(parse("MYCEF:0|a|b|c|d|e|f|src=1.2.3.4"), Parsed::Skipped { kind: "not-cef".into() });
        assert_eq!(parse(""), Parsed::Skipped { kind: "empty".into() });
        assert_eq!(parse("\r\n"), Parsed::Skipped { kind: "empty".into() });
        assert_eq!(
            parse("<134>Mar  9 11:58:24 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0|20"),
            Parsed::Malformed {
                reason: "truncated CEF header: 4 of the 7 `|`-separated fields before the extensions".into()
            }
        );
        assert_eq!(
            parse("CEF:0|Acme|IDS|1.0|42|x|5|src=unknown dst= shost=pc1"),
            Parsed::Malformed { reason: "CEF names no usable address (src, dst, interestedIp)".into() }
        );
    }
}

#[test]
fn raw_is_the_message_and_invalid_utf8_is_tolerated() {
    let mut bytes = b"<134>Mar  9 11:58:24 ddi01 CEF:0|Acme|IDS|1.0|42|caf\xE9|5|src=10.0.0.1\r\n".to_vec();
    let d = match parse_message(&bytes, Profile::Generic, &CTX) {
        Parsed::Detection(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(d.signature, "caf\u{FFFD}");
    assert_eq!(d.raw, "<134>Mar  9 11:58:24 ddi01 CEF:0|Acme|IDS|1.0|42|caf\u{FFFD}|5|src=10.0.0.1");
    bytes.truncate(10);
    assert!(matches!(parse_message(&bytes, Profile::Generic, &CTX), Parsed::Skipped { .. }));
}
