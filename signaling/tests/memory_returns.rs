//! Memory that returns: a `hush-server` process (no media) takes three
//! rounds of 500 clients that join rooms of 50 and then vanish (their TCP
//! connections dropped without a `leave`); once every room is gone, its
//! resident memory is back near its idle level. RSS is read from the
//! server's own `/metrics`; the bound is generous (it is about memory
//! kept for good, not allocator noise).

mod support;

use std::net::SocketAddr;
use std::process::Stdio;

use hush_signaling::ServerSecret;
use support::{Client, HANG_GUARD, hush_server_command, mint, now, parse_metric};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const SECRET: &str = "memory-test-secret-0123456789abcdef";
const ROUNDS: usize = 3;
const CLIENTS: usize = 500;
const ROOM_SIZE: usize = 50;

/// The server's resident memory, from its `/metrics`.
async fn rss(addr: SocketAddr) -> u64 {
    let text = support::http_get(addr, "/metrics").await.1;
    text.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("process_resident_memory_bytes in /metrics") as u64
}

/// Waits until `/metrics` says no connection and no participant is left.
async fn until_empty(addr: SocketAddr) {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let text = support::http_get(addr, "/metrics").await.1;
            if parse_metric(&text, "hush_signaling_participants") == 0
                && parse_metric(&text, "hush_signaling_connections") == 0
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("hang guard: vanished clients were never removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_rounds_of_clients_that_join_and_vanish() {
    let secret_path =
        std::env::temp_dir().join(format!("hush-memory-{}.secret", std::process::id()));
    std::fs::write(&secret_path, SECRET).expect("secret file");
    let secret = ServerSecret::new(SECRET.as_bytes().to_vec()).expect("secret");
    let mut child = hush_server_command()
        .args(["--listen", "127.0.0.1:0", "--no-media", "--secret-file"])
        .arg(&secret_path)
        .args(["--max-connections-per-address", "100000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hush-server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (addr, _, _) = support::listening_on(&mut lines, "http").await;

    // The idle level: after one small round, so that what every server
    // allocates once (thread stacks, the runtime's first buffers) is in it.
    let warm_up: Vec<Client> = join_round(addr, &secret, "warm", 10).await;
    drop(warm_up);
    until_empty(addr).await;
    let idle = rss(addr).await;
    let mut after = Vec::new();
    for round in 0..ROUNDS {
        let clients = join_round(addr, &secret, &format!("r{round}"), CLIENTS).await;
        let loaded = rss(addr).await;
        drop(clients); // all vanish at once, no `leave`
        until_empty(addr).await;
        let left = rss(addr).await;
        eprintln!(
            "MEASURE memory: round {}: RSS idle {:.1} MB, with {CLIENTS} joined {:.1} MB, after they vanished {:.1} MB",
            round + 1,
            idle as f64 / 1e6,
            loaded as f64 / 1e6,
            left as f64 / 1e6
        );
        after.push(left);
    }
    let last = after.last().copied().unwrap_or_default();
    assert!(
        last <= 2 * idle,
        "memory did not return: idle {idle} bytes, after {ROUNDS} rounds {last} ({after:?})"
    );
    let _ = child.kill().await;
    let _ = std::fs::remove_file(&secret_path);
}

/// `n` clients join rooms of [`ROOM_SIZE`] named after `tag` (a room's
/// members at once); returns them connected (dropping one closes its TCP
/// connection without a `leave`).
async fn join_round(addr: SocketAddr, secret: &ServerSecret, tag: &str, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for first in (0..n).step_by(ROOM_SIZE) {
        let room = format!("{tag}-{}", first / ROOM_SIZE);
        let joins = (first..n.min(first + ROOM_SIZE)).map(|i| {
            let room = room.clone();
            async move {
                let name = format!("m{i}");
                let mut client = Client::connect(addr).await;
                client
                    .send(&hush_signaling::ClientMessage::Join {
                        protocol: hush_signaling::PROTOCOL_VERSION,
                        room: room.parse().expect("room"),
                        name: name.parse().expect("name"),
                        token: mint(secret, &room, &name, now() + 3600).into(),
                        key_package: hush_signaling::Opaque(vec![7; 160]),
                    })
                    .await;
                match client.recv().await {
                    hush_signaling::ServerMessage::Joined { .. } => client,
                    other => panic!("{name} did not join {room}: {other:?}"),
                }
            }
        });
        clients.extend(futures_util::future::join_all(joins).await);
    }
    clients
}
