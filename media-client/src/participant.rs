//! One participant of a call, end to end: the [`Call`] driver with Opus
//! audio and VP8 video (from IVF) out, and decoding and recording of what
//! decrypts. Used by `hush call`, `hush demo` and the end-to-end tests.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hush_e2ee::Identity;
use hush_proto::ParticipantId as SigId;

use crate::Error;
use crate::audio::{AudioSource, FRAME_SAMPLES, OpusDecoder, OpusEncoder, WavSink, audio_level};
use crate::call::{Call, CallOptions, EndReason, JoinSpec, Media};
use crate::frame::Codec;
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Slot};
use crate::session::{CallEvent, FrameInfo, Session, Stats};
use crate::transport::WebRtcConnector;
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
    /// The one local address media may use (`None`: every interface).
    pub bind: Option<std::net::IpAddr>,
    /// Earlier audio frames each packet repeats (RFC 2198 RED, 0 to 2;
    /// 2 by default, see [`hush_proto::red::MAX_REDUNDANT`]).
    pub audio_redundancy: usize,
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
    /// A member proved it is live (its first envelope authenticated);
    /// until then it is unconfirmed.
    PeerConfirmed {
        /// Display name.
        name: String,
    },
    /// A member left.
    PeerLeft {
        /// Display name.
        name: String,
    },
    /// Something went wrong but the call goes on.
    Warning(String),
    /// The media connection failed (ICE or DTLS) and ICE restarts did not
    /// bring it back: no frames flow any more. A warning says so too.
    MediaFailed,
    /// The media connection was lost; ICE restarts are under way.
    MediaInterrupted,
    /// The media connection is back.
    MediaRestored,
    /// The room's media moved to another SFU; a new media connection is
    /// being made (membership and keys unchanged). `MediaRestored` follows
    /// once it is up.
    MediaMoved,
    /// The server said it is closing the connection, and why.
    Closing(hush_proto::CloseReason),
}

/// What one participant saw of one remote member.
#[derive(Debug, Default, Clone)]
pub struct RemoteReport {
    /// Display name.
    pub name: String,
    /// Audio frames played from received data: the frame's own packet or
    /// a redundant copy in a later one (RED).
    pub audio_frames: u64,
    /// Of those, frames played from a redundant copy.
    pub recovered: u64,
    /// Audio slots concealed (Opus packet-loss concealment) because their
    /// frame was lost (it never arrived in time) or did not decode. Slots
    /// concealed while nothing at all arrived (`jitter.stalled`: the sender
    /// stopped, or its media stalled and came back in a burst) are not in it.
    pub concealed: u64,
    /// Frames that decrypted but did not decode, by reason (concealed).
    pub decode_errors: BTreeMap<String, u64>,
    /// What the jitter buffer saw (late, duplicate, skipped frames, the
    /// stalled end of the stream).
    pub jitter: JitterStats,
    /// Video frames decrypted.
    pub video_frames: u64,
    /// Played audio (48 kHz mono, concealment included), for quality measures.
    pub pcm: Vec<i16>,
    /// Safety number with this member.
    pub safety_number: Option<String>,
    /// Whether it proved it is live (see [`Observed::PeerConfirmed`]).
    pub confirmed: bool,
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
    /// How the call ended: we left, or the server closed the connection first.
    pub ended_by: Option<EndReason>,
    /// The media connection failed, as our WebRTC stack or the SFU said.
    pub media_failed: bool,
}

/// A running participant.
pub struct Participant {
    call: Call<ParticipantMedia>,
}

impl core::fmt::Debug for Participant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Participant")
    }
}

impl Participant {
    /// Joins with `identity` and starts sending and receiving.
    pub async fn start(spec: ParticipantSpec, identity: Identity) -> Result<Self, Error> {
        let options = CallOptions {
            e2ee: spec.e2ee,
            keep_key_log: spec.keep_keys,
            connector: std::sync::Arc::new(WebRtcConnector {
                bind: spec.bind,
                audio_redundancy: spec.audio_redundancy,
            }),
            ..CallOptions::default()
        };
        let join = spec.join.clone();
        let media = ParticipantMedia::new(spec)?;
        let call = Call::start(&join, identity, options, media).await?;
        Ok(Self { call })
    }

    /// The frame counters so far.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.call.stats().await
    }

    /// Leaves cleanly (a `leave` is sent, recordings are finalized) and reports.
    pub async fn stop(self) -> Result<ParticipantReport, Error> {
        let ended = self.call.leave().await?;
        let (mut media, session) = (ended.media, ended.session);
        media.drain_playout()?;
        let mut report = std::mem::take(&mut media.report);
        report.ended_by = Some(ended.reason);
        report.stats = session.stats().clone();
        report.unattributed_frames = report.stats.unattributed;
        report.key_log = session.key_log().to_vec();
        for peer in session.peers() {
            let r = report.remotes.entry(peer.id).or_default();
            r.name = peer.name.clone();
            r.safety_number = session.safety_number(peer.id).map(|n| n.to_string());
        }
        media.recorders.finish()?;
        Ok(report)
    }

    /// Vanishes without a `leave` (an abrupt departure).
    pub fn abort(self) {
        self.call.abort();
    }
}

/// A participant's media: Opus and VP8 out, decoding and recording in.
struct ParticipantMedia {
    audio: AudioSource,
    encoder: OpusEncoder,
    video: Option<Clip>,
    video_index: usize,
    keep_plaintext: bool,
    observer: Option<tokio::sync::mpsc::UnboundedSender<Observed>>,
    players: HashMap<SigId, Player>,
    recorders: Recorders,
    video_pts: HashMap<SigId, u64>,
    started: Instant,
    report: ParticipantReport,
}

impl ParticipantMedia {
    fn new(spec: ParticipantSpec) -> Result<Self, Error> {
        Ok(Self {
            encoder: OpusEncoder::new()?,
            report: ParticipantReport {
                name: spec.join.name,
                ..Default::default()
            },
            recorders: Recorders {
                dir: spec.record,
                wav: HashMap::new(),
                ivf: HashMap::new(),
            },
            audio: spec.audio,
            video: spec.video,
            video_index: 0,
            keep_plaintext: spec.keep_plaintext,
            observer: spec.observer,
            players: HashMap::new(),
            video_pts: HashMap::new(),
            started: Instant::now(),
        })
    }

    fn observe(&self, what: Observed) {
        if let Some(o) = &self.observer {
            // The display may have gone; the call does not depend on it.
            let _ = o.send(what);
        }
    }

    fn warn(&mut self, text: String) {
        self.observe(Observed::Warning(text.clone()));
        self.report.warnings.push(text);
    }

    /// Plays what is still buffered from every speaker (the call ended):
    /// the last moments reach the recordings and the counts.
    fn drain_playout(&mut self) -> Result<(), Error> {
        let senders: Vec<SigId> = self.players.keys().copied().collect();
        for from in senders {
            let slots = match self.players.get_mut(&from) {
                Some(p) => p.jitter.drain(),
                None => continue,
            };
            for slot in slots {
                self.play(from, slot)?;
            }
        }
        Ok(())
    }

    /// Plays one 20 ms slot of `from`'s audio: decodes its frame, or
    /// conceals a missing one or one that does not decode, and records it.
    fn play(&mut self, from: SigId, slot: Slot<(Vec<u8>, bool)>) -> Result<(), Error> {
        let Some(player) = self.players.get_mut(&from) else {
            return Ok(());
        };
        let remote = self.report.remotes.entry(from).or_default();
        let pcm = match slot {
            Slot::Idle => return Ok(()),
            Slot::Frame((frame, recovered)) => match player.decoder.decode(Some(&frame)) {
                Ok(pcm) => {
                    remote.audio_frames += 1;
                    remote.recovered += u64::from(recovered);
                    pcm
                }
                // A frame that authenticates but does not decode (a member's
                // broken encoder) is that slot's loss, not the call's end.
                Err(e) => {
                    let reason = match &e {
                        Error::OpusFrameSize { .. } => "frame_size".to_owned(),
                        other => other.to_string(),
                    };
                    let first = !remote.decode_errors.contains_key(&reason);
                    *remote.decode_errors.entry(reason).or_default() += 1;
                    let pcm = player.decoder.decode(None).unwrap_or([0; FRAME_SAMPLES]);
                    if first {
                        let name = remote.name.clone();
                        self.warn(format!("audio frame from {name} does not decode: {e}"));
                    }
                    pcm
                }
            },
            Slot::Missing => player.decoder.decode(None).unwrap_or([0; FRAME_SAMPLES]),
        };
        let remote = self.report.remotes.entry(from).or_default();
        remote.jitter = self
            .players
            .get(&from)
            .map(|p| p.jitter.stats())
            .unwrap_or_default();
        remote.concealed = remote.jitter.concealed + remote.decode_errors.values().sum::<u64>();
        if remote.pcm.len() < MAX_KEPT_SAMPLES {
            remote.pcm.extend_from_slice(&pcm);
        }
        let name = remote.name.clone();
        self.recorders.audio(from, &name, &pcm)
    }
}

/// One remote sender's audio playout: its jitter buffer and decoder.
struct Player {
    jitter: JitterBuffer<(Vec<u8>, bool)>,
    decoder: OpusDecoder,
}

impl Player {
    fn new() -> Result<Self, Error> {
        Ok(Self {
            jitter: JitterBuffer::new(JitterConfig::default()),
            decoder: OpusDecoder::new()?,
        })
    }
}

impl Media for ParticipantMedia {
    fn video_interval(&self) -> Option<Duration> {
        let fps = self.video.as_ref()?.fps.max(1.0);
        Some(Duration::from_secs_f64(1.0 / fps))
    }

    fn audio_frame(&mut self) -> Result<Option<(Vec<u8>, u8)>, Error> {
        let pcm = self.audio.next_frame();
        Ok(Some((self.encoder.encode(&pcm)?, audio_level(&pcm))))
    }

    fn video_frame(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let Some(clip) = &self.video else {
            return Ok(None);
        };
        let frame = clip.frames[self.video_index % clip.frames.len()]
            .data
            .clone();
        self.video_index += 1;
        Ok(Some(frame))
    }

    fn sent(&mut self, codec: Codec, frame: &[u8]) {
        match codec {
            Codec::Opus => self.report.audio_sent += 1,
            Codec::Vp8 => self.report.video_sent += 1,
        }
        if self.keep_plaintext && self.report.plaintext.len() < MAX_KEPT_PLAINTEXT {
            // The clear prefix is public by design; audit the encrypted part.
            let clear = crate::frame::clear_prefix_len(codec, frame);
            self.report.plaintext.push(frame[clear..].to_vec());
        }
    }

    fn received(
        &mut self,
        from: SigId,
        codec: Codec,
        frame: Vec<u8>,
        info: FrameInfo,
        session: &Session,
    ) -> Result<(), Error> {
        if self.report.join_to_first_frame.is_none() {
            self.report.join_to_first_frame = Some(self.started.elapsed());
        }
        let name = session
            .peers()
            .find(|p| p.id == from)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let remote = self.report.remotes.entry(from).or_default();
        if remote.name.is_empty() {
            remote.name = name.clone();
        }
        match codec {
            Codec::Opus => {
                let player = match self.players.entry(from) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(Player::new()?),
                };
                match info.timestamp {
                    // Over RTP: the playout clock ([`Media::tick`]) plays it in its slot.
                    Some(ts) => {
                        let now = self.started.elapsed().as_millis() as u64;
                        player
                            .jitter
                            .push(ts, now, !info.recovered, (frame, info.recovered));
                    }
                    // Handed in directly (a call without media): played at once.
                    None => {
                        let slot = Slot::Frame((frame, info.recovered));
                        self.play(from, slot)?;
                    }
                }
            }
            Codec::Vp8 => {
                remote.video_frames += 1;
                let pts = self.video_pts.entry(from).or_insert(0);
                self.recorders.video(from, &name, &frame, *pts)?;
                *pts += 1;
            }
        }
        Ok(())
    }

    fn tick(&mut self, _session: &Session) -> Result<(), Error> {
        let now = self.started.elapsed().as_millis() as u64;
        let senders: Vec<SigId> = self.players.keys().copied().collect();
        for from in senders {
            let slot = match self.players.get_mut(&from) {
                Some(p) => p.jitter.pop(now),
                None => continue,
            };
            self.play(from, slot)?;
        }
        Ok(())
    }

    fn event(&mut self, event: &CallEvent, session: &Session) -> Result<(), Error> {
        match event {
            CallEvent::Joined { you } => {
                self.report.id = Some(*you);
                self.observe(Observed::Joined);
            }
            CallEvent::PeerJoined(p) => {
                let safety_number = session
                    .safety_number(p.id)
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                self.observe(Observed::PeerJoined {
                    name: p.name.clone(),
                    identity: Box::new(p.identity),
                    safety_number,
                });
                self.report.remotes.entry(p.id).or_default().name = p.name.clone();
            }
            CallEvent::PeerConfirmed(p) => {
                self.observe(Observed::PeerConfirmed {
                    name: p.name.clone(),
                });
                self.report.remotes.entry(p.id).or_default().confirmed = true;
            }
            CallEvent::PeerLeft(p) => self.observe(Observed::PeerLeft {
                name: p.name.clone(),
            }),
            CallEvent::Warning(w) => {
                match w {
                    crate::session::Warning::MediaFailed => {
                        self.report.media_failed = true;
                        self.observe(Observed::MediaFailed);
                    }
                    crate::session::Warning::MediaInterrupted => {
                        self.observe(Observed::MediaInterrupted);
                    }
                    crate::session::Warning::MediaRestored => {
                        self.observe(Observed::MediaRestored);
                    }
                    crate::session::Warning::MediaMoved => {
                        self.observe(Observed::MediaMoved);
                    }
                    _ => {}
                }
                self.warn(w.to_string());
            }
            CallEvent::Closing(reason) => {
                self.observe(Observed::Closing(*reason));
                self.warn(format!("server closing the connection: {reason:?}"));
            }
            _ => {}
        }
        Ok(())
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
