//! Test support for the Redfish driver: a Python venv with sushy-tools (created once, reused),
//! a throw-away PKI made with the `openssl` CLI, a `sushy-emulator --fake` over TLS with HTTP
//! Basic authentication, and a small scripted BMC (`mock_bmc.py`) for the answers sushy cannot
//! give. Every server listens on 127.0.0.1 only and is killed by PID (and reaped) on drop, also
//! when the test panics.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The sushy-tools version the tests run against (pinned).
pub const SUSHY_TOOLS_VERSION: &str = "2.2.0";
pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "Pa55-w0rd-never-printed";

/// `RUST_LOG=cordon_drivers=debug cargo test --test redfish -- --nocapture` shows the
/// driver's request log.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    match command.output() {
        Ok(output) if output.status.success() => output,
        Ok(output) => panic!(
            "{shown} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("cannot run {shown}: {error}"),
    }
}

/// The venv with sushy-tools, created on first use under the target's tmp dir and reused by
/// later runs (an exclusive `flock` keeps parallel test processes from building it twice).
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(&base).expect("create CARGO_TARGET_TMPDIR");
        let dir = base.join("sushy-venv");
        let lock = fs::File::create(base.join("sushy-venv.lock")).expect("create the venv lock file");
        // SAFETY: flock on a valid, open descriptor; released when `lock` is closed.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock on the venv lock: {}", std::io::Error::last_os_error());
        if !venv_works(&dir) {
            let started = Instant::now();
            if dir.exists() {
                fs::remove_dir_all(&dir).expect("remove a broken venv");
            }
            let python = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".into());
            run(Command::new(&python).args(["-m", "venv"]).arg(&dir));
            run(Command::new(dir.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("sushy-tools=={SUSHY_TOOLS_VERSION}"),
            ]));
            assert!(venv_works(&dir), "the new venv at {} does not work", dir.display());
            eprintln!("created the sushy-tools venv at {} in {:.1} s", dir.display(), started.elapsed().as_secs_f64());
        }
        dir
    })
}

/// The venv imports sushy-tools at the pinned version and bcrypt.
fn venv_works(dir: &Path) -> bool {
    let check = format!(
        "import bcrypt, sushy_tools, importlib.metadata as m; assert m.version('sushy-tools') == '{SUSHY_TOOLS_VERSION}'"
    );
    dir.join("bin/sushy-emulator").exists()
        && Command::new(dir.join("bin/python"))
            .args(["-c", &check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// `name` only labels the CA's subject.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir for the PKI");
        let path = |file: &str| dir.path().join(file);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .arg("-keyout")
            .arg(path("ca.key"))
            .arg("-out")
            .arg(path("ca.pem"))
            .args(["-days", "2", "-subj", &format!("/CN=Cordon test CA {name}")]));
        run(Command::new("openssl")
            .arg("req")
            .args(ec)
            .arg("-keyout")
            .arg(path("server.key"))
            .arg("-out")
            .arg(path("server.csr"))
            .args(["-subj", "/CN=127.0.0.1"]));
        fs::write(
            path("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(path("server.csr"))
            .arg("-CA")
            .arg(path("ca.pem"))
            .arg("-CAkey")
            .arg(path("ca.key"))
            .arg("-extfile")
            .arg(path("server.ext"))
            .arg("-out")
            .arg(path("server.pem")));
        Pki { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// A free loopback port (bound then released; a tiny race with other processes is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("free port").port()
}

/// A server process killed by PID and reaped on drop.
pub struct Process {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Process {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the server's log) if it has exited.
    fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}); its log:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sushy-emulator --fake` with one system, TLS and HTTP Basic authentication.
pub struct Sushy {
    pub process: Process,
    pub port: u16,
    pub pki: Pki,
    _dir: tempfile::TempDir,
    /// Time from spawn to the first TLS answer.
    pub startup: Duration,
}

pub const SYSTEM_UUID: &str = "8d6b7c2e-4f0a-4a8e-9c51-2b1f0e7d3a11";
/// The system's name: `/redfish/v1/Systems/<name>` answers 307 to the UUID path.
pub const SYSTEM_NAME: &str = "srv-1";

impl Sushy {
    /// `power_state`: the system's initial state, `On` or `Off`.
    pub fn start(power_state: &str) -> Sushy {
        let venv = venv();
        let pki = Pki::new("sushy");
        let dir = tempfile::tempdir().expect("temp dir for sushy");
        let htpasswd = dir.path().join("htpasswd");
        // sushy only accepts bcrypt entries ($2b$); cost 4 keeps logins fast.
        let hash = run(Command::new(venv.join("bin/python"))
            .args(["-c", "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())"])
            .arg(PASSWORD));
        fs::write(&htpasswd, format!("{USERNAME}:{}", String::from_utf8_lossy(&hash.stdout).trim()))
            .expect("write htpasswd");
        let port = free_port();
        let py = |path: &Path| format!("{:?}", path.to_str().expect("utf-8 path"));
        let config = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_SSL_CERT = {}\n\
             SUSHY_EMULATOR_SSL_KEY = {}\n\
             SUSHY_EMULATOR_AUTH_FILE = {}\n\
             SUSHY_EMULATOR_STATE_DIR = {}\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '{SYSTEM_UUID}', 'name': '{SYSTEM_NAME}', \
             'power_state': '{power_state}', 'nics': []}}]\n",
            py(&pki.cert()),
            py(&pki.key()),
            py(&htpasswd),
            py(&dir.path().join("state")),
        );
        let config_path = dir.path().join("sushy.conf");
        fs::write(&config_path, config).expect("write sushy.conf");
        let log = dir.path().join("sushy.log");
        let log_file = fs::File::create(&log).expect("create sushy.log");
        let started = Instant::now();
        let child = Command::new(venv.join("bin/sushy-emulator"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn sushy-emulator");
        let mut process = Process { child, name: "sushy-emulator", log };
        wait_for_tls(&mut process, port, &pki);
        Sushy { process, port, pki, _dir: dir, startup: started.elapsed() }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// Waits until the service root answers over TLS (up to 15 s).
fn wait_for_tls(process: &mut Process, port: u16, pki: &Pki) {
    let until = Instant::now() + Duration::from_secs(15);
    let url = format!("https://127.0.0.1:{port}/redfish/v1/");
    let client = test_client(pki);
    loop {
        process.check_running();
        if client.get(&url).send().is_ok_and(|answer| answer.status().is_success()) {
            return;
        }
        assert!(
            Instant::now() < until,
            "{} did not answer on {url} within 15 s; log:\n{}",
            process.name,
            process.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The scripted BMC (`mock_bmc.py`) in one scenario.
pub struct MockBmc {
    _process: Process,
    pub port: u16,
    pub pki: Pki,
    _dir: tempfile::TempDir,
}

impl MockBmc {
    pub fn start(scenario: &str) -> MockBmc {
        let venv = venv();
        let pki = Pki::new("mock");
        let dir = tempfile::tempdir().expect("temp dir for the mock BMC");
        let log = dir.path().join("mock.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/redfish_support/mock_bmc.py");
        let mut child = Command::new(venv.join("bin/python"))
            .arg(&script)
            .arg("--cert")
            .arg(pki.cert())
            .arg("--key")
            .arg(pki.key())
            .args(["--scenario", scenario])
            .env("MOCK_BMC_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("create mock.log"))
            .spawn()
            .expect("spawn mock_bmc.py");
        let stdout = child.stdout.take().expect("mock stdout");
        let mut process = Process { child, name: "mock_bmc.py", log };
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match (read, line.trim().strip_prefix("PORT ")) {
            (Ok(_), Some(port)) => port.parse().expect("mock port"),
            _ => {
                process.check_running();
                panic!("mock_bmc.py printed {line:?} instead of its port");
            }
        };
        MockBmc { _process: process, port, pki, _dir: dir }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The requests the mock saw: (method, path, auth) with auth `basic`, `token` or `none`.
    pub fn requests(&self) -> Vec<(String, String, String)> {
        let url = format!("{}/test/log", self.endpoint());
        let body = test_client(&self.pki).get(&url).send().and_then(|answer| answer.text()).expect("GET /test/log");
        let entries: Vec<serde_json::Value> = serde_json::from_str(&body).expect("the mock's log is JSON");
        entries
            .iter()
            .map(|entry| {
                let field = |name: &str| entry[name].as_str().unwrap_or_default().to_string();
                (field("method"), field("path"), field("auth"))
            })
            .collect()
    }
}

/// A client of the tests' own (not the driver's) that trusts `pki`'s CA.
fn test_client(pki: &Pki) -> reqwest::blocking::Client {
    let pem = fs::read(pki.ca()).expect("read the test CA");
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).expect("parse the test CA");
    reqwest::blocking::Client::builder()
        .tls_certs_only(certificates)
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("test client")
}

/// A TCP listener that accepts connections and never answers.
pub struct SilentServer {
    pub addr: SocketAddr,
}

impl SilentServer {
    /// The listener's thread accepts and keeps every connection until the process ends.
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent server");
        let addr = listener.local_addr().expect("silent server address");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        SilentServer { addr }
    }
}
