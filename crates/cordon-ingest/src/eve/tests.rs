use super::*;

const CTX: Context<'static> = Context { source: "ids-1", received_at_us: 1_795_773_601_000_000 };
/// 2026-11-27T10:00:00Z
const T0: i64 = 1_795_773_600_000_000;

/// As Suricata 7 writes it (one line), outbound HTTP from an internal host.
const ALERT: &str = r#"{"timestamp":"2026-11-27T10:00:00.123456+0000","flow_id":1416294215837155,"in_iface":"eth1","event_type":"alert","src_ip":"10.10.0.11","src_port":49812,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","pkt_src":"wire/pcap","community_id":"1:Kl1Xf0xwqq3vIQ0U2Fpu5+0Ewh4=","alert":{"action":"allowed","gid":1,"signature_id":2024897,"rev":3,"signature":"ET USER_AGENTS Go HTTP Client User-Agent","category":"A Network Trojan was detected","severity":1,"metadata":{"created_at":["2017_11_01"],"updated_at":["2019_07_26"],"signature_severity":["Major"]}},"http":{"hostname":"203.0.113.5","url":"/gate.php?id=42","http_user_agent":"Go-http-client/1.1","http_content_type":"text/html","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":12},"app_proto":"http","direction":"to_server","flow":{"pkts_toserver":4,"pkts_toclient":3,"bytes_toserver":423,"bytes_toclient":340,"start":"2026-11-27T10:00:00.100012+0000","src_ip":"10.10.0.11","dest_ip":"203.0.113.5","src_port":49812,"dest_port":80},"host":"ids-1"}"#;

/// An inbound exploit attempt; the rule says `target:dest_ip`, so Suricata adds source/target.
const ALERT_TARGET_DEST: &str = r#"{"timestamp":"2026-11-27T10:00:00.000000+00:00","flow_id":903412998361,"in_iface":"eth1","event_type":"alert","src_ip":"198.51.100.23","src_port":51514,"dest_ip":"10.10.0.20","dest_port":443,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":2034647,"rev":2,"signature":"ET EXPLOIT Apache log4j RCE Attempt (http ldap) (CVE-2021-44228)","category":"Attempted Administrator Privilege Gain","severity":1,"source":{"ip":"198.51.100.23","port":51514},"target":{"ip":"10.10.0.20","port":443}},"app_proto":"tls","host":"ids-1"}"#;

/// Outbound beacon; the rule says `target:src_ip`: the internal source is the target.
const ALERT_TARGET_SRC: &str = r#"{"timestamp":"2026-11-27T10:00:00.000000+0000","event_type":"alert","src_ip":"10.10.0.11","src_port":50011,"dest_ip":"203.0.113.9","dest_port":8443,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":2027758,"rev":1,"signature":"ET MALWARE Cobalt Strike Beacon Observed","category":"A Network Trojan was detected","severity":2,"source":{"ip":"203.0.113.9","port":8443},"target":{"ip":"10.10.0.11","port":50011}}}"#;

/// IPv6, as Suricata writes it: fully expanded.
const ALERT_V6: &str = r#"{"timestamp":"2026-11-27T10:00:00.000000+0000","event_type":"alert","src_ip":"2001:0db8:0000:0000:0000:0000:0000:0011","src_port":0,"dest_ip":"fe80:0000:0000:0000:0204:61ff:fe9d:f156","dest_port":0,"proto":"IPv6-ICMP","icmp_type":135,"icmp_code":0,"alert":{"action":"allowed","gid":1,"signature_id":2200000,"rev":2,"signature":"SURICATA ICMPv6 unknown type","category":"Generic Protocol Command Decode","severity":3}}"#;

fn detection(line: &str) -> Detection {
    match parse_line(line.as_bytes(), &CTX) {
        Parsed::Detection(d) => *d,
        other => panic!("expected a detection, got {other:?}"),
    }
}

fn malformed_reason(line: &[u8]) -> String {
    match parse_line(line, &CTX) {
        Parsed::Malformed { reason } => reason,
        other => panic!("expected Malformed, got {other:?} for {}", String::from_utf8_lossy(line)),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn alert_without_target_is_about_its_source() {
    let d = detection(ALERT);
    assert_eq!(
        d,
        Detection {
            received_at_us: CTX.received_at_us,
            observed_at_us: Some(T0 + 123_456),
            source: "ids-1".into(),
            sensor: Some("ids-1".into()),
            subject: ip("10.10.0.11"),
            peer: Some(ip("203.0.113.5")),
            src_ip: Some(ip("10.10.0.11")),
            dest_ip: Some(ip("203.0.113.5")),
            target_ip: None,
            signature_id: Some("2024897".into()),
            signature: "ET USER_AGENTS Go HTTP Client User-Agent".into(),
            category: Some("A Network Trojan was detected".into()),
            severity: ThreatSeverity::High,
            raw: ALERT.into(),
        }
    );
}

#[test]
fn target_dest_makes_the_destination_the_subject() {
    let d = detection(ALERT_TARGET_DEST);
    assert_eq!(d.subject, ip("10.10.0.20"));
    assert_eq!(d.peer, Some(ip("198.51.100.23")));
    assert_eq!(d.target_ip, Some(ip("10.10.0.20")));
    assert_eq!(d.src_ip, Some(ip("198.51.100.23")));
    assert_eq!(d.dest_ip, Some(ip("10.10.0.20")));
    assert_eq!(d.observed_at_us, Some(T0));
    assert_eq!(d.sensor.as_deref(), Some("ids-1"));
}

#[test]
fn target_src_makes_the_source_the_subject() {
    let d = detection(ALERT_TARGET_SRC);
    assert_eq!(d.subject, ip("10.10.0.11"));
    assert_eq!(d.peer, Some(ip("203.0.113.9")));
    assert_eq!(d.target_ip, Some(ip("10.10.0.11")));
    assert_eq!(d.severity, ThreatSeverity::Medium);
    assert_eq!(d.sensor, None);
}

#[test]
fn target_without_source_takes_the_other_side_as_peer() {
    let line = ALERT_TARGET_DEST.replace(r#""source":{"ip":"198.51.100.23","port":51514},"#, "");
    let d = detection(&line);
    assert_eq!(d.subject, ip("10.10.0.20"));
    assert_eq!(d.peer, Some(ip("198.51.100.23")));
}

#[test]
fn expanded_ipv6_is_read_and_canonical() {
    let d = detection(ALERT_V6);
    assert_eq!(d.subject.to_string(), "2001:db8::11");
    assert_eq!(d.peer.map(|p| p.to_string()).as_deref(), Some("fe80::204:61ff:fe9d:f156"));
    assert_eq!(d.severity, ThreatSeverity::Low);
}

#[test]
fn severity_scale() {
    for (value, expected) in [
        ("1", ThreatSeverity::High),
        ("2", ThreatSeverity::Medium),
        ("3", ThreatSeverity::Low),
        ("4", ThreatSeverity::Info),
        ("255", ThreatSeverity::Info),
    ] {
        let line = ALERT.replace(r#""severity":1"#, &format!(r#""severity":{value}"#));
        assert_eq!(detection(&line).severity, expected, "severity {value}");
    }
    let line = ALERT.replace(r#","severity":1"#, "");
    assert_eq!(detection(&line).severity, ThreatSeverity::Info);
}

#[test]
fn line_ends_and_escapes() {
    let with_crlf = format!("{ALERT}\r\n");
    let d = detection(&with_crlf);
    assert_eq!(d.raw, ALERT, "raw is trimmed of CR/LF");
    let escaped = ALERT.replace("Go HTTP Client", r#"Go \"HTTP\" Client \u00e9"#);
    assert_eq!(detection(&escaped).signature, "ET USER_AGENTS Go \"HTTP\" Client é User-Agent");
    // A time Suricata did not write is no time, not a reason to drop the alert.
    let no_time = ALERT.replace("2026-11-27T10:00:00.123456+0000", "yesterday");
    assert_eq!(detection(&no_time).observed_at_us, None);
}

#[test]
fn every_other_event_type_is_skipped_by_kind() {
    let lines = [
        (
            "flow",
            r#"{"timestamp":"2026-11-27T10:00:01.000000+0000","flow_id":1416294215837155,"in_iface":"eth1","event_type":"flow","src_ip":"10.10.0.11","src_port":49812,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","app_proto":"http","flow":{"pkts_toserver":6,"pkts_toclient":5,"bytes_toserver":555,"bytes_toclient":1200,"start":"2026-11-27T10:00:00.100012+0000","end":"2026-11-27T10:00:00.400000+0000","age":0,"state":"closed","reason":"timeout","alerted":true},"tcp":{"tcp_flags":"1b","tcp_flags_ts":"1b","tcp_flags_tc":"1b","syn":true,"fin":true,"psh":true,"ack":true,"state":"closed"},"host":"ids-1"}"#,
        ),
        (
            "dns",
            r#"{"timestamp":"2026-11-27T10:00:02.000000+0000","flow_id":77,"event_type":"dns","src_ip":"10.10.0.11","src_port":53311,"dest_ip":"10.10.0.2","dest_port":53,"proto":"UDP","dns":{"version":2,"type":"answer","id":4242,"flags":"8180","qr":true,"rd":true,"ra":true,"rrname":"example.com","rrtype":"A","rcode":"NOERROR","answers":[{"rrname":"example.com","rrtype":"A","ttl":300,"rdata":"93.184.215.14"}],"grouped":{"A":["93.184.215.14"]}}}"#,
        ),
        (
            "tls",
            r#"{"timestamp":"2026-11-27T10:00:03.000000+0000","event_type":"tls","src_ip":"10.10.0.11","src_port":50000,"dest_ip":"203.0.113.7","dest_port":443,"proto":"TCP","tls":{"subject":"CN=example.com","issuerdn":"C=US, O=Let's Encrypt, CN=R3","serial":"04:1F","fingerprint":"aa:bb","sni":"example.com","version":"TLS 1.3","notbefore":"2026-01-01T00:00:00","notafter":"2026-04-01T00:00:00","ja3":{"hash":"e7d705a3286e19ea42f587b344ee6865","string":"771,4865-4866"}}}"#,
        ),
        (
            "http",
            r#"{"timestamp":"2026-11-27T10:00:04.000000+0000","event_type":"http","src_ip":"10.10.0.11","src_port":50001,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","tx_id":0,"http":{"hostname":"203.0.113.5","url":"/index.html","http_user_agent":"curl/8.5.0","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":615}}"#,
        ),
        (
            "fileinfo",
            r#"{"timestamp":"2026-11-27T10:00:05.000000+0000","event_type":"fileinfo","src_ip":"203.0.113.5","src_port":80,"dest_ip":"10.10.0.11","dest_port":50001,"proto":"TCP","http":{"hostname":"203.0.113.5","url":"/a.exe"},"app_proto":"http","fileinfo":{"filename":"/a.exe","sid":[],"gaps":false,"state":"CLOSED","md5":"d41d8cd98f00b204e9800998ecf8427e","stored":false,"size":0,"tx_id":0}}"#,
        ),
        (
            "stats",
            r#"{"timestamp":"2026-11-27T10:00:08.000000+0000","event_type":"stats","stats":{"uptime":3608,"capture":{"kernel_packets":912831,"kernel_drops":0,"errors":0},"decoder":{"pkts":912831,"bytes":653254617,"invalid":0,"ipv4":911020,"ipv6":1811,"ethernet":912831,"tcp":880321,"udp":31204},"flow":{"memcap":0,"tcp":1032,"udp":512},"detect":{"engines":[{"id":0,"last_reload":"2026-11-27T09:00:00.000000+0000","rules_loaded":43214,"rules_failed":0}],"alert":12}}}"#,
        ),
        (
            "anomaly",
            r#"{"timestamp":"2026-11-27T10:00:09.000000+0000","event_type":"anomaly","src_ip":"10.10.0.11","src_port":0,"dest_ip":"203.0.113.5","dest_port":0,"proto":"UDP","anomaly":{"type":"decode","event":"ipv4.opt_pad_required"}}"#,
        ),
        (
            "netflow",
            r#"{"timestamp":"2026-11-27T10:00:10.000000+0000","event_type":"netflow","src_ip":"10.10.0.11","src_port":1,"dest_ip":"10.10.0.2","dest_port":53,"proto":"UDP","netflow":{"pkts":1,"bytes":70,"start":"2026-11-27T10:00:09.000000+0000","end":"2026-11-27T10:00:09.000000+0000","age":0}}"#,
        ),
        (
            "ssh",
            r#"{"timestamp":"2026-11-27T10:00:11.000000+0000","event_type":"ssh","src_ip":"198.51.100.23","src_port":40022,"dest_ip":"10.10.0.20","dest_port":22,"proto":"TCP","ssh":{"client":{"proto_version":"2.0","software_version":"OpenSSH_9.6"},"server":{"proto_version":"2.0","software_version":"OpenSSH_9.2p1"}}}"#,
        ),
        (
            "smb",
            r#"{"timestamp":"2026-11-27T10:00:12.000000+0000","event_type":"smb","src_ip":"10.10.0.11","src_port":50111,"dest_ip":"10.10.0.20","dest_port":445,"proto":"TCP","smb":{"id":1,"dialect":"3.11","command":"SMB2_COMMAND_NEGOTIATE_PROTOCOL","status":"STATUS_SUCCESS","status_code":"0x0","session_id":0,"tree_id":0}}"#,
        ),
        (
            "dhcp",
            r#"{"timestamp":"2026-11-27T10:00:13.000000+0000","event_type":"dhcp","src_ip":"10.10.0.1","src_port":67,"dest_ip":"10.10.0.11","dest_port":68,"proto":"UDP","dhcp":{"type":"reply","id":1234,"client_mac":"52:54:00:12:34:56","assigned_ip":"10.10.0.11","dhcp_type":"ack","lease_time":86400}}"#,
        ),
        (
            "drop",
            r#"{"timestamp":"2026-11-27T10:00:14.000000+0000","event_type":"drop","src_ip":"198.51.100.23","src_port":4444,"dest_ip":"10.10.0.20","dest_port":445,"proto":"TCP","drop":{"len":60,"tos":0,"ttl":51,"ipid":1,"tcpseq":1,"tcpack":0,"tcpwin":1024,"syn":true,"ack":false,"psh":false,"rst":false,"urg":false,"fin":false,"tcpres":0,"tcpurgp":0}}"#,
        ),
    ];
    for (kind, line) in lines {
        assert_eq!(parse_line(line.as_bytes(), &CTX), Parsed::Skipped { kind: kind.to_owned() }, "{kind}");
    }
}

#[test]
fn empty_lines_are_skipped() {
    for line in [&b""[..], b"\n", b"\r\n", b"   \t  ", b"\xEF\xBB\xBF\n"] {
        assert_eq!(parse_line(line, &CTX), Parsed::Skipped { kind: "empty".to_owned() });
    }
}

#[test]
fn odd_event_types_make_a_bounded_label() {
    let line = format!(r#"{{"event_type":"{}"}}"#, "x".repeat(5000));
    assert_eq!(parse_line(line.as_bytes(), &CTX), Parsed::Skipped { kind: "other".to_owned() });
    let line = r#"{"event_type":"flow\nspoof"}"#;
    assert_eq!(parse_line(line.as_bytes(), &CTX), Parsed::Skipped { kind: "other".to_owned() });
}

#[test]
fn malformed_lines_say_why() {
    assert!(malformed_reason(b"not json at all").starts_with("not JSON"));
    assert!(malformed_reason(b"[1,2,3]").contains("not a JSON object"));
    assert!(malformed_reason(br#""alert""#).contains("not a JSON object"));
    assert!(malformed_reason(b"42").contains("not a JSON object"));
    assert!(malformed_reason(br#"{"event_type":"alert""#).starts_with("not JSON"));
    assert!(malformed_reason(&ALERT.as_bytes()[..ALERT.len() - 1]).starts_with("not JSON"));
    assert!(malformed_reason(br#"{"timestamp":"2026-11-27T10:00:00.000000+0000"}"#).contains("event_type"));
    assert!(malformed_reason(br#"{"event_type":"alert","src_ip":"10.0.0.1"}"#).contains("alert object"));
    let no_src = ALERT.replace(r#""src_ip":"10.10.0.11","#, "");
    assert!(malformed_reason(no_src.as_bytes()).contains("without src_ip"));
    let bad_src = ALERT.replace(r#""src_ip":"10.10.0.11""#, r#""src_ip":"10.10.0.311""#);
    assert!(malformed_reason(bad_src.as_bytes()).contains("unparsable src_ip `10.10.0.311`"));
    let bad_dest = ALERT.replace(r#""dest_ip":"203.0.113.5""#, r#""dest_ip":"example.com""#);
    assert!(malformed_reason(bad_dest.as_bytes()).contains("dest_ip"));
    let bad_target = ALERT_TARGET_SRC.replace(r#""target":{"ip":"10.10.0.11""#, r#""target":{"ip":"""#);
    assert!(malformed_reason(bad_target.as_bytes()).contains("alert.target.ip"));
    let wrong_type = ALERT.replace(r#""severity":1"#, &format!(r#""severity":"{}""#, "9".repeat(4000)));
    let reason = malformed_reason(wrong_type.as_bytes());
    assert!(reason.starts_with("unexpected EVE field"), "{reason}");
    assert!(reason.len() < 300, "reasons stay short");
    let mut bad_utf8 = ALERT.as_bytes().to_vec();
    let at = ALERT.find("Go HTTP").unwrap();
    bad_utf8[at] = 0xFF;
    assert!(malformed_reason(&bad_utf8).starts_with("not JSON"));
}

#[test]
fn a_line_never_leaks_into_the_next() {
    let stream = format!("{ALERT}\n{{\"event_type\":\n{ALERT_TARGET_SRC}\n\n{ALERT_V6}\r\n");
    let subjects: Vec<String> = stream
        .split('\n')
        .filter_map(|line| match parse_line(line.as_bytes(), &CTX) {
            Parsed::Detection(d) => Some(d.subject.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(subjects, ["10.10.0.11", "10.10.0.11", "2001:db8::11"]);
}
