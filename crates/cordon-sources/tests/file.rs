//! The file follower against real files in a temporary directory.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{RecordingSink, alerts, eventually, parser, text};
use cordon_sources::{Checkpoint, DetectionSink, FileFollower, SourceCounters};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), cordon_sources::SourceError>>,
    counters: Arc<SourceCounters>,
}

impl Running {
    async fn stop(self) -> Arc<SourceCounters> {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the follower stops promptly")
            .unwrap()
            .unwrap();
        self.counters
    }
}

fn follow(path: &Path, start: Option<Checkpoint>, sink: Arc<dyn DetectionSink>) -> Running {
    let counters = Arc::new(SourceCounters::default());
    let follower = FileFollower::new("ids-1".to_owned(), path.to_path_buf(), parser(), start, sink, counters.clone());
    let (stop, rx) = watch::channel(false);
    Running { stop, task: tokio::spawn(follower.run(rx)), counters }
}

fn append(path: &Path, data: &str) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(data.as_bytes()).unwrap();
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn eve(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("eve.json")
}

/// Waits until the sink committed the whole file at `path` (its inode, its length).
async fn committed_to_end(sink: &RecordingSink, path: &Path) {
    let want = Checkpoint { path: path.to_path_buf(), inode: inode(path), offset: len(path) };
    eventually(&format!("checkpoint {want:?}"), || sink.last_checkpoint().as_ref() == Some(&want)).await;
}

#[tokio::test]
async fn existing_file_is_read_from_its_start_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, "alert 10.0.0.1 a\nskip flow\nskip dns\nskip flow\ngarbage\nalert 10.0.0.2 b\n\n");
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    committed_to_end(&sink, &path).await;
    assert_eq!(sink.raws(), ["alert 10.0.0.1 a", "alert 10.0.0.2 b"]);
    let counters = run.stop().await;
    let s = counters.snapshot();
    assert_eq!(s.received, 6, "the empty line is not a line to parse");
    assert_eq!(s.accepted, 2);
    assert_eq!(s.skipped, 3);
    assert_eq!(s.skipped_by_kind, BTreeMap::from([("dns".to_owned(), 1), ("flow".to_owned(), 2)]));
    assert_eq!(s.rejected, 1);
    assert_eq!(s.bytes, len(&path));
    assert_eq!(s.delivery_failures, 0);
    // Every batch carries the checkpoint of this file.
    assert!(sink.batches().iter().all(
        |b| b.source == "ids-1" && b.checkpoint.as_ref().is_some_and(|c| c.path == path && c.inode == inode(&path))
    ));
}

#[tokio::test]
async fn a_file_created_after_the_start_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sink.batches().is_empty());
    // Written in two steps: whatever the follower sees first, nothing is lost.
    append(&path, "alert 10.0.0.1 a\n");
    append(&path, "alert 10.0.0.1 b\n");
    committed_to_end(&sink, &path).await;
    assert_eq!(sink.raws(), ["alert 10.0.0.1 a", "alert 10.0.0.1 b"]);
    run.stop().await;
}

#[tokio::test]
async fn appended_lines_and_a_line_split_across_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, "");
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    append(&path, "alert 10.0.0.1 a\nalert 10.0");
    eventually("the first line", || sink.raws().len() == 1).await;
    // The checkpoint stops before the partial line.
    assert_eq!(sink.last_checkpoint().unwrap().offset, "alert 10.0.0.1 a\n".len() as u64);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.raws().len(), 1, "a partial line waits for its newline");
    append(&path, ".0.2 b\r\n");
    append(&path, "alert 10.0.0.3 c\n");
    committed_to_end(&sink, &path).await;
    assert_eq!(sink.raws(), ["alert 10.0.0.1 a", "alert 10.0.0.2 b", "alert 10.0.0.3 c"]);
    let s = run.stop().await.snapshot();
    assert_eq!((s.received, s.accepted, s.rejected), (3, 3, 0));
}

#[tokio::test]
async fn rename_rotation_reads_the_old_file_to_its_end_then_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    let rotated = dir.path().join("eve.json.1");
    append(&path, &text(&alerts("old", 0..3)));
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    committed_to_end(&sink, &path).await;

    // The writer keeps its descriptor: it writes to the old file after the rename, before
    // the new file appears (and a last line without its newline).
    let mut writer = OpenOptions::new().append(true).open(&path).unwrap();
    std::fs::rename(&path, &rotated).unwrap();
    writer.write_all(text(&alerts("old", 3..5)).as_bytes()).unwrap();
    writer.write_all(b"alert 10.0.0.1 old-5").unwrap();
    drop(writer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&path, &text(&alerts("new", 0..3)));
    committed_to_end(&sink, &path).await;

    let mut want = alerts("old", 0..6);
    want.extend(alerts("new", 0..3));
    assert_eq!(sink.raws(), want);
    let s = run.stop().await.snapshot();
    assert_eq!((s.received, s.accepted), (9, 9));
}

#[tokio::test]
async fn rotation_with_create_waits_for_the_writer_to_reopen() {
    // logrotate `create`: rename, create an empty file, then signal the writer, which writes to
    // the old file until it reopens.
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    let rotated = dir.path().join("eve.json.1");
    append(&path, &text(&alerts("old", 0..2)));
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    committed_to_end(&sink, &path).await;

    let mut writer = OpenOptions::new().append(true).open(&path).unwrap();
    std::fs::rename(&path, &rotated).unwrap();
    File::create(&path).unwrap();
    for i in 2..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        writer.write_all(format!("alert 10.0.0.1 old-{i}\n").as_bytes()).unwrap();
    }
    drop(writer);
    eventually("the lines written to the old file", || sink.raws().len() == 5).await;
    append(&path, &text(&alerts("new", 0..2)));
    committed_to_end(&sink, &path).await;

    let mut want = alerts("old", 0..5);
    want.extend(alerts("new", 0..2));
    assert_eq!(sink.raws(), want);
    run.stop().await;
}

#[tokio::test]
async fn rotation_to_an_empty_file_switches_once_the_old_one_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, &text(&alerts("old", 0..2)));
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    committed_to_end(&sink, &path).await;
    std::fs::rename(&path, dir.path().join("eve.json.1")).unwrap();
    File::create(&path).unwrap();
    // A line in the new file is read at once, and so is one after the old file went quiet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    append(&path, "skip\n");
    committed_to_end(&sink, &path).await;
    append(&path, "alert 10.0.0.1 new-0\n");
    committed_to_end(&sink, &path).await;
    assert_eq!(sink.raws().last().unwrap(), "alert 10.0.0.1 new-0");
    run.stop().await;
}

#[tokio::test]
async fn copytruncate_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, &text(&alerts("before", 0..5)));
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    committed_to_end(&sink, &path).await;
    let ino = inode(&path);
    std::fs::copy(&path, dir.path().join("eve.json.1")).unwrap();
    OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    append(&path, &text(&alerts("after", 0..2)));
    committed_to_end(&sink, &path).await;
    assert_eq!(inode(&path), ino);
    let mut want = alerts("before", 0..5);
    want.extend(alerts("after", 0..2));
    assert_eq!(sink.raws(), want);
    run.stop().await;
}

#[tokio::test]
async fn resume_after_a_kill_delivers_every_line_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, "");
    // A slow sink, so that the kill may fall in the middle of a delivery.
    let sink = RecordingSink::slow(Duration::from_millis(3));
    let total = 3000;
    let lines: Vec<String> =
        (0..total).map(|i| if i % 7 == 3 { "skip flow".to_owned() } else { format!("alert 10.0.0.1 l-{i}") }).collect();
    let wanted: Vec<String> = lines.iter().filter(|l| l.starts_with("alert")).cloned().collect();

    let first = follow(&path, None, sink.clone());
    let mut written = 0;
    while sink.batches().len() < 5 {
        append(&path, &text(&lines[written..written + 40]));
        written += 40;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Killed mid-stream: no shutdown, the task is dropped wherever it is.
    first.task.abort();
    assert!(first.task.await.unwrap_err().is_cancelled());
    let delivered_before = sink.raws().len();
    assert!(delivered_before < wanted.len());
    // More is written while Cordon is down, in pieces that split lines.
    let rest = text(&lines[written..]);
    let (a, b) = rest.split_at(rest.len() / 2 + 5);
    append(&path, a);

    let start = sink.last_checkpoint();
    assert!(start.as_ref().is_some_and(|c| c.inode == inode(&path)));
    let second = follow(&path, start, sink.clone());
    tokio::time::sleep(Duration::from_millis(20)).await;
    append(&path, b);
    committed_to_end(&sink, &path).await;
    assert_eq!(sink.raws(), wanted, "every line once, in order");
    second.stop().await;
}

#[tokio::test]
async fn resume_continues_on_the_same_file_and_restarts_on_another_or_shorter() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, &text(&alerts("a", 0..3)));
    let sink = RecordingSink::new();
    follow_to_end(&path, None, &sink).await;
    let cp = sink.last_checkpoint().unwrap();

    // Same file, grown: only the new lines.
    append(&path, &text(&alerts("b", 0..2)));
    let sink = RecordingSink::new();
    follow_to_end(&path, Some(cp.clone()), &sink).await;
    assert_eq!(sink.raws(), alerts("b", 0..2));
    let cp = sink.last_checkpoint().unwrap();

    // Rotated while down (another inode; the old file is kept so that its inode is not reused):
    // the new file from 0, even though it is longer than the checkpoint's offset.
    std::fs::rename(&path, dir.path().join("eve.json.1")).unwrap();
    append(&path, &text(&alerts("c", 0..10)));
    assert_ne!(inode(&path), cp.inode);
    let sink = RecordingSink::new();
    follow_to_end(&path, Some(cp), &sink).await;
    assert_eq!(sink.raws(), alerts("c", 0..10));
    let cp = sink.last_checkpoint().unwrap();

    // Truncated while down (same inode, shorter): from 0.
    OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    append(&path, &text(&alerts("d", 0..1)));
    assert_eq!(inode(&path), cp.inode);
    let sink = RecordingSink::new();
    follow_to_end(&path, Some(cp), &sink).await;
    assert_eq!(sink.raws(), alerts("d", 0..1));
}

async fn follow_to_end(path: &Path, start: Option<Checkpoint>, sink: &Arc<RecordingSink>) {
    let run = follow(path, start, sink.clone());
    committed_to_end(sink, path).await;
    run.stop().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, &text(&alerts("x", 0..5)));
    let sink = RecordingSink::failing_first(3);
    let run = follow(&path, None, sink.clone());
    committed_to_end(&sink, &path).await;
    // Written while the first batch was being retried, or after: either way, once each.
    append(&path, &text(&alerts("x", 5..8)));
    committed_to_end(&sink, &path).await;
    assert_eq!(sink.raws(), alerts("x", 0..8));
    let s = run.stop().await.snapshot();
    assert_eq!(s.delivery_failures, 3);
    assert_eq!(s.accepted, 8);
}

#[tokio::test]
async fn shutdown_is_prompt_while_the_sink_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, &text(&alerts("x", 0..5)));
    let sink = RecordingSink::always_failing();
    let run = follow(&path, None, sink.clone());
    eventually("two failed attempts", || sink.attempts() >= 2).await;
    let started = std::time::Instant::now();
    let s = run.stop().await.snapshot();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(s.accepted, 0);
    assert!(s.delivery_failures >= 2);
    assert!(sink.batches().is_empty());
}

#[tokio::test]
async fn an_oversize_line_is_rejected_and_the_next_lines_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    let huge = "x".repeat(1024 * 1024 + 10);
    append(&path, &format!("alert 10.0.0.1 a\n{huge}\nalert 10.0.0.1 b\n"));
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    committed_to_end(&sink, &path).await;
    assert_eq!(sink.raws(), ["alert 10.0.0.1 a", "alert 10.0.0.1 b"]);

    // A long line still being written: dropped as it comes, never kept whole.
    append(&path, &"y".repeat(1024 * 1024 + 100_000));
    eventually("the second rejection", || run.counters.snapshot().rejected == 2).await;
    append(&path, &"y".repeat(3 * 1024 * 1024));
    append(&path, "yyy\nalert 10.0.0.1 c\n");
    committed_to_end(&sink, &path).await;
    assert_eq!(sink.raws(), ["alert 10.0.0.1 a", "alert 10.0.0.1 b", "alert 10.0.0.1 c"]);
    let s = run.stop().await.snapshot();
    assert_eq!((s.received, s.accepted, s.rejected), (5, 3, 2));
}

#[tokio::test]
async fn only_skipped_lines_still_advance_the_checkpoint_in_few_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, "");
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    for _ in 0..20 {
        append(&path, "skip flow\nskip flow\nnot json\n");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    committed_to_end(&sink, &path).await;
    let batches = sink.batches();
    assert!(batches.iter().all(|b| b.detections.is_empty()));
    assert!(batches.len() <= 3, "coalesced: {} commits for 60 lines", batches.len());
    let s = run.stop().await.snapshot();
    assert_eq!((s.received, s.skipped, s.rejected, s.accepted), (60, 40, 20, 0));
}

#[tokio::test]
async fn many_detections_go_in_batches_of_at_most_a_thousand() {
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    append(&path, &text(&alerts("m", 0..2500)));
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    committed_to_end(&sink, &path).await;
    let batches = sink.batches();
    assert!(batches.iter().all(|b| b.detections.len() <= 1000));
    assert_eq!(sink.raws(), alerts("m", 0..2500));
    // Each checkpoint is just past the last line of its batch.
    let mut offset = 0;
    for b in &batches {
        offset += b.detections.iter().map(|d| d.raw.len() as u64 + 1).sum::<u64>();
        assert_eq!(b.checkpoint.as_ref().unwrap().offset, offset);
    }
    run.stop().await;
}

/// Waits for `n` detections and says how long it took.
async fn time_to(sink: &RecordingSink, n: usize) -> Duration {
    let started = std::time::Instant::now();
    eventually(&format!("{n} detections"), || sink.raws().len() >= n).await;
    started.elapsed()
}

#[tokio::test]
async fn events_wake_the_follower_without_waiting_for_the_recheck() {
    // The safety re-check runs every 2 s; inotify must make each of these much faster.
    let fast = Duration::from_millis(700);
    let dir = tempfile::tempdir().unwrap();
    let path = eve(&dir);
    let sink = RecordingSink::new();
    let run = follow(&path, None, sink.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&path, "alert 10.0.0.1 created\n");
    assert!(time_to(&sink, 1).await < fast, "creation");
    for i in 0..3 {
        append(&path, &format!("alert 10.0.0.1 append-{i}\n"));
        assert!(time_to(&sink, 2 + i).await < fast, "append");
    }
    // Renamed away, written through the old descriptor: only the watch on the open file
    // (not on the path) sees this.
    let mut writer = OpenOptions::new().append(true).open(&path).unwrap();
    std::fs::rename(&path, dir.path().join("eve.json.1")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer.write_all(b"alert 10.0.0.1 renamed\n").unwrap();
    assert!(time_to(&sink, 5).await < fast, "write after rename");
    // The new file, written after it was created empty.
    File::create(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    append(&path, "alert 10.0.0.1 new\n");
    assert!(time_to(&sink, 6).await < fast, "new file");
    append(&path, "alert 10.0.0.1 new-2\n");
    assert!(time_to(&sink, 7).await < fast, "new file appended");
    run.stop().await;
}
