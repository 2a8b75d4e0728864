//! A real Open vSwitch for tests: ovsdb-server and ovs-vswitchd started as children under a
//! temporary directory (nothing in /run/openvswitch), one bridge with the userspace datapath
//! (`datapath_type=netdev`), and access ports that are veth pairs leading to small host
//! namespaces (`eth0`, 10.77.<net>.<i>/24).
//!
//! ovs-vswitchd runs inside a network namespace of its own (the "switch"): the userspace
//! datapath creates a tap per bridge and one called `ovs-netdev`, which would collide between
//! labs running in parallel in one namespace. The switch-side veth ends live there too.
//!
//! Setup uses `ovs-vsctl` against the lab's own socket (the driver under test never does).
//! Dropping the lab kills both daemons by PID, deletes every namespace and the directory, also
//! when a test panics. Names carry the test process id and a counter (prefix `cov`).
//!
//! Shared by `crates/cordon-drivers/tests` and `crates/cordon/tests` (through `#[path]`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|error| {
        panic!(
            "cannot run `{program} {}`: {error} (scripts/install-deps.sh installs openvswitch-switch, iproute2, iputils-ping)",
            args.join(" ")
        )
    })
}

fn must(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One access port and the host namespace behind it.
#[derive(Debug, Clone)]
pub struct OvsHost {
    /// The OVS port (switch-side veth end), e.g. `p1`.
    pub port: String,
    /// The host's namespace.
    pub netns: String,
    /// Its IPv4 address (without prefix).
    pub address: String,
}

pub struct OvsLab {
    pub dir: tempfile::TempDir,
    /// The switch namespace (where ovs-vswitchd and the port ends are).
    pub switch_netns: String,
    pub bridge: String,
    pub hosts: Vec<OvsHost>,
    ovsdb: Option<Child>,
    vswitchd: Option<Child>,
    namespaces: Vec<String>,
}

impl OvsLab {
    /// Starts both daemons and creates the bridge (no ports yet).
    pub fn new() -> OvsLab {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "the Open vSwitch tests create namespaces and veth pairs and must run as root");
        assert!(Path::new(SCHEMA).exists(), "{SCHEMA} is missing: run scripts/install-deps.sh (openvswitch-switch)");
        let id = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = format!("cov{}-{id}", std::process::id());
        let dir = tempfile::Builder::new().prefix("cordon-ovs-").tempdir().expect("temp dir");
        let mut lab = OvsLab {
            dir,
            switch_netns: format!("{base}s"),
            bridge: format!("{base}br"),
            hosts: Vec::new(),
            ovsdb: None,
            vswitchd: None,
            namespaces: Vec::new(),
        };
        assert!(lab.bridge.len() <= 15, "bridge name {} too long", lab.bridge);
        let switch = lab.switch_netns.clone();
        lab.add_namespace(&switch);
        must("ip", &["-n", &switch, "link", "set", "lo", "up"]);
        let db = lab.path("conf.db");
        must("ovsdb-tool", &["create", &db, SCHEMA]);
        lab.start_ovsdb();
        lab.vsctl(&["--no-wait", "init"]);
        lab.start_vswitchd();
        let bridge = lab.bridge.clone();
        lab.vsctl(&["add-br", &bridge, "--", "set", "bridge", &bridge, "datapath_type=netdev"]);
        lab
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The database socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    /// `unix:DIR/db.sock`, as written in the configuration.
    pub fn ovsdb(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    fn env(&self, command: &mut Command) {
        let dir = self.dir.path();
        command.env("OVS_RUNDIR", dir).env("OVS_LOGDIR", dir).env("OVS_DBDIR", dir).env("OVS_SYSCONFDIR", dir);
    }

    /// Starts ovsdb-server in the foreground (a child of the test) and waits for its socket.
    pub fn start_ovsdb(&mut self) {
        assert!(self.ovsdb.is_none(), "ovsdb-server already runs");
        let _ = std::fs::remove_file(self.socket());
        let mut command = Command::new("ovsdb-server");
        self.env(&mut command);
        command
            .arg(self.path("conf.db"))
            .arg(format!("--remote=punix:{}", self.socket().display()))
            .arg(format!("--unixctl={}", self.path("ovsdb.ctl")))
            .arg(format!("--log-file={}", self.path("ovsdb.log")))
            .arg("-vconsole:off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.ovsdb = Some(command.spawn().expect("spawn ovsdb-server"));
        let started = Instant::now();
        while !self.socket().exists() {
            assert!(started.elapsed() < Duration::from_secs(10), "ovsdb-server did not create its socket");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills ovsdb-server (SIGKILL: a crash) and waits for it.
    pub fn stop_ovsdb(&mut self) {
        if let Some(mut child) = self.ovsdb.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Kills ovs-vswitchd (the database stays up).
    pub fn stop_vswitchd(&mut self) {
        if let Some(mut child) = self.vswitchd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts ovs-vswitchd again and waits until it has applied the database's configuration.
    pub fn restart_vswitchd(&mut self) {
        assert!(self.vswitchd.is_none(), "ovs-vswitchd already runs");
        self.start_vswitchd();
        let started = Instant::now();
        loop {
            let next = self.vsctl(&["get", "Open_vSwitch", ".", "next_cfg"]);
            let cur = self.vsctl(&["get", "Open_vSwitch", ".", "cur_cfg"]);
            if cur.parse::<i64>().unwrap_or(-1) >= next.parse::<i64>().unwrap_or(0) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "ovs-vswitchd did not catch up: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Also listens on TCP (127.0.0.1, a free port); returns `tcp:127.0.0.1:PORT`.
    pub fn add_tcp_remote(&self) -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new("ovs-appctl");
        self.env(&mut command);
        let output = command
            .args(["-t", &self.path("ovsdb.ctl"), "ovsdb-server/add-remote", &format!("ptcp:{port}:127.0.0.1")])
            .output()
            .expect("run ovs-appctl");
        assert!(output.status.success(), "add-remote: {}", String::from_utf8_lossy(&output.stderr));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "ovsdb-server does not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        format!("tcp:127.0.0.1:{port}")
    }

    fn start_vswitchd(&mut self) {
        let mut command = Command::new("ip");
        self.env(&mut command);
        command
            .args(["netns", "exec", &self.switch_netns, "ovs-vswitchd"])
            .arg(format!("unix:{}", self.socket().display()))
            .arg(format!("--unixctl={}", self.path("vswitchd.ctl")))
            .arg(format!("--log-file={}", self.path("vswitchd.log")))
            .arg("-vconsole:off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.vswitchd = Some(command.spawn().expect("spawn ovs-vswitchd"));
        // Ready when it applies a configuration: `add-br` (without --no-wait) waits for that.
    }

    /// Both daemons' logs, for failure messages.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.path(name)).unwrap_or_default();
        format!("--- ovsdb.log\n{}\n--- vswitchd.log\n{}", read("ovsdb.log"), read("vswitchd.log"))
    }

    /// `ovs-vsctl --db=unix:SOCK ARGS` (test setup and independent checks only).
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.ovsdb());
        let mut full = vec![db.as_str(), "--timeout=10"];
        full.extend_from_slice(args);
        let mut command = Command::new("ovs-vsctl");
        self.env(&mut command);
        let output = command.args(&full).output().expect("run ovs-vsctl");
        assert!(
            output.status.success(),
            "`ovs-vsctl {}` failed: {}",
            full.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn add_namespace(&mut self, name: &str) {
        let _ = run("ip", &["netns", "del", name]);
        must("ip", &["netns", "add", name]);
        self.namespaces.push(name.to_string());
    }

    /// Adds access port `port` with `tag` (and `protected`), leading to a new host namespace
    /// with `address`/24; waits until ovs-vswitchd has given the port an OpenFlow number.
    pub fn add_host(&mut self, port: &str, tag: u16, protected: bool, address: &str) -> OvsHost {
        let netns = format!("{}h{}", self.switch_netns.trim_end_matches('s'), self.hosts.len() + 1);
        assert!(netns.len() <= 15, "namespace name {netns} too long");
        self.add_namespace(&netns);
        let sw = self.switch_netns.clone();
        must("ip", &["-n", &sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
        must("ip", &["-n", &sw, "link", "set", port, "up"]);
        must("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        must("ip", &["-n", &netns, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        must("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        let bridge = self.bridge.clone();
        let tag_arg = format!("tag={tag}");
        let protected_arg = format!("protected={protected}");
        self.vsctl(&["add-port", &bridge, port, &tag_arg, "--", "set", "port", port, &protected_arg]);
        let started = Instant::now();
        loop {
            let ofport = self.vsctl(&["get", "Interface", port, "ofport"]);
            if ofport.trim().parse::<i64>().unwrap_or(-1) > 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "port {port} got no ofport: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let host = OvsHost { port: port.to_string(), netns, address: address.to_string() };
        self.hosts.push(host.clone());
        host
    }

    /// The port's tag and protected flag as `ovs-vsctl` reads them (independent of the driver).
    pub fn port_state(&self, port: &str) -> (Option<u16>, bool) {
        let tag = self.vsctl(&["get", "Port", port, "tag"]);
        let protected = self.vsctl(&["get", "Port", port, "protected"]);
        (tag.trim().parse().ok(), protected.trim() == "true")
    }

    /// Sets a port's tag (and protected flag) by hand, waiting for ovs-vswitchd.
    pub fn set_by_hand(&self, port: &str, tag: u16, protected: bool) {
        self.vsctl(&["set", "Port", port, &format!("tag={tag}"), &format!("protected={protected}")]);
    }

    /// Whether `from` gets an answer from `to` (`ping -c 2 -W 1`; two tries so that a first ARP
    /// miss does not decide).
    pub fn reaches(&self, from: &OvsHost, to: &OvsHost) -> bool {
        ping(&from.netns, &to.address)
    }
}

/// `ip netns exec NETNS ping -c 2 -i 0.2 -W 1 ADDRESS`: true if any reply came back.
pub fn ping(netns: &str, address: &str) -> bool {
    let output = run("ip", &["netns", "exec", netns, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", address]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("No such file") && !stderr.contains("not found"), "ping is missing: {stderr}");
    output.status.success()
}

impl Drop for OvsLab {
    fn drop(&mut self) {
        for child in [self.vswitchd.take(), self.ovsdb.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
