//! A private libvirtd (monolithic, QEMU driver) for tests, run the way
//! `/work/shared/guide/environment.md` records it works on these machines:
//!
//! - inside a network namespace that holds the bridges (`ip netns exec NETNS`), so the VMs'
//!   taps land next to them, like the lab's switch namespace;
//! - in its own mount namespace (`unshare -m`) where `/etc/libvirt`, `/var` and `/run` are
//!   bind mounts of directories under a temporary directory, and `/var/cache/libvirt` a bind
//!   mount of a persistent cache directory (QEMU capabilities: a cold start probes QEMU for
//!   several seconds, a warm one takes well under a second);
//! - `qemu.conf`: QEMU runs as root, no ownership changes, no security driver, no cgroups,
//!   QEMU's output to files (no virtlogd); `libvirtd.conf`: its own socket directory, no
//!   authentication; clients connect with `qemu:///system?socket=DIR/libvirt-sock`.
//!
//! Everything is torn down on drop, also on panic: libvirtd and every QEMU it started are
//! killed by PID (the QEMU PIDs come from libvirtd's pid files), then any process left in the
//! namespace it created, then that namespace; the mounts disappear with the mount namespace,
//! the directories with the temporary directory. (Do not make the test process a child
//! subreaper: QEMU daemonises, and libvirtd waits ~40 s for a killed QEMU it cannot reap.)
//!
//! Needs root, `ip` (iproute2), `unshare` (util-linux), `/usr/sbin/libvirtd`
//! (libvirt-daemon, libvirt-daemon-driver-qemu), `qemu-system-x86_64` and a `libvirt-qemu`
//! user: `scripts/install-deps.sh` installs them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const LIBVIRTD: &str = "/usr/sbin/libvirtd";
pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// Prefix of the test namespaces: `cdv-<pid>`.
pub const NETNS_PREFIX: &str = "cdv-";

pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the libvirt tests start libvirtd in network and mount namespaces and must run as root (euid is {euid})"
    );
    for (path, hint) in [
        (LIBVIRTD, "apt-get install libvirt-daemon libvirt-daemon-driver-qemu"),
        (QEMU, "apt-get install -t bookworm-backports qemu-system-x86"),
    ] {
        assert!(Path::new(path).exists(), "{path} is missing: run scripts/install-deps.sh ({hint})");
    }
    let user = run("getent", &["passwd", "libvirt-qemu"]);
    assert!(user.status.success(), "libvirtd aborts without a `libvirt-qemu` user: run scripts/install-deps.sh");
}

pub fn run(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(error) => panic!("cannot run `{program} {}`: {error}", args.join(" ")),
    }
}

/// Runs `ip ARGS`, panicking with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let output = run("ip", args);
    assert!(
        output.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The process exists and has not exited (a zombie waiting for its parent counts as gone).
fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (COMM) STATE ...": COMM may contain spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends `signal` to `pid`, ignoring errors (the process may be gone).
fn signal(pid: i32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill has no memory-safety preconditions; the pid is one we started.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Waits until `pid` has exited: reaps it if it is our child; a daemonised QEMU's parent
/// (init) reaps it in its own time, exiting is enough. Gives up after `timeout`.
fn reap(pid: i32, timeout: Duration) -> bool {
    let started = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid || !pid_alive(pid) {
            return true;
        }
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A network namespace `cdv-<pid>` holding bridges (up); deleted on drop after killing any
/// process still in it (only processes the test started can be there).
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(bridges: &[&str]) -> TestNetns {
        remove_stale_namespaces();
        let name = format!("{NETNS_PREFIX}{}", std::process::id());
        let _ = run("ip", &["netns", "del", &name]);
        ip(&["netns", "add", &name]);
        let netns = TestNetns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        for bridge in bridges {
            netns.ip(&["link", "add", bridge, "type", "bridge"]);
            netns.ip(&["link", "set", bridge, "up"]);
        }
        netns
    }

    /// `ip -n NETNS ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// `(master, isolated, up)` of a link, read with `ip -d link show`.
    pub fn link(&self, name: &str) -> (Option<String>, bool, bool) {
        let text = self.ip(&["-d", "link", "show", "dev", name]);
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |key: &str| words.windows(2).find(|pair| pair[0] == key).map(|pair| pair[1].to_string());
        let master = after("master");
        let isolated = after("isolated").as_deref() == Some("on");
        let flags = words.get(2).copied().unwrap_or("");
        let up = flags.trim_matches(['<', '>']).split(',').any(|flag| flag == "UP");
        (master, isolated, up)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        kill_namespace_processes(&self.name);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn kill_namespace_processes(netns: &str) {
    let output = run("ip", &["netns", "pids", netns]);
    for pid in String::from_utf8_lossy(&output.stdout).split_whitespace().filter_map(|pid| pid.parse::<i32>().ok()) {
        signal(pid, libc::SIGKILL);
        reap(pid, Duration::from_secs(5));
    }
}

/// Namespaces `cdv-<pid>` whose test process is gone (a run that was killed): their
/// processes are killed and the namespaces deleted.
fn remove_stale_namespaces() {
    let output = run("ip", &["netns", "list"]);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix(NETNS_PREFIX).and_then(|pid| pid.parse::<i32>().ok()) else { continue };
        if pid != std::process::id() as i32 && !pid_alive(pid) {
            eprintln!("removing stale test namespace {name}");
            kill_namespace_processes(name);
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A running private libvirtd. See the module documentation.
pub struct Libvirtd {
    netns: String,
    dir: tempfile::TempDir,
    cache: PathBuf,
    daemon: Option<Child>,
    /// `qemu:///system?socket=DIR/sock/libvirt-sock`.
    pub uri: String,
    /// QEMU PIDs seen so far (pid files disappear when libvirtd cleans up a domain).
    qemu_pids: Vec<i32>,
}

impl Libvirtd {
    /// Starts libvirtd inside the existing network namespace `netns`, keeping the QEMU
    /// capability cache in `cache` (created if missing). Returns once the daemon accepts
    /// connections and has probed QEMU (a domain capabilities query answered).
    pub fn start(netns: &str, cache: &Path) -> (Libvirtd, Duration) {
        // The bind mount needs a mount point; an empty /etc/libvirt is all that is left
        // behind on the host (libvirt-daemon-system would create it).
        std::fs::create_dir_all("/etc/libvirt").expect("create /etc/libvirt (mount point)");
        std::fs::create_dir_all(cache).expect("create the libvirt cache directory");
        let dir = tempfile::Builder::new().prefix("cordon-libvirtd-").tempdir().expect("temporary directory");
        let root = dir.path();
        for sub in ["etc", "var/cache/libvirt", "var/lib/libvirt", "var/log/libvirt", "run", "sock"] {
            std::fs::create_dir_all(root.join(sub)).expect("create the libvirtd directories");
        }
        let sock = root.join("sock");
        std::fs::write(
            root.join("etc/libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n\
                 log_outputs = \"3:file:{}\"\n",
                sock.display(),
                root.join("libvirtd.log").display()
            ),
        )
        .expect("write libvirtd.conf");
        std::fs::write(
            root.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nsecurity_driver = \"none\"\n\
             cgroup_controllers = [ ]\nstdio_handler = \"file\"\n",
        )
        .expect("write qemu.conf");
        let uri = format!("qemu:///system?socket={}", sock.join("libvirt-sock").display());
        let mut libvirtd = Libvirtd {
            netns: netns.to_string(),
            cache: cache.to_path_buf(),
            dir,
            daemon: None,
            uri,
            qemu_pids: Vec::new(),
        };
        let elapsed = libvirtd.start_daemon();
        (libvirtd, elapsed)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Starts (or restarts) the daemon; returns how long until it answered a domain
    /// capabilities query.
    pub fn start_daemon(&mut self) -> Duration {
        assert!(self.daemon.is_none(), "libvirtd already runs");
        let root = self.dir.path();
        let script = format!(
            "set -e\n\
             mount --make-rprivate /\n\
             mount --bind {etc} /etc/libvirt\n\
             mount --bind {var} /var\n\
             mount --bind {cache} /var/cache/libvirt\n\
             mount --bind {run} /run\n\
             exec {LIBVIRTD} -f /etc/libvirt/libvirtd.conf\n",
            etc = root.join("etc").display(),
            var = root.join("var").display(),
            cache = self.cache.display(),
            run = root.join("run").display(),
        );
        let log = std::fs::File::create(root.join("libvirtd.out")).expect("libvirtd output file");
        let err = log.try_clone().expect("libvirtd output file");
        let started = Instant::now();
        // `ip netns exec` and `unshare` exec (no fork) and the script execs libvirtd, so
        // the child's PID is libvirtd's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start libvirtd");
        self.daemon = Some(child);
        self.wait_ready(started);
        started.elapsed()
    }

    fn wait_ready(&mut self, started: Instant) {
        let socket = self.dir.path().join("sock/libvirt-sock");
        let limit = Duration::from_secs(90);
        loop {
            if let Some(child) = self.daemon.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.daemon = None;
                panic!("libvirtd exited during startup ({status}):\n{}", self.logs());
            }
            if socket.exists()
                && let Ok(connection) = virt::connect::Connect::open(Some(&self.uri))
                && connection.domain_capabilities(Some(QEMU), Some("x86_64"), None, Some("qemu"), 0).is_ok()
            {
                return;
            }
            assert!(started.elapsed() < limit, "libvirtd not ready after {limit:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// libvirtd's PID, if it runs.
    pub fn pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(|child| child.id() as i32)
    }

    /// Kills libvirtd (SIGKILL: like a crash; its QEMUs keep running) and reaps it.
    pub fn kill_daemon(&mut self) {
        self.collect_qemu_pids();
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Records the PIDs of the QEMUs libvirtd started (from its pid files).
    pub fn collect_qemu_pids(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("run/libvirt/qemu")) else { return };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|ext| ext == "pid")
                && let Ok(text) = std::fs::read_to_string(entry.path())
                && let Ok(pid) = text.trim().parse::<i32>()
                && !self.qemu_pids.contains(&pid)
            {
                self.qemu_pids.push(pid);
            }
        }
    }

    /// libvirtd's own log and output, for failure messages.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- libvirtd.log ---\n{}\n--- libvirtd output ---\n{}",
            tail(read("libvirtd.log")),
            tail(read("libvirtd.out"))
        )
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.kill_daemon();
        for pid in std::mem::take(&mut self.qemu_pids) {
            // Only QEMUs: a recorded pid could have been reused after its QEMU exited.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("qemu-system") {
                signal(pid, libc::SIGKILL);
            }
            reap(pid, Duration::from_secs(5));
        }
    }
}

/// A tiny domain with one bridged NIC: no disk, ACPI on (libvirt 9 would pass QEMU 10 the
/// refused `-no-acpi`), iPXE ROM off (it would burn a core for ~17 s per boot).
#[allow(dead_code)]
pub fn tiny_domain_xml(name: &str, mac: &str, bridge: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>{QEMU}</emulator>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='{bridge}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>"
    )
}
