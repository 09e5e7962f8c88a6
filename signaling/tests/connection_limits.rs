//! Connections bounded in time and count: a connection that never finishes
//! its HTTP request or WebSocket upgrade is closed after the handshake
//! timeout, and connections over the caps are closed at accept and counted,
//! so one client cannot lock everyone else out.

mod support;

use std::time::Duration;

use hush_signaling::Limits;
use support::{HANG_GUARD, TestServer, http_get};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Waits (hang guard only) until the server closes `tcp`: a read returns
/// end of file or an error, never data.
async fn closed_by_server(tcp: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(HANG_GUARD, tcp.read(&mut buf))
            .await
            .expect("hang guard: the server kept the connection open")
        {
            Ok(0) | Err(_) => return,
            // A 408 or 400 answer before the close is fine; keep reading to the end.
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn silent_and_byte_at_a_time_connections_are_closed_after_the_handshake_timeout() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // A slow-loris client: the request head a byte at a time, never finished
    // within the timeout.
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    let head = b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n";
    let slow_writer = async {
        for b in head {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, slow_writer)
        .await
        .expect("hang guard");
    closed_by_server(&mut slow).await;
    for tcp in &mut silent {
        closed_by_server(tcp).await;
    }
    let timeouts = server
        .metric("hush_signaling_handshake_timeouts_total")
        .await;
    assert!(timeouts >= 21, "{timeouts} handshake timeouts counted");
    // Everyone else is served as before.
    let (status, body) = http_get(server.addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let mut ann = server.join("r", "Ann").await;
    ann.client.send(&hush_signaling::ClientMessage::Leave).await;
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_accept_and_counted() {
    let limits = Limits {
        max_connections_per_address: 3,
        // Only a refusal, not the handshake timeout, can close the fourth in time.
        handshake_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // The listener accepts in arrival order: the fourth is over the cap.
    let mut fourth = TcpStream::connect(server.addr).await.expect("connect");
    closed_by_server(&mut fourth).await;
    // The places come back when the held connections close (the metrics
    // request itself needs one).
    drop(held);
    let refused = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let (status, body) = http_get_lenient(&server).await;
            if status.contains("200") {
                return support::parse_metric(
                    &body,
                    r#"hush_signaling_connections_refused_total{reason="address_full"}"#,
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hang guard: places never came back");
    assert_eq!(refused, 1);
    server.stop().await;
}

/// GET /metrics, or an empty status while the connection is still refused.
async fn http_get_lenient(server: &TestServer) -> (String, String) {
    let Ok(mut tcp) = TcpStream::connect(server.addr).await else {
        return (String::new(), String::new());
    };
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return (String::new(), String::new());
    }
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) => (
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        ),
        None => (String::new(), String::new()),
    }
}
