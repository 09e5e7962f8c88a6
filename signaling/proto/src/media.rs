//! The media session's fixed parameters (PROTOCOL.md §11), as plain data:
//! the client's WebRTC engine and the SFU's both register exactly these.

use crate::wire::MediaKind;

/// RFC 6464 client-to-mixer audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Payload type registered for Opus.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// Payload type registered for VP8.
pub const VP8_PAYLOAD_TYPE: u8 = 96;

/// Payload type of VP8 retransmissions (RFC 4588 `video/rtx`, `apt=96`):
/// the SFU resends video packets a subscriber NACKs on this payload type.
pub const VP8_RTX_PAYLOAD_TYPE: u8 = 97;

/// Payload type of RFC 2198 audio redundancy (`audio/red`, `111/111`):
/// an Opus packet that also carries earlier sealed frames ([`crate::red`]).
pub const RED_PAYLOAD_TYPE: u8 = 63;

/// The `audio/red` codec both ends register beside Opus.
pub const RED_CODEC: CodecSpec = CodecSpec {
    mime_type: "audio/red",
    clock_rate: 48_000,
    channels: 2,
    fmtp: "111/111",
    payload_type: RED_PAYLOAD_TYPE,
};

/// Duration of one Opus frame, in milliseconds (one frame per RTP packet).
pub const OPUS_FRAME_MS: u64 = 20;

/// A codec as SDP names it: what both ends register for a track kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSpec {
    /// MIME type, e.g. `audio/opus`.
    pub mime_type: &'static str,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Channels (0 for video).
    pub channels: u16,
    /// The `a=fmtp` line's parameters.
    pub fmtp: &'static str,
    /// The payload type it is registered under.
    pub payload_type: u8,
}

/// The codec of a track of `kind`: Opus 48 kHz stereo, or VP8.
pub const fn codec(kind: MediaKind) -> CodecSpec {
    match kind {
        MediaKind::Audio => CodecSpec {
            mime_type: "audio/opus",
            clock_rate: 48_000,
            channels: 2,
            fmtp: "minptime=10;useinbandfec=1",
            payload_type: OPUS_PAYLOAD_TYPE,
        },
        MediaKind::Video => CodecSpec {
            mime_type: "video/VP8",
            clock_rate: 90_000,
            channels: 0,
            fmtp: "",
            payload_type: VP8_PAYLOAD_TYPE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_codecs_have_distinct_payload_types() {
        let (a, v) = (codec(MediaKind::Audio), codec(MediaKind::Video));
        assert_ne!(a.payload_type, v.payload_type);
        assert_eq!(a.payload_type, OPUS_PAYLOAD_TYPE);
        assert_eq!(v.payload_type, VP8_PAYLOAD_TYPE);
        assert_eq!(a.clock_rate, 48_000);
    }
}
