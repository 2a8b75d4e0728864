//! The store suite: every backend must pass it. Each test takes a fresh store of each backend
//! from `stores()`: an in-memory SQLite database, and a new database on the PostgreSQL server
//! that this test binary starts (`support/postgres.rs`).

mod support;

use std::net::IpAddr;

use cordon_model::{ActionCommand, ActionKind, ActionState, AddressPool, NetworkRole, Role, ServerKind, ServerState};
use cordon_store::*;

async fn stores() -> Vec<(&'static str, Box<dyn Store>)> {
    let url = support::postgres::fresh_database("cpg_suite");
    let postgres = PostgresStore::connect(&url, None).await.unwrap();
    vec![("sqlite", Box::new(SqliteStore::open_in_memory().unwrap())), ("postgres", Box::new(postgres))]
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn inventory(servers: &[(&str, &str, &str)]) -> Inventory {
    Inventory {
        networks: vec![
            NetworkSpec {
                name: "office".into(),
                role: NetworkRole::Operational,
                subnet: "10.10.0.0/24".into(),
                quarantine_network: Some("quarantine".into()),
                pool: None,
                bridge: Some("br-office".into()),
            },
            NetworkSpec {
                name: "quarantine".into(),
                role: NetworkRole::Quarantine,
                subnet: "10.99.0.0/24".into(),
                quarantine_network: None,
                pool: Some("10.99.0.100-10.99.0.101".into()),
                bridge: Some("br-quarantine".into()),
            },
        ],
        tenants: vec![TenantSpec { name: "sales".into(), admin_email: "a@example.com".into() }],
        servers: servers
            .iter()
            .map(|(name, mac, address)| ServerSpec {
                name: name.to_string(),
                kind: ServerKind::Physical,
                tenant: Some("sales".into()),
                user_email: None,
                hypervisor: None,
                domain: None,
                nics: vec![NicSpec {
                    mac: mac.parse().unwrap(),
                    network: "office".into(),
                    ip: Some(ip(address)),
                    switch: Some("tor-1".into()),
                    port: Some(format!("p-{name}")),
                }],
            })
            .collect(),
    }
}

fn new_action(server_id: i64, kind: ActionKind) -> NewAction {
    NewAction {
        kind,
        server_id: Some(server_id),
        address: None,
        state: ActionState::Pending,
        reason: Some("test".into()),
        trigger: "api".into(),
        requested_by: "tester".into(),
        instance: "i1".into(),
        decided_by: None,
        message: None,
    }
}

const A: (&str, &str, &str) = ("a", "02:00:00:00:00:01", "10.10.0.11");
const B: (&str, &str, &str) = ("b", "02:00:00:00:00:02", "10.10.0.12");
const C: (&str, &str, &str) = ("c", "02:00:00:00:00:03", "10.10.0.13");

#[tokio::test]
async fn inventory_sync_adds_updates_and_retires_without_deleting() {
    for (backend, store) in stores().await {
        let report = store.sync_inventory(&inventory(&[A, B])).await.unwrap();
        assert_eq!(report.added, vec!["a", "b"], "{backend}");
        let again = store.sync_inventory(&inventory(&[A, B])).await.unwrap();
        assert_eq!(again, SyncReport::default(), "{backend}: an unchanged config changes nothing");

        let a = store.server_by_name("a").await.unwrap().unwrap();
        store.record_nic_position(a.id, a.nics[0].mac, "quarantine", Some(ip("10.99.0.100"))).await.unwrap();
        let report = store.sync_inventory(&inventory(&[A])).await.unwrap();
        assert_eq!(report.retired, vec!["b"], "{backend}");
        let b = store.server_by_name("b").await.unwrap().unwrap();
        assert!(b.retired, "{backend}: retired, not deleted");
        let a = store.server_by_name("a").await.unwrap().unwrap();
        assert_eq!(a.nics[0].current_network, "quarantine", "{backend}: a sync keeps where a NIC stands");
        assert_eq!(a.nics[0].current_ip, Some(ip("10.99.0.100")));
        assert_eq!(store.list_servers().await.unwrap().len(), 2);
        let report = store.sync_inventory(&inventory(&[A, B])).await.unwrap();
        assert_eq!(report.updated, vec!["b"], "{backend}: a returning server is un-retired");
    }
}

#[tokio::test]
async fn servers_are_found_by_operational_and_current_address() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A, B])).await.unwrap();
        assert_eq!(store.server_by_address(ip("10.10.0.12")).await.unwrap().unwrap().name, "b", "{backend}");
        assert!(store.server_by_address(ip("10.10.0.99")).await.unwrap().is_none());
        let a = store.server_by_name("a").await.unwrap().unwrap();
        store.record_nic_position(a.id, a.nics[0].mac, "quarantine", Some(ip("10.99.0.100"))).await.unwrap();
        assert_eq!(store.server_by_address(ip("10.99.0.100")).await.unwrap().unwrap().name, "a");
        assert!(store.server_by_name("nope").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn leases_are_unique_reused_and_exhaust() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A, B, C])).await.unwrap();
        let pool = AddressPool::new("10.99.0.100-10.99.0.101".parse().unwrap(), []);
        let servers = store.list_servers().await.unwrap();
        let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
        let first = store.lease_address(a.id, a.nics[0].mac, "quarantine", &pool).await.unwrap();
        let again = store.lease_address(a.id, a.nics[0].mac, "quarantine", &pool).await.unwrap();
        assert_eq!(first, again, "{backend}: a NIC keeps its lease");
        let second = store.lease_address(b.id, b.nics[0].mac, "quarantine", &pool).await.unwrap();
        assert_ne!(first, second);
        let exhausted = store.lease_address(c.id, c.nics[0].mac, "quarantine", &pool).await.unwrap_err();
        assert!(matches!(exhausted, StoreError::PoolExhausted { .. }), "{backend}: {exhausted}");
        store.release_address(a.id, a.nics[0].mac, "quarantine").await.unwrap();
        assert_eq!(store.lease_address(c.id, c.nics[0].mac, "quarantine", &pool).await.unwrap(), first);
    }
}

#[tokio::test]
async fn transitions_follow_the_state_machine_with_compare_and_swap() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A])).await.unwrap();
        let a = store.server_by_name("a").await.unwrap().unwrap();
        let action = store.create_action(&new_action(a.id, ActionKind::Quarantine)).await.unwrap();
        assert_eq!((action.state, action.generation, action.attempts), (ActionState::Pending, 1, 0), "{backend}");
        assert_eq!(action.server_name.as_deref(), Some("a"));

        let running = store.transition_action(action.id, 1, ActionCommand::Start, None).await.unwrap();
        assert_eq!((running.state, running.generation, running.attempts), (ActionState::Running, 2, 1));
        let stale = store.transition_action(action.id, 1, ActionCommand::Succeed, None).await.unwrap_err();
        assert_eq!(stale, StoreError::Conflict { id: action.id, expected: 1, found: 2 }, "{backend}");
        let forbidden = store.transition_action(action.id, 2, ActionCommand::Retry, None).await.unwrap_err();
        assert!(matches!(forbidden, StoreError::InvalidTransition { .. }), "{backend}");
        let message = MessageRef { number: 21002, text: "done".into() };
        let done = store.transition_action(action.id, 2, ActionCommand::Succeed, Some(message.clone())).await.unwrap();
        assert_eq!((done.state, done.message), (ActionState::Succeeded, Some(message)));
        let missing = store.transition_action(999, 1, ActionCommand::Start, None).await.unwrap_err();
        assert!(matches!(missing, StoreError::NotFound { .. }));
    }
}

#[tokio::test]
async fn open_runnable_and_listed_actions() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A, B])).await.unwrap();
        let a = store.server_by_name("a").await.unwrap().unwrap();
        let b = store.server_by_name("b").await.unwrap().unwrap();
        let first = store.create_action(&new_action(a.id, ActionKind::Quarantine)).await.unwrap();
        let second = store.create_action(&new_action(b.id, ActionKind::Quarantine)).await.unwrap();
        assert_eq!(store.open_action(a.id, ActionKind::Quarantine).await.unwrap().map(|x| x.id), Some(first.id));
        assert!(store.open_action(a.id, ActionKind::Unquarantine).await.unwrap().is_none(), "{backend}");
        let runnable: Vec<i64> = store.runnable_actions().await.unwrap().iter().map(|x| x.id).collect();
        assert_eq!(runnable, vec![first.id, second.id], "oldest first");
        store.transition_action(first.id, 1, ActionCommand::Start, None).await.unwrap();
        assert_eq!(store.running_actions().await.unwrap().len(), 1);
        let third = store.create_action(&new_action(a.id, ActionKind::Unquarantine)).await.unwrap();
        let latest: Vec<i64> = store.latest_actions().await.unwrap().iter().map(|x| x.id).collect();
        assert_eq!(latest, vec![second.id, third.id], "{backend}: the newest action of each server");
        store.transition_action(third.id, 1, ActionCommand::Cancel, None).await.unwrap();
        let listed = store.list_actions(&ActionFilter::default()).await.unwrap();
        assert_eq!(
            listed.iter().map(|x| x.id).collect::<Vec<_>>(),
            vec![third.id, second.id, first.id],
            "newest first"
        );
        let pending = store
            .list_actions(&ActionFilter { state: Some(ActionState::Pending), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        let of_a = store.list_actions(&ActionFilter { server_id: Some(a.id), ..Default::default() }).await.unwrap();
        assert_eq!(of_a.len(), 2);
    }
}

#[tokio::test]
async fn unresolved_actions_have_no_server() {
    for (backend, store) in stores().await {
        let mut action = new_action(0, ActionKind::Quarantine);
        action.server_id = None;
        action.address = Some(ip("10.10.0.99"));
        let record = store.create_action(&action).await.unwrap();
        assert_eq!((record.server_id, record.server_name), (None, None), "{backend}");
        assert_eq!(record.address, Some(ip("10.10.0.99")));
    }
}

#[tokio::test]
async fn steps_messages_audit_and_tokens() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A])).await.unwrap();
        let a = store.server_by_name("a").await.unwrap().unwrap();
        let action = store.create_action(&new_action(a.id, ActionKind::Quarantine)).await.unwrap();
        let now = chrono::Utc::now();
        let step = NewStep {
            action_id: action.id,
            attempt: 1,
            name: "ensure_port_on_bridge".into(),
            target: "tor-1/p-a".into(),
            outcome: StepOutcome::AlreadyInPlace,
            detail: "already".into(),
            message_number: Some(21005),
            instance: "i1".into(),
            started_at: now,
            finished_at: now,
        };
        assert_eq!(store.append_step(&step).await.unwrap().seq, 1);
        assert_eq!(store.append_step(&step).await.unwrap().seq, 2);
        let steps = store.steps(action.id).await.unwrap();
        assert_eq!(steps.len(), 2, "{backend}");
        assert_eq!(steps[0].step.outcome, StepOutcome::AlreadyInPlace);

        let message = NewMessage {
            number: 21001,
            text: "started".into(),
            server_id: Some(a.id),
            action_id: Some(action.id),
            instance: "i1".into(),
        };
        store.record_message(&message).await.unwrap();
        assert_eq!(store.messages_for_action(action.id).await.unwrap()[0].message, message);
        assert_eq!(store.recent_messages(10).await.unwrap().len(), 1);

        let entry = AuditEntry {
            actor: "token:admin".into(),
            origin: "127.0.0.1".into(),
            verb: "quarantine".into(),
            target: "server a".into(),
            detail: "".into(),
            instance: "i1".into(),
        };
        store.append_audit(&entry).await.unwrap();
        assert_eq!(store.list_audit(10).await.unwrap()[0].entry, entry);

        assert_eq!(store.count_tokens().await.unwrap(), 0);
        store.create_token("admin", Role::Admin, "abc").await.unwrap();
        assert_eq!(store.token_by_hash("abc").await.unwrap().unwrap().role, Role::Admin);
        assert!(store.token_by_hash("abd").await.unwrap().is_none());
        assert!(store.create_token("admin", Role::Viewer, "other").await.is_err(), "token names are unique");
    }
}

#[tokio::test]
async fn server_state_is_recorded() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A])).await.unwrap();
        let a = store.server_by_name("a").await.unwrap().unwrap();
        assert_eq!(a.state, ServerState::Operational);
        store.set_server_state(a.id, ServerState::Quarantined).await.unwrap();
        assert_eq!(store.server_by_id(a.id).await.unwrap().unwrap().state, ServerState::Quarantined, "{backend}");
        assert!(store.set_server_state(999, ServerState::Quarantined).await.is_err());
    }
}

#[tokio::test]
async fn sqlite_file_survives_reopen_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cordon.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.sync_inventory(&inventory(&[A])).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.server_by_name("a").await.unwrap().is_some());
    drop(store);
    rusqlite_bump(&path);
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::SchemaTooNew { .. }), "{error}");
}

/// Pretends a newer Cordon migrated the file.
fn rusqlite_bump(path: &std::path::Path) {
    let status = std::process::Command::new("sqlite3")
        .arg(path)
        .arg("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 'x')")
        .status()
        .expect("sqlite3 is installed by scripts/install-deps.sh");
    assert!(status.success());
}

#[tokio::test]
async fn imported_servers_are_added_once_and_never_retired_by_the_configuration() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A])).await.unwrap();
        let vm = ServerSpec {
            name: "vpc-001".into(),
            kind: ServerKind::Virtual,
            tenant: None,
            user_email: None,
            hypervisor: Some("kvm-1".into()),
            domain: Some("vpc-001".into()),
            nics: vec![NicSpec {
                mac: "52:54:00:00:00:11".parse().unwrap(),
                network: "office".into(),
                ip: None,
                switch: None,
                port: None,
            }],
        };
        let mut clash = vm.clone();
        clash.name = "a".into();
        let report = store.import_servers(&[vm.clone(), clash], "import:kvm-1").await.unwrap();
        assert_eq!(report.added, vec!["vpc-001"], "{backend}: an existing name is left alone");
        let stored = store.server_by_name("vpc-001").await.unwrap().unwrap();
        assert_eq!((stored.hypervisor.as_deref(), stored.domain.as_deref()), (Some("kvm-1"), Some("vpc-001")));
        assert_eq!(stored.nics[0].operational_ip, None);
        assert_eq!(stored.nics[0].current_ip, None);
        assert_eq!(store.import_servers(&[vm], "import:kvm-1").await.unwrap().added.len(), 0, "idempotent");
        let report = store.sync_inventory(&inventory(&[A])).await.unwrap();
        assert!(report.retired.is_empty(), "{backend}: an imported server is not in the configuration by design");
        assert!(!store.server_by_name("vpc-001").await.unwrap().unwrap().retired);
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[tokio::test]
async fn claims_lease_actions_one_per_server_and_orphans_expire() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A])).await.unwrap();
        let a = store.server_by_name("a").await.unwrap().unwrap();
        let first = store.create_action(&new_action(a.id, ActionKind::Quarantine)).await.unwrap();
        let second = store.create_action(&new_action(a.id, ActionKind::Unquarantine)).await.unwrap();
        let until = now_us() + 60_000_000;
        let message = MessageRef { number: 21001, text: "started".into() };
        let claimed = store.claim_action(first.id, 1, "i1", until, Some(message.clone())).await.unwrap();
        assert_eq!((claimed.state, claimed.attempts, claimed.message), (ActionState::Running, 1, Some(message)));
        let again = store.claim_action(first.id, 1, "i2", until, None).await.unwrap_err();
        assert!(matches!(again, StoreError::Conflict { .. }), "{backend}: {again}");
        let busy = store.claim_action(second.id, 1, "i2", until, None).await.unwrap_err();
        assert_eq!(busy, StoreError::ServerBusy { id: second.id, server_id: a.id }, "{backend}: one action per server");

        assert!(store.renew_action_lease(first.id, "i1", until + 1).await.unwrap(), "{backend}");
        assert!(!store.renew_action_lease(first.id, "i2", until + 1).await.unwrap(), "{backend}: not its lease");
        assert!(store.orphaned_actions(now_us(), None).await.unwrap().is_empty(), "{backend}: lease is live");
        let mine: Vec<i64> = store.orphaned_actions(now_us(), Some("i1")).await.unwrap().iter().map(|x| x.id).collect();
        assert_eq!(mine, vec![first.id], "{backend}: a restarted instance resumes its own actions");
        let expired: Vec<i64> = store.orphaned_actions(until + 2, None).await.unwrap().iter().map(|x| x.id).collect();
        assert_eq!(expired, vec![first.id], "{backend}: an expired lease is orphaned");

        let instances = {
            store.heartbeat("i1", "127.0.0.1:8080", chrono::Utc::now()).await.unwrap();
            store.instances().await.unwrap()
        };
        assert_eq!(instances.len(), 1, "{backend}");
        assert_eq!(instances[0].actions, vec![(first.id, until + 1)], "{backend}: the instance lists its leases");

        // Taking over: back in line (generation CAS), then claimed by another instance.
        let back = store.transition_action(first.id, claimed.generation, ActionCommand::Backoff, None).await.unwrap();
        assert!(!store.renew_action_lease(first.id, "i1", until).await.unwrap(), "{backend}: the lease ended");
        let taken = store.claim_action(first.id, back.generation, "i2", until, None).await.unwrap();
        assert_eq!((taken.state, taken.attempts), (ActionState::Running, 2), "{backend}");
        store.transition_action(first.id, taken.generation, ActionCommand::Succeed, None).await.unwrap();
        store.claim_action(second.id, 1, "i2", until, None).await.unwrap();
    }
}

#[tokio::test]
async fn named_leases_have_one_holder_until_they_expire() {
    for (backend, store) in stores().await {
        let now = now_us();
        assert!(store.acquire_lease("reconciler", "i1", now + 10_000_000).await.unwrap(), "{backend}");
        assert!(store.acquire_lease("reconciler", "i1", now + 20_000_000).await.unwrap(), "{backend}: renewal");
        assert!(!store.acquire_lease("reconciler", "i2", now + 20_000_000).await.unwrap(), "{backend}: held");
        assert!(store.acquire_lease("detections", "i2", now + 20_000_000).await.unwrap(), "{backend}: another name");
        store.heartbeat("i1", "a:1", chrono::Utc::now()).await.unwrap();
        store.heartbeat("i2", "b:2", chrono::Utc::now()).await.unwrap();
        let instances = store.instances().await.unwrap();
        let leases = |name: &str| instances.iter().find(|i| i.name == name).unwrap().leases.clone();
        assert_eq!(leases("i1"), vec![("reconciler".to_string(), now + 20_000_000)], "{backend}");
        assert_eq!(leases("i2"), vec![("detections".to_string(), now + 20_000_000)], "{backend}");
        // Expired: another holder takes it.
        assert!(store.acquire_lease("reconciler", "i1", now - 1).await.unwrap());
        assert!(store.acquire_lease("reconciler", "i2", now + 20_000_000).await.unwrap(), "{backend}: expired");
    }
}

#[tokio::test]
async fn a_detection_is_settled_once() {
    for (backend, store) in stores().await {
        let detection = cordon_model::Detection {
            received_at_us: now_us(),
            observed_at_us: None,
            source: "eve".into(),
            sensor: None,
            subject: ip("10.10.0.11"),
            peer: None,
            src_ip: Some(ip("10.10.0.11")),
            dest_ip: None,
            target_ip: None,
            signature_id: None,
            signature: "test".into(),
            category: None,
            severity: cordon_model::ThreatSeverity::High,
            raw: "{}".into(),
        };
        let ids = store.record_detections(&[detection], "i1", None).await.unwrap();
        store.settle_detection(ids[0], "ignored", None, None).await.unwrap();
        let twice = store.settle_detection(ids[0], "ignored", None, None).await.unwrap_err();
        assert_eq!(twice, StoreError::AlreadySettled { id: ids[0] }, "{backend}");
        assert!(store.unprocessed_detections(10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn postgres_instances_race_for_one_action_and_exactly_one_wins() {
    let url = support::postgres::fresh_database("cpg_race");
    let one = PostgresStore::connect(&url, None).await.unwrap();
    let two = PostgresStore::connect(&url, None).await.unwrap();
    one.sync_inventory(&inventory(&[A, B, C])).await.unwrap();
    two.sync_inventory(&inventory(&[A, B, C])).await.unwrap();
    let mut ids = Vec::new();
    for server in one.list_servers().await.unwrap() {
        for _ in 0..5 {
            ids.push(one.create_action(&new_action(server.id, ActionKind::Reboot)).await.unwrap().id);
        }
    }
    let until = now_us() + 60_000_000;
    let claims = ids.iter().flat_map(|id| {
        let (one, two) = (one.clone(), two.clone());
        let id = *id;
        [
            tokio::spawn(async move { one.claim_action(id, 1, "i1", until, None).await.is_ok() }),
            tokio::spawn(async move { two.claim_action(id, 1, "i2", until, None).await.is_ok() }),
        ]
    });
    let mut won = 0;
    for claim in claims.collect::<Vec<_>>() {
        won += usize::from(claim.await.unwrap());
    }
    assert_eq!(won, 3, "one running action per server, each claimed by exactly one instance");
    assert_eq!(one.running_actions().await.unwrap().len(), 3);
}

#[tokio::test]
async fn postgres_refuses_a_newer_schema_and_names_an_unreachable_server() {
    let url = support::postgres::fresh_database("cpg_schema");
    let store = PostgresStore::connect(&url, None).await.unwrap();
    store.sync_inventory(&inventory(&[A])).await.unwrap();
    let again = PostgresStore::connect(&url, None).await.unwrap();
    assert!(again.server_by_name("a").await.unwrap().is_some(), "migrations apply once");
    let database = url.rsplit('/').next().unwrap();
    support::postgres::server().psql(database, "INSERT INTO schema_migrations VALUES (999, now())");
    let error = PostgresStore::connect(&url, None).await.unwrap_err();
    assert!(matches!(error, StoreError::SchemaTooNew { found: 999, .. }), "{error}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error =
        PostgresStore::connect(&format!("postgres://cordon:secret@127.0.0.1:{port}/x"), None).await.unwrap_err();
    assert!(matches!(error, StoreError::Unreachable(_)), "{error}");
    assert!(!error.to_string().contains("secret"), "the password never shows: {error}");
}
