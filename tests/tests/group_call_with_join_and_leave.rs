//! Four clients; one leaves, one joins late: every current member decodes
//! every other current member, and no frame is lost to the key changes.

use std::time::Duration;

use hush::local::LocalServer;
use hush_tests::{heard, heard_hz, join, spec, until_decrypted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_call_with_join_and_leave() {
    let server = LocalServer::start(None).await.expect("server");
    let tones = [
        ("ann", 440.0),
        ("bob", 554.37),
        ("cy", 659.25),
        ("dee", 783.99),
        ("eve", 880.0),
    ];
    let mut members = Vec::new();
    for &(name, hz) in &tones[..4] {
        members.push((name, hz, join(spec(&server, "group", name, hz)).await));
    }
    for (_, _, p) in &members {
        until_decrypted(p, 20).await;
    }
    // dee leaves; eve joins late.
    let (_, _, dee) = members.pop().expect("dee");
    let dee_report = dee.stop().await.expect("dee");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (name, hz) = tones[4];
    members.push((name, hz, join(spec(&server, "group", name, hz)).await));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut reports = Vec::new();
    for (name, hz, p) in members {
        reports.push((name, hz, p.stop().await.expect("report")));
    }
    for (name, _, r) in &reports {
        assert_eq!(
            r.stats.lost_to_key_change, 0,
            "{name} lost frames to key changes"
        );
        assert_eq!(
            r.stats.failed.values().sum::<u64>(),
            0,
            "{name}: {:?}",
            r.stats.failed
        );
        for (other, hz, _) in &reports {
            if other == name {
                continue;
            }
            let remote = heard(r, other).unwrap_or_else(|| panic!("{name} never heard {other}"));
            assert!(
                remote.audio_frames > 50,
                "{name} heard only {} frames of {other}",
                remote.audio_frames
            );
            let got = heard_hz(remote).expect("a tone");
            assert!(
                (got - hz).abs() <= 5.0,
                "{name} hears {other} at {got} Hz, sent {hz}"
            );
        }
    }
    assert_eq!(dee_report.stats.lost_to_key_change, 0);
    server.stop().await;
}
