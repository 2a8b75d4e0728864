//! Ingest throughput: lines per second per core through parse → normalize (the parser's output
//! is the normalized `Detection`), on generated lines.
//!
//! One thread measures the single-core rate; then one thread per core runs the same loop at
//! once, and the aggregate divided by the cores is the per-core rate under full load.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::bail;
use cordon_ingest::cef_syslog::{self, Profile};
use cordon_ingest::{Context, eve};
use cordon_model::Parsed;
use serde_json::json;

use crate::report::{BenchResult, Goal, Rng};

const CTX: Context<'static> = Context { source: "bench", received_at_us: 1_795_773_600_000_000 };

pub fn run(budget: Duration) -> anyhow::Result<BenchResult> {
    let mut result = BenchResult::new("ingest");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let eve = eve_mix(20_000);
    let counts = check(&eve, |line| eve::parse_line(line, &CTX))?;
    println!(
        "EVE mix: {} lines, {} alerts → detections, {} skipped, avg {:.0} B/line",
        eve.len(),
        counts.0,
        counts.1,
        avg_len(&eve)
    );
    let single = measure(&eve, budget, |line| eve::parse_line(line, &CTX));
    result.figure("EVE lines/s, 1 core (realistic mix), parse → normalize", single, "lines/s", None);
    let all = measure_parallel(&eve, budget, cores, |line| eve::parse_line(line, &CTX));
    result.figure(format!("EVE lines/s per core, {cores} cores busy"), all / cores as f64, "lines/s", None);
    let alerts: Vec<String> = eve.iter().filter(|l| l.contains(r#""event_type":"alert""#)).cloned().collect();
    let alerts_only = measure(&alerts, budget, |line| eve::parse_line(line, &CTX));
    result.figure("EVE lines/s, 1 core (alerts only)", alerts_only, "lines/s", None);
    result.detail(
        "eve",
        json!({
            "lines": eve.len(),
            "detections": counts.0,
            "skipped": counts.1,
            "avg_bytes": avg_len(&eve),
            "mix_per_mille": MIX.iter().map(|(kind, n)| json!({ "kind": kind, "per_mille": n })).collect::<Vec<_>>(),
            "single_core_mb_per_s": single * avg_len(&eve) / 1e6,
        }),
    );

    // The issue's full pipeline on one core: parse → normalize → resolve (the engine's address
    // index, every address of the detection) → policy decision → dedup (one open action per
    // server: a detection on a server with one attaches to it). What the engine adds on top is
    // the durable commits, measured end to end by `contain` (outbreak detections/s).
    let pipeline = Pipeline::new(&eve);
    let full = measure(&eve, budget, |line| pipeline.run(line));
    result.figure(
        "EVE lines/s, 1 core, parse → normalize → resolve → decide → dedup",
        full,
        "lines/s",
        Some(Goal::AtLeast(200_000.0)),
    );
    result
        .detail("pipeline", json!({ "servers_indexed": pipeline.servers, "incidents": pipeline.open.borrow().len() }));

    let cef = ddi_messages(5_000);
    let counts = check(&cef, |m| cef_syslog::parse_message(m, Profile::DeepDiscovery, &CTX))?;
    println!(
        "CEF (Deep Discovery) syslog: {} messages, {} detections, avg {:.0} B/message",
        cef.len(),
        counts.0,
        avg_len(&cef)
    );
    let single = measure(&cef, budget, |m| cef_syslog::parse_message(m, Profile::DeepDiscovery, &CTX));
    result.figure("CEF syslog lines/s, 1 core (Deep Discovery)", single, "lines/s", Some(Goal::AtLeast(150_000.0)));
    let all = measure_parallel(&cef, budget, cores, |m| cef_syslog::parse_message(m, Profile::DeepDiscovery, &CTX));
    result.figure(format!("CEF syslog lines/s per core, {cores} cores busy"), all / cores as f64, "lines/s", None);
    result.detail(
        "cef",
        json!({
            "messages": cef.len(),
            "detections": counts.0,
            "avg_bytes": avg_len(&cef),
            "single_core_mb_per_s": single * avg_len(&cef) / 1e6,
        }),
    );
    result.detail("budget_seconds_per_figure", json!(budget.as_secs_f64()));
    Ok(result)
}

/// Parses every line once: (detections, skipped). A malformed line means the generator is wrong.
fn check(lines: &[String], parse: impl Fn(&[u8]) -> Parsed) -> anyhow::Result<(usize, usize)> {
    let (mut detections, mut skipped) = (0, 0);
    for line in lines {
        match parse(line.as_bytes()) {
            Parsed::Detection(_) => detections += 1,
            Parsed::Skipped { .. } => skipped += 1,
            Parsed::Malformed { reason } => bail!("generated input is malformed ({reason}): {line}"),
        }
    }
    Ok((detections, skipped))
}

/// Runs `parse` over `lines` repeatedly for about `budget`; returns lines per second.
fn measure(lines: &[String], budget: Duration, parse: impl Fn(&[u8]) -> Parsed) -> f64 {
    for line in lines.iter().take(1000) {
        black_box(parse(black_box(line.as_bytes())));
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < budget {
        for line in lines {
            black_box(parse(black_box(line.as_bytes())));
        }
        done += lines.len() as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The same loop on `threads` threads at once; returns the aggregate lines per second.
fn measure_parallel(lines: &[String], budget: Duration, threads: usize, parse: impl Fn(&[u8]) -> Parsed + Sync) -> f64 {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(|| measure(lines, budget, &parse))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}

fn avg_len(lines: &[String]) -> f64 {
    lines.iter().map(String::len).sum::<usize>() as f64 / lines.len().max(1) as f64
}

/// A sensor's typical output, per mille: mostly flows and DNS, 10 % alerts, a rare stats line.
const MIX: [(&str, u64); 8] = [
    ("flow", 350),
    ("dns", 250),
    ("tls", 100),
    ("http", 80),
    ("fileinfo", 50),
    ("anomaly", 69),
    ("alert", 100),
    ("stats", 1),
];

fn eve_mix(n: usize) -> Vec<String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            let mut draw = rng.below(1000);
            let mut kind = "flow";
            for (k, per_mille) in MIX {
                if draw < per_mille {
                    kind = k;
                    break;
                }
                draw -= per_mille;
            }
            eve_line(kind, &mut rng)
        })
        .collect()
}

/// Deep Discovery Inspector detection logs: two templates (an outbound malware URL with
/// `interestedIp`, an inbound exploit without it, resolved by `deviceDirection`).
fn ddi_messages(n: usize) -> Vec<String> {
    let mut rng = Rng(42);
    (0..n)
        .map(|i| {
            let (dst, src, spt) = (rng.below(254) + 1, rng.below(254) + 1, 1024 + rng.below(60000));
            if i % 4 == 3 {
                format!(
                    "<132>Mar  9 11:58:25 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|8|Exploit attempt - CVE-2021-44228 Log4Shell|8|dvc=10.201.156.143 dvchost=ddi01 dvcmac=00:0C:29:A6:53:0C deviceExternalId=6B593E17AFB7-40FBBB28-A4CE-0462-A536 rt=Mar 09 2026 11:58:24 GMT+00:00 app=HTTP deviceDirection=0 dst=10.10.0.{dst} dpt=8080 src=198.51.100.{src} spt={spt} cs2Label=Rule_ID cs2=4453 cn1Label=Threat_Type cn1=2 cn2Label=Protocol_Group cn2=HTTP request=http://10.10.0.{dst}:8080/api/login reason=Exploit attempt act=not blocked cs4Label=Threat_Name cs4=CVE-2021-44228 cat=Exploit ptype=IDS cnt=1 aggregatedCnt=1"
                )
            } else {
                format!(
                    "<134>Mar  9 11:58:25 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|20|Malware URL requested - Type 1|6|dvc=10.201.156.143 dvchost=ddi01 dvcmac=00:0C:29:A6:53:0C deviceExternalId=6B593E17AFB7-40FBBB28-A4CE-0462-A536 rt=Mar 09 2026 11:58:24 GMT+00:00 app=HTTP deviceDirection=1 dhost=www.example.com dst=203.0.113.{dst} dpt=80 dmac=00:1b:21:35:8b:98 shost=10.10.0.{src} src=10.10.0.{src} spt={spt} smac=fe:ed:be:ef:5a:c6 cs3Label=HostName_Ext cs3=www.example.com cs2Label=Rule_ID cs2=20 cs1Label=Interesting_Host cs1=www.example.com cn1Label=Threat_Type cn1=1 cn2Label=Protocol_Group cn2=HTTP cn3Label=Request_Type cn3=0 request=http://www.example.com/9227/zuma/build/zuma.jar requestClientApplication=Java/1.7.0_51 reason=Malware URL requested - Type 1 act=not blocked cs4Label=Threat_Name cs4=Mal_Url cat=Malware interestedIp=10.10.0.{src} peerIp=203.0.113.{dst} ptype=IDS cnt=1 aggregatedCnt=1"
                )
            }
        })
        .collect()
}

/// One EVE line of `kind`, shaped like Suricata 7's output.
fn eve_line(kind: &str, rng: &mut Rng) -> String {
    let src = format!("10.10.{}.{}", rng.below(4), rng.below(254) + 1);
    let dst = format!("203.0.113.{}", rng.below(254) + 1);
    let sport = 1024 + rng.below(60000);
    let flow_id = rng.next() >> 12;
    let us = rng.below(1_000_000);
    let head = format!(
        r#"{{"timestamp":"2026-11-27T10:00:00.{us:06}+0000","flow_id":{flow_id},"in_iface":"eth1","event_type":"{kind}","src_ip":"{src}","src_port":{sport},"dest_ip":"{dst}","#
    );
    match kind {
        "alert" => format!(
            r#"{head}"dest_port":80,"proto":"TCP","pkt_src":"wire/pcap","community_id":"1:Kl1Xf0xwqq3vIQ0U2Fpu5+0Ewh4=","alert":{{"action":"allowed","gid":1,"signature_id":{},"rev":3,"signature":"ET USER_AGENTS Go HTTP Client User-Agent","category":"A Network Trojan was detected","severity":{},"metadata":{{"created_at":["2017_11_01"],"updated_at":["2019_07_26"],"signature_severity":["Major"]}}}},"http":{{"hostname":"{dst}","url":"/gate.php?id={}","http_user_agent":"Go-http-client/1.1","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":12}},"app_proto":"http","direction":"to_server","flow":{{"pkts_toserver":4,"pkts_toclient":3,"bytes_toserver":423,"bytes_toclient":340,"start":"2026-11-27T10:00:00.100012+0000","src_ip":"{src}","dest_ip":"{dst}","src_port":{sport},"dest_port":80}},"host":"ids-1"}}"#,
            2_000_000 + rng.below(100_000),
            1 + rng.below(3),
            rng.below(1000)
        ),
        "flow" => format!(
            r#"{head}"dest_port":443,"proto":"TCP","app_proto":"tls","flow":{{"pkts_toserver":{},"pkts_toclient":{},"bytes_toserver":{},"bytes_toclient":{},"start":"2026-11-27T09:59:58.100012+0000","end":"2026-11-27T10:00:00.400000+0000","age":2,"state":"closed","reason":"timeout","alerted":false}},"tcp":{{"tcp_flags":"1b","tcp_flags_ts":"1b","tcp_flags_tc":"1b","syn":true,"fin":true,"psh":true,"ack":true,"state":"closed"}},"community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg=","host":"ids-1"}}"#,
            rng.below(100),
            rng.below(100),
            rng.below(100_000),
            rng.below(1_000_000)
        ),
        "dns" => format!(
            r#"{head}"dest_port":53,"proto":"UDP","dns":{{"version":2,"type":"answer","id":{},"flags":"8180","qr":true,"rd":true,"ra":true,"rrname":"host{}.example.com","rrtype":"A","rcode":"NOERROR","answers":[{{"rrname":"host.example.com","rrtype":"A","ttl":300,"rdata":"93.184.215.14"}}],"grouped":{{"A":["93.184.215.14"]}}}},"host":"ids-1"}}"#,
            rng.below(65536),
            rng.below(1000)
        ),
        "tls" => format!(
            r#"{head}"dest_port":443,"proto":"TCP","tls":{{"subject":"CN=www.example.com","issuerdn":"C=US, O=Let's Encrypt, CN=R3","serial":"04:1F:3A:9B","fingerprint":"aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd","sni":"www.example.com","version":"TLS 1.3","notbefore":"2026-01-01T00:00:00","notafter":"2026-04-01T00:00:00","ja3":{{"hash":"e7d705a3286e19ea42f587b344ee6865","string":"771,4865-4866-4867,0-23-65281-10-11-35-16-5-13-18-51-45-43-27-21,29-23-24,0"}},"ja3s":{{"hash":"f4febc55ea12b31ae17cfb7e614afda8","string":"771,4865,51-43"}}}},"host":"ids-1"}}"#
        ),
        "http" => format!(
            r#"{head}"dest_port":80,"proto":"TCP","tx_id":0,"http":{{"hostname":"www.example.com","url":"/static/app.{}.js","http_user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","http_content_type":"application/javascript","http_refer":"http://www.example.com/","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":{}}},"host":"ids-1"}}"#,
            rng.below(10_000),
            rng.below(100_000)
        ),
        "fileinfo" => format!(
            r#"{head}"dest_port":80,"proto":"TCP","http":{{"hostname":"www.example.com","url":"/dl/setup.exe","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":{}}},"app_proto":"http","fileinfo":{{"filename":"/dl/setup.exe","sid":[],"gaps":false,"state":"CLOSED","md5":"d41d8cd98f00b204e9800998ecf8427e","sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","stored":false,"size":{},"tx_id":0}},"host":"ids-1"}}"#,
            rng.below(1_000_000),
            rng.below(1_000_000)
        ),
        "anomaly" => format!(
            r#"{head}"dest_port":0,"proto":"UDP","anomaly":{{"type":"decode","event":"ipv4.opt_pad_required"}},"host":"ids-1"}}"#
        ),
        _ => {
            let mut counters = String::new();
            for i in 0..200 {
                counters.push_str(&format!(r#""counter_{i}":{},"#, rng.below(1_000_000_000)));
            }
            format!(
                r#"{{"timestamp":"2026-11-27T10:00:08.000000+0000","event_type":"stats","stats":{{"uptime":3608,"decoder":{{{counters}"pkts":912831}},"detect":{{"engines":[{{"id":0,"last_reload":"2026-11-27T09:00:00.000000+0000","rules_loaded":43214,"rules_failed":0}}],"alert":12}}}},"host":"ids-1"}}"#
            )
        }
    }
}

/// Resolve, decide and dedup after the parser, in memory, as the engine's processor does them
/// before its commits.
struct Pipeline {
    index: cordon_engine::address_index::AddressIndex,
    facts: std::collections::HashMap<i64, cordon_model::policy::ServerFacts>,
    policy: cordon_model::policy::Policy,
    /// Servers with an open action (one per incident), and how many detections it gathered.
    open: std::cell::RefCell<std::collections::HashMap<i64, u64>>,
    servers: usize,
}

impl Pipeline {
    /// Every subject address of the mix belongs to a server (one server per address).
    fn new(lines: &[String]) -> Pipeline {
        let mut addresses = std::collections::BTreeSet::new();
        for line in lines {
            if let Parsed::Detection(d) = eve::parse_line(line.as_bytes(), &CTX) {
                addresses.insert(d.subject);
            }
        }
        let tenures: Vec<cordon_store::OperationalTenure> = addresses
            .iter()
            .enumerate()
            .map(|(i, ip)| cordon_store::OperationalTenure {
                ip: *ip,
                server_id: i as i64 + 1,
                from_us: 0,
                to_us: None,
            })
            .collect();
        let facts = tenures
            .iter()
            .map(|t| {
                let facts = cordon_model::policy::ServerFacts {
                    name: format!("srv-{}", t.server_id),
                    tenant: Some("ops".into()),
                    networks: vec!["office".into()],
                    action: None,
                    protected: false,
                };
                (t.server_id, facts)
            })
            .collect();
        let servers = tenures.len();
        let pools = vec!["172.16.0.10-172.31.255.250".parse().expect("a valid range")];
        Pipeline {
            index: cordon_engine::address_index::AddressIndex::new(tenures, pools),
            facts,
            policy: cordon_model::policy::Policy::default(),
            open: Default::default(),
            servers,
        }
    }

    fn run(&self, line: &[u8]) -> Parsed {
        let parsed = eve::parse_line(line, &CTX);
        if let Parsed::Detection(detection) = &parsed {
            let mut resolved: Vec<(std::net::IpAddr, Option<i64>)> = Vec::with_capacity(4);
            for address in
                [Some(detection.subject), detection.peer, detection.src_ip, detection.dest_ip, detection.target_ip]
                    .into_iter()
                    .flatten()
            {
                if resolved.iter().any(|(a, _)| *a == address) {
                    continue;
                }
                let server = match self.index.lookup(address, detection.received_at_us) {
                    cordon_engine::address_index::Lookup::Held(ids) if ids.len() == 1 => Some(ids[0]),
                    _ => None,
                };
                resolved.push((address, server));
            }
            let lookup = |address: std::net::IpAddr| {
                let id = resolved.iter().find(|(a, _)| *a == address).and_then(|(_, s)| *s)?;
                self.facts.get(&id).cloned()
            };
            let decision = self.policy.decide(detection, &lookup);
            if let Some(server) = resolved.iter().find(|(a, _)| *a == decision.subject).and_then(|(_, s)| *s) {
                *self.open.borrow_mut().entry(server).or_default() += 1;
            }
        }
        parsed
    }
}
