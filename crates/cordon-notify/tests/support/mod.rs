//! A real SMTP server on loopback for tests: aiosmtpd (Debian's `python3-aiosmtpd`, installed by
//! scripts/install-deps.sh) with the handler in `smtp_sink.py`, which writes each message it
//! accepts, decoded, to a folder. Killed on drop. Shared with crates/cordon/tests by path.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's interpreter, which has `python3-aiosmtpd` (another `python3` may come first on
/// PATH); `AIOSMTPD_PYTHON` overrides it.
fn python() -> String {
    std::env::var("AIOSMTPD_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_string())
}

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub subject: String,
    pub from: String,
    pub to: String,
    pub message_id: String,
    /// The text body, decoded, with `\n` line ends.
    pub body: String,
}

#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl SmtpSink {
    /// Starts the server on a free loopback port and waits until it accepts connections.
    pub fn start() -> SmtpSink {
        SmtpSink::start_failing(0)
    }

    /// As [`SmtpSink::start`], refusing the first `fail_first` messages with 451.
    pub fn start_failing(fail_first: u32) -> SmtpSink {
        SmtpSink::start_with(fail_first, None)
    }

    /// As [`SmtpSink::start`], requiring STARTTLS with this certificate and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> SmtpSink {
        SmtpSink::start_with(0, Some((cert, key)))
    }

    fn start_with(fail_first: u32, tls: Option<(&Path, &Path)>) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.path().join("aiosmtpd.log");
        let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cordon-notify/tests/support");
        let support = support.canonicalize().unwrap_or(support);
        let mut command = Command::new(python());
        command.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        if let Some((cert, key)) = tls {
            command.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        let child = command
            .args(["-c", "smtp_sink.Sink"])
            .arg(dir.path().join("mail"))
            .arg(fail_first.to_string())
            .env("PYTHONPATH", &support)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} -m aiosmtpd: {e}", python()));
        let mut sink = SmtpSink { child, port, dir, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!(
                    "aiosmtpd exited with {status} (is python3-aiosmtpd installed? scripts/install-deps.sh): {}",
                    std::fs::read_to_string(&sink.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not start: {}", sink.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Mail> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.retain(|p| p.extension().is_some_and(|e| e == "json"));
        paths.sort();
        paths
            .iter()
            .map(|path| {
                let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
                let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
                Mail {
                    mail_from: text("mail_from"),
                    rcpt_tos: value["rcpt_tos"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    subject: text("subject"),
                    from: text("from"),
                    to: text("to"),
                    message_id: text("message_id"),
                    body: text("body").replace("\r\n", "\n"),
                }
            })
            .collect()
    }

    /// Waits up to `seconds` for a message that `pick` accepts.
    pub fn wait_for(&self, seconds: u64, what: &str, pick: impl Fn(&Mail) -> bool) -> Mail {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(mail) = self.messages().into_iter().find(|m| pick(m)) {
                return mail;
            }
            assert!(
                Instant::now() < deadline,
                "no e-mail {what} within {seconds} s; received: {:#?}\naiosmtpd: {}",
                self.messages().iter().map(|m| (&m.rcpt_tos, &m.subject)).collect::<Vec<_>>(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The approval links of an e-mail body: (label, URL) of each `<label>: <url>` line.
pub fn links(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|line| {
            let (label, url) = line.trim().rsplit_once(": ")?;
            let url = url.trim();
            url.contains("/approve/").then(|| (label.trim().to_string(), url.to_string()))
        })
        .collect()
}

/// A self-signed certificate for 127.0.0.1 (cert.pem, key.pem in `dir`), made with openssl.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}
