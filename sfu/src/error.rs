//! The one error type of this crate.

use hush_proto::{ParticipantId, RoomId};

use crate::routing::RoutingError;

/// Everything the SFU API can refuse or fail at. What a client sent
/// (bad SDP, a glaring offer) is distinct from API misuse and from
/// failures of the SFU itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such participant in that room.
    #[error("participant {participant} is not in room {room}")]
    UnknownParticipant {
        /// The room.
        room: RoomId,
        /// The participant.
        participant: ParticipantId,
    },
    /// The participant is already in the room.
    #[error("participant {participant} is already in room {room}")]
    AlreadyJoined {
        /// The room.
        room: RoomId,
        /// The participant.
        participant: ParticipantId,
    },
    /// The client sent an offer while the SFU's own offer awaits an answer.
    /// The SFU's offer wins: the client must answer it, then offer again.
    #[error("glare: the SFU has an offer outstanding; answer it, then offer again")]
    Glare,
    /// An answer arrived when no SFU offer was outstanding.
    #[error("no offer outstanding to answer")]
    NoOfferOutstanding,
    /// The client's SDP or ICE candidate was rejected by the WebRTC stack.
    #[error("rejected {what}: {reason}")]
    Rejected {
        /// What was rejected ("offer", "answer", "candidate").
        what: &'static str,
        /// The stack's reason.
        reason: String,
    },
    /// The configuration cannot work (see [`crate::SfuConfig::validate`]).
    #[error("configuration: {0}")]
    Config(String),
    /// The WebRTC stack failed on the SFU's side.
    #[error("webrtc: {0}")]
    Transport(String),
    /// A routing-core refusal.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Opening the capture file failed.
    #[error("capture file: {0}")]
    Capture(#[from] std::io::Error),
    /// The SFU has shut down.
    #[error("the SFU is shut down")]
    Shutdown,
}

impl Error {
    pub(crate) fn transport(e: impl std::fmt::Display) -> Self {
        Error::Transport(e.to_string())
    }

    pub(crate) fn rejected(what: &'static str, e: impl std::fmt::Display) -> Self {
        Error::Rejected {
            what,
            reason: e.to_string(),
        }
    }
}
