//! A 1:1 call whose media crosses a lossy link: the SFU announces
//! 127.0.0.2 and an impairment relay there ([`crate::impair`]) forwards to
//! where it really listens, 127.0.0.1, dropping and delaying packets in
//! each direction. What each side heard is measured from its recording.

use std::time::Duration;

use hush::local::LocalServer;
use hush_client::audio::{FRAME_SAMPLES, dominant_frequency};
use hush_client::participant::ParticipantReport;

use crate::impair::{Impairment, Relay};
use crate::{heard, join, spec, stats, until_decrypted};

/// The link of a lossy call, the same each way.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Packet loss, 0 to 1, each way (client → SFU and SFU → client).
    pub loss: f64,
    /// One-way delay added each way.
    pub delay: Duration,
    /// Uniform jitter (±) added each way; packets may be reordered.
    pub jitter: Duration,
    /// Seed of the loss and jitter draws.
    pub seed: u64,
}

/// What one side of a lossy call heard from the other.
#[derive(Debug, Clone)]
pub struct Heard {
    /// Listener, then speaker.
    pub who: String,
    /// 20 ms slots played from the frame's own packet or a redundant copy.
    pub played: u64,
    /// Of those, from a redundant copy (RED).
    pub recovered: u64,
    /// Slots concealed.
    pub concealed: u64,
    /// The listener's jitter buffer for this speaker (late, skipped, ...).
    pub jitter: hush_client::jitter::JitterStats,
    /// Frames the speaker sent while both were in the call (the window
    /// measured), and the 20 ms frames the recording holds.
    pub sent_in_window: u64,
    /// Frames in the listener's recording of the speaker.
    pub recorded_frames: u64,
    /// Frames the speaker sent in the whole call.
    pub sent_total: u64,
    /// 1 s pieces of the recording whose tone was not the speaker's.
    pub wrong_tone_seconds: usize,
    /// Seconds of recording checked for the tone.
    pub seconds_checked: usize,
    /// Bytes the relay carried from this speaker's client to the SFU, per
    /// frame sent (RTP payload and all headers of the packet).
    pub uplink_bytes_per_frame: f64,
}

impl Heard {
    /// Played slots over all slots that had to play something.
    pub fn played_ratio(&self) -> f64 {
        self.played as f64 / (self.played + self.concealed).max(1) as f64
    }
}

/// Runs ann (440 Hz) and bob (660 Hz) through `link` for `seconds` once
/// both hear each other (the link is clean until then), each repeating `redundancy` earlier frames, and
/// reports what each heard.
pub async fn lossy_call(link: Link, seconds: u64, redundancy: usize) -> Vec<Heard> {
    let (server, front, back) = server_behind_relay(hush_sfu::SfuConfig::default()).await;
    let way = Impairment {
        loss: link.loss,
        delay: link.delay,
        jitter: link.jitter,
        reorder: true,
        ..Impairment::default()
    };
    // The link is clean while the call connects (ICE, DTLS), then lossy:
    // what is measured is audio once media runs.
    let clean = Impairment::default();
    let relay = Relay::start(front, back, clean, clean, link.seed)
        .await
        .expect("relay");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut specs = Vec::new();
    for (name, hz) in [("ann", 440.0), ("bob", 660.0)] {
        let mut s = spec(&server, "lossy", name, hz);
        s.record = Some(dir.path().to_owned());
        s.audio_redundancy = redundancy;
        specs.push(s);
    }
    let bob_spec = specs.pop().expect("bob");
    let ann = join(specs.pop().expect("ann")).await;
    let bob = join(bob_spec).await;
    until_decrypted(&ann, 10).await;
    until_decrypted(&bob, 10).await;
    relay.set(way, way);
    let (a0, b0) = (stats(&ann).await, stats(&bob).await);
    let up0 = relay.stats();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (a1, b1) = (stats(&ann).await, stats(&bob).await);
    let up1 = relay.stats();
    let ra = ann.stop().await.expect("ann");
    let rb = bob.stop().await.expect("bob");
    relay.stop().await;
    server.stop().await;
    // Both clients share the relay's uplink: split it by frames sent.
    let frames_sent = (a1.sent - a0.sent + b1.sent - b0.sent).max(1);
    let up_bytes = (up1.up.bytes - up0.up.bytes) as f64 / frames_sent as f64;
    vec![
        measure(
            &rb,
            &ra,
            "ann",
            440.0,
            a1.sent - a0.sent,
            dir.path(),
            up_bytes,
        ),
        measure(
            &ra,
            &rb,
            "bob",
            660.0,
            b1.sent - b0.sent,
            dir.path(),
            up_bytes,
        ),
    ]
}

/// A server whose SFU (`config`, one worker) binds 127.0.0.1 and announces 127.0.0.2 (UDP only),
/// and the relay's front and back addresses: a relay at the front carries
/// every media packet.
pub async fn server_behind_relay(
    config: hush_sfu::SfuConfig,
) -> (LocalServer, std::net::SocketAddr, std::net::SocketAddr) {
    let server = LocalServer::start_with(hush_sfu::SfuConfig {
        public_ips: vec![std::net::IpAddr::from([127, 0, 0, 2])],
        // UDP only: the relay carries UDP.
        tcp_port: None,
        workers: 1,
        ..config
    })
    .await
    .expect("server");
    let back = server.sfu_udp_addrs()[0];
    let front = std::net::SocketAddr::from(([127, 0, 0, 2], back.port()));
    (server, front, back)
}

fn measure(
    listener: &ParticipantReport,
    speaker: &ParticipantReport,
    name: &str,
    hz: f64,
    sent_in_window: u64,
    dir: &std::path::Path,
    uplink_bytes_per_frame: f64,
) -> Heard {
    let remote = heard(listener, name).cloned().unwrap_or_default();
    let recorded = recorded_samples(dir, name);
    // The tone, second by second, after the codec's start-up.
    let seconds: Vec<&[i16]> = remote
        .pcm
        .get(FRAME_SAMPLES * 10..)
        .unwrap_or_default()
        .chunks_exact(48_000)
        .collect();
    let wrong = seconds
        .iter()
        .filter(|s| dominant_frequency(s).is_none_or(|f| (f - hz).abs() > 5.0))
        .count();
    Heard {
        who: format!("{} from {name}", listener.name),
        played: remote.audio_frames,
        recovered: remote.recovered,
        concealed: remote.concealed,
        jitter: remote.jitter,
        sent_in_window,
        recorded_frames: recorded / FRAME_SAMPLES as u64,
        sent_total: speaker.audio_sent,
        wrong_tone_seconds: wrong,
        seconds_checked: seconds.len(),
        uplink_bytes_per_frame,
    }
}

/// Samples in the recording of `name` in `dir` (its WAV file).
fn recorded_samples(dir: &std::path::Path, name: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wav"))
        .filter_map(|e| hound::WavReader::open(e.path()).ok())
        .map(|r| u64::from(r.duration()))
        .sum()
}
