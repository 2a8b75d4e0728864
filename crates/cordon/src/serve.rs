//! `cordon serve`: wires configuration, store, drivers, engine and API together.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use cordon_config::{Config, HypervisorDriverKind};
use cordon_drivers::{
    LibvirtHypervisor, LinuxBridgeSwitch, OvsSwitch, PowerDriver, RedfishBmc, RedfishSettings, SwitchDriver,
};
use cordon_engine::{DomainPower, Engine, EngineSettings, NetworkPlan, Topology};
use cordon_model::{AddressPool, Role, SwitchDriverKind, messages};
use cordon_store::{
    Inventory, NetworkSpec, NewMessage, NicSpec, ServerSpec, SqliteStore, Store, StoreError, TenantSpec,
};
use tokio::net::TcpListener;

use crate::cli::Failure;

pub async fn run(config_path: &Path, check_only: bool) -> Result<(), Failure> {
    let config = cordon_config::load(config_path).map_err(|error| {
        Failure::new(&messages::INVALID_CONFIGURATION, &[("detail", &format!("\n{error}"))]).usage()
    })?;
    if check_only {
        // What would stop `serve` from starting is reported by `--check` too.
        refuse_exposed_secrets(&config)?;
        refuse_plain_http(&config)?;
        println!(
            "configuration {} is valid: {} networks, {} switches, {} tenants, {} servers; data in {}",
            config.path.display(),
            config.networks.len(),
            config.switches.len(),
            config.tenants.len(),
            config.servers.len(),
            config.manager.data_dir.display()
        );
        return Ok(());
    }
    init_logging();
    refuse_exposed_secrets(&config)?;
    refuse_plain_http(&config)?;
    let store_failure = |detail: &dyn std::fmt::Display| Failure::new(&messages::STORE_FAILURE, &[("detail", detail)]);
    let data_dir = &config.manager.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| store_failure(&format!("cannot create {}: {e}", data_dir.display())))?;
    let instance = config.manager.instance.clone();
    let (store, database) = open_store(&config.manager).await?;
    let connected = messages::DATABASE_CONNECTED.render(&[("instance", &instance), ("database", &database)]);
    tracing::info!(number = messages::DATABASE_CONNECTED.number, "{connected}");

    let report = store.sync_inventory(&inventory(&config)).await.map_err(|e| store_failure(&e))?;
    let synced = messages::INVENTORY_SYNCED.render(&[
        ("added", &report.added.len()),
        ("updated", &report.updated.len()),
        ("retired", &report.retired.len()),
    ]);
    tracing::info!(number = messages::INVENTORY_SYNCED.number, "{synced}");
    note(&*store, messages::DATABASE_CONNECTED.number, connected, &instance).await;
    note(&*store, messages::INVENTORY_SYNCED.number, synced, &instance).await;
    for name in &report.retired {
        let text = messages::SERVER_RETIRED.render(&[("server", name)]);
        tracing::warn!(number = messages::SERVER_RETIRED.number, "{text}");
        note(&*store, messages::SERVER_RETIRED.number, text, &instance).await;
    }

    if store.count_tokens().await.map_err(|e| store_failure(&e))? == 0 {
        let token = cordon_api::new_token();
        let path = data_dir.join("admin.token");
        let created = store.create_token("admin", Role::Admin, &cordon_api::hash_token(&token), None).await;
        // Instances that start together on one database: the first one creates the token.
        if let Err(error) = created {
            if store.count_tokens().await.map_err(|e| store_failure(&e))? == 0 {
                return Err(store_failure(&error));
            }
        } else {
            write_secret(&path, &token).map_err(|e| store_failure(&format!("cannot write {}: {e}", path.display())))?;
        }
        let text = messages::ADMIN_TOKEN_CREATED.render(&[("path", &path.display())]);
        tracing::info!(number = messages::ADMIN_TOKEN_CREATED.number, "{text}");
        note(&*store, messages::ADMIN_TOKEN_CREATED.number, text, &instance).await;
    }

    let topology = topology(&config)
        .map_err(|detail| Failure::new(&messages::INVALID_CONFIGURATION, &[("detail", &detail)]).usage())?;
    let mut settings = EngineSettings::new(instance.clone());
    settings.database = database;
    settings.action_lease = std::time::Duration::from_secs(config.manager.action_lease_secs);
    settings.max_attempts = config.manager.max_attempts;
    settings.workers = config.manager.workers;
    settings.driver_timeout = std::time::Duration::from_secs(config.manager.driver_timeout_secs);
    settings.retry_base = std::time::Duration::from_secs(config.manager.retry_backoff_secs);
    settings.infrastructure = crate::infrastructure::addresses(&config);
    let on_drift =
        if config.manager.on_drift_enforce { cordon_engine::OnDrift::Enforce } else { cordon_engine::OnDrift::Report };
    let engine = Engine::new(store.clone(), topology, settings);
    engine.set_policy(crate::sources::policy_set(&config));
    // After the inventory sync: the operational addresses it recorded, in memory.
    engine.load_address_index().await.map_err(|e| Failure {
        number: e.number(),
        text: e.text,
        remedy: None,
        exit_code: 1,
    })?;
    // Notifications: their secrets are read now, so that a missing file stops the start.
    let notifier = match &config.notify {
        Some(notify) => Some(
            cordon_notify::NotifySettings::from_config(notify, &config.tenants, &instance)
                .and_then(cordon_notify::Notifier::new)
                .map_err(|detail| Failure::new(&messages::INVALID_CONFIGURATION, &[("detail", &detail)]).usage())?,
        ),
        None => None,
    };
    let notify_state = notifier.as_ref().map(cordon_notify::Notifier::state);
    let resumed =
        engine.recover().await.map_err(|e| Failure { number: e.number(), text: e.text, remedy: None, exit_code: 1 })?;
    if resumed > 0 {
        tracing::warn!(resumed, "resuming actions left running by the previous process");
    }

    let tls = match &config.manager.tls {
        Some(files) => Some((load_tls(files).await?, files.clone())),
        None => None,
    };
    let listener = TcpListener::bind(config.manager.listen).await.map_err(|e| {
        Failure::new(
            &messages::INVALID_CONFIGURATION,
            &[("detail", &format!("manager.listen {}: {e}", config.manager.listen))],
        )
        .usage()
    })?;
    let address = listener.local_addr().map_err(|e| Failure::new(&messages::INTERNAL_ERROR, &[("detail", &e)]))?;
    let started = messages::CORDON_STARTED.render(&[
        ("version", &env!("CARGO_PKG_VERSION")),
        ("instance", &instance),
        ("listen", &address),
    ]);
    tracing::info!(number = messages::CORDON_STARTED.number, "{started}");
    note(&*store, messages::CORDON_STARTED.number, started, &instance).await;

    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    // Subscribed to the engine's events here, before anything can emit one.
    let notify_task = notifier.map(|notifier| {
        let mut stop = stop.clone();
        tokio::spawn(notifier.run(engine.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });
    let ingest = crate::sources::start(&config, &engine, &stop).await?;
    // Tests and scripts that asked for port 0 read the real address here. Written once the
    // sources listen too, so that a reader of this file can send to them at once.
    // Written whole (temporary file, then rename) so that a reader never sees it half-written.
    let address_file = data_dir.join("cordon.addr");
    let temporary = data_dir.join("cordon.addr.tmp");
    if std::fs::write(&temporary, format!("{address}\n"))
        .and_then(|()| std::fs::rename(&temporary, &address_file))
        .is_err()
    {
        tracing::warn!(path = %address_file.display(), "could not write the listen address file");
    }
    tokio::spawn(crate::sources::watch_policy(config.path.clone(), engine.clone(), stop.clone()));
    // The reconciler: at start and on a timer, the records against the network.
    let reconciler_task = {
        let engine = engine.clone();
        let mut stop = stop.clone();
        let interval = std::time::Duration::from_secs(config.manager.reconcile_interval_secs);
        tokio::spawn(async move {
            engine
                .run_reconciler(interval, on_drift, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let heartbeat_task = {
        let engine = engine.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            engine
                .run_heartbeat(address.to_string(), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let detections_task = {
        let engine = engine.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            engine
                .run_detections(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let engine_task = {
        let engine = engine.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            engine
                .run(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    // Console sessions past their idle timeout or lifetime are refused anyway; this removes them.
    {
        let store = store.clone();
        let mut stop = stop.clone();
        let idle = chrono::Duration::seconds(config.manager.session_idle_timeout_secs as i64);
        tokio::spawn(async move {
            loop {
                let now = chrono::Utc::now();
                if let Err(error) = store.delete_expired_sessions(now - idle, now).await {
                    tracing::warn!(%error, "could not remove expired console sessions");
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
                }
            }
        });
    }
    let app = cordon_api::router(cordon_api::ApiState {
        engine,
        ingest: std::sync::Arc::new(ingest),
        on_drift,
        notify: notify_state,
        console: std::sync::Arc::new(cordon_api::console::ConsoleSettings::new(
            std::time::Duration::from_secs(config.manager.session_idle_timeout_secs),
            std::time::Duration::from_secs(config.manager.session_lifetime_secs),
            // Over TLS the cookies are always `Secure`; `secure_cookies` is for TLS ended by a proxy.
            config.manager.secure_cookies || config.manager.tls.is_some(),
        )),
    });
    let mut http_stop = stop.clone();
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    // On shutdown, open connections (a console's event stream, say) get this long to finish.
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        let _ = http_stop.wait_for(|s| *s).await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let internal = |e: std::io::Error| Failure::new(&messages::INTERNAL_ERROR, &[("detail", &e)]);
    let listener = listener.into_std().map_err(internal)?;
    let served: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls {
        None => {
            let mut server = axum_server::from_tcp(listener).map_err(internal)?.handle(handle);
            server.http_builder().http1().header_read_timeout(HEADER_READ_TIMEOUT);
            Box::pin(server.serve(make_service))
        }
        Some((rustls, files)) => {
            tokio::spawn(reload_tls_on_hangup(rustls.clone(), files, stop.clone()));
            let mut server = axum_server::from_tcp_rustls(listener, rustls).map_err(internal)?.handle(handle);
            server.http_builder().http1().header_read_timeout(HEADER_READ_TIMEOUT);
            Box::pin(server.serve(make_service))
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing running steps");
        let _ = stop_sender.send(true);
    });
    let result = served.await;
    let _ = engine_task.await;
    let _ = detections_task.await;
    let _ = reconciler_task.await;
    let _ = heartbeat_task.await;
    if let Some(task) = notify_task {
        let _ = task.await;
    }
    result.map_err(|e| Failure::new(&messages::INTERNAL_ERROR, &[("detail", &e)]))
}

/// A client must send its request's headers within this long (a slow or silent client does not
/// hold a connection open for ever).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses to start when a file holding a secret is readable by group or others (60090).
fn refuse_exposed_secrets(config: &cordon_config::Config) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    for (key, path) in config.secret_files() {
        // A missing file is reported by whoever reads it, with its own message.
        let Ok(metadata) = std::fs::metadata(path) else { continue };
        let mode = metadata.mode() & 0o777;
        if mode & 0o077 != 0 {
            let mode = format!("{mode:04o}");
            return Err(Failure::new(
                &messages::SECRET_FILE_EXPOSED,
                &[("key", &key), ("path", &path.display()), ("mode", &mode)],
            )
            .usage());
        }
    }
    Ok(())
}

/// Plain HTTP only on loopback, unless `allow_plain_http = true` (then with a warning).
fn refuse_plain_http(config: &cordon_config::Config) -> Result<(), Failure> {
    let listen = config.manager.listen;
    if config.manager.tls.is_some() || listen.ip().is_loopback() {
        return Ok(());
    }
    if config.manager.allow_plain_http {
        let text = messages::PLAIN_HTTP_ALLOWED.render(&[("listen", &listen)]);
        tracing::warn!(number = messages::PLAIN_HTTP_ALLOWED.number, "{text}");
        return Ok(());
    }
    Err(Failure::new(&messages::PLAIN_HTTP_REFUSED, &[("listen", &listen)]).usage())
}

async fn load_tls(files: &cordon_config::TlsFiles) -> Result<axum_server::tls_rustls::RustlsConfig, Failure> {
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert_file, &files.key_file).await.map_err(|e| {
        Failure::new(
            &messages::TLS_LOAD_FAILED,
            &[("cert", &files.cert_file.display()), ("key", &files.key_file.display()), ("detail", &e)],
        )
        .usage()
    })
}

/// On SIGHUP, reads the certificate and key again; a bad pair keeps the one in use (41092).
async fn reload_tls_on_hangup(
    rustls: axum_server::tls_rustls::RustlsConfig,
    files: cordon_config::TlsFiles,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        let (cert, key) = (files.cert_file.display(), files.key_file.display());
        match rustls.reload_from_pem_file(&files.cert_file, &files.key_file).await {
            Ok(()) => {
                let text = messages::TLS_RELOADED.render(&[("cert", &cert)]);
                tracing::info!(number = messages::TLS_RELOADED.number, "{text}");
            }
            Err(error) => {
                let text = messages::TLS_RELOAD_FAILED.render(&[("cert", &cert), ("key", &key), ("detail", &error)]);
                tracing::warn!(number = messages::TLS_RELOAD_FAILED.number, "{text}");
            }
        }
    }
}

/// The store `[manager]` names: the embedded SQLite database in `data_dir`, or the PostgreSQL
/// database of `database` (with the password from `database_password_file`). Returns it with
/// its description for `cordon status` (never the password).
async fn open_store(manager: &cordon_config::ManagerConfig) -> Result<(Arc<dyn Store>, String), Failure> {
    let too_new = |database: &str, found: i64, known: i64| {
        Failure::new(&messages::DATABASE_TOO_NEW, &[("database", &database), ("found", &found), ("known", &known)])
    };
    let Some(url) = &manager.database else {
        let path = manager.data_dir.join("cordon.db");
        let described = format!("sqlite:{}", path.display());
        let store = SqliteStore::open(&path).map_err(|e| match e {
            StoreError::SchemaTooNew { found, known } => too_new(&described, found, known),
            other => Failure::new(&messages::STORE_FAILURE, &[("detail", &other)]),
        })?;
        return Ok((Arc::new(store.with_instance(&manager.instance)), described));
    };
    let password = match &manager.database_password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::new(&messages::DATABASE_PASSWORD_FILE, &[("path", &path.display()), ("detail", &e)])
            })?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
        None => None,
    };
    let shown = cordon_store::PostgresStore::redact(url);
    let store = cordon_store::PostgresStore::connect(url, password.as_deref()).await.map_err(|e| match e {
        StoreError::SchemaTooNew { found, known } => too_new(&shown, found, known),
        StoreError::Unreachable(detail) => {
            Failure::new(&messages::DATABASE_UNREACHABLE, &[("database", &shown), ("detail", &detail)])
        }
        other => Failure::new(&messages::STORE_FAILURE, &[("detail", &other)]),
    })?;
    let described = store.describe().to_string();
    Ok((Arc::new(store.with_instance(&manager.instance)), described))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORDON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Records a numbered message; a failure to record one is logged, never fatal.
async fn note(store: &dyn Store, number: u32, text: String, instance: &str) {
    let message = NewMessage { number, text, server_id: None, action_id: None, instance: instance.to_string() };
    if let Err(error) = store.record_message(&message).await {
        tracing::warn!(%error, "could not record message {number}");
    }
}

/// Writes a secret readable by its owner only; an existing file is replaced.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}

fn inventory(config: &Config) -> Inventory {
    Inventory {
        networks: config
            .networks
            .iter()
            .map(|n| NetworkSpec {
                name: n.name.clone(),
                role: n.role,
                subnet: n.subnet.to_string(),
                quarantine_network: n.quarantine_network.clone(),
                pool: n.pool.map(|p| p.to_string()),
                bridge: n.bridge.clone(),
            })
            .collect(),
        tenants: config
            .tenants
            .iter()
            .map(|t| TenantSpec { name: t.name.clone(), admin_email: t.admin_email.clone() })
            .collect(),
        servers: config
            .servers
            .iter()
            .map(|s| ServerSpec {
                name: s.name.clone(),
                kind: s.kind,
                tenant: s.tenant.clone(),
                user_email: s.user_email.clone(),
                hypervisor: s.hypervisor.clone(),
                domain: s.domain.clone(),
                nics: s
                    .nics
                    .iter()
                    .map(|n| NicSpec {
                        mac: n.mac,
                        network: n.network.clone(),
                        ip: Some(n.ip),
                        switch: n.switch.clone(),
                        port: n.port.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The drivers of the configuration. Secrets (BMC passwords) are read here, from their files.
fn topology(config: &Config) -> Result<Topology, String> {
    let networks = config
        .networks
        .iter()
        .map(|n| {
            // The gateway is never handed to a quarantined server.
            let pool = n.pool.map(|range| AddressPool::new(range, n.gateway));
            let plan = NetworkPlan {
                name: n.name.clone(),
                role: n.role,
                bridge: n.bridge.clone(),
                vlan: n.vlan,
                quarantine_network: n.quarantine_network.clone(),
                pool,
            };
            (n.name.clone(), plan)
        })
        .collect();
    // An ovs call answers within the engine's driver_timeout: half of it for each OVSDB answer
    // and half for ovs-vswitchd to confirm a change.
    let ovs_timeout = std::time::Duration::from_secs(config.manager.driver_timeout_secs.max(2)) / 2;
    let switches: HashMap<String, Arc<dyn SwitchDriver>> = config
        .switches
        .iter()
        .map(|s| {
            let driver: Arc<dyn SwitchDriver> = match s.driver {
                SwitchDriverKind::LinuxBridge => Arc::new(LinuxBridgeSwitch::new(s.name.clone(), s.netns.clone())),
                SwitchDriverKind::Ovs => {
                    // Validation made sure both are there and well formed.
                    let (Some(ovsdb), Some(bridge)) = (&s.ovsdb, &s.bridge) else {
                        return Err(format!("switch {}: an ovs switch needs ovsdb and bridge", s.name));
                    };
                    let address = ovsdb.parse().map_err(|e| format!("switch {}: ovsdb {e}", s.name))?;
                    Arc::new(
                        OvsSwitch::new(s.name.clone(), address, bridge.clone()).with_timeouts(ovs_timeout, ovs_timeout),
                    )
                }
            };
            Ok((s.name.clone(), driver))
        })
        .collect::<Result<_, String>>()?;
    let mut topology = Topology {
        networks,
        switches,
        graceful_timeout: std::time::Duration::from_secs(config.manager.graceful_timeout_secs),
        reboot_deadline: std::time::Duration::from_secs(config.manager.reboot_deadline_secs),
        ..Topology::default()
    };
    for hypervisor in &config.hypervisors {
        let driver = match hypervisor.driver {
            HypervisorDriverKind::Libvirt => Arc::new(
                LibvirtHypervisor::new(hypervisor.name.clone(), hypervisor.uri.clone())
                    .with_netns(hypervisor.netns.clone()),
            ),
        };
        let power_of = driver.clone();
        let power: DomainPower =
            Arc::new(move |domain: &str| -> Arc<dyn PowerDriver> { Arc::new(power_of.power(domain)) });
        topology.domain_power.insert(hypervisor.name.clone(), power);
        topology.hypervisors.insert(hypervisor.name.clone(), driver);
    }
    for server in &config.servers {
        let Some(bmc) = &server.bmc else { continue };
        let password = std::fs::read_to_string(&bmc.password_file)
            .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| {
                format!("cannot read the BMC password file {} of {}: {e}", bmc.password_file.display(), server.name)
            })?;
        let mut settings = RedfishSettings::new(&bmc.endpoint, &bmc.system, &bmc.username, password);
        settings.ca_file = bmc.ca_file.clone();
        settings.insecure = bmc.insecure;
        let driver = RedfishBmc::new(settings).map_err(|e| format!("BMC of {}: {e}", server.name))?;
        topology.bmcs.insert(server.name.clone(), Arc::new(driver));
    }
    Ok(topology)
}
