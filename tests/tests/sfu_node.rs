//! `hush-server --sfu-url`: a server whose media goes to a standalone
//! `hush-sfu` node through the node's control API (authenticated with a
//! control token), not to an embedded SFU.
//!
//! - Three members are in one call: each hears the others' tones, nobody
//!   loses a frame to a key change when one leaves and rejoins, and the
//!   node, not the server, forwarded the media.
//! - A server holding the wrong control secret gets nothing from the node:
//!   its members' media fails with `media_failed` and the node never adds
//!   them.
//!
//! Timeouts are hang guards.

use std::time::Duration;

use hush::local::{LocalServer, SfuNode};
use hush_client::participant::{Observed, ParticipantSpec};
use hush_proto::ServerSecret;
use hush_tests::{assert_heard_tones, assert_no_frame_lost, join, spec, stats, until_decrypted};

/// One value of a Prometheus text, summed over its labels.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_through_a_standalone_sfu_node() {
    let (control, _) = ServerSecret::generate_development().expect("a secret");
    let node = SfuNode::start(control.clone())
        .await
        .expect("hush-sfu node");
    let server = LocalServer::start_with_sfu_node(&node.url(), control)
        .await
        .expect("hush-server --sfu-url");
    assert!(server.sfu_udp_addrs().is_empty(), "no embedded SFU");
    let room = "via-node";
    let ann = join(spec(&server, room, "ann", 440.0)).await;
    let bob = join(spec(&server, room, "bob", 550.0)).await;
    let cat = join(spec(&server, room, "cat", 660.0)).await;
    for p in [&ann, &bob, &cat] {
        until_decrypted(p, 100).await;
    }
    // bob leaves and rejoins.
    let bob_first = bob.stop().await.expect("bob leaves");
    let bob = join(spec(&server, room, "bob", 550.0)).await;
    until_decrypted(&bob, 100).await;
    let before = (stats(&ann).await.decrypted, stats(&cat).await.decrypted);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = (stats(&ann).await.decrypted, stats(&cat).await.decrypted);
    assert!(
        after.0 > before.0 + 50 && after.1 > before.1 + 50,
        "{before:?} → {after:?}"
    );
    assert_eq!(metric(&node.metrics(), "hush_sfu_peer_connections"), 3.0);
    let forwarded = metric(&node.metrics(), "hush_sfu_packets_out_total");
    println!("the node forwarded {forwarded} packets");
    assert!(forwarded > 500.0, "the node carried the media: {forwarded}");

    let reports = [
        ann.stop().await.expect("ann"),
        bob.stop().await.expect("bob"),
        cat.stop().await.expect("cat"),
    ];
    assert_no_frame_lost(&[&reports[0], &reports[1], &reports[2], &bob_first]);
    let tones = [("ann", 440.0), ("bob", 550.0), ("cat", 660.0)];
    assert_heard_tones(&reports.iter().collect::<Vec<_>>(), &tones);
    // Every member left: the node holds nobody.
    tokio::time::timeout(Duration::from_secs(10), async {
        while metric(&node.metrics(), "hush_sfu_peer_connections") > 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the node let every member go");
    server.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_without_the_nodes_control_secret_gets_no_media_from_it() {
    let (control, _) = ServerSecret::generate_development().expect("a secret");
    let (wrong, _) = ServerSecret::generate_development().expect("another secret");
    let node = SfuNode::start(control).await.expect("hush-sfu node");
    let server = LocalServer::start_with_sfu_node(&node.url(), wrong)
        .await
        .expect("hush-server --sfu-url");
    let (tx, mut observed) = tokio::sync::mpsc::unbounded_channel();
    let ann = join(ParticipantSpec {
        observer: Some(tx),
        ..spec(&server, "refused", "ann", 440.0)
    })
    .await;
    let told = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(o) = observed.recv().await {
            if let Observed::Warning(w) = &o
                && w.contains("hush-sfu")
            {
                return w.clone();
            }
        }
        String::new()
    })
    .await
    .expect("the member is told its media failed");
    println!("the member was told: {told}");
    assert!(
        told.contains("401") || told.contains("control token"),
        "{told}"
    );
    assert_eq!(metric(&node.metrics(), "hush_sfu_peer_connections"), 0.0);
    let _ = ann.stop().await;
    server.stop().await;
    node.stop().await;
}
