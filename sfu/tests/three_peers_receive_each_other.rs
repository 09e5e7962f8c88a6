//! Three peers in one room each receive the other two publishers' audio and
//! video byte-identical, in order, and never their own.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use hush_sfu::{MediaKind, Sfu, SfuConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_peer_receives_the_others_in_order_and_never_itself() {
    let sfu = Sfu::new(SfuConfig::default()).unwrap();
    let a = Client::join(&sfu, "room", 1, AV, None).await;
    let b = Client::join(&sfu, "room", 2, AV, None).await;
    let c = Client::join(&sfu, "room", 3, AV, None).await;
    let clients = [(&a, 0u8, 0u8), (&b, 0, 1), (&c, 0, 2)];

    // Send until every peer receives both kinds from both others...
    let mut n = 0;
    let all_flowing = |clients: &[(&Client, u8, u8)]| {
        clients.iter().all(|(rx, _, me)| {
            let got = rx.received();
            (0..3u8).filter(|p| p != me).all(|p| {
                [MediaKind::Audio, MediaKind::Video].iter().all(|k| {
                    got.iter().any(|r| {
                        parse_tag(&r.payload)
                            .is_some_and(|t| t.publisher == p && t.kind == *k as u8)
                    })
                })
            })
        })
    };
    while !all_flowing(&clients) {
        assert!(n < 1500, "forwarding never started for everyone");
        send_rounds(&clients, n, 10, Duration::from_millis(20)).await;
        n += 10;
    }
    let first_packet = a
        .received()
        .iter()
        .filter(|r| parse_tag(&r.payload).is_some_and(|t| t.publisher == 2))
        .map(|r| r.at)
        .min()
        .unwrap();
    eprintln!(
        "MEASURE offer-to-first-forwarded-packet (c's offer -> a receives c): {:?}",
        first_packet.duration_since(c.offered_at)
    );
    // ...then 200 more rounds, all of which must arrive.
    send_rounds(&clients, n, 200, Duration::from_millis(10)).await;
    let last = n + 199;
    wait_until("the last round everywhere", || {
        clients.iter().all(|(rx, _, _)| {
            rx.received()
                .iter()
                .filter(|r| parse_tag(&r.payload).is_some_and(|t| t.n == last))
                .count()
                == 4
        })
    })
    .await;

    for (rx, _, me) in clients {
        let got = rx.received();
        assert!(
            got.iter()
                .all(|r| parse_tag(&r.payload).is_some_and(|t| t.publisher != me)),
            "{} received its own media",
            rx.id
        );
        for p in (0..3u8).filter(|p| *p != me) {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let count = assert_in_order(&got, 0, p, kind, last);
                assert!(count >= 200, "{count} packets from {p} ({kind})");
            }
        }
        // Every forwarded track carries only the publisher the SFU announced for it.
        let announced = rx.announced();
        assert_eq!(announced.len(), 4, "{} should be told of 4 tracks", rx.id);
        for r in &got {
            let (publisher, kind) = &announced[&r.track_id];
            let tag = parse_tag(&r.payload).unwrap();
            assert_eq!(publisher.0, [1, 2, 3][tag.publisher as usize]);
            assert_eq!(*kind as u8, tag.kind);
        }
    }
    // Each of 3 peers receives 2 publishers x 2 kinds.
    assert_eq!(sfu.metrics().subscriptions(), 12);
    let text = sfu.metrics().render();
    assert!(text.contains("hush_sfu_room_participants{room=\"room\"} 3"));
    sfu.shutdown().await;
}
