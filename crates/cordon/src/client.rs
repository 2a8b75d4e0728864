//! A small typed client of Cordon's API.

use std::time::Duration;

use cordon_api::wire::ErrorBody;
use cordon_model::messages;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::{ApiArgs, Failure};

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ApiArgs) -> Result<Self, Failure> {
        let token = match std::env::var("CORDON_TOKEN") {
            Ok(token) if !token.trim().is_empty() => Some(token.trim().to_string()),
            _ => match &args.token_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            Failure::new(&messages::UNAUTHENTICATED, &[])
                                .with_text(format!("cannot read the token file {}: {e}", path.display()))
                        })?
                        .trim()
                        .to_string(),
                ),
                None => None,
            },
        };
        let mut builder =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).connect_timeout(Duration::from_secs(5));
        if let Some(path) = &args.ca_file {
            let unreadable = |detail: String| {
                Failure::new(&messages::API_UNREACHABLE, &[("url", &args.url), ("detail", &detail)]).usage()
            };
            let pem = std::fs::read(path)
                .map_err(|e| unreadable(format!("cannot read --ca-file {}: {e}", path.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| unreadable(format!("--ca-file {} holds no PEM certificate: {e}", path.display())))?;
            if certificates.is_empty() {
                return Err(unreadable(format!("--ca-file {} holds no PEM certificate", path.display())));
            }
            builder = builder.tls_certs_only(certificates);
        }
        let http = builder.build().map_err(|e| Failure::new(&messages::INTERNAL_ERROR, &[("detail", &e)]))?;
        Ok(Client { http, base: args.url.trim_end_matches('/').to_string(), token })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, Failure> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    /// Posts a detection body as is, signed with HMAC-SHA256 when a secret is given.
    pub async fn post_detection<T: DeserializeOwned>(
        &self,
        body: Vec<u8>,
        secret: Option<&[u8]>,
    ) -> Result<T, Failure> {
        let mut request = self
            .http
            .post(format!("{}/api/v1/detections", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = secret {
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
                .to_string();
            let signature = cordon_api::ingest::sign(secret, &timestamp, &body);
            request = request
                .header("X-Cordon-Timestamp", timestamp)
                .header("X-Cordon-Signature", format!("sha256={signature}"));
        }
        self.send(request.body(body)).await
    }

    /// The local address this host uses to reach the API (no packet is sent).
    pub fn local_address(&self) -> Result<std::net::IpAddr, String> {
        let url = reqwest::Url::parse(&self.base).map_err(|e| e.to_string())?;
        let host = url.host_str().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let target = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("the URL's host has no address")?;
        let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = std::net::UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        socket.connect(target).map_err(|e| e.to_string())?;
        Ok(socket.local_addr().map_err(|e| e.to_string())?.ip())
    }

    async fn send<T: DeserializeOwned>(&self, mut request: reqwest::RequestBuilder) -> Result<T, Failure> {
        let signed = request
            .try_clone()
            .and_then(|r| r.build().ok())
            .is_some_and(|r| r.headers().contains_key("X-Cordon-Signature"));
        if let (Some(token), false) = (&self.token, signed) {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            Failure::new(&messages::API_UNREACHABLE, &[("url", &self.base), ("detail", &root_cause(&e))])
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Failure::new(&messages::API_UNREACHABLE, &[("url", &self.base), ("detail", &root_cause(&e))])
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Failure::new(&messages::INTERNAL_ERROR, &[("detail", &format!("unexpected answer from the API: {e}"))])
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(Failure {
                number: body.error.number,
                text: body.error.text,
                remedy: Some(body.error.remedy),
                exit_code: 1,
            }),
            Err(_) => Err(Failure::new(
                &messages::INTERNAL_ERROR,
                &[("detail", &format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))],
            )),
        }
    }
}

/// The innermost error, which says what actually happened (e.g. "Connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

impl Failure {
    pub fn with_text(mut self, text: String) -> Self {
        self.text = text;
        self
    }
}
