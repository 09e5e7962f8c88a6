//! How the test clients' webrtc-rs 0.21 peers are built: codecs, the
//! audio-level extension, interceptors, and network settings that work on
//! loopback. The parameters themselves (payload types, codec lines, the
//! audio-level extension URI) are the protocol's, in [`hush_proto::media`];
//! this module only turns them into webrtc-rs objects.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hush_proto::MediaKind;
use hush_proto::media::{self, AUDIO_LEVEL_URI};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;

/// The webrtc-rs codec for a track of `kind`, built from the protocol's
/// [`hush_proto::media::codec`] (Opus 48 kHz stereo, or VP8).
pub fn codec(kind: MediaKind) -> RTCRtpCodec {
    let spec = media::codec(kind);
    RTCRtpCodec {
        mime_type: spec.mime_type.to_owned(),
        clock_rate: spec.clock_rate,
        channels: spec.channels,
        sdp_fmtp_line: spec.fmtp.to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Media engine and interceptors for a test client: Opus and VP8 only,
/// RTX for VP8, the audio-level extension, webrtc-rs's default
/// interceptors (NACK generator and responder, sender/receiver reports,
/// TWCC receiver), and a last interceptor that hands PLI/FIR to the
/// application (`TrackLocalEvent::OnRtcpPacket` on the sending side).
pub fn peer_media() -> (MediaEngine, Registry) {
    let mut engine = MediaEngine::default();
    for (kind, rtp_kind) in [
        (MediaKind::Audio, RtpCodecKind::Audio),
        (MediaKind::Video, RtpCodecKind::Video),
    ] {
        engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec(kind),
                    payload_type: media::codec(kind).payload_type,
                },
                rtp_kind,
            )
            .unwrap();
    }
    // Retransmissions of VP8 (RFC 4588): the SFU resends what a
    // subscriber NACKs only on an RTX payload type the subscriber accepts.
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/rtx".to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={}", media::VP8_PAYLOAD_TYPE),
                    rtcp_feedback: vec![],
                },
                payload_type: media::VP8_RTX_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )
        .unwrap();
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

/// Network settings for test clients: host candidates including loopback,
/// UDP over IPv4, mDNS off, and ICE timeouts that notice a vanished peer
/// quickly (`disconnected` after `disconnected`, `failed` after `failed`).
pub fn setting_engine(disconnected: Duration, failed: Duration) -> SettingEngine {
    SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(vec![NetworkType::Udp4])
        .with_ice_timeouts(
            Some(disconnected),
            Some(failed),
            Some(Duration::from_millis(500)),
        )
        .build()
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
