//! A simulated participant for the load test: a real client (signaling,
//! e2ee key agreement, WebRTC to the SFU, SFrame on every frame) that sends
//! pre-built stamped payloads instead of running a codec, and checks the
//! stamp of every frame it decrypts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hush_e2ee::Identity;
use hush_signaling::{ClientMessage, ParticipantId as SigId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::Error;
use crate::call::{Call, JoinSpec, now};
use crate::frame::Codec;
use crate::loadtest::stamp::{self, Stamp};
use crate::loadtest::tally::Tally;
use crate::session::{CallEvent, Session, Stats};
use crate::transport::{Transport, TransportEvent};

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Media {
    /// Bytes of each 20 ms audio frame (Opus at 32 kbit/s is about 80).
    pub audio_bytes: usize,
    /// Video, if any.
    pub video: Option<VideoLoad>,
}

/// Video a publisher sends: VP8-sized frames at a bitrate.
#[derive(Debug, Clone, Copy)]
pub struct VideoLoad {
    /// Frames per second.
    pub fps: u32,
    /// Bytes of a delta frame.
    pub frame_bytes: usize,
    /// A key frame (four times larger) every this many frames.
    pub key_every: u32,
}

impl VideoLoad {
    /// Frames that average `kbps` at `fps`, with a key frame every second.
    pub fn at(kbps: u32, fps: u32) -> Self {
        let fps = fps.max(1);
        // Per second: (fps - 1) delta frames + one key frame of 4 deltas = fps + 3 deltas.
        let per_second = (kbps as usize * 1000 / 8).max(1);
        Self {
            fps,
            frame_bytes: (per_second / (fps as usize + 3)).max(64),
            key_every: fps,
        }
    }
}

/// A locked tally, shared with the coordinator.
pub type SharedTally = Arc<Mutex<Tally>>;

/// Locks a tally, recovering it if a holder panicked.
pub fn lock(t: &SharedTally) -> MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running simulated participant.
pub struct Peer {
    /// Its counts, read and reset by the coordinator.
    pub tally: SharedTally,
    session: Arc<Mutex<Session>>,
    stop: watch::Sender<bool>,
    ended: Arc<Mutex<Option<String>>>,
    task: JoinHandle<Result<(), Error>>,
}

impl core::fmt::Debug for Peer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Peer")
    }
}

impl Peer {
    /// Joins and starts; `index` names it in stamps, `publish` makes it send.
    pub async fn start(
        join: &JoinSpec,
        index: u32,
        publish: Option<Media>,
        receive_video: bool,
    ) -> Result<Self, Error> {
        let (call, events) =
            Call::start(join, Identity::generate(), hush_e2ee::Config::default()).await?;
        let video = publish.and_then(|m| m.video).is_some() || receive_video;
        let (transport, t_events) =
            Transport::with_ice_timeouts(video, super::ICE_DISCONNECTED, super::ICE_FAILED).await?;
        let offer = transport.offer().await?;
        call.send(ClientMessage::SdpOffer { sdp: offer }).await?;
        let tally = SharedTally::default();
        let session = call.session_handle();
        let (stop, stop_rx) = watch::channel(false);
        let ended = Arc::new(Mutex::new(None));
        let why = Arc::clone(&ended);
        let tally_ = Arc::clone(&tally);
        let task = tokio::spawn(async move {
            let result = run(
                call, events, transport, t_events, stop_rx, tally_, index, publish,
            )
            .await;
            if let Err(e) = &result {
                *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
            result
        });
        Ok(Self {
            tally,
            session,
            stop,
            ended,
            task,
        })
    }

    /// The session's frame counters (decryption failures among them).
    pub fn stats(&self) -> Stats {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats()
            .clone()
    }

    /// Whether the task has ended (an error or a closed connection).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Why the task ended, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops sending and receiving, closes the media connection and drops
    /// the signaling connection without a `leave` (the whole load test ends
    /// at once; nobody needs the rekeying a leave starts).
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::Transport(format!("peer task failed: {e}"))),
            Err(_) => Err(Error::Transport("peer did not stop within 5 s".into())),
        }
    }
}

struct Sender {
    index: u32,
    codec: Codec,
    seq: u64,
    frames: [Vec<u8>; 2],
    key_every: u64,
}

impl Sender {
    fn new(index: u32, codec: Codec, bytes: usize, key_every: u32) -> Self {
        let key_bytes = if codec == Codec::Vp8 {
            bytes * 4
        } else {
            bytes
        };
        Self {
            index,
            codec,
            seq: 0,
            frames: [
                stamp::template(codec, bytes, false),
                stamp::template(codec, key_bytes, true),
            ],
            key_every: u64::from(key_every.max(1)),
        }
    }

    /// The next frame, stamped now.
    fn next(&mut self) -> (Vec<u8>, u64) {
        let key = self.codec == Codec::Vp8 && self.seq % self.key_every == 0;
        let mut frame = self.frames[usize::from(key)].clone();
        let sent_us = stamp::now_us();
        stamp::stamp(
            &mut frame,
            Stamp {
                publisher: self.index,
                codec: self.codec,
                seq: self.seq,
                sent_us,
            },
        );
        self.seq += 1;
        (frame, sent_us)
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    call: Call,
    mut events: mpsc::UnboundedReceiver<CallEvent>,
    transport: Transport,
    mut t_events: mpsc::Receiver<TransportEvent>,
    mut stop: watch::Receiver<bool>,
    tally: SharedTally,
    index: u32,
    publish: Option<Media>,
) -> Result<(), Error> {
    let mut audio = publish.map(|m| Sender::new(index, Codec::Opus, m.audio_bytes, 1));
    let video_load = publish.and_then(|m| m.video);
    let mut video = video_load.map(|v| Sender::new(index, Codec::Vp8, v.frame_bytes, v.key_every));
    let frame_time = Duration::from_secs_f64(1.0 / f64::from(video_load.map_or(15, |v| v.fps)));
    let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
    let mut video_tick = tokio::time::interval(frame_time);
    let mut owners: HashMap<String, SigId> = HashMap::new();
    let mut joined = false;
    let result = loop {
        let mut decrypted: Vec<(Codec, Vec<u8>)> = Vec::new();
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            _ = audio_tick.tick(), if audio.is_some() => {
                if let Some(a) = audio.as_mut() {
                    send(&call, &transport, a, &tally, frame_time).await?;
                }
            }
            _ = video_tick.tick(), if video.is_some() => {
                if let Some(v) = video.as_mut() {
                    send(&call, &transport, v, &tally, frame_time).await?;
                }
            }
            ev = t_events.recv() => match ev {
                Some(TransportEvent::Frame { stream_id, codec, data, .. }) => {
                    if let Some(&from) = owners.get(&stream_id) {
                        for e in call.session().receive_frame(from, codec, &data, now()) {
                            if let CallEvent::Frame { codec, frame, .. } = e {
                                decrypted.push((codec, frame));
                            }
                        }
                    }
                }
                Some(TransportEvent::IceCandidate(c)) => {
                    call.send(ClientMessage::IceCandidate { candidate: c }).await?;
                }
                Some(TransportEvent::Failed) => break Err(Error::Transport("media connection failed".into())),
                Some(_) => {}
                None => break Err(Error::Transport("media connection closed".into())),
            },
            ev = events.recv() => match ev {
                Some(CallEvent::Joined { .. }) => joined = true,
                Some(CallEvent::SdpAnswer(sdp)) => transport.apply_answer(sdp).await?,
                Some(CallEvent::SdpOffer(sdp)) => {
                    let answer = transport.answer(sdp).await?;
                    call.send(ClientMessage::SdpAnswer { sdp: answer }).await?;
                }
                Some(CallEvent::IceCandidate(c)) => transport.add_ice_candidate(c).await?,
                Some(CallEvent::TrackAdded { publisher, stream_id, .. }) => {
                    owners.insert(stream_id, publisher);
                }
                Some(CallEvent::TrackRemoved { stream_id, .. }) => {
                    owners.remove(&stream_id);
                }
                Some(CallEvent::Frame { codec, frame, .. }) => decrypted.push((codec, frame)),
                Some(CallEvent::ServerError(w)) if !joined => {
                    break Err(Error::Signaling(format!("join refused: {w}")));
                }
                Some(_) => {}
                None => break Err(Error::Signaling("signaling connection closed".into())),
            },
        }
        if !decrypted.is_empty() {
            let at = stamp::now_us();
            let mut t = lock(&tally);
            for (codec, frame) in decrypted {
                match stamp::read(codec, &frame) {
                    Some(s) => t.on_received(s, at),
                    None => t.unstamped += 1,
                }
            }
        }
    };
    transport.close().await;
    call.abort();
    result
}

async fn send(
    call: &Call,
    transport: &Transport,
    sender: &mut Sender,
    tally: &SharedTally,
    frame_time: Duration,
) -> Result<(), Error> {
    let (sealed, sent_us) = {
        let mut s = call.session();
        if !s.can_send() {
            return Ok(());
        }
        let (frame, sent_us) = sender.next();
        (s.seal(sender.codec, &frame)?, sent_us)
    };
    let sent = match sender.codec {
        Codec::Opus => transport.send_audio(sealed, 40).await,
        Codec::Vp8 => transport.send_video(sealed, frame_time).await,
    };
    // A send that fails (connection not up yet) is a frame not sent, not an error of the test.
    if sent.is_ok() {
        lock(tally).on_sent(sender.codec, sent_us);
    }
    Ok(())
}
