//! A large network lab for the end-to-end figures: one switch namespace (`cbn-sw`) holding
//! `networks` pairs of Linux bridges (`br-oN` operational, `br-qN` quarantine) and one veth
//! pair per server, whose switch end `pNxI` is a port of `br-oN`. A Linux bridge holds at most
//! 1,023 ports, so servers are spread over several networks of at most 1,000 ports each.
//!
//! Both ends of every veth pair stay in the switch namespace: the figures are about moving
//! ports, and a namespace per server would only make the lab slower to build. The lab is
//! removed on drop (also when the bench panics); `scripts/bench.sh` also removes every `cbn-`
//! namespace on exit or Ctrl-C.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The switch namespace of every bench lab. Names of bench namespaces start with `cbn`.
pub const SWITCH_NETNS: &str = "cbn-sw";
/// Ports per bridge (a bridge holds at most 1,023).
pub const PORTS_PER_BRIDGE: usize = 1000;

/// One server of the lab: its switch port and operational address.
#[derive(Debug, Clone)]
pub struct LabServer {
    pub name: String,
    pub network: usize,
    pub port: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug)]
pub struct Lab {
    pub servers: Vec<LabServer>,
    pub networks: usize,
    /// How long building the namespace, bridges and veth pairs took.
    pub build_time: Duration,
}

/// Removes every bench namespace (a previous run's leftovers included).
pub fn remove_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with("cbn-") {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Lab {
    /// Builds a lab of `count` servers. Needs root.
    pub fn up(count: usize, dir: &Path) -> anyhow::Result<Lab> {
        remove_namespaces();
        let clock = Instant::now();
        let networks = count.div_ceil(PORTS_PER_BRIDGE).max(1);
        ip(&["netns", "add", SWITCH_NETNS])?;
        // From here on, a failure still removes the namespace (the guard's drop).
        let mut lab = Lab { servers: Vec::with_capacity(count), networks, build_time: Duration::ZERO };
        let mut batch = String::new();
        for n in 0..networks {
            for bridge in [format!("br-o{n}"), format!("br-q{n}")] {
                let _ = writeln!(batch, "link add {bridge} type bridge stp_state 0 forward_delay 0");
                let _ = writeln!(batch, "link set {bridge} up");
            }
        }
        for i in 0..count {
            let network = i / PORTS_PER_BRIDGE;
            let index = i % PORTS_PER_BRIDGE;
            let port = format!("p{network}x{index}");
            let _ = writeln!(batch, "link add {port} type veth peer name h{network}x{index}");
            let _ = writeln!(batch, "link set {port} master br-o{network}");
            let ip = Ipv4Addr::new(10, network as u8, 1 + (index / 250) as u8, 2 + (index % 250) as u8);
            lab.servers.push(LabServer { name: format!("srv-{i:05}"), network, port, ip });
        }
        let file = dir.join("lab.batch");
        std::fs::write(&file, batch)?;
        ip(&["-n", SWITCH_NETNS, "-batch", &file.to_string_lossy()])?;
        lab.build_time = clock.elapsed();
        Ok(lab)
    }

    /// A `cordon.toml` for this lab: one switch, `networks` operational networks each with its
    /// quarantine network, one server per port, a suricata-eve source on `eve` and a policy that
    /// quarantines on every high-severity alert, with a breaker that never trips in a bench.
    pub fn config(&self, data_dir: &Path, eve: &Path) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "[manager]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ninstance = \"bench\"\nreconcile_interval = \"1h\"\n\n",
            data_dir.display()
        );
        for n in 0..self.networks {
            let _ = write!(
                out,
                "[[network]]\nname = \"office-{n}\"\nrole = \"operational\"\nsubnet = \"10.{n}.0.0/16\"\n\
                 gateway = \"10.{n}.0.1\"\nquarantine_network = \"quarantine-{n}\"\nbridge = \"br-o{n}\"\n\n\
                 [[network]]\nname = \"quarantine-{n}\"\nrole = \"quarantine\"\nsubnet = \"10.{q}.0.0/16\"\n\
                 gateway = \"10.{q}.0.1\"\npool = \"10.{q}.1.1-10.{q}.20.250\"\nbridge = \"br-q{n}\"\n\n",
                q = 100 + n
            );
        }
        let _ = write!(
            out,
            "[[switch]]\nname = \"tor-1\"\ndriver = \"linux-bridge\"\nnetns = \"{SWITCH_NETNS}\"\n\n\
             [[tenant]]\nname = \"bench\"\nadmin_email = \"bench@example.com\"\n\n\
             [[source]]\nname = \"ids-1\"\ntype = \"suricata-eve\"\npath = \"{}\"\n\n\
             [policy]\ndefault_action = \"notify\"\nmax_auto_actions = 1000000\nwindow = \"1h\"\n\n\
             [[policy.rule]]\nname = \"bench\"\nsources = [\"ids-1\"]\nmin_severity = \"high\"\n\
             action = \"quarantine\"\nmode = \"auto\"\n\n",
            eve.display()
        );
        for (i, server) in self.servers.iter().enumerate() {
            let b = (i as u32).to_be_bytes();
            let _ = write!(
                out,
                "[[server]]\nname = \"{}\"\nkind = \"physical\"\ntenant = \"bench\"\n[[server.nic]]\n\
                 mac = \"02:00:00:{:02x}:{:02x}:{:02x}\"\nnetwork = \"office-{}\"\nip = \"{}\"\n\
                 switch = \"tor-1\"\nport = \"{}\"\n\n",
                server.name, b[1], b[2], b[3], server.network, server.ip, server.port
            );
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", SWITCH_NETNS]).status();
    }
}

/// One Suricata EVE alert line (severity 1, the most severe) with `subject` as the source, and
/// the sensor's timestamp set to now.
pub fn eve_alert(subject: Ipv4Addr, sid: u64) -> String {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+0000");
    format!(
        "{{\"timestamp\":\"{now}\",\"flow_id\":{sid},\"in_iface\":\"eth0\",\"event_type\":\"alert\",\"src_ip\":\"{subject}\",\
         \"src_port\":40000,\"dest_ip\":\"203.0.113.5\",\"dest_port\":80,\"proto\":\"TCP\",\"alert\":{{\"action\":\"allowed\",\
         \"gid\":1,\"signature_id\":{sid},\"rev\":1,\"signature\":\"CORDON BENCH {sid}\",\
         \"category\":\"A Network Trojan was detected\",\"severity\":1}}}}\n"
    )
}

/// Port moves as the kernel announces them: `ip monitor link` in the switch namespace, read by
/// a thread that timestamps each port's first appearance on a quarantine bridge.
pub struct MoveMonitor {
    child: std::process::Child,
    moves: std::sync::mpsc::Receiver<(String, Instant)>,
}

impl MoveMonitor {
    pub fn start() -> anyhow::Result<MoveMonitor> {
        let mut child = Command::new("ip")
            .args(["-n", SWITCH_NETNS, "-o", "monitor", "link"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ip monitor")?;
        let stdout = child.stdout.take().context("ip monitor stdout")?;
        let (sender, moves) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut seen = std::collections::HashSet::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                if line.starts_with("Deleted") || !line.contains(" master br-q") {
                    continue;
                }
                // "1234: p0x5@h0x5: <...> ... master br-q0 ..."
                let Some(name) = line.split_whitespace().nth(1) else { continue };
                let port = name.trim_end_matches(':').split('@').next().unwrap_or("").to_string();
                if seen.insert(port.clone()) && sender.send((port, at)).is_err() {
                    break;
                }
            }
        });
        // Give `ip monitor` time to subscribe before anything moves.
        std::thread::sleep(Duration::from_millis(200));
        Ok(MoveMonitor { child, moves })
    }

    /// The next port that moved to a quarantine bridge, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(String, Instant)> {
        self.moves.recv_timeout(timeout).ok()
    }
}

impl Drop for MoveMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cordon serve` on the lab's configuration, killed on drop.
pub struct Serve {
    child: std::process::Child,
    pub url: String,
    pub token: String,
    pub database: PathBuf,
    pub log: PathBuf,
    /// From spawning `cordon serve` to its API listening (inventory sync included).
    pub start_time: Duration,
}

impl Serve {
    pub fn start(cordon: &Path, config: &Path, data_dir: &Path) -> anyhow::Result<Serve> {
        let log = std::env::var_os("CORDON_BENCH_SERVE_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.with_file_name("serve.log"));
        let clock = Instant::now();
        let child = Command::new(cordon)
            .args(["serve", "--config"])
            .arg(config)
            // Quiet unless asked (`CORDON_LOG=debug cordon-bench contain` to see where time goes).
            // The reconciler's end-of-pass line tells the bench when the start-up pass is over.
            .env(
                "CORDON_LOG",
                std::env::var("CORDON_LOG").unwrap_or_else(|_| "warn,cordon_engine::reconcile=debug".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", cordon.display()))?;
        let mut serve = Serve {
            child,
            url: String::new(),
            token: String::new(),
            database: data_dir.join("cordon.db"),
            log: log.clone(),
            start_time: Duration::ZERO,
        };
        let address_file = data_dir.join("cordon.addr");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(address) = std::fs::read_to_string(&address_file) {
                serve.start_time = clock.elapsed();
                serve.url = format!("http://{}", address.trim());
                serve.token = std::fs::read_to_string(data_dir.join("admin.token"))?.trim().to_string();
                return Ok(serve);
            }
            if let Some(status) = serve.child.try_wait()? {
                bail!("cordon serve exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            if Instant::now() > deadline {
                bail!("cordon serve did not start in 300 s: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the end of the reconciler's first pass (it reads every port once at start);
    /// returns how long the pass took, as the manager logged it.
    pub fn wait_for_reconciler(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains("reconciler pass")) {
                let ms = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("elapsed_ms="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                return Ok(Duration::from_millis(ms));
            }
            if Instant::now() > deadline {
                bail!("the reconciler's first pass did not end in {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A read-only connection to the manager's database, to check what it recorded.
    pub fn database(&self) -> anyhow::Result<rusqlite::Connection> {
        let connection =
            rusqlite::Connection::open_with_flags(&self.database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        connection.busy_timeout(Duration::from_secs(10))?;
        Ok(connection)
    }

    /// The manager's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU time (user + system) the manager process has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.child.id())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time of a process, from `/proc/PID/stat`.
pub fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    // SAFETY-free: the clock tick is 100 Hz on every Linux this runs on (sysconf would need libc).
    Duration::from_millis(ticks * 10)
}

/// Appends text to a file in one write.
pub fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
