//! The client's WebRTC connection to the SFU (webrtc-rs 0.21): one peer
//! connection carrying our Opus (and optionally VP8) track out and every
//! other member's tracks in. Payloads are already SFrame ciphertext when
//! they get here; this layer only packetizes and reassembles.
//!
//! The driver sees a connection only through [`MediaConnection`], built by
//! a [`Connector`]: [`Transport`] is the one every real client uses; the
//! load tester plugs in cheaper peers that share one socket.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hush_proto::media::{OPUS_PAYLOAD_TYPE, RED_PAYLOAD_TYPE, VP8_PAYLOAD_TYPE};
use hush_proto::{IceCandidate, MediaKind};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState,
};

use crate::error::TransportError as Error;
use crate::frame::Codec;
use crate::setup;

/// What the connection reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A local ICE candidate to trickle to the SFU.
    IceCandidate(IceCandidate),
    /// ICE and DTLS are up.
    Connected,
    /// The connection failed or closed.
    Failed,
    /// A complete (still encrypted) frame from a remote track.
    Frame {
        /// MSID stream id of the track (the SFU names the publisher by it).
        stream_id: String,
        /// Codec of the track.
        codec: Codec,
        /// The frame as the publisher sealed it; for audio with `red`,
        /// the RED payload holding it and the frames before it.
        data: Vec<u8>,
        /// When its last packet arrived.
        at: Instant,
        /// Its RTP timestamp (as the SFU forwards it).
        timestamp: u32,
        /// The payload is RFC 2198 RED (audio only).
        red: bool,
    },
    /// A remote track ended.
    TrackEnded {
        /// Its stream id.
        stream_id: String,
    },
}

/// A media connection to the SFU as the call driver uses it: SDP in and
/// out, trickled candidates, sealed frames out. What it receives comes as
/// [`TransportEvent`]s on the channel its [`Connector`] returned.
#[async_trait::async_trait]
pub trait MediaConnection: Send + Sync {
    /// Our offer (candidates included).
    async fn offer(&self) -> Result<String, Error>;
    /// An offer that restarts ICE (new credentials, RFC 8445 §9): what
    /// revives a connection whose path failed. Unsupported by default.
    async fn restart_offer(&self) -> Result<String, Error> {
        Err(Error::RestartUnsupported)
    }
    /// The SFU's answer to our offer.
    async fn apply_answer(&self, sdp: String) -> Result<(), Error>;
    /// Answers an SFU-initiated offer (renegotiation).
    async fn answer(&self, sdp: String) -> Result<String, Error>;
    /// A candidate the SFU trickled.
    async fn add_ice_candidate(&self, c: IceCandidate) -> Result<(), Error>;
    /// Sends one sealed Opus frame (20 ms) with its RFC 6464 audio level.
    async fn send_audio(&self, sealed: Vec<u8>, level: u8) -> Result<(), Error>;
    /// Sends one sealed VP8 frame lasting `duration`.
    async fn send_video(&self, sealed: Vec<u8>, duration: Duration) -> Result<(), Error>;
    /// Closes the connection.
    async fn close(&self);
}

/// A new media connection and the channel of what it reports.
pub type Connected = (Box<dyn MediaConnection>, mpsc::Receiver<TransportEvent>);

/// Builds the media connection of each call that uses it.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + 'static {
    /// A connection with an audio track (and a video track if asked) whose
    /// ICE gives up after the given timeouts.
    async fn connect(
        &self,
        with_video: bool,
        disconnected: Duration,
        failed: Duration,
    ) -> Result<Connected, Error>;
}

/// The [`Connector`] of real clients: a webrtc-rs [`Transport`] per call.
#[derive(Debug, Clone, Copy)]
pub struct WebRtcConnector {
    /// The one local address media may use, or `None` for every
    /// interface (see [`udp_addrs`]).
    pub bind: Option<IpAddr>,
    /// How many earlier audio frames each packet repeats (RFC 2198 RED,
    /// at most [`hush_proto::red::MAX_REDUNDANT`]; 0 sends plain Opus).
    pub audio_redundancy: usize,
}

impl Default for WebRtcConnector {
    fn default() -> Self {
        Self {
            bind: None,
            audio_redundancy: hush_proto::red::MAX_REDUNDANT,
        }
    }
}

#[async_trait::async_trait]
impl Connector for WebRtcConnector {
    async fn connect(
        &self,
        with_video: bool,
        disconnected: Duration,
        failed: Duration,
    ) -> Result<Connected, Error> {
        let (t, events) =
            Transport::with_ice_timeouts(with_video, disconnected, failed, self.bind).await?;
        t.set_audio_redundancy(self.audio_redundancy);
        Ok((Box::new(t), events))
    }
}

/// The local UDP addresses a media connection binds (port 0: ephemeral).
/// With no `bind`, or an unspecified one, every interface: webrtc-rs
/// expands `0.0.0.0` to one socket per non-loopback IPv4 address (so a
/// server on another machine gets a host candidate it can reach), and
/// loopback is added for a server on this machine. A concrete `bind`
/// is used alone, as given.
///
/// The same addresses are bound for ICE-TCP (RFC 6544), expanded the same
/// way: webrtc-rs makes an active TCP candidate only from a TCP listener,
/// one per address, and matches a connection it dials to that candidate
/// by the connection's local IP.
pub fn udp_addrs(bind: Option<IpAddr>) -> Vec<String> {
    match bind {
        Some(ip) if !ip.is_unspecified() => vec![std::net::SocketAddr::new(ip, 0).to_string()],
        _ => vec!["0.0.0.0:0".to_owned(), "127.0.0.1:0".to_owned()],
    }
}

#[async_trait::async_trait]
impl MediaConnection for Transport {
    async fn offer(&self) -> Result<String, Error> {
        Transport::offer(self).await
    }

    async fn restart_offer(&self) -> Result<String, Error> {
        let options = rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true };
        let offer = self
            .pc
            .create_offer(Some(options))
            .await
            .map_err(transport)?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(transport)?;
        self.local_sdp().await
    }

    async fn apply_answer(&self, sdp: String) -> Result<(), Error> {
        Transport::apply_answer(self, sdp).await
    }

    async fn answer(&self, sdp: String) -> Result<String, Error> {
        Transport::answer(self, sdp).await
    }

    async fn add_ice_candidate(&self, c: IceCandidate) -> Result<(), Error> {
        Transport::add_ice_candidate(self, c).await
    }

    async fn send_audio(&self, sealed: Vec<u8>, level: u8) -> Result<(), Error> {
        Transport::send_audio(self, sealed, level).await
    }

    async fn send_video(&self, sealed: Vec<u8>, duration: Duration) -> Result<(), Error> {
        Transport::send_video(self, sealed, duration).await
    }

    async fn close(&self) {
        Transport::close(self).await;
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    setup::codec(if kind == RtpCodecKind::Audio {
        MediaKind::Audio
    } else {
        MediaKind::Video
    })
}

fn transport(e: webrtc::error::Error) -> Error {
    Error::WebRtc(e)
}

struct LocalTrack {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
}

/// The peer connection to the SFU.
pub struct Transport {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    audio: LocalTrack,
    video: Option<LocalTrack>,
    /// The SFU's passive TCP candidates were handed to ICE (once per call:
    /// webrtc-rs dials a new connection each time it is given one).
    tcp_dialed: AtomicBool,
    /// Audio redundancy: what the SFU accepted and the frames to repeat.
    red: Mutex<RedSender>,
}

/// The sending side of RFC 2198 audio redundancy (PROTOCOL.md §11).
#[derive(Debug, Default)]
struct RedSender {
    /// The SFU's answer accepted `audio/red` under our payload type.
    negotiated: bool,
    /// The frames each packet repeats.
    repeater: hush_proto::red::Repeater,
}

impl RedSender {
    /// The payload and payload type for `sealed`, remembering it.
    fn packet(&mut self, sealed: Vec<u8>) -> (Vec<u8>, u8) {
        let (payload, red) = self
            .repeater
            .packet(sealed, self.negotiated, OPUS_PAYLOAD_TYPE);
        let pt = if red {
            RED_PAYLOAD_TYPE
        } else {
            OPUS_PAYLOAD_TYPE
        };
        (payload, pt)
    }
}

/// Whether an SDP (the SFU's answer) accepts `audio/red` under our payload type.
fn accepts_red(sdp: &str) -> bool {
    let wanted = format!("a=rtpmap:{RED_PAYLOAD_TYPE} ");
    sdp.lines().any(|l| {
        l.strip_prefix(&wanted)
            .is_some_and(|rest| rest.to_ascii_lowercase().starts_with("red/48000"))
    })
}

impl core::fmt::Debug for Transport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transport")
            .field("video", &self.video.is_some())
            .finish_non_exhaustive()
    }
}

struct Handler {
    events: mpsc::Sender<TransportEvent>,
    gathered: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self
                .events
                .try_send(TransportEvent::IceCandidate(IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_m_line_index: init.sdp_mline_index,
                }));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let event = match state {
            RTCPeerConnectionState::Connected => TransportEvent::Connected,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                TransportEvent::Failed
            }
            _ => return,
        };
        let _ = self.events.try_send(event);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Callbacks run inside the connection's driver: hand the track to its own task.
        tokio::spawn(read_track(track, self.events.clone()));
    }
}

/// Reads one remote track, reassembling frames (VP8 spans several packets).
async fn read_track(track: Arc<dyn TrackRemote>, events: mpsc::Sender<TransportEvent>) {
    let stream_id = track.stream_id().await.to_string();
    let codec = if track.kind().await == RtpCodecKind::Audio {
        Codec::Opus
    } else {
        Codec::Vp8
    };
    let mut vp8 = Vp8Reassembly::default();
    let emit = |data: Vec<u8>, timestamp: u32, red: bool| {
        let ev = TransportEvent::Frame {
            stream_id: stream_id.clone(),
            codec,
            data,
            at: Instant::now(),
            timestamp,
            red,
        };
        // A full queue means the application is not keeping up; drop, as a jitter buffer would.
        let _ = events.try_send(ev);
    };
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        match codec {
            Codec::Opus => emit(
                packet.payload.to_vec(),
                packet.header.timestamp,
                packet.header.payload_type == RED_PAYLOAD_TYPE,
            ),
            Codec::Vp8 => {
                // A retransmission can complete several held frames at once.
                for frame in vp8.push(
                    packet.header.sequence_number,
                    packet.header.timestamp,
                    packet.header.marker,
                    &packet.payload,
                ) {
                    emit(frame.data, frame.timestamp, false);
                }
            }
        }
    }
    let _ = events.try_send(TransportEvent::TrackEnded { stream_id });
}

/// Largest VP8 frame reassembled, and the most payload bytes
/// [`Vp8Reassembly`] holds at once: a frame that grows past it (a sender
/// that never sets the marker bit, say) is dropped, so no member can grow
/// a receiver's memory without bound.
pub const MAX_VP8_FRAME_BYTES: usize = 2 * 1024 * 1024;

/// Most frames (distinct RTP timestamps) [`Vp8Reassembly`] holds at once.
pub const MAX_HELD_VP8_FRAMES: usize = 8;

/// Most packets [`Vp8Reassembly`] holds at once.
pub const MAX_HELD_VP8_PACKETS: usize = 256;

/// Complete frames [`Vp8Reassembly`] holds back behind a gap, waiting for
/// a retransmission (NACK/RTX) to fill it; when one more completes, the
/// gap is given up. At 15 fps that is 200 ms, about one NACK interval of
/// webrtc-rs (100 ms) plus a round trip.
pub const VP8_FRAMES_HELD_FOR_A_GAP: usize = 3;

/// A packet this far behind the next expected one is no late
/// retransmission (webrtc-rs keeps 1,024 packets for them) but a stream
/// that started over: everything held is dropped and it is followed.
const RESTART_DISTANCE: u64 = 1024;

/// A reassembled VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp8Frame {
    /// RTP timestamp of its packets.
    pub timestamp: u32,
    /// The frame (still encrypted), descriptors stripped.
    pub data: Vec<u8>,
}

/// Reassembles VP8 frames from RTP packets (RFC 7741) that may arrive out
/// of order, duplicated, or late as retransmissions (webrtc-rs hands an
/// RTX packet back as the original: its sequence number and payload).
///
/// A frame is the packets of consecutive sequence numbers from a frame
/// start (S bit, partition 0) to the marker bit, all of one timestamp.
/// Frames come out in sequence order, never one older than a frame
/// already emitted: packets are held (by extended sequence number) until
/// the frame they complete is next. A gap before a complete frame (a lost
/// packet, or a whole frame lost) holds it back until the gap fills or
/// [`VP8_FRAMES_HELD_FOR_A_GAP`] frames wait behind it; then the gap is
/// given up and whatever it held back comes out. Packets that arrive for
/// a frame given up or emitted are dropped. At most
/// [`MAX_HELD_VP8_FRAMES`] frames, [`MAX_HELD_VP8_PACKETS`] packets and
/// [`MAX_VP8_FRAME_BYTES`] payload bytes are held: beyond, the oldest
/// frame is dropped, complete or not.
#[derive(Default)]
pub struct Vp8Reassembly {
    depacketizer: Vp8Packet,
    /// Packets held, by extended sequence number.
    held: BTreeMap<u64, HeldPacket>,
    /// Packets held per RTP timestamp (at most one entry more than
    /// [`MAX_HELD_VP8_FRAMES`], briefly).
    frames: Vec<(u32, usize)>,
    /// Payload bytes held (descriptors stripped).
    bytes: usize,
    /// Extended sequence number of the newest packet.
    highest: Option<u64>,
    /// Where the next frame must start: just after the last frame emitted
    /// or given up; `None` until the first.
    next: Option<u64>,
}

struct HeldPacket {
    timestamp: u32,
    marker: bool,
    /// The first packet of a frame: S bit set, partition index 0.
    start: bool,
    /// The VP8 data after the payload descriptor; `None` if the descriptor
    /// did not parse (its frame is dropped).
    part: Option<Bytes>,
}

impl HeldPacket {
    fn len(&self) -> usize {
        self.part.as_ref().map_or(0, Bytes::len)
    }
}

/// What the packets held from one sequence number on make.
#[derive(Debug, PartialEq, Eq)]
enum Run {
    /// A whole frame, ending at this sequence number.
    Complete(u64),
    /// A frame that can never come out (no start, a bad descriptor, no
    /// marker before the next frame), ending at this sequence number.
    Broken(u64),
    /// A packet is missing.
    Gap,
}

impl core::fmt::Debug for Vp8Reassembly {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vp8Reassembly")
            .field("packets", &self.held.len())
            .field("frames", &self.frames.len())
            .field("bytes", &self.bytes)
            .field("next", &self.next)
            .finish()
    }
}

impl Vp8Reassembly {
    /// One packet; returns the frames it lets out, oldest first: none, the
    /// frame it completes, or (a retransmission filling a gap) that frame
    /// and the complete ones held behind it.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &Bytes,
    ) -> Vec<Vp8Frame> {
        let mut out = Vec::new();
        let ext = self.extend(seq);
        if let Some(next) = self.next
            && ext < next
        {
            if next - ext <= RESTART_DISTANCE {
                // Late: its frame was emitted or given up; or a duplicate.
                return out;
            }
            self.restart(ext);
        }
        if self.held.contains_key(&ext) {
            return out;
        }
        let part = self
            .depacketizer
            .depacketize(payload)
            .ok()
            .filter(|p| p.len() <= MAX_VP8_FRAME_BYTES);
        let packet = HeldPacket {
            timestamp,
            marker,
            // X R N S R PID: S set, PID 0 (RFC 7741 §4.2).
            start: payload.first().is_some_and(|b| b & 0x17 == 0x10),
            part,
        };
        self.hold(ext, packet);
        while self.held.len() > MAX_HELD_VP8_PACKETS
            || self.frames.len() > MAX_HELD_VP8_FRAMES
            || self.bytes > MAX_VP8_FRAME_BYTES
        {
            self.drop_oldest_frame();
        }
        self.drain(&mut out);
        out
    }

    /// Payload bytes held.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held.
    pub fn held_packets(&self) -> usize {
        self.held.len()
    }

    /// Frames (RTP timestamps) of the packets held.
    pub fn held_frames(&self) -> usize {
        self.frames.len()
    }

    /// The extended sequence number of `seq`: the one nearest the newest
    /// packet's (RFC 3550 A.1), counting from 2^32 so it never goes below 0.
    fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.highest {
            None => (1 << 32) | u64::from(seq),
            Some(h) => {
                // Truncation intended: the low 16 bits, then the signed distance.
                let delta = seq.wrapping_sub(h as u16) as i16;
                h.saturating_add_signed(i64::from(delta))
            }
        };
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        ext
    }

    fn restart(&mut self, ext: u64) {
        self.highest = Some(ext);
        self.held.clear();
        self.frames.clear();
        self.bytes = 0;
        self.next = None;
    }

    fn hold(&mut self, ext: u64, packet: HeldPacket) {
        self.bytes += packet.len();
        match self.frames.iter_mut().find(|(t, _)| *t == packet.timestamp) {
            Some((_, n)) => *n += 1,
            None => self.frames.push((packet.timestamp, 1)),
        }
        self.held.insert(ext, packet);
    }

    /// Takes every packet held before `ext` out, for the caller to use or drop.
    fn take_before(&mut self, ext: u64) -> BTreeMap<u64, HeldPacket> {
        let rest = self.held.split_off(&ext);
        let taken = std::mem::replace(&mut self.held, rest);
        for packet in taken.values() {
            self.bytes -= packet.len();
            if let Some(i) = self.frames.iter().position(|(t, _)| *t == packet.timestamp) {
                self.frames[i].1 -= 1;
                if self.frames[i].1 == 0 {
                    self.frames.swap_remove(i);
                }
            }
        }
        taken
    }

    /// Drops every packet before `ext`; the next frame must start there.
    fn skip_to(&mut self, ext: u64) {
        self.take_before(ext);
        self.next = Some(ext);
    }

    /// Over a bound: drops the oldest frame held, up to the next frame start.
    fn drop_oldest_frame(&mut self) {
        let Some((&first, _)) = self.held.first_key_value() else {
            return;
        };
        let next_start = self
            .held
            .range(first + 1..)
            .find(|(_, p)| p.start)
            .map(|(&k, _)| k);
        let to = match (next_start, self.held.last_key_value()) {
            (Some(start), _) => start,
            (None, Some((&last, _))) => last + 1,
            (None, None) => return,
        };
        self.skip_to(to);
    }

    /// Emits every frame that is next and complete, giving up gaps that
    /// have held back enough.
    fn drain(&mut self, out: &mut Vec<Vp8Frame>) {
        while !self.held.is_empty() {
            let at = match self.next {
                Some(next) => next,
                // Before the first frame: it starts at the oldest frame start.
                None => match self.held.iter().find(|(_, p)| p.start) {
                    Some((&k, _)) => k,
                    None => return,
                },
            };
            match self.run_at(at) {
                Run::Complete(end) => {
                    let taken = self.take_before(end + 1);
                    self.next = Some(end + 1);
                    let timestamp = taken.get(&at).map_or(0, |p| p.timestamp);
                    let mut data =
                        Vec::with_capacity(taken.range(at..).map(|(_, p)| p.len()).sum());
                    for part in taken.range(at..).filter_map(|(_, p)| p.part.as_ref()) {
                        data.extend_from_slice(part);
                    }
                    if !data.is_empty() {
                        out.push(Vp8Frame { timestamp, data });
                    }
                }
                Run::Broken(end) => self.skip_to(end + 1),
                Run::Gap => match self.give_up_at(at) {
                    Some(start) => self.skip_to(start),
                    None => return,
                },
            }
        }
    }

    /// What the packets held from `at` on make.
    fn run_at(&self, at: u64) -> Run {
        let mut timestamp = None;
        let mut parsed = true;
        for ((&k, p), expected) in self.held.range(at..).zip(at..) {
            if k != expected {
                return Run::Gap;
            }
            match timestamp {
                None if !p.start => return Run::Broken(k),
                None => timestamp = Some(p.timestamp),
                // The next frame began before this one's marker came.
                Some(t) if p.start || p.timestamp != t => return Run::Broken(k - 1),
                Some(_) => {}
            }
            parsed &= p.part.is_some();
            if p.marker {
                return if parsed {
                    Run::Complete(k)
                } else {
                    Run::Broken(k)
                };
            }
        }
        Run::Gap
    }

    /// Where to go on from a gap at `at`: the start of the first complete
    /// frame after it, once [`VP8_FRAMES_HELD_FOR_A_GAP`] complete frames
    /// wait behind the gap or the gap is too long to be held when it fills.
    fn give_up_at(&self, at: u64) -> Option<u64> {
        let mut first = None;
        let mut complete = 0;
        // The frame being followed: its start, timestamp, next sequence
        // number, and whether every descriptor parsed.
        let mut run: Option<(u64, u32, u64, bool)> = None;
        for (&k, p) in self.held.range(at + 1..) {
            if p.start {
                run = Some((k, p.timestamp, k, true));
            }
            match &mut run {
                Some((start, timestamp, expected, parsed))
                    if *expected == k && *timestamp == p.timestamp =>
                {
                    *parsed &= p.part.is_some();
                    if p.marker {
                        if *parsed {
                            complete += 1;
                            first.get_or_insert(*start);
                        }
                        run = None;
                    } else {
                        *expected += 1;
                    }
                }
                _ => run = None,
            }
            if complete > VP8_FRAMES_HELD_FOR_A_GAP {
                break;
            }
        }
        let first = first?;
        (complete > VP8_FRAMES_HELD_FOR_A_GAP || first - at > MAX_HELD_VP8_PACKETS as u64)
            .then_some(first)
    }
}

fn local_track(kind: RtpCodecKind, label: &str) -> Result<LocalTrack, Error> {
    let ssrc: u32 = rand::random();
    let track = TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "hush".to_owned(),
            format!("hush-{label}"),
            format!("hush-{label}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec(kind),
                ..Default::default()
            }],
        ),
    )
    .map_err(transport)?;
    Ok(LocalTrack {
        track: Arc::new(track),
        ssrc,
    })
}

impl Transport {
    /// Builds the connection with an audio track (and a video track if asked).
    pub async fn new(with_video: bool) -> Result<(Self, mpsc::Receiver<TransportEvent>), Error> {
        Self::with_ice_timeouts(
            with_video,
            Duration::from_secs(3),
            Duration::from_secs(6),
            None,
        )
        .await
    }

    /// As [`Transport::new`], with the ICE timeouts after which an
    /// unanswered connection counts as disconnected, then failed (the load
    /// test, whose clients share their cores with the SFU, waits longer),
    /// and the local address to bind ([`udp_addrs`]).
    pub async fn with_ice_timeouts(
        with_video: bool,
        disconnected: Duration,
        failed: Duration,
        bind: Option<IpAddr>,
    ) -> Result<(Self, mpsc::Receiver<TransportEvent>), Error> {
        let (events_tx, events) = mpsc::channel(4096);
        let (gathered_tx, gathered) = watch::channel(false);
        // The codecs, extension and interceptors of PROTOCOL.md §11.
        let (engine, registry) = setup::media_engine()?;
        let settings = setup::setting_engine(disconnected, failed);
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler {
                events: events_tx,
                gathered: gathered_tx,
            }))
            .with_udp_addrs(udp_addrs(bind))
            .with_tcp_addrs(udp_addrs(bind))
            .build()
            .await
            .map_err(transport)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let audio = local_track(RtpCodecKind::Audio, "audio")?;
        pc.add_track(Arc::clone(&audio.track) as Arc<dyn TrackLocal>)
            .await
            .map_err(transport)?;
        let video = if with_video {
            let v = local_track(RtpCodecKind::Video, "video")?;
            pc.add_track(Arc::clone(&v.track) as Arc<dyn TrackLocal>)
                .await
                .map_err(transport)?;
            Some(v)
        } else {
            None
        };
        Ok((
            Self {
                pc,
                gathered,
                audio,
                video,
                tcp_dialed: AtomicBool::new(false),
                red: Mutex::new(RedSender::default()),
            },
            events,
        ))
    }

    async fn local_sdp(&self) -> Result<String, Error> {
        let mut gathered = self.gathered.clone();
        // Host candidates gather at once (no STUN or TURN server to ask);
        // the bound only guards a hang.
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|g| *g)).await;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or(Error::NoLocalDescription)
    }

    /// Our offer (candidates included).
    pub async fn offer(&self) -> Result<String, Error> {
        let offer = self.pc.create_offer(None).await.map_err(transport)?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(transport)?;
        self.local_sdp().await
    }

    /// How many earlier audio frames each packet repeats (RFC 2198), if
    /// the SFU accepts `audio/red`; 0 sends plain Opus.
    pub fn set_audio_redundancy(&self, depth: usize) {
        lock(&self.red).repeater = hush_proto::red::Repeater::new(depth);
    }

    /// The SFU's answer to our offer.
    pub async fn apply_answer(&self, sdp: String) -> Result<(), Error> {
        lock(&self.red).negotiated = accepts_red(&sdp);
        let tcp = passive_tcp_candidates(&sdp);
        let answer = RTCSessionDescription::answer(sdp).map_err(transport)?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(transport)?;
        self.dial_tcp(tcp).await
    }

    /// Answers an SFU-initiated offer (renegotiation).
    pub async fn answer(&self, sdp: String) -> Result<String, Error> {
        let tcp = passive_tcp_candidates(&sdp);
        let offer = RTCSessionDescription::offer(sdp).map_err(transport)?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(transport)?;
        self.dial_tcp(tcp).await?;
        let answer = self.pc.create_answer(None).await.map_err(transport)?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(transport)?;
        self.local_sdp().await
    }

    /// Hands the SFU's passive TCP candidates from the first remote
    /// description to ICE, which dials each: webrtc-rs connects only to a
    /// candidate given this way, never to one in a remote description.
    /// Later descriptions are skipped, or every renegotiation would open
    /// another connection.
    async fn dial_tcp(&self, candidates: Vec<IceCandidate>) -> Result<(), Error> {
        if self.tcp_dialed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for c in candidates {
            self.add_ice_candidate(c).await?;
        }
        Ok(())
    }

    /// A candidate the SFU trickled.
    pub async fn add_ice_candidate(&self, c: IceCandidate) -> Result<(), Error> {
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_m_line_index,
                ..Default::default()
            })
            .await
            .map_err(transport)
    }

    /// Sends one sealed Opus frame (20 ms) with its RFC 6464 audio level,
    /// with the frames before it if RED was negotiated.
    pub async fn send_audio(&self, sealed: Vec<u8>, level: u8) -> Result<(), Error> {
        let (payload, payload_type) = lock(&self.red).packet(sealed);
        let sample = Sample {
            data: Bytes::from(payload),
            duration: Duration::from_millis(20),
            timestamp: Instant::now(),
            packet_timestamp: 0,
            prev_dropped_packets: 0,
            prev_padding_packets: 0,
        };
        self.audio
            .track
            .sample_writer(self.audio.ssrc, payload_type)
            .with_audio_level(AudioLevelExtension {
                level,
                voice: level < 127,
            })
            .write_sample(&sample)
            .await
            .map_err(transport)
    }

    /// Sends one sealed VP8 frame lasting `duration`.
    pub async fn send_video(&self, sealed: Vec<u8>, duration: Duration) -> Result<(), Error> {
        let Some(v) = &self.video else {
            return Err(Error::NoVideoTrack);
        };
        let sample = Sample {
            data: Bytes::from(sealed),
            duration,
            timestamp: Instant::now(),
            packet_timestamp: 0,
            prev_dropped_packets: 0,
            prev_padding_packets: 0,
        };
        v.track
            .write_sample(v.ssrc, VP8_PAYLOAD_TYPE, &sample, &[])
            .await
            .map_err(transport)
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// The passive TCP candidates (RFC 6544 `tcptype passive`) of an SDP, each
/// once (with BUNDLE an SDP may repeat them in every m-section), with the
/// m-section they came from.
fn passive_tcp_candidates(sdp: &str) -> Vec<IceCandidate> {
    let mut found: Vec<IceCandidate> = Vec::new();
    let mut seen = Vec::new();
    let mut m_line: Option<u16> = None;
    let mut mid: Option<String> = None;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            m_line = Some(m_line.map_or(0, |i| i.saturating_add(1)));
            mid = None;
            continue;
        }
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
            for c in found.iter_mut() {
                if c.sdp_m_line_index == m_line && c.sdp_mid.is_none() {
                    c.sdp_mid = mid.clone();
                }
            }
            continue;
        }
        let Some(candidate) = line.strip_prefix("a=") else {
            continue;
        };
        let Some(fields) = candidate.strip_prefix("candidate:") else {
            continue;
        };
        // foundation component transport priority address port typ type ...
        let f: Vec<&str> = fields.split_whitespace().collect();
        let passive = f.windows(2).any(|w| w == ["tcptype", "passive"]);
        if f.len() < 6 || !f[2].eq_ignore_ascii_case("tcp") || !passive {
            continue;
        }
        let at = (f[4].to_owned(), f[5].to_owned());
        if seen.contains(&at) {
            continue;
        }
        seen.push(at);
        found.push(IceCandidate {
            candidate: candidate.to_owned(),
            sdp_mid: mid.clone(),
            sdp_m_line_index: m_line,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn red_packets_go_out_on_the_red_payload_type_once_the_sfu_accepts_red() {
        let mut red = RedSender {
            repeater: hush_proto::red::Repeater::new(2),
            ..Default::default()
        };
        // Not negotiated: plain Opus, but the history is kept.
        assert_eq!(
            red.packet(b"f0".to_vec()),
            (b"f0".to_vec(), OPUS_PAYLOAD_TYPE)
        );
        red.negotiated = true;
        let (payload, pt) = red.packet(b"f1".to_vec());
        assert_eq!(pt, RED_PAYLOAD_TYPE);
        let parsed = hush_proto::red::parse(&payload).expect("RED");
        assert_eq!(parsed.primary.data, b"f1");
        assert_eq!(parsed.redundant.len(), 1);
        assert_eq!(parsed.redundant[0].data, b"f0");
        // Depth 0 sends plain Opus even when RED was accepted.
        let mut plain = RedSender {
            negotiated: true,
            ..Default::default()
        };
        assert_eq!(plain.packet(b"x".to_vec()).1, OPUS_PAYLOAD_TYPE);
    }

    #[test]
    fn red_counts_as_accepted_only_under_our_payload_type() {
        assert!(accepts_red(
            "v=0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\n"
        ));
        assert!(!accepts_red("a=rtpmap:111 opus/48000/2\r\n"));
        assert!(!accepts_red("a=rtpmap:64 red/48000/2\r\n"));
    }

    #[test]
    fn the_passive_tcp_candidates_are_found_once_each() {
        let sdp = "v=0\r\n\
            a=ice-lite\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=mid:0\r\n\
            a=candidate:1 1 udp 2130706175 100.64.0.2 7882 typ host\r\n\
            a=candidate:2 1 tcp 1509949695 100.64.0.2 7882 typ host tcptype passive\r\n\
            a=candidate:3 1 tcp 1509949695 100.64.0.2 9 typ host tcptype active\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
            a=candidate:2 1 tcp 1509949695 100.64.0.2 7882 typ host tcptype passive\r\n\
            a=candidate:4 1 TCP 1509949695 203.0.113.9 7882 typ host tcptype passive\r\n\
            a=mid:1\r\n";
        let found = passive_tcp_candidates(sdp);
        assert_eq!(
            found,
            vec![
                IceCandidate {
                    candidate:
                        "candidate:2 1 tcp 1509949695 100.64.0.2 7882 typ host tcptype passive"
                            .into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                },
                IceCandidate {
                    candidate:
                        "candidate:4 1 TCP 1509949695 203.0.113.9 7882 typ host tcptype passive"
                            .into(),
                    sdp_mid: Some("1".into()),
                    sdp_m_line_index: Some(1),
                },
            ]
        );
        assert!(passive_tcp_candidates("v=0\r\nm=audio 9 X 111\r\n").is_empty());
    }

    #[test]
    fn media_binds_every_interface_unless_told_one() {
        let every = vec!["0.0.0.0:0".to_owned(), "127.0.0.1:0".to_owned()];
        assert_eq!(udp_addrs(None), every);
        assert_eq!(udp_addrs(Some(IpAddr::from([0, 0, 0, 0]))), every);
        assert_eq!(
            udp_addrs(Some(IpAddr::from([192, 0, 2, 7]))),
            vec!["192.0.2.7:0".to_owned()]
        );
        assert_eq!(
            udp_addrs(Some(IpAddr::from([127, 0, 0, 1]))),
            vec!["127.0.0.1:0".to_owned()]
        );
    }

    /// A VP8 payload descriptor (no extensions); `start` marks a frame start.
    fn packet(start: bool, body: &[u8]) -> Bytes {
        let mut p = vec![if start { 0x10 } else { 0x00 }];
        p.extend_from_slice(body);
        Bytes::from(p)
    }

    /// The frames a push let out, as (timestamp, data).
    fn out(frames: Vec<Vp8Frame>) -> Vec<(u32, Vec<u8>)> {
        frames.into_iter().map(|f| (f.timestamp, f.data)).collect()
    }

    fn frame(timestamp: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        vec![(timestamp, data.to_vec())]
    }

    /// Pushes packet `seq` of a stream of three-packet frames (timestamp
    /// 100 per frame; frame `n` is packets 3n..3n+2, body `[n; 4]`).
    fn push3(r: &mut Vp8Reassembly, seq: u16) -> Vec<(u32, Vec<u8>)> {
        let n = seq / 3;
        let i = seq % 3;
        out(r.push(
            seq,
            u32::from(n) * 100,
            i == 2,
            &packet(i == 0, &[n as u8; 4]),
        ))
    }

    fn body3(n: u8) -> Vec<u8> {
        vec![n; 12]
    }

    #[test]
    fn frames_in_order_come_out_as_their_marker_arrives() {
        let mut r = Vp8Reassembly::default();
        assert_eq!(out(r.push(1, 100, false, &packet(true, b"aaaa"))), []);
        assert_eq!(
            out(r.push(2, 100, true, &packet(false, b"bbbb"))),
            frame(100, b"aaaabbbb")
        );
        assert_eq!(
            out(r.push(3, 200, true, &packet(true, b"cccc"))),
            frame(200, b"cccc")
        );
        assert_eq!(r.held_packets(), 0);
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn packets_reordered_within_a_frame_are_put_back_in_sequence() {
        let mut r = Vp8Reassembly::default();
        assert_eq!(out(r.push(12, 100, true, &packet(false, b"cccc"))), []);
        assert_eq!(out(r.push(10, 100, false, &packet(true, b"aaaa"))), []);
        assert_eq!(
            out(r.push(11, 100, false, &packet(false, b"bbbb"))),
            frame(100, b"aaaabbbbcccc")
        );
        // A duplicate of a packet of a frame already out is dropped.
        assert_eq!(out(r.push(11, 100, false, &packet(false, b"bbbb"))), []);
        assert_eq!(r.held_packets(), 0);
    }

    #[test]
    fn a_retransmission_completes_its_frame_and_lets_out_the_frames_held_behind_it() {
        let mut r = Vp8Reassembly::default();
        assert_eq!(push3(&mut r, 0), []);
        assert_eq!(push3(&mut r, 1), []);
        assert_eq!(push3(&mut r, 2), vec![(0, body3(0))]);
        // Packet 4 is lost; frame 1 waits, frames 2 and 3 complete behind it.
        for seq in [3, 5, 6, 7, 8, 9, 10, 11] {
            assert_eq!(push3(&mut r, seq), [], "{seq}");
        }
        // The retransmission of 4 arrives: frames 1, 2, 3 in order.
        assert_eq!(
            push3(&mut r, 4),
            vec![(100, body3(1)), (200, body3(2)), (300, body3(3))]
        );
        // Its duplicate (the NACK generator asks more than once) is dropped.
        assert_eq!(push3(&mut r, 4), []);
        assert_eq!(push3(&mut r, 12), []);
        assert_eq!(r.held_packets(), 1);
    }

    #[test]
    fn a_gap_that_never_fills_is_given_up_and_frames_never_go_backwards() {
        let mut r = Vp8Reassembly::default();
        for seq in 0..3 {
            push3(&mut r, seq);
        }
        // Packet 4 is lost for good: frame 1 never comes out. The frames
        // behind it are held until one more than VP8_FRAMES_HELD_FOR_A_GAP
        // is complete, then come out together, in order.
        push3(&mut r, 3);
        push3(&mut r, 5);
        let held = VP8_FRAMES_HELD_FOR_A_GAP as u16;
        let last = 3 * (held + 2) + 2;
        for seq in 6..last {
            assert_eq!(push3(&mut r, seq), [], "{seq}");
        }
        let expected: Vec<(u32, Vec<u8>)> = (2..=held + 2)
            .map(|n| (u32::from(n) * 100, body3(n as u8)))
            .collect();
        assert_eq!(push3(&mut r, last), expected);
        // Too late: frame 1 was given up, it never comes out after newer ones.
        assert_eq!(push3(&mut r, 4), []);
        // And the stream goes on.
        assert_eq!(push3(&mut r, last + 1), []);
        assert_eq!(push3(&mut r, last + 2), []);
        assert_eq!(
            push3(&mut r, last + 3),
            vec![(u32::from(held + 3) * 100, body3(held as u8 + 3))]
        );
    }

    #[test]
    fn a_whole_lost_frame_holds_back_the_next_until_it_is_retransmitted() {
        let mut r = Vp8Reassembly::default();
        assert_eq!(
            out(r.push(1, 100, true, &packet(true, b"aaaa"))),
            frame(100, b"aaaa")
        );
        // Packet 2 (all of frame 200) is lost; 300 is complete but waits.
        assert_eq!(out(r.push(3, 300, true, &packet(true, b"cccc"))), []);
        assert_eq!(
            out(r.push(2, 200, true, &packet(true, b"bbbb"))),
            vec![(200, b"bbbb".to_vec()), (300, b"cccc".to_vec())]
        );
    }

    #[test]
    fn frames_without_a_start_a_marker_or_a_good_descriptor_never_come_out() {
        let mut r = Vp8Reassembly::default();
        assert_eq!(
            out(r.push(1, 100, true, &packet(true, b"aaaa"))),
            frame(100, b"aaaa")
        );
        // No start: packet 2 claims to continue a frame that already ended.
        assert_eq!(out(r.push(2, 200, true, &packet(false, b"bbbb"))), []);
        // No marker before the next frame starts.
        assert_eq!(out(r.push(3, 300, false, &packet(true, b"cccc"))), []);
        // A descriptor too short to parse.
        assert_eq!(out(r.push(4, 400, false, &packet(true, b""))), []);
        assert_eq!(out(r.push(5, 400, true, &packet(false, b"dddd"))), []);
        // None of that holds the next good frame back.
        assert_eq!(
            out(r.push(6, 500, true, &packet(true, b"eeee"))),
            frame(500, b"eeee")
        );
        assert_eq!(r.held_packets(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = Vp8Reassembly::default();
        let start = u16::MAX - 1;
        assert_eq!(out(r.push(start, 7, false, &packet(true, b"aaaa"))), []);
        // 0 and 1 arrive before 65535.
        assert_eq!(out(r.push(0, 7, false, &packet(false, b"cccc"))), []);
        assert_eq!(out(r.push(1, 7, true, &packet(false, b"dddd"))), []);
        assert_eq!(
            out(r.push(u16::MAX, 7, false, &packet(false, b"bbbb"))),
            frame(7, b"aaaabbbbccccdddd")
        );
        assert_eq!(
            out(r.push(2, 8, true, &packet(true, b"eeee"))),
            frame(8, b"eeee")
        );
        // A retransmission of the packet before the wrap is late, not new.
        assert_eq!(out(r.push(u16::MAX, 7, false, &packet(false, b"bbbb"))), []);
        // Many wraps later frames still come out.
        let mut seq = 2u16;
        for n in 0..200_000u32 {
            seq = seq.wrapping_add(1);
            let f = r.push(seq, 9 + n, true, &packet(true, b"ffff"));
            assert_eq!(f.len(), 1, "{n}");
        }
    }

    #[test]
    fn a_stream_that_starts_over_is_followed() {
        let mut r = Vp8Reassembly::default();
        assert_eq!(r.push(30_000, 1, true, &packet(true, b"aaaa")).len(), 1);
        // Far behind: not a retransmission but a new start.
        assert_eq!(
            out(r.push(10_000, 2, true, &packet(true, b"bbbb"))),
            frame(2, b"bbbb")
        );
        assert_eq!(
            out(r.push(10_001, 3, true, &packet(true, b"cccc"))),
            frame(3, b"cccc")
        );
    }

    #[test]
    fn a_frame_that_never_ends_cannot_grow_past_the_cap() {
        let mut r = Vp8Reassembly::default();
        let body = vec![0u8; 60_000];
        let mut seq = 0u16;
        assert_eq!(r.push(seq, 7, false, &packet(true, &body)), []);
        // A sender that never sets the marker bit: far more than the cap.
        for _ in 0..(2 * MAX_VP8_FRAME_BYTES / body.len()) {
            seq = seq.wrapping_add(1);
            assert_eq!(r.push(seq, 7, false, &packet(false, &body)), []);
            assert!(r.held_bytes() <= MAX_VP8_FRAME_BYTES);
        }
        seq = seq.wrapping_add(1);
        assert_eq!(
            r.push(seq, 7, true, &packet(false, &body)),
            [],
            "an oversized frame is dropped"
        );
        seq = seq.wrapping_add(1);
        assert_eq!(
            out(r.push(seq, 8, true, &packet(true, b"okok"))),
            frame(8, b"okok")
        );
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn a_flood_of_garbage_stays_within_bounds_and_a_good_stream_recovers() {
        // SplitMix64: deterministic and dependency-free.
        let mut state = 0x5eed_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut r = Vp8Reassembly::default();
        let mut seq = 0u16;
        let mut peak = (0, 0, 0);
        for i in 0..50_000 {
            let x = next();
            // First many frames, large packets, sequence numbers mostly
            // near the last one, sometimes anywhere; then many small
            // packets of two frames, with gaps, that rarely end.
            let (len, timestamp, marker) = if i < 25_000 {
                seq = if i % 7 == 0 {
                    x as u16
                } else {
                    seq.wrapping_add((x >> 16) as u16 % 40).wrapping_sub(20)
                };
                let len = if x >> 60 == 0 {
                    50_000
                } else {
                    (x >> 32) as usize % 1500
                };
                (len, (x >> 8) as u32 % 16, x & 1 == 0)
            } else if i < 49_000 {
                seq = seq.wrapping_add(1 + (x >> 16) as u16 % 2);
                ((x >> 32) as usize % 100, (x >> 8) as u32 % 2, x & 255 == 0)
            } else {
                // Then huge packets of one frame, with gaps, never ending.
                seq = seq.wrapping_add(2);
                (60_000, 3, false)
            };
            let mut payload = vec![(x >> 40) as u8; len.max(1)];
            payload[0] = (x >> 48) as u8 & 0x1f;
            for f in r.push(seq, timestamp, marker, &Bytes::from(payload)) {
                assert!(f.data.len() <= MAX_VP8_FRAME_BYTES);
            }
            assert!(r.held_packets() <= MAX_HELD_VP8_PACKETS, "{r:?}");
            assert!(r.held_frames() <= MAX_HELD_VP8_FRAMES, "{r:?}");
            assert!(r.held_bytes() <= MAX_VP8_FRAME_BYTES, "{r:?}");
            peak.0 = peak.0.max(r.held_packets());
            peak.1 = peak.1.max(r.held_frames());
            peak.2 = peak.2.max(r.held_bytes());
        }
        // The flood reached every bound (bytes: within one packet).
        assert_eq!(peak.0, MAX_HELD_VP8_PACKETS);
        assert_eq!(peak.1, MAX_HELD_VP8_FRAMES);
        assert!(peak.2 > MAX_VP8_FRAME_BYTES - 60_000, "{peak:?}");
        // A well-formed stream from there on comes out whole.
        let mut emitted = Vec::new();
        for n in 0..3_000u32 {
            seq = seq.wrapping_add(1);
            let f = r.push(seq, 1_000 + n, true, &packet(true, &n.to_be_bytes()));
            emitted.extend(f.into_iter().map(|f| f.timestamp));
        }
        assert!(emitted.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(emitted.ends_with(&(2_000..4_000).collect::<Vec<u32>>()));
    }
}
