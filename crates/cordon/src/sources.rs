//! Starting the configured sources, and the sink that hands their batches to the engine.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use cordon_api::ingest::{IngestSettings, WebhookAuth};
use cordon_config::{CefProfile, Config, SourceKind};
use cordon_engine::{Engine, PolicySet};
use cordon_ingest::cef_syslog;
use cordon_model::messages;
use cordon_sources::{
    Batch, Checkpoint, DetectionSink, FileFollower, Parser, SinkError, SourceCounters, SyslogTcpSource,
    SyslogUdpSource, UnixStreamSource,
};
use cordon_store::SourceCheckpoint;
use tokio::sync::watch;

use crate::cli::Failure;

/// Where a followed file's checkpoint is stored: `<instance>/<source>`, because files are
/// followed per instance and instances that share a database may use the same source names.
fn checkpoint_key(instance: &str, source: &str) -> String {
    format!("{instance}/{source}")
}

/// Commits a source's batch through the engine: detections and the file checkpoint together.
#[derive(Debug)]
struct EngineSink {
    engine: Engine,
}

#[async_trait::async_trait]
impl DetectionSink for EngineSink {
    async fn deliver(&self, batch: Batch) -> Result<(), SinkError> {
        let checkpoint = batch.checkpoint.map(|c| SourceCheckpoint {
            source: checkpoint_key(self.engine.instance(), &batch.source),
            path: c.path.to_string_lossy().into_owned(),
            inode: c.inode,
            offset: c.offset,
        });
        self.engine
            .accept_detections(&batch.detections, checkpoint.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| SinkError(e.to_string()))
    }
}

/// The policy and per-server settings of a configuration.
pub fn policy_set(config: &Config) -> PolicySet {
    PolicySet {
        policy: config.policy.clone(),
        servers: config.servers.iter().map(|s| (s.name.clone(), (s.action, s.protected))).collect(),
    }
}

fn eve_parser() -> Parser {
    Arc::new(|line: &[u8], context: &cordon_ingest::Context<'_>| cordon_ingest::eve::parse_line(line, context))
}

fn cef_parser(profile: CefProfile) -> Parser {
    let profile = match profile {
        CefProfile::Generic => cef_syslog::Profile::Generic,
        CefProfile::DeepDiscovery => cef_syslog::Profile::DeepDiscovery,
    };
    Arc::new(move |message: &[u8], context: &cordon_ingest::Context<'_>| {
        cef_syslog::parse_message(message, profile, context)
    })
}

fn read_secret(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map(|s| s.trim_ascii().to_vec()).map_err(|e| {
        Failure::new(
            &messages::INVALID_CONFIGURATION,
            &[("detail", &format!("cannot read secret file {}: {e}", path.display()))],
        )
        .usage()
    })
}

/// Runs a source until shutdown; a source that stops with an error says so in the log.
fn spawn_source<F>(source: &str, what: &'static str, run: F)
where
    F: std::future::Future<Output = Result<(), cordon_sources::SourceError>> + Send + 'static,
{
    let source = source.to_string();
    tokio::spawn(async move {
        if let Err(error) = run.await {
            tracing::error!(%source, %error, "the {what} stopped");
        }
    });
}

/// Starts every configured source as a task; returns what the API needs for HTTP sources.
pub async fn start(config: &Config, engine: &Engine, stop: &watch::Receiver<bool>) -> Result<IngestSettings, Failure> {
    let sink: Arc<dyn DetectionSink> = Arc::new(EngineSink { engine: engine.clone() });
    let mut settings = IngestSettings { max_skew_secs: 300, ..Default::default() };
    let bind_failure = |detail: &dyn std::fmt::Display| {
        Failure::new(&messages::INVALID_CONFIGURATION, &[("detail", &format!("source: {detail}"))]).usage()
    };
    let mut eve_sources = HashSet::new();
    let mut webhooks = HashMap::new();
    for source in &config.sources {
        let name = source.name.clone();
        let counters = Arc::new(SourceCounters::default());
        settings.counters.insert(name.clone(), counters.clone());
        match &source.kind {
            SourceKind::SuricataEve { path, socket } => {
                eve_sources.insert(name.clone());
                if let Some(path) = path {
                    // Stored under the instance's key; a checkpoint from before several instances
                    // shared a database is under the source's name alone.
                    let store = engine.store();
                    let stored = match store.checkpoint(&checkpoint_key(engine.instance(), &name)).await {
                        Ok(Some(checkpoint)) => Some(checkpoint),
                        _ => store.checkpoint(&name).await.ok().flatten(),
                    };
                    let start =
                        stored.map(|c| Checkpoint { path: PathBuf::from(c.path), inode: c.inode, offset: c.offset });
                    let follower = FileFollower::new(
                        name.clone(),
                        path.clone(),
                        eve_parser(),
                        start,
                        sink.clone(),
                        counters.clone(),
                    );
                    spawn_source(&name, "file follower", follower.run(stop.clone()));
                    tracing::info!(source = %name, path = %path.display(), "following Suricata EVE file");
                }
                if let Some(socket) = socket {
                    let listener = UnixStreamSource::new(
                        name.clone(),
                        socket.clone(),
                        eve_parser(),
                        sink.clone(),
                        counters.clone(),
                    );
                    spawn_source(&name, "EVE socket listener", listener.run(stop.clone()));
                    tracing::info!(source = %name, socket = %socket.display(), "listening for Suricata EVE on a Unix socket");
                }
            }
            SourceKind::CefSyslog { listen_udp, listen_tcp, profile, allowed_peers } => {
                if allowed_peers.is_empty() {
                    tracing::warn!(source = %name, "no allowed_peers: this syslog source accepts messages from any address");
                }
                if let Some(address) = listen_udp {
                    let bound = SyslogUdpSource::new(
                        name.clone(),
                        *address,
                        cef_parser(*profile),
                        sink.clone(),
                        counters.clone(),
                    )
                    .with_allowed_peers(allowed_peers.clone())
                    .bind()
                    .await
                    .map_err(|e| bind_failure(&e))?;
                    tracing::info!(source = %name, listen = %bound.local_addr(), "listening for CEF syslog over UDP");
                    spawn_source(&name, "syslog UDP listener", bound.run(stop.clone()));
                }
                if let Some(address) = listen_tcp {
                    let bound = SyslogTcpSource::new(
                        name.clone(),
                        *address,
                        cef_parser(*profile),
                        sink.clone(),
                        counters.clone(),
                    )
                    .with_allowed_peers(allowed_peers.clone())
                    .bind()
                    .await
                    .map_err(|e| bind_failure(&e))?;
                    tracing::info!(source = %name, listen = %bound.local_addr(), "listening for CEF syslog over TCP");
                    spawn_source(&name, "syslog TCP listener", bound.run(stop.clone()));
                }
            }
            SourceKind::Webhook { token_file, hmac_secret_file } => {
                let auth = match (token_file, hmac_secret_file) {
                    (Some(path), _) => WebhookAuth::Token(String::from_utf8_lossy(&read_secret(path)?).into_owned()),
                    (None, Some(path)) => WebhookAuth::Hmac(read_secret(path)?),
                    (None, None) => continue,
                };
                webhooks.insert(name.clone(), auth);
            }
        }
    }
    settings.eve_sources = eve_sources;
    settings.webhooks = webhooks;
    Ok(settings)
}

/// Reloads the policy on SIGHUP and when the configuration file changes. A bad file keeps the
/// policy in force and says why (41006).
pub async fn watch_policy(config_path: PathBuf, engine: Engine, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last = modified(&config_path);
    loop {
        let poked = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = async { match hangup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => true,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
        };
        let now = modified(&config_path);
        if !poked && now == last {
            continue;
        }
        last = now;
        let path = config_path.display().to_string();
        match cordon_config::load(&config_path) {
            Ok(config) => {
                let set = policy_set(&config);
                let text = messages::POLICY_RELOADED.render(&[
                    ("path", &path),
                    ("rules", &set.policy.rules.len()),
                    ("default", &set.policy.default_action),
                ]);
                engine.set_policy(set);
                tracing::info!(number = messages::POLICY_RELOADED.number, "{text}");
                engine.record_note(messages::POLICY_RELOADED.number, text).await;
            }
            Err(error) => {
                let text = messages::POLICY_RELOAD_FAILED
                    .render(&[("path", &path), ("detail", &error.to_string().replace('\n', "; "))]);
                tracing::warn!(number = messages::POLICY_RELOAD_FAILED.number, "{text}");
                engine.record_note(messages::POLICY_RELOAD_FAILED.number, text).await;
            }
        }
    }
}
