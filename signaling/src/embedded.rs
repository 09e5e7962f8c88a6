//! The in-process SFU behind the [`MediaRouter`] seam: `hush-server`'s
//! default. Each participant gets one task that carries out its requests in
//! the order they came (add, offer, answer, candidates, remove) and relays
//! the SFU's events to its connection.

use std::collections::HashMap;
use std::sync::Mutex;

use hush_sfu::{Sfu, SfuEvent};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::media::{MediaEvent, MediaRouter, MediaSink};
use crate::protocol::{IceCandidate, MediaKind, ParticipantId, RoomId};

enum Request {
    Offer(String),
    Answer(String),
    Candidate(IceCandidate),
}

/// [`MediaRouter`] backed by an in-process [`hush_sfu::Sfu`].
pub struct EmbeddedSfu {
    sfu: Sfu,
    participants: Mutex<HashMap<ParticipantId, mpsc::UnboundedSender<Request>>>,
}

impl core::fmt::Debug for EmbeddedSfu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("EmbeddedSfu")
    }
}

impl EmbeddedSfu {
    /// Wraps an SFU created on the current Tokio runtime.
    pub fn new(sfu: Sfu) -> Self {
        Self {
            sfu,
            participants: Mutex::new(HashMap::new()),
        }
    }

    /// The SFU, e.g. for shutdown.
    pub fn sfu(&self) -> &Sfu {
        &self.sfu
    }

    fn table(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ParticipantId, mpsc::UnboundedSender<Request>>> {
        self.participants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request(&self, id: ParticipantId, r: Request) -> Result<(), Error> {
        let table = self.table();
        let tx = table.get(&id).ok_or(Error::MediaUnknownParticipant(id))?;
        tx.send(r).map_err(|_| Error::MediaUnknownParticipant(id))
    }
}

/// The SFU's name for a signaling participant: its number in decimal.
fn sfu_id(id: ParticipantId) -> hush_sfu::ParticipantId {
    hush_sfu::ParticipantId(id.0.to_string())
}

/// The signaling participant an SFU id names.
fn signaling_id(id: &hush_sfu::ParticipantId) -> Option<ParticipantId> {
    id.0.parse().ok().map(ParticipantId)
}

fn failed(message: impl Into<String>) -> MediaEvent {
    MediaEvent::Failed {
        message: message.into(),
    }
}

/// Translates one SFU event for the participant's connection.
fn translate(event: SfuEvent) -> Option<MediaEvent> {
    Some(match event {
        SfuEvent::Offer { sdp } => MediaEvent::Offer { sdp },
        SfuEvent::IceCandidate { candidate } => MediaEvent::IceCandidate(IceCandidate {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_m_line_index: candidate.sdp_mline_index,
        }),
        SfuEvent::TrackAdded {
            publisher,
            kind,
            stream_id,
            ..
        } => MediaEvent::TrackAdded {
            publisher: signaling_id(&publisher)?,
            kind: match kind {
                hush_sfu::MediaKind::Audio => MediaKind::Audio,
                hush_sfu::MediaKind::Video => MediaKind::Video,
            },
            stream_id,
        },
        SfuEvent::TrackRemoved {
            publisher,
            track_id,
            ..
        } => {
            // The SFU names forwarded streams by publisher; the track id starts with it.
            let stream_id = track_id.split('-').next().unwrap_or_default().to_owned();
            MediaEvent::TrackRemoved {
                publisher: signaling_id(&publisher)?,
                stream_id,
            }
        }
        SfuEvent::ActiveSpeaker { participant } => MediaEvent::ActiveSpeaker {
            participant: participant.as_ref().and_then(signaling_id),
        },
        SfuEvent::Closed { reason } => failed(format!("media connection closed: {reason:?}")),
        _ => return None,
    })
}

impl MediaRouter for EmbeddedSfu {
    fn add_participant(
        &self,
        room: &RoomId,
        id: ParticipantId,
        sink: MediaSink,
    ) -> Result<(), Error> {
        let (tx, mut requests) = mpsc::unbounded_channel();
        self.table().insert(id, tx);
        let sfu = self.sfu.clone();
        let room = hush_sfu::RoomId(room.as_str().to_owned());
        let who = sfu_id(id);
        tokio::spawn(async move {
            let mut events = match sfu.add_participant(&room, &who).await {
                Ok(e) => e,
                Err(e) => {
                    let _ = sink.send(failed(e.to_string()));
                    return;
                }
            };
            loop {
                tokio::select! {
                    r = requests.recv() => {
                        let result = match r {
                            Some(Request::Offer(sdp)) => sfu.handle_offer(&room, &who, sdp).await.map(|sdp| {
                                let _ = sink.send(MediaEvent::Answer { sdp });
                            }),
                            Some(Request::Answer(sdp)) => sfu.handle_answer(&room, &who, sdp).await,
                            Some(Request::Candidate(c)) => sfu.add_ice_candidate(&room, &who, hush_sfu::IceCandidate {
                                candidate: c.candidate,
                                sdp_mid: c.sdp_mid,
                                sdp_mline_index: c.sdp_m_line_index,
                            }).await,
                            // The participant was removed: the sender is gone.
                            None => break,
                        };
                        if let Err(e) = result {
                            let _ = sink.send(failed(e.to_string()));
                        }
                    }
                    ev = events.recv() => match ev {
                        Some(ev) => {
                            if let Some(m) = translate(ev) {
                                // A full or closed sink: the server removes the participant.
                                let _ = sink.send(m);
                            }
                        }
                        None => break,
                    },
                }
            }
            let _ = sfu.remove_participant(&room, &who).await;
        });
        Ok(())
    }

    fn handle_offer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.request(id, Request::Offer(sdp))
    }

    fn handle_answer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.request(id, Request::Answer(sdp))
    }

    fn add_ice_candidate(&self, id: ParticipantId, candidate: IceCandidate) -> Result<(), Error> {
        self.request(id, Request::Candidate(candidate))
    }

    fn remove_participant(&self, id: ParticipantId) {
        // Dropping the sender ends the participant's task, which removes it from the SFU.
        self.table().remove(&id);
    }

    fn metrics_text(&self) -> String {
        self.sfu.metrics().render()
    }
}
