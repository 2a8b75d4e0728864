//! The `redfish` power driver: reboots a physical server through its BMC's Redfish API
//! (`ComputerSystem.Reset`) and confirms the restart by what the BMC reports afterwards
//! (`PowerState` leaving `On` and coming back, or `LastResetTime` changing).
//!
//! Blocking (reqwest's blocking client); the engine calls it from `spawn_blocking`. The HTTP
//! side (TLS, authentication, error mapping, request logging) is in [`client`]; the rule that
//! decides whether what was seen proves a restart is in [`evidence`].

mod client;
mod evidence;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::Value;
use tracing::{debug, warn};

use crate::{DriverError, PowerDriver, RebootOutcome};
use client::{Connection, Tls};
use evidence::{Evidence, SystemState};

/// How to reach one BMC and which system on it to act on.
#[derive(Clone)]
pub struct RedfishSettings {
    /// `https://host[:port]`: scheme, host and port only (no path, no credentials).
    pub endpoint: String,
    /// The system's path on the BMC, e.g. `/redfish/v1/Systems/1` (a name that the BMC
    /// redirects to its UUID path is fine: same-origin redirects are followed).
    pub system: String,
    pub username: String,
    /// The password (the caller reads it from `password_file`). Never logged nor printed.
    pub password: String,
    /// PEM file with the CA certificate(s) that signed the BMC's certificate. When set, only
    /// these are trusted (the system roots are not).
    pub ca_file: Option<PathBuf>,
    /// Disables certificate verification altogether (logged as a warning). Excludes `ca_file`.
    pub insecure: bool,
    /// Time allowed for each request ([`RedfishSettings::DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// Pause between reads of the system while waiting ([`RedfishSettings::DEFAULT_POLL_INTERVAL`]).
    pub poll_interval: Duration,
}

impl RedfishSettings {
    /// Default time allowed for one HTTP request (connect, TLS, answer).
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default pause between two reads of the system while waiting for the restart.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// Settings with the defaults: system roots, verification on, 10 s per request, 1 s polls.
    pub fn new(
        endpoint: impl Into<String>,
        system: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        RedfishSettings {
            endpoint: endpoint.into(),
            system: system.into(),
            username: username.into(),
            password: password.into(),
            ca_file: None,
            insecure: false,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
        }
    }
}

impl fmt::Debug for RedfishSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishSettings")
            .field("endpoint", &self.endpoint)
            .field("system", &self.system)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("request_timeout", &self.request_timeout)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// The `redfish` power driver for one system on one BMC.
///
/// [`RedfishBmc::new`] checks the settings and loads the CA file but makes no request; the HTTP
/// client is built on the first [`PowerDriver::reboot`] (reqwest's blocking client must not be
/// built inside an async runtime, and construction may well happen there) and kept. Reboots on
/// one driver are serialised.
pub struct RedfishBmc {
    endpoint: Url,
    system_url: Url,
    username: String,
    password: String,
    tls: Tls,
    request_timeout: Duration,
    poll_interval: Duration,
    client: Mutex<Option<reqwest::blocking::Client>>,
    operation: Mutex<()>,
}

impl fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishBmc")
            .field("system", &self.system_url.as_str())
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// A settings error: nothing was sent to the BMC.
fn config_error(detail: String) -> DriverError {
    DriverError::Bmc { detail: format!("invalid redfish settings: {detail}") }
}

impl RedfishBmc {
    /// Checks the settings and prepares TLS: with `ca_file`, only the CA certificates in that
    /// file are trusted (a BMC normally carries a certificate from a private CA or a
    /// self-signed one; adding the public roots would only widen who can impersonate it);
    /// without it, the system's roots are used; `insecure = true` disables verification and logs
    /// a warning (once, here). Makes no request.
    ///
    /// Fails with [`DriverError::Bmc`] (60019) when the endpoint is not an `https://` URL with
    /// only a host and port, the system is not an absolute path, a duration is zero, both
    /// `ca_file` and `insecure` are set, or the CA file cannot be read or holds no certificate.
    pub fn new(settings: RedfishSettings) -> Result<Self, DriverError> {
        let endpoint = parse_endpoint(&settings.endpoint)?;
        let system_url = system_url(&endpoint, &settings.system)?;
        if settings.request_timeout.is_zero() {
            return Err(config_error("request_timeout must be greater than zero".into()));
        }
        if settings.poll_interval.is_zero() {
            return Err(config_error("poll_interval must be greater than zero".into()));
        }
        if settings.username.is_empty() {
            return Err(config_error("username is empty".into()));
        }
        let tls = match (&settings.ca_file, settings.insecure) {
            (Some(path), true) => {
                return Err(config_error(format!(
                    "ca_file ({}) and insecure = true exclude each other",
                    path.display()
                )));
            }
            (Some(path), false) => Tls::load_ca_file(path)?,
            (None, true) => {
                warn!(
                    system = %system_url,
                    "redfish: TLS CERTIFICATE VERIFICATION IS DISABLED (insecure = true) for this BMC: \
                     anyone on the path can impersonate it and read its credentials; set ca_file instead"
                );
                Tls::Insecure
            }
            (None, false) => Tls::SystemRoots,
        };
        Ok(RedfishBmc {
            endpoint,
            system_url,
            username: settings.username,
            password: settings.password,
            tls,
            request_timeout: settings.request_timeout,
            poll_interval: settings.poll_interval,
            client: Mutex::new(None),
            operation: Mutex::new(()),
        })
    }

    /// The kept HTTP client, built on first use.
    fn client(&self) -> Result<reqwest::blocking::Client, DriverError> {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = client::build(&self.endpoint, &self.tls, self.request_timeout)?;
        *slot = Some(client.clone());
        Ok(client)
    }

    fn connect(&self) -> Result<Connection, DriverError> {
        let client = self.client()?;
        Connection::open(client, self.endpoint.clone(), &self.username, &self.password, self.request_timeout)
    }
}

/// `https://host[:port]` with nothing else; returned with the path `/`.
fn parse_endpoint(endpoint: &str) -> Result<Url, DriverError> {
    // Never echo an endpoint that may carry credentials.
    let shown =
        if endpoint.contains('@') { "(with credentials, not shown)".to_string() } else { format!("{endpoint:?}") };
    let url =
        Url::parse(endpoint.trim()).map_err(|error| config_error(format!("endpoint {shown} is not a URL: {error}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config_error("the endpoint must not carry credentials (use username and password_file)".into()));
    }
    if url.scheme() != "https" {
        return Err(config_error(format!("endpoint {shown} must be an https:// URL")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(config_error(format!("endpoint {shown} has no host")));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(config_error(format!(
            "endpoint {shown} must be scheme, host and port only (the system path goes in `system`)"
        )));
    }
    Ok(url)
}

/// The system's URL: `system` must be an absolute path on the endpoint.
fn system_url(endpoint: &Url, system: &str) -> Result<Url, DriverError> {
    let system = system.trim();
    if !system.starts_with('/') || system.starts_with("//") {
        return Err(config_error(format!("system {system:?} must be an absolute path such as /redfish/v1/Systems/1")));
    }
    let url = endpoint.join(system).map_err(|error| config_error(format!("system {system:?}: {error}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config_error(format!("system {system:?} must be a plain path")));
    }
    Ok(url)
}

/// What the system resource offers for a reset.
#[derive(Debug)]
struct SystemView {
    state: SystemState,
    reset_target: Option<String>,
    /// `None` when the BMC does not say (then any standard value may be tried).
    allowed: Option<Vec<String>>,
    action_info: Option<String>,
}

impl SystemView {
    fn parse(body: &Value) -> SystemView {
        let reset = body.pointer("/Actions/#ComputerSystem.Reset");
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
        SystemView {
            state: SystemState {
                power_state: text(body.get("PowerState")),
                last_reset_time: text(body.get("LastResetTime")),
            },
            reset_target: text(reset.and_then(|reset| reset.get("target"))),
            allowed: reset.and_then(|reset| reset.get("ResetType@Redfish.AllowableValues")).map(string_list),
            action_info: text(reset.and_then(|reset| reset.get("@Redfish.ActionInfo"))),
        }
    }
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// One reboot in progress: the connection, the clock and the observation log.
struct Run<'a> {
    bmc: &'a RedfishBmc,
    connection: &'a Connection,
    start: Instant,
    observed: Vec<String>,
    last_poll_error: Option<String>,
    /// The reset types the BMC accepted so far, in order.
    requested: Vec<&'static str>,
}

impl Run<'_> {
    fn note(&mut self, line: impl fmt::Display) {
        let line = format!("{line} at +{:.1} s", self.start.elapsed().as_secs_f64());
        debug!(system = %self.bmc.system_url, "redfish: {line}");
        self.observed.push(line);
    }

    fn read_system(&self) -> Result<SystemView, DriverError> {
        let body = self.connection.get_json(&self.bmc.system_url)?;
        Ok(SystemView::parse(&body))
    }

    /// The allowed reset types: inline, else from the action's `@Redfish.ActionInfo`.
    fn allowed_reset_types(&mut self, view: &SystemView) -> Result<Option<Vec<String>>, DriverError> {
        if view.allowed.is_some() {
            return Ok(view.allowed.clone());
        }
        let Some(info) = &view.action_info else { return Ok(None) };
        let url = self.connection.resolve(info)?;
        let body = self.connection.get_json(&url)?;
        let parameters = body.get("Parameters").and_then(Value::as_array);
        let reset_type = parameters.and_then(|list| {
            list.iter().find(|parameter| parameter.get("Name").and_then(Value::as_str) == Some("ResetType"))
        });
        Ok(reset_type.and_then(|parameter| parameter.get("AllowableValues")).map(string_list))
    }

    fn reset(&mut self, target: &Url, reset_type: &'static str) -> Result<(), DriverError> {
        let status = self.connection.post_reset(target, reset_type)?;
        self.note(format_args!("{reset_type} accepted ({})", status.as_u16()));
        self.requested.push(reset_type);
        Ok(())
    }

    /// Reads the system once while waiting; an auth failure ends the wait, other failures are
    /// noted (each distinct one once) and the wait goes on.
    fn poll(&mut self) -> Result<Option<SystemState>, DriverError> {
        match self.read_system() {
            Ok(view) => {
                self.last_poll_error = None;
                Ok(Some(view.state))
            }
            Err(error @ DriverError::BmcAuth { .. }) => Err(error),
            Err(error) => {
                let text = format!("reading the system failed: {error}");
                if self.last_poll_error.as_deref() != Some(text.as_str()) {
                    self.note(&text);
                    self.last_poll_error = Some(text);
                }
                Ok(None)
            }
        }
    }

    /// Sleeps one poll interval, or until `until`, whichever is first. False when `until` has
    /// already passed.
    fn pause(&self, until: Instant) -> bool {
        let now = Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep(self.bmc.poll_interval.min(until - now));
        true
    }

    fn not_confirmed(&self, what: &str, deadline: Duration) -> DriverError {
        DriverError::NotConfirmed {
            detail: format!(
                "{what}: nothing confirmed it within {:.1} s; observed: {}",
                deadline.as_secs_f64(),
                self.observed.join("; ")
            ),
        }
    }

    fn outcome(&mut self, method: &str, powered_on: bool) -> RebootOutcome {
        RebootOutcome { method: method.to_string(), powered_on, observed: std::mem::take(&mut self.observed) }
    }

    /// Powers on a system found off; confirmed once it reads `On`.
    fn power_on(
        &mut self,
        target: &Url,
        allowed: Option<&[String]>,
        deadline: Duration,
    ) -> Result<RebootOutcome, DriverError> {
        let reset_type = pick(allowed, &["On", "ForceOn"]).ok_or_else(|| DriverError::Bmc {
            detail: format!(
                "{} is off and offers neither On nor ForceOn (allowed: {})",
                self.bmc.system_url,
                allowed.unwrap_or_default().join(", ")
            ),
        })?;
        self.reset(target, reset_type)?;
        let until = self.start + deadline;
        let mut last = Some("Off".to_string());
        loop {
            if let Some(state) = self.poll()? {
                if state.power_state != last {
                    self.note(format_args!("PowerState {}", state.power_state.as_deref().unwrap_or("(none)")));
                    last = state.power_state.clone();
                }
                if state.is_on() {
                    return Ok(self.outcome("power_on", true));
                }
            }
            if !self.pause(until) {
                break;
            }
        }
        Err(self.not_confirmed(&format!("the system was off; {reset_type} was requested"), deadline))
    }

    /// Graceful restart, forced after `graceful_timeout`, confirmed by [`Evidence`].
    fn restart(
        &mut self,
        target: &Url,
        allowed: Option<&[String]>,
        initial: &SystemState,
        graceful_timeout: Duration,
        deadline: Duration,
    ) -> Result<RebootOutcome, DriverError> {
        let force_type = pick(allowed, &["ForceRestart"]);
        let mut evidence = Evidence::new(initial);
        let mut method = "graceful";
        if let Some(graceful) = pick(allowed, &["GracefulRestart"]) {
            self.reset(target, graceful)?;
        } else if let Some(force) = force_type {
            self.note("GracefulRestart not offered");
            self.reset(target, force)?;
            method = "forced";
        } else {
            return Err(DriverError::Bmc {
                detail: format!(
                    "{} offers neither GracefulRestart nor ForceRestart (allowed: {})",
                    self.bmc.system_url,
                    allowed.unwrap_or_default().join(", ")
                ),
            });
        }

        let final_until = self.start + deadline;
        let graceful_until =
            if method == "graceful" { self.start + graceful_timeout.min(deadline) } else { final_until };
        if self.wait(&mut evidence, graceful_until)? {
            return Ok(self.outcome(method, false));
        }

        if method == "graceful" && Instant::now() < final_until {
            if !evidence.left_on() {
                // The graceful request changed nothing observable: force it.
                match force_type {
                    Some(force) => {
                        self.note(format_args!(
                            "graceful timeout ({:.1} s): no restart seen",
                            graceful_timeout.as_secs_f64()
                        ));
                        self.reset(target, force)?;
                        method = "forced";
                    }
                    None => self.note("ForceRestart not offered; waiting"),
                }
            } else if evidence.is_off() {
                // It went down but has not come back: power it on.
                match pick(allowed, &["On", "ForceOn"]) {
                    Some(on) => {
                        self.note(format_args!(
                            "graceful timeout ({:.1} s): still Off",
                            graceful_timeout.as_secs_f64()
                        ));
                        self.reset(target, on)?;
                        method = "forced";
                    }
                    None => self.note("On not offered; waiting"),
                }
            }
            // Otherwise it is between states (PoweringOn, ...): let it finish.
            if self.wait(&mut evidence, final_until)? {
                return Ok(self.outcome(method, false));
            }
        }
        Err(self.not_confirmed(&format!("requested {}", self.requested.join(" then ")), deadline))
    }

    /// Polls until the evidence confirms a restart (true) or `until` passes (false). The first
    /// read is immediate: a BMC may show the system leaving `On` only briefly.
    fn wait(&mut self, evidence: &mut Evidence, until: Instant) -> Result<bool, DriverError> {
        loop {
            if let Some(state) = self.poll()? {
                for line in evidence.observe(&state) {
                    self.note(line);
                }
                if evidence.confirmed() {
                    return Ok(true);
                }
            }
            if !self.pause(until) {
                return Ok(false);
            }
        }
    }

    /// Waits (up to `until`) for a system in a transitional power state to settle.
    fn settle(&mut self, mut state: SystemState, until: Instant) -> Result<Option<SystemState>, DriverError> {
        while !state.is_settled() {
            if !self.pause(until) {
                return Ok(None);
            }
            let Some(next) = self.poll()? else { continue };
            if next.power_state != state.power_state {
                self.note(format_args!("PowerState {}", next.power_state.as_deref().unwrap_or("(none)")));
            }
            state = next;
        }
        Ok(Some(state))
    }
}

/// An error after a reset was accepted says so: the server may be restarting regardless.
fn after_requests(requested: &[&str], error: DriverError) -> DriverError {
    if requested.is_empty() {
        return error;
    }
    let context = format!(" (after the BMC had accepted {}; the server may be restarting)", requested.join(" then "));
    match error {
        DriverError::BmcAuth { detail } => DriverError::BmcAuth { detail: detail + &context },
        DriverError::BmcTimeout { detail } => DriverError::BmcTimeout { detail: detail + &context },
        DriverError::Bmc { detail } => DriverError::Bmc { detail: detail + &context },
        other => other,
    }
}

/// The first of `wanted` that `allowed` permits (`None` = everything is permitted).
fn pick<'w>(allowed: Option<&[String]>, wanted: &[&'w str]) -> Option<&'w str> {
    wanted.iter().copied().find(|want| allowed.is_none_or(|list| list.iter().any(|value| value == want)))
}

impl PowerDriver for RedfishBmc {
    fn kind(&self) -> &'static str {
        "redfish"
    }

    fn target(&self) -> String {
        self.system_url.to_string()
    }

    fn reboot(&self, graceful_timeout: Duration, deadline: Duration) -> Result<RebootOutcome, DriverError> {
        let _serialised = self.operation.lock().unwrap_or_else(PoisonError::into_inner);
        let start = Instant::now();
        let connection = self.connect()?;
        let mut run = Run {
            bmc: self,
            connection: &connection,
            start,
            observed: Vec::new(),
            last_poll_error: None,
            requested: Vec::new(),
        };
        let result =
            reboot_with(&mut run, graceful_timeout, deadline).map_err(|error| after_requests(&run.requested, error));
        connection.close();
        match &result {
            Ok(outcome) => debug!(
                system = %self.system_url,
                method = %outcome.method,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "redfish: reboot confirmed"
            ),
            Err(error) => debug!(
                system = %self.system_url,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "redfish: reboot failed: {error}"
            ),
        }
        result
    }
}

fn reboot_with(
    run: &mut Run<'_>,
    graceful_timeout: Duration,
    deadline: Duration,
) -> Result<RebootOutcome, DriverError> {
    let view = run.read_system()?;
    let power = view
        .state
        .power_state
        .clone()
        .ok_or_else(|| DriverError::Bmc { detail: format!("{} reports no PowerState", run.bmc.system_url) })?;
    run.note(format_args!("PowerState {power}"));
    if let Some(time) = &view.state.last_reset_time {
        run.note(format_args!("LastResetTime {time}"));
    }
    let target = view.reset_target.as_deref().ok_or_else(|| DriverError::Bmc {
        detail: format!("{} offers no #ComputerSystem.Reset action", run.bmc.system_url),
    })?;
    let target = run.connection.resolve(target)?;
    let allowed = run.allowed_reset_types(&view)?;

    let state = match run.settle(view.state, run.start + graceful_timeout.min(deadline))? {
        Some(state) => state,
        None => {
            return Err(run.not_confirmed("the power state did not settle, so nothing was requested", deadline));
        }
    };
    if state.is_off() {
        run.power_on(&target, allowed.as_deref(), deadline)
    } else {
        run.restart(&target, allowed.as_deref(), &state, graceful_timeout, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RedfishSettings {
        RedfishSettings::new("https://10.0.0.5", "/redfish/v1/Systems/1", "admin", "hunter2-secret")
    }

    #[test]
    fn target_and_debug() {
        let bmc = RedfishBmc::new(settings()).unwrap();
        assert_eq!(bmc.target(), "https://10.0.0.5/redfish/v1/Systems/1");
        assert_eq!(bmc.kind(), "redfish");
        let debug = format!("{bmc:?} {:?}", settings());
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn endpoint_checks() {
        for bad in [
            "http://10.0.0.5",
            "https://10.0.0.5/redfish",
            "https://admin:pw@10.0.0.5",
            "http://admin:pw@10.0.0.5",
            "https://admin:pw@[::1",
            "https://10.0.0.5?x=1",
            "10.0.0.5",
        ] {
            let mut s = settings();
            s.endpoint = bad.into();
            let error = RedfishBmc::new(s).unwrap_err();
            assert_eq!(error.message_number(), 60019, "{bad}: {error}");
            assert!(!error.to_string().contains("pw@"), "{error}");
        }
        let mut s = settings();
        s.endpoint = "https://bmc.example:8443/".into();
        assert_eq!(RedfishBmc::new(s).unwrap().target(), "https://bmc.example:8443/redfish/v1/Systems/1");
        let mut s = settings();
        s.system = "redfish/v1/Systems/1".into();
        assert!(RedfishBmc::new(s).is_err());
        let mut s = settings();
        s.poll_interval = Duration::ZERO;
        assert!(RedfishBmc::new(s).is_err());
        let mut s = settings();
        s.insecure = true;
        s.ca_file = Some("/nonexistent.pem".into());
        assert!(RedfishBmc::new(s).unwrap_err().to_string().contains("exclude each other"));
        let mut s = settings();
        s.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(RedfishBmc::new(s).unwrap_err().to_string().contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn errors_after_a_reset_say_so() {
        let error = DriverError::BmcTimeout { detail: "GET x: no answer".into() };
        assert_eq!(after_requests(&[], error.clone()), error);
        let error = after_requests(&["GracefulRestart", "ForceRestart"], error);
        assert_eq!(
            error.to_string(),
            "GET x: no answer (after the BMC had accepted GracefulRestart then ForceRestart; the server may be restarting)"
        );
        assert_eq!(error.message_number(), 60018);
        let not_confirmed = DriverError::NotConfirmed { detail: "d".into() };
        assert_eq!(after_requests(&["On"], not_confirmed.clone()), not_confirmed);
    }

    #[test]
    fn picking_reset_types() {
        let list = vec!["On".to_string(), "ForceRestart".to_string()];
        assert_eq!(pick(Some(&list), &["GracefulRestart"]), None);
        assert_eq!(pick(Some(&list), &["ForceRestart"]), Some("ForceRestart"));
        assert_eq!(pick(None, &["GracefulRestart"]), Some("GracefulRestart"));
        assert_eq!(pick(Some(&list), &["On", "ForceOn"]), Some("On"));
    }

    #[test]
    fn parses_system() {
        let body = serde_json::json!({
            "PowerState": "On",
            "LastResetTime": "2026-11-27T10:00:00Z",
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": ["On", "GracefulRestart", 3]
            }}
        });
        let view = SystemView::parse(&body);
        assert_eq!(view.state.power_state.as_deref(), Some("On"));
        assert_eq!(view.state.last_reset_time.as_deref(), Some("2026-11-27T10:00:00Z"));
        assert_eq!(view.reset_target.as_deref(), Some("/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"));
        assert_eq!(view.allowed, Some(vec!["On".to_string(), "GracefulRestart".to_string()]));
        let empty = SystemView::parse(&serde_json::json!({}));
        assert!(empty.state.power_state.is_none() && empty.reset_target.is_none() && empty.allowed.is_none());
    }
}
