//! Socket sources on a Unix socket in a temporary directory and on 127.0.0.1.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{RecordingSink, alerts, eventually, parser, text};
use cordon_sources::{
    Denied, SourceCounters, SourceError, SyslogTcpSource, SyslogUdpSource, UnixStreamSource, render_metrics,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

type Task = JoinHandle<Result<(), SourceError>>;

async fn stop(tx: watch::Sender<bool>, task: Task) {
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the source stops promptly").unwrap().unwrap();
}

fn unix_source(path: &Path, sink: &Arc<RecordingSink>) -> (UnixStreamSource, Arc<SourceCounters>) {
    let counters = Arc::new(SourceCounters::default());
    let source =
        UnixStreamSource::new("ids-sock".to_owned(), path.to_path_buf(), parser(), sink.clone(), counters.clone());
    (source, counters)
}

async fn connect(path: &Path) -> UnixStream {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return s,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "cannot connect: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::test]
async fn unix_socket_serves_concurrent_writers_and_is_removed_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eve.sock");
    // A stale socket from a previous run: replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());

    let sink = RecordingSink::new();
    let (source, counters) = unix_source(&path, &sink);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(source.run(rx));

    let mut a = connect(&path).await;
    let mut b = connect(&path).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let lines_a = text(&alerts("a", 0..500));
    let lines_b = text(&alerts("b", 0..500));
    // Interleaved writes in pieces that split lines; both connections open at once.
    let writer_a = async {
        for chunk in lines_a.as_bytes().chunks(777) {
            a.write_all(chunk).await.unwrap();
            tokio::task::yield_now().await;
        }
        a.write_all(b"skip\nnonsense\n").await.unwrap();
        a
    };
    let writer_b = async {
        for chunk in lines_b.as_bytes().chunks(1001) {
            b.write_all(chunk).await.unwrap();
            tokio::task::yield_now().await;
        }
        b
    };
    let (a, b) = tokio::join!(writer_a, writer_b);
    eventually("1000 detections", || sink.raws().len() == 1000).await;
    let got: BTreeSet<String> = sink.raws().into_iter().collect();
    let mut want: BTreeSet<String> = alerts("a", 0..500).into_iter().collect();
    want.extend(alerts("b", 0..500));
    assert_eq!(got, want);
    // Each connection in its own order.
    let from_a: Vec<String> = sink.raws().into_iter().filter(|r| r.contains(" a-")).collect();
    assert_eq!(from_a, alerts("a", 0..500));
    assert!(sink.batches().iter().all(|b| b.checkpoint.is_none() && b.source == "ids-sock"));

    eventually("the counters", || counters.snapshot().rejected == 1).await;
    let s = counters.snapshot();
    assert_eq!((s.received, s.accepted, s.skipped, s.rejected), (1002, 1000, 1, 1));
    assert_eq!((s.connections, s.connections_open), (2, 2));
    assert_eq!(s.bytes, (lines_a.len() + lines_b.len() + "skip\nnonsense\n".len()) as u64);

    drop(a);
    eventually("a connection closed", || counters.snapshot().connections_open == 1).await;
    stop(tx, task).await;
    drop(b);
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn unix_socket_refuses_to_replace_a_file_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eve.sock");
    std::fs::write(&path, "precious").unwrap();
    let sink = RecordingSink::new();
    let (source, _) = unix_source(&path, &sink);
    let (_tx, rx) = watch::channel(false);
    let err = tokio::time::timeout(Duration::from_secs(5), source.run(rx)).await.unwrap().unwrap_err();
    assert!(matches!(err, SourceError::NotASocket { .. }), "{err}");
    assert!(err.to_string().contains("eve.sock"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test]
async fn unix_socket_in_use_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eve.sock");
    let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let sink = RecordingSink::new();
    let (source, _) = unix_source(&path, &sink);
    let (_tx, rx) = watch::channel(false);
    let err = tokio::time::timeout(Duration::from_secs(5), source.run(rx)).await.unwrap().unwrap_err();
    assert!(matches!(err, SourceError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("another process is listening"), "{err}");
    assert!(path.exists());
}

#[tokio::test]
async fn unix_socket_bind_failure_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("eve.sock");
    let sink = RecordingSink::new();
    let (source, _) = unix_source(&path, &sink);
    let (_tx, rx) = watch::channel(false);
    let err = tokio::time::timeout(Duration::from_secs(5), source.run(rx)).await.unwrap().unwrap_err();
    assert!(matches!(err, SourceError::Bind { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("missing-dir/eve.sock") && msg.contains("No such file"), "{msg}");
}

#[tokio::test]
async fn unix_socket_rejects_an_oversize_line_and_keeps_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eve.sock");
    let sink = RecordingSink::new();
    let (source, counters) = unix_source(&path, &sink);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(source.run(rx));
    let mut c = connect(&path).await;
    c.write_all(b"alert 10.0.0.1 a\n").await.unwrap();
    c.write_all(&vec![b'x'; 1024 * 1024 + 1]).await.unwrap();
    c.write_all(b"\nalert 10.0.0.1 b\n").await.unwrap();
    eventually("two detections", || sink.raws().len() == 2).await;
    assert_eq!(sink.raws(), ["alert 10.0.0.1 a", "alert 10.0.0.1 b"]);
    let s = counters.snapshot();
    assert_eq!((s.received, s.rejected), (3, 1));
    stop(tx, task).await;
}

fn udp_source(sink: &Arc<RecordingSink>) -> (SyslogUdpSource, Arc<SourceCounters>) {
    let counters = Arc::new(SourceCounters::default());
    let source = SyslogUdpSource::new(
        "syslog-udp".to_owned(),
        "127.0.0.1:0".parse().unwrap(),
        parser(),
        sink.clone(),
        counters.clone(),
    );
    (source, counters)
}

#[tokio::test]
async fn udp_datagrams_are_messages() {
    let sink = RecordingSink::new();
    let (source, counters) = udp_source(&sink);
    let bound = source.bind().await.unwrap();
    let addr = bound.local_addr();
    assert_ne!(addr.port(), 0);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut bytes = 0;
    for msg in ["alert 10.0.0.1 u-0\n", "skip dns", "garbage", "alert 10.0.0.2 u-1\r\n", "\n"] {
        client.send_to(msg.as_bytes(), addr).await.unwrap();
        bytes += msg.len();
    }
    eventually("two detections", || sink.raws().len() == 2).await;
    assert_eq!(sink.raws(), ["alert 10.0.0.1 u-0", "alert 10.0.0.2 u-1"]);
    eventually("the counters", || counters.snapshot().bytes == bytes as u64).await;
    let s = counters.snapshot();
    assert_eq!((s.received, s.accepted, s.skipped, s.rejected), (4, 2, 1, 1));
    stop(tx, task).await;

    // The port is in use now by `client`: binding it fails and says which address.
    let taken = client.local_addr().unwrap();
    let counters = Arc::new(SourceCounters::default());
    let source = SyslogUdpSource::new("x".to_owned(), taken, parser(), sink.clone(), counters);
    let err = source.bind().await.unwrap_err();
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
}

fn tcp_source(sink: &Arc<RecordingSink>) -> (SyslogTcpSource, Arc<SourceCounters>) {
    let counters = Arc::new(SourceCounters::default());
    let source = SyslogTcpSource::new(
        "syslog-tcp".to_owned(),
        "127.0.0.1:0".parse().unwrap(),
        parser(),
        sink.clone(),
        counters.clone(),
    );
    (source, counters)
}

#[tokio::test]
async fn tcp_frames_both_ways_and_skips_an_oversize_frame() {
    let sink = RecordingSink::new();
    let (source, counters) = tcp_source(&sink);
    let bound = source.bind().await.unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));

    let mut c = TcpStream::connect(addr).await.unwrap();
    // Non-transparent framing, then octet counting, then an oversize frame of each kind.
    c.write_all(b"alert 10.0.0.1 t-0\nalert 10.0.0.1 t-1\r\n").await.unwrap();
    let framed = "alert 10.0.0.1 t-2";
    c.write_all(format!("{} {framed}", framed.len()).as_bytes()).await.unwrap();
    c.write_all(format!("{} ", 70_000).as_bytes()).await.unwrap();
    c.write_all(&vec![b'y'; 70_000]).await.unwrap();
    c.write_all(&vec![b'z'; 70_000]).await.unwrap();
    c.write_all(b"\nalert 10.0.0.1 t-3\n").await.unwrap();
    // The last frame, unterminated, is taken at the end of the stream.
    c.write_all(b"alert 10.0.0.1 t-4").await.unwrap();
    c.shutdown().await.unwrap();
    eventually("five detections", || sink.raws().len() == 5).await;
    let want: Vec<String> = (0..5).map(|i| format!("alert 10.0.0.1 t-{i}")).collect();
    assert_eq!(sink.raws(), want);
    eventually("the connection closed", || counters.snapshot().connections_open == 0).await;
    let s = counters.snapshot();
    assert_eq!((s.received, s.accepted, s.rejected, s.connections), (7, 5, 2, 1));
    stop(tx, task).await;
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_refused_and_idle_ones_closed() {
    let sink = RecordingSink::new();
    let (source, counters) = tcp_source(&sink);
    let bound = source.with_max_connections(1).with_idle_timeout(Duration::from_millis(500)).bind().await.unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));

    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"alert 10.0.0.1 first\n").await.unwrap();
    eventually("the first connection's frame", || sink.raws().len() == 1).await;

    // The second is closed at once: reading gives the end of the stream (or a reset).
    let mut second = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let s = counters.snapshot();
    assert_eq!((s.connections, s.connections_refused, s.rejected), (1, 1, 1));

    // The first goes idle and is closed; then there is room again.
    let n = tokio::time::timeout(Duration::from_secs(3), first.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0)), "{n:?}");
    eventually("the idle connection closed", || counters.snapshot().connections_open == 0).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(b"13 alert 1.2.3.4").await.unwrap();
    eventually("the third connection's frame", || sink.raws().len() == 2).await;
    assert_eq!(sink.raws()[1], "alert 1.2.3.4");
    stop(tx, task).await;
    // Shutdown closed the open connection.
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test]
async fn metrics_render_every_source() {
    let sink = RecordingSink::new();
    let (source, udp) = udp_source(&sink);
    let bound = source.bind().await.unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for msg in ["alert 10.0.0.1 m", "skip flow", "skip flow", "skip dns", "bad"] {
        client.send_to(msg.as_bytes(), addr).await.unwrap();
    }
    eventually("five messages", || udp.snapshot().received == 5).await;
    eventually("the detection", || udp.snapshot().accepted == 1).await;
    stop(tx, task).await;
    let idle = Arc::new(SourceCounters::default());
    let text = render_metrics(&[("ids-1".to_owned(), idle), ("syslog-udp".to_owned(), udp)]);
    let expected = r#"# HELP cordon_source_received_total Lines or messages read by the source.
# TYPE cordon_source_received_total counter
cordon_source_received_total{source="ids-1"} 0
cordon_source_received_total{source="syslog-udp"} 5
# HELP cordon_source_accepted_total Detections delivered to the engine.
# TYPE cordon_source_accepted_total counter
cordon_source_accepted_total{source="ids-1"} 0
cordon_source_accepted_total{source="syslog-udp"} 1
# HELP cordon_source_skipped_total Well-formed events not acted on, by kind.
# TYPE cordon_source_skipped_total counter
cordon_source_skipped_total{source="syslog-udp",kind="dns"} 1
cordon_source_skipped_total{source="syslog-udp",kind="flow"} 2
# HELP cordon_source_rejected_total Malformed input, lines or frames too long, and connections refused.
# TYPE cordon_source_rejected_total counter
cordon_source_rejected_total{source="ids-1"} 0
cordon_source_rejected_total{source="syslog-udp"} 1
# HELP cordon_source_denied_total Input refused because of who sent it, by reason (peer, auth, replay, rate_limit).
# TYPE cordon_source_denied_total counter
cordon_source_denied_total{source="ids-1",reason="peer"} 0
cordon_source_denied_total{source="ids-1",reason="auth"} 0
cordon_source_denied_total{source="ids-1",reason="replay"} 0
cordon_source_denied_total{source="ids-1",reason="rate_limit"} 0
cordon_source_denied_total{source="syslog-udp",reason="peer"} 0
cordon_source_denied_total{source="syslog-udp",reason="auth"} 0
cordon_source_denied_total{source="syslog-udp",reason="replay"} 0
cordon_source_denied_total{source="syslog-udp",reason="rate_limit"} 0
# HELP cordon_source_bytes_total Bytes read by the source.
# TYPE cordon_source_bytes_total counter
cordon_source_bytes_total{source="ids-1"} 0
cordon_source_bytes_total{source="syslog-udp"} 45
# HELP cordon_source_delivery_failures_total Deliveries to the engine that failed (and were retried).
# TYPE cordon_source_delivery_failures_total counter
cordon_source_delivery_failures_total{source="ids-1"} 0
cordon_source_delivery_failures_total{source="syslog-udp"} 0
# HELP cordon_source_connections_total Connections accepted by the source.
# TYPE cordon_source_connections_total counter
cordon_source_connections_total{source="ids-1"} 0
cordon_source_connections_total{source="syslog-udp"} 0
# HELP cordon_source_open_connections Connections open now.
# TYPE cordon_source_open_connections gauge
cordon_source_open_connections{source="ids-1"} 0
cordon_source_open_connections{source="syslog-udp"} 0
"#;
    assert_eq!(text, expected);
}

#[tokio::test]
async fn syslog_peers_outside_allowed_peers_are_refused_and_counted() {
    // UDP: a source that only accepts 10.0.0.0/8 refuses loopback datagrams.
    let sink = RecordingSink::new();
    let (source, counters) = udp_source(&sink);
    let bound = source.with_allowed_peers(vec!["10.0.0.0/8".parse().unwrap()]).bind().await.unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(b"alert 10.0.0.1 refused", addr).await.unwrap();
    eventually("the refusal", || counters.snapshot().rejected == 1).await;
    assert_eq!(counters.snapshot().denied(Denied::Peer), 1);
    assert!(sink.raws().is_empty());
    stop(tx, task).await;

    // The same source allowing loopback accepts it.
    let (source, counters) = udp_source(&sink);
    let bound = source.with_allowed_peers(vec!["127.0.0.0/8".parse().unwrap()]).bind().await.unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));
    client.send_to(b"alert 10.0.0.1 allowed", addr).await.unwrap();
    eventually("the detection", || sink.raws().len() == 1).await;
    assert_eq!(counters.snapshot().rejected, 0);
    stop(tx, task).await;

    // TCP: a refused peer's connection is closed at once and counted.
    let sink = RecordingSink::new();
    let (source, counters) = tcp_source(&sink);
    let bound = source.with_allowed_peers(vec!["192.0.2.0/24".parse().unwrap()]).bind().await.unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(b"alert 10.0.0.1 refused\n").await;
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection is closed: {read:?}");
    eventually("the refusal", || counters.snapshot().rejected == 1).await;
    assert_eq!(counters.snapshot().denied(Denied::Peer), 1);
    assert!(sink.raws().is_empty());
    stop(tx, task).await;
}

#[tokio::test]
async fn udp_over_max_rate_is_dropped_and_counted_tcp_is_slowed_not_dropped() {
    // UDP: 5 per second; 20 datagrams at once: the burst passes, the rest is denied.
    let sink = RecordingSink::new();
    let (source, counters) = udp_source(&sink);
    let bound = source.with_max_rate(5).bind().await.unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..20 {
        client.send_to(format!("alert 10.0.0.{i} burst").as_bytes(), addr).await.unwrap();
    }
    eventually("all 20 counted", || counters.snapshot().received == 20).await;
    let snapshot = counters.snapshot();
    let denied = snapshot.denied(Denied::RateLimit);
    assert!(denied >= 10, "most of the burst past 5 is denied: {snapshot:?}");
    eventually("the admitted ones delivered", || sink.raws().len() as u64 == 20 - denied).await;
    stop(tx, task).await;

    // TCP: 50 per second; 120 lines in one write all arrive (the reader waits, TCP pushes back).
    let sink = RecordingSink::new();
    let (source, counters) = tcp_source(&sink);
    let bound = source.with_max_rate(50).bind().await.unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bound.run(rx));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let lines: String = (0..120).map(|i| format!("alert 10.0.1.{} paced\n", i % 250)).collect();
    use tokio::io::AsyncWriteExt;
    stream.write_all(lines.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    eventually("all 120 delivered", || sink.raws().len() == 120).await;
    assert_eq!(counters.snapshot().denied(Denied::RateLimit), 0, "nothing dropped on a stream");
    stop(tx, task).await;
}
