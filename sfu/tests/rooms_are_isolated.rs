//! Ten rooms of three in parallel, on two workers (two UDP ports):
//! nothing crosses rooms.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use hush_sfu::{MediaKind, Sfu, SfuConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rooms_of_three_never_cross() {
    let sfu = Sfu::new(SfuConfig {
        workers: 2,
        ..SfuConfig::default()
    })
    .unwrap();
    let ports: Vec<u16> = sfu.udp_addrs().iter().map(|a| a.port()).collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_ne!(ports[0], ports[1]);
    let mut clients = Vec::new();
    for room in 0..10u8 {
        for me in 0..3u8 {
            let c = Client::join(&sfu, &format!("room-{room}"), u64::from(me), VIDEO, None).await;
            clients.push((c, room, me));
        }
    }
    let refs: Vec<(&Client, u8, u8)> = clients.iter().map(|(c, r, m)| (c, *r, *m)).collect();
    let flowing = |refs: &[(&Client, u8, u8)]| {
        refs.iter().all(|(c, _, me)| {
            let got = c.received();
            (0..3u8).filter(|p| p != me).all(|p| {
                got.iter()
                    .any(|r| parse_tag(&r.payload).is_some_and(|t| t.publisher == p))
            })
        })
    };
    let mut n = 0;
    while !flowing(&refs) {
        assert!(n < 1500, "forwarding never started in every room");
        send_rounds(&refs, n, 10, Duration::from_millis(20)).await;
        n += 10;
    }
    send_rounds(&refs, n, 50, Duration::from_millis(20)).await;
    let last = n + 49;
    wait_until("the last round in every room", || {
        refs.iter().all(|(c, _, _)| {
            c.received()
                .iter()
                .filter(|r| parse_tag(&r.payload).is_some_and(|t| t.n == last))
                .count()
                == 2
        })
    })
    .await;
    for (c, room, me) in &refs {
        let got = c.received();
        for r in &got {
            let t = parse_tag(&r.payload).unwrap();
            assert_eq!(
                t.room, *room,
                "{} in room {room} got room {}'s media",
                c.id, t.room
            );
            assert_ne!(t.publisher, *me, "{} got its own media", c.id);
        }
        for p in (0..3u8).filter(|p| p != me) {
            assert!(assert_in_order(&got, *room, p, MediaKind::Video, last) >= 50);
        }
        assert_eq!(c.announced().len(), 2);
    }
    let text = sfu.metrics().render();
    assert!(text.contains("hush_sfu_rooms 10"), "{text}");
    for room in 0..10 {
        assert!(text.contains(&format!(
            "hush_sfu_room_participants{{room=\"room-{room}\"}} 3"
        )));
    }
    sfu.shutdown().await;
}
