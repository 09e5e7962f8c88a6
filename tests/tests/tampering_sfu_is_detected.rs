//! An SFU that flips a bit in forwarded audio payloads, and one that swaps
//! payloads for forged frames under the sender's real (visible) KID:
//! receivers count authentication failures, nothing the SFU altered or
//! forged ever decrypts, and the call goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hush::local::LocalServer;
use hush_sfu::{MediaKind, SfuConfig, TamperHook, Tampering};
use hush_tests::{Witness, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_sfu_is_detected() {
    let seen = Arc::new(AtomicU64::new(0));
    let tampered = Arc::new(AtomicU64::new(0));
    let hook = {
        let (seen, tampered) = (Arc::clone(&seen), Arc::clone(&tampered));
        TamperHook(Arc::new(move |kind, payload: &[u8]| {
            if kind != MediaKind::Audio {
                return Tampering::default();
            }
            let n = seen.fetch_add(1, Ordering::Relaxed);
            // Leave the start alone (keys settle), then tamper with every 25th packet.
            if n < 100 || n % 25 != 0 {
                return Tampering::default();
            }
            // Audio packets are RED (PROTOCOL.md §11): alter the packet's
            // own frame and keep the copies of the two before it.
            let Ok(red) = hush_proto::red::parse(payload) else {
                return Tampering::default();
            };
            let frame = red.primary.data;
            let Ok((header, hlen)) = hush_sframe::Header::parse(frame) else {
                return Tampering::default();
            };
            if frame.len() <= hlen {
                return Tampering::default();
            }
            tampered.fetch_add(1, Ordering::Relaxed);
            let mut forged = frame.to_vec();
            if n % 50 == 0 {
                // Flip one bit of the ciphertext (not of the tag): a receiver
                // that skipped authentication would decrypt it to the sent
                // frame with that bit flipped, which the sender never sent.
                forged[hlen] ^= 0x01;
            } else {
                // A forged frame: the real KID, a counter far ahead, made-up ciphertext.
                forged = hush_sframe::Header::new(
                    header.kid,
                    hush_sframe::Counter(header.ctr.0 + 10_000),
                )
                .encode()
                .as_bytes()
                .to_vec();
                forged.extend(std::iter::repeat_n(0x5a, frame.len() - hlen));
            }
            let out = hush_proto::red::write(&red.redundant, red.primary.payload_type, &forged);
            Tampering::replace(out)
        }))
    };
    let server = LocalServer::start_with(SfuConfig {
        tamper: Some(hook),
        ..Default::default()
    })
    .await
    .expect("server");
    let ann = Witness::start(spec(&server, "t", "ann", 440.0)).await;
    let bob = Witness::start(spec(&server, "t", "bob", 660.0)).await;
    ann.until_decrypted(10).await;
    bob.until_decrypted(10).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (la, sa) = ann.stop().await;
    let (lb, sb) = bob.stop().await;
    server.stop().await;
    let total_tampered = tampered.load(Ordering::Relaxed);
    assert!(
        total_tampered >= 4,
        "the hook tampered with {total_tampered} packets"
    );
    let auth_failures: u64 = [&sa, &sb]
        .iter()
        .map(|s| s.stats().failed.get("authentication").copied().unwrap_or(0))
        .sum();
    eprintln!("tampered {total_tampered}, authentication failures {auth_failures}");
    // Every tampered packet that reached a receiver failed authentication (a
    // few may have been in flight when the call ended).
    assert!(
        auth_failures + 2 >= total_tampered && auth_failures >= 4,
        "{auth_failures} failures for {total_tampered} tampered packets"
    );
    for (log, sender) in [(&la, &lb), (&lb, &la)] {
        // The call went on: frames kept decoding after the tampering started.
        let heard = log.heard(&sender.name).expect("heard");
        assert!(
            heard.decoded > 150,
            "{} decoded only {} frames",
            log.name,
            heard.decoded
        );
        eprintln!(
            "{}: {} decrypted, {} decoded from {}, which sent {}",
            log.name, heard.decrypted, heard.decoded, sender.name, sender.sent_frames
        );
        // Nothing the SFU altered or forged decrypted: every frame that did
        // is one the sender sent, at most as often as it sent it.
        assert_eq!(
            log.not_sent_by(sender),
            0,
            "{} decrypted {} frames {} never sent ({} decrypted, {} sent)",
            log.name,
            log.not_sent_by(sender),
            sender.name,
            heard.decrypted,
            sender.sent_frames
        );
    }
}
