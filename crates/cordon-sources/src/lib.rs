//! Sources as running tasks: files followed, sockets listened on.
//!
//! A source reads bytes (an EVE file followed like `tail -F`, a Suricata `unix_stream` socket,
//! syslog over UDP or TCP), cuts them into lines or messages, hands each to a [`Parser`] and
//! delivers what it made to a [`DetectionSink`] in batches, counting everything in its
//! [`SourceCounters`].
//!
//! Architecture invariants:
//! - No unbounded queue anywhere: a source awaits each delivery before it reads on, so a slow
//!   sink slows the reading (files wait on disk, sockets fill their kernel buffers).
//! - A followed file's [`Checkpoint`] travels in the same [`Batch`] as the detections read before
//!   it, and a source never moves past lines whose batch was not delivered: after a crash, the
//!   stored checkpoint says exactly where to go on, so every line is delivered once.
//! - A line or frame is bounded (1 MiB, 64 KiB for syslog over TCP): what is longer is counted
//!   as rejected and skipped, never buffered without bound.

mod core;
mod counters;
mod file;
mod lines;
mod rate;
mod stream;
mod syslog;
mod unix;

use std::path::PathBuf;
use std::sync::Arc;

pub use counters::{CounterSnapshot, Denied, SourceCounters, render_metrics};
pub use file::FileFollower;
pub use rate::RateLimiter;
pub use syslog::{BoundTcp, BoundUdp, DEFAULT_IDLE_TIMEOUT, MAX_FRAME, SyslogTcpSource, SyslogUdpSource};
pub use unix::{DEFAULT_MAX_CONNECTIONS, UnixStreamSource};

/// A parser of one line (EVE) or one message (syslog datagram / TCP frame).
pub type Parser = Arc<dyn Fn(&[u8], &cordon_ingest::Context<'_>) -> cordon_model::Parsed + Send + Sync>;

/// Where a followed file stands: stored by the sink in the SAME transaction as the detections
/// read before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The followed path (as configured).
    pub path: PathBuf,
    /// The inode of the file that was read.
    pub inode: u64,
    /// The offset just past the last line that was handled.
    pub offset: u64,
}

/// What a source delivers at once.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The configured source name.
    pub source: String,
    /// The detections, in the order read. May be empty (a checkpoint-only batch).
    pub detections: Vec<cordon_model::Detection>,
    /// For a followed file, where it stands once this batch is committed; `None` for sockets.
    pub checkpoint: Option<Checkpoint>,
}

/// A sink that could not commit a batch.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where batches go (the engine: the store, then the policy).
#[async_trait::async_trait]
pub trait DetectionSink: Send + Sync + std::fmt::Debug {
    /// Commits the batch durably (detections and checkpoint together) or fails; sources retry
    /// with backoff on failure, never skip.
    async fn deliver(&self, batch: Batch) -> Result<(), SinkError>;
}

/// Why a source could not start (or go on).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A socket could not be bound; `target` names the address or path.
    #[error("cannot bind {target}: {source}")]
    Bind {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// A path that should be a socket (stale, to be replaced) is something else.
    #[error("{path}: exists and is not a socket; not removing it")]
    NotASocket { path: PathBuf },
    /// Another I/O failure; `context` says on what.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
