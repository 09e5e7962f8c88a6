//! The errors of the client library, one enum per layer it talks to.

use std::path::PathBuf;
use std::time::Duration;

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
    /// A VP8 frame shorter than its clear prefix (PROTOCOL.md §6): no
    /// receiver could split it the way it was sealed, so it is not sent.
    #[error("a {len}-byte VP8 frame is shorter than its {prefix}-byte clear prefix")]
    ShortFrame {
        /// The frame's length.
        len: usize,
        /// The clear prefix its first byte calls for.
        prefix: usize,
    },
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
    /// The server URL cannot be used.
    #[error("bad server URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `ws://` (no TLS) to a host that is not this machine, not allowed.
    #[error(
        "refusing ws:// to {host}: the join token, key packages and SDP would cross \
         the network in clear text, readable and changeable by anyone on the path; \
         use wss:// (or, knowingly, allow insecure connections: --insecure)"
    )]
    Insecure {
        /// The host named in the URL.
        host: String,
    },
    /// The CA file could not be read.
    #[error("CA file {}: {source}", path.display())]
    CaFileRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file is not valid PEM.
    #[error("CA file {}: not valid PEM: {source}", path.display())]
    CaFilePem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: rustls::pki_types::pem::Error,
    },
    /// The CA file holds no certificate.
    #[error("CA file {}: no certificate (PEM `CERTIFICATE` block) found", path.display())]
    CaFileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file cannot serve as a trust anchor.
    #[error("CA file {}: unusable certificate: {source}", path.display())]
    CaCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// rustls refused the client configuration (its crypto provider lacks
    /// the default protocol versions).
    #[error("TLS configuration: {0}")]
    TlsConfig(rustls::Error),
    /// The server's TLS certificate was refused.
    #[error("the TLS certificate of {host} was refused ({detail}): {problem}")]
    Certificate {
        /// The host we connected to.
        host: String,
        /// Why, in short.
        problem: CertificateProblem,
        /// Why, as rustls says it (names, dates).
        detail: rustls::CertificateError,
    },
    /// The TLS handshake failed for another reason (not a TLS server,
    /// no common protocol version or cipher suite, connection reset).
    #[error("TLS handshake with {url} failed: {source}")]
    Tls {
        /// Where we tried.
        url: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Connecting (TCP, TLS and the WebSocket handshake) took too long.
    #[error("no connection to {url} within {} s", after.as_secs())]
    Timeout {
        /// Where we tried.
        url: String,
        /// How long we waited.
        after: Duration,
    },
}

/// Why a server's TLS certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// Signed by a certificate authority this client does not trust.
    #[error(
        "it is signed by a certificate authority this client does not trust; \
         for a private CA, give its certificate as the CA file (--ca-file)"
    )]
    UnknownIssuer,
    /// Past its validity period.
    #[error("it has expired")]
    Expired,
    /// Before its validity period.
    #[error("it is not valid yet (is a clock wrong?)")]
    NotValidYet,
    /// Issued for another host name or address.
    #[error("it was issued for another name than the one in the URL")]
    WrongName,
    /// Revoked by its issuer.
    #[error("it has been revoked")]
    Revoked,
    /// Malformed, wrongly signed or unusable for a server.
    #[error("it is not a valid server certificate")]
    Invalid,
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
    /// This kind of media connection cannot restart ICE.
    #[error("ICE restart is not supported by this connection")]
    RestartUnsupported,
    /// Another kind of media connection (a [`crate::transport::Connector`]
    /// other than webrtc-rs) refused an operation.
    #[error("{0}")]
    Other(String),
}
