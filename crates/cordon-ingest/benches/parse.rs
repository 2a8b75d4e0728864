//! Throughput of the parsers on realistic input, single-threaded, with `std::time`.
//!
//! `cargo bench -p cordon-ingest --bench parse` (release). Figures are lines (messages) per
//! second on one core; on a shared VM, expect noise of ±20 %.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cordon_ingest::cef_syslog::{self, Profile};
use cordon_ingest::syslog::FrameDecoder;
use cordon_ingest::{Context, eve};
use cordon_model::Parsed;

const CTX: Context<'static> = Context { source: "bench", received_at_us: 1_795_773_600_000_000 };

/// A small deterministic generator, so the lines differ (addresses, ports, ids).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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

/// A sensor's typical output: mostly flows and DNS, a few percent alerts, a rare stats line.
fn eve_mix(n: usize) -> Vec<String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            let kind = match rng.below(1000) {
                0..350 => "flow",
                350..600 => "dns",
                600..700 => "tls",
                700..800 => "http",
                800..850 => "fileinfo",
                850..880 => "anomaly",
                880..999 => "alert",
                _ => "stats",
            };
            eve_line(kind, &mut rng)
        })
        .collect()
}

fn ddi_messages(n: usize) -> Vec<String> {
    let mut rng = Rng(42);
    (0..n)
        .map(|_| {
            format!(
                "<134>Mar  9 11:58:25 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|20|Malware URL requested - Type 1|6|dvc=10.201.156.143 dvchost=ddi01 dvcmac=00:0C:29:A6:53:0C deviceExternalId=6B593E17AFB7-40FBBB28-A4CE-0462-A536 rt=Mar 09 2026 11:58:24 GMT+00:00 app=HTTP deviceDirection=1 dhost=www.example.com dst=203.0.113.{} dpt=80 dmac=00:1b:21:35:8b:98 shost=10.10.0.{} src=10.10.0.{} spt={} smac=fe:ed:be:ef:5a:c6 cs3Label=HostName_Ext cs3=www.example.com cs2Label=Rule_ID cs2=20 cs1Label=Interesting_Host cs1=www.example.com cn1Label=Threat_Type cn1=1 cn2Label=Protocol_Group cn2=HTTP cn3Label=Request_Type cn3=0 request=http://www.example.com/9227/zuma/build/zuma.jar requestClientApplication=Java/1.7.0_51 reason=Malware URL requested - Type 1 act=not blocked cs4Label=Threat_Name cs4=Mal_Url cat=Malware interestedIp=10.10.0.11 peerIp=203.0.113.5 ptype=IDS cnt=1 aggregatedCnt=1",
                rng.below(254) + 1,
                rng.below(254) + 1,
                rng.below(254) + 1,
                1024 + rng.below(60000)
            )
        })
        .collect()
}

/// Runs `f` over `items` repeatedly for about `budget`; returns items per second.
fn measure<T>(items: &[T], budget: Duration, mut f: impl FnMut(&T)) -> f64 {
    for item in items.iter().take(1000) {
        f(item); // warm up
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < budget {
        for item in items {
            f(item);
        }
        done += items.len() as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn report(name: &str, per_sec: f64, avg_bytes: f64) {
    println!(
        "{name:<34} {:>10.0} lines/s  {:>7.1} MB/s  (avg {:.0} B/line)",
        per_sec,
        per_sec * avg_bytes / 1e6,
        avg_bytes
    );
}

fn avg_len(lines: &[String]) -> f64 {
    lines.iter().map(String::len).sum::<usize>() as f64 / lines.len() as f64
}

fn main() {
    let budget = Duration::from_secs(3);

    let mix = eve_mix(20_000);
    let alerts = mix.iter().filter(|l| l.contains(r#""event_type":"alert""#)).count();
    let (mut detections, mut skipped) = (0, 0);
    for line in &mix {
        match eve::parse_line(line.as_bytes(), &CTX) {
            Parsed::Detection(_) => detections += 1,
            Parsed::Skipped { .. } => skipped += 1,
            Parsed::Malformed { reason } => panic!("bench input malformed: {reason}"),
        }
    }
    assert_eq!(detections, alerts);
    println!("EVE mix: {} lines, {alerts} alerts, {skipped} skipped", mix.len());
    let rate = measure(&mix, budget, |l| {
        black_box(eve::parse_line(black_box(l.as_bytes()), &CTX));
    });
    report("eve::parse_line (realistic mix)", rate, avg_len(&mix));

    let only_alerts: Vec<String> = mix.iter().filter(|l| l.contains(r#""event_type":"alert""#)).cloned().collect();
    let rate = measure(&only_alerts, budget, |l| {
        black_box(eve::parse_line(black_box(l.as_bytes()), &CTX));
    });
    report("eve::parse_line (alerts only)", rate, avg_len(&only_alerts));

    let flows: Vec<String> = mix.iter().filter(|l| l.contains(r#""event_type":"flow""#)).cloned().collect();
    let rate = measure(&flows, budget, |l| {
        black_box(eve::parse_line(black_box(l.as_bytes()), &CTX));
    });
    report("eve::parse_line (flows only)", rate, avg_len(&flows));

    let ddi = ddi_messages(5_000);
    let rate = measure(&ddi, budget, |m| {
        black_box(cef_syslog::parse_message(black_box(m.as_bytes()), Profile::DeepDiscovery, &CTX));
    });
    report("cef_syslog::parse_message (DDI)", rate, avg_len(&ddi));

    // Octet-counted TCP stream of DDI messages, read in 16 KiB chunks.
    let mut stream = Vec::new();
    for m in &ddi {
        stream.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
    }
    let mut decoder = FrameDecoder::new(64 * 1024);
    decoder.push(&stream);
    let mut frames = 0;
    while let Some(frame) = decoder.next_frame() {
        assert!(frame.is_ok());
        frames += 1;
    }
    assert_eq!(frames, ddi.len());
    let streams = [stream];
    let rate = measure(&streams, budget, |s| {
        let mut decoder = FrameDecoder::new(64 * 1024);
        for chunk in s.chunks(16 * 1024) {
            decoder.push(chunk);
            while let Some(frame) = decoder.next_frame() {
                let _ = black_box(frame);
            }
        }
    }) * ddi.len() as f64;
    report("FrameDecoder (octet-counted)", rate, avg_len(&ddi));
}
