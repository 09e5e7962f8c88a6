//! Measurement, not a pass/fail test (ignored by default; run with
//! `cargo test --release -p hush-tests --test measure_joins -- --ignored --nocapture`):
//! join-to-first-decrypted-frame over 20 joins into a room of two, and
//! frames lost to the 40 key changes (20 joins, 20 leaves).

use std::time::Duration;

use hush::local::LocalServer;
use hush_tests::{join, spec, until_decrypted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; prints figures"]
async fn join_to_first_frame_over_20_joins() {
    let server = LocalServer::start(None).await.expect("server");
    let ann = join(spec(&server, "m", "ann", 440.0)).await;
    let bob = join(spec(&server, "m", "bob", 660.0)).await;
    until_decrypted(&ann, 10).await;
    until_decrypted(&bob, 10).await;
    let mut firsts = Vec::new();
    let mut lost = 0;
    for i in 0..20 {
        let cy = join(spec(&server, "m", "cy", 550.0)).await;
        until_decrypted(&cy, 25).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = cy.stop().await.expect("cy");
        lost += r.stats.lost_to_key_change;
        firsts.push(r.join_to_first_frame.expect("decrypted").as_millis());
        eprintln!("join {i}: first frame after {} ms", firsts[i]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ra, rb) = (
        ann.stop().await.expect("ann"),
        bob.stop().await.expect("bob"),
    );
    lost += ra.stats.lost_to_key_change + rb.stats.lost_to_key_change;
    firsts.sort_unstable();
    eprintln!(
        "join-to-first-decrypted: p50 {} ms, max {} ms; frames lost to key changes over 40 events: {lost}; failed: {:?} {:?}",
        firsts[firsts.len() / 2],
        firsts[firsts.len() - 1],
        ra.stats.failed,
        rb.stats.failed
    );
    server.stop().await;
}
