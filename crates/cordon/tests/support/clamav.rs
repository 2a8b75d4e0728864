//! A real clamd with a custom signature database (no freshclam, no official database: nothing
//! is downloaded), its own socket, log and VirusEvent. Stopped by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::proc::Guarded;

#[derive(Debug)]
pub struct Clamd {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    process: Guarded,
}

impl Clamd {
    /// Starts clamd in the foreground with DIR/db holding `signatures` (written as
    /// DIR/db/cordon-test.ndb: `Name:TargetType:Offset:HexSignature` lines) and waits for its
    /// socket. `virus_event` is clamd's VirusEvent command (run with `sh -c`; `%v` is the virus
    /// name, and CLAM_VIRUSEVENT_VIRUSNAME / CLAM_VIRUSEVENT_FILENAME are its only environment).
    pub fn start(dir: &Path, signatures: &str, virus_event: &str) -> Clamd {
        let db = dir.join("db");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(db.join("cordon-test.ndb"), signatures).unwrap();
        let socket = dir.join("clamd.sock");
        let config = dir.join("clamd.conf");
        // No `User`: clamd stays root, as the tests are. No TCPSocket: nothing listens on the network.
        std::fs::write(
            &config,
            format!(
                "# Written by Cordon's tests.\n\
                 LocalSocket {socket}\n\
                 DatabaseDirectory {db}\n\
                 TemporaryDirectory {tmp}\n\
                 PidFile {dir}/clamd.pid\n\
                 LogFile {dir}/clamd.log\n\
                 LogTime yes\n\
                 LogVerbose yes\n\
                 Foreground yes\n\
                 SelfCheck 3600\n\
                 VirusEvent {virus_event}\n",
                socket = socket.display(),
                db = db.display(),
                tmp = tmp.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        let mut command = Command::new("clamd");
        command
            .arg(format!("--config-file={}", config.display()))
            .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
        let mut process = Guarded::spawn("clamd", &mut command);
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(socket.exists() && read("clamd.log").contains("Listening daemon")) {
            if let Some(status) = process.exited() {
                panic!("clamd exited with {status}:\n{}\n{}", read("clamd.log"), read("stderr.txt"));
            }
            assert!(Instant::now() < deadline, "clamd did not start within 20 s:\n{}", read("clamd.log"));
            std::thread::sleep(Duration::from_millis(20));
        }
        Clamd { dir: dir.to_path_buf(), config, socket, process }
    }

    /// `clamdscan` of one file through this clamd (exit 1 and "FOUND" when infected).
    pub fn scan(&self, file: &Path) -> Output {
        Command::new("clamdscan")
            .arg(format!("--config-file={}", self.config.display()))
            .args(["--no-summary", "--stdout"])
            .arg(file)
            .output()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("clamd.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default()
    }
}

/// An `.ndb` body signature for `text` (any file type, any offset).
pub fn ndb_signature(name: &str, text: &str) -> String {
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{name}:0:*:{hex}\n")
}
