//! Thin wrappers over the SFU's crate-private parsers and peer
//! configuration, for the fuzz targets in `sfu/fuzz` only (feature
//! `fuzzing`, which nothing in the workspace enables).

use std::sync::Arc;

use str0m::RtcConfig;
use str0m::config::DtlsCert;
use str0m::media::Pt;

/// How the SFU builds every peer: ICE-lite, RTP mode, Opus (with RED) and
/// VP8, audio level and mid only, with `cert` as its DTLS certificate.
pub fn peer_config(cert: DtlsCert) -> RtcConfig {
    crate::udp::peer_config(cert)
}

/// The primary block of an RFC 2198 RED payload, if it parses and is of
/// `primary_pt`: what a subscriber without RED gets.
pub fn red_primary(payload: &[u8], primary_pt: Pt) -> Option<Arc<[u8]>> {
    crate::udp::red_primary(payload, primary_pt)
}

/// The local ufrag a STUN binding request names, if `data` is one.
pub fn stun_local_ufrag(data: &[u8]) -> Option<String> {
    crate::udp::stun_local_ufrag(data)
}

/// The first SSRC the SDP `sdp` announces in the m-section of `mid`.
pub fn offered_ssrc(sdp: &str, mid: &str) -> Option<u32> {
    crate::udp::offered_ssrc(sdp, mid)
}

/// The largest RFC 4571 frame the ICE-TCP path accepts.
pub const MAX_FRAME: usize = crate::tcp::MAX_FRAME;

/// Why a byte stream is not framing the SFU accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A frame of length 0.
    Empty,
    /// A frame longer than [`MAX_FRAME`] (its length).
    Oversize(usize),
}

/// The ICE-TCP path's RFC 4571 deframer.
#[derive(Debug, Default)]
pub struct FrameDecoder(crate::tcp::FrameDecoder);

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the bytes one read returned and hands each frame they complete
    /// to `frame`, in order; after an error the stream is unusable.
    pub fn feed(&mut self, input: &[u8], frame: impl FnMut(&[u8])) -> Result<(), FrameError> {
        self.0.feed(input, frame).map_err(|e| match e {
            crate::tcp::FrameError::Empty => FrameError::Empty,
            crate::tcp::FrameError::Oversize(n) => FrameError::Oversize(n),
        })
    }
}
