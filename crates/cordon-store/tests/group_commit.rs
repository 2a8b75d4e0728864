//! The SQLite store's group commit, through the `Store` trait on a real database file (WAL,
//! `synchronous = FULL`): many writers in flight share commits, every acknowledged write is
//! there, failing calls in a batch change nothing and fail alone, and a read started after an
//! acknowledged write sees it (reads run on separate read connections).

use std::collections::BTreeSet;
use std::sync::Arc;

use cordon_model::{ActionCommand, ActionKind, ActionState, Role};
use cordon_store::*;

const WRITERS: usize = 200;

fn action() -> NewAction {
    NewAction {
        kind: ActionKind::Quarantine,
        server_id: None,
        address: Some("192.0.2.7".parse().unwrap()),
        state: ActionState::Pending,
        reason: Some("group commit".into()),
        trigger: "api".into(),
        requested_by: "tester".into(),
        instance: "i1".into(),
        decided_by: None,
        message: None,
    }
}

fn message(action_id: Option<i64>, text: String) -> NewMessage {
    NewMessage { number: 21001, text, server_id: None, action_id, instance: "i1".into() }
}

fn step(action_id: i64, name: &str) -> NewStep {
    let now = chrono::Utc::now();
    NewStep {
        action_id,
        attempt: 1,
        name: name.into(),
        target: "tor-1/p-1".into(),
        outcome: StepOutcome::Done,
        detail: String::new(),
        message_number: None,
        instance: "i1".into(),
        started_at: now,
        finished_at: now,
    }
}

/// Starts every writer at once, so that their calls queue behind each other's commits.
fn barrier() -> Arc<tokio::sync::Barrier> {
    Arc::new(tokio::sync::Barrier::new(WRITERS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_writers_share_commits_and_every_row_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("cordon.db")).unwrap());
    let start = barrier();
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let created = store.create_action(&action()).await.unwrap();
                store.record_message(&message(Some(created.id), format!("writer {n}"))).await.unwrap();
                store.append_step(&step(created.id, "ensure_quarantine_address")).await.unwrap();
                store.append_step(&step(created.id, "ensure_port_on_bridge")).await.unwrap();
                let running = store.transition_action(created.id, 1, ActionCommand::Start, None).await.unwrap();
                (n, running)
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for writer in writers {
        let (n, running) = writer.await.unwrap();
        assert_eq!((running.state, running.generation), (ActionState::Running, 2));
        let messages = store.messages_for_action(running.id).await.unwrap();
        assert_eq!(messages.len(), 1, "writer {n}");
        assert_eq!(messages[0].message.text, format!("writer {n}"));
        let steps: Vec<(i64, String)> =
            store.steps(running.id).await.unwrap().into_iter().map(|s| (s.seq, s.step.name)).collect();
        assert_eq!(steps, [(1, "ensure_quarantine_address".into()), (2, "ensure_port_on_bridge".into())], "writer {n}");
        ids.insert(running.id);
    }
    assert_eq!(ids.len(), WRITERS, "every writer got its own action");
    let running = store.running_actions().await.unwrap();
    assert_eq!(running.len(), WRITERS);

    // One audit row per creation and per transition, chained across the batches.
    let verdict = verify_audit(store.as_ref()).await.unwrap();
    assert_eq!((verdict.verified.rows, verdict.broken), (2 * WRITERS as u64, None));

    let (jobs, commits) = store.commit_stats();
    assert_eq!(jobs, 5 * WRITERS as u64, "five writes per writer");
    assert!(commits < jobs, "{jobs} jobs took {commits} commits: no commit was shared");
    println!("{jobs} write jobs in {commits} commits ({:.1} per commit)", jobs as f64 / commits as f64);

    // Everything acknowledged is in the file: a fresh store on it sees the same.
    drop(store);
    let reopened = SqliteStore::open(&dir.path().join("cordon.db")).unwrap();
    assert_eq!(reopened.running_actions().await.unwrap().len(), WRITERS);
    assert_eq!(verify_audit(&reopened).await.unwrap().verified.rows, 2 * WRITERS as u64);
}

/// Failing calls mixed with good ones in the same bursts: a stale generation, a unique name
/// taken twice, a message and a step naming an action that does not exist (foreign keys). Each
/// fails alone with its own error and leaves nothing behind; the others are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_call_in_a_batch_fails_alone_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("cordon.db")).unwrap());
    let shared = store.create_action(&action()).await.unwrap();
    let start = barrier();
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                match n % 5 {
                    // Only the first of these can move the action; the others hold a stale
                    // generation by then (or race for it: exactly one wins).
                    0 => match store.transition_action(shared.id, 1, ActionCommand::Start, None).await {
                        Ok(record) => Ok(format!("start {}", record.generation)),
                        Err(StoreError::Conflict { .. }) => Err("conflict"),
                        Err(other) => panic!("writer {n}: {other}"),
                    },
                    1 => match store.create_token("twice", Role::Viewer, &format!("hash-{n}"), None).await {
                        Ok(_) => Ok("token".into()),
                        Err(StoreError::AlreadyExists { .. }) => Err("exists"),
                        Err(other) => panic!("writer {n}: {other}"),
                    },
                    2 => match store.record_message(&message(Some(1_000_000 + n as i64), format!("ghost {n}"))).await {
                        Ok(_) => panic!("writer {n}: a message for a missing action was stored"),
                        Err(StoreError::Backend(_)) => Err("ghost message"),
                        Err(other) => panic!("writer {n}: {other}"),
                    },
                    3 => match store.append_step(&step(1_000_000 + n as i64, "ghost")).await {
                        Ok(_) => panic!("writer {n}: a step for a missing action was stored"),
                        Err(StoreError::Backend(_)) => Err("ghost step"),
                        Err(other) => panic!("writer {n}: {other}"),
                    },
                    _ => {
                        let good = message(None, format!("good {n}"));
                        store.record_message(&good).await.unwrap_or_else(|e| panic!("writer {n}: {e}"));
                        Ok("good".into())
                    }
                }
            })
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for writer in writers {
        let outcome = match writer.await.unwrap() {
            Ok(done) => done,
            Err(failed) => failed.to_string(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let per_kind = WRITERS / 5;
    let expected: std::collections::BTreeMap<String, usize> = [
        ("start 2".to_string(), 1),
        ("conflict".into(), per_kind - 1),
        ("token".into(), 1),
        ("exists".into(), per_kind - 1),
        ("ghost message".into(), per_kind),
        ("ghost step".into(), per_kind),
        ("good".into(), per_kind),
    ]
    .into();
    assert_eq!(outcomes, expected);

    // What the good calls wrote is there, and only that.
    let messages = store.recent_messages(10 * WRITERS as u32).await.unwrap();
    let texts: BTreeSet<String> = messages.iter().map(|m| m.message.text.clone()).collect();
    let good: BTreeSet<String> = (0..WRITERS).filter(|n| n % 5 == 4).map(|n| format!("good {n}")).collect();
    assert_eq!(texts, good);
    assert_eq!(store.list_tokens().await.unwrap().len(), 1);
    let moved = store.action(shared.id).await.unwrap().unwrap();
    assert_eq!((moved.state, moved.generation), (ActionState::Running, 2));
    let verdict = verify_audit(store.as_ref()).await.unwrap();
    assert_eq!((verdict.verified.rows, verdict.broken), (2, None), "one creation, one start");

    let (jobs, commits) = store.commit_stats();
    assert!(commits < jobs, "{jobs} jobs took {commits} commits: the failures never shared a batch");
}

/// Reads run on their own connections; each one started after a write was acknowledged sees
/// that write, also while other writers keep the writer thread busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_an_acknowledged_write_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("cordon.db")).unwrap());
    let readers: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..25 {
                    let text = format!("task {task} round {round}");
                    let written = store.record_message(&message(None, text.clone())).await.unwrap();
                    let seen = store.recent_messages(1000).await.unwrap();
                    assert!(seen.iter().any(|m| m.id == written.id && m.message.text == text), "{text} not seen");
                    let created = store.create_action(&action()).await.unwrap();
                    let read = store.action(created.id).await.unwrap();
                    assert_eq!(read.map(|a| a.generation), Some(1), "{text}: action {}", created.id);
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(store.recent_messages(1000).await.unwrap().len(), 200);
}

/// The last clone going away stops the writer thread and closes the file: the WAL is
/// checkpointed away and another program sees every row.
#[tokio::test]
async fn dropping_the_last_store_closes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cordon.db");
    let store = SqliteStore::open(&path).unwrap();
    let clone = store.clone();
    store.record_message(&message(None, "kept".into())).await.unwrap();
    drop(store);
    clone.record_message(&message(None, "kept too".into())).await.unwrap();
    drop(clone);
    assert!(!dir.path().join("cordon.db-wal").exists(), "the last connection closed removes the WAL");
    let output = std::process::Command::new("sqlite3")
        .arg(&path)
        .arg("SELECT COUNT(*) FROM messages")
        .output()
        .expect("sqlite3 is installed by scripts/install-deps.sh");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "2");
}
