//! The errors of the client library, one enum per layer it talks to.

use std::path::PathBuf;

use hush_e2ee::ParticipantId;
use hush_proto::{CloseReason, ErrorCode};

use crate::frame;

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
    /// The Opus codec refused to start, encode or decode.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// A decoded Opus frame did not have the 20 ms we send.
    #[error("opus: decoded {samples} samples, expected {expected}")]
    OpusFrameSize {
        /// Samples decoded.
        samples: usize,
        /// Samples of one 20 ms frame.
        expected: usize,
    },
    /// A WAV file could not be read or written.
    #[error("wav file {}: {source}", path.display())]
    Wav {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: hound::Error,
    },
    /// A WAV file holds no samples.
    #[error("wav file {}: no samples", path.display())]
    WavEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The e2ee layer refused something.
    #[error("e2ee: {0}")]
    E2ee(#[from] hush_e2ee::Error),
    /// An IVF file could not be read or written.
    #[error("ivf: {0}")]
    Ivf(#[from] IvfError),
    /// The signaling connection failed or the server refused us.
    #[error("signaling: {0}")]
    Signaling(#[from] SignalingError),
    /// The WebRTC connection failed.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// A value the user gave is not valid (room id, display name).
    #[error("{0}")]
    Protocol(#[from] hush_proto::Error),
    /// The call's driver has ended; the request was not carried out.
    #[error("the call has ended")]
    CallEnded,
}

/// What went wrong with an IVF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IvfError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file does not follow the IVF layout.
    #[error("{0}")]
    Malformed(&'static str),
}

/// What went wrong with the signaling connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    /// The WebSocket connection could not be opened.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Where we tried.
        url: String,
        /// Why it failed.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The connection broke while sending or receiving.
    #[error("connection: {0}")]
    Connection(Box<tokio_tungstenite::tungstenite::Error>),
    /// The server sent a message this client cannot read.
    #[error("unreadable server message: {0}")]
    BadMessage(serde_json::Error),
    /// A message could not be encoded.
    #[error("cannot encode a message: {0}")]
    Encode(serde_json::Error),
    /// The server refused our join (bad token, full room, ...).
    #[error("join refused: {code}: {message}")]
    JoinRefused {
        /// The server's error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The server closed the connection, saying why.
    #[error("server closed the connection: {0:?}")]
    ServerClosed(CloseReason),
    /// The connection closed without a reason.
    #[error("connection closed")]
    Closed,
}

/// What went wrong with the WebRTC connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// webrtc-rs refused an operation.
    #[error("{0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// No local session description after creating one.
    #[error("no local description")]
    NoLocalDescription,
    /// Video was sent on a connection built without a video track.
    #[error("no video track")]
    NoVideoTrack,
    /// ICE or DTLS failed, or the connection closed.
    #[error("media connection failed")]
    Failed,
    /// Another kind of media connection (a [`crate::transport::Connector`]
    /// other than webrtc-rs) refused an operation.
    #[error("{0}")]
    Other(String),
}
