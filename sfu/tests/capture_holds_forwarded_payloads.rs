//! The capture file contains exactly the payloads the SFU forwarded.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use hush_proto::capture::read_capture;
use hush_sfu::{MediaKind, Sfu, SfuConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_file_is_exactly_the_forwarded_payloads() {
    let path = std::env::temp_dir().join(format!("hush-sfu-capture-{}.bin", std::process::id()));
    let sfu = Sfu::new(SfuConfig {
        capture: Some(path.clone()),
        ..SfuConfig::default()
    })
    .unwrap();
    let a = Client::join(&sfu, "room", 1, VIDEO, None).await;
    // Sent before anyone subscribes: received by the SFU, forwarded to nobody.
    for n in 0..20 {
        a.send(MediaKind::Video, 0, 0, n).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = Client::join(&sfu, "room", 2, NOTHING, None).await;
    let mut n = 20;
    while b.received().is_empty() {
        assert!(n < 1500, "b never received a's video");
        a.send(MediaKind::Video, 0, 0, n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_rounds(&[(&a, 0, 0)], n, 100, Duration::from_millis(10)).await;
    let last = n + 99;
    wait_until("the last payload at b", || {
        b.received()
            .iter()
            .any(|r| parse_tag(&r.payload).is_some_and(|t| t.n == last))
    })
    .await;
    assert_in_order(&b.received(), 0, 0, MediaKind::Video, last);
    let received: Vec<bytes::Bytes> = b.received().into_iter().map(|r| r.payload).collect();
    // Let the writer task finish the packets still in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ssrc = a.video.as_ref().unwrap().1;
    // The writer flushes whenever its queue runs dry.
    let mut records = Vec::new();
    for _ in 0..100 {
        records = read_capture(&path).unwrap();
        if records.len() >= received.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let captured: Vec<bytes::Bytes> = records.iter().map(|r| r.payload.clone()).collect();
    // One subscriber: one capture record per packet handed to its connection.
    assert_eq!(captured.len() as u64, sfu.metrics().packets_out());
    let first = parse_tag(&captured[0]).unwrap().n;
    for (i, p) in captured.iter().enumerate() {
        let tag = parse_tag(p).unwrap();
        assert_eq!(tag.n, first + i as u32, "capture has a gap or a duplicate");
        assert_eq!(
            *p,
            payload(tag),
            "captured bytes differ from the sent payload"
        );
    }
    assert_eq!(parse_tag(captured.last().unwrap()).unwrap().n, last);
    // b received exactly the tail of the capture, byte for byte. (The
    // capture may begin earlier: a packet handed to b's connection can
    // still be lost before b's client reads its new track.)
    assert!(received.len() >= 100);
    assert_eq!(received[..], captured[captured.len() - received.len()..]);
    assert!(
        records
            .iter()
            .all(|r| r.kind == MediaKind::Video && r.ssrc == ssrc)
    );
    assert!(
        parse_tag(&captured[0]).unwrap().n >= 20,
        "unforwarded payloads were captured"
    );
    assert_eq!(
        sfu.metrics()
            .drops(hush_sfu::metrics::DropReason::CaptureOverflow),
        0
    );
    sfu.shutdown().await;
    std::fs::remove_file(&path).unwrap();
}
