//! A real server on an ephemeral loopback port with real WebSocket clients:
//! joins, membership, envelope relay, leave, keepalive, timeouts, shutdown.

mod support;

use std::time::Duration;

use hush_signaling::{ClientMessage, CloseReason, ErrorCode, Limits, Opaque, ServerMessage};
use support::{End, TestServer, http_get};

#[tokio::test]
async fn members_see_each_other_and_envelopes_reach_only_their_addressee() {
    let server = TestServer::start(Limits::default()).await;
    let mut ann = server.join("standup", "Ann").await;
    assert!(ann.members.is_empty());
    let mut bob = server.join("standup", "Bob").await;
    assert_eq!(bob.members.len(), 1);
    assert_eq!(bob.members[0].id, ann.id);
    assert_eq!(bob.members[0].key_package, Opaque(b"Ann".to_vec()));
    match ann.client.recv().await {
        ServerMessage::MemberJoined { member } => {
            assert_eq!(member.id, bob.id);
            assert_eq!(member.name.as_str(), "Bob");
            assert_eq!(member.key_package, Opaque(b"Bob".to_vec()));
        }
        other => panic!("expected member_joined, got {other:?}"),
    }
    let mut cy = server.join("standup", "Cy").await;
    assert_eq!(
        cy.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ann.id, bob.id],
        "members listed oldest first"
    );
    for c in [&mut ann.client, &mut bob.client] {
        assert!(
            matches!(c.recv().await, ServerMessage::MemberJoined { member } if member.id == cy.id)
        );
    }
    // Someone in another room must never see this room's traffic.
    let mut eve = server.join("other", "Eve").await;

    // Ann claims to be Cy: the server sets `from` itself.
    ann.client
        .send_text(&format!(
            r#"{{"type":"envelope","to":{},"from":{},"payload":"c2VjcmV0"}}"#,
            bob.id.0, cy.id.0
        ))
        .await;
    assert_eq!(
        bob.client.recv().await,
        ServerMessage::Envelope {
            from: ann.id,
            to: bob.id,
            payload: Opaque(b"secret".to_vec())
        }
    );
    // Only Bob got it: Cy's and Eve's next messages are the pongs to these pings.
    for c in [&mut cy.client, &mut eve.client] {
        c.send(&ClientMessage::Ping { nonce: 5 }).await;
        assert_eq!(c.recv().await, ServerMessage::Pong { nonce: 5 });
    }

    // Eve cannot reach Ann across rooms.
    eve.client.envelope(ann.id, b"x").await;
    match eve.client.recv().await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::UnknownRecipient),
        other => panic!("expected an error, got {other:?}"),
    }

    // Leave is announced to the remaining members, and the leaver is closed.
    bob.client.send(&ClientMessage::Leave).await;
    assert_eq!(
        bob.client.until_closed().await,
        (Some(CloseReason::Left), End::Closed(1000))
    );
    for c in [&mut ann.client, &mut cy.client] {
        assert_eq!(c.recv().await, ServerMessage::MemberLeft { id: bob.id });
    }
    ann.client.envelope(bob.id, b"late").await;
    assert!(matches!(
        ann.client.recv().await,
        ServerMessage::Error {
            code: ErrorCode::UnknownRecipient,
            ..
        }
    ));
    assert_eq!(server.metric("hush_signaling_participants").await, 3);
    assert_eq!(server.metric("hush_signaling_rooms").await, 2);
    assert_eq!(
        server
            .metric(r#"hush_signaling_messages_relayed_total{kind="envelope"}"#)
            .await,
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn healthz_and_metrics_answer_over_http() {
    let server = TestServer::start(Limits::default()).await;
    let (status, body) = http_get(server.addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let text = server.metrics().await;
    assert!(text.contains("# TYPE hush_signaling_messages_rejected_total counter"));
    for code in ErrorCode::ALL {
        let sample = format!(r#"hush_signaling_messages_rejected_total{{reason="{code}"}}"#);
        assert_eq!(support::parse_metric(&text, &sample), 0);
    }
    assert_eq!(server.metric("hush_signaling_rooms").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn media_is_refused_as_unavailable_and_the_room_keeps_working() {
    let server = TestServer::start(Limits::default()).await;
    let mut ann = server.join("r", "Ann").await;
    let mut bob = server.join("r", "Bob").await;
    let _ = ann.client.recv().await; // member_joined
    for request in [
        ClientMessage::SdpOffer {
            sdp: "v=0\r\n".into(),
        },
        ClientMessage::SdpAnswer {
            sdp: "v=0\r\n".into(),
        },
        ClientMessage::IceCandidate {
            candidate: hush_signaling::IceCandidate {
                candidate: String::new(),
                sdp_mid: None,
                sdp_m_line_index: None,
            },
        },
    ] {
        ann.client.send(&request).await;
        assert!(matches!(
            ann.client.recv().await,
            ServerMessage::Error {
                code: ErrorCode::MediaUnavailable,
                ..
            }
        ));
    }
    ann.client.envelope(bob.id, b"still here").await;
    assert!(
        matches!(bob.client.recv().await, ServerMessage::Envelope { from, .. } if from == ann.id)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_after_the_join_timeout() {
    let limits = Limits {
        join_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    let mut c = server.connect().await;
    assert!(matches!(
        c.recv().await,
        ServerMessage::Error {
            code: ErrorCode::JoinTimeout,
            ..
        }
    ));
    assert_eq!(
        c.until_closed().await,
        (Some(CloseReason::JoinFailed), End::Closed(1008))
    );
    // A joined client is not subject to it.
    let mut ann = server.join("r", "Ann").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    ann.client.send(&ClientMessage::Ping { nonce: 1 }).await;
    assert_eq!(ann.client.recv().await, ServerMessage::Pong { nonce: 1 });
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_while_one_that_answers_pings_stays() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    // Bob's task keeps reading, so tungstenite answers the server's pings.
    let bob = server.join("r", "Bob").await;
    let (bob_tx, mut bob_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut bob_client = bob.client;
    let bob_reader = tokio::spawn(async move {
        loop {
            let next = bob_client.next().await;
            let end = next.is_err();
            if bob_tx.send(next).is_err() || end {
                return;
            }
        }
    });
    // Ann joins and then reads nothing: no pongs.
    let mut ann = server.join("r", "Ann").await;
    server
        .wait_for_metric("hush_signaling_participants", 1)
        .await;
    assert_eq!(
        ann.client.until_closed().await,
        (Some(CloseReason::IdleTimeout), End::Closed(1001))
    );
    // Bob saw Ann come and go, and is still a member after more idle periods.
    assert!(matches!(
        bob_rx.recv().await,
        Some(Ok(ServerMessage::MemberJoined { .. }))
    ));
    assert_eq!(
        bob_rx.recv().await,
        Some(Ok(ServerMessage::MemberLeft { id: ann.id }))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.handle.participant_count(), 1);
    assert!(bob_rx.try_recv().is_err(), "Bob got nothing else");
    bob_reader.abort();
    server.stop().await;
}

#[tokio::test]
async fn shutdown_tells_every_member_and_ends_cleanly() {
    let server = TestServer::start(Limits::default()).await;
    let mut clients = Vec::new();
    for (room, name) in [("a", "Ann"), ("a", "Bob"), ("b", "Cy")] {
        clients.push(server.join(room, name).await.client);
    }
    let mut pending = server.connect().await;
    server.stop().await;
    for mut c in clients {
        assert_eq!(
            c.until_closed().await,
            (Some(CloseReason::ServerShutdown), End::Closed(1001))
        );
    }
    assert_eq!(
        pending.until_closed().await,
        (Some(CloseReason::ServerShutdown), End::Closed(1001))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_from_its_room() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(500),
        send_queue: 8,
        messages_per_sec: 1_000_000,
        message_burst: 1_000_000,
        // Large envelopes fill the stuck client's socket quickly.
        max_envelope_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    // Stuck joins and never reads again.
    let stuck = server.join("r", "Stuck").await;
    let mut busy = server.join("r", "Busy").await;
    let payload = vec![0u8; 40 * 1024]; // ~54 KiB as base64, under the limit
    let mut sent = 0;
    // Bounded: loopback buffers hold a few MB, this can send up to ~300 MB.
    while server.handle.participant_count() == 2 {
        assert!(sent < 5_000, "the stuck client was never dropped");
        busy.client.envelope(stuck.id, &payload).await;
        sent += 1;
    }
    assert_eq!(server.handle.participant_count(), 1);
    // Busy hears that Stuck left (after refusals for envelopes sent meanwhile).
    loop {
        match busy.client.recv().await {
            ServerMessage::MemberLeft { id } => {
                assert_eq!(id, stuck.id);
                break;
            }
            // Refused while Stuck's queue was half full, or after it left.
            ServerMessage::Error { code, .. } => assert!(
                matches!(code, ErrorCode::RecipientBusy | ErrorCode::UnknownRecipient),
                "{code:?}"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(stuck);
    server.stop().await;
}

/// A `joined` listing many large key packages goes out in fragments (a
/// client that refuses frames over 8 KiB still reads it) and arrives whole:
/// every member, in order, with its key package intact, names with
/// multi-byte characters included (a fragment may split one).
#[tokio::test]
async fn a_long_joined_arrives_whole_in_fragments() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    let server = TestServer::start(Limits::default()).await;
    let package = |i: usize| Opaque((0..1000).map(|b| (b * 7 + i) as u8).collect());
    let join = |i: usize, name: &str| {
        let mut message = server.join_message("big", name);
        if let ClientMessage::Join { key_package, .. } = &mut message {
            *key_package = package(i);
        }
        message
    };
    let mut members = Vec::new();
    for i in 0..12 {
        let name = format!("Zoë-é-{i}");
        let mut client = server.connect().await;
        client.send(&join(i, &name)).await;
        match client.recv().await {
            ServerMessage::Joined { you, .. } => members.push((you, name, client)),
            other => panic!("{name} did not join: {other:?}"),
        }
    }

    // The newcomer's client takes no frame over 8 KiB; the list is ~17 KiB.
    let addr = server.addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let config = WebSocketConfig::default().max_frame_size(Some(8 * 1024));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/v1/ws"),
        tcp,
        Some(config),
    )
    .await
    .expect("handshake");
    let text = serde_json::to_string(&join(99, "Newcomer")).expect("json");
    ws.send(Message::text(text)).await.expect("send join");
    let joined = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(_)) => continue,
            other => panic!("no joined: {other:?}"),
        }
    };
    assert!(joined.len() > 16 * 1024, "{}", joined.len());
    match serde_json::from_str::<ServerMessage>(&joined).expect("parses") {
        ServerMessage::Joined {
            members: listed, ..
        } => {
            assert_eq!(listed.len(), members.len());
            for (i, (m, (id, name, _))) in listed.iter().zip(&members).enumerate() {
                assert_eq!(m.id, *id);
                assert_eq!(m.name.as_str(), name);
                assert_eq!(m.key_package, package(i));
            }
        }
        other => panic!("expected joined, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_second_join_under_the_same_name_takes_the_first_ones_place() {
    let server = TestServer::start(Limits::default()).await;
    let mut old = server.join("standup", "Ann").await;
    let mut bob = server.join("standup", "Bob").await;
    assert!(
        matches!(old.client.recv().await, ServerMessage::MemberJoined { member } if member.id == bob.id)
    );
    // Ann again, on a new connection with her token (a network change, say).
    let mut new = server.join("standup", "Ann").await;
    assert_ne!(new.id, old.id);
    assert_eq!(
        new.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![bob.id],
        "the newcomer is not shown the member it replaced"
    );
    // The others see the old one leave, then the new one join.
    assert_eq!(
        bob.client.recv().await,
        ServerMessage::MemberLeft { id: old.id }
    );
    assert!(
        matches!(bob.client.recv().await, ServerMessage::MemberJoined { member } if member.id == new.id)
    );
    // The old connection is told why and closed.
    let (reason, end) = old.client.until_closed().await;
    assert_eq!(reason, Some(CloseReason::Replaced));
    assert_eq!(end, End::Closed(1008));
    // The room goes on with the new one.
    bob.client.envelope(new.id, b"hi").await;
    assert_eq!(
        new.client.recv().await,
        ServerMessage::Envelope {
            from: bob.id,
            to: new.id,
            payload: Opaque(b"hi".to_vec())
        }
    );
    assert_eq!(server.metric("hush_signaling_replaced_total").await, 1);
    assert_eq!(server.metric("hush_signaling_participants").await, 2);
    // A different name is not a replacement.
    let _cy = server.join("standup", "Cy").await;
    assert_eq!(server.metric("hush_signaling_participants").await, 3);
    assert_eq!(server.metric("hush_signaling_replaced_total").await, 1);
    server.stop().await;
}
