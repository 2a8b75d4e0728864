//! Real lab traffic captured to a pcap, for the realistic Suricata ratio: nothing can be
//! downloaded, so the bench makes its own sensor input.
//!
//! The capture lab is a switch namespace `cbr-sw` with one Linux bridge `br0`, a server
//! namespace `cbr-srv` (10.250.0.1: Python's `http.server` with a small web site and a bulk
//! file, a tiny DNS responder, `openssl s_server` for TLS) and four client namespaces
//! `cbr-h0`..`cbr-h3`, each holding a quarter of the lab servers' addresses (the hosts Cordon
//! manages, so that alerts resolve to them). Every client address, round after round, fetches
//! pages over HTTP with `curl`, makes a TLS connection, asks DNS names, and now and then pings;
//! each client namespace downloads the bulk file once a round. A handful of hosts also fetch a
//! URL that carries the local rule's marker, a few times each: those are the alerts.
//!
//! `tcpdump` on the bridge writes the pcap. Checksum offload is turned off on the veths
//! (`ethtool -K eth0 tx off`), as on a real wire: otherwise every captured segment carries a
//! partial checksum and Suricata's decoder rules alert on each packet.
//!
//! Everything is removed on drop (processes by their PID, then the namespaces), also when the
//! bench fails halfway.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Names of the capture lab's namespaces start with this.
pub const PREFIX: &str = "cbr-";
const SWITCH: &str = "cbr-sw";
const SERVER: &str = "cbr-srv";
const SERVER_IP: &str = "10.250.0.1";
/// Client namespaces: the lab hosts' addresses are spread over these.
const CLIENTS: usize = 4;
/// The marker the local rule looks for in an HTTP URI.
pub const MARKER: &str = "CORDON-EVIL";
/// Alerts per alerting host (one marked request each, in the first rounds).
pub const ALERTS_PER_HOST: usize = 3;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The hosts (lab servers' operational addresses) that make the traffic.
    pub hosts: Vec<Ipv4Addr>,
    /// The hosts among them that also fetch the marked URL ([`ALERTS_PER_HOST`] times each).
    pub alerting: Vec<Ipv4Addr>,
    /// Rounds of traffic per host.
    pub rounds: usize,
    /// The bulk file's size, downloaded once per round by each client namespace.
    pub bulk_bytes: usize,
}

/// The pcap and what went into it.
#[derive(Debug)]
pub struct Captured {
    pub pcap: PathBuf,
    pub packets: u64,
    pub dropped: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// One round of a client namespace's traffic: `client.sh ROUNDS ALERTING_IPS IP...`.
const CLIENT_SH: &str = r#"# Written by cordon-bench (capture.rs): one client namespace's traffic.
rounds=$1; alerting=$2; shift 2
server=10.250.0.1
r=1
while [ "$r" -le "$rounds" ]; do
  for src in "$@"; do
    # A page with its assets: one connection each (http.server speaks HTTP/1.0).
    curl -s --max-time 5 --interface "$src" -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
      "http://$server/index.html" "http://$server/style.css" "http://$server/app.js" \
      "http://$server/api/status.json" "http://$server/missing-$r.html"
    curl -sk --max-time 5 --interface "$src" -o /dev/null "https://$server/"
    case " $alerting " in
      *" $src "*) [ "$r" -le "__ALERTS__" ] && curl -s --max-time 5 --interface "$src" -o /dev/null \
          "http://$server/__MARKER__/beacon?id=$r" ;;
    esac
  done
  python3 "$DIR/dns_client.py" "$server" "$@"
  if [ $((r % 4)) -eq 1 ]; then
    for src in "$@"; do ping -q -c 2 -i 0.01 -W 1 -I "$src" "$server" >/dev/null; done
  fi
  curl -s --max-time 30 --interface "$1" -o /dev/null "http://$server/downloads/bulk.bin"
  r=$((r + 1))
done
# A request that failed on a loaded machine is traffic too: the bench checks the alerts it needs.
exit 0
"#;

/// A DNS client: a few A queries from each address given (one socket per address).
const DNS_CLIENT_PY: &str = r#"# Written by cordon-bench (capture.rs): a few DNS queries from each address.
import random, socket, struct, sys
server = sys.argv[1]
names = ["www.example.com", "mail.example.com", "api.lab.test", "updates.vendor.test", "cdn.example.net",
         "ntp.pool.test", "login.corp.test", "files.corp.test"]
for src in sys.argv[2:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(1)
    for name in random.sample(names, 4):
        q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
        q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
        s.sendto(q, (server, 53))
        try:
            s.recv(512)
        except socket.timeout:
            pass
    s.close()
"#;

/// The responder of the EVE corpus test: answers every A query.
const DNS_RESPONDER_PY: &str = include_str!("../../cordon/tests/fixtures/dns_responder.py");

/// The running capture lab; removed on drop.
struct CaptureLab {
    processes: Vec<(&'static str, Child)>,
}

impl Drop for CaptureLab {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_namespaces();
    }
}

/// Removes every capture-lab namespace (a previous run's leftovers included).
pub fn remove_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(PREFIX) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn in_netns(netns: &str, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns, program]);
    command
}

/// Generates the traffic and captures it to `dir/lab.pcap`. Needs root, `tcpdump`, `curl`,
/// `openssl`, `python3`, `ping`, `ethtool` (scripts/install-deps.sh).
pub fn record(dir: &Path, traffic: &Traffic) -> anyhow::Result<Captured> {
    remove_namespaces();
    let work = dir.join("capture");
    let www = work.join("www");
    std::fs::create_dir_all(www.join("api"))?;
    std::fs::create_dir_all(www.join("downloads"))?;
    let mut lab = CaptureLab { processes: Vec::new() };
    build(&work, traffic)?;
    site(&www, traffic.bulk_bytes)?;
    std::fs::write(work.join("client.sh"), client_script())?;
    std::fs::write(work.join("dns_client.py"), DNS_CLIENT_PY)?;
    std::fs::write(work.join("dns_responder.py"), DNS_RESPONDER_PY)?;
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=lab.cordon.test",
            "-days",
            "2",
            "-keyout",
            &work.join("key.pem").display().to_string(),
            "-out",
            &work.join("cert.pem").display().to_string(),
        ],
    )?;

    // The servers.
    let log = |name: &str| std::fs::File::create(work.join(format!("{name}.log")));
    let mut spawn = |name: &'static str, mut command: Command| -> anyhow::Result<()> {
        let child = command
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log(name)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        lab.processes.push((name, child));
        Ok(())
    };
    let mut http = in_netns(SERVER, "python3");
    http.args(["-m", "http.server", "80", "--bind", SERVER_IP, "--directory"]).arg(&www);
    spawn("http", http)?;
    let mut dns = in_netns(SERVER, "python3");
    dns.args(["dns_responder.py", SERVER_IP]);
    spawn("dns", dns)?;
    let mut tls = in_netns(SERVER, "openssl");
    tls.args(["s_server", "-accept", "443", "-cert", "cert.pem", "-key", "key.pem", "-www", "-quiet"]);
    spawn("tls", tls)?;
    let probe = traffic.hosts.first().context("no hosts for the capture")?.to_string();
    for url in [format!("http://{SERVER_IP}/index.html"), format!("https://{SERVER_IP}/")] {
        ready(&probe, &url).with_context(|| format!("the capture lab's server did not answer {url}"))?;
    }

    // The capture.
    let pcap = work.join("lab.pcap");
    let tcpdump_log = work.join("tcpdump.log");
    let mut tcpdump = in_netns(SWITCH, "tcpdump");
    // -Z root: the pcap goes into a directory only root may write to.
    tcpdump.args(["-i", "br0", "-B", "65536", "-Z", "root", "-q", "-w"]).arg(&pcap);
    spawn("tcpdump", tcpdump)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&tcpdump_log).unwrap_or_default().contains("listening on") {
        if Instant::now() > deadline {
            bail!("tcpdump did not start: {}", std::fs::read_to_string(&tcpdump_log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // The clients, one script per client namespace, all at once.
    let begun = Instant::now();
    let alerting: Vec<String> = traffic.alerting.iter().map(Ipv4Addr::to_string).collect();
    // Kept in the lab's processes: killed by PID if the bench fails before they end.
    for (k, chunk) in traffic.hosts.chunks(traffic.hosts.len().div_ceil(CLIENTS)).enumerate() {
        let mut command = in_netns(&format!("cbr-h{k}"), "sh");
        command
            .arg("client.sh")
            .arg(traffic.rounds.to_string())
            .arg(alerting.join(" "))
            .args(chunk.iter().map(Ipv4Addr::to_string))
            .env("DIR", &work)
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log(&format!("client-{k}"))?);
        lab.processes.push(("client", command.spawn().context("starting a client")?));
    }
    for (name, child) in &mut lab.processes {
        if *name == "client" {
            let status = child.wait()?;
            if !status.success() {
                bail!("a capture client failed ({status}); see {}", work.display());
            }
        }
    }
    let seconds = begun.elapsed().as_secs_f64();
    // Let the last packets reach the capture, then stop tcpdump with SIGTERM (it flushes).
    std::thread::sleep(Duration::from_millis(300));
    let index = lab.processes.iter().position(|(name, _)| *name == "tcpdump").context("tcpdump")?;
    let (_, mut tcpdump) = lab.processes.remove(index);
    // SAFETY: kill(2) on the PID of our own child, which has not been waited for yet.
    unsafe { libc::kill(tcpdump.id() as libc::pid_t, libc::SIGTERM) };
    tcpdump.wait()?;
    let text = std::fs::read_to_string(&tcpdump_log)?;
    let count = |what: &str| -> u64 {
        text.lines()
            .find(|l| l.ends_with(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let captured = Captured {
        packets: count("packets captured"),
        dropped: count("packets dropped by kernel"),
        bytes: std::fs::metadata(&pcap)?.len(),
        pcap,
        seconds,
    };
    drop(lab);
    Ok(captured)
}

fn client_script() -> String {
    CLIENT_SH.replace("__ALERTS__", &ALERTS_PER_HOST.to_string()).replace("__MARKER__", MARKER)
}

/// The namespaces, the bridge, the veths (checksum offload off) and the addresses.
fn build(work: &Path, traffic: &Traffic) -> anyhow::Result<()> {
    let mut batch = String::new();
    for netns in [SWITCH, SERVER] {
        run("ip", &["netns", "add", netns])?;
    }
    let _ = writeln!(batch, "link add br0 type bridge stp_state 0 forward_delay 0");
    let _ = writeln!(batch, "link set br0 up");
    let mut ends = vec![("s0", SERVER.to_string())];
    let names: Vec<String> = (0..CLIENTS).map(|k| format!("c{k}")).collect();
    for (k, name) in names.iter().enumerate() {
        let netns = format!("cbr-h{k}");
        run("ip", &["netns", "add", &netns])?;
        ends.push((name.as_str(), netns));
    }
    for (port, netns) in &ends {
        let _ = writeln!(batch, "link add {port} type veth peer name eth0 netns {netns}");
        let _ = writeln!(batch, "link set {port} master br0 up");
    }
    let file = work.join("switch.batch");
    std::fs::write(&file, batch)?;
    run("ip", &["-n", SWITCH, "-batch", &file.to_string_lossy()])?;
    let chunks: Vec<&[Ipv4Addr]> = traffic.hosts.chunks(traffic.hosts.len().div_ceil(CLIENTS)).collect();
    for (i, (_, netns)) in ends.iter().enumerate() {
        let mut batch = String::from("link set lo up\nlink set eth0 up\n");
        let addresses: Vec<String> = if i == 0 {
            vec![SERVER_IP.to_string()]
        } else {
            chunks.get(i - 1).map(|c| c.iter().map(Ipv4Addr::to_string).collect()).unwrap_or_default()
        };
        for address in addresses {
            // One /8: the server and every host are on the same link.
            let _ = writeln!(batch, "addr add {address}/8 dev eth0");
        }
        let file = work.join(format!("{netns}.batch"));
        std::fs::write(&file, batch)?;
        run("ip", &["-n", netns, "-batch", &file.to_string_lossy()])?;
        let ethtool = in_netns(netns, "ethtool").args(["-K", "eth0", "tx", "off"]).output();
        match ethtool {
            Ok(out) if out.status.success() => {}
            Ok(out) => bail!("ethtool -K eth0 tx off in {netns}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            Err(e) => bail!("running ethtool (scripts/install-deps.sh installs it): {e}"),
        }
    }
    Ok(())
}

/// A small web site: a page, its assets, a JSON status, and the bulk file.
fn site(www: &Path, bulk_bytes: usize) -> anyhow::Result<()> {
    let mut page = String::from("<!doctype html><html><head><title>Lab</title></head><body>\n");
    for i in 0..300 {
        let _ = writeln!(page, "<p>Paragraph {i} of the lab's home page, with some ordinary text in it.</p>");
    }
    page.push_str("</body></html>\n");
    std::fs::write(www.join("index.html"), page)?;
    std::fs::write(www.join("style.css"), "body { font-family: sans-serif; }\n".repeat(200))?;
    std::fs::write(www.join("app.js"), "function tick(n) { return n + 1; }\n".repeat(400))?;
    std::fs::write(www.join("api/status.json"), "{\"status\":\"ok\",\"load\":[0.1,0.2,0.3]}\n")?;
    std::fs::create_dir_all(www.join(MARKER))?;
    std::fs::write(www.join(MARKER).join("beacon"), "sleep 60\n")?;
    // Pseudo-random (not compressible, as real downloads mostly are), made here.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut bulk = Vec::with_capacity(bulk_bytes + 8);
    while bulk.len() < bulk_bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bulk.extend_from_slice(&state.to_le_bytes());
    }
    bulk.truncate(bulk_bytes);
    std::fs::write(www.join("downloads/bulk.bin"), bulk)?;
    Ok(())
}

/// Retries `curl` from a client namespace until the server answers (at most 10 s).
fn ready(source: &str, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = in_netns("cbr-h0", "curl")
            .args(["-sk", "-o", "/dev/null", "--max-time", "2", "--interface", source, url])
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
