//! `hush demo`: a real encrypted group call on this machine, needing no
//! setup. A hush-server with its embedded SFU on an ephemeral loopback port,
//! N participants that talk (a different tone each) and optionally show
//! video, one of them leaving and rejoining midway; then a report: frames
//! per participant, audio quality, join-to-first-frame time, safety numbers
//! and the ciphertext audit of everything the SFU forwarded.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hush_e2ee::Identity;

use hush_client::audio::{AudioSource, FRAME_SAMPLES, dominant_frequency, tone_snr_db};
use hush_client::call::JoinSpec;
use hush_client::participant::{Participant, ParticipantReport, ParticipantSpec};
use hush_client::video::Clip;

use crate::Error;
use crate::local::LocalServer;
use crate::progress;

/// What the demo does.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Participants (2 to 8).
    pub participants: usize,
    /// Length of the call in seconds.
    pub seconds: u64,
    /// Send the built-in VP8 clip too.
    pub video: bool,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

/// The demo's verdict and the report it printed.
#[derive(Debug)]
pub struct DemoOutcome {
    /// Whether the call really worked (every check below passed).
    pub ok: bool,
    /// The report text.
    pub report: String,
}

const NAMES: [&str; 8] = ["ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal"];
const TONES: [f64; 8] = [
    440.0, 554.37, 659.25, 783.99, 880.0, 987.77, 1108.73, 1318.51,
];
const ROOM: &str = "demo";

/// Runs the demo, printing progress to stderr; returns the report.
pub async fn run_demo(opts: DemoOptions) -> Result<DemoOutcome, Error> {
    let n = opts.participants.clamp(2, NAMES.len());
    let seconds = opts.seconds.max(2);
    let dir = std::env::temp_dir().join(format!("hush-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating a temporary directory"))?;
    let capture = dir.join("sfu-capture.bin");
    let server = LocalServer::start(Some(capture.clone())).await?;
    eprintln!(
        "hush-server with embedded SFU on {} (capture: {})",
        server.url(),
        capture.display()
    );
    let clip = if opts.video {
        Some(Clip::test_pattern()?)
    } else {
        None
    };
    let spec = |i: usize| -> Result<ParticipantSpec, Error> {
        Ok(ParticipantSpec {
            join: JoinSpec {
                server: server.url(),
                room: ROOM.into(),
                name: NAMES[i].into(),
                token: server.token(ROOM, NAMES[i])?,
                ca_file: None,
                insecure: false,
            },
            audio: AudioSource::sine(TONES[i]),
            video: clip.clone(),
            record: None,
            e2ee: hush_e2ee::Config::default(),
            keep_plaintext: true,
            keep_keys: false,
            observer: None,
            bind: None,
            audio_redundancy: hush_proto::red::MAX_REDUNDANT,
        })
    };
    let started = Instant::now();
    let mut running: Vec<Option<Participant>> = Vec::new();
    for i in 0..n {
        running.push(Some(
            Participant::start(spec(i)?, Identity::generate()).await?,
        ));
        eprintln!("  {} joined (tone {:.0} Hz)", NAMES[i], TONES[i]);
    }
    // Midway, the last participant leaves and comes back.
    let mover = n - 1;
    let mut earlier: Vec<ParticipantReport> = Vec::new();
    let half = Duration::from_secs(seconds) / 2;
    let mut rejoined = false;
    let total = Duration::from_secs(seconds);
    let bar = progress::bar("  call", seconds, "s", opts.progress);
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let el = started.elapsed();
        bar.set_position(el.as_secs().min(seconds));
        if !rejoined && el >= half {
            rejoined = true;
            if let Some(p) = running[mover].take() {
                earlier.push(p.stop().await?);
                bar.println(format!("  {} left", NAMES[mover]));
                tokio::time::sleep(Duration::from_millis(500)).await;
                running[mover] =
                    Some(Participant::start(spec(mover)?, Identity::generate()).await?);
                bar.println(format!("  {} rejoined", NAMES[mover]));
            }
        }
    }
    bar.finish_and_clear();
    let mut reports = Vec::new();
    for p in running.into_iter().flatten() {
        reports.push(p.stop().await?);
    }
    // Let the capture thread write its last records.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = audit(&capture, reports.iter().chain(earlier.iter()));
    server.stop().await;
    let (ok, report) = render(&reports, &earlier, &audit, n);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(DemoOutcome { ok, report })
}

/// The ciphertext audit: how many plaintext frames appear in what the SFU forwarded.
#[derive(Debug, Default)]
struct Audit {
    packets: usize,
    checked: usize,
    visible: usize,
    error: Option<String>,
}

fn audit<'a>(
    capture: &std::path::Path,
    reports: impl Iterator<Item = &'a ParticipantReport>,
) -> Audit {
    const W: usize = 16;
    let records = match hush_proto::capture::read_capture(capture) {
        Ok(r) => r,
        Err(e) => {
            return Audit {
                error: Some(e.to_string()),
                ..Default::default()
            };
        }
    };
    let mut windows: HashSet<&[u8]> = HashSet::new();
    for r in &records {
        for w in r.payload.windows(W) {
            windows.insert(w);
        }
    }
    let mut a = Audit {
        packets: records.len(),
        ..Default::default()
    };
    for report in reports {
        for frame in report.plaintext.iter().filter(|f| f.len() >= W) {
            a.checked += 1;
            if frame.windows(W).any(|w| windows.contains(w)) {
                a.visible += 1;
            }
        }
    }
    a
}

fn render(
    reports: &[ParticipantReport],
    earlier: &[ParticipantReport],
    audit: &Audit,
    n: usize,
) -> (bool, String) {
    let mut ok = true;
    let mut out = String::new();
    let tone_of = |name: &str| NAMES.iter().position(|x| *x == name).map(|i| TONES[i]);
    let _ = writeln!(
        out,
        "\nparticipant  sent  received  decrypted  failed  held  lost-to-key-change  join->first frame"
    );
    for r in earlier.iter().chain(reports) {
        let failed: u64 = r.stats.failed.values().sum();
        let first = r
            .join_to_first_frame
            .map_or("none".into(), |d| format!("{} ms", d.as_millis()));
        let label = if earlier.iter().any(|e| std::ptr::eq(e, r)) {
            format!("{} (1st)", r.name)
        } else {
            r.name.clone()
        };
        let _ = writeln!(
            out,
            "{label:<12} {:>5} {:>9} {:>10} {:>7} {:>5} {:>19}  {first}",
            r.stats.sent,
            r.stats.received,
            r.stats.decrypted,
            failed,
            r.stats.held_then_decrypted,
            r.stats.lost_to_key_change
        );
        ok &= failed == 0 && r.stats.decrypted > 0;
    }
    let _ = writeln!(
        out,
        "\naudio decoded (each listener, each speaker still in the call at the end):"
    );
    for r in reports {
        let present: Vec<_> = r
            .remotes
            .values()
            .filter(|x| reports.iter().any(|o| o.name == x.name))
            .collect();
        if present.len() + 1 < n {
            ok = false;
            let _ = writeln!(
                out,
                "  {} heard only {} of {} others",
                r.name,
                present.len(),
                n - 1
            );
        }
        for remote in present {
            let tail = remote.pcm.get(FRAME_SAMPLES * 10..).unwrap_or(&[]);
            let expect = tone_of(&remote.name).unwrap_or(0.0);
            let hz = dominant_frequency(tail);
            let snr = tone_snr_db(tail, expect);
            let good = hz.is_some_and(|h| (h - expect).abs() <= 5.0) && remote.audio_frames > 20;
            ok &= good;
            let _ = writeln!(
                out,
                "  {:<4} hears {:<4} {:>5} frames ({} recovered, {} concealed), {:>7} Hz (sent {:.0} Hz), SNR {:>5.1} dB, {} video frames {}",
                r.name,
                remote.name,
                remote.audio_frames,
                remote.recovered,
                remote.concealed,
                hz.map_or("-".into(), |h| format!("{h:.1}")),
                expect,
                snr,
                remote.video_frames,
                if good { "ok" } else { "BAD" }
            );
        }
    }
    let _ = writeln!(
        out,
        "\nsafety numbers (compare out of band; equal on both ends):"
    );
    let mut pairs: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in reports {
        for remote in r.remotes.values() {
            if let Some(sn) = &remote.safety_number {
                let key = if r.name < remote.name {
                    (r.name.clone(), remote.name.clone())
                } else {
                    (remote.name.clone(), r.name.clone())
                };
                if let Some(prev) = pairs.get(&key) {
                    if prev != sn {
                        ok = false;
                        let _ = writeln!(out, "  MISMATCH for {}-{}", key.0, key.1);
                    }
                } else {
                    pairs.insert(key, sn.clone());
                }
            }
        }
    }
    for ((a, b), sn) in &pairs {
        let _ = writeln!(out, "  {a:<4} - {b:<4} {sn}");
    }
    let _ = writeln!(
        out,
        "\nciphertext audit of the SFU's capture ({} forwarded packets):",
        audit.packets
    );
    match &audit.error {
        Some(e) => {
            ok = false;
            let _ = writeln!(out, "  could not read the capture: {e}");
        }
        None => {
            ok &= audit.visible == 0 && audit.checked > 0 && audit.packets > 0;
            let _ = writeln!(
                out,
                "  {} of {} plaintext frames visible to the SFU",
                audit.visible, audit.checked
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        if ok {
            "the call worked: every member heard every other, and the SFU saw only ciphertext"
        } else {
            "THE CALL DID NOT WORK AS IT SHOULD (see above)"
        }
    );
    (ok, out)
}
