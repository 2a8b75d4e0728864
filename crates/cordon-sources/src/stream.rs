//! Connections: a cap on how many are open, and each one read, cut, parsed and delivered.

use std::sync::Arc;
use std::time::Duration;

use cordon_ingest::syslog::FrameDecoder;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::core::{Core, Delivered, MAX_BATCH, limited_warn, now_us, shutdown_requested};
use crate::lines::{Line, LineBuffer, MAX_LINE};

/// Bytes read at once from a connection.
const READ_CHUNK: usize = 64 * 1024;

/// One unit cut from a stream: a line or frame, or why one was refused.
pub(crate) type Unit<'a> = Result<&'a [u8], String>;

/// Cuts a byte stream into lines or frames.
pub(crate) trait Cutter: Send + 'static {
    /// Adds bytes read; calls `each` for every unit now complete.
    fn feed(&mut self, bytes: &[u8], each: &mut dyn FnMut(Unit<'_>));
    /// At the end of the stream: calls `each` for what is left.
    fn finish(&mut self, each: &mut dyn FnMut(Unit<'_>));
}

impl Cutter for LineBuffer {
    fn feed(&mut self, bytes: &[u8], each: &mut dyn FnMut(Unit<'_>)) {
        self.push(bytes);
        while let Some(line) = self.next_line() {
            match line {
                Line::Complete(l) => each(Ok(l)),
                Line::TooLong => each(Err(format!("line longer than {MAX_LINE} bytes"))),
            }
        }
    }

    fn finish(&mut self, each: &mut dyn FnMut(Unit<'_>)) {
        if let Some(rest) = self.take_rest() {
            each(Ok(&rest));
        }
    }
}

impl Cutter for FrameDecoder {
    fn feed(&mut self, bytes: &[u8], each: &mut dyn FnMut(Unit<'_>)) {
        self.push(bytes);
        while let Some(frame) = self.next_frame() {
            match frame {
                Ok(f) => each(Ok(&f)),
                Err(e) => each(Err(e.to_string())),
            }
        }
    }

    fn finish(&mut self, each: &mut dyn FnMut(Unit<'_>)) {
        while let Some(frame) = FrameDecoder::finish(self) {
            match frame {
                Ok(f) => each(Ok(&f)),
                Err(e) => each(Err(e.to_string())),
            }
        }
    }
}

/// The connections of one listening source.
#[derive(Debug)]
pub(crate) struct Connections {
    core: Arc<Core>,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    idle_timeout: Option<Duration>,
}

/// Counts a connection closed however its task ends.
struct OpenGuard(Arc<Core>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.counters.connection_closed();
    }
}

impl Connections {
    pub(crate) fn new(core: Arc<Core>, max: usize, idle_timeout: Option<Duration>) -> Self {
        Connections { core, slots: Arc::new(Semaphore::new(max.max(1))), tasks: JoinSet::new(), idle_timeout }
    }

    /// Serves a new connection in its own task, or refuses it (closes it at once) when the cap
    /// is reached.
    pub(crate) fn admit<R, C>(&mut self, stream: R, peer: String, cutter: C, shutdown: watch::Receiver<bool>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        C: Cutter,
    {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.core.counters.connection_refused();
            limited_warn!(&self.core, %peer, "too many connections; connection refused");
            drop(stream);
            return;
        };
        self.core.counters.connection_opened();
        let core = self.core.clone();
        let idle = self.idle_timeout;
        self.tasks.spawn(async move {
            let _open = OpenGuard(core.clone());
            tracing::debug!(source = %core.name, %peer, "connection opened");
            serve(&core, stream, cutter, idle, shutdown, &peer).await;
            tracing::debug!(source = %core.name, %peer, "connection closed");
            drop(permit);
        });
    }

    /// Waits for a connection task to end (never returns while none is running).
    pub(crate) async fn reap(&mut self) {
        match self.tasks.join_next().await {
            Some(Err(e)) if e.is_panic() => {
                tracing::error!(source = %self.core.name, error = %e, "connection task panicked");
            }
            Some(_) => {}
            None => std::future::pending().await,
        }
    }

    /// Waits for every connection to stop (they stop on shutdown, after their delivery).
    pub(crate) async fn close(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Reads one connection to its end (or idle timeout, or shutdown), delivering what it brings.
async fn serve<R, C>(
    core: &Core,
    mut stream: R,
    mut cutter: C,
    idle: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
    peer: &str,
) where
    R: AsyncRead + Unpin,
    C: Cutter,
{
    let mut buf = vec![0u8; READ_CHUNK];
    let mut detections = Vec::new();
    loop {
        let read = async {
            match idle {
                Some(t) => tokio::time::timeout(t, stream.read(&mut buf)).await.ok(),
                None => Some(stream.read(&mut buf).await),
            }
        };
        let read = tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => return,
            r = read => r,
        };
        let at_end = match read {
            None => {
                tracing::debug!(source = %core.name, %peer, "connection idle too long; closing it");
                true
            }
            Some(Ok(0)) => true,
            Some(Ok(n)) => {
                core.counters.add_bytes(n as u64);
                let received_at = now_us();
                let mut units = 0;
                cutter.feed(&buf[..n], &mut |unit| {
                    units += 1;
                    handle(core, unit, received_at, &mut detections);
                });
                // Over `max_rate`: stop reading for a while; the sender's writes back up.
                let pause = core.pace(units);
                if !pause.is_zero() {
                    tokio::select! {
                        biased;
                        () = shutdown_requested(&mut shutdown) => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                false
            }
            Some(Err(e)) => {
                tracing::debug!(source = %core.name, %peer, error = %e, "connection read failed; closing it");
                true
            }
        };
        if at_end {
            let received_at = now_us();
            cutter.finish(&mut |unit| handle(core, unit, received_at, &mut detections));
        }
        if deliver_all(core, &mut detections, &mut shutdown).await == Delivered::ShutDown || at_end {
            return;
        }
    }
}

/// Parses one unit, or counts its refusal.
pub(crate) fn handle(core: &Core, unit: Unit<'_>, received_at_us: i64, detections: &mut Vec<cordon_model::Detection>) {
    match unit {
        Ok([]) => {}
        Ok(bytes) => {
            if let Some(d) = core.parse(bytes, received_at_us) {
                detections.push(d);
            }
        }
        Err(reason) => core.refused(&reason),
    }
}

/// Delivers the detections in batches of at most [`MAX_BATCH`].
pub(crate) async fn deliver_all(
    core: &Core,
    detections: &mut Vec<cordon_model::Detection>,
    shutdown: &mut watch::Receiver<bool>,
) -> Delivered {
    while !detections.is_empty() {
        let rest = if detections.len() > MAX_BATCH { detections.split_off(MAX_BATCH) } else { Vec::new() };
        let batch = std::mem::replace(detections, rest);
        if core.deliver(batch, None, shutdown).await == Delivered::ShutDown {
            return Delivered::ShutDown;
        }
    }
    Delivered::Yes
}
