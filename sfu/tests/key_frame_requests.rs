//! A subscriber's PLI reaches the publisher, and a late joiner gets a key
//! frame request sent on its behalf.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use hush_sfu::routing::RoutingConfig;
use hush_sfu::{MediaKind, Sfu, SfuConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pli_reaches_the_publisher_and_a_late_joiner_triggers_one() {
    let config = SfuConfig {
        routing: RoutingConfig {
            key_frame_min_interval: Duration::from_millis(100),
            ..RoutingConfig::default()
        },
        ..SfuConfig::default()
    };
    let sfu = Sfu::new(config).unwrap();
    let a = Client::join(&sfu, "room", 1, VIDEO, None).await;
    let b = Client::join(&sfu, "room", 2, NOTHING, None).await;
    let mut n = 0;
    while b.received().is_empty() {
        assert!(n < 1500, "b never received a's video");
        a.send(MediaKind::Video, 0, 0, n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // b's subscription itself asked a for a key frame.
    wait_until("the key-frame request for b's subscription", || {
        a.plis.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A PLI from b reaches a.
    let before = a.plis.load(Ordering::SeqCst);
    assert_eq!(b.send_pli().await, 1);
    wait_until("b's PLI at a", || a.plis.load(Ordering::SeqCst) > before).await;
    assert!(
        sfu.metrics()
            .render()
            .contains("hush_sfu_plis_received_total 1")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A late joiner triggers one without sending anything itself.
    let before = a.plis.load(Ordering::SeqCst);
    let c = Client::join(&sfu, "room", 3, NOTHING, None).await;
    while c.received().is_empty() {
        assert!(n < 3000, "c never received a's video");
        a.send(MediaKind::Video, 0, 0, n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("the key-frame request for late joiner c", || {
        a.plis.load(Ordering::SeqCst) > before
    })
    .await;
    assert!(
        sfu.metrics()
            .render()
            .contains("hush_sfu_plis_received_total 1")
    );
    assert!(sfu.metrics().plis_sent() >= 3);
    sfu.shutdown().await;
}
