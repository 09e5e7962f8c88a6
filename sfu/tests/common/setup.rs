//! How the test clients' webrtc-rs 0.21 peers are built: as `hush call`
//! builds its own (`hush_client::setup`), or with a chosen set of audio
//! codecs (with or without RFC 2198 RED), plus an interceptor that hands
//! the test every key-frame request.

use std::collections::VecDeque;
use std::time::Instant;

use hush_proto::MediaKind;
use hush_proto::media::{AUDIO_LEVEL_URI, RED_CODEC, VP8_PAYLOAD_TYPE, VP8_RTX_PAYLOAD_TYPE};
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;

pub use hush_client::setup::{codec, setting_engine};

/// Which audio codecs a test client registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodecs {
    /// Whatever `hush call` registers ([`hush_client::setup::media_engine`]).
    AsClient,
    /// Opus and RFC 2198 RED (`audio/red`, `111/111`, payload type 63).
    OpusAndRed,
    /// Opus alone, as a client that predates RED.
    OpusOnly,
}

/// Media engine and interceptors for a test client: the client's own
/// ([`hush_client::setup::media_engine`]), or for a chosen `audio` the same
/// built here (Opus, RED if asked, VP8 with RTX, the audio-level
/// extension, webrtc-rs's default interceptors); and a last interceptor
/// that hands PLI/FIR to the test (`TrackLocalEvent::OnRtcpPacket` on the
/// sending side).
pub fn peer_media(audio: AudioCodecs) -> (MediaEngine, Registry) {
    let (engine, registry) = match audio {
        AudioCodecs::AsClient => hush_client::setup::media_engine().unwrap(),
        AudioCodecs::OpusAndRed => media_engine(true),
        AudioCodecs::OpusOnly => media_engine(false),
    };
    // Application-most, so every interceptor has seen the RTCP first.
    let registry = registry.with(
        Slot::from(14_000),
        KeyFrameRequestForwarder {
            read: VecDeque::new(),
            write: VecDeque::new(),
        },
    );
    (engine, registry)
}

/// `hush_client::setup::media_engine`'s codecs and extension, with RED
/// registered only if `red`.
fn media_engine(red: bool) -> (MediaEngine, Registry) {
    let mut engine = MediaEngine::default();
    let mut register = |codec: RTCRtpCodec, payload_type: u8, kind: RtpCodecKind| {
        engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec,
                    payload_type,
                },
                kind,
            )
            .unwrap();
    };
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let payload_type = hush_proto::media::codec(kind).payload_type;
        register(
            codec(kind),
            payload_type,
            hush_client::setup::rtp_kind(kind),
        );
    }
    if red {
        let red = RTCRtpCodec {
            mime_type: RED_CODEC.mime_type.to_owned(),
            clock_rate: RED_CODEC.clock_rate,
            channels: RED_CODEC.channels,
            sdp_fmtp_line: RED_CODEC.fmtp.to_owned(),
            rtcp_feedback: vec![],
        };
        register(red, RED_CODEC.payload_type, RtpCodecKind::Audio);
    }
    let rtx = RTCRtpCodec {
        mime_type: "video/rtx".to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: format!("apt={VP8_PAYLOAD_TYPE}"),
        rtcp_feedback: vec![],
    };
    register(rtx, VP8_RTX_PAYLOAD_TYPE, RtpCodecKind::Video);
    engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )
        .unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut engine).unwrap();
    (engine, registry)
}

/// Whether an RTCP packet asks for a key frame.
fn is_key_frame_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Marks inbound PLI/FIR for delivery to the application and drops every
/// other inbound RTCP packet here (the interceptors below have acted on it).
struct KeyFrameRequestForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyFrameRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_key_frame_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyFrameRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
