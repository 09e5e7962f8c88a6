//! The in-process SFU behind the [`MediaRouter`] seam: `hush-server`'s
//! default. Each participant gets one task that carries out its requests in
//! the order they came (add, offer, answer, candidates, remove) and relays
//! the SFU's events to its connection as wire messages.
//!
//! Ids: the SFU routes by the signaling server's own [`RoomId`] and
//! [`ParticipantId`], so the mapping signaling id ↔ SFU id is the identity
//! and nothing is converted (see [`hush_proto::ids`]). The SFU names each
//! forwarded stream by its publisher ([`hush_proto::stream_id`]) and says
//! so in its events, so no string is parsed here either.

use hush_sfu::{Sfu, SfuEvent};

use hush_proto::{ErrorCode, IceCandidate, ParticipantId, RoomId, ServerMessage};

use crate::error::Error;
use crate::media::{MediaRouter, MediaSink, Request, RequestQueues};

/// [`MediaRouter`] backed by an in-process [`hush_sfu::Sfu`].
pub struct EmbeddedSfu {
    sfu: Sfu,
    queues: RequestQueues,
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
            queues: RequestQueues::default(),
        }
    }

    /// The SFU, e.g. for shutdown.
    pub fn sfu(&self) -> &Sfu {
        &self.sfu
    }
}

fn failed(message: impl Into<String>) -> ServerMessage {
    ServerMessage::error(ErrorCode::MediaFailed, message)
}

/// Passes one SFU event to the member: a `Closed` one also has the server
/// check that the member itself is still there. `Break` when the member
/// cannot take it (its connection is gone, or it is being dropped as too
/// slow): its media ends too.
pub(crate) fn deliver(
    event: SfuEvent,
    sink: &MediaSink,
    id: ParticipantId,
) -> std::ops::ControlFlow<()> {
    if matches!(event, SfuEvent::Closed { .. }) {
        // Its media died: is the participant itself still there?
        sink.check_liveness();
    }
    if let Some(m) = translate(event)
        && sink.send(m).is_err()
    {
        if sink.is_closed() {
            tracing::debug!(participant = %id, "connection gone; its media ends");
        } else {
            tracing::warn!(participant = %id, "media events not read; participant dropped");
        }
        return std::ops::ControlFlow::Break(());
    }
    std::ops::ControlFlow::Continue(())
}

/// The wire message for one SFU event, if the client is told of it.
/// Ids pass through unchanged: the SFU's ids are the signaling ids.
fn translate(event: SfuEvent) -> Option<ServerMessage> {
    Some(match event {
        SfuEvent::Offer { sdp } => ServerMessage::SdpOffer { sdp },
        SfuEvent::IceCandidate { candidate } => ServerMessage::IceCandidate { candidate },
        SfuEvent::TrackAdded {
            publisher,
            kind,
            stream_id,
            ..
        } => ServerMessage::TrackAdded {
            publisher,
            kind,
            stream_id,
        },
        SfuEvent::TrackRemoved {
            publisher,
            stream_id,
            ..
        } => ServerMessage::TrackRemoved {
            publisher,
            stream_id,
        },
        SfuEvent::ActiveSpeaker { participant } => ServerMessage::ActiveSpeaker { participant },
        SfuEvent::Closed { reason } => ServerMessage::error(
            ErrorCode::MediaClosed,
            format!("media connection closed: {reason:?}"),
        ),
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
        let mut requests = self.queues.open(id);
        let sfu = self.sfu.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let mut events = match sfu.add_participant(&room, &id).await {
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
                            Some(Request::Offer(sdp)) => sfu.handle_offer(&room, &id, sdp).await.map(|sdp| {
                                let _ = sink.send(ServerMessage::SdpAnswer { sdp });
                            }),
                            Some(Request::Answer(sdp)) => sfu.handle_answer(&room, &id, sdp).await,
                            Some(Request::Candidate(c)) => sfu.add_ice_candidate(&room, &id, c).await,
                            // The participant was removed: the sender is gone.
                            None => break,
                        };
                        if let Err(e) = result {
                            let _ = sink.send(failed(e.to_string()));
                        }
                    }
                    ev = events.recv() => match ev {
                        Some(ev) => {
                            if deliver(ev, &sink, id).is_break() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            let _ = sfu.remove_participant(&room, &id).await;
        });
        Ok(())
    }

    fn handle_offer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.queues.send(id, Request::Offer(sdp))
    }

    fn handle_answer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.queues.send(id, Request::Answer(sdp))
    }

    fn add_ice_candidate(&self, id: ParticipantId, candidate: IceCandidate) -> Result<(), Error> {
        self.queues.send(id, Request::Candidate(candidate))
    }

    fn remove_participant(&self, id: ParticipantId) {
        // Closing the queue ends the participant's task, which removes it from the SFU.
        self.queues.close(id);
    }

    fn metrics_text(&self) -> String {
        self.sfu.metrics().render()
    }
}

#[cfg(test)]
mod tests {
    use hush_proto::MediaKind;

    use crate::media::REQUEST_QUEUE;

    use super::*;

    #[test]
    fn sfu_events_become_wire_messages_with_the_same_ids() {
        let ann = ParticipantId(7);
        assert_eq!(
            translate(SfuEvent::TrackAdded {
                publisher: ann,
                track: "mic".into(),
                kind: MediaKind::Audio,
                stream_id: hush_proto::stream_id(ann),
                track_id: "p7-audio-1".into(),
                ssrc: 1,
            }),
            Some(ServerMessage::TrackAdded {
                publisher: ann,
                kind: MediaKind::Audio,
                stream_id: "p7".into(),
            })
        );
        assert_eq!(
            translate(SfuEvent::TrackRemoved {
                publisher: ann,
                track: "mic".into(),
                stream_id: hush_proto::stream_id(ann),
                track_id: "p7-audio-1".into(),
            }),
            Some(ServerMessage::TrackRemoved {
                publisher: ann,
                stream_id: "p7".into(),
            })
        );
        assert_eq!(
            translate(SfuEvent::ActiveSpeaker {
                participant: Some(ann)
            }),
            Some(ServerMessage::ActiveSpeaker {
                participant: Some(ann)
            })
        );
        let candidate = IceCandidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        };
        assert_eq!(
            translate(SfuEvent::IceCandidate {
                candidate: candidate.clone()
            }),
            Some(ServerMessage::IceCandidate { candidate })
        );
    }

    #[tokio::test]
    async fn requests_that_pile_up_are_refused_not_queued_without_bound() {
        let sfu = Sfu::new(hush_sfu::SfuConfig::default()).expect("sfu");
        let router = EmbeddedSfu::new(sfu.clone());
        let (sink, _rx) = MediaSink::channel(8);
        let ann = ParticipantId(1);
        router
            .add_participant(&"r".parse().expect("room"), ann, sink)
            .expect("added");
        // On this single-threaded runtime the participant's task cannot run
        // before we yield, so nothing drains the queue meanwhile.
        let results: Vec<_> = (0..REQUEST_QUEUE + 3)
            .map(|i| router.handle_offer(ann, format!("offer {i}")))
            .collect();
        assert!(results[..REQUEST_QUEUE].iter().all(Result::is_ok));
        assert!(
            results[REQUEST_QUEUE..]
                .iter()
                .all(|r| *r == Err(Error::MediaRejected))
        );
        router.remove_participant(ann);
        sfu.shutdown().await;
    }
}
