//! The standalone node's HTTP control API, over a real socket.
#![allow(clippy::unwrap_used)]

use hush_proto::{ControlToken, ServerSecret};
use hush_sfu::{Sfu, SfuConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn secret() -> ServerSecret {
    ServerSecret::new(b"the control secret of this test".to_vec()).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A valid token for [`secret`].
fn token() -> String {
    ControlToken::mint(&secret(), now() + 60)
}

/// An SFU with its control API on an ephemeral loopback port, under [`secret`].
async fn node() -> (Sfu, std::net::SocketAddr) {
    let sfu = Sfu::new(SfuConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        axum::serve(
            listener,
            hush_sfu::http::control_router(sfu.clone(), secret()),
        )
        .into_future(),
    );
    (sfu, addr)
}

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    request_as(addr, Some(&token()), method, path, body).await
}

async fn request_as(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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
    let (sfu, addr) = node().await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_does_nothing_without_a_valid_token() {
    let (sfu, addr) = node().await;
    // A load balancer's health check needs no token.
    assert_eq!(
        request_as(addr, None, "GET", "/healthz", "").await,
        (200, "ok".into())
    );
    let other = ServerSecret::new(b"a secret this node never had".to_vec()).unwrap();
    let p = "/v1/rooms/r1/participants/1";
    for (token, why) in [
        (None, "no control token"),
        (Some(ControlToken::mint(&other, now() + 60)), "forged"),
        (Some(ControlToken::mint(&secret(), now() - 1)), "expired"),
        (Some("v1c.1.AAAA".to_owned()), "forged"),
        (Some("not a token".to_owned()), "malformed"),
    ] {
        for (method, path) in [("POST", p), ("GET", "/metrics"), ("DELETE", p)] {
            let (status, body) = request_as(addr, token.as_deref(), method, path, "").await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert!(body.contains(why), "{why} not in {body}");
        }
    }
    // Nothing was created: with a valid token the participant is new.
    assert_eq!(request(addr, "POST", p, "").await.0, 201);
    sfu.shutdown().await;
}

#[test]
fn hush_sfu_token_mints_a_token_the_node_accepts() {
    let dir = std::env::temp_dir().join(format!("hush-sfu-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("control.secret");
    std::fs::write(&file, "  the control secret of this test\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hush-sfu"))
        .args(["token", "--ttl", "10m", "--control-secret-file"])
        .arg(&file)
        .env_remove("HUSH_SFU_CONTROL_SECRET_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert_eq!(ControlToken::verify(&secret(), token, now()), Ok(()));
    assert!(ControlToken::verify(&secret(), token, now() + 11 * 60).is_err());
    let _ = std::fs::remove_dir_all(dir);
}
