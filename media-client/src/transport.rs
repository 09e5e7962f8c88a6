//! The client's WebRTC connection to the SFU (webrtc-rs 0.21): one peer
//! connection carrying our Opus (and optionally VP8) track out and every
//! other member's tracks in. Payloads are already SFrame ciphertext when
//! they get here; this layer only packetizes and reassembles.
//!
//! The driver sees a connection only through [`MediaConnection`], built by
//! a [`Connector`]: [`Transport`] is the one every real client uses; the
//! load tester plugs in cheaper peers that share one socket.

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
        let options = rtc::peer_connection::configuration::RTCOfferOptions {
            ice_restart: true,
            ..Default::default()
        };
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
    /// Earlier frames each packet repeats, at most.
    depth: usize,
    /// The SFU's answer accepted `audio/red` under our payload type.
    negotiated: bool,
    /// The last sealed frames sent, oldest first.
    history: std::collections::VecDeque<Vec<u8>>,
}

impl RedSender {
    /// The payload and payload type for `sealed`, remembering it.
    fn packet(&mut self, sealed: Vec<u8>) -> (Vec<u8>, u8) {
        let out = if self.negotiated && self.depth > 0 {
            let n = self.history.len() as u32;
            let blocks: Vec<hush_proto::red::Block<'_>> = self
                .history
                .iter()
                .enumerate()
                .map(|(i, data)| hush_proto::red::Block {
                    timestamp_offset: (n - i as u32) * FRAME_TICKS,
                    payload_type: OPUS_PAYLOAD_TYPE,
                    data,
                })
                .collect();
            (
                hush_proto::red::write(&blocks, OPUS_PAYLOAD_TYPE, &sealed),
                RED_PAYLOAD_TYPE,
            )
        } else {
            (sealed.clone(), OPUS_PAYLOAD_TYPE)
        };
        if self.depth > 0 {
            if self.history.len() == self.depth {
                self.history.pop_front();
            }
            self.history.push_back(sealed);
        }
        out
    }
}

/// RTP clock ticks of one 20 ms Opus frame.
const FRAME_TICKS: u32 = 960;

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
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let data = match codec {
            Codec::Opus => Some(packet.payload.to_vec()),
            Codec::Vp8 => vp8.push(
                packet.header.sequence_number,
                packet.header.timestamp,
                packet.header.marker,
                &packet.payload,
            ),
        };
        if let Some(data) = data {
            let ev = TransportEvent::Frame {
                stream_id: stream_id.clone(),
                codec,
                data,
                at: Instant::now(),
                timestamp: packet.header.timestamp,
                red: codec == Codec::Opus && packet.header.payload_type == RED_PAYLOAD_TYPE,
            };
            // A full queue means the application is not keeping up; drop, as a jitter buffer would.
            let _ = events.try_send(ev);
        }
    }
    let _ = events.try_send(TransportEvent::TrackEnded { stream_id });
}

/// Largest VP8 frame reassembled; a frame that grows past it (a sender
/// that never sets the marker bit, say) is dropped, so no member can grow
/// a receiver's memory without bound.
pub const MAX_VP8_FRAME_BYTES: usize = 2 * 1024 * 1024;

/// Reassembles VP8 frames from RTP packets (RFC 7741): the packets of one
/// timestamp, in sequence, from a partition head to the marker bit. A frame
/// with a gap, a bad descriptor or over [`MAX_VP8_FRAME_BYTES`] is dropped.
#[derive(Default)]
pub struct Vp8Reassembly {
    depacketizer: Vp8Packet,
    frame: Vec<u8>,
    timestamp: Option<u32>,
    next_seq: Option<u16>,
    broken: bool,
}

impl core::fmt::Debug for Vp8Reassembly {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vp8Reassembly")
            .field("bytes", &self.frame.len())
            .field("broken", &self.broken)
            .finish()
    }
}

impl Vp8Reassembly {
    /// One packet; returns a complete frame when this packet ends one.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &Bytes,
    ) -> Option<Vec<u8>> {
        if self.timestamp != Some(timestamp) {
            // A new frame starts; a frame never finished is dropped.
            self.frame.clear();
            self.timestamp = Some(timestamp);
            self.broken = !self.depacketizer.is_partition_head(payload);
        } else if self.next_seq != Some(seq) {
            self.broken = true;
        }
        self.next_seq = Some(seq.wrapping_add(1));
        if !self.broken {
            match self.depacketizer.depacketize(payload) {
                Ok(part) if self.frame.len() + part.len() <= MAX_VP8_FRAME_BYTES => {
                    self.frame.extend_from_slice(&part);
                }
                _ => self.broken = true,
            }
        }
        if self.broken {
            // Nothing of a broken frame is kept while its packets keep coming.
            self.frame = Vec::new();
        }
        if !marker {
            return None;
        }
        let done = std::mem::take(&mut self.frame);
        self.timestamp = None;
        (!self.broken && !done.is_empty()).then_some(done)
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
        let mut red = lock(&self.red);
        red.depth = depth.min(hush_proto::red::MAX_REDUNDANT);
        red.history.clear();
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
    fn red_packets_repeat_the_two_frames_before_when_the_sfu_accepts_red() {
        let mut red = RedSender {
            depth: 2,
            ..Default::default()
        };
        // Not negotiated: plain Opus, but the history is kept.
        assert_eq!(
            red.packet(b"f0".to_vec()),
            (b"f0".to_vec(), OPUS_PAYLOAD_TYPE)
        );
        red.negotiated = true;
        for (i, frame) in [b"f1", b"f2", b"f3"].into_iter().enumerate() {
            let (payload, pt) = red.packet(frame.to_vec());
            assert_eq!(pt, RED_PAYLOAD_TYPE);
            let parsed = hush_proto::red::parse(&payload).expect("RED");
            assert_eq!(parsed.primary.data, frame);
            let copies: Vec<(u32, Vec<u8>)> = parsed
                .redundant
                .iter()
                .map(|b| (b.timestamp_offset, b.data.to_vec()))
                .collect();
            let expected: Vec<(u32, Vec<u8>)> = match i {
                0 => vec![(960, b"f0".to_vec())],
                1 => vec![(1920, b"f0".to_vec()), (960, b"f1".to_vec())],
                _ => vec![(1920, b"f1".to_vec()), (960, b"f2".to_vec())],
            };
            assert_eq!(copies, expected, "packet {i}");
        }
        // Depth 0 sends plain Opus even when RED was accepted.
        let mut plain = RedSender {
            negotiated: true,
            ..Default::default()
        };
        assert_eq!(plain.packet(b"x".to_vec()).1, OPUS_PAYLOAD_TYPE);
        assert!(plain.history.is_empty());
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

    /// A VP8 payload descriptor (no extensions); `start` marks a partition head.
    fn packet(start: bool, body: &[u8]) -> Bytes {
        let mut p = vec![if start { 0x10 } else { 0x00 }];
        p.extend_from_slice(body);
        Bytes::from(p)
    }

    #[test]
    fn frames_are_reassembled_in_sequence_and_gaps_drop_the_frame() {
        let mut r = Vp8Reassembly::default();
        assert_eq!(r.push(1, 100, false, &packet(true, b"aaaa")), None);
        assert_eq!(
            r.push(2, 100, true, &packet(false, b"bbbb")),
            Some(b"aaaabbbb".to_vec())
        );
        // Packet 4 is lost: frame 200 never comes out.
        assert_eq!(r.push(3, 200, false, &packet(true, b"cccc")), None);
        assert_eq!(r.push(5, 200, true, &packet(false, b"dddd")), None);
        // The next frame is fine again.
        assert_eq!(
            r.push(6, 300, true, &packet(true, b"eeee")),
            Some(b"eeee".to_vec())
        );
    }

    #[test]
    fn a_frame_that_never_ends_cannot_grow_past_the_cap() {
        let mut r = Vp8Reassembly::default();
        let body = vec![0u8; 60_000];
        let mut seq = 0u16;
        assert_eq!(r.push(seq, 7, false, &packet(true, &body)), None);
        // A sender that never sets the marker bit: far more than the cap.
        for _ in 0..(2 * MAX_VP8_FRAME_BYTES / body.len()) {
            seq = seq.wrapping_add(1);
            assert_eq!(r.push(seq, 7, false, &packet(false, &body)), None);
            assert!(r.frame.len() <= MAX_VP8_FRAME_BYTES);
        }
        assert!(r.frame.capacity() <= MAX_VP8_FRAME_BYTES);
        seq = seq.wrapping_add(1);
        assert_eq!(
            r.push(seq, 7, true, &packet(false, &body)),
            None,
            "an oversized frame is dropped"
        );
        seq = seq.wrapping_add(1);
        assert_eq!(
            r.push(seq, 8, true, &packet(true, b"okok")),
            Some(b"okok".to_vec())
        );
    }
}
