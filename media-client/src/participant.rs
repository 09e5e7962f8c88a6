//! One participant of a call, end to end: signaling and keys ([`Call`]),
//! the WebRTC connection ([`Transport`]), audio (Opus) and video (VP8 from
//! IVF) out, decryption, decoding and recording in. Used by `hush call`,
//! `hush demo` and the end-to-end tests.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_e2ee::Identity;
use hush_signaling::{ClientMessage, ParticipantId as SigId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;
use crate::audio::{AudioSource, OpusDecoder, OpusEncoder, WavSink, audio_level};
use crate::call::{Call, JoinSpec, now};
use crate::frame::Codec;
use crate::session::{CallEvent, Stats};
use crate::transport::{Transport, TransportEvent};
use crate::video::{Clip, IvfWriter};

/// Most decoded samples kept per remote sender for quality checks (60 s).
const MAX_KEPT_SAMPLES: usize = 48_000 * 60;

/// Most plaintext frames kept for the ciphertext audit.
const MAX_KEPT_PLAINTEXT: usize = 20_000;

/// What one participant does.
#[derive(Debug)]
pub struct ParticipantSpec {
    /// Where to join.
    pub join: JoinSpec,
    /// Outgoing audio.
    pub audio: AudioSource,
    /// Outgoing video, looped.
    pub video: Option<Clip>,
    /// Directory for WAV (audio) and IVF (video) recordings of each remote member.
    pub record: Option<PathBuf>,
    /// e2ee tunables.
    pub e2ee: hush_e2ee::Config,
    /// Keep every plaintext frame sent, for the ciphertext audit.
    pub keep_plaintext: bool,
    /// Keep every key event (tests that play a removed member).
    pub keep_keys: bool,
    /// Where to report members arriving and leaving, for a live display.
    pub observer: Option<tokio::sync::mpsc::UnboundedSender<Observed>>,
}

/// What a live display learns while the call runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Observed {
    /// We are in the room.
    Joined,
    /// A member arrived.
    PeerJoined {
        /// Display name.
        name: String,
        /// Its identity key.
        identity: Box<hush_e2ee::PublicIdentity>,
        /// Our safety number with it.
        safety_number: String,
    },
    /// A member left.
    PeerLeft {
        /// Display name.
        name: String,
    },
    /// Something went wrong but the call goes on.
    Warning(String),
}

/// What one participant saw of one remote member.
#[derive(Debug, Default, Clone)]
pub struct RemoteReport {
    /// Display name.
    pub name: String,
    /// Audio frames decrypted and decoded.
    pub audio_frames: u64,
    /// Video frames decrypted.
    pub video_frames: u64,
    /// Decoded audio (48 kHz mono), for quality measures.
    pub pcm: Vec<i16>,
    /// Safety number with this member.
    pub safety_number: Option<String>,
}

/// What one participant did and saw.
#[derive(Debug, Default)]
pub struct ParticipantReport {
    /// Display name.
    pub name: String,
    /// Signaling id.
    pub id: Option<SigId>,
    /// Frame counters of the session.
    pub stats: Stats,
    /// Audio frames sent.
    pub audio_sent: u64,
    /// Video frames sent.
    pub video_sent: u64,
    /// Per remote member.
    pub remotes: BTreeMap<SigId, RemoteReport>,
    /// From starting to join until the first frame decrypted.
    pub join_to_first_frame: Option<Duration>,
    /// Plaintext frames sent (when asked to keep them).
    pub plaintext: Vec<Vec<u8>>,
    /// Warnings and server errors seen.
    pub warnings: Vec<String>,
    /// Frames that arrived on a stream no `track_added` named.
    pub unattributed_frames: u64,
    /// Every key event, when asked to keep them.
    pub key_log: Vec<hush_e2ee::KeyEvent>,
}

/// A running participant.
pub struct Participant {
    stop: watch::Sender<bool>,
    session: Arc<std::sync::Mutex<crate::session::Session>>,
    task: JoinHandle<Result<ParticipantReport, Error>>,
}

impl core::fmt::Debug for Participant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Participant")
    }
}

impl Participant {
    /// Joins with `identity` and starts sending and receiving.
    pub async fn start(spec: ParticipantSpec, identity: Identity) -> Result<Self, Error> {
        let (stop, stop_rx) = watch::channel(false);
        let started = Instant::now();
        let (call, events) = Call::start(&spec.join, identity, spec.e2ee).await?;
        let (transport, t_events) = Transport::new(spec.video.is_some()).await?;
        let offer = transport.offer().await?;
        call.send(ClientMessage::SdpOffer { sdp: offer }).await?;
        if spec.keep_keys {
            call.session().keep_key_log();
        }
        let session = call.session_handle();
        let task = tokio::spawn(run(
            spec,
            call,
            events,
            Arc::new(transport),
            t_events,
            stop_rx,
            started,
        ));
        Ok(Self {
            stop,
            session,
            task,
        })
    }

    /// The frame counters so far.
    pub fn stats(&self) -> Stats {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats()
            .clone()
    }

    /// Leaves cleanly (a `leave` is sent, recordings are finalized) and reports.
    pub async fn stop(self) -> Result<ParticipantReport, Error> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| Error::Transport(format!("participant task failed: {e}")))?
    }

    /// Vanishes without a `leave` (an abrupt departure).
    pub fn abort(self) {
        self.task.abort();
    }
}

struct Recorders {
    dir: Option<PathBuf>,
    wav: HashMap<SigId, WavSink>,
    ivf: HashMap<SigId, IvfWriter>,
}

impl Recorders {
    fn audio(&mut self, from: SigId, name: &str, pcm: &[i16]) -> Result<(), Error> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let sink = match self.wav.entry(from) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(WavSink::create(
                &dir.join(format!("{}-{from}.wav", file_safe(name))),
            )?),
        };
        sink.write(pcm)
    }

    fn video(&mut self, from: SigId, name: &str, frame: &[u8], pts: u64) -> Result<(), Error> {
        let Some(dir) = &self.dir else { return Ok(()) };
        // A recording starts at a key frame, so every player can decode it from the start.
        if !self.ivf.contains_key(&from) && !crate::frame::is_vp8_key_frame(frame) {
            return Ok(());
        }
        let writer = match self.ivf.entry(from) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(IvfWriter::create(
                &dir.join(format!("{}-{from}.ivf", file_safe(name))),
                320,
                240,
                15,
            )?),
        };
        writer.write(pts, frame)
    }

    fn finish(self) -> Result<(), Error> {
        for (_, w) in self.wav {
            w.finish()?;
        }
        for (_, w) in self.ivf {
            w.finish()?;
        }
        Ok(())
    }
}

fn observe(spec: &ParticipantSpec, what: Observed) {
    if let Some(o) = &spec.observer {
        // The display may have gone; the call does not depend on it.
        let _ = o.send(what);
    }
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut spec: ParticipantSpec,
    call: Call,
    mut events: tokio::sync::mpsc::UnboundedReceiver<CallEvent>,
    transport: Arc<Transport>,
    mut t_events: tokio::sync::mpsc::Receiver<TransportEvent>,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) -> Result<ParticipantReport, Error> {
    let mut report = ParticipantReport {
        name: spec.join.name.clone(),
        ..Default::default()
    };
    let mut encoder = OpusEncoder::new()?;
    let mut decoders: HashMap<SigId, OpusDecoder> = HashMap::new();
    let mut recorders = Recorders {
        dir: spec.record.clone(),
        wav: HashMap::new(),
        ivf: HashMap::new(),
    };
    let mut owners: HashMap<String, SigId> = HashMap::new();
    let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
    let fps = spec.video.as_ref().map_or(15.0, |c| c.fps.max(1.0));
    let frame_time = Duration::from_secs_f64(1.0 / fps);
    let mut video_tick = tokio::time::interval(frame_time);
    let mut video_index = 0usize;
    let mut video_pts: HashMap<SigId, u64> = HashMap::new();

    loop {
        // Decrypted frames to decode, from the transport or released by the session.
        let mut decrypted: Vec<(SigId, Codec, Vec<u8>)> = Vec::new();
        tokio::select! {
            _ = stop.changed() => break,
            _ = audio_tick.tick() => {
                let pcm = spec.audio.next_frame();
                let level = audio_level(&pcm);
                let frame = encoder.encode(&pcm)?;
                let sealed = {
                    let mut s = call.session();
                    if s.can_send() { Some(s.seal(Codec::Opus, &frame)?) } else { None }
                };
                if let Some(sealed) = sealed {
                    if spec.keep_plaintext && report.plaintext.len() < MAX_KEPT_PLAINTEXT {
                        report.plaintext.push(frame);
                    }
                    if transport.send_audio(sealed, level).await.is_ok() {
                        report.audio_sent += 1;
                    }
                }
            }
            _ = video_tick.tick(), if spec.video.is_some() => {
                let frame = spec.video.as_ref().map(|c| c.frames[video_index % c.frames.len()].data.clone()).unwrap_or_default();
                video_index += 1;
                let sealed = {
                    let mut s = call.session();
                    if s.can_send() { Some(s.seal(Codec::Vp8, &frame)?) } else { None }
                };
                if let Some(sealed) = sealed {
                    if spec.keep_plaintext && report.plaintext.len() < MAX_KEPT_PLAINTEXT {
                        // The clear prefix is public by design; audit the encrypted part.
                        let clear = crate::frame::clear_prefix_len(Codec::Vp8, &frame);
                        report.plaintext.push(frame[clear..].to_vec());
                    }
                    if transport.send_video(sealed, frame_time).await.is_ok() {
                        report.video_sent += 1;
                    }
                }
            }
            ev = t_events.recv() => match ev {
                Some(TransportEvent::Frame { stream_id, codec, data, .. }) => match owners.get(&stream_id) {
                    Some(&from) => {
                        let out = call.session().receive_frame(from, codec, &data, now());
                        for e in out {
                            if let CallEvent::Frame { from, codec, frame } = e {
                                decrypted.push((from, codec, frame));
                            }
                        }
                    }
                    None => report.unattributed_frames += 1,
                },
                Some(TransportEvent::IceCandidate(c)) => {
                    let _ = call.send(ClientMessage::IceCandidate { candidate: c }).await;
                }
                Some(TransportEvent::Failed) => report.warnings.push("media connection failed".into()),
                Some(_) => {}
                None => break,
            },
            ev = events.recv() => match ev {
                Some(CallEvent::Joined { you }) => {
                    report.id = Some(you);
                    observe(&spec, Observed::Joined);
                }
                Some(CallEvent::SdpAnswer(sdp)) => {
                    if let Err(e) = transport.apply_answer(sdp).await {
                        report.warnings.push(e.to_string());
                    }
                }
                Some(CallEvent::SdpOffer(sdp)) => match transport.answer(sdp).await {
                    Ok(answer) => call.send(ClientMessage::SdpAnswer { sdp: answer }).await?,
                    Err(e) => report.warnings.push(e.to_string()),
                },
                Some(CallEvent::IceCandidate(c)) => {
                    if let Err(e) = transport.add_ice_candidate(c).await {
                        report.warnings.push(e.to_string());
                    }
                }
                Some(CallEvent::TrackAdded { publisher, stream_id, .. }) => {
                    owners.insert(stream_id, publisher);
                }
                Some(CallEvent::TrackRemoved { stream_id, .. }) => {
                    owners.remove(&stream_id);
                }
                Some(CallEvent::PeerJoined(p)) => {
                    let safety_number = call.session().safety_number(p.id).map(|n| n.to_string()).unwrap_or_default();
                    observe(&spec, Observed::PeerJoined { name: p.name.clone(), identity: Box::new(p.identity), safety_number });
                    report.remotes.entry(p.id).or_default().name = p.name;
                }
                Some(CallEvent::PeerLeft(p)) => observe(&spec, Observed::PeerLeft { name: p.name }),
                Some(CallEvent::Frame { from, codec, frame }) => decrypted.push((from, codec, frame)),
                Some(CallEvent::ServerError(w)) if report.id.is_none() => {
                    // Refused before joining (bad token, full room): the call cannot go on.
                    transport.close().await;
                    return Err(Error::Signaling(format!("join refused: {w}")));
                }
                Some(CallEvent::Warning(w) | CallEvent::ServerError(w)) => {
                    observe(&spec, Observed::Warning(w.clone()));
                    report.warnings.push(w);
                }
                Some(_) => {}
                None => break,
            },
        }
        for (from, codec, frame) in decrypted {
            if report.join_to_first_frame.is_none() {
                report.join_to_first_frame = Some(started.elapsed());
            }
            let name = call
                .session()
                .peers()
                .find(|p| p.id == from)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            let remote = report.remotes.entry(from).or_default();
            if remote.name.is_empty() {
                remote.name = name.clone();
            }
            match codec {
                Codec::Opus => {
                    let decoder = match decoders.entry(from) {
                        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(OpusDecoder::new()?)
                        }
                    };
                    let pcm = decoder.decode(Some(&frame))?;
                    remote.audio_frames += 1;
                    if remote.pcm.len() < MAX_KEPT_SAMPLES {
                        remote.pcm.extend_from_slice(&pcm);
                    }
                    recorders.audio(from, &name, &pcm)?;
                }
                Codec::Vp8 => {
                    remote.video_frames += 1;
                    let pts = video_pts.entry(from).or_insert(0);
                    recorders.video(from, &name, &frame, *pts)?;
                    *pts += 1;
                }
            }
        }
    }
    {
        let s = call.session();
        report.stats = s.stats().clone();
        report.key_log = s.key_log().to_vec();
        for peer in s.peers() {
            let r = report.remotes.entry(peer.id).or_default();
            r.name = peer.name.clone();
            r.safety_number = s.safety_number(peer.id).map(|n| n.to_string());
        }
    }
    transport.close().await;
    let _ = call.leave().await;
    recorders.finish()?;
    Ok(report)
}
