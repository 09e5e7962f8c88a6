//! The transport: one webrtc-rs peer connection per participant, driven by
//! the routing core.
//!
//! Two kinds of work, kept apart:
//!
//! - **Control** (joins, SDP, ICE, track arrival and departure, key-frame
//!   requests, audio levels, connection failures) runs in one task that
//!   owns the [`Router`] and every peer connection, one command at a time.
//!   Serialising it removes every ordering race between, say, a track
//!   arriving and its publisher leaving.
//! - **Forwarding** never touches the control task. Each published track
//!   has a reader task that hands every packet to each subscriber's
//!   bounded queue with `try_send` (full: drop and count), and each
//!   subscription has a writer task that rewrites SSRC, payload type and
//!   header extensions for its leg and writes to the subscriber's
//!   connection. A slow subscriber fills only its own queue.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hush_proto::capture::CaptureRecord;
use hush_proto::media::AUDIO_LEVEL_URI;
use hush_proto::{IceCandidate, MediaKind, ParticipantId, RoomId};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceGatheringState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionIceEvent,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::capture::CaptureWriter;
use crate::error::Error;
use crate::ids::{TrackId, TrackKey};
use crate::metrics::{DropReason, Metrics};
use crate::routing::{AudioLevel, Decision, Router, RoutingConfig};
use crate::setup;

/// A test hook that may replace a forwarded payload before it reaches any
/// subscriber: a tampering (or forging) SFU, for tests that check clients
/// detect it. Returns `Some(bytes)` to substitute. Exists only with the
/// `test-hooks` feature, which no production build enables.
#[cfg(feature = "test-hooks")]
#[derive(Clone)]
pub struct TamperHook(pub Arc<TamperFn>);

/// The function a [`TamperHook`] wraps: payload in, replacement out.
#[cfg(feature = "test-hooks")]
pub type TamperFn = dyn Fn(MediaKind, &[u8]) -> Option<Vec<u8>> + Send + Sync;

#[cfg(feature = "test-hooks")]
impl std::fmt::Debug for TamperHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TamperHook")
    }
}

/// How the SFU runs.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Local UDP addresses: for the str0m transport the first is where
    /// worker 0 binds (worker i at port + i; port 0 picks free ports); for
    /// webrtc-rs, where each peer connection gathers host candidates.
    pub udp_addrs: Vec<SocketAddr>,
    /// Routing decisions: key-frame rate limit, active speaker.
    pub routing: RoutingConfig,
    /// Packets that may wait for one subscriber's connection before new
    /// ones for it are dropped (and counted as `queue_full`); webrtc-rs
    /// transport only.
    pub subscriber_queue: usize,
    /// Events that may wait for the signaling layer per participant; a
    /// participant whose events are not consumed beyond this is removed.
    pub event_queue: usize,
    /// Write every forwarded payload to this file (format: [`hush_proto::capture`]).
    pub capture: Option<PathBuf>,
    /// Test hook: a tampering SFU (see [`TamperHook`]); only with the
    /// `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub tamper: Option<TamperHook>,
    /// ICE reports "disconnected" after this long without traffic.
    pub ice_disconnected_timeout: Duration,
    /// ICE reports "failed" (and the participant is removed) after this long.
    pub ice_failed_timeout: Duration,
    /// How long an answer waits for ICE gathering to finish so that it
    /// carries the SFU's candidates (trickled candidates follow anyway).
    pub gather_timeout: Duration,
    /// A participant whose media connection (ICE and DTLS) is not up this
    /// long after it was added is removed as failed (sans-IO transport).
    pub connect_timeout: Duration,
    /// Addresses announced to clients as the SFU's ICE candidates, with
    /// each worker's port, instead of the bound address: the public IPs of
    /// a host behind 1:1 NAT (a cloud VM). Empty: the bound address, which
    /// must then be a specific one (sans-IO transport only).
    pub public_ips: Vec<IpAddr>,
    /// Which transport carries the media.
    pub transport: Transport,
    /// Forwarding loops of the sans-IO transport, each with its own UDP
    /// port (the first `udp_addrs` entry, port + i when it is not 0); a
    /// room lives on one of them.
    pub workers: usize,
}

/// The media transport of the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// str0m, sans-IO: one UDP port per worker, one loop forwarding for
    /// every peer on it.
    #[default]
    Str0m,
    /// webrtc-rs: one peer connection, socket and driver task per
    /// participant (the first transport; kept for comparison).
    WebRtc,
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "str0m" => Ok(Self::Str0m),
            "webrtc" => Ok(Self::WebRtc),
            other => Err(format!("unknown transport {other:?} (str0m or webrtc)")),
        }
    }
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            udp_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            routing: RoutingConfig::default(),
            subscriber_queue: 256,
            event_queue: 1024,
            capture: None,
            #[cfg(feature = "test-hooks")]
            tamper: None,
            ice_disconnected_timeout: Duration::from_secs(2),
            ice_failed_timeout: Duration::from_secs(5),
            gather_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(15),
            public_ips: Vec::new(),
            transport: Transport::default(),
            workers: 1,
        }
    }
}

/// Why the SFU dropped a participant on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer connection failed (ICE failure: the peer vanished).
    ConnectionFailed,
    /// The peer closed its connection.
    ConnectionClosed,
    /// Its events were not consumed (a stuck signaling session).
    EventsOverflowed,
    /// The SFU is shutting down.
    Shutdown,
}

/// What the SFU tells one participant, through signaling.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SfuEvent {
    /// An SFU-initiated renegotiation: pass to the client, and its answer
    /// to [`Sfu::handle_answer`].
    Offer {
        /// The offer SDP.
        sdp: String,
    },
    /// A local ICE candidate of the SFU (trickle ICE).
    IceCandidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// A track now forwarded to this participant. Sent before the offer
    /// that carries it.
    TrackAdded {
        /// Who publishes it.
        publisher: ParticipantId,
        /// The publisher's id for it.
        track: TrackId,
        /// Audio or video.
        kind: MediaKind,
        /// The MSID stream id it has on this participant's connection:
        /// [`hush_proto::stream_id`] of the publisher.
        stream_id: String,
        /// The MSID track id it has on this participant's connection.
        track_id: String,
        /// The SSRC it has on this participant's connection.
        ssrc: u32,
    },
    /// A track no longer forwarded (its publisher stopped or left). The
    /// WebRTC stack raises no end event for it on the receiver: this is
    /// the signal.
    TrackRemoved {
        /// Who published it.
        publisher: ParticipantId,
        /// The publisher's id for it.
        track: TrackId,
        /// The MSID stream id it had on this participant's connection.
        stream_id: String,
        /// The MSID track id it had on this participant's connection.
        track_id: String,
    },
    /// The room's active speaker changed.
    ActiveSpeaker {
        /// The new speaker, if anyone holds the floor.
        participant: Option<ParticipantId>,
    },
    /// The SFU removed this participant; no more events follow.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// The events for one participant, in order. Ends after
/// [`SfuEvent::Closed`] or when the participant is removed.
#[derive(Debug)]
pub struct ParticipantEvents {
    rx: mpsc::Receiver<SfuEvent>,
}

impl ParticipantEvents {
    /// The stream of events a transport feeds through `rx`.
    pub(crate) fn new(rx: mpsc::Receiver<SfuEvent>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the participant is gone.
    pub async fn recv(&mut self) -> Option<SfuEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<SfuEvent> {
        self.rx.try_recv().ok()
    }
}

/// A running SFU. Cheap to clone; all clones drive the same SFU.
#[derive(Clone, Debug)]
pub struct Sfu {
    /// One control channel per worker; a room goes to one of them.
    ctl: Arc<[mpsc::UnboundedSender<Command>]>,
    metrics: Arc<Metrics>,
    /// The UDP addresses media arrives on (sans-IO transport only).
    udp: Arc<[SocketAddr]>,
}

impl Sfu {
    /// Starts an SFU on the current Tokio runtime (opening the capture
    /// file, if configured).
    pub fn new(config: SfuConfig) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::default());
        let capture = match &config.capture {
            Some(path) => Some(Arc::new(CaptureWriter::create(path)?)),
            None => None,
        };
        if config.transport == Transport::Str0m {
            let (ctl, udp) = crate::udp::start(config, Arc::clone(&metrics), capture)?;
            return Ok(Self {
                ctl: ctl.into(),
                metrics,
                udp: udp.into(),
            });
        }
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::channel(4096);
        let control = Control {
            router: Router::new(config.routing.clone()),
            config,
            peers: BTreeMap::new(),
            serials: HashMap::new(),
            next_serial: 1,
            metrics: Arc::clone(&metrics),
            capture,
            ctl: ctl_tx.clone(),
            media: media_tx,
            evict: Vec::new(),
        };
        tokio::spawn(control.run(ctl_rx, media_rx));
        Ok(Self {
            ctl: Arc::new([ctl_tx]),
            metrics,
            udp: Arc::new([]),
        })
    }

    /// The UDP addresses the SFU receives media on, one per worker (empty
    /// with the webrtc-rs transport, whose every connection has its own).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// Adds `participant` to `room` (created on first use). Its connection
    /// is waiting for the client's offer ([`handle_offer`](Self::handle_offer));
    /// everything the SFU has to tell it arrives on the returned stream.
    pub async fn add_participant(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<ParticipantEvents, Error> {
        self.call(|reply| Command::Add {
            who: who(room, participant),
            reply,
        })
        .await
    }

    /// Applies the client's offer and returns the SFU's answer SDP. Refused
    /// with [`Error::Glare`] while an SFU offer awaits its answer.
    pub async fn handle_offer(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        sdp: String,
    ) -> Result<String, Error> {
        self.call(|reply| Command::Offer {
            who: who(room, participant),
            sdp,
            reply,
        })
        .await
    }

    /// Applies the client's answer to the SFU's last [`SfuEvent::Offer`].
    pub async fn handle_answer(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        sdp: String,
    ) -> Result<(), Error> {
        self.call(|reply| Command::Answer {
            who: who(room, participant),
            sdp,
            reply,
        })
        .await
    }

    /// Adds a trickled ICE candidate of the client.
    pub async fn add_ice_candidate(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        candidate: IceCandidate,
    ) -> Result<(), Error> {
        self.call(|reply| Command::Candidate {
            who: who(room, participant),
            candidate,
            reply,
        })
        .await
    }

    /// Removes `participant`: its tracks leave every subscriber, its
    /// connection closes, and its room is freed if it was the last one.
    pub async fn remove_participant(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<(), Error> {
        self.call(|reply| Command::Remove {
            who: who(room, participant),
            reply,
        })
        .await
    }

    /// The SFU's metrics (rendered for `/metrics` by [`Metrics::render`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Closes every connection, finishes the capture file and stops.
    pub async fn shutdown(&self) {
        for ctl in self.ctl.iter() {
            let (reply, rx) = oneshot::channel();
            if ctl.send(Command::Shutdown { reply }).is_ok() {
                let _ = rx.await;
            }
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        let cmd = make(reply);
        let ctl = match cmd.room() {
            Some(room) if self.ctl.len() > 1 => &self.ctl[worker_of(room, self.ctl.len())],
            _ => &self.ctl[0],
        };
        ctl.send(cmd).map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }
}

/// `n` workers, or one per core when `n` is 0 (the command-line default).
pub fn workers_or_cores(n: usize) -> usize {
    if n > 0 {
        return n;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The worker a room lives on: a stable hash of its name.
fn worker_of(room: &RoomId, workers: usize) -> usize {
    // FNV-1a: stable across processes and releases, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_str().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % workers as u64).unwrap_or(0)
}

#[cfg(test)]
mod worker_tests {
    use super::*;

    #[test]
    fn rooms_spread_over_workers_and_stay_put() {
        let rooms: Vec<RoomId> = (0..10)
            .map(|i| format!("room-{i}").parse().expect("a room id"))
            .collect();
        let on: Vec<usize> = rooms.iter().map(|r| worker_of(r, 2)).collect();
        assert!(on.contains(&0) && on.contains(&1), "{on:?}");
        assert_eq!(
            on,
            rooms.iter().map(|r| worker_of(r, 2)).collect::<Vec<_>>()
        );
        assert!(rooms.iter().all(|r| worker_of(r, 1) == 0));
    }
}

/// A participant, as the transports key it.
pub(crate) type Who = (RoomId, ParticipantId);

fn who(room: &RoomId, participant: &ParticipantId) -> Who {
    (room.clone(), *participant)
}

/// The reply channel of one API call.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

impl Command {
    /// The room a participant command is about.
    fn room(&self) -> Option<&RoomId> {
        match self {
            Command::Add { who, .. }
            | Command::Offer { who, .. }
            | Command::Answer { who, .. }
            | Command::Candidate { who, .. }
            | Command::Remove { who, .. } => Some(&who.0),
            _ => None,
        }
    }
}

/// What the API asks of a transport's control loop.
pub(crate) enum Command {
    Add {
        who: Who,
        reply: Reply<ParticipantEvents>,
    },
    Offer {
        who: Who,
        sdp: String,
        reply: Reply<String>,
    },
    Answer {
        who: Who,
        sdp: String,
        reply: Reply<()>,
    },
    Candidate {
        who: Who,
        candidate: IceCandidate,
        reply: Reply<()>,
    },
    Remove {
        who: Who,
        reply: Reply<()>,
    },
    Renegotiate {
        serial: u64,
    },
    TrackArrived {
        serial: u64,
        track: Arc<dyn TrackRemote>,
    },
    TrackEnded {
        serial: u64,
        track: TrackId,
    },
    ConnectionState {
        serial: u64,
        state: RTCPeerConnectionState,
    },
    LocalCandidate {
        serial: u64,
        candidate: IceCandidate,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Signals from the forwarding path to the control task (bounded: when
/// full they are dropped and counted, never waited for).
enum MediaSignal {
    KeyFrameRequest(TrackKey),
    AudioLevel(RoomId, ParticipantId, AudioLevel),
}

/// One packet waiting in a subscriber's queue, with its arrival time.
struct Queued {
    at: Instant,
    packet: rtp::Packet,
}

/// A subscriber's queue for one published track.
struct Outlet {
    subscriber: u64,
    tx: mpsc::Sender<Queued>,
}

/// A track a participant publishes, shared with its reader task.
struct Published {
    kind: MediaKind,
    media_ssrc: u32,
    remote: Arc<dyn TrackRemote>,
    audio_level_id: Option<u8>,
    /// Copy-on-write: the reader clones the `Arc` per packet, the control
    /// task replaces the list when subscriptions change.
    outlets: RwLock<Arc<Vec<Outlet>>>,
}

impl Published {
    fn outlets(&self) -> Arc<Vec<Outlet>> {
        match self.outlets.read() {
            Ok(o) => Arc::clone(&o),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn edit_outlets(&self, f: impl FnOnce(&mut Vec<Outlet>)) {
        let mut guard = match self.outlets.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut list: Vec<Outlet> = guard
            .iter()
            .map(|o| Outlet {
                subscriber: o.subscriber,
                tx: o.tx.clone(),
            })
            .collect();
        f(&mut list);
        *guard = Arc::new(list);
    }
}

/// One track forwarded to a participant.
struct Subscription {
    kind: MediaKind,
    ssrc: u32,
    track_id: String,
    local: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    /// Set when the subscription ends, so its RTCP reader stops.
    closed: Arc<AtomicBool>,
    ready: bool,
}

#[derive(Default)]
struct Negotiation {
    /// The client's first offer has been answered.
    answered: bool,
    /// The SFU sent an offer and awaits the answer.
    offer_outstanding: bool,
    /// Tracks changed since the last SFU offer.
    dirty: bool,
    /// Subscriptions added since the last SFU offer.
    pending: Vec<TrackKey>,
    /// Subscriptions carried by the outstanding SFU offer.
    in_flight: Vec<TrackKey>,
    /// Subscriptions decided before the first answer (added after it).
    deferred: Vec<(TrackKey, MediaKind)>,
}

struct Peer {
    serial: u64,
    pc: Arc<dyn PeerConnection>,
    events: mpsc::Sender<SfuEvent>,
    gathered: watch::Receiver<bool>,
    published: HashMap<TrackId, Arc<Published>>,
    subscriptions: BTreeMap<TrackKey, Subscription>,
    neg: Negotiation,
    closing: bool,
}

struct Control {
    config: SfuConfig,
    router: Router,
    peers: BTreeMap<Who, Peer>,
    serials: HashMap<u64, Who>,
    next_serial: u64,
    metrics: Arc<Metrics>,
    capture: Option<Arc<CaptureWriter>>,
    ctl: mpsc::UnboundedSender<Command>,
    media: mpsc::Sender<MediaSignal>,
    /// Participants whose event queue overflowed, removed after the
    /// current command.
    evict: Vec<Who>,
}

impl Control {
    async fn run(
        mut self,
        mut ctl: mpsc::UnboundedReceiver<Command>,
        mut media: mpsc::Receiver<MediaSignal>,
    ) {
        loop {
            let deadline = self.router.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = ctl.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd).await,
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                Some(signal) = media.recv() => self.handle_media(signal).await,
                () = sleep => {
                    let decisions = self.router.handle_timeout(Instant::now());
                    self.execute(decisions).await;
                }
            }
            for who in std::mem::take(&mut self.evict) {
                self.remove(&who, Some(CloseReason::EventsOverflowed)).await;
            }
            self.metrics.set_rooms(
                0,
                self.router.rooms().map(|(id, n)| (id.clone(), n)).collect(),
            );
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add { who, reply } => {
                let _ = reply.send(self.add(who).await);
            }
            Command::Offer { who, sdp, reply } => {
                let result = self.offer(&who, sdp).await;
                let serial = self.peers.get(&who).map(|p| p.serial);
                let _ = reply.send(result);
                // After the reply, so the answer reaches the caller first.
                if let Some(serial) = serial {
                    let _ = self.ctl.send(Command::Renegotiate { serial });
                }
            }
            Command::Answer { who, sdp, reply } => {
                let _ = reply.send(self.answer(&who, sdp).await);
            }
            Command::Candidate {
                who,
                candidate,
                reply,
            } => {
                let result = match self.peers.get(&who) {
                    None => Err(unknown(&who)),
                    Some(peer) => peer
                        .pc
                        .add_ice_candidate(RTCIceCandidateInit {
                            candidate: candidate.candidate,
                            sdp_mid: candidate.sdp_mid,
                            sdp_mline_index: candidate.sdp_m_line_index,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| Error::rejected("candidate", e)),
                };
                let _ = reply.send(result);
            }
            Command::Remove { who, reply } => {
                let result = if self.peers.contains_key(&who) {
                    self.remove(&who, None).await;
                    Ok(())
                } else {
                    Err(unknown(&who))
                };
                let _ = reply.send(result);
            }
            Command::Renegotiate { serial } => {
                if let Some(who) = self.serials.get(&serial).cloned() {
                    self.renegotiate(&who).await;
                }
            }
            Command::TrackArrived { serial, track } => self.track_arrived(serial, track).await,
            Command::TrackEnded { serial, track } => {
                if let Some((room, publisher)) = self.serials.get(&serial).cloned() {
                    let key = TrackKey {
                        room,
                        publisher,
                        track,
                    };
                    if let Ok(decisions) = self.router.unpublish(&key) {
                        self.execute(decisions).await;
                    }
                }
            }
            Command::ConnectionState { serial, state } => {
                let reason = match state {
                    RTCPeerConnectionState::Failed => CloseReason::ConnectionFailed,
                    RTCPeerConnectionState::Closed => CloseReason::ConnectionClosed,
                    _ => return,
                };
                if let Some(who) = self.serials.get(&serial).cloned() {
                    tracing::info!(room = %who.0, participant = %who.1, ?reason, "peer connection ended");
                    self.remove(&who, Some(reason)).await;
                }
            }
            Command::LocalCandidate { serial, candidate } => {
                if let Some(who) = self.serials.get(&serial).cloned() {
                    self.send_event(&who, SfuEvent::IceCandidate { candidate });
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    async fn handle_media(&mut self, signal: MediaSignal) {
        let now = Instant::now();
        let decisions = match signal {
            MediaSignal::KeyFrameRequest(key) => self.router.key_frame_requested(&key, now),
            MediaSignal::AudioLevel(room, participant, level) => {
                self.router.audio_level(&room, &participant, level, now)
            }
        };
        self.execute(decisions).await;
    }

    async fn add(&mut self, who: Who) -> Result<ParticipantEvents, Error> {
        if self.peers.contains_key(&who) {
            return Err(Error::AlreadyJoined {
                room: who.0,
                participant: who.1,
            });
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let (gathered_tx, gathered) = watch::channel(false);
        let handler = Arc::new(PeerHandler {
            serial,
            ctl: self.ctl.clone(),
            gathered: gathered_tx,
        });
        let (engine, registry) = setup::sfu_media(Arc::clone(&self.metrics))?;
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setup::setting_engine(
                self.config.ice_disconnected_timeout,
                self.config.ice_failed_timeout,
            ))
            .with_handler(handler)
            .with_udp_addrs(self.config.udp_addrs.clone())
            .build()
            .await
            .map_err(Error::transport)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let decisions = match self.router.join(&who.0, &who.1) {
            Ok(d) => d,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e.into());
            }
        };
        self.metrics.peer_connections_add(1);
        let (events_tx, events_rx) = mpsc::channel(self.config.event_queue);
        self.peers.insert(
            who.clone(),
            Peer {
                serial,
                pc,
                events: events_tx,
                gathered,
                published: HashMap::new(),
                subscriptions: BTreeMap::new(),
                neg: Negotiation::default(),
                closing: false,
            },
        );
        self.serials.insert(serial, who.clone());
        tracing::info!(room = %who.0, participant = %who.1, "participant added");
        self.execute(decisions).await;
        Ok(ParticipantEvents { rx: events_rx })
    }

    async fn offer(&mut self, who: &Who, sdp: String) -> Result<String, Error> {
        let gather_timeout = self.config.gather_timeout;
        let peer = self.peers.get_mut(who).ok_or_else(|| unknown(who))?;
        if peer.neg.offer_outstanding {
            return Err(Error::Glare);
        }
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| Error::rejected("offer", e))?;
        peer.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| Error::rejected("offer", e))?;
        let answer = peer
            .pc
            .create_answer(None)
            .await
            .map_err(Error::transport)?;
        peer.pc
            .set_local_description(answer)
            .await
            .map_err(Error::transport)?;
        let mut gathered = peer.gathered.clone();
        let _ = tokio::time::timeout(gather_timeout, gathered.wait_for(|done| *done)).await;
        let answer = peer
            .pc
            .local_description()
            .await
            .ok_or_else(|| Error::Transport("no local description after answering".into()))?;
        let first = !peer.neg.answered;
        peer.neg.answered = true;
        if first {
            let deferred = std::mem::take(&mut peer.neg.deferred);
            for (key, kind) in deferred {
                if self.router.subscribers(&key).contains(&who.1) {
                    self.subscribe(&who.1, &key, kind).await;
                }
            }
        }
        Ok(answer.sdp)
    }

    async fn answer(&mut self, who: &Who, sdp: String) -> Result<(), Error> {
        let peer = self.peers.get_mut(who).ok_or_else(|| unknown(who))?;
        if !peer.neg.offer_outstanding {
            return Err(Error::NoOfferOutstanding);
        }
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| Error::rejected("answer", e))?;
        peer.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| Error::rejected("answer", e))?;
        peer.neg.offer_outstanding = false;
        let ready = std::mem::take(&mut peer.neg.in_flight);
        let now = Instant::now();
        for key in ready {
            self.subscription_ready(who, &key);
            let decisions = self.router.subscription_ready(&who.1, &key, now);
            self.execute(decisions).await;
        }
        self.renegotiate(who).await;
        Ok(())
    }

    /// Sends the SFU's offer if tracks changed and no offer is outstanding.
    ///
    /// Glare rule: the SFU has at most one offer outstanding and wins
    /// glare. A client offer arriving meanwhile is refused with
    /// [`Error::Glare`]; the client answers the SFU's offer (rolling back
    /// its own if needed) and offers again. The SFU never offers before the
    /// client's first offer is answered.
    async fn renegotiate(&mut self, who: &Who) {
        let Some(peer) = self.peers.get_mut(who) else {
            return;
        };
        if peer.closing || !peer.neg.answered || peer.neg.offer_outstanding || !peer.neg.dirty {
            return;
        }
        let result = async {
            let offer = peer.pc.create_offer(None).await?;
            peer.pc.set_local_description(offer).await?;
            Ok::<_, webrtc::error::Error>(peer.pc.local_description().await)
        }
        .await;
        match result {
            Ok(Some(offer)) => {
                peer.neg.offer_outstanding = true;
                peer.neg.dirty = false;
                peer.neg.in_flight = std::mem::take(&mut peer.neg.pending);
                self.send_event(who, SfuEvent::Offer { sdp: offer.sdp });
            }
            Ok(None) => tracing::warn!(participant = %who.1, "no local offer after creating one"),
            Err(e) => tracing::warn!(participant = %who.1, error = %e, "renegotiation failed"),
        }
    }

    async fn track_arrived(&mut self, serial: u64, track: Arc<dyn TrackRemote>) {
        let Some(who) = self.serials.get(&serial).cloned() else {
            return;
        };
        let kind = match track.kind().await {
            RtpCodecKind::Audio => MediaKind::Audio,
            RtpCodecKind::Video => MediaKind::Video,
            _ => return,
        };
        let track_id = TrackId(track.track_id().await);
        let Some(media_ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&who) else {
            return;
        };
        if peer.published.contains_key(&track_id) {
            return;
        }
        let mut audio_level_id = None;
        if kind == MediaKind::Audio {
            for receiver in peer.pc.get_receivers().await {
                if receiver.track().track_id().await != track_id.0 {
                    continue;
                }
                if let Ok(params) = receiver.get_parameters().await {
                    audio_level_id = params
                        .rtp_parameters
                        .header_extensions
                        .iter()
                        .find(|e| e.uri == AUDIO_LEVEL_URI)
                        .and_then(|e| u8::try_from(e.id).ok());
                }
            }
        }
        let published = Arc::new(Published {
            kind,
            media_ssrc,
            remote: Arc::clone(&track),
            audio_level_id,
            outlets: RwLock::new(Arc::new(Vec::new())),
        });
        peer.published
            .insert(track_id.clone(), Arc::clone(&published));
        let key = TrackKey {
            room: who.0.clone(),
            publisher: who.1,
            track: track_id,
        };
        tracing::info!(room = %key.room, publisher = %key.publisher, track = %key.track, %kind, "track published");
        let reader = Reader {
            key: key.clone(),
            serial,
            published,
            ctl: self.ctl.clone(),
            media: self.media.clone(),
            metrics: Arc::clone(&self.metrics),
            capture: self.capture.clone(),
            #[cfg(feature = "test-hooks")]
            tamper: self.config.tamper.clone(),
        };
        let guard = self.metrics.task_started();
        tokio::spawn(async move {
            let _guard = guard;
            reader.run(track).await;
        });
        match self.router.publish(&key, kind) {
            Ok(decisions) => self.execute(decisions).await,
            Err(e) => tracing::warn!(error = %e, "publish refused"),
        }
    }

    async fn execute(&mut self, decisions: Vec<Decision>) {
        let mut touched = Vec::new();
        for decision in decisions {
            match decision {
                Decision::Subscribe {
                    subscriber,
                    key,
                    kind,
                } => {
                    let who = (key.room.clone(), subscriber);
                    if let Some(peer) = self.peers.get_mut(&who)
                        && !peer.neg.answered
                    {
                        peer.neg.deferred.push((key, kind));
                        continue;
                    }
                    self.subscribe(&subscriber, &key, kind).await;
                    touched.push(who);
                }
                Decision::Unsubscribe { subscriber, key } => {
                    let who = (key.room.clone(), subscriber);
                    self.unsubscribe(&who, &key).await;
                    touched.push(who);
                }
                Decision::TrackUnpublished { key, .. } => {
                    let who = (key.room.clone(), key.publisher);
                    if let Some(peer) = self.peers.get_mut(&who) {
                        peer.published.remove(&key.track);
                    }
                }
                Decision::RequestKeyFrame(key) => {
                    let who = (key.room.clone(), key.publisher);
                    let Some(published) = self
                        .peers
                        .get(&who)
                        .and_then(|p| p.published.get(&key.track))
                    else {
                        continue;
                    };
                    let remote = Arc::clone(&published.remote);
                    let media_ssrc = published.media_ssrc;
                    self.metrics.pli_sent();
                    tokio::spawn(async move {
                        let pli = PictureLossIndication {
                            sender_ssrc: 0,
                            media_ssrc,
                        };
                        if let Err(e) = remote.write_rtcp(vec![Box::new(pli)]).await {
                            tracing::debug!(error = %e, "PLI to publisher failed");
                        }
                    });
                }
                Decision::ActiveSpeaker { room, speaker } => {
                    let members: Vec<Who> = self
                        .router
                        .participants(&room)
                        .into_iter()
                        .map(|p| (room.clone(), p))
                        .collect();
                    for member in members {
                        self.send_event(
                            &member,
                            SfuEvent::ActiveSpeaker {
                                participant: speaker,
                            },
                        );
                    }
                }
                Decision::RoomOpened(room) => tracing::info!(%room, "room opened"),
                Decision::RoomClosed(room) => tracing::info!(%room, "room closed"),
                Decision::TrackPublished { .. } => {}
            }
        }
        touched.sort();
        touched.dedup();
        for who in touched {
            self.renegotiate(&who).await;
        }
    }

    async fn subscribe(&mut self, subscriber: &ParticipantId, key: &TrackKey, kind: MediaKind) {
        let pub_who = (key.room.clone(), key.publisher);
        if !self.peers.contains_key(&pub_who) {
            return;
        }
        let who = (key.room.clone(), *subscriber);
        let Some(peer) = self.peers.get_mut(&who) else {
            return;
        };
        if peer.closing || peer.subscriptions.contains_key(key) {
            return;
        }
        let ssrc: u32 = rand::random();
        // Named by the publisher (PROTOCOL.md §11): signaling ids are unique
        // for the server's lifetime, and the random SSRC keeps track ids
        // apart across a subscriber's renegotiations.
        let stream_id = hush_proto::stream_id(key.publisher);
        let track_id = format!("{stream_id}-{}-{ssrc}", kind.as_str());
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream_id.clone(),
            track_id.clone(),
            track_id.clone(),
            match kind {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            },
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: setup::codec(kind),
                ..Default::default()
            }],
        )));
        let sender = match peer
            .pc
            .add_track(Arc::clone(&local) as Arc<dyn TrackLocal>)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "add_track failed");
                return;
            }
        };
        peer.subscriptions.insert(
            key.clone(),
            Subscription {
                kind,
                ssrc,
                track_id: track_id.clone(),
                local,
                sender,
                closed: Arc::new(AtomicBool::new(false)),
                ready: false,
            },
        );
        peer.neg.pending.push(key.clone());
        peer.neg.dirty = true;
        self.metrics.subscriptions_add(1);
        self.send_event(
            &who,
            SfuEvent::TrackAdded {
                publisher: key.publisher,
                track: key.track.clone(),
                kind,
                stream_id,
                track_id,
                ssrc,
            },
        );
    }

    /// The subscriber's connection now carries `key`: start forwarding.
    fn subscription_ready(&mut self, who: &Who, key: &TrackKey) {
        let pub_who = (key.room.clone(), key.publisher);
        let Some(published) = self
            .peers
            .get(&pub_who)
            .and_then(|p| p.published.get(&key.track))
            .cloned()
        else {
            return;
        };
        let Some(peer) = self.peers.get_mut(who) else {
            return;
        };
        let serial = peer.serial;
        let Some(sub) = peer.subscriptions.get_mut(key) else {
            return;
        };
        if sub.ready {
            return;
        }
        sub.ready = true;
        let (tx, rx) = mpsc::channel(self.config.subscriber_queue);
        published.edit_outlets(|o| {
            o.push(Outlet {
                subscriber: serial,
                tx,
            })
        });
        let writer = Writer {
            kind: sub.kind,
            ssrc: sub.ssrc,
            in_audio_level_id: published.audio_level_id,
            local: Arc::clone(&sub.local),
            sender: Arc::clone(&sub.sender),
            metrics: Arc::clone(&self.metrics),
        };
        let guard = self.metrics.task_started();
        tokio::spawn(async move {
            let _guard = guard;
            writer.run(rx).await;
        });
        let feedback = Feedback {
            key: key.clone(),
            local: Arc::clone(&sub.local),
            closed: Arc::clone(&sub.closed),
            media: self.media.clone(),
            metrics: Arc::clone(&self.metrics),
        };
        let guard = self.metrics.task_started();
        tokio::spawn(async move {
            let _guard = guard;
            feedback.run().await;
        });
    }

    async fn unsubscribe(&mut self, who: &Who, key: &TrackKey) {
        let pub_who = (key.room.clone(), key.publisher);
        let Some(peer) = self.peers.get_mut(who) else {
            return;
        };
        peer.neg.deferred.retain(|(k, _)| k != key);
        let serial = peer.serial;
        let Some(sub) = peer.subscriptions.remove(key) else {
            return;
        };
        sub.closed.store(true, Ordering::Relaxed);
        peer.neg.pending.retain(|k| k != key);
        self.metrics.subscriptions_add(-1);
        if !peer.closing {
            if let Err(e) = peer.pc.remove_track(&sub.sender).await {
                tracing::debug!(error = %e, "remove_track failed");
            }
            peer.neg.dirty = true;
            self.send_event(
                who,
                SfuEvent::TrackRemoved {
                    publisher: key.publisher,
                    track: key.track.clone(),
                    stream_id: hush_proto::stream_id(key.publisher),
                    track_id: sub.track_id.clone(),
                },
            );
        }
        if let Some(published) = self
            .peers
            .get(&pub_who)
            .and_then(|p| p.published.get(&key.track))
        {
            // Dropping the queue's sender ends the writer task.
            published.edit_outlets(|o| o.retain(|o| o.subscriber != serial));
        }
    }

    async fn remove(&mut self, who: &Who, reason: Option<CloseReason>) {
        let Some(peer) = self.peers.get_mut(who) else {
            return;
        };
        peer.closing = true;
        let now = Instant::now();
        match self.router.leave(&who.0, &who.1, now) {
            Ok(decisions) => self.execute(decisions).await,
            Err(e) => tracing::warn!(error = %e, "leave refused"),
        }
        let Some(peer) = self.peers.remove(who) else {
            return;
        };
        self.serials.remove(&peer.serial);
        for sub in peer.subscriptions.values() {
            sub.closed.store(true, Ordering::Relaxed);
        }
        self.metrics
            .subscriptions_add(-(peer.subscriptions.len() as i64));
        for published in peer.published.values() {
            published.edit_outlets(Vec::clear);
        }
        if let Some(reason) = reason {
            let _ = peer.events.try_send(SfuEvent::Closed { reason });
        }
        let metrics = Arc::clone(&self.metrics);
        let pc = peer.pc;
        tracing::info!(room = %who.0, participant = %who.1, "participant removed");
        tokio::spawn(async move {
            if let Err(e) = pc.close().await {
                tracing::debug!(error = %e, "closing peer connection");
            }
            metrics.peer_connections_add(-1);
        });
    }

    async fn shutdown(&mut self) {
        let all: Vec<Who> = self.peers.keys().cloned().collect();
        for who in all {
            self.remove(&who, Some(CloseReason::Shutdown)).await;
        }
        if let Some(capture) = self.capture.take() {
            // The readers hold clones; the file is finished when the last goes.
            drop(capture);
        }
    }

    fn send_event(&mut self, who: &Who, event: SfuEvent) {
        let Some(peer) = self.peers.get(who) else {
            return;
        };
        if peer.closing {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = peer.events.try_send(event) {
            tracing::warn!(participant = %who.1, "event queue full; removing participant");
            self.evict.push(who.clone());
        }
    }
}

pub(crate) fn unknown(who: &Who) -> Error {
    Error::UnknownParticipant {
        room: who.0.clone(),
        participant: who.1,
    }
}

/// Callbacks from one SFU-side peer connection: forwarded to the control
/// task without waiting (they run inside the connection's driver loop).
struct PeerHandler {
    serial: u64,
    ctl: mpsc::UnboundedSender<Command>,
    gathered: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.ctl.send(Command::LocalCandidate {
                serial: self.serial,
                candidate: IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_m_line_index: init.sdp_mline_index,
                },
            });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.ctl.send(Command::ConnectionState {
            serial: self.serial,
            state,
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.ctl.send(Command::TrackArrived {
            serial: self.serial,
            track,
        });
    }
}

/// Reads one published track and fans its packets out.
struct Reader {
    key: TrackKey,
    serial: u64,
    published: Arc<Published>,
    ctl: mpsc::UnboundedSender<Command>,
    media: mpsc::Sender<MediaSignal>,
    metrics: Arc<Metrics>,
    capture: Option<Arc<CaptureWriter>>,
    #[cfg(feature = "test-hooks")]
    tamper: Option<TamperHook>,
}

impl Reader {
    async fn run(self, track: Arc<dyn TrackRemote>) {
        while let Some(event) = track.poll().await {
            match event {
                TrackRemoteEvent::OnRtpPacket(packet) => self.forward(packet),
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
        }
        let _ = self.ctl.send(Command::TrackEnded {
            serial: self.serial,
            track: self.key.track.clone(),
        });
    }

    /// The hot path: no await, no lock held across a send, one `Bytes`
    /// reference per subscriber (the payload itself is never copied).
    fn forward(&self, packet: rtp::Packet) {
        let at = Instant::now();
        let kind = self.published.kind;
        #[cfg(feature = "test-hooks")]
        let packet = self.tampered(packet);
        self.metrics.packet_in(kind, packet.payload.len());
        if let Some(id) = self.published.audio_level_id
            && let Some(level) = packet
                .header
                .get_extension(id)
                .and_then(|b| AudioLevel::parse(&b))
        {
            let signal = MediaSignal::AudioLevel(self.key.room.clone(), self.key.publisher, level);
            if self.media.try_send(signal).is_err() {
                self.metrics.dropped(DropReason::ControlOverflow);
            }
        }
        let outlets = self.published.outlets();
        let Some((last, rest)) = outlets.split_last() else {
            return;
        };
        if let Some(capture) = &self.capture {
            let record = CaptureRecord {
                kind,
                ssrc: packet.header.ssrc,
                seq: packet.header.sequence_number,
                payload: packet.payload.clone(),
            };
            if !capture.record(record) {
                self.metrics.dropped(DropReason::CaptureOverflow);
            }
        }
        for outlet in rest {
            self.offer(
                outlet,
                Queued {
                    at,
                    packet: packet.clone(),
                },
            );
        }
        self.offer(last, Queued { at, packet });
    }

    /// The packet as the test hook wants it forwarded.
    #[cfg(feature = "test-hooks")]
    fn tampered(&self, mut packet: rtp::Packet) -> rtp::Packet {
        if let Some(hook) = &self.tamper
            && let Some(replaced) = (hook.0)(self.published.kind, &packet.payload)
        {
            packet.payload = bytes::Bytes::from(replaced);
        }
        packet
    }

    fn offer(&self, outlet: &Outlet, queued: Queued) {
        if let Err(mpsc::error::TrySendError::Full(_)) = outlet.tx.try_send(queued) {
            self.metrics.dropped(DropReason::QueueFull);
        }
    }
}

/// Writes one subscriber's copy of one track.
struct Writer {
    kind: MediaKind,
    ssrc: u32,
    in_audio_level_id: Option<u8>,
    local: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    metrics: Arc<Metrics>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Queued>) {
        let (payload_type, out_audio_level_id) = match self.sender.get_parameters().await {
            Ok(params) => {
                let mime = setup::codec(self.kind).mime_type;
                let pt = params
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
                    .map(|c| c.payload_type);
                let ext = params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == AUDIO_LEVEL_URI)
                    .and_then(|e| u8::try_from(e.id).ok());
                (pt, ext)
            }
            Err(_) => (None, None),
        };
        let Some(payload_type) = payload_type else {
            while rx.recv().await.is_some() {
                self.metrics.dropped(DropReason::NotNegotiated);
            }
            return;
        };
        while let Some(Queued { at, mut packet }) = rx.recv().await {
            let level = self
                .in_audio_level_id
                .and_then(|id| packet.header.get_extension(id));
            let h = &mut packet.header;
            h.ssrc = self.ssrc;
            h.payload_type = payload_type;
            h.padding = false;
            // Extension ids are per leg: strip them all, then re-add the
            // audio level under the id negotiated with this subscriber.
            // A packet with an id the leg did not negotiate is dropped whole.
            h.extensions.clear();
            h.extension = false;
            h.extension_profile = 0;
            h.extensions_padding = 0;
            if let (Some(level), Some(id)) = (level, out_audio_level_id) {
                let _ = h.set_extension(id, level);
            }
            let len = packet.payload.len();
            match self.local.write_rtp(packet).await {
                Ok(()) => self.metrics.packet_out(self.kind, len, at.elapsed()),
                Err(_) => self.metrics.dropped(DropReason::WriteError),
            }
        }
    }
}

/// Reads RTCP feedback a subscriber sends about one forwarded track.
struct Feedback {
    key: TrackKey,
    local: Arc<TrackLocalStaticRTP>,
    closed: Arc<AtomicBool>,
    media: mpsc::Sender<MediaSignal>,
    metrics: Arc<Metrics>,
}

impl Feedback {
    async fn run(self) {
        while !self.closed.load(Ordering::Relaxed) {
            match self.local.poll().await {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    if packets
                        .iter()
                        .any(|p| setup::is_key_frame_request(p.as_ref()))
                    {
                        self.metrics.pli_received();
                        if self
                            .media
                            .try_send(MediaSignal::KeyFrameRequest(self.key.clone()))
                            .is_err()
                        {
                            self.metrics.dropped(DropReason::ControlOverflow);
                        }
                    }
                }
                Some(_) => {}
                // Not bound (yet, or any more): look again shortly.
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
