//! HTTP for the Redfish driver: the TLS trust, the client, authentication (a Redfish session
//! when the service offers one, else HTTP Basic), and the mapping of every failure to a
//! [`DriverError`]. Requests are logged at `debug` (method, path, status, elapsed); headers,
//! bodies, the password and the session token never are.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderValue, LOCATION};
use reqwest::{Certificate, Method, StatusCode, Url, redirect};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::DriverError;

/// Most redirects followed for one request (sushy answers one 307 for a system's name).
const MAX_REDIRECTS: usize = 5;
/// Longest excerpt of an answer body quoted in an error.
const EXCERPT_CHARS: usize = 200;
/// The sessions collection every Redfish service that has sessions keeps here.
const DEFAULT_SESSIONS_PATH: &str = "/redfish/v1/SessionService/Sessions";

/// Which certificates authenticate the BMC.
#[derive(Clone)]
pub(super) enum Tls {
    /// The system's trust store.
    SystemRoots,
    /// Only the CA certificates read from this file.
    OnlyCa { path: String, certificates: Vec<Certificate> },
    /// No verification at all.
    Insecure,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tls::SystemRoots => f.write_str("system roots"),
            Tls::OnlyCa { path, certificates } => {
                write!(f, "only the {} CA certificate(s) of {path}", certificates.len())
            }
            Tls::Insecure => f.write_str("NOT VERIFIED (insecure)"),
        }
    }
}

impl Tls {
    /// Reads a PEM file of CA certificates; fails if it cannot be read or holds none.
    pub fn load_ca_file(path: &Path) -> Result<Tls, DriverError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path)
            .map_err(|error| DriverError::Bmc { detail: format!("cannot read ca_file {shown}: {error}") })?;
        let certificates = Certificate::from_pem_bundle(&pem).map_err(|error| DriverError::Bmc {
            detail: format!("ca_file {shown} is not a PEM certificate bundle: {}", error_chain(&error)),
        })?;
        if certificates.is_empty() {
            return Err(DriverError::Bmc { detail: format!("ca_file {shown} holds no PEM certificate") });
        }
        Ok(Tls::OnlyCa { path: shown, certificates })
    }
}

/// `scheme://host:port` of a URL, for same-origin checks.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Builds the blocking client: the TLS trust, `timeout` per request (connect included), and
/// redirects followed only within the endpoint's origin (credentials, including a session
/// token that reqwest would not strip, must not go anywhere else).
pub(super) fn build(endpoint: &Url, tls: &Tls, timeout: Duration) -> Result<Client, DriverError> {
    let origin = endpoint.clone();
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if same_origin(attempt.url(), &origin) {
            attempt.follow()
        } else {
            let to = format!("{}://{}", attempt.url().scheme(), attempt.url().authority());
            attempt.error(format!("refused a redirect to another origin ({to})"))
        }
    });
    let mut builder = Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(policy)
        .https_only(true)
        .no_proxy()
        .user_agent(concat!("cordon/", env!("CARGO_PKG_VERSION")));
    builder = match tls {
        Tls::SystemRoots => builder,
        Tls::OnlyCa { certificates, .. } => builder.tls_certs_only(certificates.iter().cloned()),
        Tls::Insecure => builder.tls_danger_accept_invalid_certs(true),
    };
    builder.build().map_err(|error| DriverError::Bmc {
        detail: format!("cannot set up the HTTPS client ({tls:?}): {}", error_chain(&error)),
    })
}

/// How requests are authenticated.
enum Auth {
    Basic { username: String, password: String },
    Session { token: HeaderValue, location: Option<Url> },
}

/// An answer read in full.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    token: Option<HeaderValue>,
    body: Vec<u8>,
}

/// An authenticated connection to one BMC for the length of one operation.
pub(super) struct Connection {
    client: Client,
    endpoint: Url,
    auth: Auth,
    timeout: Duration,
    password: String,
}

impl Connection {
    /// Reads the service root (unauthenticated, as Redfish allows); if it lists a sessions
    /// collection, logs in there (`X-Auth-Token`); otherwise uses HTTP Basic.
    pub fn open(
        client: Client,
        endpoint: Url,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Connection, DriverError> {
        let mut connection = Connection {
            client,
            endpoint,
            auth: Auth::Basic { username: username.to_string(), password: password.to_string() },
            timeout,
            password: password.to_string(),
        };
        let root_url = connection.resolve("/redfish/v1/")?;
        let root = connection.send(Method::GET, &root_url, None, false)?;
        let sessions = if root.status.is_success() {
            let root = connection.parse_json(&root_url, &root)?;
            sessions_path(&root)
        } else if matches!(root.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            debug!(endpoint = %connection.endpoint, "redfish: service root needs authentication; using HTTP Basic");
            None
        } else {
            return Err(connection.status_error(&Method::GET, &root_url, &root));
        };
        if let Some(path) = sessions {
            let url = connection.resolve(&path)?;
            let body = json!({ "UserName": username, "Password": password });
            let answer = connection.send(Method::POST, &url, Some(&body), false)?;
            match answer.status {
                status if status.is_success() => {
                    let token = answer.token.clone().ok_or_else(|| DriverError::Bmc {
                        detail: format!(
                            "POST {} answered {status} without an X-Auth-Token header",
                            connection.show(&url)
                        ),
                    })?;
                    let location = match &answer.location {
                        Some(location) => Some(connection.resolve(location)?),
                        None => None,
                    };
                    let mut token = token;
                    token.set_sensitive(true);
                    connection.auth = Auth::Session { token, location };
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    let mut detail = format!("POST {} answered {}", connection.show(&url), answer.status);
                    let message = redfish_message(&answer.body, password);
                    if !message.is_empty() {
                        detail = format!("{detail}: {message}");
                    }
                    return Err(DriverError::BmcAuth { detail: format!("{detail} (user {username}, session login)") });
                }
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                    debug!(
                        endpoint = %connection.endpoint,
                        status = answer.status.as_u16(),
                        "redfish: sessions unavailable; using HTTP Basic"
                    );
                }
                _ => return Err(connection.status_error(&Method::POST, &url, &answer)),
            }
        }
        Ok(connection)
    }

    /// Logs out of the session, if there is one. Failures are logged, never returned.
    pub fn close(&self) {
        let Auth::Session { location, .. } = &self.auth else { return };
        let Some(location) = location else {
            warn!(endpoint = %self.endpoint, "redfish: the BMC gave no session Location; the session is left to expire");
            return;
        };
        match self.send(Method::DELETE, location, None, true) {
            Ok(answer) if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND => {}
            Ok(answer) => warn!(
                endpoint = %self.endpoint,
                status = answer.status.as_u16(),
                "redfish: deleting the session failed; it is left to expire"
            ),
            Err(error) => warn!(endpoint = %self.endpoint, "redfish: deleting the session failed: {error}"),
        }
    }

    /// Resolves a path (or URL) the BMC gave against the endpoint; refuses another origin.
    pub fn resolve(&self, reference: &str) -> Result<Url, DriverError> {
        let url = self.endpoint.join(reference).map_err(|error| DriverError::Bmc {
            detail: format!("the BMC named an invalid URL {:?}: {error}", excerpt(reference.as_bytes(), "")),
        })?;
        if !same_origin(&url, &self.endpoint) {
            return Err(DriverError::Bmc {
                detail: format!(
                    "the BMC pointed to another origin ({}://{}), which is not followed",
                    url.scheme(),
                    url.authority()
                ),
            });
        }
        Ok(url)
    }

    /// GET a resource: 2xx with a JSON object, or an error.
    pub fn get_json(&self, url: &Url) -> Result<Value, DriverError> {
        let answer = self.send(Method::GET, url, None, true)?;
        if !answer.status.is_success() {
            return Err(self.status_error(&Method::GET, url, &answer));
        }
        self.parse_json(url, &answer)
    }

    /// POSTs `{"ResetType": ...}` to the reset action; returns the status on 2xx.
    pub fn post_reset(&self, target: &Url, reset_type: &str) -> Result<StatusCode, DriverError> {
        let body = json!({ "ResetType": reset_type });
        let answer = self.send(Method::POST, target, Some(&body), true)?;
        if answer.status.is_success() {
            Ok(answer.status)
        } else {
            Err(self.status_error(&Method::POST, target, &answer))
        }
    }

    /// The URL as shown in messages (no query, nothing secret in it anyway).
    fn show(&self, url: &Url) -> String {
        format!("{}://{}{}", url.scheme(), url.authority(), url.path())
    }

    fn parse_json(&self, url: &Url, answer: &Answer) -> Result<Value, DriverError> {
        match serde_json::from_slice::<Value>(&answer.body) {
            Ok(value) if value.is_object() => Ok(value),
            Ok(_) => Err(DriverError::Bmc {
                detail: format!(
                    "GET {} answered {} with JSON that is not an object: {}",
                    self.show(url),
                    answer.status,
                    excerpt(&answer.body, &self.password)
                ),
            }),
            Err(error) => Err(DriverError::Bmc {
                detail: format!(
                    "GET {} answered {} with malformed JSON ({error}): {}",
                    self.show(url),
                    answer.status,
                    excerpt(&answer.body, &self.password)
                ),
            }),
        }
    }

    /// The error for a non-2xx answer: 401/403 → [`DriverError::BmcAuth`], else
    /// [`DriverError::Bmc`]; both name the URL and status, and quote the BMC's message.
    fn status_error(&self, method: &Method, url: &Url, answer: &Answer) -> DriverError {
        let message = redfish_message(&answer.body, &self.password);
        let mut detail = format!("{method} {} answered {}", self.show(url), answer.status);
        if !message.is_empty() {
            detail.push_str(": ");
            detail.push_str(&message);
        }
        match answer.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let who = match &self.auth {
                    Auth::Basic { username, .. } => format!(" (user {username}, HTTP Basic)"),
                    Auth::Session { .. } => " (session token)".to_string(),
                };
                DriverError::BmcAuth { detail: format!("{detail}{who}") }
            }
            _ => DriverError::Bmc { detail },
        }
    }

    /// Sends one request and reads the whole answer. `authenticated`: add the credentials.
    fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        authenticated: bool,
    ) -> Result<Answer, DriverError> {
        let started = Instant::now();
        let mut request: RequestBuilder = self.client.request(method.clone(), url.clone());
        request = request.header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        if authenticated {
            request = match &self.auth {
                Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
                Auth::Session { token, .. } => request.header("X-Auth-Token", token.clone()),
            };
        }
        let result = request.send().and_then(read_answer);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok((answer, final_url)) => {
                if final_url.path() != url.path() {
                    debug!(
                        %method, path = url.path(), redirected_to = final_url.path(),
                        status = answer.status.as_u16(), elapsed_ms, "redfish: request"
                    );
                } else {
                    debug!(%method, path = url.path(), status = answer.status.as_u16(), elapsed_ms, "redfish: request");
                }
                Ok(answer)
            }
            Err(error) => {
                debug!(%method, path = url.path(), elapsed_ms, "redfish: request failed: {}", error_chain(&error));
                Err(self.transport_error(&method, url, &error))
            }
        }
    }

    /// Maps a reqwest failure: no TCP connection or no answer in time → BmcTimeout; a TLS
    /// failure (certificate not trusted, handshake refused) or a refused redirect → Bmc.
    fn transport_error(&self, method: &Method, url: &Url, error: &reqwest::Error) -> DriverError {
        // reqwest's own text repeats the URL, which the detail names already.
        let chain = match std::error::Error::source(error) {
            Some(source) => error_chain(source),
            None => error.to_string(),
        };
        let shown = self.show(url);
        if error.is_timeout() {
            return DriverError::BmcTimeout {
                detail: format!("{method} {shown}: no answer within {:.1} s ({chain})", self.timeout.as_secs_f64()),
            };
        }
        if is_tls_failure(error) {
            return DriverError::Bmc {
                detail: format!(
                    "{method} {shown}: the TLS handshake failed ({chain}); check the BMC's certificate against ca_file"
                ),
            };
        }
        if error.is_redirect() {
            return DriverError::Bmc { detail: format!("{method} {shown}: {chain}") };
        }
        if error.is_connect() || error.is_request() {
            return DriverError::BmcTimeout { detail: format!("{method} {shown}: cannot reach the BMC ({chain})") };
        }
        DriverError::Bmc { detail: format!("{method} {shown}: {chain}") }
    }
}

fn read_answer(response: Response) -> reqwest::Result<(Answer, Url)> {
    let status = response.status();
    let final_url = response.url().clone();
    let location = response.headers().get(LOCATION).and_then(|value| value.to_str().ok()).map(str::to_string);
    let token = response.headers().get("X-Auth-Token").cloned();
    let body = response.bytes()?.to_vec();
    Ok((Answer { status, location, token, body }, final_url))
}

/// The service root's sessions collection, if it has one: `Links.Sessions`, else the standard
/// path when a `SessionService` is listed.
fn sessions_path(root: &Value) -> Option<String> {
    if let Some(path) = root.pointer("/Links/Sessions/@odata.id").and_then(Value::as_str) {
        return Some(path.to_string());
    }
    root.get("SessionService").map(|_| DEFAULT_SESSIONS_PATH.to_string())
}

/// A TLS failure somewhere in the error's sources (rustls errors reach reqwest wrapped in an
/// `io::Error` of kind `InvalidData`).
fn is_tls_failure(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            return true;
        }
        let text = current.to_string();
        if text.contains("certificate") || text.contains("handshake") || text.contains("TLS alert") {
            return true;
        }
        source = current.source();
    }
    false
}

/// The error and its sources, `a: b: c`, without repeating a source already in the text.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        let part = current.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = current.source();
    }
    text
}

/// The Redfish error message of an answer body (`error.message` and the first extended
/// message), else a short excerpt of the body.
fn redfish_message(body: &[u8], secret: &str) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let message = value.pointer("/error/message").and_then(Value::as_str);
        let extended = value.pointer("/error/@Message.ExtendedInfo/0/Message").and_then(Value::as_str);
        let text = match (message, extended) {
            (Some(message), Some(extended)) if message != extended => format!("{message} ({extended})"),
            (Some(message), _) => message.to_string(),
            (None, Some(extended)) => extended.to_string(),
            (None, None) => String::new(),
        };
        if !text.is_empty() {
            return excerpt(text.as_bytes(), secret);
        }
    }
    excerpt(body, secret)
}

/// At most [`EXCERPT_CHARS`] characters of `body` on one line, with `secret` (when not empty)
/// blanked out.
pub(super) fn excerpt(body: &[u8], secret: &str) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if !secret.is_empty() {
        text = text.replace(secret, "<redacted>");
    }
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > EXCERPT_CHARS {
        let cut: String = text.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts() {
        assert_eq!(excerpt(b"", ""), "(empty body)");
        assert_eq!(excerpt(b"a\n  b\tc", ""), "a b c");
        assert_eq!(excerpt(b"user admin password s3cret!", "s3cret!"), "user admin password <redacted>");
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes(), "").chars().count(), EXCERPT_CHARS + 1);
    }

    #[test]
    fn redfish_messages() {
        let body = br#"{"error":{"code":"Base.1.0.GeneralError","message":"Incorrect username or password",
            "@Message.ExtendedInfo":[{"MessageId":"Base.1.0.GeneralError"}]}}"#;
        assert_eq!(redfish_message(body, ""), "Incorrect username or password");
        assert_eq!(redfish_message(b"<html>oops</html>", ""), "<html>oops</html>");
    }

    #[test]
    fn sessions_discovery() {
        assert_eq!(
            sessions_path(&json!({"Links": {"Sessions": {"@odata.id": "/redfish/v1/Sessions"}}})),
            Some("/redfish/v1/Sessions".to_string())
        );
        assert_eq!(
            sessions_path(&json!({"SessionService": {"@odata.id": "/redfish/v1/SessionService"}})),
            Some(DEFAULT_SESSIONS_PATH.to_string())
        );
        assert_eq!(sessions_path(&json!({"Systems": {}})), None);
    }

    #[test]
    fn origins() {
        let a = Url::parse("https://10.0.0.5/").unwrap();
        assert!(same_origin(&a, &Url::parse("https://10.0.0.5:443/redfish/v1").unwrap()));
        assert!(!same_origin(&a, &Url::parse("https://10.0.0.6/").unwrap()));
        assert!(!same_origin(&a, &Url::parse("http://10.0.0.5/").unwrap()));
        assert!(!same_origin(&a, &Url::parse("https://10.0.0.5:8443/").unwrap()));
    }
}
