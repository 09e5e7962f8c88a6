//! hush-client: the client side of a hush call.
//!
//! Today: the media frame layer ([`frame`]: codec-aware clear prefix and
//! SFrame contexts driven by `hush_e2ee` key events) and audio ([`audio`]:
//! sources, Opus, loss concealment, RFC 6464 levels, WAV). The call
//! session and the `hush` command build on these.

#![forbid(unsafe_code)]

pub mod audio;
pub mod call;
pub mod demo;
pub mod frame;
pub mod loadtest;
pub mod local;
pub mod participant;
pub mod session;
pub mod signal;
pub mod transport;
pub mod video;

use hush_e2ee::ParticipantId;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame named a KID whose key is not (yet) installed.
    #[error("no key yet for {} KID {}", .0.sender, .0.kid)]
    MissingKey(frame::MissingKey),
    /// A frame from a sender we hold no keys for.
    #[error("no keys for sender {0}")]
    UnknownSender(ParticipantId),
    /// SFrame refused the frame (tampered, replayed, truncated) or the key.
    #[error("frame: {0}")]
    Frame(#[from] hush_sframe::Error),
    /// The Opus codec failed.
    #[error("opus: {0}")]
    Opus(String),
    /// A WAV file could not be read or written.
    #[error("wav file {0}: {1}")]
    Wav(String, String),
    /// The e2ee layer refused something.
    #[error("e2ee: {0}")]
    E2ee(#[from] hush_e2ee::Error),
    /// An IVF file could not be read or written.
    #[error("ivf: {0}")]
    Ivf(String),
    /// The signaling connection failed or sent something unreadable.
    #[error("signaling: {0}")]
    Signaling(String),
    /// The WebRTC connection failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A value the user gave is not valid (room id, display name, ...).
    #[error("invalid {0}")]
    Invalid(&'static str),
}
