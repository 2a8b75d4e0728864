//! Notifications: what the engine does, told to the people concerned.
//!
//! [`Notifier::run`] follows the engine's events ([`Engine::subscribe`]) and, for each one,
//! writes to the tenant's administrator (an action awaits approval, with signed approval links;
//! a quarantine is done, with the new network and address; an action failed, with its message
//! number, text and remedy; drift was found) or to the server's user (after an unquarantine or a
//! reboot: they may resume work). E-mails go through SMTP ([`lettre`]); every notification is
//! also posted as JSON to each configured webhook (without the approval links, which are
//! credentials and go to the administrator's mailbox only).
//!
//! Delivery never holds the engine up and is never fatal: each notification is tried a few times
//! with growing pauses, and a notification that could not be delivered is logged with message
//! 41030, recorded, and counted (`cordon_notifications_failed_total`).
//!
//! The approval links and their single-use rule are described in [`links`].

mod compose;
pub mod links;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cordon_config::{NotifyConfig, SmtpSecurity, TenantConfig};
use cordon_engine::{Engine, EngineEvent};
use cordon_model::messages;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

pub use compose::{Audience, Facts, Notice, OfferedLink, notices};
pub use links::{Choice, Link, LinkError, LinkSigner};

/// How Cordon reaches its SMTP server, with the secrets already read.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The sender address.
    pub from: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// PEM CA certificate(s) for the server's certificate, instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// Everything a [`Notifier`] needs.
#[derive(Debug)]
pub struct NotifySettings {
    pub smtp: Option<SmtpSettings>,
    /// `http(s)://` URLs that get every notification as JSON.
    pub webhooks: Vec<String>,
    /// Tenant name → its administrator's address (the configuration's `[[tenant]]`s).
    pub tenants: HashMap<String, String>,
    /// Who gets administrator e-mails that belong to no tenant.
    pub operator_email: Option<String>,
    /// Signs approval links; `None`: the e-mails name the commands instead.
    pub links: Option<LinkSigner>,
    /// This Cordon's instance name, in every notification.
    pub instance: String,
    /// The pauses between attempts; one more attempt than pauses.
    pub retry_delays: Vec<Duration>,
    /// How long one SMTP session or webhook post may take.
    pub timeout: Duration,
}

impl NotifySettings {
    pub fn new(instance: impl Into<String>) -> NotifySettings {
        NotifySettings {
            smtp: None,
            webhooks: Vec::new(),
            tenants: HashMap::new(),
            operator_email: None,
            links: None,
            instance: instance.into(),
            retry_delays: vec![Duration::from_secs(2), Duration::from_secs(10), Duration::from_secs(30)],
            timeout: Duration::from_secs(30),
        }
    }

    /// The settings of a validated `[notify]` section; reads the SMTP password, the CA file and
    /// the link secret (an error names the file that could not be read).
    pub fn from_config(
        config: &NotifyConfig,
        tenants: &[TenantConfig],
        instance: &str,
    ) -> Result<NotifySettings, String> {
        let mut settings = NotifySettings::new(instance);
        if let Some(smtp) = &config.smtp {
            let credentials = match (&smtp.username, &smtp.password_file) {
                (Some(user), Some(file)) => {
                    let password = std::fs::read_to_string(file)
                        .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
                        .map_err(|e| format!("cannot read the SMTP password file {}: {e}", file.display()))?;
                    Some((user.clone(), password))
                }
                _ => None,
            };
            let ca_pem = match &smtp.ca_file {
                Some(file) => Some(
                    std::fs::read(file).map_err(|e| format!("cannot read the SMTP CA file {}: {e}", file.display()))?,
                ),
                None => None,
            };
            settings.smtp = Some(SmtpSettings {
                host: smtp.host.clone(),
                port: smtp.port,
                security: smtp.security,
                from: smtp.from.clone(),
                credentials,
                ca_pem,
            });
        }
        settings.webhooks = config.webhooks.clone();
        settings.tenants = tenants.iter().map(|t| (t.name.clone(), t.admin_email.clone())).collect();
        settings.operator_email = config.operator_email.clone();
        if let Some(links) = &config.links {
            settings.links = Some(LinkSigner::from_file(
                &links.secret_file,
                &links.public_url,
                Duration::from_secs(links.ttl_secs),
            )?);
        }
        Ok(settings)
    }
}

/// Delivery counters, rendered at `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    smtp_sent: AtomicU64,
    smtp_failed: AtomicU64,
    webhook_sent: AtomicU64,
    webhook_failed: AtomicU64,
    /// Attempts that failed and were tried again.
    retries: AtomicU64,
    /// Engine events the notifier missed by falling behind.
    missed: AtomicU64,
    /// Administrator notices without anyone to send them to.
    unaddressed: AtomicU64,
    links_refused: AtomicU64,
}

impl Counters {
    pub fn link_refused(&self) {
        self.links_refused.fetch_add(1, Relaxed);
    }

    pub fn sent(&self, channel: Channel) -> u64 {
        match channel {
            Channel::Smtp => self.smtp_sent.load(Relaxed),
            Channel::Webhook => self.webhook_sent.load(Relaxed),
        }
    }

    pub fn failed(&self, channel: Channel) -> u64 {
        match channel {
            Channel::Smtp => self.smtp_failed.load(Relaxed),
            Channel::Webhook => self.webhook_failed.load(Relaxed),
        }
    }

    fn count(&self, channel: Channel, ok: bool) {
        let counter = match (channel, ok) {
            (Channel::Smtp, true) => &self.smtp_sent,
            (Channel::Smtp, false) => &self.smtp_failed,
            (Channel::Webhook, true) => &self.webhook_sent,
            (Channel::Webhook, false) => &self.webhook_failed,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition (appended to the engine's at `/metrics`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, help: &str, lines: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (labels, value) in lines {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        family(
            "cordon_notifications_sent_total",
            "Notifications delivered, by channel.",
            &[
                ("{channel=\"smtp\"}", self.smtp_sent.load(Relaxed)),
                ("{channel=\"webhook\"}", self.webhook_sent.load(Relaxed)),
            ],
        );
        family(
            "cordon_notifications_failed_total",
            "Notifications given up after every attempt failed (message 41030), by channel.",
            &[
                ("{channel=\"smtp\"}", self.smtp_failed.load(Relaxed)),
                ("{channel=\"webhook\"}", self.webhook_failed.load(Relaxed)),
            ],
        );
        family(
            "cordon_notification_retries_total",
            "Delivery attempts that failed and were tried again.",
            &[("", self.retries.load(Relaxed))],
        );
        family(
            "cordon_notifications_missed_total",
            "Engine events the notifier missed by falling behind (message 41032).",
            &[("", self.missed.load(Relaxed))],
        );
        family(
            "cordon_notifications_unaddressed_total",
            "Administrator notifications with no e-mail recipient (message 41031).",
            &[("", self.unaddressed.load(Relaxed))],
        );
        family(
            "cordon_approval_links_refused_total",
            "Approval links refused: bad signature, expired, or already used.",
            &[("", self.links_refused.load(Relaxed))],
        );
        out
    }
}

/// A way notifications leave Cordon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Smtp,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Smtp => "smtp",
            Channel::Webhook => "webhook",
        }
    }
}

/// What the API needs of notifications: the link signer (the approval route) and the counters
/// (`/metrics`). Shared between the [`Notifier`] and the API.
#[derive(Debug)]
pub struct NotifyState {
    pub links: Option<LinkSigner>,
    pub counters: Counters,
}

/// Sends notifications for the engine's events. Build it with [`Notifier::new`], hand
/// [`Notifier::state`] to the API, then spawn [`Notifier::run`].
pub struct Notifier {
    state: Arc<NotifyState>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("state", &self.state).finish_non_exhaustive()
    }
}

struct Inner {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    http: reqwest::Client,
    webhooks: Vec<String>,
    tenants: HashMap<String, String>,
    operator_email: Option<String>,
    instance: String,
    retry_delays: Vec<Duration>,
    state: Arc<NotifyState>,
}

/// At most this many notifications are being delivered at once; more wait their turn.
const MAX_IN_FLIGHT: usize = 16;
/// How long shutdown waits for notifications being delivered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Notifier {
    /// Builds the SMTP transport and the HTTP client; no connection is made yet.
    pub fn new(settings: NotifySettings) -> Result<Notifier, String> {
        let smtp = match &settings.smtp {
            Some(smtp) => Some(smtp_transport(smtp, settings.timeout)?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("cordon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        let state = Arc::new(NotifyState { links: settings.links, counters: Counters::default() });
        let inner = Inner {
            smtp,
            http,
            webhooks: settings.webhooks,
            tenants: settings.tenants,
            operator_email: settings.operator_email,
            instance: settings.instance,
            retry_delays: settings.retry_delays,
            state: state.clone(),
        };
        Ok(Notifier { state, inner: Arc::new(inner) })
    }

    /// The link signer and the counters, for the API.
    pub fn state(&self) -> Arc<NotifyState> {
        self.state.clone()
    }

    /// Sends the notifications of one event now, retries included (what [`Notifier::run`] does
    /// for each event it receives).
    pub async fn notify(&self, engine: &Engine, event: &EngineEvent) {
        self.inner.handle(engine, event).await;
    }

    /// Follows the engine's events until `shutdown` completes. Subscribes at once, when called
    /// (not when first polled), so that no event emitted after this call is missed. Then waits
    /// a few seconds for notifications still being delivered.
    pub fn run(
        self,
        engine: Engine,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut events = engine.subscribe();
        let inner = self.inner;
        async move {
            tokio::pin!(shutdown);
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
            let mut deliveries = JoinSet::new();
            loop {
                let event = tokio::select! {
                    _ = &mut shutdown => break,
                    event = events.recv() => event,
                };
                // Reap finished deliveries.
                while deliveries.try_join_next().is_some() {}
                match event {
                    // Recorded messages are for the console: nothing to send.
                    Ok(EngineEvent::Recorded { .. }) => {}
                    Ok(event) => {
                        let Ok(slot) = slots.clone().acquire_owned().await else { break };
                        let inner = inner.clone();
                        let engine = engine.clone();
                        deliveries.spawn(async move {
                            inner.handle(&engine, &event).await;
                            drop(slot);
                        });
                    }
                    Err(RecvError::Lagged(count)) => {
                        inner.state.counters.missed.fetch_add(count, Relaxed);
                        let text = messages::NOTIFICATIONS_MISSED.render(&[("count", &count)]);
                        tracing::warn!(number = messages::NOTIFICATIONS_MISSED.number, "{text}");
                        engine.record_note(messages::NOTIFICATIONS_MISSED.number, text).await;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
            let drained =
                tokio::time::timeout(SHUTDOWN_GRACE, async { while deliveries.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                tracing::warn!("shutting down with notifications still being delivered");
            }
        }
    }
}

impl Inner {
    /// Everything one event calls for: look the server up, compose, send, log.
    async fn handle(&self, engine: &Engine, event: &EngineEvent) {
        let facts = self.facts(engine, event).await;
        for notice in notices(event, &facts) {
            self.deliver(engine, &notice, &facts).await;
        }
    }

    async fn facts(&self, engine: &Engine, event: &EngineEvent) -> Facts {
        let store = engine.store();
        let (server, action) = match event {
            EngineEvent::AwaitsApproval { action, server, .. } | EngineEvent::Succeeded { action, server, .. } => {
                (Some(server.as_str()), Some(*action))
            }
            EngineEvent::Failed { action, server, .. } => (server.as_deref(), Some(*action)),
            EngineEvent::Drift { server, .. } => (Some(server.as_str()), None),
            EngineEvent::Recorded { .. } => (None, None),
        };
        let server = match server {
            Some(name) => store.server_by_name(name).await.unwrap_or_else(|error| {
                tracing::warn!(%error, server = name, "notification: cannot read the server");
                None
            }),
            None => None,
        };
        let action = match action {
            Some(id) => store.action(id).await.unwrap_or_else(|error| {
                tracing::warn!(%error, action = id, "notification: cannot read the action");
                None
            }),
            None => None,
        };
        let tenant = server.as_ref().and_then(|s| s.tenant.clone());
        let admin_email = tenant.as_ref().and_then(|t| self.tenants.get(t).cloned());
        Facts { instance: self.instance.clone(), server, action, tenant, admin_email }
    }

    async fn deliver(&self, engine: &Engine, notice: &Notice, facts: &Facts) {
        let mut work = Vec::new();
        for url in &self.webhooks {
            work.push(self.post(engine, notice, url));
        }
        let mail = self.mail(engine, notice, facts);
        let ((), _) = tokio::join!(mail, futures_join(work));
    }

    /// The e-mail of a notice, to its one recipient.
    async fn mail(&self, engine: &Engine, notice: &Notice, facts: &Facts) {
        let Some((transport, from)) = &self.smtp else { return };
        let recipient = match notice.audience {
            Audience::Administrator => facts.admin_email.clone().or_else(|| self.operator_email.clone()),
            Audience::User => facts.server.as_ref().and_then(|s| s.user_email.clone()),
        };
        let Some(recipient) = recipient else {
            if notice.audience == Audience::Administrator {
                let detail = match (&facts.server, &facts.tenant) {
                    (None, _) => "it concerns no known server, and [notify] has no operator_email".to_string(),
                    (Some(s), None) => format!("{} has no tenant, and [notify] has no operator_email", s.name),
                    (Some(_), Some(t)) => format!("tenant {t} has no administrator address in the configuration"),
                };
                self.state.counters.unaddressed.fetch_add(1, Relaxed);
                let text = messages::NOTIFICATION_NO_RECIPIENT.render(&[
                    ("event", &notice.event),
                    ("subject", &notice.subject_name),
                    ("detail", &detail),
                ]);
                tracing::warn!(number = messages::NOTIFICATION_NO_RECIPIENT.number, "{text}");
                engine.record_note(messages::NOTIFICATION_NO_RECIPIENT.number, text).await;
            } else {
                tracing::debug!(server = %notice.subject_name, "no user_email: the user is not told");
            }
            return;
        };
        let body = match (&notice.approval, &self.state.links) {
            (Some((id, kind)), Some(signer)) => {
                let now = chrono::Utc::now().timestamp();
                let offered: Vec<OfferedLink> = Choice::offered(*kind)
                    .into_iter()
                    .map(|choice| {
                        let link = signer.issue(*id, choice, &recipient, now);
                        OfferedLink { choice, url: signer.url(&signer.sign(&link)) }
                    })
                    .collect();
                let expires = now.saturating_add(i64::try_from(signer.ttl().as_secs()).unwrap_or(i64::MAX));
                notice.email_body(Some((&offered, expires)))
            }
            _ => notice.email_body(None),
        };
        let to: Mailbox = match recipient.parse() {
            Ok(to) => to,
            Err(error) => {
                self.gave_up(engine, notice, Channel::Smtp, &recipient, 0, &format!("bad address: {error}")).await;
                return;
            }
        };
        let domain = from.email.domain().to_string();
        let message = lettre::Message::builder()
            .from(from.clone())
            .to(to)
            .subject(notice.subject.clone())
            .message_id(Some(format!("<{}.{}@{domain}>", notice.event, random_id())))
            .header(ContentType::TEXT_PLAIN)
            .body(body);
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                self.gave_up(engine, notice, Channel::Smtp, &recipient, 0, &error.to_string()).await;
                return;
            }
        };
        let outcome = self
            .attempts(|| {
                let message = message.clone();
                async move {
                    // A permanent refusal (5xx: bad recipient, bad credentials) is not tried again.
                    transport.send(message).await.map(|_| ()).map_err(|e| (error_chain(&e), !e.is_permanent()))
                }
            })
            .await;
        self.settle(engine, notice, Channel::Smtp, &recipient, outcome).await;
    }

    async fn post(&self, engine: &Engine, notice: &Notice, url: &str) {
        let outcome = self
            .attempts(|| async {
                let response =
                    self.http.post(url).json(&notice.json).send().await.map_err(|e| (error_chain(&e), true))?;
                let status = response.status();
                // A client error other than a timeout or throttling will not pass by itself.
                let retry = !status.is_client_error() || matches!(status.as_u16(), 408 | 429);
                if status.is_success() { Ok(()) } else { Err((format!("the webhook answered {status}"), retry)) }
            })
            .await;
        self.settle(engine, notice, Channel::Webhook, url, outcome).await;
    }

    /// Runs `attempt` until it succeeds, fails for good (its error says whether trying again
    /// may help), or every retry was used; gives the attempts made.
    async fn attempts<F, Fut>(&self, mut attempt: F) -> Result<u32, (u32, String)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), (String, bool)>>,
    {
        let mut made = 0u32;
        loop {
            made += 1;
            match attempt().await {
                Ok(()) => return Ok(made),
                Err((error, false)) => return Err((made, error)),
                Err((error, true)) => match self.retry_delays.get(made as usize - 1) {
                    Some(pause) => {
                        self.state.counters.retries.fetch_add(1, Relaxed);
                        tracing::debug!(%error, attempt = made, "notification attempt failed; trying again");
                        tokio::time::sleep(*pause).await;
                    }
                    None => return Err((made, error)),
                },
            }
        }
    }

    async fn settle(
        &self,
        engine: &Engine,
        notice: &Notice,
        channel: Channel,
        recipient: &str,
        outcome: Result<u32, (u32, String)>,
    ) {
        match outcome {
            Ok(_) => {
                self.state.counters.count(channel, true);
                let text = messages::NOTIFICATION_SENT.render(&[
                    ("event", &notice.event),
                    ("subject", &notice.subject_name),
                    ("recipient", &recipient),
                ]);
                tracing::info!(number = messages::NOTIFICATION_SENT.number, channel = channel.as_str(), "{text}");
            }
            Err((attempts, detail)) => self.gave_up(engine, notice, channel, recipient, attempts, &detail).await,
        }
    }

    async fn gave_up(
        &self,
        engine: &Engine,
        notice: &Notice,
        channel: Channel,
        recipient: &str,
        attempts: u32,
        detail: &str,
    ) {
        self.state.counters.count(channel, false);
        let text = messages::NOTIFICATION_FAILED.render(&[
            ("event", &notice.event),
            ("subject", &notice.subject_name),
            ("recipient", &recipient),
            ("attempts", &attempts),
            ("detail", &detail),
        ]);
        tracing::warn!(number = messages::NOTIFICATION_FAILED.number, channel = channel.as_str(), "{text}");
        engine.record_note(messages::NOTIFICATION_FAILED.number, text).await;
    }
}

/// Waits for every future of `work` (webhook posts run side by side).
async fn futures_join<F: Future<Output = ()>>(work: Vec<F>) {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = work.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|future| future.as_mut().poll(cx).is_pending());
        if pinned.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
}

fn smtp_transport(
    smtp: &SmtpSettings,
    timeout: Duration,
) -> Result<(AsyncSmtpTransport<Tokio1Executor>, Mailbox), String> {
    let from: Mailbox = format!("Cordon <{}>", smtp.from)
        .parse()
        .map_err(|e| format!("[notify] from `{}` is not a usable address: {e}", smtp.from))?;
    let tls = match smtp.security {
        SmtpSecurity::Plain => Tls::None,
        SmtpSecurity::StartTls | SmtpSecurity::Tls => {
            let mut builder = TlsParameters::builder(smtp.host.clone());
            if let Some(pem) = &smtp.ca_pem {
                let certificate =
                    Certificate::from_pem(pem).map_err(|e| format!("the SMTP CA file is not PEM: {e}"))?;
                builder = builder.add_root_certificate(certificate);
            }
            let parameters = builder.build_rustls().map_err(|e| format!("SMTP TLS: {e}"))?;
            if smtp.security == SmtpSecurity::Tls { Tls::Wrapper(parameters) } else { Tls::Required(parameters) }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some((user, password)) = &smtp.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok((builder.build(), from))
}

/// An error and its causes on one line (reqwest's Display hides the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors already print their cause: say it once.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn random_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
