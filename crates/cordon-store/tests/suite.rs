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
    vec![
        ("sqlite", Box::new(SqliteStore::open_in_memory().unwrap())),
        ("sqlite-file", Box::new(SqliteStore::open(&sqlite_file()).unwrap())),
        ("postgres", Box::new(postgres)),
    ]
}

/// A new SQLite database file, so that the suite also runs the file store's separate read
/// connections (`query_only`: a write misfiled as a read fails). It lives in the PostgreSQL
/// server's temporary directory, which the test binary removes at exit.
fn sqlite_file() -> std::path::PathBuf {
    static FILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = support::postgres::server().dir.join("sqlite");
    std::fs::create_dir_all(&dir).unwrap();
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("suite-{n}.db"))
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
        let runnable: Vec<i64> = store.runnable_actions(100).await.unwrap().iter().map(|x| x.id).collect();
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
        store.create_token("admin", Role::Admin, "abc", None).await.unwrap();
        assert_eq!(store.token_by_hash("abc").await.unwrap().unwrap().role, Role::Admin);
        assert!(store.token_by_hash("abd").await.unwrap().is_none());
        assert!(
            matches!(
                store.create_token("admin", Role::Viewer, "other", None).await,
                Err(StoreError::AlreadyExists { .. })
            ),
            "token names are unique"
        );
    }
}

#[tokio::test]
async fn tokens_are_listed_revoked_and_expire() {
    for (backend, store) in stores().await {
        let now = chrono::Utc::now();
        let forever = store.create_token("ci", Role::Operator, "h-ci", None).await.unwrap();
        let soon =
            store.create_token("temp", Role::Viewer, "h-temp", Some(now + chrono::Duration::days(30))).await.unwrap();
        let past =
            store.create_token("old", Role::Viewer, "h-old", Some(now - chrono::Duration::seconds(1))).await.unwrap();
        assert!(soon.expires_at.is_some_and(|t| (t - (now + chrono::Duration::days(30))).num_seconds().abs() < 1));
        assert!(store.token_by_hash("h-temp").await.unwrap().is_some(), "{backend}: a token before its expiry works");
        assert!(store.token_by_hash("h-old").await.unwrap().is_none(), "{backend}: an expired token is refused");

        let listed = store.list_tokens().await.unwrap();
        assert_eq!(listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["ci", "temp", "old"], "{backend}");
        assert!(listed.iter().all(|t| !t.revoked));

        let revoked = store.revoke_token(forever.id).await.unwrap();
        assert!(revoked.revoked, "{backend}");
        assert!(store.token_by_hash("h-ci").await.unwrap().is_none(), "{backend}: a revoked token is refused");
        assert!(store.revoke_token(forever.id).await.unwrap().revoked, "{backend}: revoking twice is harmless");
        assert!(matches!(store.revoke_token(9999).await, Err(StoreError::NotFound { .. })), "{backend}");
        assert_eq!(store.count_tokens().await.unwrap(), 3, "{backend}: revoked tokens are kept");
        assert_eq!(past.role, Role::Viewer);
    }
}

#[tokio::test]
async fn console_users_and_their_sessions() {
    for (backend, store) in stores().await {
        let alice = store.create_user("alice", Role::Operator, "$argon2id$one").await.unwrap();
        store.create_user("bob", Role::Viewer, "$argon2id$two").await.unwrap();
        assert!(
            matches!(store.create_user("alice", Role::Admin, "x").await, Err(StoreError::AlreadyExists { .. })),
            "{backend}: user names are unique"
        );
        let found = store.user_by_name("alice").await.unwrap().unwrap();
        assert_eq!((found.id, found.role, found.password_hash.as_str()), (alice.id, Role::Operator, "$argon2id$one"));
        assert!(store.user_by_name("carol").await.unwrap().is_none());
        let names: Vec<String> = store.list_users().await.unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["alice", "bob"], "{backend}");

        let now = chrono::Utc::now();
        let session = store
            .create_session(&NewSession {
                hash: "s1".into(),
                user_id: alice.id,
                csrf: "c1".into(),
                expires_at: now + chrono::Duration::hours(12),
            })
            .await
            .unwrap();
        assert_eq!((session.user_name.as_str(), session.role, session.csrf.as_str()), ("alice", Role::Operator, "c1"));
        let read = store.session_by_hash("s1").await.unwrap().unwrap();
        assert_eq!(read, session, "{backend}");
        let later = now + chrono::Duration::minutes(5);
        store.touch_session(session.id, later).await.unwrap();
        let touched = store.session_by_hash("s1").await.unwrap().unwrap();
        assert!((touched.last_seen_at - later).num_milliseconds().abs() < 1, "{backend}");

        // Idle sessions and sessions past their absolute end are swept; a fresh one stays.
        store
            .create_session(&NewSession {
                hash: "s2".into(),
                user_id: alice.id,
                csrf: "c2".into(),
                expires_at: now - chrono::Duration::seconds(1),
            })
            .await
            .unwrap();
        assert_eq!(store.delete_expired_sessions(now - chrono::Duration::hours(1), now).await.unwrap(), 1);
        assert!(store.session_by_hash("s2").await.unwrap().is_none(), "{backend}");
        assert!(store.session_by_hash("s1").await.unwrap().is_some(), "{backend}");

        // A new password ends the user's sessions.
        store.set_user_password("alice", "$argon2id$three").await.unwrap();
        assert!(store.session_by_hash("s1").await.unwrap().is_none(), "{backend}");
        assert_eq!(store.user_by_name("alice").await.unwrap().unwrap().password_hash, "$argon2id$three");
        assert!(matches!(store.set_user_password("carol", "x").await, Err(StoreError::NotFound { .. })));

        // Sign-out, then removal (which takes the sessions along).
        store
            .create_session(&NewSession {
                hash: "s3".into(),
                user_id: alice.id,
                csrf: "c3".into(),
                expires_at: now + chrono::Duration::hours(1),
            })
            .await
            .unwrap();
        store.delete_session("s3").await.unwrap();
        store.delete_session("unknown").await.unwrap();
        assert!(store.session_by_hash("s3").await.unwrap().is_none());
        store
            .create_session(&NewSession {
                hash: "s4".into(),
                user_id: alice.id,
                csrf: "c4".into(),
                expires_at: now + chrono::Duration::hours(1),
            })
            .await
            .unwrap();
        store.remove_user("alice").await.unwrap();
        assert!(store.session_by_hash("s4").await.unwrap().is_none(), "{backend}");
        assert!(store.user_by_name("alice").await.unwrap().is_none());
        assert!(matches!(store.remove_user("alice").await, Err(StoreError::NotFound { .. })), "{backend}");
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

#[tokio::test]
async fn state_changes_and_operator_actions_are_chained_in_the_audit() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A])).await.unwrap();
        let a = store.server_by_name("a").await.unwrap().unwrap();
        let action = store.create_action(&new_action(a.id, ActionKind::Quarantine)).await.unwrap();
        let running = store.transition_action(action.id, action.generation, ActionCommand::Start, None).await.unwrap();
        let mac = a.nics[0].mac;
        store.record_nic_position(a.id, mac, "quarantine", Some(ip("10.99.0.100"))).await.unwrap();
        // The same position again is no change, and leaves no row.
        store.record_nic_position(a.id, mac, "quarantine", Some(ip("10.99.0.100"))).await.unwrap();
        store.set_server_state(a.id, ServerState::Quarantined).await.unwrap();
        let message = MessageRef { number: 21002, text: "done".into() };
        store.transition_action(action.id, running.generation, ActionCommand::Succeed, Some(message)).await.unwrap();
        let entry = AuditEntry {
            actor: "token:admin".into(),
            origin: "127.0.0.1".into(),
            verb: "check".into(),
            target: format!("action {}", action.id),
            detail: "".into(),
            instance: "i1".into(),
        };
        store.append_audit(&entry).await.unwrap();

        let mut rows = store.list_audit(100).await.unwrap();
        rows.reverse();
        let lines: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {} {} | {}", r.entry.actor, r.entry.verb, r.entry.target, r.entry.detail))
            .collect();
        let id = action.id;
        assert_eq!(
            lines,
            [
                format!("tester action_created action {id} | quarantine on server a, pending, by api: test"),
                format!("cordon action_state action {id} | pending -> running (start)"),
                "cordon nic_position server a | NIC 02:00:00:00:00:01: office 10.10.0.11 -> quarantine 10.99.0.100"
                    .into(),
                "cordon server_state server a | operational -> quarantined".into(),
                format!("cordon action_state action {id} | running -> succeeded (succeed), message 21002"),
                format!("token:admin check action {id} | "),
            ],
            "{backend}"
        );
        assert_eq!(rows[0].prev_hash, AUDIT_GENESIS, "{backend}");
        for pair in rows.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "{backend}");
        }
        assert_eq!(store.audit_rows(rows[3].id, 2).await.unwrap(), rows[4..6].to_vec(), "{backend}");
        let verdict = verify_audit(store.as_ref()).await.unwrap();
        assert_eq!(verdict.broken, None, "{backend}");
        let summary = verdict.verified;
        assert_eq!((summary.rows, summary.head_id), (6, rows[5].id), "{backend}");
        assert_eq!(summary.head_hash, rows[5].hash, "{backend}");
    }
}

/// Runs SQL on the database file with the sqlite3 shell, as someone covering their tracks would.
fn tamper(path: &std::path::Path, sql: &str) {
    let status = std::process::Command::new("sqlite3")
        .arg(path)
        .arg(sql)
        .status()
        .expect("sqlite3 is installed by scripts/install-deps.sh");
    assert!(status.success(), "{sql}");
}

#[tokio::test]
async fn sqlite_audit_verification_names_the_row_after_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine.db");
    {
        let store = SqliteStore::open(&pristine).unwrap();
        for n in 1..=6 {
            let entry = AuditEntry {
                actor: format!("user{n}"),
                origin: "192.0.2.1".into(),
                verb: "quarantine".into(),
                target: format!("server s{n}"),
                detail: "".into(),
                instance: "i1".into(),
            };
            store.append_audit(&entry).await.unwrap();
        }
        assert_eq!(verify_audit(&store).await.unwrap().verified.rows, 6);
    }
    let cases = [
        ("an edited row", "UPDATE audit SET actor = 'nobody' WHERE id = 3", 3, "does not match its hash"),
        (
            "an edited row with its hash recomputed elsewhere",
            "UPDATE audit SET actor = 'nobody', hash = 'f00d' WHERE id = 3",
            3,
            "does not match its hash",
        ),
        ("a deleted row", "DELETE FROM audit WHERE id = 3", 4, "does not follow row 2"),
        ("the first row deleted", "DELETE FROM audit WHERE id = 1", 2, "does not follow the start of the trail"),
        (
            "two swapped rows",
            "UPDATE audit SET id = -3 WHERE id = 3; UPDATE audit SET id = 3 WHERE id = 4; UPDATE audit SET id = 4 WHERE id = -3",
            3,
            "does not match its hash",
        ),
    ];
    for (case, sql, row, detail) in cases {
        let path = dir.path().join("tampered.db");
        std::fs::copy(&pristine, &path).unwrap();
        tamper(&path, sql);
        let store = SqliteStore::open(&path).unwrap();
        let verdict = verify_audit(&store).await.unwrap();
        let broken = verdict.broken.expect(case);
        assert_eq!(broken.id, row, "{case}: {broken}");
        let intact = if case.contains("deleted") { row - 2 } else { row - 1 };
        assert_eq!(verdict.verified.rows as i64, intact, "{case}");
        assert!(broken.detail.contains(detail), "{case}: {broken}");
        drop(store);
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_file(dir.path().join("tampered.db-wal"));
        let _ = std::fs::remove_file(dir.path().join("tampered.db-shm"));
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
        let detection = detection_on("10.10.0.11");
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

/// Two instances (two stores, two connection pools) append to one trail at once, with action
/// state changes (which append in their own transactions) mixed in: no two rows may claim one
/// predecessor, so the whole chain verifies and every append is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cp2_postgres_instances_appending_concurrently_leave_one_chain() {
    const APPENDS: usize = 200;
    let url = support::postgres::fresh_database("cp2_audit_race");
    let one = PostgresStore::connect(&url, None).await.unwrap().with_instance("i1");
    let two = PostgresStore::connect(&url, None).await.unwrap().with_instance("i2");
    one.sync_inventory(&inventory(&[A])).await.unwrap();
    let a = one.server_by_name("a").await.unwrap().unwrap();
    let mut tasks = Vec::new();
    for (name, store) in [("i1", one.clone()), ("i2", two.clone())] {
        for task in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..APPENDS / 4 {
                    let entry = AuditEntry {
                        actor: format!("{name}-task{task}"),
                        origin: "127.0.0.1".into(),
                        verb: "check".into(),
                        target: format!("append {n}"),
                        detail: String::new(),
                        instance: name.into(),
                    };
                    store.append_audit(&entry).await.unwrap();
                }
            }));
        }
        let store = store.clone();
        let server_id = a.id;
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let action = store.create_action(&new_action(server_id, ActionKind::Notify)).await.unwrap();
                store.transition_action(action.id, action.generation, ActionCommand::Cancel, None).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let verdict = verify_audit(&two).await.unwrap();
    assert_eq!(verdict.broken, None);
    // 2 × 200 appends, and 2 × 10 actions created and cancelled (two rows each).
    assert_eq!(verdict.verified.rows, (2 * APPENDS + 2 * 10 * 2) as u64);
    let rows = one.audit_rows(0, 1_000).await.unwrap();
    assert_eq!(rows.first().map(|r| r.id), Some(1));
    assert_eq!(rows.last().map(|r| r.id), Some(rows.len() as i64), "ids follow one another without gaps");
    for instance in ["i1", "i2"] {
        let appended = rows.iter().filter(|r| r.entry.verb == "check" && r.entry.instance == instance).count();
        assert_eq!(appended, APPENDS, "{instance}");
        let changes = rows.iter().filter(|r| r.entry.verb == "action_state" && r.entry.instance == instance).count();
        assert_eq!(changes, 10, "state changes are written in the name of the store's instance");
    }
}

/// A PostgreSQL database from before the chain (schema version 1) with audit rows: migration 2
/// seals them in id order, the chain goes on from the last one, and a row edited by hand
/// afterwards is named by the verification.
#[tokio::test]
async fn cp2_postgres_rows_from_before_the_chain_are_sealed_and_tampering_is_named() {
    let url = support::postgres::fresh_database("cp2_seal");
    let database = url.rsplit('/').next().unwrap();
    let server = support::postgres::server();
    server.psql(database, include_str!("../migrations/postgres/0001_initial.sql"));
    server.psql(
        database,
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL);
         INSERT INTO schema_migrations VALUES (1, now());
         INSERT INTO audit (at, actor, origin, verb, target, detail, instance) VALUES
           ('2026-11-01 10:00:00.123456+00', 'token:admin', '127.0.0.1', 'quarantine', 'server a', 'old', 'i1'),
           ('2026-11-01 10:00:01+00', 'token:admin', '127.0.0.1', 'release', 'server a', '', 'i1'),
           ('2026-11-01 10:00:02.5+00', 'cli', 'cli', 'check', 'action 1', '', 'i2');",
    );
    let store = PostgresStore::connect(&url, None).await.unwrap();
    let verdict = verify_audit(&store).await.unwrap();
    assert_eq!(verdict.broken, None);
    assert_eq!((verdict.verified.rows, verdict.verified.head_id), (3, 3));
    let entry = AuditEntry {
        actor: "token:admin".into(),
        origin: "127.0.0.1".into(),
        verb: "check".into(),
        target: "action 2".into(),
        detail: String::new(),
        instance: "i1".into(),
    };
    let appended = store.append_audit(&entry).await.unwrap();
    assert_eq!((appended.id, appended.prev_hash.as_str()), (4, verdict.verified.head_hash.as_str()));
    assert_eq!(verify_audit(&store).await.unwrap().verified.rows, 4);

    server.psql(database, "UPDATE audit SET detail = 'nothing happened' WHERE id = 1");
    let broken = verify_audit(&store).await.unwrap().broken.unwrap();
    assert_eq!(broken.id, 1, "{broken}");
    server.psql(database, "UPDATE audit SET detail = 'old' WHERE id = 1; DELETE FROM audit WHERE id = 2");
    let broken = verify_audit(&store).await.unwrap().broken.unwrap();
    assert_eq!(broken.id, 3, "{broken}");
    assert!(broken.detail.contains("does not follow row 1"), "{broken}");
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

fn detection_on(address: &str) -> cordon_model::Detection {
    cordon_model::Detection {
        received_at_us: now_us(),
        observed_at_us: None,
        source: "eve".into(),
        sensor: None,
        subject: ip(address),
        peer: None,
        src_ip: Some(ip(address)),
        dest_ip: None,
        target_ip: None,
        signature_id: None,
        signature: "test".into(),
        category: None,
        severity: cordon_model::ThreatSeverity::High,
        raw: "{}".into(),
    }
}

#[tokio::test]
async fn an_action_is_created_with_its_detection_settled_or_not_at_all() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A])).await.unwrap();
        let a = store.server_by_name("a").await.unwrap().unwrap();
        let ids = store.record_detections(&[detection_on(A.2)], "i1", None).await.unwrap();
        let settles = Settlement { detection_id: ids[0], decision: "new action {action} (default): test".into() };
        let action =
            store.create_action_settling(&new_action(a.id, ActionKind::Quarantine), Some(&settles)).await.unwrap();
        assert_eq!(action.state, ActionState::Pending, "{backend}");
        let filter = DetectionFilter { action_id: Some(action.id), ..Default::default() };
        let settled = store.list_detections(&filter).await.unwrap();
        assert_eq!(settled.len(), 1, "{backend}: the detection is on the action");
        assert_eq!(settled[0].decision.as_deref(), Some(format!("new action {} (default): test", action.id).as_str()));
        assert_eq!(store.action(action.id).await.unwrap().unwrap().detections, 1, "{backend}: counted on it");

        // Settled already (another instance was first): no second action.
        let before = store.list_actions(&ActionFilter::default()).await.unwrap().len();
        let again = store.create_action_settling(&new_action(a.id, ActionKind::Quarantine), Some(&settles)).await;
        assert_eq!(again.unwrap_err(), StoreError::AlreadySettled { id: ids[0] }, "{backend}");
        assert_eq!(store.list_actions(&ActionFilter::default()).await.unwrap().len(), before, "{backend}: rolled back");
    }
}

#[tokio::test]
async fn records_alongside_a_change_commit_with_it_or_not_at_all() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A, B])).await.unwrap();
        let a = store.server_by_name("a").await.unwrap().unwrap();
        let b = store.server_by_name("b").await.unwrap().unwrap();
        let first = store.create_action(&new_action(a.id, ActionKind::Quarantine)).await.unwrap();
        let until = now_us() + 60_000_000;
        let started = MessageRef { number: 21001, text: "started".into() };
        let row = |text: &str, action: i64| NewMessage {
            number: 21001,
            text: text.into(),
            server_id: Some(a.id),
            action_id: Some(action),
            instance: "i1".into(),
        };
        let step = |action: i64, name: &str| NewStep {
            action_id: action,
            attempt: 1,
            name: name.into(),
            target: "tor-1/p-a".into(),
            outcome: StepOutcome::Done,
            detail: String::new(),
            message_number: None,
            instance: "i1".into(),
            started_at: chrono::Utc::now(),
            finished_at: chrono::Utc::now(),
        };
        let claim = Alongside {
            server_state: Some((a.id, ServerState::Quarantining)),
            messages: vec![row("started", first.id)],
            ..Default::default()
        };
        let claimed =
            store.claim_action_alongside(first.id, 1, "i1", until, Some(started.clone()), &claim).await.unwrap();
        assert_eq!(store.server_by_id(a.id).await.unwrap().unwrap().state, ServerState::Quarantining, "{backend}");
        assert_eq!(store.messages_for_action(first.id).await.unwrap().len(), 1, "{backend}");

        // A claim that loses writes none of its records.
        let second = store.create_action(&new_action(a.id, ActionKind::Reboot)).await.unwrap();
        let lost = Alongside { server_state: Some((a.id, ServerState::QuarantineFailed)), ..claim.clone() };
        let busy = store.claim_action_alongside(second.id, 1, "i2", until, None, &lost).await.unwrap_err();
        assert!(matches!(busy, StoreError::ServerBusy { .. }), "{backend}: {busy}");
        assert_eq!(store.server_by_id(a.id).await.unwrap().unwrap().state, ServerState::Quarantining, "{backend}");
        assert!(store.messages_for_action(second.id).await.unwrap().is_empty(), "{backend}");

        // The records of a step: all of them, or (one fails) none.
        let mac: cordon_model::MacAddr = A.1.parse().unwrap();
        let network = "quarantine".to_string();
        let position = NicPosition { server_id: a.id, mac, network: network.clone(), ip: Some(ip("10.99.0.100")) };
        let missing = NicPosition { server_id: b.id, mac, ..position.clone() };
        let broken = Alongside {
            nic_positions: vec![position.clone(), missing],
            steps: vec![step(first.id, "ensure_port_on_bridge")],
            ..Default::default()
        };
        let error = store.record_alongside(&broken).await.unwrap_err();
        assert!(matches!(error, StoreError::NotFound { .. }), "{backend}: {error}");
        assert!(store.steps(first.id).await.unwrap().is_empty(), "{backend}: nothing written");
        let nic = store.server_by_id(a.id).await.unwrap().unwrap().nics[0].clone();
        assert_eq!(nic.current_network, "office", "{backend}: nothing written");

        let step_records = Alongside {
            nic_positions: vec![position],
            steps: vec![step(first.id, "ensure_port_on_bridge"), step(first.id, "record_nic_position")],
            messages: vec![row("already there", first.id)],
            ..Default::default()
        };
        store.record_alongside(&step_records).await.unwrap();
        let names: Vec<String> = store.steps(first.id).await.unwrap().into_iter().map(|s| s.step.name).collect();
        assert_eq!(names, ["ensure_port_on_bridge", "record_nic_position"], "{backend}: in order");
        let nic = store.server_by_id(a.id).await.unwrap().unwrap().nics[0].clone();
        assert_eq!((nic.current_network.as_str(), nic.current_ip), ("quarantine", Some(ip("10.99.0.100"))));

        // The end: the action, the server's state and the message in one commit.
        let end = Alongside {
            server_state: Some((a.id, ServerState::Quarantined)),
            messages: vec![row("succeeded", first.id)],
            ..Default::default()
        };
        let done = store
            .transition_action_alongside(first.id, claimed.generation, ActionCommand::Succeed, None, &end)
            .await
            .unwrap();
        assert_eq!(done.state, ActionState::Succeeded, "{backend}");
        assert_eq!(store.server_by_id(a.id).await.unwrap().unwrap().state, ServerState::Quarantined, "{backend}");
        assert_eq!(store.messages_for_action(first.id).await.unwrap().len(), 3, "{backend}");
        // A stale generation writes none of it.
        let stale = Alongside { server_state: Some((a.id, ServerState::QuarantineFailed)), ..Default::default() };
        let error = store
            .transition_action_alongside(first.id, claimed.generation, ActionCommand::Fail, None, &stale)
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::Conflict { .. }), "{backend}: {error}");
        assert_eq!(store.server_by_id(a.id).await.unwrap().unwrap().state, ServerState::Quarantined, "{backend}");
        let verdict = verify_audit(store.as_ref()).await.unwrap();
        assert!(verdict.broken.is_none(), "{backend}: the audit chain holds: {verdict:?}");
    }
}

#[tokio::test]
async fn runnable_actions_are_read_in_order_up_to_a_limit() {
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A, B, C])).await.unwrap();
        let mut ids = Vec::new();
        for name in ["a", "b", "c"] {
            let server = store.server_by_name(name).await.unwrap().unwrap();
            ids.push(store.create_action(&new_action(server.id, ActionKind::Quarantine)).await.unwrap().id);
        }
        let two: Vec<i64> = store.runnable_actions(2).await.unwrap().iter().map(|x| x.id).collect();
        assert_eq!(two, ids[..2], "{backend}");
    }
}

#[tokio::test]
async fn a_claim_can_lease_the_quarantine_addresses_or_fails_whole_on_an_empty_pool() {
    // The suite's quarantine pool holds two addresses.
    let pool = AddressPool::new("10.99.0.100-10.99.0.101".parse().unwrap(), []);
    for (backend, store) in stores().await {
        store.sync_inventory(&inventory(&[A, B, C])).await.unwrap();
        let until = now_us() + 60_000_000;
        let mut leased = Vec::new();
        for (name, mac, _) in [A, B, C] {
            let server = store.server_by_name(name).await.unwrap().unwrap();
            let action = store.create_action(&new_action(server.id, ActionKind::Quarantine)).await.unwrap();
            let mac: cordon_model::MacAddr = mac.parse().unwrap();
            let lease = LeaseRequest { server_id: server.id, mac, network: "quarantine".into(), pool: pool.clone() };
            let alongside = Alongside {
                server_state: Some((server.id, ServerState::Quarantining)),
                leases: vec![lease],
                ..Default::default()
            };
            match store.claim_action_alongside(action.id, 1, "i1", until, None, &alongside).await {
                Ok(claimed) => {
                    assert_eq!(claimed.state, ActionState::Running, "{backend}");
                    // The step's own lease call finds the address the claim took.
                    let ip = store.lease_address(server.id, mac, "quarantine", &pool).await.unwrap();
                    leased.push(ip);
                }
                Err(error) => {
                    assert!(matches!(error, StoreError::PoolExhausted { .. }), "{backend}: {error}");
                    assert_eq!(name, "c", "{backend}: the third NIC finds the pool empty");
                    let unchanged = store.action(action.id).await.unwrap().unwrap();
                    assert_eq!(unchanged.state, ActionState::Pending, "{backend}: the claim wrote nothing");
                    let server = store.server_by_id(server.id).await.unwrap().unwrap();
                    assert_eq!(server.state, ServerState::Operational, "{backend}: nor the state");
                    // Without the leases it claims; the address step then reports the empty pool.
                    let bare = Alongside { leases: vec![], ..alongside };
                    store.claim_action_alongside(action.id, 1, "i1", until, None, &bare).await.unwrap();
                    let empty = store.lease_address(server.id, mac, "quarantine", &pool).await.unwrap_err();
                    assert!(matches!(empty, StoreError::PoolExhausted { .. }), "{backend}: {empty}");
                }
            }
        }
        assert_eq!(leased, vec![ip("10.99.0.100"), ip("10.99.0.101")], "{backend}: one address each, never shared");
    }
}
