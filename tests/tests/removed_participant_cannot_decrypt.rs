//! A client that left keeps what it can still get: every payload the SFU
//! forwarded (its capture). What was sent after it left decrypts with none
//! of the keys it ever held, ratcheted or not; what was sent before it left
//! does (so the attack really works when it should).

use std::time::Duration;

use hush::local::LocalServer;
use hush_e2ee::{Generation, KeyEvent, ratchet, split_kid};
use hush_sframe::{CipherSuite, Header, Receiver, Secret};
use hush_tests::{join, spec, until_decrypted};

/// Whether any key in `keys`, ratcheted up to 8 steps within its
/// generation or once under the frame's own generation, opens `payload`.
/// Whether any key (or a later ratchet step of one) opens the payload, or
/// any block of it read as RED (audio packets carry the frame and the two
/// before it, each its own SFrame ciphertext, PROTOCOL.md §11).
fn opens(keys: &[Secret], payload: &[u8]) -> bool {
    opens_frame(keys, payload)
        || hush_proto::red::parse(payload).is_ok_and(|red| {
            red.redundant
                .iter()
                .chain([&red.primary])
                .any(|b| opens_frame(keys, b.data))
        })
}

fn opens_frame(keys: &[Secret], payload: &[u8]) -> bool {
    let Ok((header, _)) = Header::parse(payload) else {
        return false;
    };
    let target = split_kid(header.kid).map(|(_, g)| g);
    let try_key = |k: &Secret| {
        let mut rx = Receiver::new(CipherSuite::AesGcm128Sha256);
        rx.add_key(header.kid, k.expose()).expect("fresh receiver");
        rx.decrypt(b"", payload).is_ok()
    };
    keys.iter().any(|k| {
        let mut base = k.clone();
        (0..=8u16).any(|step| {
            if step > 0 {
                let g = target.map_or(
                    Generation {
                        rekey: 0,
                        ratchet: step,
                    },
                    |t| Generation {
                        rekey: t.rekey,
                        ratchet: step,
                    },
                );
                base = ratchet(&base, g);
            }
            try_key(&base) || target.is_some_and(|t| try_key(&ratchet(&base, t)))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_participant_cannot_decrypt() {
    let dir = std::env::temp_dir().join(format!("hush-removed-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let capture = dir.join("capture.bin");
    let server = LocalServer::start(Some(capture.clone()))
        .await
        .expect("server");
    let ann = join(spec(&server, "r", "ann", 440.0)).await;
    let bob = join(spec(&server, "r", "bob", 660.0)).await;
    let mut cy_spec = spec(&server, "r", "cy", 550.0);
    cy_spec.keep_keys = true;
    let cy = join(cy_spec).await;
    for p in [&ann, &bob, &cy] {
        until_decrypted(p, 20).await;
    }
    let before = hush_proto::capture::read_capture(&capture)
        .expect("capture")
        .len();
    let cy_report = cy.stop().await.expect("cy leaves");
    // Past the re-key wait (1 s) and the grace period (2 s).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let mark = hush_proto::capture::read_capture(&capture)
        .expect("capture")
        .len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ann.stop().await.expect("ann");
    bob.stop().await.expect("bob");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    let records = hush_proto::capture::read_capture(&capture).expect("capture");

    let keys: Vec<Secret> = cy_report
        .key_log
        .iter()
        .filter_map(|e| match e {
            KeyEvent::InstallReceiveKey { base_key, .. } => Some(base_key.clone()),
            _ => None,
        })
        .collect();
    assert!(keys.len() >= 2, "cy held keys from both others");
    // Sanity: the harness opens frames cy was meant to read.
    let early_opened = records[..before]
        .iter()
        .filter(|r| opens(&keys, &r.payload))
        .count();
    assert!(
        early_opened > 20,
        "the attack harness opened only {early_opened} early frames"
    );
    let later = &records[mark..];
    assert!(
        later.len() > 100,
        "only {} frames after cy left",
        later.len()
    );
    let leaked = later.iter().filter(|r| opens(&keys, &r.payload)).count();
    assert_eq!(
        leaked,
        0,
        "cy decrypted {leaked} of {} frames sent after it left",
        later.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
