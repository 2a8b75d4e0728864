//! A real Suricata, live on the lab switch's port interfaces (AF_PACKET inside the switch
//! namespace), with a configuration of its own and the tests' own rules: no ruleset download,
//! no internet. Stopped by PID on drop.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::proc::Guarded;

/// Where the eve-log output goes.
#[derive(Debug, Clone)]
pub enum Eve {
    /// `filetype: regular`, `DIR/eve.json`.
    File,
    /// `filetype: unix_stream`: Suricata connects to this socket (Cordon listens on it).
    UnixStream(PathBuf),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// The switch namespace (`NAME-sw`).
    pub netns: &'a str,
    /// Port interfaces to capture on (`p-sbc-01`, ...).
    pub interfaces: &'a [&'a str],
    /// The rules file.
    pub rules: &'a Path,
    pub eve: Eve,
    /// EVE event types: alert, anomaly, http, dns, tls, flow, stats, ...
    pub types: &'a [&'a str],
}

#[derive(Debug)]
pub struct Suricata {
    pub dir: PathBuf,
    /// DIR/eve.json (only written with `Eve::File`).
    pub eve: PathBuf,
    /// When "Engine started" was seen.
    pub started_at: Instant,
    process: Guarded,
}

fn yaml(options: &Options<'_>, dir: &Path) -> String {
    let (filetype, filename) = match &options.eve {
        Eve::File => ("regular", "eve.json".to_string()),
        Eve::UnixStream(socket) => ("unix_stream", socket.display().to_string()),
    };
    let mut types = String::new();
    for kind in options.types {
        match *kind {
            "stats" => types.push_str("        - stats:\n            totals: yes\n            threads: no\n"),
            "anomaly" => types.push_str(
                "        - anomaly:\n            enabled: yes\n            types:\n              decode: yes\n              \
                 stream: yes\n              applayer: yes\n",
            ),
            other => writeln!(types, "        - {other}").unwrap(),
        }
    }
    let stats = options.types.contains(&"stats");
    format!(
        r#"%YAML 1.1
---
# Written by Cordon's tests: a small Suricata for a network-namespace lab.
vars:
  address-groups:
    HOME_NET: "[10.10.0.0/24,10.99.0.0/24,fd00::/64]"
    EXTERNAL_NET: "any"
  port-groups:
    HTTP_PORTS: "80"
    DNS_PORTS: "53"
default-log-dir: {dir}
stats:
  enabled: {stats}
  interval: 1
outputs:
  - eve-log:
      enabled: yes
      filetype: {filetype}
      filename: {filename}
      types:
{types}logging:
  default-log-level: notice
  outputs:
    - console:
        enabled: no
    - file:
        enabled: yes
        level: info
        filename: suricata.log
af-packet:
  - interface: default
    threads: 1
    cluster-type: cluster_flow
    defrag: yes
runmode: workers
max-pending-packets: 128
# veth hands over segments larger than the MTU (TSO/GRO): keep them whole.
default-packet-size: 65536
threading:
  set-cpu-affinity: no
app-layer:
  protocols:
    http:
      enabled: yes
    tls:
      enabled: yes
      detection-ports:
        dp: 443
    dns:
      tcp:
        enabled: yes
        detection-ports:
          dp: 53
      udp:
        enabled: yes
        detection-ports:
          dp: 53
"#,
        dir = dir.display(),
        stats = if stats { "yes" } else { "no" },
    )
}

impl Suricata {
    /// Writes DIR/suricata.yaml, starts Suricata in the foreground (`ip netns exec`, so the
    /// child's PID is Suricata's own) and waits for "Engine started" in DIR/suricata.log.
    pub fn start(dir: &Path, options: &Options<'_>) -> Suricata {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("suricata.yaml");
        std::fs::write(&config, yaml(options, dir)).unwrap();
        let mut command = Command::new("ip");
        command.args(["netns", "exec", options.netns, "suricata", "-c"]).arg(&config);
        for interface in options.interfaces {
            command.args(["-i", interface]);
        }
        command
            .arg("-S")
            .arg(options.rules)
            .arg("-l")
            .arg(dir)
            .args(["-k", "none", "--pidfile"])
            .arg(dir.join("suricata.pid"))
            .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
        let mut process = Guarded::spawn("suricata", &mut command);
        let log = dir.join("suricata.log");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.to_ascii_lowercase().contains("engine started") {
                break;
            }
            if let Some(status) = process.exited() {
                panic!(
                    "suricata exited with {status} before starting:\n{text}\n{}",
                    std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "suricata did not start within 20 s:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Suricata { dir: dir.to_path_buf(), eve: dir.join("eve.json"), started_at: Instant::now(), process }
    }

    /// Stops it gracefully (SIGTERM: it flushes its flows and writes the last events) and
    /// checks that it exited by itself.
    pub fn stop(&mut self) {
        let (status, by_itself) = self.process.stop(Duration::from_secs(15));
        assert!(by_itself, "suricata did not exit on SIGTERM within 15 s:\n{}", self.log());
        let _ = status;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("suricata.log")).unwrap_or_default()
    }

    /// The lines of eve.json so far.
    pub fn eve_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.eve).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// The events of eve.json so far (each line must be JSON).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.eve_lines()
            .iter()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("eve.json line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// Alerts in eve.json with this signature id.
    pub fn alerts(&self, sid: u64) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event_type"] == "alert" && e["alert"]["signature_id"].as_u64() == Some(sid))
            .collect()
    }
}

/// The payload pattern for `ping -p` that the canary rules look for: "CORDONCANARY".
pub const CANARY_PATTERN: &str = "434f52444f4e43414e415259";

/// Sends one echo request carrying the canary from a lab host namespace. Whether a reply came
/// back does not matter (it may be quarantined by then).
pub fn ping_canary(host_netns: &str, address: &str) {
    let mut command = super::in_netns(host_netns, "ping");
    if address.contains(':') {
        command.arg("-6");
    }
    let _ = command
        .args(["-c1", "-W1", "-q", "-p", CANARY_PATTERN, address])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
}
