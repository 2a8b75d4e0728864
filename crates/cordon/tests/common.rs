//! A real lab (network namespaces and bridges from scripts/lab.sh), a real `cordon serve` on it,
//! and the real `cordon` command. Everything is torn down on drop, also when a test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CORDON: &str = env!("CARGO_BIN_EXE_cordon");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A lab named `name` (≤ 10 chars) in a temporary folder.
#[derive(Debug)]
pub struct Lab {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn up(name: &str) -> Lab {
        assert!(
            nix_is_root(),
            "the lab tests build network namespaces and must run as root (scripts/test.sh does this)"
        );
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab { name: name.to_string(), dir };
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/lab.sh"))
            .args(["up", "--name", name, "--dir"])
            .arg(lab.dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/lab.sh up failed");
        lab
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("cordon.toml")
    }

    pub fn switch(&self) -> String {
        format!("{}-sw", self.name)
    }

    /// The namespace of a server: sbc-01 → NAME-a, ...
    pub fn host(&self, server: &str) -> String {
        let letter = match server {
            "sbc-01" => "a",
            "sbc-02" => "b",
            "sbc-03" => "c",
            other => panic!("no lab host for {other}"),
        };
        format!("{}-{letter}", self.name)
    }

    /// Whether `server`'s namespace can ping `address` (one packet, one second).
    pub fn ping(&self, server: &str, address: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.host(server), "ping", "-c1", "-W1", "-q", address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// What the administrator does in the guest OS: give eth0 this one address.
    pub fn set_address(&self, server: &str, address: &str) {
        let host = self.host(server);
        run("ip", &["-n", &host, "addr", "flush", "dev", "eth0"]);
        run("ip", &["-n", &host, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    }

    /// (master bridge, isolated) of a port, read with iproute2 independently of Cordon.
    pub fn port(&self, port: &str) -> (String, bool) {
        let out = run("ip", &["-n", &self.switch(), "-d", "-j", "link", "show", port]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let link = &json[0];
        let master = link["master"].as_str().unwrap_or("-").to_string();
        let isolated = link["linkinfo"]["info_slave_data"]["isolated"].as_bool().unwrap_or(false);
        (master, isolated)
    }

    /// Moves a port by hand, as an operator following the seed's recovery procedure would.
    pub fn move_by_hand(&self, port: &str, bridge: &str, isolated: bool) {
        let sw = self.switch();
        run("ip", &["-n", &sw, "link", "set", port, "master", bridge]);
        run(
            "ip",
            &["-n", &sw, "link", "set", port, "type", "bridge_slave", "isolated", if isolated { "on" } else { "off" }],
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/lab.sh"))
            .args(["down", "--name", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}

fn nix_is_root() -> bool {
    // SAFETY-free: read the effective uid from /proc rather than calling libc.
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `cordon serve` on a lab's configuration, killed on drop.
#[derive(Debug)]
pub struct Manager {
    child: Child,
    pub url: String,
    pub token_file: PathBuf,
    pub log: PathBuf,
}

impl Manager {
    pub fn start(config: &Path, data_dir: &Path) -> Manager {
        let log = data_dir.with_file_name("serve.log");
        // A previous run's address file would be taken for this run's.
        let _ = std::fs::remove_file(data_dir.join("cordon.addr"));
        let child = Command::new(CORDON)
            .args(["serve", "--config"])
            .arg(config)
            .env("CORDON_LOG", "info,cordon_drivers=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let mut manager =
            Manager { child, url: String::new(), token_file: data_dir.join("admin.token"), log: log.clone() };
        let address_file = data_dir.join("cordon.addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(address) = std::fs::read_to_string(&address_file) {
                manager.url = format!("http://{}", address.trim());
                return manager;
            }
            if let Ok(Some(status)) = manager.child.try_wait() {
                panic!("cordon serve exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "cordon serve did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the `cordon` command against this manager with the admin token.
    pub fn cordon(&self, args: &[&str]) -> Output {
        Command::new(CORDON)
            .args(args)
            .env("CORDON_URL", &self.url)
            .env("CORDON_TOKEN_FILE", &self.token_file)
            .env_remove("CORDON_TOKEN")
            .output()
            .unwrap()
    }

    /// Runs `cordon` and parses its JSON output; the command must succeed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cordon(args);
        assert!(out.status.success(), "cordon {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Manager {
    /// The process id of `cordon serve` (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the manager at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Polls `check` every 50 ms until it holds or `seconds` pass.
    pub fn wait_until(&self, seconds: u64, what: &str, mut check: impl FnMut(&Manager) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !check(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a secret the way an operator must: readable by its owner only (`serve` refuses a
/// secret file that group or others can read, message 60090).
pub fn write_secret(path: &Path, content: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    std::io::Write::write_all(&mut file, content.as_bytes()).unwrap();
}

/// The one step named `name` of the action's last attempt (`cordon actions show -o json`); a
/// failure that may pass is tried again automatically, each attempt journaling its own steps.
pub fn step(action: &serde_json::Value, name: &str) -> serde_json::Value {
    let last = action["attempts"].as_u64().unwrap();
    let steps: Vec<_> = action["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name && s["attempt"].as_u64() == Some(last))
        .collect();
    assert_eq!(steps.len(), 1, "one {name} step in attempt {last}: {action:#}");
    steps[0].clone()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
