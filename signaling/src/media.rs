//! The seam the SFU plugs into.
//!
//! The server holds one [`MediaRouter`]. It calls it when a participant
//! joins, sends SDP or ICE, and leaves; the router answers asynchronously
//! through the participant's [`MediaSink`] (SDP answers, SFU-initiated
//! offers for renegotiation, ICE candidates). The calls are synchronous and
//! must not block: a router does its work on its own tasks.
//!
//! Until the SFU crate exists, the server runs with [`NoMedia`], which
//! refuses every media request with [`Error::MediaUnavailable`]; rooms and
//! e2ee envelopes work without media.

use tokio::sync::mpsc;

use crate::error::Error;
use crate::protocol::{IceCandidate, MediaKind, ParticipantId, RoomId, ServerMessage};

/// What a router sends to one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// The SFU's answer to the participant's offer.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// An SFU-initiated offer (renegotiation, e.g. a new track to subscribe to).
    Offer {
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate from the SFU.
    IceCandidate(IceCandidate),
    /// A member's track is now forwarded to the participant.
    TrackAdded {
        /// Who publishes it.
        publisher: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
        /// Its MSID stream id on the participant's connection.
        stream_id: String,
    },
    /// A forwarded track stopped.
    TrackRemoved {
        /// Who published it.
        publisher: ParticipantId,
        /// Its MSID stream id.
        stream_id: String,
    },
    /// The room's active speaker changed.
    ActiveSpeaker {
        /// The speaker, if any.
        participant: Option<ParticipantId>,
    },
    /// The SFU refused a request or lost the connection.
    Failed {
        /// What went wrong.
        message: String,
    },
}

impl MediaEvent {
    /// The wire message that carries this event.
    pub fn into_message(self) -> ServerMessage {
        match self {
            Self::Answer { sdp } => ServerMessage::SdpAnswer { sdp },
            Self::Offer { sdp } => ServerMessage::SdpOffer { sdp },
            Self::IceCandidate(candidate) => ServerMessage::IceCandidate { candidate },
            Self::TrackAdded {
                publisher,
                kind,
                stream_id,
            } => ServerMessage::TrackAdded {
                publisher,
                kind,
                stream_id,
            },
            Self::TrackRemoved {
                publisher,
                stream_id,
            } => ServerMessage::TrackRemoved {
                publisher,
                stream_id,
            },
            Self::ActiveSpeaker { participant } => ServerMessage::ActiveSpeaker { participant },
            Self::Failed { message } => {
                ServerMessage::error(crate::protocol::ErrorCode::MediaFailed, message)
            }
        }
    }
}

/// The router's handle to one participant's connection.
#[derive(Debug, Clone)]
pub struct MediaSink {
    tx: mpsc::Sender<MediaEvent>,
}

/// The participant's connection is gone or not reading; the event was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("participant connection closed or full")]
pub struct SinkClosed;

impl MediaSink {
    /// A sink and the receiving end the connection reads, holding `capacity` events.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<MediaEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// Queues `event` for the participant without waiting. When the queue is
    /// full the event is dropped and `Err` returned: the router decides
    /// (e.g. remove the participant).
    pub fn send(&self, event: MediaEvent) -> Result<(), SinkClosed> {
        self.tx.try_send(event).map_err(|_| SinkClosed)
    }
}

/// What the signaling server needs from an SFU (in-process or remote).
pub trait MediaRouter: Send + Sync + 'static {
    /// A participant joined `room`; `sink` reaches it until it is removed.
    fn add_participant(
        &self,
        room: &RoomId,
        id: ParticipantId,
        sink: MediaSink,
    ) -> Result<(), Error>;

    /// The participant's SDP offer; the answer goes to its sink.
    fn handle_offer(&self, id: ParticipantId, sdp: String) -> Result<(), Error>;

    /// The participant's answer to an offer the router sent.
    fn handle_answer(&self, id: ParticipantId, sdp: String) -> Result<(), Error>;

    /// A trickled ICE candidate from the participant.
    fn add_ice_candidate(&self, id: ParticipantId, candidate: IceCandidate) -> Result<(), Error>;

    /// The participant left or was disconnected; forget it.
    fn remove_participant(&self, id: ParticipantId);

    /// Prometheus text the router adds to the server's `/metrics`.
    fn metrics_text(&self) -> String {
        String::new()
    }
}

/// The router of a server without an SFU: joins succeed, media requests are
/// refused with [`Error::MediaUnavailable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMedia;

impl MediaRouter for NoMedia {
    fn add_participant(&self, _: &RoomId, _: ParticipantId, _: MediaSink) -> Result<(), Error> {
        Ok(())
    }

    fn handle_offer(&self, _: ParticipantId, _: String) -> Result<(), Error> {
        Err(Error::MediaUnavailable)
    }

    fn handle_answer(&self, _: ParticipantId, _: String) -> Result<(), Error> {
        Err(Error::MediaUnavailable)
    }

    fn add_ice_candidate(&self, _: ParticipantId, _: IceCandidate) -> Result<(), Error> {
        Err(Error::MediaUnavailable)
    }

    fn remove_participant(&self, _: ParticipantId) {}
}
