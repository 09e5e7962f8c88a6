//! Video through a lossy link (the seeded impairment relay of
//! [`hush_tests::impair`] between both clients and the SFU): NACK/RTX
//! repairs lost packets and the receiver's VP8 reassembly puts the late
//! retransmissions back in sequence, so at 5 % loss each way most frames
//! that lost a packet still decrypt; after a second of total loss, video
//! resumes; and end to end, frames never come twice or out of order.
//!
//! Frames are told apart by content: the built-in clip's 60 frames all
//! differ, so each decrypted frame is matched to the latest frame the
//! sender sent with that content (the clip loops every 4 s, far longer
//! than any delay here).
//!
//! Measured on the 2-core dev machine: 96.7 to 100 % of the frames sent
//! in the lossy 6 s decrypted (4 runs). Needing every packet of a frame
//! the first time gives about 85 % (printed as an estimate from the
//! relay's drop rates); the reassembly before the reorder buffer, which
//! dropped any frame with a late packet, measured 82 to 86 % and handed
//! some frames over twice or backwards. webrtc-rs's NACK generator never
//! sees a repaired packet (it looks before RTX is unwrapped), so unbounded
//! it NACKs each lost packet every 100 ms while it stays in its 512-packet
//! log, and str0m, past its default 15 % retransmission share, drops
//! queued resends: with that, 18 runs gave 90 to 100 %. hush's client now
//! asks at most twice per lost packet (`hush_client::setup`).
//!
//! After the burst the first frame decrypts about 120 to 175 ms after the
//! link comes back, and it is one sent during the burst: the SFU's NACKs
//! to the sender repair the whole second (str0m upstream, webrtc-rs's
//! 1,024-packet send buffer). Times are printed, never asserted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hush_client::audio::{AudioSource, OpusEncoder, audio_level};
use hush_client::call::{Call, Media};
use hush_client::frame::Codec;
use hush_client::session::{FrameInfo, Session};
use hush_client::video::Clip;
use hush_proto::ParticipantId as SigId;
use hush_tests::impair::{Impairment, Relay, RelayStats};
use hush_tests::lossy::server_behind_relay;
use hush_tests::{call_with, spec};

/// Share of the frames sent during 6 s at 5 % loss each way that must
/// decrypt: with the client asking at most twice per lost packet, 4 runs
/// gave 96.7–100 %; before that cap, 18 runs gave 90–100 %, and the
/// reassembly without a reorder buffer 82–86 %, with no retransmission an
/// estimated 85 %. Four frames of 90 below the worst capped run.
const MIN_DECRYPTED: f64 = 0.92;

/// A hang guard only, never a measurement.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// What a call member sent and decrypted, with when.
#[derive(Debug, Default)]
struct Log {
    /// Every video frame sent: when, and its index in the clip.
    sent: Vec<(Instant, usize)>,
    /// Every video frame decrypted: when, and its index in the clip
    /// (`None`: not a frame of the clip).
    received: Vec<(Instant, Option<usize>)>,
}

/// Call media: Opus from a sine and, for the sender, the built-in clip
/// looped; every video frame sent or decrypted is logged.
struct Camera {
    audio: AudioSource,
    encoder: OpusEncoder,
    clip: Option<Clip>,
    next: usize,
    interval: Duration,
    /// Clip index by frame content.
    index: Arc<HashMap<Vec<u8>, usize>>,
    log: Arc<Mutex<Log>>,
}

impl Media for Camera {
    fn video_interval(&self) -> Option<Duration> {
        self.clip.as_ref().map(|_| self.interval)
    }

    fn wants_video(&self) -> bool {
        true
    }

    fn audio_frame(&mut self) -> Result<Option<(Vec<u8>, u8)>, hush_client::Error> {
        let pcm = self.audio.next_frame();
        Ok(Some((self.encoder.encode(&pcm)?, audio_level(&pcm))))
    }

    fn video_frame(&mut self) -> Result<Option<Vec<u8>>, hush_client::Error> {
        let Some(clip) = &self.clip else {
            return Ok(None);
        };
        let frame = clip.frames[self.next % clip.frames.len()].data.clone();
        self.next += 1;
        Ok(Some(frame))
    }

    fn sent(&mut self, codec: Codec, frame: &[u8]) {
        if codec == Codec::Vp8
            && let Some(&i) = self.index.get(frame)
        {
            let mut log = self.log.lock().expect("log");
            log.sent.push((Instant::now(), i));
        }
    }

    fn received(
        &mut self,
        _from: SigId,
        codec: Codec,
        frame: Vec<u8>,
        _info: FrameInfo,
        _session: &Session,
    ) -> Result<(), hush_client::Error> {
        if codec == Codec::Vp8 {
            let i = self.index.get(&frame).copied();
            let mut log = self.log.lock().expect("log");
            log.received.push((Instant::now(), i));
        }
        Ok(())
    }
}

struct Member {
    call: Call<Camera>,
    log: Arc<Mutex<Log>>,
}

async fn start(
    server: &hush::local::LocalServer,
    name: &str,
    hz: f64,
    clip: Option<Clip>,
    index: &Arc<HashMap<Vec<u8>, usize>>,
) -> Member {
    let spec = spec(server, "video-loss", name, hz);
    let log = Arc::new(Mutex::new(Log::default()));
    let interval = clip.as_ref().map_or(Duration::from_millis(66), |c| {
        Duration::from_secs_f64(1.0 / c.fps.max(1.0))
    });
    let media = Camera {
        audio: spec.audio,
        encoder: OpusEncoder::new().expect("opus encoder"),
        clip,
        next: 0,
        interval,
        index: Arc::clone(index),
        log: Arc::clone(&log),
    };
    let call = call_with(&spec.join, media).await;
    Member { call, log }
}

impl Member {
    fn received(&self) -> usize {
        self.log.lock().expect("log").received.len()
    }

    /// Waits until more than `n` video frames have decrypted.
    async fn until_received_more_than(&self, n: usize, what: &str) {
        tokio::time::timeout(HANG_GUARD, async {
            while self.received() <= n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what}"));
    }
}

/// A received frame matched to the frame sent: its position in the
/// sender's log (the latest frame with that content sent before it
/// arrived), and when it arrived.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    sent: usize,
    at: Instant,
}

fn match_arrivals(
    sent: &[(Instant, usize)],
    received: &[(Instant, Option<usize>)],
) -> Vec<Arrival> {
    received
        .iter()
        .map(|&(at, index)| {
            let index = index.expect("only frames of the clip decrypt");
            let sent = sent
                .iter()
                .rposition(|&(t, i)| i == index && t <= at)
                .expect("a frame decrypted before it was sent");
            Arrival { sent, at }
        })
        .collect()
}

fn loss_rate(before: RelayStats, after: RelayStats) -> (f64, f64) {
    let rate = |seen: u64, dropped: u64| dropped as f64 / seen.max(1) as f64;
    (
        rate(
            after.up.seen - before.up.seen,
            after.up.dropped - before.up.dropped,
        ),
        rate(
            after.down.seen - before.down.seen,
            after.down.dropped - before.down.dropped,
        ),
    )
}

/// Packets the sample writer makes of a frame of `len` bytes: webrtc-rs
/// packetizes to 1,200 bytes with the 12-byte RTP header and a 1-byte VP8
/// descriptor; SFrame adds its header and 16-byte tag (about 20 bytes).
fn packets_of(len: usize) -> i32 {
    (len + 20).div_ceil(1200 - 12 - 1) as i32
}

/// The SFU's NACK and PLI counters, from its metrics text.
fn sfu_counters(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && (l.contains("_nacks_") || l.contains("_plis_")))
        .map(|l| l.trim_start_matches("hush_sfu_").replace("_total", ""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_survives_loss_and_resumes_after_a_burst() {
    let clip = Clip::test_pattern().expect("clip");
    let index: HashMap<Vec<u8>, usize> = clip
        .frames
        .iter()
        .enumerate()
        .map(|(i, f)| (f.data.clone(), i))
        .collect();
    assert_eq!(
        index.len(),
        clip.frames.len(),
        "every frame of the clip differs"
    );
    let sizes: Vec<usize> = clip.frames.iter().map(|f| f.data.len()).collect();
    let index = Arc::new(index);

    let (server, front, back) = server_behind_relay(hush_sfu::SfuConfig::default()).await;
    let clean = Impairment::default();
    let relay = Relay::start(front, back, clean, clean, 7)
        .await
        .expect("relay");
    let ann = start(&server, "ann", 440.0, Some(clip), &index).await;
    let bob = start(&server, "bob", 660.0, None, &index).await;
    bob.until_received_more_than(15, "bob never saw ann's video")
        .await;

    // (a) 5 % loss each way, 20 ± 5 ms, reordering.
    let lossy = Impairment {
        loss: 0.05,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        reorder: true,
        ..Impairment::default()
    };
    let r0 = relay.stats();
    relay.set(lossy, lossy);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let t1 = Instant::now();
    let r1 = relay.stats();

    // (b) A clean 20 ms link, then a second of total loss, then clean again.
    let delayed = Impairment {
        delay: Duration::from_millis(20),
        ..Impairment::default()
    };
    relay.set(delayed, delayed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let total = Impairment {
        loss: 1.0,
        ..Impairment::default()
    };
    let before_burst = bob.received();
    let b0 = Instant::now();
    relay.set(total, total);
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.set(delayed, delayed);
    let b1 = Instant::now();
    let during_burst = bob.received();
    bob.until_received_more_than(during_burst, "video never resumed after the burst")
        .await;
    // What arrives next: how the stream settles.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let ann_log = std::mem::take(&mut *ann.log.lock().expect("log"));
    let bob_log = std::mem::take(&mut *bob.log.lock().expect("log"));
    for m in [ann, bob] {
        m.call.leave().await.expect("leaves");
    }
    relay.stop().await;
    let nacks = sfu_counters(&server.sfu_metrics());
    server.stop().await;

    let arrivals = match_arrivals(&ann_log.sent, &bob_log.received);
    // End to end in sequence: never a frame twice, never one older than
    // one already decrypted.
    for w in arrivals.windows(2) {
        assert!(w[0].sent < w[1].sent, "frames went backwards: {w:?}");
    }

    // (a) Of the frames ann sent in the lossy window, how many bob decrypted.
    let in_window = |t: Instant| t >= t0 && t < t1;
    let sent: Vec<usize> = (0..ann_log.sent.len())
        .filter(|&g| in_window(ann_log.sent[g].0))
        .collect();
    let got: Vec<&Arrival> = arrivals
        .iter()
        .filter(|a| in_window(ann_log.sent[a.sent].0))
        .collect();
    let lost: Vec<usize> = sent
        .iter()
        .filter(|&&g| !got.iter().any(|a| a.sent == g))
        .map(|&g| ann_log.sent[g].1)
        .collect();
    let ratio = got.len() as f64 / sent.len().max(1) as f64;
    let (up, down) = loss_rate(r0, r1);
    let without_nack = sent
        .iter()
        .map(|&g| {
            let k = packets_of(sizes[ann_log.sent[g].1]);
            ((1.0 - up) * (1.0 - down)).powi(k)
        })
        .sum::<f64>()
        / sent.len().max(1) as f64;
    let mut delays: Vec<f64> = got
        .iter()
        .map(|a| millis(a.at - ann_log.sent[a.sent].0))
        .collect();
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = (delays.len().saturating_sub(1) as f64 * p) as usize;
        delays.get(i).copied().unwrap_or(f64::NAN)
    };
    eprintln!(
        "5 % loss each way (relay dropped {:.1} % up, {:.1} % down): bob decrypted {} of the {} \
         video frames ann sent in {:.1} s, {:.1} %; with every packet of a frame needed the first \
         time it would be about {:.1} %; lost clip frames {lost:?}; send to decrypt: median \
         {:.0} ms, 95th percentile {:.0} ms, max {:.0} ms; SFU over the call: {nacks}",
        up * 100.0,
        down * 100.0,
        got.len(),
        sent.len(),
        (t1 - t0).as_secs_f64(),
        ratio * 100.0,
        without_nack * 100.0,
        pct(0.5),
        pct(0.95),
        pct(1.0),
    );
    assert!(sent.len() >= 80, "ann sent {} frames in 6 s", sent.len());
    assert!(up > 0.02 && down > 0.02, "the link was lossy: {up} {down}");
    assert!(
        ratio >= MIN_DECRYPTED,
        "only {:.1} % of the frames decrypted",
        ratio * 100.0
    );

    // (b) After the burst.
    let last_before = arrivals[before_burst - 1];
    let first_after = arrivals
        .iter()
        .find(|a| a.at >= b1)
        .expect("a frame after the burst");
    let first_fresh = arrivals.iter().find(|a| ann_log.sent[a.sent].0 >= b1);
    let sent_in_burst = (0..ann_log.sent.len())
        .filter(|&g| ann_log.sent[g].0 >= b0 && ann_log.sent[g].0 < b1)
        .count();
    let recovered_from_burst = arrivals
        .iter()
        .filter(|a| ann_log.sent[a.sent].0 >= b0 && ann_log.sent[a.sent].0 < b1)
        .count();
    eprintln!(
        "1 s burst: first frame {:.0} ms after the link came back (frame {} after the last before \
         the burst, sent {:.0} ms before it arrived); first frame sent after the burst decrypted \
         {}; {} of the {} frames sent during the burst decrypted later",
        millis(first_after.at - b1),
        first_after.sent - last_before.sent,
        millis(first_after.at - ann_log.sent[first_after.sent].0),
        first_fresh.map_or("never".to_owned(), |a| format!(
            "{:.0} ms after the link came back",
            millis(a.at - b1)
        )),
        recovered_from_burst,
        sent_in_burst,
    );
    assert!(
        first_fresh.is_some(),
        "no frame sent after the burst decrypted"
    );
}
