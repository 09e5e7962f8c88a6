//! The load generator's cheap media peers: sans-IO WebRTC peers (str0m, a
//! full ICE agent like any client's) driven in bulk by a few [`Hub`]s, each
//! a thread with one UDP socket, instead of a webrtc-rs peer connection with
//! its own socket and driver tasks per simulated participant.
//!
//! Every peer still does everything a real client's connection does on the
//! wire: ICE with the SFU, its own DTLS handshake, SRTP both ways, RTCP,
//! Opus and VP8 (RFC 7741) packetization of the sealed frames. What it
//! shares is the socket, the loop and the DTLS certificate.
//!
//! **One socket, many peers.** A DTLS packet carries nothing that names
//! its connection, so the SFU tells its peers apart by address, and so must
//! we: each peer gets its own loopback address (`127.1.x.y`, all on the
//! hub's one port). The socket is bound to the wildcard address to receive
//! on all of them, learns each datagram's destination address from
//! `IP_PKTINFO` and sends each peer's datagrams from that peer's address.
//! Datagrams from or to anything but loopback are dropped. This is why the
//! generator's peers reach only a server on this machine.
//!
//! **Audio redundancy.** Like the real client, a peer offers RFC 2198 RED
//! and, when the SFU's answer accepts it, sends each audio packet with the
//! frames before it (PROTOCOL.md §11); [`PeerOptions::audio_redundancy`] 0
//! offers plain Opus only.
//!
//! **Downlink loss.** With [`PeerOptions::loss`], each peer drops a share
//! of the media packets it receives, after SRTP and before reassembly, as
//! if they had been lost between the SFU and this subscriber. The drops
//! come from a seeded generator, never from the clock. Only the
//! application loses them: str0m has already counted them as received, so
//! nothing is NACKed or retransmitted and RTCP reports no loss.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hush_client::TransportError;
use hush_client::frame::Codec;
use hush_client::transport::{
    Connected, Connector, MediaConnection, TransportEvent, Vp8Reassembly,
};
use hush_proto::IceCandidate;
use hush_proto::media::{OPUS_PAYLOAD_TYPE, VP8_PAYLOAD_TYPE};
use hush_sfu::pump::{self, Deadlines};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec as RtcCodec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max`).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Datagrams read per receive call (recvmmsg).
const BATCH: usize = 32;
/// Room for one datagram (or a GRO train of them) per slot.
const SLOT_BYTES: usize = 64 * 1024;
/// Largest VP8 payload per RTP packet (descriptor excluded).
const VP8_CHUNK: usize = 1100;
/// Commands queued to a hub before senders wait.
const COMMANDS: usize = 8192;
/// Events queued to one peer's call before they are dropped (as a jitter
/// buffer would drop what the application does not take in time).
const EVENTS: usize = 4096;
/// How often a peer's ICE state is checked against its failure timeout.
const LIVENESS_TICK: Duration = Duration::from_millis(500);
/// Commands handled per wake-up before the socket is read again.
const COMMAND_BATCH: usize = 256;

fn other(e: impl core::fmt::Display) -> TransportError {
    TransportError::Other(e.to_string())
}

/// The loopback address of a hub's `n`th peer: `127.1.x.y`, never `.0`
/// or `.255` in the last byte.
pub fn peer_ip(n: u32) -> Ipv4Addr {
    let hi = 1 + n / (254 * 256);
    let mid = (n / 254) % 256;
    let lo = n % 254 + 1;
    Ipv4Addr::new(127, hi as u8, mid as u8, lo as u8)
}

/// What every peer of a [`SansIoConnector`] does beyond a plain client's
/// connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerOptions {
    /// Earlier audio frames each packet repeats (RFC 2198 RED, at most
    /// [`hush_proto::red::MAX_REDUNDANT`]) when the SFU accepts RED; 0
    /// does not offer RED at all.
    pub audio_redundancy: usize,
    /// Media packets each peer drops on receipt (downlink loss).
    pub loss: DownlinkLoss,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            audio_redundancy: hush_proto::red::MAX_REDUNDANT,
            loss: DownlinkLoss::default(),
        }
    }
}

/// Simulated loss between the SFU and each subscriber: every peer drops
/// this share of the media packets (audio and video RTP) it receives,
/// each decision drawn from a splitmix64 sequence seeded from `seed` and
/// the connection's number (connections are numbered as they open).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DownlinkLoss {
    /// Share dropped, percent (0 drops nothing).
    pub percent: f64,
    /// Seed of every peer's sequence.
    pub seed: u64,
}

/// Connects calls through a set of hubs, taking them in turn.
#[derive(Debug)]
pub struct SansIoConnector {
    hubs: Vec<Hub>,
    next: AtomicUsize,
    loss: DownlinkLoss,
}

impl SansIoConnector {
    /// Starts `hubs` hubs (at least one), each with its own socket and thread.
    pub fn start(hubs: usize, options: PeerOptions) -> Result<Self, TransportError> {
        let hubs = (0..hubs.max(1))
            .map(|_| Hub::start(options.audio_redundancy))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            hubs,
            next: AtomicUsize::new(0),
            loss: options.loss,
        })
    }
}

#[async_trait::async_trait]
impl Connector for SansIoConnector {
    async fn connect(
        &self,
        with_video: bool,
        _disconnected: Duration,
        failed: Duration,
    ) -> Result<Connected, TransportError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let drops = Dropper::new(self.loss, n as u64);
        self.hubs[n % self.hubs.len()]
            .open(with_video, failed, drops)
            .await
    }
}

/// One thread, one UDP socket, many peers.
#[derive(Debug, Clone)]
pub struct Hub {
    commands: mpsc::Sender<Command>,
}

enum Command {
    Open {
        with_video: bool,
        failed: Duration,
        drops: Option<Dropper>,
        events: mpsc::Sender<TransportEvent>,
        connected: Arc<AtomicBool>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Offer {
        id: u64,
        reply: oneshot::Sender<Result<String, String>>,
    },
    ApplyAnswer {
        id: u64,
        sdp: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Answer {
        id: u64,
        sdp: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Candidate {
        id: u64,
        candidate: String,
    },
    Audio {
        id: u64,
        sealed: Vec<u8>,
        level: u8,
    },
    Video {
        id: u64,
        sealed: Vec<u8>,
        duration: Duration,
    },
    Close {
        id: u64,
    },
}

impl Hub {
    /// Binds the hub's socket and starts its thread; its peers repeat
    /// `audio_redundancy` earlier frames in each audio packet (0: RED is
    /// not offered).
    pub fn start(audio_redundancy: usize) -> Result<Self, TransportError> {
        let audio_redundancy = audio_redundancy.min(hush_proto::red::MAX_REDUNDANT);
        str0m::crypto::from_feature_flags().install_process_default();
        let std_socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(other)?;
        std_socket.set_nonblocking(true).map_err(other)?;
        let state = UdpSocketState::new((&std_socket).into()).map_err(other)?;
        // Hundreds of peers' datagrams arrive in bursts (one forwarded
        // packet for every subscriber at once): the default buffer
        // (about 200 KiB) overflows and loses them, handshakes included.
        let _ = state.set_recv_buffer_size((&std_socket).into(), SOCKET_BUFFER_BYTES);
        let _ = state.set_send_buffer_size((&std_socket).into(), SOCKET_BUFFER_BYTES);
        let port = std_socket.local_addr().map_err(other)?.port();
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| other("no DTLS certificate"))?;
        let config = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, audio_redundancy > 0)
            .enable_vp8(true)
            // PROTOCOL.md §11: audio level and mid, nothing else.
            .clear_extension_map()
            .set_extension(1, Extension::AudioLevel)
            .set_extension(4, Extension::RtpMid)
            .set_dtls_cert(cert);
        let (commands, rx) = mpsc::channel(COMMANDS);
        // Each hub has its own thread: on a machine whose cores the
        // simulated participants' e2ee work saturates during joins, the
        // kernel still wakes a hub as soon as its socket has data, instead
        // of queueing it behind hundreds of call drivers on the runtime
        // (its socket buffer overflowed, DTLS handshakes timed out).
        std::thread::Builder::new()
            .name("hush-load-hub".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "load generator: no runtime for a hub");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let socket = match UdpSocket::from_std(std_socket) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "load generator: hub socket refused");
                            return;
                        }
                    };
                    let hub = Loop {
                        socket,
                        state,
                        port,
                        config,
                        audio_redundancy,
                        peers: HashMap::new(),
                        by_ip: HashMap::new(),
                        next_id: 0,
                        timers: Deadlines::new(),
                        events: Vec::new(),
                        out: Vec::new(),
                        ready: Vec::new(),
                        next_liveness: Instant::now() + LIVENESS_TICK,
                    };
                    hub.run(rx).await;
                });
            })
            .map_err(other)?;
        Ok(Self { commands })
    }

    async fn open(
        &self,
        with_video: bool,
        failed: Duration,
        drops: Option<Dropper>,
    ) -> Result<Connected, TransportError> {
        let (events_tx, events) = mpsc::channel(EVENTS);
        let connected = Arc::new(AtomicBool::new(false));
        let (reply, rx) = oneshot::channel();
        self.send(Command::Open {
            with_video,
            failed,
            drops,
            events: events_tx,
            connected: Arc::clone(&connected),
            reply,
        })
        .await?;
        let id = rx.await.map_err(|_| gone())?.map_err(other)?;
        let connection = HubConnection {
            id,
            commands: self.commands.clone(),
            connected,
        };
        Ok((Box::new(connection), events))
    }

    async fn send(&self, c: Command) -> Result<(), TransportError> {
        self.commands.send(c).await.map_err(|_| gone())
    }
}

fn gone() -> TransportError {
    other("the load generator's media hub has stopped")
}

/// A call's handle on its peer inside a hub.
struct HubConnection {
    id: u64,
    commands: mpsc::Sender<Command>,
    connected: Arc<AtomicBool>,
}

impl HubConnection {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?.map_err(other)
    }

    fn check_connected(&self) -> Result<(), TransportError> {
        if self.connected.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(other("media not connected yet"))
        }
    }
}

impl Drop for HubConnection {
    fn drop(&mut self) {
        // A call that ends any way at all frees its peer.
        let _ = self.commands.try_send(Command::Close { id: self.id });
    }
}

#[async_trait::async_trait]
impl MediaConnection for HubConnection {
    async fn offer(&self) -> Result<String, TransportError> {
        let id = self.id;
        self.ask(|reply| Command::Offer { id, reply }).await
    }

    async fn apply_answer(&self, sdp: String) -> Result<(), TransportError> {
        let id = self.id;
        self.ask(|reply| Command::ApplyAnswer { id, sdp, reply })
            .await
    }

    async fn answer(&self, sdp: String) -> Result<String, TransportError> {
        let id = self.id;
        self.ask(|reply| Command::Answer { id, sdp, reply }).await
    }

    async fn add_ice_candidate(&self, c: IceCandidate) -> Result<(), TransportError> {
        let c = Command::Candidate {
            id: self.id,
            candidate: c.candidate,
        };
        self.commands.send(c).await.map_err(|_| gone())
    }

    async fn send_audio(&self, sealed: Vec<u8>, level: u8) -> Result<(), TransportError> {
        self.check_connected()?;
        let c = Command::Audio {
            id: self.id,
            sealed,
            level,
        };
        self.commands.send(c).await.map_err(|_| gone())
    }

    async fn send_video(&self, sealed: Vec<u8>, duration: Duration) -> Result<(), TransportError> {
        self.check_connected()?;
        let c = Command::Video {
            id: self.id,
            sealed,
            duration,
        };
        self.commands.send(c).await.map_err(|_| gone())
    }

    async fn close(&self) {
        let _ = self.commands.send(Command::Close { id: self.id }).await;
    }
}

/// What one of our outgoing m-lines has sent so far.
#[derive(Default)]
struct Outgoing {
    mid: Option<Mid>,
    seq: u64,
    timestamp: u32,
}

impl Outgoing {
    /// The RTP timestamp of the next frame, `step` clock ticks after the last.
    fn frame(&mut self, step: u32) -> u32 {
        self.timestamp = self.timestamp.wrapping_add(step);
        self.timestamp
    }

    /// The sequence number of the next packet.
    fn packet(&mut self) -> SeqNo {
        self.seq += 1;
        SeqNo::from(self.seq)
    }
}

/// The sending side of RFC 2198 audio redundancy (PROTOCOL.md §11), laid
/// out as every hush sender's ([`hush_proto::red::Repeater`]), with the
/// RED payload type the SFU's answer accepted, if it did.
#[derive(Default)]
struct Redundancy {
    repeater: hush_proto::red::Repeater,
    pt: Option<Pt>,
}

impl Redundancy {
    /// The payload and payload type for `sealed`, remembering it.
    fn packet(&mut self, sealed: Vec<u8>) -> (Vec<u8>, Pt) {
        let (payload, red) = self
            .repeater
            .packet(sealed, self.pt.is_some(), OPUS_PAYLOAD_TYPE);
        match (red, self.pt) {
            (true, Some(pt)) => (payload, pt),
            _ => (payload, Pt::from(OPUS_PAYLOAD_TYPE)),
        }
    }
}

/// The RED payload type negotiated for Opus: str0m folds RED onto the
/// primary codec's params and keeps it only where both sides offered it.
fn negotiated_red_pt(rtc: &Rtc) -> Option<Pt> {
    rtc.codec_config()
        .find(|p| p.spec().codec == RtcCodec::Opus)
        .and_then(|p| p.red())
}

/// Drops a share of received packets, each decision the next number of a
/// splitmix64 sequence: no clock and no OS randomness, so one seed and
/// connection number always drop the same places in a packet stream.
#[derive(Debug, Clone, Copy)]
struct Dropper {
    /// A draw below this drops the packet.
    threshold: u64,
    state: u64,
}

impl Dropper {
    /// The dropper of connection `n`, or `None` when nothing is dropped.
    fn new(loss: DownlinkLoss, n: u64) -> Option<Self> {
        // 2^64 × share; the cast saturates.
        let share = loss.percent.clamp(0.0, 100.0) / 100.0;
        let threshold = (share * 18_446_744_073_709_551_616.0) as u64;
        (threshold > 0).then(|| Self {
            threshold,
            // Mixed, not added: splitmix64 states a multiple of its
            // increment apart would give shifted copies of one sequence.
            state: mix64(loss.seed ^ mix64(n.wrapping_add(1))),
        })
    }

    /// Whether the next packet is dropped.
    fn drops(&mut self) -> bool {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state) < self.threshold
    }
}

/// splitmix64's output function (Steele, Lea and Flood, 2014).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A remote track as it arrives.
struct Inbound {
    stream_id: String,
    codec: Codec,
    /// The RED payload type of this connection's audio, if negotiated.
    red_pt: Option<Pt>,
    vp8: Vp8Reassembly,
}

struct Peer {
    rtc: Rtc,
    local: SocketAddr,
    events: mpsc::Sender<TransportEvent>,
    /// Frames for its call's driver not yet handed over: the hub hands
    /// them over after each batch of datagrams ([`Loop::hand_over`]), so a
    /// burst wakes the drivers' runtime once rather than once a frame.
    outbox: Vec<TransportEvent>,
    /// Listed in [`Loop::ready`].
    listed: bool,
    connected: Arc<AtomicBool>,
    with_video: bool,
    pending: Option<SdpPendingOffer>,
    audio: Outgoing,
    video: Outgoing,
    red: Redundancy,
    /// Downlink loss, if simulated.
    drops: Option<Dropper>,
    /// The MSID stream id of every m-line the SFU offered, by mid.
    streams: HashMap<Mid, String>,
    inbound: HashMap<Ssrc, Inbound>,
    scheduled: Option<Instant>,
    failed_after: Duration,
    disconnected_since: Option<Instant>,
    failed: bool,
}

impl Peer {
    fn fail(&mut self, why: &str) {
        if !std::mem::replace(&mut self.failed, true) {
            tracing::warn!(local = %self.local, why, "load generator: peer's media failed");
            self.connected.store(false, Ordering::Relaxed);
            self.send_now(TransportEvent::Failed);
        }
    }

    /// Hands over the frames held in the outbox, in order.
    fn hand_over(&mut self) {
        for event in self.outbox.drain(..) {
            // A driver that fell this far behind loses frames, as a
            // receiver behind on its socket would.
            let _ = self.events.try_send(event);
        }
    }

    /// Sends `event` now, after the frames held before it.
    fn send_now(&mut self, event: TransportEvent) {
        self.hand_over();
        let _ = self.events.try_send(event);
    }

    fn offer(&mut self) -> Result<String, String> {
        let mut api = self.rtc.sdp_api();
        // Our own tracks only send: what others publish comes on the
        // SFU's m-lines.
        let audio = api.add_media(
            MediaKind::Audio,
            Direction::SendOnly,
            Some("hush".into()),
            Some("hush-audio".into()),
            None,
        );
        let video = self.with_video.then(|| {
            api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("hush".into()),
                Some("hush-video".into()),
                None,
            )
        });
        let (offer, pending) = api.apply().ok_or("nothing to offer")?;
        self.audio.mid = Some(audio);
        self.video.mid = video;
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    fn apply_answer(&mut self, sdp: &str) -> Result<(), String> {
        let pending = self.pending.take().ok_or("no offer outstanding")?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        self.red.pt = negotiated_red_pt(&self.rtc);
        Ok(())
    }

    fn answer(&mut self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
        self.streams = stream_ids(sdp);
        // An m-line may now carry another publisher's track.
        self.inbound.clear();
        Ok(answer.to_sdp_string())
    }

    fn audio(&mut self, sealed: Vec<u8>, level: u8, now: Instant) {
        let Some(mid) = self.audio.mid else {
            return;
        };
        let (seq, timestamp) = (self.audio.packet(), self.audio.frame(960));
        let level = level.min(127);
        let ext = ExtensionValues {
            audio_level: Some(-(level as i8)),
            voice_activity: Some(level < 127),
            ..Default::default()
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        let (payload, pt) = self.red.packet(sealed);
        let write = RtpWrite::new(pt, seq, timestamp, now, payload)
            .marker(true)
            .ext_vals(ext);
        tx.write_rtp(write);
    }

    fn video(&mut self, sealed: &[u8], duration: Duration, now: Instant) {
        let Some(mid) = self.video.mid else {
            return;
        };
        let ticks = (duration.as_secs_f64() * 90_000.0) as u32;
        let timestamp = self.video.frame(ticks.max(1));
        let chunks: Vec<&[u8]> = sealed.chunks(VP8_CHUNK).collect();
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            // RFC 7741 descriptor: S (start of partition) on the first packet.
            let mut payload = Vec::with_capacity(chunk.len() + 1);
            payload.push(if i == 0 { 0x10 } else { 0x00 });
            payload.extend_from_slice(chunk);
            let seq = self.video.packet();
            let mut api = self.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                return;
            };
            let write = RtpWrite::new(Pt::from(VP8_PAYLOAD_TYPE), seq, timestamp, now, payload)
                .marker(i == last)
                .nackable(true);
            tx.write_rtp(write);
        }
    }

    fn packet(&mut self, packet: RtpPacket) {
        if self.drops.as_mut().is_some_and(Dropper::drops) {
            return; // lost on the way down (downlink loss)
        }
        let ssrc = packet.header.ssrc;
        if !self.inbound.contains_key(&ssrc) {
            let Some(mid) = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) else {
                return;
            };
            let (Some(stream_id), Some(media)) = (self.streams.get(&mid), self.rtc.media(mid))
            else {
                return;
            };
            let codec = match media.kind() {
                MediaKind::Audio => Codec::Opus,
                MediaKind::Video => Codec::Vp8,
            };
            self.inbound.insert(
                ssrc,
                Inbound {
                    stream_id: stream_id.clone(),
                    codec,
                    red_pt: negotiated_red_pt(&self.rtc),
                    vp8: Vp8Reassembly::default(),
                },
            );
        }
        let Some(inbound) = self.inbound.get_mut(&ssrc) else {
            return;
        };
        let outbox = &mut self.outbox;
        let mut emit = |data: Vec<u8>, timestamp: u32| {
            outbox.push(TransportEvent::Frame {
                stream_id: inbound.stream_id.clone(),
                codec: inbound.codec,
                data,
                at: Instant::now(),
                timestamp,
                red: inbound.codec == Codec::Opus
                    && inbound.red_pt == Some(packet.header.payload_type),
            });
        };
        match inbound.codec {
            Codec::Opus => emit(packet.payload.to_vec(), packet.header.timestamp),
            // A retransmission can complete several held frames at once.
            Codec::Vp8 => {
                for frame in inbound.vp8.push(
                    packet.header.sequence_number,
                    packet.header.timestamp,
                    packet.header.marker,
                    &Bytes::copy_from_slice(&packet.payload),
                ) {
                    emit(frame.data, frame.timestamp);
                }
            }
        }
    }

    fn event(&mut self, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(p) => self.packet(p),
            Event::Connected => {
                self.connected.store(true, Ordering::Relaxed);
                self.send_now(TransportEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.disconnected_since.get_or_insert(now);
            }
            Event::IceConnectionStateChange(_) => self.disconnected_since = None,
            Event::Closed => self.fail("closed"),
            _ => {}
        }
    }
}

/// The MSID stream id of each m-section of `sdp`, by mid.
fn stream_ids(sdp: &str) -> HashMap<Mid, String> {
    let mut out = HashMap::new();
    let mut mid: Option<&str> = None;
    let mut msid: Option<&str> = None;
    let mut flush = |mid: &mut Option<&str>, msid: &mut Option<&str>| {
        if let (Some(m), Some(s)) = (mid.take(), msid.take()) {
            out.insert(Mid::from(m), s.to_owned());
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            flush(&mut mid, &mut msid);
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m);
        } else if let Some(rest) = line.strip_prefix("a=msid:") {
            msid = rest.split_whitespace().next();
        }
    }
    flush(&mut mid, &mut msid);
    out
}

/// What a call asks of the peer it opens.
struct NewPeer {
    with_video: bool,
    failed: Duration,
    drops: Option<Dropper>,
    events: mpsc::Sender<TransportEvent>,
    connected: Arc<AtomicBool>,
}

struct Loop {
    socket: UdpSocket,
    state: UdpSocketState,
    port: u16,
    config: RtcConfig,
    /// Earlier audio frames each peer's packets repeat (RED).
    audio_redundancy: usize,
    peers: HashMap<u64, Peer>,
    by_ip: HashMap<IpAddr, u64>,
    next_id: u64,
    timers: Deadlines,
    /// Events of the peer being drained (kept for its allocation).
    events: Vec<Event>,
    /// Datagrams to send before the next wake-up: (from, to, bytes).
    out: Vec<(IpAddr, SocketAddr, Vec<u8>)>,
    /// Peers with frames in their outbox.
    ready: Vec<u64>,
    next_liveness: Instant,
}

impl Loop {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut slots = vec![vec![0u8; SLOT_BYTES]; BATCH];
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                ready = self.socket.readable() => {
                    if ready.is_ok() {
                        self.read(&mut slots);
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(c) => {
                        self.command(c);
                        for _ in 0..COMMAND_BATCH {
                            match commands.try_recv() {
                                Ok(c) => self.command(c),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every connector and connection is gone.
                    None => return,
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            let now = Instant::now();
            if self.next_deadline() <= now {
                self.timeouts(now);
            }
            self.hand_over();
            self.flush().await;
        }
    }

    fn next_deadline(&self) -> Instant {
        match self.timers.next() {
            Some(t) => t.min(self.next_liveness),
            None => self.next_liveness,
        }
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Open {
                with_video,
                failed,
                drops,
                events,
                connected,
                reply,
            } => {
                let peer = NewPeer {
                    with_video,
                    failed,
                    drops,
                    events,
                    connected,
                };
                let _ = reply.send(self.open(peer, now));
            }
            Command::Offer { id, reply } => {
                let r = self.with_peer(id, Peer::offer);
                let _ = reply.send(r);
            }
            Command::ApplyAnswer { id, sdp, reply } => {
                let r = self.with_peer(id, |p| p.apply_answer(&sdp));
                let _ = reply.send(r);
            }
            Command::Answer { id, sdp, reply } => {
                let r = self.with_peer(id, |p| p.answer(&sdp));
                let _ = reply.send(r);
            }
            Command::Candidate { id, candidate } => {
                let _ = self.with_peer(id, |p| {
                    let line = candidate.trim();
                    if !line.is_empty() {
                        let c = Candidate::from_sdp_string(line).map_err(|e| e.to_string())?;
                        p.rtc.add_remote_candidate(c);
                    }
                    Ok(())
                });
            }
            Command::Audio { id, sealed, level } => {
                let _ = self.with_peer(id, |p| {
                    p.audio(sealed, level, now);
                    Ok(())
                });
            }
            Command::Video {
                id,
                sealed,
                duration,
            } => {
                let _ = self.with_peer(id, |p| {
                    p.video(&sealed, duration, now);
                    Ok(())
                });
            }
            Command::Close { id } => {
                if let Some(mut peer) = self.peers.remove(&id) {
                    self.by_ip.remove(&peer.local.ip());
                    peer.rtc.disconnect();
                    // What the close produced (a DTLS close_notify) still goes out.
                    while let Ok(Output::Transmit(t)) = peer.rtc.poll_output() {
                        self.out
                            .push((t.source.ip(), t.destination, t.contents.into()));
                    }
                }
            }
        }
    }

    fn open(&mut self, new: NewPeer, now: Instant) -> Result<u64, String> {
        // The next free address; ids only grow, addresses are reused once free.
        let mut n = 0u32;
        let ip = loop {
            let ip = IpAddr::V4(peer_ip(n));
            if !self.by_ip.contains_key(&ip) {
                break ip;
            }
            n = n.checked_add(1).ok_or("no free loopback address")?;
            if n >= 254 * 256 * 64 {
                return Err("no free loopback address".into());
            }
        };
        let local = SocketAddr::new(ip, self.port);
        let mut rtc = self.config.clone().build(now);
        let candidate = Candidate::host(local, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(candidate);
        let id = self.next_id;
        self.next_id += 1;
        self.by_ip.insert(ip, id);
        self.peers.insert(
            id,
            Peer {
                rtc,
                local,
                events: new.events,
                outbox: Vec::new(),
                listed: false,
                connected: new.connected,
                with_video: new.with_video,
                pending: None,
                audio: Outgoing::default(),
                video: Outgoing::default(),
                red: Redundancy {
                    repeater: hush_proto::red::Repeater::new(self.audio_redundancy),
                    pt: None,
                },
                drops: new.drops,
                streams: HashMap::new(),
                inbound: HashMap::new(),
                scheduled: None,
                failed_after: new.failed,
                disconnected_since: None,
                failed: false,
            },
        );
        Ok(id)
    }

    /// Runs `f` on peer `id`, then drains what it caused.
    fn with_peer<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Peer) -> Result<T, String>,
    ) -> Result<T, String> {
        let peer = self.peers.get_mut(&id).ok_or("no such peer")?;
        let r = f(peer);
        self.drain(id);
        r
    }

    fn read(&mut self, slots: &mut [Vec<u8>]) {
        loop {
            let mut metas = [RecvMeta::default(); BATCH];
            let mut bufs: Vec<IoSliceMut<'_>> =
                slots.iter_mut().map(|s| IoSliceMut::new(s)).collect();
            let got = self.socket.try_io(Interest::READABLE, || {
                self.state
                    .recv((&self.socket).into(), &mut bufs, &mut metas)
            });
            let n = match got {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "load generator: UDP receive failed");
                    return;
                }
            };
            let now = Instant::now();
            for (meta, buf) in metas.iter().zip(bufs.iter()).take(n) {
                let stride = meta.stride.max(1);
                for datagram in buf[..meta.len].chunks(stride) {
                    self.datagram(meta, datagram, now);
                }
            }
            self.hand_over();
            if n < BATCH {
                return;
            }
        }
    }

    fn datagram(&mut self, meta: &RecvMeta, data: &[u8], now: Instant) {
        let Some(dst) = meta.dst_ip else {
            return;
        };
        if !dst.is_loopback() || !meta.addr.ip().is_loopback() {
            return; // the generator talks to this machine only
        }
        let Some(&id) = self.by_ip.get(&dst) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Ok(receive) = Receive::new(Protocol::Udp, meta.addr, peer.local, data) else {
            return;
        };
        if let Err(e) = peer.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!(error = %e, "load generator: input refused");
        }
        self.drain(id);
    }

    /// Drains a peer's output: datagrams, events, its next deadline.
    fn drain(&mut self, id: u64) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        let (out, events) = (&mut self.out, &mut self.events);
        let drained = pump::drain(&mut peer.rtc, now, |output| match output {
            Output::Transmit(t) => out.push((t.source.ip(), t.destination, t.contents.into())),
            Output::Event(e) => events.push(e),
            Output::Timeout(_) => {}
        });
        for e in self.events.drain(..) {
            peer.event(e, now);
        }
        if !peer.outbox.is_empty() && !std::mem::replace(&mut peer.listed, true) {
            self.ready.push(id);
        }
        match drained {
            Ok(t) => self.timers.schedule(id, t, &mut peer.scheduled),
            Err(e) => peer.fail(&e.to_string()),
        }
    }

    /// Hands every held frame to its call's driver.
    fn hand_over(&mut self) {
        for id in self.ready.drain(..) {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.listed = false;
                peer.hand_over();
            }
        }
    }

    fn timeouts(&mut self, now: Instant) {
        while let Some((id, t)) = self.timers.pop_due(now) {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.scheduled != Some(t) {
                continue; // superseded by an earlier deadline
            }
            peer.scheduled = None;
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(error = %e, "load generator: timeout refused");
            }
            self.drain(id);
        }
        if now >= self.next_liveness {
            self.next_liveness = now + LIVENESS_TICK;
            for peer in self.peers.values_mut() {
                if peer
                    .disconnected_since
                    .is_some_and(|t| now.duration_since(t) >= peer.failed_after)
                {
                    peer.fail("ICE disconnected too long");
                }
            }
        }
    }

    async fn flush(&mut self) {
        for (from, to, data) in std::mem::take(&mut self.out) {
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents: &data,
                segment_size: None,
                src_ip: Some(from),
            };
            loop {
                let sent = self.socket.try_io(Interest::WRITABLE, || {
                    self.state.try_send((&self.socket).into(), &transmit)
                });
                match sent {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if self.socket.writable().await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, %to, "load generator: UDP send failed");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_are_distinct_loopback_hosts() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..100_000 {
            let ip = peer_ip(n);
            assert!(ip.is_loopback(), "{ip}");
            assert!(ip.octets()[3] != 0 && ip.octets()[3] != 255, "{ip}");
            assert_ne!(ip, Ipv4Addr::LOCALHOST);
            assert!(seen.insert(ip), "{ip} twice");
        }
    }

    #[test]
    fn audio_packets_repeat_the_two_frames_before_once_red_is_accepted() {
        let mut red = Redundancy {
            repeater: hush_proto::red::Repeater::new(2),
            pt: None,
        };
        let (payload, pt) = red.packet(b"f0".to_vec());
        assert_eq!((payload.as_slice(), *pt), (&b"f0"[..], OPUS_PAYLOAD_TYPE));
        red.pt = Some(Pt::from(63));
        for (frame, earlier) in [
            (&b"f1"[..], vec![(960, &b"f0"[..])]),
            (b"f2", vec![(1920, b"f0"), (960, b"f1")]),
            (b"f3", vec![(1920, b"f1"), (960, b"f2")]),
        ] {
            let (payload, pt) = red.packet(frame.to_vec());
            assert_eq!(*pt, 63);
            let parsed = hush_proto::red::parse(&payload).expect("RED");
            let got: Vec<(u32, &[u8])> = parsed
                .redundant
                .iter()
                .map(|b| (b.timestamp_offset, b.data))
                .collect();
            assert_eq!(got, earlier);
            assert_eq!(parsed.primary.data, frame);
            assert_eq!(parsed.primary.payload_type, OPUS_PAYLOAD_TYPE);
        }
        // Depth 0 sends plain Opus even when RED was accepted.
        let mut plain = Redundancy {
            repeater: hush_proto::red::Repeater::new(0),
            pt: Some(Pt::from(63)),
        };
        plain.packet(b"f0".to_vec());
        let (payload, pt) = plain.packet(b"f1".to_vec());
        assert_eq!((payload.as_slice(), *pt), (&b"f1"[..], OPUS_PAYLOAD_TYPE));
    }

    #[test]
    fn downlink_loss_drops_its_share_the_same_way_for_a_seed_and_connection() {
        let loss = DownlinkLoss {
            percent: 10.0,
            seed: 7,
        };
        let draws = |n: u64| {
            let mut d = Dropper::new(loss, n).expect("a dropper");
            (0..100_000).map(|_| d.drops()).collect::<Vec<bool>>()
        };
        let first = draws(0);
        let dropped = first.iter().filter(|&&d| d).count();
        assert!((9_500..10_500).contains(&dropped), "{dropped}");
        assert_eq!(first, draws(0), "the same seed and connection");
        assert_ne!(first, draws(1), "another connection");
        let other_seed = DownlinkLoss { seed: 8, ..loss };
        let mut d = Dropper::new(other_seed, 0).expect("a dropper");
        assert_ne!(first, (0..100_000).map(|_| d.drops()).collect::<Vec<_>>());
        assert!(Dropper::new(DownlinkLoss::default(), 0).is_none());
    }

    #[test]
    fn stream_ids_are_read_per_m_section() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:p7 p7-audio-0\r\na=mid:1\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:p9 p9-video-0\r\n";
        let ids = stream_ids(sdp);
        assert_eq!(ids.len(), 2);
        assert_eq!(ids.get(&Mid::from("1")).map(String::as_str), Some("p7"));
        assert_eq!(ids.get(&Mid::from("2")).map(String::as_str), Some("p9"));
        assert!(!ids.contains_key(&Mid::from("0")));
    }
}
