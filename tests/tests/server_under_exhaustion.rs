//! A server under connection exhaustion keeps its calls: hundreds of
//! silent TCP connections, request heads sent a byte at a time, WebSocket
//! upgrades that never join, and more connections from one address than
//! its cap allows, and more silent connections opened all through the
//! call, while two members join and talk on the same server.
//! The call decrypts at least 95 % of its frames, `/healthz` answers,
//! every bad connection is closed (at accept, at the handshake timeout or
//! at the join timeout), and `/metrics` counts each kind.
//!
//! Each attacking group comes from its own loopback address (127.0.0.2-6),
//! so the per-address cap sees them apart from the call's members
//! (127.0.0.1). Timeouts are hang guards; measured times are printed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hush::local::LocalServer;
use hush_proto::ServerSecret;
use hush_signaling::Limits;
use hush_tests::{assert_heard_each_other, join, spec, stats, until_decrypted};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// Connections per attacking group.
const PER_GROUP: usize = 90;
/// Connections from the address that goes over its cap.
const OVER_CAP: usize = 150;
/// The per-address cap the server runs with.
const ADDRESS_CAP: usize = 100;
/// Silent connections opened every 50 ms while the call is measured.
const CHURN_BATCH: usize = 5;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A TCP connection to `server` from the loopback address `127.0.0.last`.
async fn connect_from(last: u8, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
        .expect("bind a loopback source");
    socket.connect(server).await.expect("connect")
}

/// Reads until the server closes `tcp` (end of file or an error; an
/// answer such as a 408 or a WebSocket close frame may come first);
/// returns when, measured from `since`.
async fn until_closed(mut tcp: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(HANG_GUARD, tcp.read(&mut buf))
            .await
            .expect("hang guard: the server kept a bad connection open")
        {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}

/// A slow-loris client: an endless request head, one byte every 200 ms,
/// until the server closes the connection; returns when, from `since`.
async fn slow_head(tcp: TcpStream, since: Instant) -> Duration {
    let (mut rd, mut wr) = tcp.into_split();
    let writer = async move {
        let head = b"GET /v1/ws HTTP/1.1\r\nHost: hush\r\nX-Padding: ";
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let reader = async move {
        let mut buf = [0u8; 512];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(HANG_GUARD, async {
        tokio::pin!(reader);
        tokio::select! {
            () = writer => (&mut reader).await,
            at = &mut reader => at,
        }
    })
    .await
    .expect("hang guard: a slow request head was never cut off")
}

/// Completes a WebSocket upgrade by hand and then says nothing.
async fn upgraded(mut tcp: TcpStream, server: SocketAddr) -> TcpStream {
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(HANG_GUARD, tcp.read(&mut byte))
            .await
            .expect("hang guard: no upgrade answer")
            .expect("read");
        assert_eq!(n, 1, "closed before the upgrade answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// GET `path` from `server` (status line, body).
async fn http_get(server: SocketAddr, path: &str) -> (String, String) {
    let exchange = async {
        let mut tcp = TcpStream::connect(server).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        )
    };
    tokio::time::timeout(HANG_GUARD, exchange)
        .await
        .expect("hang guard: HTTP GET")
}

/// The value of the metric line starting with `name` (labels included).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_while_hundreds_of_bad_connections_are_shed() {
    let limits = Limits {
        handshake_timeout: HANDSHAKE_TIMEOUT,
        join_timeout: JOIN_TIMEOUT,
        max_connections_per_address: ADDRESS_CAP,
        ..Limits::default()
    };
    let (secret, _) = ServerSecret::generate_development().expect("secret");
    let server = LocalServer::start_custom(secret, limits, hush_sfu::SfuConfig::default())
        .await
        .expect("server");
    let addr: SocketAddr = server
        .url()
        .trim_start_matches("ws://")
        .parse()
        .expect("server address");

    // The attack, all open before the call starts.
    let start = Instant::now();
    let mut silent = Vec::new();
    let mut slow = Vec::new();
    let mut idle = Vec::new();
    let mut over = Vec::new();
    for _ in 0..PER_GROUP {
        silent.push(connect_from(2, addr).await);
        slow.push(tokio::spawn(slow_head(connect_from(3, addr).await, start)));
        idle.push(upgraded(connect_from(4, addr).await, addr).await);
    }
    for _ in 0..OVER_CAP {
        over.push(connect_from(5, addr).await);
    }
    let upgraded_at = Instant::now();
    eprintln!(
        "MEASURE exhaustion: {} bad connections open in {:?}",
        3 * PER_GROUP + OVER_CAP,
        start.elapsed()
    );
    let (status, body) = http_get(addr, "/healthz").await;
    assert!(status.contains("200"), "/healthz under attack: {status}");
    assert_eq!(body.trim(), "ok");

    // The call, on the same server, while the attack is on.
    let a = join(spec(&server, "room", "ann", 440.0)).await;
    let b = join(spec(&server, "room", "bob", 660.0)).await;
    until_decrypted(&a, 5).await;
    until_decrypted(&b, 5).await;
    let (a0, b0) = (stats(&a).await, stats(&b).await);
    // And fresh silent connections all through the measured window, from
    // one more address: over its cap most are refused at accept.
    let churn = tokio::spawn(async move {
        let mut closed = Vec::new();
        let window = Instant::now();
        while window.elapsed() < Duration::from_secs(5) {
            for _ in 0..CHURN_BATCH {
                let tcp = connect_from(6, addr).await;
                closed.push(tokio::spawn(until_closed(tcp, Instant::now())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let opened = closed.len();
        for task in closed {
            task.await.expect("churn");
        }
        opened
    });
    let closers = tokio::spawn(async move {
        let mut silent_at = Vec::new();
        for tcp in silent {
            silent_at.push(until_closed(tcp, start).await);
        }
        let mut over_at = Vec::new();
        for tcp in over {
            over_at.push(until_closed(tcp, start).await);
        }
        let mut idle_at = Vec::new();
        for tcp in idle {
            idle_at.push(until_closed(tcp, upgraded_at).await);
        }
        let mut slow_at = Vec::new();
        for task in slow {
            slow_at.push(task.await.expect("slow writer"));
        }
        (silent_at, over_at, idle_at, slow_at)
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _) = http_get(addr, "/healthz").await;
    assert!(status.contains("200"), "/healthz: {status}");
    let (a1, b1) = (stats(&a).await, stats(&b).await);
    assert_heard_each_other((&a0, &a1), (&b0, &b1), 150);

    // Every bad connection was closed by the server.
    let churned = churn.await.expect("churn");
    let (silent_at, over_at, idle_at, slow_at) = closers.await.expect("closers");
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    eprintln!(
        "MEASURE exhaustion: closed by (latest) silent {:?}, over the cap {:?}, slow heads {:?} \
         (handshake timeout {HANDSHAKE_TIMEOUT:?}); upgraded but never joined {:?} after the \
         last upgrade (join timeout {JOIN_TIMEOUT:?})",
        max(&silent_at),
        max(&over_at),
        max(&slow_at),
        max(&idle_at)
    );
    let (_, metrics) = http_get(addr, "/metrics").await;
    let refused = metric(
        &metrics,
        "hush_signaling_connections_refused_total{reason=\"address_full\"}",
    );
    let handshake = metric(&metrics, "hush_signaling_handshake_timeouts_total");
    let join_timeouts = metric(
        &metrics,
        "hush_signaling_messages_rejected_total{reason=\"join_timeout\"}",
    );
    eprintln!("MEASURE exhaustion: {churned} more silent connections during the call, all closed");
    eprintln!(
        "MEASURE exhaustion: refused at accept {refused}, handshake timeouts {handshake}, \
         join timeouts {join_timeouts}"
    );
    let over_cap = (OVER_CAP - ADDRESS_CAP) as u64;
    assert!(refused >= over_cap, "{refused} refused at accept");
    // Silent, slow and the accepted part of the over-cap group.
    let timed_out = (2 * PER_GROUP + ADDRESS_CAP) as u64;
    assert!(handshake >= timed_out, "{handshake} handshake timeouts");
    assert!(
        join_timeouts >= PER_GROUP as u64,
        "{join_timeouts} join timeouts"
    );
    // The members are still there, and only they.
    assert_eq!(metric(&metrics, "hush_signaling_participants"), 2);
    assert_eq!(metric(&metrics, "hush_signaling_connections"), 2);
    a.stop().await.expect("ann");
    b.stop().await.expect("bob");
    server.stop().await;
}
