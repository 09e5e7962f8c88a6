//! Two clients, a 440 Hz sine each way for 5 s: each decodes the other's
//! audio at 440 ± 5 Hz, and at least 95 % of the frames sent while both
//! were connected are decoded.

use std::time::Duration;

use hush::local::LocalServer;
use hush_tests::{assert_heard_each_other, heard, heard_hz, join, spec, stats, until_decrypted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_call() {
    let server = LocalServer::start(None).await.expect("server");
    let a = join(spec(&server, "one", "ann", 440.0)).await;
    let b = join(spec(&server, "one", "bob", 440.0)).await;
    until_decrypted(&a, 5).await;
    until_decrypted(&b, 5).await;
    let (a0, b0) = (stats(&a).await, stats(&b).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (a1, b1) = (stats(&a).await, stats(&b).await);
    let ra = a.stop().await.expect("ann");
    let rb = b.stop().await.expect("bob");
    assert_heard_each_other((&a0, &a1), (&b0, &b1), 200);
    for (r, other) in [(&ra, "bob"), (&rb, "ann")] {
        let remote = heard(r, other).expect("heard the other");
        let hz = heard_hz(remote).expect("a tone");
        assert!(
            (hz - 440.0).abs() <= 5.0,
            "{} hears {other} at {hz} Hz",
            r.name
        );
        assert_eq!(
            r.stats.failed.values().sum::<u64>(),
            0,
            "{:?}",
            r.stats.failed
        );
    }
    server.stop().await;
}
