//! Criterion micro-benchmarks of the in-process parts (`cargo bench -p cordon-bench`): the
//! parsers, the policy decision and the engine's address index. The end-to-end figures are in
//! `cordon-bench` (see docs/performance.md); these only catch regressions of a hot function.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use cordon_engine::address_index::AddressIndex;
use cordon_ingest::{Context, cef_syslog, eve};
use cordon_model::Parsed;
use cordon_model::policy::{Policy, ServerFacts};
use cordon_store::OperationalTenure;
use criterion::{Criterion, criterion_group, criterion_main};

const CTX: Context<'static> = Context { source: "bench", received_at_us: 1_795_773_600_000_000 };

const ALERT: &str = r#"{"timestamp":"2026-11-27T10:00:00.000000+0000","flow_id":1,"in_iface":"eth0","event_type":"alert","src_ip":"10.0.0.7","src_port":40000,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":2001,"rev":1,"signature":"ET MALWARE beacon","category":"A Network Trojan was detected","severity":1}}"#;
const FLOW: &str = r#"{"timestamp":"2026-11-27T10:00:00.000000+0000","flow_id":2,"in_iface":"eth0","event_type":"flow","src_ip":"10.0.0.7","src_port":40001,"dest_ip":"203.0.113.5","dest_port":443,"proto":"TCP","app_proto":"tls","flow":{"pkts_toserver":12,"pkts_toclient":10,"bytes_toserver":1800,"bytes_toclient":9000,"start":"2026-11-27T09:59:58.000000+0000","end":"2026-11-27T10:00:00.000000+0000","age":2,"state":"closed","reason":"timeout","alerted":false}}"#;
const CEF: &str = "<134>Nov 27 10:00:00 ddi01 CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|20|Malware URL requested|8|dvc=10.201.156.143 dvchost=ddi01 rt=Nov 27 2026 10:00:00 GMT+00:00 src=10.0.0.7 dst=203.0.113.5 deviceDirection=1 interestedIp=10.0.0.7 peerIp=203.0.113.5 cat=Malware act=not blocked";

fn address(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i))
}

fn parsers(c: &mut Criterion) {
    c.bench_function("eve alert line", |b| b.iter(|| eve::parse_line(black_box(ALERT.as_bytes()), &CTX)));
    c.bench_function("eve flow line (skipped)", |b| b.iter(|| eve::parse_line(black_box(FLOW.as_bytes()), &CTX)));
    c.bench_function("cef deep discovery message", |b| {
        b.iter(|| cef_syslog::parse_message(black_box(CEF.as_bytes()), cef_syslog::Profile::DeepDiscovery, &CTX))
    });
}

fn decision(c: &mut Criterion) {
    let Parsed::Detection(detection) = eve::parse_line(ALERT.as_bytes(), &CTX) else { panic!("the alert parses") };
    let policy = Policy::default();
    let facts = ServerFacts {
        name: "srv-7".into(),
        tenant: Some("ops".into()),
        networks: vec!["office".into()],
        action: None,
        protected: false,
    };
    let resolve = |address: IpAddr| (address == detection.subject).then(|| facts.clone());
    c.bench_function("policy decision", |b| b.iter(|| policy.decide(black_box(&detection), &resolve)));
}

fn index(c: &mut Criterion) {
    let servers = 100_000u32;
    let tenures = (0..servers).map(|i| OperationalTenure {
        ip: address(i),
        server_id: i64::from(i) + 1,
        from_us: 0,
        to_us: None,
    });
    let index = AddressIndex::new(tenures, vec!["172.16.0.10-172.31.255.250".parse().expect("a range")]);
    let mut i = 0u32;
    c.bench_function("address index lookup (100,000 servers)", |b| {
        b.iter(|| {
            i = (i + 7919) % servers;
            index.lookup(black_box(address(i)), 1)
        })
    });
}

criterion_group!(benches, parsers, decision, index);
criterion_main!(benches);
