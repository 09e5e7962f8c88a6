//! The client driver: one task owns a call's [`Session`], its signaling
//! connection and its media connection, and feeds the session, in order,
//! everything that happens to the call (server messages, media frames,
//! timers, the application's commands), carrying out what it returns.
//!
//! What differs between `hush call`, `hush demo` and the load tester's
//! simulated participants is only what media they send and what they do
//! with what they receive: the [`Media`] trait, whose methods run inside the
//! driver task. Nothing else shares the session, so there is no lock: the
//! application reads it through [`Call::with_session`], which runs on the
//! driver's turn like any other input.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hush_e2ee::{Config, Identity, Millis};
use hush_proto::{ClientMessage, ParticipantId as SigId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, SignalingError, TransportError};
use crate::frame::Codec;
use crate::session::{CallEvent, FrameInfo, Rtp, Session, Warning};
use crate::signal::{ConnectOptions, Signaling};
use crate::transport::{Connector, MediaConnection, TransportEvent, WebRtcConnector};

/// Where and how to join.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// Signaling server URL: `wss://host[:port]`, or `ws://` to a loopback
    /// address (e.g. `ws://127.0.0.1:7880`).
    pub server: String,
    /// Room id.
    pub room: String,
    /// Display name (must match the token).
    pub name: String,
    /// Join token.
    pub token: String,
    /// Extra CA certificates (PEM) trusted for `wss://`, besides the
    /// bundled Mozilla roots: for a server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Allow `ws://` (no TLS: the token and keys in clear text) to a host
    /// that is not a loopback address.
    pub insecure: bool,
}

impl JoinSpec {
    /// How the signaling connection is secured.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            ca_file: self.ca_file.clone(),
            insecure: self.insecure,
        }
    }
}

/// How the call's connections are set up.
#[derive(Clone)]
pub struct CallOptions {
    /// e2ee tunables.
    pub e2ee: Config,
    /// ICE timeouts of the media connection, or `None` for a call without
    /// one (signaling and keys only; frames come through [`Call::deliver_frame`]).
    pub media: Option<IceTimeouts>,
    /// What builds the media connection: webrtc-rs ([`WebRtcConnector`]) by default.
    pub connector: Arc<dyn Connector>,
    /// Keep every key event (tests that play a removed member).
    pub keep_key_log: bool,
}

impl core::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CallOptions")
            .field("e2ee", &self.e2ee)
            .field("media", &self.media)
            .field("keep_key_log", &self.keep_key_log)
            .finish_non_exhaustive()
    }
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            e2ee: Config::default(),
            media: Some(IceTimeouts::default()),
            connector: Arc::new(WebRtcConnector::default()),
            keep_key_log: false,
        }
    }
}

/// After how long an unanswered media connection counts as disconnected,
/// then failed.
#[derive(Debug, Clone, Copy)]
pub struct IceTimeouts {
    /// Until disconnected.
    pub disconnected: Duration,
    /// Until failed.
    pub failed: Duration,
}

impl Default for IceTimeouts {
    fn default() -> Self {
        Self {
            disconnected: Duration::from_secs(3),
            failed: Duration::from_secs(6),
        }
    }
}

/// What the application does with a call's media. Its methods run inside
/// the driver task, between the session's other inputs: they must not block.
pub trait Media: Send + 'static {
    /// Whether this call publishes audio (a frame every 20 ms).
    fn sends_audio(&self) -> bool {
        true
    }

    /// The time between outgoing video frames, if this call publishes video.
    fn video_interval(&self) -> Option<Duration> {
        None
    }

    /// Whether the media connection carries video, to send or only to receive.
    fn wants_video(&self) -> bool {
        self.video_interval().is_some()
    }

    /// The next 20 ms of audio, encoded, with its RFC 6464 level; `None` skips it.
    fn audio_frame(&mut self) -> Result<Option<(Vec<u8>, u8)>, Error> {
        Ok(None)
    }

    /// The next encoded video frame; `None` skips it.
    fn video_frame(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }

    /// A frame of ours was sealed and went out on the media connection.
    fn sent(&mut self, _codec: Codec, _frame: &[u8]) {}

    /// A member's frame decrypted (`info`: its RTP timestamp, and whether
    /// it was recovered from a later packet). An error ends the call.
    fn received(
        &mut self,
        from: SigId,
        codec: Codec,
        frame: Vec<u8>,
        info: FrameInfo,
        session: &Session,
    ) -> Result<(), Error>;

    /// Every 20 ms while the call has a media connection: the playout
    /// clock (a jitter buffer plays its next slot). An error ends the call.
    fn tick(&mut self, _session: &Session) -> Result<(), Error> {
        Ok(())
    }

    /// Whether [`Media::tick`] does anything. A call that neither sends
    /// audio nor plays on the 20 ms clock (a receiver that takes each
    /// frame as it comes) is not woken 50 times a second for nothing.
    fn plays(&self) -> bool {
        true
    }

    /// Anything else the application may show: joined, members arriving
    /// and leaving, warnings, the active speaker. An error ends the call.
    fn event(&mut self, _event: &CallEvent, _session: &Session) -> Result<(), Error> {
        Ok(())
    }
}

/// How a call ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// We left (a `leave` was sent).
    Left,
    /// We dropped the connection without a `leave`.
    Dropped,
    /// The server closed the signaling connection.
    ServerClosed,
}

/// What a call hands back when it ends: the application's media state, the
/// session (counters, members, safety numbers) and why it ended.
#[derive(Debug)]
pub struct Ended<M> {
    /// The application's media state.
    pub media: M,
    /// The session as the call left it.
    pub session: Session,
    /// Why the call ended.
    pub reason: EndReason,
}

type Inspect = Box<dyn FnOnce(&mut Session) + Send>;

enum Command {
    Close {
        leave: bool,
    },
    Inspect(Inspect),
    Frame {
        from: SigId,
        codec: Codec,
        data: Vec<u8>,
    },
}

/// A running call: the handle to its driver task.
pub struct Call<M> {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<Ended<M>, Error>>,
    failure: Arc<OnceLock<String>>,
}

impl<M> core::fmt::Debug for Call<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Call")
            .field("finished", &self.task.is_finished())
            .finish_non_exhaustive()
    }
}

/// The current time for the e2ee layer.
pub fn now() -> Millis {
    Millis::now_unix()
}

impl<M: Media> Call<M> {
    /// Connects, sends the join (and, with a media connection, our offer),
    /// and starts the driver.
    pub async fn start(
        spec: &JoinSpec,
        identity: Identity,
        options: CallOptions,
        media: M,
    ) -> Result<Self, Error> {
        let mut sig = Signaling::connect(&spec.server, &spec.connect_options()).await?;
        let (mut session, join) = Session::new(
            identity,
            &spec.room,
            &spec.name,
            &spec.token,
            now(),
            options.e2ee,
        )?;
        if options.keep_key_log {
            session.keep_key_log();
        }
        sig.send(&join).await?;
        let (transport, transport_events) = match options.media {
            Some(ice) => {
                let (t, events) = (options.connector)
                    .connect(media.wants_video(), ice.disconnected, ice.failed)
                    .await?;
                let offer = t.offer().await?;
                sig.send(&ClientMessage::SdpOffer { sdp: offer }).await?;
                (Some(t), Some(events))
            }
            None => (None, None),
        };
        let (commands, command_rx) = mpsc::channel(64);
        let failure = Arc::new(OnceLock::new());
        let driver = Driver {
            session,
            sig,
            connector: Arc::clone(&options.connector),
            ice: options.media,
            transport,
            transport_events,
            media,
            commands: command_rx,
            restart: Restart::default(),
            moved: false,
        };
        let why = Arc::clone(&failure);
        let task = tokio::spawn(async move {
            let result = driver.run().await;
            if let Err(e) = &result {
                let _ = why.set(e.to_string());
            }
            result
        });
        Ok(Self {
            commands,
            task,
            failure,
        })
    }

    /// Runs `f` on the session, on the driver's turn, and returns its result.
    pub async fn with_session<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = oneshot::channel();
        let inspect: Inspect = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        self.commands
            .send(Command::Inspect(inspect))
            .await
            .map_err(|_| Error::CallEnded)?;
        rx.await.map_err(|_| Error::CallEnded)
    }

    /// The session's frame counters so far.
    pub async fn stats(&self) -> Result<crate::session::Stats, Error> {
        self.with_session(|s| s.stats().clone()).await
    }

    /// Hands the driver a frame that arrived by other means than the media
    /// connection (a call without one); it is opened like any other, and
    /// what decrypts goes to [`Media::received`].
    pub async fn deliver_frame(
        &self,
        from: SigId,
        codec: Codec,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        self.commands
            .send(Command::Frame { from, codec, data })
            .await
            .map_err(|_| Error::CallEnded)
    }

    /// Whether the driver has ended (an error, or the server closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Why the driver ended, if it failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Leaves the room (a `leave` is sent), closes the media connection and
    /// returns what the call ended with.
    pub async fn leave(self) -> Result<Ended<M>, Error> {
        self.close(true).await
    }

    /// Closes the media connection and drops the signaling connection
    /// without a `leave` (the others see us go as on a lost connection).
    pub async fn drop_connection(self) -> Result<Ended<M>, Error> {
        self.close(false).await
    }

    async fn close(self, leave: bool) -> Result<Ended<M>, Error> {
        // A driver that already ended has its result waiting.
        let _ = self.commands.send(Command::Close { leave }).await;
        match self.task.await {
            Ok(r) => r,
            Err(_) => Err(Error::CallEnded),
        }
    }

    /// Vanishes at once: the driver task is aborted, nothing is closed
    /// politely (an abrupt departure).
    pub fn abort(self) {
        self.task.abort();
    }
}

struct Driver<M> {
    session: Session,
    sig: Signaling,
    /// What makes a new media connection (`media_moved`), and its timeouts.
    connector: Arc<dyn Connector>,
    ice: Option<IceTimeouts>,
    transport: Option<Box<dyn MediaConnection>>,
    transport_events: Option<mpsc::Receiver<TransportEvent>>,
    media: M,
    commands: mpsc::Receiver<Command>,
    restart: Restart,
    /// A new media connection (after `media_moved`) has not connected yet.
    moved: bool,
}

/// ICE restarts of a media connection that failed: when it failed, how
/// many offers went out, and when the next is due.
#[derive(Debug, Default)]
struct Restart {
    since: Option<tokio::time::Instant>,
    attempts: u32,
    next: Option<tokio::time::Instant>,
}

/// How long a failed media connection is given to come back through ICE
/// restarts before the call reports it failed.
pub const RESTART_BOUND: Duration = Duration::from_secs(20);

/// The wait before ICE restart attempt `n` (from 0): 0, 1, 2, 4, 8 s.
fn restart_backoff(n: u32) -> Duration {
    match n {
        0 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 1).min(3)),
    }
}

/// Most media events taken in before a playout tick.
const DRAIN_MAX: usize = 256;

/// What one turn of the loop decided.
enum Turn {
    Events(Vec<CallEvent>),
    Close { leave: bool },
    ServerClosed,
}

impl<M: Media> Driver<M> {
    async fn run(mut self) -> Result<Ended<M>, Error> {
        let result = self.turns().await;
        if let Some(t) = &self.transport {
            t.close().await;
        }
        let reason = match result {
            Ok(Turn::Close { leave: true }) => {
                let _ = self.sig.send(&ClientMessage::Leave).await;
                self.sig.close().await;
                EndReason::Left
            }
            Ok(Turn::Close { leave: false }) => EndReason::Dropped,
            Ok(_) => EndReason::ServerClosed,
            Err(e) => return Err(e),
        };
        Ok(Ended {
            media: self.media,
            session: self.session,
            reason,
        })
    }

    /// Runs turns until the call closes; returns the closing turn.
    async fn turns(&mut self) -> Result<Turn, Error> {
        let has_media = self.transport.is_some();
        let audio = has_media && self.media.sends_audio();
        let clock = has_media && (audio || self.media.plays());
        let video_interval = self.media.video_interval().filter(|_| has_media);
        let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
        let mut video_tick =
            tokio::time::interval(video_interval.unwrap_or(Duration::from_secs(3600)));
        // The session's next deadline, re-armed only when it changes: a
        // turn per frame received must not cost a timer of its own.
        let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let deadline = tokio::time::sleep_until(far());
        tokio::pin!(deadline);
        let mut armed: Option<Option<Millis>> = None;
        loop {
            let next = self.session.next_timeout();
            if armed != Some(next) {
                armed = Some(next);
                let at = next.map_or_else(far, |t| {
                    let wait = Duration::from_millis(t.0.saturating_sub(now().0));
                    tokio::time::Instant::now() + wait
                });
                deadline.as_mut().reset(at);
            }
            let turn = tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Close { leave }) => Turn::Close { leave },
                    // Every handle is gone: nobody can end the call politely any more.
                    None => Turn::Close { leave: true },
                    Some(Command::Inspect(f)) => {
                        f(&mut self.session);
                        Turn::Events(Vec::new())
                    }
                    Some(Command::Frame { from, codec, data }) => {
                        Turn::Events(self.session.receive_frame(from, codec, &data, now()))
                    }
                },
                msg = self.sig.recv() => match msg {
                    Some(Ok(m)) => Turn::Events(self.session.handle_server(m, now())),
                    Some(Err(e)) => Turn::Events(vec![CallEvent::Warning(Warning::Signaling(e))]),
                    None => Turn::ServerClosed,
                },
                () = &mut deadline => {
                    // Handled: arm again even if the deadline did not move.
                    armed = None;
                    Turn::Events(self.session.handle_timeout(now()))
                }
                _ = audio_tick.tick(), if clock => {
                    if audio {
                        self.send(Codec::Opus).await?;
                    }
                    // Frames that arrived while this task was busy go into
                    // the jitter buffer before it plays a slot, or a late
                    // turn would conceal frames that are already here.
                    self.drain_transport().await?;
                    self.media.tick(&self.session)?;
                    Turn::Events(Vec::new())
                }
                _ = video_tick.tick(), if video_interval.is_some() => {
                    self.send(Codec::Vp8).await?;
                    Turn::Events(Vec::new())
                }
                ev = recv(&mut self.transport_events) => self.on_transport(ev).await?,
                () = until(self.restart.next) => self.restart_ice().await?,
            };
            match turn {
                Turn::Events(events) => self.carry_out(events).await?,
                closing => return Ok(closing),
            }
        }
    }

    /// Seals the application's next frame of `codec` and sends it.
    async fn send(&mut self, codec: Codec) -> Result<(), Error> {
        let Some(transport) = &self.transport else {
            return Ok(());
        };
        if !self.session.can_send() {
            return Ok(());
        }
        let next = match codec {
            Codec::Opus => self.media.audio_frame()?,
            Codec::Vp8 => self.media.video_frame()?.map(|f| (f, 0)),
        };
        let Some((frame, level)) = next else {
            return Ok(());
        };
        let sealed = match self.session.seal(codec, &frame) {
            Ok(sealed) => sealed,
            // A broken frame from the source: skipped (and counted), the
            // call goes on.
            Err(Error::ShortFrame { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let sent = match codec {
            Codec::Opus => transport.send_audio(sealed, level).await,
            Codec::Vp8 => {
                let interval = self.media.video_interval().unwrap_or_default();
                transport.send_video(sealed, interval).await
            }
        };
        // A send that fails (connection not up yet) is a frame not sent, not an error of the call.
        if sent.is_ok() {
            self.media.sent(codec, &frame);
        }
        Ok(())
    }

    /// The media connection failed: restart ICE (at once, then with
    /// backoff) until it is back or [`RESTART_BOUND`] has passed; a
    /// connection that cannot restart fails the media at once.
    fn media_lost(&mut self) -> Vec<CallEvent> {
        let now = tokio::time::Instant::now();
        let since = *self.restart.since.get_or_insert(now);
        if now.duration_since(since) >= RESTART_BOUND {
            self.restart = Restart::default();
            return vec![CallEvent::Warning(Warning::MediaFailed)];
        }
        if self.restart.next.is_none() {
            self.restart.next = Some(now + restart_backoff(self.restart.attempts));
        }
        vec![CallEvent::Warning(Warning::MediaInterrupted)]
    }

    /// Sends an offer that restarts ICE, and schedules the next attempt
    /// in case this one does not bring the connection back.
    async fn restart_ice(&mut self) -> Result<Turn, Error> {
        let now = tokio::time::Instant::now();
        self.restart.next = None;
        let Some(since) = self.restart.since else {
            return Ok(Turn::Events(Vec::new()));
        };
        if now.duration_since(since) >= RESTART_BOUND {
            self.restart = Restart::default();
            return Ok(Turn::Events(vec![CallEvent::Warning(Warning::MediaFailed)]));
        }
        let Some(t) = &self.transport else {
            return Ok(Turn::Events(Vec::new()));
        };
        let offer = match t.restart_offer().await {
            Ok(offer) => offer,
            Err(e) => {
                self.restart = Restart::default();
                return Ok(Turn::Events(vec![
                    CallEvent::Warning(Warning::Media(e)),
                    CallEvent::Warning(Warning::MediaFailed),
                ]));
            }
        };
        self.restart.attempts += 1;
        self.restart.next = Some(now + restart_backoff(self.restart.attempts));
        Ok(Turn::Events(vec![CallEvent::Send(
            ClientMessage::SdpOffer { sdp: offer },
        )]))
    }

    /// Takes in what the media connection has already reported (at most
    /// [`DRAIN_MAX`] events), without waiting.
    async fn drain_transport(&mut self) -> Result<(), Error> {
        for _ in 0..DRAIN_MAX {
            let Some(rx) = self.transport_events.as_mut() else {
                return Ok(());
            };
            let event = match rx.try_recv() {
                Ok(event) => Some(event),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
            if let Turn::Events(events) = self.on_transport(event).await? {
                self.carry_out(events).await?;
            }
        }
        Ok(())
    }

    async fn on_transport(&mut self, event: Option<TransportEvent>) -> Result<Turn, Error> {
        Ok(Turn::Events(match event {
            Some(TransportEvent::Frame {
                stream_id,
                codec,
                data,
                timestamp,
                red,
                ..
            }) => self.session.receive_media(
                &stream_id,
                codec,
                &data,
                Some(Rtp { timestamp, red }),
                now(),
            ),
            Some(TransportEvent::IceCandidate(candidate)) => {
                vec![CallEvent::Send(ClientMessage::IceCandidate { candidate })]
            }
            Some(TransportEvent::Failed) => self.media_lost(),
            Some(TransportEvent::Connected) => {
                let restored = self.restart.since.is_some() || std::mem::take(&mut self.moved);
                self.restart = Restart::default();
                if restored {
                    vec![CallEvent::Warning(Warning::MediaRestored)]
                } else {
                    Vec::new()
                }
            }
            Some(_) => Vec::new(),
            None => {
                // The connection's event source is gone: it will say nothing more.
                self.transport_events = None;
                vec![CallEvent::Warning(Warning::MediaFailed)]
            }
        }))
    }

    /// Carries out the session's outputs, in order.
    async fn carry_out(&mut self, events: Vec<CallEvent>) -> Result<(), Error> {
        for event in events {
            match event {
                CallEvent::Send(m) => self.sig.send(&m).await?,
                CallEvent::Frame {
                    from,
                    codec,
                    frame,
                    info,
                } => {
                    self.media
                        .received(from, codec, frame, info, &self.session)?;
                }
                CallEvent::ServerError { code, message } if self.session.you().is_none() => {
                    // Refused before joining (bad token, full room): the call cannot go on.
                    return Err(SignalingError::JoinRefused { code, message }.into());
                }
                CallEvent::ServerError { code, message } => {
                    let closed = code == hush_proto::ErrorCode::MediaClosed;
                    let w = CallEvent::Warning(Warning::Server { code, message });
                    self.media.event(&w, &self.session)?;
                    if closed {
                        // The SFU gave up on our media connection (it never
                        // came up, or it failed) even if ours has not noticed.
                        let w = CallEvent::Warning(Warning::MediaFailed);
                        self.media.event(&w, &self.session)?;
                    }
                }
                CallEvent::SdpAnswer(sdp) => {
                    if let Some(t) = &self.transport {
                        if let Err(e) = t.apply_answer(sdp).await {
                            self.warn_media(e)?;
                        }
                    }
                }
                CallEvent::SdpOffer(sdp) => {
                    if let Some(t) = &self.transport {
                        match t.answer(sdp).await {
                            Ok(answer) => {
                                self.sig
                                    .send(&ClientMessage::SdpAnswer { sdp: answer })
                                    .await?
                            }
                            Err(e) => self.warn_media(e)?,
                        }
                    }
                }
                CallEvent::IceCandidate(c) => {
                    if let Some(t) = &self.transport {
                        if let Err(e) = t.add_ice_candidate(c).await {
                            self.warn_media(e)?;
                        }
                    }
                }
                CallEvent::MediaMoved => self.move_media().await?,
                other => self.media.event(&other, &self.session)?,
            }
        }
        Ok(())
    }

    /// The room's media moved to another SFU: the old connection is
    /// closed and a new one offered; keys and membership are untouched.
    async fn move_media(&mut self) -> Result<(), Error> {
        let Some(ice) = self.ice else {
            return Ok(()); // a call without media
        };
        self.media
            .event(&CallEvent::Warning(Warning::MediaMoved), &self.session)?;
        if let Some(old) = self.transport.take() {
            old.close().await;
        }
        self.transport_events = None;
        self.restart = Restart::default();
        self.moved = true;
        let (t, events) = match self
            .connector
            .connect(self.media.wants_video(), ice.disconnected, ice.failed)
            .await
        {
            Ok(connected) => connected,
            Err(e) => {
                self.warn_media(e)?;
                return self
                    .media
                    .event(&CallEvent::Warning(Warning::MediaFailed), &self.session);
            }
        };
        match t.offer().await {
            Ok(offer) => {
                self.sig
                    .send(&ClientMessage::SdpOffer { sdp: offer })
                    .await?
            }
            Err(e) => self.warn_media(e)?,
        }
        self.transport = Some(t);
        self.transport_events = Some(events);
        Ok(())
    }

    fn warn_media(&mut self, e: TransportError) -> Result<(), Error> {
        self.media
            .event(&CallEvent::Warning(Warning::Media(e)), &self.session)
    }
}

/// Waits until `at`; pending forever without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next event of an optional channel; pending forever without one.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A [`Media`] that sends nothing and forwards decrypted frames and member
/// events to a channel: for programs and tests that drive frames themselves.
/// The channel holds [`ChannelMedia::CAPACITY`] events; when the reader
/// falls behind, newer events are dropped, never the call.
#[derive(Debug)]
pub struct ChannelMedia {
    events: mpsc::Sender<CallEvent>,
}

impl ChannelMedia {
    /// How many events wait for the reader at most.
    pub const CAPACITY: usize = 1024;

    /// The media and the receiving end of its events.
    pub fn new() -> (Self, mpsc::Receiver<CallEvent>) {
        let (events, rx) = mpsc::channel(Self::CAPACITY);
        (Self { events }, rx)
    }
}

impl Media for ChannelMedia {
    fn sends_audio(&self) -> bool {
        false
    }

    fn received(
        &mut self,
        from: SigId,
        codec: Codec,
        frame: Vec<u8>,
        info: FrameInfo,
        _: &Session,
    ) -> Result<(), Error> {
        // The receiver may have stopped listening; the call goes on.
        let _ = self.events.try_send(CallEvent::Frame {
            from,
            codec,
            frame,
            info,
        });
        Ok(())
    }

    fn event(&mut self, event: &CallEvent, _: &Session) -> Result<(), Error> {
        let copy = match event {
            CallEvent::Joined { you } => CallEvent::Joined { you: *you },
            CallEvent::PeerJoined(p) => CallEvent::PeerJoined(p.clone()),
            CallEvent::PeerConfirmed(p) => CallEvent::PeerConfirmed(p.clone()),
            CallEvent::PeerLeft(p) => CallEvent::PeerLeft(p.clone()),
            _ => return Ok(()),
        };
        let _ = self.events.try_send(copy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_restarts_back_off_to_eight_seconds_and_fit_the_bound() {
        let waits: Vec<u64> = (0..7).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 8, 8]);
        // At least four attempts fit before the call reports failure.
        let first_four: Duration = (0..4).map(restart_backoff).sum();
        assert!(first_four < RESTART_BOUND);
    }
}
