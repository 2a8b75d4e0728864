//! Syslog over UDP (one datagram, one message) and TCP (RFC 6587 framing, octet counting or
//! non-transparent, cut by `cordon_ingest::syslog::FrameDecoder`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cordon_ingest::syslog::FrameDecoder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::core::{Core, Delivered, MAX_BATCH, limited_warn, now_us, shutdown_requested};
use crate::stream::{Connections, deliver_all, handle};
use crate::unix::DEFAULT_MAX_CONNECTIONS;
use crate::{DetectionSink, Parser, SourceCounters, SourceError};

/// The longest syslog frame over TCP.
pub const MAX_FRAME: usize = 64 * 1024;
/// A TCP connection that sends nothing for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The largest UDP payload (IPv6 jumbograms aside), plus one byte to see truncation.
const UDP_BUFFER: usize = 65_536;

/// Syslog over UDP, not bound yet.
#[derive(Debug)]
pub struct SyslogUdpSource {
    core: Arc<Core>,
    listen: SocketAddr,
    allowed: AllowedPeers,
}

/// Syslog over UDP, bound: ready to run.
#[derive(Debug)]
pub struct BoundUdp {
    core: Arc<Core>,
    socket: UdpSocket,
    local_addr: SocketAddr,
    allowed: AllowedPeers,
}

impl SyslogUdpSource {
    pub fn new(
        source: String,
        listen: SocketAddr,
        parser: Parser,
        sink: Arc<dyn DetectionSink>,
        counters: Arc<SourceCounters>,
    ) -> Self {
        SyslogUdpSource { core: Core::new(source, parser, sink, counters), listen, allowed: AllowedPeers::default() }
    }

    /// Accepts datagrams only from these networks (empty: from anywhere); others are refused
    /// and counted as rejected.
    #[must_use]
    pub fn with_allowed_peers(mut self, peers: Vec<ipnet::IpNet>) -> Self {
        self.allowed = AllowedPeers(peers);
        self
    }

    /// At most `per_second` datagrams per second (bursts of one second's worth); the others are
    /// dropped and counted (`cordon_source_denied_total{reason="rate_limit"}`, message 41094).
    #[must_use]
    pub fn with_max_rate(self, per_second: u32) -> Self {
        let _ = self.core.limiter.set(crate::RateLimiter::new(per_second));
        self
    }

    /// Binds now, so that a failure (and the real port, for port 0) is known at start.
    pub async fn bind(self) -> Result<BoundUdp, SourceError> {
        let bind_err = |source| SourceError::Bind { target: format!("udp {}", self.listen), source };
        let socket = UdpSocket::bind(self.listen).await.map_err(bind_err)?;
        let local_addr = socket.local_addr().map_err(bind_err)?;
        tracing::info!(source = %self.core.name, %local_addr, "listening for syslog over UDP");
        Ok(BoundUdp { core: self.core, socket, local_addr, allowed: self.allowed })
    }
}

/// The peers a syslog source accepts; empty means any.
#[derive(Debug, Clone, Default)]
struct AllowedPeers(Vec<ipnet::IpNet>);

impl AllowedPeers {
    fn admits(&self, peer: SocketAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match peer.ip() {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(peer.ip()),
            v4 => v4,
        };
        self.0.is_empty() || self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A datagram without its trailing line end (CR, LF, NUL).
fn trim_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n' | b'\0'] = bytes {
        bytes = rest;
    }
    bytes
}

impl BoundUdp {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Receives datagrams until shutdown: each one is parsed; what arrived together is
    /// delivered together (at most [`MAX_BATCH`] datagrams at a time). While a delivery is
    /// awaited, datagrams wait in the kernel's buffer (and are dropped by it when it is full).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), SourceError> {
        let core = &self.core;
        let mut buf = vec![0u8; UDP_BUFFER];
        let mut detections = Vec::new();
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => return Ok(()),
                r = self.socket.recv_from(&mut buf) => r,
            };
            let mut next = Some(first);
            let mut taken = 0;
            let received_at = now_us();
            while let Some(r) = next.take() {
                match r {
                    Ok((n, peer)) => {
                        taken += 1;
                        core.counters.add_bytes(n as u64);
                        if !self.allowed.admits(peer) {
                            core.denied(
                                crate::Denied::Peer,
                                &format!("datagram from {peer}, which is not in allowed_peers"),
                            );
                        } else if !core.admit_one() {
                            // Over max_rate: dropped and counted by `admit_one`.
                        } else if n == UDP_BUFFER {
                            core.refused(&format!("datagram from {peer} truncated"));
                        } else {
                            handle(core, Ok(trim_end(&buf[..n])), received_at, &mut detections);
                        }
                    }
                    Err(e) => {
                        limited_warn!(core, error = %e, "UDP receive failed");
                    }
                }
                if taken < MAX_BATCH {
                    match self.socket.try_recv_from(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        r => next = Some(r),
                    }
                }
            }
            if deliver_all(core, &mut detections, &mut shutdown).await == Delivered::ShutDown {
                return Ok(());
            }
        }
    }
}

/// Syslog over TCP, not bound yet.
#[derive(Debug)]
pub struct SyslogTcpSource {
    core: Arc<Core>,
    listen: SocketAddr,
    idle_timeout: Duration,
    max_connections: usize,
    allowed: AllowedPeers,
}

/// Syslog over TCP, bound: ready to run.
#[derive(Debug)]
pub struct BoundTcp {
    core: Arc<Core>,
    listener: TcpListener,
    local_addr: SocketAddr,
    idle_timeout: Duration,
    max_connections: usize,
    allowed: AllowedPeers,
}

impl SyslogTcpSource {
    pub fn new(
        source: String,
        listen: SocketAddr,
        parser: Parser,
        sink: Arc<dyn DetectionSink>,
        counters: Arc<SourceCounters>,
    ) -> Self {
        SyslogTcpSource {
            core: Core::new(source, parser, sink, counters),
            listen,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allowed: AllowedPeers::default(),
        }
    }

    /// Accepts connections only from these networks (empty: from anywhere); others are closed
    /// at once and counted as rejected.
    #[must_use]
    pub fn with_allowed_peers(mut self, peers: Vec<ipnet::IpNet>) -> Self {
        self.allowed = AllowedPeers(peers);
        self
    }

    /// At most `per_second` messages per second: past it, the source reads more slowly and TCP
    /// pushes back on the sender (nothing is dropped).
    #[must_use]
    pub fn with_max_rate(self, per_second: u32) -> Self {
        let _ = self.core.limiter.set(crate::RateLimiter::new(per_second));
        self
    }

    /// Closes a connection that sends nothing for this long (default 5 min).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Caps the connections open at once (default 256); more are refused and counted.
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Binds now, so that a failure (and the real port, for port 0) is known at start.
    pub async fn bind(self) -> Result<BoundTcp, SourceError> {
        let bind_err = |source| SourceError::Bind { target: format!("tcp {}", self.listen), source };
        let listener = TcpListener::bind(self.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        tracing::info!(source = %self.core.name, %local_addr, "listening for syslog over TCP");
        Ok(BoundTcp {
            core: self.core,
            listener,
            local_addr,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            allowed: self.allowed,
        })
    }
}

impl BoundTcp {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves connections until shutdown, each framed by its own `FrameDecoder` (64 KiB
    /// frames); then waits for the connections to stop.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), SourceError> {
        let mut conns = Connections::new(self.core.clone(), self.max_connections, Some(self.idle_timeout));
        loop {
            tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => break,
                () = conns.reap() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((_, peer)) if !self.allowed.admits(peer) => {
                        self.core.denied(crate::Denied::Peer, &format!("connection from {peer}, which is not in allowed_peers"));
                    }
                    Ok((stream, peer)) => {
                        conns.admit(stream, peer.to_string(), FrameDecoder::new(MAX_FRAME), shutdown.clone());
                    }
                    Err(e) => {
                        limited_warn!(&self.core, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(self.listener);
        conns.close().await;
        Ok(())
    }
}
