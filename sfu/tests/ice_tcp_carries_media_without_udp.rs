//! ICE-TCP (RFC 6544): clients that cannot reach the SFU's UDP candidate
//! (here it is pointed at a socket that swallows everything) connect to
//! its passive TCP candidate, and media flows both ways over RFC 4571
//! framing. With ICE-TCP off they never connect. A TCP connection that
//! does not start with a STUN request a peer accepts is closed.
//!
//! The clients are `hush call`'s own transport (`hush_client::transport`),
//! which dials the SFU's TCP candidate once per call.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_client::transport::{Transport, TransportEvent};
use hush_sfu::metrics::TcpRefusal;
use hush_sfu::{ParticipantId, RoomId, Sfu, SfuConfig, SfuEvent};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

const HANG: Duration = Duration::from_secs(30);

/// `sdp` with its UDP candidates moved to `hole`'s port: what a client
/// whose UDP is blocked can do with them (nothing).
fn udp_blocked(sdp: &str, udp_port: u16, hole: u16) -> String {
    sdp.split_inclusive('\n')
        .map(|l| {
            if l.starts_with("a=candidate:") && l.contains(" udp ") {
                l.replace(&format!(" {udp_port} typ"), &format!(" {hole} typ"))
            } else {
                l.to_owned()
            }
        })
        .collect()
}

struct TestClient {
    t: Arc<Transport>,
    rx: mpsc::Receiver<TransportEvent>,
    answer: String,
}

/// A client joined to `room` whose UDP cannot reach the SFU; answers the
/// SFU's offers in the background.
async fn join(sfu: &Sfu, room: &RoomId, id: u64, hole: u16) -> TestClient {
    let id = ParticipantId(id);
    let udp_port = sfu.udp_addrs()[0].port();
    let mut events = sfu.add_participant(room, &id).await.unwrap();
    let (t, rx) = Transport::with_ice_timeouts(
        false,
        Duration::from_secs(3),
        Duration::from_secs(6),
        Some([127, 0, 0, 1].into()),
    )
    .await
    .unwrap();
    let t = Arc::new(t);
    let offer = t.offer().await.unwrap();
    let answer = sfu.handle_offer(room, &id, offer).await.unwrap();
    t.apply_answer(udp_blocked(&answer, udp_port, hole))
        .await
        .unwrap();
    let (sfu, room, tr) = (sfu.clone(), room.clone(), Arc::clone(&t));
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let SfuEvent::Offer { sdp } = ev {
                let Ok(answer) = tr.answer(udp_blocked(&sdp, udp_port, hole)).await else {
                    break;
                };
                if sfu.handle_answer(&room, &id, answer).await.is_err() {
                    break;
                }
            }
        }
    });
    TestClient { t, rx, answer }
}

/// Frames `from` sent that `to` received, as counted by `exchange`.
fn frames_from(rx: &mut mpsc::Receiver<TransportEvent>, from: u8) -> usize {
    let mut n = 0;
    while let Ok(ev) = rx.try_recv() {
        if let TransportEvent::Frame { data, .. } = ev {
            assert_eq!(data.first(), Some(&from), "a frame from the other one");
            n += 1;
        }
    }
    n
}

/// Both send a 20 ms audio frame at a time until each has received
/// `want` of the other's, or `within` has passed; returns what each got.
async fn exchange(
    a: &mut TestClient,
    b: &mut TestClient,
    want: usize,
    within: Duration,
) -> (usize, usize) {
    let start = Instant::now();
    let (mut got_a, mut got_b) = (0, 0);
    while (got_a < want || got_b < want) && start.elapsed() < within {
        let _ = a.t.send_audio(vec![b'a'; 40], 30).await;
        let _ = b.t.send_audio(vec![b'b'; 40], 30).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        got_a += frames_from(&mut a.rx, b'b');
        got_b += frames_from(&mut b.rx, b'a');
    }
    (got_a, got_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_whose_udp_is_blocked_exchange_media_over_tcp() {
    let sfu = Sfu::new(SfuConfig::default()).unwrap();
    let [tcp] = sfu.tcp_addrs() else {
        panic!("one worker, one TCP address: {:?}", sfu.tcp_addrs());
    };
    assert_ne!(tcp.port(), sfu.udp_addrs()[0].port());
    let hole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let room: RoomId = "tcp".parse().unwrap();
    let mut a = join(&sfu, &room, 1, hole_port).await;
    let mut b = join(&sfu, &room, 2, hole_port).await;
    let passive = format!(" 127.0.0.1 {} typ host tcptype passive", tcp.port());
    assert!(
        a.answer
            .lines()
            .any(|l| l.contains(" tcp ") && l.contains(&passive)),
        "no passive TCP candidate in\n{}",
        a.answer
    );
    let started = Instant::now();
    let (got_a, got_b) = exchange(&mut a, &mut b, 50, HANG).await;
    eprintln!(
        "over ICE-TCP: a got {got_a}, b got {got_b} frames within {:?}",
        started.elapsed()
    );
    assert!(got_a >= 50 && got_b >= 50, "a got {got_a}, b got {got_b}");
    let m = sfu.metrics();
    assert_eq!(m.tcp_connections(), 2, "one connection per client");
    assert_eq!(m.tcp_refusals(TcpRefusal::FirstContact), 0);
    assert_eq!(m.tcp_refusals(TcpRefusal::Framing), 0);
    a.t.close().await;
    b.t.close().await;
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ice_tcp_those_clients_get_nothing() {
    let sfu = Sfu::new(SfuConfig {
        tcp_port: None,
        ..SfuConfig::default()
    })
    .unwrap();
    assert!(sfu.tcp_addrs().is_empty());
    let hole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let room: RoomId = "no-tcp".parse().unwrap();
    let mut a = join(&sfu, &room, 1, hole_port).await;
    let mut b = join(&sfu, &room, 2, hole_port).await;
    assert!(!a.answer.contains(" tcp "), "{}", a.answer);
    let (got_a, got_b) = exchange(&mut a, &mut b, 1, Duration::from_secs(4)).await;
    assert_eq!((got_a, got_b), (0, 0));
    a.t.close().await;
    b.t.close().await;
    sfu.shutdown().await;
}

/// Connects to the SFU's TCP port, sends `bytes`, and returns whether the
/// SFU closed the connection within `within`.
async fn closed_after(at: std::net::SocketAddr, bytes: &[u8], within: Duration) -> bool {
    let mut s = TcpStream::connect(at).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_must_open_with_a_stun_request_a_peer_accepts() {
    let sfu = Sfu::new(SfuConfig::default()).unwrap();
    let at = sfu.tcp_addrs()[0];
    let m = Arc::clone(sfu.metrics());
    // A framed DTLS record header: not STUN.
    let dtls = [0, 13, 22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert!(closed_after(at, &dtls, Duration::from_secs(2)).await);
    // A zero-length frame, and one longer than any packet.
    assert!(closed_after(at, &[0, 0], Duration::from_secs(2)).await);
    assert!(closed_after(at, &[0xff, 0xff, 1, 2, 3], Duration::from_secs(2)).await);
    // Half a frame, then nothing: closed after the first-contact timeout.
    assert!(closed_after(at, &[0, 20, 1], Duration::from_secs(8)).await);
    let (first, framing, silent) = (
        m.tcp_refusals(TcpRefusal::FirstContact),
        m.tcp_refusals(TcpRefusal::Framing),
        m.tcp_refusals(TcpRefusal::Silent),
    );
    assert_eq!((first, framing, silent), (1, 2, 1));
    let text = m.render();
    assert!(
        text.contains("hush_sfu_tcp_connections_refused_total{reason=\"framing\"} 2"),
        "{text}"
    );
    sfu.shutdown().await;
}
