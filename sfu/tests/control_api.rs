//! The standalone node's HTTP control API, over a real socket.
#![allow(clippy::unwrap_used)]

use hush_sfu::{Sfu, SfuConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_creates_removes_and_reports() {
    let sfu = Sfu::new(SfuConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, hush_sfu::http::control_router(sfu.clone())).into_future());

    assert_eq!(
        request(addr, "GET", "/healthz", "").await,
        (200, "ok".into())
    );
    // Ids in paths are validated as the protocol defines them.
    let (status, body) = request(addr, "POST", "/v1/rooms/r1/participants/alice", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid participant id"), "{body}");
    let (status, body) = request(addr, "POST", "/v1/rooms/r%20!/participants/1", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid room id"), "{body}");
    let p = "/v1/rooms/r1/participants/1";
    assert_eq!(request(addr, "POST", p, "").await.0, 201);
    assert_eq!(request(addr, "POST", p, "").await.0, 409, "joined twice");
    let (status, metrics) = request(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("hush_sfu_room_participants{room=\"r1\"} 1"),
        "{metrics}"
    );
    let (status, body) = request(addr, "POST", &format!("{p}/offer"), r#"{"sdp":"not sdp"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = request(addr, "POST", &format!("{p}/answer"), r#"{"sdp":"v=0"}"#).await;
    assert_eq!(status, 409, "an answer with no SFU offer outstanding");
    assert_eq!(request(addr, "DELETE", p, "").await.0, 204);
    assert_eq!(request(addr, "DELETE", p, "").await.0, 404);
    let (_, metrics) = request(addr, "GET", "/metrics", "").await;
    assert!(metrics.contains("hush_sfu_rooms 0"));
    assert!(!metrics.contains("room=\"r1\""));
    sfu.shutdown().await;
}
