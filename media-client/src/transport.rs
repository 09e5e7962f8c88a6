//! The client's WebRTC connection to the SFU (webrtc-rs 0.21): one peer
//! connection carrying our Opus (and optionally VP8) track out and every
//! other member's tracks in. Payloads are already SFrame ciphertext when
//! they get here; this layer only packetizes and reassembles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hush_proto::media::{OPUS_PAYLOAD_TYPE, VP8_PAYLOAD_TYPE};
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
        /// The frame as the publisher sealed it.
        data: Vec<u8>,
        /// When its last packet arrived.
        at: Instant,
    },
    /// A remote track ended.
    TrackEnded {
        /// Its stream id.
        stream_id: String,
    },
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
    let mut vp8 = Vp8Packet::default();
    let mut frame: Vec<u8> = Vec::new();
    let mut frame_ts: Option<u32> = None;
    let mut next_seq: Option<u16> = None;
    let mut broken = false;
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let data = match codec {
            Codec::Opus => Some(packet.payload.to_vec()),
            Codec::Vp8 => {
                let seq = packet.header.sequence_number;
                let ts = packet.header.timestamp;
                if frame_ts != Some(ts) {
                    // A new frame starts; a frame never finished is dropped.
                    frame.clear();
                    frame_ts = Some(ts);
                    broken = !vp8.is_partition_head(&packet.payload);
                } else if next_seq != Some(seq) {
                    broken = true;
                }
                next_seq = Some(seq.wrapping_add(1));
                match vp8.depacketize(&packet.payload) {
                    Ok(part) => frame.extend_from_slice(&part),
                    Err(_) => broken = true,
                }
                if packet.header.marker {
                    let done = std::mem::take(&mut frame);
                    frame_ts = None;
                    (!broken && !done.is_empty()).then_some(done)
                } else {
                    None
                }
            }
        };
        if let Some(data) = data {
            let ev = TransportEvent::Frame {
                stream_id: stream_id.clone(),
                codec,
                data,
                at: Instant::now(),
            };
            // A full queue means the application is not keeping up; drop, as a jitter buffer would.
            let _ = events.try_send(ev);
        }
    }
    let _ = events.try_send(TransportEvent::TrackEnded { stream_id });
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
        Self::with_ice_timeouts(with_video, Duration::from_secs(3), Duration::from_secs(6)).await
    }

    /// As [`Transport::new`], with the ICE timeouts after which an
    /// unanswered connection counts as disconnected, then failed (the load
    /// test, whose clients share their cores with the SFU, waits longer).
    pub async fn with_ice_timeouts(
        with_video: bool,
        disconnected: Duration,
        failed: Duration,
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
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
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
            },
            events,
        ))
    }

    async fn local_sdp(&self) -> Result<String, Error> {
        let mut gathered = self.gathered.clone();
        // Host candidates on loopback gather at once; the bound only guards a hang.
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

    /// The SFU's answer to our offer.
    pub async fn apply_answer(&self, sdp: String) -> Result<(), Error> {
        let answer = RTCSessionDescription::answer(sdp).map_err(transport)?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(transport)
    }

    /// Answers an SFU-initiated offer (renegotiation).
    pub async fn answer(&self, sdp: String) -> Result<String, Error> {
        let offer = RTCSessionDescription::offer(sdp).map_err(transport)?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(transport)?;
        let answer = self.pc.create_answer(None).await.map_err(transport)?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(transport)?;
        self.local_sdp().await
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

    /// Sends one sealed Opus frame (20 ms) with its RFC 6464 audio level.
    pub async fn send_audio(&self, sealed: Vec<u8>, level: u8) -> Result<(), Error> {
        let sample = Sample {
            data: Bytes::from(sealed),
            duration: Duration::from_millis(20),
            timestamp: Instant::now(),
            packet_timestamp: 0,
            prev_dropped_packets: 0,
            prev_padding_packets: 0,
        };
        self.audio
            .track
            .sample_writer(self.audio.ssrc, OPUS_PAYLOAD_TYPE)
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
