//! The one error type of the server crate.

use hush_proto::{ErrorCode, ParticipantId};

/// Everything the library refuses. Token variants are what a client's join
/// gets wrong; the others come from configuration or API misuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The protocol refused an id, name, token, secret or duration.
    #[error(transparent)]
    Protocol(#[from] hush_proto::Error),
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
    /// A key package over the size limit.
    #[error("key package of {len} bytes; at most {max}")]
    KeyPackageTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An envelope over the size limit; it was not relayed.
    #[error("envelope of {len} bytes; at most {max}")]
    EnvelopeTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope's addressee is not in the sender's room.
    #[error("participant {0} is not in this room")]
    UnknownRecipient(ParticipantId),
    /// The envelope's addressee has half its queue or more waiting: the
    /// envelope was not relayed (the addressee is not disconnected).
    #[error("participant {0} has too much waiting; envelope not relayed")]
    RecipientBusy(ParticipantId),
    /// The join names a protocol version this server does not speak.
    #[error("protocol version {got} not supported; this server speaks {supported}")]
    UnsupportedProtocol {
        /// Version the client sent.
        got: u32,
        /// Version the server speaks.
        supported: u32,
    },
    /// A client message type this server does not handle.
    #[error("this server does not handle that message type")]
    UnsupportedMessage,
    /// This server has no SFU; media is not available.
    #[error("media is not available on this server (no SFU)")]
    MediaUnavailable,
    /// The SFU does not know this participant.
    #[error("the SFU has no participant {0}")]
    MediaUnknownParticipant(ParticipantId),
    /// The SFU refused the SDP or candidate.
    #[error("the SFU refused the request")]
    MediaRejected,
}

impl Error {
    /// The wire error code a client sees for this error, if it is one of its.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Self::Protocol(e) => return e.code(),
            Self::RoomFull { .. } => ErrorCode::RoomFull,
            Self::ServerFull { .. } => ErrorCode::ServerFull,
            Self::NotJoined(_) | Self::JoinFirst => ErrorCode::NotJoined,
            Self::AlreadyJoined => ErrorCode::AlreadyJoined,
            Self::UnknownRecipient(_) => ErrorCode::UnknownRecipient,
            Self::RecipientBusy(_) => ErrorCode::RecipientBusy,
            Self::KeyPackageTooLarge { .. } | Self::EnvelopeTooLarge { .. } => {
                ErrorCode::InvalidField
            }
            Self::UnsupportedProtocol { .. } => ErrorCode::UnsupportedProtocol,
            Self::UnsupportedMessage => ErrorCode::UnknownType,
            Self::MediaUnavailable => ErrorCode::MediaUnavailable,
            Self::MediaUnknownParticipant(_) | Self::MediaRejected => ErrorCode::MediaFailed,
        })
    }
}
