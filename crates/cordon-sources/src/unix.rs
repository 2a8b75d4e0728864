//! Suricata's `filetype: unix_stream`: Cordon listens on a Unix socket, Suricata connects and
//! writes NDJSON (one EVE event per line).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::core::{Core, limited_warn, shutdown_requested};
use crate::lines::{LineBuffer, MAX_LINE};
use crate::stream::Connections;
use crate::{DetectionSink, Parser, SourceCounters, SourceError};

/// The default cap on connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// A Unix stream socket that sensors connect to and write lines on.
#[derive(Debug)]
pub struct UnixStreamSource {
    core: Arc<Core>,
    socket_path: PathBuf,
    max_connections: usize,
}

impl UnixStreamSource {
    pub fn new(
        source: String,
        socket_path: PathBuf,
        parser: Parser,
        sink: Arc<dyn DetectionSink>,
        counters: Arc<SourceCounters>,
    ) -> Self {
        UnixStreamSource {
            core: Core::new(source, parser, sink, counters),
            socket_path,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Caps the connections open at once (default 256); more are refused and counted.
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// At most `per_second` lines per second: past it, the source reads more slowly and the
    /// writer blocks (nothing is dropped).
    #[must_use]
    pub fn with_max_rate(self, per_second: u32) -> Self {
        let _ = self.core.limiter.set(crate::RateLimiter::new(per_second));
        self
    }

    /// Replaces a stale socket file, binds (mode 0660), serves connections until shutdown,
    /// then removes the socket file.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), SourceError> {
        let path = &self.socket_path;
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path)
            .map_err(|source| SourceError::Bind { target: path.display().to_string(), source })?;
        // Ours: removed at shutdown only if it is still this one.
        let ours = std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
        if let Err(source) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)) {
            let _ = std::fs::remove_file(path);
            return Err(SourceError::Io { context: format!("{}: chmod 0660", path.display()), source });
        }
        tracing::info!(source = %self.core.name, path = %path.display(), "listening on unix socket");
        let mut conns = Connections::new(self.core.clone(), self.max_connections, None);
        loop {
            tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => break,
                () = conns.reap() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.admit(stream, format!("unix:{}", path.display()), LineBuffer::new(MAX_LINE), shutdown.clone());
                    }
                    Err(e) => {
                        // Out of descriptors, most likely: wait a little rather than spin.
                        limited_warn!(&self.core, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        let still_ours = std::fs::symlink_metadata(path)
            .is_ok_and(|m| Some((m.dev(), m.ino())) == ours && m.file_type().is_socket());
        if still_ours && let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(source = %self.core.name, path = %path.display(), error = %e, "cannot remove the socket file");
        }
        conns.close().await;
        Ok(())
    }
}

/// Removes a stale socket file at `path`, if there is one. A socket that another process still
/// listens on, or anything else than a socket, is an error.
fn remove_stale_socket(path: &Path) -> Result<(), SourceError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SourceError::Bind {
                    target: path.display().to_string(),
                    source: io::Error::new(io::ErrorKind::AddrInUse, "another process is listening on this socket"),
                });
            }
            std::fs::remove_file(path).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(SourceError::Io {
                        context: format!("{}: removing the stale socket", path.display()),
                        source: e,
                    })
                }
            })
        }
        Ok(_) => Err(SourceError::NotASocket { path: path.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SourceError::Io { context: path.display().to_string(), source }),
    }
}
