//! Real tests of the `redfish` power driver against sushy-tools 2.2.0 (`sushy-emulator --fake`,
//! over TLS with HTTP Basic authentication) and, for the answers sushy cannot give (a 500, bad
//! JSON, Redfish sessions, a BMC that ignores GracefulRestart), a small scripted BMC in Python.
//! Everything listens on 127.0.0.1 only.
//!
//! The first run creates a Python venv with sushy-tools under `CARGO_TARGET_TMPDIR` (pip must
//! reach PyPI, once); later runs reuse it. Needs `python3` (with `venv`) and `openssl`.
//!
//! Timings printed with `--nocapture`: `cargo test -p cordon-drivers --test redfish -- --nocapture`.

mod redfish_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cordon_drivers::{DriverError, PowerDriver, RedfishBmc, RedfishSettings};
use redfish_support::{MockBmc, PASSWORD, SYSTEM_NAME, SYSTEM_UUID, SilentServer, Sushy, USERNAME, free_port};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(200);

fn settings(endpoint: String, system: &str, ca: Option<PathBuf>) -> RedfishSettings {
    let mut settings = RedfishSettings::new(endpoint, system, USERNAME, PASSWORD);
    settings.ca_file = ca;
    settings.request_timeout = REQUEST_TIMEOUT;
    settings.poll_interval = POLL;
    settings
}

fn sushy_driver(sushy: &Sushy) -> RedfishBmc {
    // The system by name: sushy answers 307 to its UUID path, which the driver follows.
    let system = format!("/redfish/v1/Systems/{SYSTEM_NAME}");
    RedfishBmc::new(settings(sushy.endpoint(), &system, Some(sushy.pki.ca()))).expect("driver")
}

fn mock_driver(mock: &MockBmc) -> RedfishBmc {
    RedfishBmc::new(settings(mock.endpoint(), "/redfish/v1/Systems/1", Some(mock.pki.ca()))).expect("driver")
}

/// Index of the first observation starting with `prefix`, after `from`.
fn position(observed: &[String], prefix: &str, from: usize) -> Option<usize> {
    observed.iter().skip(from).position(|line| line.starts_with(prefix)).map(|index| index + from)
}

fn assert_no_password(error: &DriverError) {
    let text = format!("{error} {error:?}");
    assert!(!text.contains(PASSWORD), "the error leaks the password: {text}");
}

#[test]
fn reboot_of_a_running_system_is_confirmed_by_its_power_state() {
    redfish_support::init_tracing();
    let sushy = Sushy::start("On");
    eprintln!("sushy-emulator answered {:.2} s after spawn", sushy.startup.as_secs_f64());
    let driver = sushy_driver(&sushy);
    let started = Instant::now();
    // sushy's fake driver applies a restart 1-11 s after the request: a graceful timeout above
    // that keeps the outcome deterministic ("graceful").
    let outcome = driver.reboot(Duration::from_secs(15), Duration::from_secs(30)).expect("reboot confirmed");
    let elapsed = started.elapsed();
    eprintln!("reboot confirmed in {:.2} s: {outcome:?}", elapsed.as_secs_f64());
    assert!(!outcome.powered_on);
    let observed = &outcome.observed;
    match outcome.method.as_str() {
        "graceful" => assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}"),
        // Rare: the fake may apply a restart within milliseconds of the request (its delay is
        // whole seconds counted from a truncated clock), before the first read sees it Off; the
        // driver then honestly saw nothing and forced it after the graceful timeout.
        "forced" => assert!(position(observed, "ForceRestart accepted", 0).is_some(), "{observed:?}"),
        other => panic!("unexpected method {other}: {observed:?}"),
    }
    let requested = position(observed, "GracefulRestart accepted (204)", 0).expect("the request is recorded");
    assert!(observed[0].starts_with("PowerState On"), "{observed:?}");
    let off = position(observed, "PowerState Off", requested).expect("Off observed after the request");
    position(observed, "PowerState On", off).expect("On observed after Off");
}

#[test]
fn a_system_found_off_is_powered_on() {
    redfish_support::init_tracing();
    let sushy = Sushy::start("Off");
    // The UUID path directly this time (no redirect).
    let system = format!("/redfish/v1/Systems/{SYSTEM_UUID}");
    let driver = RedfishBmc::new(settings(sushy.endpoint(), &system, Some(sushy.pki.ca()))).expect("driver");
    let started = Instant::now();
    let outcome = driver.reboot(Duration::from_secs(3), Duration::from_secs(20)).expect("power-on confirmed");
    eprintln!("power-on confirmed in {:.2} s: {outcome:?}", started.elapsed().as_secs_f64());
    assert_eq!(outcome.method, "power_on");
    assert!(outcome.powered_on);
    let requested = position(&outcome.observed, "On accepted (204)", 0).expect("On requested");
    assert!(outcome.observed[0].starts_with("PowerState Off"), "{:?}", outcome.observed);
    position(&outcome.observed, "PowerState On", requested).expect("On observed after the request");
}

#[test]
fn a_wrong_password_is_bmc_auth() {
    redfish_support::init_tracing();
    let sushy = Sushy::start("On");
    let mut wrong = settings(sushy.endpoint(), &format!("/redfish/v1/Systems/{SYSTEM_UUID}"), Some(sushy.pki.ca()));
    wrong.password = "not-the-password".into();
    let driver = RedfishBmc::new(wrong).expect("driver");
    let error = driver.reboot(Duration::from_secs(2), Duration::from_secs(4)).expect_err("refused");
    eprintln!("wrong password: {error}");
    assert!(matches!(error, DriverError::BmcAuth { .. }), "{error:?}");
    assert_eq!(error.message_number(), 60017);
    let text = error.to_string();
    assert!(text.contains(&format!("https://127.0.0.1:{}/redfish/v1/Systems/", sushy.port)), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    // Nothing was requested: sushy's request log has no POST.
    let log = std::fs::read_to_string(&sushy.process.log).expect("sushy log");
    assert!(log.contains("401") && !log.contains("POST"), "{log}");
}

#[test]
fn a_server_that_never_answers_is_bmc_timeout() {
    redfish_support::init_tracing();
    let silent = SilentServer::start();
    let driver =
        RedfishBmc::new(settings(format!("https://{}", silent.addr), "/redfish/v1/Systems/1", None)).expect("driver");
    let started = Instant::now();
    let error = driver.reboot(Duration::from_secs(2), Duration::from_secs(4)).expect_err("no answer");
    let elapsed = started.elapsed();
    eprintln!("silent server: {error} after {:.2} s", elapsed.as_secs_f64());
    assert!(matches!(error, DriverError::BmcTimeout { .. }), "{error:?}");
    assert_eq!(error.message_number(), 60018);
    assert!(elapsed >= REQUEST_TIMEOUT - Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < REQUEST_TIMEOUT + Duration::from_millis(1500), "{elapsed:?}");
}

#[test]
fn a_refused_connection_is_bmc_timeout() {
    let port = free_port();
    let driver =
        RedfishBmc::new(settings(format!("https://127.0.0.1:{port}"), "/redfish/v1/Systems/1", None)).expect("driver");
    let error = driver.reboot(Duration::from_secs(1), Duration::from_secs(2)).expect_err("refused");
    eprintln!("refused: {error}");
    assert!(matches!(error, DriverError::BmcTimeout { .. }), "{error:?}");
    assert!(error.to_string().contains(&format!("127.0.0.1:{port}")), "{error}");
}

#[test]
fn a_server_error_is_bmc() {
    redfish_support::init_tracing();
    let mock = MockBmc::start("status500");
    let error = mock_driver(&mock).reboot(Duration::from_secs(1), Duration::from_secs(2)).expect_err("500");
    eprintln!("500: {error}");
    assert!(matches!(error, DriverError::Bmc { .. }), "{error:?}");
    assert_eq!(error.message_number(), 60019);
    let text = error.to_string();
    assert!(text.contains("500") && text.contains("Internal controller failure"), "{text}");
    assert_no_password(&error);
}

#[test]
fn malformed_json_is_bmc() {
    let mock = MockBmc::start("malformed");
    let error = mock_driver(&mock).reboot(Duration::from_secs(1), Duration::from_secs(2)).expect_err("bad JSON");
    eprintln!("malformed: {error}");
    assert!(matches!(error, DriverError::Bmc { .. }), "{error:?}");
    assert!(error.to_string().contains("malformed JSON") && error.to_string().contains("<html>not json"), "{error}");
}

#[test]
fn a_certificate_from_another_ca_is_refused_as_bmc() {
    redfish_support::init_tracing();
    let mock = MockBmc::start("stuck");
    let other = redfish_support::Pki::new("other");
    let driver = RedfishBmc::new(settings(mock.endpoint(), "/redfish/v1/Systems/1", Some(other.ca()))).expect("driver");
    let error = driver.reboot(Duration::from_secs(1), Duration::from_secs(2)).expect_err("untrusted");
    eprintln!("CA mismatch: {error}");
    assert!(matches!(error, DriverError::Bmc { .. }), "{error:?}");
    assert_eq!(error.message_number(), 60019);
    let text = error.to_string();
    assert!(text.contains("TLS handshake failed") && text.contains("certificate"), "{text}");
    // The system roots do not know the test CA either.
    let system_roots = RedfishBmc::new(settings(mock.endpoint(), "/redfish/v1/Systems/1", None)).expect("driver");
    let error = system_roots.reboot(Duration::from_secs(1), Duration::from_secs(2)).expect_err("untrusted");
    assert!(matches!(error, DriverError::Bmc { .. }), "{error:?}");
    // Nothing reached the HTTP layer.
    assert!(mock.requests().is_empty());
}

#[test]
fn insecure_skips_verification() {
    let mock = MockBmc::start("sessions");
    let mut insecure = settings(mock.endpoint(), "/redfish/v1/Systems/1", None);
    insecure.insecure = true;
    let outcome = RedfishBmc::new(insecure).expect("driver").reboot(Duration::from_secs(3), Duration::from_secs(5));
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[test]
fn sessions_are_used_when_offered_and_deleted_afterwards() {
    redfish_support::init_tracing();
    let mock = MockBmc::start("sessions");
    let started = Instant::now();
    let outcome = mock_driver(&mock).reboot(Duration::from_secs(3), Duration::from_secs(5)).expect("confirmed");
    eprintln!("session reboot in {:.2} s: {outcome:?}", started.elapsed().as_secs_f64());
    assert_eq!(outcome.method, "graceful");
    let requests = mock.requests();
    eprintln!("mock saw: {requests:?}");
    let seen: Vec<(&str, &str, &str)> =
        requests.iter().map(|(method, path, auth)| (method.as_str(), path.as_str(), auth.as_str())).collect();
    assert_eq!(seen[0], ("GET", "/redfish/v1/", "none"));
    assert_eq!(seen[1], ("POST", "/redfish/v1/SessionService/Sessions", "none"));
    assert!(seen[2..].iter().all(|(_, _, auth)| *auth == "token"), "{seen:?}");
    assert!(seen.contains(&("GET", "/redfish/v1/Systems/1/ResetActionInfo", "token")), "{seen:?}");
    assert_eq!(seen.last(), Some(&("DELETE", "/redfish/v1/SessionService/Sessions/42", "token")));
}

#[test]
fn a_session_login_with_a_wrong_password_is_bmc_auth() {
    let mock = MockBmc::start("sessions");
    let mut wrong = settings(mock.endpoint(), "/redfish/v1/Systems/1", Some(mock.pki.ca()));
    wrong.password = "wrong-one".into();
    let error = RedfishBmc::new(wrong).expect("driver").reboot(Duration::from_secs(1), Duration::from_secs(2));
    let error = error.expect_err("refused");
    assert!(matches!(error, DriverError::BmcAuth { .. }), "{error:?}");
    assert!(error.to_string().contains("POST") && error.to_string().contains("401"), "{error}");
}

#[test]
fn an_ignored_graceful_restart_is_forced_and_confirmed_by_last_reset_time() {
    redfish_support::init_tracing();
    let mock = MockBmc::start("ignore-graceful");
    let started = Instant::now();
    let outcome = mock_driver(&mock).reboot(Duration::from_secs(1), Duration::from_secs(5)).expect("confirmed");
    let elapsed = started.elapsed();
    eprintln!("forced reboot in {:.2} s: {outcome:?}", elapsed.as_secs_f64());
    assert_eq!(outcome.method, "forced");
    let graceful = position(&outcome.observed, "GracefulRestart accepted", 0).expect("graceful requested");
    let forced = position(&outcome.observed, "ForceRestart accepted", graceful).expect("forced afterwards");
    position(&outcome.observed, "LastResetTime 2026-11-27T10:05:00+00:00", forced).expect("new LastResetTime");
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn a_restart_nothing_confirms_is_not_confirmed() {
    redfish_support::init_tracing();
    let mock = MockBmc::start("stuck");
    let started = Instant::now();
    let error = mock_driver(&mock).reboot(Duration::from_millis(600), Duration::from_millis(1500)).expect_err("stuck");
    let elapsed = started.elapsed();
    eprintln!("stuck: {error} after {:.2} s", elapsed.as_secs_f64());
    assert!(matches!(error, DriverError::NotConfirmed { .. }), "{error:?}");
    assert_eq!(error.message_number(), 60036);
    let text = error.to_string();
    assert!(text.contains("GracefulRestart then ForceRestart"), "{text}");
    assert!(text.contains("ForceRestart accepted (204)"), "{text}");
    assert!(elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(4), "{elapsed:?}");
}

#[test]
fn debug_output_never_shows_the_password() {
    let pki = redfish_support::Pki::new("debug");
    let mut settings = settings("https://127.0.0.1:1".into(), "/redfish/v1/Systems/1", Some(pki.ca()));
    let shown = format!("{settings:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    let driver = RedfishBmc::new(settings.clone()).expect("driver");
    let shown = format!("{driver:?} {driver:#?}");
    eprintln!("{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains("redacted") && shown.contains(USERNAME), "{shown}");
    settings.ca_file = None;
    settings.insecure = true;
    let shown = format!("{:?}", RedfishBmc::new(settings).expect("driver"));
    assert!(!shown.contains(PASSWORD) && shown.contains("NOT VERIFIED"), "{shown}");
}
