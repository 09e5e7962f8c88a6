//! The seam the SFU plugs into.
//!
//! The server holds one [`MediaRouter`]. It calls it when a participant
//! joins, sends SDP or ICE, and leaves; the router answers asynchronously
//! through the participant's [`MediaSink`] with wire messages
//! ([`ServerMessage`]) that the server passes to the client as they are.
//! The calls are synchronous and must not block: a router does its work on
//! its own tasks.
//!
//! A server without an SFU runs with [`NoMedia`], which refuses every
//! media request with [`Error::MediaUnavailable`]; rooms and e2ee
//! envelopes work without media.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, mpsc};

use hush_proto::{IceCandidate, ParticipantId, RoomId, ServerMessage};

use crate::error::Error;

/// The router's handle to one participant's connection.
///
/// A router sends only the media messages of PROTOCOL.md §11:
/// [`ServerMessage::SdpAnswer`], [`ServerMessage::SdpOffer`],
/// [`ServerMessage::IceCandidate`], [`ServerMessage::TrackAdded`],
/// [`ServerMessage::TrackRemoved`], [`ServerMessage::ActiveSpeaker`], and
/// [`ServerMessage::Error`] with code
/// [`ErrorCode::MediaFailed`](hush_proto::ErrorCode::MediaFailed).
#[derive(Debug, Clone)]
pub struct MediaSink {
    tx: mpsc::Sender<ServerMessage>,
    kick: Option<Arc<Notify>>,
    probe: Option<Arc<Notify>>,
    moved: Option<Arc<Notify>>,
}

/// The participant's connection is gone or not reading; the message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("participant connection closed or full")]
pub struct SinkClosed;

impl MediaSink {
    /// A sink and the receiving end the connection reads, holding `capacity` messages.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<ServerMessage>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                kick: None,
                probe: None,
                moved: None,
            },
            rx,
        )
    }

    /// The sink of a server connection: as [`MediaSink::channel`], and a
    /// full queue disconnects the participant through `kick` (the server's
    /// "too slow" policy: a dropped `track_added` or SDP would leave its
    /// call broken, so the connection ends instead of going on without it);
    /// [`MediaSink::check_liveness`] wakes `probe`.
    pub fn for_connection(
        capacity: usize,
        kick: Arc<Notify>,
        probe: Arc<Notify>,
    ) -> (Self, mpsc::Receiver<ServerMessage>) {
        let (mut sink, rx) = Self::channel(capacity);
        sink.kick = Some(kick);
        sink.probe = Some(probe);
        (sink, rx)
    }

    /// As this sink, and [`MediaSink::media_moved`] wakes `moved`.
    pub fn with_moved(mut self, moved: Arc<Notify>) -> Self {
        self.moved = Some(moved);
        self
    }

    /// The node carrying the participant's media is gone and the room's
    /// media will be placed anew: the server closes the connection with
    /// `closing {reason: "media_moved"}`, and the client joins again (its
    /// new media connection goes to the new node). Without a `moved`
    /// notifier this does nothing.
    pub fn media_moved(&self) {
        if let Some(moved) = &self.moved {
            moved.notify_one();
        }
    }

    /// The participant's media connection died (ICE failed, DTLS closed):
    /// the server checks at once that the participant itself is still there
    /// (a WebSocket ping that must be answered within the liveness timeout)
    /// instead of waiting for its idle timeout. A participant that vanished
    /// is removed within seconds; one whose media alone failed stays.
    pub fn check_liveness(&self) {
        if let Some(probe) = &self.probe {
            probe.notify_one();
        }
    }

    /// Whether the participant's connection is gone (nothing reads the
    /// queue any more), as opposed to merely behind.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues `message` for the participant without waiting. When the queue
    /// is full the message is dropped, the participant is disconnected (if
    /// the sink has a kick), and `Err` returned.
    pub fn send(&self, message: ServerMessage) -> Result<(), SinkClosed> {
        self.tx.try_send(message).map_err(|_| {
            if let Some(kick) = &self.kick {
                kick.notify_one();
            }
            SinkClosed
        })
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

/// SDP and candidates of one participant waiting for its SFU, at most.
pub(crate) const REQUEST_QUEUE: usize = 64;

/// A participant's media request, carried out in order by its task.
pub(crate) enum Request {
    /// Its offer (the answer goes back through its sink).
    Offer(String),
    /// Its answer to the SFU's offer.
    Answer(String),
    /// A trickled candidate.
    Candidate(IceCandidate),
}

/// Each participant's bounded request queue, as a router's per-participant
/// tasks take them; shared by the embedded and the remote SFU routers.
#[derive(Default)]
pub(crate) struct RequestQueues(Mutex<HashMap<ParticipantId, mpsc::Sender<Request>>>);

impl RequestQueues {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<ParticipantId, mpsc::Sender<Request>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new queue for `id`, whose task reads the receiver.
    pub(crate) fn open(&self, id: ParticipantId) -> mpsc::Receiver<Request> {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        self.table().insert(id, tx);
        rx
    }

    /// Queues `r` for `id`; one that piles up faster than the SFU takes
    /// requests is refused (the client hears `media_failed`).
    pub(crate) fn send(&self, id: ParticipantId, r: Request) -> Result<(), Error> {
        let table = self.table();
        let tx = table.get(&id).ok_or(Error::MediaUnknownParticipant(id))?;
        tx.try_send(r).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::MediaRejected,
            mpsc::error::TrySendError::Closed(_) => Error::MediaUnknownParticipant(id),
        })
    }

    /// Drops `id`'s queue, which ends its task.
    pub(crate) fn close(&self, id: ParticipantId) {
        self.table().remove(&id);
    }
}
