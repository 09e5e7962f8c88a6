//! How hush peer connections are built on webrtc-rs 0.21: codecs, the
//! audio-level extension, interceptors, and the network settings that work
//! on loopback. Public so that clients (and the tests) build peers that
//! negotiate exactly what the SFU expects.
//!
//! The parameters themselves (payload types, codec lines, the audio-level
//! extension URI) are the protocol's, in [`hush_proto::media`]; this module
//! only turns them into webrtc-rs objects.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;

use hush_proto::MediaKind;
use hush_proto::media::{self, AUDIO_LEVEL_URI};

use crate::error::Error;
use crate::metrics::Metrics;

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

/// Media engine and interceptors for a hush peer: Opus and VP8 only, the
/// audio-level extension, webrtc-rs's default interceptors (NACK generator
/// and a 1,024-packet NACK responder for video, sender/receiver reports,
/// TWCC receiver), and a last interceptor that hands PLI/FIR to the
/// application (`TrackLocalEvent::OnRtcpPacket` on the sending side).
pub fn peer_media() -> Result<(MediaEngine, Registry), Error> {
    media(None)
}

pub(crate) fn sfu_media(metrics: Arc<Metrics>) -> Result<(MediaEngine, Registry), Error> {
    media(Some(metrics))
}

fn media(metrics: Option<Arc<Metrics>>) -> Result<(MediaEngine, Registry), Error> {
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
            .map_err(Error::transport)?;
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
        .map_err(Error::transport)?;
    engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )
        .map_err(Error::transport)?;
    let mut registry =
        register_default_interceptors(Registry::new(), &mut engine).map_err(Error::transport)?;
    if let Some(metrics) = metrics {
        // Between the pacer (3_000) and the NACK responder (4_000): sees
        // inbound NACKs before the responder acts on them and the NACKs the
        // generator (7_000) sends on their way out.
        registry = registry.with(
            Slot::from(3_500),
            RtcpCounter {
                metrics,
                read: VecDeque::new(),
                write: VecDeque::new(),
            },
        );
    }
    // Application-most, so every interceptor has seen the RTCP first.
    let registry = registry.with(
        Slot::from(14_000),
        KeyFrameRequestForwarder {
            read: VecDeque::new(),
            write: VecDeque::new(),
        },
    );
    Ok((engine, registry))
}

/// Network settings for hush peers: host candidates including loopback,
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
pub(crate) fn is_key_frame_request(packet: &dyn rtc::rtcp::Packet) -> bool {
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

/// Counts NACKs in both directions for the metrics; passes everything on.
struct RtcpCounter {
    metrics: Arc<Metrics>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

fn count_nacks(msg: &TaggedPacket) -> usize {
    match &msg.message.packet {
        Packet::Rtcp(packets) => packets
            .iter()
            .filter(|p| p.as_any().is::<TransportLayerNack>())
            .count(),
        _ => 0,
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpCounter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        for _ in 0..count_nacks(&msg) {
            self.metrics.nack_received();
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        for _ in 0..count_nacks(&msg) {
            self.metrics.nack_sent();
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for RtcpCounter {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};

    use super::*;

    #[test]
    fn protocol_mime_types_are_spelled_as_webrtc_rs_spells_them() {
        assert_eq!(codec(MediaKind::Audio).mime_type, MIME_TYPE_OPUS);
        assert_eq!(codec(MediaKind::Video).mime_type, MIME_TYPE_VP8);
    }
}
