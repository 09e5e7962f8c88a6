//! The one error type of this crate.

use crate::protocol::{ErrorCode, ParticipantId};

/// Everything the library refuses. Token variants are what a client's join
/// gets wrong; the others come from configuration or API misuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A room id outside the allowed length or alphabet.
    #[error("invalid room id: 1 to 64 ASCII letters, digits, '-', '_' or '.'")]
    InvalidRoomId,
    /// A display name that is empty, too long or has control characters.
    #[error("invalid display name: 1 to 64 bytes, no control characters")]
    InvalidDisplayName,
    /// The join carried no token.
    #[error("join token missing")]
    TokenMissing,
    /// The token is not in the token format.
    #[error("join token malformed")]
    TokenMalformed,
    /// The token's MAC does not verify under this server's secret.
    #[error("join token forged or minted with another secret")]
    TokenForged,
    /// The token expired at the given Unix time.
    #[error("join token expired at {expired_at} (Unix seconds)")]
    TokenExpired {
        /// Expiry written in the token.
        expired_at: u64,
    },
    /// The token is for another room.
    #[error("join token is for another room")]
    TokenWrongRoom,
    /// The token is for another display name.
    #[error("join token is for another display name")]
    TokenWrongName,
    /// The room has its maximum number of participants.
    #[error("room is full ({max} participants)")]
    RoomFull {
        /// The limit.
        max: usize,
    },
    /// The server has its maximum number of rooms.
    #[error("server is full ({max} rooms)")]
    ServerFull {
        /// The limit.
        max: usize,
    },
    /// The participant is not in any room.
    #[error("participant {0} is not in a room")]
    NotJoined(ParticipantId),
    /// A message that needs a joined connection came before `join`.
    #[error("send join first")]
    JoinFirst,
    /// A second `join` on a connection that already joined.
    #[error("this connection already joined a room")]
    AlreadyJoined,
    /// The envelope's addressee is not in the sender's room.
    #[error("participant {0} is not in this room")]
    UnknownRecipient(ParticipantId),
    /// The join names a protocol version this server does not speak.
    #[error("protocol version {got} not supported; this server speaks {supported}")]
    UnsupportedProtocol {
        /// Version the client sent.
        got: u32,
        /// Version the server speaks.
        supported: u32,
    },
    /// This server has no SFU; media is not available.
    #[error("media is not available on this server (no SFU)")]
    MediaUnavailable,
    /// The SFU does not know this participant.
    #[error("the SFU has no participant {0}")]
    MediaUnknownParticipant(ParticipantId),
    /// The SFU refused the SDP or candidate.
    #[error("the SFU refused the request")]
    MediaRejected,
    /// The server secret is shorter than [`crate::token::MIN_SECRET_LEN`].
    #[error("server secret too short: {len} bytes, at least {min} needed")]
    SecretTooShort {
        /// Length given.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// A duration flag that is not `<number><unit>` with unit ms, s, m, h or d.
    #[error("invalid duration {0:?}: use e.g. 500ms, 30s, 10m, 1h, 7d")]
    InvalidDuration(String),
}

impl Error {
    /// The wire error code a client sees for this error, if it is one of its.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Self::InvalidRoomId | Self::InvalidDisplayName => ErrorCode::InvalidField,
            Self::TokenMissing => ErrorCode::TokenMissing,
            Self::TokenMalformed => ErrorCode::TokenMalformed,
            Self::TokenForged => ErrorCode::TokenForged,
            Self::TokenExpired { .. } => ErrorCode::TokenExpired,
            Self::TokenWrongRoom => ErrorCode::TokenWrongRoom,
            Self::TokenWrongName => ErrorCode::TokenWrongName,
            Self::RoomFull { .. } => ErrorCode::RoomFull,
            Self::ServerFull { .. } => ErrorCode::ServerFull,
            Self::NotJoined(_) | Self::JoinFirst => ErrorCode::NotJoined,
            Self::AlreadyJoined => ErrorCode::AlreadyJoined,
            Self::UnknownRecipient(_) => ErrorCode::UnknownRecipient,
            Self::UnsupportedProtocol { .. } => ErrorCode::UnsupportedProtocol,
            Self::MediaUnavailable => ErrorCode::MediaUnavailable,
            Self::MediaUnknownParticipant(_) | Self::MediaRejected => ErrorCode::MediaFailed,
            Self::SecretTooShort { .. } | Self::Random | Self::InvalidDuration(_) => return None,
        })
    }
}
