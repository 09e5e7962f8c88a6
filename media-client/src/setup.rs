//! How the client's peer connection is built on webrtc-rs 0.21: the codecs,
//! payload types and header extension of PROTOCOL.md §11 (from
//! `hush_proto::media`), webrtc-rs's default interceptors, and the network
//! settings that work on loopback and between hosts.

use std::time::Duration;

use hush_proto::MediaKind;
use hush_proto::media::{AUDIO_LEVEL_URI, codec as codec_spec};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::Registry;
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

/// The webrtc-rs codec of a track of `kind`, as §11 fixes it.
pub fn codec(kind: MediaKind) -> RTCRtpCodec {
    let spec = codec_spec(kind);
    RTCRtpCodec {
        mime_type: spec.mime_type.to_owned(),
        clock_rate: spec.clock_rate,
        channels: spec.channels,
        sdp_fmtp_line: spec.fmtp.to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The webrtc-rs kind of a track of `kind`.
pub fn rtp_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// Media engine and interceptors: Opus (with RED) and VP8 (with RTX) only,
/// the audio-level extension, and webrtc-rs's default interceptors (NACK
/// generator, at most two NACKs per packet, and responder for video,
/// sender/receiver reports, TWCC receiver).
pub fn media_engine() -> Result<(MediaEngine, Registry), webrtc::error::Error> {
    let mut engine = MediaEngine::default();
    for kind in [MediaKind::Audio, MediaKind::Video] {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec(kind),
                payload_type: codec_spec(kind).payload_type,
            },
            rtp_kind(kind),
        )?;
    }
    // Audio redundancy (RFC 2198, PROTOCOL.md §11): Opus packets that also
    // carry the two frames before them, each still sealed.
    let red = hush_proto::media::RED_CODEC;
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: red.mime_type.to_owned(),
                clock_rate: red.clock_rate,
                channels: red.channels,
                sdp_fmtp_line: red.fmtp.to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: red.payload_type,
        },
        RtpCodecKind::Audio,
    )?;
    // VP8 retransmissions (RFC 4588, PROTOCOL.md §11): what the SFU
    // resends after a NACK arrives on this payload type.
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "video/rtx".to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: format!("apt={}", hush_proto::media::VP8_PAYLOAD_TYPE),
                rtcp_feedback: vec![],
            },
            payload_type: hush_proto::media::VP8_RTX_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    // webrtc-rs's defaults (`register_default_interceptors`: NACK, TWCC
    // receiver, RTCP reports), except that the NACK generator asks at most
    // twice per lost packet: it never sees a retransmission arrive (it
    // records packets before RTX is unwrapped), so unbounded it NACKs a
    // repaired packet every 100 ms, and the SFU's resend budget (a share
    // of what it sends) runs out on the repeats.
    for parameter in ["", "pli"] {
        engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(2)
                .build(),
        );
    configure_simulcast_extension_headers(&mut engine)?;
    let registry = configure_twcc_receiver_only(registry, &mut engine)?;
    let registry = configure_rtcp_reports(registry);
    Ok((engine, registry))
}

/// Network settings: host candidates including loopback, UDP and TCP
/// over IPv4 (TCP is ICE-TCP, RFC 6544, for when UDP is blocked; its pairs
/// rank below UDP's), mDNS off, and ICE timeouts that notice a vanished
/// peer quickly (`disconnected` after `disconnected`, `failed` after
/// `failed`).
pub fn setting_engine(disconnected: Duration, failed: Duration) -> SettingEngine {
    SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(vec![NetworkType::Udp4, NetworkType::Tcp4])
        .with_ice_timeouts(
            Some(disconnected),
            Some(failed),
            Some(Duration::from_millis(500)),
        )
        .build()
}
