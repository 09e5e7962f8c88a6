//! An SFU that flips a bit in forwarded audio payloads, and one that swaps
//! payloads for forged frames under the sender's real (visible) KID:
//! receivers count authentication failures, decode nothing from them, and
//! the call goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hush::local::LocalServer;
use hush_sfu::{MediaKind, SfuConfig, TamperHook};
use hush_tests::{heard, join, spec, until_decrypted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_sfu_is_detected() {
    let seen = Arc::new(AtomicU64::new(0));
    let tampered = Arc::new(AtomicU64::new(0));
    let hook = {
        let (seen, tampered) = (Arc::clone(&seen), Arc::clone(&tampered));
        TamperHook(Arc::new(move |kind, payload: &[u8]| {
            if kind != MediaKind::Audio {
                return None;
            }
            let n = seen.fetch_add(1, Ordering::Relaxed);
            // Leave the start alone (keys settle), then tamper with every 25th packet.
            if n < 100 || n % 25 != 0 {
                return None;
            }
            tampered.fetch_add(1, Ordering::Relaxed);
            let (header, hlen) = hush_sframe::Header::parse(payload).ok()?;
            let mut out = payload.to_vec();
            if n % 50 == 0 {
                // Flip one bit of the ciphertext.
                let last = out.len() - 1;
                out[last] ^= 0x01;
            } else {
                // A forged frame: the real KID, a counter far ahead, made-up ciphertext.
                out = hush_sframe::Header::new(
                    header.kid,
                    hush_sframe::Counter(header.ctr.0 + 10_000),
                )
                .encode()
                .as_bytes()
                .to_vec();
                out.extend(std::iter::repeat_n(0x5a, payload.len() - hlen));
            }
            Some(out)
        }))
    };
    let server = LocalServer::start_with(SfuConfig {
        tamper: Some(hook),
        ..Default::default()
    })
    .await
    .expect("server");
    let ann = join(spec(&server, "t", "ann", 440.0)).await;
    let bob = join(spec(&server, "t", "bob", 660.0)).await;
    until_decrypted(&ann, 10).await;
    until_decrypted(&bob, 10).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ra = ann.stop().await.expect("ann");
    let rb = bob.stop().await.expect("bob");
    server.stop().await;
    let total_tampered = tampered.load(Ordering::Relaxed);
    assert!(
        total_tampered >= 4,
        "the hook tampered with {total_tampered} packets"
    );
    let auth_failures: u64 = [&ra, &rb]
        .iter()
        .map(|r| r.stats.failed.get("authentication").copied().unwrap_or(0))
        .sum();
    // Every tampered packet that reached a receiver failed authentication (a
    // few may have been in flight when the call ended).
    assert!(
        auth_failures + 2 >= total_tampered && auth_failures >= 4,
        "{auth_failures} failures for {total_tampered} tampered packets"
    );
    for (r, other) in [(&ra, "bob"), (&rb, "ann")] {
        // The call went on: frames kept decoding after the tampering started.
        let remote = heard(r, other).expect("heard");
        assert!(
            remote.audio_frames > 150,
            "{} decoded only {} frames",
            r.name,
            remote.audio_frames
        );
        // Nothing tampered was counted as decrypted.
        assert!(
            r.stats.decrypted + r.stats.failed.values().sum::<u64>() <= r.stats.received,
            "{:?}",
            r.stats
        );
    }
}
