//! 200 concurrent clients in 20 rooms join, exchange envelopes with every
//! roommate and leave: every envelope arrives exactly once, in the right
//! room, with the right sender; the room table is empty at the end.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use hush_signaling::{ClientMessage, CloseReason, Limits, ParticipantId, ServerMessage};
use support::{End, TestServer};
use tokio::sync::Barrier;

const ROOMS: usize = 20;
const PER_ROOM: usize = 10;
const CLIENTS: usize = ROOMS * PER_ROOM;
/// Envelopes each client sends to each roommate.
const PER_PAIR: u32 = 5;

/// What one client saw.
struct Report {
    id: ParticipantId,
    room: usize,
    /// (claimed room, from, seq) of every envelope received.
    received: Vec<(usize, ParticipantId, u32)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_in_twenty_rooms_get_every_envelope_exactly_once() {
    let started = Instant::now();
    let server = Arc::new(TestServer::start(Limits::default()).await);
    let all_joined = Arc::new(Barrier::new(CLIENTS));
    let all_received = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (server, all_joined, all_received) = (
            Arc::clone(&server),
            Arc::clone(&all_joined),
            Arc::clone(&all_received),
        );
        tasks.push(tokio::spawn(async move {
            let room = i % ROOMS;
            let mut me = server
                .join(&format!("room-{room}"), &format!("client-{i}"))
                .await;
            let mut roommates: BTreeSet<ParticipantId> = me.members.iter().map(|m| m.id).collect();
            while roommates.len() < PER_ROOM - 1 {
                match me.client.recv().await {
                    ServerMessage::MemberJoined { member } => assert!(roommates.insert(member.id)),
                    other => panic!("unexpected before everyone joined: {other:?}"),
                }
            }
            all_joined.wait().await;

            for seq in 0..PER_PAIR {
                for &to in &roommates {
                    let payload = format!("{room}:{}:{}:{seq}", me.id.0, to.0);
                    me.client.envelope(to, payload.as_bytes()).await;
                }
            }
            let expected = roommates.len() * PER_PAIR as usize;
            let mut received = Vec::with_capacity(expected);
            while received.len() < expected {
                match me.client.recv().await {
                    ServerMessage::Envelope { from, to, payload } => {
                        assert_eq!(to, me.id);
                        let text = String::from_utf8(payload.0).expect("utf-8 payload");
                        let parts: Vec<u64> = text
                            .split(':')
                            .map(|p| p.parse().expect("number"))
                            .collect();
                        assert_eq!(parts[1], from.0, "server-set from matches the real sender");
                        assert_eq!(parts[2], me.id.0);
                        received.push((parts[0] as usize, from, parts[3] as u32));
                    }
                    other => panic!("unexpected during the exchange: {other:?}"),
                }
            }
            all_received.wait().await;

            me.client.send(&ClientMessage::Leave).await;
            loop {
                match me.client.next().await {
                    Ok(ServerMessage::MemberLeft { .. }) => {}
                    Ok(ServerMessage::Closing { reason }) => assert_eq!(reason, CloseReason::Left),
                    Ok(other) => panic!("unexpected after leave: {other:?}"),
                    Err(end) => {
                        assert_eq!(end, End::Closed(1000));
                        break;
                    }
                }
            }
            (
                Report {
                    id: me.id,
                    room,
                    received,
                },
                roommates,
            )
        }));
    }
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.expect("client task"));
    }

    let room_of: std::collections::HashMap<ParticipantId, usize> =
        reports.iter().map(|(r, _)| (r.id, r.room)).collect();
    let mut total = 0;
    for (report, roommates) in &reports {
        let unique: HashSet<_> = report.received.iter().copied().collect();
        assert_eq!(
            unique.len(),
            report.received.len(),
            "no duplicates for {:?}",
            report.id
        );
        let expected: HashSet<_> = roommates
            .iter()
            .flat_map(|&from| (0..PER_PAIR).map(move |seq| (report.room, from, seq)))
            .collect();
        assert_eq!(
            unique, expected,
            "everything from the roommates, nothing else"
        );
        assert!(
            report
                .received
                .iter()
                .all(|(_, from, _)| room_of[from] == report.room)
        );
        total += report.received.len();
    }
    assert_eq!(total, CLIENTS * (PER_ROOM - 1) * PER_PAIR as usize);

    server
        .wait_for_metric("hush_signaling_participants", 0)
        .await;
    assert_eq!(server.metric("hush_signaling_rooms").await, 0);
    assert_eq!(server.handle.room_count(), 0);
    assert_eq!(
        server
            .metric(r#"hush_signaling_messages_relayed_total{kind="envelope"}"#)
            .await,
        total as u64
    );
    assert_eq!(
        server.metric("hush_signaling_joins_total").await,
        CLIENTS as u64
    );
    server
        .wait_for_metric("hush_signaling_connections", 0)
        .await;
    let server = Arc::into_inner(server).expect("all clients done");
    server.stop().await;
    eprintln!(
        "200 clients, 20 rooms, {total} envelopes: {:.2?} wall time",
        started.elapsed()
    );
}
