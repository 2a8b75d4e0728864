//! Harness shared by the tests with real sensors (Suricata, ClamAV): processes that are always
//! stopped (by their own PID, also when a test panics), waiting with deadlines, EVE timestamps.
//! Used as `mod support;` next to `mod common;`.

#![allow(dead_code)]

pub mod clamav;
pub mod proc;
pub mod suricata;
pub mod time;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fixtures folder (crates/cordon/tests/fixtures).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Appends sections (sources, policy) to a lab's cordon.toml before `Manager::start`.
pub fn append_config(config: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(config).unwrap();
    writeln!(file, "\n{text}").unwrap();
}

/// Calls `probe` every `every` until it returns `Some`, or `None` once `timeout` has passed.
pub fn wait_for<T>(timeout: Duration, every: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A `Command` that runs `program` inside network namespace `netns`.
pub fn in_netns(netns: &str, program: &str) -> std::process::Command {
    let mut command = std::process::Command::new("ip");
    command.args(["netns", "exec", netns, program]);
    command
}

/// A JSON value that is a string or a number, as text (IDs are written either way).
pub fn text_of(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A random-enough hex token (no RNG crate: time, PID and a counter through SipHash).
pub fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for round in 0..4u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(round);
        hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        hasher.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out
}
