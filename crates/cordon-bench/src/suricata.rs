//! The Suricata CPU ratio: a pcap replayed by `suricata -r` with its CPU time measured
//! (getrusage of the child), then the EVE file it wrote appended to the file a running
//! `cordon serve` follows, and the CPU Cordon spends until every detection of it is processed.
//!
//! Two inputs, two figures:
//! - **realistic**: real lab traffic captured by [`crate::capture`], replayed with Debian's
//!   Suricata configuration (`/etc/suricata/suricata.yaml`: EVE with alert, anomaly, http, dns,
//!   tls, files, flow, stats, ...) and the rules Debian ships (`/etc/suricata/rules/*.rules`)
//!   plus one local rule on an HTTP URI marker ([`Rules::Debian`]);
//! - **alert-heavy**: a pcap written here ([`write_pcap`]: UDP from the lab's servers, 1 packet in
//!   `alert_every` carrying a signature), replayed with only a local rule ([`Rules::LocalOnly`]):
//!   an outbreak on purpose, where Cordon's cost per alert dominates.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// What `suricata -r` produced and what it cost.
#[derive(Debug)]
pub struct Replay {
    pub packets: usize,
    pub eve: String,
    pub eve_lines: usize,
    pub alerts: usize,
    pub cpu: Duration,
    /// Lines of Suricata's own log that are errors (a rule it could not load, ...).
    pub errors: Vec<String>,
}

/// Which configuration and rules `suricata -r` runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// Suricata's built-in defaults and [`LOCAL_UDP_RULE`] only.
    LocalOnly,
    /// Debian's `suricata.yaml`, every rules file Debian ships, and [`LOCAL_HTTP_RULE`].
    Debian,
}

/// The alert-heavy pcap's rule: a UDP payload marker.
const LOCAL_UDP_RULE: &str = "alert udp any any -> any any (msg:\"CORDON BENCH EVIL\"; content:\"CORDON-EVIL\"; \
                     classtype:trojan-activity; priority:1; sid:9000001; rev:1;)\n";

/// The realistic capture's rule: the marker in an HTTP URI, from a client (the alerting host is
/// the source of the request).
const LOCAL_HTTP_RULE: &str = "alert http any any -> any any (msg:\"CORDON BENCH beacon to a known C2 path\"; \
                               flow:established,to_server; http.uri; content:\"CORDON-EVIL\"; \
                               classtype:trojan-activity; priority:1; sid:9000002; rev:1;)\n";

/// The local HTTP rule's signature id.
const LOCAL_HTTP_SID: u64 = 9_000_002;

/// The distinct sources of the alerts of [`LOCAL_HTTP_RULE`] in an EVE stream.
pub fn marked_sources(eve: &str) -> std::collections::BTreeSet<String> {
    eve.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["event_type"] == "alert" && e["alert"]["signature_id"].as_u64() == Some(LOCAL_HTTP_SID))
        .filter_map(|e| e["src_ip"].as_str().map(str::to_owned))
        .collect()
}

/// Where Debian's Suricata package puts its configuration and rules.
const DEBIAN_CONFIG: &str = "/etc/suricata/suricata.yaml";
const DEBIAN_RULES: &str = "/etc/suricata/rules";

/// Writes a classic pcap (Ethernet) of `packets` UDP packets from `sources`, one flow per
/// source and destination port, every `alert_every`-th packet carrying the signature.
pub fn write_pcap(path: &Path, sources: &[Ipv4Addr], packets: usize, alert_every: usize) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, LINKTYPE_ETHERNET.
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&[0; 8])?;
    out.write_all(&65_535u32.to_le_bytes())?;
    out.write_all(&1u32.to_le_bytes())?;
    let destination = Ipv4Addr::new(203, 0, 113, 5);
    let start = 1_795_773_600u32;
    for i in 0..packets {
        let alert = i % alert_every == 0;
        // Alerts go round the sources on their own, whatever `alert_every` and the count share.
        let source = if alert { sources[(i / alert_every) % sources.len()] } else { sources[i % sources.len()] };
        let payload: Vec<u8> = if alert {
            format!("GET CORDON-EVIL beacon {i:08}").into_bytes()
        } else {
            format!("ordinary datagram {i:08} ..............................").into_bytes()
        };
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&source.octets());
        ip[16..20].copy_from_slice(&destination.octets());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        let source_port = 40_000 + (i / sources.len() % 20) as u16;
        frame.extend_from_slice(&source_port.to_be_bytes());
        frame.extend_from_slice(&9999u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
        frame.extend_from_slice(&payload);
        // 100 µs apart.
        let micros = i as u64 * 100;
        out.write_all(&(start + (micros / 1_000_000) as u32).to_le_bytes())?;
        out.write_all(&((micros % 1_000_000) as u32).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(&frame)?;
    }
    out.flush()?;
    Ok(())
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The rules file for `rules` (one file: `-S` loads exactly one and nothing else).
fn rules_file(rules: Rules) -> anyhow::Result<String> {
    match rules {
        Rules::LocalOnly => Ok(LOCAL_UDP_RULE.to_owned()),
        Rules::Debian => {
            let mut files: Vec<_> = std::fs::read_dir(DEBIAN_RULES)
                .with_context(|| format!("{DEBIAN_RULES} (the suricata package ships it)"))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "rules"))
                .collect();
            files.sort();
            let mut text = String::new();
            for file in files {
                text.push_str(&std::fs::read_to_string(&file)?);
                text.push('\n');
            }
            text.push_str(LOCAL_HTTP_RULE);
            Ok(text)
        }
    }
}

/// Runs `suricata -r pcap` in `dir/name`; returns its EVE output and its CPU time.
pub fn replay(dir: &Path, name: &str, pcap: &Path, packets: usize, rules: Rules) -> anyhow::Result<Replay> {
    let log_dir = dir.join(name);
    std::fs::create_dir_all(&log_dir)?;
    let rules_path = log_dir.join("bench.rules");
    std::fs::write(&rules_path, rules_file(rules)?)?;
    let mut command = Command::new("suricata");
    if rules == Rules::Debian {
        // Debian's configuration leaves the Modbus, DNP3 and ENIP parsers off, but ships their
        // event rules: turned on so that every shipped rule loads.
        command.arg("-c").arg(DEBIAN_CONFIG);
        for protocol in ["modbus", "dnp3", "enip"] {
            command.arg("--set").arg(format!("app-layer.protocols.{protocol}.enabled=yes"));
        }
    }
    let before = children_cpu();
    let out = command
        .arg("-r")
        .arg(pcap)
        .arg("-S")
        .arg(&rules_path)
        .arg("-l")
        .arg(&log_dir)
        .args(["-k", "none", "--runmode", "single"])
        .output()
        .context("running suricata (scripts/install-deps.sh installs it)")?;
    let cpu = children_cpu().saturating_sub(before);
    if !out.status.success() {
        bail!("suricata -r failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let eve = std::fs::read_to_string(log_dir.join("eve.json"))?;
    let eve_lines = eve.lines().count();
    let alerts = eve.lines().filter(|l| l.contains("\"event_type\":\"alert\"")).count();
    let console = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let errors = console.lines().filter(|l| l.starts_with("E:")).map(str::to_owned).collect();
    Ok(Replay { packets, eve, eve_lines, alerts, cpu, errors })
}

/// User + system CPU time of every waited-for child of this process so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass; RUSAGE_CHILDREN is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
