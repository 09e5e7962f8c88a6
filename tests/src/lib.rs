//! Shared harness of the end-to-end tests: participants of a call on a
//! [`LocalServer`] (hush-server with its embedded SFU, in process, on an
//! ephemeral loopback port). Timeouts are hang guards only.

#![forbid(unsafe_code)]

pub mod impair;
pub mod lossy;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hush::local::LocalServer;
use hush_client::audio::{
    AudioSource, FRAME_SAMPLES, OpusDecoder, OpusEncoder, audio_level, dominant_frequency,
};
use hush_client::call::{Call, CallOptions, JoinSpec, Media};
use hush_client::frame::Codec;
use hush_client::participant::{Participant, ParticipantReport, ParticipantSpec, RemoteReport};
use hush_client::session::{HOLD_MS, Session, Stats};
use hush_e2ee::Identity;
use hush_proto::ParticipantId as SigId;

/// The spec of a participant `name` in `room` sending a sine at `hz`.
pub fn spec(server: &LocalServer, room: &str, name: &str, hz: f64) -> ParticipantSpec {
    ParticipantSpec {
        join: JoinSpec {
            server: server.url(),
            room: room.into(),
            name: name.into(),
            token: server.token(room, name).expect("token"),
            ca_file: None,
            insecure: false,
        },
        audio: AudioSource::sine(hz),
        video: None,
        record: None,
        e2ee: hush_e2ee::Config::default(),
        keep_plaintext: false,
        keep_keys: false,
        observer: None,
        bind: None,
        audio_redundancy: hush_proto::red::MAX_REDUNDANT,
    }
}

/// Starts a call of `join` with a fresh identity, default options and
/// the test's own `media`.
pub async fn call_with<M: Media>(join: &JoinSpec, media: M) -> Call<M> {
    Call::start(join, Identity::generate(), CallOptions::default(), media)
        .await
        .expect("call starts")
}

/// Starts a participant with a fresh identity.
pub async fn join(spec: ParticipantSpec) -> Participant {
    Participant::start(spec, Identity::generate())
        .await
        .expect("participant starts")
}

/// Asserts that ann and bob each decrypted at least 95 % of the frames the
/// other sent between two samples of their counters (`*0` before, `*1`
/// after), each having sent at least `min_sent`; prints the figures.
pub fn assert_heard_each_other(ann: (&Stats, &Stats), bob: (&Stats, &Stats), min_sent: u64) {
    let ((a0, a1), (b0, b1)) = (ann, bob);
    for (who, sent, decrypted) in [
        (
            "bob from ann",
            a1.sent - a0.sent,
            b1.decrypted - b0.decrypted,
        ),
        (
            "ann from bob",
            b1.sent - b0.sent,
            a1.decrypted - a0.decrypted,
        ),
    ] {
        assert!(sent >= min_sent, "{who}: only {sent} frames sent");
        let ratio = decrypted as f64 / sent as f64;
        eprintln!(
            "{who}: {decrypted} of {sent} frames decrypted ({:.1} %)",
            ratio * 100.0
        );
        assert!(ratio >= 0.95, "{who}: {decrypted} of {sent}");
    }
}

/// The frame counters of a running participant.
pub async fn stats(p: &Participant) -> hush_client::session::Stats {
    p.stats().await.expect("participant running")
}

/// Asserts that no stay in `reports` lost a frame to a key change or
/// failed to decrypt one, printing each stay's counts.
pub fn assert_no_frame_lost(reports: &[&ParticipantReport]) {
    for r in reports {
        println!(
            "{}: lost to key changes {}, failed {:?}",
            r.name, r.stats.lost_to_key_change, r.stats.failed
        );
        assert_eq!(
            r.stats.lost_to_key_change, 0,
            "{} lost frames to key changes",
            r.name
        );
        assert!(
            r.stats.failed.is_empty(),
            "{} failed frames: {:?}",
            r.name,
            r.stats.failed
        );
    }
}

/// Asserts that each report heard every other caller of `tones` (name,
/// Hz) at that frequency, within 5 Hz.
pub fn assert_heard_tones(reports: &[&ParticipantReport], tones: &[(&str, f64)]) {
    for r in reports {
        for (name, hz) in tones.iter().filter(|(n, _)| *n != r.name) {
            let remote = heard(r, name).unwrap_or_else(|| panic!("{} heard {name}", r.name));
            let got = heard_hz(remote).expect("a frequency");
            assert!(
                (got - hz).abs() < 5.0,
                "{} heard {name} at {got} Hz",
                r.name
            );
        }
    }
}

/// Waits until `p` has decrypted at least `n` frames.
pub async fn until_decrypted(p: &Participant, n: u64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while stats(p).await.decrypted < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hang guard: frames never decrypted");
}

/// What `report` heard from the member called `name` (its latest stay).
pub fn heard<'a>(report: &'a ParticipantReport, name: &str) -> Option<&'a RemoteReport> {
    report
        .remotes
        .values()
        .rev()
        .find(|r| r.name == name && r.audio_frames > 0)
}

/// The dominant frequency of what was decoded, after the codec's start-up.
pub fn heard_hz(remote: &RemoteReport) -> Option<f64> {
    dominant_frequency(remote.pcm.get(FRAME_SAMPLES * 10..)?)
}

/// A participant whose media keeps a record for audits: it sends its
/// spec's audio as Opus (as [`Participant`] does), can stop and resume
/// sending, and keeps every frame it sent and every frame that decrypted,
/// so a test can check that what decrypted is exactly what was sent.
#[derive(Debug)]
pub struct Witness {
    call: Call<WitnessMedia>,
    sending: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

/// What a [`Witness`] saw, when it stops.
#[derive(Debug, Default)]
pub struct WitnessLog {
    /// Display name.
    pub name: String,
    /// Every audio frame it sent (plaintext), with how often it sent it.
    pub sent: HashMap<Vec<u8>, u64>,
    /// Audio frames it sent.
    pub sent_frames: u64,
    /// What decrypted, per sender.
    pub heard: BTreeMap<SigId, Heard>,
}

/// What a [`Witness`] decrypted from one sender.
#[derive(Debug, Default)]
pub struct Heard {
    /// The sender's display name.
    pub name: String,
    /// Every frame that decrypted (plaintext), with how often.
    pub frames: HashMap<Vec<u8>, u64>,
    /// Frames that decrypted.
    pub decrypted: u64,
    /// Audio frames that also decoded as Opus.
    pub decoded: u64,
}

impl WitnessLog {
    /// What this witness decrypted from the member called `name`.
    pub fn heard(&self, name: &str) -> Option<&Heard> {
        self.heard.values().find(|h| h.name == name)
    }

    /// How many frames this witness decrypted from `sender` that `sender`
    /// never sent: a frame counts once for every copy beyond the copies
    /// the sender sent of it (replay protection lets a frame open once).
    pub fn not_sent_by(&self, sender: &WitnessLog) -> u64 {
        let Some(heard) = self.heard(&sender.name) else {
            return 0;
        };
        heard
            .frames
            .iter()
            .map(|(frame, &n)| n.saturating_sub(sender.sent.get(frame).copied().unwrap_or(0)))
            .sum()
    }
}

impl Witness {
    /// Joins with a fresh identity as `spec` says (its audio, join and
    /// e2ee settings; recording, video and the plaintext audit are not
    /// supported) and starts sending.
    pub async fn start(spec: ParticipantSpec) -> Self {
        let sending = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicU64::new(0));
        let media = WitnessMedia {
            encoder: OpusEncoder::new().expect("opus encoder"),
            audio: spec.audio,
            sending: Arc::clone(&sending),
            sent_count: Arc::clone(&sent),
            decoders: HashMap::new(),
            log: WitnessLog {
                name: spec.join.name.clone(),
                ..WitnessLog::default()
            },
        };
        let options = CallOptions {
            e2ee: spec.e2ee,
            ..CallOptions::default()
        };
        let call = Call::start(&spec.join, Identity::generate(), options, media)
            .await
            .expect("witness starts");
        Self {
            call,
            sending,
            sent,
        }
    }

    /// Starts or stops sending audio (frames are skipped while stopped).
    pub fn send(&self, on: bool) {
        self.sending.store(on, Ordering::SeqCst);
    }

    /// Audio frames sent so far (sealed and handed to the connection).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// The session's frame counters so far.
    pub async fn stats(&self) -> Stats {
        self.call.stats().await.expect("witness running")
    }

    /// Waits until it has decrypted at least `n` frames.
    pub async fn until_decrypted(&self, n: u64) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while self.stats().await.decrypted < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("hang guard: frames never decrypted");
    }

    /// Runs `f` on the session, on the driver's turn.
    pub async fn with_session<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> R + Send + 'static,
    ) -> R {
        self.call.with_session(f).await.expect("witness running")
    }

    /// Leaves and hands back the record and the session (its final counters).
    pub async fn stop(self) -> (WitnessLog, Session) {
        let ended = self.call.leave().await.expect("witness leaves");
        (ended.media.log, ended.session)
    }
}

/// Waits until no frame has arrived at any of `witnesses` for 300 ms (their
/// senders have stopped: what was in flight has landed), then for frames
/// held for a key to be decided (decrypted or given up after
/// [`HOLD_MS`]), and checks that nothing arrived meanwhile either. Their
/// counters are then final until someone sends again.
pub async fn until_quiet(witnesses: &[&Witness]) {
    async fn arrived(witnesses: &[&Witness]) -> Vec<u64> {
        let mut n = Vec::with_capacity(witnesses.len());
        for w in witnesses {
            n.push(w.stats().await.received);
        }
        n
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut last = arrived(witnesses).await;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = arrived(witnesses).await;
            if now != last {
                last = now;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(HOLD_MS + 250)).await;
            last = arrived(witnesses).await;
            if last == now {
                break;
            }
        }
    })
    .await
    .expect("hang guard: frames never stopped arriving");
}

struct WitnessMedia {
    audio: AudioSource,
    encoder: OpusEncoder,
    sending: Arc<AtomicBool>,
    sent_count: Arc<AtomicU64>,
    decoders: HashMap<SigId, OpusDecoder>,
    log: WitnessLog,
}

impl Media for WitnessMedia {
    fn audio_frame(&mut self) -> Result<Option<(Vec<u8>, u8)>, hush_client::Error> {
        if !self.sending.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let pcm = self.audio.next_frame();
        Ok(Some((self.encoder.encode(&pcm)?, audio_level(&pcm))))
    }

    fn sent(&mut self, codec: Codec, frame: &[u8]) {
        if codec == Codec::Opus {
            *self.log.sent.entry(frame.to_vec()).or_default() += 1;
            self.log.sent_frames += 1;
            self.sent_count.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn received(
        &mut self,
        from: SigId,
        codec: Codec,
        frame: Vec<u8>,
        _info: hush_client::session::FrameInfo,
        session: &Session,
    ) -> Result<(), hush_client::Error> {
        let heard = self.log.heard.entry(from).or_default();
        if heard.name.is_empty() {
            if let Some(p) = session.peers().find(|p| p.id == from) {
                heard.name = p.name.clone();
            }
        }
        heard.decrypted += 1;
        if codec == Codec::Opus {
            let decoder = match self.decoders.entry(from) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(OpusDecoder::new()?),
            };
            if decoder.decode(Some(&frame)).is_ok() {
                heard.decoded += 1;
            }
        }
        *heard.frames.entry(frame).or_default() += 1;
        Ok(())
    }
}
