//! The engine's own rules: one action at a time per server, crash recovery, idempotent steps,
//! numbered failures, check and retry. The switch here is an in-memory model of a bridge
//! switch, so that these rules can be driven into corners (a blocked call, a failing port);
//! the real linux-bridge driver is exercised by crates/cordon-drivers/tests and by the
//! end-to-end tests on the lab (crates/cordon/tests/lab_e2e.rs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cordon_drivers::{DriverError, EnsureOutcome, PortObservation, Segment, SegmentKind, SwitchDriver};
use cordon_engine::*;
use cordon_model::{ActionCommand, ActionKind, ActionState, AddressPool, NetworkRole, ServerKind, ServerState};
use cordon_store::*;

#[derive(Debug, Default)]
struct MemorySwitch {
    /// port → (bridge, isolated)
    ports: Mutex<HashMap<String, (Option<String>, bool)>>,
    fail_next: AtomicBool,
    active: AtomicUsize,
    max_active: AtomicUsize,
    calls: Mutex<Vec<(String, String)>>,
    /// Ports with a call in progress, and whether a second call ever overlapped one.
    busy_ports: Mutex<std::collections::HashSet<String>>,
    overlapped: AtomicBool,
    delay: Mutex<Duration>,
}

impl MemorySwitch {
    fn with_ports(ports: &[&str]) -> Arc<Self> {
        let switch = MemorySwitch::default();
        for port in ports {
            switch.ports.lock().unwrap().insert(port.to_string(), (Some("br-office".into()), false));
        }
        Arc::new(switch)
    }

    fn port(&self, port: &str) -> (Option<String>, bool) {
        self.ports.lock().unwrap()[port].clone()
    }
}

impl SwitchDriver for MemorySwitch {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn switch_name(&self) -> &str {
        "tor-1"
    }

    fn observe_port(&self, port: &str) -> Result<PortObservation, DriverError> {
        let ports = self.ports.lock().unwrap();
        let (bridge, isolated) = ports.get(port).cloned().ok_or(DriverError::PortNotFound { port: port.into() })?;
        Ok(PortObservation { port: port.into(), bridge, vlan: None, isolated, up: true })
    }

    fn segment_kind(&self) -> SegmentKind {
        SegmentKind::Bridge
    }

    fn ensure_port(&self, port: &str, segment: &Segment, isolated: bool) -> Result<EnsureOutcome, DriverError> {
        let Segment::Bridge(bridge) = segment else { panic!("the memory switch has bridges only") };
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        if !self.busy_ports.lock().unwrap().insert(port.to_string()) {
            self.overlapped.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(*self.delay.lock().unwrap());
        self.calls.lock().unwrap().push((port.to_string(), bridge.to_string()));
        let result = if self.fail_next.swap(false, Ordering::SeqCst) {
            Err(DriverError::Netlink { operation: "set master".into(), detail: "injected failure".into() })
        } else {
            let before = self.observe_port(port);
            before.and_then(|before| {
                self.ports.lock().unwrap().insert(port.to_string(), (Some(bridge.to_string()), isolated));
                let after = self.observe_port(port)?;
                Ok(EnsureOutcome {
                    moved: before.bridge != after.bridge,
                    isolation_changed: before.isolated != after.isolated,
                    before,
                    after,
                })
            })
        };
        self.busy_ports.lock().unwrap().remove(port);
        self.active.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

fn inventory(servers: &[(&str, &str, &str)]) -> Inventory {
    Inventory {
        networks: vec![],
        tenants: vec![],
        servers: servers
            .iter()
            .map(|(name, mac, ip)| ServerSpec {
                name: name.to_string(),
                kind: ServerKind::Physical,
                tenant: None,
                user_email: None,
                hypervisor: None,
                domain: None,
                nics: vec![NicSpec {
                    mac: mac.parse().unwrap(),
                    network: "office".into(),
                    ip: Some(ip.parse().unwrap()),
                    switch: Some("tor-1".into()),
                    port: Some(format!("p-{name}")),
                }],
            })
            .collect(),
    }
}

const A: (&str, &str, &str) = ("a", "02:00:00:00:00:01", "10.10.0.11");
const B: (&str, &str, &str) = ("b", "02:00:00:00:00:02", "10.10.0.12");

struct Fixture {
    engine: Engine,
    switch: Arc<MemorySwitch>,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn fixture(pool: &str, store: Arc<dyn Store>) -> Fixture {
    store.sync_inventory(&inventory(&[A, B])).await.unwrap();
    let switch = MemorySwitch::with_ports(&["p-a", "p-b"]);
    fixture_with(pool, store, switch)
}

fn fixture_with(pool: &str, store: Arc<dyn Store>, switch: Arc<MemorySwitch>) -> Fixture {
    // One attempt: most tests look at what a failure leaves behind.
    fixture_with_settings(pool, store, switch, |settings| settings.max_attempts = 1)
}

fn fixture_with_settings(
    pool: &str,
    store: Arc<dyn Store>,
    switch: Arc<MemorySwitch>,
    adjust: impl FnOnce(&mut EngineSettings),
) -> Fixture {
    let mut topology = Topology::default();
    topology.networks.insert(
        "office".into(),
        NetworkPlan {
            name: "office".into(),
            role: NetworkRole::Operational,
            bridge: Some("br-office".into()),
            vlan: None,
            quarantine_network: Some("quarantine".into()),
            pool: None,
        },
    );
    topology.networks.insert(
        "quarantine".into(),
        NetworkPlan {
            name: "quarantine".into(),
            role: NetworkRole::Quarantine,
            bridge: Some("br-quarantine".into()),
            vlan: None,
            quarantine_network: None,
            pool: Some(AddressPool::new(pool.parse().unwrap(), [])),
        },
    );
    topology.switches.insert("tor-1".into(), switch.clone());
    let mut settings = EngineSettings::new("test");
    settings.poll_interval = Duration::from_millis(20);
    settings.retry_base = Duration::from_millis(20);
    adjust(&mut settings);
    let engine = Engine::new(store, topology, settings);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let runner = engine.clone();
    tokio::spawn(async move {
        runner
            .run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    Fixture { engine, switch, stop }
}

fn actor() -> Actor {
    Actor { name: "token:test".into(), origin: "test".into() }
}

fn request(kind: ActionKind, server: &str) -> Request {
    Request { kind, server: server.into(), reason: None, trigger: "test".into(), actor: actor() }
}

async fn settle(engine: &Engine, id: i64) -> ActionRecord {
    for _ in 0..500 {
        let action = engine.store().action(id).await.unwrap().unwrap();
        if matches!(action.state, ActionState::Succeeded | ActionState::Failed | ActionState::Checked) {
            return action;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("action {id} did not settle");
}

fn memory_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in_memory().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_then_unquarantine_moves_and_records() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let submitted = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    assert!(!submitted.existing);
    let done = settle(&f.engine, submitted.action.id).await;
    assert_eq!(done.state, ActionState::Succeeded);
    assert_eq!(done.message.as_ref().unwrap().number, 21002);
    assert_eq!(f.switch.port("p-a"), (Some("br-quarantine".into()), true));
    let a = f.engine.store().server_by_name("a").await.unwrap().unwrap();
    assert_eq!(a.state, ServerState::Quarantined);
    assert_eq!(
        (a.nics[0].current_network.as_str(), a.nics[0].current_ip),
        ("quarantine", Some("10.99.0.100".parse().unwrap()))
    );

    let undo = f.engine.request(request(ActionKind::Unquarantine, "a")).await.unwrap();
    assert_eq!(settle(&f.engine, undo.action.id).await.state, ActionState::Succeeded);
    assert_eq!(f.switch.port("p-a"), (Some("br-office".into()), false));
    let a = f.engine.store().server_by_name("a").await.unwrap().unwrap();
    assert_eq!(a.state, ServerState::Operational);
    assert_eq!(a.nics[0].current_ip, Some("10.10.0.11".parse().unwrap()));
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_on_one_server_run_one_at_a_time_in_order() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    *f.switch.delay.lock().unwrap() = Duration::from_millis(50);
    let first = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    // With the quarantine still open, an unquarantine queues behind it instead of being refused.
    let second = f.engine.request(request(ActionKind::Unquarantine, "a")).await.unwrap();
    let other = f.engine.request(request(ActionKind::Quarantine, "b")).await.unwrap();
    // A duplicate request returns the open action rather than creating another.
    let duplicate = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    assert!(duplicate.existing);
    assert_eq!(duplicate.action.id, first.action.id);
    assert_eq!(duplicate.message.number, 41004);

    for id in [first.action.id, second.action.id, other.action.id] {
        assert_eq!(settle(&f.engine, id).await.state, ActionState::Succeeded);
    }
    let calls = f.switch.calls.lock().unwrap().clone();
    let on_a: Vec<&str> = calls.iter().filter(|(p, _)| p == "p-a").map(|(_, b)| b.as_str()).collect();
    assert_eq!(on_a, ["br-quarantine", "br-office"], "oldest first");
    assert_eq!(f.switch.port("p-a"), (Some("br-office".into()), false));
    // Two servers may move at once, one server never.
    assert!(!f.switch.overlapped.load(Ordering::SeqCst), "two actions on one server overlapped");
    assert!(f.switch.max_active.load(Ordering::SeqCst) <= 2);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_failure_fails_the_action_and_retry_completes_it() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    f.switch.fail_next.store(true, Ordering::SeqCst);
    let submitted = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    let failed = settle(&f.engine, submitted.action.id).await;
    assert_eq!(failed.state, ActionState::Failed);
    let message = failed.message.unwrap();
    assert_eq!(message.number, 60010);
    assert!(message.text.contains("injected failure"), "{}", message.text);
    let a = f.engine.store().server_by_name("a").await.unwrap().unwrap();
    assert_eq!(a.state, ServerState::QuarantineFailed);
    assert_eq!(a.nics[0].current_network, "office", "the record did not follow a move that failed");

    // Retry: the lease is kept (no second address), the port moves, the action succeeds.
    f.engine.retry(failed.id, &actor()).await.unwrap();
    let done = settle(&f.engine, failed.id).await;
    assert_eq!((done.state, done.attempts), (ActionState::Succeeded, 2));
    let a = f.engine.store().server_by_name("a").await.unwrap().unwrap();
    assert_eq!(a.nics[0].current_ip, Some("10.99.0.100".parse().unwrap()));
    let steps = f.engine.store().steps(failed.id).await.unwrap();
    let outcomes: Vec<(u32, &str, StepOutcome)> =
        steps.iter().map(|s| (s.step.attempt, s.step.name.as_str(), s.step.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (1, "ensure_quarantine_address", StepOutcome::Done),
            (1, "ensure_port_on_bridge", StepOutcome::Failed),
            (2, "ensure_quarantine_address", StepOutcome::Done),
            (2, "ensure_port_on_bridge", StepOutcome::Done),
            (2, "record_nic_position", StepOutcome::Done),
        ]
    );
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_retry_respect_the_state_machine() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    f.switch.fail_next.store(true, Ordering::SeqCst);
    let submitted = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    let failed = settle(&f.engine, submitted.action.id).await;
    let checked = f.engine.check(failed.id, &actor()).await.unwrap();
    assert_eq!(checked.state, ActionState::Checked);
    assert_eq!(checked.message.unwrap().number, 21006);
    // Checking released nothing and moved nothing.
    assert_eq!(f.switch.port("p-a"), (Some("br-office".into()), false));
    let refused = f.engine.retry(failed.id, &actor()).await.unwrap_err();
    assert_eq!((refused.number(), refused.kind), (41003, ErrorKind::Conflict));
    let refused = f.engine.check(failed.id, &actor()).await.unwrap_err();
    assert_eq!(refused.number(), 41003);
    let missing = f.engine.check(999, &actor()).await.unwrap_err();
    assert_eq!((missing.number(), missing.kind), (60003, ErrorKind::NotFound));
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_pool_fails_with_its_number_and_never_shares_an_address() {
    let f = fixture("10.99.0.100-10.99.0.100", memory_store()).await;
    let first = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    assert_eq!(settle(&f.engine, first.action.id).await.state, ActionState::Succeeded);
    let second = f.engine.request(request(ActionKind::Quarantine, "b")).await.unwrap();
    let failed = settle(&f.engine, second.action.id).await;
    assert_eq!(failed.state, ActionState::Failed);
    assert_eq!(failed.message.unwrap().number, 60012);
    assert_eq!(f.switch.port("p-b"), (Some("br-office".into()), false), "nothing moved without an address");
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_anything_is_recorded() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let unknown = f.engine.request(request(ActionKind::Quarantine, "zz")).await.unwrap_err();
    assert_eq!((unknown.number(), unknown.kind), (60002, ErrorKind::NotFound));
    let not_quarantined = f.engine.request(request(ActionKind::Unquarantine, "a")).await.unwrap_err();
    assert_eq!(not_quarantined.number(), 41002);
    // A server without a port on a managed switch.
    let mut servers = inventory(&[A, B]);
    servers.servers[1].nics[0].port = None;
    f.engine.store().sync_inventory(&servers).await.unwrap();
    let unmovable = f.engine.request(request(ActionKind::Quarantine, "b")).await.unwrap_err();
    assert_eq!((unmovable.number(), unmovable.kind), (60013, ErrorKind::Unprocessable));
    assert!(f.engine.store().list_actions(&ActionFilter::default()).await.unwrap().is_empty());
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_left_running_by_a_dead_process_is_resumed() {
    let store = memory_store();
    store.sync_inventory(&inventory(&[A, B])).await.unwrap();
    let a = store.server_by_name("a").await.unwrap().unwrap();
    // The dead process had committed the action, started it and leased an address.
    let action = store
        .create_action(&NewAction {
            kind: ActionKind::Quarantine,
            server_id: Some(a.id),
            address: None,
            state: ActionState::Pending,
            reason: None,
            trigger: "test".into(),
            requested_by: "test".into(),
            instance: "dead".into(),
            decided_by: None,
            message: None,
        })
        .await
        .unwrap();
    store.transition_action(action.id, action.generation, ActionCommand::Start, None).await.unwrap();
    let pool = AddressPool::new("10.99.0.100-10.99.0.101".parse().unwrap(), []);
    store.lease_address(a.id, a.nics[0].mac, "quarantine", &pool).await.unwrap();

    let switch = MemorySwitch::with_ports(&["p-a", "p-b"]);
    // ... and had even moved the port before it died.
    switch.ports.lock().unwrap().insert("p-a".into(), (Some("br-quarantine".into()), true));
    let f = fixture_with("10.99.0.100-10.99.0.101", store.clone(), switch);
    assert_eq!(f.engine.recover().await.unwrap(), 1);
    let done = settle(&f.engine, action.id).await;
    assert_eq!((done.state, done.attempts), (ActionState::Succeeded, 2));
    let a = store.server_by_name("a").await.unwrap().unwrap();
    assert_eq!(a.nics[0].current_ip, Some("10.99.0.100".parse().unwrap()), "the same lease, not a second one");
    let steps = store.steps(action.id).await.unwrap();
    assert!(steps.iter().any(|s| s.step.outcome == StepOutcome::AlreadyInPlace), "the port was found in place");
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_action_whose_lease_expired_is_taken_over_and_a_live_one_is_not() {
    let store = memory_store();
    store.sync_inventory(&inventory(&[A, B])).await.unwrap();
    let a = store.server_by_name("a").await.unwrap().unwrap();
    let b = store.server_by_name("b").await.unwrap().unwrap();
    let new = |server_id| NewAction {
        kind: ActionKind::Quarantine,
        server_id: Some(server_id),
        address: None,
        state: ActionState::Pending,
        reason: None,
        trigger: "test".into(),
        requested_by: "test".into(),
        instance: "other".into(),
        decided_by: None,
        message: None,
    };
    let now = chrono::Utc::now().timestamp_micros();
    // Another instance claimed both; it died holding `a`'s (its lease ran out) and is alive on `b`.
    let dead = store.create_action(&new(a.id)).await.unwrap();
    store.claim_action(dead.id, dead.generation, "other", now - 1, None).await.unwrap();
    let live = store.create_action(&new(b.id)).await.unwrap();
    store.claim_action(live.id, live.generation, "other", now + 600_000_000, None).await.unwrap();

    let f = fixture_with("10.99.0.100-10.99.0.101", store.clone(), MemorySwitch::with_ports(&["p-a", "p-b"]));
    let done = settle(&f.engine, dead.id).await;
    assert_eq!((done.state, done.attempts, done.lease_owner), (ActionState::Succeeded, 2, None));
    let numbers: Vec<u32> =
        store.messages_for_action(dead.id).await.unwrap().iter().map(|m| m.message.number).collect();
    assert!(numbers.contains(&41060), "the takeover is recorded: {numbers:?}");
    let still = store.action(live.id).await.unwrap().unwrap();
    assert_eq!(
        (still.state, still.lease_owner.as_deref()),
        (ActionState::Running, Some("other")),
        "a live lease is kept"
    );
    let _ = f.stop.send(true);
}

// ---------------------------------------------------------------------------------------------
// Detections in, actions out
// ---------------------------------------------------------------------------------------------

use cordon_model::policy::{Policy, PolicyAction, PolicyMode, Rule};
use cordon_model::{Detection, ThreatSeverity};

fn alert(subject: &str, signature: &str) -> Detection {
    let subject: std::net::IpAddr = subject.parse().unwrap();
    Detection {
        received_at_us: chrono::Utc::now().timestamp_micros(),
        observed_at_us: None,
        source: "ids-1".into(),
        sensor: None,
        subject,
        peer: Some("203.0.113.5".parse().unwrap()),
        src_ip: Some(subject),
        dest_ip: Some("203.0.113.5".parse().unwrap()),
        target_ip: None,
        signature_id: Some("1000001".into()),
        signature: signature.into(),
        category: None,
        severity: ThreatSeverity::High,
        raw: "{}".into(),
    }
}

fn quarantine_rule(mode: PolicyMode) -> Rule {
    Rule {
        name: "serious".into(),
        sources: vec!["ids-1".into()],
        min_severity: Some(ThreatSeverity::High),
        signature_ids: vec![],
        categories: vec![],
        networks: vec![],
        tenants: vec![],
        servers: vec![],
        action: PolicyAction::Quarantine,
        mode,
        shadow: false,
        subject: None,
    }
}

fn policy(rules: Vec<Rule>) -> PolicySet {
    PolicySet { policy: Policy { rules, ..Policy::default() }, servers: Default::default() }
}

/// Runs the detection processor of `f` until every detection is settled.
async fn process_all(f: &Fixture) {
    let engine = f.engine.clone();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        engine
            .run_detections(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    for _ in 0..1000 {
        if f.engine.store().unprocessed_detections(1).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(true);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_alerts_for_one_host_make_one_action() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    f.engine.set_policy(policy(vec![quarantine_rule(PolicyMode::Auto)]));
    let alerts: Vec<Detection> = (0..1000).map(|_| alert("10.10.0.11", "ET TROJAN beacon")).collect();
    f.engine.accept_detections(&alerts, None).await.unwrap();
    process_all(&f).await;
    let actions = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap();
    assert_eq!(actions.len(), 1, "one action per incident");
    assert_eq!(actions[0].detections, 1000);
    assert_eq!(actions[0].decided_by.as_deref(), Some("rule serious"));
    assert_eq!(settle(&f.engine, actions[0].id).await.state, ActionState::Succeeded);
    // Once quarantined, more alerts attach to the action that put it there.
    f.engine.accept_detections(&[alert("10.10.0.11", "ET TROJAN beacon")], None).await.unwrap();
    process_all(&f).await;
    let actions = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap();
    assert_eq!((actions.len(), actions[0].detections), (1, 1001));
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_address_is_a_failed_action_with_67198_that_can_be_checked() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    f.engine.set_policy(policy(vec![quarantine_rule(PolicyMode::Auto)]));
    let alerts = [alert("10.10.0.99", "ET TROJAN beacon"), alert("10.10.0.99", "ET TROJAN beacon")];
    f.engine.accept_detections(&alerts, None).await.unwrap();
    process_all(&f).await;
    let actions = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap();
    assert_eq!(actions.len(), 1, "repeated alerts for one unknown address attach to one action");
    let action = &actions[0];
    assert_eq!((action.state, action.server_id, action.detections), (ActionState::Failed, None, 2));
    let message = action.message.clone().unwrap();
    assert_eq!((message.number, message.text.as_str()), (67198, "server not found. ip=10.10.0.99"));
    let checked = f.engine.check(action.id, &actor()).await.unwrap();
    assert_eq!(checked.state, ActionState::Checked);
    assert_eq!(f.switch.calls.lock().unwrap().len(), 0, "nothing was guessed, nothing moved");
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_servers_and_approve_mode_wait_for_approval() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let mut set = policy(vec![quarantine_rule(PolicyMode::Auto)]);
    set.servers.insert("a".into(), (None, true));
    f.engine.set_policy(set);
    f.engine.accept_detections(&[alert("10.10.0.11", "ET TROJAN")], None).await.unwrap();
    process_all(&f).await;
    let action = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap()[0].clone();
    assert_eq!(action.state, ActionState::AwaitingApproval);
    assert_eq!(action.message.as_ref().unwrap().number, 21014);
    assert!(action.message.unwrap().text.contains("protected"));
    assert!(f.switch.calls.lock().unwrap().is_empty(), "a protected server is never acted on automatically");
    let approved = f.engine.approve(action.id, &actor(), None).await.unwrap();
    assert_eq!(approved.state, ActionState::Pending);
    assert_eq!(settle(&f.engine, action.id).await.state, ActionState::Succeeded);

    // Approve mode on another server, then a rejection.
    f.engine.set_policy(policy(vec![quarantine_rule(PolicyMode::Approve)]));
    f.engine.accept_detections(&[alert("10.10.0.12", "ET TROJAN")], None).await.unwrap();
    process_all(&f).await;
    let waiting = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap()[0].clone();
    assert_eq!((waiting.state, waiting.server_name.as_deref()), (ActionState::AwaitingApproval, Some("b")));
    let rejected = f.engine.reject(waiting.id, &actor()).await.unwrap();
    assert_eq!(rejected.state, ActionState::Rejected);
    assert_eq!(f.switch.port("p-b"), (Some("br-office".into()), false));
    let refused = f.engine.approve(waiting.id, &actor(), None).await.unwrap_err();
    assert_eq!(refused.number(), 41003);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_escalates_to_an_automatic_quarantine() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    // Medium alerts only notify; a high one quarantines.
    let mut set = policy(vec![quarantine_rule(PolicyMode::Auto)]);
    set.policy.default_action = PolicyAction::Notify;
    f.engine.set_policy(set);
    let mut medium = alert("10.10.0.11", "ET POLICY odd");
    medium.severity = ThreatSeverity::Medium;
    f.engine.accept_detections(&[medium], None).await.unwrap();
    process_all(&f).await;
    let action = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap()[0].clone();
    assert_eq!((action.kind, action.state), (ActionKind::Notify, ActionState::AwaitingApproval));
    f.engine.accept_detections(&[alert("10.10.0.11", "ET TROJAN")], None).await.unwrap();
    process_all(&f).await;
    let escalated = f.engine.store().action(action.id).await.unwrap().unwrap();
    assert_eq!(escalated.kind, ActionKind::Quarantine, "the stronger detection escalates the open action");
    assert_eq!(escalated.detections, 2);
    assert_eq!(settle(&f.engine, action.id).await.state, ActionState::Succeeded);
    assert_eq!(f.engine.store().list_actions(&ActionFilter::default()).await.unwrap().len(), 1);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_holds_a_fleet_wide_false_positive() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let mut set = policy(vec![quarantine_rule(PolicyMode::Auto)]);
    set.policy.max_auto_actions = 1;
    f.engine.set_policy(set);
    let alerts = [alert("10.10.0.11", "ET TROJAN"), alert("10.10.0.12", "ET TROJAN")];
    f.engine.accept_detections(&alerts, None).await.unwrap();
    process_all(&f).await;
    // Two servers: decided concurrently, so either may be the one the breaker admitted.
    let actions = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap();
    let (waiting, automatic): (Vec<_>, Vec<_>) = actions.iter().partition(|a| a.state == ActionState::AwaitingApproval);
    assert_eq!(automatic.len(), 1, "one is automatic: {actions:?}");
    assert_eq!(waiting.len(), 1, "the other waits: the breaker tripped");
    assert!(waiting[0].message.as_ref().unwrap().text.contains("circuit breaker"));
    assert!(f.engine.breaker_status().0);
    f.engine.reset_breaker(&actor()).await.unwrap();
    assert!(!f.engine.breaker_status().0);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_records_and_does_nothing() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let mut set = policy(vec![quarantine_rule(PolicyMode::Auto)]);
    set.policy.shadow = true;
    f.engine.set_policy(set);
    f.engine.accept_detections(&[alert("10.10.0.11", "ET TROJAN")], None).await.unwrap();
    process_all(&f).await;
    assert!(f.engine.store().list_actions(&ActionFilter::default()).await.unwrap().is_empty());
    let detection = &f.engine.store().list_detections(&DetectionFilter::default()).await.unwrap()[0];
    let decision = detection.decision.as_deref().unwrap();
    assert!(decision.starts_with("shadow: would quarantine a"), "{decision}");
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_alert_resolves_to_the_server_that_held_the_address_then() {
    let f = fixture("10.99.0.100-10.99.0.100", memory_store()).await;
    f.engine.set_policy(policy(vec![quarantine_rule(PolicyMode::Auto)]));
    // a is quarantined with 10.99.0.100, then released; b gets the same address later.
    let first = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    settle(&f.engine, first.action.id).await;
    let while_a_held_it = chrono::Utc::now().timestamp_micros();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let release = f.engine.request(request(ActionKind::Unquarantine, "a")).await.unwrap();
    settle(&f.engine, release.action.id).await;
    let second = f.engine.request(request(ActionKind::Quarantine, "b")).await.unwrap();
    settle(&f.engine, second.action.id).await;
    let b = f.engine.store().server_by_name("b").await.unwrap().unwrap();
    assert_eq!(b.nics[0].current_ip, Some("10.99.0.100".parse().unwrap()), "the pool address was reused");

    // An alert about 10.99.0.100 observed while a held it arrives now.
    let mut late = alert("10.99.0.100", "ET TROJAN");
    late.observed_at_us = Some(while_a_held_it);
    f.engine.accept_detections(&[late], None).await.unwrap();
    process_all(&f).await;
    let detection = &f.engine.store().list_detections(&DetectionFilter::default()).await.unwrap()[0];
    assert_eq!(detection.server_name.as_deref(), Some("a"), "{:?}", detection.decision);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_fails_plainly_without_a_power_driver_and_quarantine_reboot_still_quarantines() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let mut rule = quarantine_rule(PolicyMode::Auto);
    rule.action = PolicyAction::QuarantineReboot;
    let mut set = policy(vec![rule]);
    set.servers.insert("b".into(), (Some(PolicyAction::Reboot), false));
    f.engine.set_policy(set);
    f.engine
        .accept_detections(&[alert("10.10.0.11", "ET TROJAN"), alert("10.10.0.12", "ET TROJAN")], None)
        .await
        .unwrap();
    process_all(&f).await;
    // The two detections touch different servers: decided concurrently, in either order.
    let actions = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap();
    let of = |name: &str| actions.iter().find(|x| x.server_name.as_deref() == Some(name)).unwrap().id;
    let (a, b) = (settle(&f.engine, of("a")).await, settle(&f.engine, of("b")).await);
    assert_eq!((a.kind, a.state), (ActionKind::QuarantineReboot, ActionState::Failed));
    assert_eq!(a.message.unwrap().number, 60035);
    let server_a = f.engine.store().server_by_name("a").await.unwrap().unwrap();
    assert_eq!(server_a.state, ServerState::Quarantined, "the quarantine half happened and is recorded");
    assert_eq!(
        (b.kind, b.state),
        (ActionKind::Reboot, ActionState::Failed),
        "the server's own action replaced the rule's"
    );
    assert_eq!(b.message.unwrap().number, 60035);
    assert_eq!(f.switch.port("p-b"), (Some("br-office".into()), false), "a reboot does not move the port");
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_release_the_cooldown_holds_new_actions_back() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let mut set = policy(vec![quarantine_rule(PolicyMode::Auto)]);
    set.policy.cooldown_secs = 3600;
    f.engine.set_policy(set);
    let first = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    settle(&f.engine, first.action.id).await;
    let release = f.engine.request(request(ActionKind::Unquarantine, "a")).await.unwrap();
    settle(&f.engine, release.action.id).await;
    f.engine.accept_detections(&[alert("10.10.0.11", "ET TROJAN")], None).await.unwrap();
    process_all(&f).await;
    assert_eq!(f.engine.store().list_actions(&ActionFilter::default()).await.unwrap().len(), 2, "no new action");
    let detection = &f.engine.store().list_detections(&DetectionFilter::default()).await.unwrap()[0];
    assert!(detection.decision.as_deref().unwrap().starts_with("cooldown"), "{:?}", detection.decision);
    let _ = f.stop.send(true);
}

/// A BMC stand-in that records reboots and reports what a real one would have observed.
#[derive(Debug, Default)]
struct MemoryPower {
    reboots: AtomicUsize,
    fail: AtomicBool,
}

impl cordon_drivers::PowerDriver for MemoryPower {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn target(&self) -> String {
        "bmc-a".into()
    }

    fn reboot(&self, _: Duration, _: Duration) -> Result<cordon_drivers::RebootOutcome, DriverError> {
        self.reboots.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(DriverError::BmcAuth { detail: "401 from bmc-a".into() });
        }
        Ok(cordon_drivers::RebootOutcome {
            method: "graceful".into(),
            powered_on: false,
            observed: vec!["PowerState On".into(), "PowerState Off".into(), "PowerState On".into()],
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_is_done_only_when_the_driver_observed_it() {
    let store = memory_store();
    store.sync_inventory(&inventory(&[A, B])).await.unwrap();
    let switch = MemorySwitch::with_ports(&["p-a", "p-b"]);
    let power = Arc::new(MemoryPower::default());
    let f = {
        let mut f = fixture_with("10.99.0.100-10.99.0.101", store, switch);
        let _ = f.stop.send(true);
        // Rebuild with a topology that has a BMC for `a`.
        let mut topology = Topology::default();
        topology.bmcs.insert("a".into(), power.clone());
        topology.reboot_deadline = Duration::from_secs(5);
        let mut settings = EngineSettings::new("test");
        settings.poll_interval = Duration::from_millis(20);
        let engine = Engine::new(f.engine.store().clone(), topology, settings);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let runner = engine.clone();
        tokio::spawn(async move {
            runner
                .run(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        f.engine = engine;
        f.stop = stop;
        f
    };
    let submitted = f.engine.request(request(ActionKind::Reboot, "a")).await.unwrap();
    let done = settle(&f.engine, submitted.action.id).await;
    assert_eq!(done.state, ActionState::Succeeded);
    let message = done.message.unwrap();
    assert_eq!(message.number, 21015);
    assert!(message.text.contains("PowerState Off"), "the observation is reported: {}", message.text);
    assert_eq!(power.reboots.load(Ordering::SeqCst), 1);
    let steps = f.engine.store().steps(done.id).await.unwrap();
    assert_eq!(steps.last().unwrap().step.name, "ensure_rebooted");

    // A BMC that refuses the credentials: the action fails with 60017.
    power.fail.store(true, Ordering::SeqCst);
    let again = f.engine.request(request(ActionKind::Reboot, "a")).await.unwrap();
    let failed = settle(&f.engine, again.action.id).await;
    assert_eq!((failed.state, failed.message.unwrap().number), (ActionState::Failed, 60017));

    // A server without any power driver is refused before anything is recorded.
    let refused = f.engine.request(request(ActionKind::Reboot, "b")).await.unwrap_err();
    assert_eq!(refused.number(), 60035);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_listeners_what_happened() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let mut events = f.engine.subscribe();
    let done = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    settle(&f.engine, done.action.id).await;
    f.switch.fail_next.store(true, Ordering::SeqCst);
    let failing = f.engine.request(request(ActionKind::Quarantine, "b")).await.unwrap();
    settle(&f.engine, failing.action.id).await;
    // Every recorded message is an event too (the console follows them); the others stand out.
    let mut recorded = Vec::new();
    let mut next = async || loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap() {
            EngineEvent::Recorded { number, action, .. } => recorded.push((number, action)),
            other => return other,
        }
    };
    let first = next().await;
    assert!(
        matches!(&first, EngineEvent::Succeeded { action, server, detail, .. } if *action == done.action.id && server == "a" && detail.contains("10.99.0.100")),
        "{first:?}"
    );
    let second = next().await;
    assert!(matches!(second, EngineEvent::Failed { number: 60010, .. }), "{second:?}");
    assert!(
        recorded.iter().any(|&(number, action)| number == 21002 && action == Some(done.action.id)),
        "the success was recorded: {recorded:?}"
    );
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_may_pass_is_retried_with_backoff_then_succeeds() {
    let store = memory_store();
    store.sync_inventory(&inventory(&[A, B])).await.unwrap();
    let switch = MemorySwitch::with_ports(&["p-a", "p-b"]);
    let f = fixture_with_settings("10.99.0.100-10.99.0.101", store, switch, |s| s.max_attempts = 3);
    f.switch.fail_next.store(true, Ordering::SeqCst);
    let submitted = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    let done = settle(&f.engine, submitted.action.id).await;
    assert_eq!((done.state, done.attempts), (ActionState::Succeeded, 2), "retried by itself");
    let messages: Vec<u32> =
        f.engine.store().messages_for_action(done.id).await.unwrap().iter().map(|m| m.message.number).collect();
    assert!(messages.contains(&41008), "the retry was announced: {messages:?}");
    assert_eq!(f.switch.port("p-a"), (Some("br-quarantine".into()), true));

    // A port that stays missing: the attempts run out and the action ends failed, saying why.
    let mut servers = inventory(&[A, B]);
    servers.servers[1].nics[0].port = Some("p-missing".into());
    f.engine.store().sync_inventory(&servers).await.unwrap();
    let missing = f.engine.request(request(ActionKind::Quarantine, "b")).await.unwrap();
    let failed = settle(&f.engine, missing.action.id).await;
    assert_eq!((failed.state, failed.attempts), (ActionState::Failed, 3));
    assert_eq!(failed.message.unwrap().number, 60010);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_nic_server_whose_second_port_is_missing_ends_partial_and_retry_moves_only_that_nic() {
    let store = memory_store();
    let mut servers = inventory(&[A]);
    let mut second = servers.servers[0].nics[0].clone();
    second.mac = "02:00:00:00:00:0a".parse().unwrap();
    second.ip = Some("10.10.0.31".parse().unwrap());
    second.port = Some("p-a2".into());
    servers.servers[0].nics.push(second);
    store.sync_inventory(&servers).await.unwrap();
    let switch = MemorySwitch::with_ports(&["p-a"]);
    let f = fixture_with("10.99.0.100-10.99.0.109", store, switch);

    let submitted = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    let failed = settle(&f.engine, submitted.action.id).await;
    assert_eq!(failed.state, ActionState::Failed);
    let a = f.engine.store().server_by_name("a").await.unwrap().unwrap();
    assert_eq!(a.state, ServerState::Partial, "one NIC moved, one did not");
    let networks: Vec<&str> = a.nics.iter().map(|n| n.current_network.as_str()).collect();
    assert_eq!(networks, ["quarantine", "office"], "each NIC's network is recorded");

    // The port appears; a retry completes only what is missing.
    f.switch.ports.lock().unwrap().insert("p-a2".into(), (Some("br-office".into()), false));
    f.engine.retry(failed.id, &actor()).await.unwrap();
    let done = settle(&f.engine, failed.id).await;
    assert_eq!(done.state, ActionState::Succeeded);
    let steps = f.engine.store().steps(done.id).await.unwrap();
    let port_steps: Vec<(String, StepOutcome)> = steps
        .iter()
        .filter(|s| s.step.attempt == 2 && s.step.name == "ensure_port_on_bridge")
        .map(|s| (s.step.target.clone(), s.step.outcome))
        .collect();
    assert_eq!(
        port_steps,
        [("tor-1/p-a".to_string(), StepOutcome::AlreadyInPlace), ("tor-1/p-a2".to_string(), StepOutcome::Done)]
    );
    let calls = f.switch.calls.lock().unwrap().iter().filter(|(p, _)| p == "p-a").count();
    assert_eq!(calls, 2, "p-a was only looked at again, not moved twice (the memory switch counts every call)");
    assert_eq!(f.engine.store().server_by_name("a").await.unwrap().unwrap().state, ServerState::Quarantined);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_withdraws_an_action_that_has_not_started() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    f.engine.set_policy(policy(vec![quarantine_rule(PolicyMode::Approve)]));
    f.engine.accept_detections(&[alert("10.10.0.11", "ET TROJAN")], None).await.unwrap();
    process_all(&f).await;
    let waiting = f.engine.store().list_actions(&ActionFilter::default()).await.unwrap()[0].clone();
    let cancelled = f.engine.cancel(waiting.id, &actor()).await.unwrap();
    assert_eq!(cancelled.state, ActionState::Rejected, "awaiting approval, cancel is a rejection");
    assert_eq!(cancelled.message.unwrap().number, 21018);
    let refused = f.engine.cancel(waiting.id, &actor()).await.unwrap_err();
    assert_eq!(refused.number(), 41003);
    assert!(refused.text.contains("cannot cancel"), "{}", refused.text);
    let missing = f.engine.cancel(999, &actor()).await.unwrap_err();
    assert_eq!(missing.number(), 60003);
    assert!(f.switch.calls.lock().unwrap().is_empty(), "nothing was done to the server");
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_reports_drift_and_enforce_puts_it_back() {
    let f = fixture("10.99.0.100-10.99.0.101", memory_store()).await;
    let done = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap();
    settle(&f.engine, done.action.id).await;
    let clean = f.engine.reconcile(OnDrift::Report).await.unwrap();
    assert_eq!((clean.checked, clean.drifts.len()), (2, 0), "records match the network");

    // Someone puts a's port back on the office bridge by hand.
    f.switch.ports.lock().unwrap().insert("p-a".into(), (Some("br-office".into()), false));
    let report = f.engine.reconcile(OnDrift::Report).await.unwrap();
    assert_eq!(report.drifts.len(), 1);
    let drift = &report.drifts[0];
    assert_eq!((drift.server.as_str(), drift.target.as_str(), drift.action), ("a", "tor-1/p-a", None));
    assert!(drift.recorded.contains("br-quarantine") && drift.observed.contains("br-office"), "{drift:?}");
    let messages = f.engine.store().recent_messages(5).await.unwrap();
    assert!(messages.iter().any(|m| m.message.number == 41009), "a numbered message");
    assert_eq!(f.switch.port("p-a"), (Some("br-office".into()), false), "report changes nothing");

    let enforced = f.engine.reconcile(OnDrift::Enforce).await.unwrap();
    let action = enforced.drifts[0].action.expect("enforce creates an action");
    let back = settle(&f.engine, action).await;
    assert_eq!(
        (back.kind, back.state, back.trigger.as_str()),
        (ActionKind::Quarantine, ActionState::Succeeded, "reconciler")
    );
    assert_eq!(f.switch.port("p-a"), (Some("br-quarantine".into()), true), "back in quarantine");
    let a = f.engine.store().server_by_name("a").await.unwrap().unwrap();
    assert_eq!(a.nics[0].current_ip, Some("10.99.0.100".parse().unwrap()), "with the same address");
    let _ = f.stop.send(true);
}

#[test]
fn every_number_a_driver_error_carries_is_in_the_catalogue() {
    let detail = || "x".to_string();
    let errors = [
        DriverError::Namespace { netns: detail(), detail: detail() },
        DriverError::PortNotFound { port: detail() },
        DriverError::BridgeNotFound { bridge: detail() },
        DriverError::Netlink { operation: detail(), detail: detail() },
        DriverError::ReadBackMismatch { port: detail(), expected: detail(), observed: detail() },
        DriverError::HypervisorUnreachable { detail: detail() },
        DriverError::DomainNotFound { domain: detail() },
        DriverError::NicNotFound { domain: detail(), mac: detail() },
        DriverError::BmcAuth { detail: detail() },
        DriverError::BmcTimeout { detail: detail() },
        DriverError::Bmc { detail: detail() },
        DriverError::NotConfirmed { detail: detail() },
        DriverError::WrongSegment { driver: detail(), segment: detail() },
        DriverError::OvsdbUnreachable { detail: detail() },
        DriverError::OvsPortNotFound { detail: detail() },
        DriverError::OvsConflict { detail: detail() },
        DriverError::Ovsdb { detail: detail() },
        DriverError::OvsNotApplied { detail: detail() },
    ];
    for error in errors {
        let number = error.message_number();
        assert!(
            cordon_model::Message::find(number).is_some(),
            "{error:?} carries {number}, which docs/messages.md lacks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_holding_an_infrastructure_address_is_never_quarantined() {
    let store = memory_store();
    store.sync_inventory(&inventory(&[A, B])).await.unwrap();
    let switch = MemorySwitch::with_ports(&["p-a", "p-b"]);
    let f = fixture_with_settings("10.99.0.100-10.99.0.101", store, switch, |settings| {
        settings.infrastructure = vec![(A.2.parse().unwrap(), "the BMC endpoint of server z".into())];
    });

    // By hand: refused with its number, nothing recorded.
    let error = f.engine.request(request(ActionKind::Quarantine, "a")).await.unwrap_err();
    assert_eq!(error.number(), cordon_model::messages::INFRASTRUCTURE_REFUSED.number);
    assert!(error.text.contains("holds 10.10.0.11, which is the BMC endpoint of server z"), "{}", error.text);
    let error = f.engine.request(request(ActionKind::QuarantineReboot, "a")).await.unwrap_err();
    assert_eq!(error.number(), cordon_model::messages::INFRASTRUCTURE_REFUSED.number);
    assert!(f.engine.store().list_actions(&ActionFilter::default()).await.unwrap().is_empty());

    // By policy: the detection is settled as refused, with the message recorded; no action.
    f.engine.set_policy(policy(vec![quarantine_rule(PolicyMode::Auto)]));
    f.engine.accept_detections(&[alert(A.2, "ET TROJAN beacon")], None).await.unwrap();
    process_all(&f).await;
    assert!(f.engine.store().list_actions(&ActionFilter::default()).await.unwrap().is_empty());
    let detections = f.engine.store().list_detections(&Default::default()).await.unwrap();
    assert!(detections[0].decision.as_deref().unwrap().starts_with("refused: server a holds 10.10.0.11"));
    let recorded = f.engine.store().recent_messages(10).await.unwrap();
    assert!(recorded.iter().any(|m| m.message.number == cordon_model::messages::INFRASTRUCTURE_REFUSED.number));

    // Other servers are not affected.
    let b = f.engine.request(request(ActionKind::Quarantine, "b")).await.unwrap();
    assert_eq!(settle(&f.engine, b.action.id).await.state, ActionState::Succeeded);
    let _ = f.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_alerts_decided_concurrently_make_one_action_per_host_and_workers_are_bounded() {
    let names: Vec<(String, String, String)> =
        (0..40).map(|i| (format!("h{i}"), format!("02:00:00:00:01:{i:02x}"), format!("10.10.0.{}", 100 + i))).collect();
    let servers: Vec<(&str, &str, &str)> = names.iter().map(|(n, m, a)| (n.as_str(), m.as_str(), a.as_str())).collect();
    let store = memory_store();
    store.sync_inventory(&inventory(&servers)).await.unwrap();
    let ports: Vec<String> = names.iter().map(|(n, _, _)| format!("p-{n}")).collect();
    let switch = MemorySwitch::with_ports(&ports.iter().map(String::as_str).collect::<Vec<_>>());
    *switch.delay.lock().unwrap() = Duration::from_millis(5);
    let f = fixture_with_settings("10.99.0.10-10.99.0.250", store, switch, |settings| {
        settings.workers = 4;
        settings.deciders = 16;
    });
    f.engine.load_address_index().await.unwrap();
    f.engine.set_policy(policy(vec![quarantine_rule(PolicyMode::Auto)]));
    // Three rounds over every host, and two addresses nobody holds, interleaved.
    let mut alerts = Vec::new();
    for _ in 0..3 {
        alerts.extend(names.iter().map(|(_, _, address)| alert(address, "ET TROJAN beacon")));
        alerts.push(alert("10.10.0.250", "ET TROJAN beacon"));
        alerts.push(alert("10.10.0.251", "ET TROJAN beacon"));
    }
    f.engine.accept_detections(&alerts, None).await.unwrap();
    process_all(&f).await;

    let actions =
        f.engine.store().list_actions(&ActionFilter { limit: Some(1000), ..Default::default() }).await.unwrap();
    let mut per_server: HashMap<Option<i64>, Vec<&ActionRecord>> = HashMap::new();
    for action in &actions {
        per_server.entry(action.server_id).or_default().push(action);
    }
    let unresolved = per_server.remove(&None).unwrap_or_default();
    assert_eq!(per_server.len(), 40, "one action for every host");
    assert!(per_server.values().all(|a| a.len() == 1), "no host has two actions");
    assert!(per_server.values().all(|a| a[0].detections == 3), "each host's three detections are on its action");
    assert_eq!(unresolved.len(), 2, "one unresolved action per unknown address");
    assert!(unresolved.iter().all(|a| a.detections == 3 && a.state == ActionState::Failed));
    for action in per_server.values() {
        assert_eq!(settle(&f.engine, action[0].id).await.state, ActionState::Succeeded);
    }
    let max_active = f.switch.max_active.load(Ordering::SeqCst);
    assert!(max_active <= 4, "at most `workers` actions ran at once (saw {max_active})");
    assert!(!f.switch.overlapped.load(Ordering::SeqCst), "never two calls on one port");
    let _ = f.stop.send(true);
}
