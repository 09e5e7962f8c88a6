//! With the SFU capturing every payload it forwards, no plaintext frame
//! (audio or video) appears anywhere in the capture, while the receivers
//! decode everything.

use std::collections::HashSet;
use std::time::Duration;

use hush::local::LocalServer;
use hush_client::video::Clip;
use hush_tests::{heard, join, spec, until_decrypted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sfu_sees_only_ciphertext() {
    let dir = std::env::temp_dir().join(format!("hush-capture-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let capture = dir.join("capture.bin");
    let server = LocalServer::start(Some(capture.clone()))
        .await
        .expect("server");
    let mut ps = Vec::new();
    for (name, hz) in [("ann", 440.0), ("bob", 660.0)] {
        let mut s = spec(&server, "audit", name, hz);
        s.keep_plaintext = true;
        s.video = Some(Clip::test_pattern().expect("clip"));
        ps.push(join(s).await);
    }
    for p in &ps {
        until_decrypted(p, 20).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut reports = Vec::new();
    for p in ps {
        reports.push(p.stop().await.expect("report"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    let records = hush_proto::capture::read_capture(&capture).expect("capture");
    assert!(
        records.len() > 200,
        "the SFU forwarded {} packets",
        records.len()
    );
    let windows: HashSet<&[u8]> = records.iter().flat_map(|r| r.payload.windows(12)).collect();
    let mut checked = 0;
    for r in &reports {
        for frame in r.plaintext.iter().filter(|f| f.len() >= 12) {
            checked += 1;
            assert!(
                !frame.windows(12).any(|w| windows.contains(w)),
                "{} sent a frame the SFU could read",
                r.name
            );
        }
    }
    assert!(checked > 300, "checked {checked} frames");
    for (r, other) in [(&reports[0], "bob"), (&reports[1], "ann")] {
        let remote = heard(r, other).expect("heard");
        assert!(
            remote.audio_frames > 100 && remote.video_frames > 20,
            "{}: {remote:?}",
            r.name
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
