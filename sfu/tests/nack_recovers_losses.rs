//! With packets lost between the SFU and one subscriber (a lossy UDP shim
//! on loopback), NACK and retransmission recover every payload.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use hush_sfu::{Sfu, SfuConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_recovers_every_dropped_video_packet() {
    let sfu = Sfu::new(SfuConfig::default()).unwrap();
    let a = Client::join(&sfu, "room", 1, VIDEO, None).await;
    let shim = LossyShim::start().await;
    let b = Client::join(&sfu, "room", 2, NOTHING, Some(shim.filter())).await;
    let mut n = 0;
    while b.received().is_empty() {
        assert!(n < 1500, "b never received a's video through the shim");
        send_rounds(&[(&a, 0, 0)], n, 1, Duration::from_millis(20)).await;
        n += 1;
    }
    let first = n;
    send_rounds(&[(&a, 0, 0)], n, 300, Duration::from_millis(10)).await;
    let last = n + 299;
    // A loss is only noticed when a later packet arrives: send a tail.
    send_rounds(&[(&a, 0, 0)], last + 1, 20, Duration::from_millis(10)).await;
    let have = |b: &Client| -> BTreeMap<u32, bytes::Bytes> {
        b.received()
            .into_iter()
            .filter_map(|r| parse_tag(&r.payload).map(|t| (t.n, r.payload)))
            .collect()
    };
    wait_until("every payload at b", || {
        let got = have(&b);
        (first..=last).all(|n| got.contains_key(&n))
    })
    .await;
    let got = have(&b);
    for n in first..=last {
        let tag = parse_tag(&got[&n]).unwrap();
        assert_eq!(got[&n], payload(tag));
    }
    let dropped = shim.dropped.load(Ordering::SeqCst);
    assert!(dropped >= 25, "the shim dropped only {dropped} packets");
    assert!(
        sfu.metrics().nacks_received() > 0,
        "no NACK reached the SFU"
    );
    eprintln!(
        "MEASURE nack: shim dropped {dropped}, SFU received {} NACK packets, all {} payloads recovered",
        sfu.metrics().nacks_received(),
        last - first + 1
    );
    sfu.shutdown().await;
}
