//! A child process that is stopped on drop: SIGTERM to its own PID, a grace period, then
//! SIGKILL. Never by name: other tests run the same programs concurrently.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Guarded {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
}

impl Guarded {
    /// Spawns `command` (stdin closed); `name` is for messages.
    pub fn spawn(name: &str, command: &mut Command) -> Guarded {
        let child =
            command.stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Guarded { name: name.to_string(), child: Some(child), status: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Its exit status if it has exited (reaped once, remembered).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.status = child.try_wait().ok().flatten();
        }
        self.status
    }

    /// SIGTERM, wait up to `grace` for it to exit, then SIGKILL. Returns its exit status and
    /// whether it exited within the grace period (false: it had to be killed).
    pub fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        let Some(child) = self.child.as_mut() else { return (self.status, true) };
        if self.status.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.status = Some(status);
        }
        if self.status.is_some() {
            return (self.status, true);
        }
        // Not reaped yet, so the PID is still ours (at worst a zombie).
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.status = Some(status);
                return (self.status, true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} (pid {}) ignored SIGTERM for {grace:?}: killing it", self.name, child.id());
        let _ = child.kill();
        self.status = child.wait().ok();
        (self.status, false)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
