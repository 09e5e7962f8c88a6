//! Audio through a lossy link (a seeded userspace impairment relay
//! between both clients and the SFU; PROTOCOL.md §11's RED carries each
//! frame and the two before it): at 5 % loss each way at least 99 % of
//! the 20 ms slots play from a real or recovered frame, at 15 % at least
//! 95 %; recordings last as long as the call, and hold the right tone
//! throughout.

use std::time::Duration;

use hush_tests::lossy::{Heard, Link, lossy_call};

fn check(heard: &[Heard], min_played: f64) {
    for h in heard {
        eprintln!(
            "{}: {} played ({} recovered), {} concealed: {:.2} % played; recording {} frames for {} sent in the window ({} in all); {} of {} seconds off tone; {:.0} uplink bytes per frame; {:?}",
            h.who,
            h.played,
            h.recovered,
            h.concealed,
            h.played_ratio() * 100.0,
            h.recorded_frames,
            h.sent_in_window,
            h.sent_total,
            h.wrong_tone_seconds,
            h.seconds_checked,
            h.uplink_bytes_per_frame,
            h.jitter,
        );
    }
    for h in heard {
        assert!(h.played_ratio() >= min_played, "{h:?}");
        // Losses happened and redundancy filled them.
        assert!(h.recovered > 0, "{h:?}");
        // The recording covers the whole window the speaker was heard in
        // (within 2 %), and never more than the speaker sent plus the
        // concealed end of its stream.
        assert!(
            h.recorded_frames as f64 >= h.sent_in_window as f64 * 0.98,
            "{h:?}"
        );
        assert!(h.recorded_frames <= h.sent_total + 10, "{h:?}");
        assert!(h.seconds_checked >= 5, "{h:?}");
        assert_eq!(h.wrong_tone_seconds, 0, "{h:?}");
    }
}

/// One test, so the two calls do not share the cores with each other:
/// lateness from a starved process is not what is measured here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_through_5_and_15_percent_loss_each_way() {
    // 12 s is 600 frames; at 15 % each way about 2 % of frames lose all
    // three copies, so that call runs longer for a steadier count.
    for (loss, seed, seconds, min_played) in [(0.05, 5, 12, 0.99), (0.15, 15, 20, 0.95)] {
        let link = Link {
            loss,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            seed,
        };
        eprintln!("{:.0} % loss each way:", loss * 100.0);
        check(&lossy_call(link, seconds, 2).await, min_played);
    }
}
