//! Following a file like `tail -F`: EVE JSON written by Suricata, rotated by logrotate.
//!
//! Event-driven: inotify watches the open file (by its descriptor, so the watch follows the
//! inode through a rename) and its directory (so that creation and rename of the path are seen);
//! a slow re-check every few seconds covers any event missed. Without inotify (no instance left),
//! the follower polls.
//!
//! On each wake-up: read what the open file has to its end, cut lines, parse, deliver; then look
//! at the path. Another file there means rotation: the old file is read to its end first (and
//! kept while its writer may still be writing to it), then the new one is read from 0. A file
//! shorter than what was read means truncation (`copytruncate`): read again from 0.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cordon_model::Detection;
use inotify::{EventOwned, EventStream, Inotify, StreamExt, WatchDescriptor, WatchMask, Watches};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::core::{Core, Delivered, is_shutdown, limited_warn, now_us, shutdown_requested};
use crate::lines::{Line, LineBuffer, MAX_LINE};
use crate::{Checkpoint, DetectionSink, Parser, SourceCounters, SourceError};

/// Bytes read at once, at least (a line or a few appended) ...
const READ_CHUNK: usize = 64 * 1024;
/// ... and at most, when more is waiting: each read is a hop to the blocking pool and back
/// (thread wake-ups that cost more CPU than reading), and a sensor writes EVE in bursts of
/// megabytes (flows and stats at the end of a capture, a backlog after a restart).
const MAX_READ_CHUNK: usize = 1024 * 1024;
/// The safety re-check, when inotify is there.
const RECHECK_EVERY: Duration = Duration::from_secs(2);
/// The poll, when inotify is not.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// A checkpoint with no detection (only skipped or malformed lines read) waits this long for
/// company before it is committed on its own.
const CHECKPOINT_DELAY: Duration = Duration::from_secs(1);
/// ... or until this many lines were handled since the last commit.
const MAX_UNCOMMITTED_LINES: u64 = 10_000;
/// After a new file appeared at the path while it is still empty, the old file is kept for as
/// long as it keeps growing, and this long after (its writer may not have reopened yet).
const ROTATE_QUIET: Duration = Duration::from_secs(2);

const FILE_EVENTS: WatchMask =
    WatchMask::MODIFY.union(WatchMask::ATTRIB).union(WatchMask::MOVE_SELF).union(WatchMask::DELETE_SELF);
/// `MODIFY` too: after a rotation, the new file is written before it is opened and watched.
const DIR_EVENTS: WatchMask = WatchMask::CREATE
    .union(WatchMask::MODIFY)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE);

/// A source that follows one file like `tail -F`.
#[derive(Debug)]
pub struct FileFollower {
    core: Arc<Core>,
    path: PathBuf,
    start: Option<Checkpoint>,
}

impl FileFollower {
    /// A follower of `path`. With `start` (the checkpoint last committed), it goes on where it
    /// stood if the file is still the same one (same inode) and not shorter; otherwise it reads
    /// the file from its start.
    pub fn new(
        source: String,
        path: PathBuf,
        parser: Parser,
        start: Option<Checkpoint>,
        sink: Arc<dyn DetectionSink>,
        counters: Arc<SourceCounters>,
    ) -> Self {
        FileFollower { core: Core::new(source, parser, sink, counters), path, start }
    }

    /// Follows the file until shutdown is asked for (or the sender is dropped). Missing files,
    /// unreadable files and a failing sink are waited out, not returned.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), SourceError> {
        let mut events = match Inotify::init().and_then(|i| i.into_event_stream(vec![0u8; 4096])) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(source = %self.core.name, error = %e, "inotify unavailable; polling the file");
                None
            }
        };
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut f = Follower {
            watches: events.as_ref().map(EventStream::watches),
            core: self.core,
            path: self.path,
            dir,
            dir_watch: None,
            start: self.start,
            cur: None,
            detections: Vec::new(),
            uncommitted: 0,
            flush_at: None,
            rotated_quiet_since: None,
        };
        tracing::info!(source = %f.core.name, path = %f.path.display(), "following file");
        let mut look = true;
        let mut recheck_at = Instant::now();
        loop {
            f.watch_dir();
            if look {
                if f.step(&mut shutdown).await == Flow::Stop {
                    return Ok(());
                }
                recheck_at = Instant::now() + if events.is_some() { RECHECK_EVERY } else { POLL_EVERY };
            }
            let mut deadline = recheck_at;
            if let Some(at) = f.deadline() {
                deadline = deadline.min(at);
            }
            let woke = tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => Wake::Stop,
                ev = next_event(&mut events) => Wake::Event(ev),
                () = tokio::time::sleep_until(deadline) => Wake::Timer,
            };
            look = true;
            match woke {
                Wake::Stop => break,
                Wake::Timer => {}
                Wake::Event(Some(Ok(ev))) => {
                    look = f.concerns(&ev);
                    if let Some(s) = events.as_mut() {
                        look |= drain_ready(s, |ev| f.concerns(ev));
                    }
                }
                Wake::Event(failed) => {
                    let error = match failed {
                        Some(Err(e)) => e.to_string(),
                        _ => "the inotify stream ended".to_owned(),
                    };
                    tracing::warn!(source = %f.core.name, %error, "inotify failed; polling the file");
                    events = None;
                    f.watches = None;
                    f.dir_watch = None;
                }
            }
        }
        // Shutdown: a checkpoint still waiting for company is committed now, once, if it can be.
        if f.uncommitted > 0
            && f.detections.is_empty()
            && let Some(cp) = f.checkpoint()
        {
            f.core.deliver_once(cp).await;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

#[derive(Debug)]
enum Wake {
    Stop,
    Timer,
    Event(Option<io::Result<EventOwned>>),
}

/// The next inotify event, or never when there is no inotify.
async fn next_event(events: &mut Option<EventStream<Vec<u8>>>) -> Option<io::Result<EventOwned>> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Takes the events already queued, so that one look serves them all (a look reads
/// everything: which event it was matters little). True when one of them `concerns` the file.
fn drain_ready(events: &mut EventStream<Vec<u8>>, concerns: impl Fn(&EventOwned) -> bool) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut any = false;
    for _ in 0..1024 {
        match events.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(ev))) => any |= concerns(&ev),
            Poll::Ready(_) => return true,
            Poll::Pending => break,
        }
    }
    any
}

/// The file being read.
#[derive(Debug)]
struct Open {
    file: Arc<File>,
    dev: u64,
    inode: u64,
    /// The next byte to read.
    read_pos: u64,
    /// The offset where `lines` started.
    base: u64,
    lines: LineBuffer,
    watch: Option<WatchDescriptor>,
}

#[derive(Debug)]
struct Follower {
    core: Arc<Core>,
    path: PathBuf,
    dir: PathBuf,
    watches: Option<Watches>,
    dir_watch: Option<WatchDescriptor>,
    /// The checkpoint to start from, until the first file is opened.
    start: Option<Checkpoint>,
    cur: Option<Open>,
    /// Parsed, not delivered yet.
    detections: Vec<Detection>,
    /// Lines handled since the last commit.
    uncommitted: u64,
    /// When the checkpoint of lines with no detection is committed on its own.
    flush_at: Option<Instant>,
    /// Another file is at the path (and still empty): since when the old one has not grown.
    rotated_quiet_since: Option<Instant>,
}

impl Follower {
    /// When the follower wants to be woken up even if nothing happens.
    fn deadline(&self) -> Option<Instant> {
        let rotate = self.rotated_quiet_since.map(|t| t + ROTATE_QUIET);
        match (self.flush_at, rotate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether an event may concern the followed file: in the directory, only its name matters.
    fn concerns(&self, ev: &EventOwned) -> bool {
        self.dir_watch.as_ref() != Some(&ev.wd) || ev.name.as_deref() == self.path.file_name()
    }

    fn watch_dir(&mut self) {
        if self.dir_watch.is_some() {
            return;
        }
        if let Some(w) = self.watches.as_mut() {
            match w.add(&self.dir, DIR_EVENTS) {
                Ok(wd) => self.dir_watch = Some(wd),
                Err(e) => {
                    limited_warn!(&self.core, dir = %self.dir.display(), error = %e, "cannot watch the directory; re-checking");
                }
            }
        }
    }

    /// The checkpoint of what was handled.
    fn checkpoint(&self) -> Option<Checkpoint> {
        self.cur.as_ref().map(|c| Checkpoint {
            path: self.path.clone(),
            inode: c.inode,
            offset: c.base + c.lines.consumed(),
        })
    }

    /// Opens the file at the path, if there is one.
    fn open(&mut self) -> Option<Open> {
        let opened = File::open(&self.path).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let (file, meta) = match opened {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                limited_warn!(&self.core, path = %self.path.display(), error = %e, "cannot open the file; waiting");
                return None;
            }
        };
        if !meta.is_file() {
            limited_warn!(&self.core, path = %self.path.display(), "not a regular file; waiting");
            return None;
        }
        let offset = match self.start.take() {
            Some(cp) if cp.inode == meta.ino() && meta.len() >= cp.offset => cp.offset,
            _ => 0,
        };
        // Watch the open file itself, through its descriptor: the watch stays on this inode
        // whatever happens to the path. The path is the fallback.
        let watch = self.watches.as_mut().and_then(|w| {
            w.add(format!("/proc/self/fd/{}", file.as_raw_fd()), FILE_EVENTS)
                .or_else(|_| w.add(&self.path, FILE_EVENTS))
                .ok()
        });
        tracing::info!(source = %self.core.name, path = %self.path.display(), inode = meta.ino(), offset, "reading file");
        Some(Open {
            file: Arc::new(file),
            dev: meta.dev(),
            inode: meta.ino(),
            read_pos: offset,
            base: offset,
            lines: LineBuffer::new(MAX_LINE),
            watch,
        })
    }

    /// One look at everything: open, read to the end, rotation, truncation, delivery.
    async fn step(&mut self, shutdown: &mut watch::Receiver<bool>) -> Flow {
        loop {
            if self.cur.is_none() {
                match self.open() {
                    Some(o) => self.cur = Some(o),
                    None => return Flow::Go,
                }
            }
            // Looked at before reading, so that the old file is read to its end after a rotation.
            let at_path = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino(), m.len()));
            let read = match self.read_available(shutdown).await {
                Some(n) => n,
                None => return Flow::Stop,
            };
            let Some(cur) = self.cur.as_mut() else {
                return Flow::Go;
            };
            match at_path {
                Some((dev, ino, len)) if (dev, ino) != (cur.dev, cur.inode) => {
                    let now = Instant::now();
                    let since = if read > 0 {
                        *self.rotated_quiet_since.insert(now)
                    } else {
                        *self.rotated_quiet_since.get_or_insert(now)
                    };
                    if len > 0 || now >= since + ROTATE_QUIET {
                        if self.finish_file(shutdown).await == Flow::Stop {
                            return Flow::Stop;
                        }
                        continue;
                    }
                }
                _ => self.rotated_quiet_since = None,
            }
            let Some(cur) = self.cur.as_mut() else {
                return Flow::Go;
            };
            if let Ok(m) = cur.file.metadata()
                && m.len() < cur.read_pos
            {
                tracing::info!(source = %self.core.name, path = %self.path.display(), size = m.len(), offset = cur.read_pos, "file truncated; reading it again from its start");
                if !self.detections.is_empty() && self.commit(shutdown).await == Flow::Stop {
                    return Flow::Stop;
                }
                let Some(cur) = self.cur.as_mut() else {
                    return Flow::Go;
                };
                cur.read_pos = 0;
                cur.base = 0;
                cur.lines = LineBuffer::new(MAX_LINE);
                self.uncommitted = 0;
                self.flush_at = None;
                continue;
            }
            break;
        }
        if !self.detections.is_empty() {
            return self.commit(shutdown).await;
        }
        if self.uncommitted > 0 {
            let now = Instant::now();
            let at = *self.flush_at.get_or_insert(now + CHECKPOINT_DELAY);
            if now >= at {
                return self.commit(shutdown).await;
            }
        }
        Flow::Go
    }

    /// Reads the open file to its end, handling the lines. `None` on shutdown, else the bytes read.
    async fn read_available(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<u64> {
        let mut total = 0;
        loop {
            if is_shutdown(shutdown) {
                return None;
            }
            let Some(cur) = self.cur.as_ref() else {
                return Some(total);
            };
            let (file, pos) = (cur.file.clone(), cur.read_pos);
            let data = match tokio::task::spawn_blocking(move || read_at(&file, pos)).await {
                Ok(Ok(data)) => data,
                Ok(Err(e)) => {
                    limited_warn!(&self.core, path = %self.path.display(), error = %e, "cannot read the file; retrying");
                    return Some(total);
                }
                Err(e) => {
                    limited_warn!(&self.core, error = %e, "read task failed; retrying");
                    return Some(total);
                }
            };
            if data.is_empty() {
                return Some(total);
            }
            let n = data.len() as u64;
            total += n;
            self.core.counters.add_bytes(n);
            if let Some(cur) = self.cur.as_mut() {
                cur.read_pos += n;
                cur.lines.push(&data);
            }
            if self.handle_lines(now_us(), shutdown).await == Flow::Stop {
                return None;
            }
        }
    }

    /// Parses the complete lines buffered, delivering whenever a batch is full.
    async fn handle_lines(&mut self, received_at_us: i64, shutdown: &mut watch::Receiver<bool>) -> Flow {
        loop {
            let Some(cur) = self.cur.as_mut() else {
                return Flow::Go;
            };
            match cur.lines.next_line() {
                None => return Flow::Go,
                Some(Line::TooLong) => {
                    self.core.refused(&format!("line longer than {MAX_LINE} bytes"));
                }
                Some(Line::Complete(line)) => {
                    if !line.is_empty()
                        && let Some(d) = self.core.parse(line, received_at_us)
                    {
                        self.detections.push(d);
                    }
                }
            }
            self.uncommitted += 1;
            if (self.detections.len() >= crate::core::MAX_BATCH || self.uncommitted >= MAX_UNCOMMITTED_LINES)
                && self.commit(shutdown).await == Flow::Stop
            {
                return Flow::Stop;
            }
        }
    }

    /// The old file is finished (another is at the path): its unterminated rest is its last
    /// line; what it gave is delivered; then it is closed.
    async fn finish_file(&mut self, shutdown: &mut watch::Receiver<bool>) -> Flow {
        if let Some(cur) = self.cur.as_mut()
            && let Some(rest) = cur.lines.take_rest()
        {
            if let Some(d) = self.core.parse(&rest, now_us()) {
                self.detections.push(d);
            }
            self.uncommitted += 1;
        }
        if !self.detections.is_empty() && self.commit(shutdown).await == Flow::Stop {
            return Flow::Stop;
        }
        // Lines with no detection at the end of the old file need no commit: a checkpoint of
        // the old file is worth nothing once the new one is read.
        self.uncommitted = 0;
        self.flush_at = None;
        self.rotated_quiet_since = None;
        if let Some(cur) = self.cur.take() {
            tracing::info!(source = %self.core.name, path = %self.path.display(), inode = cur.inode, offset = cur.read_pos, "file rotated; old file read to its end");
            if let (Some(w), Some(wd)) = (self.watches.as_mut(), cur.watch) {
                // Fails when the inode is gone already (the watch went with it).
                let _ = w.remove(wd);
            }
        }
        Flow::Go
    }

    /// Delivers the detections parsed with the checkpoint just past the last line handled.
    async fn commit(&mut self, shutdown: &mut watch::Receiver<bool>) -> Flow {
        let Some(cp) = self.checkpoint() else {
            return Flow::Go;
        };
        let detections = std::mem::take(&mut self.detections);
        match self.core.deliver(detections, Some(cp), shutdown).await {
            Delivered::Yes => {
                self.uncommitted = 0;
                self.flush_at = None;
                Flow::Go
            }
            Delivered::ShutDown => Flow::Stop,
        }
    }
}

/// Reads what the file holds past `pos`, [`READ_CHUNK`] to [`MAX_READ_CHUNK`] bytes (empty at
/// the end of the file).
fn read_at(file: &File, pos: u64) -> io::Result<Vec<u8>> {
    let waiting = file.metadata().map_or(0, |m| m.len().saturating_sub(pos));
    let chunk = usize::try_from(waiting).unwrap_or(MAX_READ_CHUNK).clamp(READ_CHUNK, MAX_READ_CHUNK);
    let mut buf = vec![0u8; chunk];
    loop {
        match file.read_at(&mut buf, pos) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The file is watched through its descriptor: the watch is on the inode, not the path.
    #[test]
    fn a_watch_through_the_descriptor_follows_the_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let mut inotify = Inotify::init().unwrap();
        let wd = inotify.watches().add(format!("/proc/self/fd/{}", file.as_raw_fd()), FILE_EVENTS).unwrap();
        std::fs::rename(&path, dir.path().join("g")).unwrap();
        std::fs::write(&path, b"another file at the path\n").unwrap();
        file.write_all(b"x\n").unwrap();
        let mut buf = [0u8; 4096];
        let mut masks = Vec::new();
        while masks.len() < 2 {
            for ev in inotify.read_events_blocking(&mut buf).unwrap() {
                assert_eq!(ev.wd, wd);
                masks.push(ev.mask);
            }
        }
        assert_eq!(masks, [inotify::EventMask::MOVE_SELF, inotify::EventMask::MODIFY]);
    }
}
