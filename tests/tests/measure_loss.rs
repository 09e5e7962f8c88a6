//! Measurement, not a pass/fail test (ignored by default; run with
//! `cargo test -p hush-tests --test measure_loss -- --ignored --nocapture`):
//! audio played against packet loss (each way, through the impairment
//! relay, 20 ± 5 ms), with RED's two earlier frames and without, and the
//! uplink bytes each audio frame costs.

use std::time::Duration;

use hush_tests::lossy::{Link, lossy_call};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; prints a table"]
async fn audio_against_loss() {
    let seconds = std::env::var("HUSH_LOSS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!("| loss each way | RED | played | recovered | concealed | uplink bytes/frame |");
    println!("|---|---|---|---|---|---|");
    for loss in [0.0, 0.02, 0.05, 0.10, 0.15, 0.20] {
        for redundancy in [0, 2] {
            let link = Link {
                loss,
                delay: Duration::from_millis(20),
                jitter: Duration::from_millis(5),
                seed: 100 + (loss * 100.0) as u64,
            };
            let heard = lossy_call(link, seconds, redundancy).await;
            let played: u64 = heard.iter().map(|h| h.played).sum();
            let recovered: u64 = heard.iter().map(|h| h.recovered).sum();
            let concealed: u64 = heard.iter().map(|h| h.concealed).sum();
            let slots = (played + concealed).max(1) as f64;
            println!(
                "| {:.0} % | {} | {:.2} % | {:.2} % | {:.2} % | {:.0} |",
                loss * 100.0,
                if redundancy > 0 { "2 frames" } else { "off" },
                played as f64 * 100.0 / slots,
                recovered as f64 * 100.0 / slots,
                concealed as f64 * 100.0 / slots,
                heard[0].uplink_bytes_per_frame,
            );
        }
    }
}
