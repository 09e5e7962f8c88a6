//! A simulated participant for the load test: a real client on the client
//! driver (signaling, e2ee key agreement, WebRTC to the SFU, SFrame on
//! every frame) whose [`Media`] sends pre-built stamped payloads instead of
//! running a codec, and checks the stamp of every frame it decrypts.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hush_client::call::{Call, CallOptions, IceTimeouts, JoinSpec, Media};
use hush_client::frame::Codec;
use hush_client::session::{CallEvent, Session, Stats, Warning};
use hush_client::transport::Connector;
use hush_client::{Error as ClientError, TransportError};
use hush_e2ee::Identity;
use hush_proto::ParticipantId as SigId;

use crate::Error;
use crate::loadtest::stamp::{self, Stamp};
use crate::loadtest::tally::Tally;

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Publish {
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
    call: Call<LoadMedia>,
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
        publish: Option<Publish>,
        receive_video: bool,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, Error> {
        let tally = SharedTally::default();
        let video = publish.and_then(|m| m.video);
        let media = LoadMedia {
            audio: publish.map(|m| Sender::new(index, Codec::Opus, m.audio_bytes, 1)),
            video: video.map(|v| Sender::new(index, Codec::Vp8, v.frame_bytes, v.key_every)),
            frame_time: Duration::from_secs_f64(1.0 / f64::from(video.map_or(15, |v| v.fps))),
            receive_video,
            tally: Arc::clone(&tally),
            last: None,
        };
        let options = CallOptions {
            media: Some(IceTimeouts {
                disconnected: super::ICE_DISCONNECTED,
                failed: super::ICE_FAILED,
            }),
            connector,
            ..CallOptions::default()
        };
        let call = Call::start(join, Identity::generate(), options, media).await?;
        Ok(Self { tally, call })
    }

    /// The session's frame counters (decryption failures among them).
    pub async fn stats(&self) -> Stats {
        // A peer whose call ended has no counters to add.
        self.call.stats().await.unwrap_or_default()
    }

    /// Whether its call has ended (an error or a closed connection).
    pub fn finished(&self) -> bool {
        self.call.is_finished()
    }

    /// Why its call ended, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.call.failure().map(str::to_owned)
    }

    /// Stops sending and receiving, closes the media connection and drops
    /// the signaling connection without a `leave` (the whole load test ends
    /// at once; nobody needs the rekeying a leave starts).
    pub async fn stop(self) -> Result<(), Error> {
        match tokio::time::timeout(Duration::from_secs(5), self.call.drop_connection()).await {
            Ok(r) => r.map(|_| ()).map_err(Error::from),
            Err(_) => Err(Error::LoadTest("peer did not stop within 5 s".into())),
        }
    }
}

/// The simulated participant's media: stamped frames out, stamps checked in.
struct LoadMedia {
    audio: Option<Sender>,
    video: Option<Sender>,
    frame_time: Duration,
    receive_video: bool,
    tally: SharedTally,
    /// The send time of the frame last handed to the driver (which seals
    /// and sends it, then calls `sent`, in the same turn).
    last: Option<(Codec, u64)>,
}

impl Media for LoadMedia {
    fn sends_audio(&self) -> bool {
        self.audio.is_some()
    }

    fn video_interval(&self) -> Option<Duration> {
        self.video.as_ref().map(|_| self.frame_time)
    }

    fn wants_video(&self) -> bool {
        self.video.is_some() || self.receive_video
    }

    fn plays(&self) -> bool {
        // Each frame is tallied as it arrives; nothing plays on a clock.
        false
    }

    fn audio_frame(&mut self) -> Result<Option<(Vec<u8>, u8)>, ClientError> {
        Ok(self.audio.as_mut().map(|a| {
            let (frame, sent_us) = a.next();
            self.last = Some((Codec::Opus, sent_us));
            (frame, 40)
        }))
    }

    fn video_frame(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.video.as_mut().map(|v| {
            let (frame, sent_us) = v.next();
            self.last = Some((Codec::Vp8, sent_us));
            frame
        }))
    }

    fn sent(&mut self, codec: Codec, _frame: &[u8]) {
        // A frame that was not sent (connection not up yet) is not counted.
        if let Some((c, sent_us)) = self.last.take().filter(|(c, _)| *c == codec) {
            lock(&self.tally).on_sent(c, sent_us);
        }
    }

    fn received(
        &mut self,
        _from: SigId,
        codec: Codec,
        frame: Vec<u8>,
        info: hush_client::session::FrameInfo,
        _: &Session,
    ) -> Result<(), ClientError> {
        let (at, now) = (stamp::now_us(), Instant::now());
        let mut t = lock(&self.tally);
        match stamp::read(codec, &frame) {
            Some(s) => t.on_received(s, info.recovered, at, now),
            None => t.unstamped += 1,
        }
        Ok(())
    }

    fn event(&mut self, event: &CallEvent, _: &Session) -> Result<(), ClientError> {
        match event {
            // A simulated participant whose media fails ends: the load test reports why.
            CallEvent::Warning(Warning::MediaFailed) => Err(TransportError::Failed.into()),
            _ => Ok(()),
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
