//! A network outage longer than ICE's failure timeout (every packet
//! dropped both ways for 11 s, then the path is back): webrtc-rs calls the
//! connection failed about 9 s after the last packet (3 s to disconnected,
//! 6 more to failed) and stops checking; the clients restart ICE (at once,
//! then with backoff) and media flows again on the same keys, without a
//! new call; each side is told its media was lost and restored, and
//! neither ends with its media failed. (An outage shorter than that needs
//! no restart: a disconnected connection recovers by itself. The SFU here
//! keeps a silent participant for 30 s rather than its default 6 s, so
//! the test is about the client.)

use std::time::Duration;

use hush_sfu::SfuConfig;
use hush_tests::impair::{Impairment, Relay};
use hush_tests::lossy::server_behind_relay;
use hush_tests::{join, spec, stats, until_decrypted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restarts_bring_media_back_after_an_outage() {
    let (server, front, back) = server_behind_relay(SfuConfig {
        ice_failed_timeout: Duration::from_secs(30),
        ..SfuConfig::default()
    })
    .await;
    let clean = Impairment::default();
    let relay = Relay::start(front, back, clean, clean, 3)
        .await
        .expect("relay");
    let ann = join(spec(&server, "outage", "ann", 440.0)).await;
    let bob = join(spec(&server, "outage", "bob", 660.0)).await;
    until_decrypted(&ann, 25).await;
    until_decrypted(&bob, 25).await;
    let dead = Impairment {
        loss: 1.0,
        ..Impairment::default()
    };
    relay.set(dead, dead);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (a0, b0) = (stats(&ann).await.decrypted, stats(&bob).await.decrypted);
    relay.set(clean, clean);
    let back_at = std::time::Instant::now();
    until_decrypted(&ann, a0 + 50).await;
    until_decrypted(&bob, b0 + 50).await;
    eprintln!("media back {:?} after the path was", back_at.elapsed());
    let (ra, rb) = (
        ann.stop().await.expect("ann"),
        bob.stop().await.expect("bob"),
    );
    relay.stop().await;
    server.stop().await;
    for r in [&ra, &rb] {
        eprintln!("{}: {:?}", r.name, r.warnings);
        assert!(!r.media_failed, "{}: {:?}", r.name, r.warnings);
        assert!(
            r.warnings.iter().any(|w| w.contains("restarting ICE")),
            "{}: the outage went unnoticed: {:?}",
            r.name,
            r.warnings
        );
        assert!(
            r.warnings.iter().any(|w| w.contains("restored")),
            "{}: {:?}",
            r.name,
            r.warnings
        );
        assert_eq!(
            r.stats.failed.values().sum::<u64>(),
            0,
            "{:?}",
            r.stats.failed
        );
    }
}
