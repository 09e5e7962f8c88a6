//! The SFU seam: a scripted `MediaRouter` (a test double, not media) shows
//! that the server passes SDP and ICE both ways, lets the router start a
//! renegotiation, and tells it when a participant goes.

mod support;

use std::sync::{Arc, Mutex};

use hush_signaling::{
    ClientMessage, Error, IceCandidate, Limits, MediaRouter, MediaSink, ParticipantId, RoomId,
    ServerMessage,
};
use support::TestServer;

/// Records every call; answers offers and starts one renegotiation per join.
#[derive(Default)]
struct Scripted {
    calls: Mutex<Vec<String>>,
    sinks: Mutex<Vec<(ParticipantId, MediaSink)>>,
}

impl Scripted {
    fn log(&self, call: String) {
        self.calls.lock().expect("lock").push(call);
    }

    fn sink(&self, id: ParticipantId) -> MediaSink {
        let sinks = self.sinks.lock().expect("lock");
        sinks
            .iter()
            .find(|(p, _)| *p == id)
            .expect("known participant")
            .1
            .clone()
    }
}

impl MediaRouter for Scripted {
    fn add_participant(
        &self,
        room: &RoomId,
        id: ParticipantId,
        sink: MediaSink,
    ) -> Result<(), Error> {
        self.log(format!("add {room} {id}"));
        sink.send(ServerMessage::SdpOffer {
            sdp: format!("offer-for-{id}"),
        })
        .expect("sink");
        self.sinks.lock().expect("lock").push((id, sink));
        Ok(())
    }

    fn handle_offer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.log(format!("offer {id} {sdp}"));
        if sdp == "bad" {
            return Err(Error::MediaRejected);
        }
        let sink = self.sink(id);
        sink.send(ServerMessage::SdpAnswer {
            sdp: format!("answer-to-{sdp}"),
        })
        .expect("sink");
        sink.send(ServerMessage::IceCandidate {
            candidate: IceCandidate {
                candidate: "candidate:sfu".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
            },
        })
        .expect("sink");
        Ok(())
    }

    fn handle_answer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.log(format!("answer {id} {sdp}"));
        Ok(())
    }

    fn add_ice_candidate(&self, id: ParticipantId, candidate: IceCandidate) -> Result<(), Error> {
        self.log(format!("ice {id} {}", candidate.candidate));
        Ok(())
    }

    fn remove_participant(&self, id: ParticipantId) {
        self.log(format!("remove {id}"));
    }
}

#[tokio::test]
async fn sdp_and_ice_flow_both_ways_through_the_router() {
    let router = Arc::new(Scripted::default());
    let server = TestServer::start_with_router(Limits::default(), router.clone()).await;
    let mut ann = server.join("r", "Ann").await;
    let id = ann.id;
    // The router's own offer (renegotiation) reaches the client.
    assert_eq!(
        ann.client.recv().await,
        ServerMessage::SdpOffer {
            sdp: format!("offer-for-{id}")
        }
    );
    ann.client
        .send(&ClientMessage::SdpAnswer {
            sdp: "client-answer".into(),
        })
        .await;
    ann.client
        .send(&ClientMessage::SdpOffer {
            sdp: "client-offer".into(),
        })
        .await;
    assert_eq!(
        ann.client.recv().await,
        ServerMessage::SdpAnswer {
            sdp: "answer-to-client-offer".into()
        }
    );
    assert!(
        matches!(ann.client.recv().await, ServerMessage::IceCandidate { candidate } if candidate.candidate == "candidate:sfu")
    );
    ann.client
        .send(&ClientMessage::IceCandidate {
            candidate: IceCandidate {
                candidate: "candidate:client".into(),
                sdp_mid: None,
                sdp_m_line_index: Some(0),
            },
        })
        .await;
    // A refusal from the router is a typed error; the connection stays.
    ann.client
        .send(&ClientMessage::SdpOffer { sdp: "bad".into() })
        .await;
    assert!(matches!(
        ann.client.recv().await,
        ServerMessage::Error {
            code: hush_signaling::ErrorCode::MediaFailed,
            ..
        }
    ));
    ann.client.send(&ClientMessage::Leave).await;
    ann.client.until_closed().await;
    server
        .wait_for_metric("hush_signaling_participants", 0)
        .await;
    server.stop().await;
    let calls = router.calls.lock().expect("lock").clone();
    assert_eq!(
        calls,
        vec![
            format!("add r {id}"),
            format!("answer {id} client-answer"),
            format!("offer {id} client-offer"),
            format!("ice {id} candidate:client"),
            format!("offer {id} bad"),
            format!("remove {id}"),
        ]
    );
}

#[tokio::test]
async fn a_participant_that_cannot_take_its_media_events_is_disconnected_not_left_broken() {
    let limits = Limits {
        send_queue: 4,
        ..Limits::default()
    };
    let router = Arc::new(Keeper {
        flood: true,
        ..Keeper::default()
    });
    let server = TestServer::start_with_router(limits, router).await;
    let mut ann = server.join("r", "Ann").await;
    // Some events arrive; then, instead of a silent gap, the connection ends.
    let (reason, _) = ann.client.until_closed().await;
    assert_eq!(reason, Some(hush_signaling::CloseReason::TooSlow));
    server
        .wait_for_metric("hush_signaling_participants", 0)
        .await;
    server.stop().await;
}

/// Keeps every participant's sink, so the test can say "its media died";
/// with `flood`, fills each sink past its queue as the participant joins.
#[derive(Default)]
struct Keeper {
    sinks: Mutex<Vec<(ParticipantId, MediaSink)>>,
    flood: bool,
}

impl Keeper {
    fn media_died(&self, id: ParticipantId) {
        let sinks = self.sinks.lock().expect("lock");
        let (_, sink) = sinks.iter().find(|(p, _)| *p == id).expect("known");
        sink.check_liveness();
    }
}

impl MediaRouter for Keeper {
    fn add_participant(&self, _: &RoomId, id: ParticipantId, sink: MediaSink) -> Result<(), Error> {
        if self.flood {
            for n in 0..64 {
                let added = ServerMessage::TrackAdded {
                    publisher: id,
                    kind: hush_signaling::MediaKind::Audio,
                    stream_id: format!("s{n}"),
                };
                if sink.send(added).is_err() {
                    break;
                }
            }
        }
        self.sinks.lock().expect("lock").push((id, sink));
        Ok(())
    }

    fn handle_offer(&self, _: ParticipantId, _: String) -> Result<(), Error> {
        Ok(())
    }

    fn handle_answer(&self, _: ParticipantId, _: String) -> Result<(), Error> {
        Ok(())
    }

    fn add_ice_candidate(&self, _: ParticipantId, _: IceCandidate) -> Result<(), Error> {
        Ok(())
    }

    fn remove_participant(&self, _: ParticipantId) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_media_dies_a_vanished_member_is_removed_at_once_and_a_live_one_stays() {
    let limits = Limits {
        // The idle timeout alone would keep a vanished member for a minute.
        idle_timeout: std::time::Duration::from_secs(60),
        liveness_timeout: std::time::Duration::from_secs(1),
        ..Limits::default()
    };
    let router = Arc::new(Keeper::default());
    let server = TestServer::start_with_router(limits, router.clone()).await;
    let ann = server.join("r", "Ann").await;
    // Bob joins and then never reads again: as good as vanished.
    let bob = server.join("r", "Bob").await;
    let (ann_id, bob_id) = (ann.id, bob.id);
    // Ann keeps reading (and so answers pings), reporting what she hears.
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let mut ann_client = ann.client;
    let reader = tokio::spawn(async move {
        loop {
            match ann_client.next().await {
                Ok(m) => {
                    let _ = heard_tx.send(m);
                }
                Err(end) => return end,
            }
        }
    });
    router.media_died(ann_id);
    router.media_died(bob_id);
    server
        .wait_for_metric("hush_signaling_participants", 1)
        .await;
    loop {
        match heard.recv().await.expect("ann's connection is still up") {
            ServerMessage::MemberLeft { id } => {
                assert_eq!(id, bob_id);
                break;
            }
            ServerMessage::MemberJoined { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Ann's check ran alongside Bob's; one more period, and she is still in.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(server.metric("hush_signaling_participants").await, 1);
    assert!(!reader.is_finished(), "ann was disconnected");
    drop(bob);
    reader.abort();
    server.stop().await;
}
