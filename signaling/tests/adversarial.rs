//! Hostile and broken clients: bad tokens, malformed messages, oversized
//! frames, floods and abrupt disconnects. Each must be refused with a typed
//! error (or a close) while everyone else keeps working.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hush_signaling::{
    ClientMessage, CloseReason, ErrorCode, Limits, Opaque, PROTOCOL_VERSION, ServerMessage,
};
use support::{End, TestServer, mint, now};
use tokio_tungstenite::tungstenite::Message;

fn rejected(code: ErrorCode) -> String {
    format!(r#"hush_signaling_messages_rejected_total{{reason="{code}"}}"#)
}

async fn expect_error(client: &mut support::Client, code: ErrorCode) {
    match client.recv().await {
        ServerMessage::Error { code: got, .. } => assert_eq!(got, code),
        other => panic!("expected error {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_each_with_its_own_code_and_the_client_may_retry() {
    let server = TestServer::start(Limits::default()).await;
    let other_secret = hush_signaling::ServerSecret::new(vec![9; 32]).expect("secret");
    let join = |token: String, protocol: u32| ClientMessage::Join {
        protocol,
        room: "r".parse().expect("room"),
        name: "Ann".parse().expect("name"),
        token: token.into(),
        key_package: Opaque(vec![1]),
    };
    let cases = [
        (
            join(String::new(), PROTOCOL_VERSION),
            ErrorCode::TokenMissing,
        ),
        (
            join("v1.nope".into(), PROTOCOL_VERSION),
            ErrorCode::TokenMalformed,
        ),
        (
            join(
                mint(&other_secret, "r", "Ann", now() + 60),
                PROTOCOL_VERSION,
            ),
            ErrorCode::TokenForged,
        ),
        (
            join(
                mint(&server.secret, "r", "Ann", now() - 1),
                PROTOCOL_VERSION,
            ),
            ErrorCode::TokenExpired,
        ),
        (
            join(server.token("other", "Ann"), PROTOCOL_VERSION),
            ErrorCode::TokenWrongRoom,
        ),
        (
            join(server.token("r", "Bob"), PROTOCOL_VERSION),
            ErrorCode::TokenWrongName,
        ),
        (
            join(server.token("r", "Ann"), PROTOCOL_VERSION + 1),
            ErrorCode::UnsupportedProtocol,
        ),
    ];
    let mut c = server.connect().await;
    for (message, code) in &cases {
        c.send(message).await;
        expect_error(&mut c, *code).await;
        assert_eq!(server.metric(&rejected(*code)).await, 1);
    }
    // A missing `token` field is a malformed join, not a crash.
    c.send_text(r#"{"type":"join","protocol":1,"room":"r","name":"Ann","key_package":""}"#)
        .await;
    expect_error(&mut c, ErrorCode::InvalidField).await;
    assert_eq!(server.handle.participant_count(), 0);
    // The same connection can still join with a good token.
    c.send(&join(server.token("r", "Ann"), PROTOCOL_VERSION))
        .await;
    assert!(matches!(c.recv().await, ServerMessage::Joined { .. }));
    server.stop().await;
}

/// 20 kinds of bad input, each with the error code it must get.
fn malformed_kinds(roommate: u64, stranger: u64, rejoin: &str) -> Vec<(Message, ErrorCode)> {
    let text = |s: &str| Message::text(s.to_owned());
    vec![
        (text("{"), ErrorCode::MalformedJson),
        (text(""), ErrorCode::MalformedJson),
        (
            text(&format!("{}{}", "[".repeat(500), "]".repeat(500))),
            ErrorCode::MalformedJson,
        ),
        (
            text("\u{feff}{\"type\":\"ping\"}"),
            ErrorCode::MalformedJson,
        ),
        (text("null"), ErrorCode::MissingType),
        (text("[1,2]"), ErrorCode::MissingType),
        (text("{}"), ErrorCode::MissingType),
        (text(r#"{"type":7}"#), ErrorCode::MissingType),
        (text(r#"{"type":"nope"}"#), ErrorCode::UnknownType),
        (text(r#"{"type":"JOIN"}"#), ErrorCode::UnknownType),
        (text(r#"{"type":"envelope"}"#), ErrorCode::InvalidField),
        (
            text(r#"{"type":"envelope","to":"abc","payload":"AA=="}"#),
            ErrorCode::InvalidField,
        ),
        (
            text(r#"{"type":"envelope","to":2,"payload":"!!not base64"}"#),
            ErrorCode::InvalidField,
        ),
        (
            text(r#"{"type":"envelope","to":-1,"payload":""}"#),
            ErrorCode::InvalidField,
        ),
        (
            text(r#"{"type":"ping","nonce":"x"}"#),
            ErrorCode::InvalidField,
        ),
        (
            text(r#"{"type":"ice_candidate","candidate":{"candidate":1}}"#),
            ErrorCode::InvalidField,
        ),
        (text(rejoin), ErrorCode::AlreadyJoined),
        (
            text(&format!(
                r#"{{"type":"envelope","to":{stranger},"payload":""}}"#
            )),
            ErrorCode::UnknownRecipient,
        ),
        (
            text(&format!(
                r#"{{"type":"envelope","to":{},"payload":""}}"#,
                roommate + 1_000_000
            )),
            ErrorCode::UnknownRecipient,
        ),
        (
            Message::binary(vec![0u8, 159, 146, 150]),
            ErrorCode::BinaryFrame,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_messages_disturb_no_one() {
    let limits = Limits {
        messages_per_sec: 1_000_000,
        message_burst: 1_000_000,
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    let mut mallory = server.join("noisy", "Mallory").await;
    let mut roommate = server.join("noisy", "Rita").await;
    let _ = mallory.client.recv().await; // member_joined
    let mut ann = server.join("quiet", "Ann").await;
    let mut bob = server.join("quiet", "Bob").await;
    let _ = ann.client.recv().await; // member_joined
    let rejoin = serde_json::to_string(&server.join_message("noisy", "Mallory")).expect("json");
    let kinds = malformed_kinds(roommate.id.0, ann.id.0, &rejoin);
    assert_eq!(kinds.len(), 20);

    // Ann and Bob ping-pong numbered envelopes until Mallory is done.
    let done = Arc::new(AtomicBool::new(false));
    let (ann_id, bob_id) = (ann.id, bob.id);
    let exchange = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut rounds = 0u64;
            while !done.load(Ordering::Relaxed) && rounds < 100_000 {
                let seq = rounds.to_be_bytes();
                ann.client.envelope(bob_id, &seq).await;
                assert_eq!(
                    bob.client.recv().await,
                    ServerMessage::Envelope {
                        from: ann_id,
                        to: bob_id,
                        payload: Opaque(seq.to_vec())
                    }
                );
                bob.client.envelope(ann_id, &seq).await;
                assert_eq!(
                    ann.client.recv().await,
                    ServerMessage::Envelope {
                        from: bob_id,
                        to: ann_id,
                        payload: Opaque(seq.to_vec())
                    }
                );
                rounds += 1;
            }
            (rounds, ann, bob)
        })
    };

    let mut sent: HashMap<ErrorCode, u64> = HashMap::new();
    for i in 0..1000 {
        let (message, code) = &kinds[i % kinds.len()];
        assert!(mallory.client.try_send_raw(message.clone()).await);
        expect_error(&mut mallory.client, *code).await;
        *sent.entry(*code).or_default() += 1;
    }
    done.store(true, Ordering::Relaxed);
    let (rounds, _ann, _bob) = exchange.await.expect("exchange task");
    assert!(rounds > 0, "the quiet room exchanged envelopes meanwhile");

    // Mallory is still a member and can still talk to her roommate.
    mallory.client.envelope(roommate.id, b"sorry").await;
    assert_eq!(
        roommate.client.recv().await,
        ServerMessage::Envelope {
            from: mallory.id,
            to: roommate.id,
            payload: Opaque(b"sorry".to_vec())
        }
    );
    for (code, n) in sent {
        assert_eq!(server.metric(&rejected(code)).await, n, "{code}");
    }
    assert_eq!(server.handle.participant_count(), 4);
    assert_eq!(
        server
            .metric(r#"hush_signaling_messages_relayed_total{kind="envelope"}"#)
            .await,
        2 * rounds + 1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_only_that_socket() {
    let limits = Limits {
        max_message_bytes: 1024,
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    let mut big = server.join("r", "Big").await;
    let mut ann = server.join("r", "Ann").await;
    let _ = big.client.recv().await; // member_joined

    // Exactly at the limit is fine.
    let exact = |len: usize, to: u64| {
        let head = format!(r#"{{"type":"envelope","to":{to},"payload":""#);
        let pad = len - head.len() - 2;
        let payload = "A".repeat(pad / 4 * 4);
        let text = format!("{head}{payload}\"}}");
        // Pad with spaces (valid JSON whitespace) to hit the length exactly.
        format!("{}{}", text, " ".repeat(len - text.len()))
    };
    let at_limit = exact(1024, ann.id.0);
    assert_eq!(at_limit.len(), 1024);
    big.client.send_text(&at_limit).await;
    assert!(
        matches!(ann.client.recv().await, ServerMessage::Envelope { from, .. } if from == big.id)
    );

    // One byte more closes Big with 1009.
    big.client.send_text(&exact(1025, ann.id.0)).await;
    assert_eq!(
        big.client.until_closed().await,
        (Some(CloseReason::MessageTooBig), End::Closed(1009))
    );
    assert_eq!(
        ann.client.recv().await,
        ServerMessage::MemberLeft { id: big.id }
    );

    // Far over the limit (past the reader's memory guard) also ends the socket.
    let mut huge = server.join("r", "Huge").await;
    assert!(matches!(
        ann.client.recv().await,
        ServerMessage::MemberJoined { .. }
    ));
    huge.client
        .try_send_raw(Message::text("x".repeat(64 * 1024)))
        .await;
    let (_, end) = huge.client.until_closed().await;
    assert!(matches!(end, End::Closed(1009) | End::Dropped), "{end:?}");
    assert_eq!(
        ann.client.recv().await,
        ServerMessage::MemberLeft { id: huge.id }
    );

    // Ann and the room are fine.
    let mut cy = server.join("r", "Cy").await;
    assert!(matches!(
        ann.client.recv().await,
        ServerMessage::MemberJoined { .. }
    ));
    ann.client.envelope(cy.id, b"hi").await;
    assert!(
        matches!(cy.client.recv().await, ServerMessage::Envelope { from, .. } if from == ann.id)
    );
    assert_eq!(server.metric(&rejected(ErrorCode::MessageTooBig)).await, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_disconnected() {
    let limits = Limits {
        // One token a second: only a machine slower than that could refill
        // the bucket faster than a flood of 200 drains it.
        messages_per_sec: 1,
        message_burst: 20,
        rate_strikes: 30,
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    let mut flood = server.join("r", "Flood").await;
    let mut calm = server.join("r", "Calm").await;
    let _ = flood.client.recv().await; // member_joined
    for nonce in 0..200 {
        if !flood
            .client
            .try_send_raw(Message::text(format!(
                r#"{{"type":"ping","nonce":{nonce}}}"#
            )))
            .await
        {
            break;
        }
    }
    let (mut pongs, mut limited) = (0, 0);
    let end = loop {
        match flood.client.next().await {
            Ok(ServerMessage::Pong { .. }) => pongs += 1,
            Ok(ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            }) => limited += 1,
            Ok(ServerMessage::Closing { reason }) => {
                assert_eq!(reason, CloseReason::RateLimited);
                break flood.client.until_closed().await.1;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(end) => panic!("closed without a closing message: {end:?}"),
        }
    };
    assert_eq!(end, End::Closed(1008));
    // The bucket holds 20; the join took one.
    assert!(pongs >= 19, "the burst is served: {pongs}");
    assert!(pongs < 200, "not everything is served: {pongs}");
    assert!(limited >= 1, "the client is told it is rate limited");
    assert!(server.metric(&rejected(ErrorCode::RateLimited)).await >= 30);
    // The calm member is unaffected.
    assert_eq!(
        calm.client.recv().await,
        ServerMessage::MemberLeft { id: flood.id }
    );
    calm.client.send(&ClientMessage::Ping { nonce: 1 }).await;
    assert_eq!(calm.client.recv().await, ServerMessage::Pong { nonce: 1 });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_drops_of_fifty_clients_leave_no_member_behind() {
    let server = TestServer::start(Limits::default()).await;
    let mut witness = server.join("room-0", "Witness").await;
    let mut clients = Vec::new();
    for i in 0..50 {
        let room = format!("room-{}", i % 5);
        clients.push(server.join(&room, &format!("c{i}")).await);
    }
    server
        .wait_for_metric("hush_signaling_participants", 51)
        .await;
    let roommates: Vec<_> = clients.iter().step_by(5).map(|c| c.id).collect();
    assert_eq!(roommates.len(), 10);
    for (i, joined) in clients.into_iter().enumerate() {
        // Half reset the TCP connection, half close it without a WebSocket close.
        if i % 2 == 0 {
            joined.client.reset();
        } else {
            joined.client.drop_tcp();
        }
    }
    server
        .wait_for_metric("hush_signaling_participants", 1)
        .await;
    assert_eq!(server.metric("hush_signaling_rooms").await, 1);
    server
        .wait_for_metric("hush_signaling_connections", 1)
        .await;
    // The witness saw its 10 roommates join and leave.
    let mut joined = 0;
    let mut left = Vec::new();
    while left.len() < 10 {
        match witness.client.recv().await {
            ServerMessage::MemberJoined { .. } => joined += 1,
            ServerMessage::MemberLeft { id } => left.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(joined, 10);
    left.sort();
    assert_eq!(left, roommates);
    witness.client.send(&ClientMessage::Leave).await;
    witness.client.until_closed().await;
    server.wait_for_metric("hush_signaling_rooms", 0).await;
    assert_eq!(server.handle.participant_count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn room_and_server_limits_refuse_joins_with_their_codes() {
    let limits = Limits {
        max_rooms: 1,
        max_room_participants: 2,
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    let _a = server.join("r", "A").await;
    let _b = server.join("r", "B").await;
    let mut c = server.connect().await;
    c.send(&server.join_message("r", "C")).await;
    expect_error(&mut c, ErrorCode::RoomFull).await;
    c.send(&server.join_message("s", "C")).await;
    expect_error(&mut c, ErrorCode::ServerFull).await;
    // Before joining, only join and ping are accepted.
    c.send(&ClientMessage::Leave).await;
    expect_error(&mut c, ErrorCode::NotJoined).await;
    c.send(&ClientMessage::Ping { nonce: 3 }).await;
    assert_eq!(c.recv().await, ServerMessage::Pong { nonce: 3 });
    server.stop().await;
}
