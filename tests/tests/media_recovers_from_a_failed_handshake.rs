//! A DTLS handshake that cannot complete (every DTLS record dropped both
//! ways, STUN untouched, so ICE connects): blocked for a few seconds, it is
//! recovered once the records get through and both sides decrypt each
//! other's audio; blocked for longer than the SFU waits for a connection,
//! both sides are told their media failed, which `hush call` turns into
//! exit code 5, never a silent call without media.

use std::time::Duration;

use hush_sfu::SfuConfig;
use hush_tests::impair::{Impairment, Relay};
use hush_tests::lossy::server_behind_relay;
use hush_tests::{join, spec, stats, until_decrypted};

fn dtls_blocked() -> Impairment {
    Impairment {
        drop_dtls: true,
        ..Impairment::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_blocked_for_seconds_is_recovered() {
    let (server, front, back) = server_behind_relay(SfuConfig::default()).await;
    let relay = Relay::start(front, back, dtls_blocked(), dtls_blocked(), 1)
        .await
        .expect("relay");
    let ann = join(spec(&server, "dtls", "ann", 440.0)).await;
    let bob = join(spec(&server, "dtls", "bob", 660.0)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let blocked = relay.stats();
    assert_eq!(stats(&ann).await.decrypted, 0, "nothing flows without DTLS");
    // The clients are the DTLS clients: their flights never got through.
    assert!(
        blocked.up.dropped > 0,
        "no handshake was blocked: {blocked:?}"
    );
    relay.set(Impairment::default(), Impairment::default());
    until_decrypted(&ann, 50).await;
    until_decrypted(&bob, 50).await;
    for r in [
        ann.stop().await.expect("ann"),
        bob.stop().await.expect("bob"),
    ] {
        assert!(!r.media_failed, "{}: {:?}", r.name, r.warnings);
    }
    relay.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_completes_is_reported() {
    let (server, front, back) = server_behind_relay(SfuConfig {
        connect_timeout: Duration::from_secs(3),
        ..SfuConfig::default()
    })
    .await;
    let relay = Relay::start(front, back, dtls_blocked(), dtls_blocked(), 2)
        .await
        .expect("relay");
    let ann = join(spec(&server, "dtls", "ann", 440.0)).await;
    let bob = join(spec(&server, "dtls", "bob", 660.0)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for r in [
        ann.stop().await.expect("ann"),
        bob.stop().await.expect("bob"),
    ] {
        assert_eq!(r.stats.decrypted, 0);
        assert!(
            r.media_failed,
            "{}: not told its media failed: {:?}",
            r.name, r.warnings
        );
        assert!(
            r.warnings.iter().any(|w| w.contains("media_closed")),
            "{:?}",
            r.warnings
        );
    }
    relay.stop().await;
    server.stop().await;
}
